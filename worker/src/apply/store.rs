//! The call path's SQL: a fixed number of statements per batch, whatever its size. Each takes
//! its rows as columns (one array per column, `unnest`ed), so 500 events cost what one does in
//! round trips. The logic that decides what to write is in `call.rs`.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::status::{AppointmentStatus, SyncStatus};

/// A call as the batch needs to know it: what decides the merge, not the long columns.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct StoredCall {
    pub id: Uuid,
    pub company_id: Uuid,
    pub provider: String,
    pub provider_call_id: String,
    pub status: String,
    pub progress: i16,
    pub progress_seq: i64,
    pub has_direction: bool,
    pub caller_raw: Option<String>,
    pub has_caller_e164: bool,
    pub has_started_at: bool,
    pub ended_at: Option<DateTime<Utc>>,
    pub has_duration_ms: bool,
    pub has_transcript: bool,
    pub has_summary: bool,
    pub has_analysis: bool,
    pub has_cost: bool,
    pub has_disconnection_reason: bool,
    /// Whether each detail column holds a value, in `DetailColumns`' order.
    pub details_filled: Vec<bool>,
    pub customer_id: Option<Uuid>,
    pub customer_link: String,
    /// Its content was removed (retention, erasure): events no longer bring any back.
    pub content_removed: bool,
}

/// The advisory lock of one call, taken before it is read and held to the end of the
/// transaction. Every writer of a call's row takes it first, so a call that does not exist yet
/// is serialised as well as one that does (a row lock cannot cover a missing row). Two keys
/// that collide only make two calls wait for each other.
pub(super) fn lock_key(provider: &str, provider_call_id: &str) -> i64 {
    let digest = Sha256::new().chain_update(provider).chain_update([0]).chain_update(provider_call_id).finalize();
    let mut first = [0_u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// Takes the calls' locks, in one order for every transaction (no deadlock between lanes).
pub(super) async fn lock_calls(conn: &mut PgConnection, mut keys: Vec<i64>) -> Result<(), sqlx::Error> {
    keys.sort_unstable();
    keys.dedup();
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_advisory_xact_lock(k) FROM unnest($1::int8[]) AS k ORDER BY k")
        .bind(keys)
        .execute(conn)
        .await?;
    Ok(())
}

/// The stored calls among `keys` (provider, call id).
///
/// Planned afresh each time (`persistent(false)`), like `fill_contacts`: a join's plan depends
/// on the table's size, and a prepared statement's generic plan, made while `calls` was small
/// (a new database), hashed the whole table on every batch long after it had grown — 2.5 ms
/// per batch in the load test, the biggest statement. Planning costs about 0.1 ms per batch.
pub(super) async fn read_calls(
    conn: &mut PgConnection,
    providers: Vec<&str>,
    call_ids: Vec<&str>,
) -> Result<Vec<StoredCall>, sqlx::Error> {
    if providers.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "SELECT c.id, c.company_id, c.provider, c.provider_call_id, c.status, c.progress, c.progress_seq, \
           c.direction IS NOT NULL AS has_direction, c.caller_raw, c.caller_e164 IS NOT NULL AS has_caller_e164, \
           c.started_at IS NOT NULL AS has_started_at, c.ended_at, c.duration_ms IS NOT NULL AS has_duration_ms, \
           c.transcript IS NOT NULL AS has_transcript, c.summary IS NOT NULL AS has_summary, \
           c.analysis IS NOT NULL AS has_analysis, c.cost IS NOT NULL AS has_cost, \
           c.disconnection_reason IS NOT NULL AS has_disconnection_reason, \
           ARRAY[c.agent_id IS NOT NULL, c.agent_version IS NOT NULL, c.language IS NOT NULL, \
                 c.sentiment IS NOT NULL, c.cost_breakdown IS NOT NULL, c.recording_url IS NOT NULL, \
                 c.recording_multichannel_url IS NOT NULL, c.recording_sid IS NOT NULL] AS details_filled, \
           c.customer_id, c.customer_link, c.content_removed_at IS NOT NULL AS content_removed \
         FROM unnest($1::text[], $2::text[]) AS k(provider, provider_call_id) \
         JOIN calls c ON c.provider = k.provider AND c.provider_call_id = k.provider_call_id",
    )
    .persistent(false)
    .bind(providers)
    .bind(call_ids)
    .fetch_all(conn)
    .await
}

/// `processed_events` rows, one array per column.
#[derive(Debug, Default)]
pub(super) struct EventRows {
    pub event_id: Vec<Uuid>,
    pub company_id: Vec<Uuid>,
    pub provider: Vec<&'static str>,
    pub event_type: Vec<String>,
    pub provider_call_id: Vec<String>,
    pub outcome: Vec<&'static str>,
    pub detail: Vec<Option<&'static str>>,
    pub partition: Vec<i32>,
    pub offset: Vec<i64>,
    pub received_at: Vec<DateTime<Utc>>,
    pub trace_id: Vec<String>,
}

/// Enters the events; returns the (company, event id) of those that were not there already.
/// A second worker holding the same events waits on their index entries until this transaction
/// ends, and then finds them taken.
pub(super) async fn record_events(conn: &mut PgConnection, rows: EventRows) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    if rows.event_id.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "INSERT INTO processed_events (event_id, company_id, provider, event_type, provider_call_id, outcome, detail, \
           kafka_partition, kafka_offset, received_at, trace_id) \
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
           $8::int4[], $9::int8[], $10::timestamptz[], $11::text[]) \
         ON CONFLICT (company_id, event_id) DO NOTHING \
         RETURNING company_id, event_id",
    )
    .bind(rows.event_id)
    .bind(rows.company_id)
    .bind(rows.provider)
    .bind(rows.event_type)
    .bind(rows.provider_call_id)
    .bind(rows.outcome)
    .bind(rows.detail)
    .bind(rows.partition)
    .bind(rows.offset)
    .bind(rows.received_at)
    .bind(rows.trace_id)
    .fetch_all(conn)
    .await
}

