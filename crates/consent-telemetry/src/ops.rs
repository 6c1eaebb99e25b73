//! The operations listener: plain HTTP serving `/metrics` in the Prometheus text format,
//! from the process's one recorder. Every crate counts with the `metrics` macros; they
//! reach this recorder once [`recorder`] has installed it (services do so at start-up).
//! Bind it to an address only operators reach: it needs no credentials, and its labels
//! name services, methods, codes, reasons and partners, never a user, token or message.

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::net::TcpListener;

/// Upper bounds of latency buckets, in seconds (every metric named `*_seconds`).
const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds of the grant-event lag's buckets, in seconds: up to a day, since a partner
/// offline for hours catches up when it is back.
const LAG_SECONDS: &[f64] = &[
    0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
];
/// Upper bounds of count buckets (every metric named `*_jobs`), up to the largest batch.
const JOBS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// How often histogram samples are folded into their buckets (else they wait, growing,
/// until the next scrape, or for ever without one).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

fn builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)?
        .set_buckets_for_metric(
            Matcher::Full("consent_grant_event_lag_seconds".into()),
            LAG_SECONDS,
        )?
        .set_buckets_for_metric(Matcher::Suffix("_jobs".into()), JOBS)
}

/// The process's recorder, installed as the global one on first use, with a thread that
/// keeps its histograms folded whether or not anything scrapes them. Several services in
/// one process (as in tests) share it.
pub fn recorder() -> &'static PrometheusHandle {
    RECORDER.get_or_init(|| {
        let recorder = builder().unwrap_or_default().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder was installed first; /metrics stays empty");
        }
        let upkeep = handle.clone();
        let started = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            });
        if let Err(error) = started {
            tracing::warn!(%error, "no metrics upkeep thread; histograms fold only when scraped");
        }
        handle
    })
}

/// How long open connections may keep `/metrics` up once `shutdown` resolved.
const CLOSING_GRACE: Duration = Duration::from_secs(5);

/// Serves `/metrics` on `listener` until `shutdown` resolves and its open connections
/// close, or 5 seconds after that at most (a scraper holding a connection open does not
/// keep the process alive).
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = recorder().clone();
    let pages = Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    handle.render(),
                )
            }
        }),
    );
    let (closing, closed) = tokio::sync::oneshot::channel();
    let server = axum::serve(listener, pages).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = closing.send(());
    });
    tokio::select! {
        served = server => served,
        () = async {
            if closed.await.is_ok() {
                tokio::time::sleep(CLOSING_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => Ok(()),
    }
}
