//! `tests/authorization_code.rs` again, with its platforms on PostgreSQL (see `tests/support/postgres.rs`).

#[path = "../authorization_code.rs"]
mod authorization_code;
