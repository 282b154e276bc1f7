//! Log lines say what happened to a webhook, and never carry a secret, a signature or the body.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use callgate_tests::{Stack, signed, spawn_stack};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

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
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The test runs on one thread (current-thread runtime), so every gateway task logs here.
    let _guard = tracing::subscriber::set_default(subscriber);

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

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
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
