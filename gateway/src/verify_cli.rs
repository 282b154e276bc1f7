//! `callgate-gateway verify` and `sign`: answer "why was this webhook refused?" offline, and
//! make genuine test requests, with the very functions the server uses.

use crate::config::{MessageArgs, VerifyArgs, VerifyProvider};
use callgate_contract::Secret;

use crate::providers::{VerifyError, calcom, retell, twilio};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot read body file: {0}")]
    Body(#[from] std::io::Error),
    #[error("cannot read the secret: {0}")]
    Secret(std::io::Error),
    #[error("{0}")]
    Usage(&'static str),
}

fn now_ms(message: &MessageArgs) -> u64 {
    message.now_ms.unwrap_or_else(|| u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0))
}

/// The secret from `--secret-file` (`-`: standard input), without one trailing newline.
fn secret(message: &MessageArgs) -> Result<Secret, CliError> {
    let mut bytes = if message.secret_file.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).map_err(CliError::Secret)?;
        bytes
    } else {
        std::fs::read(&message.secret_file).map_err(CliError::Secret)?
    };
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    Ok(Secret::new(bytes))
}

fn twilio_url(message: &MessageArgs) -> Result<&str, CliError> {
    message.url.as_deref().ok_or(CliError::Usage("--url is required for twilio"))
}

/// `Ok(Ok(()))`: valid; `Ok(Err(reason))`: invalid.
pub fn verify(args: &VerifyArgs) -> Result<Result<(), VerifyError>, CliError> {
    let message = &args.message;
    let body = std::fs::read(&message.body_file)?;
    let secret = secret(message)?;
    let secrets = [secret.expose()];
    Ok(match message.provider {
        VerifyProvider::Retell => retell::verify(&secrets, &body, Some(&args.signature), now_ms(message)),
        VerifyProvider::Twilio => twilio::verify(
            &secrets,
            twilio_url(message)?,
            message.content_type.as_deref(),
            &body,
            Some(&args.signature),
        ),
        VerifyProvider::Calcom => calcom::verify(&secrets, &body, Some(&args.signature)),
    })
}

/// The signature header's value for this message.
pub fn sign(message: &MessageArgs) -> Result<String, CliError> {
    let body = std::fs::read(&message.body_file)?;
    let secret = secret(message)?;
    let secret = secret.expose();
    Ok(match message.provider {
        VerifyProvider::Retell => retell::sign(secret, &body, now_ms(message)),
        VerifyProvider::Twilio => twilio::sign(secret, twilio_url(message)?, message.content_type.as_deref(), &body),
        VerifyProvider::Calcom => calcom::sign(secret, &body),
    })
}
