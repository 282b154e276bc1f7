//! One call model for every provider: what an event tells about a call.
//!
//! The gateway publishes provider payloads verbatim; this module is where they become a
//! [`CallUpdate`]. It is shared code (the worker applies it, a replay tool can too) and pure:
//! no clock, no database, so the same event always normalises to the same update.

mod pruned;
mod retell;
mod twilio;
mod vapi;

pub use twilio::DIAL_LEG as TWILIO_DIAL_LEG;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::{E164, Payload, Provider};

/// Where a call is. The database keeps the furthest state seen (see [`Progress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CallStatus {
    Queued,
    Ringing,
    InProgress,
    Ended,
}

impl CallStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Ringing => "ringing",
            Self::InProgress => "in_progress",
            Self::Ended => "ended",
        }
    }

    /// The status as stored (`as_str`'s spelling); None for anything else.
    pub fn from_sql(text: &str) -> Option<Self> {
        [Self::Queued, Self::Ringing, Self::InProgress, Self::Ended].into_iter().find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// How far an event says the call has got: compared as `(rank, seq)`, and a call only moves
/// forward. `rank` is the status (0 queued … 3 ended) or 4 for the analysis after the end;
/// `seq` orders events of one rank (Twilio's `SequenceNumber`, Vapi's message timestamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Progress {
    pub rank: i16,
    pub seq: i64,
}

/// The rank of "ended and analysed" (Retell `call_analyzed`, Vapi `end-of-call-report`).
pub const ANALYSED_RANK: i16 = 4;

impl Progress {
    pub fn of(status: CallStatus, seq: i64) -> Self {
        let rank = match status {
            CallStatus::Queued => 0,
            CallStatus::Ringing => 1,
            CallStatus::InProgress => 2,
            CallStatus::Ended => 3,
        };
        Self { rank, seq }
    }

    pub fn analysed(seq: i64) -> Self {
        Self { rank: ANALYSED_RANK, seq }
    }
}

/// What one event says about its call. `None` means "this event does not say", never "clear it".
#[derive(Debug, Clone, PartialEq)]
pub struct CallUpdate {
    pub status: CallStatus,
    pub progress: Progress,
    pub direction: Option<Direction>,
    /// The other party (the caller of an inbound call, the callee of an outbound one), as given.
    pub caller: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub transcript: Option<String>,
    pub summary: Option<String>,
    /// The provider's whole analysis object.
    pub analysis: Option<Value>,
    /// The structured fields an appointment may be made from (Retell
    /// `call_analysis.custom_analysis_data`, Vapi `analysis.structuredData`).
    pub structured_data: Option<Map<String, Value>>,
    pub cost_usd: Option<f64>,
    pub disconnection_reason: Option<String>,
    /// The provider's id of the call this one is a leg of (Twilio `ParentCallSid` of a
    /// `<Dial>` leg). A leg's parties are the dialled number and a caller id, neither of them
    /// the business's customer: the customer is the parent's.
    pub parent_call_id: Option<String>,
    pub details: CallDetails,
}

/// What else a provider reports about a call: who answered, in what language, how the caller
/// felt, what it cost in detail, where the recording is (docs/providers.md). Each is merged
/// like the other data columns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallDetails {
    /// Retell `agent_id`, Vapi `assistantId`: the agent that handled this call.
    pub agent_id: Option<String>,
    /// Retell `agent_version`.
    pub agent_version: Option<i32>,
    /// The transcription language (Vapi's transcriber `language`).
    pub language: Option<String>,
    /// Retell `call_analysis.user_sentiment`.
    pub sentiment: Option<String>,
    /// Retell `call_cost`, Vapi `costs`, as sent.
    pub cost_breakdown: Option<Value>,
    pub recording_url: Option<String>,
    /// One channel per party (Retell `recording_multi_channel_url`, Vapi stereo recording).
    pub recording_multichannel_url: Option<String>,
    /// Twilio `RecordingSid`.
    pub recording_sid: Option<String>,
}

impl CallUpdate {
    /// Takes the provider's analysis object (if it is one): the whole of it, its summary, and
    /// the structured fields an appointment may come from, under the provider's names.
    fn set_analysis(&mut self, analysis: Option<&Value>, summary_field: &str, structured_field: &str) {
        if let Some(analysis) = analysis.filter(|a| a.is_object()) {
            self.summary = non_empty(analysis.get(summary_field));
            self.structured_data = object(analysis.get(structured_field));
            self.analysis = Some(analysis.clone());
        }
    }

    /// This event without what it says about the caller: who called, what was said, the
    /// analysis, how they felt, the recording. What is left (progress, times, cost, agent)
    /// still moves a call whose content was removed (retention, erasure) without bringing the
    /// removed data back.
    pub fn without_personal_data(&self) -> Self {
        Self {
            caller: None,
            transcript: None,
            summary: None,
            analysis: None,
            structured_data: None,
            details: CallDetails {
                sentiment: None,
                recording_url: None,
                recording_multichannel_url: None,
                recording_sid: None,
                ..self.details.clone()
            },
            ..self.clone()
        }
    }