/// A customer found or created by number.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct LinkedCustomer {
    pub company_id: Uuid,
    pub e164: String,
    pub id: Uuid,
    pub created: bool,
}

/// Finds or creates the customers of these numbers, filling blank names and emails; one row
/// per (company, number), sorted, so concurrent lanes lock customers in the same order.
pub(super) async fn link_customers(
    conn: &mut PgConnection,
    mut rows: Vec<(Uuid, String, Option<String>, Option<String>)>,
) -> Result<Vec<LinkedCustomer>, sqlx::Error> {
    rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    rows.dedup_by(|a, b| (a.0, &a.1) == (b.0, &b.1));
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let (company, (e164, (name, email))): (Vec<_>, (Vec<_>, (Vec<_>, Vec<_>))) =
        rows.into_iter().map(|(c, n, name, email)| (c, (n, (name, email)))).unzip();
    sqlx::query_as(
        "INSERT INTO customers AS cu (company_id, e164, name, email) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) \
         ON CONFLICT (company_id, e164) WHERE deleted_at IS NULL DO UPDATE \
         SET name = COALESCE(cu.name, EXCLUDED.name), email = COALESCE(cu.email, EXCLUDED.email) \
         RETURNING company_id, e164, id, (xmax = 0) AS created",
    )
    .bind(company)
    .bind(e164)
    .bind(name)
    .bind(email)
    .fetch_all(conn)
    .await
}

/// Fills blank names and emails of customers the calls are already linked to.
pub(super) async fn fill_contacts(
    conn: &mut PgConnection,
    rows: Vec<(Uuid, Uuid, Option<String>, Option<String>)>,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let (company, (id, (name, email))): (Vec<_>, (Vec<_>, (Vec<_>, Vec<_>))) =
        rows.into_iter().map(|(c, i, name, email)| (c, (i, (name, email)))).unzip();
    sqlx::query(
        "UPDATE customers cu SET name = COALESCE(cu.name, u.name), email = COALESCE(cu.email, u.email) \
         FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[]) AS u(company_id, id, name, email) \
         WHERE cu.company_id = u.company_id AND cu.id = u.id \
           AND (cu.name IS NULL AND u.name IS NOT NULL OR cu.email IS NULL AND u.email IS NOT NULL)",
    )
    .persistent(false)
    .bind(company)
    .bind(id)
    .bind(name)
    .bind(email)
    .execute(conn)
    .await?;
    Ok(())
}

