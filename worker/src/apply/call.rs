//! A batch's call events, applied as a set: a fixed number of statements whatever the batch's
//! size (see `store.rs`).
//!
//! 1. Lock the batch's calls and read them (only what decides the merge).
//! 2. Decide each event: a duplicate within the batch, an event type the call model does not
//!    use (`ignored`), one that would cross into another company's call (`refused`), or one to
//!    apply; enter them all in `processed_events` in one statement, which also tells which were
//!    applied before (duplicates).
//! 3. Fold the new events of each call into one state, by the merge rules (`merge.rs`), in
//!    batch order.
//! 4. Link each call's customer (one statement), derive the appointments its analyses ask for
//!    (the branch's settings come from the cache), write every call in one statement, and
//!    insert the appointments in one more.

use std::collections::{HashMap, HashSet};

use callgate_contract::call::{CallStatus, CallUpdate, Caller, Normalized};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::merge::{CallState, Column, DetailColumns};
use super::store::{self, AppointmentRows, CallRows, EventRows, StoredCall};
use super::{CallRecord, Effects, Outcome};
use crate::appointments::{self, Contact, ReviewReason};
use crate::catalog::{Branch, Catalog};
use crate::status::{CustomerLink, EventOutcome};

/// (provider, provider's call id).
type CallKey = (&'static str, String);

/// What became of one event before anything is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Its event id came earlier in the same batch.
    Repeated,
    Ignored,
    Refused(&'static str),
    Apply,
}

const OTHER_COMPANY: &str = "the call belongs to another company";
const PARENT_OTHER_COMPANY: &str = "its parent call belongs to another company";

/// One call of the batch.
#[derive(Debug)]
struct Group<'r> {
    id: Uuid,
    company_id: Uuid,
    stored: Option<&'r StoredCall>,
    /// The event whose route a new call is inserted with (the first applied one).
    first: &'r CallRecord,
    state: CallState,
    customer_id: Option<Uuid>,
    customer_link: CustomerLink,
    parent: Option<Uuid>,
    /// Contact details heard in the analyses, first heard first.
    contact: Contact,
    review: Option<(ReviewReason, String)>,
    /// Indexes (into the batch) of the events applied to it.
    events: Vec<usize>,
}

impl Group<'_> {
    fn caller_raw(&self) -> Option<&str> {
        self.state.caller_raw.write.as_deref().or(self.stored.and_then(|s| s.caller_raw.as_deref()))
    }

    fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.state.ended_at.write.or(self.stored.and_then(|s| s.ended_at))
    }
}

/// An appointment an analysis asks for, before its call has an id for sure.
#[derive(Debug)]
struct Planned<'r> {
    event: usize,
    key: CallKey,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    service: &'r appointments::Service,
    branch: &'r Branch,
    contact: Contact,
    notes: Option<String>,
}

