//! The booking push: every pending appointment becomes exactly one Cal.com booking, or ends
//! `failed` / `needs_review` with its reason.
//!
//! Any number of workers run it. A claim takes due appointments with `FOR UPDATE SKIP LOCKED`
//! and a lease: at most one per company per round, from the companies whose API key has budget
//! left (the rate gate in `calcom_rate_gates`, one per API key, shared by every worker and by the
//! companies using the key), oldest gate first — so
//! a busy company cannot starve the others. The claim also marks the appointment *unsure*:
//! from then on, until an answer settles it, a request may have reached Cal.com. An unsure
//! appointment is looked up (by our key in the booking metadata) before anything is sent again,
//! which is what makes timeouts, 5xx, resets and crashed workers harmless. Cal.com has no
//! idempotency key of its own (docs/calcom.md §2).

use std::sync::Arc;
use std::time::Duration;

use callgate_contract::SecretCipher;
use callgate_contract::secrets::{CalcomColumn, Secret, calcom_binding};
use callgate_ops::Shutdown;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row as _};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::client::{Attendee, Booking, Budget, Client, Created, Lookup, NewBooking};
use crate::apply::set_status_reason;
use crate::config::CalcomConfig;
use crate::dlq::{DeadLetters, Letter};
use crate::metrics::Metrics;

/// Everything the push needs, shared by its tasks.
pub struct Pusher {
    pool: PgPool,
    client: Client,
    cipher: Arc<SecretCipher>,
    config: CalcomConfig,
    metrics: Metrics,
    dlq: DeadLetters,
    /// This process's name on the leases it takes.
    owner: String,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher")
            .field("owner", &self.owner)
            .field("base_url", &self.config.base_url)
            .finish_non_exhaustive()
    }
}

/// One claimed appointment.
#[derive(Debug, Clone)]
struct Claim {
    id: Uuid,
    company_id: Uuid,
    account_id: Uuid,
    /// An earlier attempt may have reached Cal.com: look before sending.
    unsure: bool,
    /// Attempts so far, this one included.
    attempts: i32,
    /// This claim's lease: the worker's name and a token of this claim, so that one worker
    /// claiming the appointment again (its first attempt held up past the lease) holds two
    /// leases, not one, and only the current one may send or record.
    lease: String,
}

impl Claim {
    /// Requests the claim already charged to the key's gate (the claim's SQL charges two when
    /// a lookup comes first).
    fn charged(&self) -> u32 {
        if self.unsure { 2 } else { 1 }
    }
}

/// What a push needs to know about the appointment.
#[derive(Debug)]
struct Details {
    key: String,
    start: DateTime<Utc>,
    timezone: String,
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    event_type_id: Option<i64>,
    service: String,
    api_key: Vec<u8>,
}

/// How an attempt ended.
#[derive(Debug)]
enum Settled {
    Synced {
        booking: Booking,
        how: &'static str,
    },
    /// Try again later. `unsure`: a request may have reached Cal.com.
    Retry {
        unsure: bool,
        error: String,
    },
    /// The key is over its limit; nothing was done.
    RateLimited {
        unsure: bool,
    },
    Failed {
        unsure: bool,
        error: String,
    },
    Review {
        reason: &'static str,
        error: String,
    },
    /// The lease ran out and another worker holds the appointment now: nothing was sent, and
    /// nothing is recorded (the holder does that).
    LeaseLost,
}

/// Appointments still to be booked, and how long the oldest has waited (the backlog an alert
/// watches). Over the partial index's rows only: pending and in-flight appointments.
const BACKLOG: &str = "SELECT count(*) AS waiting, \
    COALESCE(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_secs \
    FROM appointments WHERE calcom_sync_status IN ('pending', 'in_flight')";

/// How often the backlog gauges are refreshed.
const BACKLOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

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

