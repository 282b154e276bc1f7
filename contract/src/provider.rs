use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The webhook senders callgate understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Retell,
    Vapi,
    Twilio,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Retell, Provider::Vapi, Provider::Twilio];

    /// The name used in URLs, record keys, metric labels and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Retell => "retell",
            Provider::Vapi => "vapi",
            Provider::Twilio => "twilio",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown provider {0:?} (expected retell, vapi or twilio)")]
pub struct UnknownProvider(String);

impl FromStr for Provider {
    type Err = UnknownProvider;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Provider::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| UnknownProvider(s.to_owned()))
    }
}