    /// An event that says only how far the call has got.
    pub fn new(status: CallStatus, progress: Progress) -> Self {
        Self {
            status,
            progress,
            direction: None,
            caller: None,
            started_at: None,
            ended_at: None,
            duration_ms: None,
            transcript: None,
            summary: None,
            analysis: None,
            structured_data: None,
            cost_usd: None,
            disconnection_reason: None,
            parent_call_id: None,
            details: CallDetails::default(),
        }
    }
}

/// The result of normalising one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Normalized {
    Call(Box<CallUpdate>),
    /// An event type this model does not use (Retell `transcript_updated`, Vapi `hang`, …):
    /// recorded and skipped.
    Ignored,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("payload is not valid JSON: {0}")]
    Json(String),
    #[error("payload has the wrong format for {0}")]
    Format(Provider),
    #[error("payload is missing {0}")]
    Missing(&'static str),
}

/// Normalises one verified payload.
pub fn normalize(provider: Provider, event_type: &str, payload: &Payload) -> Result<Normalized, NormalizeError> {
    match (provider, payload) {
        (Provider::Retell, Payload::Json(raw)) => retell::normalize(event_type, raw.get()),
        (Provider::Vapi, Payload::Json(raw)) => vapi::normalize(event_type, raw.get()),
        (Provider::Twilio, Payload::Form(form)) => Ok(twilio::normalize(form)),
        // Twilio's JSON-bodied webhooks are not call status callbacks.
        (Provider::Twilio, Payload::Json(_)) => Ok(Normalized::Ignored),
        (provider, Payload::Form(_)) => Err(NormalizeError::Format(provider)),
    }
}

/// Who the other party is, for linking a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Number(E164),
    /// Withheld: "anonymous", "restricted", Twilio's placeholder numbers, …
    Anonymous,
    /// Something that is neither a number nor a known withheld marker (a SIP URI, garbage).
    Unparseable,
}

/// Twilio's stand-ins for withheld numbers (ANONYMOUS, RESTRICTED, UNAVAILABLE, UNKNOWN).
const TWILIO_WITHHELD: &[&str] = &["+266696687", "+7378742833", "+86282452253", "+8656696"];

impl Caller {
    pub fn classify(raw: &str) -> Self {
        let text = raw.trim();
        let lower = text.to_ascii_lowercase();
        let words = ["anonymous", "restricted", "private", "unknown", "unavailable", "withheld", "blocked"];
        if text.is_empty() || words.iter().any(|w| lower.trim_start_matches('+') == *w) {
            return Self::Anonymous;
        }
        if TWILIO_WITHHELD.contains(&text) {
            return Self::Anonymous;
        }
        match E164::parse(text) {
            Ok(number) => Self::Number(number),
            Err(_) => Self::Unparseable,
        }
    }
}

fn non_empty(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

fn millis(value: Option<&Value>) -> Option<DateTime<Utc>> {
    value.and_then(Value::as_i64).and_then(DateTime::from_timestamp_millis)
}

fn rfc3339(value: Option<&Value>) -> Option<DateTime<Utc>> {
    value.and_then(Value::as_str).and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.with_timezone(&Utc))
}

/// The structured fields in a stored analysis object (`calls.analysis`) of `provider`: what an
/// appointment is re-derived from. Twilio has no analysis.
pub fn structured_data(provider: Provider, analysis: &Value) -> Option<Map<String, Value>> {
    let field = match provider {
        Provider::Retell => retell::STRUCTURED_FIELD,
        Provider::Vapi => vapi::STRUCTURED_FIELD,
        Provider::Twilio => return None,
    };
    object(analysis.get(field))
}

fn object(value: Option<&Value>) -> Option<Map<String, Value>> {
    value.and_then(Value::as_object).cloned()
}

/// The update a test expects an event to give.
#[cfg(test)]
fn expect_call(normalized: Normalized) -> CallUpdate {
    match normalized {
        Normalized::Call(update) => *update,
        Normalized::Ignored => panic!("the event was ignored"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_are_classified() {
        assert_eq!(Caller::classify("+14155550100"), Caller::Number(E164::parse("+14155550100").unwrap()));
        for withheld in ["anonymous", "Anonymous", "+266696687", "RESTRICTED", "", "  ", "unknown"] {
            assert_eq!(Caller::classify(withheld), Caller::Anonymous, "{withheld:?}");
        }
        assert_eq!(Caller::classify("sip:alice@example.com"), Caller::Unparseable);
    }

    #[test]
    fn progress_orders_rank_then_sequence() {
        assert!(Progress::of(CallStatus::Ended, 0) > Progress::of(CallStatus::InProgress, 99));
        assert!(Progress::analysed(0) > Progress::of(CallStatus::Ended, 5));
        assert!(Progress::of(CallStatus::Ringing, 2) > Progress::of(CallStatus::Ringing, 1));
    }
}
