//! Every metric the gateway exports, defined in one place.
//!
//! Each gateway owns its registry (no process-global state), so tests can run several in one
//! process. Label values are bounded sets: provider names, outcome and stage names.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Request latency buckets: a webhook is answered in milliseconds, or 503 after the ack bound.
const REQUEST_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Stage buckets reach down to the microsecond: a directory lookup takes well under one.
const STAGE_BUCKETS: &[f64] = &[
    0.000_001, 0.000_002, 0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 5.0,
];

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `provider`, `outcome` (accepted, unknown_number, malformed, invalid_signature, …).
    pub requests: IntCounterVec,
    /// Whole request, by provider.
    pub request_duration: HistogramVec,
    /// Webhooks being handled right now.
    pub requests_in_flight: IntGauge,
    /// `stage`: lookup, verify, produce.
    pub stage_duration: HistogramVec,
    /// `reason`: timeout, queue_full, broker.
    pub produce_errors: IntCounterVec,
    pub broker_up: IntGauge,
    /// Producers rebuilt after a fatal error or a stuck state.
    pub producer_replacements: IntCounter,
    /// Payload oddities worth knowing about (`provider`, `quirk`).
    pub payload_quirks: IntCounterVec,
    pub directory_numbers: IntGauge,
    pub directory_accounts: IntGauge,
    /// Accounts left out of the directory because their secret or settings would not load.
    pub directory_invalid_accounts: IntGauge,
    /// `kind` (full, delta), `result` (ok, error).
    pub directory_reloads: IntCounterVec,
    pub directory_last_success: Gauge,
    /// Seconds since the last successful (full or delta) reload, computed at scrape time.
    pub directory_age: Gauge,
    /// 1 while webhooks are spooled (the broker was slow or down and the spool is not drained).
    pub spool_open: IntGauge,
    /// Records and frame bytes in the spool, not yet acknowledged by the broker.
    pub spool_records: IntGauge,
    pub spool_bytes: IntGauge,
    /// When the oldest record in the spool was spooled (0: empty), and its age at scrape time.
    pub spool_oldest_timestamp: Gauge,
    pub spool_oldest_age: Gauge,
    pub spool_spooled: IntCounter,
    pub spool_drained: IntCounter,
    /// One write-and-sync round of the spool writer (many webhooks share one).
    pub spool_fsync_duration: Histogram,
    /// `kind`: full, io, corrupt.
    pub spool_errors: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("callgate_gateway_requests_total", "Webhook requests by provider and outcome."),
            &["provider", "outcome"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "callgate_gateway_request_duration_seconds",
                "Time from request start to response, by provider.",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
            &["provider"],
        )
        .expect("valid metric");
        let requests_in_flight =
            IntGauge::new("callgate_gateway_requests_in_flight", "Webhooks being handled right now.")
                .expect("valid metric");
        let stage_duration = HistogramVec::new(
            HistogramOpts::new(
                "callgate_gateway_stage_duration_seconds",
                "Time spent in each stage of a webhook: lookup, verify, produce.",
            )
            .buckets(STAGE_BUCKETS.to_vec()),
            &["stage"],
        )
        .expect("valid metric");
        let produce_errors = IntCounterVec::new(
            Opts::new("callgate_gateway_produce_errors_total", "Records the broker did not acknowledge, by reason."),
            &["reason"],
        )
        .expect("valid metric");
        let broker_up = IntGauge::new(
            "callgate_gateway_broker_up",
            "1 when the broker answered the last metadata probe for the topic.",
        )
        .expect("valid metric");
        let producer_replacements = IntCounter::new(
            "callgate_gateway_producer_replacements_total",
            "Kafka producers replaced after a fatal error or while stuck.",
        )
        .expect("valid metric");
        let payload_quirks = IntCounterVec::new(
            Opts::new(
                "callgate_gateway_payload_quirks_total",
                "Accepted payloads with a known oddity (legacy keys, redacted credentials).",
            ),
            &["provider", "quirk"],
        )
        .expect("valid metric");
        let directory_numbers =
            IntGauge::new("callgate_directory_numbers", "Active numbers in the in-memory directory.")
                .expect("valid metric");
        let directory_accounts =
            IntGauge::new("callgate_directory_accounts", "Provider accounts in the directory.").expect("valid metric");
        let directory_invalid_accounts = IntGauge::new(
            "callgate_directory_invalid_accounts",
            "Provider accounts skipped because their secret or settings did not load.",
        )
        .expect("valid metric");
        let directory_reloads = IntCounterVec::new(
            Opts::new("callgate_directory_reloads_total", "Directory reloads by kind and result."),
            &["kind", "result"],
        )
        .expect("valid metric");
        let directory_last_success = Gauge::new(
            "callgate_directory_last_success_timestamp_seconds",
            "Unix time of the last successful directory reload.",
        )
        .expect("valid metric");
        let directory_age =
            Gauge::new("callgate_directory_age_seconds", "Seconds since the last successful directory reload.")
                .expect("valid metric");

        let spool_open = IntGauge::new(
            "callgate_gateway_spool_open",
            "1 while webhooks are written to the spool instead of the broker, until it is drained.",
        )
        .expect("valid metric");
        let spool_records =
            IntGauge::new("callgate_gateway_spool_records", "Records in the spool not yet acknowledged by the broker.")
                .expect("valid metric");
        let spool_bytes = IntGauge::new("callgate_gateway_spool_bytes", "Bytes of spooled records not yet drained.")
            .expect("valid metric");
        let spool_oldest_timestamp = Gauge::new(
            "callgate_gateway_spool_oldest_record_timestamp_seconds",
            "Unix time the oldest record in the spool was spooled; 0 when the spool is empty.",
        )
        .expect("valid metric");
        let spool_oldest_age = Gauge::new(
            "callgate_gateway_spool_oldest_record_age_seconds",
            "Age of the oldest record in the spool; 0 when the spool is empty.",
        )
        .expect("valid metric");
        let spool_spooled = IntCounter::new(
            "callgate_gateway_spool_spooled_records_total",
            "Records written to the spool (answered 2xx once synced).",
        )
        .expect("valid metric");
        let spool_drained = IntCounter::new(
            "callgate_gateway_spool_drained_records_total",
            "Spooled records the broker acknowledged when republished.",
        )
        .expect("valid metric");
        let spool_fsync_duration = Histogram::with_opts(
            HistogramOpts::new(
                "callgate_gateway_spool_fsync_duration_seconds",
                "One spool write round: write and fdatasync of every record that arrived during the previous one.",
            )
            .buckets(STAGE_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let spool_errors = IntCounterVec::new(
            Opts::new(
                "callgate_gateway_spool_errors_total",
                "Spool failures: full (webhook answered 503), io (write or sync failed, 503), corrupt (damaged frame on disk).",
            ),
            &["kind"],
        )
        .expect("valid metric");

        let metrics = Self {
            registry,
            requests,
            request_duration,
            requests_in_flight,
            stage_duration,
            produce_errors,
            broker_up,
            producer_replacements,
            payload_quirks,
            directory_numbers,
            directory_accounts,
            directory_invalid_accounts,
            directory_reloads,
            directory_last_success,
            directory_age,
            spool_open,
            spool_records,
            spool_bytes,
            spool_oldest_timestamp,
            spool_oldest_age,
            spool_spooled,
            spool_drained,
            spool_fsync_duration,
            spool_errors,
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 23] = [
            Box::new(metrics.requests.clone()),
            Box::new(metrics.request_duration.clone()),
            Box::new(metrics.requests_in_flight.clone()),
            Box::new(metrics.stage_duration.clone()),
            Box::new(metrics.produce_errors.clone()),
            Box::new(metrics.broker_up.clone()),
            Box::new(metrics.producer_replacements.clone()),
            Box::new(metrics.payload_quirks.clone()),
            Box::new(metrics.directory_numbers.clone()),
            Box::new(metrics.directory_accounts.clone()),
            Box::new(metrics.directory_invalid_accounts.clone()),
            Box::new(metrics.directory_reloads.clone()),
            Box::new(metrics.directory_last_success.clone()),
            Box::new(metrics.directory_age.clone()),
            Box::new(metrics.spool_open.clone()),
            Box::new(metrics.spool_records.clone()),
            Box::new(metrics.spool_bytes.clone()),
            Box::new(metrics.spool_oldest_timestamp.clone()),
            Box::new(metrics.spool_oldest_age.clone()),
            Box::new(metrics.spool_spooled.clone()),
            Box::new(metrics.spool_drained.clone()),
            Box::new(metrics.spool_fsync_duration.clone()),
            Box::new(metrics.spool_errors.clone()),
        ];
        for collector in collectors {
            metrics.registry.register(collector).expect("metric names are unique");
        }
        metrics
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        let last = self.directory_last_success.get();
        if last > 0.0 {
            self.directory_age.set((now - last).max(0.0));
        }
        let oldest = self.spool_oldest_timestamp.get();
        self.spool_oldest_age.set(if oldest > 0.0 { (now - oldest).max(0.0) } else { 0.0 });
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
