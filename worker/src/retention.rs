//! Retention: what callers said is kept for a while, then removed; calls go later; the dedupe
//! ledger is pruned once no redelivery can arrive (README, "Retention and erasure").
//!
//! A pass, per company (its own days, or the worker's defaults):
//! 1. calls older than the call days are deleted; an appointment one made keeps its time and
//!    service without the link, a `<Dial>` leg loses its parent link;
//! 2. calls older than the content days lose their transcript, summary, analysis, sentiment,
//!    recording addresses and their review flag's detail, which quotes what the caller asked for
//!    (`content_removed_at` set: no late event fills them in again);
//! 3. ledger rows older than `--retention-ledger` are deleted. Safe because a consumer can only
//!    be handed what the topic still holds (7 days), and whatever comes later (a spooled record,
//!    a dead letter replayed) is new to the ledger anyway: the window only has to outlive the
//!    topic, and the default (30 days) does by far.
//!
//! Every statement takes at most `--retention-batch` rows (`SKIP LOCKED`, so workers running it
//! at once share the work) in its own short transaction, on a pool of its own: the consumer's
//! connections and locks are never held waiting for it.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use callgate_ops::Shutdown;
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::RetentionConfig;
use crate::metrics::Metrics;

/// The pause between two batches: room for the consumer's statements in between.
const BETWEEN_BATCHES: Duration = Duration::from_millis(10);

/// What a pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Calls whose content was removed.
    pub content: u64,
    pub calls: u64,
    /// Ledger rows.
    pub events: u64,
}

#[derive(Debug, sqlx::FromRow)]
struct Policy {
    id: Uuid,
    content_days: i32,
    call_days: i32,
}

const POLICIES: &str = "SELECT id, COALESCE(retention_content_days, $1) AS content_days, \
    COALESCE(retention_call_days, $2) AS call_days FROM companies ORDER BY id";

/// What removing a call's content sets: what callers said and where it was recorded, and the
/// review flag's detail, which quotes them. One list for retention and for a customer's
/// erasure (`operate/privacy.rs`), so a new content column cannot be left out of either.
pub(crate) const CALL_CONTENT_REMOVED: &str = "transcript = NULL, summary = NULL, analysis = NULL, \
    sentiment = NULL, recording_url = NULL, recording_multichannel_url = NULL, recording_sid = NULL, \
    review_detail = NULL, content_removed_at = now()";

static REMOVE_CONTENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE calls SET {CALL_CONTENT_REMOVED}
         WHERE id IN (SELECT id FROM calls
                      WHERE company_id = $1 AND content_removed_at IS NULL
                        AND first_event_at < now() - make_interval(days => $2)
                      LIMIT $3 FOR UPDATE SKIP LOCKED)"
    )
});

const DUE_CALLS: &str = "SELECT id FROM calls \
    WHERE company_id = $1 AND first_event_at < now() - make_interval(days => $2) \
    LIMIT $3 FOR UPDATE SKIP LOCKED";

const PRUNE_LEDGER: &str = "
DELETE FROM processed_events p
USING (SELECT event_id, company_id FROM processed_events
       WHERE processed_at < now() - $1 * interval '1 second' LIMIT $2) old
WHERE p.event_id = old.event_id AND p.company_id = old.company_id";

/// Runs passes on a schedule, or one when asked.
#[derive(Debug, Clone)]
pub struct Retention {
    pool: PgPool,
    config: RetentionConfig,
    metrics: Metrics,
}

impl Retention {
    pub fn new(pool: PgPool, config: RetentionConfig, metrics: Metrics) -> Self {
        Self { pool, config, metrics }
    }

    /// A pass now, then every `--retention-interval`, until `shutdown` (a pass stops between
    /// two batches).
    pub async fn run(self, shutdown: Shutdown) {
        tracing::info!(interval = ?self.config.interval, "retention started");
        loop {
            let started = Instant::now();
            match self.pass(&shutdown).await {
                Ok(removed) => {
                    self.metrics.retention_passes.with_label_values(&["complete"]).inc();
                    tracing::info!(
                        content_removed = removed.content, calls_deleted = removed.calls,
                        events_pruned = removed.events, elapsed = ?started.elapsed(), "retention pass done"
                    );
                }
                Err(error) => {
                    self.metrics.retention_passes.with_label_values(&["failed"]).inc();
                    tracing::warn!(%error, "retention pass failed; the next one goes on");
                }
            }
            if shutdown.sleep(self.config.interval).await {
                break;
            }
        }
        tracing::info!("retention stopped");
    }

    /// One pass over every company and the ledger.
    pub async fn pass(&self, shutdown: &Shutdown) -> Result<Removed, sqlx::Error> {
        let mut removed = Removed::default();
        let defaults = (i32::try_from(self.config.content_days), i32::try_from(self.config.call_days));
        let (Ok(content_days), Ok(call_days)) = defaults else {
            return Err(sqlx::Error::Protocol("retention days out of range".into()));
        };
        let policies: Vec<Policy> =
            sqlx::query_as(POLICIES).bind(content_days).bind(call_days).fetch_all(&self.pool).await?;
        for policy in policies {
            // Deleting first spares removing the content of calls about to go.
            removed.calls += self.batches(shutdown, "call_deleted", || self.delete_calls(&policy)).await?;
            removed.content += self.batches(shutdown, "content_removed", || self.remove_content(&policy)).await?;
        }
        removed.events += self.batches(shutdown, "event_pruned", || self.prune_ledger()).await?;
        Ok(removed)
    }

    /// Runs `batch` until it takes fewer rows than a batch holds (or shutdown); the rows taken.
    async fn batches<F, Fut>(&self, shutdown: &Shutdown, action: &str, batch: F) -> Result<u64, sqlx::Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<u64, sqlx::Error>>,
    {
        let mut total = 0;
        loop {
            let taken = batch().await?;
            total += taken;
            self.metrics.retention_rows.with_label_values(&[action]).inc_by(taken);
            if taken < u64::from(self.config.batch) || shutdown.sleep(BETWEEN_BATCHES).await {
                return Ok(total);
            }
        }
    }

    async fn remove_content(&self, policy: &Policy) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(&REMOVE_CONTENT)
            .bind(policy.id)
            .bind(policy.content_days)
            .bind(i64::from(self.config.batch))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Deletes a batch of due calls, unlinking their appointments and legs first.
    async fn delete_calls(&self, policy: &Policy) -> Result<u64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<Uuid> = sqlx::query_scalar(DUE_CALLS)
            .bind(policy.id)
            .bind(policy.call_days)
            .bind(i64::from(self.config.batch))
            .fetch_all(&mut *tx)
            .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        sqlx::query("UPDATE appointments SET call_id = NULL WHERE company_id = $1 AND call_id = ANY($2)")
            .bind(policy.id)
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE calls SET parent_call_id = NULL WHERE parent_call_id = ANY($1) AND NOT id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM calls WHERE id = ANY($1)").bind(&ids).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn prune_ledger(&self) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(PRUNE_LEDGER)
            .bind(self.config.ledger.as_secs_f64())
            .bind(i64::from(self.config.batch))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
