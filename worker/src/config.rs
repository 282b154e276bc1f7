//! `callgate-worker run`'s configuration: every option a flag with a `CALLGATE_*` environment
//! fallback and a documented default (`callgate-worker run --help`).

use std::net::SocketAddr;
use std::time::Duration;

use callgate_contract::envelope::{DLQ_TOPIC, EVENTS_TOPIC};
use callgate_ops::{KafkaPropertyParser, LogConfig, SecretString, parse_duration};
use clap::{Args, ValueEnum};

/// The group's partition assignor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Assignor {
    Eager,
    CooperativeSticky,
}

impl Assignor {
    /// librdkafka's `partition.assignment.strategy`.
    pub fn strategy(self) -> &'static str {
        match self {
            Self::Eager => "range,roundrobin",
            Self::CooperativeSticky => "cooperative-sticky",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct RunConfig {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "CALLGATE_WORKER_LISTEN", default_value = "0.0.0.0:9090")]
    pub listen: SocketAddr,

    /// Postgres URL.
    #[arg(long, env = "CALLGATE_DATABASE_URL", hide_env_values = true)]
    pub database_url: SecretString,

    /// Maximum Postgres connections: one per partition applied in parallel, plus one for the
    /// probe and one for the settings cache's change listener (at least 3).
    #[arg(long, env = "CALLGATE_DATABASE_MAX_CONNECTIONS", default_value_t = 8)]
    pub database_max_connections: u32,

    /// Kafka bootstrap servers.
    #[arg(long, env = "CALLGATE_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Topic of accepted events.
    #[arg(long, env = "CALLGATE_KAFKA_TOPIC", default_value = EVENTS_TOPIC)]
    pub kafka_topic: String,

    /// Topic for records that cannot be processed (the original record plus the error, in headers).
    #[arg(long, env = "CALLGATE_KAFKA_DLQ_TOPIC", default_value = DLQ_TOPIC)]
    pub kafka_dlq_topic: String,

    /// Consumer group: every worker of one deployment uses the same one.
    #[arg(long, env = "CALLGATE_KAFKA_GROUP_ID", default_value = "callgate-worker")]
    pub kafka_group_id: String,

    /// Extra librdkafka properties for both the consumer and the DLQ producer, `key=value`
    /// separated by commas (e.g. TLS or SASL settings).
    #[arg(
        long,
        env = "CALLGATE_KAFKA_PROPERTIES",
        value_delimiter = ',',
        hide_env_values = true,
        value_parser = KafkaPropertyParser
    )]
    pub kafka_properties: Vec<SecretString>,

    /// Extra librdkafka properties for the consumer only (e.g. `fetch.wait.max.ms`); applied
    /// after `--kafka-properties`. librdkafka warns at start about a property given to the
    /// wrong kind of client, so each goes where it applies.
    #[arg(
        long,
        env = "CALLGATE_KAFKA_CONSUMER_PROPERTIES",
        value_delimiter = ',',
        hide_env_values = true,
        value_parser = KafkaPropertyParser
    )]
    pub kafka_consumer_properties: Vec<SecretString>,

    /// Extra librdkafka properties for the DLQ producer only (e.g. `linger.ms`);
    /// applied after `--kafka-properties`.
    #[arg(
        long,
        env = "CALLGATE_KAFKA_PRODUCER_PROPERTIES",
        value_delimiter = ',',
        hide_env_values = true,
        value_parser = KafkaPropertyParser
    )]
    pub kafka_producer_properties: Vec<SecretString>,

    /// How often librdkafka reports statistics (consumer lag per partition).
    #[arg(long, env = "CALLGATE_KAFKA_STATS_INTERVAL", value_parser = parse_duration, default_value = "5s")]
    pub kafka_stats_interval: Duration,

    /// Static group membership: this worker's stable name in the group (e.g. the pod's name
    /// from a StatefulSet). A restarted worker with the same name gets its partitions back
    /// without a rebalance if it returns within the session timeout; a worker that never
    /// returns keeps them idle until that timeout. Unset (the default): dynamic membership.
    #[arg(long, env = "CALLGATE_KAFKA_GROUP_INSTANCE_ID")]
    pub kafka_group_instance_id: Option<String>,

    /// How the group shares partitions: `cooperative-sticky` (the default: only the partitions
    /// that move stop, so a worker joining or leaving does not pause the others) or `eager`
    /// (librdkafka's range/round-robin: every rebalance stops every worker until the group has
    /// settled). Every worker of a group must use the same. librdkafka cannot list both kinds at
    /// once, so the two-step rolling switch of Kafka's Java client is not available: stop every
    /// worker, then start them with the new setting.
    #[arg(long, env = "CALLGATE_KAFKA_ASSIGNOR", value_enum, default_value_t = Assignor::CooperativeSticky)]
    pub kafka_assignor: Assignor,

    /// Most records taken from Kafka into one batch.
    #[arg(long, env = "CALLGATE_BATCH_MAX_RECORDS", default_value_t = 500)]
    pub batch_max_records: usize,

    /// How long a batch waits for more records after its first one. A lane with a backlog never
    /// waits (what is queued is taken at once); the wait only matters at moderate load, where it
    /// trades each record's latency for fewer transactions. 1 ms lets the dispatcher finish
    /// handing over a fetch's records; at 1,000 webhooks/s, 5 ms saved 10-20 % of the
    /// transactions for 5-12 ms more at the p50 (BENCHMARKS.md, "End to end: where the time goes").
    #[arg(long, env = "CALLGATE_BATCH_MAX_WAIT", value_parser = parse_duration, default_value = "1ms")]
    pub batch_max_wait: Duration,

    /// Longest wait between two attempts when Postgres or the DLQ topic is unavailable
    /// (the wait doubles from 100 ms up to this).
    #[arg(long, env = "CALLGATE_RETRY_MAX_BACKOFF", value_parser = parse_duration, default_value = "10s")]
    pub retry_max_backoff: Duration,

    /// Master key that opens the Cal.com API keys sealed in the database (base64, 32 bytes).
    /// Without it this worker does not push bookings to Cal.com.
    #[arg(long, env = "CALLGATE_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<SecretString>,

    /// Previous master keys (comma-separated), still accepted for opening during a key rotation.
    #[arg(long, env = "CALLGATE_SECRET_KEYS_PREVIOUS", hide_env_values = true, value_delimiter = ',')]
    pub secret_keys_previous: Vec<SecretString>,

    #[command(flatten)]
    pub calcom: CalcomConfig,

    #[command(flatten)]
    pub retention: RetentionConfig,

    #[command(flatten)]
    pub log: LogConfig,
}

