//! `platform-svc`: serve the platform, or make a development PKI.

use clap::{Parser, Subcommand};
use consent_core::clock::Clock;
use consent_core::secret::SecretKey;
use consent_telemetry::logging::LogFormat;
use consent_tls::pki::DevPki;
use platform_svc::config::PlatformConfig;
use platform_svc::server::BoundPlatform;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Each call allocates and frees many small buffers across threads; mimalloc does that
/// with less CPU than the system allocator (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "The consented partner messaging platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written.
    #[arg(
        long,
        global = true,
        env = "PLATFORM_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Export spans over OTLP (gRPC) to this collector, e.g. `http://127.0.0.1:4317`.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the partner, operator and user surfaces.
    Serve {
        /// TOML configuration file.
        #[arg(long, env = "PLATFORM_CONFIG")]
        config: PathBuf,
        /// Override `database`.
        #[arg(long, env = "PLATFORM_DATABASE")]
        database: Option<String>,
        /// Override `listen.partner`.
        #[arg(long, env = "PLATFORM_LISTEN_PARTNER")]
        listen_partner: Option<SocketAddr>,
        /// Override `listen.operator`.
        #[arg(long, env = "PLATFORM_LISTEN_OPERATOR")]
        listen_operator: Option<SocketAddr>,
        /// Override `listen.user`.
        #[arg(long, env = "PLATFORM_LISTEN_USER")]
        listen_user: Option<SocketAddr>,
        /// Override `listen.web`.
        #[arg(long, env = "PLATFORM_LISTEN_WEB")]
        listen_web: Option<SocketAddr>,
        /// Override `listen.ops` (where `/metrics` is served).
        #[arg(long, env = "PLATFORM_LISTEN_OPS")]
        listen_ops: Option<SocketAddr>,
        /// Override `web_origin`.
        #[arg(long, env = "PLATFORM_WEB_ORIGIN")]
        web_origin: Option<String>,
    },
    /// Write a development PKI (a platform CA, a client CA, the platform's, the operator's
    /// and each partner's certificate, a CRL), the audit key (`audit.key`) and the
    /// pseudonym key (`pseudonym.key`) to a directory; keys are written `0600`, and
    /// secret keys already there are kept.
    DevPki {
        /// Output directory.
        #[arg(long, default_value = "dev-pki")]
        out: PathBuf,
        /// SPIFFE trust domain.
        #[arg(long, default_value = "consent.local")]
        trust_domain: String,
        /// Operator name.
        #[arg(long, default_value = "ops")]
        operator: String,
        /// A partner id (repeat for each partner).
        #[arg(long = "partner", default_values = ["music", "video", "files", "bank", "search"])]
        partners: Vec<String>,
        /// Give the private keys to this user and group (`UID:GID`), e.g. the user the
        /// container images run as (`10001:10001`); needs the right to change owners.
        #[arg(long, value_parser = parse_owner, value_name = "UID:GID")]
        key_owner: Option<(u32, u32)>,
    },
}

fn parse_owner(text: &str) -> Result<(u32, u32), String> {
    let (uid, gid) = text.split_once(':').ok_or("expected UID:GID")?;
    let number = |n: &str| n.parse::<u32>().map_err(|e| format!("{n}: {e}"));
    Ok((number(uid)?, number(gid)?))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = match consent_telemetry::logging::init(
        "platform-svc",
        cli.log_format,
        cli.otlp_endpoint.as_deref(),
    ) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("platform-svc: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = run(cli.command).await;
    telemetry.flush().await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "platform-svc failed");
            ExitCode::FAILURE
        }
    }
}

/// Gives the kept secret key at `path` to `owner`, if one is asked for, as new keys are,
/// and then makes it readable by its owner only if it is not; with no owner asked for, it
/// is left as it is. `found` is what `path` was before it was opened: the file opened
/// must be that one, not a link put there since.
fn keep_private(
    path: &std::path::Path,
    found: &std::fs::Metadata,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some((uid, gid)) = owner else {
        return Ok(());
    };
    let file = std::fs::File::open(path)?;
    let opened = file.metadata()?;
    if (opened.dev(), opened.ino()) != (found.dev(), found.ino()) {
        let changed = format!("{} changed while it was read", path.display());
        return Err(std::io::Error::other(changed));
    }
    std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    if opened.permissions().mode() & 0o777 != 0o600 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

async fn run(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::DevPki {
            out,
            trust_domain,
            operator,
            partners,
            key_owner,
        } => {
            DevPki::generate(&trust_domain, &operator, &partners)?.write_to(&out, key_owner)?;
            // The secret keys outlive certificates: a store's audit chain verifies, and its
            // pseudonyms hold, only under the keys it was written with.
            for name in ["audit.key", "pseudonym.key"] {
                let path = out.join(name);
                match std::fs::symlink_metadata(&path) {
                    Ok(found) if found.file_type().is_file() => {
                        keep_private(&path, &found, key_owner)?;
                        println!("kept the existing {}", path.display());
                        continue;
                    }
                    Ok(_) => return Err(format!("{} is not a file", path.display()).into()),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => return Err(error.into()),
                }
                let key = SecretKey::generate().to_hex();
                consent_tls::pki::write_private(&path, &key, key_owner)?;
            }
            println!(
                "wrote the development PKI for {trust_domain} to {}",
                out.display()
            );
            Ok(())
        }
        Command::Serve {
            config,
            database,
            listen_partner,
            listen_operator,
            listen_user,
            listen_web,
            listen_ops,
            web_origin,
        } => {
            consent_tls::termination::ignore_hangups_until_reloading();
            let mut config = PlatformConfig::from_toml(&std::fs::read_to_string(&config)?)?;
            if let Some(database) = database {
                config.database = database;
            }
            config.listen.partner = listen_partner.unwrap_or(config.listen.partner);
            config.listen.operator = listen_operator.unwrap_or(config.listen.operator);
            config.listen.user = listen_user.unwrap_or(config.listen.user);
            config.listen.web = listen_web.unwrap_or(config.listen.web);
            config.listen.ops = listen_ops.or(config.listen.ops);
            config.web_origin = web_origin.or(config.web_origin);
            let bound = BoundPlatform::bind(config, Arc::new(Clock::default())).await?;
            let addrs = bound.addrs()?;
            tracing::info!(partner = %addrs.partner, operator = %addrs.operator, user = %addrs.user, web = %addrs.web, ops = ?addrs.ops, "platform listening");
            let _reloads = consent_tls::termination::reload_on_hangup(bound.tls_reloader());
            bound.serve(shutdown_signal()).await?;
            tracing::info!("platform stopped");
            Ok(())
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
