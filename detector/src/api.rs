//! The scoring API: `POST /api/v1/analyze` judges packets for capture clients outside Kafka. Owns the request
//! handling, the answers and the error statuses; the bodies are parsed by `crate::request` and a capture
//! client's packets are judged in their source's context by `crate::sources`. The isolation model comes from the
//! [`ModelFeed`] the detector publishes to, so a request never waits for the detector nor the detector for a
//! request; parsing and scoring run on the blocking pool, at most [`MAX_CONCURRENT`] requests at a time (the
//! detector's own chunks run on that pool too).
//!
//! A request is `application/json` of at most [`MAX_BODY_BYTES`], in one of three shapes (docs/openapi.yaml is
//! the contract):
//! - a capture client's packet, `{"src_ip", "dst_ip", "packet_size", "protocol", …}`, with ports, TCP flags, TTL
//!   and its capture time when the client has them: judged in the context of its source's recent packets, by
//!   the detector's rules and the isolation model in force; answered with [`PacketVerdict`];
//! - one of netanom's own packets (the fields of [`netanom_schemas::PacketFeatures`]), or
//!   `{"source": …, "packets": [packet, …]}` with 1 to [`MAX_PACKETS`] of them: one batch of one host, scored by
//!   the isolation model exactly as the detector scores a packet batch from Kafka; answered with [`Verdict`].
//!
//! With `[detector.api] token` set, a request must carry `Authorization: Bearer <token>` (compared in constant
//! time). The body must arrive within `[detector.api] request_timeout`; at most `[detector.api] queue` requests
//! wait for one of the [`MAX_CONCURRENT`] scoring slots, more are refused at once.
//!
//! Errors: 400 the body is not JSON; 401 the token is missing or wrong (with `WWW-Authenticate: Bearer`); 408
//! the body did not arrive in time; 413 the body is too large; 415 the content type is not JSON; 422 valid JSON
//! that is not a valid request, the message naming every unknown, missing and invalid field at once; 503 the
//! queue is full (with `Retry-After`) or, for netanom's packets only, no model yet (with `Retry-After`) or the
//! forest is disabled. Every error is `{"error": "<message>"}`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use netanom_schemas::PacketFeatures;
use netanom_schemas::redact::Secret;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge};
use serde::Serialize;
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use crate::api_config::ApiConfig;
use crate::config::DetectorConfig;
use crate::features::{FeatureScratch, own_features};
use crate::forest::{ModelFeed, TrainedForest, isolation_reason};
pub use crate::request::MAX_PACKETS;
use crate::request::{Body, BodyError, CapturedPacket};
use crate::sources::{Judgement, Sources};
use crate::time::human;

/// Path of the scoring endpoint.
pub const ANALYZE_PATH: &str = "/api/v1/analyze";
/// Largest accepted body (1 MiB; about 3,000 packets with every field).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Requests parsed and scored at once; more wait their turn.
pub const MAX_CONCURRENT: usize = 2;
/// `Retry-After` while no model is trained yet, in seconds.
const RETRY_AFTER_SECS: &str = "10";
/// `Retry-After` when the queue is full, in seconds.
const BUSY_RETRY_AFTER_SECS: &str = "1";

/// `Authorization: Bearer <token>`, compared in constant time.
fn admits(token: &Secret, headers: &HeaderMap) -> bool {
    let presented =
        headers.get(header::AUTHORIZATION).and_then(|v| v.as_bytes().strip_prefix(b"Bearer ")).unwrap_or_default();
    bool::from(presented.ct_eq(token.expose().as_bytes()))
}

/// The answer to a valid request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Isolation score of the packets' feature vector, 0..1 (higher is more isolated).
    pub anomaly_score: f64,
    /// The score is above the threshold and there were at least `detector.forest.min_packets` packets: the
    /// detector would raise an `isolation` anomaly for this batch.
    pub is_anomaly: bool,
    /// Version of the model that scored it (`eif-<hash>`, `-g<generation>` once retrained).
    pub model_version: String,
    /// The model's threshold.
    pub threshold: f64,
    /// Packets scored: the host's own (sent on flows it opened; replies are left out).
    pub packets: usize,
    /// One sentence: what stood out, or why it is not an anomaly.
    pub reason: String,
}

