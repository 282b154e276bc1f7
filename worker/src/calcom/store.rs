//! The push's SQL, apart from its protocol (`push.rs`): claiming due appointments under a
//! lease and the rate gates, reading what a booking needs, and recording how an attempt ended.
//!
//! Values written are spelled by the enums in `crate::status`. The filters on
//! `calcom_sync_status` stay literal: the partial indexes they use are defined with the same
//! literals, and a bound value would hide that from the planner (`tests/tests/schema.rs` holds
//! the spellings to the schema).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::client::Booking;
use crate::status::{AppointmentStatus, SyncStatus};

/// One claimed appointment.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct Claim {
    pub id: Uuid,
    pub company_id: Uuid,
    pub account_id: Uuid,
    /// An earlier attempt may have reached Cal.com: look before sending.
    #[sqlx(rename = "was_unsure")]
    pub unsure: bool,
    /// Attempts so far, this one included.
    #[sqlx(rename = "sync_attempts")]
    pub attempts: i32,
    /// This claim's lease: the worker's name and a token of this claim, so that one worker
    /// claiming the appointment again (its first attempt held up past the lease) holds two
    /// leases, not one, and only the current one may send or record.
    #[sqlx(rename = "lease_owner")]
    pub lease: String,
}

impl Claim {
    /// Requests the claim already charged to the key's gate (the claim's SQL charges two when
    /// a lookup comes first).
    pub fn charged(&self) -> u32 {
        if self.unsure { 2 } else { 1 }
    }
}

/// What a push needs to know about the appointment.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct Details {
    #[sqlx(rename = "idempotency_key")]
    pub key: String,
    #[sqlx(rename = "starts_at")]
    pub start: DateTime<Utc>,
    pub timezone: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    #[sqlx(rename = "calcom_event_type_id")]
    pub event_type_id: Option<i64>,
    pub service: String,
    pub api_key: Vec<u8>,
}

/// Appointments still to be booked, and how long the oldest has waited (the backlog an alert
/// watches). Over the partial index's rows only: pending and in-flight appointments.
const BACKLOG: &str = "SELECT count(*) AS waiting, \
    COALESCE(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_secs \
    FROM appointments WHERE calcom_sync_status IN ('pending', 'in_flight')";

const CLAIM: &str = "
WITH due_gates AS (
    SELECT g.gate_key
    FROM calcom_rate_gates g
    WHERE g.blocked_until <= now() AND g.next_send_at <= now()
      AND EXISTS (SELECT 1 FROM calcom_accounts ca JOIN appointments a ON a.company_id = ca.company_id
                  WHERE ca.gate_key = g.gate_key AND ca.deleted_at IS NULL
                    AND a.calcom_sync_status IN ('pending', 'in_flight')
                    AND a.next_attempt_at <= now() AND (a.lease_expires_at IS NULL OR a.lease_expires_at < now()))
    ORDER BY g.next_send_at
    LIMIT $1
    FOR UPDATE OF g SKIP LOCKED
), picked AS (
    -- One appointment per key and round: the oldest due among the companies using the key.
    SELECT d.gate_key, x.account_id, x.rate, x.id, x.calcom_unsure
    FROM due_gates d
    CROSS JOIN LATERAL (
        SELECT ca.id AS account_id, COALESCE(ca.rate_per_minute, $2) AS rate, a.id, a.calcom_unsure
        FROM calcom_accounts ca JOIN appointments a ON a.company_id = ca.company_id
        WHERE ca.gate_key = d.gate_key AND ca.deleted_at IS NULL
          AND a.calcom_sync_status IN ('pending', 'in_flight')
          AND a.next_attempt_at <= now() AND (a.lease_expires_at IS NULL OR a.lease_expires_at < now())
        ORDER BY a.next_attempt_at
        LIMIT 1
        FOR UPDATE OF a SKIP LOCKED
    ) x
), gated AS (
    -- One request charged, two when a lookup comes first.
    UPDATE calcom_rate_gates g
    SET next_send_at = callgate_gate_advance(g.next_send_at, p.rate, $3, CASE WHEN p.calcom_unsure THEN 2 ELSE 1 END)
    FROM picked p WHERE g.gate_key = p.gate_key
)
UPDATE appointments a
SET lease_owner = $4 || '/' || gen_random_uuid(), lease_expires_at = now() + $5 * interval '1 second',
    calcom_unsure = true, sync_attempts = a.sync_attempts + 1
