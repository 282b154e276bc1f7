//! The chaos run's verdict: holds the database and Cal.com to the load generator's own record
//! of every event the gateway answered 2xx (`run --accepted`). Every accepted event must be in
//! `processed_events` exactly once, every call in `calls`, every appointment a call asked for
//! exactly once, and every appointment Cal.com took exactly one booking.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::traffic::AcceptedEvent;

/// Ids asked about per query.
const CHUNK: usize = 5_000;

#[derive(Debug, Default)]
pub struct Verdict {
    pub accepted: usize,
    pub lost_events: usize,
    pub duplicated_events: usize,
    pub late_events: usize,
    pub calls: usize,
    pub lost_calls: usize,
    pub appointments_expected: usize,
    pub lost_appointments: usize,
    pub duplicated_appointments: usize,
    pub booked: usize,
    /// Appointments Cal.com would not take, flagged for review with a reason (not lost).
    pub flagged: usize,
    pub unsettled_bookings: usize,
    pub duplicated_bookings: usize,
    pub slowest_apply: Duration,
}

impl Verdict {
    pub fn failures(&self) -> usize {
        self.lost_events
            + self.duplicated_events
            + self.late_events
            + self.lost_calls
            + self.lost_appointments
            + self.duplicated_appointments
            + self.unsettled_bookings
            + self.duplicated_bookings
    }

    pub fn text(&self) -> String {
        format!(
            "accepted events {accepted}: lost {lost}, duplicated {dup}, late {late} (slowest {slowest:.1} s)\n\
             calls {calls}: lost {lost_calls}\n\
             appointments asked for {appts}: lost {lost_appts}, duplicated {dup_appts}\n\
             Cal.com: booked once {booked}, flagged for review {flagged}, not settled {unsettled}, booked twice {dup_bookings}\n\
             verdict: {verdict}\n",
            accepted = self.accepted,
            lost = self.lost_events,
            dup = self.duplicated_events,
            late = self.late_events,
            slowest = self.slowest_apply.as_secs_f64(),
            calls = self.calls,
            lost_calls = self.lost_calls,
            appts = self.appointments_expected,
            lost_appts = self.lost_appointments,
            dup_appts = self.duplicated_appointments,
            booked = self.booked,
            flagged = self.flagged,
            unsettled = self.unsettled_bookings,
            dup_bookings = self.duplicated_bookings,
            verdict = if self.failures() == 0 { "PASS" } else { "FAIL" },
        )
    }
}

pub fn read_accepted(path: &Path) -> anyhow::Result<Vec<AcceptedEvent>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).context("a line of the accepted record"))
        .collect()
}

