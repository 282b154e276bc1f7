//! Property tests over the gateway's untrusted input: each provider's routing extraction and
//! verifier, Twilio's form and URL handling, Vapi's credential redaction, and the spool's frames
//! read back from disk. Bounded case
//! counts (256 by default; `PROPTEST_CASES=100000 cargo test -p callgate-gateway --test
//! properties` for a longer run); failures found are kept in `proptest-regressions/`.
//!
//! Invariants: no panic on any input; a verifier accepts a request exactly when the provider's
//! algorithm (written out again here, independently) signed it; redaction leaves no generated
//! credential behind.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use callgate_contract::settings::{HmacSettings, VapiAuth};
use callgate_gateway::providers::{HmacAlgorithm, calcom, retell, twilio, vapi};
use callgate_gateway::spool::format;
use proptest::prelude::*;

/// Twilio's algorithm as its documentation states it: the URL, then every parameter name
/// followed by its value, sorted by name (and by value within a name, each pair once).
fn twilio_reference(token: &[u8], url: &str, params: &[(String, String)]) -> String {
    let mut sorted: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, value) in params {
        sorted.entry(name).or_default().insert(value);
    }
    let mut data = url.to_owned();
    for (name, values) in sorted {
        for value in values {
            data.push_str(name);
            data.push_str(value);
        }
    }
    base64::engine::general_purpose::STANDARD.encode(HmacAlgorithm::Sha1.mac(token, &[data.as_bytes()]))
}

fn form(params: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(params.iter()).finish()
}

fn params() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(("[A-Za-z]{1,6}", ".{0,12}"), 0..12)
}

