//! The drainer: republishes spooled records to the broker in spool order, with the key,
//! headers and value they were spooled with, and deletes a segment only once every record in
//! it was acknowledged. It is also the spool's probe: while the broker is down its attempts
//! fail, and the first batch that is acknowledged starts the catch-up.

use std::sync::Arc;
use std::time::Duration;

use callgate_ops::Shutdown;
use futures::future::join_all;

use super::Spool;
use super::format::{HEADER_LEN, Position, SpooledRecord};
use crate::publish::{Publisher, Record};

/// Records published at once. Each key's records keep their order (one idempotent producer
/// per key), and a batch is acknowledged before the next is read.
const BATCH_RECORDS: usize = 1_000;
const BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Wait after a failed batch, doubling up to the cap: the broker is down or electing.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_CAP: Duration = Duration::from_secs(5);
/// How often an idle drainer looks again without being woken (gauges, a missed wake-up).
const IDLE_TICK: Duration = Duration::from_secs(1);

/// When a drainer stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// The gateway's: once a shutdown is asked for, as soon as the spool is empty. Until then
    /// it keeps draining and the gateway bounds how long (its shutdown grace), so a replica
    /// stopped for good (a scale-down) leaves an empty volume whenever the broker takes the
    /// records.
    EmptyAfterShutdown,
    /// The `spool drain` command's: when the spool is empty, or at once when stopped.
    EmptyOrStopped,
}

/// Drains the spool until `until` says; the records drained.
pub async fn drain(spool: Arc<Spool>, publisher: Arc<Publisher>, shutdown: Shutdown, until: Until) -> u64 {
    let Some(mut cursor) = spool.cursor.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() else {
        tracing::error!("the spool already has a drainer");
        return 0;
    };
    let shared = spool.shared.clone();
    // Segments that held a bad frame are set aside for an operator, not deleted.
    let mut damaged: std::collections::HashSet<u64> = spool.corrupt_segments.iter().copied().collect();
    let mut drained = 0_u64;
    let mut retries = 0_u32;
    let mut failing = false;
    loop {
        if until == Until::EmptyOrStopped && shutdown.is_requested() {
            return drained;
        }
        let (end, next_segment) = {
            let state = shared.state();
            let end = state.segments.get(&cursor.segment).copied().unwrap_or(HEADER_LEN);
            let next = state.segments.range(cursor.segment + 1..).next().map(|(&id, _)| id);
            (end, next)
        };
        let store = spool.store.clone();
        let read = tokio::task::spawn_blocking(move || store.read(cursor, end, BATCH_RECORDS, BATCH_BYTES)).await;
        let batch = match read {
            Ok(Ok(batch)) => batch,
            Ok(Err(error)) => {
                shared.metrics.spool_errors.with_label_values(&["corrupt"]).inc();
                tracing::error!(%error, segment = cursor.segment, offset = cursor.offset, "spool frame unreadable (damage on disk): skipping the rest of its segment");
                damaged.insert(cursor.segment);
                cursor.offset = end;
                continue;
            }
            Err(join) => {
                tracing::error!(error = %join, "spool read task failed");
                Vec::new()
            }
        };
        if batch.is_empty() {
            if let Some(next) = next_segment {
                // The writer moved on, so this segment is complete and fully drained.
                let removed = if damaged.remove(&cursor.segment) {
                    spool.store.set_aside(cursor.segment)
                } else {
                    spool.store.remove_segment(cursor.segment)
                };
                if let Err(error) = removed {
                    tracing::error!(%error, segment = cursor.segment, "could not remove a drained spool segment");
                }
                shared.state().segments.remove(&cursor.segment);
                cursor = Position { segment: next, offset: HEADER_LEN };
                save_cursor(&spool, cursor);
                continue;
            }
            // Closed: at the end, and no request is writing a record (one answered during the
            // shutdown is waited for).
            if shared.try_close(cursor) && (until == Until::EmptyOrStopped || shutdown.is_requested()) {
                return drained;
            }
            tokio::select! {
                () = shared.wake.notified() => {}
                () = pause(&shutdown, IDLE_TICK) => {}
            }
            continue;
        }
        let acknowledged = publish_batch(&publisher, &batch).await;
        // The acknowledged head of the batch is done even when a later record failed: only
        // from the first unacknowledged record on is anything published again (a record after
        // it that was acknowledged too is then on the topic twice, and the worker skips the
        // second copy by its event id).
        if let Some((_, end)) = acknowledged.checked_sub(1).and_then(|last| batch.get(last)) {
            let bytes = end.offset - cursor.offset;
            cursor = *end;
            drained += acknowledged as u64;
            shared.drained(acknowledged as u64, bytes);
            save_cursor(&spool, cursor);
        }
        if acknowledged == batch.len() {
            if failing {
                tracing::info!("spool drain: the broker acknowledges again");
                failing = false;
            }
            retries = 0;
        } else {
            if !failing {
                tracing::warn!(
                    records = batch.len() - acknowledged,
                    "spool drain: the broker did not acknowledge; retrying"
                );
                failing = true;
            }
            pause(&shutdown, callgate_ops::backoff::delay(retries, RETRY_FIRST, RETRY_CAP)).await;
            retries = retries.saturating_add(1);
        }
    }
}

/// Waits `wait`, or until `shutdown` is asked for; once it has been, the whole `wait`: a
/// drainer finishing its spool keeps its pace and its backoff.
async fn pause(shutdown: &Shutdown, wait: Duration) {
    if shutdown.is_requested() {
        tokio::time::sleep(wait).await;
    } else {
        shutdown.sleep(wait).await;
    }
}

/// Publishes a batch (all of it in flight at once, in order); how many records at its head
/// were acknowledged.
async fn publish_batch(publisher: &Publisher, batch: &[(SpooledRecord, Position)]) -> usize {
    let sends = batch.iter().map(|(record, _)| async move {
        let headers: Vec<(&str, &str)> = record.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        publisher.publish(Record { key: &record.key, value: &record.value, headers: &headers }).await
    });
    join_all(sends).await.iter().take_while(|sent| sent.is_ok()).count()
}

fn save_cursor(spool: &Spool, cursor: Position) {
    if let Err(error) = spool.store.save_cursor(cursor) {
        // Only costs duplicates after a restart.
        tracing::warn!(%error, "could not save the spool cursor");
    }
}
