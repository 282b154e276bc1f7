//! One call event: dedupe it, upsert its call (a call only moves forward), link the customer
//! inside the call's company, and create the appointment its analysis asks for.

use std::sync::LazyLock;

use callgate_contract::EventEnvelope;
use callgate_contract::call::{CallUpdate, Caller, Normalized};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, Row as _};
use uuid::Uuid;

use super::{CallRecord, Effects, Outcome, Prepared, record_event, set_status_reason};
use crate::appointments::{self, Contact, FieldMap, ReviewReason, Service};

pub(super) async fn apply(
    conn: &mut PgConnection,
    prepared: &Prepared,
    record: &CallRecord,
) -> Result<Outcome, sqlx::Error> {
    let env = &record.envelope;
    let Normalized::Call(update) = &record.normalized else {
        return Ok(if record_event(conn, prepared, "ignored").await? { Outcome::Ignored } else { Outcome::Duplicate });
    };
    let parent = match &update.parent_call_id {
        Some(parent_call_id) => match find_parent(conn, record, parent_call_id).await? {
            Parent::OtherCompany => {
                if !record_event(conn, prepared, "refused").await? {
                    return Ok(Outcome::Duplicate);
                }
                refuse(conn, env, "its parent call belongs to another company").await?;
                return Ok(Outcome::Refused);
            }
            Parent::Found(parent) => Some(parent),
            Parent::Unknown => None,
        },
        None => None,
    };
    // A leg's customer is its parent's caller.
    let leg;
    let update = match &parent {
        Some(parent) if parent.caller_raw.is_some() => {
            leg = CallUpdate { caller: parent.caller_raw.clone(), ..(**update).clone() };
            &leg
        }
        _ => &**update,
    };
    let call = match upsert_call(conn, record, update).await? {
        Upserted::Duplicate => return Ok(Outcome::Duplicate),
        Upserted::Call(call) => call,
        Upserted::OtherCompany => {
            refuse(conn, env, "the call belongs to another company").await?;
            return Ok(Outcome::Refused);
        }
    };
    if let Some(parent) = &parent {
        sqlx::query("UPDATE calls SET parent_call_id = $2 WHERE id = $1 AND parent_call_id IS DISTINCT FROM $2")
            .bind(call.id)
            .bind(parent.id)
            .execute(&mut *conn)
            .await?;
    }
    let mut effects = Effects::default();
    let company = env.route.company_id.0;
    let analysis = match &update.structured_data {
        Some(data) => Some((data, load_company_settings(conn, company, env.route.branch_id.0).await?)),
        None => None,
    };
    let contact = analysis.as_ref().map(|(data, s)| appointments::contact(data, &s.fields)).unwrap_or_default();
    let customer = link_customer(conn, company, &call, &contact, &mut effects).await?;
    if let Some((data, settings)) = &analysis
        && let Some(request) = appointments::request(data, &settings.fields)
    {
        let reference = call.ended_at.unwrap_or(env.received_at);
        let result = create_appointment(conn, record, &call, customer, &contact, &request, settings, reference).await?;
        match result {
            Ok(created) => effects.appointment_created = created,
            Err((reason, detail)) => {
                flag_call(conn, call.id, reason, &detail).await?;
                tracing::info!(
                    event_id = %env.event_id, call_id = %env.provider_call_id, reason = reason.as_str(), %detail,
                    "call flagged for review"
                );
                effects.flagged = Some(reason);
            }
        }
    }
    tracing::debug!(event_id = %env.event_id, call_id = %env.provider_call_id, event_type = %env.event_type, "applied");
    Ok(Outcome::Applied(effects))
}

/// Marks the event, already entered in `processed_events`, refused: it would have crossed
/// into another company's data.
async fn refuse(conn: &mut PgConnection, env: &EventEnvelope, detail: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE processed_events SET outcome = 'refused', detail = $2 WHERE company_id = $3 AND event_id = $1")
        .bind(env.event_id)
        .bind(detail)
        .bind(env.route.company_id.0)
        .execute(&mut *conn)
        .await?;
    tracing::error!(
        event_id = %env.event_id, call_id = %env.provider_call_id, provider = %env.provider, %detail,
        "event refused"
    );
    Ok(())
}

/// The call a leg belongs to, as far as this company may know it.
enum Parent {
    Found(ParentCall),
    /// Another company's call: the leg was routed by a caller id that is not its business.
    OtherCompany,
    /// Not (yet) a call here: its events did not come through callgate.
    Unknown,
}

struct ParentCall {
    id: Uuid,
    caller_raw: Option<String>,
}