FROM picked p
WHERE a.id = p.id
RETURNING a.id, a.company_id, p.account_id, p.calcom_unsure AS was_unsure, a.sync_attempts, a.lease_owner";

const DETAILS: &str = "
SELECT a.idempotency_key, a.starts_at, a.timezone, s.name AS service, s.calcom_event_type_id,
       COALESCE(a.customer_name, c.name) AS name, COALESCE(a.customer_email, c.email) AS email,
       c.e164 AS phone, ca.api_key
FROM appointments a
JOIN services s ON s.company_id = a.company_id AND s.id = a.service_id
JOIN calcom_accounts ca ON ca.company_id = a.company_id AND ca.id = $2
LEFT JOIN customers c ON c.company_id = a.company_id AND c.id = a.customer_id
WHERE a.id = $1";

/// The claim's settings: how many appointments at most, the default rate and burst of a key,
/// this worker's name, and the lease.
#[derive(Debug, Clone, Copy)]
pub(super) struct ClaimLimits<'a> {
    pub limit: usize,
    pub rate_per_minute: u32,
    pub burst: u32,
    pub owner: &'a str,
    pub lease: Duration,
}

/// Appointments waiting to be booked, and how long the oldest has waited (seconds).
pub(super) async fn backlog(pool: &PgPool) -> Result<(i64, f64), sqlx::Error> {
    sqlx::query_as(BACKLOG).fetch_one(pool).await
}

/// Claims due appointments, at most one per key, under a lease.
pub(super) async fn claim(pool: &PgPool, limits: ClaimLimits<'_>) -> Result<Vec<Claim>, sqlx::Error> {
    sqlx::query_as(CLAIM)
        .bind(i64::try_from(limits.limit).unwrap_or(i64::MAX))
        .bind(f64::from(limits.rate_per_minute))
        .bind(f64::from(limits.burst))
        .bind(limits.owner)
        .bind(limits.lease.as_secs_f64())
        .fetch_all(pool)
        .await
}

pub(super) async fn details(pool: &PgPool, claim: &Claim) -> Result<Details, sqlx::Error> {
    sqlx::query_as(DETAILS).bind(claim.id).bind(claim.account_id).fetch_one(pool).await
}