/// Call rows to write, one array per column. A data column's NULL keeps the stored value.
#[derive(Debug, Default)]
pub(super) struct CallRows {
    pub id: Vec<Uuid>,
    pub company_id: Vec<Uuid>,
    pub branch_id: Vec<Uuid>,
    pub phone_number_id: Vec<Uuid>,
    pub provider: Vec<&'static str>,
    pub provider_call_id: Vec<String>,
    pub business_e164: Vec<String>,
    pub status: Vec<&'static str>,
    pub progress: Vec<i16>,
    pub progress_seq: Vec<i64>,
    pub first_event_at: Vec<DateTime<Utc>>,
    pub last_event_at: Vec<DateTime<Utc>>,
    pub direction: Vec<Option<&'static str>>,
    pub caller_raw: Vec<Option<String>>,
    pub caller_e164: Vec<Option<String>>,
    pub started_at: Vec<Option<DateTime<Utc>>>,
    pub ended_at: Vec<Option<DateTime<Utc>>>,
    pub duration_ms: Vec<Option<i64>>,
    pub transcript: Vec<Option<String>>,
    pub summary: Vec<Option<String>>,
    pub analysis: Vec<Option<Value>>,
    pub cost: Vec<Option<f64>>,
    pub disconnection_reason: Vec<Option<String>>,
    pub agent_id: Vec<Option<String>>,
    pub agent_version: Vec<Option<i32>>,
    pub language: Vec<Option<String>>,
    pub sentiment: Vec<Option<String>>,
    pub cost_breakdown: Vec<Option<Value>>,
    pub recording_url: Vec<Option<String>>,
    pub recording_multichannel_url: Vec<Option<String>>,
    pub recording_sid: Vec<Option<String>>,
    pub customer_id: Vec<Option<Uuid>>,
    pub customer_link: Vec<&'static str>,
    pub parent_call_id: Vec<Option<Uuid>>,
    pub review_reason: Vec<Option<&'static str>>,
    pub review_detail: Vec<Option<String>>,
}

