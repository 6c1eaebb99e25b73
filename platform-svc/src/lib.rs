//! The messaging platform of the consented partner messaging system.
//!
//! Partners read, send and delete a user's messages only within a grant the user approved:
//! scoped, covering chosen threads, time-limited, revocable, audited, over mutual TLS.
//! [`consent`] holds every enforcement rule; [`api`] the four gRPC surfaces; [`store`] the
//! narrow storage interface and its SQLite implementation; [`tls`] and [`identity`] the edge;
//! [`error`] the one mapping from failures to gRPC statuses.

pub mod api;
pub mod audit;
pub mod clock;
pub mod config;
pub mod consent;
pub mod error;
pub mod identity;
pub mod model;
pub mod password;
pub mod pki;
pub mod rate_limit;
pub mod secret;
pub mod server;
pub mod store;
pub mod tls;
pub mod validate;
