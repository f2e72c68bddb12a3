//! Telemetry: `tracing` logs (JSON or pretty, filtered by `RUST_LOG`), OpenTelemetry export over
//! OTLP/HTTP (protobuf) when an endpoint is configured (feature `otlp`; without it an endpoint is
//! ignored with a warning), and the process's one Prometheus registry.
//!
//! [`init`] installs the global subscriber once per process (a second call is an error, not a
//! panic) and returns a [`TelemetryGuard`] that flushes and shuts the exporter down when dropped:
//! keep it alive for the life of `main` and drop it inside the Tokio runtime. [`metrics_handle`]
//! installs the Prometheus recorder on first use; services serve its `render()` at `/metrics`.

use std::io::IsTerminal as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
#[cfg(feature = "otlp")]
use opentelemetry::trace::TracerProvider as _;
#[cfg(feature = "otlp")]
use opentelemetry_otlp::WithExportConfig;
#[cfg(feature = "otlp")]
use opentelemetry_sdk::Resource;
#[cfg(feature = "otlp")]
use opentelemetry_sdk::trace::SdkTracerProvider;
#[cfg(feature = "otlp")]
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Registry};

use crate::config::{LogFormat, Settings, redact_url};

/// How long dropping the guard waits for the last spans to be exported.
#[cfg(feature = "otlp")]
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Buckets for histograms named `*_duration_seconds`, so they render as Prometheus histograms.
const DURATION_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

static INITIALIZED: AtomicBool = AtomicBool::new(false);
static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

#[derive(Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// `service.name` of exported spans, e.g. `ikit-webhook`.
    pub service_name: String,
    pub log_format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `ikit=debug,info`.
    pub log_filter: String,
    /// OTLP/HTTP base URL (`http://collector:4318`); spans go to `<endpoint>/v1/traces`.
    pub otlp_endpoint: Option<String>,
}

impl std::fmt::Debug for TelemetryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryConfig")
            .field("service_name", &self.service_name)
            .field("log_format", &self.log_format)
            .field("log_filter", &self.log_filter)
            .field("otlp_endpoint", &self.otlp_endpoint.as_deref().map(redact_url))
            .finish()
    }
}

impl TelemetryConfig {
    pub fn new(service_name: impl Into<String>) -> Self {
        Self {
            service_name: service_name.into(),
            log_format: LogFormat::Json,
            log_filter: "info".to_owned(),
            otlp_endpoint: None,
        }
    }

    pub fn from_settings(service_name: impl Into<String>, settings: &Settings) -> Self {
        Self {
            service_name: service_name.into(),
            log_format: settings.log_format,
            log_filter: settings.log_filter.clone(),
            otlp_endpoint: settings.otlp_endpoint.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry is already initialised in this process")]
    AlreadyInitialized,
    #[error("invalid log filter: {0}")]
    Filter(String),
    #[error("otlp export needs a running tokio runtime")]
    NoRuntime,
    #[error("cannot build the otlp exporter: {0}")]
    Exporter(String),
}

/// Flushes pending spans and shuts the exporter down when dropped.
#[must_use = "dropping the guard shuts span export down"]
pub struct TelemetryGuard {
    #[cfg(feature = "otlp")]
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are exported over OTLP.
    pub fn exports_traces(&self) -> bool {
        #[cfg(feature = "otlp")]
        return self.provider.is_some();
        #[cfg(not(feature = "otlp"))]
        false
    }
}

#[cfg(feature = "otlp")]
impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else { return };
        // The exporter's worker runs on the Tokio runtime; shutting down blocks until it answers,
        // so do it on a thread of its own and give up after a bound rather than hang.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new().name("otel-shutdown".into()).spawn(move || {
            let _ = done_tx.send(provider.shutdown());
        });
        if spawned.is_ok() {
            match done_rx.recv_timeout(SHUTDOWN_TIMEOUT) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("warning: telemetry shutdown failed: {e}"),
                Err(_) => eprintln!("warning: telemetry shutdown timed out; spans may be lost"),
            }
        }
    }
}

/// Installs the global `tracing` subscriber: filter, log format, and OTLP export when
/// `config.otlp_endpoint` is set (then it must run inside a Tokio runtime).
pub fn init(config: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    if INITIALIZED.swap(true, Ordering::SeqCst) {
        return Err(TelemetryError::AlreadyInitialized);
    }
    let result = try_init(config);
    if result.is_err() {
        INITIALIZED.store(false, Ordering::SeqCst);
    }
    result
}

/// Parses an `EnvFilter` directive (`RUST_LOG`). Non-ASCII text is refused before
/// tracing-subscriber sees it: its directive parser slices such input inside a character and
/// panics (`x, é=info`), and target names are Rust paths, ASCII in practice.
pub fn parse_log_filter(directives: &str) -> Result<EnvFilter, String> {
    if let Some(c) = directives.chars().find(|c| !c.is_ascii()) {
        return Err(format!("{c:?} is not ASCII"));
    }
    EnvFilter::try_new(directives).map_err(|e| e.to_string())
}

