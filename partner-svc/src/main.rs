//! `partner-svc`: one partner's backend, configured by a profile file.

use clap::Parser;
use partner_svc::config::PartnerConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    version,
    about = "A partner's backend for the consented partner messaging platform"
)]
struct Cli {
    /// Partner profile (TOML), e.g. partner-svc/profiles/music.toml.
    #[arg(long, env = "PARTNER_CONFIG")]
    config: PathBuf,
    /// Override `listen`.
    #[arg(long, env = "PARTNER_LISTEN")]
    listen: Option<SocketAddr>,
    /// Override `database`.
    #[arg(long, env = "PARTNER_DATABASE")]
    database: Option<PathBuf>,
    /// Override `platform.address`.
    #[arg(long, env = "PARTNER_PLATFORM_ADDRESS")]
    platform_address: Option<String>,
    /// Override `platform.ca`.
    #[arg(long, env = "PARTNER_PLATFORM_CA")]
    platform_ca: Option<PathBuf>,
    /// Override `tls.cert`.
    #[arg(long, env = "PARTNER_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Override `tls.key`.
    #[arg(long, env = "PARTNER_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Override `tls.client_ca`.
    #[arg(long, env = "PARTNER_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Override `trust_domain`.
    #[arg(long, env = "PARTNER_TRUST_DOMAIN")]
    trust_domain: Option<String>,
    /// Override `web.listen`.
    #[arg(long, env = "PARTNER_WEB_LISTEN")]
    web_listen: Option<SocketAddr>,
    /// Override `web.origin`.
    #[arg(long, env = "PARTNER_WEB_ORIGIN")]
    web_origin: Option<String>,
    /// Override `web.platform_origin`.
    #[arg(long, env = "PARTNER_PLATFORM_WEB_ORIGIN")]
    platform_web_origin: Option<String>,
}

fn load(cli: Cli) -> Result<PartnerConfig, Box<dyn std::error::Error + Send + Sync>> {
    let mut config = PartnerConfig::from_toml(&std::fs::read_to_string(&cli.config)?)?;
    config.listen = cli.listen.unwrap_or(config.listen);
    config.database = cli.database.unwrap_or(config.database);
    config.platform.address = cli.platform_address.unwrap_or(config.platform.address);
    config.platform.ca = cli.platform_ca.unwrap_or(config.platform.ca);
    config.tls.cert = cli.tls_cert.unwrap_or(config.tls.cert);
    config.tls.key = cli.tls_key.unwrap_or(config.tls.key);
    config.tls.client_ca = cli.tls_client_ca.or(config.tls.client_ca);
    config.trust_domain = cli.trust_domain.unwrap_or(config.trust_domain);
    if let Some(web) = config.web.as_mut() {
        web.listen = cli.web_listen.unwrap_or(web.listen);
        web.origin = cli.web_origin.or(web.origin.clone());
        web.platform_origin = cli
            .platform_web_origin
            .unwrap_or(web.platform_origin.clone());
    }
    Ok(config)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let outcome = async {
        let config = load(Cli::parse())?;
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let web = match &config.web {
            Some(web) => Some(tokio::net::TcpListener::bind(web.listen).await?),
            None => None,
        };
        tracing::info!(partner = %config.partner_id, listen = %listener.local_addr()?, web = ?config.web.as_ref().map(|w| w.origin()), "partner listening");
        partner_svc::server::run(config, listener, web, shutdown_signal()).await
    };
    match outcome.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "partner-svc failed");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = terminate => {},
    }
}
