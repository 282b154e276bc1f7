//! Cal.com booking events: the record the gateway writes for a verified Cal.com webhook, and
//! what the worker reads out of it (docs/calcom.md §4).
//!
//! They travel on the call-events topic, so one consumer, one commit discipline and one dead
//! letter path serve both. The record carries the header
//! [`ENVELOPE_KIND`](crate::envelope::headers::ENVELOPE_KIND) = [`BOOKING_KIND`] and is keyed by
//! company, so one company's booking changes are applied in the order Cal.com sent them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::{CalcomAccountId, CompanyId};

/// How `processed_events.provider`, record keys and metric labels name Cal.com.
pub const SOURCE: &str = "calcom";
/// The value of the envelope-kind header on a booking record.
pub const BOOKING_KIND: &str = "booking";
/// The metadata key under which every booking we create carries our idempotency key (Cal.com
/// allows keys of at most 40 characters and string values of at most 500).
pub const METADATA_KEY: &str = "callgate_key";

/// Which company a Cal.com delivery belongs to: the one whose webhook endpoint it was sent to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarRoute {
    pub company_id: CompanyId,
    pub calcom_account_id: CalcomAccountId,
}

/// The value of a booking record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BookingEnvelope {
    pub version: u16,
    pub event_id: Uuid,
    /// Always [`SOURCE`]; makes the record self-describing without its headers.
    pub source: String,
    /// Cal.com's `triggerEvent` (`BOOKING_CANCELLED`, …).
    pub event_type: String,
    /// The booking's uid (empty for the few triggers that name none).
    pub booking_uid: String,
    pub received_at: DateTime<Utc>,
    pub trace_id: String,
    pub route: CalendarRoute,
    /// The verified body, verbatim.
    pub payload: Box<RawValue>,
}

/// The deterministic id of one delivery to one company. Cal.com re-sends the same body on a
/// retry (and its `createdAt` tells two real events apart), so a redelivery gets the same id.
/// Two companies whose webhooks watch the same Cal.com user receive byte-identical bodies: the
/// company is part of the id, so one company's copy is never skipped as the other's duplicate.
pub fn event_id(company: CompanyId, event_type: &str, booking_uid: &str, raw_body: &[u8]) -> Uuid {
    crate::envelope::source_event_id(SOURCE, &format!("{company}/{booking_uid}"), event_type, raw_body)
}

/// The record key: one company's booking events share a partition.
pub fn record_key(company: CompanyId) -> String {
    format!("{SOURCE}:{company}")
}

/// Why a Cal.com body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedBooking(pub &'static str);

/// What the gateway needs from a delivery: its trigger and booking uid.
pub fn routing(body: &[u8]) -> Result<(String, String), MalformedBooking> {
    #[derive(Deserialize)]
    struct Wire {
        #[serde(rename = "triggerEvent")]
        trigger_event: String,
        #[serde(default)]
        payload: Option<WireIds>,
        #[serde(default)]
        uid: Option<String>,
    }
    #[derive(Deserialize)]
    struct WireIds {
        #[serde(default)]
        uid: Option<String>,
        #[serde(default, rename = "bookingUid")]
        booking_uid: Option<String>,
    }
    let wire: Wire = serde_json::from_slice(body).map_err(|_| MalformedBooking("not a Cal.com webhook body"))?;
    if wire.trigger_event.is_empty() {
        return Err(MalformedBooking("triggerEvent is empty"));
    }
    // MEETING_* triggers send the booking flat; BOOKING_NO_SHOW_UPDATED names it bookingUid.
    let uid = wire.payload.and_then(|p| p.uid.or(p.booking_uid)).or(wire.uid).unwrap_or_default();
    Ok((wire.trigger_event, uid))
}

/// The triggers the worker applies; anything else is recorded as ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Created,
    /// A booking that waits for the host's confirmation.
    Requested,
    /// The payload is the new booking; `rescheduleUid` names the one it replaced.
    Rescheduled,
    Cancelled,
    Rejected,
    /// `MEETING_ENDED`: the meeting took place.
    Ended,
    /// `BOOKING_NO_SHOW_UPDATED` marking an attendee absent.
    NoShow,
    /// `BOOKING_NO_SHOW_UPDATED` taking the mark back: the attendee came.
    ShowedUp,
}

/// Cal.com's trigger for a change of an attendee's no-show mark.
pub const NO_SHOW_UPDATED: &str = "BOOKING_NO_SHOW_UPDATED";

impl Trigger {
    /// The trigger of an event type, except `BOOKING_NO_SHOW_UPDATED`, whose direction is in
    /// its payload ([`parse`] reads it).
    pub fn parse(event_type: &str) -> Option<Self> {
        Some(match event_type {
            "BOOKING_CREATED" => Self::Created,
            "BOOKING_REQUESTED" => Self::Requested,
            "BOOKING_RESCHEDULED" => Self::Rescheduled,
            "BOOKING_CANCELLED" => Self::Cancelled,
            "BOOKING_REJECTED" => Self::Rejected,
            "MEETING_ENDED" => Self::Ended,
            _ => return None,
        })
    }
}

