//! Telemetry of every role: the `[telemetry]` configuration, the OpenTelemetry SDK (traces and metrics over
//! OTLP/gRPC when an endpoint is set, metrics also into a Prometheus registry), the global W3C trace-context
//! propagator, and the HTTP server on `[telemetry] listen` with `GET /healthz`, `GET /readyz` and
//! `GET /metrics`, plus the routes of the role it runs ([`role_routes`]: the detector's scoring API). Logs stay
//! on stderr as `[log]` says; this module only adds an OpenTelemetry layer next to them. The service crates
//! only use the `opentelemetry` API (`global::meter("netanom")`, `global::tracer("netanom")`); everything that
//! exports lives here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{ConfigError, Log};

/// The standard variable naming the OTLP endpoint when `telemetry.otlp_endpoint` is not set.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// `[telemetry]`: where metrics, health and traces go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Telemetry {
    /// Address of the HTTP server with `/healthz`, `/readyz` and `/metrics` (Prometheus text), and for
    /// `netanom detector` and `netanom run` the scoring API `POST /api/v1/analyze`, e.g. `"0.0.0.0:9100"`.
    /// Default: none (no server).
    pub listen: Option<SocketAddr>,
    /// OTLP/gRPC endpoint for traces and metrics, e.g. `"http://otel-collector:4317"`. Default: the
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` environment variable when set, else none (nothing is exported over OTLP).
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported telemetry. Default: `OTEL_SERVICE_NAME` when set, else `netanom-<role>`
    /// (`netanom-producer`, `netanom-detector`, `netanom-alert-router`, `netanom-run`).
    pub service_name: Option<String>,
    /// How often metrics are exported over OTLP. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub metrics_interval: Duration,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self { listen: None, otlp_endpoint: None, service_name: None, metrics_interval: Duration::from_secs(10) }
    }
}

impl Telemetry {
    /// Every problem of this section, each naming its key.
    pub fn problems(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if self.metrics_interval < Duration::from_millis(100) {
            errors.push(ConfigError::Invalid(format!(
                "telemetry.metrics_interval must be >= 100ms, got {}",
                humantime_serde::re::humantime::format_duration(self.metrics_interval)
            )));
        }
        if let Some(e) = &self.otlp_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            errors.push(ConfigError::Invalid(format!(
                "telemetry.otlp_endpoint must be an http(s) URL such as http://collector:4317, got {e:?}"
            )));
        }
        if matches!(&self.service_name, Some(n) if n.trim().is_empty()) {
            errors.push(ConfigError::Invalid("telemetry.service_name must not be empty when set".into()));
        }
        errors
    }

    /// The endpoint in force: the configured one, else `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> Option<String> {
        self.otlp_endpoint.clone().or_else(|| std::env::var(OTLP_ENDPOINT_ENV).ok().filter(|v| !v.trim().is_empty()))
    }

    /// The service name in force for `role`.
    pub fn service_name_for(&self, role: &str) -> String {
        self.service_name
            .clone()
            .or_else(|| std::env::var("OTEL_SERVICE_NAME").ok().filter(|v| !v.trim().is_empty()))
            .unwrap_or_else(|| format!("netanom-{role}"))
    }
}

/// Whether this process is ready for traffic: its own flag, or every role flag it watches (each role crate
/// sets its `metrics::READY` once its consumer is assigned or its producer is created).
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    flag: Arc<AtomicBool>,
    roles: Arc<Vec<&'static AtomicBool>>,
}

impl Readiness {
    /// A flag that is not ready until [`Readiness::set_ready`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Ready once every one of `roles` is (or [`Readiness::set_ready`] was called).
    pub fn of_roles(roles: Vec<&'static AtomicBool>) -> Self {
        Self { flag: Arc::default(), roles: Arc::new(roles) }
    }

