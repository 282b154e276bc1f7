//! Reconciliation with Cal.com: what its webhooks did not bring, read from its bookings list.
//!
//! One of Cal.com's webhook delivery paths never retries (docs/calcom.md §4), and a push whose
//! answer was lost only learns its booking on its next attempt. So each connected account is
//! read now and then: the bookings of the company's event types created or changed since a
//! stored watermark (Cal.com's own `createdAt` / `updatedAt`, so our clock does not matter;
//! `updatedAt` is null until a booking first changes, hence both). Each is turned into the
//! booking changes it stands for and applied by the same rules as a webhook
//! (`crate::apply::booking`), so reading a booking twice, or after its webhook, changes
//! nothing.
//!
//! Requests are taken from the key's rate gate like the push's, and a pass reads a bounded
//! number of pages; one that stops early (the gate, an error, the page limit) moves the
//! watermark only as far as it read, and the next pass goes on from there.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use callgate_contract::SecretCipher;
use callgate_contract::booking::{BookingChange, Trigger};
use callgate_contract::secrets::{CalcomColumn, calcom_binding};
use callgate_ops::Shutdown;
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::client::{Changed, Client, Listed, Listing, Since};
use super::store::{self, ReconcileClaim, ReconcileEnd};
use crate::apply::booking::{ChangeResult, apply_change};
use crate::config::CalcomApi;
use crate::metrics::Metrics;

/// Bookings are read from this long before the watermark: a booking Cal.com committed late
/// with an earlier timestamp is still seen. Reading one twice changes nothing.
const OVERLAP: chrono::Duration = chrono::Duration::minutes(2);
/// Pages of one listing per pass (250 bookings each); the next pass goes on from there.
const MAX_PAGES: usize = 4;
/// Longest wait for the key's gate within a pass; past it the pass stops and goes on later.
const MAX_GATE_WAIT: Duration = Duration::from_secs(10);
/// How long a claimed account stays with this process.
const LEASE: Duration = Duration::from_secs(300);
/// How often a worker looks for accounts due for a pass.
const CHECK_EVERY: Duration = Duration::from_secs(10);
/// The status-history reason of what a pass applies.
const ORIGIN: &str = "Cal.com reconciliation";

/// What a pass read from Cal.com.
#[derive(Debug, Default)]
pub struct Reading {
    /// Each booking once, oldest change first.
    pub bookings: Vec<Listed>,
    /// Every booking created or changed before this was read.
    pub reached: Option<DateTime<Utc>>,
    /// Why the pass stopped before the end of the listings.
    pub stopped: Option<String>,
}

/// What one listing read.
#[derive(Debug, Default)]
struct ListingRead {
    seen: Vec<Listed>,
    /// Why it stopped before its end.
    stopped: Option<String>,
    /// When it stopped: how far it got (the newest time it read), if anywhere.
    reached: Option<DateTime<Utc>>,
}

impl ListingRead {
    /// Stops here: everything up to the newest booking read (by the time listed) was seen.
    fn cut(mut self, since: Since, reason: String) -> Self {
        self.reached = self
            .seen
            .iter()
            .filter_map(|b| match since {
                Since::Created => b.created_at,
                Since::Updated => b.updated_at,
            })
            .max();
        self.stopped = Some(reason);
        self
    }
}

/// What a pass found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    pub listed: usize,
    /// Result label → count: applied, unchanged, stale, unmatched (carries our key, matches
    /// nothing), foreign (not made by callgate).
    pub results: HashMap<&'static str, usize>,
    /// Appointments a change was written to.
    pub changed: Vec<Uuid>,
}

impl Found {
    pub fn count(&self, result: &str) -> usize {
        self.results.get(result).copied().unwrap_or(0)
    }

    fn as_json(&self) -> serde_json::Value {
        json!({ "listed": self.listed, "results": self.results })
    }
}

/// A finished pass.
#[derive(Debug)]
pub struct Pass {
    pub account_id: Uuid,
    pub company_id: Uuid,
    pub found: Found,
    /// Why it stopped early, if it did.
    pub stopped: Option<String>,
}

