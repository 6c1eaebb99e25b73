//! Configuration: a TOML file (unknown keys are refused) whose values the command line and
//! `PLATFORM_*` environment variables may override. Parsing takes a string, so tests build
//! configurations without touching files or the process environment.

use consent_tls::transport::TransportLimits;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The platform's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformConfig {
    /// SPIFFE trust domain of partner and operator certificates.
    pub trust_domain: String,
    /// Where the store is: a SQLite file's path (one process), or a `postgres://` URL
    /// (several replicas on one database).
    pub database: String,
    /// The audit key file (hex, at least 32 bytes), kept outside the database: it MACs
    /// every audit record.
    pub audit_key: PathBuf,
    /// The pseudonym key file (hex, at least 32 bytes), kept outside the database: it keys
    /// the per-partner handles of people other than the granting user.
    pub pseudonym_key: PathBuf,
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
    /// Sign-in throttling and the password-hashing queues.
    #[serde(default)]
    pub sign_in: SignInLimits,
    /// The origin browsers reach the web pages at (`https://host[:port]`), named in
    /// `authorize_url` and as the `iss` of authorization responses; by default
    /// `https://localhost:<web port>`.
    #[serde(default)]
    pub web_origin: Option<String>,
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
    /// The web pages, for people in a browser (HTTPS, session cookie).
    pub web: SocketAddr,
    /// Operations: `/metrics` for Prometheus (plain HTTP, no credentials: bind it where
    /// only operators reach it). None when absent.
    #[serde(default)]
    pub ops: Option<SocketAddr>,
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

/// Limits on the user surface's password work: sign-in throttling (see
/// [`crate::sign_in_throttle`]) and the hashing queues (see [`crate::password`]).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignInLimits {
    /// Failed sign-ins of one account name from one client address before its backoff
    /// starts.
    pub account_failures: u32,
    /// Failed sign-ins of one account name from anywhere before its backoff starts.
    pub account_failures_any_address: u32,
    /// Failed sign-ins from one client address before its backoff starts.
    pub address_failures: u32,
    /// The first backoff, in seconds; it doubles with every further failure.
    pub first_backoff_secs: u32,
    /// The longest backoff, in seconds.
    pub max_backoff_secs: u32,
    /// Sign-ins that may wait for the hashing thread; beyond them, `RESOURCE_EXHAUSTED`.
    pub pending_sign_ins: usize,
    /// Sign-ups that may wait for the hashing thread; beyond them, `RESOURCE_EXHAUSTED`.
    pub pending_sign_ups: usize,
}

impl Default for SignInLimits {
    fn default() -> Self {
        SignInLimits {
            account_failures: 5,
            account_failures_any_address: 100,
            address_failures: 20,
            first_backoff_secs: 1,
            max_backoff_secs: 900,
            pending_sign_ins: 32,
            pending_sign_ups: 8,
        }
    }
}

impl PlatformConfig {
    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}
