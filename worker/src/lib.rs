//! callgate's worker side: everything that writes the database.
//!
//! For now: the migrations ([`MIGRATOR`]), onboarding of tenants ([`tenants`]) and the local demo
//! tenant ([`demo`]). The Kafka consumers land with the worker issue.

pub mod cli;
pub mod demo;
pub mod tenants;

/// The schema, embedded at build time from `migrations/`. Applying it twice is a no-op.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