/// Applies `records` (indexes into the batch, and the records), returning each one's outcome.
pub(super) async fn apply(
    conn: &mut sqlx::PgConnection,
    catalog: &Catalog,
    records: &[(usize, &CallRecord)],
) -> Result<Vec<(usize, Outcome)>, sqlx::Error> {
    let updates: Vec<Option<&CallUpdate>> = records
        .iter()
        .map(|(_, r)| match &r.normalized {
            Normalized::Call(update) => Some(&**update),
            _ => None,
        })
        .collect();

    // Each record's call, by index.
    let keys: Vec<CallKey> =
        records.iter().map(|(_, r)| (r.envelope.provider.as_str(), r.envelope.provider_call_id.clone())).collect();

    // 1. Lock and read.
    let mut wanted: Vec<CallKey> = Vec::new();
    let mut locks = Vec::new();
    for (((_, record), update), key) in records.iter().zip(&updates).zip(&keys) {
        let Some(update) = update else { continue };
        locks.push(store::lock_key(key.0, &key.1));
        wanted.push(key.clone());
        if let Some(parent) = &update.parent_call_id {
            wanted.push((record.envelope.provider.as_str(), parent.clone()));
        }
    }
    store::lock_calls(conn, locks).await?;
    wanted.sort();
    wanted.dedup();
    let (providers, ids): (Vec<&str>, Vec<&str>) = wanted.iter().map(|(p, id)| (*p, id.as_str())).unzip();
    let stored_rows = store::read_calls(conn, providers, ids).await?;
    let stored: HashMap<(&str, &str), &StoredCall> =
        stored_rows.iter().map(|row| ((row.provider.as_str(), row.provider_call_id.as_str()), row)).collect();

    // 2. Decide, and enter every event.
    let mut seen = HashSet::new();
    let mut owner: HashMap<CallKey, Uuid> = HashMap::new();
    let mut verdicts = Vec::with_capacity(records.len());
    let mut rows = EventRows::default();
    for (((_, record), update), key) in records.iter().zip(&updates).zip(&keys) {
        let env = &record.envelope;
        let company = env.route.company_id.0;
        if !seen.insert((company, env.event_id)) {
            verdicts.push(Verdict::Repeated);
            continue;
        }
        let verdict = match update {
            None => Verdict::Ignored,
            Some(update) => {
                let owner_of = |key: &CallKey, owner: &HashMap<CallKey, Uuid>| {
                    stored.get(&(key.0, key.1.as_str())).map(|s| s.company_id).or_else(|| owner.get(key).copied())
                };
                let parent_company = update
                    .parent_call_id
                    .as_ref()
                    .and_then(|parent| owner_of(&(env.provider.as_str(), parent.clone()), &owner));
                if parent_company.is_some_and(|c| c != company) {
                    Verdict::Refused(PARENT_OTHER_COMPANY)
                } else if owner_of(key, &owner).is_some_and(|c| c != company) {
                    Verdict::Refused(OTHER_COMPANY)
                } else {
                    owner.entry(key.clone()).or_insert(company);
                    Verdict::Apply
                }
            }
        };
        let (outcome, detail) = match verdict {
            Verdict::Refused(detail) => (EventOutcome::Refused, Some(detail)),
            Verdict::Ignored => (EventOutcome::Ignored, None),
            _ => (EventOutcome::Applied, None),
        };
        rows.event_id.push(env.event_id);
        rows.company_id.push(company);
        rows.provider.push(env.provider.as_str());
        rows.event_type.push(env.event_type.clone());
        rows.provider_call_id.push(env.provider_call_id.clone());
        rows.outcome.push(outcome.as_sql());
        rows.detail.push(detail);
        rows.partition.push(record.partition);
        rows.offset.push(record.offset);
        rows.received_at.push(env.received_at);
        rows.trace_id.push(env.trace_id.clone());
        verdicts.push(verdict);
    }
    let fresh: HashSet<(Uuid, Uuid)> = store::record_events(conn, rows).await?.into_iter().collect();
    let is_fresh = |r: &CallRecord| fresh.contains(&(r.envelope.route.company_id.0, r.envelope.event_id));

    // 3. Fold each call's new events, in batch order.
    let mut groups: HashMap<CallKey, Group> = HashMap::new();
    let mut order: Vec<CallKey> = Vec::new();
    let mut analysed: Vec<(usize, &serde_json::Map<String, serde_json::Value>)> = Vec::new();
    for (i, (((_, record), update), verdict)) in records.iter().zip(&updates).zip(&verdicts).enumerate() {
        let (Some(update), Verdict::Apply) = (update, verdict) else { continue };
        if !is_fresh(record) {
            continue;
        }
        let env = &record.envelope;
        // A leg's customer is its parent's caller.
        let parent = update.parent_call_id.as_ref().and_then(|parent| {
            let key = (env.provider.as_str(), parent.clone());
            match stored.get(&(key.0, key.1.as_str())) {
                Some(row) => Some((row.id, row.caller_raw.clone())),
                None => groups.get(&key).map(|g| (g.id, g.caller_raw().map(str::to_owned))),
            }
        });
        let leg;
        let update = match &parent {
            Some((_, Some(caller))) => {
                leg = CallUpdate { caller: Some(caller.clone()), ..(*update).clone() };
                &leg
            }
            _ => update,
        };
        let key = &keys[i];
        // A call whose content was removed moves on, but takes nothing about its caller back.
        let kept;
        let update = match stored.get(&(key.0, key.1.as_str())) {
            Some(row) if row.content_removed => {
                kept = update.without_personal_data();
                &kept
            }
            _ => update,
        };
        let group = groups.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            new_group(stored.get(&(key.0, key.1.as_str())).copied(), record)
        });
        if let Some((parent_id, _)) = parent {
            group.parent = Some(parent_id);
        }
        let caller_e164 = match update.caller.as_deref().map(Caller::classify) {
            Some(Caller::Number(number)) => Some(number.to_string()),
            _ => None,
        };
        group.state.apply(update, caller_e164.as_ref(), env.received_at);
        group.events.push(i);
        if let Some(data) = updates[i].and_then(|u| u.structured_data.as_ref())
            && update.structured_data.is_some()
        {
            analysed.push((i, data));
        }
    }

    // 4. Settings, contacts and appointment requests of the analysed events.
    let branches =
        catalog.branches(conn, analysed.iter().map(|(i, _)| records[*i].1.envelope.route.branch_id.0)).await?;
    let mut effects: HashMap<usize, Effects> = HashMap::new();
    let mut requests = Vec::new();
    for (i, data) in &analysed {
        let record = records[*i].1;
        let route = &record.envelope.route;
        // The gateway routed the event by a branch of this company; anything else is a defect
        // in the record, and the batch's one-by-one retry dead-letters it.
        let branch = branches
            .get(&route.branch_id.0)
            .filter(|b| b.company_id == route.company_id.0)
            .ok_or(sqlx::Error::RowNotFound)?;
        let contact = appointments::contact(data, &branch.fields);
        let group = groups.get_mut(&keys[*i]).ok_or(sqlx::Error::RowNotFound)?;
        group.contact.name = group.contact.name.take().or_else(|| contact.name.clone());
        group.contact.email = group.contact.email.take().or_else(|| contact.email.clone());
        if let Some(request) = appointments::request(data, &branch.fields) {
            requests.push((*i, branch, contact, request));
        }
    }

    // 5. Customers.
    let mut to_link = Vec::new();
    let mut to_fill = Vec::new();
    for key in &order {
        let group = &groups[key];
        if let Some(customer) = group.customer_id {
            if group.contact.name.is_some() || group.contact.email.is_some() {
                to_fill.push((group.company_id, customer, group.contact.name.clone(), group.contact.email.clone()));
            }
            continue;
        }
        if let Some(Caller::Number(number)) = group.caller_raw().map(Caller::classify) {
            to_link.push((
                group.company_id,
                number.to_string(),
                group.contact.name.clone(),
                group.contact.email.clone(),
            ));
        }
    }
    store::fill_contacts(conn, to_fill).await?;
    let mut linked: HashMap<(Uuid, String), (Uuid, bool)> = store::link_customers(conn, to_link)
        .await?
        .into_iter()
        .map(|c| ((c.company_id, c.e164), (c.id, c.created)))
        .collect();
    for key in &order {
        let group = groups.get_mut(key).ok_or(sqlx::Error::RowNotFound)?;
        if group.customer_id.is_some() {
            continue;
        }
        group.customer_link = match group.caller_raw().map(Caller::classify) {
            None => CustomerLink::NoNumber,
            Some(Caller::Anonymous) => CustomerLink::Anonymous,
            Some(Caller::Unparseable) => CustomerLink::Unparseable,
            Some(Caller::Number(number)) => {
                let Some((id, created)) = linked.get_mut(&(group.company_id, number.to_string())) else {
                    return Err(sqlx::Error::RowNotFound);
                };
                group.customer_id = Some(*id);
                // A second call of the same new customer in this batch found it.
                let link = if *created { CustomerLink::Created } else { CustomerLink::ExactPhone };
                if *created {
                    if let Some(last) = group.events.last() {
                        effects.entry(*last).or_default().customer_created = true;
                    }
                    *created = false;
                }
                link
            }
        };
    }

    // 6. What each request becomes: a planned appointment, or a flag on its call.
    let mut planned = Vec::new();
    for (i, branch, contact, request) in requests {
        let record = records[i].1;
        let key = keys[i].clone();
        let group = groups.get_mut(&key).ok_or(sqlx::Error::RowNotFound)?;
        let reference = group.ended_at().unwrap_or(record.envelope.received_at);
        match plan(record.envelope.received_at, branch, &request, reference) {
            Ok((start, end, service)) => planned.push(Planned {
                event: i,
                key,
                start,
                end,
                service,
                branch,
                contact,
                notes: request.notes.clone(),
            }),
            Err((reason, detail)) => {
                let env = &record.envelope;
                // Not the detail: it quotes the caller (what they asked for), and logs are out
                // of reach of erasure and retention. It is on the call, for `call show`.
                tracing::info!(
                    event_id = %env.event_id, call_id = %env.provider_call_id, reason = reason.as_str(),
                    "call flagged for review"
                );
                effects.entry(i).or_default().flagged = Some(reason);
                group.review = Some((reason, detail));
            }
        }
    }

    // 7. The calls, then their appointments.
    let mut rows = CallRows::default();
    for key in &order {
        push_call(&mut rows, key, &groups[key]);
    }
    let written: HashMap<(String, String), Uuid> =
        store::write_calls(conn, rows).await?.into_iter().map(|(p, c, id)| ((p, c), id)).collect();
    if written.len() != order.len() {
        // The lock and the read make this impossible; refuse the batch rather than guess.
        tracing::error!(expected = order.len(), written = written.len(), "calls changed company under their lock");
        return Err(sqlx::Error::RowNotFound);
    }
    let mut appointment_rows = AppointmentRows::default();
    let mut keys: HashMap<String, usize> = HashMap::new();
    for plan in &planned {
        let group = &groups[&plan.key];
        let call_id = written[&(plan.key.0.to_owned(), plan.key.1.clone())];
        let key = appointments::idempotency_key(group.company_id, call_id, plan.start, plan.service.id);
        if keys.contains_key(&key) {
            continue;
        }
        keys.insert(key.clone(), plan.event);
        let route = &records[plan.event].1.envelope.route;
        appointment_rows.company_id.push(group.company_id);
        appointment_rows.branch_id.push(route.branch_id.0);
        appointment_rows.call_id.push(call_id);
        appointment_rows.customer_id.push(group.customer_id);
        appointment_rows.service_id.push(plan.service.id);
        appointment_rows.starts_at.push(plan.start);
        appointment_rows.ends_at.push(plan.end);
        appointment_rows.timezone.push(plan.branch.timezone.clone());
        appointment_rows.customer_name.push(plan.contact.name.clone());
        appointment_rows.customer_email.push(plan.contact.email.clone());
        appointment_rows.notes.push(plan.notes.clone());
        appointment_rows.idempotency_key.push(key);
    }
    let created = store::insert_appointments(conn, appointment_rows).await?;
    for key in created {
        let Some(&event) = keys.get(&key) else { continue };
        effects.entry(event).or_default().appointment_created = true;
        if let Some(plan) = planned.iter().find(|p| p.event == event) {
            let env = &records[event].1.envelope;
            tracing::info!(
                event_id = %env.event_id, call_id = %env.provider_call_id, service = %plan.service.name,
                starts_at = %plan.start.to_rfc3339(), "appointment created"
            );
        }
    }

    // Outcomes, in batch order.
    Ok(records
        .iter()
        .zip(verdicts)
        .enumerate()
        .map(|(i, ((index, record), verdict))| {
            let env = &record.envelope;
            let outcome = match verdict {
                Verdict::Repeated => Outcome::Duplicate,
                _ if !is_fresh(record) => Outcome::Duplicate,
                Verdict::Ignored => Outcome::Ignored,
                Verdict::Refused(detail) => {
                    tracing::error!(
                        event_id = %env.event_id, call_id = %env.provider_call_id, provider = %env.provider, %detail,
                        "event refused"
                    );
                    Outcome::Refused
                }
                Verdict::Apply => {
                    tracing::debug!(event_id = %env.event_id, call_id = %env.provider_call_id, event_type = %env.event_type, "applied");
                    Outcome::Applied(effects.remove(&i).unwrap_or_default())
                }
            };
            (*index, outcome)
        })
        .collect())
}