    /// The readiness of the role run by [`role_of`]: `run` is ready once all three roles are.
    pub fn for_role(role: &str) -> Self {
        let (p, d, r) = (
            &netanom_producer::metrics::READY,
            &netanom_detector::metrics::READY,
            &netanom_alert_router::metrics::READY,
        );
        Self::of_roles(match role {
            "producer" => vec![p],
            "detector" => vec![d],
            "alert-router" => vec![r],
            _ => vec![p, d, r],
        })
    }

    /// Marks the process ready.
    pub fn set_ready(&self) {
        self.flag.store(true, Ordering::Release);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.flag.load(Ordering::Acquire)
            || (!self.roles.is_empty() && self.roles.iter().all(|r| r.load(Ordering::Acquire)))
    }
}

/// The role name a command runs (for `service.name` and readiness), or `None` for the tools (`synth`,
/// `config`, …) that get plain logging and no telemetry.
pub fn role_of(command: &crate::cli::Command) -> Option<&'static str> {
    use crate::cli::Command;
    match command {
        Command::Run(_) => Some("run"),
        Command::Producer(_) => Some("producer"),
        Command::Detector(_) => Some("detector"),
        Command::AlertRouter(_) => Some("alert-router"),
        _ => None,
    }
}

/// Installed telemetry; [`Guard::shutdown`] flushes the last spans and metrics.
pub struct Guard {
    tracer: Option<SdkTracerProvider>,
    meter: SdkMeterProvider,
    server: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    /// The address the HTTP server listens on, when it runs.
    pub local_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("otlp", &self.tracer.is_some()).field("local_addr", &self.local_addr).finish()
    }
}

impl Guard {
    /// Stops the HTTP server, then flushes and shuts the providers down so the last spans and metrics are
    /// exported. Blocks up to the exporters' timeouts; call it outside the async reactor's worker threads.
    pub fn shutdown(self) {
        if let Some((stop, _)) = &self.server {
            stop.cancel();
        }
        if let Some(t) = &self.tracer {
            if let Err(e) = t.force_flush() {
                eprintln!("warning: flushing spans failed: {e}");
            }
            if let Err(e) = t.shutdown() {
                eprintln!("warning: shutting the tracer provider down failed: {e}");
            }
        }
        if let Err(e) = self.meter.force_flush() {
            eprintln!("warning: flushing metrics failed: {e}");
        }
        if let Err(e) = self.meter.shutdown() {
            eprintln!("warning: shutting the meter provider down failed: {e}");
        }
    }
}

/// The HTTP routes `role` adds next to the probes: the scoring API (`POST /api/v1/analyze`) for the roles
/// that run a detector (`detector`, `run`), answered from the model the detector publishes to `model_feed`;
/// none otherwise.
pub fn role_routes(role: &str, cfg: &crate::config::Config, model_feed: netanom_detector::ModelFeed) -> axum::Router {
    match role {
        "detector" | "run" => netanom_detector::api::router(&cfg.detector, model_feed),
        _ => axum::Router::new(),
    }
}

