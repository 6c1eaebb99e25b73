//! `partner-svc`: one partner's backend, configured by a profile file.

use clap::Parser;
use consent_telemetry::logging::LogFormat;
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
    /// Override `tls.crls` (comma-separated).
    #[arg(long, env = "PARTNER_TLS_CRLS", value_delimiter = ',')]
    tls_crls: Vec<PathBuf>,
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
    /// Override `ops_listen` (where `/metrics` is served).
    #[arg(long, env = "PARTNER_OPS_LISTEN")]
    ops_listen: Option<SocketAddr>,
    /// How log lines are written.
    #[arg(long, env = "PARTNER_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Export spans over OTLP (gRPC) to this collector, e.g. `http://127.0.0.1:4317`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
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
    if !cli.tls_crls.is_empty() {
        config.tls.crls = cli.tls_crls;
    }
    config.trust_domain = cli.trust_domain.unwrap_or(config.trust_domain);
    config.ops_listen = cli.ops_listen.or(config.ops_listen);
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
    let cli = Cli::parse();
    let telemetry = match consent_telemetry::logging::init(
        "partner-svc",
        cli.log_format,
        cli.otlp_endpoint.as_deref(),
    ) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("partner-svc: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = async {
        consent_tls::termination::ignore_hangups_until_reloading();
        let config = load(cli)?;
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let web = match &config.web {
            Some(web) => Some(tokio::net::TcpListener::bind(web.listen).await?),
            None => None,
        };
        let ops = match config.ops_listen {
            Some(address) => Some(tokio::net::TcpListener::bind(address).await?),
            None => None,
        };
        tracing::info!(partner = %config.partner_id, listen = %listener.local_addr()?, web = ?config.web.as_ref().map(|w| w.origin()), ops = ?config.ops_listen, "partner listening");
        let listeners = partner_svc::server::Listeners { api: listener, web, ops };
        partner_svc::server::run(config, listeners, shutdown_signal()).await
    }
    .await;
    telemetry.flush().await;
    match outcome {
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