/// The answer to a capture client's packet: its source's context, judged by the detector's rules and the
/// isolation model in force.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PacketVerdict {
    /// The packet's source (`src_ip`), whose context was judged.
    pub source: String,
    /// 1 once a kind fired for the source; otherwise the isolation score of its recent packets (0..1) when a
    /// model is in force and they are enough, else 0.
    pub anomaly_score: f64,
    /// A kind fired for the source while the service remembers it (it stays anomalous until forgotten).
    pub is_anomaly: bool,
    /// The context is judged: it holds at least `detector.forest.min_packets` packets, or a kind fired. Until
    /// then `is_anomaly` is false and says nothing.
    pub judged: bool,
    /// The kinds that fired for the source, each with its latest sentence, in kind order.
    pub kinds: Vec<KindFired>,
    /// Packets of the source in its context, this one included.
    pub packets: u64,
    /// The isolation model that scored its recent packets; `null` when none did.
    pub model_version: Option<String>,
    /// That model's threshold; `null` when no model scored.
    pub threshold: Option<f64>,
    /// One sentence: what fired and why, or why it is not (yet) an anomaly.
    pub reason: String,
}

/// One kind that fired for a source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindFired {
    /// The anomaly kind (`fanout`, `rate`, `isolation`, …).
    pub kind: String,
    /// Its sentence.
    pub reason: String,
}

impl PacketVerdict {
    /// The answer for `j`; `min_packets` is the size from which a context is judged, `model_in_force` whether
    /// an isolation model was in force.
    fn of(j: Judgement, min_packets: usize, model_in_force: bool) -> Self {
        let source = j.source.to_string();
        let is_anomaly = !j.findings.is_empty();
        let isolation_score = j.isolation.as_ref().map(|i| i.score);
        let anomaly_score = if is_anomaly { 1.0 } else { isolation_score.unwrap_or(0.0) };
        let mut reason = if j.restarted {
            "its packet time jumped outside the skew rule (detector.time): its context started afresh; ".to_string()
        } else {
            String::new()
        };
        if let Some(latest) = j.findings.iter().max_by_key(|f| f.at_ns) {
            let names: Vec<&str> = j.findings.iter().map(|f| f.kind.as_str()).collect();
            reason.push_str(&format!("{} fired for {source}: {}", names.join(", "), latest.reason));
        } else if !j.judged {
            reason.push_str(&format!(
                "{} packet(s) of {source} so far: judged from {min_packets} (detector.forest.min_packets)",
                j.packets
            ));
        } else {
            reason.push_str(&format!("no rule fired for {source} over {} packets", j.packets));
            reason.push_str(&match (&j.isolation, model_in_force) {
                (Some(i), _) => format!(
                    "; isolation score {:.3} <= {:.3} over its last {} packets",
                    i.score, i.threshold, i.packets
                ),
                (None, true) => format!(
                    "; fewer than {min_packets} of its packets in the last second: not scored by the isolation model"
                ),
                (None, false) => "; no isolation model in force: the rules alone judge".to_string(),
            });
        }
        Self {
            source,
            anomaly_score,
            is_anomaly,
            judged: j.judged,
            kinds: j
                .findings
                .into_iter()
                .map(|f| KindFired { kind: f.kind.as_str().to_string(), reason: f.reason })
                .collect(),
            packets: j.packets,
            model_version: j.isolation.as_ref().map(|i| i.model_version.clone()),
            threshold: j.isolation.as_ref().map(|i| i.threshold),
            reason,
        }
    }
}

/// A valid request's answer.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Answer {
    Batch(Verdict),
    Packet(PacketVerdict),
}

/// A refused request: status and message, answered as `{"error": message}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after: None }
    }

    fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(serde_json::json!({ "error": self.message }))).into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// What the handler needs: the feed, the parts of the configuration that judge a batch and the sources'