/// Installs logging (as [`crate::run::init_logging`] does) plus, when an OTLP endpoint is set, a
/// `tracing-opentelemetry` layer; sets the global tracer and meter providers and the W3C propagator; starts
/// the HTTP server with the probes and `extra` routes (see [`role_routes`]) when `listen` is set. Must run
/// inside the tokio runtime (the gRPC exporter and the server spawn tasks on it).
pub async fn init(
    cfg: &Telemetry,
    log: &Log,
    role: &str,
    readiness: Readiness,
    extra: axum::Router,
) -> anyhow::Result<Guard> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(cfg.service_name_for(role)).build();
    let endpoint = cfg.endpoint();

    let registry = prometheus::Registry::new();
    let prom = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .build()
        .context("cannot create the Prometheus exporter")?;
    let mut meter = SdkMeterProvider::builder().with_resource(resource.clone()).with_reader(prom);
    let mut tracer = None;
    if let Some(endpoint) = &endpoint {
        let metrics = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .with_context(|| format!("cannot create the OTLP metric exporter for {endpoint}"))?;
        meter = meter.with_reader(PeriodicReader::builder(metrics).with_interval(cfg.metrics_interval).build());
        let spans = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .with_context(|| format!("cannot create the OTLP span exporter for {endpoint}"))?;
        let provider = SdkTracerProvider::builder().with_resource(resource).with_batch_exporter(spans).build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        tracer = Some(provider);
    }
    let meter = meter.build();
    opentelemetry::global::set_meter_provider(meter.clone());

    init_subscriber(log, tracer.as_ref());

    let (server, local_addr) = match cfg.listen {
        None => (None, None),
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on telemetry.listen = {addr}"))?;
            let local = listener.local_addr().ok();
            let stop = CancellationToken::new();
            let app = routes(registry, readiness).merge(extra);
            let handle = tokio::spawn(serve(listener, app, stop.clone()));
            tracing::info!(listen = ?local, "telemetry server started");
            (Some((stop, handle)), local)
        }
    };
    if let Some(e) = &endpoint {
        tracing::info!(endpoint = %e, "exporting traces and metrics over OTLP");
    }
    Ok(Guard { tracer, meter, server, local_addr })
}

fn init_subscriber(log: &Log, tracer: Option<&SdkTracerProvider>) {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let otel = tracer.map(|t| tracing_opentelemetry::layer().with_tracer(t.tracer("netanom")));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _ = if log.format == "json" { registry.with(fmt.json()).try_init() } else { registry.with(fmt).try_init() };
}

/// The HTTP routes: `/healthz` (200 while the process runs), `/readyz` (200 once ready, else 503) and
/// `/metrics` (the Prometheus registry in text format).
pub fn routes(registry: prometheus::Registry, readiness: Readiness) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state((registry, readiness))
}

type HttpState = (prometheus::Registry, Readiness);

async fn readyz(State((_, readiness)): State<HttpState>) -> impl IntoResponse {
    if readiness.is_ready() { (StatusCode::OK, "ready\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready\n") }
}

async fn metrics(State((registry, _)): State<HttpState>) -> impl IntoResponse {
    match prometheus::TextEncoder::new().encode_to_string(&registry.gather()) {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode metrics: {e}\n")).into_response(),
    }
}

/// Serves `app` (the probes of [`routes`], plus any role routes) on `listener` until `stop`.
pub async fn serve(listener: tokio::net::TcpListener, app: axum::Router, stop: CancellationToken) {
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await {
        tracing::warn!(error = %e, "telemetry server failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_section_parses_with_defaults_and_rejects_unknown_keys() {
        let t: Telemetry = toml::from_str("listen = \"0.0.0.0:9100\"\nmetrics_interval = \"2s\"").unwrap();
        assert_eq!(t.listen, Some("0.0.0.0:9100".parse().unwrap()));
        assert_eq!(t.metrics_interval, Duration::from_secs(2));
        assert_eq!(t.otlp_endpoint, None);
        assert!(t.problems().is_empty());
        let err = toml::from_str::<Telemetry>("listen_addr = \"x\"").unwrap_err().to_string();
        assert!(err.contains("listen_addr"), "{err}");
    }

    #[test]
    fn telemetry_problems_name_every_key() {
        let t = Telemetry {
            otlp_endpoint: Some("collector:4317".into()),
            service_name: Some(" ".into()),
            metrics_interval: Duration::from_millis(10),
            ..Telemetry::default()
        };
        let p: Vec<String> = t.problems().iter().map(ToString::to_string).collect();
        assert_eq!(p.len(), 3, "{p:?}");
        for key in ["telemetry.metrics_interval", "telemetry.otlp_endpoint", "telemetry.service_name"] {
            assert!(p.iter().any(|e| e.contains(key)), "{key} missing from {p:?}");
        }
        assert_eq!(
            Telemetry { service_name: Some("x".into()), ..Telemetry::default() }.service_name_for("detector"),
            "x"
        );
    }
}
