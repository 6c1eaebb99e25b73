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

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML does not parse, or names a key this configuration does not have.
    #[error(transparent)]
    Parse(#[from] toml::de::Error),
    /// These values parse but would break the service (every one of them is named).
    #[error("invalid configuration: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// The longest sweep interval accepted: a day.
const MAX_SWEEP_INTERVAL_SECS: u64 = 24 * 60 * 60;

impl PlatformConfig {
    /// Parses TOML text and checks its values.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: PlatformConfig = toml::from_str(text)?;
        let invalid = config.invalid_values();
        if invalid.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(invalid))
        }
    }

    /// Every value that parses but would quietly break the service: a zero that would end
    /// every grant or session at once, refuse every call, handshake, stream or sign-in, or
    /// turn the sign-in backoff off; a backoff that shrinks; a sweep interval the timer
    /// cannot hold; and a trust domain no certificate could name.
    fn invalid_values(&self) -> Vec<String> {
        let (policy, limits, sign_in) = (&self.policy, &self.limits, &self.sign_in);
        let at_least_one = [
            ("policy.max_grant_days", u64::from(policy.max_grant_days)),
            (
                "policy.inactivity_lapse_days",
                u64::from(policy.inactivity_lapse_days),
            ),
            ("policy.session_hours", u64::from(policy.session_hours)),
            (
                "limits.max_concurrent_streams",
                u64::from(limits.max_concurrent_streams),
            ),
            (
                "limits.max_header_list_bytes",
                u64::from(limits.max_header_list_bytes),
            ),
            ("limits.max_message_bytes", limits.max_message_bytes as u64),
            ("limits.handshake_timeout_ms", limits.handshake_timeout_ms),
            ("limits.request_timeout_ms", limits.request_timeout_ms),
            (
                "limits.partner_requests_per_second",
                u64::from(limits.partner_requests_per_second),
            ),
            (
                "limits.partner_event_streams",
                limits.partner_event_streams as u64,
            ),
            (
                "sign_in.first_backoff_secs",
                u64::from(sign_in.first_backoff_secs),
            ),
            ("sign_in.pending_sign_ins", sign_in.pending_sign_ins as u64),
        ];
        let mut invalid: Vec<String> = at_least_one
            .iter()
            .filter(|(_, value)| *value == 0)
            .map(|(key, _)| format!("{key} must be at least 1"))
            .collect();
        if sign_in.max_backoff_secs < sign_in.first_backoff_secs {
            invalid.push(
                "sign_in.max_backoff_secs must be at least sign_in.first_backoff_secs".into(),
            );
        }
        if policy.sweep_interval_secs > MAX_SWEEP_INTERVAL_SECS {
            invalid.push(format!(
                "policy.sweep_interval_secs must be at most {MAX_SWEEP_INTERVAL_SECS}"
            ));
        }
        let domain = &self.trust_domain;
        if domain.is_empty()
            || !domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        {
            invalid.push(
                "trust_domain must be a DNS-like name (letters, digits, '-', '.', '_')".into(),
            );
        }
        invalid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped example, which must load as it is.
    const EXAMPLE: &str = include_str!("../platform.example.toml");

    #[test]
    fn values_that_would_break_the_service_are_each_named() {
        assert!(PlatformConfig::from_toml(EXAMPLE).is_ok());
        let broken = EXAMPLE
            .replace("consent.local", "consent/local")
            .replace("max_grant_days = 90", "max_grant_days = 0")
            .replace(
                "sweep_interval_secs = 30",
                "sweep_interval_secs = 9223372036854775807",
            )
            .replace(
                "request_timeout_ms = 30000",
                "request_timeout_ms = 30000\npartner_requests_per_second = 0\n\
                 partner_event_streams = 0",
            )
            + "[sign_in]\nfirst_backoff_secs = 60\nmax_backoff_secs = 10\n";
        let Err(ConfigError::Invalid(named)) = PlatformConfig::from_toml(&broken) else {
            panic!("accepted");
        };
        let keys: Vec<&str> = named.iter().map(|n| n.split(' ').next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "policy.max_grant_days",
                "limits.partner_requests_per_second",
                "limits.partner_event_streams",
                "sign_in.max_backoff_secs",
                "policy.sweep_interval_secs",
                "trust_domain",
            ]
        );
    }
}
