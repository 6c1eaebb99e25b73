//! Configuration: a TOML file (unknown keys are refused) whose values the command line and
//! `PLATFORM_*` environment variables may override. Parsing takes a string, so tests build
//! configurations without touching files or the process environment.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The platform's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformConfig {
    /// SPIFFE trust domain of partner and operator certificates.
    pub trust_domain: String,
    /// SQLite database file.
    pub database: PathBuf,
    /// Listen addresses.
    pub listen: Listen,
    /// Certificates.
    pub tls: TlsPaths,
    /// Consent policy.
    #[serde(default)]
    pub policy: Policy,
    /// Transport limits.
    #[serde(default)]
    pub limits: TransportLimits,
}

/// Where each surface listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Messaging and consent, for partners (mutual TLS).
    pub partner: SocketAddr,
    /// Partner admin, for operators (mutual TLS).
    pub operator: SocketAddr,
    /// Account, for users (server TLS + session token).
    pub user: SocketAddr,
}

/// Certificate files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsPaths {
    /// The platform's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA that partner certificates must chain to.
    pub partner_ca: PathBuf,
    /// CA that operator certificates must chain to.
    pub operator_ca: PathBuf,
    /// CRLs applied to client certificates.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
}

/// Operator policy on grants and sessions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Cap on a grant's lifetime, in days.
    pub max_grant_days: u32,
    /// A grant unused this many days lapses.
    pub inactivity_lapse_days: u32,
    /// Hours a partner has to attest deletion after a grant ends.
    pub attestation_due_hours: u32,
    /// Session lifetime in hours.
    pub session_hours: u32,
    /// Seconds between sweeps that end expired and lapsed grants.
    pub sweep_interval_secs: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_grant_days: 90,
            inactivity_lapse_days: 30,
            attestation_due_hours: 72,
            session_hours: 12,
            sweep_interval_secs: 30,
        }
    }
}

/// HTTP/2 and TLS limits, set explicitly (tonic leaves several unlimited).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportLimits {
    /// HTTP/2 streams a connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Locally reset streams tolerated per connection before GOAWAY.
    pub max_local_error_reset_streams: usize,
    /// Remotely reset, not yet accepted streams tolerated (rapid-reset defence).
    pub max_pending_accept_reset_streams: usize,
    /// Largest header list, in bytes.
    pub max_header_list_bytes: u32,
    /// Largest gRPC message, in bytes, either way.
    pub max_message_bytes: usize,
    /// Milliseconds a TLS handshake may take.
    pub handshake_timeout_ms: u64,
    /// Milliseconds a unary request may take.
    pub request_timeout_ms: u64,
    /// Requests per second each partner may make, sustained.
    pub partner_requests_per_second: u32,
    /// Requests each partner may make at once above the sustained rate.
    pub partner_burst: u32,
}

impl Default for TransportLimits {
    fn default() -> Self {
        TransportLimits {
            max_concurrent_streams: 128,
            max_local_error_reset_streams: 256,
            max_pending_accept_reset_streams: 64,
            max_header_list_bytes: 16 * 1024,
            max_message_bytes: 256 * 1024,
            handshake_timeout_ms: 5_000,
            request_timeout_ms: 30_000,
            partner_requests_per_second: 500,
            partner_burst: 1000,
        }
    }
}

impl PlatformConfig {
    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}
