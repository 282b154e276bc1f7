//! Property tests over what reads untrusted bytes in the contract: numbers, envelopes, the
//! providers' payload normalisers and Cal.com booking bodies. Each runs a bounded number of
//! cases (proptest's 256 by default; `PROPTEST_CASES=100000 cargo test -p callgate-contract
//! --test properties` runs longer), and any failure it finds is kept in
//! `proptest-regressions/` and replayed first on every run.
//!
//! The invariant is the same everywhere: no panic, whatever the input; where there is a
//! round trip, it holds.

#![allow(clippy::unwrap_used)]

use callgate_contract::call::{Caller, normalize};
use callgate_contract::envelope::{EventEnvelope, Payload};
use callgate_contract::{E164, Provider, booking};
use proptest::prelude::*;
use serde_json::Value;
use serde_json::value::RawValue;

/// Arbitrary JSON documents, nested a few levels, with the keys the parsers look for mixed in
/// so that the interesting paths are reached, not only "not an object".
fn json() -> impl Strategy<Value = Value> {
    let keys = prop_oneof![
        Just("event".to_owned()),
        Just("call".to_owned()),
        Just("message".to_owned()),
        Just("type".to_owned()),
        Just("status".to_owned()),
        Just("call_analysis".to_owned()),
        Just("custom_analysis_data".to_owned()),
        Just("analysis".to_owned()),
        Just("structuredData".to_owned()),
        Just("from_number".to_owned()),
        Just("to_number".to_owned()),
        Just("customer".to_owned()),
        Just("number".to_owned()),
        Just("timestamp".to_owned()),
        Just("start_timestamp".to_owned()),
        Just("end_timestamp".to_owned()),
        Just("startedAt".to_owned()),
        Just("endedAt".to_owned()),
        Just("triggerEvent".to_owned()),
        Just("payload".to_owned()),
        Just("uid".to_owned()),
        Just("metadata".to_owned()),
        Just("iCalSequence".to_owned()),
        Just("startTime".to_owned()),
        // What a call keeps besides its progress, and the newer Cal.com triggers' fields.
        Just("agent_id".to_owned()),
        Just("agent_version".to_owned()),
        Just("user_sentiment".to_owned()),
        Just("call_cost".to_owned()),
        Just("recording_url".to_owned()),
        Just("recording_multi_channel_url".to_owned()),
        Just("assistantId".to_owned()),
        Just("assistant".to_owned()),
        Just("transcriber".to_owned()),
        Just("language".to_owned()),
        Just("costs".to_owned()),
        Just("artifact".to_owned()),
        Just("recording".to_owned()),
        Just("mono".to_owned()),
        Just("combinedUrl".to_owned()),
        Just("stereoUrl".to_owned()),
        Just("recordingUrl".to_owned()),
        Just("bookingUid".to_owned()),
        Just("attendees".to_owned()),
        Just("noShow".to_owned()),
        "[a-zA-Z_]{1,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,24}".prop_map(Value::String),
        Just(Value::String("2026-12-03T10:00:00Z".into())),
        Just(Value::String("+262142-12-31T23:59:59Z".into())),
        Just(Value::String("+14155550100".into())),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..8)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

fn raw(value: &Value) -> Box<RawValue> {
    RawValue::from_string(value.to_string()).unwrap()
}

const EVENT_TYPES: [&str; 12] = [
    "call_started",
    "call_ended",
    "call_analyzed",
    "status-update",
    "end-of-call-report",
    "assistant-request",
    "completed",
    "BOOKING_CANCELLED",
    "MEETING_ENDED",
    "BOOKING_NO_SHOW_UPDATED",
    "call_inbound",
    "other",
];

proptest! {
    #[test]
    fn any_text_parses_as_a_number_or_not_and_a_number_parses_back_to_itself(text in ".{0,40}", cc in proptest::option::of(1u16..1000)) {
        if let Ok(number) = E164::parse_with_default(&text, cc) {
            prop_assert_eq!(E164::parse(&number.to_string()), Ok(number));
        }
        let _ = Caller::classify(&text);
    }

    #[test]
    fn any_bytes_decode_as_an_envelope_or_not(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = serde_json::from_slice::<EventEnvelope>(&bytes);
        let _ = serde_json::from_slice::<booking::BookingEnvelope>(&bytes);
    }

    #[test]
    fn any_json_normalises_or_is_refused_for_every_provider(doc in json(), event in prop::sample::select(&EVENT_TYPES[..])) {
        for provider in [Provider::Retell, Provider::Vapi, Provider::Twilio] {
            let _ = normalize(provider, event, &Payload::Json(raw(&doc)));
        }
    }

    #[test]
    fn any_form_normalises_or_is_ignored(form in "([A-Za-z]{1,12}=[^&]{0,20}&?){0,12}", status in "[a-z-]{0,12}") {
        let with_status = format!("{form}&CallStatus={status}&CallSid=CA1&SequenceNumber=9223372036854775807");
        let recording = format!("{form}&RecordingStatus={status}&RecordingUrl={status}&RecordingSid=RE1&CallSid=CA1");
        let _ = normalize(Provider::Twilio, "completed", &Payload::Form(form));
        let _ = normalize(Provider::Twilio, "completed", &Payload::Form(with_status));
        let _ = normalize(Provider::Twilio, "recording-completed", &Payload::Form(recording));
    }

    #[test]
    fn any_booking_body_is_read_or_refused(doc in json(), trigger in prop::sample::select(&EVENT_TYPES[..])) {
        let body = serde_json::json!({"triggerEvent": trigger, "payload": doc}).to_string();
        let _ = booking::routing(body.as_bytes());
        let _ = booking::parse(trigger, &body);
        let bare = doc.to_string();
        let _ = booking::routing(bare.as_bytes());
        let _ = booking::parse(trigger, &bare);
    }
}
