//! Twilio: `X-Twilio-Signature = base64(HMAC-SHA1(auth token, url ‖ Σ sorted(name ‖ value)))`.
//!
//! docs/providers.md §3. The URL is the one Twilio requested, query included. Form
//! parameters are appended sorted by name (then by value, duplicates dropped), decoded. Requests
//! with a JSON body carry `bodySHA256=<hex sha256(body)>` in the URL instead: the signature then
//! covers the URL alone and the body must match that hash. The SDKs disagree on ports, so each
//! accepts several spellings of the URL; so do we: as given, without its explicit port, with the
//! scheme's default port added, and each of those with `'` and `%27` swapped in the query (what
//! the node SDK's WHATWG and legacy-querystring serialisations produce).

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use callgate_contract::call::TWILIO_DIAL_LEG;

use super::{HmacAlgorithm, MalformedPayload, Routing, VerifyError, ct_eq};

pub const SIGNATURE_HEADER: &str = "x-twilio-signature";
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";
const BODY_HASH_PARAM: &str = "bodySHA256";

/// What the signature covers besides the URL.
#[derive(Debug, PartialEq, Eq)]
enum Signed {
    /// Sorted `name‖value` of the form body (possibly empty).
    Params(String),
    /// Only the URL; the body must hash to this hex string.
    BodyHash(String),
}

fn is_form(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        let mime = ct.split(';').next().unwrap_or("").trim();
        mime.eq_ignore_ascii_case("application/x-www-form-urlencoded")
    })
}

fn query(url: &str) -> Option<&str> {
    let without_fragment = url.split('#').next().unwrap_or(url);
    without_fragment.split_once('?').map(|(_, q)| q)
}

/// The first value of the query parameter `wanted`, decoded.
fn query_param(query: &str, wanted: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find(|(name, _)| name == wanted).map(|(_, value)| value.into_owned())
}

fn body_hash_param(url: &str) -> Option<String> {
    query_param(query(url)?, BODY_HASH_PARAM)
}

/// More form parameters than any Twilio callback carries (a status callback has a few dozen;
/// add-ons and custom parameters add some more). A body with more is refused before any
/// verification work: unauthenticated, it must not make the gateway sort and hash a million
/// parameters.
pub const MAX_FORM_PARAMS: usize = 1_000;

/// Every form parameter, each name once with its distinct values, all sorted by code point.
/// Every received parameter counts: Twilio adds parameters over time, never a fixed list.
fn sorted_params(body: &[u8]) -> String {
    let mut params: Vec<(Cow<'_, str>, Cow<'_, str>)> = form_urlencoded::parse(body).collect();
    params.sort_unstable();
    params.dedup();
    let mut out = String::with_capacity(body.len());
    for (name, value) in &params {
        out.push_str(name);
        out.push_str(value);
    }
    out
}

fn signed_part(url: &str, content_type: Option<&str>, body: &[u8]) -> Result<Signed, VerifyError> {
    if let Some(hash) = body_hash_param(url) {
        return Ok(Signed::BodyHash(hash));
    }
    if body.is_empty() {
        return Ok(Signed::Params(String::new()));
    }
    if is_form(content_type) {
        return Ok(Signed::Params(sorted_params(body)));
    }
    Err(VerifyError::UnsignedBody)
}

/// Byte offsets of the host-and-port part of `url` (after any `user:pass@`).
fn host_port_span(url: &str) -> Option<(usize, usize)> {
    let authority_start = url.find("://")? + 3;
    let authority_len = url[authority_start..].find(['/', '?', '#']).unwrap_or(url.len() - authority_start);
    let authority = &url[authority_start..authority_start + authority_len];
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    Some((authority_start + host_start, authority_start + authority_len))
}

/// The explicit port's `:` offset within `host_port`, if any (IPv6 brackets respected).
fn port_colon(host_port: &str) -> Option<usize> {
    let colon = host_port.rfind(':')?;
    let port = &host_port[colon + 1..];
    let host = &host_port[..colon];
    let is_port = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    let bracket_ok = !host.starts_with('[') || host.ends_with(']');
    (is_port && bracket_ok).then_some(colon)
}

