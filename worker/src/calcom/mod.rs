//! Cal.com: pushing appointments as bookings ([`push`]) through its API ([`client`]). The
//! booking changes its webhooks report are applied with the other events
//! (`crate::apply::booking`).

pub mod client;
pub mod push;
mod store;
