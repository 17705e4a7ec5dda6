//! Telemetry and logging of every command: the OpenTelemetry SDK (traces and metrics over
//! OTLP/gRPC when an endpoint is set, metrics also into a Prometheus registry), the global W3C trace-context
//! propagator, and the HTTP server on `[telemetry] listen` with `GET /healthz`, `GET /readyz` and
//! `GET /metrics`, plus the routes of the role it runs ([`role_routes`]: the detector's scoring API). Logging is
//! set up here and only here: on stderr as `[log]` says ([`init_logging`] for the tools, [`init`] for the roles,
//! which adds an OpenTelemetry layer next to it). The `[telemetry]` section itself is
//! [`crate::config::Telemetry`]; this module knows nothing of the command line. The service crates
//! only use the `opentelemetry` API (`global::meter("netanom")`, `global::tracer("netanom")`); everything that
//! exports lives here, with the sampling policy (`[telemetry] trace_sample_ratio`, parent-based) and the size of
//! the span queue (`span_queue`), and the process metrics of [`crate::process_metrics`].
//!
//! The HTTP server is on the network, so it bounds what a client can hold: a connection must send a request's
//! headers within [`HEADER_READ_TIMEOUT`] (a slowloris client is disconnected, not kept), at most
//! [`MAX_CONNECTIONS`] connections are served at once (more wait in the listen backlog), one client address
//! holds at most [`MAX_CONNECTIONS_PER_CLIENT`] of them (its further connections are closed at once, so one
//! client cannot take every slot), and the scoring API adds its own body timeout, token and queue
//! (`[detector.api]`). With `[telemetry] probes_listen` set, the probes and metrics get a listener of their own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use netanom_handles::ReadyFlag;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{Log, Telemetry};

/// Most spans in one OTLP export request; an export starts as soon as that many wait.
const EXPORT_BATCH: usize = 2048;

/// What the probes of this process answer. `/readyz`: its own flag, or every role it watches ready
/// ([`ReadyFlag::status`]: the role started and each of its Kafka clients reaching a broker), plus a model in
/// force when the scoring API needs one. `/healthz`: no role's main loop stalled for longer than the limit.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    flag: Arc<AtomicBool>,
    roles: Arc<Vec<(&'static str, ReadyFlag)>>,
    stall_after: Option<Duration>,
    model: Option<netanom_detector::ModelFeed>,
}

impl Readiness {
    /// A flag that is not ready until [`Readiness::set_ready`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Ready once every one of `roles` (named) is (or [`Readiness::set_ready`] was called).
    pub fn of_roles(roles: Vec<(&'static str, ReadyFlag)>) -> Self {
        Self { roles: Arc::new(roles), ..Self::default() }
    }

    /// `/healthz` fails once a role's main loop has not gone round for `limit`.
    pub fn with_stall_limit(mut self, limit: Duration) -> Self {
        self.stall_after = Some(limit);
        self
    }

    /// `/readyz` also needs a model published to `feed` (a scoring API configured to load one).
    pub fn needing_model(mut self, feed: netanom_detector::ModelFeed) -> Self {
        self.model = Some(feed);
        self
    }

    /// Marks the process ready.
    pub fn set_ready(&self) {
        self.flag.store(true, Ordering::Release);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready().is_ok()
    }

    /// `Ok` when ready for traffic, else every reason why not.
    pub fn ready(&self) -> Result<(), String> {
        if self.flag.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.roles.is_empty() {
            return Err("not ready".into());
        }
        let mut why: Vec<String> =
            self.roles.iter().filter_map(|(name, r)| r.status().err().map(|e| format!("{name}: {e}"))).collect();
        if let Some(feed) = &self.model
            && feed.current().is_none()
        {
            why.push("scoring API: no model in force yet (detector.forest.model_path is loading)".into());
        }
        if why.is_empty() { Ok(()) } else { Err(why.join("; ")) }
    }

    /// `Ok` while no role's main loop has stalled past the limit, else which and for how long.
    pub fn live(&self) -> Result<(), String> {
        let Some(limit) = self.stall_after else { return Ok(()) };
        let stalled: Vec<String> = self
            .roles
            .iter()
            .filter_map(|(name, r)| r.since_beat().filter(|s| *s > limit).map(|s| (name, s)))
            .map(|(name, s)| {
                format!("{name}: main loop stalled for {:.1} s (limit {} s)", s.as_secs_f64(), limit.as_secs())
            })
            .collect();
        if stalled.is_empty() { Ok(()) } else { Err(stalled.join("; ")) }
    }
}

/// Installed telemetry; [`Guard::shutdown`] flushes the last spans and metrics.
pub struct Guard {
    tracer: Option<SdkTracerProvider>,
    meter: SdkMeterProvider,
    servers: Vec<(CancellationToken, tokio::task::JoinHandle<()>)>,
    /// The address the HTTP server listens on, when it runs.
    pub local_addr: Option<SocketAddr>,
    /// The address of the separate probes listener, when `probes_listen` is set.
    pub probes_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("otlp", &self.tracer.is_some())
            .field("local_addr", &self.local_addr)
            .field("probes_addr", &self.probes_addr)
            .finish()
    }
}

