//! The baseline: a bare echo service behind exactly the platform's TLS termination,
//! client-certificate check and transport limits, run as a process of its own so its CPU
//! and memory can be read like the platform's.
//!
//! It speaks the platform's messaging API but decides nothing and stores nothing: each
//! measured call is answered with the reply the platform gave to the same call before the
//! run, byte for byte ([`Replies`]). The load generator therefore sends, receives and
//! decodes exactly what it does against the platform, and the difference between the two
//! is what the platform does with the call.

use consent_proto::platform::v1 as pb;
use consent_tls::termination::{ReloadableTls, TlsFiles, incoming};
use consent_tls::transport::TransportLimits;
use pb::messaging_client::MessagingClient;
use pb::messaging_server::{Messaging, MessagingServer};
use prost::Message;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

/// The platform's replies to one call of each measured kind.
pub struct Replies {
    /// A page of messages (`ListMessages`).
    page: pb::ListMessagesResponse,
    /// A sent message (`SendMessage`).
    sent: pb::Message,
    /// The encoded `google.rpc.Status` of a refusal (`ListFriends` without its scope).
    refusal: Vec<u8>,
}

const PAGE: &str = "page.bin";
const SENT: &str = "sent.bin";
const REFUSAL: &str = "refusal.bin";

impl Replies {
    /// Makes one call of each kind, with the requests the load generator will send.
    pub async fn record(
        client: &mut MessagingClient<Channel>,
        read: pb::ListMessagesRequest,
        send: pb::SendMessageRequest,
        token: &str,
    ) -> Replies {
        let page = client
            .list_messages(end_to_end::bearer(read, token))
            .await
            .expect("sample read")
            .into_inner();
        let sent = client
            .send_message(end_to_end::bearer(send, token))
            .await
            .expect("sample send")
            .into_inner();
        let refused = client
            .list_friends(end_to_end::bearer(pb::ListFriendsRequest::default(), token))
            .await
            .expect_err("sample refusal");
        assert_eq!(refused.code(), Code::PermissionDenied);
        Replies {
            page,
            sent,
            refusal: refused.details().to_vec(),
        }
    }

    /// Writes the replies into `dir`, for [`serve`].
    pub fn save(&self, dir: &Path) {
        std::fs::create_dir_all(dir).expect("replies directory");
        let write = |name: &str, bytes: Vec<u8>| {
            std::fs::write(dir.join(name), bytes).expect("write a recorded reply");
        };
        write(PAGE, self.page.encode_to_vec());
        write(SENT, self.sent.encode_to_vec());
        write(REFUSAL, self.refusal.clone());
    }

    fn load(dir: &Path) -> Replies {
        let read = |name: &str| std::fs::read(dir.join(name)).expect("read a recorded reply");
        Replies {
            page: pb::ListMessagesResponse::decode(read(PAGE).as_slice()).expect("page"),
            sent: pb::Message::decode(read(SENT).as_slice()).expect("sent message"),
            refusal: read(REFUSAL),
        }
    }
}

/// The replies, ready to send.
struct Replay {
    page: pb::ListMessagesResponse,
    sent: pb::Message,
    refusal: Status,
}

impl From<Replies> for Replay {
    fn from(replies: Replies) -> Self {
        let refusal = tonic_types::Status::decode(replies.refusal.as_slice()).expect("refusal");
        Replay {
            page: replies.page,
            sent: replies.sent,
            refusal: Status::with_details(
                Code::from(refusal.code),
                refusal.message,
                replies.refusal.into(),
            ),
        }
    }
}

fn not_replayed<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented(
        "the baseline replays only the measured calls",
    ))
}

#[tonic::async_trait]
impl Messaging for Replay {
    async fn list_threads(
        &self,
        _: Request<pb::ListThreadsRequest>,
    ) -> Result<Response<pb::ListThreadsResponse>, Status> {
        not_replayed()
    }

    async fn list_messages(
        &self,
        _: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        Ok(Response::new(self.page.clone()))
    }

    async fn get_message(
        &self,
        _: Request<pb::GetMessageRequest>,
    ) -> Result<Response<pb::Message>, Status> {
        not_replayed()
    }

    async fn send_message(
        &self,
        _: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::Message>, Status> {
        Ok(Response::new(self.sent.clone()))
    }

    async fn start_thread(
        &self,
        _: Request<pb::StartThreadRequest>,
    ) -> Result<Response<pb::StartThreadResponse>, Status> {
        not_replayed()
    }

    async fn delete_message(
        &self,
        _: Request<pb::DeleteMessageRequest>,
    ) -> Result<Response<pb::DeleteMessageResponse>, Status> {
        not_replayed()
    }

    async fn list_friends(
        &self,
        _: Request<pb::ListFriendsRequest>,
    ) -> Result<Response<pb::ListFriendsResponse>, Status> {
        Err(self.refusal.clone())
    }
}

/// Serves the replies saved in `replies` on `addr`, with the PKI in `pki`, until the
/// process is killed.
pub async fn serve(pki: &Path, addr: SocketAddr, replies: &Path) {
    let files = TlsFiles {
        cert: pki.join("platform.pem"),
        key: pki.join("platform-key.pem"),
        client_ca: Some(pki.join("ca.pem")),
        crls: vec![pki.join("crl.pem")],
        http1: false,
        client_certificate_optional: false,
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
        Some("consent.local".into()),
        std::future::pending(),
    );
    let service = MessagingServer::new(Replay::from(Replies::load(replies)))
        .max_decoding_message_size(limits.max_message_bytes)
        .max_encoding_message_size(limits.max_message_bytes);
    consent_tls::transport::transport(&limits)
        .add_service(service)
        .serve_with_incoming(connections)
        .await
        .expect("echo serve");
}
