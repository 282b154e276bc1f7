//! Publishing to Kafka: idempotent producers with `acks=all`; a webhook is answered only
//! after the broker acknowledged its record, or 503 once the ack bound passes.
//!
//! There are several producers, and a record always goes to the one its key hashes to. An
//! idempotent librdkafka producer keeps at most 5 produce requests in flight per broker
//! connection, which caps one producer at about 5 round trips' worth of batches; N producers
//! have N connections. Per-key ordering and idempotence hold because one key only ever uses
//! one producer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaArgs;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker did not acknowledge within {0:?}")]
    Timeout(Duration),
    #[error("producer queue is full")]
    QueueFull,
    #[error("broker refused the record: {0}")]
    Broker(KafkaError),
    #[error("producer configuration invalid: {0}")]
    Config(KafkaError),
    /// Larger than the records this gateway is sized for: the request's own doing, refused
    /// before it reaches a producer.
    #[error("record of {size} bytes is larger than the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    /// The broker refused a record within our limit as too large: its topic takes less than
    /// the gateway was started for. Permanent until an operator raises it; never a reason to
    /// replace a producer.
    #[error("the broker refused the record as too large for the topic: {0}")]
    TopicTooSmall(KafkaError),
}

impl PublishError {
    pub fn reason(&self) -> &'static str {
        match self {
            PublishError::Timeout(_) => "timeout",
            PublishError::QueueFull => "queue_full",
            PublishError::Broker(_) => "broker",
            PublishError::Config(_) => "config",
            PublishError::TooLarge { .. } => "too_large",
            PublishError::TopicTooSmall(_) => "topic_too_small",
        }
    }

    /// The broker would refuse this record whenever it is sent (its size), or the producer
    /// cannot be built: retrying or spooling does not help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, PublishError::TooLarge { .. } | PublishError::TopicTooSmall(_) | PublishError::Config(_))
    }
}

/// One record to publish.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub key: &'a str,
    pub value: &'a [u8],
    pub headers: &'a [(&'a str, &'a str)],
}

/// Producer settings.
#[derive(Clone)]
pub struct PublisherConfig {
    pub brokers: String,
    pub topic: String,
    pub ack_timeout: Duration,
    pub message_timeout: Duration,
    pub linger: Duration,
    /// How many producers (broker connections) records are spread over, by key.
    pub producers: usize,
    /// Extra librdkafka properties (`key=value`).
    pub properties: Vec<String>,
    /// The largest record (value, key and headers) the gateway publishes: the body limit plus
    /// the envelope ([`record_limit`]).
    pub max_record_bytes: usize,
}

/// Room for the envelope around a body (ids, route, received_at, JSON quoting of a form body
/// that needs none when it is properly encoded), the key and the headers.
pub const ENVELOPE_ALLOWANCE: usize = 64 * 1024;

/// Room for the Kafka protocol around one record in a produce request.
const PROTOCOL_ALLOWANCE: usize = 64 * 1024;

/// The largest record a gateway with this body limit publishes, and so the least the topic's
/// `max.message.bytes` must allow.
pub fn record_limit(max_body_bytes: usize) -> usize {
    max_body_bytes.saturating_add(ENVELOPE_ALLOWANCE)
}

/// What the broker said about the topic's record size limit at start.
#[derive(Debug, PartialEq, Eq)]
pub enum TopicLimit {
    /// `max.message.bytes` allows at least the largest record.
    Fits(usize),
    /// The topic takes records up to this size, less than needed.
    TooSmall(usize),
    /// The broker did not answer, or did not describe the setting.
    Unknown(String),
}

impl PublisherConfig {
    /// The producer settings of the command line, for a gateway with this body limit.
    pub fn from_args(kafka: &KafkaArgs, max_body_bytes: usize) -> Self {
        Self {
            brokers: kafka.brokers.clone(),
            topic: kafka.topic.clone(),
            ack_timeout: kafka.ack_timeout,
            message_timeout: kafka.message_timeout,
            linger: kafka.linger,
            producers: usize::from(kafka.producers),
            properties: kafka.properties.iter().map(|p| p.expose().to_owned()).collect(),
            max_record_bytes: record_limit(max_body_bytes),
        }
    }
}

