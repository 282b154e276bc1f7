//! How long a worker joining the group stops the worker already in it, with each assignor.
//!
//! A producer keeps a steady stream of calls (shaped like the gateway's records) flowing into a
//! 12-partition topic. Worker A runs alone until it applies the stream; then worker B joins.
//! The bench samples both workers' applied-event counters every 10 ms and reports the longest
//! stretch in which A applied nothing, and in which the group as a whole applied nothing, from
//! B's start until both have applied events for two seconds.
//!
//!   deploy/local/with-stack.sh cargo bench -p callgate-tests --bench rebalance_pause [-- RATE]
//!
//! RATE is in records per second (default 300).

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use callgate_tests::worker::{events_committed, fresh_dlq_and_group, run_args, run_config};
use callgate_tests::{TestDb, create_topic, fresh_topic, kafka_brokers, records, seed_bench_tenant};
use callgate_worker::Worker;
use rdkafka::producer::{FutureRecord, Producer as _};

const PARTITIONS: u32 = 12;
const SAMPLE: Duration = Duration::from_millis(10);

#[tokio::main]
async fn main() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let rate: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(300);
    println!("rebalance pause: {rate} records/s into {PARTITIONS} partitions; worker B joins worker A");
    for assignor in ["eager", "cooperative-sticky"] {
        let (a_pause, group_pause, settle) = run(rate, assignor).await;
        println!(
            "  {assignor:>18}: worker A applied nothing for {:.0} ms; the group for {:.0} ms; \
             B applied its first event {:.0} ms after it started",
            a_pause.as_secs_f64() * 1000.0,
            group_pause.as_secs_f64() * 1000.0,
            settle.as_secs_f64() * 1000.0,
        );
    }
}

/// (A's longest pause, the group's longest pause, B's start to its first applied event).
async fn run(rate: u64, assignor: &str) -> (Duration, Duration, Duration) {
    let db = TestDb::create().await;
    let tenant = seed_bench_tenant(&db).await;
    let topic = fresh_topic();
    create_topic(&kafka_brokers(), &topic, PARTITIONS);
    let producing = Arc::new(AtomicBool::new(true));
    let producer = tokio::spawn(produce(tenant.clone(), topic.clone(), rate, producing.clone()));

    let (dlq, group) = fresh_dlq_and_group();
    let args = run_args(&db, &topic, &group, &dlq);
    let options = ["--log", "warn", "--kafka-assignor", assignor];
    let a = Worker::start(run_config(&args, &options)).await.unwrap();
    while events_committed(&a) == 0 {
        tokio::time::sleep(SAMPLE).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let joined = Instant::now();
    let b = Worker::start(run_config(&args, &options)).await.unwrap();
    let (mut a_last, mut group_last) = (events_committed(&a), events_committed(&a) + events_committed(&b));
    let (mut a_since, mut group_since) = (Instant::now(), Instant::now());
    let (mut a_pause, mut group_pause) = (Duration::ZERO, Duration::ZERO);
    let mut b_first: Option<Duration> = None;
    let deadline = joined + Duration::from_secs(60);
    loop {
        tokio::time::sleep(SAMPLE).await;
        let now = Instant::now();
        let (a_now, b_now) = (events_committed(&a), events_committed(&b));
        if a_now > a_last {
            a_last = a_now;
            a_since = now;
        }
        if a_now + b_now > group_last {
            group_last = a_now + b_now;
            group_since = now;
        }
        a_pause = a_pause.max(now - a_since);
        group_pause = group_pause.max(now - group_since);
        if b_now > 0 && b_first.is_none() {
            b_first = Some(now - joined);
        }
        if b_first.is_some_and(|first| now - joined > first + Duration::from_secs(2)) || now > deadline {
            break;
        }
    }
    producing.store(false, Ordering::SeqCst);
    producer.await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
    (a_pause, group_pause, b_first.unwrap_or(Duration::MAX))
}

/// Produces whole calls at `rate` records per second until told to stop.
async fn produce(tenant: callgate_tests::Tenant, topic: String, rate: u64, producing: Arc<AtomicBool>) {
    let producer = records::producer(2);
    let started = Instant::now();
    let mut sent = 0_u64;
    let mut round = 0;
    while producing.load(Ordering::SeqCst) {
        for (key, value) in records::calls(&tenant, round) {
            let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
            // Not awaited: the stream must not wait for acknowledgements.
            drop(producer.send_result(FutureRecord::to(&topic).key(&key).payload(&value)));
            sent += 1;
        }
        round += 1;
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}