async fn find_parent(
    conn: &mut PgConnection,
    record: &CallRecord,
    parent_call_id: &str,
) -> Result<Parent, sqlx::Error> {
    let env = &record.envelope;
    let row = sqlx::query("SELECT id, company_id, caller_raw FROM calls WHERE provider = $1 AND provider_call_id = $2")
        .bind(env.provider.as_str())
        .bind(parent_call_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Ok(Parent::Unknown);
    };
    if row.try_get::<Uuid, _>("company_id")? != env.route.company_id.0 {
        return Ok(Parent::OtherCompany);
    }
    Ok(Parent::Found(ParentCall { id: row.try_get("id")?, caller_raw: row.try_get("caller_raw")? }))
}

#[derive(Debug)]
enum Upserted {
    Call(CallRow),
    /// The event id was applied before: nothing was written.
    Duplicate,
    /// The call id belongs to another company: only the event was recorded.
    OtherCompany,
}

/// The call as it stands after an upsert.
#[derive(Debug)]
struct CallRow {
    id: Uuid,
    customer_id: Option<Uuid>,
    customer_link: String,
    caller_raw: Option<String>,
    ended_at: Option<DateTime<Utc>>,
}

/// Columns an event may fill. A newer event (by progress) overwrites them with what it has; an
/// older one only fills blanks. Neither ever writes NULL over a value.
const DATA_COLUMNS: &[&str] = &[
    "direction",
    "caller_raw",
    "caller_e164",
    "started_at",
    "ended_at",
    "duration_ms",
    "transcript",
    "summary",
    "analysis",
    "cost",
    "disconnection_reason",
];

static UPSERT_CALL: LazyLock<String> = LazyLock::new(|| {
    let newer = "(EXCLUDED.progress, EXCLUDED.progress_seq) >= (c.progress, c.progress_seq)";
    let mut sets = vec![
        format!("status = CASE WHEN {newer} THEN EXCLUDED.status ELSE c.status END"),
        format!("progress = CASE WHEN {newer} THEN EXCLUDED.progress ELSE c.progress END"),
        format!("progress_seq = CASE WHEN {newer} THEN EXCLUDED.progress_seq ELSE c.progress_seq END"),
        "first_event_at = LEAST(c.first_event_at, EXCLUDED.first_event_at)".to_owned(),
        "last_event_at = GREATEST(c.last_event_at, EXCLUDED.last_event_at)".to_owned(),
    ];
    for column in DATA_COLUMNS {
        sets.push(format!(
            "{column} = CASE WHEN {newer} THEN COALESCE(EXCLUDED.{column}, c.{column}) \
             ELSE COALESCE(c.{column}, EXCLUDED.{column}) END"
        ));
    }
    // The dedupe insert and the upsert in one statement (one round trip per event instead of
    // two); `fresh` is empty for a redelivery, and then the upsert inserts nothing.
    format!(
        "WITH fresh AS ( \
           INSERT INTO processed_events (event_id, company_id, provider, event_type, provider_call_id, outcome, \
             kafka_partition, kafka_offset, received_at) \
           VALUES ($22, $1, $4, $23, $5, 'applied', $24, $25, $10) \
           ON CONFLICT (company_id, event_id) DO NOTHING RETURNING 1 \
         ), upserted AS ( \
           INSERT INTO calls AS c (company_id, branch_id, phone_number_id, provider, provider_call_id, business_e164, \
             status, progress, progress_seq, first_event_at, last_event_at, {columns}) \
           SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
             $20::float8, $21 \
           WHERE EXISTS (SELECT 1 FROM fresh) \
           ON CONFLICT (provider, provider_call_id) DO UPDATE SET {sets} \
           WHERE c.company_id = EXCLUDED.company_id \
           RETURNING id, customer_id, customer_link, caller_raw, ended_at \
         ) \
         SELECT EXISTS (SELECT 1 FROM fresh) AS fresh, u.id, u.customer_id, u.customer_link, u.caller_raw, u.ended_at \
         FROM (SELECT 1) AS one LEFT JOIN upserted u ON true",
        columns = DATA_COLUMNS.join(", "),
        sets = sets.join(", "),
    )
});

