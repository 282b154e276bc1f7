//! Probes of the local broker: does it behave like Kafka where callgate depends on it?
//!
//! Each test states one property that the gateway, the worker or the later operations work
//! relies on, and fails on a broker without it. tansu 0.6.0, the broker this stack ran on
//! before, fails the first two: it skipped the rest of a record batch when a fetch started
//! inside it, and forgot everything on restart. The README ("The local broker") lists what
//! these probes found.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use callgate_tests::{TestBroker, create_topic, create_topic_with, fresh_topic, kafka_brokers};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// Caps every wait; never paces a test.
const PATIENCE: Duration = Duration::from_secs(60);

/// An idempotent acks=all producer, as the gateway's, that batches: records sent together
/// within `linger` share one record batch.
fn producer(brokers: &str, linger: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers).set("enable.idempotence", "true").set("linger.ms", linger);
    for (key, value) in extra {
        config.set(*key, *value);
    }
    config.create().unwrap()
}

/// Sends `records` (key, value) all at once and waits for every acknowledgement; returns the
/// (partition, offset) the broker gave each.
async fn send_all(producer: &FutureProducer, topic: &str, records: &[(String, Vec<u8>)]) -> Vec<(i32, i64)> {
    let pending = records
        .iter()
        .map(|(key, value)| producer.send(FutureRecord::to(topic).key(key).payload(value), Duration::from_secs(30)));
    let delivered = futures::future::join_all(pending).await.into_iter().map(|r| r.map_err(|(e, _)| e).unwrap());
    delivered.map(|delivery| (delivery.partition, delivery.offset)).collect()
}

fn config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("probe-{}", uuid::Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false");
    config
}

/// Reads `partition` of `topic` from `from` until `expected` records arrived or PATIENCE ran
/// out; returns (offset, key, value).
fn read_partition(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    from: Offset,
    expected: usize,
) -> Vec<(i64, String, Vec<u8>)> {
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, from).unwrap();
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut records = Vec::new();
    while records.len() < expected && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.unwrap();
            let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
            records.push((message.offset(), key, message.payload().unwrap_or_default().to_vec()));
        }
    }
    records
}

#[tokio::test]
async fn a_fetch_that_starts_inside_a_record_batch_returns_the_rest_of_that_batch() {
    let topic = fresh_topic();
    create_topic(&kafka_brokers(), &topic, 1);
    // A long linger and all 100 sent before any is acknowledged: one record batch.
    let producer = producer(&kafka_brokers(), "500", &[]);
    let records: Vec<_> = (0..100).map(|i| (format!("k{i}"), format!("v{i}").into_bytes())).collect();
    let offsets = send_all(&producer, &topic, &records).await;
    assert_eq!(offsets.iter().map(|(_, o)| *o).collect::<Vec<_>>(), (0..100).collect::<Vec<_>>());

    // A consumer resuming at offset 50, as after a commit in the middle of that batch.
    let consumer: BaseConsumer = config(&kafka_brokers()).create().unwrap();
    let read = tokio::task::spawn_blocking(move || read_partition(&consumer, &topic, 0, Offset::Offset(50), 50))
        .await
        .unwrap();
    let got: Vec<_> = read.iter().map(|(offset, key, _)| (*offset, key.clone())).collect();
    let want: Vec<_> = (50..100).map(|i| (i, format!("k{i}"))).collect();
    assert_eq!(got, want, "a fetch from offset 50 of a 100-record batch");
}

#[tokio::test]
async fn every_acknowledged_record_and_committed_offset_survives_a_kill_and_a_restart() {
    let mut broker = TestBroker::start();
    let topic = "probe-restart";
    create_topic(&broker.brokers(), topic, 3);
    let records: Vec<_> = (0..300).map(|i| (format!("k{i}"), format!("value {i}").into_bytes())).collect();
    let acked = send_all(&producer(&broker.brokers(), "5", &[]), topic, &records).await;
    let group = config(&broker.brokers());
    {
        let consumer: BaseConsumer = group.create().unwrap();
        let mut commit = TopicPartitionList::new();
        commit.add_partition_offset(topic, 0, Offset::Offset(7)).unwrap();
        consumer.commit(&commit, CommitMode::Sync).unwrap();
    }

    broker.restart(); // SIGKILL, then the same port and storage

    let mut before: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    for ((key, _), (partition, offset)) in records.iter().zip(&acked) {
        before.entry(*partition).or_default().push((*offset, key.clone()));
    }
    let brokers = broker.brokers();
    let after = tokio::task::spawn_blocking(move || {
        let mut after = BTreeMap::new();
        for (partition, acked) in &before {
            let consumer: BaseConsumer = config(&brokers).create().unwrap();
            let read = read_partition(&consumer, topic, *partition, Offset::Beginning, acked.len());
            after.insert(*partition, read.into_iter().map(|(offset, key, _)| (offset, key)).collect::<Vec<_>>());
        }
        let consumer: BaseConsumer = group.create().unwrap();
        let mut wanted = TopicPartitionList::new();
        wanted.add_partition(topic, 0);
        let committed = consumer.committed_offsets(wanted, Duration::from_secs(10)).unwrap();
        (before, after, committed.find_partition(topic, 0).unwrap().offset())
    })
    .await
    .unwrap();
    let (before, after, committed) = after;
    assert_eq!(after, before, "every acknowledged record, at its offset, in order");
    assert_eq!(committed, Offset::Offset(7), "the group's committed offset");
}