/// How long callers' data is kept (README, "Retention and erasure"). A company's
/// `retention_content_days` / `retention_call_days` override the first two.
#[derive(Debug, Clone, Args)]
pub struct RetentionConfig {
    /// How often this worker runs the retention pass; 0s: never (another worker may).
    #[arg(long = "retention-interval", env = "CALLGATE_RETENTION_INTERVAL", value_parser = parse_duration, default_value = "1h")]
    pub interval: Duration,

    /// Days after a call's first event when its transcript, summary, analysis, sentiment and
    /// recording addresses are removed.
    #[arg(long = "retention-content-days", env = "CALLGATE_RETENTION_CONTENT_DAYS", default_value_t = 90)]
    pub content_days: u32,

    /// Days after a call's first event when the call is deleted (its appointment stays).
    #[arg(long = "retention-call-days", env = "CALLGATE_RETENTION_CALL_DAYS", default_value_t = 730)]
    pub call_days: u32,

    /// How long an applied event stays in the dedupe ledger (`processed_events`). Longer than
    /// any redelivery: the topics keep records 7 days (a consumer cannot be handed an older
    /// one), plus the spool and a dead-letter replay's delay; at least 8 days.
    #[arg(long = "retention-ledger", env = "CALLGATE_RETENTION_LEDGER", value_parser = parse_duration, default_value = "30d")]
    pub ledger: Duration,

    /// Rows per statement: each batch is its own short transaction.
    #[arg(long = "retention-batch", env = "CALLGATE_RETENTION_BATCH", default_value_t = 500)]
    pub batch: u32,
}

impl RetentionConfig {
    /// The shortest ledger that outlives the topics' 7 days of retention.
    pub const MIN_LEDGER: Duration = Duration::from_secs(8 * 86_400);

    /// Settings that cannot work together.
    pub fn validate(&self) -> Result<(), String> {
        if self.ledger < Self::MIN_LEDGER {
            return Err(format!(
                "--retention-ledger ({:?}) must outlive the topics' 7 days of retention: at least 8d",
                self.ledger
            ));
        }
        if self.content_days == 0 || self.call_days < self.content_days || self.batch == 0 {
            return Err("--retention-content-days and --retention-batch must be positive, and \
                        --retention-call-days at least --retention-content-days"
                .to_owned());
        }
        Ok(())
    }
}

/// The default of --calcom-reconcile-interval (also what `calcom reconcile` sets as the next
/// pass of the account it reconciles).
pub const RECONCILE_INTERVAL: &str = "5m";

