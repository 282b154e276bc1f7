//! Cal.com: `X-Cal-Signature-256: <lowercase hex HMAC-SHA256(webhook secret, raw body)>`.
//!
//! As Cal.com's `sendPayload` signs (docs/calcom.md §4): no prefix, no timestamp (so
//! no replay window: the worker dedupes by event id), and the literal `no-secret-provided`
//! when the webhook was set up without a secret, which we refuse. The delivery carries no
//! tenant of ours: it is routed by the company's endpoint path, `/v1/webhooks/calcom/{path}`.

use super::HmacAlgorithm;
use super::{VerifyError, ct_eq};

pub const SIGNATURE_HEADER: &str = "x-cal-signature-256";
/// What Cal.com sends in the signature header when its webhook has no secret.
pub const NO_SECRET: &str = "no-secret-provided";

/// Verifies a Cal.com delivery against each candidate webhook secret.
pub fn verify<S: AsRef<[u8]>>(secrets: &[S], body: &[u8], signature: Option<&str>) -> Result<(), VerifyError> {
    let header = signature.ok_or(VerifyError::MissingSignature)?.trim();
    if header == NO_SECRET {
        return Err(VerifyError::NoSecretProvided);
    }
    let mut digest = [0u8; 32];
    if header.len() != 64 || hex::decode_to_slice(header, &mut digest).is_err() {
        return Err(VerifyError::MalformedSignature);
    }
    let matched = secrets.iter().any(|secret| {
        let expected = HmacAlgorithm::Sha256.mac(secret.as_ref(), &[body]);
        ct_eq(&expected, &digest)
    });
    if matched { Ok(()) } else { Err(VerifyError::Mismatch) }
}

/// Signs like Cal.com does (for tests, the fake Cal.com and replays).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    hex::encode(HmacAlgorithm::Sha256.mac(secret, &[body]))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The HMAC-SHA256 example of RFC 4231's companion (Wikipedia's HMAC page): Cal.com's
    // signature is this digest, in lowercase hex, of the exact body.
    const KEY: &[u8] = b"key";
    const BODY: &[u8] = b"The quick brown fox jumps over the lazy dog";
    const DIGEST: &str = "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8";

    #[test]
    fn signs_and_verifies_the_known_digest() {
        assert_eq!(sign(KEY, BODY), DIGEST);
        assert_eq!(verify(&[KEY], BODY, Some(DIGEST)), Ok(()));
        // Hex case is not part of the digest.
        assert_eq!(verify(&[KEY], BODY, Some(&DIGEST.to_ascii_uppercase())), Ok(()));
    }

    #[test]
    fn the_previous_secret_still_verifies_during_a_rotation() {
        assert_eq!(verify(&[b"new".as_slice(), KEY], BODY, Some(DIGEST)), Ok(()));
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(verify(&[KEY], BODY, None), Err(VerifyError::MissingSignature));
        assert_eq!(verify(&[KEY], BODY, Some(NO_SECRET)), Err(VerifyError::NoSecretProvided));
        assert_eq!(verify(&[KEY], BODY, Some(&format!("sha256={DIGEST}"))), Err(VerifyError::MalformedSignature));
        assert_eq!(verify(&[KEY], BODY, Some(&DIGEST[..63])), Err(VerifyError::MalformedSignature));
        assert_eq!(verify(&[b"other".as_slice()], BODY, Some(DIGEST)), Err(VerifyError::Mismatch));
        assert_eq!(
            verify(&[KEY], b"The quick brown fox jumps over the lazy dog.", Some(DIGEST)),
            Err(VerifyError::Mismatch)
        );
    }
}
