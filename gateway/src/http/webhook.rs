//! The webhook pipeline, the same for every provider:
//! read the body (bounded) → extract routing fields → look the number up → verify the
//! signature with that account's secrets → publish the envelope → answer.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use callgate_contract::envelope::{self, ENVELOPE_VERSION, headers as record_headers};
use callgate_contract::{E164, EventEnvelope, Payload, Provider};
use serde_json::value::RawValue;
use tracing::Instrument;

use super::{AppState, EdgeConfig, WebhookError};
use crate::delivery::Delivered;
use crate::directory::{AccountSettings, NumberEntry};
use crate::providers::{MalformedPayload, Routing, retell, twilio, vapi};
use crate::publish::Record;

pub async fn retell(State(state): State<AppState>, request: Request) -> Response {
    handle(state, Provider::Retell, request).await
}

pub async fn vapi(State(state): State<AppState>, request: Request) -> Response {
    handle(state, Provider::Vapi, request).await
}

pub async fn twilio(State(state): State<AppState>, request: Request) -> Response {
    handle(state, Provider::Twilio, request).await
}

/// What an accepted webhook produced, for the log line and the answer.
struct Accepted {
    routing: Routing,
    entry: Arc<NumberEntry>,
    event_id: uuid::Uuid,
    delivered: Delivered,
}

/// Counts a request in flight for as long as it lives, even if the client goes away mid-way.
struct InFlight(prometheus::IntGauge);