impl Guard {
    /// Stops the HTTP server, then flushes and shuts the providers down so the last spans and metrics are
    /// exported. Blocks up to the exporters' timeouts; call it outside the async reactor's worker threads.
    pub fn shutdown(self) {
        for (stop, _) in &self.servers {
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
pub fn role_routes(
    role: &str,
    detector: &netanom_detector::DetectorConfig,
    model_feed: netanom_detector::ModelFeed,
) -> axum::Router {
    match role {
        "detector" | "run" => netanom_detector::api::router(detector, model_feed),
        _ => axum::Router::new(),
    }
}

/// Installs logging (as [`init_logging`] does) plus, when an OTLP endpoint is set, a
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
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(cfg.span_queue)
            .with_max_export_batch_size(cfg.span_queue.min(EXPORT_BATCH))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(cfg.trace_sample_ratio))))
            .with_span_processor(BatchSpanProcessor::builder(spans).with_batch_config(batch).build())
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        tracer = Some(provider);
    }
    let meter = meter.build();
    opentelemetry::global::set_meter_provider(meter.clone());
    crate::process_metrics::register(&opentelemetry::metrics::MeterProvider::meter(&meter, "netanom"));

    init_subscriber(log, tracer.as_ref());

    let probes = routes(registry, readiness);
    // With a probes listener, `listen` serves the role's routes only; otherwise everything.
    let (main_app, probes_app) = match cfg.probes_listen {
        Some(_) => (extra, Some(probes)),
        None => (probes.merge(extra), None),
    };
    let mut servers = Vec::new();
    let local_addr = match cfg.listen {
        Some(addr) => Some(start_server(addr, "telemetry.listen", main_app, &mut servers).await?),
        None => None,
    };
    let probes_addr = match (cfg.probes_listen, probes_app) {
        (Some(addr), Some(app)) => Some(start_server(addr, "telemetry.probes_listen", app, &mut servers).await?),
        _ => None,
    };
    if let Some(e) = &endpoint {
        tracing::info!(endpoint = %e, "exporting traces and metrics over OTLP");
    }
    Ok(Guard { tracer, meter, servers, local_addr, probes_addr })
}

/// Binds `addr` (the value of `key`) and serves `app` there until the guard stops it; returns the bound address.
async fn start_server(
    addr: SocketAddr,
    key: &str,
    app: axum::Router,
    servers: &mut Vec<(CancellationToken, tokio::task::JoinHandle<()>)>,
) -> anyhow::Result<SocketAddr> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {key} = {addr}"))?;
    let local = listener.local_addr().with_context(|| format!("{key} = {addr}: no local address"))?;
    let stop = CancellationToken::new();
    servers.push((stop.clone(), tokio::spawn(serve(listener, app, stop))));
    tracing::info!(listen = %local, key, "telemetry server started");
    Ok(local)
}

/// Sets up `tracing` on stderr (stdout carries alerts, summaries and the tools' output), for the commands that
/// run no role.
pub fn init_logging(log: &Log) {
    init_subscriber(log, None);
}

fn init_subscriber(log: &Log, tracer: Option<&SdkTracerProvider>) {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let otel = tracer.map(|t| tracing_opentelemetry::layer().with_tracer(t.tracer("netanom")));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(colour_on_stderr());
    let _ = if log.format == "json" { registry.with(fmt.json()).try_init() } else { registry.with(fmt).try_init() };
}

/// Whether text logs carry ANSI colour codes: only when stderr is a terminal and `NO_COLOR` is unset or empty
/// (<https://no-color.org>), so files, pipes and log collectors get plain text.
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The HTTP routes: `/healthz` (200 `ok` while no main loop is stalled, else 503 naming it), `/readyz` (200
/// `ready` when ready, else 503 `not ready: <why>`) and `/metrics` (the Prometheus registry in text format).
pub fn routes(registry: prometheus::Registry, readiness: Readiness) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state((registry, readiness))
}

type HttpState = (prometheus::Registry, Readiness);

async fn readyz(State((_, readiness)): State<HttpState>) -> impl IntoResponse {
    match readiness.ready() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

async fn healthz(State((_, readiness)): State<HttpState>) -> impl IntoResponse {
    match readiness.live() {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("stalled: {why}\n")),
    }
}

async fn metrics(State((registry, _)): State<HttpState>) -> impl IntoResponse {
    match prometheus::TextEncoder::new().encode_to_string(&registry.gather()) {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode metrics: {e}\n")).into_response(),
    }
}