/// contexts.
#[derive(Clone)]
struct Api {
    feed: ModelFeed,
    enabled: bool,
    warmup_samples: usize,
    min_packets: usize,
    token: Option<Secret>,
    request_timeout: Duration,
    queue: usize,
    permits: Arc<Semaphore>,
    /// Requests waiting for a permit.
    waiting: Arc<AtomicUsize>,
    sources: Arc<Mutex<Sources>>,
    /// Made at the first capture client's packet: the router is built before the process installs its meter
    /// provider, instruments made earlier would record nothing.
    metrics: Arc<OnceLock<SourceMetrics>>,
}

/// The instruments of the sources' contexts.
#[derive(Clone)]
struct SourceMetrics {
    /// `netanom.api.sources.tracked`: sources remembered.
    tracked: Gauge<u64>,
    /// `netanom.api.sources.forgotten{reason}`: sources forgotten, `capacity` or `idle`.
    forgotten: Counter<u64>,
}

impl SourceMetrics {
    fn new() -> Self {
        let m = opentelemetry::global::meter("netanom");
        Self {
            tracked: m
                .u64_gauge("netanom.api.sources.tracked")
                .with_description("Sources of capture clients' packets remembered by the scoring API")
                .build(),
            forgotten: m
                .u64_counter("netanom.api.sources.forgotten")
                .with_description("Sources the scoring API forgot: to make room (capacity) or idle")
                .build(),
        }
    }
}

/// The scoring API's routes for the detector configured by `config` (`[detector.api]`, its rules and its
/// forest), answered from the model it publishes to `feed` (the [`crate::Handles::model_feed`] given to
/// [`crate::run`]); the root binary merges them into the `[telemetry] listen` server.
pub fn router(config: &DetectorConfig, feed: ModelFeed) -> axum::Router {
    let (api, forest) = (&config.api, &config.forest);
    app(Api {
        feed,
        enabled: forest.enabled,
        warmup_samples: forest.warmup_samples,
        min_packets: forest.min_packets.max(1),
        token: api.token.clone(),
        request_timeout: api.request_timeout,
        queue: api.queue,
        permits: Arc::new(Semaphore::new(MAX_CONCURRENT)),
        waiting: Arc::new(AtomicUsize::new(0)),
        sources: Arc::new(Mutex::new(Sources::new(config, api.max_sources, api.source_idle))),
        metrics: Arc::new(OnceLock::new()),
    })
}

fn app(api: Api) -> axum::Router {
    axum::Router::new().route(ANALYZE_PATH, post(analyze)).with_state(api)
}

async fn analyze(State(api): State<Api>, request: axum::extract::Request) -> Response {
    match judge_request(api, request).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn judge_request(api: Api, request: axum::extract::Request) -> Result<Answer, ApiError> {
    if let Some(token) = &api.token
        && !admits(token, request.headers())
    {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token: send Authorization: Bearer <detector.api.token>",
        ));
    }
    check_content_type(request.headers())?;
    // A declared length beyond the limit is refused before a byte of the body is read.
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let body =
        tokio::time::timeout(api.request_timeout, read_body(request.into_body(), declared)).await.map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {} (detector.api.request_timeout)", human(api.request_timeout)),
            )
        })??;
    let _permit = api.permit().await?;
    tokio::task::spawn_blocking(move || api.judge(&body))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("scoring failed: {e}")))?
}

fn too_large() -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than {MAX_BODY_BYTES} bytes"))
}

/// The body of a request into one buffer of its declared length (reserved, not touched, so a client that
/// declares a length and stalls costs no memory), refused as soon as it passes [`MAX_BODY_BYTES`].
async fn read_body(mut body: axum::body::Body, declared: Option<u64>) -> Result<Vec<u8>, ApiError> {
    use axum::body::HttpBody as _;
    let mut out = Vec::with_capacity(declared.map_or(0, |n| usize::try_from(n).unwrap_or(MAX_BODY_BYTES)));
    while let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
        let frame =
            frame.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("the body could not be read: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if out.len().saturating_add(data.len()) > MAX_BODY_BYTES {
                return Err(too_large());
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// Leaves the queue when dropped.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `application/json`, parameters (`; charset=utf-8`) allowed.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let found = headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("(not text)"));
    match found {
        Some(v) if v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")) => Ok(()),
        found => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            match found {
                None => "Content-Type must be application/json, got none".to_string(),
                Some(v) => format!("Content-Type must be application/json, got {v:?}"),
            },
        )),
    }
}

