//! Vapi: no signature by default; each server URL is protected by one of three credentials
//! (docs/providers.md §2), chosen per provider account in its `settings.auth`:
//!
//! - `{"mode":"secret"}`: the shared secret sent verbatim in `x-vapi-secret` (header configurable).
//! - `{"mode":"bearer"}`: `Authorization: Bearer <secret>` (header and prefix configurable).
//! - `{"mode":"hmac", …}`: Vapi's HMAC credential, every field of which is configurable:
//!   algorithm, signature/timestamp/message-id headers, signature prefix and encoding, payload
//!   template (`{timestamp}`, `{body}`, `{method}`, `{url}`, `{svix-id}`), base64 secrets.
//!
//! Vapi documents no replay window for HMAC; we allow `tolerance_secs` (default 300) around
//! the timestamp header, read as Unix seconds, Unix milliseconds (≥ 10^11) or RFC 3339.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

pub use callgate_contract::settings::{HmacSettings, SignatureEncoding, VapiAuth};

use super::{MalformedPayload, Routing, VerifyError, ct_eq};

/// A request as the verifier sees it.
#[derive(Debug)]
pub struct Request<'a, H: Fn(&str) -> Option<&'a str>> {
    /// Header lookup by (case-insensitive) name.
    pub header: H,
    pub body: &'a [u8],
    /// The public URL of the request, for `{url}` (None: not configured).
    pub url: Option<&'a str>,
    pub now_ms: u64,
}

pub fn verify<'a, S: AsRef<[u8]>, H: Fn(&str) -> Option<&'a str>>(
    auth: &VapiAuth,
    secrets: &[S],
    request: &Request<'a, H>,
) -> Result<(), VerifyError> {
    match auth {
        VapiAuth::Secret { header } => {
            let got = present(&request.header, header)?;
            any_secret(secrets, |s| ct_eq(got.as_bytes(), s))
        }
        VapiAuth::Bearer { header, prefix } => {
            let got = present(&request.header, header)?;
            let token = strip_prefix_ignore_case(got, prefix).ok_or(VerifyError::MalformedSignature)?;
            any_secret(secrets, |s| ct_eq(token.as_bytes(), s))
        }
        VapiAuth::Hmac(settings) => verify_hmac(settings, secrets, request),
    }
}

fn present<'a, H: Fn(&str) -> Option<&'a str>>(header: &H, name: &str) -> Result<&'a str, VerifyError> {
    header(name).filter(|v| !v.is_empty()).ok_or(VerifyError::MissingSignature)
}

fn any_secret<S: AsRef<[u8]>>(secrets: &[S], mut ok: impl FnMut(&[u8]) -> bool) -> Result<(), VerifyError> {
    if secrets.iter().any(|s| ok(s.as_ref())) { Ok(()) } else { Err(VerifyError::Mismatch) }
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &value[prefix.len()..])
}

fn verify_hmac<'a, S: AsRef<[u8]>, H: Fn(&str) -> Option<&'a str>>(
    settings: &HmacSettings,
    secrets: &[S],
    request: &Request<'a, H>,
) -> Result<(), VerifyError> {
    let header = present(&request.header, &settings.signature_header)?;
    let encoded = header.strip_prefix(settings.signature_prefix.as_str()).ok_or(VerifyError::MalformedSignature)?;
    let received = match settings.signature_encoding {
        SignatureEncoding::Hex => hex::decode(encoded),
        SignatureEncoding::Base64 => B64.decode(encoded).map_err(|_| hex::FromHexError::InvalidStringLength),
    }
    .map_err(|_| VerifyError::MalformedSignature)?;

    let timestamp = (request.header)(&settings.timestamp_header);
    // The directory holds only accounts whose settings parse, and parsing refuses a zero
    // window: with a timestamp there is always one.
    if settings.include_timestamp {
        let ts = timestamp.ok_or(VerifyError::MalformedSignature)?;
        let ts_ms = parse_timestamp_ms(ts).ok_or(VerifyError::MalformedSignature)?;
        if request.now_ms.abs_diff(ts_ms) > settings.tolerance_secs.saturating_mul(1000) {
            return Err(VerifyError::StaleTimestamp);
        }
    }
    let message = render(settings, request, timestamp)?;
    let mut keys = Vec::with_capacity(secrets.len());
    for secret in secrets {
        keys.push(if settings.secret_is_base64 {
            B64.decode(secret.as_ref())
                .map_err(|_| VerifyError::NotConfigured("secret_is_base64 but the secret is not base64"))?
        } else {
            secret.as_ref().to_vec()
        });
    }
    any_secret(&keys, |key| ct_eq(&settings.algorithm.mac(key, &[&message]), &received))
}

