//! A partner's backend in the consented partner messaging system: a client of the platform
//! over mutual TLS that keeps its users' grant tokens, delivers shares exactly once through
//! an outbox, deletes a user's data and attests it when a grant ends, and serves
//! `consent.partner.v1.PartnerApp` to the partner's front ends. One binary, configured per
//! partner by a profile (see `profiles/`).

pub mod api;
pub mod caller;
pub mod config;
pub mod error;
pub mod events;
pub mod outbox;
pub mod platform;
pub mod server;
pub mod store;
pub mod web;
