//! callgate's worker side: everything that writes the database.
//!
//! - [`consumer`]: the Kafka consumer group turning `call-events.v1` into rows, exactly once
//!   in effect ([`apply`] does one event, [`appointments`] reads the analysis).
//! - [`kafka`]: the Kafka client set-up and its callbacks.
//! - [`dlq`]: the one dead-letter writer, for the consumer and the Cal.com push.
//! - [`server`]: the running worker (consumer, health and metrics endpoints, shutdown).
//! - [`cli`]: migrations, onboarding of tenants ([`tenants`]) and the local [`demo`] tenant.

pub mod apply;
pub mod appointments;
pub mod calcom;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod consumer;
pub mod demo;
pub mod dlq;
pub mod kafka;
pub mod metrics;
pub mod server;
pub mod status;
pub mod tenants;

pub use server::Worker;

/// The schema, embedded at build time from `migrations/`. Applying it twice is a no-op.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
