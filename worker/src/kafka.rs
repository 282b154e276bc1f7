//! The Kafka client: the consumer's settings and creation, the callbacks that feed librdkafka's
//! statistics and rebalances into the metrics, and the assignments they keep (which partitions
//! this worker owns, under which generation). The pipeline that uses it is in `consumer.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use callgate_ops::{SecretString, kafka_properties};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, TopicPartitionList};

use crate::config::RunConfig;
use crate::metrics::Metrics;

/// Feeds librdkafka's statistics and rebalances into the metrics.
#[derive(Debug)]
pub struct WorkerContext {
    metrics: Metrics,
    topic: String,
    assigned: Assigned,
}

/// The partitions this worker owns right now, each with the generation of the assignment that
/// gave it, kept by the rebalance callback.
///
/// Every record a lane queues carries the generation its partition had when it was read, and a
/// lane applies only records of the partition's current generation. A record read under an
/// earlier assignment is dropped (the partition moved away, or moved away and came back:
/// librdkafka then reads again from the committed offset, so the dropped records come again).
/// Checking ownership alone was not enough: after a revoke and an assign, a stale batch behind
/// dropped records was applied and its offset committed past them, and a crash before their
/// second copies were applied lost them.
pub type Assigned = Arc<std::sync::Mutex<Assignments>>;

#[derive(Debug, Default)]
pub struct Assignments {
    current: HashMap<(String, i32), u64>,
    next: u64,
}

impl Assignments {
    /// The generation of the partition (`(topic, partition)`)'s current assignment, if this
    /// worker owns it.
    pub fn generation(&self, partition: &(String, i32)) -> Option<u64> {
        self.current.get(partition).copied()
    }

    pub(crate) fn assign(&mut self, topic: &str, partition: i32) {
        self.next += 1;
        self.current.insert((topic.to_owned(), partition), self.next);
    }

    /// How many partitions this worker owns.
    pub(crate) fn count(&self) -> usize {
        self.current.len()
    }

    pub(crate) fn revoke(&mut self, topic: &str, partition: i32) {
        self.current.remove(&(topic.to_owned(), partition));
    }
}

impl ClientContext for WorkerContext {
    fn stats(&self, statistics: Statistics) {
        self.metrics.consumer_lag.reset();
        self.metrics.committed_offset.reset();
        if let Some(topic) = statistics.topics.get(&self.topic) {
            for (partition, stats) in &topic.partitions {
                let labels = [self.topic.as_str(), &partition.to_string()];
                if *partition >= 0 && stats.consumer_lag >= 0 {
                    self.metrics.consumer_lag.with_label_values(&labels).set(stats.consumer_lag);
                }
                if *partition >= 0 && stats.committed_offset >= 0 {
                    self.metrics.committed_offset.with_label_values(&labels).set(stats.committed_offset);
                }
            }
        }
    }
}

impl ConsumerContext for WorkerContext {
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(error) = result {
            self.metrics.commit_errors.inc();
            tracing::warn!(%error, "offset commit failed; those records will be delivered again and skipped");
        }
    }

    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance
            && let Ok(mut assigned) = self.assigned.lock()
        {
            for element in list.elements() {
                assigned.revoke(element.topic(), element.partition());
            }
            self.metrics.partition_changes.with_label_values(&["revoked"]).inc_by(list.count() as u64);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Ok(mut assigned) = self.assigned.lock() {
            if let Rebalance::Assign(list) = rebalance {
                for element in list.elements() {
                    assigned.assign(element.topic(), element.partition());
                }
                self.metrics.partition_changes.with_label_values(&["assigned"]).inc_by(list.count() as u64);
            }
            // From our own assignments, not librdkafka's `assignment()`: that asks librdkafka's
            // main thread and waits without a limit, and when this callback runs while the
            // consumer closes, it waited forever and the worker's shutdown hung.
            self.metrics.assigned_partitions.set(i64::try_from(assigned.count()).unwrap_or(i64::MAX));
        }
        match rebalance {
            Rebalance::Assign(list) => tracing::info!(partitions = ?partitions(list), "partitions assigned"),
            Rebalance::Revoke(list) => tracing::info!(partitions = ?partitions(list), "partitions revoked"),
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
    }
}

fn partitions(list: &TopicPartitionList) -> Vec<i32> {
    list.elements().iter().map(|e| e.partition()).collect()
}

pub type KafkaConsumer = StreamConsumer<WorkerContext>;

/// The shared settings, then `own`: the properties of this kind of client only.
pub(crate) fn client_config(config: &RunConfig, own: &[SecretString]) -> ClientConfig {
    client_for(&config.kafka_brokers, &config.kafka_properties, own)
}

/// Every client's settings: the brokers, the shared properties, then `own`.
pub(crate) fn client_for(brokers: &str, shared: &[SecretString], own: &[SecretString]) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", brokers).set("reconnect.backoff.max.ms", "1000");
    for (key, value) in kafka_properties(shared).chain(kafka_properties(own)) {
        client.set(key, value);
    }
    client
}

