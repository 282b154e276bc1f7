//! Every metric the worker exports, defined in one place.
//!
//! Each worker owns its registry, so tests can run several in one process. Label values are
//! bounded: providers, known event types (anything else is `other`), outcomes, reasons, and the
//! partitions of the topic.

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

const APPLY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// From a few milliseconds (the broker's and the batch's share at low load) up to an hour (a
/// backlog, or records drained from the gateway's spool after a broker outage).
const AGE_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0];

/// The event types with a label of their own; the rest count as `other`.
const KNOWN_EVENT_TYPES: &[&str] = &[
    "call_started",
    "call_ended",
    "call_analyzed",
    "status-update",
    "end-of-call-report",
    "assistant-request",
    "queued",
    "initiated",
    "ringing",
    "in-progress",
    "completed",
    "busy",
    "no-answer",
    "canceled",
    "failed",
    "BOOKING_CREATED",
    "BOOKING_REQUESTED",
    "BOOKING_RESCHEDULED",
    "BOOKING_CANCELLED",
    "BOOKING_REJECTED",
];
const CALCOM_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Where an event's age is taken (`callgate_worker_event_age_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStage {
    /// The worker read its record from Kafka.
    Read,
    /// The transaction that applied it committed.
    Committed,
}

impl EventStage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Committed => "committed",
        }
    }
}