/// Runs passes: on a schedule in the worker, or now for one company from the CLI.
#[derive(Debug, Clone)]
pub struct Reconciler {
    pool: PgPool,
    client: Client,
    cipher: Arc<SecretCipher>,
    api: CalcomApi,
    interval: Duration,
    metrics: Metrics,
}

impl Reconciler {
    pub fn new(
        pool: PgPool,
        client: Client,
        cipher: Arc<SecretCipher>,
        api: CalcomApi,
        interval: Duration,
        metrics: Metrics,
    ) -> Self {
        Self { pool, client, cipher, api, interval, metrics }
    }

    /// Reconciles each account when it is due, until `shutdown`. A pass in hand finishes (it is
    /// bounded by the page limit and the gate wait).
    pub async fn run(self, shutdown: Shutdown) {
        tracing::info!(interval = ?self.interval, "Cal.com reconciliation started");
        loop {
            let wait = match self.pass().await {
                Ok(Some(_)) => Duration::ZERO,
                Ok(None) => CHECK_EVERY,
                Err(error) => {
                    tracing::warn!(%error, "cannot reconcile with Cal.com; trying again");
                    CHECK_EVERY
                }
            };
            if shutdown.sleep(wait).await {
                break;
            }
        }
        tracing::info!("Cal.com reconciliation stopped");
    }

    /// One pass over the most overdue account; None when none is due.
    pub async fn pass(&self) -> Result<Option<Pass>, sqlx::Error> {
        let Some((pass, tx)) = self.begin_pass(None, false).await? else {
            return Ok(None);
        };
        tx.commit().await?;
        self.observe(&pass);
        Ok(Some(pass))
    }

    /// Reads the account's changes (the most overdue account, or `company`'s now) and applies
    /// them in a transaction the caller commits (then calls [`Self::observe`]) or rolls back.
    /// `dry_run` takes no lease: the account stays due as it was, or becomes due now.
    pub async fn begin_pass(
        &self,
        company: Option<Uuid>,
        dry_run: bool,
    ) -> Result<Option<(Pass, sqlx::Transaction<'static, sqlx::Postgres>)>, sqlx::Error> {
        let lease = if dry_run { Duration::ZERO } else { LEASE };
        let Some(claim) = store::claim_reconcile(&self.pool, company, lease).await? else {
            return Ok(None);
        };
        let reading = self.read(&claim).await;
        let mut tx = self.pool.begin().await?;
        let found = apply(&mut tx, claim.company_id, &reading.bookings).await?;
        let pass = Pass { account_id: claim.account_id, company_id: claim.company_id, found, stopped: reading.stopped };
        // A pass cut short goes on after a minute; a complete one waits for the interval.
        let next_in = if pass.stopped.is_some() { Duration::from_secs(60).min(self.interval) } else { self.interval };
        let end = ReconcileEnd {
            watermark: reading.reached.unwrap_or(claim.watermark),
            next_in,
            result: pass.found.as_json(),
            error: pass.stopped.as_deref(),
        };
        store::finish_reconcile(&mut tx, claim.account_id, &end).await?;
        Ok(Some((pass, tx)))
    }

    /// Counts and logs a committed pass.
    pub fn observe(&self, pass: &Pass) {
        for (result, count) in &pass.found.results {
            self.metrics.calcom_reconciled.with_label_values(&[result]).inc_by(*count as u64);
        }
        let outcome = if pass.stopped.is_some() { "partial" } else { "complete" };
        self.metrics.calcom_reconcile_passes.with_label_values(&[outcome]).inc();
        let (account, company, found) = (pass.account_id, pass.company_id, &pass.found);
        let (applied, unmatched) = (found.count("applied"), found.count("unmatched"));
        match &pass.stopped {
            None => {
                tracing::info!(calcom_account_id = %account, company_id = %company, listed = found.listed, applied, unmatched, "Cal.com reconciliation pass complete")
            }
            Some(reason) => {
                tracing::warn!(calcom_account_id = %account, company_id = %company, listed = found.listed, applied, unmatched, %reason, "Cal.com reconciliation pass stopped early; the next goes on from where it stopped")
            }
        }
    }

