//! A deliberately misbehaving HTTP/2 client over TLS, writing raw frames, for the abuse
//! tests: a well-behaved client library would refuse to break the protocol for us.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Frame types: HEADERS.
pub const HEADERS: u8 = 0x1;
/// RST_STREAM.
pub const RST_STREAM: u8 = 0x3;
/// SETTINGS.
pub const SETTINGS: u8 = 0x4;
/// GOAWAY.
pub const GOAWAY: u8 = 0x7;
/// WINDOW_UPDATE.
pub const WINDOW_UPDATE: u8 = 0x8;
/// CONTINUATION.
pub const CONTINUATION: u8 = 0x9;
/// END_HEADERS flag.
pub const END_HEADERS: u8 = 0x4;

/// A raw HTTP/2 connection.
pub struct RawH2 {
    stream: TlsStream<TcpStream>,
}

/// What the server did to the connection.
#[derive(Debug, Default)]
pub struct Outcome {
    /// RST_STREAM frames received.
    pub resets: usize,
    /// Error code of a GOAWAY, if one came.
    pub goaway: Option<u32>,
    /// Whether the server closed the connection.
    pub closed: bool,
}

impl Outcome {
    /// Whether the server pushed back at all.
    pub fn answered(&self) -> bool {
        self.resets > 0 || self.goaway.is_some() || self.closed
    }
}

impl RawH2 {
    /// Connects with TLS (ALPN h2) presenting `cert`/`key`, sends the preface and empty SETTINGS.
    pub async fn connect(
        addr: SocketAddr,
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> std::io::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("ca"))
            .expect("root");
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert")],
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key"),
        )
        .expect("client auth");
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").expect("name");
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        let mut raw = RawH2 { stream };
        raw.stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await?;
        raw.frame(SETTINGS, 0, 0, &[]).await?;
        Ok(raw)
    }

    /// Writes one frame.
    pub async fn frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream_id: u32,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let len = u32::try_from(payload.len())
            .expect("frame length")
            .to_be_bytes();
        let mut frame = Vec::with_capacity(9 + payload.len());
        frame.extend_from_slice(&len[1..]);
        frame.push(kind);
        frame.push(flags);
        frame.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await
    }

    /// Reads frames for up to `within`, acknowledging SETTINGS, until GOAWAY or close.
    pub async fn observe(&mut self, within: Duration) -> Outcome {
        let mut outcome = Outcome::default();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut header = [0u8; 9];
            match tokio::time::timeout_at(deadline, self.stream.read_exact(&mut header)).await {
                Err(_) => return outcome,
                Ok(Err(_)) => {
                    outcome.closed = true;
                    return outcome;
                }
                Ok(Ok(_)) => {}
            }
            let len =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let mut payload = vec![0u8; len];
            if !matches!(
                tokio::time::timeout_at(deadline, self.stream.read_exact(&mut payload)).await,
                Ok(Ok(_))
            ) {
                outcome.closed = true;
                return outcome;
            }
            match header[3] {
                RST_STREAM => outcome.resets += 1,
                GOAWAY if payload.len() >= 8 => {
                    outcome.goaway = Some(u32::from_be_bytes([
                        payload[4], payload[5], payload[6], payload[7],
                    ]));
                    return outcome;
                }
                SETTINGS
                    if header[4] & 0x1 == 0 && self.frame(SETTINGS, 0x1, 0, &[]).await.is_err() =>
                {
                    outcome.closed = true;
                    return outcome;
                }
                _ => {}
            }
        }
    }
}

fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
    // Literal header field without indexing, new name, no Huffman coding.
    block.push(0x00);
    for text in [name, value] {
        assert!(text.len() < 127, "short strings only");
        block.push(u8::try_from(text.len()).expect("length"));
        block.extend_from_slice(text.as_bytes());
    }
}

/// An HPACK header block for a gRPC POST to `path`.
pub fn grpc_request(path: &str) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "https"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        literal(&mut block, name, value);
    }
    block
}

/// A header block fragment of `size` bytes of junk headers (for CONTINUATION floods).
pub fn junk_headers(size: usize) -> Vec<u8> {
    let mut block = Vec::with_capacity(size + 128);
    let mut n = 0;
    while block.len() < size {
        literal(&mut block, &format!("x-junk-{n}"), &"j".repeat(100));
        n += 1;
    }
    block
}
