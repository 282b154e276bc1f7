//! The gateway's configuration: one typed struct, every option a flag with a `CALLGATE_*`
//! environment fallback and a documented default (`callgate-gateway serve --help`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use callgate_ops::{LogConfig, LogFormat, SecretString, parse_duration};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "callgate-gateway", version, about = "callgate's webhook edge: verify, route, publish to Kafka")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP gateway.
    Serve(Box<ServeConfig>),
    /// Check one webhook's signature with the server's own verifier, offline.
    /// Prints `valid` (exit 0) or `invalid: <reason>` (exit 1).
    Verify(VerifyArgs),
    /// Sign a body as the provider would; prints the signature header's value.
    Sign(MessageArgs),
    /// Work on a spool directory offline.
    #[command(subcommand)]
    Spool(SpoolCommand),
    /// Ask a running gateway's ops listener (container health checks): exit 0 on 2xx.
    Healthcheck(callgate_ops::HealthcheckArgs),
}

#[derive(Debug, Subcommand)]
pub enum SpoolCommand {
    /// Publish everything a spool directory holds to Kafka, then exit: for the volume of a
    /// gateway replica that is gone for good. Prints the number of records published.
    Drain(SpoolDrainArgs),
}

#[derive(Debug, Args)]
pub struct SpoolDrainArgs {
    /// The spool directory (it must not be in use by a running gateway).
    #[arg(long)]
    pub dir: PathBuf,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// The --max-body-bytes the spool was written with (records up to it plus 64 KiB are read).
    #[arg(long, env = "CALLGATE_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,

    #[command(flatten)]
    pub log: LogConfig,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address the webhook endpoints (and health, and metrics unless --metrics-listen) listen on.
    #[arg(long, env = "CALLGATE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Address of /metrics, /readyz and /healthz: a port of its own, so the webhook listener
    /// that faces the internet shows nothing of the gateway's state (it answers /healthz only,
    /// for load balancers).
    #[arg(long, env = "CALLGATE_METRICS_LISTEN", default_value = "0.0.0.0:9091")]
    pub metrics_listen: SocketAddr,

    /// Postgres URL of the tenant directory (read-only use, plus LISTEN).
    #[arg(long, env = "CALLGATE_DATABASE_URL", hide_env_values = true)]
    pub database_url: SecretString,

    /// Maximum Postgres connections of the directory loader.
    #[arg(long, env = "CALLGATE_DATABASE_MAX_CONNECTIONS", default_value_t = 4)]
    pub database_max_connections: u32,

    /// Master key that opens the provider secrets sealed in the database (base64, 32 bytes).
    #[arg(long, env = "CALLGATE_SECRET_KEY", hide_env_values = true)]
    pub secret_key: SecretString,

    /// Previous master keys (comma-separated), still accepted for opening during a key rotation.
    #[arg(long, env = "CALLGATE_SECRET_KEYS_PREVIOUS", hide_env_values = true, value_delimiter = ',')]
    pub secret_keys_previous: Vec<SecretString>,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub spool: SpoolArgs,

    /// Largest accepted request body in bytes; larger ones get 413. Retell call_analyzed
    /// events with word-level transcripts of long calls run to megabytes. The topic's
    /// `max.message.bytes` must take this plus 64 KiB for the envelope: checked at start.
    #[arg(long, env = "CALLGATE_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Webhook requests handled at once; more are answered 503 with Retry-After at once
    /// (load shedding), before their bodies are read.
    #[arg(long, env = "CALLGATE_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,

    /// Bytes of request bodies held at once (each counted by its Content-Length, or as
    /// --max-body-bytes when it declares none); past it, 503 with Retry-After. Bounds the
    /// gateway's memory whatever senders do: 256 MiB is 32 bodies of 8 MiB.
    #[arg(long, env = "CALLGATE_MAX_IN_FLIGHT_BODY_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_in_flight_body_bytes: u64,

    /// How long a sender may take to deliver the body before it is answered 408 (a slow or
    /// stalled client must not hold a request open).
    #[arg(long, env = "CALLGATE_BODY_READ_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub body_read_timeout: Duration,

    /// Public base URL Twilio is configured with (scheme://host[:port][/prefix]); the request's
    /// path and query are appended to rebuild the signed URL. A provider account's
    /// `settings.public_base_url` overrides it.
    #[arg(long, env = "CALLGATE_PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,

    /// Country calling code used to read national-format numbers (no `+`, no `00`).
    #[arg(long, env = "CALLGATE_DEFAULT_COUNTRY_CODE", default_value_t = 1)]
    pub default_country_code: u16,

    /// Full directory reload interval, the safety net behind LISTEN/NOTIFY.
    #[arg(long, env = "CALLGATE_DIRECTORY_RELOAD_INTERVAL", value_parser = parse_duration, default_value = "5m")]
    pub directory_reload_interval: Duration,

    /// How long in-flight requests get to finish, and the spool to drain, on SIGTERM before
    /// the producer is flushed.
    #[arg(long, env = "CALLGATE_SHUTDOWN_GRACE", value_parser = parse_duration, default_value = "10s")]
    pub shutdown_grace: Duration,

    #[command(flatten)]
    pub log: LogConfig,
}

