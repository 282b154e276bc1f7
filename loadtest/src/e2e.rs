//! End-to-end latency: from sending a call's last event to its rows being committed (the
//! event's `processed_events` row), and, with Cal.com, to its appointment being booked.
//!
//! The commit's own time comes from Postgres when it keeps commit timestamps
//! (`track_commit_timestamp`, on in the local stack). Without them the row's `processed_at` is
//! used: the worker transaction's `now()`, its start, which leaves the transaction's own time
//! out (a p99 of 40-50 ms at 1,000 webhooks/s on 2 cores). Both clocks are this machine's.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::run::{Finished, histogram};

/// Ids asked about per query.
const CHUNK: usize = 5_000;

#[derive(Debug)]
pub struct EndToEnd {
    /// Microseconds from sending the last event to its transaction.
    pub committed: Histogram<u64>,
    /// Microseconds from sending the last event to the appointment's booking.
    pub booked: Histogram<u64>,
    /// Calls whose last event was not committed within the drain time.
    pub missing: u64,
    /// What `committed` ends at: the commit, or (without commit timestamps) the transaction's
    /// start.
    pub clock: Clock,
    pub missing_bookings: u64,
}

/// Where a committed event's time is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Clock {
    Commit,
    TransactionStart,
}

impl Clock {
    async fn of(pool: &PgPool) -> Self {
        match sqlx::query_scalar::<_, String>("SHOW track_commit_timestamp").fetch_one(pool).await.as_deref() {
            Ok("on") => Self::Commit,
            _ => Self::TransactionStart,
        }
    }

    fn column(self) -> &'static str {
        match self {
            Self::Commit => "pg_xact_commit_timestamp(p.xmin)",
            Self::TransactionStart => "p.processed_at",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::Commit => "its commit",
            Self::TransactionStart => "its transaction's start: track_commit_timestamp is off",
        }
    }
}

fn micros(from: SystemTime, to: DateTime<Utc>) -> u64 {
    let from: DateTime<Utc> = from.into();
    u64::try_from((to - from).num_microseconds().unwrap_or(0)).unwrap_or(0).max(1)
}

/// Follows every finished call until it is in the database, or `drain` after the run ended.
pub async fn track(pool: PgPool, mut finished: mpsc::UnboundedReceiver<Finished>, drain: Duration) -> EndToEnd {
    let clock = Clock::of(&pool).await;
    let mut result = EndToEnd { committed: histogram(), booked: histogram(), missing: 0, missing_bookings: 0, clock };
    let mut pending: HashMap<Uuid, Finished> = HashMap::new();
    let mut bookings: HashMap<Uuid, Finished> = HashMap::new();
    let mut closed_at: Option<Instant> = None;
    loop {
        loop {
            match finished.try_recv() {
                Ok(call) => {
                    pending.insert(call.event_id, call);
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed_at.get_or_insert_with(Instant::now);
                    break;
                }
            }
        }
        if let Err(error) = poll(&pool, &mut pending, &mut bookings, &mut result).await {
            tracing::warn!(%error, "end-to-end poll failed; trying again");
        }
        if let Some(closed) = closed_at
            && ((pending.is_empty() && bookings.is_empty()) || closed.elapsed() > drain)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    result.missing = pending.len() as u64;
    result.missing_bookings += bookings.len() as u64;
    result
}

async fn poll(
    pool: &PgPool,
    pending: &mut HashMap<Uuid, Finished>,
    bookings: &mut HashMap<Uuid, Finished>,
    result: &mut EndToEnd,
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = pending.keys().copied().collect();
    for chunk in ids.chunks(CHUNK) {
        // The call's id comes with the event (by the calls' unique provider key), so the
        // bookings are then found by the appointments' index on it: this poll runs on the
        // machine it measures, four times a second, and must stay cheap.
        let query = format!(
            "SELECT p.event_id, {}, c.id FROM processed_events p \
             LEFT JOIN calls c ON c.provider = p.provider AND c.provider_call_id = p.provider_call_id \
             WHERE p.event_id = ANY($1)",
            result.clock.column()
        );
        let rows: Vec<(Uuid, DateTime<Utc>, Option<Uuid>)> = sqlx::query_as(&query).bind(chunk).fetch_all(pool).await?;
        for (id, at, call) in rows {
            if let Some(finished) = pending.remove(&id) {
                let _ = result.committed.record(micros(finished.sent_at, at));
                match call {
                    Some(call) if finished.wants_booking => {
                        bookings.insert(call, finished);
                    }
                    None if finished.wants_booking => result.missing_bookings += 1,
                    _ => {}
                }
            }
        }
    }
    let calls: Vec<Uuid> = bookings.keys().copied().collect();
    for chunk in calls.chunks(CHUNK) {
        let rows: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
            "SELECT call_id, synced_at FROM appointments WHERE call_id = ANY($1) AND synced_at IS NOT NULL",
        )
        .bind(chunk)
        .fetch_all(pool)
        .await?;
        for (call, at) in rows {
            if let Some(finished) = bookings.remove(&call) {
                let _ = result.booked.record(micros(finished.sent_at, at));
            }
        }
    }
    Ok(())
}
