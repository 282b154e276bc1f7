//! The dead-letter topic: one writer for everything the worker gives up on, a call event it
//! cannot apply (the consumer) and a Cal.com push that failed for good (the push). A letter
//! keeps the original key, payload and headers, and gains the reason, the error and, for a
//! record, where it came from. Retrying is the caller's choice: the consumer must not commit
//! past a record before its letter is written; the push has recorded the failure already.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::config::RunConfig;
use crate::metrics::Metrics;

/// Header names added to a dead-lettered record (the original headers are kept).
pub mod headers {
    /// Why: envelope, version, payload, database, panic, calcom, …
    pub const REASON: &str = "callgate-dlq-reason";
    pub const ERROR: &str = "callgate-dlq-error";
    /// `topic/partition/offset` of the original record.
    pub const SOURCE: &str = "callgate-dlq-source";
}

/// How long one send may wait for the broker.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// One letter.
#[derive(Debug)]
pub struct Letter<'a> {
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// The original record's headers, kept.
    pub original: Option<&'a OwnedHeaders>,
    pub reason: &'a str,
    pub error: &'a str,
    /// `topic/partition/offset` of the original record, when there is one.
    pub source: Option<&'a str>,
}

#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    metrics: Metrics,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl DeadLetters {
    /// An idempotent `acks=all` producer for the run's DLQ topic; it takes the largest record
    /// the consumer can read (`kafka::MAX_RECORD_BYTES`), or a long call's letter would stall
    /// its partition on the retry loop.
    pub fn create(config: &RunConfig, metrics: Metrics) -> Result<Self, KafkaError> {
        let client = crate::kafka::client_config(config, &config.kafka_producer_properties);
        let producer = crate::kafka::acked_producer(client, "callgate-worker-dlq")?;
        Ok(Self { producer, topic: config.kafka_dlq_topic.clone(), metrics })
    }

    /// Writes the letter and waits for the broker's acknowledgement; counts it by reason.
    pub async fn send(&self, letter: &Letter<'_>) -> Result<(), KafkaError> {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = letter.original {
            for header in original.iter() {
                headers = headers.insert(Header { key: header.key, value: header.value });
            }
        }
        headers = headers
            .insert(Header { key: headers::REASON, value: Some(letter.reason) })
            .insert(Header { key: headers::ERROR, value: Some(letter.error) });
        if let Some(source) = letter.source {
            headers = headers.insert(Header { key: headers::SOURCE, value: Some(source) });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = letter.key {
            record = record.key(key);
        }
        if let Some(payload) = letter.payload {
            record = record.payload(payload);
        }
        self.producer.send(record, SEND_TIMEOUT).await.map_err(|(error, _)| error)?;
        self.metrics.dlq_records.with_label_values(&[letter.reason]).inc();
        Ok(())
    }
}
