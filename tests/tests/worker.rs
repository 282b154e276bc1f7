//! The worker end to end: signed webhooks through the real gateway and broker become calls,
//! customers and appointments in Postgres, once each.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use callgate_tests::calls::{
    FUTURE_LOCAL, TWILIO_PUBLIC, appointment_analysis, retell_call, twilio_call, twilio_recording, vapi_call,
};
use callgate_tests::worker::{count, metric_sum, ops_get, snapshot, start_worker, wait_count, wait_metrics};
use callgate_tests::{Stack, init_logs, spawn_stack};
use chrono::{DateTime, Utc};
use sqlx::Row as _;

const CALLER: &str = "+12025550123";

async fn stack() -> Stack {
    init_logs();
    spawn_stack(TWILIO_PUBLIC, 3, &[]).await
}

#[tokio::test]
async fn a_retell_call_becomes_one_call_one_customer_one_pending_appointment() {
    let stack = stack().await;
    let (worker, _) = start_worker(&stack.db, &stack.topic).await;
    let analysis = appointment_analysis(FUTURE_LOCAL, "  teeth CLEANING ");
    let mut webhooks = retell_call(&stack.tenant, "call_r1", CALLER, Some(analysis));
    // An event type the call model does not use: recorded, skipped, harmless.
    let mut transcript = webhooks[0].clone();
    let body = transcript.body.replace("\"call_started\"", "\"transcript_updated\"");
    transcript.headers = vec![callgate_tests::signed::retell_signature(&stack.tenant.retell_key, &body)];
    transcript.body = body;
    webhooks.insert(1, transcript);
    for webhook in webhooks {
        webhook.deliver(&stack.gw).await;
    }
    let pool = &stack.db.pool;
    wait_count(pool, "SELECT count(*) FROM processed_events", 4).await;
    let ignored: Vec<String> = sqlx::query_scalar("SELECT event_type FROM processed_events WHERE outcome = 'ignored'")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(ignored, vec!["transcript_updated".to_owned()]);

    let call = sqlx::query(
        "SELECT c.status, c.direction, c.caller_e164, c.business_e164, c.duration_ms, c.transcript, c.summary,
                c.cost::float8 AS cost, c.disconnection_reason, c.customer_link, c.review_reason, c.started_at,
                c.analysis->>'user_sentiment' AS sentiment, cu.e164 AS customer, cu.name, cu.email, cu.company_id,
                c.agent_id, c.agent_version, c.sentiment AS sentiment_column, c.recording_url,
                (c.cost_breakdown->>'combined_cost')::float8 AS combined_cost
         FROM calls c JOIN customers cu ON cu.id = c.customer_id WHERE c.provider_call_id = 'call_r1'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(call.get::<String, _>("status"), "ended");
    assert_eq!(call.get::<String, _>("direction"), "inbound");
    assert_eq!(call.get::<String, _>("caller_e164"), CALLER);
    assert_eq!(call.get::<String, _>("business_e164"), stack.tenant.retell_number.1.to_string());
    assert_eq!(call.get::<i64, _>("duration_ms"), 95_500);
    assert!(call.get::<String, _>("transcript").contains("cleaning"));
    assert_eq!(call.get::<String, _>("summary"), "The caller asked for a cleaning.");
    assert_eq!(call.get::<f64, _>("cost"), 0.11);
    assert_eq!(call.get::<String, _>("disconnection_reason"), "user_hangup");
    assert_eq!(call.get::<String, _>("sentiment"), "Positive");
    assert_eq!(call.get::<DateTime<Utc>, _>("started_at").timestamp_millis(), 1_790_000_000_000);
    assert_eq!(call.get::<String, _>("agent_id"), "agent_1");
    assert_eq!(call.get::<i32, _>("agent_version"), 1);
    assert_eq!(call.get::<String, _>("sentiment_column"), "Positive");
    assert_eq!(call.get::<String, _>("recording_url"), "https://recordings.retell.test/call_r1.wav");
    assert_eq!(call.get::<f64, _>("combined_cost"), 11.0);
    assert_eq!(call.get::<String, _>("customer_link"), "created");
    assert_eq!(call.get::<Option<String>, _>("review_reason"), None);
    assert_eq!(call.get::<String, _>("customer"), CALLER);
    assert_eq!(call.get::<String, _>("name"), "Ana Lima");
    assert_eq!(call.get::<String, _>("email"), "ana@example.com");
    assert_eq!(call.get::<uuid::Uuid, _>("company_id"), stack.tenant.company.0);

    let appointment = sqlx::query(
        "SELECT a.status, a.calcom_sync_status, a.starts_at, a.ends_at, a.timezone, a.notes, a.idempotency_key,
                s.name AS service, a.customer_id IS NOT NULL AS has_customer
         FROM appointments a JOIN services s ON s.id = a.service_id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(appointment.get::<String, _>("status"), "pending");
    assert_eq!(appointment.get::<String, _>("calcom_sync_status"), "pending");
    assert_eq!(appointment.get::<String, _>("service"), "Teeth Cleaning");
    // 10:30 in New York on 2031-03-04 (EST, before the DST change) is 15:30 UTC.
    let starts: DateTime<Utc> = appointment.get("starts_at");
    assert_eq!(starts.to_rfc3339(), "2031-03-04T15:30:00+00:00");
    assert_eq!((appointment.get::<DateTime<Utc>, _>("ends_at") - starts).num_minutes(), 45);
    assert_eq!(appointment.get::<String, _>("timezone"), "America/New_York");
    assert_eq!(appointment.get::<String, _>("notes"), "prefers mornings");
    assert_eq!(appointment.get::<String, _>("idempotency_key").len(), 64);
    assert!(appointment.get::<bool, _>("has_customer"));
    let history: Vec<(Option<String>, String, Option<String>)> =
        sqlx::query_as("SELECT from_status, to_status, reason FROM appointment_status_history")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!((history[0].0.as_deref(), history[0].1.as_str()), (None, "pending"));
    assert!(history[0].2.as_deref().unwrap().contains("call_r1"), "{history:?}");
    assert_eq!(count(pool, "SELECT count(*) FROM customers").await, 1);

    let (status, metrics) = ops_get(&worker, "/metrics").await;
    assert_eq!(status, 200);
    let applied = r#"callgate_worker_events_total{event_type="call_analyzed",outcome="applied",provider="retell"}"#;
    assert_eq!(metric_sum(&metrics, applied), 1.0, "{metrics}");
    assert_eq!(metric_sum(&metrics, "callgate_worker_appointments_created_total"), 1.0);
    // Each event's age from the gateway's acceptance: when it was read from Kafka, and when its
    // transaction committed (later still).
    let age = |m: &str, stage: &str, part: &str| {
        metric_sum(m, &format!("callgate_worker_event_age_seconds_{part}{{stage=\"{stage}\"}}"))
    };
    wait_metrics(&worker, "event ages", |m| age(m, "committed", "count") >= 4.0).await;
    let (_, metrics) = ops_get(&worker, "/metrics").await;
    assert_eq!(age(&metrics, "read", "count"), 4.0, "{metrics}");
    assert_eq!(age(&metrics, "committed", "count"), 4.0, "{metrics}");
    assert!(age(&metrics, "read", "sum") > 0.0, "{metrics}");
    assert!(age(&metrics, "committed", "sum") > age(&metrics, "read", "sum"), "{metrics}");
    // The group's committed offsets per partition reach past the four records (with the lag,
    // they show a stalled lane: lag above zero while the offset stands still).
    wait_metrics(&worker, "committed offsets", |m| metric_sum(m, "callgate_worker_committed_offset{") >= 4.0).await;
    assert_eq!(ops_get(&worker, "/readyz").await.0, 200);
    assert_eq!(ops_get(&worker, "/healthz").await.0, 200);
    worker.shutdown().await;
}

#[tokio::test]
async fn a_vapi_call_becomes_one_call_one_customer_one_pending_appointment() {
    let stack = stack().await;
    let (worker, _) = start_worker(&stack.db, &stack.topic).await;
    let structured = appointment_analysis("2031-03-04T09:00:00-08:00", "Exam");
    for webhook in vapi_call(&stack.tenant, "vapi-call-1", CALLER, Some(structured)) {
        webhook.deliver(&stack.gw).await;
    }
    let pool = &stack.db.pool;
    wait_count(pool, "SELECT count(*) FROM processed_events", 4).await;
    let (status, duration, summary, link, transcript): (String, i64, String, String, String) = sqlx::query_as(
        "SELECT status, duration_ms, summary, customer_link, transcript FROM calls WHERE provider_call_id = 'vapi-call-1'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), duration, link.as_str()), ("ended", 60_000, "created"));
    assert_eq!(summary, "Booked a check-up.");
    assert!(transcript.contains("check-up"));
    let (service, starts): (String, DateTime<Utc>) = sqlx::query_as(
        "SELECT s.name, a.starts_at FROM appointments a JOIN services s ON s.id = a.service_id WHERE a.status = 'pending'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(service, "Check-up");
    assert_eq!(starts.to_rfc3339(), "2031-03-04T17:00:00+00:00");
    assert_eq!(count(pool, "SELECT count(*) FROM customers").await, 1);
    worker.shutdown().await;
}

#[tokio::test]
async fn twilio_callbacks_become_one_ended_call() {
    let stack = stack().await;
    let (worker, _) = start_worker(&stack.db, &stack.topic).await;
    let sid = "CA0000000000000000000000000000001";
    let callbacks = twilio_call(&stack.tenant, sid, CALLER);
    for webhook in &callbacks {
        webhook.deliver(&stack.gw).await;
    }
    // The recording's own callback (it names no number: its URL does), then a late repeat of the
    // first status callback, which must not erase it.
    twilio_recording(&stack.tenant, sid, "RE0000000000000000000000000000001").deliver(&stack.gw).await;
    let pool = &stack.db.pool;
    wait_count(pool, "SELECT count(*) FROM processed_events", 4).await;
    let mut late = callbacks[0].clone();
    late.body = late.body.replace("SequenceNumber=0", "SequenceNumber=0&CallerName=late");
    late.headers = vec![(
        "x-twilio-signature",
        callgate_tests::signed::twilio_signature(
            &stack.tenant.twilio_token,
            &format!("{TWILIO_PUBLIC}/v1/webhooks/twilio"),
            Some(callgate_tests::signed::FORM),
            &late.body,
        ),
    )];
    late.deliver(&stack.gw).await;
    wait_count(pool, "SELECT count(*) FROM processed_events", 5).await;
    let row = sqlx::query(
        "SELECT status, progress_seq, duration_ms, started_at, ended_at, disconnection_reason, customer_link,
                recording_url, recording_sid
         FROM calls WHERE provider = 'twilio'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("status"), "ended");
    assert_eq!(row.get::<i64, _>("progress_seq"), 2);
    assert_eq!(row.get::<i64, _>("duration_ms"), 42_000);
    assert_eq!(row.get::<DateTime<Utc>, _>("started_at").to_rfc3339(), "2026-09-21T18:13:20+00:00");
    assert_eq!(row.get::<DateTime<Utc>, _>("ended_at").to_rfc3339(), "2026-09-21T18:14:02+00:00");
    assert_eq!(row.get::<String, _>("disconnection_reason"), "completed");
    assert_eq!(row.get::<String, _>("customer_link"), "created");
    assert_eq!(row.get::<String, _>("recording_sid"), "RE0000000000000000000000000000001");
    assert!(row.get::<String, _>("recording_url").ends_with("/Recordings/RE0000000000000000000000000000001"));
    assert_eq!(count(pool, "SELECT count(*) FROM appointments").await, 0);
    let events: Vec<String> =
        sqlx::query_scalar("SELECT event_type FROM processed_events WHERE outcome = 'applied' ORDER BY received_at")
            .fetch_all(pool)
            .await
            .unwrap();
    assert!(events.contains(&"recording-completed".to_owned()), "{events:?}");
    worker.shutdown().await;
}

#[tokio::test]
async fn redelivered_shuffled_events_give_the_same_state_as_one_orderly_delivery() {
    let orderly = stack().await;
    let shuffled = stack().await;
    let (w1, _) = start_worker(&orderly.db, &orderly.topic).await;
    let (w2, _) = start_worker(&shuffled.db, &shuffled.topic).await;
    let script = |stack: &Stack| {
        let t = &stack.tenant;
        let calls = [
            retell_call(t, "call_a", "+12025550001", Some(appointment_analysis(FUTURE_LOCAL, "cleaning"))),
            retell_call(t, "call_b", "anonymous", None),
            vapi_call(t, "vapi-b", "+12025550002", Some(appointment_analysis("2031-05-06 14:00", "checkup"))),
            twilio_call(t, "CA0000000000000000000000000000002", "+12025550003"),
        ];
        calls.into_iter().flatten().collect::<Vec<_>>()
    };
    let events = script(&orderly);
    for webhook in &events {
        webhook.deliver(&orderly.gw).await;
    }
    // Every event three times, in an order that puts late events first.
    let mut again = script(&shuffled);
    let n = again.len();
    let mut deliveries: Vec<_> = again.drain(..).flat_map(|w| [w.clone(), w.clone(), w]).collect();
    let mut state = 0x2545_f491_u64;
    for i in (1..deliveries.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        deliveries.swap(i, (state % (i as u64 + 1)) as usize);
    }
    for webhook in &deliveries {
        webhook.deliver(&shuffled.gw).await;
    }
    let done = "SELECT count(*) FROM processed_events";
    wait_count(&orderly.db.pool, done, n as i64).await;
    wait_count(&shuffled.db.pool, done, n as i64).await;
    wait_metrics(&w2, "every redelivery skipped", |m| {
        metric_sum(m, "callgate_worker_duplicates_skipped_total") >= (2 * n) as f64
    })
    .await;
    let (a, b) = (snapshot(&orderly.db.pool).await, snapshot(&shuffled.db.pool).await);
    assert_eq!(a, b);
    assert_eq!(count(&shuffled.db.pool, "SELECT count(*) FROM appointments").await, 2);
    assert_eq!(count(&shuffled.db.pool, "SELECT count(*) FROM appointment_status_history").await, 2);
    assert_eq!(count(&shuffled.db.pool, "SELECT count(*) FROM customers").await, 3);
    let anonymous = "SELECT count(*) FROM calls WHERE customer_link = 'anonymous' AND customer_id IS NULL";
    assert_eq!(count(&shuffled.db.pool, anonymous).await, 1);
    w1.shutdown().await;
    w2.shutdown().await;
}

/// Two companies, Acme (+1415555…) and Globex (+1212555…), in one database.
struct TwoCompanies {
    db: callgate_tests::TestDb,
    key: String,
    cipher: callgate_contract::SecretCipher,
    acme: callgate_tests::Tenant,
    globex: callgate_tests::Tenant,
}

impl TwoCompanies {
    async fn seed() -> Self {
        init_logs();
        let db = callgate_tests::TestDb::create().await;
        let key = callgate_tests::secret_key();
        let cipher = callgate_contract::SecretCipher::from_base64::<&str>(&key, &[]).unwrap();
        let auth = serde_json::json!({"mode": "secret"});
        let acme = callgate_tests::seed_tenant(&db, &cipher, "acme", "+1415555", TWILIO_PUBLIC, auth.clone()).await;
        let globex = callgate_tests::seed_tenant(&db, &cipher, "globex", "+1212555", TWILIO_PUBLIC, auth).await;
        Self { db, key, cipher, acme, globex }
    }

    /// A gateway and a worker on a fresh topic.
    async fn start(&self) -> (callgate_tests::TestGateway, callgate_worker::Worker) {
        let topic = callgate_tests::fresh_topic();
        let brokers = callgate_tests::kafka_brokers();
        callgate_tests::create_topic(&brokers, &topic, 3);
        let config = callgate_tests::serve_config(&self.db, &brokers, &topic, &self.key, &[]);
        let gw = callgate_tests::TestGateway::start(config).await;
        let (worker, _) = start_worker(&self.db, &topic).await;
        (gw, worker)
    }
}

#[tokio::test]
async fn one_caller_of_two_companies_is_two_customers_each_linked_inside_its_company() {
    let companies = TwoCompanies::seed().await;
    let (gw, worker) = companies.start().await;
    let TwoCompanies { db, acme, globex, .. } = &companies;

    let analysis = |name: &str| {
        let mut a = appointment_analysis(FUTURE_LOCAL, "cleaning");
        a["customer_name"] = name.into();
        a
    };
    for webhook in retell_call(acme, "acme-call", CALLER, Some(analysis("Ana at Acme"))).into_iter().chain(vapi_call(
        globex,
        "globex-call",
        CALLER,
        Some(analysis("Ana at Globex")),
    )) {
        webhook.deliver(&gw).await;
    }
    // The same call id again, now through Globex's Retell number: it must not touch Acme's call.
    let hijack = retell_call(globex, "acme-call", "+12025559999", None).remove(1);
    hijack.deliver(&gw).await;
    let pool = &db.pool;
    wait_count(pool, "SELECT count(*) FROM processed_events", 8).await;
    // Ana calls Acme again and the analysis hears another name: it fills no blank, so it
    // changes nothing.
    let mut renamed = appointment_analysis("2031-04-01T09:00", "exam");
    renamed["customer_name"] = "Someone Else".into();
    renamed["customer_email"] = "else@example.com".into();
    retell_call(acme, "acme-call-2", CALLER, Some(renamed)).remove(2).deliver(&gw).await;
    wait_count(pool, "SELECT count(*) FROM processed_events", 9).await;
    let link: String = sqlx::query_scalar("SELECT customer_link FROM calls WHERE provider_call_id = 'acme-call-2'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(link, "exact_phone");

    let customers: Vec<(uuid::Uuid, String, String)> =
        sqlx::query_as("SELECT company_id, e164, name FROM customers ORDER BY name").fetch_all(pool).await.unwrap();
    assert_eq!(
        customers,
        vec![
            (acme.company.0, CALLER.to_owned(), "Ana at Acme".to_owned()),
            (globex.company.0, CALLER.to_owned(), "Ana at Globex".to_owned()),
        ]
    );
    let links: Vec<(String, uuid::Uuid, uuid::Uuid, String)> = sqlx::query_as(
        "SELECT c.provider_call_id, c.company_id, cu.company_id, c.caller_e164 FROM calls c
         JOIN customers cu ON cu.id = c.customer_id ORDER BY c.provider_call_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(links.len(), 3);
    for (call, call_company, customer_company, caller) in &links {
        assert_eq!(call_company, customer_company, "{call} is linked across companies");
        assert_eq!(caller, CALLER, "{call}");
    }
    let appointments: Vec<(uuid::Uuid, uuid::Uuid)> = sqlx::query_as(
        "SELECT a.company_id, cu.company_id FROM appointments a JOIN customers cu ON cu.id = a.customer_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(appointments.len(), 3);
    assert!(appointments.iter().all(|(a, c)| a == c));
    let emails: Vec<String> =
        sqlx::query_scalar("SELECT email FROM customers ORDER BY email").fetch_all(pool).await.unwrap();
    assert_eq!(emails, vec!["ana@example.com".to_owned(), "ana@example.com".to_owned()]);
    let refused: (String, uuid::Uuid) =
        sqlx::query_as("SELECT outcome, company_id FROM processed_events WHERE outcome <> 'applied'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(refused, ("refused".to_owned(), globex.company.0));
    let (company, status): (uuid::Uuid, String) =
        sqlx::query_as("SELECT company_id, status FROM calls WHERE provider_call_id = 'acme-call'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(company, acme.company.0);
    assert_eq!(status, "ended");
    let (_, metrics) = ops_get(&worker, "/metrics").await;
    assert_eq!(metric_sum(&metrics, r#"callgate_worker_events_total{event_type="call_ended",outcome="refused""#), 1.0);
    worker.shutdown().await;
}

#[tokio::test]
async fn a_company_names_its_own_appointment_fields() {
    let stack = stack().await;
    let fields = serde_json::json!({"start": "slot", "service": "treatment", "customer_name": "patient"});
    callgate_worker::tenants::set_appointment_fields(&stack.db.pool, stack.tenant.company, &fields).await.unwrap();
    let (worker, _) = start_worker(&stack.db, &stack.topic).await;
    // The default names are present too, and must be ignored.
    let data = serde_json::json!({
        "slot": "2031-06-02 16:15",
        "treatment": "Hygiene Visit",
        "patient": "Bea Souza",
        "appointment_start": "2031-01-01T08:00",
        "service": "exam",
    });
    for webhook in vapi_call(&stack.tenant, "vapi-fields", CALLER, Some(data)) {
        webhook.deliver(&stack.gw).await;
    }
    let pool = &stack.db.pool;
    wait_count(pool, "SELECT count(*) FROM processed_events", 4).await;
    let (service, starts, name): (String, DateTime<Utc>, String) = sqlx::query_as(
        "SELECT s.name, a.starts_at, cu.name FROM appointments a JOIN services s ON s.id = a.service_id
         JOIN customers cu ON cu.id = a.customer_id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(service, "Teeth Cleaning");
    // 16:15 in New York in June (EDT, UTC-4).
    assert_eq!(starts.to_rfc3339(), "2031-06-02T20:15:00+00:00");
    assert_eq!(name, "Bea Souza");
    worker.shutdown().await;
}

/// Two companies on one Twilio account (a platform's): Acme's number calls Globex, and Globex
/// transfers the call to a member of staff with `<Dial>`, passing the caller id through. The
/// leg's `From` is Acme's number, yet the leg is Globex's call: it must never become Acme's.
#[tokio::test]
async fn a_dial_leg_belongs_to_its_parent_call_never_to_the_company_of_its_caller_id() {
    use callgate_tests::calls::{Line, twilio_call_on};
    use callgate_tests::signed::{FORM, twilio_dial_leg, twilio_signature};
    let companies = TwoCompanies::seed().await;
    let TwoCompanies { db, cipher, acme, globex, .. } = &companies;
    let pool = &db.pool;
    let shared = callgate_worker::tenants::create_provider_account(
        pool,
        cipher,
        globex.company,
        callgate_contract::Provider::Twilio,
        "ACacme",
        acme.twilio_token.as_bytes(),
        &serde_json::json!({ "public_base_url": TWILIO_PUBLIC }),
    )
    .await
    .unwrap();
    let globex_line = callgate_contract::E164::parse("+12125550199").unwrap();
    callgate_worker::tenants::add_phone_number(
        pool,
        globex.company,
        globex.branch,
        shared,
        globex_line,
        &Default::default(),
    )
    .await
    .unwrap();
    let (gw, worker) = companies.start().await;

    let acme_number = acme.twilio_number.1.to_string();
    let line = Line { number: globex_line, secret: &acme.twilio_token };
    for webhook in twilio_call_on(line, TWILIO_PUBLIC, "CAparent", &acme_number) {
        webhook.deliver(&gw).await;
    }
    const STAFF: &str = "+13105550000";
    let leg = |path_and_query: &str, call_sid: &str| {
        let body = twilio_dial_leg(call_sid, "CAparent", "completed", &acme_number, STAFF);
        let signature =
            twilio_signature(&acme.twilio_token, &format!("{TWILIO_PUBLIC}{path_and_query}"), Some(FORM), &body);
        gw.client
            .post(gw.url(path_and_query))
            .header("content-type", FORM)
            .header("x-twilio-signature", signature)
            .body(body)
            .send()
    };
    // The leg's callback URL names the business it dials for.
    let named = leg("/v1/webhooks/twilio?business_number=%2B12125550199", "CAleg-named").await.unwrap();
    assert!(named.status().is_success(), "{}", named.status());
    // Nothing names the business: the caller id is all there is to go on.
    let unnamed = leg("/v1/webhooks/twilio", "CAleg-unnamed").await.unwrap();
    assert!(unnamed.status().is_success(), "{}", unnamed.status());
    wait_count(pool, "SELECT count(*) FROM processed_events", 5).await;

    let parent: (uuid::Uuid, uuid::Uuid, Option<uuid::Uuid>) =
        sqlx::query_as("SELECT id, company_id, customer_id FROM calls WHERE provider_call_id = 'CAparent'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(parent.1, globex.company.0);
    let named: (uuid::Uuid, Option<uuid::Uuid>, Option<String>, Option<uuid::Uuid>, String) = sqlx::query_as(
        "SELECT company_id, parent_call_id, caller_e164, customer_id, business_e164 FROM calls
         WHERE provider_call_id = 'CAleg-named'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(named.0, globex.company.0);
    assert_eq!(named.1, Some(parent.0));
    // The leg's customer is the parent's caller, never the dialled member of staff.
    assert_eq!(named.2.as_deref(), Some(acme_number.as_str()));
    assert_eq!(named.3, parent.2);
    assert_eq!(named.4, "+12125550199");
    let (outcome, company): (String, uuid::Uuid) =
        sqlx::query_as("SELECT outcome, company_id FROM processed_events WHERE provider_call_id = 'CAleg-unnamed'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!((outcome.as_str(), company), ("refused", acme.company.0));
    assert_eq!(
        count(pool, "SELECT count(*) FROM calls WHERE company_id = (SELECT id FROM companies WHERE slug = 'acme')")
            .await,
        0
    );
    assert_eq!(count(pool, &format!("SELECT count(*) FROM customers WHERE e164 = '{STAFF}'")).await, 0);
    let (_, metrics) = ops_get(&worker, "/metrics").await;
    assert_eq!(metric_sum(&metrics, r#"callgate_worker_events_total{event_type="completed",outcome="refused""#), 1.0);
    worker.shutdown().await;
}

#[tokio::test]
async fn an_operator_sees_a_call_its_events_in_order_its_customer_and_its_appointment_history() {
    let stack = stack().await;
    let (worker, _) = start_worker(&stack.db, &stack.topic).await;
    let analysis = appointment_analysis(FUTURE_LOCAL, "cleaning");
    for webhook in retell_call(&stack.tenant, "call_shown", CALLER, Some(analysis)) {
        webhook.deliver(&stack.gw).await;
    }
    wait_count(&stack.db.pool, "SELECT count(*) FROM processed_events", 3).await;
    let show = |extra: &[&str]| {
        let mut args = vec!["call", "show", "--database-url", &stack.db.url, "--provider", "retell"];
        args.extend_from_slice(extra);
        let out = std::process::Command::new(callgate_tests::worker::worker_bin()).args(&args).output().unwrap();
        (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };

    let (ok, text, stderr) = show(&["--call-id", "call_shown"]);
    assert!(ok, "{stderr}");
    let events: Vec<&str> = text.lines().filter(|l| l.contains(" applied ")).collect();
    assert_eq!(events.len(), 3, "{text}");
    for (line, event_type) in events.iter().zip(["call_started", "call_ended", "call_analyzed"]) {
        assert!(line.contains(event_type), "events in the order received:\n{text}");
        let trace = line.split_whitespace().skip_while(|w| *w != "trace").nth(1).unwrap();
        assert!(trace.len() == 32 && trace.chars().all(|c| c.is_ascii_hexdigit()), "{line}");
    }
    assert!(text.lines().any(|l| l.starts_with("customer ") && l.contains(CALLER)), "{text}");
    assert!(text.contains("created from the analysis of retell call call_shown"), "{text}");
    assert!(!text.contains("Agent:"), "the transcript stays out of the output:\n{text}");
    assert!(text.contains("agent agent_1, language -, sentiment Positive, recording kept"), "{text}");
    assert!(!text.contains("recordings.retell.test"), "the recording's address stays out of the text:\n{text}");

    let (ok, json, _) = show(&["--call-id", "call_shown", "--json"]);
    assert!(ok);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["call"]["status"], "ended");
    assert_eq!(report["call"]["recording_url"], "https://recordings.retell.test/call_shown.wav");
    assert_eq!(report["events"].as_array().unwrap().len(), 3);
    assert_eq!(report["appointments"][0]["calcom_sync_status"], "pending");
    assert_eq!(report["appointments"][0]["history"][0]["to_status"], "pending");

    let (ok, _, stderr) = show(&["--call-id", "no_such_call"]);
    assert!(!ok && stderr.contains("no retell call no_such_call"), "{stderr}");

    // Found by the caller's number (and time) instead of its id.
    let slug: String = sqlx::query_scalar("SELECT slug FROM companies WHERE id = $1")
        .bind(stack.tenant.company.0)
        .fetch_one(&stack.db.pool)
        .await
        .unwrap();
    let by_number = |extra: &[&str]| {
        let mut args = vec!["call", "show", "--database-url", &stack.db.url, "--company", &slug, "--number", CALLER];
        args.extend_from_slice(extra);
        let out = std::process::Command::new(callgate_tests::worker::worker_bin()).args(&args).output().unwrap();
        (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let (ok, found, stderr) = by_number(&[]);
    assert!(ok, "{stderr}");
    assert!(found.starts_with("call retell call_shown "), "{found}");
    let started: DateTime<Utc> =
        sqlx::query_scalar("SELECT started_at FROM calls").fetch_one(&stack.db.pool).await.unwrap();
    let near = (started + chrono::Duration::minutes(20)).to_rfc3339();
    assert!(by_number(&["--at", &near]).1.starts_with("call retell call_shown "));
    let long_ago = (started - chrono::Duration::days(2)).to_rfc3339();
    let (ok, _, stderr) = by_number(&["--at", &long_ago]);
    assert!(!ok && stderr.contains("no call of that company has the number"), "{stderr}");
    worker.shutdown().await;
}

/// `callgate-worker customer …` against the stack's database: (success, stdout, stderr).
fn customer_cli(stack: &Stack, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(callgate_tests::worker::worker_bin())
        .args(["customer"])
        .args(args)
        .env("CALLGATE_DATABASE_URL", &stack.db.url)
        .env("CALLGATE_ACTOR", "dpo-maria")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[tokio::test]
async fn a_caller_is_exported_then_erased_everywhere_and_late_events_bring_nothing_back() {
    let stack = stack().await;
    let (worker, _) = start_worker(&stack.db, &stack.topic).await;
    let pool = &stack.db.pool;
    let other = "+12025550999";
    let calls = retell_call(&stack.tenant, "call_erased", CALLER, Some(appointment_analysis(FUTURE_LOCAL, "cleaning")));
    for webhook in calls.iter().chain(&retell_call(&stack.tenant, "call_kept", other, None)) {
        webhook.deliver(&stack.gw).await;
    }
    wait_count(pool, "SELECT count(*) FROM processed_events", 6).await;
    wait_count(pool, "SELECT count(*) FROM appointments", 1).await;
    let slug: String = sqlx::query_scalar("SELECT slug FROM companies WHERE id = $1")
        .bind(stack.tenant.company.0)
        .fetch_one(pool)
        .await
        .unwrap();

    // The access request: everything about the caller, nothing about the other one.
    let (ok, json, stderr) = customer_cli(&stack, &["export", "--company", &slug, "--phone", CALLER]);
    assert!(ok, "{stderr}");
    let export: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(export["customers"][0]["e164"], CALLER);
    assert_eq!(export["calls"].as_array().unwrap().len(), 1);
    assert!(export["calls"][0]["transcript"].as_str().unwrap().contains("cleaning"));
    assert_eq!(export["call_events"].as_array().unwrap().len(), 3);
    assert_eq!(export["appointments"][0]["customer_name"], "Ana Lima");
    assert_eq!(export["appointments"][0]["history"][0]["to_status"], "pending");
    assert!(!json.contains(other));

    let (ok, dry, stderr) = customer_cli(&stack, &["erase", "--company", &slug, "--phone", CALLER, "--dry-run"]);
    assert!(ok, "{stderr}");
    assert!(dry.starts_with("would erase (dry run): 1 customer(s), 1 call(s), 1 appointment(s)"), "{dry}");
    assert!(dry.contains("recordings.retell.test/call_erased.wav"), "the recording to delete at Retell:\n{dry}");
    assert_eq!(count(pool, "SELECT count(*) FROM customers").await, 2, "a dry run keeps everything");

    // Had the call also asked for a service the branch does not offer, its flag would quote
    // the caller (a treatment, at a dental practice).
    sqlx::query(
        "UPDATE calls SET review_reason = 'unknown_service', flagged_at = now(),
           review_detail = 'no service of the branch is called \"a root canal\"'
         WHERE provider_call_id = 'call_erased'",
    )
    .execute(pool)
    .await
    .unwrap();

    let (ok, done, stderr) = customer_cli(&stack, &["erase", "--company", &slug, "--phone", CALLER]);
    assert!(ok, "{stderr}");
    assert!(done.starts_with("erased: 1 customer(s), 1 call(s), 1 appointment(s); 1 waiting"), "{done}");
    let erased = sqlx::query(
        "SELECT caller_raw, caller_e164, transcript, summary, analysis::text, sentiment, recording_url, customer_id,
                customer_link, content_removed_at IS NOT NULL AS removed, duration_ms, review_detail, review_reason
         FROM calls WHERE provider_call_id = 'call_erased'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    for column in [
        "caller_raw",
        "caller_e164",
        "transcript",
        "summary",
        "analysis",
        "sentiment",
        "recording_url",
        "review_detail",
    ] {
        assert_eq!(erased.get::<Option<String>, _>(column), None, "{column} erased");
    }
    assert_eq!(erased.get::<Option<String>, _>("review_reason").as_deref(), Some("unknown_service"));
    assert_eq!(erased.get::<Option<uuid::Uuid>, _>("customer_id"), None);
    assert_eq!(erased.get::<String, _>("customer_link"), "erased");
    assert!(erased.get::<bool, _>("removed"));
    assert_eq!(erased.get::<i64, _>("duration_ms"), 95_500, "what the business counts stays");
    let appointment: (Option<String>, Option<String>, Option<String>, String) =
        sqlx::query_as("SELECT customer_name, customer_email, notes, calcom_sync_status FROM appointments")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(appointment, (None, None, None, "needs_review".to_owned()), "never pushed with erased details");
    let left: Vec<String> = sqlx::query_scalar("SELECT e164 FROM customers").fetch_all(pool).await.unwrap();
    assert_eq!(left, [other]);
    let kept: Option<String> = sqlx::query_scalar("SELECT transcript FROM calls WHERE provider_call_id = 'call_kept'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(kept.is_some(), "another caller's call is untouched");

    // A late redelivery of the analysis (a new body, so not a duplicate) brings nothing back.
    let mut late = calls[2].clone();
    late.body = late.body.replace("The caller asked", "Late: the caller asked");
    late.headers = vec![callgate_tests::signed::retell_signature(&stack.tenant.retell_key, &late.body)];
    late.deliver(&stack.gw).await;
    wait_count(pool, "SELECT count(*) FROM processed_events", 7).await;
    let refilled: (Option<String>, Option<String>, String) = sqlx::query_as(
        "SELECT transcript, caller_raw, customer_link FROM calls WHERE provider_call_id = 'call_erased'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(refilled, (None, None, "erased".to_owned()));
    assert_eq!(count(pool, "SELECT count(*) FROM customers").await, 1, "no customer re-created");
    assert_eq!(count(pool, "SELECT count(*) FROM appointments").await, 1, "no second appointment");

    let audit: Vec<(String, String)> =
        sqlx::query_as("SELECT actor, action FROM operator_actions WHERE action LIKE 'customer %' ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(
        audit,
        [("dpo-maria".to_owned(), "customer export".to_owned()), ("dpo-maria".into(), "customer erase".into())]
    );
    let trail: String = sqlx::query_scalar("SELECT string_agg(selection::text, ' ') FROM operator_actions")
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(!trail.contains(&CALLER[2..]), "the audit trail holds no number: {trail}");
    worker.shutdown().await;
}
