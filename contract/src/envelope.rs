//! The Kafka record the gateway writes and the worker reads: topic `call-events.v1`.
//!
//! Key: `"{provider}:{provider_call_id}"`, so every event of one call lands on one partition,
//! in order. Value: [`EventEnvelope`] as JSON. Headers: [`headers`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{BranchId, CompanyId, E164, PhoneNumberId, Provider, ProviderAccountId};

/// Version of the envelope layout. A consumer refuses versions it does not know.
pub const ENVELOPE_VERSION: u16 = 1;
/// Default topic for accepted events.
pub const EVENTS_TOPIC: &str = "call-events.v1";
/// Default topic for records the worker could not process.
pub const DLQ_TOPIC: &str = "call-events.dlq.v1";

/// Kafka record header names.
pub mod headers {
    pub const EVENT_TYPE: &str = "callgate-event-type";
    pub const EVENT_ID: &str = "callgate-event-id";
    pub const TRACE_ID: &str = "callgate-trace-id";
    pub const ENVELOPE_VERSION: &str = "callgate-envelope-version";
    /// `booking` on a [`crate::booking::BookingEnvelope`]; absent on a call event.
    pub const ENVELOPE_KIND: &str = "callgate-envelope-kind";
}

/// Namespace of the deterministic event ids (UUIDv5). Never change it: ids already in
/// `processed_events` would stop matching their redeliveries.
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6d1f_3b9a_5c2e_4f07_9a8b_c41e_2d6f_7a30);

/// The deterministic id of one delivery.
///
/// A provider's retry re-sends the same body, so hashing the verified body makes the retry's
/// id equal to the original's, while two different events of one call (different bodies)
/// never share an id. Signature headers are left out on purpose: Retell may re-sign a retry
/// with a fresh timestamp.
pub fn event_id(provider: Provider, provider_call_id: &str, event_type: &str, raw_body: &[u8]) -> Uuid {
    source_event_id(provider.as_str(), provider_call_id, event_type, raw_body)
}

/// [`event_id`] for any sender, named as `processed_events.provider` names it.
pub(crate) fn source_event_id(source: &str, provider_call_id: &str, event_type: &str, raw_body: &[u8]) -> Uuid {
    let body_hash = Sha256::digest(raw_body);
    let mut name = Vec::with_capacity(provider_call_id.len() + event_type.len() + 80);
    name.extend_from_slice(source.as_bytes());
    name.push(0);
    name.extend_from_slice(provider_call_id.as_bytes());
    name.push(0);
    name.extend_from_slice(event_type.as_bytes());
    name.push(0);
    name.extend_from_slice(hex::encode(body_hash).as_bytes());
    Uuid::new_v5(&EVENT_ID_NAMESPACE, &name)
}

/// The record key: all events of one call share it.
pub fn record_key(provider: Provider, provider_call_id: &str) -> String {
    format!("{provider}:{provider_call_id}")
}

/// Which tenant an event belongs to, resolved by the gateway from the dialled number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub company_id: CompanyId,
    pub branch_id: BranchId,
    pub phone_number_id: PhoneNumberId,
    pub provider_account_id: ProviderAccountId,
    /// The business number the event was routed by.
    pub number: E164,
}

/// The verified request body, as received (JSON is embedded as-is, not re-serialised).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "format", content = "body", rename_all = "lowercase")]
pub enum Payload {
    /// An `application/json` body, embedded verbatim.
    Json(Box<RawValue>),
    /// An `application/x-www-form-urlencoded` body (Twilio), as its original text.
    Form(String),
}

/// The value of a `call-events.v1` record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub version: u16,
    pub event_id: Uuid,
    pub provider: Provider,
    /// The provider's own name for the event (`call_ended`, `status-update`, `completed`, …).
    pub event_type: String,
    pub provider_call_id: String,
    pub received_at: DateTime<Utc>,
    /// Correlates the gateway's log line, the record and the worker's log lines.
    pub trace_id: String,
    pub route: Route,
    /// True when the gateway removed credentials the provider embedded in the payload
    /// (Vapi can echo a tenant's Twilio auth token); `payload` then differs from the wire bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redacted: bool,
    pub payload: Payload,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_id_is_deterministic_and_distinguishes_events() {
        let a = event_id(Provider::Retell, "c1", "call_ended", b"{}");
        assert_eq!(a, event_id(Provider::Retell, "c1", "call_ended", b"{}"));
        assert_ne!(a, event_id(Provider::Retell, "c1", "call_analyzed", b"{}"));
        assert_ne!(a, event_id(Provider::Retell, "c1", "call_ended", b"{ }"));
        assert_ne!(a, event_id(Provider::Retell, "c2", "call_ended", b"{}"));
        assert_ne!(a, event_id(Provider::Vapi, "c1", "call_ended", b"{}"));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(event_id(Provider::Retell, "ab", "c", b"x"), event_id(Provider::Retell, "a", "bc", b"x"));
    }

    #[test]
    fn json_payload_is_embedded_verbatim() {
        let raw = RawValue::from_string("{\"b\":1,  \"a\":[2]}".to_owned()).unwrap();
        let env = EventEnvelope {
            version: ENVELOPE_VERSION,
            event_id: Uuid::nil(),
            provider: Provider::Retell,
            event_type: "call_ended".into(),
            provider_call_id: "c1".into(),
            received_at: DateTime::from_timestamp(0, 0).unwrap(),
            trace_id: "t".into(),
            route: Route {
                company_id: CompanyId(Uuid::nil()),
                branch_id: BranchId(Uuid::nil()),
                phone_number_id: PhoneNumberId(Uuid::nil()),
                provider_account_id: ProviderAccountId(Uuid::nil()),
                number: E164::parse("+14155550100").unwrap(),
            },
            redacted: false,
            payload: Payload::Json(raw),
        };
        let text = serde_json::to_string(&env).unwrap();
        assert!(text.contains(r#""payload":{"format":"json","body":{"b":1,  "a":[2]}}"#), "{text}");
        assert!(!text.contains("redacted"));
        let back: EventEnvelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back.route, env.route);
        match back.payload {
            Payload::Json(raw) => assert_eq!(raw.get(), "{\"b\":1,  \"a\":[2]}"),
            Payload::Form(_) => panic!("wrong payload kind"),
        }
    }
}
