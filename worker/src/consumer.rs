//! The consumer loop: Kafka records in, transactions out, offsets committed only after the
//! transactions that applied them.
//!
//! A dispatcher reads Kafka and feeds one bounded queue per partition (a lane). A lane takes
//! what has queued (up to `--batch-max-records`, waiting `--batch-max-wait` for more), applies
//! it in order in one transaction, dead-letters what cannot be decoded, and reports the next
//! offset; lanes run in parallel, one transaction per pooled connection. The dispatcher commits
//! the reported offsets every 100 ms. A crash anywhere before a commit means those records are
//! delivered again, and `processed_events` turns every record already applied into a no-op:
//! at-least-once delivery, exactly-once effects.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use callgate_contract::EventEnvelope;
use callgate_contract::booking::{self, BookingEnvelope};
use callgate_contract::call::normalize;
use callgate_contract::envelope::{ENVELOPE_VERSION, headers as record_headers};
use callgate_ops::Shutdown;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Headers as _, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc};

use crate::apply::{self, BookingRecord, CallRecord, Outcome, Prepared};
use crate::catalog::Catalog;
use crate::config::RunConfig;
use crate::dlq::{DeadLetters, Letter};
use crate::kafka::{Assigned, KafkaConsumer};
use crate::metrics::{EventStage, Metrics, event_type_label};

/// How often applied offsets are committed (asynchronously; synchronously at shutdown).
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// A record on its way to a lane, with the generation of the assignment it was read under and
/// when it was read (for `callgate_worker_event_age_seconds{stage="read"}`).
#[derive(Debug)]
struct Queued {
    message: OwnedMessage,
    generation: u64,
    read_at: SystemTime,
}

/// What a lane may apply of a batch: the records read under the partition's current
/// assignment (`current`; None once it is revoked), and the offset to commit after them.
fn current_records(batch: Vec<Queued>, current: Option<u64>) -> Option<(Vec<Queued>, i64)> {
    let current = current?;
    let fresh: Vec<Queued> = batch.into_iter().filter(|queued| queued.generation == current).collect();
    let next_offset = fresh.last()?.message.offset() + 1;
    Some((fresh, next_offset))
}

/// A record that cannot be applied, on its way to the DLQ topic.
#[derive(Debug)]
struct DeadLetter {
    partition: i32,
    offset: i64,
    reason: &'static str,
    error: String,
    source: Option<&'static str>,
    event_type: Option<String>,
}

/// The batch was abandoned because shutdown was requested while it waited for a retry.
#[derive(Debug)]
struct Stopped;

enum Failure {
    Stopped,
    Permanent(String),
    /// Applying panicked: a defect, since no input may cause one. Handled like a permanent
    /// failure (the record at fault is found and dead-lettered), so the lane lives on.
    Panicked(String),
}

pub struct Pipeline {
    consumer: Arc<KafkaConsumer>,
    dlq: DeadLetters,
    pool: PgPool,
    metrics: Metrics,
    config: Arc<RunConfig>,
    /// One transaction per pooled connection, one connection kept for the probe: a lane waits
    /// here rather than in the pool, whose acquire timeout would read as an outage.
    transactions: Semaphore,
    assigned: Assigned,
    catalog: Arc<Catalog>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("topic", &self.config.kafka_topic).finish_non_exhaustive()
    }
}

/// Where one lane has got: every record of `partition` below `next_offset` is applied (or
/// dead-lettered), so that offset may be committed.
#[derive(Debug)]
struct Progress {
    topic: String,
    partition: i32,
    next_offset: i64,
}

/// A partition's queue and the task applying it.
#[derive(Debug)]
struct Lane {
    records: mpsc::Sender<Queued>,
    task: tokio::task::JoinHandle<()>,
}

/// Records a lane may hold before the dispatcher waits (and so stops reading from Kafka).
const LANE_CAPACITY: usize = 2_000;