fn try_init(config: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let filter = parse_log_filter(&config.log_filter).map_err(TelemetryError::Filter)?;
    #[cfg(feature = "otlp")]
    let provider = match &config.otlp_endpoint {
        Some(endpoint) => Some(otlp_provider(&config.service_name, endpoint)?),
        None => None,
    };
    #[cfg(feature = "otlp")]
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(config.service_name.clone())));
    #[cfg(not(feature = "otlp"))]
    let otel: Option<tracing_subscriber::layer::Identity> = None;
    let json = (config.log_format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
    });
    // Colour codes only for a person at a terminal: in a file or a pipe they are noise.
    let pretty = (config.log_format == LogFormat::Pretty).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
    });
    let subscriber = Registry::default().with(filter).with(otel).with(json).with(pretty);
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        #[cfg(feature = "otlp")]
        if let Some(p) = provider {
            let _ = p.shutdown();
        }
        return Err(TelemetryError::AlreadyInitialized);
    }
    #[cfg(feature = "otlp")]
    {
        if let Some(p) = &provider {
            opentelemetry::global::set_tracer_provider(p.clone());
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
        }
        Ok(TelemetryGuard { provider })
    }
    #[cfg(not(feature = "otlp"))]
    {
        if config.otlp_endpoint.is_some() {
            tracing::warn!(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but this binary is built without the otlp \
                 feature; spans are not exported"
            );
        }
        Ok(TelemetryGuard {})
    }
}

#[cfg(feature = "otlp")]
fn otlp_provider(service_name: &str, endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(TelemetryError::NoRuntime);
    }
    let base = endpoint.trim_end_matches('/');
    let url =
        if base.ends_with("/v1/traces") { base.to_owned() } else { format!("{base}/v1/traces") };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let processor =
        BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(Resource::builder().with_service_name(service_name.to_owned()).build())
        .build())
}

/// The process's Prometheus registry; installed as the `metrics` recorder on first call. Every
/// metric recorded through the `metrics` facade shows up in `render()`.
pub fn metrics_handle() -> PrometheusHandle {
    METRICS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("duration_seconds".into()),
                    DURATION_BUCKETS,
                )
                .expect("buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics stays empty");
            }
            // Histograms and summaries need periodic upkeep to stay bounded.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "otlp")]
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    #[cfg(feature = "otlp")]
    use tokio::net::TcpListener;

    #[test]
    fn debug_redacts_the_otlp_endpoint() {
        let mut config = TelemetryConfig::new("svc");
        config.otlp_endpoint = Some("https://otel:otlp-pw-value@collector:4318?token=t0k3n".into());
        let debug = format!("{config:?}");
        assert!(!debug.contains("otlp-pw-value") && !debug.contains("t0k3n"), "{debug}");
        assert!(debug.contains("collector:4318"), "{debug}");
    }

    #[test]
    fn facade_metrics_show_up_in_render() {
        let handle = metrics_handle();
        metrics::counter!("ikit_test_events_total", "kind" => "a").increment(3);
        metrics::gauge!("ikit_test_depth").set(7.0);
        metrics::histogram!("ikit_test_fetch_duration_seconds").record(0.02);
        let text = metrics_handle().render();
        assert!(text.contains("ikit_test_events_total{kind=\"a\"} 3"), "{text}");
        assert!(text.contains("ikit_test_depth 7"), "{text}");
        assert!(text.contains("ikit_test_fetch_duration_seconds_bucket{le=\"0.025\"} 1"), "{text}");
        assert_eq!(handle.render(), metrics_handle().render());
    }

    /// A one-request OTLP collector: returns the request head and body.
    #[cfg(feature = "otlp")]
    async fn collector() -> (String, tokio::sync::oneshot::Receiver<(String, Vec<u8>)>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let head_end = loop {
                let mut chunk = [0u8; 4096];
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed early");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < head_end + len {
                let mut chunk = [0u8; 4096];
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0, "body cut short");
                buf.extend_from_slice(&chunk[..n]);
            }
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
            let _ = tx.send((head, buf[head_end..].to_vec()));
        });
        (url, rx)
    }

    #[cfg(feature = "otlp")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exports_spans_over_otlp_and_refuses_a_second_init() {
        let (url, received) = collector().await;
        let mut config = TelemetryConfig::new("ikit-telemetry-test");
        config.otlp_endpoint = Some(url);
        config.log_filter = "ikit_common=info,warn".into();

        let bad = TelemetryConfig { log_filter: "=[".into(), ..config.clone() };
        assert!(matches!(init(&bad), Err(TelemetryError::Filter(_))));
        // tracing-subscriber panics on this one; it must be an error like any bad filter.
        let non_ascii = TelemetryConfig { log_filter: "x, é=info".into(), ..config.clone() };
        assert!(matches!(init(&non_ascii), Err(TelemetryError::Filter(m)) if m.contains("ASCII")));

        let guard = init(&config).unwrap();
        assert!(guard.exports_traces());
        tracing::info_span!("ikit-exported-span").in_scope(|| tracing::info!("inside"));
        drop(guard); // flushes

        let (head, body) =
            tokio::time::timeout(Duration::from_secs(30), received).await.unwrap().unwrap();
        assert!(head.starts_with("POST /v1/traces "), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("content-type: application/x-protobuf"),
            "{head}"
        );
        let find = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
        assert!(find(b"ikit-exported-span"), "span name not in the export");
        assert!(find(b"ikit-telemetry-test"), "service name not in the export");

        assert!(matches!(init(&config), Err(TelemetryError::AlreadyInitialized)));
        assert!(matches!(
            init(&TelemetryConfig::new("again")),
            Err(TelemetryError::AlreadyInitialized)
        ));
    }
}
