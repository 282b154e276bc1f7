//! The spool: a crash-safe, append-only log on local disk that holds webhooks the broker did
//! not acknowledge in time, so they are answered 2xx once they are durable here and published
//! when the broker is back.
//!
//! - [`format`]: the on-disk format (versioned, documented there).
//! - [`store`]: the directory: lock, recovery, reads, removal.
//! - `writer`: one thread appending frames with grouped syncs.
//! - `drain`: the task that republishes spooled records, in order, and removes them once the
//!   broker acknowledged them.
//!
//! The order rule: once a record is spooled, every later record is spooled behind it until
//! the drainer has published them all (the spool is "open"). So records of one call never
//! overtake each other because of the spool. When the broker fails during a drain the unacked
//! part of a batch is sent again, so a record may appear twice, once out of order: the worker
//! skips the second copy by its event id.

mod drain;
pub mod format;
pub mod store;
mod writer;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{Notify, mpsc, oneshot};

pub use drain::{Until, drain};
use format::{HEADER_LEN, Position, SpooledRecord};
use store::{Recovered, Store, StoreError};
use writer::{Append, Writer};

use crate::metrics::Metrics;
use crate::publish::Record;

/// Where and how much.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Frame bytes the spool may hold; past it a webhook that would be spooled gets 503.
    pub max_bytes: u64,
    /// A segment is closed once it holds this much; drained segments are deleted whole.
    pub segment_bytes: u64,
}

/// Why a record was not spooled. The webhook gets 503 with Retry-After.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full (--spool-max-bytes)")]
    Full,
    #[error("spool write failed: {0}")]
    Io(std::io::ErrorKind),
    #[error("the spool writer has stopped")]
    Closed,
    #[error("record too large for the spool format")]
    TooLarge,
}

impl SpoolError {
    pub fn reason(&self) -> &'static str {
        match self {
            SpoolError::Full => "spool_full",
            SpoolError::Io(_) | SpoolError::Closed => "spool_unavailable",
            SpoolError::TooLarge => "too_large",
        }
    }
}

/// Whether records go to the broker or behind the spooled ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Direct,
    Spooling,
}

/// What the writer, the drainer and requests share, behind one lock so that "is the spool
/// empty" and "append behind it" cannot interleave.
#[derive(Debug)]
struct State {
    mode: Mode,
    spooling_since: Option<Instant>,
    /// Appends handed to the writer and not yet written or failed.
    pending: u64,
    /// Segment id → end of its synced frames.
    segments: BTreeMap<u64, u64>,
    /// Records and frame bytes written and not yet drained (for the gauges).
    records: u64,
    bytes: u64,
    oldest_ms: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the drainer: something was written, or a write failed.
    wake: Notify,
    /// False after a write failed, until one succeeds.
    writable: AtomicBool,
    metrics: Metrics,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock is a bug elsewhere; the state itself stays usable.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn segment_created(&self, id: u64) {
        self.state().segments.insert(id, HEADER_LEN);
    }

    fn written(&self, segment: u64, end: u64, records: u64, bytes: u64, oldest_ms: Option<u64>) {
        let mut state = self.state();
        state.segments.insert(segment, end);
        state.pending -= records;
        state.records += records;
        state.bytes += bytes;
        if state.oldest_ms.is_none() {
            state.oldest_ms = oldest_ms;
        }
        self.publish_gauges(&state);
        drop(state);
        self.writable.store(true, Ordering::Relaxed);
        self.metrics.spool_spooled.inc_by(records);
        self.wake.notify_one();
    }

