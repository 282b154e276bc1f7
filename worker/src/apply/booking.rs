//! Booking changes reported by Cal.com's webhooks, applied to the appointment they concern in
//! the consumer's transaction (so a redelivery is a no-op, like every other event).
//!
//! The appointment is found by the booking's uid, or the uid it replaced (a reschedule), or by
//! our idempotency key in the booking metadata — which is how a BOOKING_CREATED settles a push
//! whose answer never arrived. Cal.com delivers at least once, in no particular order:
//! `iCalSequence` tells an older change from a newer one.
//!
//! The Cal.com reconciliation (`crate::calcom::reconcile`) applies what it reads from Cal.com's
//! bookings list through [`apply_change`] too, so both paths follow one set of rules.

use callgate_contract::booking::{BookingChange, Trigger};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{BookingRecord, Outcome, Prepared, record_event, set_status_reason};
use crate::status::{AppointmentStatus, EventOutcome, SyncStatus};

/// What a booking change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeResult {
    Applied,
    /// It matched, and the appointment already said so (the reconciliation re-reads bookings
    /// the webhooks brought).
    Unchanged,
    /// Older than what the appointment already reflects.
    Stale,
    /// No appointment of the company has this booking (made in Cal.com directly, or replaced).
    Unmatched,
}

impl ChangeResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Unchanged => "unchanged",
            Self::Stale => "stale",
            Self::Unmatched => "unmatched",
        }
    }
}

/// The appointment a change is about, as it stands.
#[derive(Debug, sqlx::FromRow)]
struct Current {
    id: Uuid,
    #[sqlx(rename = "calcom_booking_uid")]
    uid: Option<String>,
    #[sqlx(rename = "calcom_sequence")]
    sequence: Option<i32>,
    status: String,
}

/// The appointment's status after a change: Cal.com delivers in no particular order, so a
/// creation never undoes a cancellation, rejection, reschedule or the meeting's outcome
/// applied first, and a request (awaiting the host) never takes a booked appointment back to
/// pending. A meeting's end never clears the host's no-show mark; taking the mark back says
/// the caller came (completed) and changes nothing else.
fn status_after(current: Option<AppointmentStatus>, trigger: Trigger) -> AppointmentStatus {
    use AppointmentStatus::{Booked, Cancelled, Completed, NoShow, Pending, Rejected, Rescheduled};
    let incoming = match trigger {
        Trigger::Created => Booked,
        // Waits for the host's confirmation.
        Trigger::Requested => Pending,
        Trigger::Rescheduled => Rescheduled,
        Trigger::Cancelled => Cancelled,
        Trigger::Rejected => Rejected,
        Trigger::Ended | Trigger::ShowedUp => Completed,
        Trigger::NoShow => NoShow,
    };
    match (trigger, incoming, current) {
        (_, Booked | Pending, Some(settled @ (Cancelled | Rejected | Rescheduled | Completed | NoShow))) => settled,
        (_, Pending, Some(Booked)) => Booked,
        // A meeting that was cancelled did not take place.
        (_, Completed | NoShow, Some(ended @ (Cancelled | Rejected))) => ended,
        (Trigger::Ended, _, Some(NoShow)) => NoShow,
        (Trigger::ShowedUp, _, Some(other)) if other != NoShow => other,
        _ => incoming,
    }
}

pub async fn apply(
    conn: &mut PgConnection,
    prepared: &Prepared,
    record: &BookingRecord,
) -> Result<Outcome, sqlx::Error> {
    let Some(change) = &record.change else {
        let fresh = record_event(conn, prepared, EventOutcome::Ignored).await?;
        return Ok(if fresh { Outcome::Ignored } else { Outcome::Duplicate });
    };
    if !record_event(conn, prepared, EventOutcome::Applied).await? {
        return Ok(Outcome::Duplicate);
    }
    let company = record.envelope.route.company_id.0;
    let origin = format!("Cal.com {}", record.envelope.event_type);
    let ChangeOutcome { result, detail, .. } = apply_change(conn, company, change, &origin).await?;
    let event_id = record.envelope.event_id;
    if let Some(detail) = detail {
        sqlx::query("UPDATE processed_events SET outcome = $4, detail = $2 WHERE company_id = $3 AND event_id = $1")
            .bind(event_id)
            .bind(&detail)
            .bind(company)
            .bind(EventOutcome::Ignored.as_sql())
            .execute(&mut *conn)
            .await?;
        tracing::info!(%event_id, booking_uid = %change.uid, trigger = %record.envelope.event_type, %detail, "Cal.com booking change not applied");
    } else {
        tracing::info!(%event_id, booking_uid = %change.uid, trigger = %record.envelope.event_type, result = result.as_str(), "Cal.com booking change applied");
    }
    Ok(Outcome::Booking(result))
}

/// What one booking change did, to which appointment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeOutcome {
    pub result: ChangeResult,
    /// The appointment it matched.
    pub appointment: Option<Uuid>,
    /// Why it did not apply.
    pub detail: Option<String>,
}