/// The spellings of `url` the official SDKs would accept, the given one first: as given and
/// as node's WHATWG `URL` serialises it; each with its port as given, removed, or the scheme's
/// default added; each of those with `'` and `%27` swapped in the query.
pub fn url_variants(url: &str) -> Vec<String> {
    let mut variants: Vec<String> = Vec::with_capacity(6);
    for spelling in std::iter::once(url.to_owned()).chain(whatwg(url)) {
        for base in port_spellings(&spelling) {
            for variant in quote_spellings(&base) {
                if !variants.contains(&variant) {
                    variants.push(variant);
                }
            }
        }
    }
    variants
}

/// As given, then without its explicit port, or with the scheme's default port added.
fn port_spellings(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    if let Some((start, end)) = host_port_span(url) {
        match port_colon(&url[start..end]) {
            Some(colon) => out.push(format!("{}{}", &url[..start + colon], &url[end..])),
            None => {
                let default = if url[..start].starts_with("https:") { ":443" } else { ":80" };
                out.push(format!("{}{default}{}", &url[..end], &url[end..]));
            }
        }
    }
    out
}

/// As given, then with `'` percent-encoded in the query (WHATWG), or decoded (node's legacy
/// querystring).
fn quote_spellings(url: &str) -> Vec<String> {
    let (head, query) = url.find('?').map_or((url, ""), |i| url.split_at(i));
    let mut out = vec![url.to_owned()];
    if query.contains('\'') {
        out.push(format!("{head}{}", query.replace('\'', "%27")));
    }
    if query.contains("%27") {
        out.push(format!("{head}{}", query.replace("%27", "'")));
    }
    out
}

/// What node's `new URL(url).toString()` changes that matters here: a lowercase scheme and
/// host, and `/` for an empty path. None when that is the URL as given.
fn whatwg(url: &str) -> Option<String> {
    let (host_start, end) = host_port_span(url)?;
    let scheme_end = url.find("://")?;
    let mut out = url[..scheme_end].to_ascii_lowercase();
    out.push_str(&url[scheme_end..host_start]);
    out.push_str(&url[host_start..end].to_ascii_lowercase());
    if !url[end..].starts_with('/') {
        out.push('/');
    }
    out.push_str(&url[end..]);
    (out != url).then_some(out)
}

fn signature_of(secret: &[u8], url: &str, params: &str) -> String {
    B64.encode(HmacAlgorithm::Sha1.mac(secret, &[url.as_bytes(), params.as_bytes()]))
}

/// Verifies a Twilio request. `url` is the full public URL Twilio requested.
pub fn verify<S: AsRef<[u8]>>(
    secrets: &[S],
    url: &str,
    content_type: Option<&str>,
    body: &[u8],
    signature: Option<&str>,
) -> Result<(), VerifyError> {
    let signature = signature.filter(|s| !s.is_empty()).ok_or(VerifyError::MissingSignature)?;
    let signed = signed_part(url, content_type, body)?;
    let params = match &signed {
        Signed::Params(p) => p.as_str(),
        Signed::BodyHash(_) => "",
    };
    let variants = url_variants(url);
    let matched = secrets.iter().any(|secret| {
        variants
            .iter()
            .any(|variant| ct_eq(signature_of(secret.as_ref(), variant, params).as_bytes(), signature.as_bytes()))
    });
    if !matched {
        return Err(VerifyError::Mismatch);
    }
    if let Signed::BodyHash(expected) = signed {
        let actual = hex::encode(Sha256::digest(body));
        if !ct_eq(actual.as_bytes(), expected.as_bytes()) {
            return Err(VerifyError::BodyHashMismatch);
        }
    }
    Ok(())
}

/// Signs like Twilio does, over exactly `url` (for tests, the load generator and replays).
pub fn sign(secret: &[u8], url: &str, content_type: Option<&str>, body: &[u8]) -> String {
    let params = match signed_part(url, content_type, body) {
        Ok(Signed::Params(p)) => p,
        Ok(Signed::BodyHash(_)) | Err(_) => String::new(),
    };
    signature_of(secret, url, &params)
}