    fn resolve_failed(&self, records: u64) {
        self.state().pending -= records;
        self.writable.store(false, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// The drainer's acknowledged batch. The oldest record's time is kept until the spool is
    /// empty: an age that over-reports during a drain, never one that under-reports.
    fn drained(&self, records: u64, bytes: u64) {
        let mut state = self.state();
        state.records = state.records.saturating_sub(records);
        state.bytes = state.bytes.saturating_sub(bytes);
        if state.records == 0 {
            state.oldest_ms = None;
        }
        self.publish_gauges(&state);
        drop(state);
        self.metrics.spool_drained.inc_by(records);
    }

    fn publish_gauges(&self, state: &State) {
        self.metrics.spool_records.set(i64::try_from(state.records).unwrap_or(i64::MAX));
        self.metrics.spool_bytes.set(i64::try_from(state.bytes).unwrap_or(i64::MAX));
        #[allow(clippy::cast_precision_loss)]
        self.metrics.spool_oldest_timestamp.set(state.oldest_ms.map_or(0.0, |ms| ms as f64 / 1000.0));
    }

    /// Closes the spool when the drainer is at the end of the newest segment and nothing is
    /// being written: later records go to the broker again.
    fn try_close(&self, cursor: Position) -> bool {
        let mut state = self.state();
        let newest = state.segments.last_key_value().map(|(&id, &end)| Position { segment: id, offset: end });
        let at_end = newest.is_none_or(|end| cursor >= end);
        if state.pending > 0 || !at_end {
            return false;
        }
        if state.mode == Mode::Spooling {
            state.mode = Mode::Direct;
            let open_for = state.spooling_since.take().map(|since| since.elapsed());
            state.records = 0;
            state.bytes = 0;
            state.oldest_ms = None;
            self.publish_gauges(&state);
            drop(state);
            self.metrics.spool_open.set(0);
            tracing::info!(open_for = ?open_for, "spool drained: publishing to the broker directly again");
        }
        true
    }
}

/// An open spool: the directory, its writer thread, and the state requests consult.
#[derive(Debug)]
pub struct Spool {
    shared: Arc<Shared>,
    store: Arc<Store>,
    appends: mpsc::UnboundedSender<Append>,
    cursor: Mutex<Option<Position>>,
    corrupt_segments: Vec<u64>,
}

impl Spool {
    /// Opens the directory (taking its lock), recovers what it holds and starts the writer. A
    /// spool that holds records starts open: they are published before anything new.
    pub fn open(config: &SpoolConfig, max_record_bytes: usize, metrics: Metrics) -> Result<Self, StoreError> {
        let max_body = max_record_bytes.saturating_add(64 * 1024);
        let (store, recovered) = Store::open(&config.dir, max_body)?;
        let Recovered { segments, cursor, records, bytes, oldest_ms, corrupt_segments, torn_tail_bytes } = recovered;
        if torn_tail_bytes > 0 {
            tracing::warn!(
                bytes = torn_tail_bytes,
                "spool: cut off a frame a crash left unfinished (never answered 2xx)"
            );
        }
        for segment in &corrupt_segments {
            metrics.spool_errors.with_label_values(&["corrupt"]).inc();
            tracing::error!(segment, dir = %config.dir.display(), "spool segment holds a frame that fails its checksum; its earlier frames are kept, the rest is set aside when it is drained");
        }
        let open = records > 0;
        if open {
            tracing::warn!(records, bytes, dir = %config.dir.display(), "spool holds records from before the restart: publishing them first");
        }
        let newest = segments.last_key_value().map(|(&id, &end)| (id, end));
        let state = State {
            mode: if open { Mode::Spooling } else { Mode::Direct },
            spooling_since: open.then(Instant::now),
            pending: 0,
            segments,
            records,
            bytes,
            oldest_ms,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            wake: Notify::new(),
            writable: AtomicBool::new(true),
            metrics: metrics.clone(),
        });
        shared.publish_gauges(&shared.state());
        metrics.spool_open.set(i64::from(open));
        let store = Arc::new(store);
        // Appending continues in the newest segment unless it is one that held a bad frame.
        let (current, next_id) = match newest {
            Some((id, end)) if !corrupt_segments.contains(&id) => {
                let file =
                    store.reopen_segment(id).map_err(|source| StoreError::Io { dir: config.dir.clone(), source })?;
                (Some((id, file, end)), id + 1)
            }
            Some((id, _)) => (None, id + 1),
            None => (None, cursor.segment.max(1)),
        };
        let writer = Writer {
            store: store.clone(),
            shared: shared.clone(),
            current,
            next_id,
            segment_bytes: config.segment_bytes,
            max_bytes: config.max_bytes,
        };
        let (appends, requests) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(requests))
            .map_err(|source| StoreError::Io { dir: config.dir.clone(), source })?;
        Ok(Self { shared, store, appends, cursor: Mutex::new(Some(cursor)), corrupt_segments })
    }

    /// True while records wait in the spool (or are being written to it): a new record must
    /// go behind them.
    pub fn is_open(&self) -> bool {
        self.shared.state().mode == Mode::Spooling
    }

    /// False after a write failed, until one succeeds.
    pub fn is_writable(&self) -> bool {
        self.shared.writable.load(Ordering::Relaxed)
    }

