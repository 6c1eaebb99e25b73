//! A tower layer around a gRPC server. Every call gets a span (`rpc`: the service, the
//! method and the calling partner, then the code and the decision; never a token or a
//! body), continuing the trace of an incoming `traceparent`, and is counted in
//! `consent_rpc_calls_total{surface,service,method,code,reason,partner}` and
//! `consent_rpc_duration_seconds{surface,service,method}`.
//!
//! A call ends when its status is known: in the response headers when the reply is only a
//! status (every refusal), in the trailers otherwise (the end of a stream), or when the
//! client goes away first (counted as `CANCELLED`). A path no service serves is counted
//! under empty service and method labels, so a caller cannot mint series.

use crate::trace_context;
use consent_tls::principal::{ConnectionInfo, Principal};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;
use tonic::{Code, Status};
use tonic_types::StatusExt;
use tower::{Layer, Service};
use tracing::field::Empty;
use tracing::{Instrument, Span};

/// Observes the calls of one surface (`partner`, `operator`, `user`, `app`…).
#[derive(Debug, Clone, Copy)]
pub struct RpcLayer {
    surface: &'static str,
}

impl RpcLayer {
    /// A layer whose metrics carry `surface` as a label.
    pub fn new(surface: &'static str) -> Self {
        RpcLayer { surface }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = Rpc<S>;

    fn layer(&self, inner: S) -> Rpc<S> {
        Rpc {
            inner,
            surface: self.surface,
        }
    }
}

/// The service [`RpcLayer`] makes.
#[derive(Debug, Clone)]
pub struct Rpc<S> {
    inner: S,
    surface: &'static str,
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
        let call = Call::start(self.surface, &request);
        let span = call.span.clone();
        let reply = span.in_scope(|| self.inner.call(request));
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
    /// A response body that ends its call when the trailers pass, or when it is dropped
    /// before them.
    pub struct Observed<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }

    impl<B> PinnedDrop for Observed<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.finish(&Status::cancelled("the client went away"));
            }
        }
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
        if let Some(trailers) = frame.as_ref().and_then(|f| f.as_ref().ok()?.trailers_ref()) {
            if let Some(call) = this.call.take() {
                let status = Status::from_header_map(trailers)
                    .unwrap_or_else(|| Status::unknown("the trailers carry no status"));
                call.finish(&status);
            }
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

/// One call, from its request until its status.
struct Call {
    surface: &'static str,
    service: String,
    method: String,
    partner: String,
    started: Instant,
    span: Span,
}

impl Call {
    fn start<B>(surface: &'static str, request: &http::Request<B>) -> Call {
        let path = request.uri().path();
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or(("", ""));
        let partner = match request.extensions().get::<ConnectionInfo>() {
            Some(ConnectionInfo {
                principal: Some(Principal::Partner(id)),
                ..
            }) => id.0.clone(),
            _ => String::new(),
        };
        let span = tracing::info_span!(
            "rpc",
            otel.name = path,
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
        trace_context::continue_from(&span, request.headers());
        Call {
            surface,
            service: service.to_string(),
            method: method.to_string(),
            partner,
            started: Instant::now(),
            span,
        }
    }

    fn finish(self, status: &Status) {
        let code = code_name(status.code());
        let reason = status
            .get_details_error_info()
            .map(|info| info.reason)
            .unwrap_or_default();
        let decision = match status.code() {
            Code::Ok => "OK",
            _ if reason.is_empty() => code,
            _ => &reason,
        };
        self.span.record("code", code);
        self.span.record("decision", decision);
        if status.code() != Code::Ok {
            self.span.record("otel.status_code", "ERROR");
        }
        let elapsed = self.started.elapsed();
        tracing::debug!(parent: &self.span, code, decision, elapsed_ms = elapsed.as_secs_f64() * 1e3, "call finished");
        let (service, method) = match status.code() {
            Code::Unimplemented => (String::new(), String::new()),
            _ => (self.service, self.method),
        };
        metrics::counter!(
            "consent_rpc_calls_total",
            "surface" => self.surface,
            "service" => service.clone(),
            "method" => method.clone(),
            "code" => code,
            "reason" => reason,
            "partner" => self.partner,
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
                let response = RpcLayer::new("partner")
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
}
