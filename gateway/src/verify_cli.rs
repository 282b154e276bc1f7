//! `callgate-gateway verify`: answers "why was this webhook refused?" offline, with the very
//! verifier functions the server uses.

use crate::config::{VerifyArgs, VerifyProvider};
use crate::providers::{VerifyError, retell, twilio};

#[derive(Debug, thiserror::Error)]
pub enum VerifyCliError {
    #[error("cannot read body file: {0}")]
    Body(#[from] std::io::Error),
    #[error("{0}")]
    Usage(&'static str),
}

/// `Ok(Ok(()))`: valid; `Ok(Err(reason))`: invalid.
pub fn run(args: &VerifyArgs) -> Result<Result<(), VerifyError>, VerifyCliError> {
    let body = std::fs::read(&args.body_file)?;
    let secrets = [args.secret.as_bytes()];
    Ok(match args.provider {
        VerifyProvider::Retell => {
            let now_ms =
                args.now_ms.unwrap_or_else(|| u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0));
            retell::verify(&secrets, &body, Some(&args.signature), now_ms)
        }
        VerifyProvider::Twilio => {
            let url = args.url.as_deref().ok_or(VerifyCliError::Usage("--url is required for twilio"))?;
            twilio::verify(&secrets, url, args.content_type.as_deref(), &body, Some(&args.signature))
        }
    })
}
