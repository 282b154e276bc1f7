//! callgate's HTTP edge: verify each provider's webhook exactly as it signs it, route it to its
//! tenant from an in-memory directory, publish it to Kafka, answer only after the broker's ack
//! (or, while the broker is slow or down, after a durable write to the local spool).
//! See the README for the whole flow, and `docs/` for what it relies on from each provider.

pub mod config;
pub mod delivery;
pub mod directory;
mod fnv;
pub mod http;
pub mod metrics;
pub mod providers;
pub mod publish;
pub mod server;
pub mod spool;
pub mod spool_cli;
pub mod verify_cli;

pub use server::Gateway;