/// The `bodySHA256` query value for a JSON body.
pub fn body_sha256(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

#[derive(Default)]
struct CallFields {
    call_sid: Option<String>,
    call_status: Option<String>,
    direction: Option<String>,
    to: Option<String>,
    from: Option<String>,
    parent_call_sid: Option<String>,
    recording_status: Option<String>,
}

impl CallFields {
    fn set(&mut self, name: &str, value: String) {
        match name {
            "CallSid" => self.call_sid = Some(value),
            "CallStatus" => self.call_status = Some(value),
            "Direction" => self.direction = Some(value),
            "To" => self.to = Some(value),
            "From" => self.from = Some(value),
            "ParentCallSid" => self.parent_call_sid = Some(value),
            "RecordingStatus" => self.recording_status = Some(value),
            _ => {}
        }
    }
}

/// The query parameter a `<Dial>` leg's callback URL names its business number with
/// (`…/v1/webhooks/twilio?business_number=%2B14155550100`). Twilio signs the URL, so the name
/// is as authentic as the body.
pub const BUSINESS_NUMBER_PARAM: &str = "business_number";

/// The event type of a recording status callback (`recordingStatusCallback`), which carries
/// `RecordingStatus` instead of `CallStatus`: `recording-completed`, …
pub const RECORDING_EVENT_PREFIX: &str = "recording-";

/// Reads `CallSid`, `CallStatus` and the business number from a callback (form or JSON body)
/// and the query of the URL it was sent to:
/// - inbound calls: `To`;
/// - calls the business started (`outbound-api`): `From`;
/// - `<Dial>` legs (`outbound-dial`): their `From` is the caller id they show, which Twilio
///   takes from the parent call's caller unless the TwiML sets the business number, so it
///   names the business only sometimes. The URL's `business_number` comes first; `From` is the
///   fallback, and the worker refuses a leg whose parent call belongs to another company. The
///   record is keyed by `ParentCallSid`, so the leg follows its parent's events.
pub fn routing(content_type: Option<&str>, body: &[u8], url_query: Option<&str>) -> Result<Routing, MalformedPayload> {
    let mut fields = CallFields::default();
    if is_form(content_type) || body.is_empty() {
        for (count, (name, value)) in form_urlencoded::parse(body).enumerate() {
            if count == MAX_FORM_PARAMS {
                return Err(MalformedPayload("more form parameters than a Twilio callback carries"));
            }
            fields.set(&name, value.into_owned());
        }
    } else {
        // Only the fields routing needs are kept; the rest is skipped without being stored, so
        // an unauthenticated object of a million keys costs a parse, not a million allocations.
        #[derive(serde::Deserialize)]
        #[allow(non_snake_case)]
        struct Wire {
            CallSid: Option<serde_json::Value>,
            CallStatus: Option<serde_json::Value>,
            Direction: Option<serde_json::Value>,
            To: Option<serde_json::Value>,
            From: Option<serde_json::Value>,
            ParentCallSid: Option<serde_json::Value>,
        }
        let wire: Wire =
            serde_json::from_slice(body).map_err(|_| MalformedPayload("body is neither a form nor a JSON object"))?;
        let text = |value: Option<serde_json::Value>| match value {
            Some(serde_json::Value::String(s)) => Some(s),
            _ => None,
        };
        fields.call_sid = text(wire.CallSid);
        fields.call_status = text(wire.CallStatus);
        fields.direction = text(wire.Direction);
        fields.to = text(wire.To);
        fields.from = text(wire.From);
        fields.parent_call_sid = text(wire.ParentCallSid);
    }
    let call_id = fields.call_sid.filter(|s| !s.is_empty()).ok_or(MalformedPayload("CallSid missing"))?;
    let direction = fields.direction.as_deref();
    let dial_leg = direction == Some(TWILIO_DIAL_LEG);
    let outbound = direction.is_some_and(|d| d.starts_with("outbound"));
    let recording = fields.call_status.is_none() && fields.recording_status.is_some();
    let number = match () {
        () if dial_leg || recording => url_business_number(url_query).or(fields.from),
        () if outbound => fields.from,
        () => fields.to,
    };
    let parent_call_id = fields.parent_call_sid.filter(|sid| dial_leg && !sid.is_empty());
    let event_type = match (fields.call_status, fields.recording_status) {
        (Some(status), _) => status,
        (None, Some(recording)) => format!("{RECORDING_EVENT_PREFIX}{recording}"),
        (None, None) => "request".to_owned(),
    };
    Ok(Routing { event_type, call_id, number, provider_number_id: None, parent_call_id })
}

fn url_business_number(url_query: Option<&str>) -> Option<String> {
    query_param(url_query?, BUSINESS_NUMBER_PARAM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_callback_is_routed_by_the_number_its_url_names() {
        let form = b"AccountSid=AC1&CallSid=CA9&RecordingSid=RE1&RecordingUrl=https%3A%2F%2Fapi.twilio.com%2FRE1\
&RecordingStatus=completed&RecordingDuration=42";
        let routed = routing(Some(FORM), form, Some("business_number=%2B14155550100")).unwrap();
        assert_eq!(routed.event_type, "recording-completed");
        assert_eq!(routed.call_id, "CA9");
        assert_eq!(routed.number.as_deref(), Some("+14155550100"));
        // Without the URL's number there is nothing to route it by.
        assert_eq!(routing(Some(FORM), form, None).unwrap().number, None);
    }

    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const FORM: &str = "application/x-www-form-urlencoded";
    const PARAMS: &str =
        "CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212";

    #[test]
    fn official_vectors() {
        for vectors in super::super::vectors::load("twilio.json") {
            let token = vectors["auth_token"].as_str().unwrap();
            let cases = vectors["cases"].as_array().expect("cases");
            assert!(cases.len() >= 9, "expected the full official set");
            for case in cases {
                let name = case["name"].as_str().unwrap();
                let got = verify(
                    &[token],
                    case["url"].as_str().unwrap(),
                    case["content_type"].as_str(),
                    case["body"].as_str().unwrap().as_bytes(),
                    case["signature"].as_str(),
                );
                assert_eq!(got.is_ok(), case["valid"].as_bool().unwrap(), "case {name:?}: {got:?}");
            }
        }
    }

    #[test]
    fn json_tampering_is_a_body_hash_mismatch_and_missing_hash_is_unsigned() {
        let url = format!("{URL}&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620");
        let got = verify(
            &[TOKEN],
            &url,
            Some("application/json"),
            br#"{"property": "value", "boolean": false}"#,
            Some("a9nBmqA0ju/hNViExpshrM61xv4="),
        );
        assert_eq!(got, Err(VerifyError::BodyHashMismatch));
        // A JSON body without bodySHA256 is not covered by any signature.
        let sig = sign(TOKEN.as_bytes(), URL, None, b"");
        assert_eq!(verify(&[TOKEN], URL, Some("application/json"), b"{}", Some(&sig)), Err(VerifyError::UnsignedBody));
    }

    #[test]
    fn historical_docs_vectors() {
        for (number, sig) in
            [("%2B12349013030", "0/KCTR6DLpKmkAf8muzZqo1nDgQ="), ("%2B14158675310", "GvWf1cFY/Q7PnoempGyD5oXAezc=")]
        {
            let body = format!("CallSid=CA1234567890ABCDE&Caller={number}&Digits=1234&From={number}&To=%2B18005551212");
            assert_eq!(verify(&[TOKEN], URL, Some(FORM), body.as_bytes(), Some(sig)), Ok(()), "{number}");
        }
    }

    #[test]
    fn repeated_values_are_deduplicated_and_sorted() {
        // Python: for value in sorted(set(values)); Node: Array.from(new Set(v)).sort().
        assert_eq!(sorted_params(b"b=2&a=y&a=x&a=y"), "axayb2");
        assert_eq!(sorted_params(b"CallbackSource=c&CallStatus=s&CallSid=i"), "CallSidiCallStatussCallbackSourcec");
        assert_eq!(sorted_params(b"To=%2B1+2"), "To+1 2");
        let body = b"Digits=1&Digits=2&Digits=1&To=%2B18005551212";
        let sig = sign(TOKEN.as_bytes(), URL, Some(FORM), body);
        let reordered = b"Digits=2&To=%2B18005551212&Digits=1";
        assert_eq!(verify(&[TOKEN], URL, Some(FORM), reordered, Some(&sig)), Ok(()));
    }

    #[test]
    fn port_variants_respect_credentials_and_ipv6() {
        assert_eq!(
            url_variants("https://user:pass@mycompany.com/x?a=1"),
            ["https://user:pass@mycompany.com/x?a=1", "https://user:pass@mycompany.com:443/x?a=1"]
        );
        assert_eq!(
            url_variants("https://user:pass@mycompany.com:8443/x"),
            ["https://user:pass@mycompany.com:8443/x", "https://user:pass@mycompany.com/x"]
        );
        assert_eq!(url_variants("http://[::1]/x"), ["http://[::1]/x", "http://[::1]:80/x"]);
        assert_eq!(url_variants("http://[::1]:9/x"), ["http://[::1]:9/x", "http://[::1]/x"]);
        assert_eq!(url_variants("https://h.com/"), ["https://h.com/", "https://h.com:443/"]);
    }

    #[test]
    fn node_normalised_spellings_verify() {
        // node signs over new URL(url).toString(): lowercase host, "/" for an empty path.
        let sig = sign(TOKEN.as_bytes(), "https://mycompany.com/?foo=1", Some(FORM), PARAMS.as_bytes());
        for given in ["https://MyCompany.com?foo=1", "HTTPS://mycompany.com?foo=1", "https://mycompany.com:443?foo=1"] {
            assert_eq!(verify(&[TOKEN], given, Some(FORM), PARAMS.as_bytes(), Some(&sig)), Ok(()), "{given}");
        }
        // python signs the string as given: the no-slash spelling still verifies as itself.
        let sig = sign(TOKEN.as_bytes(), "https://mycompany.com?foo=1", Some(FORM), PARAMS.as_bytes());
        assert_eq!(verify(&[TOKEN], "https://mycompany.com?foo=1", Some(FORM), PARAMS.as_bytes(), Some(&sig)), Ok(()));
        // Credentials keep their case; only the host is lowercased.
        assert_eq!(whatwg("https://User:Pw@Host.COM/x").as_deref(), Some("https://User:Pw@host.com/x"));
        assert_eq!(whatwg("https://host.com/x"), None);
    }

    #[test]
    fn quote_variants_cover_the_node_serialisations() {
        let url = "https://mycompany.com/myapp.php?name=O'Brien";
        let node_signed = "https://mycompany.com/myapp.php?name=O%27Brien";
        let sig = sign(TOKEN.as_bytes(), node_signed, Some(FORM), PARAMS.as_bytes());
        assert_eq!(verify(&[TOKEN], url, Some(FORM), PARAMS.as_bytes(), Some(&sig)), Ok(()));
        let sig = sign(TOKEN.as_bytes(), url, Some(FORM), PARAMS.as_bytes());
        assert_eq!(verify(&[TOKEN], node_signed, Some(FORM), PARAMS.as_bytes(), Some(&sig)), Ok(()));
    }

    #[test]
    fn missing_and_wrong_signatures_and_rotation() {
        let body = PARAMS.as_bytes();
        assert_eq!(verify(&[TOKEN], URL, Some(FORM), body, None), Err(VerifyError::MissingSignature));
        assert_eq!(verify(&[TOKEN], URL, Some(FORM), body, Some("")), Err(VerifyError::MissingSignature));
        assert_eq!(verify(&[TOKEN], URL, Some(FORM), body, Some("WRONG SIGNATURE")), Err(VerifyError::Mismatch));
        let sig = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        assert_eq!(verify(&["67890", TOKEN], URL, Some(FORM), body, Some(sig)), Ok(()));
        assert_eq!(verify(&["67890"], URL, Some(FORM), body, Some(sig)), Err(VerifyError::Mismatch));
        // The node unit spec: a different query value must not verify.
        let sig = sign(b"s3cr3t", "https://example.com/path?test=param", None, b"");
        assert_eq!(
            verify(&["s3cr3t"], "https://example.com/path?test=param2", None, b"", Some(&sig)),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn content_type_parameters_and_case_are_tolerated() {
        let sig = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        let ct = Some("Application/X-WWW-Form-Urlencoded; charset=utf-8");
        assert_eq!(verify(&[TOKEN], URL, ct, PARAMS.as_bytes(), Some(sig)), Ok(()));
    }

    #[test]
    fn a_body_with_more_parameters_than_a_callback_carries_is_refused_before_verification() {
        let body = |n: usize| {
            let mut body = "CallSid=CA1&CallStatus=ringing&To=%2B14155550199".to_owned();
            for i in 3..n {
                body.push_str(&format!("&p{i}="));
            }
            body
        };
        assert!(routing(Some(FORM), body(MAX_FORM_PARAMS).as_bytes(), None).is_ok());
        assert_eq!(
            routing(Some(FORM), body(MAX_FORM_PARAMS + 1).as_bytes(), None).err(),
            Some(MalformedPayload("more form parameters than a Twilio callback carries"))
        );
        // A JSON body's other keys are skipped, not kept.
        let mut json = String::from(r#"{"CallSid":"CA1","To":"+14155550199""#);
        for i in 0..5_000 {
            json.push_str(&format!(r#","k{i}":{{"x":[1,2,3]}}"#));
        }
        json.push('}');
        assert_eq!(
            routing(Some("application/json"), json.as_bytes(), None).unwrap().number.as_deref(),
            Some("+14155550199")
        );
    }

    #[test]
    fn routing_by_direction() {
        let inbound = b"CallSid=CA1&CallStatus=ringing&Direction=inbound&From=%2B14155550100&To=%2B14155550199";
        let r = routing(Some(FORM), inbound, None).unwrap();
        assert_eq!((r.call_id.as_str(), r.event_type.as_str()), ("CA1", "ringing"));
        assert_eq!(r.number.as_deref(), Some("+14155550199"));
        let outbound = b"CallSid=CA1&CallStatus=completed&Direction=outbound-api&From=%2B14155550100&To=%2B14155550199";
        assert_eq!(routing(Some(FORM), outbound, None).unwrap().number.as_deref(), Some("+14155550100"));
        let json = br#"{"CallSid":"CA2","CallStatus":"completed","To":"+14155550199"}"#;
        assert_eq!(routing(Some("application/json"), json, None).unwrap().call_id, "CA2");
        assert!(routing(Some(FORM), b"CallStatus=completed", None).is_err());
        assert!(routing(Some("application/json"), b"[1]", None).is_err());
    }

    #[test]
    fn a_dial_leg_is_routed_by_the_business_its_url_names_and_keyed_by_its_parent() {
        let leg = b"CallSid=CA2&ParentCallSid=CA1&CallStatus=completed&Direction=outbound-dial\
                    &From=%2B12025550123&To=%2B13105550000";
        let named = routing(Some(FORM), leg, Some("x=1&business_number=%2B14155550199")).unwrap();
        assert_eq!(named.number.as_deref(), Some("+14155550199"));
        assert_eq!((named.call_id.as_str(), named.partition_call_id()), ("CA2", "CA1"));
        // Without a name in the URL the caller id is all there is (the worker checks the parent).
        let unnamed = routing(Some(FORM), leg, Some("x=1")).unwrap();
        assert_eq!(unnamed.number.as_deref(), Some("+12025550123"));
        // Only a leg reads the URL or is keyed by a parent.
        let inbound = b"CallSid=CA1&ParentCallSid=CA0&CallStatus=ringing&Direction=inbound&To=%2B14155550199";
        let r = routing(Some(FORM), inbound, Some("business_number=%2B19999999999")).unwrap();
        assert_eq!((r.number.as_deref(), r.partition_call_id()), (Some("+14155550199"), "CA1"));
    }
}
