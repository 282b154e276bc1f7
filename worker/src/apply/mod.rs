//! Applying a partition's batch to Postgres in one transaction, so that events and their
//! effects commit together or not at all: the batch and the record types here; the call path
//! in [`call`] (a fixed number of statements per batch, SQL in `store`, the merge rules in
//! `merge`); Cal.com's booking changes in [`booking`], one by one (they are few).

pub mod booking;
mod call;
mod merge;
pub(crate) mod reprocess;
mod store;

use callgate_contract::EventEnvelope;
use callgate_contract::booking::{BookingChange, BookingEnvelope};
use callgate_contract::call::Normalized;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::appointments::ReviewReason;
use crate::catalog::Catalog;
use crate::status::EventOutcome;

/// A decoded record, ready to apply.
#[derive(Debug, Clone)]
pub enum Prepared {
    Call(CallRecord),
    Booking(BookingRecord),
}

/// A call event.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub envelope: EventEnvelope,
    pub normalized: Normalized,
    pub partition: i32,
    pub offset: i64,
}

/// A Cal.com booking change.
#[derive(Debug, Clone)]
pub struct BookingRecord {
    pub envelope: BookingEnvelope,
    /// None for the triggers the worker does not apply.
    pub change: Option<BookingChange>,
    pub partition: i32,
    pub offset: i64,
}

impl Prepared {
    pub fn partition(&self) -> i32 {
        match self {
            Self::Call(r) => r.partition,
            Self::Booking(r) => r.partition,
        }
    }

    pub fn offset(&self) -> i64 {
        match self {
            Self::Call(r) => r.offset,
            Self::Booking(r) => r.offset,
        }
    }

    /// Who sent it: a provider, or `calcom`.
    pub fn source(&self) -> &'static str {
        match self {
            Self::Call(r) => r.envelope.provider.as_str(),
            Self::Booking(_) => callgate_contract::booking::SOURCE,
        }
    }

    pub fn event_type(&self) -> &str {
        match self {
            Self::Call(r) => &r.envelope.event_type,
            Self::Booking(r) => &r.envelope.event_type,
        }
    }

    pub fn event_id(&self) -> Uuid {
        match self {
            Self::Call(r) => r.envelope.event_id,
            Self::Booking(r) => r.envelope.event_id,
        }
    }

    /// The call id, or the booking uid.
    pub fn subject(&self) -> &str {
        match self {
            Self::Call(r) => &r.envelope.provider_call_id,
            Self::Booking(r) => &r.envelope.booking_uid,
        }
    }

    fn company_id(&self) -> Uuid {
        match self {
            Self::Call(r) => r.envelope.route.company_id.0,
            Self::Booking(r) => r.envelope.route.company_id.0,
        }
    }

    fn trace_id(&self) -> &str {
        match self {
            Self::Call(r) => &r.envelope.trace_id,
            Self::Booking(r) => &r.envelope.trace_id,
        }
    }

    /// When the gateway accepted the webhook (its envelope's `received_at`).
    pub fn received_at(&self) -> DateTime<Utc> {
        match self {
            Self::Call(r) => r.envelope.received_at,
            Self::Booking(r) => r.envelope.received_at,
        }
    }
}

/// What applying one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied(Effects),
    /// Its event id was applied before.
    Duplicate,
    /// An event type the call model does not use; recorded in `processed_events`.
    Ignored,
    /// It names a call that belongs to another company; recorded, not applied.
    Refused,
    /// A Cal.com booking change, and what it did.
    Booking(booking::ChangeResult),
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Applied(_) => "applied",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
            Self::Refused => "refused",
            Self::Booking(booking::ChangeResult::Applied | booking::ChangeResult::Unchanged) => "applied",
            Self::Booking(_) => "ignored",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    pub customer_created: bool,
    pub appointment_created: bool,
    pub flagged: Option<ReviewReason>,
}

/// Applies `records` in one transaction; their outcomes, in their order. Any error rolls all
/// of them back. Call events go first, as a set; booking changes after them, in order (a
/// booking change never concerns a call of the same batch: its booking exists only once the
/// push has run).
pub async fn apply_batch(pool: &PgPool, catalog: &Catalog, records: &[&Prepared]) -> Result<Vec<Outcome>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut outcomes: Vec<Option<Outcome>> = records.iter().map(|_| None).collect();
    let calls: Vec<(usize, &CallRecord)> = records
        .iter()
        .enumerate()
        .filter_map(|(i, record)| match record {
            Prepared::Call(call) => Some((i, call)),
            Prepared::Booking(_) => None,
        })
        .collect();
    for (i, outcome) in call::apply(&mut tx, catalog, &calls).await? {
        outcomes[i] = Some(outcome);
    }
    for (i, record) in records.iter().enumerate() {
        if let Prepared::Booking(booking) = record {
            outcomes[i] = Some(booking::apply(&mut tx, record, booking).await?);
        }
    }
    tx.commit().await?;
    // Every record got its outcome above.
    Ok(outcomes.into_iter().map(|outcome| outcome.unwrap_or(Outcome::Ignored)).collect())
}

/// True for failures that a later attempt can get past (connection lost, server shutting down,
/// deadlock, serialization): the batch waits and retries. Anything else is about the record.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|code| matches!(code.get(..2), Some("08" | "40" | "53" | "55" | "57" | "58")))
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// Enters the event in `processed_events`; false when it was there already. It comes first in
/// the transaction, so a second worker holding the same event waits on this row until the first
/// one commits, and then sees it taken.
pub(crate) async fn record_event(
    conn: &mut PgConnection,
    record: &Prepared,
    outcome: EventOutcome,
) -> Result<bool, sqlx::Error> {
    // The call path's one insert, with one row.
    let rows = store::EventRows {
        event_id: vec![record.event_id()],
        company_id: vec![record.company_id()],
        provider: vec![record.source()],
        event_type: vec![record.event_type().to_owned()],
        provider_call_id: vec![record.subject().to_owned()],
        outcome: vec![outcome.as_sql()],
        detail: vec![None],
        partition: vec![record.partition()],
        offset: vec![record.offset()],
        received_at: vec![record.received_at()],
        trace_id: vec![record.trace_id().to_owned()],
    };
    Ok(!store::record_events(conn, rows).await?.is_empty())
}

/// The reason the `appointments_history` trigger records for the appointment changes made
/// later in this transaction (it reads the setting; see the calls migration).
pub(crate) async fn set_status_reason(conn: &mut PgConnection, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('callgate.status_reason', $1, true)").bind(reason).execute(conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_trouble_is_transient_and_record_trouble_is_not() {
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(is_transient(&sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset))));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        assert!(!is_transient(&sqlx::Error::ColumnNotFound("x".into())));
    }
}
