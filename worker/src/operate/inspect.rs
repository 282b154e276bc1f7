//! `call show`: one call as callgate holds it — the call row, every event entered for it in the
//! order received (applied, ignored or refused, with its trace id), its customer, and its
//! appointments with their status history and Cal.com attempts. Read-only, so not audited.
//!
//! The transcript is left out (its length is shown): this output goes to terminals and tickets,
//! and a caller's words do not belong there. The analysis is in the JSON form only.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// The call row.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct CallView {
    pub id: Uuid,
    pub company: String,
    pub provider: String,
    pub provider_call_id: String,
    pub status: String,
    pub direction: Option<String>,
    pub caller_raw: Option<String>,
    pub business_e164: String,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub transcript_chars: Option<i32>,
    pub summary: Option<String>,
    pub analysis: Option<Value>,
    pub cost_usd: Option<f64>,
    pub disconnection_reason: Option<String>,
    pub customer_link: String,
    pub review_reason: Option<String>,
    pub review_detail: Option<String>,
    pub parent_call_id: Option<Uuid>,
    pub agent_id: Option<String>,
    pub language: Option<String>,
    pub sentiment: Option<String>,
    /// Where the recording is: a pointer to the caller's voice, so in the JSON form only.
    pub recording_url: Option<String>,
    pub first_event_at: DateTime<Utc>,
    pub last_event_at: DateTime<Utc>,
}

