//! A worker in the test process (or as a real process, for kill tests), and ways to look at
//! what it wrote.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use callgate_worker::Worker;
use callgate_worker::cli::{Cli, Command};
use callgate_worker::config::RunConfig;
use clap::Parser as _;
use sqlx::PgPool;

use crate::{TestDb, create_topic, fresh_topic, kafka_brokers};

/// Deadline for waiting on the worker; only ever caps a wait, never paces a test.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// `callgate-worker run` arguments for this database and topic, with a group and a DLQ topic of
/// the test's own.
pub fn run_args(db: &TestDb, topic: &str, group: &str, dlq_topic: &str) -> Vec<String> {
    [
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &db.url,
        "--kafka-brokers",
        &kafka_brokers(),
        "--kafka-topic",
        topic,
        "--kafka-dlq-topic",
        dlq_topic,
        "--kafka-group-id",
        group,
        "--kafka-stats-interval",
        "1s",
        "--kafka-consumer-properties",
        &crate::consumer_properties(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

pub fn run_config(args: &[String], extra: &[&str]) -> RunConfig {
    let mut argv = vec!["callgate-worker".to_owned(), "run".to_owned()];
    argv.extend(args.iter().cloned());
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    match Cli::try_parse_from(argv).unwrap().command {
        Command::Run(config) => *config,
        _ => unreachable!("run was requested"),
    }
}

/// A fresh DLQ topic (1 partition) and a fresh group name.
pub fn fresh_dlq_and_group() -> (String, String) {
    let dlq = fresh_topic();
    create_topic(&kafka_brokers(), &dlq, 1);
    (dlq, format!("group-{}", uuid::Uuid::new_v4().simple()))
}

/// Starts a worker on `topic` in its own group, with its own DLQ topic.
pub async fn start_worker(db: &TestDb, topic: &str) -> (Worker, String) {
    let (dlq, group) = fresh_dlq_and_group();
    let worker = Worker::start(run_config(&run_args(db, topic, &group, &dlq), &[])).await.unwrap();
    (worker, dlq)
}

/// Waits until `sql` (a single count) returns `expected`; panics with the last value otherwise.
pub async fn wait_count(pool: &PgPool, sql: &str, expected: i64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let count: i64 = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap();
        if count == expected {
            return;
        }
        assert!(Instant::now() < deadline, "{sql} stayed at {count}, expected {expected}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Everything the worker decides, as canonical text: calls, customers, appointments with their
/// history, and the ledger of events; without generated ids, processing times or offsets, so
/// two databases fed the same events compare equal.
pub async fn snapshot(pool: &PgPool) -> String {
    let queries = [
        "SELECT json_agg(t ORDER BY t.provider, t.provider_call_id)::text FROM (
            SELECT c.provider, c.provider_call_id, co.slug, c.direction, c.caller_raw, c.caller_e164, c.business_e164,
                   c.status, c.progress, c.progress_seq, c.started_at, c.ended_at, c.duration_ms, c.transcript,
                   c.summary, c.analysis, c.cost::text, c.disconnection_reason, cu.e164 AS customer, c.customer_link,
                   c.review_reason, c.review_detail
            FROM calls c JOIN companies co ON co.id = c.company_id LEFT JOIN customers cu ON cu.id = c.customer_id) t",
        "SELECT json_agg(t ORDER BY t.slug, t.e164)::text FROM (
            SELECT co.slug, cu.e164, cu.name, cu.email FROM customers cu JOIN companies co ON co.id = cu.company_id) t",
        "SELECT json_agg(t ORDER BY t.provider_call_id, t.starts_at)::text FROM (
            SELECT c.provider_call_id, s.name AS service, a.starts_at, a.ends_at, a.timezone, a.customer_name,
                   a.customer_email, a.notes, a.status, a.calcom_sync_status, cu.e164 AS customer,
                   (SELECT json_agg(json_build_array(h.from_status, h.to_status, h.from_sync_status, h.to_sync_status, h.reason) ORDER BY h.id)
                    FROM appointment_status_history h WHERE h.appointment_id = a.id) AS history
            FROM appointments a JOIN calls c ON c.id = a.call_id JOIN services s ON s.id = a.service_id
            LEFT JOIN customers cu ON cu.id = a.customer_id) t",
        "SELECT json_agg(t ORDER BY t.event_id)::text FROM (
            SELECT event_id, provider, event_type, provider_call_id, outcome, detail FROM processed_events) t",
    ];
    let mut out = String::new();
    for sql in queries {
        let text: Option<String> = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap();
        out.push_str(&text.unwrap_or_else(|| "[]".into()));
        out.push('\n');
    }
    out
}

/// The `callgate-worker` binary of this build (cargo builds it for the worker's own tests).
pub fn worker_bin() -> PathBuf {
    crate::workspace_bin("callgate-worker")
}

/// Reads a metric's value from Prometheus text (the sum over the series matching `selector`,
/// e.g. `callgate_worker_events_total{provider="retell"` … a prefix of the series line).
pub fn metric_sum(text: &str, selector: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(selector))
        .filter_map(|line| line.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        // An empty f64 sum is -0.0; report nothing as 0.
        .fold(0.0, |sum, v| sum + v)
}

/// Events a worker has committed (applied, skipped, ignored, refused or dead-lettered), from
/// its metrics.
pub fn events_committed(worker: &Worker) -> u64 {
    metric_sum(&worker.metrics().render(), "callgate_worker_events_total{") as u64
}

/// `GET` on the worker's ops endpoint.
pub async fn ops_get(worker: &Worker, path: &str) -> (u16, String) {
    let url = format!("http://{}{path}", worker.local_addr());
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Delivers a webhook whose number was just added: the gateway's directory learns it within
/// milliseconds (LISTEN/NOTIFY); until then the answer is 401, as for any number it does not
/// know.
pub async fn deliver_once_routed(webhook: &crate::calls::Webhook, gw: &crate::TestGateway) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = webhook.send(gw).await;
        if status.is_success() {
            return;
        }
        assert!(status == reqwest::StatusCode::UNAUTHORIZED && Instant::now() < deadline, "answered {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the worker's metrics satisfy `check`.
pub async fn wait_metrics(worker: &Worker, what: &str, check: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, text) = ops_get(worker, "/metrics").await;
        if check(&text) {
            return;
        }
        assert!(Instant::now() < deadline, "waited in vain for {what}:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
