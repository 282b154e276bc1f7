//! The gateway end to end: signed webhooks in, broker-acknowledged records out, against a
//! real Postgres and a real Kafka-protocol broker.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::time::{Duration, Instant};

use callgate_contract::{E164, SecretCipher};
use callgate_tests::signed::{self, FORM};
use callgate_tests::tenant::{VAPI_ASSISTANT, VAPI_NUMBER_ID};
use callgate_tests::{Stack, Tenant, TestDb, TestGateway, consume, init_logs, kafka_brokers, spawn_stack};
use reqwest::StatusCode;

/// What Twilio is configured with: the gateway behind a TLS-terminating proxy.
const TWILIO_PUBLIC: &str = "https://hooks.callgate.test";
const CALLER: &str = "+12025550123";
const WAIT: Duration = Duration::from_secs(30);

struct App {
    gw: TestGateway,
    db: TestDb,
    topic: String,
    tenant: Tenant,
    cipher: SecretCipher,
}

async fn spawn_app(extra: &[&str]) -> App {
    init_logs();
    let Stack { gw, db, topic, tenant, cipher, .. } = spawn_stack(TWILIO_PUBLIC, 3, extra).await;
    App { gw, db, topic, tenant, cipher }
}

impl App {
    async fn retell(&self, body: &str, signature: Option<(&str, String)>) -> reqwest::Response {
        let mut request = self.gw.client.post(self.gw.url("/v1/webhooks/retell")).body(body.to_owned());
        if let Some((name, value)) = signature {
            request = request.header(name, value);
        }
        request.header("content-type", "application/json").send().await.unwrap()
    }

    async fn vapi(&self, body: &str, secret: Option<&str>) -> reqwest::Response {
        let mut request = self.gw.client.post(self.gw.url("/v1/webhooks/vapi")).body(body.to_owned());
        if let Some(secret) = secret {
            request = request.header("x-vapi-secret", secret);
        }
        request.header("content-type", "application/json").send().await.unwrap()
    }

    async fn twilio(&self, path_and_query: &str, content_type: &str, body: &str, signature: &str) -> reqwest::Response {
        self.gw
            .client
            .post(self.gw.url(path_and_query))
            .header("content-type", content_type)
            .header("x-twilio-signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    async fn records(&self, expected: usize) -> Vec<callgate_tests::ConsumedRecord> {
        consume(&kafka_brokers(), &self.topic, expected, WAIT).await
    }
}

fn assert_route(envelope: &serde_json::Value, tenant: &Tenant, number: (callgate_contract::PhoneNumberId, E164)) {
    let route = &envelope["route"];
    assert_eq!(route["company_id"], tenant.company.to_string());
    assert_eq!(route["branch_id"], tenant.branch.to_string());
    assert_eq!(route["phone_number_id"], number.0.to_string());
    assert_eq!(route["number"], number.1.to_string());
}

#[tokio::test]
async fn retell_webhook_lands_on_the_topic_keyed_enveloped_and_routed() {
    let app = spawn_app(&[]).await;
    let body = signed::retell_body("call_started", "call_abc", app.tenant.retell_number.1, CALLER);
    let response = app.retell(&body, Some(signed::retell_signature(&app.tenant.retell_key, &body))).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();

    let records = app.records(1).await;
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.key, "retell:call_abc");
    let envelope = &record.value;
    assert_eq!(envelope["version"], 1);
    assert_eq!(envelope["provider"], "retell");
    assert_eq!(envelope["event_type"], "call_started");
    assert_eq!(envelope["provider_call_id"], "call_abc");
    assert_eq!(envelope["trace_id"], request_id);
    assert_eq!(envelope["route"]["provider_account_id"], app.tenant.retell_account.to_string());
    assert_route(envelope, &app.tenant, app.tenant.retell_number);
    let expected_id = callgate_contract::envelope::event_id(
        callgate_contract::Provider::Retell,
        "call_abc",
        "call_started",
        body.as_bytes(),
    );
    assert_eq!(envelope["event_id"], expected_id.to_string());
    assert_eq!(envelope["payload"]["format"], "json");
    assert_eq!(envelope["payload"]["body"], serde_json::from_str::<serde_json::Value>(&body).unwrap());
    assert_eq!(record.header("callgate-event-type"), Some("call_started"));
    assert_eq!(record.header("callgate-trace-id"), Some(request_id.as_str()));
    assert_eq!(record.header("callgate-event-id"), Some(expected_id.to_string().as_str()));
}