/// Expands the payload template. Unknown `{…}` text is kept literally.
fn render<'a, H: Fn(&str) -> Option<&'a str>>(
    settings: &HmacSettings,
    request: &Request<'a, H>,
    timestamp: Option<&str>,
) -> Result<Vec<u8>, VerifyError> {
    let mut out = Vec::with_capacity(request.body.len() + 64);
    let mut rest = settings.template();
    while let Some(open) = rest.find('{') {
        out.extend_from_slice(&rest.as_bytes()[..open]);
        rest = &rest[open..];
        let Some(close) = rest.find('}') else { break };
        match &rest[1..close] {
            "body" => out.extend_from_slice(request.body),
            "timestamp" => out.extend_from_slice(timestamp.ok_or(VerifyError::MalformedSignature)?.as_bytes()),
            "method" => out.extend_from_slice(b"POST"),
            "url" => {
                let url = settings
                    .url
                    .as_deref()
                    .or(request.url)
                    .ok_or(VerifyError::NotConfigured("{url} used but no public URL is configured"))?;
                out.extend_from_slice(url.as_bytes());
            }
            "svix-id" => {
                let name = settings
                    .message_id_header
                    .as_deref()
                    .ok_or(VerifyError::NotConfigured("{svix-id} used without message_id_header"))?;
                let id = (request.header)(name).ok_or(VerifyError::MalformedSignature)?;
                out.extend_from_slice(id.as_bytes());
            }
            _ => {
                out.extend_from_slice(&rest.as_bytes()[..=close]);
            }
        }
        rest = &rest[close + 1..];
    }
    out.extend_from_slice(rest.as_bytes());
    Ok(out)
}

fn parse_timestamp_ms(value: &str) -> Option<u64> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = value.parse().ok()?;
        return Some(if n >= 100_000_000_000 { n } else { n.checked_mul(1000)? });
    }
    let parsed = chrono::DateTime::parse_from_rfc3339(value).ok()?;
    u64::try_from(parsed.timestamp_millis()).ok()
}

/// Signs like a Vapi HMAC credential with these settings (for tests and the load generator).
pub fn sign_hmac(
    settings: &HmacSettings,
    secret: &[u8],
    body: &[u8],
    url: &str,
    timestamp: &str,
    message_id: Option<&str>,
) -> String {
    let header = |name: &str| -> Option<&str> {
        if name.eq_ignore_ascii_case(&settings.timestamp_header) {
            Some(timestamp)
        } else if settings.message_id_header.as_deref().is_some_and(|h| h.eq_ignore_ascii_case(name)) {
            message_id
        } else {
            None
        }
    };
    let request = Request { header, body, url: Some(url), now_ms: 0 };
    let message = render(settings, &request, Some(timestamp)).unwrap_or_default();
    let key = if settings.secret_is_base64 { B64.decode(secret).unwrap_or_default() } else { secret.to_vec() };
    let mac = settings.algorithm.mac(&key, &[&message]);
    let encoded = match settings.signature_encoding {
        SignatureEncoding::Hex => hex::encode(mac),
        SignatureEncoding::Base64 => B64.encode(mac),
    };
    format!("{}{encoded}", settings.signature_prefix)
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    message: Option<Message<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Message<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    call: Option<Call<'a>>,
    #[serde(borrow)]
    phone_number: Option<PhoneNumber<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Call<'a> {
    #[serde(borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    phone_number_id: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct PhoneNumber<'a> {
    #[serde(borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    number: Option<std::borrow::Cow<'a, str>>,
}