/// An event entered for the call.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct EventView {
    pub event_id: Uuid,
    pub event_type: String,
    pub outcome: String,
    pub detail: Option<String>,
    pub received_at: DateTime<Utc>,
    pub processed_at: DateTime<Utc>,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    pub trace_id: Option<String>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct CustomerView {
    pub id: Uuid,
    pub e164: String,
    pub name: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct AppointmentView {
    pub id: Uuid,
    pub service: String,
    pub starts_at: DateTime<Utc>,
    pub timezone: String,
    pub status: String,
    pub calcom_sync_status: String,
    pub calcom_unsure: bool,
    pub sync_attempts: i32,
    pub last_sync_error: Option<String>,
    pub calcom_booking_uid: Option<String>,
    #[sqlx(skip)]
    pub history: Vec<HistoryView>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct HistoryView {
    pub changed_at: DateTime<Utc>,
    pub from_status: Option<String>,
    pub to_status: String,
    pub from_sync_status: Option<String>,
    pub to_sync_status: String,
    pub reason: Option<String>,
}

/// Everything about one call.
#[derive(Debug, Serialize)]
pub struct CallReport {
    pub call: CallView,
    pub events: Vec<EventView>,
    pub customer: Option<CustomerView>,
    pub appointments: Vec<AppointmentView>,
}

/// A call found by one of its numbers.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct CallMatch {
    pub provider: String,
    pub provider_call_id: String,
    pub caller_raw: Option<String>,
    pub business_e164: String,
    pub status: String,
    pub started_at: DateTime<Utc>,
}

/// Most calls `by_number` lists.
const MATCHES: i64 = 20;

/// `company`'s calls from or to `number`: within an hour of `at`, nearest first, or the latest.
pub async fn by_number(
    pool: &PgPool,
    company: Uuid,
    number: &str,
    at: Option<DateTime<Utc>>,
) -> Result<Vec<CallMatch>, sqlx::Error> {
    sqlx::query_as(
        "SELECT provider, provider_call_id, caller_raw, business_e164, status, \
           COALESCE(started_at, first_event_at) AS started_at \
         FROM calls \
         WHERE company_id = $1 AND (caller_e164 = $2 OR caller_raw = $2 OR business_e164 = $2) \
           AND ($3::timestamptz IS NULL \
                OR COALESCE(started_at, first_event_at) BETWEEN $3 - interval '1 hour' AND $3 + interval '1 hour') \
         ORDER BY abs(extract(epoch FROM COALESCE(started_at, first_event_at) - COALESCE($3, now()))) \
         LIMIT $4",
    )
    .bind(company)
    .bind(number)
    .bind(at)
    .bind(MATCHES)
    .fetch_all(pool)
    .await
}

/// What to print when a number matches several calls: each, and how to show one.
pub fn matches_lines(found: &[CallMatch]) -> Vec<String> {
    let mut lines =
        vec![format!("{} calls match (nearest first); show one with --provider and --call-id:", found.len())];
    lines.extend(found.iter().map(|m| {
        format!(
            "  {} {} {} caller {} business {} {}",
            m.started_at.to_rfc3339(),
            m.provider,
            m.provider_call_id,
            m.caller_raw.as_deref().unwrap_or("-"),
            m.business_e164,
            m.status
        )
    }));
    lines
}

/// The call `provider_call_id` of `provider`, if callgate holds it.
pub async fn call(pool: &PgPool, provider: &str, provider_call_id: &str) -> Result<Option<CallReport>, sqlx::Error> {
    let call: Option<CallView> = sqlx::query_as(
        "SELECT c.id, co.slug AS company, c.provider, c.provider_call_id, c.status, c.direction, c.caller_raw, \
           c.business_e164, c.started_at, c.ended_at, c.duration_ms, length(c.transcript) AS transcript_chars, \
           c.summary, c.analysis, c.cost::float8 AS cost_usd, c.disconnection_reason, c.customer_link, \
           c.review_reason, c.review_detail, c.parent_call_id, c.agent_id, c.language, c.sentiment, \
           c.recording_url, c.first_event_at, c.last_event_at \
         FROM calls c JOIN companies co ON co.id = c.company_id \
         WHERE c.provider = $1 AND c.provider_call_id = $2",
    )
    .bind(provider)
    .bind(provider_call_id)
    .fetch_optional(pool)
    .await?;
    let Some(call) = call else { return Ok(None) };
    let events = sqlx::query_as(
        "SELECT event_id, event_type, outcome, detail, received_at, processed_at, kafka_partition, kafka_offset, \
           trace_id \
         FROM processed_events WHERE provider = $1 AND provider_call_id = $2 \
         ORDER BY received_at, kafka_partition, kafka_offset",
    )
    .bind(provider)
    .bind(provider_call_id)
    .fetch_all(pool)
    .await?;
    let customer = sqlx::query_as(
        "SELECT cu.id, cu.e164, cu.name, cu.email FROM calls c \
         JOIN customers cu ON cu.company_id = c.company_id AND cu.id = c.customer_id WHERE c.id = $1",
    )
    .bind(call.id)
    .fetch_optional(pool)
    .await?;
    let mut appointments: Vec<AppointmentView> = sqlx::query_as(
        "SELECT a.id, s.name AS service, a.starts_at, a.timezone, a.status, a.calcom_sync_status, a.calcom_unsure, \
           a.sync_attempts, a.last_sync_error, a.calcom_booking_uid \
         FROM appointments a JOIN services s ON s.company_id = a.company_id AND s.id = a.service_id \
         WHERE a.call_id = $1 ORDER BY a.created_at",
    )
    .bind(call.id)
    .fetch_all(pool)
    .await?;
    for appointment in &mut appointments {
        appointment.history = sqlx::query_as(
            "SELECT changed_at, from_status, to_status, from_sync_status, to_sync_status, reason \
             FROM appointment_status_history WHERE appointment_id = $1 ORDER BY id",
        )
        .bind(appointment.id)
        .fetch_all(pool)
        .await?;
    }
    Ok(Some(CallReport { call, events, customer, appointments }))
}

impl CallReport {
    /// The human-readable form.
    pub fn lines(&self) -> Vec<String> {
        let c = &self.call;
        let or = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
        let at = |value: Option<DateTime<Utc>>| value.map_or_else(|| "-".to_owned(), |at| at.to_rfc3339());
        let mut lines = vec![
            format!("call {} {} ({}), company {}", c.provider, c.provider_call_id, c.id, c.company),
            format!(
                "  {} {}, caller {}, business {}, customer link {}",
                c.status,
                or(&c.direction),
                or(&c.caller_raw),
                c.business_e164,
                c.customer_link
            ),
            format!(
                "  started {}, ended {}, {} ms, transcript {} chars, cost {}",
                at(c.started_at),
                at(c.ended_at),
                c.duration_ms.map_or_else(|| "-".to_owned(), |ms| ms.to_string()),
                c.transcript_chars.unwrap_or(0),
                c.cost_usd.map_or_else(|| "-".to_owned(), |usd| format!("${usd:.4}")),
            ),
        ];
        lines.push(format!(
            "  agent {}, language {}, sentiment {}, recording {}",
            or(&c.agent_id),
            or(&c.language),
            or(&c.sentiment),
            if c.recording_url.is_some() { "kept (--json shows where)" } else { "none" },
        ));
        if let Some(summary) = &c.summary {
            lines.push(format!("  summary: {summary}"));
        }
        if let Some(reason) = &c.review_reason {
            lines.push(format!("  flagged for review: {reason}: {}", or(&c.review_detail)));
        }
        if let Some(parent) = c.parent_call_id {
            lines.push(format!("  a leg of call {parent}"));
        }
        lines.push(format!("events ({}):", self.events.len()));
        for e in &self.events {
            lines.push(format!(
                "  {} {:<20} {:<8} trace {} partition {} offset {}{}",
                e.received_at.to_rfc3339(),
                e.event_type,
                e.outcome,
                e.trace_id.as_deref().unwrap_or("-"),
                e.kafka_partition,
                e.kafka_offset,
                e.detail.as_deref().map(|d| format!(" — {d}")).unwrap_or_default(),
            ));
        }
        match &self.customer {
            Some(cu) => lines.push(format!("customer {} {} {} {}", cu.id, cu.e164, or(&cu.name), or(&cu.email))),
            None => lines.push("customer: none".to_owned()),
        }
        for a in &self.appointments {
            lines.push(format!(
                "appointment {} {} at {} ({}): {}, Cal.com {}{}, {} attempt(s), booking {}",
                a.id,
                a.service,
                a.starts_at.to_rfc3339(),
                a.timezone,
                a.status,
                a.calcom_sync_status,
                if a.calcom_unsure { " (unsure)" } else { "" },
                a.sync_attempts,
                or(&a.calcom_booking_uid),
            ));
            if let Some(error) = &a.last_sync_error {
                lines.push(format!("  last error: {error}"));
            }
            for h in &a.history {
                lines.push(format!(
                    "  {} {} -> {}, Cal.com {} -> {}: {}",
                    h.changed_at.to_rfc3339(),
                    or(&h.from_status),
                    h.to_status,
                    or(&h.from_sync_status),
                    h.to_sync_status,
                    or(&h.reason),
                ));
            }
        }
        lines
    }
}
