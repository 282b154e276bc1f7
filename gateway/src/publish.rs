//! Publishing to Kafka: an idempotent producer with `acks=all`; a webhook is answered only
//! after the broker acknowledged its record, or 503 once the ack bound passes.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

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
}

impl PublishError {
    pub fn reason(&self) -> &'static str {
        match self {
            PublishError::Timeout(_) => "timeout",
            PublishError::QueueFull => "queue_full",
            PublishError::Broker(_) => "broker",
            PublishError::Config(_) => "config",
        }
    }
}

/// One record to publish.
#[derive(Debug)]
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
    /// Extra librdkafka properties (`key=value`).
    pub properties: Vec<String>,
}

impl std::fmt::Debug for PublisherConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the properties' values: they may carry SASL credentials.
        f.debug_struct("PublisherConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("ack_timeout", &self.ack_timeout)
            .field("properties", &self.properties.len())
            .finish_non_exhaustive()
    }
}

pub struct Publisher {
    config: PublisherConfig,
    client_config: ClientConfig,
    producer: ArcSwap<FutureProducer>,
    rebuild: tokio::sync::Mutex<()>,
    metrics: Metrics,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("config", &self.config)
            .finish_non_exhaustive()
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
            .set(
                "message.timeout.ms",
                config.message_timeout.as_millis().to_string(),
            )
            // Fail fast on a dead broker instead of backing off for long.
            .set("reconnect.backoff.max.ms", "1000")
            .set("client.id", "callgate-gateway");
        for property in &config.properties {
            if let Some((key, value)) = property.split_once('=') {
                client_config.set(key.trim(), value.trim());
            }
        }
        let producer: FutureProducer = client_config.create().map_err(PublishError::Config)?;
        Ok(Self {
            config,
            client_config,
            producer: ArcSwap::from_pointee(producer),
            rebuild: tokio::sync::Mutex::new(()),
            metrics,
        })
    }

    pub fn topic(&self) -> &str {
        &self.config.topic
    }

    /// Produces one record and waits for the broker's acknowledgement.
    pub async fn publish(&self, record: Record<'_>) -> Result<(), PublishError> {
        let producer = self.producer.load_full();
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in record.headers {
            headers = headers.insert(Header {
                key,
                value: Some(*value),
            });
        }
        let future_record = FutureRecord::to(&self.config.topic)
            .key(record.key)
            .payload(record.value)
            .headers(headers);
        let result = match producer.send_result(future_record) {
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(PublishError::QueueFull)
            }
            Err((error, _)) => Err(PublishError::Broker(error)),
            Ok(delivery) => match tokio::time::timeout(self.config.ack_timeout, delivery).await {
                Err(_) => Err(PublishError::Timeout(self.config.ack_timeout)),
                // The producer dropped the record (it is being shut down).
                Ok(Err(_canceled)) => Err(PublishError::Broker(KafkaError::Canceled)),
                Ok(Ok(Err((error, _)))) => Err(PublishError::Broker(error)),
                Ok(Ok(Ok(_delivery))) => Ok(()),
            },
        };
        match &result {
            Ok(()) => self.metrics.broker_up.set(1),
            Err(error) => {
                self.metrics
                    .produce_errors
                    .with_label_values(&[error.reason()])
                    .inc();
                self.recover_if_fatal(&producer).await;
            }
        }
        result
    }

    /// An idempotent producer can hit a fatal error (e.g. the broker lost its producer state,
    /// as a restarted in-memory broker does); it is unusable after that, so build a new one.
    async fn recover_if_fatal(&self, failed: &Arc<FutureProducer>) {
        let Some((code, reason)) = failed.client().fatal_error() else {
            return;
        };
        let _guard = self.rebuild.lock().await;
        if !Arc::ptr_eq(&self.producer.load_full(), failed) {
            return; // another request rebuilt it already
        }
        tracing::error!(?code, %reason, "Kafka producer hit a fatal error; replacing it");
        match self.client_config.create::<FutureProducer>() {
            Ok(fresh) => self.producer.store(Arc::new(fresh)),
            Err(error) => tracing::error!(%error, "could not create a replacement Kafka producer"),
        }
    }

    /// Asks the broker for the topic's metadata: is it reachable and does the topic exist?
    pub async fn probe(&self, wait: Duration) -> bool {
        let producer = self.producer.load_full();
        let topic = self.config.topic.clone();
        let up = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), wait)
                .map(|metadata| {
                    metadata.topics().iter().any(|t| {
                        t.name() == topic && t.error().is_none() && !t.partitions().is_empty()
                    })
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        self.metrics.broker_up.set(i64::from(up));
        up
    }

    /// Waits for records still in flight (on shutdown).
    pub async fn flush(&self, wait: Duration) -> Result<(), KafkaError> {
        let producer = self.producer.load_full();
        tokio::task::spawn_blocking(move || producer.flush(wait))
            .await
            .unwrap_or(Err(KafkaError::Canceled))
    }
}
