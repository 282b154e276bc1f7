//! The Cal.com push and sync-back, against a fake Cal.com over real HTTP, a real Postgres and
//! a real broker: exactly one booking per appointment whatever fails, visible reasons when
//! there can be none, and Cal.com's own changes flowing back through the gateway.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use callgate_tests::calcom::{
    CalcomCompany, FakeCalcom, Fault, Limits, insert_appointments, push_flags, seed_company, webhook_body,
};
use callgate_tests::worker::{
    PATIENCE, count, fresh_dlq_and_group, metric_sum, run_args, run_config, wait_count, worker_bin,
};
use callgate_tests::{TestDb, consume, create_topic, fresh_topic, kafka_brokers, secret_key};
use callgate_worker::Worker;
use chrono::{DateTime, Utc};

fn cipher(key: &str) -> callgate_contract::SecretCipher {
    callgate_contract::SecretCipher::from_base64::<&str>(key, &[]).unwrap()
}

/// A database with `slug` connected to a fresh fake Cal.com (its usual limits), its service
/// booked as `event_type`, and `appointments` pending for tomorrow; the master key too.
async fn connected(slug: &str, event_type: i64, appointments: usize) -> (TestDb, String, FakeCalcom, CalcomCompany) {
    callgate_tests::init_logs();
    let db = TestDb::create().await;
    let key = secret_key();
    let fake = FakeCalcom::start(Limits::default()).await;
    let company = seed_company(&db, &cipher(&key), &fake, slug, event_type, 1).await;
    insert_appointments(&db, &company, appointments, tomorrow()).await;
    (db, key, fake, company)
}