    /// Appends one record and waits until it is synced to disk. Opens the spool (`why` says
    /// what made the broker path fail) if it was closed.
    pub async fn append(&self, record: &Record<'_>, why: &str) -> Result<(), SpoolError> {
        let spooled_at_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        let owned = SpooledRecord {
            spooled_at_ms,
            key: record.key.to_owned(),
            headers: record.headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            value: record.value.to_vec(),
        };
        let Some(len) = format::encoded_len(&owned) else {
            return Err(SpoolError::TooLarge);
        };
        let mut frame = Vec::with_capacity(len);
        format::encode(&owned, &mut frame);
        let (done, written) = oneshot::channel();
        {
            let mut state = self.shared.state();
            if state.mode == Mode::Direct {
                state.mode = Mode::Spooling;
                state.spooling_since = Some(Instant::now());
                self.shared.metrics.spool_open.set(1);
                tracing::warn!(
                    reason = why,
                    "spooling started: webhooks are answered once on local disk, and published when the broker acknowledges again"
                );
            }
            state.pending += 1;
            // Sent under the lock: the drainer cannot close the spool between the check above
            // and this record joining the queue.
            if self.appends.send(Append { frame, spooled_at_ms, done }).is_err() {
                state.pending -= 1;
                return Err(SpoolError::Closed);
            }
        }
        written.await.unwrap_or(Err(SpoolError::Closed))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::format::{Position, segment_name};
    use super::*;

    const MAX_RECORD: usize = 1024 * 1024;

    fn config(dir: &std::path::Path) -> SpoolConfig {
        SpoolConfig { dir: dir.to_owned(), max_bytes: 1 << 30, segment_bytes: 64 * 1024 * 1024 }
    }

    /// Opens the directory, waiting for a previous spool's writer thread to let go of it.
    fn open(config: &SpoolConfig, metrics: Metrics) -> Spool {
        let mut tries = 0;
        loop {
            match Spool::open(config, MAX_RECORD, metrics.clone()) {
                Err(StoreError::Locked(_)) if tries < 500 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => return other.unwrap(),
            }
        }
    }

    async fn append(spool: &Spool, key: &str, value: &str) -> Result<(), SpoolError> {
        let headers = [("callgate-event-id", "e1")];
        spool.append(&Record { key, value: value.as_bytes(), headers: &headers }, "test").await
    }

    /// Every record from the start, read the way the drainer reads.
    fn read_all(spool: &Spool) -> Vec<SpooledRecord> {
        let segments = spool.shared.state().segments.clone();
        let mut out = Vec::new();
        for (&id, &end) in &segments {
            let from = Position { segment: id, offset: HEADER_LEN };
            out.extend(spool.store.read(from, end, usize::MAX, usize::MAX).unwrap().into_iter().map(|(r, _)| r));
        }
        out
    }

    #[tokio::test]
    async fn records_are_answered_once_synced_and_read_back_in_order_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let spool = open(&config(dir.path()), metrics.clone());
        assert!(!spool.is_open());
        for i in 0..3 {
            append(&spool, &format!("retell:call_{i}"), &format!("{{\"n\":{i}}}")).await.unwrap();
        }
        assert!(spool.is_open(), "the first spooled record opens the spool");
        assert_eq!((metrics.spool_records.get(), metrics.spool_spooled.get()), (3, 3));
        drop(spool);

        let again = open(&config(dir.path()), Metrics::new());
        assert!(again.is_open(), "records from before the restart are published first");
        let keys: Vec<String> = read_all(&again).into_iter().map(|r| r.key).collect();
        assert_eq!(keys, ["retell:call_0", "retell:call_1", "retell:call_2"]);
        assert_eq!(read_all(&again)[1].headers, vec![("callgate-event-id".to_owned(), "e1".to_owned())]);
    }

    #[tokio::test]
    async fn a_frame_cut_short_by_a_crash_is_dropped_and_writing_goes_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(&config(dir.path()), Metrics::new());
        append(&spool, "k:1", "one").await.unwrap();
        append(&spool, "k:2", "two").await.unwrap();
        drop(spool);
        // A crash mid-write: half a frame at the end of the newest segment.
        let segment = dir.path().join(segment_name(1));
        let mut frame = Vec::new();
        format::encode(
            &SpooledRecord { spooled_at_ms: 1, key: "k:3".into(), headers: vec![], value: b"three".to_vec() },
            &mut frame,
        );
        let mut bytes = std::fs::read(&segment).unwrap();
        let whole = bytes.len();
        bytes.extend_from_slice(&frame[..frame.len() / 2]);
        std::fs::write(&segment, &bytes).unwrap();

