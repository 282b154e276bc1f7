//! Provider signing secrets, sealed at rest.
//!
//! A signing secret must be usable in the clear (it is an HMAC key), so it cannot be hashed like
//! a password; it is encrypted instead, with XChaCha20-Poly1305 under a key that lives outside
//! the database (`CALLGATE_SECRET_KEY`). A database dump alone reveals no tenant's secret.
//!
//! Sealed layout: `0x01 | key id (4) | nonce (24) | ciphertext+tag`. The key id lets a
//! deployment rotate the master key: new seals use the primary key, old ones still open with
//! a previous key. The associated data binds a ciphertext to its row and column, so copying one
//! tenant's sealed secret into another tenant's row does not decrypt.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

const FORMAT_V1: u8 = 1;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret key is not base64 of {KEY_LEN} bytes")]
    BadKey,
    #[error("sealed secret is malformed")]
    Malformed,
    #[error("sealed secret was made with a key that is not configured")]
    UnknownKey,
    #[error("sealed secret does not open (wrong key, or bound to another row)")]
    Forged,
}

/// A secret in the clear. Never printed, compared only in constant time by its users.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<[u8]>);

impl Secret {
    pub fn new(bytes: impl Into<Box<[u8]>>) -> Self {
        Self(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Seals and opens provider secrets with the deployment's master key(s).
pub struct SecretCipher {
    /// First entry is the primary (sealing) key.
    keys: Vec<([u8; KEY_ID_LEN], XChaCha20Poly1305)>,
}

impl fmt::Debug for SecretCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretCipher").field("keys", &self.keys.len()).finish()
    }
}

fn key_id(key: &[u8]) -> [u8; KEY_ID_LEN] {
    let digest = Sha256::new().chain_update(b"callgate-secret-key-id\0").chain_update(key).finalize();
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&digest[..KEY_ID_LEN]);
    id
}

impl SecretCipher {
    /// `primary` seals; `previous` keys only open (for master-key rotation).
    pub fn from_base64<S: AsRef<str>>(primary: &str, previous: &[S]) -> Result<Self, SecretError> {
        let mut keys = Vec::with_capacity(1 + previous.len());
        for encoded in std::iter::once(primary).chain(previous.iter().map(AsRef::as_ref)) {
            let raw = B64.decode(encoded.trim()).map_err(|_| SecretError::BadKey)?;
            if raw.len() != KEY_LEN {
                return Err(SecretError::BadKey);
            }
            let cipher = XChaCha20Poly1305::new_from_slice(&raw).map_err(|_| SecretError::BadKey)?;
            keys.push((key_id(&raw), cipher));
        }
        Ok(Self { keys })
    }

    /// A fresh random master key, base64-encoded (for set-up scripts).
    pub fn generate_key() -> String {
        B64.encode(XChaCha20Poly1305::generate_key(&mut OsRng))
    }

    /// Seals `plaintext`, bound to `aad` (use [`row_binding`]).
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let (kid, cipher) = &self.keys[0];
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ciphertext = cipher
            .encrypt(&nonce, Payload { msg: plaintext, aad })
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + ciphertext.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(kid);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Secret, SecretError> {
        let header = 1 + KEY_ID_LEN + NONCE_LEN;
        if sealed.len() < header + 16 || sealed[0] != FORMAT_V1 {
            return Err(SecretError::Malformed);
        }
        let kid = &sealed[1..1 + KEY_ID_LEN];
        let (_, cipher) = self.keys.iter().find(|(id, _)| id == kid).ok_or(SecretError::UnknownKey)?;
        let nonce = XNonce::from_slice(&sealed[1 + KEY_ID_LEN..header]);
        cipher.decrypt(nonce, Payload { msg: &sealed[header..], aad }).map(Secret::new).map_err(|_| SecretError::Forged)
    }
}

impl SecretCipher {
    /// Seals again, under the current key, what an older configured key sealed; `None` when
    /// the current key sealed it already (nothing to do). Fails like [`Self::open`] when no
    /// configured key opens it.
    pub fn reseal(&self, sealed: &[u8], aad: &[u8]) -> Result<Option<Vec<u8>>, SecretError> {
        let opened = self.open(sealed, aad)?;
        let current = &self.keys[0].0;
        if sealed.get(1..1 + KEY_ID_LEN) == Some(current.as_slice()) {
            return Ok(None);
        }
        Ok(Some(self.seal(opened.expose(), aad)))
    }
}