impl InFlight {
    fn start(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn handle(state: AppState, provider: Provider, request: Request) -> Response {
    serve(&state.clone(), provider.as_str(), request, |incoming| async move {
        let accepted = process(&state, provider, &incoming.parts, incoming.body, &incoming.trace_id).await?;
        tracing::info!(
            event_id = %accepted.event_id,
            event_type = %accepted.routing.event_type,
            call_id = %accepted.routing.call_id,
            company_id = %accepted.entry.route.company_id,
            delivered_to = accepted.delivered.as_str(),
            elapsed_us = incoming.started.elapsed().as_micros() as u64,
            "webhook accepted"
        );
        Ok(answer(provider, &accepted))
    })
    .await
}

/// A webhook request as every handler receives it.
pub(super) struct Incoming {
    pub parts: Parts,
    pub body: Body,
    pub trace_id: String,
    pub started: Instant,
}

/// What every webhook route does around its own processing: counts it in flight, gives it a
/// trace id and a span, logs and counts a refusal with its outcome, times it.
pub(super) async fn serve<F, Fut>(state: &AppState, sender: &'static str, request: Request, process: F) -> Response
where
    F: FnOnce(Incoming) -> Fut,
    Fut: Future<Output = Result<Response, WebhookError>>,
{
    let _in_flight = InFlight::start(&state.metrics.requests_in_flight);
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let trace_id = trace_id(&parts.headers);
    let span = tracing::info_span!("webhook", provider = sender, %trace_id);
    let declared = declared_length(&parts.headers);
    // Shed before anything is read: past the bound, the body never reaches memory.
    let admitted = state.admission.try_admit(declared);
    let result = match admitted {
        Some(_) => {
            let incoming = Incoming { parts, body, trace_id: trace_id.clone(), started };
            process(incoming).instrument(span.clone()).await
        }
        None => Err(WebhookError::Overloaded),
    };
    drop(admitted);
    let _entered = span.enter();

    let (mut response, outcome) = match result {
        Ok(response) => (response, "accepted"),
        Err(error) => {
            let outcome = error.outcome();
            if error.status().is_server_error() {
                tracing::error!(outcome, %error, "webhook not accepted");
            } else {
                tracing::warn!(outcome, %error, "webhook refused");
            }
            (error.into_response(), outcome)
        }
    };
    if let Ok(value) = HeaderValue::from_str(&trace_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    state.metrics.requests.with_label_values(&[sender, outcome]).inc();
    state.metrics.request_duration.with_label_values(&[sender]).observe(started.elapsed().as_secs_f64());
    response
}

async fn process(
    state: &AppState,
    provider: Provider,
    parts: &Parts,
    body: Body,
    trace_id: &str,
) -> Result<Accepted, WebhookError> {
    let body = read_body(&parts.headers, body, &state.edge).await?;
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    // What the event is made of: the body, except for a Twilio callback configured with
    // method GET, whose parameters are the query string (and are signed as part of the URL).
    let (event, event_content_type) = match twilio_get_parameters(provider, parts) {
        Some(query) => (query, Some(twilio::FORM_CONTENT_TYPE)),
        None => (body.clone(), content_type),
    };

    let routing = match provider {
        Provider::Retell => {
            let (routing, legacy) = retell::routing(&event)?;
            if legacy {
                tracing::warn!("Retell payload used the legacy `data` key");
                state.metrics.payload_quirks.with_label_values(&["retell", "legacy_data_key"]).inc();
            }
            routing
        }
        Provider::Vapi => vapi::routing(&event)?,
        Provider::Twilio => twilio::routing(event_content_type, &event, parts.uri.query())?,
    };

    if !state.directory.is_loaded() {
        return Err(WebhookError::NotReady);
    }
    let lookup_started = Instant::now();
    let entry = lookup(state, provider, &routing)?;
    observe_stage(state, "lookup", lookup_started);

    let verify_started = Instant::now();
    let public_url = public_url(state, &entry, parts);
    verify(provider, &entry, parts, &body, content_type, public_url.as_deref())?;
    observe_stage(state, "verify", verify_started);

    let event_id = envelope::event_id(provider, &routing.call_id, &routing.event_type, &event);
    let (payload, redacted) = payload(provider, event_content_type, event)?;
    if redacted {
        state.metrics.payload_quirks.with_label_values(&[provider.as_str(), "credentials_redacted"]).inc();
    }
    let envelope = EventEnvelope {
        version: ENVELOPE_VERSION,
        event_id,
        provider,
        event_type: routing.event_type.clone(),
        provider_call_id: routing.call_id.clone(),
        received_at: chrono::Utc::now(),
        trace_id: trace_id.to_owned(),
        route: entry.route.clone(),
        redacted,
        payload,
    };
    let value = serde_json::to_vec(&envelope).expect("an envelope always serialises");
    let key = envelope::record_key(provider, routing.partition_call_id());
    let meta = RecordMeta { event_type: &routing.event_type, event_id, trace_id, kind: None };
    let delivered = publish(state, &key, &value, &meta).await?;

    Ok(Accepted { routing, entry, event_id, delivered })
}

/// What every record's headers say about it.
pub(super) struct RecordMeta<'a> {
    pub event_type: &'a str,
    pub event_id: uuid::Uuid,
    pub trace_id: &'a str,
    /// The envelope-kind header; None for a call event.
    pub kind: Option<&'a str>,
}

/// Delivers one envelope with the standard headers (to the broker, or the spool) and times the
/// produce stage: the one path by which every webhook route reaches Kafka.
pub(super) async fn publish(
    state: &AppState,
    key: &str,
    value: &[u8],
    meta: &RecordMeta<'_>,
) -> Result<Delivered, WebhookError> {
    let event_id = meta.event_id.to_string();
    let version = ENVELOPE_VERSION.to_string();
    let mut headers = vec![
        (record_headers::EVENT_TYPE, meta.event_type),
        (record_headers::EVENT_ID, event_id.as_str()),
        (record_headers::TRACE_ID, meta.trace_id),
        (record_headers::ENVELOPE_VERSION, version.as_str()),
    ];
    if let Some(kind) = meta.kind {
        headers.push((record_headers::ENVELOPE_KIND, kind));
    }
    let produce_started = Instant::now();
    let delivered = state.delivery.deliver(Record { key, value, headers: &headers }).await?;
    observe_stage(state, "produce", produce_started);
    Ok(delivered)
}

pub(super) fn observe_stage(state: &AppState, stage: &str, started: Instant) {
    state.metrics.stage_duration.with_label_values(&[stage]).observe(started.elapsed().as_secs_f64());
}

/// The query string of a Twilio request made with method GET.
fn twilio_get_parameters(provider: Provider, parts: &Parts) -> Option<bytes::Bytes> {
    (provider == Provider::Twilio && parts.method == Method::GET)
        .then(|| bytes::Bytes::copy_from_slice(parts.uri.query().unwrap_or("").as_bytes()))
}

/// The body length a request declares (`Content-Length`), if it declares a readable one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
}

/// Reads the whole body, refusing more than the limit (early, from Content-Length, when the
/// sender declares it) and a sender too slow to finish within the read timeout.
pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    edge: &EdgeConfig,
) -> Result<bytes::Bytes, WebhookError> {
    let limit = edge.max_body_bytes;
    let declared = declared_length(headers);
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(WebhookError::TooLarge);
    }
    let read = tokio::time::timeout(edge.body_read_timeout, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| WebhookError::BodyTimeout)?;
    read.map_err(|error| {
        let too_large =
            std::error::Error::source(&error).is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if too_large { WebhookError::TooLarge } else { WebhookError::BodyUnreadable }
    })
}