/// Records the event and inserts or advances its call.
async fn upsert_call(
    conn: &mut PgConnection,
    record: &CallRecord,
    update: &CallUpdate,
) -> Result<Upserted, sqlx::Error> {
    let env = &record.envelope;
    let caller_e164 = match update.caller.as_deref().map(Caller::classify) {
        Some(Caller::Number(number)) => Some(number.to_string()),
        _ => None,
    };
    let row = sqlx::query(&UPSERT_CALL)
        .bind(env.route.company_id.0)
        .bind(env.route.branch_id.0)
        .bind(env.route.phone_number_id.0)
        .bind(env.provider.as_str())
        .bind(&env.provider_call_id)
        .bind(env.route.number.to_string())
        .bind(update.status.as_str())
        .bind(update.progress.rank)
        .bind(update.progress.seq)
        .bind(env.received_at)
        .bind(update.direction.map(|d| d.as_str()))
        .bind(update.caller.as_deref())
        .bind(caller_e164)
        .bind(update.started_at)
        .bind(update.ended_at)
        .bind(update.duration_ms)
        .bind(update.transcript.as_deref())
        .bind(update.summary.as_deref())
        .bind(update.analysis.as_ref())
        .bind(update.cost_usd)
        .bind(update.disconnection_reason.as_deref())
        .bind(env.event_id)
        .bind(&env.event_type)
        .bind(record.partition)
        .bind(record.offset)
        .fetch_one(&mut *conn)
        .await?;
    if !row.try_get::<bool, _>("fresh")? {
        return Ok(Upserted::Duplicate);
    }
    let Some(id) = row.try_get::<Option<Uuid>, _>("id")? else {
        return Ok(Upserted::OtherCompany);
    };
    Ok(Upserted::Call(CallRow {
        id,
        customer_id: row.try_get("customer_id")?,
        customer_link: row.try_get("customer_link")?,
        caller_raw: row.try_get("caller_raw")?,
        ended_at: row.try_get("ended_at")?,
    }))
}

/// The company's appointment settings and the branch's zone.
#[derive(Debug)]
struct CompanySettings {
    fields: FieldMap,
    timezone: String,
}

async fn load_company_settings(
    conn: &mut PgConnection,
    company: Uuid,
    branch: Uuid,
) -> Result<CompanySettings, sqlx::Error> {
    let row = sqlx::query(
        "SELECT c.appointment_fields, b.timezone FROM companies c JOIN branches b ON b.company_id = c.id \
         WHERE c.id = $1 AND b.id = $2",
    )
    .bind(company)
    .bind(branch)
    .fetch_one(&mut *conn)
    .await?;
    let overrides: Value = row.try_get("appointment_fields")?;
    Ok(CompanySettings { fields: FieldMap::with_overrides(&overrides), timezone: row.try_get("timezone")? })
}

/// Links the call to a customer of its own company, once; fills blank contact details.
/// Returns the customer, if the call has one.
async fn link_customer(
    conn: &mut PgConnection,
    company: Uuid,
    call: &CallRow,
    contact: &Contact,
    effects: &mut Effects,
) -> Result<Option<Uuid>, sqlx::Error> {
    if let Some(customer) = call.customer_id {
        if contact.name.is_some() || contact.email.is_some() {
            sqlx::query(
                "UPDATE customers SET name = COALESCE(name, $3), email = COALESCE(email, $4) \
                 WHERE company_id = $1 AND id = $2 AND (name IS NULL AND $3::text IS NOT NULL \
                 OR email IS NULL AND $4::text IS NOT NULL)",
            )
            .bind(company)
            .bind(customer)
            .bind(contact.name.as_deref())
            .bind(contact.email.as_deref())
            .execute(&mut *conn)
            .await?;
        }
        return Ok(Some(customer));
    }
    let number = match call.caller_raw.as_deref().map(Caller::classify) {
        Some(Caller::Number(number)) => number,
        other => {
            let link = match other {
                None => "no_number",
                Some(Caller::Anonymous) => "anonymous",
                _ => "unparseable",
            };
            if call.customer_link != link {
                sqlx::query("UPDATE calls SET customer_link = $2 WHERE id = $1")
                    .bind(call.id)
                    .bind(link)
                    .execute(&mut *conn)
                    .await?;
            }
            return Ok(None);
        }
    };
    // One statement whether the customer exists or not; concurrent callers serialise on the
    // (company_id, e164) index.
    let row = sqlx::query(
        "INSERT INTO customers AS cu (company_id, e164, name, email) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (company_id, e164) WHERE deleted_at IS NULL DO UPDATE \
         SET name = COALESCE(cu.name, EXCLUDED.name), email = COALESCE(cu.email, EXCLUDED.email) \
         RETURNING id, (xmax = 0) AS created",
    )
    .bind(company)
    .bind(number.to_string())
    .bind(contact.name.as_deref())
    .bind(contact.email.as_deref())
    .fetch_one(&mut *conn)
    .await?;
    let customer: Uuid = row.try_get("id")?;
    let created: bool = row.try_get("created")?;
    effects.customer_created = created;
    sqlx::query("UPDATE calls SET customer_id = $2, customer_link = $3 WHERE id = $1")
        .bind(call.id)
        .bind(customer)
        .bind(if created { "created" } else { "exact_phone" })
        .execute(&mut *conn)
        .await?;
    Ok(Some(customer))
}

