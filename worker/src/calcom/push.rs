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

use sqlx::PgPool;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::client::{Attendee, Booking, Budget, Client, Creation, Lookup, NewBooking};
use super::store::{self, Claim, ClaimLimits, Details};
use crate::apply::set_status_reason;
use crate::config::CalcomConfig;
use crate::dlq::{DeadLetters, Letter};
use crate::metrics::Metrics;
use crate::status::SyncStatus;

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
            .field("base_url", &self.config.api.base_url)
            .finish_non_exhaustive()
    }
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

/// How often the backlog gauges are refreshed.
const BACKLOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Pusher {
    pub fn new(
        pool: PgPool,
        client: Client,
        cipher: Arc<SecretCipher>,
        config: CalcomConfig,
        metrics: Metrics,
        dlq: DeadLetters,
    ) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_owned());
        let owner = format!("{host}:{}:{}", std::process::id(), &Uuid::new_v4().simple().to_string()[..8]);
        Self { pool, client, cipher, config, metrics, dlq, owner }
    }

    /// Claims and pushes until `shutdown`; then lets the attempts in hand finish (each is
    /// bounded by the request timeouts) so that none is cut between Cal.com's answer and the
    /// row that records it.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        tracing::info!(owner = %self.owner, base_url = %self.config.api.base_url, "Cal.com push started");
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
        match store::backlog(&self.pool).await {
            Ok((waiting, oldest)) => {
                self.metrics.calcom_backlog.set(waiting);
                self.metrics.calcom_backlog_oldest_age.set(oldest);
            }
            Err(error) => tracing::warn!(%error, "cannot measure the Cal.com backlog"),
        }
    }

    async fn claim(&self, limit: usize) -> Result<Vec<Claim>, sqlx::Error> {
        let limits = ClaimLimits {
            limit,
            rate_per_minute: self.config.api.rate_per_minute,
            burst: self.config.api.burst,
            owner: &self.owner,
            lease: self.config.lease,
        };
        store::claim(&self.pool, limits).await
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
                tracing::warn!(appointment_id = %claim.id, "the appointment was taken over (the lease ran out) or settled meanwhile (a webhook, the reconciliation); this attempt is not recorded");
            }
            Err(error) => {
                // The lease runs out and the appointment is claimed again, as unsure.
                tracing::error!(appointment_id = %claim.id, %error, "cannot record a Cal.com attempt");
            }
        }
    }

    /// One attempt: validate, look up first if unsure, create, resolve a "not available".
    async fn attempt(&self, claim: &Claim, requests: &mut u32) -> Settled {
        let details = match store::details(&self.pool, claim).await {
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
        match store::renew(&self.pool, claim, self.config.lease).await {
            Ok(true) => {}
            Ok(false) => return Settled::LeaseLost,
            Err(error) => return Settled::Retry { unsure: claim.unsure, error: format!("database: {error}") },
        }
        *requests += 1;
        let (created, budget) = self.client.create(&api_key, &booking).await;
        self.block(claim.account_id, budget).await;
        match created {
            Creation::Created(booking) => Settled::Synced { booking, how: "created" },
            Creation::NotAvailable(message) => match lookup(requests).await {
                // Our own earlier request had booked it.
                Lookup::Found(booking) => Settled::Synced { booking, how: "adopted" },
                Lookup::NotFound => Settled::Review { reason: "slot_unavailable", error: message },
                Lookup::RateLimited => Settled::RateLimited { unsure: true },
                Lookup::Failed(error) => Settled::Retry { unsure: true, error: format!("lookup: {error}") },
            },
            Creation::Refused { status, message } => Settled::Failed {
                unsure: false,
                error: format!("Cal.com refused the booking (HTTP {status}): {message}"),
            },
            Creation::RateLimited => Settled::RateLimited { unsure: claim.unsure },
            Creation::NotSent(error) => Settled::Retry { unsure: claim.unsure, error },
            Creation::Unknown { detail, .. } => Settled::Retry { unsure: true, error: detail },
        }
    }

    async fn find(&self, claim: &Claim, api_key: &Secret, details: &Details, event_type_id: i64) -> Lookup {
        let (found, budget) =
            self.client.find(api_key, &details.key, event_type_id, details.email.as_deref(), details.start).await;
        self.block(claim.account_id, budget).await;
        found
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
            Settled::Synced { booking, .. } => store::record_synced(&mut tx, claim, booking).await?,
            Settled::Failed { unsure, .. } => {
                store::record_end(&mut tx, claim, SyncStatus::Failed, *unsure, &reason).await?
            }
            Settled::Review { .. } => {
                store::record_end(&mut tx, claim, SyncStatus::NeedsReview, false, &reason).await?
            }
            Settled::Retry { unsure, .. } => {
                store::record_retry(&mut tx, claim, *unsure, &reason, self.backoff(claim.attempts)).await?
            }
            Settled::RateLimited { unsure } => store::record_rate_limited(&mut tx, claim, *unsure).await?,
        };
        tx.commit().await?;
        if !done {
            return Ok(false);
        }
        self.metrics.calcom_pushes.with_label_values(&[result]).inc();
        self.log(claim, settled, result, &reason);
        if matches!(settled, Settled::Failed { .. }) {
            self.dead_letter(claim, &reason).await;
        }
        Ok(true)
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
        let spent =
            store::spend(&self.pool, account, requests, self.config.api.burst, self.config.api.rate_per_minute).await;
        if let Err(error) = spent {
            tracing::warn!(%error, calcom_account_id = %account, "cannot charge the rate gate");
        }
    }

    /// Blocks the key when Cal.com said its budget is spent.
    async fn block(&self, account: Uuid, budget: Budget) {
        let Some(blocked_for) = budget.blocked_for else { return };
        tracing::warn!(calcom_account_id = %account, blocked_for = ?blocked_for, "Cal.com rate limit reached; the key waits");
        let blocked = store::block(&self.pool, account, blocked_for).await;
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
