//! TLS and peer identity, shared by the platform, the partner service and the
//! benchmark's echo server.
//!
//! Each listener terminates TLS itself with rustls ([`termination`]) rather than through
//! tonic's built-in TLS, which takes one client CA and builds its own verifier: that way a
//! listener can verify client certificates against CRLs, reload its certificates without a
//! restart and bound the handshake's time. The peer's identity is read once per
//! connection from its certificate's SPIFFE URI SAN into a typed
//! [`principal::Principal`]. [`transport`] sets every HTTP/2 limit explicitly, and [`pki`]
//! makes the development certificates (rcgen) that the services, tests and containers use.
//! [`https`] serves web pages on the same terminated connections.

pub mod https;
pub mod pki;
pub mod principal;
pub mod termination;
pub mod transport;