impl Pipeline {
    pub fn new(
        consumer: Arc<KafkaConsumer>,
        dlq: DeadLetters,
        pool: PgPool,
        metrics: Metrics,
        config: Arc<RunConfig>,
        assigned: Assigned,
        catalog: Arc<Catalog>,
    ) -> Self {
        // One connection for the probe, one for the settings cache's listener.
        let slots = usize::try_from(config.database_max_connections.saturating_sub(2)).unwrap_or(1).max(1);
        Self { consumer, dlq, pool, metrics, config, transactions: Semaphore::new(slots), assigned, catalog }
    }

    /// Consumes until `shutdown`. Each partition has a lane (a task) that applies its records
    /// in order, a batch per transaction; lanes run in parallel, bounded by the pool. The
    /// dispatcher reads Kafka, feeds the lanes and commits what they report as applied. On
    /// shutdown every lane finishes the batch in hand, the offsets are committed, and the
    /// worker leaves the group.
    pub async fn run(self, shutdown: Shutdown) {
        let pipeline = Arc::new(self);
        let (progress_tx, mut progress_rx) = mpsc::unbounded_channel::<Progress>();
        let mut lanes: HashMap<(String, i32), Lane> = HashMap::new();
        let mut failed: HashSet<(String, i32)> = HashSet::new();
        let mut uncommitted: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut tick = tokio::time::interval(COMMIT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.requested() => break,
                Some(progress) = progress_rx.recv() => {
                    uncommitted.insert((progress.topic, progress.partition), progress.next_offset);
                }
                _ = tick.tick() => {
                    pipeline.check_lanes(&mut lanes, &mut failed);
                    pipeline.commit(&mut uncommitted, CommitMode::Async);
                }
                received = pipeline.consumer.recv() => match received {
                    Ok(message) => {
                        let message = message.detach();
                        let key = (message.topic().to_owned(), message.partition());
                        if failed.contains(&key) {
                            continue; // never committed: delivered again after the restart
                        }
                        // Read before a revoke and handed over after it: not ours to apply.
                        let Some(generation) = pipeline.generation(&key) else { continue };
                        let queued = Queued { message, generation, read_at: SystemTime::now() };
                        let lane = lanes.entry(key).or_insert_with(|| {
                            pipeline.lane(progress_tx.clone(), shutdown.clone())
                        });
                        // A full lane makes the dispatcher wait: backpressure all the way to Kafka.
                        tokio::select! {
                            () = shutdown.requested() => break,
                            sent = lane.records.send(queued) => if sent.is_err() {
                                tracing::error!("a partition lane stopped; its records will be delivered again");
                            },
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "consumer error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        drop(progress_tx);
        for (_, lane) in lanes {
            drop(lane.records);
            if let Err(error) = lane.task.await {
                tracing::error!(%error, "a partition lane failed");
            }
        }
        while let Ok(progress) = progress_rx.try_recv() {
            uncommitted.insert((progress.topic, progress.partition), progress.next_offset);
        }
        pipeline.commit(&mut uncommitted, CommitMode::Sync);
        // Leaves the group at once, so the partitions move to the other workers without
        // waiting for the session timeout.
        pipeline.consumer.unsubscribe();
        tracing::info!("consumer stopped");
    }

    /// The generation of the partition's current assignment, if this worker owns it.
    fn generation(&self, partition: &(String, i32)) -> Option<u64> {
        self.assigned.lock().unwrap_or_else(std::sync::PoisonError::into_inner).generation(partition)
    }

    fn lane(self: &Arc<Self>, progress: mpsc::UnboundedSender<Progress>, shutdown: Shutdown) -> Lane {
        let (records, queue) = mpsc::channel(LANE_CAPACITY);
        let task = tokio::spawn(self.clone().run_lane(queue, progress, shutdown));
        Lane { records, task }
    }

    async fn run_lane(
        self: Arc<Self>,
        mut queue: mpsc::Receiver<Queued>,
        progress: mpsc::UnboundedSender<Progress>,
        shutdown: Shutdown,
    ) {
        loop {
            if shutdown.is_requested() {
                return;
            }
            let Some(first) = queue.recv().await else { return };
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + self.config.batch_max_wait;
            while batch.len() < self.config.batch_max_records.max(1) {
                // What is queued already is taken with try_recv: an awaited recv spends tokio's
                // co-operative budget and, past the deadline, would cut a full queue short.
                match queue.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        match tokio::time::timeout_at(deadline, queue.recv()).await {
                            Ok(Some(message)) => batch.push(message),
                            Ok(None) | Err(_) => break,
                        }
                    }
                }
            }
            let Some(last) = batch.last() else { return };
            let key = (last.message.topic().to_owned(), last.message.partition());
            let partition = key.1;
            let queued = batch.len();
            let Some((batch, next_offset)) = current_records(batch, self.generation(&key)) else {
                tracing::debug!(
                    partition,
                    records = queued,
                    "partition moved away since these were read; they are left to its current owner"
                );
                continue;
            };
            if batch.len() < queued {
                tracing::debug!(
                    partition,
                    dropped = queued - batch.len(),
                    "records read under an earlier assignment dropped"
                );
            }
            if self.process(&batch, &shutdown).await.is_err() {
                tracing::warn!(partition, "shutdown while a batch waited to be retried; it will be delivered again");
                return;
            }
            let (topic, partition) = key;
            let _ = progress.send(Progress { topic, partition, next_offset });
        }
    }

    /// Applies one partition's batch, in order: decoded records in one transaction, the rest to
    /// the dead-letter topic.
    async fn process(&self, batch: &[Queued], shutdown: &Shutdown) -> Result<(), Stopped> {
        self.metrics.batch_records.observe(batch.len() as f64);
        let mut records = Vec::with_capacity(batch.len());
        let mut dead = Vec::new();
        for queued in batch {
            match decode(&queued.message) {
                Ok(prepared) => {
                    self.metrics.observe_event_age(EventStage::Read, prepared.received_at(), queued.read_at);
                    records.push(prepared);
                }
                Err(letter) => dead.push(letter),
            }
        }
        let (outcomes, letters) = self.apply_partition(&records, shutdown).await?;
        let committed = SystemTime::now();
        dead.extend(letters);
        for letter in &dead {
            self.dead_letter(batch, letter, shutdown).await?;
        }
        for (record, outcome) in &outcomes {
            self.count(record, outcome);
            self.metrics.observe_event_age(EventStage::Committed, record.received_at(), committed);
        }
        Ok(())
    }

    /// One partition's records in one transaction; if a record makes the transaction fail for
    /// good, each record gets a transaction of its own and the failing one is dead-lettered.
    async fn apply_partition<'a>(
        &self,
        records: &'a [Prepared],
        shutdown: &Shutdown,
    ) -> Result<(Vec<(&'a Prepared, Outcome)>, Vec<DeadLetter>), Stopped> {
        let all: Vec<&Prepared> = records.iter().collect();
        match self.apply_with_retry(&all, shutdown).await {
            Ok(outcomes) => return Ok((all.into_iter().zip(outcomes).collect(), Vec::new())),
            Err(Failure::Stopped) => return Err(Stopped),
            Err(Failure::Permanent(error) | Failure::Panicked(error)) if records.len() > 1 => {
                tracing::warn!(%error, records = records.len(), "batch failed; applying its records one by one");
            }
            Err(Failure::Permanent(_) | Failure::Panicked(_)) => {}
        }
        let mut done = Vec::new();
        let mut letters = Vec::new();
        for record in records {
            let (reason, error) = match self.apply_with_retry(&[record], shutdown).await {
                Ok(mut outcome) => {
                    done.push((record, outcome.remove(0)));
                    continue;
                }
                Err(Failure::Stopped) => return Err(Stopped),
                Err(Failure::Permanent(error)) => ("database", error),
                Err(Failure::Panicked(error)) => ("panic", error),
            };
            letters.push(DeadLetter {
                partition: record.partition(),
                offset: record.offset(),
                reason,
                error,
                source: Some(record.source()),
                event_type: Some(record.event_type().to_owned()),
            });
        }
        Ok((done, letters))
    }

    async fn apply_with_retry(&self, records: &[&Prepared], shutdown: &Shutdown) -> Result<Vec<Outcome>, Failure> {
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let applied = match self.transactions.acquire().await {
                Ok(_slot) => {
                    guarded(apply::apply_batch(&self.pool, &self.catalog, records)).await.map_err(|message| {
                        tracing::error!(
                            %message, records = records.len(),
                            "applying a batch panicked (a defect); the record at fault goes to the dead-letter topic"
                        );
                        Failure::Panicked(format!("panicked: {message}"))
                    })?
                }
                Err(_) => return Err(Failure::Stopped),
            };
            match applied {
                Ok(outcomes) => {
                    self.metrics.apply_duration.observe(started.elapsed().as_secs_f64());
                    self.metrics.database_up.set(1);
                    return Ok(outcomes);
                }
                Err(error) if apply::is_transient(&error) => {
                    self.metrics.database_up.set(0);
                    self.metrics.retries.with_label_values(&["database"]).inc();
                    tracing::warn!(%error, attempt, "database unavailable; the batch waits and is retried");
                    self.backoff(attempt, shutdown).await.map_err(|Stopped| Failure::Stopped)?;
                    attempt += 1;
                }
                Err(error) => return Err(Failure::Permanent(error.to_string())),
            }
        }
    }

    /// Counts and reports the lanes that ended on their own (a panic outside the apply, which
    /// the guard cannot catch): their partitions stall until the worker restarts, so the worker
    /// says so on /readyz and /healthz (an orchestrator then restarts it, and the uncommitted
    /// records are delivered again) instead of staying silent.
    /// A failed partition gets no new lane: one would apply the records behind the lost ones
    /// and commit past them.
    fn check_lanes(&self, lanes: &mut HashMap<(String, i32), Lane>, failed: &mut HashSet<(String, i32)>) {
        lanes.retain(|key, lane| {
            if !lane.task.is_finished() {
                return true;
            }
            let (topic, partition) = key;
            self.metrics.lane_failures.inc();
            tracing::error!(
                topic,
                partition,
                "a partition lane stopped unexpectedly; the partition stalls until the worker restarts (/healthz fails)"
            );
            failed.insert(key.clone());
            false
        });
    }

    /// Waits before retry `attempt`, on the shared schedule from 100 ms up to
    /// --retry-max-backoff; `Stopped` when shutdown came first.
    async fn backoff(&self, attempt: u32, shutdown: &Shutdown) -> Result<(), Stopped> {
        let wait = callgate_ops::backoff::delay(attempt, Duration::from_millis(100), self.config.retry_max_backoff);
        if shutdown.sleep(wait).await { Err(Stopped) } else { Ok(()) }
    }

    /// Publishes the original record, with the error in headers, to the DLQ topic; retries until
    /// the broker acknowledged it, because its offset is committed right after.
    async fn dead_letter(&self, batch: &[Queued], letter: &DeadLetter, shutdown: &Shutdown) -> Result<(), Stopped> {
        let Some(original) = batch
            .iter()
            .map(|queued| &queued.message)
            .find(|m| m.partition() == letter.partition && m.offset() == letter.offset)
        else {
            return Ok(());
        };
        tracing::warn!(
            partition = letter.partition, offset = letter.offset, reason = letter.reason, error = %letter.error,
            "record sent to the dead-letter topic"
        );
        let source = format!("{}/{}/{}", original.topic(), letter.partition, letter.offset);
        let written = Letter {
            key: original.key(),
            payload: original.payload(),
            original: original.headers(),
            reason: letter.reason,
            error: &letter.error,
            source: Some(&source),
        };
        let mut attempt = 0;
        while let Err(error) = self.dlq.send(&written).await {
            self.metrics.retries.with_label_values(&["dlq"]).inc();
            tracing::warn!(%error, attempt, "dead-letter topic unavailable; retrying");
            self.backoff(attempt, shutdown).await?;
            attempt += 1;
        }
        let provider = letter.source.unwrap_or("unknown");
        let event_type = letter.event_type.as_deref().map_or("other", event_type_label);
        self.metrics.events.with_label_values(&[provider, event_type, "dead_lettered"]).inc();
        Ok(())
    }

    fn count(&self, record: &Prepared, outcome: &Outcome) {
        self.metrics
            .events
            .with_label_values(&[record.source(), event_type_label(record.event_type()), outcome.label()])
            .inc();
        match outcome {
            Outcome::Duplicate => {
                self.metrics.duplicates.inc();
                tracing::debug!(event_id = %record.event_id(), subject = %record.subject(), "duplicate skipped");
            }
            Outcome::Booking(result) => {
                self.metrics.calcom_changes.with_label_values(&[result.as_str()]).inc();
            }
            Outcome::Applied(effects) => {
                if effects.customer_created {
                    self.metrics.customers_created.inc();
                }
                if effects.appointment_created {
                    self.metrics.appointments_created.inc();
                }
                if let Some(reason) = effects.flagged {
                    self.metrics.calls_flagged.with_label_values(&[reason.as_str()]).inc();
                }
            }
            Outcome::Ignored | Outcome::Refused => {}
        }
    }

    /// Commits what the lanes applied. An asynchronous commit's failure (the partition moved
    /// to another worker meanwhile) is counted by the context; the records are then delivered
    /// again and skipped as duplicates.
    fn commit(&self, uncommitted: &mut BTreeMap<(String, i32), i64>, mode: CommitMode) {
        if uncommitted.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in std::mem::take(uncommitted) {
            if let Err(error) = list.add_partition_offset(&topic, partition, Offset::Offset(offset)) {
                tracing::error!(%error, "cannot build the commit list");
            }
        }
        if let Err(error) = self.consumer.commit(&list, mode) {
            self.metrics.commit_errors.inc();
            tracing::warn!(%error, "offset commit failed; those records will be delivered again and skipped");
        }
    }
}

/// Envelope and payload of a record, or why it cannot be processed at all.
fn decode(message: &OwnedMessage) -> Result<Prepared, DeadLetter> {
    let letter = |reason, error: String, source: Option<&'static str>, event_type: Option<&str>| DeadLetter {
        partition: message.partition(),
        offset: message.offset(),
        reason,
        error,
        source,
        event_type: event_type.map(str::to_owned),
    };
    let (partition, offset) = (message.partition(), message.offset());
    let payload = message.payload().unwrap_or_default();
    let version_error = |version: u16| format!("envelope version {version} (this worker reads {ENVELOPE_VERSION})");
    if is_booking(message) {
        let envelope: BookingEnvelope = serde_json::from_slice(payload)
            .map_err(|e| letter("envelope", format!("not a booking envelope: {e}"), Some(booking::SOURCE), None))?;
        let source = Some(booking::SOURCE);
        if envelope.version != ENVELOPE_VERSION {
            return Err(letter("version", version_error(envelope.version), source, Some(&envelope.event_type)));
        }
        let change = booking::parse(&envelope.event_type, envelope.payload.get())
            .map_err(|e| letter("payload", e.to_string(), source, Some(&envelope.event_type)))?;
        return Ok(Prepared::Booking(BookingRecord { envelope, change, partition, offset }));
    }
    let envelope: EventEnvelope = serde_json::from_slice(payload)
        .map_err(|e| letter("envelope", format!("not a call-events envelope: {e}"), None, None))?;
    let source = Some(envelope.provider.as_str());
    if envelope.version != ENVELOPE_VERSION {
        return Err(letter("version", version_error(envelope.version), source, Some(&envelope.event_type)));
    }
    let normalized = normalize(envelope.provider, &envelope.event_type, &envelope.payload)
        .map_err(|e| letter("payload", e.to_string(), source, Some(&envelope.event_type)))?;
    Ok(Prepared::Call(CallRecord { envelope, normalized, partition, offset }))
}