/// The associated data that binds a sealed secret to one column of one row.
pub fn row_binding(table: &str, id: uuid::Uuid, column: &str) -> Vec<u8> {
    format!("callgate:{table}:{id}:{column}").into_bytes()
}

/// The binding of `provider_accounts.signing_secret`: the writer and every reader use this, so
/// they cannot disagree on the spelling.
pub fn signing_secret_binding(account: uuid::Uuid) -> Vec<u8> {
    row_binding("provider_accounts", account, "signing_secret")
}

/// The binding of `provider_accounts.previous_signing_secret`.
pub fn previous_signing_secret_binding(account: uuid::Uuid) -> Vec<u8> {
    row_binding("provider_accounts", account, "previous_signing_secret")
}

/// The sealed columns of `calcom_accounts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalcomColumn {
    ApiKey,
    WebhookSecret,
    PreviousWebhookSecret,
}

/// The binding of one sealed column of `calcom_accounts`.
pub fn calcom_binding(account: uuid::Uuid, column: CalcomColumn) -> Vec<u8> {
    let column = match column {
        CalcomColumn::ApiKey => "api_key",
        CalcomColumn::WebhookSecret => "webhook_secret",
        CalcomColumn::PreviousWebhookSecret => "previous_webhook_secret",
    };
    row_binding("calcom_accounts", account, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reseal_moves_an_old_keys_secret_to_the_current_key_and_leaves_a_current_one() {
        let (old, new) = (SecretCipher::generate_key(), SecretCipher::generate_key());
        let before = SecretCipher::from_base64::<&str>(&old, &[]).unwrap();
        let during = SecretCipher::from_base64(&new, &[old.as_str()]).unwrap();
        let after = SecretCipher::from_base64::<&str>(&new, &[]).unwrap();
        let sealed = before.seal(b"s3cret", b"row");
        assert!(after.open(&sealed, b"row").is_err());
        let resealed = during.reseal(&sealed, b"row").unwrap().expect("sealed by the old key");
        assert_eq!(after.open(&resealed, b"row").unwrap().expose(), b"s3cret");
        assert_eq!(during.reseal(&resealed, b"row").unwrap(), None, "current already");
        assert!(during.reseal(&sealed, b"another row").is_err(), "the binding still holds");
    }

    #[test]
    fn seal_then_open_round_trips_and_is_bound_to_its_row() {
        let cipher = SecretCipher::from_base64::<&str>(&SecretCipher::generate_key(), &[]).unwrap();
        let row = row_binding("provider_accounts", uuid::Uuid::new_v4(), "signing_secret");
        let sealed = cipher.seal(b"test-api-key", &row);
        assert!(!sealed.windows(12).any(|w| w == b"test-api-key"));
        assert_eq!(cipher.open(&sealed, &row).unwrap().expose(), b"test-api-key");

        let other_row = row_binding("provider_accounts", uuid::Uuid::new_v4(), "signing_secret");
        assert!(matches!(cipher.open(&sealed, &other_row), Err(SecretError::Forged)));

        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(cipher.open(&tampered, &row), Err(SecretError::Forged)));
        assert!(matches!(cipher.open(&sealed[..10], &row), Err(SecretError::Malformed)));
    }

    #[test]
    fn previous_master_key_still_opens_after_rotation() {
        let old_key = SecretCipher::generate_key();
        let old = SecretCipher::from_base64::<&str>(&old_key, &[]).unwrap();
        let sealed = old.seal(b"s", b"row");
        let rotated = SecretCipher::from_base64(&SecretCipher::generate_key(), &[old_key]).unwrap();
        assert_eq!(rotated.open(&sealed, b"row").unwrap().expose(), b"s");
        let unrelated = SecretCipher::from_base64::<&str>(&SecretCipher::generate_key(), &[]).unwrap();
        assert!(matches!(unrelated.open(&sealed, b"row"), Err(SecretError::UnknownKey)));
    }

    #[test]
    fn bad_keys_are_refused_and_secrets_never_print() {
        assert!(SecretCipher::from_base64::<&str>("short", &[]).is_err());
        assert_eq!(format!("{:?}", Secret::new(b"hunter2".to_vec())), "Secret(<redacted>)");
    }
}
