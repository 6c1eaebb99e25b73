//! `tests/cards.rs` again, with its platforms on PostgreSQL (see `tests/support/postgres.rs`).

#[path = "../cards.rs"]
mod cards;
