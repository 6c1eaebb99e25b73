//! The baseline: a bare echo service behind exactly the platform's TLS termination,
//! client-certificate check and transport limits, run as a process of its own so its CPU
//! and memory can be read like the platform's.

use consent_proto::bench::v1::echo_server::{Echo, EchoServer};
use consent_proto::bench::v1::{EchoRequest, EchoResponse};
use platform_svc::config::TransportLimits;
use platform_svc::tls::{ReloadableTls, TlsFiles, incoming};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let size = usize::try_from(request.get_ref().response_bytes)
            .unwrap_or(0)
            .min(1 << 20);
        Ok(Response::new(EchoResponse {
            payload: vec![b'x'; size],
        }))
    }
}

/// Serves the echo service on `addr` with the PKI in `pki` until the process is killed.
pub async fn serve(pki: &Path, addr: SocketAddr) {
    let files = TlsFiles {
        cert: pki.join("platform.pem"),
        key: pki.join("platform-key.pem"),
        client_ca: Some(pki.join("ca.pem")),
        crls: vec![pki.join("crl.pem")],
    };
    let tls = Arc::new(ReloadableTls::load(files).expect("echo tls"));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("echo bind");
    let limits = TransportLimits::default();
    let connections = incoming(
        listener,
        tls,
        Duration::from_millis(limits.handshake_timeout_ms),
        "consent.local".into(),
    );
    let service = EchoServer::new(EchoService)
        .max_decoding_message_size(limits.max_message_bytes)
        .max_encoding_message_size(limits.max_message_bytes);
    platform_svc::server::transport(&limits)
        .add_service(service)
        .serve_with_incoming(connections)
        .await
        .expect("echo serve");
}
