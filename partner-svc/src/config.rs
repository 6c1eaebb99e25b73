//! Configuration of one partner: a TOML profile (unknown keys refused) whose values
//! `PARTNER_*` environment variables and flags may override.

use consent_core::card::CardKind;
use consent_proto::platform::v1::ThreadCoverage;
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
    /// SPIFFE trust domain: front ends that present a client certificate must carry this
    /// partner's identity in it.
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    /// The partner's own web app, for its users in a browser (none when absent).
    #[serde(default)]
    pub web: Option<Web>,
    /// Where `/metrics` is served for Prometheus (plain HTTP, no credentials: bind it
    /// where only operators reach it); none when absent.
    #[serde(default)]
    pub ops_listen: Option<SocketAddr>,
}

fn default_trust_domain() -> String {
    "consent.local".into()
}

/// The partner's web app: its own accounts, and "Connect with the platform" through the
/// platform's consent page.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Web {
    /// Where it listens (HTTPS with the partner's certificate).
    pub listen: SocketAddr,
    /// The origin browsers reach it at; `<origin>/callback` is the redirect URI registered
    /// with the platform. By default `https://localhost:<port of listen>`.
    #[serde(default)]
    pub origin: Option<String>,
    /// The platform's web origin: the `iss` every authorization response must carry.
    pub platform_origin: String,
}

impl Web {
    /// The origin browsers reach the web app at.
    pub fn origin(&self) -> String {
        match &self.origin {
            Some(origin) => origin.trim_end_matches('/').to_string(),
            None => format!("https://localhost:{}", self.listen.port()),
        }
    }

    /// The platform's web origin, without a trailing slash.
    pub fn platform_origin(&self) -> &str {
        self.platform_origin.trim_end_matches('/')
    }

    /// The redirect URI registered with the platform.
    pub fn redirect_uri(&self) -> String {
        format!("{}/callback", self.origin())
    }
}

/// The feature and what a request for it asks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    /// Feature name, as registered on the platform.
    pub name: String,
    /// Why the partner asks, shown to the user.
    pub purpose: String,
    /// The scopes to register for the feature (`messages.write`, …), as the walkthrough and
    /// the tests do. Requests do not carry them: a grant has the scopes the operator
    /// registered.
    pub scopes: Vec<String>,
    /// `ALL_THREADS`, `LISTED_THREADS` or `PARTNER_STARTED_THREADS`; another name is
    /// refused when the profile is read.
    #[serde(deserialize_with = "coverage")]
    pub coverage: ThreadCoverage,
    /// Ask for messages from before the grant.
    #[serde(default)]
    pub include_history: bool,
    /// The kinds of card it shares (`track`, `video`, `folder`, `receipt`), as the operator
    /// registers them; another name is refused when the profile is read.
    #[serde(default, deserialize_with = "card_kinds")]
    pub cards: Vec<CardKind>,
}

fn card_kinds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<CardKind>, D::Error> {
    let names = <Vec<String> as serde::Deserialize>::deserialize(d)?;
    names
        .iter()
        .map(|name| {
            consent_core::card::kind_named(name).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "{name:?} is not a kind of card (track, video, folder, receipt)"
                ))
            })
        })
        .collect()
}

fn coverage<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ThreadCoverage, D::Error> {
    let name = <String as serde::Deserialize>::deserialize(d)?;
    ThreadCoverage::from_str_name(&name)
        .filter(|c| *c != ThreadCoverage::Unspecified)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{name:?} is not a coverage (ALL_THREADS, LISTED_THREADS, PARTNER_STARTED_THREADS)"
            ))
        })
}

/// How to reach the platform.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Platform {
    /// The platform's partner listener, e.g. `https://127.0.0.1:7443`; with several
    /// replicas, each one's, separated by commas.
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
    /// CA that front ends' client certificates chain to; without it, front ends
    /// authenticate with a user's session only.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Certificate revocation lists (PEM) checked for every front end's certificate; they
    /// need `client_ca`. An expired CRL fails closed.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
}

impl PartnerConfig {
    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_naming_an_unknown_coverage_or_card_is_refused_when_read() {
        let profile = include_str!("../profiles/music.toml");
        let read = PartnerConfig::from_toml(profile).unwrap();
        assert_eq!(read.feature.coverage, ThreadCoverage::PartnerStartedThreads);
        assert_eq!(read.feature.cards, [CardKind::Track]);
        for (good, bad, said) in [
            (
                "PARTNER_STARTED_THREADS",
                "SOME_THREADS",
                "is not a coverage",
            ),
            (
                "PARTNER_STARTED_THREADS",
                "THREAD_COVERAGE_UNSPECIFIED",
                "is not a coverage",
            ),
            (
                "cards = [\"track\"]",
                "cards = [\"tape\"]",
                "is not a kind of card",
            ),
        ] {
            let refused = PartnerConfig::from_toml(&profile.replace(good, bad)).unwrap_err();
            assert!(refused.to_string().contains(said), "{refused}");
        }
    }
}