    /// Reads the bookings created, then those changed, since the watermark.
    async fn read(&self, claim: &ReconcileClaim) -> Reading {
        if claim.event_types.is_empty() {
            // No service is booked in Cal.com: nothing there can be ours.
            return Reading::default();
        }
        let binding = calcom_binding(claim.account_id, CalcomColumn::ApiKey);
        let api_key = match self.cipher.open(&claim.api_key, &binding) {
            Ok(key) => key,
            Err(error) => {
                tracing::error!(calcom_account_id = %claim.account_id, %error, "Cal.com API key does not open");
                return Reading { stopped: Some("the Cal.com API key cannot be opened".into()), ..Reading::default() };
            }
        };
        let after = claim.watermark - OVERLAP;
        let mut bookings: HashMap<String, Listed> = HashMap::new();
        // How far each listing cut short got (one not run got nowhere).
        let mut cut_at: Vec<DateTime<Utc>> = Vec::new();
        let mut stopped: Option<String> = None;
        for since in [Since::Created, Since::Updated] {
            if stopped.is_some() {
                cut_at.push(claim.watermark);
                continue;
            }
            let listing = self.list(claim, &api_key, since, after).await;
            for booking in listing.seen {
                bookings.insert(booking.uid.clone(), booking);
            }
            if let Some(reason) = listing.stopped {
                cut_at.push(listing.reached.unwrap_or(claim.watermark));
                stopped = Some(reason);
            }
        }
        let mut bookings: Vec<Listed> = bookings.into_values().collect();
        bookings.sort_by(|a, b| (changed_at(a), &a.uid).cmp(&(changed_at(b), &b.uid)));
        // Complete: everything up to the newest booking seen. Cut short: only as far as the
        // shortest listing got.
        let reached =
            if stopped.is_some() { cut_at.into_iter().min() } else { bookings.iter().filter_map(changed_at).max() };
        Reading { bookings, reached, stopped }
    }

    /// One listing, page by page.
    async fn list(
        &self,
        claim: &ReconcileClaim,
        api_key: &callgate_contract::secrets::Secret,
        since: Since,
        after: DateTime<Utc>,
    ) -> ListingRead {
        let mut read = ListingRead::default();
        let mut skip = 0;
        for _ in 0..MAX_PAGES {
            if let Err(reason) = self.turn(claim.account_id).await {
                return read.cut(since, reason);
            }
            let (page, budget) = self.client.changed_since(api_key, since, after, &claim.event_types, skip).await;
            if let Some(blocked_for) = budget.blocked_for
                && let Err(error) = store::block(&self.pool, claim.account_id, blocked_for).await
            {
                tracing::warn!(%error, calcom_account_id = %claim.account_id, "cannot record the Cal.com block");
            }
            let Changed { bookings, more } = match page {
                Ok(page) => page,
                Err(Listing::RateLimited) => return read.cut(since, "rate limited by Cal.com".into()),
                Err(Listing::Failed(error)) => return read.cut(since, format!("listing: {error}")),
            };
            skip += bookings.len();
            read.seen.extend(bookings);
            if !more {
                return read;
            }
        }
        read.cut(since, format!("more than {MAX_PAGES} pages of bookings"))
    }

    /// Waits for one request of the key's gate; an error when that would take too long.
    async fn turn(&self, account: Uuid) -> Result<(), String> {
        let mut waited = Duration::ZERO;
        loop {
            match store::take_turn(&self.pool, account, self.api.burst, self.api.rate_per_minute).await {
                Ok(None) => return Ok(()),
                Ok(Some(wait)) if waited + wait <= MAX_GATE_WAIT => {
                    tokio::time::sleep(wait).await;
                    waited += wait;
                }
                Ok(Some(_)) => return Err("the key's rate gate is closed".into()),
                Err(error) => return Err(format!("database: {error}")),
            }
        }
    }
}

/// When Cal.com last touched the booking.
fn changed_at(booking: &Listed) -> Option<DateTime<Utc>> {
    booking.updated_at.max(booking.created_at)
}

