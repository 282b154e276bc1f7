//! Twilio: form-encoded status callbacks (`CallStatus`, `CallDuration`, `SequenceNumber`), and
//! recording status callbacks (`RecordingStatus`, `RecordingUrl`, `RecordingSid`).

use chrono::{DateTime, Utc};

use super::{CallStatus, CallUpdate, Direction, Normalized, Progress};

pub(super) fn normalize(form: &str) -> Normalized {
    let mut fields = Fields::default();
    for (name, value) in form_urlencoded::parse(form.as_bytes()) {
        let value = value.trim().to_owned();
        match name.as_ref() {
            "CallStatus" => fields.status = Some(value),
            "Direction" => fields.direction = Some(value),
            "From" => fields.from = Some(value),
            "To" => fields.to = Some(value),
            "ParentCallSid" => fields.parent = Some(value).filter(|v| !v.is_empty()),
            "CallDuration" => fields.duration_secs = value.parse().ok(),
            "SequenceNumber" => fields.sequence = value.parse().ok(),
            "Timestamp" => fields.timestamp = DateTime::parse_from_rfc2822(&value).ok().map(|t| t.with_timezone(&Utc)),
            "RecordingUrl" => fields.recording_url = Some(value).filter(|v| !v.is_empty()),
            "RecordingSid" => fields.recording_sid = Some(value).filter(|v| !v.is_empty()),
            "RecordingStatus" => fields.recording_status = Some(value),
            _ => {}
        }
    }
    let Some(raw_status) = fields.status.clone() else {
        return recording(fields);
    };
    let status = match raw_status.as_str() {
        "queued" | "initiated" => CallStatus::Queued,
        "ringing" => CallStatus::Ringing,
        "in-progress" => CallStatus::InProgress,
        "completed" | "busy" | "no-answer" | "canceled" | "failed" => CallStatus::Ended,
        _ => return Normalized::Ignored,
    };
    let mut update = CallUpdate::new(status, Progress::of(status, fields.sequence.unwrap_or(0)));
    update.direction = fields.direction.as_deref().map(|d| match d {
        "inbound" => Direction::Inbound,
        _ => Direction::Outbound, // outbound-api, outbound-dial
    });
    // A `<Dial>` leg (`outbound-dial`) calls a third party (staff, a colleague) under a caller
    // id that is either the parent's caller or the business number: it has no customer of its
    // own. The worker takes the parent's.
    let dial_leg = fields.direction.as_deref() == Some(DIAL_LEG);
    update.caller = match update.direction {
        _ if dial_leg => None,
        Some(Direction::Outbound) => fields.to,
        _ => fields.from,
    };
    update.parent_call_id = if dial_leg { fields.parent } else { None };
    match status {
        CallStatus::InProgress => update.started_at = fields.timestamp,
        CallStatus::Ended => {
            update.ended_at = fields.timestamp;
            update.disconnection_reason = Some(raw_status.clone());
        }
        _ => {}
    }
    update.duration_ms = fields.duration_secs.map(|s: i64| s.saturating_mul(1000)).filter(|d| *d >= 0);
    // A call recorded with `record=true` names its recording on the status callbacks too.
    update.details.recording_url = fields.recording_url;
    update.details.recording_sid = fields.recording_sid;
    Normalized::Call(Box::new(update))
}

/// A recording status callback: only a finished recording says anything about the call (the
/// default `recordingStatusCallbackEvent` is `completed` alone; `in-progress`, `absent` and
/// `failed` are recorded and skipped). It says nothing of the call's progress, so it takes the
/// lowest rank: it fills the recording in, and never moves the call.
fn recording(fields: Fields) -> Normalized {
    if fields.recording_status.as_deref() != Some("completed") || fields.recording_url.is_none() {
        return Normalized::Ignored;
    }
    let mut update = CallUpdate::new(CallStatus::Queued, Progress::of(CallStatus::Queued, 0));
    update.details.recording_url = fields.recording_url;
    update.details.recording_sid = fields.recording_sid;
    Normalized::Call(Box::new(update))
}

