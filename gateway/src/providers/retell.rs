//! Retell AI: `x-retell-signature: v=<unix ms>,d=<hex HMAC-SHA256(api key, body ‖ ms)>`.
//!
//! Exactly as the hardened official SDKs verify (docs/providers.md §1): the whole
//! header must match `v=<ASCII digits>,d=<64 hex>`; the timestamp may be at most 5 minutes
//! (inclusive) away from now in either direction; the signed message appends the timestamp
//! re-serialised as an integer (so `v=0170…` signs `170…`), not the header's digits.

use serde::Deserialize;

use super::HmacAlgorithm;
use super::{MalformedPayload, Routing, VerifyError, ct_eq};

pub const SIGNATURE_HEADER: &str = "x-retell-signature";
/// ±5 minutes, inclusive.
pub const TOLERANCE_MS: u64 = 300_000;

/// Parses `v=<digits>,d=<64 hex>`; returns the timestamp and the 32-byte digest.
fn parse_header(header: &str) -> Result<(u64, [u8; 32]), VerifyError> {
    let rest = header.strip_prefix("v=").ok_or(VerifyError::MalformedSignature)?;
    let (ts, digest) = rest.split_once(",d=").ok_or(VerifyError::MalformedSignature)?;
    if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::MalformedSignature);
    }
    let ts: u64 = ts.parse().map_err(|_| VerifyError::MalformedSignature)?;
    if digest.len() != 64 {
        return Err(VerifyError::MalformedSignature);
    }
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(digest, &mut bytes).map_err(|_| VerifyError::MalformedSignature)?;
    Ok((ts, bytes))
}

/// Verifies a Retell webhook against each candidate secret (the API key with the webhook badge).
pub fn verify<S: AsRef<[u8]>>(
    secrets: &[S],
    body: &[u8],
    signature: Option<&str>,
    now_ms: u64,
) -> Result<(), VerifyError> {
    let header = signature.ok_or(VerifyError::MissingSignature)?;
    let (ts, digest) = parse_header(header)?;
    if now_ms.abs_diff(ts) > TOLERANCE_MS {
        return Err(VerifyError::StaleTimestamp);
    }
    let ts_text = ts.to_string();
    let matched = secrets.iter().any(|secret| {
        let expected = HmacAlgorithm::Sha256.mac(secret.as_ref(), &[body, ts_text.as_bytes()]);
        ct_eq(&expected, &digest)
    });
    if matched { Ok(()) } else { Err(VerifyError::Mismatch) }
}

/// Signs like Retell's servers do (for tests, the load generator and replays).
pub fn sign(secret: &[u8], body: &[u8], ts_ms: u64) -> String {
    let ts = ts_ms.to_string();
    let mac = HmacAlgorithm::Sha256.mac(secret, &[body, ts.as_bytes()]);
    format!("v={ts},d={}", hex::encode(mac))
}

/// The event of Retell's inbound call webhook: sent when a call reaches a number, before it is
/// connected, and answered with the agent and the variables to take it with (10 s timeout,
/// retried up to 3 times). It has no call id yet.
pub const INBOUND_EVENT: &str = "call_inbound";

/// What a number's inbound answer is made of.
#[derive(Debug, Clone, Default)]
pub struct Inbound<'a> {
    /// The agent to take the call (None: the one Retell has for the number).
    pub agent_id: Option<&'a str>,
    pub agent_version: Option<i32>,
    pub business_name: &'a str,
    pub branch_name: &'a str,
    /// The number's own variables; non-string values are sent as their JSON text.
    pub variables: Option<&'a serde_json::Map<String, serde_json::Value>>,
    /// callgate's ids of the route, as the call's `metadata` (Retell returns it on the call's
    /// later events).
    pub metadata: serde_json::Value,
}

