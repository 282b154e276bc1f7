//! Cost of each provider's signature check, on the official vectors and on a realistic body.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use callgate_gateway::providers::vapi::{self, HmacSettings, VapiAuth};
use callgate_gateway::providers::{retell, twilio};
use criterion::{Criterion, criterion_group, criterion_main};

const RETELL_SIG: &str = "v=1700000000000,d=07024cabe7dd8f6d1c6e4a8324ca92c812e6ad4a7ee506c04f7e462e3321823e";
const TWILIO_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
const TWILIO_BODY: &str =
    "CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212";
const FORM: &str = "application/x-www-form-urlencoded";

/// A call_analyzed-sized body: a few minutes of transcript with word timings, ~48 KiB.
fn big_body() -> Vec<u8> {
    let mut body = String::from(r#"{"event":"call_analyzed","call":{"call_id":"c","transcript_object":["#);
    while body.len() < 48 * 1024 {
        body.push_str(
            r#"{"role":"user","content":"I would like a cleaning","words":[{"word":"I","start":0.1,"end":0.2}]},"#,
        );
    }
    body.push_str(r#"{}]}}"#);
    body.into_bytes()
}

fn verifiers(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    group.bench_function("retell_official_vector", |b| {
        b.iter(|| retell::verify(&["test-api-key"], br#"{"event":"call_ended"}"#, Some(RETELL_SIG), 1_700_000_000_000))
    });
    let big = big_body();
    let big_sig = retell::sign(b"test-api-key", &big, 1_700_000_000_000);
    group.bench_function("retell_48KiB", |b| {
        b.iter(|| retell::verify(&["test-api-key"], black_box(&big), Some(&big_sig), 1_700_000_000_000))
    });
    // Vector 1 matches the URL as given; vector 4 only its ":443" spelling.
    for (name, signature) in [
        ("twilio_form_vector1_first_variant", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        ("twilio_form_vector4_port_variant", "kvajT1Ptam85bY51eRf/AJRuM3w="),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| twilio::verify(&["12345"], TWILIO_URL, Some(FORM), TWILIO_BODY.as_bytes(), Some(signature)))
        });
    }
    let json_url = format!("{TWILIO_URL}&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620");
    group.bench_function("twilio_json_vector12", |b| {
        b.iter(|| {
            twilio::verify(
                &["12345"],
                &json_url,
                Some("application/json"),
                br#"{"property": "value", "boolean": true}"#,
                Some("a9nBmqA0ju/hNViExpshrM61xv4="),
            )
        })
    });
    let secret_auth = VapiAuth::default();
    let headers = |name: &str| (name == "x-vapi-secret").then_some("a-vapi-secret");
    group.bench_function("vapi_secret", |b| {
        b.iter(|| {
            let request = vapi::Request { header: headers, body: b"{}", url: None, now_ms: 0 };
            vapi::verify(&secret_auth, &["a-vapi-secret"], &request)
        })
    });
    let settings = HmacSettings::default();
    let ts = "1784000000";
    let sig = vapi::sign_hmac(&settings, b"k", &big, "https://h/v1/webhooks/vapi", ts, None);
    let hmac_auth = VapiAuth::Hmac(settings);
    group.bench_function("vapi_hmac_sha256_48KiB", |b| {
        b.iter(|| {
            let header = |name: &str| match name {
                "x-signature" => Some(sig.as_str()),
                "x-timestamp" => Some(ts),
                _ => None,
            };
            let request = vapi::Request { header, body: &big, url: None, now_ms: 1_784_000_000_000 };
            vapi::verify(&hmac_auth, &["k"], &request)
        })
    });
    group.finish();
}

criterion_group!(benches, verifiers);
criterion_main!(benches);
