//! Topics, a reader for them, and a private broker process for outage tests.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// Creates a topic with the broker's own CLI.
pub fn create_topic(brokers: &str, name: &str, partitions: u32) {
    create_topic_with(brokers, name, partitions, &[]);
}

/// Creates a topic with topic configs, named as Kafka names them (`max.message.bytes`, …).
pub fn create_topic_with(brokers: &str, name: &str, partitions: u32, configs: &[(&str, &str)]) {
    let mut command = Command::new(crate::broker_bin());
    command.args(["topic", "create", name, "--partitions", &partitions.to_string(), "--broker"]);
    command.arg(format!("tcp://{brokers}"));
    for (key, value) in configs {
        command.arg("--config").arg(format!("{key}={value}"));
    }
    let status = command.stdout(Stdio::null()).status().unwrap();
    assert!(status.success(), "creating topic {name} failed");
}

/// A fresh topic name.
pub fn fresh_topic() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}

#[derive(Debug, Clone)]
pub struct ConsumedRecord {
    pub partition: i32,
    pub key: String,
    /// The value as JSON (`Null` when it is not JSON).
    pub value: serde_json::Value,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl ConsumedRecord {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Reads `topic` from the beginning until `expected` records arrived (or `within` passed).
pub async fn consume(brokers: &str, topic: &str, expected: usize, within: Duration) -> Vec<ConsumedRecord> {
    let brokers = brokers.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", format!("test-reader-{}", uuid::Uuid::new_v4().simple()))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)).unwrap();
        let partitions = metadata.topics()[0].partitions().len() as i32;
        assert!(partitions > 0, "topic {topic} has no partitions");
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            assignment.add_partition_offset(&topic, p, Offset::Beginning).unwrap();
        }
        consumer.assign(&assignment).unwrap();
        let deadline = Instant::now() + within;
        let mut records = Vec::new();
        while records.len() < expected && Instant::now() < deadline {
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message.unwrap();
            let headers = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|header| {
                            let value =
                                header.value.map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
                            (header.key.to_owned(), value)
                        })
                        .collect()
                })
                .unwrap_or_default();
            records.push(ConsumedRecord {
                partition: message.partition(),
                key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                value: serde_json::from_slice(message.payload().unwrap_or_default()).unwrap_or_default(),
                payload: message.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
        records
    })
    .await
    .unwrap()
}

/// A broker of the test's own, which the test may kill and start again. It keeps its log in
/// SQLite in a directory of its own, so, like Kafka, it still has every record it acknowledged
/// (and its topics and committed offsets) after a `kill -9` and a restart.
#[derive(Debug)]
pub struct TestBroker {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl TestBroker {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut broker = Self { port, dir: tempfile::tempdir().unwrap(), child: None };
        broker.restart();
        broker
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker if it runs (SIGKILL: no chance to flush anything) and starts it again on
    /// the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        let url = format!("tcp://127.0.0.1:{}", self.port);
        // The SQLite path is relative to the broker's working directory.
        let child = Command::new(crate::broker_bin())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://broker.db"])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "test broker did not open its port");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the broker (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.stop();
    }
}
