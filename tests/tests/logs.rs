//! Log lines say what happened to a webhook, and never carry a secret, a signature or the body,
//! nor what a caller said: logs are out of reach of erasure and retention, so that stays in the
//! database, where both reach it.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use callgate_tests::calls::{FUTURE_LOCAL, TWILIO_PUBLIC, appointment_analysis, retell_call};
use callgate_tests::worker::{start_worker, wait_count};
use callgate_tests::{Stack, signed, spawn_stack};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Logs of this test's thread (each test runs on one: a current-thread runtime) from here on.
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_carry_outcomes_but_no_secret_signature_or_body() {
    let captured = Captured::default();
    let _guard = captured.install();

    let Stack { gw, tenant, secret_key: key, .. } = spawn_stack("https://h", 1, &[]).await;

    let body = signed::retell_body("call_ended", "call_log", tenant.retell_number.1, "+12025550123");
    let good = signed::retell_signature(&tenant.retell_key, &body);
    let forged = signed::retell_signature("an-attackers-guess", &body);
    for (name, value) in [&good, &forged] {
        let response =
            gw.client.post(gw.url("/v1/webhooks/retell")).header(*name, value).body(body.clone()).send().await.unwrap();
        assert!(response.status().is_success() || response.status() == 401);
    }
    let vapi = signed::vapi_body("status-update", "v1", Some(tenant.vapi_number.1), None);
    gw.client
        .post(gw.url("/v1/webhooks/vapi"))
        .header("x-vapi-secret", "wrong-secret-value")
        .body(vapi)
        .send()
        .await
        .unwrap();
    gw.gateway.shutdown().await;

    let logs = captured.text();
    // The capture works and the lines say what happened...
    assert!(logs.contains("webhook accepted"), "{logs}");
    assert!(logs.contains("outcome=\"invalid_signature\""), "{logs}");
    assert!(logs.contains("directory loaded"), "{logs}");
    // ...and nothing secret or private is in them.
    for secret in [
        tenant.retell_key.as_str(),
        tenant.vapi_secret.as_str(),
        tenant.twilio_token.as_str(),
        key.as_str(),
        good.1.as_str(),
        forged.1.as_str(),
        "wrong-secret-value",
        "I'd like a cleaning",
        "+12025550123",
    ] {
        assert!(!logs.contains(secret), "logs contain {secret:?}");
    }
}

#[tokio::test]
async fn a_flagged_calls_log_line_names_the_reason_not_what_the_caller_asked_for() {
    let captured = Captured::default();
    let _guard = captured.install();
    let stack = spawn_stack(TWILIO_PUBLIC, 3, &[]).await;
    let (worker, _) = start_worker(&stack.db, &stack.topic).await;
    let analysis = appointment_analysis(FUTURE_LOCAL, "a root canal");
    for webhook in retell_call(&stack.tenant, "call_flagged", "+12025550123", Some(analysis)) {
        webhook.deliver(&stack.gw).await;
    }
    let pool = &stack.db.pool;
    wait_count(pool, "SELECT count(*) FROM calls WHERE review_reason = 'unknown_service'", 1).await;
    worker.shutdown().await;

    let detail: String = sqlx::query_scalar("SELECT review_detail FROM calls").fetch_one(pool).await.unwrap();
    assert!(detail.contains("a root canal"), "the operator reads it in the database: {detail}");
    let logs = captured.text();
    let line = logs.lines().find(|l| l.contains("call flagged for review")).unwrap_or_else(|| panic!("{logs}"));
    assert!(line.contains("call_flagged") && line.contains("unknown_service"), "{line}");
    assert!(!logs.contains("root canal"), "the caller's words were logged:\n{logs}");
}