/// Renews the lease if this claim still holds it; false when it ran out or another worker took
/// the appointment over.
pub(super) async fn renew(pool: &PgPool, claim: &Claim, lease: Duration) -> Result<bool, sqlx::Error> {
    let renewed = sqlx::query(
        "UPDATE appointments SET lease_expires_at = now() + $3 * interval '1 second' \
         WHERE id = $1 AND lease_owner = $2 AND lease_expires_at > now()",
    )
    .bind(claim.id)
    .bind(&claim.lease)
    .bind(lease.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(renewed.rows_affected() == 1)
}

/// Records the booking, whoever holds the lease (a booking is a fact); false when the
/// appointment was no longer waiting for one. `booking.status` is Cal.com's (accepted, pending,
/// cancelled, rejected): a cancelled or rejected booking makes the appointment so, any other
/// books a pending one.
pub(super) async fn record_synced(
    conn: &mut PgConnection,
    claim: &Claim,
    booking: &Booking,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE appointments SET calcom_booking_uid = $2, calcom_booking_id = $3, calcom_sync_status = $5, \
         status = CASE WHEN $4 = 'cancelled' THEN $6 WHEN $4 = 'rejected' THEN $7 \
                       WHEN status = $8 AND $4 <> 'pending' THEN $9 ELSE status END, \
         calcom_unsure = false, last_sync_error = NULL, synced_at = now(), \
         lease_owner = NULL, lease_expires_at = NULL \
         WHERE id = $1 AND calcom_sync_status IN ('pending', 'in_flight', 'failed')",
    )
    .bind(claim.id)
    .bind(&booking.uid)
    .bind(booking.id)
    .bind(&booking.status)
    .bind(SyncStatus::Synced.as_sql())
    .bind(AppointmentStatus::Cancelled.as_sql())
    .bind(AppointmentStatus::Rejected.as_sql())
    .bind(AppointmentStatus::Pending.as_sql())
    .bind(AppointmentStatus::Booked.as_sql())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends the push in `sync_status` (failed or needs_review); a failed push fails a pending
/// appointment too. False when the lease was lost.
pub(super) async fn record_end(
    conn: &mut PgConnection,
    claim: &Claim,
    sync_status: SyncStatus,
    unsure: bool,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE appointments SET calcom_sync_status = $3, calcom_unsure = $4, last_sync_error = $5, \
         status = CASE WHEN $3 = $6 AND status = $7 THEN $8 ELSE status END, \
         lease_owner = NULL, lease_expires_at = NULL \
         WHERE id = $1 AND lease_owner = $2 AND calcom_sync_status IN ('pending', 'in_flight')",
    )
    .bind(claim.id)
    .bind(&claim.lease)
    .bind(sync_status.as_sql())
    .bind(unsure)
    .bind(reason)
    .bind(SyncStatus::Failed.as_sql())
    .bind(AppointmentStatus::Pending.as_sql())
    .bind(AppointmentStatus::Failed.as_sql())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Puts the appointment back for another attempt after `delay`; `unsure` when a request may
/// have reached Cal.com. False when the lease was lost.
pub(super) async fn record_retry(
    conn: &mut PgConnection,
    claim: &Claim,
    unsure: bool,
    reason: &str,
    delay: Duration,
) -> Result<bool, sqlx::Error> {
    let status = if unsure { SyncStatus::InFlight } else { SyncStatus::Pending };
    let done = sqlx::query(
        "UPDATE appointments SET calcom_sync_status = $3, calcom_unsure = $4, last_sync_error = $5, \
         next_attempt_at = now() + $6 * interval '1 second', lease_owner = NULL, lease_expires_at = NULL \
         WHERE id = $1 AND lease_owner = $2 AND calcom_sync_status IN ('pending', 'in_flight')",
    )
    .bind(claim.id)
    .bind(&claim.lease)
    .bind(status.as_sql())
    .bind(unsure)
    .bind(reason)
    .bind(delay.as_secs_f64())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Not an attempt: nothing was done, the key was over its limit. The key's block decides when
/// the appointment goes again. False when the lease was lost.
pub(super) async fn record_rate_limited(
    conn: &mut PgConnection,
    claim: &Claim,
    unsure: bool,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE appointments SET calcom_unsure = $3, sync_attempts = sync_attempts - 1, \
         next_attempt_at = GREATEST(now(), (SELECT g.blocked_until FROM calcom_rate_gates g \
                                            JOIN calcom_accounts ca ON ca.gate_key = g.gate_key \
                                            WHERE ca.id = $4)), \
         lease_owner = NULL, lease_expires_at = NULL \
         WHERE id = $1 AND lease_owner = $2 AND calcom_sync_status IN ('pending', 'in_flight')",
    )
    .bind(claim.id)
    .bind(&claim.lease)
    .bind(unsure)
    .bind(claim.account_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Charges `requests` the claim did not pay for to the key's gate.
pub(super) async fn spend(
    pool: &PgPool,
    account: Uuid,
    requests: u32,
    burst: u32,
    rate_per_minute: u32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE calcom_rate_gates g \
         SET next_send_at = callgate_gate_advance(g.next_send_at, COALESCE(ca.rate_per_minute, $4), $3, $2) \
         FROM calcom_accounts ca WHERE ca.id = $1 AND g.gate_key = ca.gate_key",
    )
    .bind(account)
    .bind(f64::from(requests))
    .bind(f64::from(burst))
    .bind(f64::from(rate_per_minute))
    .execute(pool)
    .await?;
    Ok(())
}

/// Blocks the key for `blocked_for` (Cal.com said its budget is spent).
pub(super) async fn block(pool: &PgPool, account: Uuid, blocked_for: Duration) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE calcom_rate_gates g SET blocked_until = GREATEST(g.blocked_until, now() + $2 * interval '1 second') \
         FROM calcom_accounts ca WHERE ca.id = $1 AND g.gate_key = ca.gate_key",
    )
    .bind(account)
    .bind(blocked_for.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

/// An account whose reconciliation this process runs now.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct ReconcileClaim {
    #[sqlx(rename = "calcom_account_id")]
    pub account_id: Uuid,
    pub company_id: Uuid,
    /// Bookings created or changed before this were read by an earlier pass.
    pub watermark: DateTime<Utc>,
    pub api_key: Vec<u8>,
    /// The Cal.com event types of the company's services: the bookings that can be ours.
    pub event_types: Vec<i64>,
}

/// Takes the most overdue account (or, with $2, that company's account whenever it is due),
/// pushing its next run out by the lease ($1 seconds): a worker dying mid-pass leaves it to
/// another after that.
const RECONCILE_CLAIM: &str = "
UPDATE calcom_reconcile r SET next_run_at = now() + $1 * interval '1 second'
FROM calcom_accounts ca
WHERE ca.id = r.calcom_account_id
  AND r.calcom_account_id = (
    SELECT r2.calcom_account_id FROM calcom_reconcile r2
    JOIN calcom_accounts ca2 ON ca2.id = r2.calcom_account_id AND ca2.deleted_at IS NULL
    WHERE CASE WHEN $2::uuid IS NULL THEN r2.next_run_at <= now() ELSE r2.company_id = $2 END
    ORDER BY r2.next_run_at
    LIMIT 1
    FOR UPDATE OF r2 SKIP LOCKED)
RETURNING r.calcom_account_id, r.company_id, r.watermark, ca.api_key,
  ARRAY(SELECT DISTINCT s.calcom_event_type_id FROM services s
        WHERE s.company_id = r.company_id AND s.calcom_event_type_id IS NOT NULL ORDER BY 1) AS event_types";

/// Claims an account to reconcile: the most overdue one, or `company`'s now.
pub(super) async fn claim_reconcile(
    pool: &PgPool,
    company: Option<Uuid>,
    lease: Duration,
) -> Result<Option<ReconcileClaim>, sqlx::Error> {
    sqlx::query_as(RECONCILE_CLAIM).bind(lease.as_secs_f64()).bind(company).fetch_optional(pool).await
}

/// How a pass ended: the watermark it reached, when the next is due, what it found.
#[derive(Debug)]
pub(super) struct ReconcileEnd<'a> {
    pub watermark: DateTime<Utc>,
    pub next_in: Duration,
    pub result: serde_json::Value,
    pub error: Option<&'a str>,
}

