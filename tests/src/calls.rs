//! Whole calls as their providers deliver them: each a sequence of signed webhooks, which a test
//! may send in order, repeated or shuffled.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::signed::{self, FORM};
use crate::{Tenant, TestGateway};

/// What a tenant's Twilio account is configured with in these tests.
pub const TWILIO_PUBLIC: &str = "https://hooks.callgate.test";
const TWILIO_PATH: &str = "/v1/webhooks/twilio";

/// One signed webhook, ready to send (and to send again: providers retry with the same body).
#[derive(Debug, Clone)]
pub struct Webhook {
    pub path: std::borrow::Cow<'static, str>,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Webhook {
    pub async fn send(&self, gw: &TestGateway) -> StatusCode {
        let mut request = gw.client.post(gw.url(&self.path)).header("content-type", self.content_type);
        for (name, value) in &self.headers {
            request = request.header(*name, value);
        }
        request.body(self.body.clone()).send().await.unwrap().status()
    }

    /// Sends it and insists on the gateway's 2xx.
    pub async fn deliver(&self, gw: &TestGateway) {
        let status = self.send(gw).await;
        assert!(status.is_success(), "{} answered {status} to {}", self.path, self.body);
    }
}

/// One business number and the secret its provider signs with: all a call builder needs (the
/// tests take them from a [`Tenant`], the load generator from its model of seeded tenants).
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    pub number: callgate_contract::E164,
    pub secret: &'a str,
}

impl Tenant {
    pub fn retell_line(&self) -> Line<'_> {
        Line { number: self.retell_number.1, secret: &self.retell_key }
    }

    pub fn vapi_line(&self) -> Line<'_> {
        Line { number: self.vapi_number.1, secret: &self.vapi_secret }
    }

    pub fn twilio_line(&self) -> Line<'_> {
        Line { number: self.twilio_number.1, secret: &self.twilio_token }
    }
}

/// A time far enough ahead for any test run, without an offset: read in the branch's zone.
pub const FUTURE_LOCAL: &str = "2031-03-04T10:30";

/// The analysis a caller asking for a cleaning produces, with the default field names.
pub fn appointment_analysis(start: &str, service: &str) -> Value {
    json!({
        "appointment_start": start,
        "service": service,
        "customer_name": "Ana Lima",
        "customer_email": "ana@example.com",
        "notes": "prefers mornings",
    })
}

fn retell(line: Line<'_>, body: Value) -> Webhook {
    let body = body.to_string();
    let (name, value) = signed::retell_signature(line.secret, &body);
    Webhook { path: "/v1/webhooks/retell".into(), content_type: "application/json", headers: vec![(name, value)], body }
}

/// Retell's call_started, call_ended and call_analyzed for one inbound call. `analysis` is the
/// `custom_analysis_data` (none: the analysis has no custom data).
pub fn retell_call(tenant: &Tenant, call_id: &str, caller: &str, analysis: Option<Value>) -> Vec<Webhook> {
    retell_call_on(tenant.retell_line(), call_id, caller, analysis)
}

/// [`retell_call`] on any line. Signed when built: send within Retell's 5 minutes.
pub fn retell_call_on(line: Line<'_>, call_id: &str, caller: &str, analysis: Option<Value>) -> Vec<Webhook> {
    let business = line.number.to_string();
    let base = json!({
        "call_id": call_id,
        "agent_id": "agent_1",
        "agent_version": 1,
        "call_type": "phone_call",
        "direction": "inbound",
        "from_number": caller,
        "to_number": business,
        "start_timestamp": 1_790_000_000_000_i64,
    });
    let with = |mut call: Value, extra: Value| {
        for (k, v) in extra.as_object().unwrap() {
            call[k] = v.clone();
        }
        call
    };
    let ended_fields = json!({
        "call_status": "ended",
        "end_timestamp": 1_790_000_095_500_i64,
        "duration_ms": 95_500,
        "disconnection_reason": "user_hangup",
        "transcript": "Agent: Hi, how can I help? ☎\nUser: I'd like a cleaning.",
        "call_cost": {"combined_cost": 11.0},
        "recording_url": format!("https://recordings.retell.test/{call_id}.wav"),
    });
    let started = with(base.clone(), json!({"call_status": "ongoing"}));
    let ended = with(base.clone(), ended_fields.clone());
    let mut call_analysis = json!({"call_summary": "The caller asked for a cleaning.", "user_sentiment": "Positive", "call_successful": true});
    if let Some(data) = analysis {
        call_analysis["custom_analysis_data"] = data;
    }
    let analyzed = with(with(base, ended_fields), json!({"call_analysis": call_analysis}));
    vec![
        retell(line, json!({"event": "call_started", "call": started})),
        retell(line, json!({"event": "call_ended", "call": ended})),
        retell(line, json!({"event": "call_analyzed", "call": analyzed})),
    ]
}

