//! CPU per payload of the call model's normaliser (what the worker does with every record it
//! reads), for the providers' documented examples and for a ten-minute call's payloads, next to
//! a ceiling measured in the same run: scanning the same bytes as JSON and keeping nothing
//! (`serde::de::IgnoredAny`), which no reader of JSON can beat.
//!
//!   cargo bench -p callgate-contract --bench normalize
//!
//! A ten-minute call: 150 turns of 10 words. Retell sends the transcript three times (as text,
//! word by word in `transcript_object`, and again with tool calls); Vapi sends the conversation
//! twice (`messages`, `artifact.messages`) and the assistant's configuration.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::hint::black_box;
use std::time::Instant;

use callgate_contract::call::normalize;
use callgate_contract::{Payload, Provider};
use serde_json::value::RawValue;

const TURNS: usize = 150;
const WORDS: usize = 10;

fn main() {
    let cases = [
        ("Retell call_analyzed, documented example", Provider::Retell, "call_analyzed", retell_example()),
        ("Retell call_analyzed, ten-minute call", Provider::Retell, "call_analyzed", retell_long()),
        ("Vapi end-of-call-report, documented example", Provider::Vapi, "end-of-call-report", vapi_example()),
        ("Vapi end-of-call-report, ten-minute call", Provider::Vapi, "end-of-call-report", vapi_long()),
    ];
    println!("{:<46} {:>9} {:>14} {:>12} {:>6}", "payload", "bytes", "normalise µs", "scan µs", "ratio");
    for (name, provider, event, body) in cases {
        let payload = Payload::Json(RawValue::from_string(body.clone()).unwrap());
        assert!(normalize(provider, event, &payload).is_ok(), "{name}");
        // Enough rounds for about a second each, whatever the payload's size.
        let rounds = (200_000_000 / body.len()).clamp(200, 200_000);
        let normalise = per_call(rounds, || drop(black_box(normalize(provider, event, black_box(&payload)))));
        let scan = per_call(rounds, || {
            black_box(serde_json::from_str::<serde::de::IgnoredAny>(black_box(&body)).unwrap());
        });
        println!("{name:<46} {:>9} {normalise:>14.1} {scan:>12.1} {:>6.2}", body.len(), scan / normalise);
    }
}

/// Microseconds per call of `f`, the best of three batches of `rounds`.
fn per_call(rounds: usize, mut f: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..rounds {
                f();
            }
            started.elapsed().as_secs_f64() * 1e6 / rounds as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn retell_example() -> String {
    r#"{"event":"call_analyzed","call":{"call_id":"Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6","agent_id":"oBeDLoLOeuAbiuaMFXRtDOLriTJ5tSxD","agent_version":1,"call_type":"phone_call","call_status":"ended","direction":"inbound","from_number":"+12137771234","to_number":"+12137771235","start_timestamp":1714608475945,"end_timestamp":1714608491736,"duration_ms":15791,"disconnection_reason":"user_hangup","transcript":"Agent: hi how are you doing?\nUser: Doing pretty well. How are you?\n","transcript_object":[{"role":"agent","content":"hi how are you doing?","words":[{"word":"hi","start":0.7,"end":1.3}]}],"metadata":{"crm_id":"123"},"retell_llm_dynamic_variables":{"customer_name":"John Doe"},"call_analysis":{"call_summary":"...","user_sentiment":"Positive","call_successful":true,"in_voicemail":false,"custom_analysis_data":{"appointment_booked":true}}}}"#.to_owned()
}

fn vapi_example() -> String {
    r#"{"message":{"type":"end-of-call-report","endedReason":"customer-ended-call","call":{"id":"call-uuid","type":"outboundPhoneCall","status":"ended"},"artifact":{"transcript":"Full conversation transcript...","recording":{},"messages":[{"role":"assistant","message":"Hello! How can I help?"},{"role":"user","message":"I need to check my order."}]},"analysis":{"summary":"AI-generated summary of the call"},"cost":0.15,"startedAt":"2026-07-16T18:00:00.000Z","endedAt":"2026-07-16T18:03:00.000Z"}}"#.to_owned()
}

/// What one turn says.
fn sentence() -> String {
    (0..WORDS).map(|w| format!("word{w}")).collect::<Vec<_>>().join(" ")
}

fn retell_long() -> String {
    let mut utterances = Vec::new();
    let mut text = String::new();
    for t in 0..TURNS {
        let (role, content) = (if t % 2 == 0 { "agent" } else { "user" }, sentence());
        let start = (t * WORDS) as f64 * 0.4;
        let words: Vec<String> = (0..WORDS)
            .map(|w| {
                let at = start + w as f64 * 0.4;
                format!(r#"{{"word":"word{w}","start":{at:.3},"end":{:.3}}}"#, at + 0.3)
            })
            .collect();
        utterances.push(format!(r#"{{"role":"{role}","content":"{content}","words":[{}]}}"#, words.join(",")));
        text.push_str(&format!("{role}: {content}\\n"));
    }
    let utterances = utterances.join(",");
    format!(
        r#"{{"event":"call_analyzed","call":{{"call_id":"c1","agent_id":"a1","agent_version":3,"call_type":"phone_call","call_status":"ended","direction":"inbound","from_number":"+12137771234","to_number":"+12137771235","start_timestamp":1714608475945,"end_timestamp":1714609075945,"duration_ms":600000,"disconnection_reason":"user_hangup","transcript":"{text}","transcript_object":[{utterances}],"transcript_with_tool_calls":[{utterances}],"recording_url":"https://r.example/c1.wav","metadata":{{"crm_id":"123"}},"call_cost":{{"combined_cost":60,"product_costs":[{{"product":"elevenlabs_tts","cost":60}}]}},"call_analysis":{{"call_summary":"The caller booked a cleaning.","user_sentiment":"Positive","custom_analysis_data":{{"service":"Cleaning"}}}}}}}}"#
    )
}

fn vapi_long() -> String {
    let messages: Vec<String> = (0..TURNS)
        .map(|t| {
            let (role, content) = (if t % 2 == 0 { "bot" } else { "user" }, sentence());
            format!(
                r#"{{"role":"{role}","message":"{content}","time":{},"secondsFromStart":{}}}"#,
                1_700_000_000_000u64 + t as u64 * 4000,
                t * 4
            )
        })
        .collect();
    let messages = messages.join(",");
    let prompt = "You answer the phone for a dental practice. ".repeat(60);
    format!(
        r#"{{"message":{{"type":"end-of-call-report","timestamp":1700000600000,"endedReason":"customer-ended-call","startedAt":"2026-07-16T18:00:00.000Z","endedAt":"2026-07-16T18:10:00.000Z","cost":0.92,"costs":[{{"type":"model","cost":0.4}},{{"type":"voice","cost":0.52}}],"messages":[{messages}],"artifact":{{"transcript":"…","messages":[{messages}],"recordingUrl":"https://v.example/r.wav"}},"analysis":{{"summary":"The caller booked a cleaning.","structuredData":{{"service":"Cleaning"}}}},"call":{{"id":"c1","type":"inboundPhoneCall","customer":{{"number":"+12025550123"}},"assistantId":"asst-1"}},"assistant":{{"id":"asst-1","model":{{"provider":"openai","model":"gpt-4o","messages":[{{"role":"system","content":"{prompt}"}}],"tools":[{{"type":"function","function":{{"name":"book","parameters":{{"type":"object","properties":{{"service":{{"type":"string"}}}}}}}}}}]}},"transcriber":{{"provider":"deepgram","language":"en"}}}}}}}}"#
    )
}