impl Pusher {
    pub fn new(
        pool: PgPool,
        cipher: Arc<SecretCipher>,
        config: CalcomConfig,
        metrics: Metrics,
        dlq: DeadLetters,
    ) -> Result<Self, reqwest::Error> {
        let client = Client::new(&config, metrics.clone())?;
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_owned());
        let owner = format!("{host}:{}:{}", std::process::id(), &Uuid::new_v4().simple().to_string()[..8]);
        Ok(Self { pool, client, cipher, config, metrics, dlq, owner })
    }

    /// Claims and pushes until `shutdown`; then lets the attempts in hand finish (each is
    /// bounded by the request timeouts) so that none is cut between Cal.com's answer and the
    /// row that records it.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        tracing::info!(owner = %self.owner, base_url = %self.config.base_url, "Cal.com push started");
        let mut tasks = JoinSet::new();
        let mut backlog_at: Option<tokio::time::Instant> = None;
        loop {
            while tasks.try_join_next().is_some() {}
            if backlog_at.is_none_or(|at| at.elapsed() >= BACKLOG_EVERY) {
                self.measure_backlog().await;
                backlog_at = Some(tokio::time::Instant::now());
            }
            let free = self.config.concurrency.saturating_sub(tasks.len());
            if free > 0 {
                match self.claim(free).await {
                    Ok(claims) if !claims.is_empty() => {
                        for claim in claims {
                            let this = self.clone();
                            tasks.spawn(async move { this.push(claim).await });
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "cannot claim appointments; trying again"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                _ = tasks.join_next(), if !tasks.is_empty() => {}
                () = shutdown.requested() => break,
            }
        }
        while tasks.join_next().await.is_some() {}
        tracing::info!("Cal.com push stopped");
    }

    async fn measure_backlog(&self) {
        match sqlx::query_as::<_, (i64, f64)>(BACKLOG).fetch_one(&self.pool).await {
            Ok((waiting, oldest)) => {
                self.metrics.calcom_backlog.set(waiting);
                self.metrics.calcom_backlog_oldest_age.set(oldest);
            }
            Err(error) => tracing::warn!(%error, "cannot measure the Cal.com backlog"),
        }
    }

    async fn claim(&self, limit: usize) -> Result<Vec<Claim>, sqlx::Error> {
        let rows = sqlx::query(CLAIM)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(f64::from(self.config.rate_per_minute))
            .bind(f64::from(self.config.burst))
            .bind(&self.owner)
            .bind(self.config.lease.as_secs_f64())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Claim {
                    id: row.try_get("id")?,
                    company_id: row.try_get("company_id")?,
                    account_id: row.try_get("account_id")?,
                    unsure: row.try_get("was_unsure")?,
                    attempts: row.try_get("sync_attempts")?,
                    lease: row.try_get("lease_owner")?,
                })
            })
            .collect()
    }

    async fn push(&self, claim: Claim) {
        self.metrics.calcom_in_flight.inc();
        let mut requests = 0;
        let settled = self.out_of_attempts(&claim, self.attempt(&claim, &mut requests).await);
        let result = self.settle(&claim, &settled).await;
        if requests > claim.charged() {
            self.spend(claim.account_id, requests - claim.charged()).await;
        }
        self.metrics.calcom_in_flight.dec();
        match result {
            Ok(true) => {}
            Ok(false) => {
                self.metrics.calcom_pushes.with_label_values(&["lease_lost"]).inc();
                tracing::warn!(appointment_id = %claim.id, "the lease ran out and another worker holds the appointment; this attempt is not recorded");
            }
            Err(error) => {
                // The lease runs out and the appointment is claimed again, as unsure.
                tracing::error!(appointment_id = %claim.id, %error, "cannot record a Cal.com attempt");
            }
        }
    }

    /// One attempt: validate, look up first if unsure, create, resolve a "not available".
    async fn attempt(&self, claim: &Claim, requests: &mut u32) -> Settled {
        let details = match self.details(claim).await {
            Ok(details) => details,
            Err(error) => return Settled::Retry { unsure: claim.unsure, error: format!("database: {error}") },
        };
        let Some(event_type_id) = details.event_type_id else {
            let error = format!("service {:?} has no Cal.com event type", details.service);
            return Settled::Review { reason: "no_event_type", error };
        };
        let Some(name) = details.name.clone() else {
            return Settled::Review { reason: "no_attendee_name", error: "the caller's name is unknown".into() };
        };
        if details.email.is_none() && details.phone.is_none() {
            return Settled::Review { reason: "no_attendee_contact", error: "no email or phone for the caller".into() };
        }
        let api_key = match self.cipher.open(&details.api_key, &calcom_binding(claim.account_id, CalcomColumn::ApiKey))
        {
            Ok(key) => key,
            Err(error) => {
                tracing::error!(calcom_account_id = %claim.account_id, %error, "Cal.com API key does not open");
                return Settled::Retry { unsure: claim.unsure, error: "the Cal.com API key cannot be opened".into() };
            }
        };
        let lookup = |requests: &mut u32| {
            *requests += 1;
            self.find(claim, &api_key, &details, event_type_id)
        };

        if claim.unsure {
            match lookup(requests).await {
                Lookup::Found(booking) => return Settled::Synced { booking, how: "adopted" },
                Lookup::NotFound => {}
                Lookup::RateLimited => return Settled::RateLimited { unsure: true },
                Lookup::Failed(error) => return Settled::Retry { unsure: true, error: format!("lookup: {error}") },
            }
        }
        let booking = NewBooking {
            event_type_id,
            start: details.start,
            attendee: Attendee {
                name,
                email: details.email.clone(),
                phone: details.phone.clone(),
                time_zone: details.timezone.clone(),
            },
            key: details.key.clone(),
        };
        // The lease is a fence: a create goes only from the worker that holds the appointment,
        // with the lease renewed so that it outlasts the request (the lease is at least three
        // request timeouts). Without it, a worker held up past its lease would send beside the
        // worker that took over.
        match self.renew(claim).await {
            Ok(true) => {}
            Ok(false) => return Settled::LeaseLost,
            Err(error) => return Settled::Retry { unsure: claim.unsure, error: format!("database: {error}") },
        }
        *requests += 1;
        let (created, budget) = self.client.create(&api_key, &booking).await;
        self.block(claim.account_id, budget).await;
        match created {
            Created::Created(booking) => Settled::Synced { booking, how: "created" },
            Created::NotAvailable(message) => match lookup(requests).await {
                // Our own earlier request had booked it.
                Lookup::Found(booking) => Settled::Synced { booking, how: "adopted" },
                Lookup::NotFound => Settled::Review { reason: "slot_unavailable", error: message },
                Lookup::RateLimited => Settled::RateLimited { unsure: true },
                Lookup::Failed(error) => Settled::Retry { unsure: true, error: format!("lookup: {error}") },
            },
            Created::Refused { status, message } => Settled::Failed {
                unsure: false,
                error: format!("Cal.com refused the booking (HTTP {status}): {message}"),
            },
            Created::RateLimited => Settled::RateLimited { unsure: claim.unsure },
            Created::NotSent(error) => Settled::Retry { unsure: claim.unsure, error },
            Created::Unknown { detail, .. } => Settled::Retry { unsure: true, error: detail },
        }
    }

    async fn find(&self, claim: &Claim, api_key: &Secret, details: &Details, event_type_id: i64) -> Lookup {
        let (found, budget) =
            self.client.find(api_key, &details.key, event_type_id, details.email.as_deref(), details.start).await;
        self.block(claim.account_id, budget).await;
        found
    }

    /// Renews this worker's lease if it still holds it; false when it ran out or another worker
    /// took the appointment over.
    async fn renew(&self, claim: &Claim) -> Result<bool, sqlx::Error> {
        let renewed = sqlx::query(
            "UPDATE appointments SET lease_expires_at = now() + $3 * interval '1 second' \
             WHERE id = $1 AND lease_owner = $2 AND lease_expires_at > now()",
        )
        .bind(claim.id)
        .bind(&claim.lease)
        .bind(self.config.lease.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    async fn details(&self, claim: &Claim) -> Result<Details, sqlx::Error> {
        let row = sqlx::query(DETAILS).bind(claim.id).bind(claim.account_id).fetch_one(&self.pool).await?;
        Ok(Details {
            key: row.try_get("idempotency_key")?,
            start: row.try_get("starts_at")?,
            timezone: row.try_get("timezone")?,
            name: row.try_get("name")?,
            email: row.try_get("email")?,
            phone: row.try_get("phone")?,
            event_type_id: row.try_get("calcom_event_type_id")?,
            service: row.try_get("service")?,
            api_key: row.try_get("api_key")?,
        })
    }

    /// A retry after the last allowed attempt is a failure.
    fn out_of_attempts(&self, claim: &Claim, settled: Settled) -> Settled {
        match settled {
            Settled::Retry { unsure, error } if claim.attempts >= self.max_attempts() => {
                Settled::Failed { unsure, error: format!("gave up after {} attempts: {error}", claim.attempts) }
            }
            other => other,
        }
    }

    /// The metric result and the status-history reason of an attempt.
    fn outcome(settled: &Settled) -> (&'static str, String) {
        match settled {
            Settled::Synced { booking, how } if booking.is_cancelled() => (
                how_label(how),
                format!(
                    "Cal.com booking {} ({how}), {} in Cal.com before its answer reached us",
                    booking.uid, booking.status
                ),
            ),
            Settled::Synced { booking, how } => (how_label(how), format!("Cal.com booking {} ({how})", booking.uid)),
            Settled::Retry { error, .. } => ("retry", error.clone()),
            Settled::RateLimited { .. } => ("rate_limited", "rate limited by Cal.com".to_owned()),
            Settled::Failed { error, .. } => ("failed", error.clone()),
            Settled::Review { reason, error } => ("needs_review", format!("{reason}: {error}")),
            Settled::LeaseLost => ("lease_lost", "the lease ran out before the request".to_owned()),
        }
    }

    /// Records how the attempt ended, with its reason in the status history. False when the
    /// lease was lost meanwhile (only a booking is recorded whoever holds the lease).
    async fn settle(&self, claim: &Claim, settled: &Settled) -> Result<bool, sqlx::Error> {
        let (result, reason) = Self::outcome(settled);
        let mut tx = self.pool.begin().await?;
        set_status_reason(&mut tx, &reason).await?;
        let done = match settled {
            // Nothing to record: the worker holding the lease does that (the transaction is
            // dropped, so rolled back).
            Settled::LeaseLost => return Ok(false),
            Settled::Synced { booking, .. } => {
                sqlx::query(
                    "UPDATE appointments SET calcom_booking_uid = $2, calcom_booking_id = $3, \
                     calcom_sync_status = 'synced', \
                     status = CASE WHEN $4 IN ('cancelled', 'rejected') THEN $4 \
                                   WHEN status = 'pending' AND $4 <> 'pending' THEN 'booked' ELSE status END, \
                     calcom_unsure = false, last_sync_error = NULL, synced_at = now(), \
                     lease_owner = NULL, lease_expires_at = NULL \
                     WHERE id = $1 AND calcom_sync_status IN ('pending', 'in_flight', 'failed')",
                )
                .bind(claim.id)
                .bind(&booking.uid)
                .bind(booking.id)
                .bind(&booking.status)
                .execute(&mut *tx)
                .await?
            }
            Settled::Failed { unsure, .. } => {
                self.terminal(claim, "failed", *unsure, &reason).execute(&mut *tx).await?
            }
            Settled::Review { .. } => self.terminal(claim, "needs_review", false, &reason).execute(&mut *tx).await?,
            Settled::Retry { unsure, .. } => {
                let delay = self.backoff(claim.attempts);
                sqlx::query(
                    "UPDATE appointments SET calcom_sync_status = $3, calcom_unsure = $4, last_sync_error = $5, \
                     next_attempt_at = now() + $6 * interval '1 second', lease_owner = NULL, lease_expires_at = NULL \
                     WHERE id = $1 AND lease_owner = $2 AND calcom_sync_status IN ('pending', 'in_flight')",
                )
                .bind(claim.id)
                .bind(&claim.lease)
                .bind(if *unsure { "in_flight" } else { "pending" })
                .bind(unsure)
                .bind(&reason)
                .bind(delay.as_secs_f64())
                .execute(&mut *tx)
                .await?
            }
            Settled::RateLimited { unsure } => {
                // Not an attempt: nothing was done. The key's block decides when it goes again.
                sqlx::query(
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
                .execute(&mut *tx)
                .await?
            }
        };
        tx.commit().await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        self.metrics.calcom_pushes.with_label_values(&[result]).inc();
        self.log(claim, settled, result, &reason);
        if matches!(settled, Settled::Failed { .. }) {
            self.dead_letter(claim, &reason).await;
        }
        Ok(true)
    }

    /// The UPDATE that ends an appointment's push in `sync_status`.
    fn terminal<'q>(
        &'q self,
        claim: &'q Claim,
        sync_status: &'static str,
        unsure: bool,
        reason: &'q str,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(
            "UPDATE appointments SET calcom_sync_status = $3, calcom_unsure = $4, last_sync_error = $5, \
             status = CASE WHEN $3 = 'failed' AND status = 'pending' THEN 'failed' ELSE status END, \
             lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND lease_owner = $2 AND calcom_sync_status IN ('pending', 'in_flight')",
        )
        .bind(claim.id)
        .bind(&claim.lease)
        .bind(sync_status)
        .bind(unsure)
        .bind(reason)
    }

    fn max_attempts(&self) -> i32 {
        i32::try_from(self.config.max_attempts).unwrap_or(i32::MAX)
    }

    /// The wait after attempt `attempts` (1 for the first): the shared schedule from
    /// --calcom-initial-backoff up to --calcom-max-backoff.
    fn backoff(&self, attempts: i32) -> Duration {
        let retry = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0);
        callgate_ops::backoff::delay(retry, self.config.initial_backoff, self.config.max_backoff)
    }

    /// Charges requests the claim did not pay for (a second lookup) to the key's gate.
    async fn spend(&self, account: Uuid, requests: u32) {
        let spent = sqlx::query(
            "UPDATE calcom_rate_gates g \
             SET next_send_at = callgate_gate_advance(g.next_send_at, COALESCE(ca.rate_per_minute, $4), $3, $2) \
             FROM calcom_accounts ca WHERE ca.id = $1 AND g.gate_key = ca.gate_key",
        )
        .bind(account)
        .bind(f64::from(requests))
        .bind(f64::from(self.config.burst))
        .bind(f64::from(self.config.rate_per_minute))
        .execute(&self.pool)
        .await;
        if let Err(error) = spent {
            tracing::warn!(%error, calcom_account_id = %account, "cannot charge the rate gate");
        }
    }

    /// Blocks the key when Cal.com said its budget is spent.
    async fn block(&self, account: Uuid, budget: Budget) {
        let Some(blocked_for) = budget.blocked_for else { return };
        tracing::warn!(calcom_account_id = %account, blocked_for = ?blocked_for, "Cal.com rate limit reached; the key waits");
        let blocked = sqlx::query(
            "UPDATE calcom_rate_gates g SET blocked_until = GREATEST(g.blocked_until, now() + $2 * interval '1 second') \
             FROM calcom_accounts ca WHERE ca.id = $1 AND g.gate_key = ca.gate_key",
        )
        .bind(account)
        .bind(blocked_for.as_secs_f64())
        .execute(&self.pool)
        .await;
        if let Err(error) = blocked {
            tracing::warn!(%error, calcom_account_id = %account, "cannot record the Cal.com block");
        }
    }

    fn log(&self, claim: &Claim, settled: &Settled, result: &str, reason: &str) {
        let (id, company, attempts) = (claim.id, claim.company_id, claim.attempts);
        match settled {
            Settled::Synced { .. } => {
                tracing::info!(appointment_id = %id, company_id = %company, attempts, result, %reason, "appointment synced to Cal.com")
            }
            Settled::Retry { .. } | Settled::RateLimited { .. } => {
                tracing::warn!(appointment_id = %id, company_id = %company, attempts, result, %reason, "Cal.com push will be retried")
            }
            _ => {
                tracing::error!(appointment_id = %id, company_id = %company, attempts, result, %reason, "Cal.com push ended without a booking")
            }
        }
    }

    /// A failed push also goes to the dead-letter topic, where the SREs' tooling already looks.
    /// The row says `failed` with its reason whatever happens here.
    async fn dead_letter(&self, claim: &Claim, reason: &str) {
        let value = serde_json::json!({
            "kind": "calcom_push_failed",
            "appointment_id": claim.id,
            "company_id": claim.company_id,
            "attempts": claim.attempts,
            "error": reason,
        })
        .to_string();
        let key = claim.id.to_string();
        let letter = Letter {
            key: Some(key.as_bytes()),
            payload: Some(value.as_bytes()),
            original: None,
            reason: "calcom",
            error: reason,
            source: None,
        };
        if let Err(error) = self.dlq.send(&letter).await {
            tracing::error!(appointment_id = %claim.id, %error, "failed push not written to the dead-letter topic");
        }
    }
}

fn how_label(how: &str) -> &'static str {
    if how == "adopted" { "adopted" } else { "synced" }
}
