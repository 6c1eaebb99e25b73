//! The messaging platform of the consented partner messaging system.
//!
//! Partners read, send and delete a user's messages only within a grant the user approved:
//! scoped, covering chosen threads, time-limited, revocable, audited, over mutual TLS.
//! [`api`] holds the four gRPC surfaces, with every partner call on one path
//! (`api::partner_call`); [`edge`] admits each surface's kind of principal; [`error`] is
//! the one mapping from failures to gRPC statuses. The rules themselves live in
//! `consent-core`, TLS and identity in `consent-tls`, storage in `consent-store`.

pub mod api;
pub mod config;
pub mod edge;
pub mod error;
pub mod observe;
pub mod password;
pub mod rate_limit;
pub mod readiness;
pub mod server;
pub mod sign_in_throttle;
pub mod validate;
pub mod web;