/// A booking record says so in its headers; a call event has no kind header.
fn is_booking(message: &OwnedMessage) -> bool {
    message.headers().is_some_and(|headers| {
        headers
            .iter()
            .any(|h| h.key == record_headers::ENVELOPE_KIND && h.value == Some(booking::BOOKING_KIND.as_bytes()))
    })
}

/// Runs `attempt`, turning a panic inside it into the panic's message: a defect must cost one
/// record (dead-lettered), never the lane and with it the partition.
async fn guarded<T>(attempt: impl Future<Output = T>) -> Result<T, String> {
    use futures::FutureExt as _;
    std::panic::AssertUnwindSafe(attempt).catch_unwind().await.map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|message| (*message).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::Assignments;

    fn queued(offsets: std::ops::Range<i64>, generation: u64) -> Vec<Queued> {
        offsets
            .map(|offset| Queued {
                message: OwnedMessage::new(None, None, "t".into(), rdkafka::Timestamp::NotAvailable, 0, offset, None),
                generation,
                read_at: SystemTime::now(),
            })
            .collect()
    }

    fn offsets(applied: &Option<(Vec<Queued>, i64)>) -> Option<(Vec<i64>, i64)> {
        applied.as_ref().map(|(records, next)| (records.iter().map(|q| q.message.offset()).collect(), *next))
    }

    #[test]
    fn after_a_revoke_and_an_assign_only_records_read_under_the_new_assignment_are_applied() {
        let mut assignments = Assignments::default();
        assignments.assign("t", 0);
        let first = assignments.generation(&("t".to_owned(), 0)).unwrap();
        // Offsets 10..20 were read and queued; the lane took 10..15 as a batch when the
        // partition was revoked: dropped, nothing committed past 10.
        let mut queue = queued(10..20, first);
        let taken: Vec<Queued> = queue.drain(..5).collect();
        assignments.revoke("t", 0);
        assert!(current_records(taken, assignments.generation(&("t".to_owned(), 0))).is_none());
        // It comes back; librdkafka reads again from the committed offset, 10.
        assignments.assign("t", 0);
        let second = assignments.generation(&("t".to_owned(), 0)).unwrap();
        assert_ne!(first, second);
        queue.extend(queued(10..20, second));
        // The lane's next batch: the stale 15..20, then the second copies of 10..20. Checking
        // ownership alone applied the stale 15..20 and committed 20, past the dropped 10..15:
        // a crash before their second copies were applied lost them.
        let stale_batch: Vec<Queued> = queue.drain(..5).collect();
        assert!(current_records(stale_batch, Some(second)).is_none(), "stale records are never applied");
        let applied = current_records(queue, Some(second));
        assert_eq!(offsets(&applied), Some(((10..20).collect(), 20)));
    }

    #[test]
    fn a_mixed_batch_commits_only_after_its_current_records() {
        let mut batch = queued(15..18, 1);
        batch.extend(queued(10..13, 2));
        assert_eq!(offsets(&current_records(batch, Some(2))), Some((vec![10, 11, 12], 13)));
    }

    #[tokio::test]
    async fn a_panic_while_applying_becomes_an_error_and_not_a_dead_lane() {
        assert_eq!(guarded(async { 7 }).await, Ok(7));
        let overflow = guarded(async {
            let at = chrono::DateTime::<chrono::Utc>::MAX_UTC;
            at + chrono::TimeDelta::minutes(30)
        });
        assert!(overflow.await.unwrap_err().contains("overflowed"));
        let formatted = guarded(async { panic!("record {} is odd", 42) });
        assert_eq!(formatted.await, Err::<(), _>("record 42 is odd".to_owned()));
    }
}
