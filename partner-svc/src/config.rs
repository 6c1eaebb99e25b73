//! Configuration of one partner: a TOML profile (unknown keys refused) whose values
//! `PARTNER_*` environment variables and flags may override.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A partner's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerConfig {
    /// The partner id, as in its certificate and its platform registration.
    pub partner_id: String,
    /// Name shown in logs and the walkthrough.
    pub display_name: String,
    /// Where this service's own API listens.
    pub listen: SocketAddr,
    /// SQLite file of this partner's own store.
    pub database: PathBuf,
    /// The feature this partner asks users for.
    pub feature: Feature,
    /// The platform.
    pub platform: Platform,
    /// This partner's certificate (client certificate to the platform, server certificate
    /// to its front ends).
    pub tls: Tls,
}

/// The feature and what a request for it asks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    /// Feature name, as registered on the platform.
    pub name: String,
    /// Why the partner asks, shown to the user.
    pub purpose: String,
    /// Scopes the feature needs (`messages.write`, …), as the operator registers them.
    pub scopes: Vec<String>,
    /// `ALL_THREADS`, `LISTED_THREADS` or `PARTNER_STARTED_THREADS`.
    pub coverage: String,
    /// Ask for messages from before the grant.
    #[serde(default)]
    pub include_history: bool,
}

/// How to reach the platform.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Platform {
    /// The platform's partner listener, e.g. `https://127.0.0.1:7443`.
    pub address: String,
    /// CA of the platform's certificate.
    pub ca: PathBuf,
    /// Name the platform's certificate must carry.
    #[serde(default = "default_server_name")]
    pub server_name: String,
}

fn default_server_name() -> String {
    "localhost".into()
}

/// This partner's certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

impl PartnerConfig {
    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}