fn new_group<'r>(stored: Option<&'r StoredCall>, first: &'r CallRecord) -> Group<'r> {
    let company_id = first.envelope.route.company_id.0;
    let (id, company_id, state, customer_id, customer_link) = match stored {
        Some(row) => (
            row.id,
            row.company_id,
            CallState {
                status: CallStatus::from_sql(&row.status).unwrap_or(CallStatus::Queued),
                progress: Some((row.progress, row.progress_seq)),
                first_event_at: None,
                last_event_at: None,
                direction: Column::stored(row.has_direction),
                caller_raw: Column::stored(row.caller_raw.is_some()),
                caller_e164: Column::stored(row.has_caller_e164),
                started_at: Column::stored(row.has_started_at),
                ended_at: Column::stored(row.ended_at.is_some()),
                duration_ms: Column::stored(row.has_duration_ms),
                transcript: Column::stored(row.has_transcript),
                summary: Column::stored(row.has_summary),
                analysis: Column::stored(row.has_analysis),
                cost_usd: Column::stored(row.has_cost),
                disconnection_reason: Column::stored(row.has_disconnection_reason),
                details: DetailColumns::stored(&row.details_filled),
            },
            row.customer_id,
            CustomerLink::from_sql(&row.customer_link).unwrap_or(CustomerLink::Pending),
        ),
        None => (Uuid::new_v4(), company_id, CallState::new(), None, CustomerLink::Pending),
    };
    Group {
        id,
        company_id,
        stored,
        first,
        state,
        customer_id,
        customer_link,
        parent: None,
        contact: Contact::default(),
        review: None,
        events: Vec::new(),
    }
}

