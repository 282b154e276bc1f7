//! A caller's data: `customer export` (everything callgate holds about one person, as JSON: a
//! data subject access request) and `customer erase` (all of it removed, in one transaction).
//!
//! A person is named within a company by phone number, email, or both. What is theirs: the
//! company's customers with that number or email; the calls linked to those customers or whose
//! caller was that number, and the `<Dial>` legs of those calls (a leg's caller is its
//! parent's); the appointments of those customers or calls, or booked under that email.
//!
//! Erasure removes what identifies or describes the person and keeps what the business needs
//! to count (a call happened, when, how long, what it cost; an appointment existed for a
//! service at a time):
//! - calls: the caller's number, transcript, summary, analysis, sentiment and recording
//!   addresses; the customer link becomes `erased`, and `content_removed_at` stops any later
//!   event from filling them in again;
//! - appointments: the name, email, notes and customer link; one still waiting for Cal.com is
//!   taken out of the push (`needs_review`), so the erased details are never sent;
//! - the free text a caller may have typed into Cal.com (cancellation reasons) in the status
//!   history;
//! - the customer rows themselves, deleted.
//!
//! What callgate cannot remove itself is listed for the operator: Cal.com bookings already made
//! (the attendee's name and email live in Cal.com; callgate does not cancel a meeting on the
//! person's behalf) and recordings kept by the voice provider.

use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::audit::{self, Action, Actor};
use crate::apply::set_status_reason;
use crate::retention::CALL_CONTENT_REMOVED;
use crate::status::{CustomerLink, SyncStatus};

/// Whom a command is about.
#[derive(Debug, Clone)]
pub struct Person {
    pub company: Uuid,
    /// E.164.
    pub phone: Option<String>,
    pub email: Option<String>,
}