/// Where and how records are published (serve, and `spool drain`).
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long = "kafka-brokers", env = "CALLGATE_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,

    /// Topic accepted events are published to.
    #[arg(long = "kafka-topic", env = "CALLGATE_KAFKA_TOPIC", default_value = callgate_contract::envelope::EVENTS_TOPIC)]
    pub topic: String,

    /// How long a record waits for the broker's acknowledgement. Without a spool the webhook is
    /// then answered 503; keep it well under the providers' timeouts (Vapi 7.5 s, Retell 10 s).
    #[arg(long = "kafka-ack-timeout", env = "CALLGATE_KAFKA_ACK_TIMEOUT", value_parser = parse_duration, default_value = "2500ms")]
    pub ack_timeout: Duration,

    /// How long the producer keeps retrying a record before giving up on it (librdkafka
    /// `message.timeout.ms`). Longer than the ack timeout on purpose: a record answered 503 may
    /// still land, and its redelivery is then deduplicated by event id downstream.
    #[arg(long = "kafka-message-timeout", env = "CALLGATE_KAFKA_MESSAGE_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub message_timeout: Duration,

    /// Producer batching delay (librdkafka `linger.ms`): latency against throughput.
    #[arg(long = "kafka-linger", env = "CALLGATE_KAFKA_LINGER", value_parser = parse_duration, default_value = "2ms")]
    pub linger: Duration,

    /// How many Kafka producers (each its own broker connections) records are spread over,
    /// by key, so one call's events keep their order. An idempotent producer allows 5 produce
    /// requests in flight per connection; more producers allow more when the broker is slow
    /// to acknowledge.
    #[arg(long = "kafka-producers", env = "CALLGATE_KAFKA_PRODUCERS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub producers: u16,

    /// Extra librdkafka producer properties, `key=value` comma-separated (TLS, SASL, …).
    #[arg(
        long = "kafka-properties",
        env = "CALLGATE_KAFKA_PROPERTIES",
        value_delimiter = ',',
        hide_env_values = true,
        value_parser = callgate_ops::KafkaPropertyParser
    )]
    pub properties: Vec<SecretString>,
}

/// The durable spool at the edge: where webhooks go when the broker is slow or down.
#[derive(Debug, Clone, Args)]
pub struct SpoolArgs {
    /// Directory of this gateway's spool (one gateway process per directory; it is locked).
    /// Unset: no spool, and a webhook the broker does not acknowledge within
    /// --kafka-ack-timeout is answered 503.
    #[arg(long = "spool-dir", env = "CALLGATE_SPOOL_DIR")]
    pub dir: Option<PathBuf>,

    /// How long a webhook waits for the broker before it is spooled instead. A healthy broker
    /// acknowledges in milliseconds (BENCHMARKS.md), a leader election takes seconds: 1 s
    /// never spools normal traffic and leaves most of Vapi's 7.5 s for the disk write.
    #[arg(long = "spool-after", env = "CALLGATE_SPOOL_AFTER", value_parser = parse_duration, default_value = "1s")]
    pub after: Duration,

    /// Record bytes the spool may hold; past it, webhooks that would be spooled get 503 with
    /// Retry-After. 1 GiB is about 100,000 webhooks of 10 KB.
    #[arg(long = "spool-max-bytes", env = "CALLGATE_SPOOL_MAX_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub max_bytes: u64,

    /// Size at which a spool segment file is closed and a new one started; a segment is
    /// deleted once all its records are acknowledged.
    #[arg(long = "spool-segment-bytes", env = "CALLGATE_SPOOL_SEGMENT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub segment_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerifyProvider {
    Retell,
    Twilio,
    Calcom,
}

/// One webhook message, as `verify` and `sign` see it.
#[derive(Debug, Args)]
pub struct MessageArgs {
    /// Which provider's scheme.
    #[arg(long, value_enum)]
    pub provider: VerifyProvider,
    /// File holding the signing secret (Retell API key, Twilio auth token, Cal.com webhook
    /// secret); `-` reads it from standard input. One trailing newline is not part of it. Never
    /// an argument: arguments show in `ps` and in shell history.
    #[arg(long)]
    pub secret_file: PathBuf,
    /// File holding the raw request body.
    #[arg(long)]
    pub body_file: PathBuf,
    /// Retell: the clock in Unix milliseconds (verify: to judge the timestamp by; sign: the
    /// timestamp to sign with). Default: now.
    #[arg(long)]
    pub now_ms: Option<u64>,
    /// Twilio: the full URL Twilio requested, query included.
    #[arg(long, required_if_eq("provider", "twilio"))]
    pub url: Option<String>,
    /// Twilio: the request's Content-Type.
    #[arg(long)]
    pub content_type: Option<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub message: MessageArgs,
    /// The signature header's value as received.
    #[arg(long)]
    pub signature: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn secrets_do_not_print() {
        let cli = Cli::try_parse_from([
            "callgate-gateway",
            "serve",
            "--database-url",
            "postgres://u:hunter2@h/db",
            "--secret-key",
            "c2VjcmV0",
        ])
        .unwrap();
        let text = format!("{cli:?}");
        assert!(!text.contains("hunter2") && !text.contains("c2VjcmV0"), "{text}");
    }

    #[test]
    fn a_kafka_property_without_equals_is_refused_without_echoing_it() {
        let serve = |property: &str| {
            Cli::try_parse_from([
                "callgate-gateway",
                "serve",
                "--database-url",
                "postgres://h/db",
                "--secret-key",
                "c2VjcmV0",
                "--kafka-properties",
                property,
            ])
        };
        let cli = serve("security.protocol=ssl,sasl.password=hunter2").unwrap();
        let Command::Serve(config) = cli.command else { panic!("serve expected") };
        assert_eq!(config.kafka.properties.len(), 2);
        assert!(!format!("{config:?}").contains("hunter2"));
        let error = serve("security.protocol=ssl,sasl.password:hunter2").unwrap_err().to_string();
        assert!(error.contains("--kafka-properties") && error.contains("key=value"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}
