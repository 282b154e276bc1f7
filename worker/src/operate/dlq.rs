//! `dlq list` and `dlq replay`: what is in the dead-letter topic, and putting it back.
//!
//! Both read the topic from its start to where it ended when the command started, without a
//! consumer group (nothing is committed; running them again sees the same letters). A replay
//! publishes a call event's letter onto the events topic with its original key, headers and
//! value, so its `event_id` is unchanged and the worker's dedupe makes a second replay (or a
//! letter whose event was applied after all) a no-op. A Cal.com push's letter re-queues its
//! appointment instead (`calcom requeue`'s rules: only a push that ended, looked up first if
//! unsure).

use std::collections::BTreeMap;
use std::time::Duration;

use callgate_contract::envelope::headers as record_headers;
use callgate_ops::SecretString;
use chrono::{DateTime, Timelike as _, Utc};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::audit::{self, Action, Actor};
use super::requeue::{self, RequeueError, Selection};
use crate::dlq::headers;

/// The reason the Cal.com push gives its letters.
const CALCOM_REASON: &str = "calcom";
/// How long a broker request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where the topics are.
#[derive(Debug, Clone)]
pub struct Topics {
    pub brokers: String,
    pub events: String,
    pub dlq: String,
    /// Shared librdkafka properties (TLS, SASL).
    pub properties: Vec<SecretString>,
}

impl Topics {
    fn client(&self) -> ClientConfig {
        crate::kafka::client_for(&self.brokers, &self.properties, &[])
    }
}

/// One dead letter.
#[derive(Debug, Clone)]
pub struct Letter {
    pub partition: i32,
    pub offset: i64,
    pub written_at: Option<DateTime<Utc>>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// The original record's headers (the dead-letter ones taken out).
    pub original: Vec<(String, Option<Vec<u8>>)>,
    pub reason: String,
    pub error: String,
    pub source: Option<String>,
}

impl Letter {
    fn header(&self, name: &str) -> Option<&str> {
        self.original.iter().find(|(key, _)| key == name).and_then(|(_, v)| std::str::from_utf8(v.as_deref()?).ok())
    }

    /// The event id the record was published with (call events and booking changes have one).
    pub fn event_id(&self) -> Option<Uuid> {
        self.header(record_headers::EVENT_ID)?.parse().ok()
    }

    /// The appointment a Cal.com push letter is about (its key).
    fn appointment(&self) -> Option<Uuid> {
        (self.reason == CALCOM_REASON).then(|| std::str::from_utf8(self.key.as_deref()?).ok()?.parse().ok())?
    }
}

/// Which letters: all conditions given must hold.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub reason: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// `partition:offset` of letters.
    pub offsets: Vec<(i32, i64)>,
}