impl Person {
    /// How the person was named, for the audit trail: never the number or the address.
    fn named_by(&self) -> Value {
        json!({ "phone": self.phone.is_some(), "email": self.email.is_some() })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    #[error("name the person by --phone or --email")]
    NoSelector,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The rows that are the person's, locked until the transaction ends.
#[derive(Debug, Default)]
struct Theirs {
    customers: Vec<Uuid>,
    calls: Vec<Uuid>,
    appointments: Vec<Uuid>,
}

impl Theirs {
    /// Every row id, for the audit trail.
    fn all(&self) -> Vec<Uuid> {
        [&self.customers, &self.calls, &self.appointments].into_iter().flatten().copied().collect()
    }
}

async fn select(conn: &mut PgConnection, person: &Person, lock: bool) -> Result<Theirs, PrivacyError> {
    if person.phone.is_none() && person.email.is_none() {
        return Err(PrivacyError::NoSelector);
    }
    let lock = if lock { " FOR UPDATE" } else { "" };
    let customers: Vec<Uuid> = sqlx::query_scalar(&format!(
        "SELECT id FROM customers WHERE company_id = $1 AND (e164 = $2 OR lower(email) = lower($3)) ORDER BY id{lock}"
    ))
    .bind(person.company)
    .bind(person.phone.as_deref())
    .bind(person.email.as_deref())
    .fetch_all(&mut *conn)
    .await?;
    let calls: Vec<Uuid> = sqlx::query_scalar(&format!(
        "WITH direct AS (SELECT id FROM calls WHERE company_id = $1 \
           AND (customer_id = ANY($2) OR caller_e164 = $3 OR caller_raw = $3)) \
         SELECT id FROM calls WHERE company_id = $1 \
           AND (id IN (SELECT id FROM direct) OR parent_call_id IN (SELECT id FROM direct)) ORDER BY id{lock}"
    ))
    .bind(person.company)
    .bind(&customers)
    .bind(person.phone.as_deref())
    .fetch_all(&mut *conn)
    .await?;
    let appointments: Vec<Uuid> = sqlx::query_scalar(&format!(
        "SELECT id FROM appointments WHERE company_id = $1 \
           AND (customer_id = ANY($2) OR call_id = ANY($3) OR lower(customer_email) = lower($4)) ORDER BY id{lock}"
    ))
    .bind(person.company)
    .bind(&customers)
    .bind(&calls)
    .bind(person.email.as_deref())
    .fetch_all(&mut *conn)
    .await?;
    Ok(Theirs { customers, calls, appointments })
}

/// Everything callgate holds about the person, as one JSON document. Recorded in the audit
/// trail (who looked, how many rows, not whom).
pub async fn export(pool: &PgPool, person: &Person, actor: &Actor) -> Result<Value, PrivacyError> {
    let mut tx = pool.begin().await?;
    let theirs = select(&mut tx, person, false).await?;
    let rows = |table: &str, order: &str| {
        format!("SELECT COALESCE(json_agg(t ORDER BY {order}), '[]'::json) FROM {table} t WHERE t.id = ANY($1)")
    };
    let customers: Value =
        sqlx::query_scalar(&rows("customers", "t.created_at")).bind(&theirs.customers).fetch_one(&mut *tx).await?;
    let calls: Value =
        sqlx::query_scalar(&rows("calls", "t.first_event_at")).bind(&theirs.calls).fetch_one(&mut *tx).await?;
    let appointments: Value = sqlx::query_scalar(
        "SELECT COALESCE(json_agg(to_jsonb(a) || jsonb_build_object('history', \
           (SELECT COALESCE(json_agg(h ORDER BY h.id), '[]'::json) FROM appointment_status_history h \
            WHERE h.appointment_id = a.id)) ORDER BY a.created_at), '[]'::json) \
         FROM appointments a WHERE a.id = ANY($1)",
    )
    .bind(&theirs.appointments)
    .fetch_one(&mut *tx)
    .await?;
    let events: Value = sqlx::query_scalar(
        "SELECT COALESCE(json_agg(e ORDER BY e.received_at), '[]'::json) FROM processed_events e \
         JOIN calls c ON c.provider = e.provider AND c.provider_call_id = e.provider_call_id \
         WHERE c.id = ANY($1) AND e.company_id = c.company_id",
    )
    .bind(&theirs.calls)
    .fetch_one(&mut *tx)
    .await?;
    let all = theirs.all();
    let action = Action {
        actor,
        name: "customer export",
        company: Some(person.company),
        selection: json!({ "named_by": person.named_by() }),
        rows: &all,
    };
    audit::record(&mut tx, &action).await?;
    tx.commit().await?;
    Ok(json!({
        "company_id": person.company,
        "exported_at": chrono::Utc::now(),
        "customers": customers,
        "calls": calls,
        "call_events": events,
        "appointments": appointments,
    }))
}

/// What an erasure changed (or, in a dry run, would change), and what is left for the operator.
#[derive(Debug, Default, Serialize)]
pub struct Erasure {
    pub customers: usize,
    pub calls: usize,
    pub appointments: usize,
    /// Appointments taken out of the Cal.com push.
    pub pushes_stopped: usize,
    /// Bookings in Cal.com that hold the person's name and email.
    pub calcom_bookings: Vec<String>,
    /// Recordings the voice providers keep (the addresses callgate had; Twilio's sids).
    pub recordings: Vec<String>,
    pub applied: bool,
}

/// Erases the person in one transaction; with `dry_run` it is rolled back after counting.
pub async fn erase(pool: &PgPool, person: &Person, actor: &Actor, dry_run: bool) -> Result<Erasure, PrivacyError> {
    let mut tx = pool.begin().await?;
    let theirs = select(&mut tx, person, true).await?;
    let calcom_bookings: Vec<String> = sqlx::query_scalar(
        "SELECT calcom_booking_uid FROM appointments WHERE id = ANY($1) AND calcom_booking_uid IS NOT NULL ORDER BY 1",
    )
    .bind(&theirs.appointments)
    .fetch_all(&mut *tx)
    .await?;
    let recordings: Vec<String> = sqlx::query_scalar(
        "SELECT r FROM calls, LATERAL unnest(ARRAY[recording_sid, recording_url, recording_multichannel_url]) r \
         WHERE id = ANY($1) AND r IS NOT NULL ORDER BY 1",
    )
    .bind(&theirs.calls)
    .fetch_all(&mut *tx)
    .await?;
    let mut erasure = Erasure {
        customers: theirs.customers.len(),
        calls: theirs.calls.len(),
        appointments: theirs.appointments.len(),
        calcom_bookings,
        recordings,
        ..Erasure::default()
    };
    erasure.pushes_stopped = remove(&mut tx, &theirs).await?;
    if dry_run {
        tx.rollback().await?;
        return Ok(erasure);
    }
    let all = theirs.all();
    let action = Action {
        actor,
        name: "customer erase",
        company: Some(person.company),
        selection: json!({
            "named_by": person.named_by(),
            "customers": erasure.customers, "calls": erasure.calls, "appointments": erasure.appointments,
        }),
        rows: &all,
    };
    audit::record(&mut tx, &action).await?;
    tx.commit().await?;
    erasure.applied = true;
    Ok(erasure)
}

/// The erasure's writes; how many pushes it stopped.
async fn remove(conn: &mut PgConnection, theirs: &Theirs) -> Result<usize, sqlx::Error> {
    // The content, as retention removes it, and who called.
    sqlx::query(&format!(
        "UPDATE calls SET {CALL_CONTENT_REMOVED}, caller_raw = NULL, caller_e164 = NULL, customer_id = NULL, \
           customer_link = $2 \
         WHERE id = ANY($1)"
    ))
    .bind(&theirs.calls)
    .bind(CustomerLink::Erased.as_sql())
    .execute(&mut *conn)
    .await?;
    set_status_reason(conn, "the customer was erased").await?;
    // The push must never send the erased details: one still waiting is left for review.
    let stopped = sqlx::query(
        "UPDATE appointments SET calcom_sync_status = $2, last_sync_error = 'the customer was erased', \
           lease_owner = NULL, lease_expires_at = NULL \
         WHERE id = ANY($1) AND calcom_sync_status IN ('pending', 'in_flight')",
    )
    .bind(&theirs.appointments)
    .bind(SyncStatus::NeedsReview.as_sql())
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE appointments SET customer_id = NULL, customer_name = NULL, customer_email = NULL, notes = NULL \
         WHERE id = ANY($1)",
    )
    .bind(&theirs.appointments)
    .execute(&mut *conn)
    .await?;
    // "Cal.com BOOKING_CANCELLED: <what the caller typed>" keeps its first part.
    sqlx::query(
        "UPDATE appointment_status_history SET reason = split_part(reason, ': ', 1) \
         WHERE appointment_id = ANY($1) AND reason LIKE 'Cal.com %: %'",
    )
    .bind(&theirs.appointments)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM customers WHERE id = ANY($1)").bind(&theirs.customers).execute(&mut *conn).await?;
    Ok(usize::try_from(stopped.rows_affected()).unwrap_or(usize::MAX))
}

impl Erasure {
    /// What to print.
    pub fn lines(&self) -> Vec<String> {
        let verb = if self.applied { "erased" } else { "would erase (dry run)" };
        let mut lines = vec![format!(
            "{verb}: {} customer(s), {} call(s), {} appointment(s); {} waiting Cal.com push(es) stopped",
            self.customers, self.calls, self.appointments, self.pushes_stopped
        )];
        if !self.calcom_bookings.is_empty() {
            lines.push(format!(
                "Cal.com still holds the person's name and email in {} booking(s); cancel or delete them there:",
                self.calcom_bookings.len()
            ));
            lines.extend(self.calcom_bookings.iter().map(|uid| format!("  booking {uid}")));
        }
        if !self.recordings.is_empty() {
            lines.push("the voice provider keeps these recordings; delete them there:".to_owned());
            lines.extend(self.recordings.iter().map(|r| format!("  {r}")));
        }
        lines
    }
}
