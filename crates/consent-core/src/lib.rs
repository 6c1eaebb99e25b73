//! The consent model and its rules, with no I/O: no files, sockets or database.
//!
//! Every decision about whether a partner or a user may do something is a pure function
//! here, of the grant, the partner, the feature, the resource and the time ([`rules`]), or,
//! for whom a signed-in session lets act, of the session and the time ([`session`]); the
//! services load what a rule needs, call it, and act on its answer. A refusal is a
//! typed [`denial::Denied`] or [`denial::Refusal`], with the `ErrorInfo` reason a client
//! branches on. The audit
//! chain's hashing and verification ([`audit`]) live here too, so that the store that
//! appends records and the tools that verify them agree by construction.

pub mod approval;
pub mod audit;
pub mod authorization;
pub mod card;
pub mod clock;
pub mod denial;
pub mod model;
pub mod ownership;
pub mod partner_view;
pub mod rules;
pub mod secret;
pub mod session;
pub mod text;