/// An appointment's start, end and service.
type Slot<'b> = (DateTime<Utc>, DateTime<Utc>, &'b appointments::Service);

/// The start, end and service of a request, or why it cannot become an appointment.
pub(super) fn plan<'b>(
    received_at: DateTime<Utc>,
    branch: &'b Branch,
    request: &appointments::Request,
    reference: DateTime<Utc>,
) -> Result<Slot<'b>, (ReviewReason, String)> {
    let start = appointments::parse_start(&request.start, &branch.timezone).map_err(|reason| {
        let detail = match reason {
            ReviewReason::NoTimezone => {
                format!("{} has no offset and the branch zone {:?} is unknown", request.start, branch.timezone)
            }
            _ => format!("cannot read {} as a time in {}", request.start, branch.timezone),
        };
        (reason, detail)
    })?;
    appointments::check_start(start, reference, received_at)?;
    let Some(spoken) = request.service.as_deref() else {
        return Err((ReviewReason::MissingService, "the analysis names no service".to_owned()));
    };
    let Some(service) = appointments::match_service(spoken, &branch.services) else {
        return Err((ReviewReason::UnknownService, format!("no service of the branch is called {spoken:?}")));
    };
    let end = appointments::end_of(start, service.duration_minutes)?;
    Ok((start, end, service))
}