/// The body answering `call_inbound`: `{"call_inbound": {override_agent_id?,
/// override_agent_version?, dynamic_variables, metadata}}`. Built when the directory loads, so
/// a request only copies it.
pub fn inbound_answer(inbound: &Inbound<'_>) -> String {
    let mut variables = serde_json::Map::new();
    variables.insert("business_name".into(), inbound.business_name.into());
    variables.insert("branch_name".into(), inbound.branch_name.into());
    for (name, value) in inbound.variables.into_iter().flatten() {
        let text = match value {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        variables.insert(name.clone(), text.into());
    }
    let mut answer = serde_json::Map::new();
    if let Some(agent) = inbound.agent_id {
        answer.insert("override_agent_id".into(), agent.into());
    }
    if let Some(version) = inbound.agent_version {
        answer.insert("override_agent_version".into(), version.into());
    }
    answer.insert("dynamic_variables".into(), variables.into());
    answer.insert("metadata".into(), inbound.metadata.clone());
    serde_json::json!({ INBOUND_EVENT: answer }).to_string()
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    call: Option<Call<'a>>,
    /// The official demo reads `data` instead of `call`; accepted as an alias.
    #[serde(borrow)]
    data: Option<Call<'a>>,
    #[serde(borrow)]
    call_inbound: Option<InboundCall<'a>>,
    /// Read leniently: an odd value here must not make every Retell event unreadable.
    event_timestamp: Option<serde_json::Value>,
}

/// `call_inbound`'s payload: `{agent_id?, agent_version?, from_number, to_number}`.
#[derive(Deserialize)]
struct InboundCall<'a> {
    #[serde(borrow)]
    from_number: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    to_number: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Call<'a> {
    #[serde(borrow)]
    call_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    direction: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    from_number: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    to_number: Option<std::borrow::Cow<'a, str>>,
}