/// Longest a client may take to send the headers of a request; then its connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections served at once; more wait in the listen backlog until one closes.
pub const MAX_CONNECTIONS: usize = 512;
/// Most connections one client address holds at once; a further one is closed as soon as it is accepted.
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 32;
/// How long the server waits for open connections to finish their requests once stopped.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Open connections per client address; an address leaves the map with its last connection, so the map holds
/// at most [`MAX_CONNECTIONS`] entries.
#[derive(Debug, Default)]
struct PerClient(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

impl PerClient {
    /// Counts a connection of `ip` unless it already holds [`MAX_CONNECTIONS_PER_CLIENT`].
    fn admit(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<ClientSlot> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_default();
        if *n >= MAX_CONNECTIONS_PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(ClientSlot { clients: Arc::clone(self), ip })
    }
}

/// One counted connection; uncounted when dropped.
struct ClientSlot {
    clients: Arc<PerClient>,
    ip: std::net::IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.clients.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` (the probes of [`routes`], plus any role routes) on `listener` until `stop`: HTTP/1.1 with
/// [`HEADER_READ_TIMEOUT`], at most [`MAX_CONNECTIONS`] at once and [`MAX_CONNECTIONS_PER_CLIENT`] per client
/// address; once stopped, open requests get [`DRAIN_TIMEOUT`] to finish.
pub async fn serve(listener: tokio::net::TcpListener, app: axum::Router, stop: CancellationToken) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let clients = Arc::new(PerClient::default());
    let mut refused = 0u64;
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let builder = builder.http1_only();
    loop {
        let slot = tokio::select! {
            () = stop.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, client) = match stream {
            Ok((stream, peer)) => match clients.admit(peer.ip()) {
                Some(client) => (stream, client),
                None => {
                    // Closed at once: the slot goes back to the others.
                    refused += 1;
                    if refused.is_power_of_two() {
                        tracing::warn!(
                            client = %peer.ip(),
                            refused,
                            "telemetry server: a client holds {MAX_CONNECTIONS_PER_CLIENT} connections, further ones are closed"
                        );
                    }
                    continue;
                }
            },
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "telemetry server: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(app.clone()))
            .into_owned();
        let watched = graceful.watcher().watch(connection);
        tokio::spawn(async move {
            // A client that goes away or sends garbage ends its own connection only.
            let _ = watched.await;
            drop(client);
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("telemetry server: connections still open {DRAIN_TIMEOUT:?} after the stop were dropped");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    async fn get_healthz(addr: SocketAddr) -> String {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: netanom\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut answer)).await.unwrap().unwrap();
        answer
    }

    #[tokio::test]
    async fn clients_that_never_finish_their_headers_are_disconnected_while_others_are_served() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/healthz", get(|| async { "ok" }));
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, app, stop.clone()));

        let started = Instant::now();
        let mut slow = Vec::new();
        for i in 0..200u8 {
            // Spread over 25 client addresses, within each one's connection limit.
            let mut s = connect_from(std::net::IpAddr::from([127, 0, 1, 1 + i / 8]), addr).await;
            s.write_all(b"POST /api/v1/analyze HTTP/1.1\r\nHost: netanom\r\n").await.unwrap();
            slow.push(s);
        }
        let answer = get_healthz(addr).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

        for (i, s) in slow.iter_mut().enumerate() {
            let mut rest = Vec::new();
            let closed = tokio::time::timeout(HEADER_READ_TIMEOUT * 2, s.read_to_end(&mut rest)).await;
            assert!(closed.is_ok(), "slow connection {i} still open {:?} after it started", started.elapsed());
        }
        let took = started.elapsed();
        assert!(took >= HEADER_READ_TIMEOUT - Duration::from_secs(1), "closed after {took:?}, before the timeout");
        assert!(get_healthz(addr).await.starts_with("HTTP/1.1 200"));

        stop.cancel();
        tokio::time::timeout(DRAIN_TIMEOUT * 2, server).await.expect("the server stops").unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed");
    }

    /// A connection from `from` (a loopback address of its own, so it is another client).
    async fn connect_from(from: std::net::IpAddr, to: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        socket.connect(to).await.unwrap()
    }

    #[tokio::test]
    async fn one_client_cannot_take_every_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/healthz", get(|| async { "ok" }));
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, app, stop.clone()));

        let greedy: std::net::IpAddr = "127.0.0.7".parse().unwrap();
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS_PER_CLIENT {
            let mut s = connect_from(greedy, addr).await;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: netanom\r\n").await.unwrap();
            held.push(s);
        }
        // The next one from the same client is closed at once, unanswered.
        let mut extra = connect_from(greedy, addr).await;
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(2), extra.read_to_end(&mut rest)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "the extra connection was kept: {closed:?} {rest:?}");
        // Another client is served meanwhile.
        let mut other = connect_from("127.0.0.8".parse().unwrap(), addr).await;
        other.write_all(b"GET /healthz HTTP/1.1\r\nHost: netanom\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), other.read_to_string(&mut answer)).await.unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // Once the greedy client lets go, it is served again.
        drop(held);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut again = connect_from(greedy, addr).await;
        again.write_all(b"GET /healthz HTTP/1.1\r\nHost: netanom\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), again.read_to_string(&mut answer)).await.unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

        stop.cancel();
        tokio::time::timeout(DRAIN_TIMEOUT * 2, server).await.expect("the server stops").unwrap();
    }
}
