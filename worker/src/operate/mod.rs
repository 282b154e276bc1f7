//! Operator commands: safe, counted actions instead of hand-written SQL. Each one selects what
//! it would change, says how many rows and which (`--dry-run` stops there), changes them in one
//! transaction, and enters the action in the audit trail (`operator_actions`) in that same
//! transaction, so an action and its record commit together.

pub mod audit;
pub mod dlq;
pub mod inspect;
pub mod privacy;
pub mod reconcile;
pub mod reprocess;
pub mod requeue;
pub mod reseal;
pub mod tenant;

pub use audit::Actor;
