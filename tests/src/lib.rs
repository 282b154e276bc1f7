//! Test harness: a fresh database and a fresh topic per test, a gateway on port 0, a signed
//! client for each provider, and a consumer that reads the topic back.
//!
//! The stack itself (Postgres, the nisshi broker) is started by `deploy/local/test.sh`, which
//! exports `CALLGATE_TEST_DATABASE_URL`, `CALLGATE_TEST_KAFKA_BROKERS`, `CALLGATE_BROKER_BIN`
//! and `CALLGATE_TEST_KAFKA_CONSUMER_PROPERTIES`.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

pub mod baseline;
pub mod broker;
pub mod calcom;
pub mod calls;
pub mod prometheus;
pub mod proxy;
pub mod records;
pub mod signed;
pub mod tenant;
pub mod worker;

use std::time::{Duration, Instant};

use callgate_gateway::Gateway;
use callgate_gateway::config::{Cli, Command, ServeConfig};
use clap::Parser as _;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

pub use broker::{ConsumedRecord, TestBroker, consume, create_topic, create_topic_with, fresh_topic};
pub use tenant::{Tenant, seed_bench_tenant, seed_tenant};

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the suite with deploy/local/test.sh, which starts Postgres and the broker")
    })
}

/// Postgres admin URL of the test cluster.
/// A binary of this build, next to the test executables (cargo builds each package's binaries
/// for its own tests; `deploy/local/test.sh` tests the whole workspace).
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let bin = dir.join(name);
    assert!(bin.exists(), "{} missing: build the workspace (deploy/local/test.sh does)", bin.display());
    bin
}

pub fn admin_database_url() -> String {
    required_env("CALLGATE_TEST_DATABASE_URL")
}

pub fn kafka_brokers() -> String {
    required_env("CALLGATE_TEST_KAFKA_BROKERS")
}

/// The worker consumer's librdkafka settings for the local broker (`deploy/local/lib.sh`,
/// `BROKER_CONSUMER_PROPERTIES`: its fetch wait and session timeout).
pub fn consumer_properties() -> String {
    required_env("CALLGATE_TEST_KAFKA_CONSUMER_PROPERTIES")
}

/// The broker's binary, for its topic CLI and for tests that run a broker of their own.
pub fn broker_bin() -> String {
    required_env("CALLGATE_BROKER_BIN")
}

/// A database of its own, migrated.
#[derive(Debug, Clone)]
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> Self {
        let admin = admin_database_url();
        let name = format!("cg_{}", uuid::Uuid::new_v4().simple());
        let admin_pool = PgPoolOptions::new().max_connections(1).connect(&admin).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin_pool).await.unwrap();
        admin_pool.close().await;
        let url = match admin.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("database URL without a database name: {admin}"),
        };
        let pool = PgPoolOptions::new().max_connections(5).connect(&url).await.unwrap();
        callgate_worker::MIGRATOR.run(&pool).await.unwrap();
        Self { pool, url }
    }
}

/// Logs to the test's output (shown on failure). `RUST_LOG` overrides the default filter.
pub fn init_logs() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info,sqlx=warn,librdkafka=warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// A random master key for a test.
pub fn secret_key() -> String {
    callgate_contract::SecretCipher::generate_key()
}

/// A migrated database holding the "acme" tenant, a fresh topic, and a gateway serving both.
#[derive(Debug)]
pub struct Stack {
    pub gw: TestGateway,
    pub db: TestDb,
    pub topic: String,
    pub tenant: Tenant,
    /// The master key the gateway opens secrets with, and its cipher.
    pub secret_key: String,
    pub cipher: callgate_contract::SecretCipher,
}

/// Starts a [`Stack`]: `twilio_public_base_url` is what the tenant's Twilio account is
/// configured with, `extra` are additional `serve` flags. Logging is the caller's choice.
pub async fn spawn_stack(twilio_public_base_url: &str, partitions: u32, extra: &[&str]) -> Stack {
    let db = TestDb::create().await;
    let key = secret_key();
    let cipher = callgate_contract::SecretCipher::from_base64::<&str>(&key, &[]).unwrap();
    let vapi_auth = serde_json::json!({"mode": "secret"});
    let tenant = seed_tenant(&db, &cipher, "acme", "+1415555", twilio_public_base_url, vapi_auth).await;
    let topic = fresh_topic();
    create_topic(&kafka_brokers(), &topic, partitions);
    let gw = TestGateway::start(serve_config(&db, &kafka_brokers(), &topic, &key, extra)).await;
    Stack { gw, db, topic, tenant, secret_key: key, cipher }
}

/// A gateway running in this process.
#[derive(Debug)]
pub struct TestGateway {
    pub gateway: Gateway,
    pub base_url: String,
    /// The ops listener: /metrics, /readyz, /healthz.
    pub ops_url: String,
    pub client: reqwest::Client,
}

/// The serve configuration for tests: port 0, this database and topic, extra flags appended.
pub fn serve_config(db: &TestDb, brokers: &str, topic: &str, secret_key: &str, extra: &[&str]) -> ServeConfig {
    let mut args = vec![
        "callgate-gateway".to_owned(),
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--metrics-listen".into(),
        "127.0.0.1:0".into(),
        "--database-url".into(),
        db.url.clone(),
        "--secret-key".into(),
        secret_key.into(),
        "--kafka-brokers".into(),
        brokers.into(),
        "--kafka-topic".into(),
        topic.into(),
        // Only LISTEN/NOTIFY may refresh the directory in tests, unless a test says otherwise.
        "--directory-reload-interval".into(),
        "1h".into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    match Cli::try_parse_from(args).unwrap().command {
        Command::Serve(config) => *config,
        _ => unreachable!("serve was requested"),
    }
}

impl TestGateway {
    /// Starts a gateway and waits until it is ready (directory loaded, broker reachable).
    pub async fn start(config: ServeConfig) -> Self {
        let gateway = Gateway::start(config).await.unwrap();
        let base_url = format!("http://{}", gateway.local_addr());
        let ops_url = format!("http://{}", gateway.ops_addr());
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let this = Self { gateway, base_url, ops_url, client };
        this.wait_ready(Duration::from_secs(60)).await;
        this
    }

    pub async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ready = self.client.get(format!("{}/readyz", self.ops_url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(Instant::now() < deadline, "gateway not ready within {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub async fn metrics(&self) -> String {
        self.client.get(format!("{}/metrics", self.ops_url)).send().await.unwrap().text().await.unwrap()
    }
}
