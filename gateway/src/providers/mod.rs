//! One module per provider: how it signs, what its payload looks like, how to route it.
//!
//! Each verifier takes the raw request bytes and the candidate secrets (current, then the
//! previous one during a rotation) and is pure: no clock, no I/O. The HTTP handlers and the
//! `callgate-gateway verify` command call exactly these functions.

pub mod calcom;
pub mod retell;
pub mod twilio;
pub mod vapi;

pub use callgate_contract::settings::HmacAlgorithm;

/// Why a request's signature was refused. The reason is safe to log and to use as a metric
/// label: it never contains the secret, the expected digest or the received one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("signature header missing")]
    MissingSignature,
    #[error("signature header malformed")]
    MalformedSignature,
    #[error("timestamp outside the allowed window")]
    StaleTimestamp,
    #[error("signature does not match")]
    Mismatch,
    #[error("body does not match its signed hash")]
    BodyHashMismatch,
    #[error("body is not covered by the signature")]
    UnsignedBody,
    #[error("the sender was configured without a secret")]
    NoSecretProvided,
    #[error("verification is not configured for this account: {0}")]
    NotConfigured(&'static str),
}

impl VerifyError {
    /// A short stable label for metrics and the CLI.
    pub fn reason(self) -> &'static str {
        match self {
            VerifyError::MissingSignature => "missing_signature",
            VerifyError::MalformedSignature => "malformed_signature",
            VerifyError::StaleTimestamp => "stale_timestamp",
            VerifyError::Mismatch => "invalid_signature",
            VerifyError::BodyHashMismatch => "body_hash_mismatch",
            VerifyError::UnsignedBody => "unsigned_body",
            VerifyError::NoSecretProvided => "no_secret_provided",
            VerifyError::NotConfigured(_) => "not_configured",
        }
    }
}

/// What a handler needs to route an event, read from the payload before verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// The provider's name for the event.
    pub event_type: String,
    pub call_id: String,
    /// The business number as the provider wrote it (normalised by the caller).
    pub number: Option<String>,
    /// The provider's id of the number (Vapi `phoneNumberId`), the fallback key.
    pub provider_number_id: Option<String>,
    /// The call this one is a leg of (Twilio `ParentCallSid` of a `<Dial>` leg). The record is
    /// keyed by the parent, so a leg lands on its parent's partition, behind the parent's events.
    pub parent_call_id: Option<String>,
}

impl Routing {
    /// The call whose partition the record goes to.
    pub fn partition_call_id(&self) -> &str {
        self.parent_call_id.as_deref().unwrap_or(&self.call_id)
    }
}

/// Why a payload could not be routed. The message is generic on purpose: it is returned to
/// the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedPayload(pub &'static str);

/// Constant-time equality of two byte strings (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
pub(crate) mod vectors {
    //! The official vectors, vendored in `testdata/vectors/` (testdata/README.md says where
    //! each comes from).
    use std::path::PathBuf;

    /// The vector documents named `name`.
    pub fn load(name: &str) -> Vec<serde_json::Value> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/vectors").join(name);
        let mut documents = Vec::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            documents.push(serde_json::from_str(&text).expect("vectors are JSON"));
        }
        assert!(!documents.is_empty(), "the vendored vectors testdata/vectors/{name} are missing");
        documents
    }
}