/// Records the end of a pass, in the transaction that applied what it found. The watermark
/// only moves forward: two passes of one account (a worker's and an operator's) may end in
/// either order, and each read everything before the watermark it reached.
pub(super) async fn finish_reconcile(
    conn: &mut PgConnection,
    account: Uuid,
    end: &ReconcileEnd<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE calcom_reconcile SET watermark = GREATEST(watermark, $2), \
         next_run_at = now() + $3 * interval '1 second', last_run_at = now(), last_result = $4, last_error = $5 \
         WHERE calcom_account_id = $1",
    )
    .bind(account)
    .bind(end.watermark)
    .bind(end.next_in.as_secs_f64())
    .bind(&end.result)
    .bind(end.error)
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes one request from the key's gate, like a push does; otherwise how long until the gate
/// lets one through.
pub(super) async fn take_turn(
    pool: &PgPool,
    account: Uuid,
    burst: u32,
    rate_per_minute: u32,
) -> Result<Option<Duration>, sqlx::Error> {
    let (taken, wait): (bool, f64) = sqlx::query_as(
        "WITH gate AS (
             SELECT g.gate_key, COALESCE(ca.rate_per_minute, $3) AS rate, g.next_send_at, g.blocked_until
             FROM calcom_rate_gates g JOIN calcom_accounts ca ON ca.gate_key = g.gate_key WHERE ca.id = $1
         ), taken AS (
             UPDATE calcom_rate_gates g SET next_send_at = callgate_gate_advance(g.next_send_at, gate.rate, $2, 1)
             FROM gate WHERE g.gate_key = gate.gate_key AND g.blocked_until <= now() AND g.next_send_at <= now()
             RETURNING 1
         )
         SELECT EXISTS (SELECT 1 FROM taken),
                COALESCE((SELECT extract(epoch FROM GREATEST(next_send_at, blocked_until) - now()) FROM gate), 0)::float8",
    )
    .bind(account)
    .bind(f64::from(burst))
    .bind(f64::from(rate_per_minute))
    .fetch_one(pool)
    .await?;
    Ok(if taken { None } else { Some(Duration::from_secs_f64(wait.clamp(0.01, 3600.0))) })
}
