//! The HTTP/2, TLS and message limits every listener sets explicitly: tonic leaves
//! `max_concurrent_streams` and the locally-reset-stream limit unlimited unless told.

use serde::Deserialize;
use std::time::Duration;
use tonic::transport::Server;

/// How many times `max_header_list_bytes` HTTP/2 accepts, so that a service's edge sees a
/// header list over the limit and can refuse it with a status that says so.
pub const HTTP2_HEADER_ALLOWANCE: u32 = 2;

/// HTTP/2 and TLS limits, set explicitly (tonic leaves several unlimited).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportLimits {
    /// HTTP/2 streams a connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Locally reset streams tolerated per connection before GOAWAY.
    pub max_local_error_reset_streams: usize,
    /// Remotely reset, not yet accepted streams tolerated (rapid-reset defence).
    pub max_pending_accept_reset_streams: usize,
    /// Largest header list, in bytes, that a service accepts (its edge refuses a larger
    /// one with a clear status; HTTP/2 itself accepts [`HTTP2_HEADER_ALLOWANCE`] times as
    /// much).
    pub max_header_list_bytes: u32,
    /// Largest gRPC message, in bytes, either way.
    pub max_message_bytes: usize,
    /// Milliseconds a TLS handshake may take.
    pub handshake_timeout_ms: u64,
    /// Milliseconds a unary request may take.
    pub request_timeout_ms: u64,
    /// Requests per second each partner may make, sustained.
    pub partner_requests_per_second: u32,
    /// Requests each partner may make at once above the sustained rate.
    pub partner_burst: u32,
    /// `WatchGrantEvents` streams each partner may hold open at once.
    pub partner_event_streams: usize,
    /// Seconds a connection may live, with the grace below, before it is closed, so that a
    /// certificate revoked since its handshake stops working within this bound. tonic 0.14
    /// closes it at age and grace without a GOAWAY first (without a grace, its graceful
    /// close fails), so the grace is always set.
    pub max_connection_age_secs: u64,
    /// Seconds added to the maximum age before the connection is closed.
    pub max_connection_age_grace_secs: u64,
}

impl Default for TransportLimits {
    fn default() -> Self {
        TransportLimits {
            max_concurrent_streams: 128,
            max_local_error_reset_streams: 256,
            max_pending_accept_reset_streams: 64,
            max_header_list_bytes: 16 * 1024,
            max_message_bytes: 256 * 1024,
            handshake_timeout_ms: 5_000,
            request_timeout_ms: 30_000,
            partner_requests_per_second: 500,
            partner_burst: 1000,
            partner_event_streams: 8,
            max_connection_age_secs: 300,
            max_connection_age_grace_secs: 30,
        }
    }
}

/// The gRPC server with every HTTP/2 limit set explicitly (the benchmark's baseline
/// serves with it too).
pub fn transport(limits: &TransportLimits) -> Server {
    Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_local_error_reset_streams(Some(limits.max_local_error_reset_streams))
        .http2_max_pending_accept_reset_streams(Some(limits.max_pending_accept_reset_streams))
        .http2_max_header_list_size(
            limits
                .max_header_list_bytes
                .saturating_mul(HTTP2_HEADER_ALLOWANCE),
        )
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .timeout(Duration::from_millis(limits.request_timeout_ms))
        .max_connection_age(Duration::from_secs(limits.max_connection_age_secs))
        .max_connection_age_grace(Duration::from_secs(limits.max_connection_age_grace_secs))
        .tcp_nodelay(true)
}
