//! `tests/audit_chain.rs` again, with its platforms on PostgreSQL (see `tests/support/postgres.rs`).

#[path = "../audit_chain.rs"]
mod audit_chain;