/// Reads the event type, call id and business number (`to_number` for inbound calls,
/// `from_number` for outbound). Also reports whether the legacy `data` key was used.
pub fn routing(body: &[u8]) -> Result<(Routing, bool), MalformedPayload> {
    let envelope: Envelope<'_> =
        serde_json::from_slice(body).map_err(|_| MalformedPayload("body is not a Retell event"))?;
    let event_type = envelope.event.ok_or(MalformedPayload("event missing"))?;
    if event_type == INBOUND_EVENT {
        let inbound = envelope.call_inbound.ok_or(MalformedPayload("call_inbound missing"))?;
        let to =
            inbound.to_number.filter(|n| !n.is_empty()).ok_or(MalformedPayload("call_inbound.to_number missing"))?;
        let from = inbound.from_number.unwrap_or_default();
        // No call exists yet: the record is named by the numbers and Retell's timestamp.
        let at = envelope.event_timestamp.as_ref().and_then(serde_json::Value::as_u64).unwrap_or(0);
        let call_id = format!("inbound:{to}:{from}:{at}");
        let routing = Routing {
            event_type: event_type.into_owned(),
            call_id,
            number: Some(to.into_owned()),
            provider_number_id: None,
            parent_call_id: None,
        };
        return Ok((routing, false));
    }
    let (call, legacy_data_key) = match (envelope.call, envelope.data) {
        (Some(call), _) => (call, false),
        (None, Some(call)) => (call, true),
        (None, None) => return Err(MalformedPayload("call missing")),
    };
    let call_id = call.call_id.filter(|id| !id.is_empty()).ok_or(MalformedPayload("call.call_id missing"))?;
    let number = match call.direction.as_deref() {
        Some("outbound") => call.from_number,
        _ => call.to_number,
    };
    Ok((
        Routing {
            event_type: event_type.into_owned(),
            call_id: call_id.into_owned(),
            number: number.map(|n| n.into_owned()),
            provider_number_id: None,
            parent_call_id: None,
        },
        legacy_data_key,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"event":"call_ended"}"#;
    const KEY: &str = "test-api-key";
    const TS: u64 = 1_700_000_000_000;
    const DIGEST: &str = "07024cabe7dd8f6d1c6e4a8324ca92c812e6ad4a7ee506c04f7e462e3321823e";

    #[test]
    fn official_vectors() {
        for vectors in super::super::vectors::load("retell.json") {
            let cases = vectors["cases"].as_array().expect("cases");
            assert!(cases.len() >= 10, "expected the full official set");
            for case in cases {
                let name = case["name"].as_str().unwrap();
                let got = verify(
                    &[case["secret"].as_str().unwrap()],
                    case["body"].as_str().unwrap().as_bytes(),
                    Some(case["signature"].as_str().unwrap()),
                    case["now_ms"].as_u64().unwrap(),
                );
                assert_eq!(got.is_ok(), case["valid"].as_bool().unwrap(), "case {name:?}: {got:?}");
            }
        }
    }

    #[test]
    fn an_inbound_call_is_routed_by_the_number_called_and_answered_with_its_agent_and_variables() {
        let body = br#"{"event":"call_inbound","event_timestamp":1780012672105,
            "call_inbound":{"agent_id":"agent_default","from_number":"+14155552671","to_number":"+14155550100"}}"#;
        let (routed, legacy) = routing(body).unwrap();
        assert!(!legacy);
        assert_eq!(routed.event_type, INBOUND_EVENT);
        assert_eq!(routed.number.as_deref(), Some("+14155550100"));
        assert_eq!(routed.call_id, "inbound:+14155550100:+14155552671:1780012672105");
        assert!(routing(br#"{"event":"call_inbound","call_inbound":{"from_number":"+1"}}"#).is_err());
        assert!(routing(br#"{"event":"call_inbound"}"#).is_err());
        // Whatever Retell puts in event_timestamp, its other events still route.
        let odd = br#"{"event":"call_ended","event_timestamp":"soon","call":{"call_id":"c1","to_number":"+1415"}}"#;
        assert_eq!(routing(odd).unwrap().0.call_id, "c1");

        let variables = serde_json::json!({"greeting": "Welcome!", "floor": 3});
        let answer = inbound_answer(&Inbound {
            agent_id: Some("agent_front_desk"),
            agent_version: Some(4),
            business_name: "Bright Smiles",
            branch_name: "Downtown",
            variables: variables.as_object(),
            metadata: serde_json::json!({"callgate_company_id": "c1"}),
        });
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        let inbound = &answer["call_inbound"];
        assert_eq!(inbound["override_agent_id"], "agent_front_desk");
        assert_eq!(inbound["override_agent_version"], 4);
        assert_eq!(inbound["dynamic_variables"]["business_name"], "Bright Smiles");
        assert_eq!(inbound["dynamic_variables"]["branch_name"], "Downtown");
        assert_eq!(inbound["dynamic_variables"]["floor"], "3", "Retell takes strings only");
        assert_eq!(inbound["metadata"]["callgate_company_id"], "c1");
        let bare = inbound_answer(&Inbound { business_name: "B", branch_name: "M", ..Inbound::default() });
        assert!(!bare.contains("override_agent_id"), "without an agent Retell keeps the number's: {bare}");
    }

    #[test]
    fn sign_reproduces_the_official_digest() {
        assert_eq!(sign(KEY.as_bytes(), BODY, TS), format!("v={TS},d={DIGEST}"));
    }

    #[test]
    fn malformed_headers_from_both_sdks_are_refused() {
        let sig = format!("v={TS},d={DIGEST}");
        for bad in [
            String::new(),
            format!("v={TS}"),
            format!("d={DIGEST},v={TS}"),
            format!("prefix-{sig}"),
            format!("{sig}-suffix"),
            format!("v={TS},d=not-hex"),
            format!("v={TS},d={}", &DIGEST[2..]),
            format!("v=-{TS},d={DIGEST}"),
            format!("{sig},extra=value"),
            format!("v=999999999999999999999999,d={DIGEST}"),
            format!("v=,d={DIGEST}"),
            format!("v=١٧٠٠٠٠٠٠٠٠٠٠٠,d={DIGEST}"),
            format!("V={TS},d={DIGEST}"),
        ] {
            assert_eq!(verify(&[KEY], BODY, Some(&bad), TS), Err(VerifyError::MalformedSignature), "{bad:?}");
        }
        assert_eq!(verify(&[KEY], BODY, None, TS), Err(VerifyError::MissingSignature));
    }

    #[test]
    fn uppercase_hex_and_leading_zero_timestamps_verify_like_the_ts_sdk() {
        let upper = format!("v={TS},d={}", DIGEST.to_uppercase());
        assert_eq!(verify(&[KEY], BODY, Some(&upper), TS), Ok(()));
        // The SDKs sign the re-serialised integer, not the header's digits.
        let zero = format!("v=0{TS},d={DIGEST}");
        assert_eq!(verify(&[KEY], BODY, Some(&zero), TS), Ok(()));
    }

    #[test]
    fn window_applies_both_ways_and_stale_is_told_apart() {
        let sig = sign(KEY.as_bytes(), BODY, TS);
        assert_eq!(verify(&[KEY], BODY, Some(&sig), TS + 300_001), Err(VerifyError::StaleTimestamp));
        assert_eq!(verify(&[KEY], BODY, Some(&sig), TS - 300_001), Err(VerifyError::StaleTimestamp));
        assert_eq!(verify(&[KEY], BODY, Some(&sig), 0), Err(VerifyError::StaleTimestamp));
    }

    #[test]
    fn rotated_secret_verifies_with_previous_and_tampered_body_fails() {
        let sig = sign(b"old-key", BODY, TS);
        assert_eq!(verify(&["new-key", "old-key"], BODY, Some(&sig), TS), Ok(()));
        assert_eq!(verify(&["new-key"], BODY, Some(&sig), TS), Err(VerifyError::Mismatch));
        let none: [&str; 0] = [];
        assert_eq!(verify(&none, BODY, Some(&sig), TS), Err(VerifyError::Mismatch));
        assert_eq!(verify(&["old-key"], br#"{"event":"call_started"}"#, Some(&sig), TS), Err(VerifyError::Mismatch));
    }

    #[test]
    fn non_ascii_body_signs_over_its_utf8_bytes() {
        let body = "{\"event\":\"call_ended\",\"call\":{\"transcript\":\"café ☕ 日本\"}}".as_bytes();
        let sig = sign(KEY.as_bytes(), body, TS);
        assert_eq!(verify(&[KEY], body, Some(&sig), TS), Ok(()));
    }

    #[test]
    fn routing_follows_direction() {
        let inbound = br#"{"event":"call_started","call":{"call_id":"c1","direction":"inbound","from_number":"+12137771234","to_number":"+12137771235"}}"#;
        let (r, legacy) = routing(inbound).unwrap();
        assert_eq!((r.event_type.as_str(), r.call_id.as_str()), ("call_started", "c1"));
        assert_eq!(r.number.as_deref(), Some("+12137771235"));
        assert!(!legacy);
        let outbound = br#"{"event":"call_ended","call":{"call_id":"c1","direction":"outbound","from_number":"+12137771234","to_number":"+12137771235"}}"#;
        assert_eq!(routing(outbound).unwrap().0.number.as_deref(), Some("+12137771234"));
        let legacy = br#"{"event":"call_ended","data":{"call_id":"c9","to_number":"+12137771235"}}"#;
        let (r, legacy_key) = routing(legacy).unwrap();
        assert_eq!((r.call_id.as_str(), legacy_key), ("c9", true));
        for bad in
            [&b"not json"[..], br#"{"call":{"call_id":"c"}}"#, br#"{"event":"x"}"#, br#"{"event":"x","call":{}}"#]
        {
            assert!(routing(bad).is_err());
        }
    }
}