/// Waits up to `wait` for everything to settle, then judges. `late_after`: an event applied
/// later than this after its 2xx counts as late.
pub async fn judge(
    pool: &PgPool,
    calcom: Option<&str>,
    accepted: &[AcceptedEvent],
    wait: Duration,
    late_after: Duration,
) -> anyhow::Result<Verdict> {
    let by_id: HashMap<Uuid, &AcceptedEvent> = accepted.iter().map(|e| (e.event_id, e)).collect();
    let ids: Vec<Uuid> = by_id.keys().copied().collect();
    let deadline = Instant::now() + wait;
    // Events: present (applied, ignored or refused) once each.
    let applied = loop {
        let applied = applied_events(pool, &ids).await?;
        if applied.len() >= ids.len() || Instant::now() >= deadline {
            break applied;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let mut verdict = Verdict { accepted: ids.len(), ..Verdict::default() };
    for id in &ids {
        match applied.get(id) {
            None => verdict.lost_events += 1,
            Some((copies, processed_ms)) => {
                verdict.duplicated_events += usize::try_from(copies - 1).unwrap_or(0);
                let took = processed_ms - by_id[id].accepted_at_ms;
                let took = Duration::from_millis(u64::try_from(took).unwrap_or(0));
                verdict.slowest_apply = verdict.slowest_apply.max(took);
                if took > late_after {
                    verdict.late_events += 1;
                }
            }
        }
    }
    // Calls: every call with an accepted event has its row.
    let calls: HashSet<&str> = accepted.iter().map(|e| e.call_id.as_str()).collect();
    let call_ids: Vec<String> = calls.iter().map(|c| (*c).to_owned()).collect();
    let appointments = appointments_by_call(pool, &call_ids).await?;
    verdict.calls = calls.len();
    verdict.lost_calls = calls.iter().filter(|c| !appointments.contains_key(**c)).count();
    // Appointments: one per call whose accepted analysis asked for one.
    let wanted: Vec<&str> = accepted.iter().filter(|e| e.wants_booking).map(|e| e.call_id.as_str()).collect();
    verdict.appointments_expected = wanted.len();
    for call in &wanted {
        match appointments.get(*call).map(Vec::len) {
            None | Some(0) => verdict.lost_appointments += 1,
            Some(1) => {}
            Some(n) => verdict.duplicated_appointments += n - 1,
        }
    }
    // Bookings: each appointment settled (synced with exactly one booking, or flagged), never
    // two bookings for one idempotency key.
    if let Some(calcom) = calcom {
        let keys: Vec<(String, String)> = loop {
            let keys = settlement(pool, &call_ids).await?;
            let settled =
                keys.iter().all(|(_, status)| matches!(status.as_str(), "synced" | "needs_review" | "failed"));
            if settled || Instant::now() >= deadline {
                break keys;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        let bookings = bookings_by_key(calcom).await?;
        for (key, status) in &keys {
            let held = bookings.get(key).copied().unwrap_or(0);
            verdict.duplicated_bookings += held.saturating_sub(1);
            match status.as_str() {
                "synced" if held == 1 => verdict.booked += 1,
                "needs_review" | "failed" if held == 0 => verdict.flagged += 1,
                _ => verdict.unsettled_bookings += usize::from(held != 1),
            }
        }
    }
    Ok(verdict)
}

/// Event id → (rows, when the first was processed, Unix ms).
async fn applied_events(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<HashMap<Uuid, (i64, i64)>> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(CHUNK) {
        let rows: Vec<(Uuid, i64, i64)> = sqlx::query_as(
            "SELECT event_id, count(*), (extract(epoch FROM min(processed_at)) * 1000)::int8 \
             FROM processed_events WHERE event_id = ANY($1) GROUP BY event_id",
        )
        .bind(chunk)
        .fetch_all(pool)
        .await?;
        out.extend(rows.into_iter().map(|(id, n, at)| (id, (n, at))));
    }
    Ok(out)
}

/// Call id → its appointments' ids (an entry, possibly empty, for every call that has a row).
async fn appointments_by_call(pool: &PgPool, calls: &[String]) -> sqlx::Result<HashMap<String, Vec<Uuid>>> {
    let mut out: HashMap<String, Vec<Uuid>> = HashMap::new();
    for chunk in calls.chunks(CHUNK) {
        let rows: Vec<(String, Option<Uuid>)> = sqlx::query_as(
            "SELECT c.provider_call_id, a.id FROM calls c LEFT JOIN appointments a ON a.call_id = c.id \
             WHERE c.provider IN ('retell', 'vapi', 'twilio') AND c.provider_call_id = ANY($1)",
        )
        .bind(chunk)
        .fetch_all(pool)
        .await?;
        for (call, appointment) in rows {
            out.entry(call).or_default().extend(appointment);
        }
    }
    Ok(out)
}

/// (idempotency key, Cal.com sync status) of the calls' appointments.
async fn settlement(pool: &PgPool, calls: &[String]) -> sqlx::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for chunk in calls.chunks(CHUNK) {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT a.idempotency_key, a.calcom_sync_status FROM appointments a JOIN calls c ON c.id = a.call_id \
             WHERE c.provider IN ('retell', 'vapi', 'twilio') AND c.provider_call_id = ANY($1)",
        )
        .bind(chunk)
        .fetch_all(pool)
        .await?;
        out.extend(rows);
    }
    Ok(out)
}

/// Idempotency key → bookings the fake Cal.com holds for it (cancelled ones left out).
async fn bookings_by_key(calcom: &str) -> anyhow::Result<HashMap<String, usize>> {
    let url = format!("{}/__bookings", calcom.trim_end_matches('/'));
    let bookings: Vec<Value> = reqwest::get(&url).await?.error_for_status()?.json().await.context("/__bookings")?;
    let mut out: HashMap<String, usize> = HashMap::new();
    for booking in &bookings {
        if booking["status"] == "cancelled" {
            continue;
        }
        if let Some(key) = booking["metadata"][callgate_contract::booking::METADATA_KEY].as_str() {
            *out.entry(key.to_owned()).or_default() += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(call: &str, kind: &str, accepted_at_ms: i64) -> AcceptedEvent {
        AcceptedEvent {
            event_id: Uuid::new_v4(),
            provider: "retell".into(),
            call_id: call.into(),
            event_type: kind.into(),
            wants_booking: false,
            last: false,
            accepted_at_ms,
        }
    }

    /// The verdict must be able to fail: an accepted event missing from the database is lost,
    /// one applied long after its 2xx is late, and a call without its row is lost.
    #[tokio::test]
    async fn an_event_missing_or_applied_late_fails_the_verdict() {
        let db = callgate_tests::TestDb::create().await;
        let key = callgate_tests::secret_key();
        let cipher = callgate_contract::SecretCipher::from_base64::<&str>(&key, &[]).unwrap();
        let auth = serde_json::json!({"mode": "secret"});
        let tenant = callgate_tests::seed_tenant(&db, &cipher, "v", "+1415555", "https://h", auth).await;
        let now = chrono::Utc::now().timestamp_millis();
        let (on_time, late, lost) = (
            event("c1", "call_started", now),
            event("c1", "call_ended", now - 600_000),
            event("c2", "call_started", now),
        );
        for applied in [&on_time, &late] {
            sqlx::query(
                "INSERT INTO processed_events (event_id, company_id, provider, event_type, provider_call_id, outcome, \
                 kafka_partition, kafka_offset, received_at) VALUES ($1, $2, 'retell', $3, 'c1', 'applied', 0, 0, now())",
            )
            .bind(applied.event_id)
            .bind(tenant.company.0)
            .bind(&applied.event_type)
            .execute(&db.pool)
            .await
            .unwrap();
        }
        sqlx::query(
            "INSERT INTO calls (company_id, branch_id, phone_number_id, provider, provider_call_id, business_e164, \
             status, progress, first_event_at, last_event_at) VALUES ($1, $2, $3, 'retell', 'c1', $4, 'ended', 3, now(), now())",
        )
        .bind(tenant.company.0)
        .bind(tenant.branch.0)
        .bind(tenant.retell_number.0.0)
        .bind(tenant.retell_number.1.to_string())
        .execute(&db.pool)
        .await
        .unwrap();
        let accepted = [on_time, late, lost];
        let verdict = judge(&db.pool, None, &accepted, Duration::ZERO, Duration::from_secs(120)).await.unwrap();
        assert_eq!((verdict.accepted, verdict.lost_events, verdict.late_events), (3, 1, 1));
        assert_eq!((verdict.calls, verdict.lost_calls), (2, 1));
        assert_eq!(verdict.failures(), 3);
        assert!(verdict.text().contains("verdict: FAIL"));
    }
}