#[tokio::test]
async fn vapi_assistant_request_is_answered_with_the_numbers_assistant_and_published() {
    let app = spawn_app(&[]).await;
    let body = signed::vapi_body("assistant-request", "vcall-1", Some(app.tenant.vapi_number.1), None);
    let response = app.vapi(&body, Some(&app.tenant.vapi_secret)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer, serde_json::json!({ "assistantId": VAPI_ASSISTANT }));

    // A status update routed only by the phone number id (no number in the payload).
    let by_id = signed::vapi_body("status-update", "vcall-1", None, Some(&format!("{VAPI_NUMBER_ID}-acme")));
    let response = app.vapi(&by_id, Some(&app.tenant.vapi_secret)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "{}");

    let records = app.records(2).await;
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.key == "vapi:vcall-1"));
    // Same key, same partition, in order.
    assert_eq!(records[0].partition, records[1].partition);
    assert_eq!(records[0].value["event_type"], "assistant-request");
    assert_eq!(records[1].value["event_type"], "status-update");
    for record in &records {
        assert_route(&record.value, &app.tenant, app.tenant.vapi_number);
    }
}

#[tokio::test]
async fn twilio_form_and_json_callbacks_verify_against_the_public_url() {
    let app = spawn_app(&[]).await;
    let number = app.tenant.twilio_number.1;
    let path = "/v1/webhooks/twilio?tenant=acme";
    let form = signed::twilio_form("CA0001", "completed", number, CALLER, 3);
    let url = format!("{TWILIO_PUBLIC}{path}");
    let signature = signed::twilio_signature(&app.tenant.twilio_token, &url, Some(FORM), &form);
    let response = app.twilio(path, FORM, &form, &signature).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    // The same signature with a parameter changed is refused.
    let tampered = form.replace("completed", "canceled");
    let response = app.twilio(path, FORM, &tampered, &signature).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // JSON body: the signature covers the URL with bodySHA256; the body must match the hash.
    let json =
        serde_json::json!({"CallSid": "CA0001", "CallStatus": "completed", "To": number.to_string()}).to_string();
    let json_path = format!("{path}&bodySHA256={}", callgate_gateway::providers::twilio::body_sha256(json.as_bytes()));
    let json_url = format!("{TWILIO_PUBLIC}{json_path}");
    let json_sig = signed::twilio_signature(&app.tenant.twilio_token, &json_url, Some("application/json"), &json);
    let response = app.twilio(&json_path, "application/json", &json, &json_sig).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = app.twilio(&json_path, "application/json", &json.replace("completed", "busy"), &json_sig).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let records = app.records(2).await;
    assert_eq!(records.len(), 2, "only the two genuine callbacks are published");
    assert_eq!(records[0].key, "twilio:CA0001");
    assert_eq!(records[0].value["event_type"], "completed");
    assert_eq!(records[0].value["payload"], serde_json::json!({"format": "form", "body": form}));
    assert_eq!(records[1].value["payload"]["format"], "json");
    assert_route(&records[0].value, &app.tenant, app.tenant.twilio_number);
}

