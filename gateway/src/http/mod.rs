//! Routes: the provider webhooks, health, readiness and metrics.

mod admission;
mod calcom;
mod error;
mod webhook;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use admission::Admission;
pub use error::WebhookError;

use crate::delivery::Delivery;
use crate::directory::DirectoryHandle;
use crate::metrics::Metrics;
use crate::publish::Publisher;

/// Request-path settings that are not per tenant.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub max_body_bytes: usize,
    pub body_read_timeout: std::time::Duration,
    pub public_base_url: Option<String>,
    pub default_country_code: u16,
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub directory: Arc<DirectoryHandle>,
    pub publisher: Arc<Publisher>,
    /// The broker, or the spool while the broker is slow or down.
    pub delivery: Arc<Delivery>,
    pub metrics: Metrics,
    pub edge: Arc<EdgeConfig>,
    pub admission: Arc<Admission>,
}

/// The webhook routes, and /healthz for load balancers; metrics and readiness are on the ops
/// listener only ([`ops_router`]).
pub fn router(state: AppState) -> Router {
    let webhooks = Router::new()
        .route("/v1/webhooks/retell", post(webhook::retell))
        .route("/v1/webhooks/vapi", post(webhook::vapi))
        // Twilio lets a status callback be configured with method GET.
        .route("/v1/webhooks/twilio", post(webhook::twilio).get(webhook::twilio))
        // Cal.com names no tenant of ours: each company has its own endpoint path.
        .route("/v1/webhooks/calcom/{endpoint}", post(calcom::calcom));
    webhooks
        .route("/healthz", get(healthz))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// A path we do not serve: counted and logged like every other refusal.
async fn unknown_route(State(state): State<AppState>, method: Method, uri: Uri) -> Response {
    refuse(&state, StatusCode::NOT_FOUND, "unknown_route", &method, &uri)
}

async fn method_not_allowed(State(state): State<AppState>, method: Method, uri: Uri) -> Response {
    refuse(&state, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", &method, &uri)
}

fn refuse(state: &AppState, status: StatusCode, outcome: &'static str, method: &Method, uri: &Uri) -> Response {
    // The path only: a query string may carry anything.
    tracing::warn!(outcome, %method, path = uri.path(), "request refused");
    state.metrics.requests.with_label_values(&["none", outcome]).inc();
    let body = serde_json::json!({ "error": status.canonical_reason().unwrap_or("error").to_ascii_lowercase() });
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// Health, readiness and metrics, on the ops listener (`--metrics-listen`).
pub fn ops_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Alive: the process answers.
async fn healthz() -> &'static str {
    "ok"
}

/// Ready: the directory is loaded, and webhooks can be made durable: the broker answered its
/// last probe, or the spool takes writes.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let directory = state.directory.is_loaded();
    let broker = state.publisher.is_reachable();
    let spool = state.delivery.spool().map(|spool| spool.is_writable());
    let durable = broker || spool == Some(true);
    let status = if directory && durable { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::json!({
        "directory_loaded": directory,
        "broker_reachable": broker,
        "spool_writable": spool,
        "spool_open": state.delivery.spool().map(|spool| spool.is_open()),
    });
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string())
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