/// Adds a call's row: what the merge decided, and for a new call its route.
fn push_call(rows: &mut CallRows, key: &CallKey, group: &Group) {
    let state = &group.state;
    let route = &group.first.envelope.route;
    let (progress, seq) = state.progress.unwrap_or((0, 0));
    rows.id.push(group.id);
    rows.company_id.push(group.company_id);
    // A stored call keeps its route: these only go into a new call.
    rows.branch_id.push(route.branch_id.0);
    rows.phone_number_id.push(route.phone_number_id.0);
    rows.provider.push(key.0);
    rows.provider_call_id.push(key.1.clone());
    rows.business_e164.push(route.number.to_string());
    rows.status.push(state.status.as_str());
    rows.progress.push(progress);
    rows.progress_seq.push(seq);
    let first = state.first_event_at.unwrap_or_else(Utc::now);
    rows.first_event_at.push(first);
    rows.last_event_at.push(state.last_event_at.unwrap_or(first));
    rows.direction.push(state.direction.write.map(|d| d.as_str()));
    rows.caller_raw.push(state.caller_raw.write.clone());
    rows.caller_e164.push(state.caller_e164.write.clone());
    rows.started_at.push(state.started_at.write);
    rows.ended_at.push(state.ended_at.write);
    rows.duration_ms.push(state.duration_ms.write);
    rows.transcript.push(state.transcript.write.clone());
    rows.summary.push(state.summary.write.clone());
    rows.analysis.push(state.analysis.write.clone());
    rows.cost.push(state.cost_usd.write);
    rows.disconnection_reason.push(state.disconnection_reason.write.clone());
    let details = &state.details;
    rows.agent_id.push(details.agent_id.write.clone());
    rows.agent_version.push(details.agent_version.write);
    rows.language.push(details.language.write.clone());
    rows.sentiment.push(details.sentiment.write.clone());
    rows.cost_breakdown.push(details.cost_breakdown.write.clone());
    rows.recording_url.push(details.recording_url.write.clone());
    rows.recording_multichannel_url.push(details.recording_multichannel_url.write.clone());
    rows.recording_sid.push(details.recording_sid.write.clone());
    rows.customer_id.push(group.customer_id);
    rows.customer_link.push(group.customer_link.as_sql());
    rows.parent_call_id.push(group.parent);
    rows.review_reason.push(group.review.as_ref().map(|(reason, _)| reason.as_str()));
    rows.review_detail.push(group.review.as_ref().map(|(_, detail)| detail.clone()));
}
