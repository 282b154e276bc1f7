//! The ceilings the gateway and worker are measured against, on the same machine in the same
//! run: a plain axum handler answering 204 (HTTP), a bare rdkafka producer sending records of
//! the same size with the same settings (broker), a bare write-and-fdatasync loop on the
//! spool's disk (durable local write). The database's, a bare batched insert, is
//! shared with the worker bench: `callgate_tests::baseline`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::run::histogram;

/// Serves 204 to every POST on port 0: what the HTTP stack alone costs.
pub async fn plain_http() -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new().fallback(|body: axum::body::Bytes| async move {
        drop(body);
        StatusCode::NO_CONTENT
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// Appends `count` records of `bytes` bytes to a scratch file in `dir`, each followed by
/// `fdatasync`, one after the other: what one durable write costs on this disk, the least a
/// spooled webhook can wait. The file is removed afterwards.
pub fn bare_fsync(dir: &std::path::Path, count: u64, bytes: usize) -> std::io::Result<Histogram<u64>> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("loadtest-fsync-{}", uuid::Uuid::new_v4().simple()));
    let mut file = std::fs::OpenOptions::new().create_new(true).append(true).open(&path)?;
    let record = vec![b'x'; bytes];
    let mut latency = histogram();
    for _ in 0..count {
        let started = Instant::now();
        file.write_all(&record)?;
        file.sync_data()?;
        let _ = latency.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    std::fs::remove_file(path)?;
    Ok(latency)
}

#[derive(Debug)]
pub struct Produced {
    pub records: u64,
    pub wall: Duration,
    pub latency: Histogram<u64>,
    pub errors: u64,
}

/// Sends `records` records of `bytes` bytes to `topic`, at most `in_flight` unacknowledged,
/// with the gateway's producer settings (acks=all, idempotence, its default 2 ms linger, so
/// both batch alike) plus `properties`.
pub async fn bare_producer(
    brokers: &str,
    topic: &str,
    properties: &[callgate_ops::SecretString],
    records: u64,
    bytes: usize,
    in_flight: usize,
) -> Result<Produced, rdkafka::error::KafkaError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "5000");
    for (key, value) in callgate_ops::kafka_properties(properties) {
        config.set(key, value);
    }
    create_topic(&config, topic).await?;
    let producer: FutureProducer = config.create()?;
    let value = vec![b'x'; bytes];
    let started = Instant::now();
    let mut latency = histogram();
    let mut errors = 0;
    let mut pending = futures::stream::FuturesUnordered::new();
    use futures::StreamExt as _;
    for i in 0..records {
        while pending.len() >= in_flight {
            if let Some((sent, ok)) = pending.next().await {
                record(&mut latency, &mut errors, sent, ok);
            }
        }
        let key = format!("baseline:{}", i % 10_000);
        let producer = producer.clone();
        let value = value.clone();
        let topic = topic.to_owned();
        pending.push(async move {
            let sent = Instant::now();
            let result =
                producer.send(FutureRecord::to(&topic).key(&key).payload(&value), Duration::from_secs(5)).await;
            (sent, result.is_ok())
        });
    }
    while let Some((sent, ok)) = pending.next().await {
        record(&mut latency, &mut errors, sent, ok);
    }
    Ok(Produced { records, wall: started.elapsed(), latency, errors })
}

/// A scratch topic with the events topic's 12 partitions (the local broker does not create topics on produce).
async fn create_topic(config: &ClientConfig, topic: &str) -> Result<(), rdkafka::error::KafkaError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = config.create()?;
    let topic = NewTopic::new(topic, 12, TopicReplication::Fixed(1));
    for result in admin.create_topics([&topic], &AdminOptions::new()).await? {
        if let Err((name, code)) = result {
            tracing::warn!(topic = %name, ?code, "baseline topic not created; relying on auto-creation");
        }
    }
    Ok(())
}

fn record(latency: &mut Histogram<u64>, errors: &mut u64, sent: Instant, ok: bool) {
    if ok {
        let _ = latency.record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX).max(1));
    } else {
        *errors += 1;
    }
}