/// How to reach Cal.com and how fast one API key may be used: shared by the push, the
/// reconciliation and the `calcom reconcile` command.
#[derive(Debug, Clone, Args)]
pub struct CalcomApi {
    /// Base URL of the Cal.com API (v2 paths are appended).
    #[arg(long = "calcom-base-url", env = "CALLGATE_CALCOM_BASE_URL", default_value = "https://api.cal.com")]
    pub base_url: String,

    /// `cal-api-version` of the bookings endpoints. Without a known version Cal.com silently
    /// serves an older endpoint with another body shape.
    #[arg(long = "calcom-api-version", env = "CALLGATE_CALCOM_API_VERSION", default_value = "2024-08-13")]
    pub api_version: String,

    /// Time allowed to open a connection to Cal.com.
    #[arg(long = "calcom-connect-timeout", env = "CALLGATE_CALCOM_CONNECT_TIMEOUT", value_parser = parse_duration, default_value = "3s")]
    pub connect_timeout: Duration,

    /// Time allowed for one request, answer included; past it the outcome is unknown and the
    /// booking is looked up before anything is sent again.
    #[arg(long = "calcom-request-timeout", env = "CALLGATE_CALCOM_REQUEST_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub request_timeout: Duration,

    /// Requests per minute one API key may spend, across all workers (Cal.com allows 120).
    /// A company's `calcom_accounts.rate_per_minute` overrides it.
    #[arg(long = "calcom-rate-per-minute", env = "CALLGATE_CALCOM_RATE_PER_MINUTE", default_value_t = 100)]
    pub rate_per_minute: u32,

    /// Requests one API key may send at once after a quiet spell.
    #[arg(long = "calcom-burst", env = "CALLGATE_CALCOM_BURST", default_value_t = 5)]
    pub burst: u32,
}

/// The Cal.com booking push (docs/calcom.md).
#[derive(Debug, Clone, Args)]
pub struct CalcomConfig {
    /// Push pending appointments to Cal.com, and reconcile with it, from this process (false:
    /// consume only).
    #[arg(long = "calcom-push", env = "CALLGATE_CALCOM_PUSH", default_value_t = true, action = clap::ArgAction::Set)]
    pub push: bool,

    #[command(flatten)]
    pub api: CalcomApi,

    /// Appointments this process pushes at the same time.
    #[arg(long = "calcom-concurrency", env = "CALLGATE_CALCOM_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,

    /// Attempts before an appointment's push ends `failed` (and is dead-lettered).
    #[arg(long = "calcom-max-attempts", env = "CALLGATE_CALCOM_MAX_ATTEMPTS", default_value_t = 12)]
    pub max_attempts: u32,

    /// Wait before the second attempt; it doubles (with jitter) up to --calcom-max-backoff.
    #[arg(long = "calcom-initial-backoff", env = "CALLGATE_CALCOM_INITIAL_BACKOFF", value_parser = parse_duration, default_value = "2s")]
    pub initial_backoff: Duration,

    /// Longest wait between two attempts.
    #[arg(long = "calcom-max-backoff", env = "CALLGATE_CALCOM_MAX_BACKOFF", value_parser = parse_duration, default_value = "10m")]
    pub max_backoff: Duration,

    /// How long a claimed appointment stays with this worker; a crashed worker's claims are
    /// taken over after it. At least three request timeouts (an attempt may look up, create
    /// and look up again).
    #[arg(long = "calcom-lease", env = "CALLGATE_CALCOM_LEASE", value_parser = parse_duration, default_value = "60s")]
    pub lease: Duration,

    /// How often to look for due appointments when there was nothing to do.
    #[arg(long = "calcom-poll-interval", env = "CALLGATE_CALCOM_POLL_INTERVAL", value_parser = parse_duration, default_value = "1s")]
    pub poll_interval: Duration,

    /// How often each connected account is reconciled with Cal.com: the bookings created or
    /// changed since the last pass are read and what no webhook brought is applied. 0s: never
    /// (from this process).
    #[arg(long = "calcom-reconcile-interval", env = "CALLGATE_CALCOM_RECONCILE_INTERVAL", value_parser = parse_duration, default_value = RECONCILE_INTERVAL)]
    pub reconcile_interval: Duration,
}

impl CalcomConfig {
    /// Settings that cannot work together.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease < self.api.request_timeout * 3 {
            return Err(format!(
                "--calcom-lease ({:?}) must be at least three --calcom-request-timeout ({:?})",
                self.lease, self.api.request_timeout
            ));
        }
        if self.api.rate_per_minute == 0 || self.api.burst == 0 || self.concurrency == 0 || self.max_attempts == 0 {
            return Err("--calcom-rate-per-minute, --calcom-burst, --calcom-concurrency and \
                        --calcom-max-attempts must be positive"
                .to_owned());
        }
        Ok(())
    }
}