/// Applies one booking change to the company's appointment it concerns, in the caller's
/// transaction. `origin` starts the status-history reason ("Cal.com BOOKING_CANCELLED").
pub async fn apply_change(
    conn: &mut PgConnection,
    company: Uuid,
    change: &BookingChange,
    origin: &str,
) -> Result<ChangeOutcome, sqlx::Error> {
    let Some(current) = find(conn, company, change).await? else {
        let detail = Some("no appointment has this booking".to_owned());
        return Ok(ChangeOutcome { result: ChangeResult::Unmatched, appointment: None, detail });
    };
    let appointment = Some(current.id);
    if let Err((result, detail)) = decide(&current, change) {
        return Ok(ChangeOutcome { result, appointment, detail: Some(detail) });
    }
    let changed = write(conn, &current, change, origin).await?;
    let result = if changed { ChangeResult::Applied } else { ChangeResult::Unchanged };
    Ok(ChangeOutcome { result, appointment, detail: None })
}

/// The appointment this change is about, locked.
async fn find(conn: &mut PgConnection, company: Uuid, change: &BookingChange) -> Result<Option<Current>, sqlx::Error> {
    let uids: Vec<&str> = [Some(change.uid.as_str()), change.previous_uid.as_deref()].into_iter().flatten().collect();
    sqlx::query_as(
        "SELECT id, calcom_booking_uid, calcom_sequence, status FROM appointments \
         WHERE company_id = $1 AND (calcom_booking_uid = ANY($2) OR idempotency_key = $3) \
         ORDER BY calcom_booking_uid = ANY($2) DESC NULLS LAST LIMIT 1 FOR UPDATE",
    )
    .bind(company)
    .bind(&uids)
    .bind(change.our_key.as_deref())
    .fetch_optional(&mut *conn)
    .await
}

/// Whether `change` applies to the appointment as it stands; the error says why not.
fn decide(current: &Current, change: &BookingChange) -> Result<(), (ChangeResult, String)> {
    if let (Some(seen), Some(incoming)) = (current.sequence, change.sequence)
        && incoming < seen
    {
        return Err((ChangeResult::Stale, format!("stale: iCalSequence {incoming} is older than {seen}")));
    }
    let ours = current.uid.as_deref();
    // The move to the booking we hold, again, after that booking ended: Cal.com cannot move an
    // ended booking, so this is the move read late (the list has no iCalSequence to say so).
    let ended = matches!(
        AppointmentStatus::from_sql(&current.status),
        Some(AppointmentStatus::Cancelled | AppointmentStatus::Rejected)
    );
    if change.trigger == Trigger::Rescheduled && ended && ours == Some(change.uid.as_str()) {
        return Err((ChangeResult::Stale, "stale: the booking was moved before it ended".to_owned()));
    }
    let applies = match change.trigger {
        // Ours when we have no uid yet (our push's answer was lost) or it is this one. Another
        // uid carrying our key would be a second booking: never adopted silently.
        Trigger::Created | Trigger::Requested => ours.is_none() || ours == Some(change.uid.as_str()),
        // The booking we hold was moved (or this move was applied already).
        Trigger::Rescheduled => {
            ours.is_none() || ours == change.previous_uid.as_deref() || ours == Some(change.uid.as_str())
        }
        // Ours, or (read from Cal.com's list, which shows metadata on cancelled bookings too)
        // our booking whose answer never reached us. Webhook cancellations carry no key.
        Trigger::Cancelled | Trigger::Rejected => {
            ours == Some(change.uid.as_str()) || (ours.is_none() && change.our_key.is_some())
        }
        // What happened at the meeting of the booking we hold.
        Trigger::Ended | Trigger::NoShow | Trigger::ShowedUp => ours == Some(change.uid.as_str()),
    };
    if applies {
        return Ok(());
    }
    if matches!(change.trigger, Trigger::Created | Trigger::Requested) {
        tracing::error!(
            appointment_id = %current.id, booking_uid = %change.uid,
            "Cal.com holds a second booking carrying this appointment's key; left for review"
        );
        return Err((
            ChangeResult::Unmatched,
            format!("a second booking carries the key of appointment {}", current.id),
        ));
    }
    Err((ChangeResult::Unmatched, format!("the appointment's booking is {}", ours.unwrap_or("unknown"))))
}

