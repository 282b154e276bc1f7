//! Retell: `{"event": …, "call": {…}}` (the legacy demo's `data` is accepted too).

use serde_json::Value;

/// Where Retell's analysis object holds the fields an appointment is made from.
pub const STRUCTURED_FIELD: &str = "custom_analysis_data";

use super::pruned::{self, Keep};
use super::{CallStatus, CallUpdate, Direction, NormalizeError, Normalized, Progress, millis, non_empty};

/// What [`read`] looks at: the call's own fields, its cost and its analysis. Not its transcript
/// word by word (`transcript_object`, `transcript_with_tool_calls`), nor the tenant's
/// `metadata` and dynamic variables.
const READ: Keep = Keep::Fields(&[("call", CALL), ("data", CALL)]);
const CALL: Keep = Keep::Fields(&[
    ("call_status", Keep::All),
    ("direction", Keep::All),
    ("from_number", Keep::All),
    ("to_number", Keep::All),
    ("start_timestamp", Keep::All),
    ("end_timestamp", Keep::All),
    ("duration_ms", Keep::All),
    ("transcript", Keep::All),
    ("disconnection_reason", Keep::All),
    ("call_cost", Keep::All),
    ("call_analysis", Keep::All),
    ("agent_id", Keep::All),
    ("agent_version", Keep::All),
    ("recording_url", Keep::All),
    ("recording_multi_channel_url", Keep::All),
]);

pub(super) fn normalize(event_type: &str, body: &str) -> Result<Normalized, NormalizeError> {
    let Some(order) = order(event_type) else { return Ok(Normalized::Ignored) };
    let root = pruned::parse(body, &READ).map_err(|e| NormalizeError::Json(e.to_string()))?;
    read(order, &root)
}

/// Where an event type stands among a call's events; None for those the model does not use.
fn order(event_type: &str) -> Option<u8> {
    match event_type {
        "call_started" => Some(0),
        "call_ended" => Some(1),
        "call_analyzed" => Some(2),
        _ => None,
    }
}

