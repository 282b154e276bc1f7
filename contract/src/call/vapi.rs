//! Vapi: `{"message": {"type": …, "call": {…}, …}}`.

use serde_json::Value;

/// Where Vapi's analysis object holds the fields an appointment is made from.
pub const STRUCTURED_FIELD: &str = "structuredData";

use super::pruned::{self, Keep};
use super::{CallStatus, CallUpdate, Direction, NormalizeError, Normalized, Progress, non_empty, rfc3339};

/// What [`read`] looks at. Not the conversation (`artifact.messages`, `messages`), nor the
/// assistant's configuration beyond its id and language.
const READ: Keep = Keep::Fields(&[("message", MESSAGE)]);
const MESSAGE: Keep = Keep::Fields(&[
    ("timestamp", Keep::All),
    ("status", Keep::All),
    ("call", CALL),
    ("customer", Keep::All),
    ("startedAt", Keep::All),
    ("endedAt", Keep::All),
    ("endedReason", Keep::All),
    ("cost", Keep::All),
    ("costs", Keep::All),
    ("analysis", Keep::All),
    ("assistant", ASSISTANT),
    ("artifact", ARTIFACT),
]);
const CALL: Keep = Keep::Fields(&[
    ("type", Keep::All),
    ("customer", Keep::All),
    ("startedAt", Keep::All),
    ("endedAt", Keep::All),
    ("endedReason", Keep::All),
    ("cost", Keep::All),
    ("costs", Keep::All),
    ("assistantId", Keep::All),
    ("assistant", ASSISTANT),
]);
const ASSISTANT: Keep = Keep::Fields(&[("id", Keep::All), ("transcriber", Keep::Fields(&[("language", Keep::All)]))]);
const ARTIFACT: Keep = Keep::Fields(&[
    ("transcript", Keep::All),
    ("recordingUrl", Keep::All),
    ("stereoRecordingUrl", Keep::All),
    ("recording", Keep::Fields(&[("mono", Keep::Fields(&[("combinedUrl", Keep::All)])), ("stereoUrl", Keep::All)])),
]);

pub(super) fn normalize(event_type: &str, body: &str) -> Result<Normalized, NormalizeError> {
    if !matches!(event_type, "status-update" | "end-of-call-report" | "assistant-request") {
        return Ok(Normalized::Ignored);
    }
    let root = pruned::parse(body, &READ).map_err(|e| NormalizeError::Json(e.to_string()))?;
    read(event_type, &root)
}

