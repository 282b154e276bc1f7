//! Per-provider account settings, stored as JSON in `provider_accounts.settings`.
//!
//! They are a contract between whoever writes accounts (onboarding) and the gateway that
//! verifies with them, so both parse them with [`parse_settings`]: a bad setting is refused
//! when it is written, not discovered when a webhook fails.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Sha256, Sha512};

use crate::Provider;

/// HMAC algorithms providers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl HmacAlgorithm {
    /// HMAC of the concatenation of `parts`.
    pub fn mac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
            for part in parts {
                mac.update(part);
            }
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            HmacAlgorithm::Sha1 => run::<Hmac<Sha1>>(key, parts),
            HmacAlgorithm::Sha256 => run::<Hmac<Sha256>>(key, parts),
            HmacAlgorithm::Sha512 => run::<Hmac<Sha512>>(key, parts),
        }
    }
}

/// How a Vapi account's webhooks authenticate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum VapiAuth {
    Secret {
        #[serde(default = "default_secret_header")]
        header: String,
    },
    Bearer {
        #[serde(default = "default_bearer_header")]
        header: String,
        #[serde(default = "default_bearer_prefix")]
        prefix: String,
    },
    Hmac(HmacSettings),
}

impl Default for VapiAuth {
    fn default() -> Self {
        VapiAuth::Secret { header: default_secret_header() }
    }
}

fn default_secret_header() -> String {
    "x-vapi-secret".into()
}
fn default_bearer_header() -> String {
    "authorization".into()
}
fn default_bearer_prefix() -> String {
    "Bearer ".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    #[default]
    Hex,
    Base64,
}

/// The fields of Vapi's HMAC credential, with Vapi's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HmacSettings {
    pub algorithm: HmacAlgorithm,
    pub signature_header: String,
    pub timestamp_header: String,
    pub signature_prefix: String,
    pub include_timestamp: bool,
    /// `None`: `{timestamp}.{body}` when `include_timestamp`, else `{body}`.
    pub payload_format: Option<String>,
    pub message_id_header: Option<String>,
    pub signature_encoding: SignatureEncoding,
    pub secret_is_base64: bool,
    /// What `{url}` expands to; `None`: the public URL the request was sent to.
    pub url: Option<String>,
    /// Replay window in seconds around the timestamp header. Must be at least 1 when
    /// `include_timestamp` (0 would switch the window off and let a captured request be
    /// replayed forever): [`parse_settings`] refuses it.
    pub tolerance_secs: u64,
}

impl Default for HmacSettings {
    fn default() -> Self {
        Self {
            algorithm: HmacAlgorithm::Sha256,
            signature_header: "x-signature".into(),
            timestamp_header: "x-timestamp".into(),
            signature_prefix: String::new(),
            include_timestamp: true,
            payload_format: None,
            message_id_header: None,
            signature_encoding: SignatureEncoding::Hex,
            secret_is_base64: false,
            url: None,
            tolerance_secs: 300,
        }
    }
}

impl HmacSettings {
    /// The payload template in force (Vapi's default depends on `include_timestamp`).
    pub fn template(&self) -> &str {
        match (&self.payload_format, self.include_timestamp) {
            (Some(format), _) => format,
            (None, true) => "{timestamp}.{body}",
            (None, false) => "{body}",
        }
    }
}

/// Validated settings of one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountSettings {
    Retell,
    Vapi {
        auth: VapiAuth,
    },
    /// `public_base_url`: scheme, host and optional path prefix as configured in Twilio.
    Twilio {
        public_base_url: Option<String>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetellSettings {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VapiSettings {
    #[serde(default)]
    auth: VapiAuth,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TwilioSettings {
    #[serde(default)]
    public_base_url: Option<String>,
}

/// Validates `provider_accounts.settings` for a provider.
pub fn parse_settings(provider: Provider, settings: &serde_json::Value) -> Result<AccountSettings, serde_json::Error> {
    Ok(match provider {
        Provider::Retell => {
            RetellSettings::deserialize(settings)?;
            AccountSettings::Retell
        }
        Provider::Vapi => {
            let auth = VapiSettings::deserialize(settings)?.auth;
            if let VapiAuth::Hmac(hmac) = &auth
                && hmac.include_timestamp
                && hmac.tolerance_secs == 0
            {
                return Err(serde::de::Error::custom(
                    "auth.tolerance_secs must be at least 1: 0 would switch the replay window off",
                ));
            }
            AccountSettings::Vapi { auth }
        }
        Provider::Twilio => {
            AccountSettings::Twilio { public_base_url: TwilioSettings::deserialize(settings)?.public_base_url }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_validated_per_provider() {
        assert_eq!(parse_settings(Provider::Retell, &serde_json::json!({})).unwrap(), AccountSettings::Retell);
        assert!(parse_settings(Provider::Retell, &serde_json::json!({"x": 1})).is_err());
        assert_eq!(
            parse_settings(Provider::Vapi, &serde_json::json!({})).unwrap(),
            AccountSettings::Vapi { auth: VapiAuth::default() }
        );
        assert!(
            parse_settings(Provider::Vapi, &serde_json::json!({"auth": {"mode": "hmac", "algorithm": "md5"}})).is_err()
        );
        let window = |secs: u64| serde_json::json!({"auth": {"mode": "hmac", "tolerance_secs": secs}});
        let refused = parse_settings(Provider::Vapi, &window(0)).unwrap_err().to_string();
        assert!(refused.contains("tolerance_secs"), "{refused}");
        assert!(parse_settings(Provider::Vapi, &window(1)).is_ok());
        // Without a timestamp there is no window to switch off.
        let untimed = serde_json::json!({"auth": {"mode": "hmac", "include_timestamp": false, "tolerance_secs": 0}});
        assert!(parse_settings(Provider::Vapi, &untimed).is_ok());
        assert_eq!(
            parse_settings(Provider::Twilio, &serde_json::json!({"public_base_url": "https://h"})).unwrap(),
            AccountSettings::Twilio { public_base_url: Some("https://h".into()) }
        );
    }
}
