//! The spool's writer: one thread that appends frames and syncs them, many requests at a time.
//!
//! Group commit: while one `fdatasync` runs, new requests queue up; the next round writes all
//! of them with one write and one sync. So the sync cost is shared by every request that
//! arrived during the previous one, and throughput holds as concurrency grows.

use std::fs::File;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::format::HEADER_LEN;
use super::store::Store;
use super::{Shared, SpoolError};

/// One frame to append, and where to say how it went.
pub(super) struct Append {
    pub frame: Vec<u8>,
    pub spooled_at_ms: u64,
    pub done: oneshot::Sender<Result<(), SpoolError>>,
}

/// Most bytes written in one round (many requests or one large one).
const ROUND_BYTES: usize = 8 * 1024 * 1024;

pub(super) struct Writer {
    pub store: Arc<Store>,
    pub shared: Arc<Shared>,
    /// The newest segment, open for appending, and its id and length.
    pub current: Option<(u64, File, u64)>,
    pub next_id: u64,
    pub segment_bytes: u64,
    pub max_bytes: u64,
}

impl Writer {
    /// Runs until every sender is gone.
    pub fn run(mut self, mut requests: mpsc::UnboundedReceiver<Append>) {
        while let Some(first) = requests.blocking_recv() {
            let mut round = vec![first];
            let mut size = round[0].frame.len();
            while size < ROUND_BYTES {
                match requests.try_recv() {
                    Ok(next) => {
                        size += next.frame.len();
                        round.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.write_round(round);
        }
    }

    fn write_round(&mut self, round: Vec<Append>) {
        // Refuse what does not fit, in arrival order, before anything is written.
        let mut admitted = Vec::with_capacity(round.len());
        let mut bytes = self.shared.state().bytes;
        for append in round {
            let len = append.frame.len() as u64;
            if bytes + len > self.max_bytes {
                self.shared.metrics.spool_errors.with_label_values(&["full"]).inc();
                self.shared.resolve_failed(1);
                let _ = append.done.send(Err(SpoolError::Full));
            } else {
                bytes += len;
                admitted.push(append);
            }
        }
        if admitted.is_empty() {
            return;
        }
        match self.append(&admitted) {
            Ok(segment_end) => {
                let (id, end) = segment_end;
                let count = admitted.len() as u64;
                let frame_bytes: u64 = admitted.iter().map(|a| a.frame.len() as u64).sum();
                let oldest = admitted.iter().map(|a| a.spooled_at_ms).min();
                self.shared.written(id, end, count, frame_bytes, oldest);
                for append in admitted {
                    let _ = append.done.send(Ok(()));
                }
            }
            Err(error) => {
                tracing::error!(%error, records = admitted.len(), "spool write failed; those webhooks are answered 503");
                self.shared.metrics.spool_errors.with_label_values(&["io"]).inc();
                self.shared.resolve_failed(admitted.len() as u64);
                for append in admitted {
                    let _ = append.done.send(Err(SpoolError::Io(error.kind())));
                }
            }
        }
    }

    /// Writes the frames to the newest segment (rolling first when they would overflow it) and
    /// syncs: the segment's id and synced end.
    fn append(&mut self, admitted: &[Append]) -> Result<(u64, u64), std::io::Error> {
        let size: u64 = admitted.iter().map(|a| a.frame.len() as u64).sum();
        let full =
            self.current.as_ref().is_some_and(|(_, _, len)| *len > HEADER_LEN && len + size > self.segment_bytes);
        if full || self.current.is_none() {
            self.roll()?;
        }
        let Some((id, file, len)) = self.current.as_mut() else {
            return Err(std::io::Error::other("no segment to write to"));
        };
        let before = *len;
        let mut buffer = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        for append in admitted {
            buffer.extend_from_slice(&append.frame);
        }
        let started = Instant::now();
        let written = file.write_all(&buffer).and_then(|()| file.sync_data());
        self.shared.metrics.spool_fsync_duration.observe(started.elapsed().as_secs_f64());
        match written {
            Ok(()) => {
                *len += size;
                Ok((*id, *len))
            }
            Err(error) => {
                // What reached the file is unknown: cut it back and start a new segment, so
                // nothing answered 503 is left where the drainer reads.
                if file.set_len(before).and_then(|()| file.sync_data()).is_err() {
                    tracing::error!("could not cut a failed spool write back; its bytes may be republished");
                }
                self.current = None;
                Err(error)
            }
        }
    }

    fn roll(&mut self) -> Result<(), std::io::Error> {
        let id = self.next_id;
        let file = self.store.create_segment(id)?;
        self.next_id += 1;
        self.shared.segment_created(id);
        self.current = Some((id, file, HEADER_LEN));
        Ok(())
    }
}
