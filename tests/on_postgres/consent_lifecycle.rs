//! `tests/consent_lifecycle.rs` again, with its platforms on PostgreSQL (see `tests/support/postgres.rs`).

#[path = "../consent_lifecycle.rs"]
mod consent_lifecycle;