/// A booking change, as the worker applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingChange {
    pub trigger: Trigger,
    pub uid: String,
    /// The booking this one replaced (`rescheduleUid`).
    pub previous_uid: Option<String>,
    /// Our idempotency key, when the booking is one we created (it is absent from
    /// cancellations: those are matched by uid).
    pub our_key: Option<String>,
    pub booking_id: Option<i64>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    /// `iCalSequence`: grows with every change of one booking.
    pub sequence: Option<i32>,
    /// `cancellationReason` or `rejectionReason`.
    pub reason: Option<String>,
}

/// Reads the booking change out of a delivery body; `Ok(None)` for triggers not applied.
pub fn parse(event_type: &str, body: &str) -> Result<Option<BookingChange>, MalformedBooking> {
    // Most triggers wrap the booking in `payload`; MEETING_* send it flat at the top level.
    #[derive(Deserialize)]
    struct Wire {
        payload: Option<Payload>,
        #[serde(flatten)]
        flat: Payload,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Payload {
        uid: Option<String>,
        /// BOOKING_NO_SHOW_UPDATED names the booking so.
        booking_uid: Option<String>,
        reschedule_uid: Option<String>,
        booking_id: Option<i64>,
        start_time: Option<String>,
        end_time: Option<String>,
        #[serde(rename = "iCalSequence")]
        ical_sequence: Option<i32>,
        cancellation_reason: Option<String>,
        rejection_reason: Option<String>,
        metadata: Option<serde_json::Map<String, serde_json::Value>>,
        /// BOOKING_NO_SHOW_UPDATED: `[{email, noShow}]`. Read as a value: other triggers carry
        /// attendees of another shape, which must not make their bodies unreadable.
        attendees: Option<serde_json::Value>,
    }
    let trigger = match Trigger::parse(event_type) {
        Some(trigger) => trigger,
        None if event_type == NO_SHOW_UPDATED => Trigger::NoShow,
        None => return Ok(None),
    };
    let wire: Wire = serde_json::from_str(body).map_err(|_| MalformedBooking("booking payload is not readable"))?;
    let p = wire.payload.unwrap_or(wire.flat);
    // Absent when any attendee is marked absent; taken back when the update clears every mark.
    let marked = |attendees: &serde_json::Value| {
        attendees
            .as_array()
            .is_some_and(|all| all.iter().any(|a| a.get("noShow") == Some(&serde_json::Value::Bool(true))))
    };
    let trigger = match (trigger, &p.attendees) {
        (Trigger::NoShow, Some(attendees)) if !marked(attendees) => Trigger::ShowedUp,
        (trigger, _) => trigger,
    };
    let uid =
        p.uid.or(p.booking_uid).filter(|u| !u.is_empty()).ok_or(MalformedBooking("booking payload has no uid"))?;
    let instant = |text: Option<String>| -> Result<Option<DateTime<Utc>>, MalformedBooking> {
        text.map(|t| {
            DateTime::parse_from_rfc3339(&t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| MalformedBooking("booking time is not RFC 3339"))
        })
        .transpose()
    };
    let our_key = p.metadata.as_ref().and_then(|m| m.get(METADATA_KEY)).and_then(|v| v.as_str()).map(str::to_owned);
    Ok(Some(BookingChange {
        trigger,
        uid,
        previous_uid: p.reschedule_uid.filter(|u| !u.is_empty()),
        our_key,
        booking_id: p.booking_id,
        start: instant(p.start_time)?,
        end: instant(p.end_time)?,
        sequence: p.ical_sequence,
        reason: p.cancellation_reason.or(p.rejection_reason).filter(|r| !r.is_empty()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shaped like the examples in Cal.com's webhooks doc (docs/calcom.md §4).
    const CANCELLED: &str = r#"{"triggerEvent":"BOOKING_CANCELLED","createdAt":"2031-03-01T10:00:00.000Z",
        "payload":{"type":"30min","title":"Check-up","startTime":"2031-03-04T15:30:00Z","endTime":"2031-03-04T16:00:00+00:00",
        "uid":"bFJeNb2uX8ANpT3JL5EfXw","bookingId":17,"iCalSequence":1,"status":"CANCELLED",
        "cancellationReason":"feeling better","attendees":[{"name":"Ana","email":"ana@example.com"}]}}"#;

    const RESCHEDULED: &str = r#"{"triggerEvent":"BOOKING_RESCHEDULED","createdAt":"2031-03-01T10:00:00.000Z",
        "payload":{"uid":"new-uid","rescheduleUid":"old-uid","rescheduleId":17,"bookingId":18,
        "startTime":"2031-03-05T09:00:00.000Z","endTime":"2031-03-05T09:30:00.000Z","iCalSequence":2,
        "status":"ACCEPTED","metadata":{"videoCallUrl":"https://x","callgate_key":"k1"}}}"#;

    #[test]
    fn routing_reads_trigger_and_uid_wherever_cal_com_puts_it() {
        assert_eq!(
            routing(CANCELLED.as_bytes()).unwrap(),
            ("BOOKING_CANCELLED".into(), "bFJeNb2uX8ANpT3JL5EfXw".into())
        );
        let no_show = br#"{"triggerEvent":"BOOKING_NO_SHOW_UPDATED","payload":{"bookingUid":"u9","attendees":[]}}"#;
        assert_eq!(routing(no_show).unwrap().1, "u9");
        let flat = br#"{"triggerEvent":"MEETING_ENDED","uid":"u7","title":"x"}"#;
        assert_eq!(routing(flat).unwrap().1, "u7");
        assert_eq!(routing(br#"{"triggerEvent":"PING"}"#).unwrap(), ("PING".into(), String::new()));
        assert!(routing(b"not json").is_err());
        assert!(routing(br#"{"payload":{}}"#).is_err());
        assert!(routing(br#"{"triggerEvent":""}"#).is_err());
    }

    #[test]
    fn a_no_show_mark_and_its_withdrawal_and_a_flat_meeting_end_are_read() {
        let marked = r#"{"triggerEvent":"BOOKING_NO_SHOW_UPDATED","createdAt":"2031-03-04T17:00:00Z",
            "payload":{"message":"x","bookingUid":"u9","bookingId":9,"attendees":[{"email":"a@x","noShow":true}]}}"#;
        let change = parse(NO_SHOW_UPDATED, marked).unwrap().unwrap();
        assert_eq!((change.trigger, change.uid.as_str(), change.booking_id), (Trigger::NoShow, "u9", Some(9)));
        let cleared = marked.replace("true", "false");
        assert_eq!(parse(NO_SHOW_UPDATED, &cleared).unwrap().unwrap().trigger, Trigger::ShowedUp);
        let ended = r#"{"triggerEvent":"MEETING_ENDED","uid":"u7","title":"Check-up",
            "startTime":"2031-03-04T15:30:00Z","endTime":"2031-03-04T16:00:00Z"}"#;
        let change = parse("MEETING_ENDED", ended).unwrap().unwrap();
        assert_eq!((change.trigger, change.uid.as_str()), (Trigger::Ended, "u7"));
        // Attendees of any shape leave the other triggers readable.
        let odd = r#"{"triggerEvent":"BOOKING_CREATED","payload":{"uid":"u8","attendees":{"name":"x"}}}"#;
        assert_eq!(parse("BOOKING_CREATED", odd).unwrap().unwrap().uid, "u8");
    }

    #[test]
    fn a_cancellation_is_matched_by_uid_and_keeps_its_reason() {
        let change = parse("BOOKING_CANCELLED", CANCELLED).unwrap().unwrap();
        assert_eq!(change.trigger, Trigger::Cancelled);
        assert_eq!(change.uid, "bFJeNb2uX8ANpT3JL5EfXw");
        assert_eq!(change.our_key, None);
        assert_eq!(change.sequence, Some(1));
        assert_eq!(change.booking_id, Some(17));
        assert_eq!(change.reason.as_deref(), Some("feeling better"));
        // Both offset spellings of the docs' examples are instants.
        assert_eq!(change.end.unwrap().to_rfc3339(), "2031-03-04T16:00:00+00:00");
    }

    #[test]
    fn a_reschedule_names_the_booking_it_replaced_and_carries_our_key() {
        let change = parse("BOOKING_RESCHEDULED", RESCHEDULED).unwrap().unwrap();
        assert_eq!(change.trigger, Trigger::Rescheduled);
        assert_eq!((change.uid.as_str(), change.previous_uid.as_deref()), ("new-uid", Some("old-uid")));
        assert_eq!(change.our_key.as_deref(), Some("k1"));
        assert_eq!(change.start.unwrap().to_rfc3339(), "2031-03-05T09:00:00+00:00");
    }

    #[test]
    fn other_triggers_are_not_applied_and_broken_bodies_are_refused() {
        assert_eq!(parse("MEETING_STARTED", "{}").unwrap(), None);
        assert_eq!(parse("RECORDING_READY", "{}").unwrap(), None);
        assert!(parse("MEETING_ENDED", "{}").is_err(), "applied now: a body without its booking is refused");
        assert!(parse("BOOKING_CANCELLED", r#"{"payload":{}}"#).is_err());
        assert!(parse("BOOKING_CANCELLED", r#"{"payload":{"uid":"u","startTime":"tomorrow"}}"#).is_err());
    }

    #[test]
    fn event_ids_differ_from_call_events_with_the_same_fields() {
        let company = CompanyId(Uuid::from_u128(1));
        let a = event_id(company, "BOOKING_CANCELLED", "u1", b"{}");
        assert_eq!(a, event_id(company, "BOOKING_CANCELLED", "u1", b"{}"));
        assert_ne!(a, event_id(company, "BOOKING_CREATED", "u1", b"{}"));
        assert_ne!(a, event_id(CompanyId(Uuid::from_u128(2)), "BOOKING_CANCELLED", "u1", b"{}"), "per company");
        assert_ne!(a, crate::envelope::event_id(crate::Provider::Retell, "u1", "BOOKING_CANCELLED", b"{}"));
    }
}
