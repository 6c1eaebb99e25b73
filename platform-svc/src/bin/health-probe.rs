//! `health-probe`: asks a service for its `grpc.health.v1` status over its real TLS
//! (presenting a client certificate where the listener requires one) and exits 0 only when
//! it answers SERVING. Container health checks run it; images have no shell or grpcurl.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[derive(Parser)]
#[command(version, about = "gRPC health check over TLS")]
struct Cli {
    /// Address to check, e.g. 127.0.0.1:7443.
    #[arg(long)]
    addr: String,
    /// CA of the service's certificate.
    #[arg(long)]
    ca: PathBuf,
    /// Name the service's certificate carries.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Client certificate, for listeners that require one.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Client key.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Service to ask about ("" = the server as a whole).
    #[arg(long, default_value = "")]
    service: String,
}

async fn check(cli: Cli) -> Result<ServingStatus, Box<dyn std::error::Error>> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&cli.ca)?))
        .domain_name(cli.server_name);
    if let (Some(cert), Some(key)) = (cli.cert, cli.key) {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert)?,
            std::fs::read(key)?,
        ));
    }
    let channel = Channel::from_shared(format!("https://{}", cli.addr))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(3))
        .connect()
        .await?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: cli.service,
        })
        .await?;
    Ok(ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match check(Cli::parse()).await {
        Ok(ServingStatus::Serving) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("health-probe: {}", status.as_str_name());
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("health-probe: {error}");
            ExitCode::FAILURE
        }
    }
}