/// Creates the requested appointment. `Ok(Ok(true))`: created; `Ok(Ok(false))`: it existed
/// (same idempotency key); `Ok(Err(reason))`: the request cannot become an appointment.
#[allow(clippy::too_many_arguments)]
async fn create_appointment(
    conn: &mut PgConnection,
    record: &CallRecord,
    call: &CallRow,
    customer: Option<Uuid>,
    contact: &Contact,
    request: &appointments::Request,
    settings: &CompanySettings,
    reference: DateTime<Utc>,
) -> Result<Result<bool, (ReviewReason, String)>, sqlx::Error> {
    let env = &record.envelope;
    let start = match appointments::parse_start(&request.start, &settings.timezone) {
        Ok(start) => start,
        Err(reason) => {
            let detail = match reason {
                ReviewReason::NoTimezone => {
                    format!("{} has no offset and the branch zone {:?} is unknown", request.start, settings.timezone)
                }
                _ => format!("cannot read {} as a time in {}", request.start, settings.timezone),
            };
            return Ok(Err((reason, detail)));
        }
    };
    if let Err(flag) = appointments::check_start(start, reference, record.envelope.received_at) {
        return Ok(Err(flag));
    }
    let Some(spoken) = request.service.as_deref() else {
        return Ok(Err((ReviewReason::MissingService, "the analysis names no service".to_owned())));
    };
    let services = branch_services(conn, env.route.company_id.0, env.route.branch_id.0).await?;
    let Some(service) = appointments::match_service(spoken, &services) else {
        return Ok(Err((ReviewReason::UnknownService, format!("no service of the branch is called {spoken:?}"))));
    };
    let company = env.route.company_id.0;
    let key = appointments::idempotency_key(company, call.id, start, service.id);
    let end = match appointments::end_of(start, service.duration_minutes) {
        Ok(end) => end,
        Err(flag) => return Ok(Err(flag)),
    };
    let reason = format!("created from the analysis of {} call {}", env.provider, env.provider_call_id);
    set_status_reason(conn, &reason).await?;
    let created = sqlx::query(
        "INSERT INTO appointments (company_id, branch_id, call_id, customer_id, service_id, starts_at, ends_at, \
         timezone, customer_name, customer_email, notes, idempotency_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (company_id, idempotency_key) DO NOTHING",
    )
    .bind(company)
    .bind(env.route.branch_id.0)
    .bind(call.id)
    .bind(customer)
    .bind(service.id)
    .bind(start)
    .bind(end)
    .bind(&settings.timezone)
    .bind(contact.name.as_deref())
    .bind(contact.email.as_deref())
    .bind(request.notes.as_deref())
    .bind(&key)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if created {
        tracing::info!(
            event_id = %env.event_id, call_id = %env.provider_call_id, service = %service.name,
            starts_at = %start.to_rfc3339(), "appointment created"
        );
    }
    Ok(Ok(created))
}

async fn branch_services(conn: &mut PgConnection, company: Uuid, branch: Uuid) -> Result<Vec<Service>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, name, aliases, duration_minutes FROM services \
         WHERE company_id = $1 AND branch_id = $2 AND deleted_at IS NULL ORDER BY created_at, id",
    )
    .bind(company)
    .bind(branch)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Service {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                aliases: row.try_get("aliases")?,
                duration_minutes: row.try_get("duration_minutes")?,
            })
        })
        .collect()
}

async fn flag_call(conn: &mut PgConnection, call: Uuid, reason: ReviewReason, detail: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE calls SET review_reason = $2, review_detail = $3, flagged_at = now() WHERE id = $1")
        .bind(call)
        .bind(reason.as_str())
        .bind(detail)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upsert_never_writes_null_over_a_value() {
        for column in DATA_COLUMNS {
            assert!(UPSERT_CALL.contains(&format!("COALESCE(EXCLUDED.{column}, c.{column})")), "{column}");
            assert!(UPSERT_CALL.contains(&format!("COALESCE(c.{column}, EXCLUDED.{column})")), "{column}");
        }
    }
}