impl Api {
    /// A scoring slot: at once if one is free, else after waiting in the queue; 503 when the queue is full.
    async fn permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        let closed = || ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the scoring API is shutting down");
        match self.permits.clone().try_acquire_owned() {
            Ok(p) => return Ok(p),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(closed()),
            Err(tokio::sync::TryAcquireError::NoPermits) => {}
        }
        let queue = self.queue;
        if self.waiting.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < queue).then_some(n + 1)).is_err() {
            return Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!(
                    "busy: {MAX_CONCURRENT} requests are being scored and {queue} are waiting \
                     (detector.api.queue); retry later"
                ),
                retry_after: Some(BUSY_RETRY_AFTER_SECS),
            });
        }
        let _waiting = Waiting(self.waiting.clone());
        self.permits.clone().acquire_owned().await.map_err(|_| closed())
    }

    /// Validates and judges one body (blocking: JSON parsing and scoring).
    fn judge(&self, body: &[u8]) -> Result<Answer, ApiError> {
        let body = crate::request::parse(body).map_err(|e| match e {
            BodyError::NotJson(_) => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
            BodyError::Invalid(m) => ApiError::unprocessable(m),
        })?;
        match body {
            Body::Packets { source, packets } => self.judge_batch(source, &packets).map(Answer::Batch),
            Body::Captured(p) => Ok(Answer::Packet(self.judge_packet(&p))),
        }
    }

    /// A capture client's packet, in its source's context.
    fn judge_packet(&self, packet: &CapturedPacket) -> PacketVerdict {
        let model = if self.enabled { self.feed.current() } else { None };
        let arrival_ns = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let mut sources = self.sources.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (evicted, expired) = (sources.evicted(), sources.expired());
        let judgement = sources.observe(packet, Instant::now(), arrival_ns, model.as_deref());
        let m = self.metrics.get_or_init(SourceMetrics::new);
        m.tracked.record(sources.len() as u64, &[]);
        for (reason, n) in [("capacity", sources.evicted() - evicted), ("idle", sources.expired() - expired)] {
            if n > 0 {
                m.forgotten.add(n, &[KeyValue::new("reason", reason)]);
            }
        }
        drop(sources);
        PacketVerdict::of(judgement, self.min_packets, model.is_some())
    }

    /// netanom's packets of one host, scored as one batch.
    fn judge_batch(&self, source: Option<std::net::IpAddr>, packets: &[PacketFeatures]) -> Result<Verdict, ApiError> {
        let model = self.model()?;
        let mut scratch = FeatureScratch::default();
        // The host's own packets, as the detector judges them: replies (`direction: reverse`) are left out.
        let (raw, n) = own_features(packets, &mut scratch);
        let score = model.score(&raw);
        let threshold = model.threshold();
        let judged = n >= self.min_packets;
        let is_anomaly = judged && score > threshold;
        let who = source.map_or_else(|| "the sender".to_string(), |s| s.to_string());
        let reason = if is_anomaly {
            isolation_reason(&who, n, score, threshold, &model.explain(&raw, 4))
        } else if !judged {
            format!(
                "{n} packet(s) of its own are fewer than the {} of a batch the detector judges \
                 (detector.forest.min_packets): \
                 isolation score {score:.3} reported, not judged (threshold {threshold:.3})",
                self.min_packets
            )
        } else {
            format!(
                "{who} behaved like the training traffic over {n} packets (isolation score {score:.3} <= \
                 {threshold:.3})"
            )
        };
        Ok(Verdict {
            anomaly_score: score,
            is_anomaly,
            model_version: model.version().to_string(),
            threshold,
            packets: n,
            reason,
        })
    }

    fn model(&self) -> Result<Arc<TrainedForest>, ApiError> {
        if !self.enabled {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the isolation forest is disabled (detector.forest.enabled = false): there is no model to score with",
            ));
        }
        self.feed.current().ok_or_else(|| ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!(
                "no isolation model yet: the detector trains one on its first {} packet batches of at least {} \
                 packets (detector.forest.warmup_samples, detector.forest.min_packets) unless it loads \
                 detector.forest.model_path; retry later",
                self.warmup_samples, self.min_packets
            ),
            retry_after: Some(RETRY_AFTER_SECS),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const PACKET: &str = r#"{"ts_ns": 1, "destination": "10.0.0.2", "dst_port": 443, "ip_proto": 6,
        "wire_len": 60, "payload_len": 0, "tcp_flags": 2, "ttl": 64, "flow_packets": 1, "direction": "forward"}"#;

    const TOKEN: &str = "s3cret-token-0123456789";

    /// The API (no model yet) on loopback, next to a `/healthz`; returns its address and the API's state.
    async fn serve(token: Option<&str>, request_timeout: Duration, queue: usize) -> (std::net::SocketAddr, Api) {
        let mut config = DetectorConfig::default();
        config.forest.min_packets = 1;
        let api = Api {
            feed: ModelFeed::default(),
            enabled: true,
            warmup_samples: 64,
            min_packets: 1,
            token: token.map(Secret::new),
            request_timeout,
            queue,
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT)),
            waiting: Arc::new(AtomicUsize::new(0)),
            sources: Arc::new(Mutex::new(Sources::new(&config, 16, Duration::from_secs(60)))),
            metrics: Arc::new(OnceLock::new()),
        };
        let app = app(api.clone()).route("/healthz", axum::routing::get(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (addr, api)
    }

    async fn post(addr: std::net::SocketAddr, auth: Option<&str>) -> reqwest::Response {
        let mut r = reqwest::Client::new()
            .post(format!("http://{addr}{ANALYZE_PATH}"))
            .header("content-type", "application/json")
            .body(PACKET);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.timeout(Duration::from_secs(10)).send().await.unwrap()
    }

    #[tokio::test]
    async fn a_configured_token_is_required() {
        let (addr, _) = serve(Some(TOKEN), Duration::from_secs(10), 4).await;
        for auth in [None, Some("Bearer wrong-token-0123456789"), Some(TOKEN), Some("Basic czNjcmV0")] {
            let r = post(addr, auth).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
            assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
            let v: Value = r.json().await.unwrap();
            assert!(v["error"].as_str().unwrap().contains("bearer token"), "{v}");
        }
        let r = post(addr, Some(&format!("Bearer {TOKEN}"))).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "authorised, and no model yet");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().starts_with("no isolation model yet"), "{v}");
        let (open, _) = serve(None, Duration::from_secs(10), 4).await;
        assert_eq!(post(open, None).await.status(), StatusCode::SERVICE_UNAVAILABLE, "no token configured: open");
    }

    #[tokio::test]
    async fn a_stalled_body_gets_408_while_the_probes_answer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let timeout = Duration::from_millis(300);
        let (addr, _) = serve(None, timeout, 4).await;
        let started = std::time::Instant::now();
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {ANALYZE_PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n"
        );
        slow.write_all(head.as_bytes()).await.unwrap();
        slow.write_all(&PACKET.as_bytes()[..50]).await.unwrap();
        // Meanwhile the server answers others.
        let health = reqwest::get(format!("http://{addr}/healthz")).await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        let mut answer = vec![0; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut answer)).await.expect("an answer").unwrap();
        let elapsed = started.elapsed();
        let text = String::from_utf8_lossy(&answer[..n]);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("detector.api.request_timeout"), "{text}");
        assert!(elapsed >= timeout && elapsed < Duration::from_secs(3), "{elapsed:?}");
    }

    #[tokio::test]
    async fn a_full_queue_answers_503_with_retry_after() {
        let (addr, api) = serve(None, Duration::from_secs(10), 1).await;
        let held = api.permits.clone().acquire_many_owned(MAX_CONCURRENT as u32).await.unwrap();
        // One request waits in the queue of 1 ...
        let waiting = tokio::spawn(async move { post(addr, None).await.status() });
        while api.waiting.load(Ordering::Acquire) < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // ... so the next is refused at once.
        let r = post(addr, None).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], BUSY_RETRY_AFTER_SECS);
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().starts_with("busy:"), "{v}");
        // Freed slots serve the waiting request (no model yet: the usual 503) and empty the queue.
        drop(held);
        assert_eq!(waiting.await.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(api.waiting.load(Ordering::Acquire), 0);
        let r = post(addr, None).await;
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().starts_with("no isolation model yet"), "{v}");
    }

    /// POSTs `body` as JSON; returns the status and the JSON answer.
    async fn post_body(addr: std::net::SocketAddr, body: String) -> (StatusCode, Value) {
        let r = reqwest::Client::new()
            .post(format!("http://{addr}{ANALYZE_PATH}"))
            .header("content-type", "application/json")
            .body(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }

    #[tokio::test]
    async fn a_capture_clients_packets_are_judged_by_the_rules_without_a_model() {
        let (addr, _) = serve(None, Duration::from_secs(10), 4).await;
        let packet = |port: u16| {
            serde_json::json!({"src_ip": "10.9.9.9", "dst_ip": "10.0.1.3", "packet_size": 60, "protocol": 6,
                "src_port": 40000, "dst_port": port, "tcp_flags": 2, "ttl": 64,
                "ts_ns": 1_700_000_000_000_000_000i64 + i64::from(port) * 5_000_000})
            .to_string()
        };
        let (status, first) = post_body(addr, packet(1)).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        assert_eq!(first["judged"], true, "min_packets 1: {first}");
        assert_eq!((first["is_anomaly"].as_bool(), first["anomaly_score"].as_f64()), (Some(false), Some(0.0)));
        assert_eq!((first["model_version"].is_null(), first["threshold"].is_null()), (true, true), "{first}");
        assert!(first["reason"].as_str().unwrap().contains("no isolation model in force: the rules alone judge"));
        let mut last = Value::Null;
        for port in 2..=100 {
            let (status, v) = post_body(addr, packet(port)).await;
            assert_eq!(status, StatusCode::OK, "{v}");
            last = v;
        }
        assert_eq!((last["is_anomaly"].as_bool(), last["anomaly_score"].as_f64()), (Some(true), Some(1.0)), "{last}");
        assert_eq!(last["packets"], 100);
        assert!(last["kinds"].as_array().unwrap().iter().any(|k| k["kind"] == "fanout"), "{last}");
        assert!(last["reason"].as_str().unwrap().contains("fired for 10.9.9.9"), "{last}");
        // The tutorial's three fields: one answer names what is missing.
        let (status, v) = post_body(addr, r#"{"src_ip": "10.0.0.1", "packet_size": 60, "protocol": 6}"#.into()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(v["error"], "missing field `dst_ip`");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_gets_413_with_a_length_or_chunked() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (addr, _) = serve(None, Duration::from_secs(10), 4).await;
        let big = format!("{{\"packets\": [{}]}}", vec![PACKET; MAX_BODY_BYTES / 100].join(","));
        assert!(big.len() > MAX_BODY_BYTES);
        let (status, v) = post_body(addr, big.clone()).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
        assert!(v["error"].as_str().unwrap().contains("larger than 1048576 bytes"), "{v}");
        // Chunked: no length announced, the limit applies as the chunks arrive.
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {ANALYZE_PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             transfer-encoding: chunked\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        for chunk in big.as_bytes().chunks(64 * 1024) {
            let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
            if conn.write_all(&framed).await.is_err() {
                break; // the server may answer and close before the rest is sent
            }
        }
        let _ = conn.write_all(b"0\r\n\r\n").await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
        assert!(text.contains("larger than 1048576 bytes"), "{text}");
    }
}