proptest! {
    #[test]
    fn any_inbound_call_routes_by_the_number_called_or_is_refused(
        inbound in prop::option::of(prop::collection::vec((prop::sample::select(vec!["from_number", "to_number", "agent_id", "agent_version", "x"]), prop_oneof![Just(serde_json::Value::Null), ".{0,20}".prop_map(serde_json::Value::from), any::<i64>().prop_map(serde_json::Value::from)]), 0..5)),
        timestamp in prop::option::of(any::<i64>()),
    ) {
        let mut body = serde_json::json!({"event": retell::INBOUND_EVENT});
        if let Some(fields) = inbound {
            body["call_inbound"] = serde_json::Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
        }
        if let Some(ts) = timestamp {
            body["event_timestamp"] = ts.into();
        }
        if let Ok((routed, _)) = retell::routing(body.to_string().as_bytes()) {
            prop_assert!(routed.number.as_deref().is_some_and(|n| !n.is_empty()));
            prop_assert!(routed.call_id.starts_with("inbound:"));
        }
    }

    #[test]
    fn any_bytes_route_or_are_refused(body in prop::collection::vec(any::<u8>(), 0..400), ct in prop::sample::select(vec![None, Some("application/x-www-form-urlencoded"), Some("application/json")])) {
        let _ = retell::routing(&body);
        let _ = vapi::routing(&body);
        let _ = twilio::routing(ct, &body, std::str::from_utf8(&body).ok());
        let _ = vapi::redact(&body);
    }

    #[test]
    fn any_header_is_refused_or_verified_without_a_panic(header in ".{0,80}", body in prop::collection::vec(any::<u8>(), 0..64), url in ".{0,60}", now in any::<u64>()) {
        let secrets = [b"secret".as_slice()];
        let _ = retell::verify(&secrets, &body, Some(&header), now);
        let _ = twilio::verify(&secrets, &url, Some("application/x-www-form-urlencoded"), &body, Some(&header));
        let _ = twilio::verify(&secrets, &url, Some("application/json"), &body, Some(&header));
        let _ = calcom::verify(&secrets, &body, Some(&header));
        let _ = twilio::url_variants(&url);
    }

    #[test]
    fn twilio_accepts_exactly_what_its_algorithm_signs(token in "[a-f0-9]{8,32}", path in "[a-z]{0,10}", query in "([a-z]{1,4}=[a-z0-9']{0,4}&?){0,3}", params in params(), other in params()) {
        let url = format!("https://hooks.example.com/{path}?{query}");
        let body = form(&params);
        let signature = twilio_reference(token.as_bytes(), &url, &params);
        let verified = twilio::verify(&[token.as_bytes()], &url, Some(twilio::FORM_CONTENT_TYPE), body.as_bytes(), Some(&signature));
        prop_assert_eq!(verified, Ok(()));
        // Different parameters (as a set) are another message: refused.
        let set = |p: &[(String, String)]| p.iter().cloned().collect::<BTreeSet<_>>();
        if set(&other) != set(&params) {
            let forged = twilio::verify(&[token.as_bytes()], &url, Some(twilio::FORM_CONTENT_TYPE), form(&other).as_bytes(), Some(&signature));
            prop_assert!(forged.is_err());
        }
        prop_assert!(twilio::verify(&[b"another-token".as_slice()], &url, Some(twilio::FORM_CONTENT_TYPE), body.as_bytes(), Some(&signature)).is_err());
    }

    #[test]
    fn retell_accepts_exactly_what_its_algorithm_signs(key in "[a-z0-9]{4,24}", body in prop::collection::vec(any::<u8>(), 0..200), ts in 1_600_000_000_000u64..1_900_000_000_000, flip in any::<prop::sample::Index>()) {
        let mac = HmacAlgorithm::Sha256.mac(key.as_bytes(), &[&body, ts.to_string().as_bytes()]);
        let header = format!("v={ts},d={}", hex::encode(mac));
        prop_assert_eq!(retell::verify(&[key.as_bytes()], &body, Some(&header), ts), Ok(()));
        if !body.is_empty() {
            let mut changed = body.clone();
            let i = flip.index(changed.len());
            changed[i] ^= 1;
            prop_assert!(retell::verify(&[key.as_bytes()], &changed, Some(&header), ts).is_err());
        }
        prop_assert!(retell::verify(&[key.as_bytes()], &body, Some(&header), ts + 301_000).is_err(), "outside the window");
    }

    #[test]
    fn redaction_leaves_no_credential_behind(secret in "[A-Za-z0-9]{12,24}", key in prop::sample::select(vec!["apiKey", "api_key", "secretKey", "twilioAuthToken", "password", "Authorization", "client-secret", "accessKey"]), depth in 0usize..4) {
        let mut value = serde_json::json!({ key: secret.clone() });
        for _ in 0..depth {
            value = serde_json::json!({"wrapper": [value, {"n": 1}]});
        }
        let body = serde_json::json!({"message": {"type": "status-update", "call": {"id": "c"}, "echo": value}}).to_string();
        let clean = vapi::redact(body.as_bytes()).unwrap().unwrap();
        prop_assert!(!clean.contains(&secret), "{}", clean);
        prop_assert!(serde_json::from_str::<serde_json::Value>(&clean).is_ok());
    }

    #[test]
    fn vapi_accepts_exactly_what_its_hmac_credential_signs(secret in "[a-z0-9]{8,24}", body in prop::collection::vec(any::<u8>(), 0..200), ts in 1_700_000_000u64..1_900_000_000, header in ".{0,40}", flip in any::<prop::sample::Index>()) {
        let settings = HmacSettings::default();
        let auth = VapiAuth::Hmac(settings.clone());
        let url = "https://hooks.example.com/v1/webhooks/vapi";
        let ts_text = ts.to_string();
        // Vapi's default: HMAC-SHA256 of "{timestamp}.{body}", hex.
        let mut message = format!("{ts_text}.").into_bytes();
        message.extend_from_slice(&body);
        let signature = hex::encode(HmacAlgorithm::Sha256.mac(secret.as_bytes(), &[&message]));
        let check = |sig: &str, body: &[u8]| {
            let header = |name: &str| {
                if name.eq_ignore_ascii_case("x-signature") {
                    Some(sig)
                } else if name.eq_ignore_ascii_case("x-timestamp") {
                    Some(ts_text.as_str())
                } else {
                    None
                }
            };
            let request = vapi::Request { header, body, url: Some(url), now_ms: ts * 1000 };
            vapi::verify(&auth, &[secret.as_bytes()], &request)
        };
        prop_assert_eq!(check(&signature, &body), Ok(()));
        prop_assert_eq!(vapi::sign_hmac(&settings, secret.as_bytes(), &body, url, &ts.to_string(), None), signature.clone());
        if !body.is_empty() {
            let mut changed = body.clone();
            let i = flip.index(changed.len());
            changed[i] ^= 1;
            prop_assert!(check(&signature, &changed).is_err());
        }
        prop_assert!(header == signature || check(&header, &body).is_err());
        // Secret and bearer modes: any header value is compared, never panics.
        for auth in [VapiAuth::default(), VapiAuth::Bearer { header: "authorization".into(), prefix: "Bearer ".into() }] {
            let value = signature.clone();
            let header = |_: &str| Some(value.as_str());
            let request = vapi::Request { header, body: &body, url: None, now_ms: 0 };
            prop_assert!(vapi::verify(&auth, &[secret.as_bytes()], &request).is_err());
        }
    }

    #[test]
    fn calcom_accepts_exactly_what_it_signs(secret in "[a-z0-9]{8,24}", body in prop::collection::vec(any::<u8>(), 0..200)) {
        let signature = hex::encode(HmacAlgorithm::Sha256.mac(secret.as_bytes(), &[&body]));
        prop_assert_eq!(calcom::sign(secret.as_bytes(), &body), signature.clone());
        prop_assert_eq!(calcom::verify(&[secret.as_bytes()], &body, Some(&signature)), Ok(()));
        prop_assert!(calcom::verify(&[b"other".as_slice()], &body, Some(&signature)).is_err());
    }

    #[test]
    fn any_bytes_read_back_from_a_spool_segment_are_a_record_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..400), max_body in 0usize..1_000) {
        if let Ok((record, len)) = format::decode(&bytes, max_body) {
            prop_assert!(len <= bytes.len());
            let mut again = Vec::new();
            prop_assert_eq!(format::encode(&record, &mut again), len);
            prop_assert_eq!(&again[..], &bytes[..len]);
        }
        let _ = format::read_header(&bytes);
        let _ = format::decode_cursor(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn a_spooled_record_reads_back_as_written(key in ".{0,40}", headers in prop::collection::vec((".{0,12}", ".{0,40}"), 0..6), value in prop::collection::vec(any::<u8>(), 0..400), at in any::<u64>(), cut in any::<prop::sample::Index>()) {
        let record = format::SpooledRecord { spooled_at_ms: at, key, headers, value };
        let mut frame = Vec::new();
        let len = format::encode(&record, &mut frame);
        prop_assert_eq!(Some(len), format::encoded_len(&record));
        prop_assert_eq!(format::decode(&frame, len), Ok((record, len)));
        // Cut short anywhere, it is a torn frame, never another record.
        let cut = cut.index(len);
        prop_assert_eq!(format::decode(&frame[..cut], len), Err(format::FrameError::Truncated));
    }
}
