//! Where a service's spans and log lines go. Log lines are text or JSON on standard
//! output, filtered by `RUST_LOG` (default `info`); a JSON line carries the fields of the
//! spans it was written in, so a line written during a call names that call's `trace_id`.
//! Every span at `info` or above belongs to an OpenTelemetry trace, whatever `RUST_LOG`
//! says; with an OTLP endpoint (gRPC, e.g. `http://collector:4317`) the spans are exported
//! there in batches.

use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterExt, LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event, with the fields of its spans.
    Json,
}

/// A failure to set up logging or tracing.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The OTLP exporter could not be built.
    #[error("OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// A subscriber was already installed.
    #[error("logging: {0}")]
    Init(#[from] tracing_subscriber::util::TryInitError),
}

/// Keeps spans flowing until [`Telemetry::flush`].
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports the spans still waiting, then stops exporting.
    pub async fn flush(self) {
        let provider = self.provider;
        let stopped = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(error)) = stopped {
            tracing::warn!(%error, "spans could not all be exported");
        }
    }
}

/// Installs the process's subscriber: log lines in `format`, spans of `service` exported
/// to `otlp_endpoint` when given and not empty (compose passes an unset variable as an
/// empty one). Must run inside the async runtime.
pub fn init(
    service: &'static str,
    format: LogFormat,
    otlp_endpoint: Option<&str>,
) -> Result<Telemetry, LoggingError> {
    let otlp_endpoint = otlp_endpoint.filter(|endpoint| !endpoint.is_empty());
    let resource = Resource::builder().with_service_name(service).build();
    let mut provider = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = otlp_endpoint {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()?;
        let batches =
            BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
        provider = provider.with_span_processor(batches);
    }
    // Every call is traced, whatever the sampling flag of a caller's `traceparent`.
    let provider = provider.with_sampler(Sampler::AlwaysOn).build();
    let spans = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));
    let lines = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    };
    // `RUST_LOG` chooses the log lines only: spans at `info` and above (every call's)
    // are traced whatever it says, and the lines always see the call's span, so that a
    // line written during a call names its trace.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let call_spans = filter_fn(|meta| meta.is_span() && meta.name() == "rpc");
    tracing_subscriber::registry()
        .with(spans.with_filter(LevelFilter::INFO))
        .with(lines.with_filter(filter.or(call_spans)))
        .try_init()?;
    Ok(Telemetry { provider })
}