impl std::fmt::Debug for PublisherConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the properties' values: they may carry SASL credentials.
        f.debug_struct("PublisherConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("ack_timeout", &self.ack_timeout)
            .field("producers", &self.producers)
            .field("properties", &self.properties.len())
            .finish_non_exhaustive()
    }
}

/// Consecutive unacknowledged records, while the broker answers metadata requests, after
/// which the producer is considered stuck and replaced.
const STUCK_AFTER_FAILURES: u32 = 3;

pub struct Publisher {
    config: PublisherConfig,
    client_config: ClientConfig,
    slots: Box<[Slot]>,
    /// Result of the last metadata probe.
    reachable: AtomicBool,
    metrics: Metrics,
}

/// One producer, and what tells whether it is stuck.
struct Slot {
    producer: ArcSwap<FutureProducer>,
    rebuild: tokio::sync::Mutex<()>,
    /// Records not acknowledged since the last acknowledged one (or since the broker became
    /// reachable again).
    consecutive_failures: AtomicU32,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Publisher {
    pub fn new(config: PublisherConfig, metrics: Metrics) -> Result<Self, PublishError> {
        let mut client_config = ClientConfig::new();
        client_config
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", config.linger.as_millis().to_string())
            .set("message.timeout.ms", config.message_timeout.as_millis().to_string())
            // Fail fast on a dead broker instead of backing off for long.
            .set("reconnect.backoff.max.ms", "1000")
            // librdkafka's default (1,000,000) would refuse every body over about 1 MB.
            .set(
                "message.max.bytes",
                config.max_record_bytes.saturating_add(PROTOCOL_ALLOWANCE).min(1_000_000_000).to_string(),
            )
            .set("client.id", "callgate-gateway");
        for (key, value) in callgate_ops::kafka_properties(&config.properties) {
            client_config.set(key, value);
        }
        let slots = (0..config.producers.max(1))
            .map(|_| {
                let producer: FutureProducer = client_config.create().map_err(PublishError::Config)?;
                Ok(Slot {
                    producer: ArcSwap::from_pointee(producer),
                    rebuild: tokio::sync::Mutex::new(()),
                    consecutive_failures: AtomicU32::new(0),
                })
            })
            .collect::<Result<_, PublishError>>()?;
        Ok(Self { config, client_config, slots, reachable: AtomicBool::new(false), metrics })
    }

    /// The producer a key always goes to. FNV-1a: stable, cheap, and spreads call ids well.
    fn slot(&self, key: &str) -> &Slot {
        let hash = crate::fnv::fnv1a(key.as_bytes());
        // The remainder is below the slot count, a usize.
        #[allow(clippy::cast_possible_truncation)]
        let index = (hash % self.slots.len() as u64) as usize;
        &self.slots[index]
    }

    pub fn topic(&self) -> &str {
        &self.config.topic
    }

    /// Produces one record and waits for the broker's acknowledgement.
    pub async fn publish(&self, record: Record<'_>) -> Result<(), PublishError> {
        let size = record.value.len()
            + record.key.len()
            + record.headers.iter().map(|(key, value)| key.len() + value.len()).sum::<usize>();
        if size > self.config.max_record_bytes {
            self.metrics.produce_errors.with_label_values(&["too_large"]).inc();
            return Err(PublishError::TooLarge { size, limit: self.config.max_record_bytes });
        }
        let slot = self.slot(record.key);
        let producer = slot.producer.load_full();
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in record.headers {
            headers = headers.insert(Header { key, value: Some(*value) });
        }
        let future_record = FutureRecord::to(&self.config.topic).key(record.key).payload(record.value).headers(headers);
        let result = match producer.send_result(future_record) {
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Err(PublishError::QueueFull),
            Err((error, _)) => Err(broker_error(error)),
            Ok(delivery) => match tokio::time::timeout(self.config.ack_timeout, delivery).await {
                Err(_) => Err(PublishError::Timeout(self.config.ack_timeout)),
                // The producer dropped the record (it is being shut down).
                Ok(Err(_canceled)) => Err(PublishError::Broker(KafkaError::Canceled)),
                Ok(Ok(Err((error, _)))) => Err(broker_error(error)),
                Ok(Ok(Ok(_delivery))) => Ok(()),
            },
        };
        match &result {
            Ok(()) => {
                slot.consecutive_failures.store(0, Ordering::Relaxed);
                // An acknowledgement is proof of reachability too.
                self.set_reachable(true);
            }
            Err(error @ PublishError::TopicTooSmall(_)) => {
                // The producer is fine and so is the broker: only this record's size is wrong
                // for the topic, so it says nothing about the producer's health.
                self.metrics.produce_errors.with_label_values(&[error.reason()]).inc();
                tracing::error!(
                    %error, topic = %self.config.topic, size,
                    "raise the topic's max.message.bytes to at least --max-body-bytes + 64 KiB, or lower --max-body-bytes"
                );
            }
            Err(error) => {
                self.metrics.produce_errors.with_label_values(&[error.reason()]).inc();
                let failures = slot.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some((code, reason)) = producer.client().fatal_error() {
                    self.replace(slot, &producer, &format!("fatal error {code:?}: {reason}")).await;
                } else if failures >= STUCK_AFTER_FAILURES && self.is_reachable() {
                    self.replace(slot, &producer, "broker reachable but records are not acknowledged").await;
                }
            }
        }
        result
    }

    /// Builds a new producer in place of `failed`. An idempotent producer is unusable after a
    /// fatal error, and can also stay stuck when the broker lost its producer state (a broker
    /// restarted without its data keeps answering UNKNOWN_PRODUCER_ID to the old id). The
    /// records still queued in the old producer were all answered 503 already.
    async fn replace(&self, slot: &Slot, failed: &Arc<FutureProducer>, why: &str) {
        let _guard = slot.rebuild.lock().await;
        if !Arc::ptr_eq(&slot.producer.load_full(), failed) {
            return; // another request replaced it already
        }
        tracing::error!(reason = why, "replacing the Kafka producer");
        match self.client_config.create::<FutureProducer>() {
            Ok(fresh) => {
                let old = slot.producer.swap(Arc::new(fresh));
                slot.consecutive_failures.store(0, Ordering::Relaxed);
                self.metrics.producer_replacements.inc();
                // Dropping a producer purges and flushes it: a blocking call.
                tokio::task::spawn_blocking(move || drop(old));
            }
            Err(error) => tracing::error!(%error, "could not create a replacement Kafka producer"),
        }
    }

    /// Asks the broker (DescribeConfigs) whether the topic's `max.message.bytes` takes the
    /// largest record this gateway publishes. Kafka answers the effective value, the broker's
    /// default included, so a missing entry means a broker that does not say.
    pub async fn check_topic_limit(&self, wait: Duration) -> TopicLimit {
        let admin: AdminClient<DefaultClientContext> = match self.client_config.create() {
            Ok(admin) => admin,
            Err(error) => return TopicLimit::Unknown(error.to_string()),
        };
        let options = AdminOptions::new().request_timeout(Some(wait));
        let described = admin.describe_configs([&ResourceSpecifier::Topic(&self.config.topic)], &options).await;
        let entry = match described.as_deref() {
            Ok([Ok(resource)]) => resource.get("max.message.bytes").and_then(|e| e.value.clone()),
            Ok([Err(code)]) => return TopicLimit::Unknown(format!("{code:?}")),
            Ok(_) => return TopicLimit::Unknown("no answer for the topic".into()),
            Err(error) => return TopicLimit::Unknown(error.to_string()),
        };
        match entry.as_deref().map(str::parse::<usize>) {
            Some(Ok(limit)) if limit >= self.config.max_record_bytes => TopicLimit::Fits(limit),
            Some(Ok(limit)) => TopicLimit::TooSmall(limit),
            Some(Err(_)) | None => TopicLimit::Unknown("max.message.bytes not described".into()),
        }
    }

    /// Whether the broker answered the last metadata probe for the topic.
    pub fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Acquire)
    }

    /// Asks the broker for the topic's metadata: is it reachable and does the topic exist?
    pub async fn probe(&self, wait: Duration) -> bool {
        // They all talk to the same brokers; the first answers for all.
        let producer = self.slots[0].producer.load_full();
        let topic = self.config.topic.clone();
        let up = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), wait)
                .map(|metadata| {
                    metadata
                        .topics()
                        .iter()
                        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        self.set_reachable(up);
        up
    }

    /// The one place broker reachability changes: the flag `/readyz` reads and its gauge.
    fn set_reachable(&self, up: bool) {
        let was = self.reachable.swap(up, Ordering::AcqRel);
        if up && !was {
            // Failures during the outage say nothing about the producers' health.
            for slot in &self.slots {
                slot.consecutive_failures.store(0, Ordering::Relaxed);
            }
        }
        self.metrics.broker_up.set(i64::from(up));
    }

    /// Waits for records still in flight (on shutdown).
    pub async fn flush(&self, wait: Duration) -> Result<(), KafkaError> {
        let producers: Vec<_> = self.slots.iter().map(|slot| slot.producer.load_full()).collect();
        tokio::task::spawn_blocking(move || {
            // One deadline for all of them, not `wait` each.
            let deadline = std::time::Instant::now() + wait;
            producers.iter().try_for_each(|p| p.flush(deadline.saturating_duration_since(std::time::Instant::now())))
        })
        .await
        .unwrap_or(Err(KafkaError::Canceled))
    }
}