        let spool = open(&config(dir.path()), Metrics::new());
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), whole as u64, "the torn tail is cut off");
        append(&spool, "k:4", "four").await.unwrap();
        let values: Vec<Vec<u8>> = read_all(&spool).into_iter().map(|r| r.value).collect();
        assert_eq!(values, [b"one".to_vec(), b"two".to_vec(), b"four".to_vec()]);
    }

    #[tokio::test]
    async fn a_full_spool_refuses_and_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let spool = open(&SpoolConfig { max_bytes: 100, ..config(dir.path()) }, metrics.clone());
        append(&spool, "k:1", "fits").await.unwrap();
        assert_eq!(append(&spool, "k:2", &"x".repeat(100)).await, Err(SpoolError::Full));
        assert_eq!(metrics.spool_errors.with_label_values(&["full"]).get(), 1);
        assert_eq!(read_all(&spool).len(), 1);
    }

    #[tokio::test]
    async fn a_write_that_fails_is_never_acknowledged_and_the_spool_recovers_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let spool = open(&SpoolConfig { segment_bytes: 1, ..config(dir.path()) }, metrics.clone());
        append(&spool, "k:1", "one").await.unwrap();
        // The next segment cannot be created: something else holds its name.
        std::fs::create_dir(dir.path().join(segment_name(2))).unwrap();
        let refused = append(&spool, "k:2", "two").await;
        assert!(matches!(refused, Err(SpoolError::Io(_))), "{refused:?}");
        assert!(!spool.is_writable());
        assert_eq!(metrics.spool_errors.with_label_values(&["io"]).get(), 1);
        std::fs::remove_dir(dir.path().join(segment_name(2))).unwrap();
        append(&spool, "k:3", "three").await.unwrap();
        assert!(spool.is_writable());
        let keys: Vec<String> = read_all(&spool).into_iter().map(|r| r.key).collect();
        assert_eq!(keys, ["k:1", "k:3"]);
    }

    #[test]
    fn requests_that_queue_during_a_sync_share_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let (store, recovered) = Store::open(dir.path(), MAX_RECORD).unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mode: Mode::Spooling,
                spooling_since: None,
                pending: 50,
                segments: recovered.segments,
                records: 0,
                bytes: 0,
                oldest_ms: None,
            }),
            wake: Notify::new(),
            writable: AtomicBool::new(true),
            metrics: metrics.clone(),
        });
        let writer = Writer {
            store: Arc::new(store),
            shared: shared.clone(),
            current: None,
            next_id: 1,
            segment_bytes: 1 << 30,
            max_bytes: 1 << 30,
        };
        let (sender, requests) = mpsc::unbounded_channel();
        let mut replies = Vec::new();
        for i in 0..50 {
            let record =
                SpooledRecord { spooled_at_ms: i, key: format!("k:{i}"), headers: vec![], value: vec![1; 100] };
            let mut frame = Vec::new();
            format::encode(&record, &mut frame);
            let (done, reply) = oneshot::channel();
            sender.send(Append { frame, spooled_at_ms: i, done }).unwrap();
            replies.push(reply);
        }
        drop(sender);
        writer.run(requests);
        assert_eq!(metrics.spool_fsync_duration.get_sample_count(), 1, "50 queued records, one sync");
        for mut reply in replies {
            assert_eq!(reply.try_recv().unwrap(), Ok(()));
        }
        let state = shared.state();
        assert_eq!((state.records, state.pending), (50, 0));
    }

    #[tokio::test]
    async fn a_damaged_frame_in_an_older_segment_is_reported_and_the_frames_before_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        // A segment per record.
        let spool = open(&SpoolConfig { segment_bytes: 1, ..config(dir.path()) }, Metrics::new());
        for i in 0..3 {
            append(&spool, &format!("k:{i}"), "value").await.unwrap();
        }
        drop(spool);
        let first = dir.path().join(segment_name(1));
        let mut bytes = std::fs::read(&first).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&first, bytes).unwrap();
        let spool = open(&config(dir.path()), metrics.clone());
        assert_eq!(metrics.spool_errors.with_label_values(&["corrupt"]).get(), 1);
        assert_eq!(spool.corrupt_segments, vec![1]);
        let keys: Vec<String> = read_all(&spool).into_iter().map(|r| r.key).collect();
        assert_eq!(keys, ["k:1", "k:2"]);
    }
}
