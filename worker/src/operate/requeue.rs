//! `calcom requeue`: puts appointments whose Cal.com push ended (`failed`, `needs_review`)
//! back in the push's queue, after an operator fixed what stopped it (an event type, a key,
//! Cal.com's outage).
//!
//! Resetting the state by hand was dangerous: an appointment whose last request may have
//! reached Cal.com (`calcom_unsure`) must be looked up before anything is sent again, or it is
//! booked twice. This keeps that flag, so the push's claim looks the booking up first (and
//! adopts it if it is there); it only resets the attempts and makes the appointment due now.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::audit::{self, Action, Actor};
use crate::apply::set_status_reason;
use crate::status::{AppointmentStatus, SyncStatus};

/// What to re-queue. At least one of `appointment` and `statuses` is given (the CLI sees to
/// it).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub appointment: Option<Uuid>,
    /// Push outcomes to take: failed, needs_review. Empty: both.
    pub statuses: Vec<SyncStatus>,
    pub company: Option<Uuid>,
    /// Only those whose last error contains this text (case-insensitive).
    pub reason_contains: Option<String>,
}

/// An appointment the selection takes.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Candidate {
    pub id: Uuid,
    pub company_id: Uuid,
    pub calcom_sync_status: String,
    pub calcom_unsure: bool,
    pub sync_attempts: i32,
    pub last_sync_error: Option<String>,
    pub starts_at: DateTime<Utc>,
}

/// What a run found, and whether it changed them.
#[derive(Debug)]
pub struct Report {
    pub candidates: Vec<Candidate>,
    pub applied: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RequeueError {
    #[error("no appointment has the id {0}")]
    NoAppointment(Uuid),
    #[error("appointment {id}'s push is {status}: only failed or needs_review pushes can be re-queued")]
    NotEnded { id: Uuid, status: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

const ENDED: [SyncStatus; 2] = [SyncStatus::Failed, SyncStatus::NeedsReview];

/// Selects (and with `dry_run` false, re-queues) the appointments; the action goes to the
/// audit trail in the same transaction.
pub async fn run(pool: &PgPool, selection: &Selection, actor: &Actor, dry_run: bool) -> Result<Report, RequeueError> {
    let mut tx = pool.begin().await?;
    if let Some(id) = selection.appointment {
        check_appointment(&mut tx, id).await?;
    }
    let candidates = select(&mut tx, selection).await?;
    if dry_run {
        return Ok(Report { candidates, applied: false });
    }
    let ids: Vec<Uuid> = candidates.iter().map(|c| c.id).collect();
    set_status_reason(&mut tx, &format!("re-queued for Cal.com by {}", actor.as_str())).await?;
    sqlx::query(
        "UPDATE appointments SET calcom_sync_status = CASE WHEN calcom_unsure THEN $2 ELSE $3 END, \
         status = CASE WHEN status = $4 THEN $5 ELSE status END, \
         sync_attempts = 0, next_attempt_at = now(), lease_owner = NULL, lease_expires_at = NULL \
         WHERE id = ANY($1)",
    )
    .bind(&ids)
    .bind(SyncStatus::InFlight.as_sql())
    .bind(SyncStatus::Pending.as_sql())
    .bind(AppointmentStatus::Failed.as_sql())
    .bind(AppointmentStatus::Pending.as_sql())
    .execute(&mut *tx)
    .await?;
    let recorded = Action {
        actor,
        name: "calcom requeue",
        company: selection.company,
        selection: json!({
            "appointment": selection.appointment,
            "statuses": selection.statuses.iter().map(|s| s.as_sql()).collect::<Vec<_>>(),
            "reason_contains": selection.reason_contains,
        }),
        rows: &ids,
    };
    audit::record(&mut tx, &recorded).await?;
    tx.commit().await?;
    Ok(Report { candidates, applied: true })
}

/// A named appointment must exist and its push must have ended: anything else is refused with
/// what it is, rather than silently matching nothing.
async fn check_appointment(conn: &mut PgConnection, id: Uuid) -> Result<(), RequeueError> {
    let status: Option<String> = sqlx::query_scalar("SELECT calcom_sync_status FROM appointments WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    match status {
        None => Err(RequeueError::NoAppointment(id)),
        Some(status) if SyncStatus::from_sql(&status).is_some_and(|s| ENDED.contains(&s)) => Ok(()),
        Some(status) => Err(RequeueError::NotEnded { id, status }),
    }
}

/// The ended pushes the selection takes, locked until the transaction ends.
async fn select(conn: &mut PgConnection, selection: &Selection) -> Result<Vec<Candidate>, sqlx::Error> {
    let statuses: Vec<&str> = if selection.statuses.is_empty() { &ENDED[..] } else { &selection.statuses[..] }
        .iter()
        .filter(|s| ENDED.contains(s))
        .map(|s| s.as_sql())
        .collect();
    sqlx::query_as(
        "SELECT id, company_id, calcom_sync_status, calcom_unsure, sync_attempts, last_sync_error, starts_at \
         FROM appointments \
         WHERE calcom_sync_status = ANY($1) AND ($2::uuid IS NULL OR id = $2) AND ($3::uuid IS NULL OR company_id = $3) \
           AND ($4::text IS NULL OR strpos(lower(coalesce(last_sync_error, '')), lower($4)) > 0) \
         ORDER BY created_at, id FOR UPDATE",
    )
    .bind(statuses)
    .bind(selection.appointment)
    .bind(selection.company)
    .bind(selection.reason_contains.as_deref())
    .fetch_all(conn)
    .await
}

impl Report {
    /// What to print: the count, then up to `sample` of the appointments.
    pub fn lines(&self, sample: usize) -> Vec<String> {
        let n = self.candidates.len();
        let verb = if self.applied { "re-queued" } else { "would re-queue (dry run)" };
        let mut lines = vec![format!("{verb} {n} appointment(s)")];
        for c in self.candidates.iter().take(sample) {
            lines.push(format!(
                "{} company {} {} attempts {} {}starts {} — {}",
                c.id,
                c.company_id,
                c.calcom_sync_status,
                c.sync_attempts,
                if c.calcom_unsure { "unsure (looked up first) " } else { "" },
                c.starts_at.to_rfc3339(),
                c.last_sync_error.as_deref().unwrap_or("no error recorded"),
            ));
        }
        if n > sample {
            lines.push(format!("… and {} more", n - sample));
        }
        lines
    }
}
