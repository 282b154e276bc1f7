//! Cal.com: pushing appointments as bookings ([`push`]) through its API ([`client`]), and
//! reading back what its webhooks did not bring ([`reconcile`]). The booking changes its
//! webhooks report are applied with the other events (`crate::apply::booking`).

pub mod client;
pub mod push;
pub mod reconcile;
mod store;