/// A broker error, with "too large for the topic" told apart: it is permanent for that record
/// and says nothing about the producer.
fn broker_error(error: KafkaError) -> PublishError {
    match error {
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge) => PublishError::TopicTooSmall(error),
        other => PublishError::Broker(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher(producers: usize) -> Publisher {
        let config = PublisherConfig {
            // Never contacted: creating a producer does not connect.
            brokers: "127.0.0.1:1".into(),
            topic: "t".into(),
            ack_timeout: Duration::from_secs(1),
            message_timeout: Duration::from_secs(1),
            linger: Duration::from_millis(2),
            producers,
            properties: Vec::new(),
            max_record_bytes: record_limit(8 * 1024 * 1024),
        };
        Publisher::new(config, Metrics::new()).expect("producers are created without a broker")
    }

    fn index(publisher: &Publisher, key: &str) -> usize {
        let slot = publisher.slot(key);
        publisher.slots.iter().position(|s| std::ptr::eq(s, slot)).expect("a slot of this publisher")
    }

    #[test]
    fn a_key_always_uses_the_same_producer_and_keys_spread_over_all_of_them() {
        let publisher = publisher(4);
        let mut used = [0_u32; 4];
        for call in 0..400 {
            let key = format!("retell:call_{call}");
            let first = index(&publisher, &key);
            // Every event of one call goes through one producer: that keeps their order.
            assert_eq!(index(&publisher, &key), first);
            used[first] += 1;
        }
        assert!(used.iter().all(|&n| n > 50), "400 call ids over 4 producers: {used:?}");
    }

    #[test]
    fn a_record_too_large_for_the_topic_is_told_apart_from_an_outage() {
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert_eq!(broker_error(too_large).reason(), "topic_too_small");
        let timeout = KafkaError::MessageProduction(RDKafkaErrorCode::RequestTimedOut);
        assert_eq!(broker_error(timeout).reason(), "broker");
    }

    #[test]
    fn zero_producers_means_one() {
        let publisher = publisher(0);
        assert_eq!(publisher.slots.len(), 1);
        assert_eq!(index(&publisher, "any"), 0);
    }
}
