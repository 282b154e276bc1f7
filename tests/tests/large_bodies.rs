//! Genuine webhooks of several megabytes (long calls' transcripts) are accepted end to end, up
//! to `--max-body-bytes`: the gateway publishes them, the worker applies them.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use callgate_gateway::Gateway;
use callgate_gateway::publish::record_limit;
use callgate_tests::calls::{TWILIO_PUBLIC, Webhook};
use callgate_tests::signed::{self, FORM};
use callgate_tests::worker::{metric_sum, start_worker, wait_count};
use callgate_tests::{
    Tenant, TestDb, consume, create_topic_with, fresh_topic, init_logs, kafka_brokers, serve_config, spawn_stack,
};
use serde_json::json;

/// A transcript of about `bytes` bytes, as a long call's would read.
fn transcript(bytes: usize) -> String {
    let line = "Agent: Could you spell your last name for me, please?\nUser: Sure, it is L-I-M-A.\n";
    line.repeat(bytes / line.len() + 1)
}

fn retell_ended(tenant: &Tenant, call_id: &str, bytes: usize) -> Webhook {
    let body = json!({"event": "call_ended", "call": {
        "call_id": call_id, "agent_id": "agent_1", "call_type": "phone_call", "direction": "inbound",
        "from_number": "+12025550111", "to_number": tenant.retell_number.1.to_string(),
        "call_status": "ended", "start_timestamp": 1_790_000_000_000_i64, "end_timestamp": 1_790_003_600_000_i64,
        "transcript": transcript(bytes),
    }})
    .to_string();
    let (name, value) = signed::retell_signature(&tenant.retell_key, &body);
    Webhook { path: "/v1/webhooks/retell".into(), content_type: "application/json", headers: vec![(name, value)], body }
}

fn vapi_report(tenant: &Tenant, call_id: &str, bytes: usize) -> Webhook {
    let body = json!({"message": {
        "type": "end-of-call-report", "timestamp": 1_790_003_601_000_i64,
        "call": {"id": call_id, "orgId": "org-1", "type": "inboundPhoneCall"},
        "phoneNumber": {"number": tenant.vapi_number.1.to_string()}, "customer": {"number": "+12025550112"},
        "endedReason": "customer-ended-call", "artifact": {"transcript": transcript(bytes), "messages": []},
    }})
    .to_string();
    let headers = vec![("x-vapi-secret", tenant.vapi_secret.clone())];
    Webhook { path: "/v1/webhooks/vapi".into(), content_type: "application/json", headers, body }
}

fn twilio_completed(tenant: &Tenant, call_sid: &str, bytes: usize) -> Webhook {
    // A transcription callback's text is the large parameter. Form encoding turns punctuation
    // and newlines into three bytes each, so this text has none and stays about `bytes` long.
    let line = "Agent could you spell your last name for me please User sure it is L I M A ";
    let text = line.repeat(bytes / line.len() + 1);
    let extra = [("CallDuration", "3600"), ("TranscriptionText", text.as_str())];
    let body = signed::twilio_callback(call_sid, "completed", tenant.twilio_number.1, "+12025550113", 2, &extra);
    let url = format!("{TWILIO_PUBLIC}/v1/webhooks/twilio");
    let signature = signed::twilio_signature(&tenant.twilio_token, &url, Some(FORM), &body);
    Webhook {
        path: "/v1/webhooks/twilio".into(),
        content_type: FORM,
        headers: vec![("x-twilio-signature", signature)],
        body,
    }
}

