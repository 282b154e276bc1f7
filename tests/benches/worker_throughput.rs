//! Events applied per second by one worker process, and by two in one group.
//!
//! Envelopes shaped exactly like the gateway's (the same event ids, routes and provider
//! payloads) are produced straight to a 12-partition topic first; then the workers start and
//! drain it. The rate counts from the moment the group settled (every worker owns partitions)
//! to the last commit, so joining and the first rebalance are left out.
//!
//! Beside it, in the same run and database: a bare batched insert of as many call-shaped rows
//! (the database's ceiling), and, when Postgres loads `pg_stat_statements` (the local stack
//! does), the statements that took its time.
//!
//!   deploy/local/with-stack.sh cargo bench -p callgate-tests --bench worker_throughput [-- EVENTS [WORKERS…]]
//!
//! `CALLGATE_BENCH_WORKER_ARGS` adds worker options (e.g. `--batch-max-records 1000`).
//! `CALLGATE_BENCH_SQL` is run against the bench's database after its history is loaded and
//! before the workers start: to measure what a schema change would buy (BENCHMARKS.md, "What
//! the schema could buy at most") without writing a migration first.
//!
//! The ceiling is the fastest of three bare inserts: one alone moved by half between runs of
//! the same build (what the database was still doing, new WAL segments), and the ratio with it.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use callgate_tests::records;
use callgate_tests::worker::{events_committed, fresh_dlq_and_group, run_args, run_config};
use callgate_tests::{Tenant, TestDb, baseline, create_topic, fresh_topic, kafka_brokers, seed_bench_tenant};
use callgate_worker::Worker;
use futures::StreamExt as _;
use rdkafka::producer::FutureRecord;

const PARTITIONS: u32 = 12;

#[tokio::main]
async fn main() {
    // Warnings only, unless RUST_LOG says otherwise: one info line per appointment would be noise.
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).init();
    // Arguments: EVENTS [WORKERS…] (cargo bench adds `--bench`, which is skipped).
    let numbers: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let events = numbers.first().copied().unwrap_or(30_000);
    let counts = if numbers.len() > 1 { numbers[1..].to_vec() } else { vec![1, 2] };
    println!("worker throughput: {events} events, {PARTITIONS} partitions, default batch settings");
    for workers in counts {
        let (rate, wall, ceiling) = run(events, workers).await;
        println!(
            "  {workers} worker(s): {rate:>8.0} events/s applied ({wall:.1} s from start to the last commit); \
             bare batched insert (fastest of three) {ceiling:.0} rows/s; ratio {:.3}",
            rate / ceiling
        );
    }
}