/// The message type whose answer Vapi waits for to pick the assistant (7.5 s end to end).
pub const ASSISTANT_REQUEST: &str = "assistant-request";

/// Reads `message.type`, `message.call.id` and the number: `message.phoneNumber.number`,
/// with the phone number id (`phoneNumber.id`, else `call.phoneNumberId`) as fallback key.
pub fn routing(body: &[u8]) -> Result<Routing, MalformedPayload> {
    let envelope: Envelope<'_> =
        serde_json::from_slice(body).map_err(|_| MalformedPayload("body is not a Vapi server message"))?;
    let message = envelope.message.ok_or(MalformedPayload("message missing"))?;
    let event_type = message.kind.ok_or(MalformedPayload("message.type missing"))?;
    let call = message.call.ok_or(MalformedPayload("message.call missing"))?;
    let call_id = call.id.filter(|id| !id.is_empty()).ok_or(MalformedPayload("message.call.id missing"))?;
    let (number, number_id) = match message.phone_number {
        Some(p) => (p.number, p.id),
        None => (None, None),
    };
    Ok(Routing {
        event_type: event_type.into_owned(),
        call_id: call_id.into_owned(),
        number: number.map(|n| n.into_owned()),
        provider_number_id: number_id.or(call.phone_number_id).map(|n| n.into_owned()),
        parent_call_id: None,
    })
}

/// Parts of a key name (compared in lower case, `_` and `-` removed) that mark a credential.
/// Vapi echoes whole objects back: phone numbers with their carrier credentials
/// (`twilioAuthToken`, `vonageApiSecret`), assistants with `credentials[].apiKey`, HMAC
/// credentials with `secretKey`, servers with `secret` and `headers`.
const SENSITIVE_KEY_PARTS: [&str; 9] =
    ["secret", "token", "apikey", "password", "credential", "authorization", "privatekey", "accesskey", "bearer"];

/// Keys whose whole value (an object of HTTP headers) is sent to someone as authentication.
const HEADER_KEYS: [&str; 1] = ["headers"];

const REDACTED: &str = "[redacted]";

/// The body could not be read as JSON, so it could not be checked for credentials: it must not
/// be published as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the body may carry credentials and cannot be read as JSON to redact them")]
pub struct Unredactable;

fn normalised(key: &str) -> String {
    key.chars().filter(|c| *c != '_' && *c != '-').map(|c| c.to_ascii_lowercase()).collect()
}

fn is_sensitive(key: &str) -> bool {
    let key = normalised(key);
    SENSITIVE_KEY_PARTS.iter().any(|part| key.contains(part))
}

/// Could the body name a credential? A cheap look at the raw text before any parsing: any of
/// the key parts in any case, or a `\u` escape, which could spell one.
fn may_carry_credentials(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("\\u")
        || lower.contains("headers")
        || SENSITIVE_KEY_PARTS.iter().any(|part| lower.contains(part))
        || lower.contains("api_key")
        || lower.contains("api-key")
}

/// Replaces every string (and every string inside an object or array) under a credential-like
/// key with `"[redacted]"`, and every value of a `headers` object. Numbers and booleans stay:
/// `promptTokens: 1200` is a count, not a secret.
fn scrub(value: &mut serde_json::Value, inside_secret: bool) -> bool {
    match value {
        serde_json::Value::String(text) if inside_secret => {
            let changed = text != REDACTED;
            *text = REDACTED.to_owned();
            changed
        }
        serde_json::Value::Object(map) => {
            let mut changed = false;
            for (key, child) in map.iter_mut() {
                let secret = inside_secret || is_sensitive(key) || HEADER_KEYS.contains(&normalised(key).as_str());
                changed |= scrub(child, secret);
            }
            changed
        }
        serde_json::Value::Array(items) => {
            items.iter_mut().fold(false, |changed, item| scrub(item, inside_secret) | changed)
        }
        _ => false,
    }
}