/// Inserts or advances the calls (their merge is done, see `merge.rs`); returns each call's
/// id by (provider, call id). A call that belongs to another company is left alone and not
/// returned (the locks and the read before make that a defect, not a race).
pub(super) async fn write_calls(
    conn: &mut PgConnection,
    rows: CallRows,
) -> Result<Vec<(String, String, Uuid)>, sqlx::Error> {
    if rows.id.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "INSERT INTO calls AS c (id, company_id, branch_id, phone_number_id, provider, provider_call_id, business_e164, \
           status, progress, progress_seq, first_event_at, last_event_at, direction, caller_raw, caller_e164, \
           started_at, ended_at, duration_ms, transcript, summary, analysis, cost, disconnection_reason, \
           customer_id, customer_link, parent_call_id, review_reason, review_detail, \
           agent_id, agent_version, language, sentiment, cost_breakdown, recording_url, recording_multichannel_url, \
           recording_sid, flagged_at) \
         SELECT id, company_id, branch_id, phone_number_id, provider, provider_call_id, business_e164, \
           status, progress, progress_seq, first_event_at, last_event_at, direction, caller_raw, caller_e164, \
           started_at, ended_at, duration_ms, transcript, summary, analysis, cost, disconnection_reason, \
           customer_id, customer_link, parent_call_id, review_reason, review_detail, \
           agent_id, agent_version, language, sentiment, cost_breakdown, recording_url, recording_multichannel_url, \
           recording_sid, CASE WHEN review_reason IS NOT NULL THEN now() END \
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[], \
           $8::text[], $9::int2[], $10::int8[], $11::timestamptz[], $12::timestamptz[], $13::text[], $14::text[], \
           $15::text[], $16::timestamptz[], $17::timestamptz[], $18::int8[], $19::text[], $20::text[], $21::jsonb[], \
           $22::float8[], $23::text[], $24::uuid[], $25::text[], $26::uuid[], $27::text[], $28::text[], \
           $29::text[], $30::int4[], $31::text[], $32::text[], $33::jsonb[], $34::text[], $35::text[], $36::text[]) \
           AS u(id, company_id, branch_id, phone_number_id, provider, provider_call_id, business_e164, \
           status, progress, progress_seq, first_event_at, last_event_at, direction, caller_raw, caller_e164, \
           started_at, ended_at, duration_ms, transcript, summary, analysis, cost, disconnection_reason, \
           customer_id, customer_link, parent_call_id, review_reason, review_detail, \
           agent_id, agent_version, language, sentiment, cost_breakdown, recording_url, recording_multichannel_url, \
           recording_sid) \
         ON CONFLICT (provider, provider_call_id) DO UPDATE SET \
           status = EXCLUDED.status, progress = EXCLUDED.progress, progress_seq = EXCLUDED.progress_seq, \
           first_event_at = LEAST(c.first_event_at, EXCLUDED.first_event_at), \
           last_event_at = GREATEST(c.last_event_at, EXCLUDED.last_event_at), \
           direction = COALESCE(EXCLUDED.direction, c.direction), \
           caller_raw = CASE WHEN c.content_removed_at IS NULL THEN COALESCE(EXCLUDED.caller_raw, c.caller_raw) ELSE c.caller_raw END, \
           caller_e164 = CASE WHEN c.content_removed_at IS NULL THEN COALESCE(EXCLUDED.caller_e164, c.caller_e164) ELSE c.caller_e164 END, \
           started_at = COALESCE(EXCLUDED.started_at, c.started_at), \
           ended_at = COALESCE(EXCLUDED.ended_at, c.ended_at), \
           duration_ms = COALESCE(EXCLUDED.duration_ms, c.duration_ms), \
           transcript = CASE WHEN c.content_removed_at IS NULL THEN COALESCE(EXCLUDED.transcript, c.transcript) ELSE c.transcript END, \
           summary = CASE WHEN c.content_removed_at IS NULL THEN COALESCE(EXCLUDED.summary, c.summary) ELSE c.summary END, \
           analysis = CASE WHEN c.content_removed_at IS NULL THEN COALESCE(EXCLUDED.analysis, c.analysis) ELSE c.analysis END, \
           cost = COALESCE(EXCLUDED.cost, c.cost), \
           disconnection_reason = COALESCE(EXCLUDED.disconnection_reason, c.disconnection_reason), \
           agent_id = COALESCE(EXCLUDED.agent_id, c.agent_id), \
           agent_version = COALESCE(EXCLUDED.agent_version, c.agent_version), \
           language = COALESCE(EXCLUDED.language, c.language), \
           sentiment = CASE WHEN c.content_removed_at IS NULL THEN COALESCE(EXCLUDED.sentiment, c.sentiment) ELSE c.sentiment END, \
           cost_breakdown = COALESCE(EXCLUDED.cost_breakdown, c.cost_breakdown), \
           recording_url = CASE WHEN c.content_removed_at IS NULL THEN COALESCE(EXCLUDED.recording_url, c.recording_url) ELSE c.recording_url END, \
           recording_multichannel_url = CASE WHEN c.content_removed_at IS NULL THEN COALESCE(EXCLUDED.recording_multichannel_url, c.recording_multichannel_url) ELSE c.recording_multichannel_url END, \
           recording_sid = CASE WHEN c.content_removed_at IS NULL THEN COALESCE(EXCLUDED.recording_sid, c.recording_sid) ELSE c.recording_sid END, \
           customer_id = CASE WHEN c.content_removed_at IS NULL THEN COALESCE(c.customer_id, EXCLUDED.customer_id) \
                              ELSE c.customer_id END, \
           customer_link = CASE WHEN c.customer_id IS NULL AND c.content_removed_at IS NULL \
                                THEN EXCLUDED.customer_link ELSE c.customer_link END, \
           parent_call_id = COALESCE(EXCLUDED.parent_call_id, c.parent_call_id), \
           review_reason = COALESCE(EXCLUDED.review_reason, c.review_reason), \
           review_detail = CASE WHEN EXCLUDED.review_reason IS NOT NULL THEN EXCLUDED.review_detail \
                                ELSE c.review_detail END, \
           flagged_at = CASE WHEN EXCLUDED.review_reason IS NOT NULL THEN EXCLUDED.flagged_at ELSE c.flagged_at END \
         WHERE c.company_id = EXCLUDED.company_id \
         RETURNING provider, provider_call_id, id",
    )
    .bind(rows.id)
    .bind(rows.company_id)
    .bind(rows.branch_id)
    .bind(rows.phone_number_id)
    .bind(rows.provider)
    .bind(rows.provider_call_id)
    .bind(rows.business_e164)
    .bind(rows.status)
    .bind(rows.progress)
    .bind(rows.progress_seq)
    .bind(rows.first_event_at)
    .bind(rows.last_event_at)
    .bind(rows.direction)
    .bind(rows.caller_raw)
    .bind(rows.caller_e164)
    .bind(rows.started_at)
    .bind(rows.ended_at)
    .bind(rows.duration_ms)
    .bind(rows.transcript)
    .bind(rows.summary)
    .bind(rows.analysis)
    .bind(rows.cost)
    .bind(rows.disconnection_reason)
    .bind(rows.customer_id)
    .bind(rows.customer_link)
    .bind(rows.parent_call_id)
    .bind(rows.review_reason)
    .bind(rows.review_detail)
    .bind(rows.agent_id)
    .bind(rows.agent_version)
    .bind(rows.language)
    .bind(rows.sentiment)
    .bind(rows.cost_breakdown)
    .bind(rows.recording_url)
    .bind(rows.recording_multichannel_url)
    .bind(rows.recording_sid)
    .fetch_all(conn)
    .await
}