/// Twilio's `Direction` of a call started by the `<Dial>` verb of another call.
pub const DIAL_LEG: &str = "outbound-dial";

#[derive(Default)]
struct Fields {
    status: Option<String>,
    direction: Option<String>,
    from: Option<String>,
    to: Option<String>,
    parent: Option<String>,
    duration_secs: Option<i64>,
    sequence: Option<i64>,
    timestamp: Option<DateTime<Utc>>,
    recording_url: Option<String>,
    recording_sid: Option<String>,
    recording_status: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(form: &str) -> CallUpdate {
        super::super::expect_call(normalize(form))
    }

    #[test]
    fn completed_callback() {
        let form = "AccountSid=AC1&CallSid=CA1&CallStatus=completed&CallDuration=42&Direction=inbound\
                    &From=%2B14158675309&To=%2B18005551212&SequenceNumber=3\
                    &Timestamp=Mon%2C+16+Aug+2010+03%3A45%3A01+%2B0000&CallbackSource=call-progress-events";
        let u = call(form);
        assert_eq!((u.status, u.progress), (CallStatus::Ended, Progress::of(CallStatus::Ended, 3)));
        assert_eq!(u.caller.as_deref(), Some("+14158675309"));
        assert_eq!(u.duration_ms, Some(42_000));
        assert_eq!(u.ended_at.unwrap().to_rfc3339(), "2010-08-16T03:45:01+00:00");
        assert_eq!(u.disconnection_reason.as_deref(), Some("completed"));
    }

    #[test]
    fn a_finished_recording_fills_the_recording_in_and_never_moves_the_call() {
        let form = "AccountSid=AC1&CallSid=CA1&RecordingSid=RE1&RecordingStatus=completed&RecordingDuration=42\
                    &RecordingUrl=https%3A%2F%2Fapi.twilio.com%2F2010-04-01%2FAccounts%2FAC1%2FRecordings%2FRE1";
        let u = call(form);
        assert_eq!((u.status, u.progress), (CallStatus::Queued, Progress::of(CallStatus::Queued, 0)));
        assert_eq!(u.details.recording_sid.as_deref(), Some("RE1"));
        assert_eq!(
            u.details.recording_url.as_deref(),
            Some("https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1")
        );
        assert_eq!(u.caller, None);
        assert_eq!(normalize("CallSid=CA1&RecordingSid=RE1&RecordingStatus=in-progress"), Normalized::Ignored);
        assert_eq!(normalize("CallSid=CA1&RecordingSid=RE1&RecordingStatus=completed"), Normalized::Ignored);
    }

    #[test]
    fn outbound_and_in_progress() {
        let u = call("CallStatus=in-progress&Direction=outbound-api&From=%2B1800&To=%2B14158675309&SequenceNumber=1");
        assert_eq!((u.status, u.direction), (CallStatus::InProgress, Some(Direction::Outbound)));
        assert_eq!(u.caller.as_deref(), Some("+14158675309"));
        assert!(call("CallStatus=busy").status == CallStatus::Ended);
        assert_eq!(normalize("CallSid=CA1"), Normalized::Ignored);
        assert_eq!(normalize("CallStatus=teleporting"), Normalized::Ignored);
    }

    #[test]
    fn a_dial_leg_names_its_parent_and_no_customer() {
        let leg = "CallSid=CA2&ParentCallSid=CA1&CallStatus=completed&Direction=outbound-dial\
                   &From=%2B14158675309&To=%2B13105550000&CallDuration=12";
        let u = call(leg);
        assert_eq!((u.direction, u.caller.as_deref()), (Some(Direction::Outbound), None));
        assert_eq!(u.parent_call_id.as_deref(), Some("CA1"));
        // Only a leg has a parent: other calls' ParentCallSid (none in practice) is not read.
        let inbound = call("CallStatus=ringing&Direction=inbound&ParentCallSid=CA1&From=%2B14158675309");
        assert_eq!((inbound.parent_call_id, inbound.caller.as_deref()), (None, Some("+14158675309")));
    }
}
