//! Provider payloads, signed exactly as each provider signs them.

use callgate_contract::E164;
use callgate_gateway::providers::{retell, twilio};

pub fn now_ms() -> u64 {
    u64::try_from(chrono_now_ms()).unwrap()
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub fn retell_body(event: &str, call_id: &str, business: E164, caller: &str) -> String {
    serde_json::json!({
        "event": event,
        "call": {
            "call_id": call_id,
            "agent_id": "agent_1",
            "call_type": "phone_call",
            "call_status": if event == "call_started" { "ongoing" } else { "ended" },
            "direction": "inbound",
            "from_number": caller,
            "to_number": business.to_string(),
            "transcript": "Agent: Hi, how can I help? ☎\nUser: I'd like a cleaning.",
        }
    })
    .to_string()
}

/// `(header name, value)` of a Retell signature made now.
pub fn retell_signature(key: &str, body: &str) -> (&'static str, String) {
    (retell::SIGNATURE_HEADER, retell::sign(key.as_bytes(), body.as_bytes(), now_ms()))
}

pub fn vapi_body(kind: &str, call_id: &str, number: Option<E164>, number_id: Option<&str>) -> String {
    let mut phone = serde_json::Map::new();
    if let Some(n) = number {
        phone.insert("number".into(), n.to_string().into());
    }
    if let Some(id) = number_id {
        phone.insert("id".into(), id.into());
    }
    serde_json::json!({
        "message": {
            "type": kind,
            "timestamp": now_ms(),
            "call": { "id": call_id, "orgId": "org", "type": "inboundPhoneCall", "status": "in-progress" },
            "phoneNumber": phone,
            "customer": { "number": "+12025550123" },
        }
    })
    .to_string()
}

pub const FORM: &str = "application/x-www-form-urlencoded";

pub fn twilio_form(call_sid: &str, status: &str, business: E164, caller: &str, sequence: u32) -> String {
    twilio_callback(call_sid, status, business, caller, sequence, &[("Timestamp", "Sat, 21 Nov 2026 21:30:00 +0000")])
}

/// An inbound call's status callback, as Twilio form-encodes it, with `extra` parameters.
pub fn twilio_callback(
    call_sid: &str,
    status: &str,
    business: E164,
    caller: &str,
    sequence: u32,
    extra: &[(&str, &str)],
) -> String {
    let sequence = sequence.to_string();
    let business = business.to_string();
    let mut pairs = vec![
        ("AccountSid", "AC00000000000000000000000000000000"),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid),
        ("CallStatus", status),
        ("CallbackSource", "call-progress-events"),
        ("Direction", "inbound"),
        ("From", caller),
        ("SequenceNumber", sequence.as_str()),
        ("To", business.as_str()),
    ];
    pairs.extend_from_slice(extra);
    form_urlencoded_pairs(&pairs)
}

/// The status callback of a `<Dial>` leg (`Direction=outbound-dial`) of the call `parent_sid`:
/// Twilio's `From` is the caller id the leg shows (the parent's caller or business number), `To`
/// is the dialled party.
pub fn twilio_dial_leg(call_sid: &str, parent_sid: &str, status: &str, from: &str, dialled: &str) -> String {
    form_urlencoded_pairs(&[
        ("AccountSid", "AC00000000000000000000000000000000"),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid),
        ("CallStatus", status),
        ("CallbackSource", "call-progress-events"),
        ("Direction", "outbound-dial"),
        ("From", from),
        ("ParentCallSid", parent_sid),
        ("SequenceNumber", "0"),
        ("To", dialled),
    ])
}

pub fn form_urlencoded_pairs(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

/// application/x-www-form-urlencoded encoding, as Twilio sends it.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => out.push(byte as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

pub fn twilio_signature(token: &str, url: &str, content_type: Option<&str>, body: &str) -> String {
    twilio::sign(token.as_bytes(), url, content_type, body.as_bytes())
}
