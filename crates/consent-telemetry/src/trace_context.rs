//! W3C trace context between the services: a server continues the trace named by an
//! incoming `traceparent` header, and a client writes the current span's context into its
//! outgoing requests, so that one trace holds a partner's call and the platform's work for
//! it. Without the OpenTelemetry layer of [`crate::logging`] (as in tests that run
//! services in process), spans carry no context and nothing is read or written.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct Read<'a>(&'a HeaderMap);

impl Extractor for Read<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct Write<'a>(&'a mut HeaderMap);

impl Injector for Write<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Makes `span` a child of the trace `headers` name, if given and naming one, and records
/// its trace id in the span's `trace_id` field (which JSON log lines show).
pub fn continue_from(span: &Span, headers: Option<&HeaderMap>) {
    if let Some(headers) = headers {
        let parent = TraceContextPropagator::new().extract(&Read(headers));
        if parent.span().span_context().is_valid() && span.set_parent(parent).is_err() {
            tracing::debug!("the span had started; the incoming trace context is ignored");
        }
    }
    let context = span.context();
    let ids = context.span().span_context().clone();
    if ids.is_valid() {
        span.record("trace_id", ids.trace_id().to_string());
    }
}

/// Writes the current span's trace context into `headers` as `traceparent`.
pub fn write_current(headers: &mut HeaderMap) {
    let context = Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut Write(headers));
}
