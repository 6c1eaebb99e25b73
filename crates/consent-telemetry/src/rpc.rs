//! A tower layer around a gRPC server. Every call gets a span (`rpc`: the service, the
//! method and the calling partner, then the code and the decision; never a token or a
//! body), continuing the trace of an incoming `traceparent`, and is counted in
//! `consent_rpc_calls_total{surface,service,method,code,reason,partner}` and
//! `consent_rpc_duration_seconds{surface,service,method}`.
//!
//! A call ends when its status is known: in the response headers when the reply is only a
//! status (every refusal), in the trailers otherwise (the end of a stream). One that ends
//! before (the request timed out, or the client went away) counts as `CANCELLED`, as its
//! client sees it. A path no service serves (see [`Methods`]) is counted under empty
//! service and method labels, and its span is not named after it, so a caller cannot mint
//! series. A call continues the trace of its `traceparent` only when a certificate
//! identifies its caller.

use crate::trace_context;
use consent_tls::principal::{ConnectionInfo, Principal};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use prost::Message;
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;
use tonic::{Code, Status};
use tonic_types::StatusExt;
use tower::{Layer, Service};
use tracing::field::Empty;
use tracing::{Instrument, Span};

/// The methods a server serves, by path (`package.Service/Method`): only these are named
/// in labels and spans.
#[derive(Debug, Clone, Default)]
pub struct Methods(Arc<HashSet<String>>);

impl Methods {
    /// The methods of `services` (encoded descriptor sets), with those of the health and
    /// reflection services every server here also serves.
    pub fn served(services: &[&[u8]]) -> Result<Self, prost::DecodeError> {
        let mut paths = HashSet::new();
        let standard = [
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        for set in services.iter().chain(&standard) {
            for file in prost_types::FileDescriptorSet::decode(*set)?.file {
                let package = file.package().to_string();
                for service in &file.service {
                    for method in &service.method {
                        paths.insert(format!("{package}.{}/{}", service.name(), method.name()));
                    }
                }
            }
        }
        Ok(Methods(Arc::new(paths)))
    }

    /// The service and method `path` names, if it is one of these.
    fn named_by<'p>(&self, path: &'p str) -> Option<(&'p str, &'p str)> {
        let path = path.trim_start_matches('/');
        self.0
            .contains(path)
            .then(|| path.split_once('/'))
            .flatten()
    }
}

/// Observes the calls of one surface (`partner`, `operator`, `user`, `app`…).
#[derive(Debug, Clone)]
pub struct RpcLayer {
    surface: &'static str,
    methods: Methods,
}

impl RpcLayer {
    /// A layer whose metrics carry `surface` as a label, naming only `methods`.
    pub fn new(surface: &'static str, methods: Methods) -> Self {
        RpcLayer { surface, methods }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = Rpc<S>;

    fn layer(&self, inner: S) -> Rpc<S> {
        Rpc {
            inner,
            surface: self.surface,
            methods: self.methods.clone(),
        }
    }
}

/// The service [`RpcLayer`] makes.
#[derive(Debug, Clone)]
pub struct Rpc<S> {
    inner: S,
    surface: &'static str,
    methods: Methods,
}

impl<S, B, R> Service<http::Request<B>> for Rpc<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<Observed<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let mut call = Call::start(self.surface, &self.methods, &request);
        let span = call.span.clone();
        let reply = span.in_scope(|| self.inner.call(request));
        // Dropped before its reply (the request timed out, or the client reset the call),
        // the future drops `call`, which counts it `CANCELLED`.
        Box::pin(async move {
            match reply.instrument(span).await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let call = match Status::from_header_map(&parts.headers) {
                        Some(status) => {
                            call.finish(&status);
                            None
                        }
                        None => Some(call),
                    };
                    let body = Observed { inner: body, call };
                    Ok(http::Response::from_parts(parts, body))
                }
                Err(error) => {
                    call.finish(&Status::unknown("the service failed"));
                    Err(error)
                }
            }
        })
    }
}

