//! What an operator watches, shared by the platform and the partner service:
//!
//! - [`ops`]: one Prometheus recorder per process, served as `/metrics` on an operations
//!   listener; the code that counts something calls the `metrics` macros where it happens.
//! - [`rpc`]: a tower layer that gives every gRPC call a span and counts it by service,
//!   method, code and denial reason, with its latency.
//! - [`trace_context`]: W3C `traceparent` read from incoming calls and written on outgoing
//!   ones, so that one trace crosses from a partner to the platform.
//! - [`logging`]: text or JSON log lines (JSON lines name the call's trace id), and spans
//!   exported over OTLP when an endpoint is configured.

pub mod logging;
pub mod ops;
pub mod rpc;
pub mod trace_context;
