//! Typed ids, so a branch id can never be passed where a company id is expected.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

id_type!(
    /// A tenant: the business that owns numbers, customers and calls.
    CompanyId
);
id_type!(
    /// A location of a company (its own time zone and services).
    BranchId
);
id_type!(
    /// A row of `phone_numbers`.
    PhoneNumberId
);
id_type!(
    /// A row of `provider_accounts`: one provider login of one company, with its secrets.
    ProviderAccountId
);
id_type!(
    /// A row of `calcom_accounts`: one company's Cal.com API key and webhook.
    CalcomAccountId
);