pub fn event_type_label(event_type: &str) -> &str {
    if KNOWN_EVENT_TYPES.contains(&event_type) { event_type } else { "other" }
}

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `provider`, `event_type`, `outcome`: applied, duplicate, ignored, refused, dead_lettered.
    pub events: IntCounterVec,
    /// Redeliveries recognised by their event id and skipped.
    pub duplicates: IntCounter,
    /// One partition's batch: from BEGIN to COMMIT.
    pub apply_duration: Histogram,
    /// Records per batch polled from Kafka.
    pub batch_records: Histogram,
    /// `stage`: seconds from the gateway accepting a webhook to this worker reading its record
    /// (`read`: the gateway, its spool and the broker) and to the transaction that applied it
    /// committing (`committed`: webhook to rows). The gateway's clock against the worker's.
    pub event_age: HistogramVec,
    /// `topic`, `partition`: from librdkafka's statistics (approximate on the local broker).
    pub consumer_lag: IntGaugeVec,
    /// The group's committed offset per partition: with the lag, what shows a stalled lane (lag
    /// above zero while this does not move).
    pub committed_offset: IntGaugeVec,
    pub assigned_partitions: IntGauge,
    /// `reason`: envelope, version, payload, database, panic.
    pub dlq_records: IntCounterVec,
    /// Partition lanes that ended while the worker was not stopping: their partitions stall
    /// until a restart, so /readyz and /healthz fail once this is non-zero.
    pub lane_failures: IntCounter,
    /// Partitions this worker was given and lost in rebalances, by `change`: assigned, revoked.
    pub partition_changes: IntCounterVec,
    /// Times the branch settings cache was emptied (a change to companies, branches or services).
    pub settings_cache_flushes: IntCounter,
    /// `reason`: see `appointments::ReviewReason`.
    pub calls_flagged: IntCounterVec,
    pub customers_created: IntCounter,
    pub appointments_created: IntCounter,
    /// 1 while the last database transaction succeeded.
    pub database_up: IntGauge,
    /// `reason`: transient database errors that made a batch wait and retry.
    pub retries: IntCounterVec,
    pub commit_errors: IntCounter,
    /// `operation` (create, lookup), `outcome`: created, found, not_found, not_available,
    /// rejected, unauthorized, rate_limited, conflict, server_error, timeout, transport.
    pub calcom_requests: IntCounterVec,
    /// `operation`: the whole request, answer read.
    pub calcom_request_duration: HistogramVec,
    /// `result` of one push attempt: synced, adopted, retry, failed, needs_review,
    /// rate_limited, lease_lost.
    pub calcom_pushes: IntCounterVec,
    /// Appointments being pushed by this process right now.
    pub calcom_in_flight: IntGauge,
    /// Appointments waiting to be booked (pending or in flight), across all workers.
    pub calcom_backlog: IntGauge,
    /// How long the oldest of them has waited.
    pub calcom_backlog_oldest_age: Gauge,
    /// `result` of a booking change from a Cal.com webhook: applied, unchanged, stale, unmatched.
    pub calcom_changes: IntCounterVec,
    /// `result` of each change the reconciliation read from Cal.com's bookings list: applied
    /// (no webhook had brought it), unchanged, stale, unmatched (carries our key, matches no
    /// appointment), foreign (a booking not made by callgate).
    pub calcom_reconciled: IntCounterVec,
    /// Reconciliation passes by `outcome`: complete, partial (stopped early: the rate gate, an
    /// error, the page limit; the next pass goes on).
    pub calcom_reconcile_passes: IntCounterVec,
    /// Rows the retention pass took, by `action`: content_removed (calls), call_deleted,
    /// event_pruned (ledger rows).
    pub retention_rows: IntCounterVec,
    /// Retention passes by `outcome`: complete, failed.
    pub retention_passes: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let events = IntCounterVec::new(
            Opts::new("callgate_worker_events_total", "Events consumed, by provider, event type and outcome."),
            &["provider", "event_type", "outcome"],
        )
        .expect("valid metric");
        let duplicates = IntCounter::new(
            "callgate_worker_duplicates_skipped_total",
            "Events skipped because their event id was already applied.",
        )
        .expect("valid metric");
        let apply_duration = Histogram::with_opts(
            HistogramOpts::new(
                "callgate_worker_apply_duration_seconds",
                "Time to apply one partition's share of a batch in one transaction, commit included.",
            )
            .buckets(APPLY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let event_age = HistogramVec::new(
            HistogramOpts::new(
                "callgate_worker_event_age_seconds",
                "Time from the gateway accepting a webhook to the worker reading its record (stage=read) \
                 and to its transaction committing (stage=committed).",
            )
            .buckets(AGE_BUCKETS.to_vec()),
            &["stage"],
        )
        .expect("valid metric");
        let batch_records = Histogram::with_opts(
            HistogramOpts::new("callgate_worker_batch_records", "Records per batch taken from Kafka.")
                .buckets(BATCH_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let consumer_lag = IntGaugeVec::new(
            Opts::new("callgate_worker_consumer_lag_messages", "Records behind the high watermark, per partition."),
            &["topic", "partition"],
        )
        .expect("valid metric");
        let committed_offset = IntGaugeVec::new(
            Opts::new(
                "callgate_worker_committed_offset",
                "The consumer group's committed offset per partition this worker owns (librdkafka's view).",
            ),
            &["topic", "partition"],
        )
        .expect("valid metric");
        let assigned_partitions =
            IntGauge::new("callgate_worker_assigned_partitions", "Partitions this worker owns in its group.")
                .expect("valid metric");
        let dlq_records = IntCounterVec::new(
            Opts::new("callgate_worker_dlq_records_total", "Records sent to the dead-letter topic, by reason."),
            &["reason"],
        )
        .expect("valid metric");
        let calls_flagged = IntCounterVec::new(
            Opts::new(
                "callgate_worker_calls_flagged_total",
                "Calls flagged for review because their analysis could not become an appointment.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let customers_created =
            IntCounter::new("callgate_worker_customers_created_total", "Customers created for new callers.")
                .expect("valid metric");
        let appointments_created =
            IntCounter::new("callgate_worker_appointments_created_total", "Appointments created from call analyses.")
                .expect("valid metric");
        let database_up =
            IntGauge::new("callgate_worker_database_up", "1 while the last database transaction succeeded.")
                .expect("valid metric");
        let retries = IntCounterVec::new(
            Opts::new("callgate_worker_retries_total", "Batches retried after a transient failure, by what failed."),
            &["reason"],
        )
        .expect("valid metric");
        let commit_errors = IntCounter::new(
            "callgate_worker_commit_errors_total",
            "Offset commits that failed (the records are redelivered and skipped as duplicates).",
        )
        .expect("valid metric");
        let lane_failures = IntCounter::new(
            "callgate_worker_lane_failures_total",
            "Partition lanes that stopped unexpectedly; the worker reports unhealthy until restarted.",
        )
        .expect("valid metric");
        let partition_changes = IntCounterVec::new(
            Opts::new(
                "callgate_worker_partition_changes_total",
                "Partitions assigned to or revoked from this worker by group rebalances.",
            ),
            &["change"],
        )
        .expect("valid metric");
        let settings_cache_flushes = IntCounter::new(
            "callgate_worker_settings_cache_flushes_total",
            "Times the cached branch settings (appointment fields, zone, services) were emptied after a change.",
        )
        .expect("valid metric");
        let calcom_requests = IntCounterVec::new(
            Opts::new("callgate_worker_calcom_requests_total", "Requests sent to Cal.com, by operation and outcome."),
            &["operation", "outcome"],
        )
        .expect("valid metric");
        let calcom_request_duration = HistogramVec::new(
            HistogramOpts::new("callgate_worker_calcom_request_duration_seconds", "Cal.com request time, answer read.")
                .buckets(CALCOM_BUCKETS.to_vec()),
            &["operation"],
        )
        .expect("valid metric");
        let calcom_pushes = IntCounterVec::new(
            Opts::new("callgate_worker_calcom_pushes_total", "Appointment push attempts, by result."),
            &["result"],
        )
        .expect("valid metric");
        let calcom_backlog = IntGauge::new(
            "callgate_worker_calcom_backlog",
            "Appointments waiting to be booked in Cal.com (pending or in flight), all workers together.",
        )
        .expect("valid metric");
        let calcom_backlog_oldest_age = Gauge::new(
            "callgate_worker_calcom_backlog_oldest_age_seconds",
            "How long the oldest appointment waiting to be booked has waited; 0 when none waits.",
        )
        .expect("valid metric");
        let calcom_in_flight =
            IntGauge::new("callgate_worker_calcom_in_flight", "Appointments this worker is pushing to Cal.com now.")
                .expect("valid metric");
        let calcom_changes = IntCounterVec::new(
            Opts::new("callgate_worker_calcom_changes_total", "Booking changes from Cal.com webhooks, by result."),
            &["result"],
        )
        .expect("valid metric");
        let calcom_reconciled = IntCounterVec::new(
            Opts::new(
                "callgate_worker_calcom_reconciled_total",
                "Booking changes read by the Cal.com reconciliation, by result.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let calcom_reconcile_passes = IntCounterVec::new(
            Opts::new("callgate_worker_calcom_reconcile_passes_total", "Cal.com reconciliation passes, by outcome."),
            &["outcome"],
        )
        .expect("valid metric");
        let retention_rows = IntCounterVec::new(
            Opts::new("callgate_worker_retention_rows_total", "Rows the retention pass removed, by action."),
            &["action"],
        )
        .expect("valid metric");
        let retention_passes = IntCounterVec::new(
            Opts::new("callgate_worker_retention_passes_total", "Retention passes, by outcome."),
            &["outcome"],
        )
        .expect("valid metric");
        let metrics = Self {
            registry,
            events,
            duplicates,
            apply_duration,
            batch_records,
            event_age,
            consumer_lag,
            committed_offset,
            assigned_partitions,
            dlq_records,
            lane_failures,
            partition_changes,
            settings_cache_flushes,
            calls_flagged,
            customers_created,
            appointments_created,
            database_up,
            retries,
            commit_errors,
            calcom_requests,
            calcom_request_duration,
            calcom_pushes,
            calcom_in_flight,
            calcom_backlog,
            calcom_backlog_oldest_age,
            calcom_changes,
            calcom_reconciled,
            calcom_reconcile_passes,
            retention_rows,
            retention_passes,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(metrics.events.clone()),
            Box::new(metrics.duplicates.clone()),
            Box::new(metrics.apply_duration.clone()),
            Box::new(metrics.batch_records.clone()),
            Box::new(metrics.event_age.clone()),
            Box::new(metrics.consumer_lag.clone()),
            Box::new(metrics.committed_offset.clone()),
            Box::new(metrics.assigned_partitions.clone()),
            Box::new(metrics.dlq_records.clone()),
            Box::new(metrics.lane_failures.clone()),
            Box::new(metrics.settings_cache_flushes.clone()),
            Box::new(metrics.partition_changes.clone()),
            Box::new(metrics.calls_flagged.clone()),
            Box::new(metrics.customers_created.clone()),
            Box::new(metrics.appointments_created.clone()),
            Box::new(metrics.database_up.clone()),
            Box::new(metrics.retries.clone()),
            Box::new(metrics.commit_errors.clone()),
            Box::new(metrics.calcom_requests.clone()),
            Box::new(metrics.calcom_request_duration.clone()),
            Box::new(metrics.calcom_pushes.clone()),
            Box::new(metrics.calcom_in_flight.clone()),
            Box::new(metrics.calcom_backlog.clone()),
            Box::new(metrics.calcom_backlog_oldest_age.clone()),
            Box::new(metrics.calcom_changes.clone()),
            Box::new(metrics.calcom_reconciled.clone()),
            Box::new(metrics.calcom_reconcile_passes.clone()),
            Box::new(metrics.retention_rows.clone()),
            Box::new(metrics.retention_passes.clone()),
        ];
        for collector in collectors {
            metrics.registry.register(collector).expect("metric names are unique");
        }
        for stage in [EventStage::Read, EventStage::Committed] {
            metrics.event_age.with_label_values(&[stage.as_str()]);
        }
        for change in ["assigned", "revoked"] {
            metrics.partition_changes.with_label_values(&[change]);
        }
        for outcome in ["complete", "partial"] {
            metrics.calcom_reconcile_passes.with_label_values(&[outcome]);
        }
        for outcome in ["complete", "failed"] {
            metrics.retention_passes.with_label_values(&[outcome]);
        }
        for action in ["content_removed", "call_deleted", "event_pruned"] {
            metrics.retention_rows.with_label_values(&[action]);
        }
        for reason in crate::appointments::ReviewReason::ALL {
            metrics.calls_flagged.with_label_values(&[reason.as_str()]);
        }
        metrics
    }

    /// An event's age at `stage`, from the gateway's `received_at` to `at` (zero when the
    /// clocks disagree the other way).
    pub fn observe_event_age(&self, stage: EventStage, received_at: DateTime<Utc>, at: SystemTime) {
        let age = (DateTime::<Utc>::from(at) - received_at).to_std().unwrap_or_default();
        self.event_age.with_label_values(&[stage.as_str()]).observe(age.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("Prometheus text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
