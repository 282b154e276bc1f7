//! Bookings per minute per Cal.com API key under the push's throttle, against the fake Cal.com
//! with Cal.com's real limits (120 requests per 60 s per key, then a 60 s block).
//!
//! COMPANIES companies (one API key each) with PER_COMPANY appointments each are pushed by one
//! worker at `--calcom-rate-per-minute RATE`. The figure is what the key sustained from the
//! first create to the last, and how many 429s Cal.com had to send.
//!
//!   deploy/local/with-stack.sh cargo bench -p callgate-tests --bench calcom_push [-- COMPANIES PER_COMPANY RATE…]

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use callgate_tests::calcom::{FakeCalcom, Limits, insert_appointments, push_flags, seed_company};
use callgate_tests::worker::{count, fresh_dlq_and_group, metric_sum, run_args, run_config};
use callgate_tests::{TestDb, create_topic, fresh_topic, kafka_brokers, secret_key};
use callgate_worker::Worker;

#[tokio::main]
async fn main() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let numbers: Vec<u32> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let companies = numbers.first().copied().unwrap_or(3);
    let per_company = numbers.get(1).copied().unwrap_or(150);
    let rates = if numbers.len() > 2 { numbers[2..].to_vec() } else { vec![100] };
    println!("Cal.com push: {companies} keys x {per_company} appointments, fake Cal.com at 120 req/60 s per key");
    for rate in rates {
        run(companies, per_company, rate).await;
    }
}

async fn run(companies: u32, per_company: u32, rate: u32) {
    let db = TestDb::create().await;
    let key = secret_key();
    let cipher = callgate_contract::SecretCipher::from_base64::<&str>(&key, &[]).unwrap();
    let fake = FakeCalcom::start(Limits::default()).await;
    let tomorrow = chrono::Utc::now() + chrono::Duration::days(1);
    let mut seeded = Vec::new();
    for i in 0..companies {
        let company = seed_company(&db, &cipher, &fake, &format!("bench{i}"), 900 + i64::from(i), i64::from(i)).await;
        insert_appointments(&db, &company, per_company as usize, tomorrow).await;
        seeded.push(company);
    }
    let topic = fresh_topic();
    create_topic(&kafka_brokers(), &topic, 1);
    let (dlq, group) = fresh_dlq_and_group();
    let mut args = run_args(&db, &topic, &group, &dlq);
    let rate_flag = rate.to_string();
    // Production timings, except the poll interval (a quiet worker looks every second).
    args.extend(push_flags(
        &fake,
        &key,
        &["--calcom-rate-per-minute", &rate_flag, "--calcom-request-timeout", "10s", "--calcom-lease", "60s"],
    ));
    let worker = Worker::start(run_config(&args, &[])).await.unwrap();
    let total = i64::from(companies * per_company);
    let started = Instant::now();
    while count(&db.pool, "SELECT count(*) FROM appointments WHERE calcom_sync_status = 'synced'").await < total {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let wall = started.elapsed();
    let metrics = worker.metrics().render();
    worker.shutdown().await;
    println!("  --calcom-rate-per-minute {rate}: {total} bookings in {:.1} s", wall.as_secs_f64());
    for company in &seeded {
        let times = fake.create_times(&company.api_key);
        let span = times.last().unwrap().duration_since(times[0]).as_secs_f64();
        let per_minute = (times.len() - 1) as f64 / span * 60.0;
        // The busiest 60 s window, as Cal.com counts.
        let busiest = times
            .iter()
            .map(|t| times.iter().filter(|u| **u >= *t && u.duration_since(*t) < Duration::from_secs(60)).count())
            .max()
            .unwrap_or(0);
        println!(
            "    key {}: {} creates, {per_minute:.1} bookings/min sustained, busiest 60 s window {busiest} requests",
            company.api_key,
            times.len()
        );
    }
    println!(
        "    429s from Cal.com: {}; pushes retried after a 429: {}",
        fake.rate_limited_count(),
        metric_sum(&metrics, "callgate_worker_calcom_pushes_total{result=\"rate_limited\"}")
    );
}