fn vapi(line: Line<'_>, message: Value) -> Webhook {
    Webhook {
        path: "/v1/webhooks/vapi".into(),
        content_type: "application/json",
        headers: vec![("x-vapi-secret", line.secret.to_owned())],
        body: json!({ "message": message }).to_string(),
    }
}

/// Vapi's status updates (ringing, in-progress, ended) and end-of-call report for one inbound
/// call. `structured` is the analysis' `structuredData`.
pub fn vapi_call(tenant: &Tenant, call_id: &str, caller: &str, structured: Option<Value>) -> Vec<Webhook> {
    vapi_call_on(tenant.vapi_line(), call_id, caller, structured)
}

/// [`vapi_call`] on any line (an account in `secret` auth mode).
pub fn vapi_call_on(line: Line<'_>, call_id: &str, caller: &str, structured: Option<Value>) -> Vec<Webhook> {
    let business = line.number.to_string();
    let message = |kind: &str, ts: i64, extra: Value| {
        let mut m = json!({
            "type": kind,
            "timestamp": ts,
            "call": {"id": call_id, "orgId": "org-1", "type": "inboundPhoneCall"},
            "phoneNumber": {"number": business},
            "customer": {"number": caller},
        });
        for (k, v) in extra.as_object().unwrap() {
            m[k] = v.clone();
        }
        m
    };
    let mut analysis = json!({"summary": "Booked a check-up.", "successEvaluation": "true"});
    if let Some(data) = structured {
        analysis["structuredData"] = data;
    }
    vec![
        vapi(line, message("status-update", 1_790_000_000_000, json!({"status": "ringing"}))),
        vapi(line, message("status-update", 1_790_000_001_000, json!({"status": "in-progress"}))),
        vapi(
            line,
            message(
                "status-update",
                1_790_000_060_000,
                json!({"status": "ended", "endedReason": "customer-ended-call"}),
            ),
        ),
        vapi(
            line,
            message(
                "end-of-call-report",
                1_790_000_061_000,
                json!({
                    "endedReason": "customer-ended-call",
                    "startedAt": "2026-09-21T18:13:20.000Z",
                    "endedAt": "2026-09-21T18:14:20.000Z",
                    "cost": 0.15,
                    "artifact": {"transcript": "AI: Hello.\nUser: A check-up, please.", "messages": []},
                    "analysis": analysis,
                }),
            ),
        ),
    ]
}

/// Twilio's status callbacks (ringing, in-progress, completed) for one inbound call.
pub fn twilio_call(tenant: &Tenant, call_sid: &str, caller: &str) -> Vec<Webhook> {
    twilio_call_on(tenant.twilio_line(), TWILIO_PUBLIC, call_sid, caller)
}

/// [`twilio_call`] on any line, signed for the account's public base URL.
pub fn twilio_call_on(line: Line<'_>, public_base_url: &str, call_sid: &str, caller: &str) -> Vec<Webhook> {
    let business = line.number;
    let url = format!("{}{TWILIO_PATH}", public_base_url.trim_end_matches('/'));
    let callback = |status: &str, sequence: u32, extra: &[(&str, &str)]| {
        let body = signed::twilio_callback(call_sid, status, business, caller, sequence, extra);
        let signature = signed::twilio_signature(line.secret, &url, Some(FORM), &body);
        Webhook { path: TWILIO_PATH.into(), content_type: FORM, headers: vec![("x-twilio-signature", signature)], body }
    };
    vec![
        callback("ringing", 0, &[("Timestamp", "Mon, 21 Sep 2026 18:13:18 +0000")]),
        callback("in-progress", 1, &[("Timestamp", "Mon, 21 Sep 2026 18:13:20 +0000")]),
        callback("completed", 2, &[("Timestamp", "Mon, 21 Sep 2026 18:14:02 +0000"), ("CallDuration", "42")]),
    ]
}

/// Twilio's recording status callback for a finished recording of `call_sid`, sent to the URL
/// that names the business number (recording callbacks carry no `To` or `From`).
pub fn twilio_recording(tenant: &Tenant, call_sid: &str, recording_sid: &str) -> Webhook {
    let line = tenant.twilio_line();
    let number = line.number.to_string().replace('+', "%2B");
    let path = format!("{TWILIO_PATH}?business_number={number}");
    let url = format!("{TWILIO_PUBLIC}{path}");
    let recording_url = format!("https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/{recording_sid}");
    let body = signed::form_urlencoded_pairs(&[
        ("AccountSid", "AC00000000000000000000000000000000"),
        ("CallSid", call_sid),
        ("RecordingChannels", "1"),
        ("RecordingDuration", "42"),
        ("RecordingSid", recording_sid),
        ("RecordingSource", "DialVerb"),
        ("RecordingStatus", "completed"),
        ("RecordingUrl", &recording_url),
    ]);
    let signature = signed::twilio_signature(line.secret, &url, Some(FORM), &body);
    Webhook { path: path.into(), content_type: FORM, headers: vec![("x-twilio-signature", signature)], body }
}
