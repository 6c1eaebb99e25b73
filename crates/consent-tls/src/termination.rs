//! TLS termination with rustls, done here rather than by tonic's built-in TLS because
//! tonic's cannot honour CRLs, reload certificates, or hand us the peer identity once per
//! connection. Each listener accepts TCP, runs the TLS 1.3 handshake under a timeout in its
//! own task (a stalled client delays no one), reads the client identity, and yields
//! [`TlsConnection`]s to `Server::serve_with_incoming_shutdown`. Refused handshakes are
//! counted by cause in `consent_tls_handshakes_refused_total`.

use crate::principal::{ConnectionInfo, principal_from_certificate};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ServerConfig, version::TLS13};
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::task::AbortOnDropHandle;
use tonic::transport::server::Connected;

/// A TLS configuration failure.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("reading {path}: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate file held no certificate.
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    /// A CRL file held no CRL.
    #[error("{0} holds no certificate revocation list")]
    NoCrl(PathBuf),
    /// A CA file held something that is not a CA certificate.
    #[error("{path}: {source}")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// Why rustls refused it.
        source: rustls::Error,
    },
    /// rustls refused the configuration.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The files a listener's TLS is built from; read again on every reload.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA that client certificates must chain to; `None` for server-auth-only TLS.
    pub client_ca: Option<PathBuf>,
    /// Certificate revocation lists (PEM), checked for every client certificate.
    pub crls: Vec<PathBuf>,
    /// Also offer HTTP/1.1 (for browsers), not only HTTP/2.
    pub http1: bool,
    /// With a `client_ca`: also accept clients without a certificate (those with one must
    /// still chain to it); the service then refuses, with a status, calls that need one.
    pub client_certificate_optional: bool,
}

fn pem_error(path: &std::path::Path) -> impl FnOnce(rustls::pki_types::pem::Error) -> TlsError {
    let path = path.to_path_buf();
    move |source| TlsError::Pem { path, source }
}

/// Reads every certificate in a PEM file.
pub fn read_certificates(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_error(path))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error(path))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

/// Reads a CA file as trust roots: every certificate in it must parse as one.
pub fn read_roots(path: &std::path::Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(path)? {
        roots.add(cert).map_err(|source| TlsError::BadCa {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}

/// Reads the private key in a PEM file.
pub fn read_private_key(path: &std::path::Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(pem_error(path))
}

/// Reads every CRL in a PEM file; a file without one is an error, since accepting it would
/// silently switch revocation off.
fn read_crls(
    path: &std::path::Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let crls = CertificateRevocationListDer::pem_file_iter(path)
        .map_err(pem_error(path))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error(path))?;
    if crls.is_empty() {
        return Err(TlsError::NoCrl(path.to_path_buf()));
    }
    Ok(crls)
}

fn crypto() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a TLS 1.3-only server configuration from `files`, requiring a client certificate
/// chained to `client_ca` (with CRLs enforced, and stale CRLs refused) when one is set.
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let certs = read_certificates(&files.cert)?;
    let key = read_private_key(&files.key)?;
    let builder =
        ServerConfig::builder_with_provider(crypto()).with_protocol_versions(&[&TLS13])?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let roots = read_roots(ca)?;
            let mut crls = Vec::new();
            for path in &files.crls {
                crls.extend(read_crls(path)?);
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto())
                    .with_crls(crls)
                    .enforce_revocation_expiration();
            if files.client_certificate_optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier.build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    if files.http1 {
        config.alpn_protocols.push(b"http/1.1".to_vec());
    }
    Ok(config)
}

/// A listener's TLS configuration, replaceable at run time (certificates and CRLs reload
/// without a restart; connections already open keep the configuration they started with).
#[derive(Debug)]
pub struct ReloadableTls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl ReloadableTls {
    /// Loads the files once.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let config = Arc::new(server_config(&files)?);
        Ok(ReloadableTls {
            files,
            current: RwLock::new(config),
        })
    }

    /// Reads the files of every listener in `all` again, and installs the new
    /// configurations only once all have loaded: if any listener's files fail to load,
    /// every listener keeps the configuration it had.
    pub fn reload_all(all: &[Arc<ReloadableTls>]) -> Result<(), TlsError> {
        let loaded = all
            .iter()
            .map(|tls| server_config(&tls.files).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        for (tls, config) in all.iter().zip(loaded) {
            *tls.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        }
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        TlsAcceptor::from(config)
    }
}

/// Keeps `SIGHUP` from ending the process, its default, until [`reload_on_hangup`] listens
/// for it: called first, before a start that may take a while (a database's migrations),
/// so that a reload asked for meanwhile is ignored rather than fatal. A signal's handler,
/// once registered, stays for the life of the process. Must be called inside the async
/// runtime.
pub fn ignore_hangups_until_reloading() {
    if let Err(error) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        tracing::warn!(%error, "SIGHUP cannot be caught: until the listeners are up, it ends the process");
    }
}

