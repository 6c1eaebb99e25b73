//! `tests/denials.rs` again, with its platforms on PostgreSQL (see `tests/support/postgres.rs`).

#[path = "../denials.rs"]
mod denials;
