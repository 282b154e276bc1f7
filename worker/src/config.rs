//! `callgate-worker run`'s configuration: every option a flag with a `CALLGATE_*` environment
//! fallback and a documented default (`callgate-worker run --help`).

use std::net::SocketAddr;
use std::time::Duration;

use callgate_contract::envelope::{DLQ_TOPIC, EVENTS_TOPIC};
use callgate_ops::{LogConfig, SecretString, parse_duration};
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct RunConfig {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "CALLGATE_WORKER_LISTEN", default_value = "0.0.0.0:9090")]
    pub listen: SocketAddr,

    /// Postgres URL.
    #[arg(long, env = "CALLGATE_DATABASE_URL", hide_env_values = true)]
    pub database_url: SecretString,

    /// Maximum Postgres connections: one per partition applied in parallel, plus the probe.
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

    /// Extra librdkafka properties, `key=value` separated by commas (e.g. TLS or SASL settings).
    #[arg(long, env = "CALLGATE_KAFKA_PROPERTIES", value_delimiter = ',', hide_env_values = true)]
    pub kafka_properties: Vec<String>,

    /// How often librdkafka reports statistics (consumer lag per partition).
    #[arg(long, env = "CALLGATE_KAFKA_STATS_INTERVAL", value_parser = parse_duration, default_value = "5s")]
    pub kafka_stats_interval: Duration,

    /// Most records taken from Kafka into one batch.
    #[arg(long, env = "CALLGATE_BATCH_MAX_RECORDS", default_value_t = 500)]
    pub batch_max_records: usize,

    /// How long a batch waits for more records after its first one.
    #[arg(long, env = "CALLGATE_BATCH_MAX_WAIT", value_parser = parse_duration, default_value = "5ms")]
    pub batch_max_wait: Duration,

    /// Longest wait between two attempts when Postgres or the DLQ topic is unavailable
    /// (the wait doubles from 100 ms up to this).
    #[arg(long, env = "CALLGATE_RETRY_MAX_BACKOFF", value_parser = parse_duration, default_value = "10s")]
    pub retry_max_backoff: Duration,

    #[command(flatten)]
    pub log: LogConfig,
}