impl Filter {
    pub fn takes(&self, letter: &Letter) -> bool {
        self.reason.as_ref().is_none_or(|reason| *reason == letter.reason)
            && self.since.is_none_or(|since| letter.written_at.is_some_and(|at| at >= since))
            && self.until.is_none_or(|until| letter.written_at.is_some_and(|at| at < until))
            && (self.offsets.is_empty() || self.offsets.contains(&(letter.partition, letter.offset)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the dead-letter topic was not read to its end within {0:?}")]
    Incomplete(Duration),
    #[error("reading task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Requeue(#[from] RequeueError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Reads every letter the topic held when called, keeping those `filter` takes.
pub async fn read(topics: &Topics, filter: &Filter, patience: Duration) -> Result<Vec<Letter>, DlqError> {
    let (topics, filter) = (topics.clone(), filter.clone());
    tokio::task::spawn_blocking(move || read_blocking(&topics, &filter, patience)).await?
}

fn read_blocking(topics: &Topics, filter: &Filter, patience: Duration) -> Result<Vec<Letter>, DlqError> {
    let consumer: BaseConsumer = topics
        .client()
        .set("group.id", format!("callgate-dlq-reader-{}", Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("receive.message.max.bytes", crate::kafka::MAX_RECORD_BYTES)
        .create()?;
    let metadata = consumer.fetch_metadata(Some(&topics.dlq), TIMEOUT)?;
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = consumer.fetch_watermarks(&topics.dlq, partition.id(), TIMEOUT)?;
        if high > low {
            ends.insert(partition.id(), high);
            assignment.add_partition_offset(&topics.dlq, partition.id(), Offset::Offset(low))?;
        }
    }
    let mut letters = Vec::new();
    if ends.is_empty() {
        return Ok(letters);
    }
    consumer.assign(&assignment)?;
    let deadline = std::time::Instant::now() + patience;
    while !ends.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(DlqError::Incomplete(patience));
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message?;
        let (partition, offset) = (message.partition(), message.offset());
        let Some(&end) = ends.get(&partition) else { continue };
        if offset + 1 >= end {
            ends.remove(&partition);
        }
        if offset >= end {
            continue;
        }
        let mut original = Vec::new();
        let (mut reason, mut error, mut source) = (String::new(), String::new(), None);
        for header in message.headers().into_iter().flat_map(|h| h.iter()) {
            let text = || String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned();
            match header.key {
                headers::REASON => reason = text(),
                headers::ERROR => error = text(),
                headers::SOURCE => source = Some(text()),
                key => original.push((key.to_owned(), header.value.map(<[u8]>::to_vec))),
            }
        }
        let letter = Letter {
            partition,
            offset,
            written_at: message.timestamp().to_millis().and_then(DateTime::from_timestamp_millis),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            original,
            reason,
            error,
            source,
        };
        if filter.takes(&letter) {
            letters.push(letter);
        }
    }
    Ok(letters)
}

/// `dlq list`: counts by reason and by hour written, then a sample.
pub fn summary(letters: &[Letter], sample: usize) -> Vec<String> {
    let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_hour: BTreeMap<String, usize> = BTreeMap::new();
    for letter in letters {
        *by_reason.entry(&letter.reason).or_default() += 1;
        let hour = letter.written_at.and_then(|at| at.with_minute(0)?.with_second(0)?.with_nanosecond(0));
        *by_hour.entry(hour.map_or_else(|| "unknown".to_owned(), |h| h.to_rfc3339())).or_default() += 1;
    }
    let mut lines = vec![format!("{} dead letter(s)", letters.len())];
    lines.extend(by_reason.iter().map(|(reason, n)| format!("  reason {reason}: {n}")));
    lines.extend(by_hour.iter().map(|(hour, n)| format!("  hour {hour}: {n}")));
    for letter in letters.iter().take(sample) {
        lines.push(format!(
            "{}:{} {} {} — {}{}",
            letter.partition,
            letter.offset,
            letter.written_at.map_or_else(|| "-".to_owned(), |at| at.to_rfc3339()),
            letter.reason,
            letter.error,
            letter.source.as_deref().map(|s| format!(" (from {s})")).unwrap_or_default(),
        ));
    }
    if letters.len() > sample {
        lines.push(format!("… and {} more", letters.len() - sample));
    }
    lines
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct Replayed {
    pub published: usize,
    pub requeued: usize,
    /// Cal.com letters whose appointment's push has not ended (re-queued already, or synced).
    pub skipped: usize,
}

/// `dlq replay`: publishes (or re-queues) `letters` unless `dry_run`, and records the action.
pub async fn replay(
    pool: &PgPool,
    topics: &Topics,
    letters: &[Letter],
    actor: &Actor,
    filter: &Filter,
    dry_run: bool,
) -> Result<Replayed, DlqError> {
    let mut done = Replayed::default();
    if dry_run {
        return Ok(done);
    }
    let producer = crate::kafka::acked_producer(topics.client(), "callgate-dlq-replay")?;
    let mut ids = Vec::new();
    for letter in letters {
        if let Some(appointment) = letter.appointment() {
            let selection = Selection { appointment: Some(appointment), ..Selection::default() };
            match requeue::run(pool, &selection, actor, false).await {
                Ok(_) => {
                    done.requeued += 1;
                    ids.push(appointment);
                }
                Err(RequeueError::NotEnded { .. } | RequeueError::NoAppointment(_)) => done.skipped += 1,
                Err(error) => return Err(error.into()),
            }
            continue;
        }
        let mut record_headers = OwnedHeaders::new();
        for (key, value) in &letter.original {
            record_headers = record_headers.insert(Header { key, value: value.as_deref() });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topics.events).headers(record_headers);
        if let Some(key) = &letter.key {
            record = record.key(key);
        }
        if let Some(payload) = &letter.payload {
            record = record.payload(payload);
        }
        producer.send(record, TIMEOUT).await.map_err(|(error, _)| error)?;
        done.published += 1;
        ids.extend(letter.event_id());
    }
    let mut tx = pool.begin().await?;
    let action = Action {
        actor,
        name: "dlq replay",
        company: None,
        selection: json!({
            "reason": filter.reason,
            "since": filter.since,
            "until": filter.until,
            "offsets": filter.offsets.iter().map(|(p, o)| format!("{p}:{o}")).collect::<Vec<_>>(),
            "letters": letters.iter().map(|l| format!("{}:{}", l.partition, l.offset)).collect::<Vec<_>>(),
        }),
        rows: &ids,
    };
    audit::record(&mut tx, &action).await?;
    tx.commit().await?;
    Ok(done)
}

/// `partition:offset`.
pub fn parse_offset(text: &str) -> Result<(i32, i64), String> {
    let (partition, offset) = text.split_once(':').ok_or("expected partition:offset")?;
    Ok((
        partition.trim().parse().map_err(|_| "the partition is not a number")?,
        offset.trim().parse().map_err(|_| "the offset is not a number")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(reason: &str, partition: i32, offset: i64, at: i64) -> Letter {
        Letter {
            partition,
            offset,
            written_at: DateTime::from_timestamp(at, 0),
            key: Some(b"retell:c1".to_vec()),
            payload: None,
            original: vec![(record_headers::EVENT_ID.to_owned(), Some(Uuid::nil().to_string().into_bytes()))],
            reason: reason.to_owned(),
            error: "e".to_owned(),
            source: None,
        }
    }

    #[test]
    fn a_filter_takes_what_every_given_condition_allows() {
        let l = letter("database", 2, 40, 1_000);
        assert!(Filter::default().takes(&l));
        assert!(Filter { reason: Some("database".into()), ..Filter::default() }.takes(&l));
        assert!(!Filter { reason: Some("payload".into()), ..Filter::default() }.takes(&l));
        assert!(Filter { since: DateTime::from_timestamp(1_000, 0), ..Filter::default() }.takes(&l));
        assert!(!Filter { until: DateTime::from_timestamp(1_000, 0), ..Filter::default() }.takes(&l));
        assert!(Filter { offsets: vec![(2, 40)], ..Filter::default() }.takes(&l));
        assert!(!Filter { offsets: vec![(2, 41)], ..Filter::default() }.takes(&l));
        assert_eq!(l.event_id(), Some(Uuid::nil()));
        assert_eq!(l.appointment(), None, "only a Cal.com letter names an appointment");
        assert_eq!(parse_offset("3:17"), Ok((3, 17)));
        assert!(parse_offset("3").is_err());
    }
}