/// Applies the bookings read, in order, in the caller's transaction.
pub async fn apply(conn: &mut PgConnection, company: Uuid, bookings: &[Listed]) -> Result<Found, sqlx::Error> {
    let mut found = Found { listed: bookings.len(), ..Found::default() };
    for booking in bookings {
        for change in changes(booking) {
            let outcome = apply_change(conn, company, &change, ORIGIN).await?;
            let label = match outcome.result {
                ChangeResult::Unmatched if booking.key.is_none() => "foreign",
                result => result.as_str(),
            };
            *found.results.entry(label).or_default() += 1;
            if let (ChangeResult::Applied, Some(appointment)) = (outcome.result, outcome.appointment) {
                tracing::info!(appointment_id = %appointment, booking_uid = %change.uid, trigger = ?change.trigger, "Cal.com reconciliation applied a change no webhook brought");
                found.changed.push(appointment);
            } else if outcome.result == ChangeResult::Unmatched && booking.key.is_some() {
                tracing::warn!(booking_uid = %change.uid, detail = outcome.detail.as_deref().unwrap_or_default(), "a Cal.com booking carrying a callgate key matches no appointment");
            }
        }
    }
    Ok(found)
}

/// The booking changes a listed booking stands for, in the order they apply.
///
/// A reschedule shows as two bookings: the new one (`rescheduledFromUid`) and the old one,
/// cancelled (`rescheduledToUid`). The new one carries the move; the old one adds nothing.
pub fn changes(booking: &Listed) -> Vec<BookingChange> {
    let change = |trigger: Trigger, previous_uid: Option<String>| BookingChange {
        trigger,
        uid: booking.uid.clone(),
        previous_uid,
        our_key: booking.key.clone(),
        booking_id: booking.id,
        start: booking.start,
        end: booking.end,
        // The list has no iCalSequence; what it shows is Cal.com's state as of now.
        sequence: None,
        reason: booking.cancellation_reason.clone().filter(|r| !r.is_empty()),
    };
    let moved = booking.rescheduled_from.clone().map(|from| change(Trigger::Rescheduled, Some(from)));
    let ended = match booking.status.as_str() {
        "accepted" | "pending" if moved.is_some() => None,
        "accepted" => Some(change(Trigger::Created, None)),
        "pending" => Some(change(Trigger::Requested, None)),
        "cancelled" | "rejected" if booking.rescheduled_to.is_some() => return Vec::new(),
        "cancelled" => Some(change(Trigger::Cancelled, None)),
        "rejected" => Some(change(Trigger::Rejected, None)),
        _ => None,
    };
    moved.into_iter().chain(ended).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(status: &str) -> Listed {
        Listed {
            uid: "new".into(),
            id: Some(7),
            status: status.into(),
            key: Some("k".into()),
            start: None,
            end: None,
            created_at: None,
            updated_at: None,
            rescheduled_from: None,
            rescheduled_to: None,
            cancellation_reason: None,
        }
    }

    fn triggers(booking: &Listed) -> Vec<(Trigger, Option<String>)> {
        changes(booking).into_iter().map(|c| (c.trigger, c.previous_uid)).collect()
    }

    #[test]
    fn each_booking_state_stands_for_the_changes_a_webhook_would_have_brought() {
        assert_eq!(triggers(&listed("accepted")), [(Trigger::Created, None)]);
        assert_eq!(triggers(&listed("pending")), [(Trigger::Requested, None)]);
        assert_eq!(triggers(&listed("cancelled")), [(Trigger::Cancelled, None)]);
        assert_eq!(triggers(&listed("rejected")), [(Trigger::Rejected, None)]);
        assert!(triggers(&listed("something-new")).is_empty());
    }

    #[test]
    fn a_reschedule_is_carried_by_the_new_booking_and_the_old_one_adds_nothing() {
        let moved = Listed { rescheduled_from: Some("old".into()), ..listed("accepted") };
        assert_eq!(triggers(&moved), [(Trigger::Rescheduled, Some("old".into()))]);
        // Moved, then cancelled: the appointment follows the move, then the cancellation.
        let moved_then_cancelled = Listed { rescheduled_from: Some("old".into()), ..listed("cancelled") };
        assert_eq!(
            triggers(&moved_then_cancelled),
            [(Trigger::Rescheduled, Some("old".into())), (Trigger::Cancelled, None)]
        );
        let replaced = Listed { rescheduled_to: Some("newer".into()), ..listed("cancelled") };
        assert!(triggers(&replaced).is_empty());
    }
}
