//! `POST /v1/webhooks/calcom/{path}`: a Cal.com booking change, for the company whose endpoint
//! path it was sent to. Verified with that company's webhook secret before anything in the
//! body is read, then published on the events topic like a call event.

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use callgate_contract::booking::{self, BookingEnvelope};
use callgate_contract::envelope::ENVELOPE_VERSION;
use serde_json::value::RawValue;

use super::webhook::{Incoming, RecordMeta, observe_stage, publish, read_body, serve};
use super::{AppState, WebhookError};
use crate::providers::{MalformedPayload, calcom};

pub async fn calcom(State(state): State<AppState>, Path(endpoint): Path<String>, request: Request) -> Response {
    serve(&state.clone(), booking::SOURCE, request, |incoming| process(state, endpoint, incoming)).await
}

async fn process(state: AppState, endpoint: String, incoming: Incoming) -> Result<Response, WebhookError> {
    let Incoming { parts, body, trace_id, started } = incoming;
    let body = read_body(&parts.headers, body, &state.edge).await?;
    if !state.directory.is_loaded() {
        return Err(WebhookError::NotReady);
    }
    let entry = state.directory.snapshot().lookup_calendar(&endpoint).cloned().ok_or(WebhookError::UnknownEndpoint)?;

    let verify_started = std::time::Instant::now();
    let signature = parts.headers.get(calcom::SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    calcom::verify(&entry.webhook_secret.secrets(chrono::Utc::now()), &body, signature)?;
    observe_stage(&state, "verify", verify_started);

    let (event_type, booking_uid) = booking::routing(&body).map_err(|e| MalformedPayload(e.0))?;
    let text = String::from_utf8(body.to_vec()).map_err(|_| MalformedPayload("body is not UTF-8"))?;
    let payload = RawValue::from_string(text).map_err(|_| MalformedPayload("body is not JSON"))?;
    let envelope = BookingEnvelope {
        version: ENVELOPE_VERSION,
        event_id: booking::event_id(entry.route.company_id, &event_type, &booking_uid, &body),
        source: booking::SOURCE.to_owned(),
        event_type,
        booking_uid,
        received_at: chrono::Utc::now(),
        trace_id: trace_id.clone(),
        route: entry.route.clone(),
        payload,
    };
    let value = serde_json::to_vec(&envelope).expect("an envelope always serialises");
    let key = booking::record_key(envelope.route.company_id);
    let meta = RecordMeta {
        event_type: &envelope.event_type,
        event_id: envelope.event_id,
        trace_id: &trace_id,
        kind: Some(booking::BOOKING_KIND),
    };
    let delivered = publish(&state, &key, &value, &meta).await?;

    tracing::info!(
        event_id = %envelope.event_id,
        event_type = %envelope.event_type,
        booking_uid = %envelope.booking_uid,
        company_id = %envelope.route.company_id,
        delivered_to = delivered.as_str(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "webhook accepted"
    );
    Ok(StatusCode::NO_CONTENT.into_response())
}