#[tokio::test]
async fn refusals_get_their_status_code_and_nothing_reaches_the_topic() {
    let app = spawn_app(&["--max-body-bytes", "4096"]).await;
    let number = app.tenant.retell_number.1;
    let body = signed::retell_body("call_ended", "call_x", number, CALLER);

    // 401: missing, wrong secret, stale, tampered.
    assert_eq!(app.retell(&body, None).await.status(), StatusCode::UNAUTHORIZED);
    let wrong = signed::retell_signature("not-the-key", &body);
    assert_eq!(app.retell(&body, Some(wrong)).await.status(), StatusCode::UNAUTHORIZED);
    let stale_ts = signed::now_ms() - 301_000;
    let stale = callgate_gateway::providers::retell::sign(app.tenant.retell_key.as_bytes(), body.as_bytes(), stale_ts);
    assert_eq!(app.retell(&body, Some(("x-retell-signature", stale))).await.status(), StatusCode::UNAUTHORIZED);
    let good = signed::retell_signature(&app.tenant.retell_key, &body);
    let tampered = body.replace("cleaning", "root canal");
    let response = app.retell(&tampered, Some(good.clone())).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let text = response.text().await.unwrap();
    assert_eq!(text, r#"{"error":"unauthorized"}"#);
    assert_eq!(
        app.vapi(&signed::vapi_body("status-update", "call_x", Some(app.tenant.vapi_number.1), None), Some("nope"))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );

    // A number nobody registered, and a Retell webhook for a number served by Vapi, are
    // answered exactly like a forged signature for a tenant's number: whether a number belongs
    // to a tenant is not for an unauthenticated sender to learn (the metric still says which).
    let forged = signed::retell_body("call_ended", "call_x", app.tenant.retell_number.1, CALLER);
    let forged = app.retell(&forged, Some(signed::retell_signature("not-the-key", &forged))).await;
    let forged = (forged.status(), forged.text().await.unwrap());
    assert_eq!(forged.0, StatusCode::UNAUTHORIZED);
    let unknown = signed::retell_body("call_ended", "call_x", E164::parse("+19995550000").unwrap(), CALLER);
    for sig in [Some(signed::retell_signature(&app.tenant.retell_key, &unknown)), None] {
        let answer = app.retell(&unknown, sig).await;
        assert_eq!((answer.status(), answer.text().await.unwrap()), forged);
    }
    let other_provider = signed::retell_body("call_ended", "call_x", app.tenant.vapi_number.1, CALLER);
    let sig = signed::retell_signature(&app.tenant.retell_key, &other_provider);
    let answer = app.retell(&other_provider, Some(sig)).await;
    assert_eq!((answer.status(), answer.text().await.unwrap()), forged);

    // 400: not JSON, no call id.
    assert_eq!(app.retell("not json", None).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(app.retell(r#"{"event":"call_ended","call":{}}"#, None).await.status(), StatusCode::BAD_REQUEST);

    // 413: declared too large, and streamed too large without a length.
    let huge = "x".repeat(5000);
    assert_eq!(app.retell(&huge, None).await.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // A chunked body with no Content-Length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = huge.as_bytes().chunks(1000).map(|c| Ok(c.to_vec())).collect();
    let chunks = futures::stream::iter(chunks);
    let streamed = app
        .gw
        .client
        .post(app.gw.url("/v1/webhooks/retell"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Then two genuine events of the same call. Every refused request above used that call's
    // key, so anything published from them would sit ahead of these in the same partition:
    // the partition must read exactly [genuine, sentinel].
    assert_eq!(app.retell(&body, Some(good)).await.status(), StatusCode::NO_CONTENT);
    let sentinel = signed::retell_body("call_analyzed", "call_x", number, CALLER);
    let sentinel_sig = signed::retell_signature(&app.tenant.retell_key, &sentinel);
    assert_eq!(app.retell(&sentinel, Some(sentinel_sig)).await.status(), StatusCode::NO_CONTENT);
    let records = app.records(2).await;
    let types: Vec<&str> = records.iter().map(|r| r.value["event_type"].as_str().unwrap()).collect();
    assert_eq!(types, ["call_ended", "call_analyzed"], "refused webhooks must not be published");

    let metrics = app.gw.metrics().await;
    for line in [
        r#"callgate_gateway_requests_total{outcome="accepted",provider="retell"} 2"#,
        r#"callgate_gateway_requests_total{outcome="missing_signature",provider="retell"} 1"#,
        r#"callgate_gateway_requests_total{outcome="invalid_signature",provider="retell"} 3"#,
        r#"callgate_gateway_requests_total{outcome="stale_timestamp",provider="retell"} 1"#,
        r#"callgate_gateway_requests_total{outcome="unknown_number",provider="retell"} 3"#,
        r#"callgate_gateway_requests_total{outcome="malformed",provider="retell"} 2"#,
        r#"callgate_gateway_requests_total{outcome="payload_too_large",provider="retell"} 2"#,
        r#"callgate_gateway_requests_total{outcome="invalid_signature",provider="vapi"} 1"#,
    ] {
        assert!(metrics.contains(line), "missing {line}\n{metrics}");
    }
    assert!(!metrics.contains(&app.tenant.retell_key));
}

#[tokio::test]
async fn duplicate_deliveries_are_acknowledged_and_carry_the_same_event_id() {
    let app = spawn_app(&[]).await;
    let body = signed::retell_body("call_ended", "call_dup", app.tenant.retell_number.1, CALLER);
    for _ in 0..2 {
        // Retell may re-sign a retry with a fresh timestamp: the id must not change.
        let response = app.retell(&body, Some(signed::retell_signature(&app.tenant.retell_key, &body))).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    let other = signed::retell_body("call_analyzed", "call_dup", app.tenant.retell_number.1, CALLER);
    let response = app.retell(&other, Some(signed::retell_signature(&app.tenant.retell_key, &other))).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let records = app.records(3).await;
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].value["event_id"], records[1].value["event_id"]);
    assert_ne!(records[0].value["event_id"], records[2].value["event_id"]);
}

#[tokio::test]
async fn directory_follows_the_database_without_a_restart() {
    let app = spawn_app(&[]).await;
    let new_number = E164::parse("+14155550177").unwrap();
    let body = signed::retell_body("call_started", "call_new", new_number, CALLER);
    let send = || async {
        let sig = signed::retell_signature(&app.tenant.retell_key, &body);
        app.retell(&body, Some(sig)).await.status()
    };
    assert_eq!(send().await, StatusCode::UNAUTHORIZED);

    let added = Instant::now();
    let id = callgate_worker::tenants::add_phone_number(
        &app.db.pool,
        app.tenant.company,
        app.tenant.branch,
        app.tenant.retell_account,
        new_number,
        &Default::default(),
    )
    .await
    .unwrap();
    // The periodic reload is an hour away: only LISTEN/NOTIFY can bring the number in.
    // "Routable" is the first answer other than 401; the first record a fresh producer sends to
    // a partition can take longer than the directory, so the two are reported apart.
    let routable_after = poll_until(|| async { send().await != StatusCode::UNAUTHORIZED }).await;
    eprintln!("number added → routable after {routable_after:?}, first 2xx after {:?}", added.elapsed());
    assert!(routable_after.is_some(), "new number never served");
    assert_eq!(send().await, StatusCode::NO_CONTENT);

    // Soft delete: it stops routing.
    assert!(callgate_worker::tenants::remove_phone_number(&app.db.pool, id).await.unwrap());
    assert!(poll_until(|| async { send().await == StatusCode::UNAUTHORIZED }).await.is_some());

    // Secret rotation: the new secret works at once, the old one until its window closes.
    let in_window = chrono::Utc::now() + chrono::Duration::hours(1);
    callgate_worker::tenants::rotate_secret(
        &app.db.pool,
        &app.cipher,
        app.tenant.retell_account,
        b"rotated-key",
        Some(in_window),
    )
    .await
    .unwrap();
    let existing = signed::retell_body("call_started", "call_rot", app.tenant.retell_number.1, CALLER);
    let with = |key: &'static str| {
        let existing = existing.clone();
        let app = &app;
        async move { app.retell(&existing, Some(signed::retell_signature(key, &existing))).await.status() }
    };
    assert!(poll_until(|| async { with("rotated-key").await == StatusCode::NO_CONTENT }).await.is_some());
    let old_key: &'static str = Box::leak(app.tenant.retell_key.clone().into_boxed_str());
    assert_eq!(with(old_key).await, StatusCode::NO_CONTENT);
    let expired = chrono::Utc::now() - chrono::Duration::seconds(1);
    callgate_worker::tenants::rotate_secret(
        &app.db.pool,
        &app.cipher,
        app.tenant.retell_account,
        b"third-key",
        Some(expired),
    )
    .await
    .unwrap();
    assert!(poll_until(|| async { with("third-key").await == StatusCode::NO_CONTENT }).await.is_some());
    assert_eq!(with("rotated-key").await, StatusCode::UNAUTHORIZED);

    // A whole company soft-deleted: none of its numbers route.
    sqlx::query("UPDATE companies SET deleted_at = now() WHERE id = $1")
        .bind(app.tenant.company.0)
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert!(poll_until(|| async { with("third-key").await == StatusCode::UNAUTHORIZED }).await.is_some());
}

/// Polls `check` every 20 ms for up to 30 s; returns how long it took to become true.
async fn poll_until<F, Fut>(check: F) -> Option<Duration>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < WAIT {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test]
async fn an_account_whose_secret_does_not_open_is_left_out_and_counted() {
    let app = spawn_app(&[]).await;
    // Sealed under another master key: the gateway cannot open it.
    let foreign = SecretCipher::from_base64::<&str>(&SecretCipher::generate_key(), &[]).unwrap();
    let company = callgate_worker::tenants::create_company(&app.db.pool, "Other", "other").await.unwrap();
    let branch = callgate_worker::tenants::create_branch(&app.db.pool, company, "Main", "Europe/Paris").await.unwrap();
    let account = callgate_worker::tenants::create_provider_account(
        &app.db.pool,
        &foreign,
        company,
        callgate_contract::Provider::Retell,
        "ws",
        b"k",
        &serde_json::json!({}),
    )
    .await
    .unwrap();
    let number = E164::parse("+33142685300").unwrap();
    callgate_worker::tenants::add_phone_number(&app.db.pool, company, branch, account, number, &Default::default())
        .await
        .unwrap();
    let found = poll_until(|| async { app.gw.metrics().await.contains("callgate_directory_invalid_accounts 1") }).await;
    assert!(found.is_some(), "{}", app.gw.metrics().await);
    let body = signed::retell_body("call_started", "c", number, CALLER);
    let sig = signed::retell_signature("k", &body);
    assert_eq!(app.retell(&body, Some(sig)).await.status(), StatusCode::UNAUTHORIZED);
    // The rest of the directory still serves.
    let ok = signed::retell_body("call_started", "c", app.tenant.retell_number.1, CALLER);
    let sig = signed::retell_signature(&app.tenant.retell_key, &ok);
    assert_eq!(app.retell(&ok, Some(sig)).await.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn formatted_and_national_numbers_route_like_e164() {
    let app = spawn_app(&[]).await;
    for (call_id, to_number) in
        [("c_fmt", "+1 (415) 555-0100"), ("c_nat", "(415) 555-0100"), ("c_dash", "1-415-555-0100")]
    {
        let body = serde_json::json!({
            "event": "call_started",
            "call": { "call_id": call_id, "direction": "inbound", "from_number": CALLER, "to_number": to_number }
        })
        .to_string();
        let response = app.retell(&body, Some(signed::retell_signature(&app.tenant.retell_key, &body))).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{to_number}");
    }
    let records = app.records(3).await;
    assert_eq!(records.len(), 3);
    for record in &records {
        assert_route(&record.value, &app.tenant, app.tenant.retell_number);
    }
}

#[tokio::test]
async fn a_failed_reload_keeps_the_last_good_snapshot() {
    let app = spawn_app(&[]).await;
    // Break the loader's queries (they join branches, which is no longer where they read
    // it), then change numbers: the delta reload fails, and so does the full one it falls
    // back to.
    sqlx::query("ALTER TABLE branches RENAME TO branches_moved").execute(&app.db.pool).await.unwrap();
    sqlx::query("UPDATE phone_numbers SET label = 'touched'").execute(&app.db.pool).await.unwrap();
    let failed = poll_until(|| async {
        let metrics = app.gw.metrics().await;
        metrics.contains(r#"callgate_directory_reloads_total{kind="delta",result="error"} 1"#)
            && metrics.contains(r#"callgate_directory_reloads_total{kind="full",result="error"} 1"#)
    })
    .await;
    assert!(failed.is_some(), "{}", app.gw.metrics().await);

    // Still serving every number from the last good snapshot, and still ready.
    let body = signed::retell_body("call_started", "c_after", app.tenant.retell_number.1, CALLER);
    let response = app.retell(&body, Some(signed::retell_signature(&app.tenant.retell_key, &body))).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(app.gw.metrics().await.contains("callgate_directory_numbers 3"));
    let ready = app.gw.client.get(format!("{}/readyz", app.gw.ops_url)).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

#[tokio::test]
async fn twilio_callbacks_configured_with_get_verify_over_the_url() {
    let app = spawn_app(&[]).await;
    let query = signed::twilio_form("CA0009", "completed", app.tenant.twilio_number.1, CALLER, 4);
    let path = format!("/v1/webhooks/twilio?{query}");
    // With GET every parameter is in the URL, so the signature covers the URL alone.
    let signature = signed::twilio_signature(&app.tenant.twilio_token, &format!("{TWILIO_PUBLIC}{path}"), None, "");
    let get = |sig: String| app.gw.client.get(app.gw.url(&path)).header("x-twilio-signature", sig).send();
    assert_eq!(get(signature.clone()).await.unwrap().status(), StatusCode::NO_CONTENT);
    let other = signed::twilio_signature(&app.tenant.twilio_token, &format!("{TWILIO_PUBLIC}/elsewhere"), None, "");
    assert_eq!(get(other).await.unwrap().status(), StatusCode::UNAUTHORIZED);

    let records = app.records(1).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key, "twilio:CA0009");
    assert_eq!(records[0].value["payload"], serde_json::json!({"format": "form", "body": query}));
    assert_route(&records[0].value, &app.tenant, app.tenant.twilio_number);
}

#[tokio::test]
async fn unknown_routes_wrong_methods_and_stalled_bodies_are_refused_and_counted() {
    let app = spawn_app(&["--body-read-timeout", "1s"]).await;
    let wrong_method = app.gw.client.get(app.gw.url("/v1/webhooks/retell")).send().await.unwrap();
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    let unknown = app.gw.client.post(app.gw.url("/v1/webhooks/sinch?token=s3cr3t")).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(unknown.text().await.unwrap(), r#"{"error":"not found"}"#);
    // The webhook listener, which faces the internet, shows nothing of the gateway's state: its
    // metrics and readiness are on the ops listener. /healthz stays, for load balancers.
    for path in ["/metrics", "/readyz"] {
        let public = app.gw.client.get(app.gw.url(path)).send().await.unwrap();
        assert_eq!(public.status(), StatusCode::NOT_FOUND, "{path} on the webhook listener");
        let ops = app.gw.client.get(format!("{}{path}", app.gw.ops_url)).send().await.unwrap();
        assert_eq!(ops.status(), StatusCode::OK, "{path} on the ops listener");
    }
    assert_eq!(app.gw.client.get(app.gw.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);

    // A client that sends the start of a body and then nothing.
    let first: Result<Vec<u8>, std::io::Error> = Ok(br#"{"event":"call_ended","#.to_vec());
    let stalled = futures::StreamExt::chain(futures::stream::iter([first]), futures::stream::pending());
    let response = app
        .gw
        .client
        .post(app.gw.url("/v1/webhooks/retell"))
        .body(reqwest::Body::wrap_stream(stalled))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);

    let metrics = app.gw.metrics().await;
    for line in [
        r#"callgate_gateway_requests_total{outcome="method_not_allowed",provider="none"} 1"#,
        // The sinch path, and /metrics and /readyz asked of the webhook listener.
        r#"callgate_gateway_requests_total{outcome="unknown_route",provider="none"} 3"#,
        r#"callgate_gateway_requests_total{outcome="body_timeout",provider="retell"} 1"#,
    ] {
        assert!(metrics.contains(line), "missing {line}\n{metrics}");
    }
}

#[tokio::test]
async fn past_its_in_flight_bounds_the_gateway_sheds_load_with_503_before_reading_bodies() {
    let app = spawn_app(&["--max-in-flight", "1"]).await;
    let body = signed::retell_body("call_started", "call_shed", app.tenant.retell_number.1, CALLER);
    // One request holds the only slot: its body starts and then stalls.
    let first: Result<Vec<u8>, std::io::Error> = Ok(br#"{"event":"call_started","#.to_vec());
    let stalled = futures::StreamExt::chain(futures::stream::iter([first]), futures::stream::pending());
    let client = app.gw.client.clone();
    let url = app.gw.url("/v1/webhooks/retell");
    let holder = tokio::spawn(async move { client.post(url).body(reqwest::Body::wrap_stream(stalled)).send().await });
    let held = poll_until(|| async { app.gw.metrics().await.contains("callgate_gateway_requests_in_flight 1") }).await;
    assert!(held.is_some(), "the stalled request never started");
    let sig = signed::retell_signature(&app.tenant.retell_key, &body);
    let answer = app.retell(&body, Some(sig)).await;
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers()["retry-after"], "5");
    holder.abort();
    // The slot comes back, and so does service.
    let served = poll_until(|| async {
        let sig = signed::retell_signature(&app.tenant.retell_key, &body);
        app.retell(&body, Some(sig)).await.status() == StatusCode::NO_CONTENT
    })
    .await;
    assert!(served.is_some(), "served again once the held request is gone");
    let metrics = app.gw.metrics().await;
    assert!(
        metrics.contains(r#"callgate_gateway_requests_total{outcome="overloaded",provider="retell"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_suspended_company_is_answered_like_an_unknown_number_until_it_is_resumed() {
    let app = spawn_app(&[]).await;
    let body = signed::retell_body("call_started", "call_suspended", app.tenant.retell_number.1, CALLER);
    let send =
        || async { app.retell(&body, Some(signed::retell_signature(&app.tenant.retell_key, &body))).await.status() };
    assert_eq!(send().await, StatusCode::NO_CONTENT);
    let slug: String = sqlx::query_scalar("SELECT slug FROM companies WHERE id = $1")
        .bind(app.tenant.company.0)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let operator = callgate_worker::operate::Actor::resolve(Some("test"));
    let set = |suspend| {
        let (pool, slug, operator) = (app.db.pool.clone(), slug.clone(), operator.clone());
        async move { callgate_worker::operate::tenant::set_suspended(&pool, &slug, suspend, &operator).await.unwrap() }
    };

    assert!(set(true).await);
    assert!(!set(true).await, "suspending twice changes nothing");
    assert!(poll_until(|| async { send().await == StatusCode::UNAUTHORIZED }).await.is_some(), "still routed");
    assert!(set(false).await);
    assert!(poll_until(|| async { send().await == StatusCode::NO_CONTENT }).await.is_some(), "never routed again");
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM operator_actions ORDER BY id").fetch_all(&app.db.pool).await.unwrap();
    assert_eq!(actions, ["tenant suspend", "tenant resume"]);
}

#[tokio::test]
async fn retells_inbound_webhook_is_answered_from_the_directory_and_published() {
    let app = spawn_app(&[]).await;
    let number = app.tenant.retell_number.1;
    let body = serde_json::json!({
        "event": "call_inbound", "event_timestamp": 1_780_012_672_105_u64,
        "call_inbound": {"agent_id": "agent_retell_default", "from_number": CALLER, "to_number": number.to_string()},
    })
    .to_string();
    let ask = || async {
        let response = app.retell(&body, Some(signed::retell_signature(&app.tenant.retell_key, &body))).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/json");
        response.json::<serde_json::Value>().await.unwrap()
    };
    let names: (String, String) = sqlx::query_as(
        "SELECT c.name, b.name FROM companies c JOIN branches b ON b.company_id = c.id WHERE c.id = $1 AND b.id = $2",
    )
    .bind(app.tenant.company.0)
    .bind(app.tenant.branch.0)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();

    // Nothing set for the number: its own agent (if any) and the business's names.
    let answer = ask().await;
    let inbound = &answer["call_inbound"];
    assert_eq!(inbound["dynamic_variables"]["business_name"], names.0);
    assert_eq!(inbound["dynamic_variables"]["branch_name"], names.1);
    assert_eq!(inbound["metadata"]["callgate_company_id"], app.tenant.company.to_string());

    // An operator sets an agent and a variable: a running gateway answers with them within a
    // second.
    let settings = callgate_worker::tenants::InboundSettings {
        agent_id: Some("agent_front_desk".into()),
        agent_version: Some(3),
        variables: vec![("greeting".into(), "Thanks for calling!".into())],
    };
    callgate_worker::tenants::set_inbound(&app.db.pool, number, &settings).await.unwrap();
    let followed =
        poll_until(|| async { ask().await["call_inbound"]["override_agent_id"] == "agent_front_desk" }).await;
    assert!(followed.is_some(), "the gateway never served the new answer");
    let inbound = ask().await["call_inbound"].clone();
    assert_eq!(inbound["override_agent_version"], 3);
    assert_eq!(inbound["dynamic_variables"]["greeting"], "Thanks for calling!");

    // Unsigned or forged: refused like any Retell webhook.
    assert_eq!(app.retell(&body, None).await.status(), StatusCode::UNAUTHORIZED);
    // Published as a record of the inbound call, keyed by its numbers.
    let records = app.records(1).await;
    assert_eq!(records[0].value["event_type"], "call_inbound");
    assert_eq!(records[0].key, format!("retell:inbound:{number}:{CALLER}:1780012672105"));
    assert_route(&records[0].value, &app.tenant, app.tenant.retell_number);
    // A number of another provider cannot be given a Retell answer.
    let vapi = callgate_worker::tenants::set_inbound(&app.db.pool, app.tenant.vapi_number.1, &settings).await;
    assert!(vapi.is_err());
}