/// Appointment rows to insert, one array per column.
#[derive(Debug, Default)]
pub(super) struct AppointmentRows {
    pub company_id: Vec<Uuid>,
    pub branch_id: Vec<Uuid>,
    pub call_id: Vec<Uuid>,
    pub customer_id: Vec<Option<Uuid>>,
    pub service_id: Vec<Uuid>,
    pub starts_at: Vec<DateTime<Utc>>,
    pub ends_at: Vec<DateTime<Utc>>,
    pub timezone: Vec<String>,
    pub customer_name: Vec<Option<String>>,
    pub customer_email: Vec<Option<String>>,
    pub notes: Vec<Option<String>>,
    pub idempotency_key: Vec<String>,
}

/// Inserts the appointments that are not there yet (by idempotency key) and hands each to the
/// Cal.com push: status and sync status `pending`, due now. Returns the keys inserted. Their
/// status history names the call whose analysis created each (the history trigger does that
/// when the transaction has set no reason, as the call path never does).
pub(super) async fn insert_appointments(
    conn: &mut PgConnection,
    rows: AppointmentRows,
) -> Result<Vec<String>, sqlx::Error> {
    if rows.company_id.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(
        "INSERT INTO appointments (company_id, branch_id, call_id, customer_id, service_id, starts_at, ends_at, \
           timezone, customer_name, customer_email, notes, idempotency_key, status, calcom_sync_status, next_attempt_at) \
         SELECT *, $13, $14, now() FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], \
           $6::timestamptz[], $7::timestamptz[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[]) \
         ON CONFLICT (company_id, idempotency_key) DO NOTHING \
         RETURNING idempotency_key",
    )
    .bind(rows.company_id)
    .bind(rows.branch_id)
    .bind(rows.call_id)
    .bind(rows.customer_id)
    .bind(rows.service_id)
    .bind(rows.starts_at)
    .bind(rows.ends_at)
    .bind(rows.timezone)
    .bind(rows.customer_name)
    .bind(rows.customer_email)
    .bind(rows.notes)
    .bind(rows.idempotency_key)
    .bind(AppointmentStatus::Pending.as_sql())
    .bind(SyncStatus::Pending.as_sql())
    .fetch_all(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_keep_provider_and_call_apart() {
        assert_eq!(lock_key("twilio", "CA1"), lock_key("twilio", "CA1"));
        assert_ne!(lock_key("twilio", "CA1"), lock_key("vapi", "CA1"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(lock_key("ab", "c"), lock_key("a", "bc"));
    }
}