/// Returns the body with the credentials Vapi echoes replaced by `"[redacted]"`; `Ok(None)`
/// when it carries none (the common case: then the raw bytes are kept untouched). A body that
/// may carry one but does not parse (a number beyond f64, nesting past the parser's limit) is
/// an error: it is never published unredacted.
pub fn redact(body: &[u8]) -> Result<Option<String>, Unredactable> {
    let text = std::str::from_utf8(body).map_err(|_| Unredactable)?;
    if !may_carry_credentials(text) {
        return Ok(None);
    }
    let mut value: serde_json::Value = serde_json::from_str(text).map_err(|_| Unredactable)?;
    if !scrub(&mut value, false) {
        return Ok(None);
    }
    serde_json::to_string(&value).map(Some).map_err(|_| Unredactable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::HmacAlgorithm;

    const BODY: &[u8] = br#"{"message":{"type":"status-update","status":"ended","call":{"id":"call-1"}}}"#;
    const URL: &str = "https://hooks.example.com/v1/webhooks/vapi";
    const NOW_MS: u64 = 1_784_000_000_000;

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }

    fn check(auth: &VapiAuth, secrets: &[&str], pairs: &[(&str, &str)], body: &[u8]) -> Result<(), VerifyError> {
        verify(auth, secrets, &Request { header: headers(pairs), body, url: Some(URL), now_ms: NOW_MS })
    }

    #[test]
    fn secret_mode() {
        let auth = VapiAuth::default();
        assert_eq!(check(&auth, &["s3"], &[("X-Vapi-Secret", "s3")], BODY), Ok(()));
        assert_eq!(check(&auth, &["s3"], &[("x-vapi-secret", "s4")], BODY), Err(VerifyError::Mismatch));
        assert_eq!(check(&auth, &["s3"], &[("x-vapi-secret", "s")], BODY), Err(VerifyError::Mismatch));
        assert_eq!(check(&auth, &["s3"], &[], BODY), Err(VerifyError::MissingSignature));
        assert_eq!(check(&auth, &["new", "s3"], &[("x-vapi-secret", "s3")], BODY), Ok(()));
        let custom = VapiAuth::Secret { header: "x-vapi-signature".into() };
        assert_eq!(check(&custom, &["s3"], &[("X-Vapi-Signature", "s3")], BODY), Ok(()));
    }

    #[test]
    fn bearer_mode_with_default_and_custom_prefix() {
        let auth: VapiAuth = serde_json::from_str(r#"{"mode":"bearer"}"#).unwrap();
        assert_eq!(check(&auth, &["tok"], &[("Authorization", "Bearer tok")], BODY), Ok(()));
        assert_eq!(check(&auth, &["tok"], &[("Authorization", "bearer tok")], BODY), Ok(()));
        assert_eq!(check(&auth, &["tok"], &[("Authorization", "tok")], BODY), Err(VerifyError::MalformedSignature));
        assert_eq!(check(&auth, &["tok"], &[("Authorization", "Bearer nope")], BODY), Err(VerifyError::Mismatch));
        let custom: VapiAuth = serde_json::from_str(r#"{"mode":"bearer","header":"x-api-key","prefix":""}"#).unwrap();
        assert_eq!(check(&custom, &["tok"], &[("x-api-key", "tok")], BODY), Ok(()));
    }

    #[test]
    fn hmac_default_credential_signs_timestamp_dot_body() {
        let settings = HmacSettings::default();
        let ts = (NOW_MS / 1000).to_string();
        // Independent computation of the default format: hex(HMAC-SHA256(secret, "{ts}.{body}")).
        let mut msg = ts.clone().into_bytes();
        msg.push(b'.');
        msg.extend_from_slice(BODY);
        let expected = hex::encode(HmacAlgorithm::Sha256.mac(b"k", &[&msg]));
        assert_eq!(sign_hmac(&settings, b"k", BODY, URL, &ts, None), expected);

        let auth = VapiAuth::Hmac(settings);
        let ok = [("x-signature", expected.as_str()), ("x-timestamp", ts.as_str())];
        assert_eq!(check(&auth, &["k"], &ok, BODY), Ok(()));
        assert_eq!(check(&auth, &["k"], &ok, b"{}"), Err(VerifyError::Mismatch));
        assert_eq!(check(&auth, &["other"], &ok, BODY), Err(VerifyError::Mismatch));
        assert_eq!(
            check(&auth, &["k"], &[("x-signature", expected.as_str())], BODY),
            Err(VerifyError::MalformedSignature)
        );
        let stale = (NOW_MS / 1000 - 301).to_string();
        let sig = sign_hmac(&HmacSettings::default(), b"k", BODY, URL, &stale, None);
        assert_eq!(
            check(&auth, &["k"], &[("x-signature", sig.as_str()), ("x-timestamp", stale.as_str())], BODY),
            Err(VerifyError::StaleTimestamp)
        );
    }

    #[test]
    fn hmac_every_knob() {
        let settings: HmacSettings = serde_json::from_str(
            r#"{"algorithm":"sha512","signature_header":"x-vapi-signature","timestamp_header":"x-ts",
                "signature_prefix":"sha512=","payload_format":"{method} {url}|{svix-id}|{timestamp}|{body}",
                "message_id_header":"svix-id","signature_encoding":"base64","secret_is_base64":true}"#,
        )
        .unwrap();
        let secret = B64.encode(b"raw secret bytes");
        let ts_ms = NOW_MS.to_string();
        let sig = sign_hmac(&settings, secret.as_bytes(), BODY, URL, &ts_ms, Some("msg_1"));
        assert!(sig.starts_with("sha512="));
        let mut msg = format!("POST {URL}|msg_1|{ts_ms}|").into_bytes();
        msg.extend_from_slice(BODY);
        assert_eq!(sig, format!("sha512={}", B64.encode(HmacAlgorithm::Sha512.mac(b"raw secret bytes", &[&msg]))));
        let auth = VapiAuth::Hmac(settings);
        let pairs = [("x-vapi-signature", sig.as_str()), ("x-ts", ts_ms.as_str()), ("svix-id", "msg_1")];
        assert_eq!(check(&auth, &[secret.as_str()], &pairs, BODY), Ok(()));
        let other_id = [("x-vapi-signature", sig.as_str()), ("x-ts", ts_ms.as_str()), ("svix-id", "msg_2")];
        assert_eq!(check(&auth, &[secret.as_str()], &other_id, BODY), Err(VerifyError::Mismatch));
        let no_prefix = sig.trim_start_matches("sha512=");
        let pairs = [("x-vapi-signature", no_prefix), ("x-ts", ts_ms.as_str()), ("svix-id", "msg_1")];
        assert_eq!(check(&auth, &[secret.as_str()], &pairs, BODY), Err(VerifyError::MalformedSignature));
    }

    #[test]
    fn hmac_without_timestamp_signs_body_only() {
        let settings = HmacSettings { include_timestamp: false, ..HmacSettings::default() };
        let sig = hex::encode(HmacAlgorithm::Sha256.mac(b"k", &[BODY]));
        let auth = VapiAuth::Hmac(settings);
        assert_eq!(check(&auth, &["k"], &[("x-signature", sig.as_str())], BODY), Ok(()));
    }

    #[test]
    fn timestamps_in_seconds_millis_and_rfc3339() {
        assert_eq!(parse_timestamp_ms("1784000000"), Some(1_784_000_000_000));
        assert_eq!(parse_timestamp_ms("1784000000123"), Some(1_784_000_000_123));
        assert_eq!(parse_timestamp_ms("2026-07-16T18:00:00.000Z"), Some(1_784_224_800_000));
        assert_eq!(parse_timestamp_ms("yesterday"), None);
    }

    #[test]
    fn settings_reject_unknown_fields() {
        assert!(serde_json::from_str::<VapiAuth>(r#"{"mode":"hmac","algo":"sha256"}"#).is_err());
        assert!(serde_json::from_str::<VapiAuth>(r#"{"mode":"none"}"#).is_err());
    }

    #[test]
    fn routing_with_number_and_id_fallback() {
        let body = br#"{"message":{"type":"assistant-request","call":{"id":"c1","phoneNumberId":"pn-call"},"phoneNumber":{"id":"pn-1","number":"+14155550100"}}}"#;
        let r = routing(body).unwrap();
        assert_eq!((r.event_type.as_str(), r.call_id.as_str()), ("assistant-request", "c1"));
        assert_eq!(r.number.as_deref(), Some("+14155550100"));
        assert_eq!(r.provider_number_id.as_deref(), Some("pn-1"));
        let only_id = br#"{"message":{"type":"status-update","call":{"id":"c1","phoneNumberId":"pn-call"}}}"#;
        let r = routing(only_id).unwrap();
        assert_eq!((r.number, r.provider_number_id.as_deref()), (None, Some("pn-call")));
        for bad in [&b"[]"[..], br#"{"message":{"call":{"id":"c"}}}"#, br#"{"message":{"type":"x"}}"#] {
            assert!(routing(bad).is_err());
        }
    }

    #[test]
    fn credentials_echoed_by_vapi_are_redacted() {
        assert_eq!(redact(BODY), Ok(None));
        let body = br#"{"message":{"type":"status-update","phoneNumber":{"number":"+1","twilioAuthToken":"tok","twilioAccountSid":"AC1"}}}"#;
        let clean = redact(body).unwrap().unwrap();
        assert!(!clean.contains("tok\""), "{clean}");
        assert!(clean.contains(r#""twilioAuthToken":"[redacted]""#));
        assert!(clean.contains("AC1"));
    }

    #[test]
    fn credentials_are_found_by_the_shape_of_their_key_wherever_they_are() {
        let body = serde_json::json!({"message": {
            "type": "assistant-request",
            "call": {"id": "c"},
            "assistant": {
                "credentials": [{"provider": "11labs", "apiKey": "sk-eleven"}, {"provider": "openai", "api_key": "sk-oai"}],
                "server": {"url": "https://x", "secret": "srv-secret", "headers": {"Authorization": "Bearer tkn", "X-Tenant": "t1"}},
                "credentialIds": ["cred-1"],
            },
            "hmac": {"secretKey": "hmac-key", "algorithm": "sha256"},
            "phoneNumber": {"twilioApiSecret": "tw-secret", "vonage_api_secret": "vo-secret", "number": "+14155550100"},
            "costBreakdown": {"llmPromptTokens": 1200, "totalTokens": 1500},
            "artifact": {"transcript": "User: I forgot my password and my token."},
        }})
        .to_string();
        let clean = redact(body.as_bytes()).unwrap().unwrap();
        for secret in
            ["sk-eleven", "sk-oai", "srv-secret", "Bearer tkn", "t1", "cred-1", "hmac-key", "tw-secret", "vo-secret"]
        {
            assert!(!clean.contains(secret), "{secret} in {clean}");
        }
        // Counts, the number, the transcript and the algorithm stay.
        for kept in ["1200", "1500", "+14155550100", "I forgot my password and my token.", "sha256", "https://x"] {
            assert!(clean.contains(kept), "{kept} missing from {clean}");
        }
    }

    #[test]
    fn a_body_that_may_carry_credentials_and_does_not_parse_is_never_passed_on() {
        let huge_number =
            br#"{"message":{"type":"status-update","call":{"id":"c"},"x":1e400,"server":{"secret":"s"}}}"#;
        assert_eq!(redact(huge_number), Err(Unredactable));
        let deep = format!(r#"{{"message":{{"secret":"s","x":{}1{}}}}}"#, "[".repeat(200), "]".repeat(200));
        assert_eq!(redact(deep.as_bytes()), Err(Unredactable));
        // An escaped key name is still found.
        let escaped = br#"{"message":{"type":"status-update","call":{"id":"c"},"api\u004bey":"sk-hidden"}}"#;
        assert!(!redact(escaped).unwrap().unwrap().contains("sk-hidden"));
    }
}