fn read(order: u8, root: &Value) -> Result<Normalized, NormalizeError> {
    let call = root.get("call").or_else(|| root.get("data")).ok_or(NormalizeError::Missing("call"))?;
    let status = match (order, call.get("call_status").and_then(Value::as_str)) {
        (0, Some("registered")) => CallStatus::Queued,
        (0, _) => CallStatus::InProgress,
        _ => CallStatus::Ended,
    };
    let progress = if order == 2 { Progress::analysed(0) } else { Progress::of(status, 0) };
    let mut update = CallUpdate::new(status, progress);
    update.direction = match call.get("direction").and_then(Value::as_str) {
        Some("inbound") => Some(Direction::Inbound),
        Some("outbound") => Some(Direction::Outbound),
        _ => None,
    };
    // The other party: who called in, or whom the agent called.
    update.caller = match update.direction {
        Some(Direction::Outbound) => non_empty(call.get("to_number")),
        _ => non_empty(call.get("from_number")),
    };
    update.started_at = millis(call.get("start_timestamp"));
    update.ended_at = millis(call.get("end_timestamp"));
    update.duration_ms = call.get("duration_ms").and_then(Value::as_i64).filter(|d| *d >= 0);
    update.transcript = non_empty(call.get("transcript"));
    update.disconnection_reason = non_empty(call.get("disconnection_reason"));
    // Retell reports cost in cents.
    update.cost_usd = call.pointer("/call_cost/combined_cost").and_then(Value::as_f64).map(|cents| cents / 100.0);
    update.set_analysis(call.get("call_analysis"), "call_summary", STRUCTURED_FIELD);
    let details = &mut update.details;
    details.agent_id = non_empty(call.get("agent_id"));
    details.agent_version = call.get("agent_version").and_then(Value::as_i64).and_then(|v| i32::try_from(v).ok());
    details.sentiment = non_empty(call.pointer("/call_analysis/user_sentiment"));
    details.cost_breakdown = call.get("call_cost").filter(|c| c.is_object()).cloned();
    details.recording_url = non_empty(call.get("recording_url"));
    details.recording_multichannel_url = non_empty(call.get("recording_multi_channel_url"));
    Ok(Normalized::Call(Box::new(update)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full `call_analyzed` payload (docs/providers.md §1), built from Retell's SDK types.
    const ANALYZED: &str = r#"{"event":"call_analyzed","call":{"call_id":"Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6","agent_id":"oBeDLoLOeuAbiuaMFXRtDOLriTJ5tSxD","agent_version":1,"call_type":"phone_call","call_status":"ended","direction":"inbound","from_number":"+12137771234","to_number":"+12137771235","start_timestamp":1714608475945,"end_timestamp":1714608491736,"duration_ms":15791,"disconnection_reason":"user_hangup","transcript":"Agent: hi how are you doing?\nUser: Doing pretty well. How are you?\n","transcript_object":[{"role":"agent","content":"hi how are you doing?","words":[{"word":"hi","start":0.7,"end":1.3}]}],"metadata":{"crm_id":"123"},"retell_llm_dynamic_variables":{"customer_name":"John Doe"},"call_analysis":{"call_summary":"...","user_sentiment":"Positive","call_successful":true,"in_voicemail":false,"custom_analysis_data":{"appointment_booked":true}}}}"#;

    fn call(event: &str, body: &str) -> CallUpdate {
        super::super::expect_call(normalize(event, body).unwrap())
    }

    #[test]
    fn analyzed_call_carries_everything() {
        let u = call("call_analyzed", ANALYZED);
        assert_eq!((u.status, u.progress), (CallStatus::Ended, Progress::analysed(0)));
        assert_eq!(u.direction, Some(Direction::Inbound));
        assert_eq!(u.caller.as_deref(), Some("+12137771234"));
        assert_eq!(u.started_at.unwrap().timestamp_millis(), 1714608475945);
        assert_eq!(u.ended_at.unwrap().timestamp_millis(), 1714608491736);
        assert_eq!(u.duration_ms, Some(15791));
        assert_eq!(u.disconnection_reason.as_deref(), Some("user_hangup"));
        assert_eq!(u.summary.as_deref(), Some("..."));
        assert_eq!(u.structured_data.unwrap()["appointment_booked"], true);
        assert_eq!(u.analysis.unwrap()["user_sentiment"], "Positive");
        assert_eq!(u.details.agent_id.as_deref(), Some("oBeDLoLOeuAbiuaMFXRtDOLriTJ5tSxD"));
        assert_eq!(u.details.agent_version, Some(1));
        assert_eq!(u.details.sentiment.as_deref(), Some("Positive"));
    }

    #[test]
    fn the_recording_and_the_cost_breakdown_are_kept_as_sent() {
        let body = r#"{"event":"call_ended","call":{"call_id":"c1","recording_url":"https://r.example/c1.wav",
            "recording_multi_channel_url":"https://r.example/c1-multi.wav",
            "call_cost":{"combined_cost":70,"product_costs":[{"product":"elevenlabs_tts","cost":60}]}}}"#;
        let u = call("call_ended", body);
        assert_eq!(u.details.recording_url.as_deref(), Some("https://r.example/c1.wav"));
        assert_eq!(u.details.recording_multichannel_url.as_deref(), Some("https://r.example/c1-multi.wav"));
        assert_eq!(u.cost_usd, Some(0.7));
        assert_eq!(u.details.cost_breakdown.unwrap()["product_costs"][0]["cost"], 60);
    }

    #[test]
    fn started_and_ended_calls() {
        let started = r#"{"event":"call_started","call":{"call_id":"c","call_status":"ongoing","direction":"outbound","from_number":"+12137771235","to_number":"+12137771234"}}"#;
        let u = call("call_started", started);
        assert_eq!((u.status, u.caller.as_deref()), (CallStatus::InProgress, Some("+12137771234")));
        let ended = r#"{"event":"call_ended","call":{"call_id":"c","call_status":"not_connected","disconnection_reason":"dial_busy","call_cost":{"combined_cost":12.5}}}"#;
        let u = call("call_ended", ended);
        assert_eq!(u.status, CallStatus::Ended);
        assert_eq!(u.cost_usd, Some(0.125));
        assert_eq!(u.disconnection_reason.as_deref(), Some("dial_busy"));
        assert!(u.analysis.is_none() && u.caller.is_none());
        assert!(call("call_ended", &ended.replace("\"call\"", "\"data\"")).status == CallStatus::Ended);
    }

    #[test]
    fn other_events_are_ignored_and_garbage_is_an_error() {
        assert_eq!(normalize("transcript_updated", "{}").unwrap(), Normalized::Ignored);
        assert!(matches!(normalize("call_ended", "nope"), Err(NormalizeError::Json(_))));
        assert_eq!(normalize("call_ended", r#"{"event":"call_ended"}"#), Err(NormalizeError::Missing("call")));
    }

    #[test]
    fn a_tenants_deeply_nested_metadata_does_not_stop_the_call_being_read() {
        // Retell echoes the tenant's own `metadata`; a whole parse refused it past 128 levels,
        // and every event of the call went to the dead-letter topic.
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let body = ANALYZED.replace(r#"{"crm_id":"123"}"#, &deep);
        assert!(serde_json::from_str::<Value>(&body).is_err());
        assert_eq!(call("call_analyzed", &body), call("call_analyzed", ANALYZED));
    }

    proptest::proptest! {
        #[test]
        fn the_pruned_payload_reads_as_the_whole_one(doc in pruned::tests::shaped(&READ), order in 0u8..3) {
            let text = doc.to_string();
            let whole = read(order, &serde_json::from_str(&text).unwrap());
            proptest::prop_assert_eq!(whole, read(order, &pruned::parse(&text, &READ).unwrap()));
        }
    }
}
