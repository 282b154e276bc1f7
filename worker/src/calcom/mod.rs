//! Cal.com: pushing appointments as bookings ([`push`]) through its API ([`client`]), and
//! applying the booking changes its webhooks report ([`inbound`]).

pub mod client;
pub mod inbound;
pub mod push;
