//! Re-deriving a call's appointment from its stored analysis, after an operator fixed what
//! flagged it (a service alias, a branch's zone). The rules and the idempotency key are the
//! ones applied when the analysis arrived (`call.rs`), so an appointment that exists is not made
//! twice, and the call's lock serialises this with the consumer.

use callgate_contract::Provider;
use callgate_contract::call::structured_data;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::store::{self, AppointmentRows};
use crate::appointments::{self, ReviewReason};
use crate::catalog;

/// What re-deriving did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rederived {
    /// The appointment was created; the call's flag is cleared.
    Created(String),
    /// It existed already (same idempotency key); the call's flag is cleared.
    Existed(String),
    /// It still cannot become an appointment; the call is flagged with the new reason.
    Flagged(ReviewReason, String),
    /// The call has no analysis asking for one.
    NoRequest,
}

/// The call re-derived: its id, its company, and what happened.
#[derive(Debug)]
pub struct Reprocessed {
    pub call: Uuid,
    pub company: Uuid,
    pub outcome: Rederived,
}

#[derive(Debug, sqlx::FromRow)]
struct StoredAnalysis {
    id: Uuid,
    company_id: Uuid,
    branch_id: Uuid,
    customer_id: Option<Uuid>,
    analysis: Option<Value>,
    ended_at: Option<DateTime<Utc>>,
    last_event_at: DateTime<Utc>,
}

/// Re-derives the appointment of `provider`'s call `provider_call_id`, in the caller's
/// transaction; None when no such call is stored.
pub async fn rederive(
    conn: &mut PgConnection,
    provider: Provider,
    provider_call_id: &str,
) -> Result<Option<Reprocessed>, sqlx::Error> {
    store::lock_calls(conn, vec![store::lock_key(provider.as_str(), provider_call_id)]).await?;
    let call: Option<StoredAnalysis> = sqlx::query_as(
        "SELECT id, company_id, branch_id, customer_id, analysis, ended_at, last_event_at FROM calls \
         WHERE provider = $1 AND provider_call_id = $2",
    )
    .bind(provider.as_str())
    .bind(provider_call_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(call) = call else { return Ok(None) };
    let done = |outcome| Ok(Some(Reprocessed { call: call.id, company: call.company_id, outcome }));
    let Some(data) = call.analysis.as_ref().and_then(|analysis| structured_data(provider, analysis)) else {
        return done(Rederived::NoRequest);
    };
    let branches = catalog::load(conn, &[call.branch_id]).await?;
    let Some((_, branch)) = branches.into_iter().find(|(id, _)| *id == call.branch_id) else {
        return Err(sqlx::Error::RowNotFound);
    };
    let Some(request) = appointments::request(&data, &branch.fields) else { return done(Rederived::NoRequest) };
    // The analysis came with the call's last event: the reference times of its first derivation.
    let reference = call.ended_at.unwrap_or(call.last_event_at);
    let (start, end, service) = match super::call::plan(call.last_event_at, &branch, &request, reference) {
        Ok(slot) => slot,
        Err((reason, detail)) => {
            sqlx::query("UPDATE calls SET review_reason = $2, review_detail = $3, flagged_at = now() WHERE id = $1")
                .bind(call.id)
                .bind(reason.as_str())
                .bind(&detail)
                .execute(&mut *conn)
                .await?;
            return done(Rederived::Flagged(reason, detail));
        }
    };
    let contact = appointments::contact(&data, &branch.fields);
    let key = appointments::idempotency_key(call.company_id, call.id, start, service.id);
    let rows = AppointmentRows {
        company_id: vec![call.company_id],
        branch_id: vec![call.branch_id],
        call_id: vec![call.id],
        customer_id: vec![call.customer_id],
        service_id: vec![service.id],
        starts_at: vec![start],
        ends_at: vec![end],
        timezone: vec![branch.timezone.clone()],
        customer_name: vec![contact.name],
        customer_email: vec![contact.email],
        notes: vec![request.notes],
        idempotency_key: vec![key.clone()],
    };
    let created = !store::insert_appointments(conn, rows).await?.is_empty();
    sqlx::query("UPDATE calls SET review_reason = NULL, review_detail = NULL, flagged_at = NULL WHERE id = $1")
        .bind(call.id)
        .execute(&mut *conn)
        .await?;
    let description = format!("{} at {}", service.name, start.to_rfc3339());
    done(if created { Rederived::Created(description) } else { Rederived::Existed(description) })
}
