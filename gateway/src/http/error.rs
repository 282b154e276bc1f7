//! The one error type of the HTTP boundary: each variant has its status code, its metric
//! outcome, and a fixed response body that reveals nothing about tenants or internals.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::delivery::DeliveryError;
use crate::providers::{MalformedPayload, VerifyError};
use crate::publish::PublishError;
use crate::spool::SpoolError;

/// Seconds a provider is asked to wait before retrying after a 503.
const RETRY_AFTER_SECS: &str = "5";

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("body larger than the limit")]
    TooLarge,
    #[error("body could not be read")]
    BodyUnreadable,
    #[error("body not received within the read timeout")]
    BodyTimeout,
    #[error("malformed payload: {0}")]
    Malformed(#[from] MalformedPayload),
    /// Answered like a bad signature (401, the same body): an unauthenticated sender must not
    /// learn whether a number belongs to a tenant. The metric and the log say which it was.
    #[error("number not in the directory")]
    UnknownNumber,
    #[error("webhook endpoint not in the directory")]
    UnknownEndpoint,
    #[error("signature refused: {0}")]
    Unauthorized(VerifyError),
    #[error("account misconfigured: {0}")]
    Misconfigured(&'static str),
    #[error("directory not loaded yet")]
    NotReady,
    #[error("too many requests or body bytes in flight")]
    Overloaded,
    #[error("broker unavailable: {0}")]
    Unavailable(PublishError),
    /// The broker did not take the record and neither did the spool (full, or a disk error).
    #[error("broker unavailable and {0}")]
    SpoolUnavailable(SpoolError),
}

impl From<DeliveryError> for WebhookError {
    fn from(error: DeliveryError) -> Self {
        match error {
            DeliveryError::Publish(error) => error.into(),
            DeliveryError::Spool(SpoolError::TooLarge) => WebhookError::TooLarge,
            DeliveryError::Spool(error) => WebhookError::SpoolUnavailable(error),
        }
    }
}

impl From<PublishError> for WebhookError {
    fn from(error: PublishError) -> Self {
        match error {
            // Within --max-body-bytes but not within the record limit (a form body whose JSON
            // quoting grew past the envelope allowance): the request's own size.
            PublishError::TooLarge { .. } => WebhookError::TooLarge,
            other => WebhookError::Unavailable(other),
        }
    }
}

impl From<VerifyError> for WebhookError {
    fn from(error: VerifyError) -> Self {
        match error {
            VerifyError::NotConfigured(what) => WebhookError::Misconfigured(what),
            other => WebhookError::Unauthorized(other),
        }
    }
}

impl WebhookError {
    pub fn status(&self) -> StatusCode {
        match self {
            WebhookError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::BodyUnreadable | WebhookError::Malformed(_) => StatusCode::BAD_REQUEST,
            WebhookError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            WebhookError::UnknownEndpoint => StatusCode::NOT_FOUND,
            WebhookError::UnknownNumber | WebhookError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            WebhookError::Misconfigured(_) => StatusCode::INTERNAL_SERVER_ERROR,
            WebhookError::NotReady
            | WebhookError::Overloaded
            | WebhookError::Unavailable(_)
            | WebhookError::SpoolUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `outcome` label of `callgate_gateway_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            WebhookError::TooLarge => "payload_too_large",
            WebhookError::BodyUnreadable => "body_unreadable",
            WebhookError::BodyTimeout => "body_timeout",
            WebhookError::Malformed(_) => "malformed",
            WebhookError::UnknownNumber => "unknown_number",
            WebhookError::UnknownEndpoint => "unknown_endpoint",
            WebhookError::Unauthorized(reason) => reason.reason(),
            WebhookError::Misconfigured(_) => "misconfigured",
            WebhookError::NotReady => "not_ready",
            WebhookError::Overloaded => "overloaded",
            WebhookError::Unavailable(_) => "broker_unavailable",
            WebhookError::SpoolUnavailable(error) => error.reason(),
        }
    }

    /// What the caller is told: the class of problem, never which tenant or why exactly.
    fn public_message(&self) -> &'static str {
        match self {
            WebhookError::TooLarge => "payload too large",
            WebhookError::BodyUnreadable | WebhookError::Malformed(_) => "malformed request",
            WebhookError::BodyTimeout => "request timeout",
            WebhookError::UnknownEndpoint => "not found",
            WebhookError::UnknownNumber | WebhookError::Unauthorized(_) => "unauthorized",
            WebhookError::Misconfigured(_) => "internal error",
            WebhookError::NotReady
            | WebhookError::Overloaded
            | WebhookError::Unavailable(_)
            | WebhookError::SpoolUnavailable(_) => "temporarily unavailable",
        }
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.public_message() }).to_string();
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
        }
        response
    }
}