/// From now on, calls `reload` on every `SIGHUP` the process receives, logging whether it
/// worked (a reload that fails leaves what it would have replaced in force, so the log
/// says so), until the returned handle is dropped. Must be called inside the async runtime.
pub fn reload_on_hangup<E>(
    reload: impl Fn() -> Result<(), E> + Send + 'static,
) -> AbortOnDropHandle<()>
where
    E: std::fmt::Display,
{
    // Installed before this returns, so that a SIGHUP from now on never takes its default
    // action, which would end the process.
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    AbortOnDropHandle::new(tokio::spawn(async move {
        let mut hangups = match hangups {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::warn!(%error, "SIGHUP cannot be received; certificates reload only on a restart");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            match reload() {
                Ok(()) => tracing::info!("certificates and CRLs reloaded"),
                Err(error) => {
                    tracing::warn!(%error, "reload failed; previous certificates stay in force")
                }
            }
        }
    }))
}

/// An established TLS connection and what the edge learned about its peer.
#[derive(Debug)]
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    info: ConnectionInfo,
}

impl Connected for TlsConnection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

fn count_refusal(cause: &'static str) {
    metrics::counter!("consent_tls_handshakes_refused_total", "cause" => cause).increment(1);
}

/// Why a handshake failed, as a label: what the client presented or did.
fn refusal_cause(error: &io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    match error.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(Error::NoCertificatesPresented) => "no_certificate",
        Some(Error::InvalidCertificate(CertificateError::Revoked)) => "revoked",
        Some(Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => "expired",
        Some(Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        )) => "not_yet_valid",
        Some(Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        )) => "untrusted",
        Some(Error::InvalidCertificate(_)) => "bad_certificate",
        Some(Error::PeerIncompatible(_)) => "incompatible",
        Some(_) => "protocol",
        None => "connection",
    }
}

/// Accepts connections on `listener` and yields those whose handshake completes within
/// `handshake_timeout`, until `stop` resolves: then the listener closes, so that a client
/// dialling this server while it drains is refused at once (and may go to another
/// replica). Failed handshakes (no or bad certificate, wrong protocol version) are logged
/// and dropped; they never reach the gRPC server. With a `trust_domain`, each connection
/// carries the principal its client certificate names in that domain; without one (a
/// listener that asks for no client certificate) it carries none.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ReloadableTls>,
    handshake_timeout: Duration,
    trust_domain: Option<String>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> ReceiverStream<io::Result<TlsConnection>> {
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        tokio::pin!(stop);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut stop => break,
            };
            let (tcp, remote_addr) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if sender.is_closed() {
                break;
            }
            let _ = tcp.set_nodelay(true);
            let acceptor = tls.acceptor();
            let sender = sender.clone();
            let trust_domain = trust_domain.clone();
            tokio::spawn(async move {
                let stream =
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::info!(%remote_addr, %error, "tls handshake refused");
                            count_refusal(refusal_cause(&error));
                            return;
                        }
                        Err(_) => {
                            tracing::info!(%remote_addr, "tls handshake timed out");
                            count_refusal("timeout");
                            return;
                        }
                    };
                let leaf = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first());
                let principal = leaf
                    .zip(trust_domain.as_deref())
                    .and_then(|(leaf, domain)| principal_from_certificate(leaf, domain));
                let info = ConnectionInfo {
                    remote_addr: Some(remote_addr),
                    principal,
                };
                let _ = sender.send(Ok(TlsConnection { stream, info })).await;
            });
        }
    });
    ReceiverStream::new(receiver)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::DevPki;

    fn current(tls: &ReloadableTls) -> Arc<ServerConfig> {
        tls.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    #[test]
    fn a_reload_installs_nothing_unless_every_listener_loads() {
        let dir = tempfile::tempdir().unwrap();
        DevPki::generate("consent.test", "ops", &["music".to_string()])
            .unwrap()
            .write_to(dir.path(), None)
            .unwrap();
        let second_ca = dir.path().join("second-ca.pem");
        std::fs::copy(dir.path().join("ca.pem"), &second_ca).unwrap();
        let listener = |client_ca: PathBuf| {
            Arc::new(
                ReloadableTls::load(TlsFiles {
                    cert: dir.path().join("platform.pem"),
                    key: dir.path().join("platform-key.pem"),
                    client_ca: Some(client_ca),
                    crls: Vec::new(),
                    http1: false,
                    client_certificate_optional: false,
                })
                .unwrap(),
            )
        };
        let first = listener(dir.path().join("ca.pem"));
        let second = listener(second_ca.clone());
        let before = [current(&first), current(&second)];

        // Whichever listener comes first, the one whose file breaks stops them all.
        std::fs::write(&second_ca, "not a CA").unwrap();
        for order in [[&first, &second], [&second, &first]] {
            let all = order.map(Arc::clone);
            assert!(ReloadableTls::reload_all(&all).is_err());
            assert!(Arc::ptr_eq(&current(&first), &before[0]));
            assert!(Arc::ptr_eq(&current(&second), &before[1]));
        }

        // Mended, the reload gives every listener a new configuration.
        std::fs::copy(dir.path().join("ca.pem"), &second_ca).unwrap();
        ReloadableTls::reload_all(&[Arc::clone(&first), Arc::clone(&second)]).unwrap();
        assert!(!Arc::ptr_eq(&current(&first), &before[0]));
        assert!(!Arc::ptr_eq(&current(&second), &before[1]));
    }
}