#[tokio::test]
async fn signed_bodies_of_2_and_7_5_megabytes_reach_the_topic_and_become_rows() {
    init_logs();
    let stack = spawn_stack(TWILIO_PUBLIC, 1, &[]).await;
    let (worker, _) = start_worker(&stack.db, &stack.topic).await;
    let tenant = &stack.tenant;
    let mut sent = Vec::new();
    for bytes in [2_000_000, 7_500_000] {
        let webhooks = [
            ("retell", format!("long_{bytes}"), retell_ended(tenant, &format!("long_{bytes}"), bytes)),
            ("vapi", format!("long-{bytes}"), vapi_report(tenant, &format!("long-{bytes}"), bytes)),
            ("twilio", format!("CA{bytes:032}"), twilio_completed(tenant, &format!("CA{bytes:032}"), bytes)),
        ];
        for (provider, call_id, webhook) in webhooks {
            assert!(webhook.body.len() >= bytes, "{provider}: {} bytes", webhook.body.len());
            let status = webhook.send(&stack.gw).await;
            eprintln!("{provider} {} bytes → {status}", webhook.body.len());
            assert!(status.is_success(), "{provider} {} bytes answered {status}", webhook.body.len());
            sent.push((provider, call_id, webhook.body.len()));
        }
    }

    let records = consume(&kafka_brokers(), &stack.topic, sent.len(), callgate_tests::worker::PATIENCE).await;
    assert_eq!(records.len(), sent.len(), "every accepted body is on the topic");
    for (provider, call_id, body_len) in &sent {
        let record = records.iter().find(|r| r.key == format!("{provider}:{call_id}")).unwrap();
        assert!(record.payload.len() > *body_len, "{provider}: the envelope carries the whole body");
    }

    wait_count(&stack.db.pool, "SELECT count(*) FROM processed_events", sent.len() as i64).await;
    for (provider, call_id, _) in &sent {
        let (transcript_len,): (Option<i32>,) =
            sqlx::query_as("SELECT length(transcript) FROM calls WHERE provider = $1 AND provider_call_id = $2")
                .bind(provider)
                .bind(call_id)
                .fetch_one(&stack.db.pool)
                .await
                .unwrap();
        if *provider != "twilio" {
            let len = transcript_len.unwrap();
            assert!(len >= 2_000_000, "{provider} {call_id}: transcript of {len} characters stored");
        }
    }
    worker.shutdown().await;
}

#[tokio::test]
async fn a_record_too_large_for_the_envelope_is_413_and_never_replaces_a_producer() {
    init_logs();
    let stack = spawn_stack(TWILIO_PUBLIC, 1, &[]).await;
    let tenant = &stack.tenant;
    // A signed form body within --max-body-bytes whose quotes are not percent-encoded: quoted
    // into the JSON envelope, every one doubles, past the record limit.
    let mut body = signed::twilio_callback("CAquotes", "completed", tenant.twilio_number.1, "+12025550114", 2, &[]);
    body.push_str("&Junk=");
    body.push_str(&"\"".repeat(4_300_000));
    let url = format!("{TWILIO_PUBLIC}/v1/webhooks/twilio");
    let signature = signed::twilio_signature(&tenant.twilio_token, &url, Some(FORM), &body);
    let odd = Webhook {
        path: "/v1/webhooks/twilio".into(),
        content_type: FORM,
        headers: vec![("x-twilio-signature", signature)],
        body,
    };
    for _ in 0..4 {
        assert_eq!(odd.send(&stack.gw).await, reqwest::StatusCode::PAYLOAD_TOO_LARGE);
    }
    // The producers are untouched and the next webhook goes through.
    twilio_completed(tenant, "CAafter", 1_000).deliver(&stack.gw).await;
    let metrics = stack.gw.metrics().await;
    assert_eq!(metric_sum(&metrics, "callgate_gateway_producer_replacements_total"), 0.0, "{metrics}");
    assert_eq!(metric_sum(&metrics, r#"callgate_gateway_produce_errors_total{reason="too_large"}"#), 4.0);
    let refused = r#"callgate_gateway_requests_total{outcome="payload_too_large",provider="twilio"}"#;
    assert_eq!(metric_sum(&metrics, refused), 4.0, "{metrics}");
}

#[tokio::test]
async fn the_gateway_refuses_to_start_when_the_topic_cannot_take_its_largest_body() {
    init_logs();
    let db = TestDb::create().await;
    let key = callgate_tests::secret_key();
    // Kafka's broker default (1 MiB) against the default 8 MiB body limit.
    let small = fresh_topic();
    create_topic_with(&kafka_brokers(), &small, 1, &[("max.message.bytes", "1048588")]);
    let error = Gateway::start(serve_config(&db, &kafka_brokers(), &small, &key, &[])).await.unwrap_err();
    let message = error.to_string();
    eprintln!("{message}");
    assert!(message.contains("max.message.bytes") && message.contains("--max-body-bytes"), "{message}");
    assert!(message.contains("1048588") && message.contains(&record_limit(8 * 1024 * 1024).to_string()), "{message}");
    // The same topic serves a gateway whose body limit fits in it.
    let fits = ["--max-body-bytes", "900000"];
    let gateway = Gateway::start(serve_config(&db, &kafka_brokers(), &small, &key, &fits)).await.unwrap();
    gateway.shutdown().await;
    // And the scripts' topic setting (10 MiB) takes the default limit.
    let scripts = fresh_topic();
    create_topic_with(&kafka_brokers(), &scripts, 1, &[("max.message.bytes", "10485760")]);
    let gateway = Gateway::start(serve_config(&db, &kafka_brokers(), &scripts, &key, &[])).await.unwrap();
    gateway.shutdown().await;
}
