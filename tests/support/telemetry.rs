//! What a platform team watches the services with, started by tests: Debian's Prometheus
//! scraping `/metrics` endpoints and evaluating the shipped alert rules, queried over its
//! HTTP API; and an OTLP receiver that keeps every span exported to it.

use crate::processes::{Process, free_port};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// The alert rules `deploy/` ships.
pub fn alert_rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/alerts.yml")
}

/// A client of plain-HTTP endpoints (`/metrics`, Prometheus's API).
fn http_client() -> reqwest::Client {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// The text of `http://<address>/metrics`.
pub async fn scrape(address: SocketAddr) -> String {
    let reply = http_client()
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("scraping {address}: {e}"));
    assert!(
        reply.status().is_success(),
        "/metrics on {address}: {}",
        reply.status()
    );
    reply.text().await.expect("metrics text")
}

/// A Prometheus server scraping some targets every second.
#[derive(Debug)]
pub struct Prometheus {
    /// Its HTTP API.
    pub address: SocketAddr,
    http: reqwest::Client,
    _process: Process,
}

/// One series of a query's answer: its labels and value.
pub type Sample = (BTreeMap<String, String>, f64);

impl Prometheus {
    /// Starts `prometheus` (Debian's package; `.ci/run` installs it) in `dir`, scraping
    /// each `(job, address)` of `targets` and evaluating the shipped alert rules.
    pub async fn start(dir: &Path, targets: &[(&str, SocketAddr)]) -> Self {
        let mut config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n",
            alert_rules().display()
        );
        for (job, address) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{address}']\n"
            ));
        }
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).expect("prometheus config");
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let process = Process::spawn_program(
            Path::new("prometheus"),
            &[
                format!("--config.file={}", file.display()),
                format!(
                    "--storage.tsdb.path={}",
                    dir.join("prometheus-data").display()
                ),
                format!("--web.listen-address={address}"),
            ],
            dir.join("prometheus.log"),
            "",
        );
        let prometheus = Prometheus {
            address,
            http: http_client(),
            _process: process,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while prometheus.get("/-/ready").await.is_none() {
            assert!(
                Instant::now() < deadline,
                "prometheus did not become ready; see {}",
                dir.join("prometheus.log").display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        prometheus
    }

    async fn get(&self, path_and_query: &str) -> Option<String> {
        let url = format!("http://{}{path_and_query}", self.address);
        let reply = self.http.get(url).send().await.ok()?;
        if !reply.status().is_success() {
            return None;
        }
        reply.text().await.ok()
    }

    /// The series an instant PromQL query answers with.
    pub async fn query(&self, promql: &str) -> Vec<Sample> {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", promql)
            .finish();
        let text = self
            .get(&format!("/api/v1/query?{query}"))
            .await
            .unwrap_or_else(|| panic!("prometheus refused the query {promql}"));
        let answer: serde_json::Value = serde_json::from_str(&text).expect("json");
        let series = answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        series
            .iter()
            .map(|one| {
                let labels = one["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let value = one["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                (labels, value)
            })
            .collect()
    }

    /// The value of a query that answers with one series, once `accept` holds for it
    /// (within a minute); panics with the last answer otherwise.
    pub async fn value_when(&self, promql: &str, accept: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = self.query(promql).await;
            if let [(_, value)] = answer.as_slice()
                && accept(*value)
            {
                return *value;
            }
            assert!(
                Instant::now() < deadline,
                "{promql} never answered as expected; last answer: {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The rule groups Prometheus loaded, as its API reports them.
    pub async fn rules(&self) -> serde_json::Value {
        let text = self.get("/api/v1/rules").await.expect("rules");
        serde_json::from_str(&text).expect("json")
    }
}

/// A span as an OTLP receiver got it.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.name` of the exporting process.
    pub service: String,
    /// Its trace id, in hex.
    pub trace_id: String,
    /// Its id, in hex.
    pub span_id: String,
    /// Its parent's id, in hex (empty for a root span).
    pub parent_span_id: String,
    /// Its string attributes.
    pub attributes: BTreeMap<String, String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn strings(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(text) => Some((kv.key.clone(), text.clone())),
            _ => None,
        })
        .collect()
}

#[derive(Debug, Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans.resource.map(|r| strings(&r.attributes));
            let service = resource
                .and_then(|mut r| r.remove("service.name"))
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push(ReceivedSpan {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: strings(&span.attributes),
                });
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP (gRPC) receiver on a loopback port, keeping what it is sent.
#[derive(Debug)]
pub struct OtlpReceiver {
    /// The endpoint to export to (`http://127.0.0.1:<port>`).
    pub endpoint: String,
    collector: Collector,
    server: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    /// Starts it.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let collector = Collector::default();
        let service = TraceServiceServer::new(collector.clone());
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .expect("otlp receiver");
        });
        OtlpReceiver {
            endpoint,
            collector,
            server,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.collector
            .spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}