fn read(event_type: &str, root: &Value) -> Result<Normalized, NormalizeError> {
    let message = root.get("message").ok_or(NormalizeError::Missing("message"))?;
    let call = message.get("call").unwrap_or(&Value::Null);
    // Vapi stamps every message (ms since the epoch): it orders two messages of one rank.
    let seq = message.get("timestamp").and_then(Value::as_i64).unwrap_or(0);
    let (status, progress) = match event_type {
        "status-update" => {
            let status = match message.get("status").and_then(Value::as_str) {
                Some("scheduled" | "queued") => CallStatus::Queued,
                Some("ringing") => CallStatus::Ringing,
                Some("in-progress" | "forwarding") => CallStatus::InProgress,
                Some("ended" | "not-found" | "deletion-failed") => CallStatus::Ended,
                // A status Vapi added after this was written (or none): the event still says
                // who called, when and how, so it is applied with the lowest rank. It can create
                // the call, fill blanks, and never move a call's state.
                _ => CallStatus::Queued,
            };
            (status, Progress::of(status, seq))
        }
        "end-of-call-report" => (CallStatus::Ended, Progress::analysed(seq)),
        // Asked for before the call is answered.
        _ => (CallStatus::Ringing, Progress::of(CallStatus::Ringing, seq)),
    };
    let mut update = CallUpdate::new(status, progress);
    update.direction = match call.get("type").and_then(Value::as_str) {
        Some("inboundPhoneCall") => Some(Direction::Inbound),
        Some("outboundPhoneCall") => Some(Direction::Outbound),
        _ => None,
    };
    update.caller =
        non_empty(message.pointer("/customer/number")).or_else(|| non_empty(call.pointer("/customer/number")));
    update.started_at = rfc3339(message.get("startedAt")).or_else(|| rfc3339(call.get("startedAt")));
    update.ended_at = rfc3339(message.get("endedAt")).or_else(|| rfc3339(call.get("endedAt")));
    if let (Some(start), Some(end)) = (update.started_at, update.ended_at) {
        update.duration_ms = Some((end - start).num_milliseconds()).filter(|d| *d >= 0);
    }
    update.disconnection_reason = non_empty(message.get("endedReason")).or_else(|| non_empty(call.get("endedReason")));
    update.cost_usd = message.get("cost").or_else(|| call.get("cost")).and_then(Value::as_f64);
    update.transcript = non_empty(message.pointer("/artifact/transcript"));
    update.set_analysis(message.get("analysis"), "summary", STRUCTURED_FIELD);
    let details = &mut update.details;
    let assistant = message.get("assistant").or_else(|| call.get("assistant"));
    details.agent_id = non_empty(call.get("assistantId")).or_else(|| assistant.and_then(|a| non_empty(a.get("id"))));
    details.language = assistant.and_then(|a| non_empty(a.pointer("/transcriber/language")));
    details.cost_breakdown = message.get("costs").or_else(|| call.get("costs")).filter(|c| c.is_array()).cloned();
    let artifact = message.get("artifact");
    let url = |flat: &str, nested: &str| {
        artifact.and_then(|a| non_empty(a.get(flat)).or_else(|| non_empty(a.pointer(nested))))
    };
    details.recording_url = url("recordingUrl", "/recording/mono/combinedUrl");
    details.recording_multichannel_url = url("stereoRecordingUrl", "/recording/stereoUrl");
    Ok(Normalized::Call(Box::new(update)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vapi's documented (abbreviated) end-of-call-report example (docs/providers.md §2).
    const REPORT: &str = r#"{"message":{"type":"end-of-call-report","endedReason":"customer-ended-call","call":{"id":"call-uuid","type":"outboundPhoneCall","status":"ended"},"artifact":{"transcript":"Full conversation transcript...","recording":{},"messages":[{"role":"assistant","message":"Hello! How can I help?"},{"role":"user","message":"I need to check my order."}]},"analysis":{"summary":"AI-generated summary of the call"},"cost":0.15,"startedAt":"2026-07-16T18:00:00.000Z","endedAt":"2026-07-16T18:03:00.000Z"}}"#;

    fn call(event: &str, body: &str) -> CallUpdate {
        super::super::expect_call(normalize(event, body).unwrap())
    }

    #[test]
    fn end_of_call_report() {
        let u = call("end-of-call-report", REPORT);
        assert_eq!((u.status, u.progress), (CallStatus::Ended, Progress::analysed(0)));
        assert_eq!(u.direction, Some(Direction::Outbound));
        assert_eq!(u.duration_ms, Some(180_000));
        assert_eq!(u.cost_usd, Some(0.15));
        assert_eq!(u.transcript.as_deref(), Some("Full conversation transcript..."));
        assert_eq!(u.summary.as_deref(), Some("AI-generated summary of the call"));
        assert_eq!(u.disconnection_reason.as_deref(), Some("customer-ended-call"));
        assert!(u.structured_data.is_none());
        assert_eq!(u.details.recording_url, None, "the example's recording object is empty");
    }

    #[test]
    fn the_assistant_language_recording_and_costs_are_read_where_vapi_puts_them() {
        let body = r#"{"message":{"type":"end-of-call-report","endedReason":"hangup","analysis":{},
            "call":{"id":"c1","assistantId":"asst-1","costs":[{"type":"model","cost":0.02}]},
            "assistant":{"transcriber":{"provider":"deepgram","language":"es"}},
            "artifact":{"recording":{"mono":{"combinedUrl":"https://v.example/m.wav"},"stereoUrl":"https://v.example/s.wav"}}}}"#;
        let u = call("end-of-call-report", body);
        assert_eq!(u.details.agent_id.as_deref(), Some("asst-1"));
        assert_eq!(u.details.language.as_deref(), Some("es"));
        assert_eq!(u.details.cost_breakdown.unwrap()[0]["type"], "model");
        assert_eq!(u.details.recording_url.as_deref(), Some("https://v.example/m.wav"));
        assert_eq!(u.details.recording_multichannel_url.as_deref(), Some("https://v.example/s.wav"));
        // The older flat fields, and a transient assistant known only by its id.
        let flat = r#"{"message":{"type":"end-of-call-report","endedReason":"hangup","analysis":{},
            "assistant":{"id":"asst-2"},"artifact":{"recordingUrl":"https://v.example/flat.wav"}}}"#;
        let u = call("end-of-call-report", flat);
        assert_eq!(u.details.agent_id.as_deref(), Some("asst-2"));
        assert_eq!(u.details.recording_url.as_deref(), Some("https://v.example/flat.wav"));
    }

    #[test]
    fn status_updates_follow_the_status() {
        let body = |status: &str| {
            format!(
                r#"{{"message":{{"type":"status-update","status":"{status}","timestamp":1700000000123,"customer":{{"number":"+12025550123"}},"call":{{"id":"c","type":"inboundPhoneCall"}}}}}}"#
            )
        };
        let ringing = call("status-update", &body("ringing"));
        assert_eq!((ringing.status, ringing.progress.seq), (CallStatus::Ringing, 1700000000123));
        assert_eq!(ringing.caller.as_deref(), Some("+12025550123"));
        assert_eq!(call("status-update", &body("in-progress")).status, CallStatus::InProgress);
        assert_eq!(call("status-update", &body("ended")).status, CallStatus::Ended);
        let unknown = call("status-update", &body("teleporting"));
        assert_eq!(
            (unknown.status, unknown.progress),
            (CallStatus::Queued, Progress::of(CallStatus::Queued, 1700000000123))
        );
        assert_eq!(unknown.caller.as_deref(), Some("+12025550123"), "applied with the fields it has");
        assert_eq!(normalize("hang", "{}").unwrap(), Normalized::Ignored);
    }

    #[test]
    fn structured_data_is_the_appointment_source() {
        let body = r#"{"message":{"type":"end-of-call-report","endedReason":"customer-ended-call","call":{"id":"c"},"analysis":{"summary":"s","structuredData":{"service":"Cleaning"}}}}"#;
        assert_eq!(call("end-of-call-report", body).structured_data.unwrap()["service"], "Cleaning");
    }

    #[test]
    fn what_only_the_call_object_says_is_read_there() {
        let body = r#"{"message":{"type":"end-of-call-report","analysis":{},"messages":[{"role":"user"}],
            "call":{"id":"c","type":"inboundPhoneCall","customer":{"number":"+12025550123"},
            "startedAt":"2026-07-16T18:00:00.000Z","endedAt":"2026-07-16T18:01:00.000Z","endedReason":"hangup",
            "cost":0.5,"costs":[{"type":"voice"}],"assistant":{"id":"asst-3","transcriber":{"language":"fr"}}},
            "artifact":{"transcript":"hi","stereoRecordingUrl":"https://v.example/st.wav","messages":[{"role":"bot"}]}}}"#;
        let u = call("end-of-call-report", body);
        assert_eq!(u.direction, Some(Direction::Inbound));
        assert_eq!(u.caller.as_deref(), Some("+12025550123"));
        assert_eq!(u.duration_ms, Some(60_000));
        assert_eq!(u.disconnection_reason.as_deref(), Some("hangup"));
        assert_eq!(u.cost_usd, Some(0.5));
        assert_eq!(u.details.cost_breakdown.unwrap()[0]["type"], "voice");
        assert_eq!((u.details.agent_id.as_deref(), u.details.language.as_deref()), (Some("asst-3"), Some("fr")));
        assert_eq!(u.transcript.as_deref(), Some("hi"));
        assert_eq!(u.details.recording_multichannel_url.as_deref(), Some("https://v.example/st.wav"));
    }

    proptest::proptest! {
        #[test]
        fn the_pruned_payload_reads_as_the_whole_one(
            doc in pruned::tests::shaped(&READ),
            event in proptest::sample::select(&["status-update", "end-of-call-report", "assistant-request"][..]),
        ) {
            let text = doc.to_string();
            let whole = read(event, &serde_json::from_str(&text).unwrap());
            proptest::prop_assert_eq!(whole, read(event, &pruned::parse(&text, &READ).unwrap()));
        }
    }
}