/// The largest record the worker writes or reads: librdkafka's default for the largest
/// response a consumer accepts (`receive.message.max.bytes`), so whatever the worker could read
/// it can write again. librdkafka's own producer default (1,000,000) would refuse a long call's
/// record (the gateway takes bodies up to 8 MiB).
pub(crate) const MAX_RECORD_BYTES: &str = "100000000";

/// An idempotent `acks=all` producer named `client_id`: a record it acknowledges is on every
/// in-sync replica, and a retry never writes it twice.
pub(crate) fn acked_producer(
    mut client: ClientConfig,
    client_id: &str,
) -> Result<rdkafka::producer::FutureProducer, KafkaError> {
    client
        .set("client.id", client_id)
        .set("message.max.bytes", MAX_RECORD_BYTES)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
}

/// A consumer in the group, subscribed, committing only by hand.
pub fn create_consumer(config: &RunConfig, metrics: Metrics, assigned: Assigned) -> Result<KafkaConsumer, KafkaError> {
    let mut client = client_config(config, &config.kafka_consumer_properties);
    client
        .set("group.id", &config.kafka_group_id)
        .set("client.id", "callgate-worker")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // A new group starts at the oldest record: nothing accepted before the first worker
        // started is skipped.
        .set("auto.offset.reset", "earliest")
        // Small per-partition fetches interleave the partitions in the consumer's queue, so a
        // batch spans many partitions and their transactions run in parallel (with the 1 MiB
        // default, a batch is one partition's backlog applied serially).
        .set("max.partition.fetch.bytes", "65536")
        .set("statistics.interval.ms", config.kafka_stats_interval.as_millis().to_string())
        .set("partition.assignment.strategy", config.kafka_assignor.strategy());
    if let Some(instance) = &config.kafka_group_instance_id {
        client.set("group.instance.id", instance);
    }
    let context = WorkerContext { metrics, topic: config.kafka_topic.clone(), assigned };
    let consumer: KafkaConsumer = client.create_with_context(context)?;
    consumer.subscribe(&[&config.kafka_topic])?;
    Ok(consumer)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    /// The assigned-partitions gauge comes from the worker's own assignments. Asking librdkafka
    /// (`assignment()`) from inside the callback waited forever when the callback ran while the
    /// consumer was closing, and a worker's shutdown hung (seen once in the test suite: a
    /// static member leaving).
    #[test]
    fn the_assigned_partitions_gauge_follows_the_rebalances_without_asking_librdkafka() {
        let metrics = Metrics::new();
        let context = WorkerContext { metrics: metrics.clone(), topic: "t".into(), assigned: Assigned::default() };
        // Never connected: librdkafka itself would say it owns nothing.
        let consumer: BaseConsumer<WorkerContext> = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("group.id", "g")
            .create_with_context(context)
            .unwrap();
        let partitions = |numbers: &[i32]| {
            let mut list = TopicPartitionList::new();
            for n in numbers {
                list.add_partition("t", *n);
            }
            list
        };
        let context = consumer.context();
        let three = partitions(&[0, 1, 2]);
        context.pre_rebalance(&consumer, &Rebalance::Assign(&three));
        context.post_rebalance(&consumer, &Rebalance::Assign(&three));
        assert_eq!(metrics.assigned_partitions.get(), 3);
        let one = partitions(&[1]);
        context.pre_rebalance(&consumer, &Rebalance::Revoke(&one));
        context.post_rebalance(&consumer, &Rebalance::Revoke(&one));
        assert_eq!(metrics.assigned_partitions.get(), 2);
    }

    #[test]
    fn each_client_gets_the_shared_properties_and_only_its_own() {
        let cli = Cli::try_parse_from([
            "callgate-worker",
            "run",
            "--database-url",
            "postgres://h/db",
            "--kafka-properties",
            "security.protocol=ssl, fetch.wait.max.ms=500",
            "--kafka-consumer-properties",
            "fetch.wait.max.ms=100",
            "--kafka-producer-properties",
            "linger.ms=5",
        ])
        .unwrap();
        let Command::Run(config) = &cli.command else { panic!("run expected") };
        let consumer = client_config(config, &config.kafka_consumer_properties);
        assert_eq!(consumer.get("security.protocol"), Some("ssl"));
        assert_eq!(consumer.get("fetch.wait.max.ms"), Some("100"), "the client's own value wins");
        assert_eq!(consumer.get("linger.ms"), None);
        let producer = client_config(config, &config.kafka_producer_properties);
        assert_eq!(producer.get("security.protocol"), Some("ssl"));
        assert_eq!(producer.get("linger.ms"), Some("5"));
        assert_eq!(producer.get("fetch.wait.max.ms"), Some("500"));
    }
}