/// Every appointment's status changes, in order: (to status, reason).
async fn history(db: &TestDb) -> Vec<(String, Option<String>)> {
    sqlx::query_as("SELECT to_status, reason FROM appointment_status_history ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

/// The idempotency keys of the pending appointments.
async fn pending_keys(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar("SELECT idempotency_key FROM appointments WHERE status = 'pending' ORDER BY starts_at")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

/// Tomorrow at 09:00 UTC: in the future for the fake, whatever the time of day.
fn tomorrow() -> DateTime<Utc> {
    (Utc::now() + chrono::Duration::days(1)).date_naive().and_hms_opt(9, 0, 0).unwrap().and_utc()
}

/// A worker (in this process) pushing to `fake`, on a topic of its own.
async fn push_worker(db: &TestDb, fake: &FakeCalcom, key: &str, extra: &[&str]) -> (Worker, String) {
    let topic = fresh_topic();
    create_topic(&kafka_brokers(), &topic, 1);
    push_worker_on(db, &topic, fake, key, extra).await
}

/// A worker (in this process) consuming `topic` and pushing to `fake`; returns it and its DLQ.
async fn push_worker_on(db: &TestDb, topic: &str, fake: &FakeCalcom, key: &str, extra: &[&str]) -> (Worker, String) {
    let (dlq, group) = fresh_dlq_and_group();
    let mut args = run_args(db, topic, &group, &dlq);
    args.extend(push_flags(fake, key, extra));
    let worker = Worker::start(run_config(&args, &[])).await.unwrap();
    (worker, dlq)
}

/// Every appointment's booking uid, by idempotency key.
async fn uids(db: &TestDb) -> HashMap<String, Option<String>> {
    sqlx::query_as::<_, (String, Option<String>)>("SELECT idempotency_key, calcom_booking_uid FROM appointments")
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Exactly one booking in the fake per key, and it is the one the appointment holds.
fn assert_exactly_once(fake: &FakeCalcom, uids: &HashMap<String, Option<String>>) {
    let per_key = fake.bookings_per_key();
    let doubles: Vec<_> = per_key.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubles.is_empty(), "keys booked more than once: {doubles:?}");
    assert_eq!(per_key.len(), uids.len(), "every appointment has a booking");
    for booking in fake.bookings() {
        let key = booking.metadata[callgate_tests::calcom::METADATA_KEY].as_str().unwrap().to_owned();
        assert_eq!(uids[&key].as_deref(), Some(booking.uid.as_str()), "appointment {key} holds its booking");
    }
}

#[tokio::test]
async fn a_pending_appointment_becomes_one_booking_with_our_key_and_history() {
    let (db, key, fake, acme) = connected("acme", 501, 1).await;
    let keys = pending_keys(&db).await;
    let (worker, _) = push_worker(&db, &fake, &key, &[]).await;

    wait_count(&db.pool, "SELECT count(*) FROM appointments WHERE calcom_sync_status = 'synced'", 1).await;
    let bookings = fake.bookings();
    assert_eq!(bookings.len(), 1);
    let booking = &bookings[0];
    assert_eq!(booking.metadata[callgate_tests::calcom::METADATA_KEY], keys[0]);
    assert_eq!(booking.event_type_id, 501);
    assert_eq!(booking.start, tomorrow(), "start sent in UTC");
    assert_eq!(booking.attendee["name"], "Ana Lima");
    assert_eq!(booking.attendee["email"], "ana+0@example.com");
    assert_eq!(booking.attendee["timeZone"], "America/New_York");
    let (status, uid, id, attempts, unsure): (String, String, i64, i32, bool) = sqlx::query_as(
        "SELECT status, calcom_booking_uid, calcom_booking_id, sync_attempts, calcom_unsure FROM appointments",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), uid.as_str(), id, attempts, unsure),
        ("booked", booking.uid.as_str(), booking.id, 1, false)
    );
    let history: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT to_status, to_sync_status, reason FROM appointment_status_history ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!((history[1].0.as_str(), history[1].1.as_str()), ("booked", "synced"));
    assert!(history[1].2.as_deref().unwrap().contains(&booking.uid), "{history:?}");
    let metrics = worker.metrics().render();
    assert_eq!(metric_sum(&metrics, "callgate_worker_calcom_pushes_total{result=\"synced\"}"), 1.0);
    assert_eq!(
        metric_sum(&metrics, "callgate_worker_calcom_requests_total{operation=\"create\",outcome=\"created\"}"),
        1.0
    );
    assert!(!metrics.contains(&acme.api_key), "no API key in metrics");
    worker.shutdown().await;
}

/// What an alert on the Cal.com backlog reads: how many appointments wait, and for how long.
#[tokio::test]
async fn the_backlog_waiting_for_calcom_and_its_age_are_measured() {
    let (db, key, fake, _) = connected("acme", 501, 3).await;
    // Waiting for two minutes, and not due for an hour (a back-off after failures).
    sqlx::query(
        "UPDATE appointments SET created_at = now() - interval '2 minutes', next_attempt_at = now() + interval '1 hour'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let (worker, _) = push_worker(&db, &fake, &key, &[]).await;
    let deadline = std::time::Instant::now() + callgate_tests::worker::PATIENCE;
    let metrics = loop {
        let metrics = worker.metrics().render();
        if metric_sum(&metrics, "callgate_worker_calcom_backlog ") == 3.0 {
            break metrics;
        }
        assert!(std::time::Instant::now() < deadline, "backlog not measured: {metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let age = metric_sum(&metrics, "callgate_worker_calcom_backlog_oldest_age_seconds");
    assert!((120.0..600.0).contains(&age), "oldest waited {age} s");
    assert!(fake.bookings().is_empty());
    worker.shutdown().await;
}

#[tokio::test]
async fn ambiguous_answers_are_resolved_by_looking_our_booking_up() {
    callgate_tests::init_logs();
    let db = TestDb::create().await;
    let key = secret_key();
    let fake = FakeCalcom::start(Limits { slow: Duration::from_secs(2), ..Limits::default() }).await;
    let acme = seed_company(&db, &cipher(&key), &fake, "acme", 501, 1).await;
    // Each kind of "maybe it worked", once; the first four did book.
    for fault in
        [Fault::CommitThenSlow, Fault::CommitThenReset, Fault::CommitThen500, Fault::Conflict, Fault::Unavailable]
    {
        fake.push_fault(fault);
    }
    insert_appointments(&db, &acme, 5, tomorrow()).await;
    let (worker, _) = push_worker(&db, &fake, &key, &["--calcom-concurrency", "1"]).await;

    wait_count(&db.pool, "SELECT count(*) FROM appointments WHERE calcom_sync_status = 'synced'", 5).await;
    assert_exactly_once(&fake, &uids(&db).await);
    let metrics = worker.metrics().render();
    assert_eq!(metric_sum(&metrics, "callgate_worker_calcom_pushes_total{result=\"adopted\"}"), 3.0, "{metrics}");
    assert!(metric_sum(&metrics, "callgate_worker_calcom_requests_total{operation=\"lookup\"") >= 5.0);
    // A repeat of our own request, answered "not available", is adopted too.
    let adopted_after_400 =
        metric_sum(&metrics, "callgate_worker_calcom_requests_total{operation=\"create\",outcome=\"not_available\"}");
    assert_eq!(adopted_after_400, 0.0, "an unsure appointment is looked up before it is sent again");
    worker.shutdown().await;
}

#[tokio::test]
async fn thirty_percent_failures_and_429_bursts_still_book_each_appointment_once() {
    callgate_tests::init_logs();
    let db = TestDb::create().await;
    let key = secret_key();
    let limits = Limits {
        limit: 25,
        window: Duration::from_secs(1),
        block: Duration::from_secs(1),
        slow: Duration::from_millis(700),
    };
    let fake = FakeCalcom::start(limits).await;
    let mut companies = Vec::new();
    for i in 0..10 {
        companies.push(seed_company(&db, &cipher(&key), &fake, &format!("co{i}"), 600 + i, 10 + i).await);
    }
    for company in &companies {
        insert_appointments(&db, company, 30, tomorrow()).await;
    }
    fake.set_chaos(0.3);
    let flags = [
        "--calcom-request-timeout",
        "500ms",
        "--calcom-lease",
        "2s",
        "--calcom-rate-per-minute",
        "3000",
        "--calcom-max-attempts",
        "100",
    ];
    let (worker, _) = push_worker(&db, &fake, &key, &flags).await;

    let deadline = Instant::now() + PATIENCE * 3;
    loop {
        let synced = count(&db.pool, "SELECT count(*) FROM appointments WHERE calcom_sync_status = 'synced'").await;
        if synced == 300 {
            break;
        }
        assert!(Instant::now() < deadline, "only {synced} of 300 synced: {}", worker.metrics().render());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_exactly_once(&fake, &uids(&db).await);
    let metrics = worker.metrics().render();
    assert!(fake.rate_limited_count() > 0, "the run saw 429s");
    assert!(metric_sum(&metrics, "callgate_worker_calcom_pushes_total{result=\"adopted\"}") > 0.0, "{metrics}");
    assert_eq!(metric_sum(&metrics, "callgate_worker_calcom_pushes_total{result=\"failed\"}"), 0.0);
    worker.shutdown().await;
}

#[tokio::test]
async fn companies_sharing_one_calcom_api_key_share_its_budget() {
    callgate_tests::init_logs();
    let db = TestDb::create().await;
    let key = secret_key();
    // 15 requests per second per key; the push may spend 10 per key (plus a burst of 2).
    let limits =
        Limits { limit: 15, window: Duration::from_secs(1), block: Duration::from_secs(1), ..Limits::default() };
    let fake = FakeCalcom::start(limits).await;
    let first = seed_company(&db, &cipher(&key), &fake, "agency-a", 801, 1).await;
    let second = seed_company(&db, &cipher(&key), &fake, "agency-b", 802, 2).await;
    // An agency connects both businesses with the same Cal.com API key: one key, one budget.
    callgate_worker::tenants::set_calcom_account(
        &db.pool,
        &cipher(&key),
        second.company,
        first.api_key.as_bytes(),
        second.webhook_secret.as_bytes(),
        None,
        None,
    )
    .await
    .unwrap();
    insert_appointments(&db, &first, 20, tomorrow()).await;
    insert_appointments(&db, &second, 20, tomorrow()).await;
    let flags = ["--calcom-rate-per-minute", "600", "--calcom-burst", "2"];
    let (worker, _) = push_worker(&db, &fake, &key, &flags).await;
    wait_count(&db.pool, "SELECT count(*) FROM appointments WHERE calcom_sync_status = 'synced'", 40).await;
    assert_exactly_once(&fake, &uids(&db).await);
    assert_eq!(fake.create_times(&first.api_key).len(), 40, "both companies booked with the one key");
    assert_eq!(fake.rate_limited_count(), 0, "one gate for the key kept both companies under Cal.com's limit");
    worker.shutdown().await;
}

#[tokio::test]
async fn two_workers_never_send_one_appointment_twice_and_share_each_keys_budget() {
    callgate_tests::init_logs();
    let db = TestDb::create().await;
    let key = secret_key();
    // 20 requests per second per key; the workers together may spend 10 (plus a burst of 2).
    let limits =
        Limits { limit: 20, window: Duration::from_secs(1), block: Duration::from_secs(1), ..Limits::default() };
    let fake = FakeCalcom::start(limits).await;
    let busy = seed_company(&db, &cipher(&key), &fake, "busy", 701, 1).await;
    let quiet = seed_company(&db, &cipher(&key), &fake, "quiet", 702, 2).await;
    insert_appointments(&db, &busy, 40, tomorrow()).await;
    insert_appointments(&db, &quiet, 3, tomorrow()).await;
    let flags = ["--calcom-rate-per-minute", "600", "--calcom-burst", "2"];
    let (a, _) = push_worker(&db, &fake, &key, &flags).await;
    let (b, _) = push_worker(&db, &fake, &key, &flags).await;

    wait_count(&db.pool, "SELECT count(*) FROM appointments WHERE calcom_sync_status = 'synced'", 43).await;
    assert_exactly_once(&fake, &uids(&db).await);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM appointments WHERE sync_attempts <> 1").await, 0);
    assert_eq!(fake.create_times(&busy.api_key).len(), 40, "no appointment was sent by both workers");
    assert_eq!(fake.rate_limited_count(), 0, "the shared gate kept the key under Cal.com's limit");
    let pushed =
        |w: &Worker| metric_sum(&w.metrics().render(), "callgate_worker_calcom_pushes_total{result=\"synced\"}");
    assert_eq!(pushed(&a) + pushed(&b), 43.0);
    // The busy company's queue did not hold the quiet one back.
    let last = |company: &CalcomCompany| {
        let pool = db.pool.clone();
        let id = company.company.0;
        async move {
            sqlx::query_scalar::<_, DateTime<Utc>>("SELECT max(synced_at) FROM appointments WHERE company_id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert!(last(&quiet).await < last(&busy).await, "the quiet company was served while the busy one waited");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn refusals_end_failed_or_for_review_with_their_reason_and_a_dead_letter() {
    let (db, key, fake, acme) = connected("acme", 501, 0).await;
    let start = tomorrow();
    // 1: its event type is unknown to Cal.com. 2: someone else holds its slot. 3: no name.
    let unknown = CalcomCompany { event_type: 999, ..acme.clone() };
    sqlx::query("UPDATE services SET calcom_event_type_id = 999 WHERE id = $1")
        .bind(acme.service)
        .execute(&db.pool)
        .await
        .unwrap();
    let k1 = insert_appointments(&db, &unknown, 1, start).await.remove(0);
    sqlx::query("UPDATE services SET calcom_event_type_id = 501 WHERE id = $1")
        .bind(acme.service)
        .execute(&db.pool)
        .await
        .unwrap();
    let details = callgate_worker::tenants::ServiceDetails {
        name: "Cleaning",
        aliases: &[],
        duration_minutes: 30,
        calcom_event_type_id: Some(999),
    };
    let cleaning = callgate_worker::tenants::add_service(&db.pool, acme.company, acme.branch, &details).await.unwrap();
    sqlx::query("UPDATE appointments SET service_id = $1 WHERE idempotency_key = $2")
        .bind(cleaning)
        .bind(&k1)
        .execute(&db.pool)
        .await
        .unwrap();
    let taken = start + chrono::Duration::days(1);
    fake.book_directly(501, taken);
    let k2 = insert_appointments(&db, &acme, 1, taken).await.remove(0);
    let k3 = insert_appointments(&db, &acme, 1, start + chrono::Duration::days(2)).await.remove(0);
    sqlx::query("UPDATE appointments SET customer_name = NULL WHERE idempotency_key = $1")
        .bind(&k3)
        .execute(&db.pool)
        .await
        .unwrap();
    let (worker, dlq) = push_worker(&db, &fake, &key, &[]).await;

    wait_count(&db.pool, "SELECT count(*) FROM appointments WHERE calcom_sync_status IN ('failed', 'needs_review')", 3)
        .await;
    let state = |k: String| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_as::<_, (String, String, String)>(
                "SELECT status, calcom_sync_status, last_sync_error FROM appointments WHERE idempotency_key = $1",
            )
            .bind(k)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let (status, sync, error) = state(k1).await;
    assert_eq!((status.as_str(), sync.as_str()), ("failed", "failed"));
    assert!(error.contains("HTTP 404") && error.contains("Event type with id 999 not found."), "{error}");
    let (status, sync, error) = state(k2).await;
    assert_eq!((status.as_str(), sync.as_str()), ("pending", "needs_review"));
    assert!(error.starts_with("slot_unavailable: User either already has booking"), "{error}");
    let (_, sync, error) = state(k3).await;
    assert_eq!(sync, "needs_review");
    assert!(error.starts_with("no_attendee_name"), "{error}");
    assert_eq!(fake.bookings().len(), 1, "only the walk-in booking exists");

    let records = consume(&kafka_brokers(), &dlq, 1, PATIENCE).await;
    let letter = &records[0];
    assert_eq!(letter.header("callgate-dlq-reason"), Some("calcom"));
    assert_eq!(letter.value["kind"], "calcom_push_failed");
    assert!(letter.value["error"].as_str().unwrap().contains("not found"));
    let metrics = worker.metrics().render();
    assert_eq!(metric_sum(&metrics, "callgate_worker_calcom_pushes_total{result=\"failed\"}"), 1.0);
    assert_eq!(metric_sum(&metrics, "callgate_worker_calcom_pushes_total{result=\"needs_review\"}"), 2.0);
    assert_eq!(metric_sum(&metrics, "callgate_worker_dlq_records_total{reason=\"calcom\"}"), 1.0);
    worker.shutdown().await;
}

#[tokio::test]
async fn a_worker_killed_mid_request_leaves_exactly_one_booking_after_restart() {
    callgate_tests::init_logs();
    let db = TestDb::create().await;
    let key = secret_key();
    // Cal.com books, then takes 5 s to answer: the worker dies while it waits.
    let fake = FakeCalcom::start(Limits { slow: Duration::from_secs(5), ..Limits::default() }).await;
    let acme = seed_company(&db, &cipher(&key), &fake, "acme", 501, 1).await;
    fake.push_fault(Fault::CommitThenSlow);
    insert_appointments(&db, &acme, 1, tomorrow()).await;
    let topic = fresh_topic();
    create_topic(&kafka_brokers(), &topic, 1);
    let (dlq, group) = fresh_dlq_and_group();
    let mut args = run_args(&db, &topic, &group, &dlq);
    args.extend(push_flags(&fake, &key, &["--calcom-request-timeout", "10s", "--calcom-lease", "30s"]));
    let mut child = Command::new(worker_bin())
        .arg("run")
        .args(&args)
        .args(["--log", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while fake.create_times(&acme.api_key).is_empty() {
        assert!(Instant::now() < deadline, "the worker never sent the booking");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap(); // SIGKILL: no chance to record anything.
    child.wait().unwrap();
    assert_eq!(fake.bookings().len(), 1, "Cal.com booked it");
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM appointments WHERE calcom_unsure AND lease_owner IS NOT NULL").await,
        1
    );

    // The dead worker's lease is not waited out in a test: expire it as time would.
    sqlx::query("UPDATE appointments SET lease_expires_at = now() - interval '1 second'")
        .execute(&db.pool)
        .await
        .unwrap();
    let (worker, _) = push_worker(&db, &fake, &key, &[]).await;
    wait_count(&db.pool, "SELECT count(*) FROM appointments WHERE calcom_sync_status = 'synced'", 1).await;
    assert_exactly_once(&fake, &uids(&db).await);
    assert_eq!(fake.create_times(&acme.api_key).len(), 1, "looked up, not sent again");
    let metrics = worker.metrics().render();
    assert_eq!(metric_sum(&metrics, "callgate_worker_calcom_pushes_total{result=\"adopted\"}"), 1.0);
    worker.shutdown().await;
}

/// Cal.com → gateway → Kafka → worker: a signed cancellation reaches the appointment; forged
/// and unsigned deliveries are refused with 401 and change nothing.
#[tokio::test]
async fn signed_calcom_changes_reach_the_appointment_and_forged_ones_are_refused() {
    callgate_tests::init_logs();
    let stack = callgate_tests::spawn_stack("http://127.0.0.1", 1, &[]).await;
    let db = &stack.db;
    let fake = FakeCalcom::start(Limits::default()).await;
    let acme = seed_company(db, &stack.cipher, &fake, "calco", 501, 1).await;
    insert_appointments(db, &acme, 1, tomorrow()).await;
    let (worker, _) = push_worker_on(db, &stack.topic, &fake, &stack.secret_key, &[]).await;
    wait_count(&db.pool, "SELECT count(*) FROM appointments WHERE status = 'booked'", 1).await;
    let booking = fake.bookings().remove(0);
    let url = stack.gw.url(&format!("/v1/webhooks/calcom/{}", acme.webhook_path));
    let send = |body: String, signature: Option<String>| {
        let client = stack.gw.client.clone();
        let url = url.clone();
        async move {
            let mut request = client.post(&url).header("content-type", "application/json").body(body);
            if let Some(signature) = signature {
                request = request.header("x-cal-signature-256", signature);
            }
            request.send().await.unwrap().status().as_u16()
        }
    };
    let sign = |body: &str| callgate_gateway::providers::calcom::sign(acme.webhook_secret.as_bytes(), body.as_bytes());

    // A reschedule moves the appointment to a new uid and time.
    let moved_to = booking.start + chrono::Duration::hours(2);
    let mut moved = booking.clone();
    moved.uid = "rescheduled-uid-1".into();
    moved.start = moved_to;
    moved.end = moved_to + chrono::Duration::minutes(30);
    let body = webhook_body(
        "BOOKING_RESCHEDULED",
        &moved,
        serde_json::json!({"rescheduleUid": booking.uid, "iCalSequence": 1}),
    );
    assert_eq!(send(body.clone(), Some(sign(&body))).await, 204);
    wait_count(&db.pool, "SELECT count(*) FROM appointments WHERE calcom_booking_uid = 'rescheduled-uid-1'", 1).await;

    // Forged, unsigned and secret-less deliveries: 401, nothing published.
    let mut cancelled = moved.clone();
    cancelled.status = "cancelled".into();
    let body = webhook_body(
        "BOOKING_CANCELLED",
        &cancelled,
        serde_json::json!({"cancellationReason": "feeling better", "iCalSequence": 2}),
    );
    let forged = callgate_gateway::providers::calcom::sign(b"not-the-secret", body.as_bytes());
    assert_eq!(send(body.clone(), Some(forged)).await, 401);
    assert_eq!(send(body.clone(), None).await, 401);
    assert_eq!(send(body.clone(), Some("no-secret-provided".into())).await, 401);
    let wrong_path = stack
        .gw
        .client
        .post(stack.gw.url("/v1/webhooks/calcom/NoSuchEndpoint0000000"))
        .header("x-cal-signature-256", sign(&body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_path.status().as_u16(), 404);

    // The genuine cancellation, delivered twice (Cal.com retries), applies once.
    assert_eq!(send(body.clone(), Some(sign(&body))).await, 204);
    assert_eq!(send(body.clone(), Some(sign(&body))).await, 204);
    wait_count(&db.pool, "SELECT count(*) FROM appointments WHERE status = 'cancelled'", 1).await;
    wait_count(&db.pool, "SELECT count(*) FROM processed_events WHERE provider = 'calcom'", 2).await;
    let reasons = history(db).await;
    let statuses: Vec<&str> = reasons.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(statuses, ["pending", "booked", "rescheduled", "cancelled"], "{reasons:?}");
    assert_eq!(reasons[3].1.as_deref(), Some("Cal.com BOOKING_CANCELLED: feeling better"));
    // An older change arriving late is stale; a booking we never made is unmatched.
    let late = webhook_body("BOOKING_CREATED", &booking, serde_json::json!({"iCalSequence": 0}));
    assert_eq!(send(late.clone(), Some(sign(&late))).await, 204);
    let walk_in = fake.book_directly(501, tomorrow() + chrono::Duration::days(3));
    let other = webhook_body("BOOKING_CANCELLED", &walk_in, serde_json::json!({}));
    assert_eq!(send(other.clone(), Some(sign(&other))).await, 204);
    wait_count(&db.pool, "SELECT count(*) FROM processed_events WHERE provider = 'calcom' AND outcome = 'ignored'", 2)
        .await;
    assert_eq!(count(&db.pool, "SELECT count(*) FROM appointments WHERE status = 'cancelled'").await, 1);
    let gateway = stack.gw.metrics().await;
    assert_eq!(
        metric_sum(&gateway, "callgate_gateway_requests_total{outcome=\"invalid_signature\",provider=\"calcom\"}"),
        1.0
    );
    assert_eq!(
        metric_sum(&gateway, "callgate_gateway_requests_total{outcome=\"no_secret_provided\",provider=\"calcom\"}"),
        1.0
    );
    let metrics = worker.metrics().render();
    assert_eq!(metric_sum(&metrics, "callgate_worker_calcom_changes_total{result=\"applied\"}"), 2.0);
    assert_eq!(metric_sum(&metrics, "callgate_worker_calcom_changes_total{result=\"stale\"}"), 1.0);
    assert_eq!(metric_sum(&metrics, "callgate_worker_calcom_changes_total{result=\"unmatched\"}"), 1.0);
    worker.shutdown().await;
}

/// A stack with a fake Cal.com (its first creates meeting `faults`), `slug` connected to it
/// with one pending appointment for tomorrow, and a worker pushing with the test timings plus
/// `extra` push flags.
async fn pushing(
    slug: &str,
    event_type: i64,
    faults: &[Fault],
    extra: &[&str],
) -> (callgate_tests::Stack, FakeCalcom, CalcomCompany, Worker) {
    callgate_tests::init_logs();
    let stack = callgate_tests::spawn_stack("http://127.0.0.1", 1, &[]).await;
    let fake = FakeCalcom::start(Limits::default()).await;
    for fault in faults {
        fake.push_fault(*fault);
    }
    let company = seed_company(&stack.db, &stack.cipher, &fake, slug, event_type, 1).await;
    insert_appointments(&stack.db, &company, 1, tomorrow()).await;
    let (worker, _) = push_worker_on(&stack.db, &stack.topic, &fake, &stack.secret_key, extra).await;
    (stack, fake, company, worker)
}

/// Delivers `body` to `company`'s Cal.com endpoint, signed with its webhook secret; the status.
async fn deliver_calcom(stack: &callgate_tests::Stack, company: &CalcomCompany, body: &str) -> u16 {
    let signature = callgate_gateway::providers::calcom::sign(company.webhook_secret.as_bytes(), body.as_bytes());
    let url = stack.gw.url(&format!("/v1/webhooks/calcom/{}", company.webhook_path));
    let sent = stack.gw.client.post(url).header("x-cal-signature-256", signature).body(body.to_owned()).send().await;
    sent.unwrap().status().as_u16()
}

#[tokio::test]
async fn one_calcom_body_delivered_to_two_companies_applies_to_each_on_its_own() {
    let (stack, fake, ours, worker) = pushing("shared-a", 601, &[], &[]).await;
    let db = &stack.db;
    // A second company whose Cal.com webhook watches the same Cal.com user: Cal.com sends both
    // the same body, each signed with its own subscription's secret.
    let theirs = seed_company(db, &stack.cipher, &fake, "shared-b", 602, 1).await;
    wait_count(&db.pool, "SELECT count(*) FROM appointments WHERE status = 'booked'", 1).await;
    let mut cancelled = fake.bookings().remove(0);
    cancelled.status = "cancelled".into();
    let body = webhook_body("BOOKING_CANCELLED", &cancelled, serde_json::json!({"iCalSequence": 1}));
    // The gateway learns the new company's endpoint through LISTEN/NOTIFY within milliseconds;
    // until then it is a path it does not know (404).
    let deadline = Instant::now() + callgate_tests::worker::PATIENCE;
    loop {
        let status = deliver_calcom(&stack, &theirs, &body).await;
        if status != 404 || Instant::now() >= deadline {
            assert_eq!(status, 204);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(deliver_calcom(&stack, &ours, &body).await, 204);
    // The other company's copy comes first and matches nothing of its own; ours still cancels
    // our appointment. Each company's ledger holds its own copy.
    wait_count(&db.pool, "SELECT count(*) FROM processed_events WHERE provider = 'calcom'", 2).await;
    wait_count(&db.pool, "SELECT count(*) FROM appointments WHERE status = 'cancelled'", 1).await;
    let ledger: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT company_id, outcome FROM processed_events WHERE provider = 'calcom' ORDER BY outcome")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(ledger, vec![(ours.company.0, "applied".to_owned()), (theirs.company.0, "ignored".to_owned())]);
    worker.shutdown().await;
}

#[tokio::test]
async fn a_booking_cancelled_before_its_answer_arrived_ends_cancelled_and_is_never_booked_again() {
    // Cal.com books, then answers 500: the push does not learn the uid and retries later.
    let slow_retry = ["--calcom-initial-backoff", "2s", "--calcom-max-backoff", "2s"];
    let (stack, fake, company, worker) = pushing("cancelfirst", 701, &[Fault::CommitThen500], &slow_retry).await;
    let db = &stack.db;
    let deadline = Instant::now() + PATIENCE;
    while fake.bookings().is_empty() {
        assert!(Instant::now() < deadline, "the first create never reached the fake");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Before the retry, the caller cancels in Cal.com, and its webhook (no metadata, as Cal.com
    // sends cancellations) arrives while the appointment has no uid yet.
    let uid = fake.bookings().remove(0).uid;
    let cancelled = fake.cancel(&uid).unwrap();
    let body = webhook_body("BOOKING_CANCELLED", &cancelled, serde_json::json!({"iCalSequence": 1}));
    assert_eq!(deliver_calcom(&stack, &company, &body).await, 204);
    // The retry looks its booking up, finds it cancelled, and ends there: no second booking.
    wait_count(
        &db.pool,
        "SELECT count(*) FROM appointments WHERE status = 'cancelled' AND calcom_sync_status = 'synced'",
        1,
    )
    .await;
    let per_key = fake.bookings_per_key();
    assert_eq!(per_key.values().copied().collect::<Vec<_>>(), vec![1], "{per_key:?}");
    let held: Option<String> =
        sqlx::query_scalar("SELECT calcom_booking_uid FROM appointments").fetch_one(&db.pool).await.unwrap();
    assert_eq!(held.as_deref(), Some(uid.as_str()));
    worker.shutdown().await;
}

#[tokio::test]
async fn a_late_booking_requested_never_moves_a_booked_appointment_back() {
    let (stack, fake, company, worker) = pushing("latereq", 702, &[], &[]).await;
    let db = &stack.db;
    wait_count(&db.pool, "SELECT count(*) FROM appointments WHERE status = 'booked'", 1).await;
    let mut requested = fake.bookings().remove(0);
    requested.status = "pending".into();
    let body = webhook_body("BOOKING_REQUESTED", &requested, serde_json::json!({}));
    assert_eq!(deliver_calcom(&stack, &company, &body).await, 204);
    wait_count(&db.pool, "SELECT count(*) FROM processed_events WHERE provider = 'calcom'", 1).await;
    assert_eq!(count(&db.pool, "SELECT count(*) FROM appointments WHERE status = 'booked'").await, 1);
    worker.shutdown().await;
}

#[tokio::test]
async fn a_worker_whose_lease_was_taken_over_sends_nothing() {
    let (db, key, fake, company) = connected("fenced", 901, 1).await;
    // Holds the worker between its claim and its request: reading the appointment's details
    // needs `customers`, the claim does not.
    let mut lock = db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();
    let (worker, _) = push_worker(&db, &fake, &key, &[]).await;
    // The lease (3 s) runs out while the worker waits, and another worker claims the
    // appointment, as its claim statement would.
    wait_count(&db.pool, "SELECT count(*) FROM appointments WHERE lease_owner IS NOT NULL", 1).await;
    let first: DateTime<Utc> =
        sqlx::query_scalar("SELECT lease_expires_at FROM appointments").fetch_one(&db.pool).await.unwrap();
    let expired = format!("SELECT count(*) FROM (SELECT 1) x WHERE now() > '{}'", first.to_rfc3339());
    wait_count(&db.pool, &expired, 1).await;
    sqlx::query(
        "UPDATE appointments SET lease_owner = 'another-worker', lease_expires_at = now() + interval '1 minute'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    lock.commit().await.unwrap();
    // The held worker must see that the appointment is no longer its own and send nothing. (It
    // may also have claimed it a second time itself once the first lease ran out: that claim is
    // a lease of its own, lost as well.) Shutdown lets every attempt in hand finish.
    let lost = || metric_sum(&worker.metrics().render(), "callgate_worker_calcom_pushes_total{result=\"lease_lost\"}");
    let deadline = Instant::now() + PATIENCE;
    while lost() < 1.0 && fake.create_times(&company.api_key).is_empty() {
        assert!(Instant::now() < deadline, "the held worker never finished its attempt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = worker.metrics().render();
    worker.shutdown().await;
    assert_eq!(fake.create_times(&company.api_key).len(), 0, "a create was sent after the lease was lost");
    assert_eq!(metric_sum(&metrics, "callgate_worker_calcom_pushes_total{result=\"synced\"}"), 0.0);
    let holder: String = sqlx::query_scalar("SELECT lease_owner FROM appointments").fetch_one(&db.pool).await.unwrap();
    assert_eq!(holder, "another-worker", "the holder's lease is untouched");
}

/// `callgate-worker calcom reconcile --company <slug>` against `fake`; its output.
async fn reconcile_now(db: &TestDb, key: &str, fake: &FakeCalcom, slug: &str, extra: &[&str]) -> String {
    let output = tokio::process::Command::new(worker_bin())
        .args(["calcom", "reconcile", "--company", slug, "--actor", "oncall-ana"])
        .args(extra)
        .env("CALLGATE_DATABASE_URL", &db.url)
        .env("CALLGATE_SECRET_KEY", key)
        .env("CALLGATE_CALCOM_BASE_URL", fake.base_url())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

#[tokio::test]
async fn a_booking_whose_answer_was_lost_is_adopted_by_the_reconciliation_before_any_retry() {
    let (db, key, fake, acme) = connected("lostanswer", 801, 0).await;
    // Cal.com books, then answers 500; the push's own retry is an hour away.
    fake.push_fault(Fault::CommitThen500);
    insert_appointments(&db, &acme, 1, tomorrow()).await;
    let retry_late =
        ["--calcom-initial-backoff", "1h", "--calcom-max-backoff", "1h", "--calcom-reconcile-interval", "1s"];
    let (worker, _) = push_worker(&db, &fake, &key, &retry_late).await;

    wait_count(
        &db.pool,
        "SELECT count(*) FROM appointments WHERE status = 'booked' AND calcom_sync_status = 'synced'",
        1,
    )
    .await;
    assert_exactly_once(&fake, &uids(&db).await);
    assert_eq!(fake.create_times(&acme.api_key).len(), 1, "no second create");
    let reason: String = sqlx::query_scalar(
        "SELECT reason FROM appointment_status_history WHERE to_status = 'booked' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(reason, "Cal.com reconciliation");
    let metrics = worker.metrics().render();
    assert_eq!(metric_sum(&metrics, "callgate_worker_calcom_reconciled_total{result=\"applied\"}"), 1.0, "{metrics}");
    assert!(metric_sum(&metrics, "callgate_worker_calcom_reconcile_passes_total{outcome=\"complete\"}") >= 1.0);
    assert!(
        metric_sum(&metrics, "callgate_worker_calcom_requests_total{operation=\"list\",outcome=\"listed\"}") >= 2.0
    );
    let watermark_moved: bool = sqlx::query_scalar(
        "SELECT r.watermark > ca.created_at FROM calcom_reconcile r JOIN calcom_accounts ca ON ca.id = r.calcom_account_id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(watermark_moved, "the watermark follows what was read");
    worker.shutdown().await;
}

#[tokio::test]
async fn moves_and_cancellations_made_in_calcom_without_a_webhook_reach_the_appointment() {
    let (db, key, fake, acme) = connected("nowebhook", 802, 1).await;
    // The push books it; the workers' own passes are off, so only the command reconciles.
    let (worker, _) = push_worker(&db, &fake, &key, &["--calcom-reconcile-interval", "0s"]).await;
    wait_count(&db.pool, "SELECT count(*) FROM appointments WHERE status = 'booked'", 1).await;
    worker.shutdown().await;
    let first = fake.bookings().remove(0);

    // The caller moves it on Cal.com's page, and someone books a walk-in; no webhook arrives.
    let later = first.start + chrono::Duration::hours(3);
    let moved = fake.reschedule(&first.uid, later).unwrap();
    fake.book_directly(802, tomorrow() + chrono::Duration::days(2));
    let appointment = || async {
        sqlx::query_as::<_, (String, String, DateTime<Utc>)>(
            "SELECT status, calcom_booking_uid, starts_at FROM appointments",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };

    let dry = reconcile_now(&db, &key, &fake, "nowebhook", &["--dry-run"]).await;
    assert!(dry.contains("would apply (dry run) 1 change(s)"), "{dry}");
    assert_eq!(appointment().await, ("booked".to_owned(), first.uid.clone(), first.start), "a dry run keeps nothing");

    let out = reconcile_now(&db, &key, &fake, "nowebhook", &[]).await;
    assert!(out.contains("applied 1 change(s)") && out.contains("foreign 1"), "{out}");
    assert_eq!(appointment().await, ("rescheduled".to_owned(), moved.uid.clone(), later));

    // Then the host cancels the moved booking.
    fake.cancel(&moved.uid).unwrap();
    let out = reconcile_now(&db, &key, &fake, "nowebhook", &[]).await;
    assert!(out.contains("applied 1 change(s)"), "{out}");
    assert_eq!(appointment().await.0, "cancelled");
    let history = history(&db).await;
    let statuses: Vec<&str> = history.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(statuses, ["pending", "booked", "rescheduled", "cancelled"], "{history:?}");
    assert_eq!(history[3].1.as_deref(), Some("Cal.com reconciliation"));

    // Reading the same bookings again changes nothing.
    let again = reconcile_now(&db, &key, &fake, "nowebhook", &[]).await;
    assert!(again.contains("applied 0 change(s)"), "{again}");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM appointment_status_history").await, 4);
    let audit: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT actor, action, rows_affected FROM operator_actions WHERE action = 'calcom reconcile' ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let rows: Vec<i64> = audit.iter().map(|a| a.2).collect();
    assert_eq!(rows, [1, 1, 0], "one audit row per run, none for the dry run: {audit:?}");
    assert!(audit.iter().all(|a| a.0 == "oncall-ana"));
    assert_eq!(fake.create_times(&acme.api_key).len(), 1, "reconciling never books");

    // While Cal.com has the key blocked, a pass sends nothing and keeps its watermark.
    sqlx::query("UPDATE calcom_rate_gates SET blocked_until = now() + interval '1 hour'")
        .execute(&db.pool)
        .await
        .unwrap();
    let (requests, watermark) = (fake.request_count(), reconcile_watermark(&db).await);
    let blocked = reconcile_now(&db, &key, &fake, "nowebhook", &[]).await;
    assert!(blocked.contains("stopped early (the key's rate gate is closed)"), "{blocked}");
    assert_eq!(fake.request_count(), requests);
    assert_eq!(reconcile_watermark(&db).await, watermark);
}

async fn reconcile_watermark(db: &TestDb) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT watermark FROM calcom_reconcile").fetch_one(&db.pool).await.unwrap()
}

#[tokio::test]
async fn a_meeting_that_ended_and_a_no_show_mark_become_statuses_and_the_callers_no_show_count() {
    let (stack, fake, company, worker) = pushing("outcomes", 703, &[], &[]).await;
    let db = &stack.db;
    wait_count(&db.pool, "SELECT count(*) FROM appointments WHERE status = 'booked'", 1).await;
    let customer: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO customers (company_id, e164, name) VALUES ($1, '+12025550177', 'Ana Lima') RETURNING id",
    )
    .bind(company.company.0)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE appointments SET customer_id = $1").bind(customer).execute(&db.pool).await.unwrap();
    let booking = fake.bookings().remove(0);
    let no_shows = || async {
        sqlx::query_scalar::<_, i32>("SELECT no_show_count FROM customers").fetch_one(&db.pool).await.unwrap()
    };

    // MEETING_ENDED comes flat, without the `payload` wrapper.
    let ended = serde_json::json!({
        "triggerEvent": "MEETING_ENDED", "createdAt": Utc::now().to_rfc3339(),
        "uid": booking.uid, "bookingId": booking.id, "title": "Check-up",
        "startTime": booking.start.to_rfc3339(), "endTime": booking.end.to_rfc3339(),
    })
    .to_string();
    assert_eq!(deliver_calcom(&stack, &company, &ended).await, 204);
    wait_count(&db.pool, "SELECT count(*) FROM appointments WHERE status = 'completed'", 1).await;

    let mark = |absent: bool| {
        serde_json::json!({
            "triggerEvent": "BOOKING_NO_SHOW_UPDATED", "createdAt": Utc::now().to_rfc3339(),
            "payload": {"message": "x", "bookingUid": booking.uid, "bookingId": booking.id,
                        "attendees": [{"email": "ana+0@example.com", "noShow": absent}]},
        })
        .to_string()
    };
    assert_eq!(deliver_calcom(&stack, &company, &mark(true)).await, 204);
    wait_count(&db.pool, "SELECT count(*) FROM appointments WHERE status = 'no_show'", 1).await;
    assert_eq!(no_shows().await, 1);
    // A late MEETING_ENDED (redelivered with a new body) does not clear the mark.
    let late = ended.replace("Check-up", "Check-up (again)");
    assert_eq!(deliver_calcom(&stack, &company, &late).await, 204);
    wait_count(&db.pool, "SELECT count(*) FROM processed_events WHERE provider = 'calcom'", 3).await;
    assert_eq!(count(&db.pool, "SELECT count(*) FROM appointments WHERE status = 'no_show'").await, 1);

    // The host takes the mark back: the caller came.
    assert_eq!(deliver_calcom(&stack, &company, &mark(false)).await, 204);
    wait_count(&db.pool, "SELECT count(*) FROM appointments WHERE status = 'completed'", 1).await;
    assert_eq!(no_shows().await, 0);
    let history = history(db).await;
    let statuses: Vec<&str> = history.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(statuses, ["pending", "booked", "completed", "no_show", "completed"], "{history:?}");
    assert_eq!(history[3].1.as_deref(), Some("Cal.com BOOKING_NO_SHOW_UPDATED"));
    worker.shutdown().await;
}
