//! The wire contract of callgate.
//!
//! Everything that crosses a process boundary (the Kafka record, the database's notion of a
//! phone number, a sealed provider secret) is defined here once, so the gateway that writes a
//! record and the worker that reads it cannot drift apart.

pub mod booking;
pub mod call;
pub mod e164;
pub mod envelope;
pub mod ids;
pub mod provider;
pub mod secrets;
pub mod settings;

pub use e164::{E164, E164Error};
pub use envelope::{EventEnvelope, Payload, Route};
pub use ids::{BranchId, CalcomAccountId, CompanyId, PhoneNumberId, ProviderAccountId};
pub use provider::Provider;
pub use secrets::{Secret, SecretCipher, SecretError};