fn lookup(state: &AppState, provider: Provider, routing: &Routing) -> Result<Arc<NumberEntry>, WebhookError> {
    let directory = state.directory.snapshot();
    let by_number = routing
        .number
        .as_deref()
        .and_then(|raw| E164::parse_with_default(raw, Some(state.edge.default_country_code)).ok())
        .and_then(|number| directory.lookup(number));
    let entry = by_number
        .or_else(|| routing.provider_number_id.as_deref().and_then(|id| directory.lookup_provider_number_id(id)))
        // A number served by another provider is, for this route, not a number we know.
        .filter(|entry| entry.account.provider == provider)
        .ok_or(WebhookError::UnknownNumber)?;
    Ok(entry.clone())
}

/// The URL the provider called, as it knows it: the configured public base, then the path and
/// query exactly as received (not re-encoded).
fn public_url(state: &AppState, entry: &NumberEntry, parts: &Parts) -> Option<String> {
    let account_base = match &entry.account.settings {
        AccountSettings::Twilio { public_base_url } => public_base_url.as_deref(),
        _ => None,
    };
    let base = account_base.or(state.edge.public_base_url.as_deref())?;
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    Some(format!("{}{path_and_query}", base.trim_end_matches('/')))
}

fn verify(
    provider: Provider,
    entry: &NumberEntry,
    parts: &Parts,
    body: &[u8],
    content_type: Option<&str>,
    public_url: Option<&str>,
) -> Result<(), WebhookError> {
    let now = chrono::Utc::now();
    let secrets = entry.account.signing_secret.secrets(now);
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    match (&entry.account.settings, provider) {
        (AccountSettings::Retell, Provider::Retell) => {
            retell::verify(&secrets, body, header(retell::SIGNATURE_HEADER), now_ms)?;
        }
        (AccountSettings::Vapi { auth }, Provider::Vapi) => {
            let request = vapi::Request { header, body, url: public_url, now_ms };
            vapi::verify(auth, &secrets, &request)?;
        }
        (AccountSettings::Twilio { .. }, Provider::Twilio) => {
            let url = public_url.ok_or(WebhookError::Misconfigured("no public base URL for Twilio"))?;
            twilio::verify(&secrets, url, content_type, body, header(twilio::SIGNATURE_HEADER))?;
        }
        _ => return Err(WebhookError::UnknownNumber),
    }
    Ok(())
}

/// The verified body as the envelope carries it; Vapi credentials echoed in the payload are
/// redacted first.
fn payload(
    provider: Provider,
    content_type: Option<&str>,
    body: bytes::Bytes,
) -> Result<(Payload, bool), WebhookError> {
    let text = String::from_utf8(body.to_vec()).map_err(|_| MalformedPayload("body is not UTF-8"))?;
    let is_form = provider == Provider::Twilio
        && content_type.is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if is_form || (provider == Provider::Twilio && text.is_empty()) {
        return Ok((Payload::Form(text), false));
    }
    let (text, redacted) = if provider == Provider::Vapi {
        // Never published unredacted: a body that cannot be checked is refused (400).
        match vapi::redact(text.as_bytes())
            .map_err(|_| MalformedPayload("body may carry credentials and is not readable JSON"))?
        {
            Some(clean) => (clean, true),
            None => (text, false),
        }
    } else {
        (text, false)
    };
    let raw = RawValue::from_string(text).map_err(|_| MalformedPayload("body is not JSON"))?;
    Ok((Payload::Json(raw), redacted))
}

/// The answer each provider expects on success.
fn answer(provider: Provider, accepted: &Accepted) -> Response {
    match provider {
        Provider::Vapi if accepted.routing.event_type == vapi::ASSISTANT_REQUEST => {
            let body = match &accepted.entry.agent_id {
                Some(id) => serde_json::json!({ "assistantId": id.as_ref() }),
                // Spoken to the caller by Vapi: keep it generic.
                None => serde_json::json!({ "error": "This number is not available right now." }),
            };
            if accepted.entry.agent_id.is_none() {
                tracing::error!(phone_number_id = %accepted.entry.route.phone_number_id, "assistant-request for a number with no assistant configured");
            }
            json(StatusCode::OK, body)
        }
        Provider::Vapi => json(StatusCode::OK, serde_json::json!({})),
        Provider::Retell if accepted.routing.event_type == retell::INBOUND_EVENT => {
            let body = accepted.entry.retell_inbound.as_deref().unwrap_or("{}").to_owned();
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Provider::Retell | Provider::Twilio => StatusCode::NO_CONTENT.into_response(),
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// The W3C `traceparent` trace id when the caller sent one, else a fresh id.
fn trace_id(headers: &HeaderMap) -> String {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|tp| tp.split('-').nth(1))
        .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}