pin_project! {
    /// A response body that ends its call when the trailers pass; dropped before them, it
    /// drops the call, which counts it `CANCELLED`.
    pub struct Observed<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B: Body> Body for Observed<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(trailers) = frame.as_ref().and_then(|f| f.as_ref().ok()?.trailers_ref())
            && let Some(mut call) = this.call.take()
        {
            let status = Status::from_header_map(trailers)
                .unwrap_or_else(|| Status::unknown("the trailers carry no status"));
            call.finish(&status);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One call, from its request until its status; counted once, when it finishes or, if it
/// never does, when it is dropped.
struct Call {
    surface: &'static str,
    service: String,
    method: String,
    partner: String,
    started: Instant,
    span: Span,
    finished: bool,
}

impl Call {
    fn start<B>(surface: &'static str, methods: &Methods, request: &http::Request<B>) -> Call {
        // Any caller writes the path: a method no service serves is left unnamed, however
        // the call ends (an edge may refuse it before routing would).
        let (service, method) = methods.named_by(request.uri().path()).unwrap_or(("", ""));
        let principal = request
            .extensions()
            .get::<ConnectionInfo>()
            .and_then(|info| info.principal.as_ref());
        let partner = match principal {
            Some(Principal::Partner(id)) => id.0.clone(),
            _ => String::new(),
        };
        let span = tracing::info_span!(
            "rpc",
            otel.name = format!("{service}/{method}"),
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            surface,
            partner,
            code = Empty,
            decision = Empty,
            trace_id = Empty,
        );
        // Only a caller a certificate identifies may make the call part of its trace.
        let headers = principal.map(|_| request.headers());
        trace_context::continue_from(&span, headers);
        Call {
            surface,
            service: service.to_string(),
            method: method.to_string(),
            partner,
            started: Instant::now(),
            span,
            finished: false,
        }
    }

    fn finish(&mut self, status: &Status) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let code = code_name(status.code());
        let reason = status
            .get_details_error_info()
            .map(|info| info.reason)
            .unwrap_or_default();
        let decision = decided(status.code(), &reason);
        let (service, method) = (
            std::mem::take(&mut self.service),
            std::mem::take(&mut self.method),
        );
        let span = &self.span;
        span.record("code", code);
        span.record("decision", decision);
        if status.code() != Code::Ok {
            span.record("otel.status_code", "ERROR");
        }
        let elapsed = self.started.elapsed();
        tracing::debug!(parent: span, code, decision, elapsed_ms = elapsed.as_secs_f64() * 1e3, "call finished");
        metrics::counter!(
            "consent_rpc_calls_total",
            "surface" => self.surface,
            "service" => service.clone(),
            "method" => method.clone(),
            "code" => code,
            "reason" => reason,
            "partner" => std::mem::take(&mut self.partner),
        )
        .increment(1);
        metrics::histogram!(
            "consent_rpc_duration_seconds",
            "surface" => self.surface,
            "service" => service,
            "method" => method,
        )
        .record(elapsed);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(&Status::cancelled("the call ended before its answer"));
    }
}

/// What a call's `status` says was decided: `OK`, the reason its `ErrorInfo` gives, or, for
/// a refusal without one, its code's name.
pub fn decision(status: &Status) -> String {
    let reason = status.get_details_error_info().map(|info| info.reason);
    decided(status.code(), reason.as_deref().unwrap_or_default()).to_string()
}

/// [`decision`], from a status's `code` and the `reason` of its `ErrorInfo` (empty if it
/// has none).
fn decided(code: Code, reason: &str) -> &str {
    match code {
        Code::Ok => "OK",
        _ if reason.is_empty() => code_name(code),
        _ => reason,
    }
}

/// The canonical name of a gRPC code, as grpcurl and the gRPC documentation print it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use metrics_exporter_prometheus::PrometheusBuilder;
    use std::convert::Infallible;
    use tonic_types::{ErrorDetails, StatusExt};
    use tower::ServiceExt;

    type TestBody =
        StreamBody<tokio_stream::Iter<std::vec::IntoIter<Result<Frame<bytes::Bytes>, Infallible>>>>;

    /// Calls `path` through the layer around a service answering `reply`, reads the body as
    /// far as `frames_read` frames, and returns what the layer counted.
    fn counted(
        path: &str,
        reply: http::Response<Vec<Frame<bytes::Bytes>>>,
        frames_read: usize,
    ) -> String {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                let reply = std::sync::Mutex::new(Some(reply));
                let inner = tower::service_fn(move |_: http::Request<()>| {
                    let (parts, frames) = reply.lock().unwrap().take().unwrap().into_parts();
                    let body: TestBody = StreamBody::new(tokio_stream::iter(
                        frames.into_iter().map(Ok).collect::<Vec<_>>(),
                    ));
                    std::future::ready(Ok::<_, Infallible>(http::Response::from_parts(parts, body)))
                });
                let request = http::Request::builder().uri(path).body(()).unwrap();
                let response = RpcLayer::new("partner", known())
                    .layer(inner)
                    .oneshot(request)
                    .await
                    .unwrap();
                let mut body = response.into_body();
                for _ in 0..frames_read {
                    body.frame().await;
                }
            })
        });
        handle.render()
    }

    /// The one method these tests' service serves.
    fn known() -> Methods {
        Methods(Arc::new(HashSet::from([
            "pkg.Messaging/ListThreads".to_string()
        ])))
    }

    fn status_only(status: Status) -> http::Response<Vec<Frame<bytes::Bytes>>> {
        let (parts, _) = status.into_http::<()>().into_parts();
        http::Response::from_parts(parts, Vec::new())
    }

    fn answered(trailer_code: &str) -> http::Response<Vec<Frame<bytes::Bytes>>> {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", trailer_code.parse().unwrap());
        http::Response::new(vec![
            Frame::data(bytes::Bytes::from_static(b"message")),
            Frame::trailers(trailers),
        ])
    }

    #[test]
    fn a_refusal_is_counted_with_its_code_and_reason() {
        let refusal = Status::with_error_details(
            Code::PermissionDenied,
            "no",
            ErrorDetails::with_error_info("SCOPE_MISSING", "consent", []),
        );
        let text = counted("/pkg.Messaging/ListThreads", status_only(refusal), 0);
        assert!(
            text.contains(r#"consent_rpc_calls_total{surface="partner",service="pkg.Messaging",method="ListThreads",code="PERMISSION_DENIED",reason="SCOPE_MISSING",partner=""} 1"#),
            "{text}"
        );
    }

    #[test]
    fn an_answer_is_counted_when_its_trailers_pass() {
        let text = counted("/pkg.Messaging/ListThreads", answered("0"), 2);
        assert!(
            text.contains(r#"method="ListThreads",code="OK",reason="",partner=""} 1"#),
            "{text}"
        );
        assert!(
            text.contains("consent_rpc_duration_seconds_count"),
            "{text}"
        );
    }

    #[test]
    fn a_client_gone_before_the_trailers_is_counted_as_cancelled() {
        let text = counted("/pkg.Messaging/ListThreads", answered("0"), 1);
        assert!(text.contains(r#"code="CANCELLED""#), "{text}");
        assert!(
            !text.contains(r#"code="OK""#),
            "counted before its trailers: {text}"
        );
    }

    #[test]
    fn a_call_dropped_before_its_answer_is_counted_as_cancelled() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let never = tower::service_fn(|_: http::Request<()>| {
                std::future::pending::<Result<http::Response<TestBody>, Infallible>>()
            });
            let request = http::Request::builder()
                .uri("/pkg.Messaging/ListThreads")
                .body(())
                .unwrap();
            let waiting = RpcLayer::new("partner", known()).layer(never).call(request);
            assert!(!handle.render().contains("consent_rpc_calls_total{"));
            drop(waiting);
        });
        let text = handle.render();
        assert!(
            text.contains(r#"method="ListThreads",code="CANCELLED",reason="",partner=""} 1"#),
            "{text}"
        );
    }

    #[test]
    fn a_path_no_service_serves_mints_no_series() {
        let text = counted(
            "/made.Up/Anything",
            status_only(Status::unimplemented("no such method")),
            0,
        );
        assert!(
            text.contains(r#"service="",method="",code="UNIMPLEMENTED""#),
            "{text}"
        );
        assert!(!text.contains("made.Up"), "{text}");
    }

    #[test]
    fn a_made_up_method_of_a_served_service_refused_at_an_edge_mints_no_series() {
        let refusal = Status::resource_exhausted("headers too large");
        let text = counted("/pkg.Messaging/Made-Up-1234", status_only(refusal), 0);
        assert!(
            text.contains(r#"service="",method="",code="RESOURCE_EXHAUSTED""#),
            "{text}"
        );
        assert!(!text.contains("Made-Up"), "{text}");
    }

    #[test]
    fn the_served_methods_include_health_and_reflection() {
        let methods = Methods::served(&[]).unwrap();
        assert_eq!(
            methods.named_by("/grpc.health.v1.Health/Check"),
            Some(("grpc.health.v1.Health", "Check"))
        );
        assert!(
            methods
                .named_by("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
                .is_some()
        );
        assert_eq!(methods.named_by("/grpc.health.v1.Health/Made-Up"), None);
    }
}