/// Writes the change; false when the appointment already said all of it.
async fn write(
    conn: &mut PgConnection,
    current: &Current,
    change: &BookingChange,
    origin: &str,
) -> Result<bool, sqlx::Error> {
    let reason = match &change.reason {
        Some(reason) => format!("{origin}: {reason}"),
        None => origin.to_owned(),
    };
    set_status_reason(conn, &reason).await?;
    let status = status_after(AppointmentStatus::from_sql(&current.status), change.trigger);
    // The appointment is locked (`find`), so the status decided from it still stands.
    let written = sqlx::query(
        "UPDATE appointments a SET status = $2, calcom_booking_uid = $3, calcom_booking_id = COALESCE($4, calcom_booking_id), \
           starts_at = COALESCE($5, starts_at), ends_at = COALESCE($6, ends_at), \
           calcom_sequence = GREATEST(calcom_sequence, $7), \
           calcom_sync_status = $8, calcom_unsure = false, last_sync_error = NULL, \
           synced_at = COALESCE(synced_at, now()) \
         WHERE id = $1 AND (a.status, a.calcom_booking_uid, a.calcom_booking_id, a.starts_at, a.ends_at, \
                            a.calcom_sequence, a.calcom_sync_status, a.calcom_unsure) \
           IS DISTINCT FROM ($2, $3, COALESCE($4, a.calcom_booking_id), COALESCE($5, a.starts_at), \
                             COALESCE($6, a.ends_at), GREATEST(a.calcom_sequence, $7), $8, false)",
    )
    .bind(current.id)
    .bind(status.as_sql())
    .bind(&change.uid)
    .bind(change.booking_id)
    .bind(if change.trigger == Trigger::Rescheduled { change.start } else { None })
    .bind(if change.trigger == Trigger::Rescheduled { change.end } else { None })
    .bind(change.sequence)
    .bind(SyncStatus::Synced.as_sql())
    .execute(&mut *conn)
    .await?;
    Ok(written.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current(uid: Option<&str>) -> Current {
        Current { id: Uuid::nil(), uid: uid.map(str::to_owned), sequence: None, status: "pending".into() }
    }

    fn change(trigger: Trigger, uid: &str, our_key: Option<&str>) -> BookingChange {
        BookingChange {
            trigger,
            uid: uid.into(),
            previous_uid: None,
            our_key: our_key.map(str::to_owned),
            booking_id: None,
            start: None,
            end: None,
            sequence: None,
            reason: None,
        }
    }

    #[test]
    fn a_move_read_again_after_its_booking_ended_is_stale() {
        let ended = Current { status: "cancelled".into(), ..current(Some("new")) };
        let moved =
            BookingChange { previous_uid: Some("old".into()), ..change(Trigger::Rescheduled, "new", Some("k")) };
        assert_eq!(decide(&ended, &moved).unwrap_err().0, ChangeResult::Stale);
        // The first time, the move applies.
        assert!(decide(&current(Some("old")), &moved).is_ok());
    }

    #[test]
    fn a_cancellation_applies_to_our_booking_or_to_one_found_by_our_key_before_its_answer() {
        assert!(decide(&current(Some("a")), &change(Trigger::Cancelled, "a", None)).is_ok());
        assert!(decide(&current(None), &change(Trigger::Cancelled, "a", Some("k"))).is_ok());
        // A webhook cancellation has no key: without our uid it cannot be told to be ours.
        assert!(decide(&current(None), &change(Trigger::Cancelled, "a", None)).is_err());
        // Another booking of ours, cancelled, leaves the one the appointment holds alone.
        assert!(decide(&current(Some("b")), &change(Trigger::Rejected, "a", Some("k"))).is_err());
    }

    #[test]
    fn late_creations_and_requests_never_undo_what_came_first() {
        use AppointmentStatus::{Booked, Cancelled, Pending, Rejected, Rescheduled};
        assert_eq!(status_after(Some(Pending), Trigger::Created), Booked);
        assert_eq!(status_after(Some(Cancelled), Trigger::Created), Cancelled);
        assert_eq!(status_after(Some(Rescheduled), Trigger::Requested), Rescheduled);
        assert_eq!(status_after(Some(Booked), Trigger::Requested), Booked);
        assert_eq!(status_after(Some(Booked), Trigger::Cancelled), Cancelled);
        assert_eq!(status_after(Some(Cancelled), Trigger::Rescheduled), Rescheduled);
        assert_eq!(status_after(Some(Rejected), Trigger::Created), Rejected);
    }

    #[test]
    fn a_meeting_outcome_follows_the_host_and_survives_late_deliveries() {
        use AppointmentStatus::{Booked, Cancelled, Completed, NoShow, Rescheduled};
        assert_eq!(status_after(Some(Booked), Trigger::Ended), Completed);
        assert_eq!(status_after(Some(Rescheduled), Trigger::Ended), Completed);
        assert_eq!(status_after(Some(Booked), Trigger::NoShow), NoShow);
        assert_eq!(status_after(Some(Completed), Trigger::NoShow), NoShow, "marked absent after the end");
        assert_eq!(status_after(Some(NoShow), Trigger::Ended), NoShow, "the end does not clear the mark");
        assert_eq!(status_after(Some(NoShow), Trigger::ShowedUp), Completed, "the mark taken back");
        assert_eq!(status_after(Some(Booked), Trigger::ShowedUp), Booked);
        assert_eq!(status_after(Some(Cancelled), Trigger::Ended), Cancelled);
        assert_eq!(status_after(Some(Completed), Trigger::Created), Completed, "a late creation changes nothing");
        assert_eq!(status_after(Some(NoShow), Trigger::Requested), NoShow);
    }
}