/// (events/s, seconds from start to the last commit, bare insert rows/s).
async fn run(target: usize, workers: usize) -> (f64, f64, f64) {
    let db = TestDb::create().await;
    let tenant = seed_bench_tenant(&db).await;
    let fsync: String = sqlx::query_scalar("SHOW fsync").fetch_one(&db.pool).await.unwrap();
    let commit: String = sqlx::query_scalar("SHOW synchronous_commit").fetch_one(&db.pool).await.unwrap();
    println!("  Postgres fsync={fsync} synchronous_commit={commit}");
    history(&db, &tenant, HISTORY_CALLS).await;
    if let Ok(sql) = std::env::var("CALLGATE_BENCH_SQL") {
        sqlx::raw_sql(&sql).execute(&db.pool).await.unwrap();
        println!("  ran CALLGATE_BENCH_SQL before the workers started");
    }
    let topic = fresh_topic();
    create_topic(&kafka_brokers(), &topic, PARTITIONS);
    let n = produce(&tenant, &topic, target).await;

    let (dlq, group) = fresh_dlq_and_group();
    let args = run_args(&db, &topic, &group, &dlq);
    let statements = baseline::statements::reset(&db.pool).await;
    let started = Instant::now();
    let mut running = Vec::new();
    for _ in 0..workers {
        // Extra worker options from CALLGATE_BENCH_WORKER_ARGS, to compare settings.
        let extra = std::env::var("CALLGATE_BENCH_WORKER_ARGS").unwrap_or_default();
        let mut options = vec!["--log", "warn"];
        options.extend(extra.split_whitespace());
        running.push(Worker::start(run_config(&args, &options)).await.unwrap());
    }
    // The steady state starts once the group has settled: every worker owns partitions and
    // all of them are owned. What was applied before (one worker alone, a rebalance) is left
    // out of the rate.
    let settled = loop {
        let owned: Vec<i64> = running.iter().map(|w| w.metrics().assigned_partitions.get()).collect();
        if owned.iter().all(|o| *o > 0) && owned.iter().sum::<i64>() == i64::from(PARTITIONS) {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let at_settle = processed(&running);
    while processed(&running) < n {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let steady = settled.elapsed().as_secs_f64();
    let wall = started.elapsed().as_secs_f64();
    let mut duplicates = 0;
    for worker in running {
        let m = worker.metrics();
        let (batches, records) = (m.batch_records.get_sample_count(), m.batch_records.get_sample_sum());
        let (txns, txn_secs) = (m.apply_duration.get_sample_count(), m.apply_duration.get_sample_sum());
        println!(
            "    worker: {batches} batches of {:.0} records on average; {txns} partition transactions of {:.1} ms on average ({:.1} records each)",
            records / batches.max(1) as f64,
            1000.0 * txn_secs / txns.max(1) as f64,
            records / txns.max(1) as f64,
        );
        duplicates += m.duplicates.get();
        worker.shutdown().await;
    }
    println!("    {at_settle} events applied before the group settled; {duplicates} redeliveries skipped");
    if statements {
        println!("    Postgres time by statement (calls, ms in all, µs per event):");
        for (calls, ms, query) in baseline::statements::top(&db.pool, 20).await {
            println!("      {calls:>7} {ms:>9.0} ms {:>6.0} µs  {query}", ms * 1000.0 / n as f64);
        }
    }
    ((n - at_settle) as f64 / steady.max(1e-6), wall, ceiling(&db, n).await)
}

/// Rows per second of the fastest of three bare batched inserts of `rows` rows.
async fn ceiling(db: &TestDb, rows: usize) -> f64 {
    let mut rates = Vec::new();
    for _ in 0..3 {
        let took = baseline::bare_insert(&db.pool, rows as u64).await.unwrap();
        rates.push(rows as f64 / took.as_secs_f64());
    }
    let shown: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
    println!("    bare batched insert, three runs: {} rows/s", shown.join(", "));
    rates.into_iter().fold(0.0, f64::max)
}

/// Calls the database holds before the bench starts.
const HISTORY_CALLS: i64 = 50_000;

/// Fills the database with `calls` earlier calls of the tenant (each with its customer, three
/// processed events and, for one in ten, an appointment), then analyses it: a production
/// database is never empty, and Postgres plans (its foreign-key checks among them) for the
/// tables it has. Against an empty, never-analysed database, each worker connection kept a
/// sequential scan of `calls` for the appointments' foreign-key check, planned while the table
/// had a page or two, and paid for it on every appointment as the table grew.
async fn history(db: &TestDb, tenant: &Tenant, calls: i64) {
    let statements = [
        "INSERT INTO customers (company_id, e164, name)          SELECT $1, '+1999' || lpad(i::text, 7, '0'), 'caller ' || i FROM generate_series(1, $3::int8) i",
        "INSERT INTO calls (company_id, branch_id, phone_number_id, provider, provider_call_id, business_e164, status,            progress, first_event_at, last_event_at, caller_raw, caller_e164, transcript, customer_id, customer_link)          SELECT $1, $2, $4, 'retell', 'history_' || i, $5, 'ended', 4, now() - interval '30 days',            now() - interval '30 days', cu.e164, cu.e164, repeat('Agent: hello. User: hi. ', 20), cu.id, 'created'          FROM generate_series(1, $3::int8) i JOIN customers cu ON cu.company_id = $1            AND cu.e164 = '+1999' || lpad(i::text, 7, '0')",
        "INSERT INTO processed_events (event_id, company_id, provider, event_type, provider_call_id, outcome,            kafka_partition, kafka_offset, received_at)          SELECT gen_random_uuid(), $1, 'retell', t, 'history_' || i, 'applied', 0, i, now() - interval '30 days'          FROM generate_series(1, $3::int8) i, unnest(ARRAY['call_started', 'call_ended', 'call_analyzed']) t",
        "INSERT INTO appointments (company_id, branch_id, call_id, customer_id, service_id, starts_at, ends_at,            timezone, idempotency_key, status, calcom_sync_status)          SELECT c.company_id, c.branch_id, c.id, c.customer_id, s.id, now() - interval '20 days',            now() - interval '20 days' + interval '45 minutes', 'America/New_York', encode(sha256(c.id::text::bytea), 'hex'),            'booked', 'synced'          FROM calls c CROSS JOIN LATERAL (SELECT id FROM services WHERE company_id = $1 LIMIT 1) s          WHERE c.company_id = $1 AND c.provider_call_id LIKE 'history_%' AND right(c.provider_call_id, 1) = '0'",
    ];
    for sql in statements {
        sqlx::query(sql)
            .bind(tenant.company.0)
            .bind(tenant.branch.0)
            .bind(calls)
            .bind(tenant.retell_number.0.0)
            .bind(tenant.retell_number.1.to_string())
            .execute(&db.pool)
            .await
            .unwrap();
    }
    sqlx::query("ANALYZE").execute(&db.pool).await.unwrap();
    println!("  the database holds {calls} earlier calls, analysed");
}

/// Events the workers have committed (each is counted once its transaction committed): read
/// from their metrics, not with a count over a table that holds the history too.
fn processed(workers: &[Worker]) -> usize {
    workers.iter().map(events_committed).sum::<u64>() as usize
}

/// Produces about `target` events of whole calls (Retell, Vapi, Twilio in turn; a third of the
/// Retell and Vapi calls ask for an appointment); returns how many.
async fn produce(tenant: &Tenant, topic: &str, target: usize) -> usize {
    let producer = records::producer(5);
    let mut records = Vec::new();
    let mut i = 0;
    while records.len() < target {
        records.extend(records::calls(tenant, i));
        i += 1;
    }
    let sent = futures::stream::iter(records.iter().map(|(key, value)| {
        let producer = &producer;
        async move {
            producer.send(FutureRecord::to(topic).key(key).payload(value), Duration::from_secs(60)).await.unwrap();
        }
    }))
    .buffer_unordered(1000)
    .count()
    .await;
    eprintln!("  produced {sent} records");
    sent
}