#[tokio::test]
async fn topic_configs_are_kept_and_described_to_clients() {
    let topic = fresh_topic();
    let configs = [("max.message.bytes", "10485760"), ("retention.ms", "1209600000")];
    create_topic_with(&kafka_brokers(), &topic, 2, &configs);
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", kafka_brokers()).create().unwrap();
    let described = admin.describe_configs([&ResourceSpecifier::Topic(&topic)], &AdminOptions::new()).await.unwrap();
    let resource = described.into_iter().next().unwrap().unwrap();
    for (name, value) in configs {
        let entry = resource.get(name).unwrap_or_else(|| panic!("{name} not described: {:?}", resource.entries));
        assert_eq!(entry.value.as_deref(), Some(value), "{name}");
    }
}

#[tokio::test]
async fn a_record_of_several_megabytes_goes_in_and_comes_out_whole() {
    // The gateway's largest body (8 MiB) plus its envelope must fit: 10 MiB on both sides.
    let topic = fresh_topic();
    create_topic_with(&kafka_brokers(), &topic, 1, &[("max.message.bytes", "10485760")]);
    let producer = producer(&kafka_brokers(), "5", &[("message.max.bytes", "10485760")]);
    // 7.5 MB that does not compress away, and a small record behind it.
    let big: Vec<u8> = (0..7_500_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let records = vec![("big".to_owned(), big.clone()), ("small".to_owned(), b"after".to_vec())];
    send_all(&producer, &topic, &records).await;

    let consumer: BaseConsumer = config(&kafka_brokers())
        .set("fetch.message.max.bytes", "10485760")
        .set("fetch.max.bytes", "20971520")
        .set("receive.message.max.bytes", "21000000")
        .create()
        .unwrap();
    let read =
        tokio::task::spawn_blocking(move || read_partition(&consumer, &topic, 0, Offset::Beginning, 2)).await.unwrap();
    assert_eq!(read.len(), 2, "both records read back");
    assert_eq!(read[0].1, "big");
    assert!(read[0].2 == big, "the 7.5 MB record differs ({} bytes read)", read[0].2.len());
    assert_eq!((read[1].1.as_str(), read[1].2.as_slice()), ("small", b"after".as_slice()));
}

#[tokio::test]
async fn consumer_group_lag_is_readable_the_way_an_autoscaler_reads_it() {
    // KEDA's Kafka scaler: lag = the partition's latest offset (ListOffsets) minus the
    // group's committed offset (OffsetFetch). On the SQLite engine: the memory engine answers
    // ListOffsets(latest) with the last record batch's base offset + 1, which is wrong as soon
    // as a batch holds more than one record (README, "The local broker").
    let broker = TestBroker::start();
    let topic = "probe-lag".to_owned();
    create_topic(&broker.brokers(), &topic, 2);
    let records: Vec<_> = (0..40).map(|i| (format!("k{i}"), b"x".to_vec())).collect();
    let acked = send_all(&producer(&broker.brokers(), "5", &[]), &topic, &records).await;
    let group = config(&broker.brokers());
    let lag = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = group.create().unwrap();
        let mut commit = TopicPartitionList::new();
        commit.add_partition_offset(&topic, 0, Offset::Offset(3)).unwrap();
        commit.add_partition_offset(&topic, 1, Offset::Offset(1)).unwrap();
        consumer.commit(&commit, CommitMode::Sync).unwrap();
        let mut partitions = TopicPartitionList::new();
        partitions.add_partition(&topic, 0);
        partitions.add_partition(&topic, 1);
        let committed = consumer.committed_offsets(partitions, Duration::from_secs(10)).unwrap();
        (0..2)
            .map(|p| {
                let (_, high) = consumer.fetch_watermarks(&topic, p, Duration::from_secs(10)).unwrap();
                let Offset::Offset(at) = committed.find_partition(&topic, p).unwrap().offset() else {
                    panic!("partition {p} has no committed offset")
                };
                (high, high - at)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let high = |p: i32| acked.iter().filter(|(partition, _)| *partition == p).count() as i64;
    assert_eq!(lag, vec![(high(0), high(0) - 3), (high(1), high(1) - 1)], "(high watermark, lag) per partition");
}

#[tokio::test]
async fn static_members_with_the_cooperative_sticky_assignor_share_the_partitions() {
    let topic = fresh_topic();
    create_topic(&kafka_brokers(), &topic, 4);
    let group = format!("probe-{}", uuid::Uuid::new_v4().simple());
    let member = move |instance: &str| -> BaseConsumer {
        let consumer: BaseConsumer = config(&kafka_brokers())
            .set("group.id", &group)
            .set("group.instance.id", instance)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", "6000")
            .create()
            .unwrap();
        consumer.subscribe(&[&topic]).unwrap();
        consumer
    };
    let assigned = tokio::task::spawn_blocking(move || {
        let members = [member("worker-0"), member("worker-1")];
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut sets = Vec::new();
            for consumer in &members {
                let _ = consumer.poll(Duration::from_millis(100));
                let assignment = consumer.assignment().unwrap();
                sets.push(assignment.elements().iter().map(|e| e.partition()).collect::<BTreeSet<_>>());
            }
            let settled = sets.iter().all(|s| !s.is_empty()) && sets.iter().map(BTreeSet::len).sum::<usize>() == 4;
            if settled || Instant::now() >= deadline {
                return sets;
            }
        }
    })
    .await
    .unwrap();
    eprintln!("assignments: {assigned:?}");
    assert!(assigned.iter().all(|s| !s.is_empty()), "both members own partitions: {assigned:?}");
    assert!(assigned[0].is_disjoint(&assigned[1]), "{assigned:?}");
    let all: BTreeSet<i32> = assigned.iter().flatten().copied().collect();
    assert_eq!(all, (0..4).collect(), "{assigned:?}");
}
