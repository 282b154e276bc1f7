//! callgate's worker side: everything that writes the database.
//!
//! - `consumer`: the Kafka consumer group turning `call-events.v1` into rows, exactly once
//!   in effect (`apply` applies a partition's batch, [`appointments`] reads the analysis,
//!   `catalog` caches each branch's settings).
//! - `kafka`: the Kafka client set-up and its callbacks.
//! - [`dlq`]: the one dead-letter writer, for the consumer and the Cal.com push.
//! - `calcom`: the booking push to Cal.com.
//! - [`status`]: every status the worker writes, spelled in SQL here only.
//! - `server`: the running worker (consumer, health and metrics endpoints, shutdown).
//! - [`cli`]: migrations, onboarding of tenants ([`tenants`]) and the local `demo` tenant;
//!   [`operate`]: the operator commands (re-queue, replay, inspect, reprocess, suspend,
//!   offboard, reseal) and their audit trail.
//!
//! Only what the binary, the operator commands and the end-to-end tests use is public.

pub(crate) mod apply;
pub mod appointments;
pub(crate) mod calcom;
pub(crate) mod catalog;
pub mod cli;
pub mod config;
pub(crate) mod consumer;
pub(crate) mod demo;
pub mod dlq;
pub(crate) mod kafka;
pub mod metrics;
pub mod operate;
pub mod retention;
pub(crate) mod server;
pub mod status;
pub mod tenants;

pub use server::Worker;

/// The schema, embedded at build time from `migrations/`. Applying it twice is a no-op.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
