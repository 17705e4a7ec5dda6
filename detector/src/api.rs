//! The scoring API: `POST /api/v1/analyze` scores one host's packets with the isolation model the detector has
//! in force, for capture clients outside Kafka. Owns the request format, its validation and the error
//! statuses. The model comes from the [`ModelFeed`] the detector publishes to, so a request never waits for
//! the detector nor the detector for a request; parsing and scoring run on the blocking pool, at most
//! [`MAX_CONCURRENT`] requests at a time (the detector's own chunks run on that pool too).
//!
//! A request is one packet object, or `{"source": …, "packets": [packet, …]}` with 1 to [`MAX_PACKETS`]
//! packets, as `application/json` of at most [`MAX_BODY_BYTES`]. Packet fields are those of
//! [`PacketFeatures`] (docs/operations.md, "Scoring API", lists them); the packets are one batch of one host and are
//! scored exactly as the detector scores a packet batch from Kafka.
//!
//! With `[detector.api] token` set, a request must carry `Authorization: Bearer <token>` (compared in constant
//! time). The body must arrive within `[detector.api] request_timeout`; at most `[detector.api] queue` requests
//! wait for one of the [`MAX_CONCURRENT`] scoring slots, more are refused at once.
//!
//! Answers: 200 `{"anomaly_score", "is_anomaly", "model_version", "threshold", "packets", "reason"}`; 400 the
//! body is not JSON; 401 the token is missing or wrong (with `WWW-Authenticate: Bearer`); 408 the body did not
//! arrive in time; 413 the body is too large; 415 the content type is not JSON; 422 valid JSON that is not a
//! valid request, the message naming the field (`packets[3].ttl: missing field`); 503 no model yet or the queue
//! is full (both with `Retry-After`), or the forest is disabled. Every error is `{"error": "<message>"}`.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use netanom_schemas::redact::Secret;
use netanom_schemas::{Direction, Network, PacketFeatures};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::features::{FeatureScratch, own_features};
use crate::forest::{ForestConfig, ModelFeed, TrainedForest, isolation_reason};
use crate::time::human;
use crate::validation::{ConfigError, Problems};

/// Path of the scoring endpoint.
pub const ANALYZE_PATH: &str = "/api/v1/analyze";
/// Largest accepted body (1 MiB; about 3,000 packets with every field).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Most packets in one request (four producer batches).
pub const MAX_PACKETS: usize = 4096;
/// Requests parsed and scored at once; more wait their turn.
pub const MAX_CONCURRENT: usize = 2;
/// `Retry-After` while no model is trained yet, in seconds.
const RETRY_AFTER_SECS: &str = "10";
/// `Retry-After` when the queue is full, in seconds.
const BUSY_RETRY_AFTER_SECS: &str = "1";

/// The scoring API's settings (`[detector.api]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Bearer token every request must carry (`Authorization: Bearer <token>`); best set from the environment
    /// (`NETANOM_DETECTOR__API__TOKEN`) or a Kubernetes Secret. Prints as `***`. Default: none, the API is open.
    pub token: Option<Secret>,
    /// Longest time from the request's arrival to the end of its body; a slower client gets 408. At most
    /// 300 s. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Requests that may wait for a scoring slot while [`MAX_CONCURRENT`] are scored; more get 503 with
    /// `Retry-After`. At most 100000. Default 64.
    pub queue: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self { token: None, request_timeout: Duration::from_secs(10), queue: 64 }
    }
}

impl ApiConfig {
    /// Every problem of `[detector.api]`.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut p = Problems::new("api");
        if let Some(t) = &self.token {
            p.check(t.expose().len() >= 16, "token", || "must be at least 16 characters".into());
            p.check(t.expose().bytes().all(|b| b.is_ascii_graphic()), "token", || {
                "must be printable ASCII without spaces (it travels in an HTTP header)".into()
            });
        }
        p.check(
            !self.request_timeout.is_zero() && self.request_timeout <= Duration::from_secs(300),
            "request_timeout",
            || format!("must be in (0, 300s], got {}", human(self.request_timeout)),
        );
        p.check(self.queue <= 100_000, "queue", || format!("must be at most 100000, got {}", self.queue));
        p.into_vec()
    }
}

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

/// What the handler needs: the feed and the parts of the configuration that judge a batch.
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
}

/// The scoring API's routes (`[detector.api]` settings `config`) for the detector whose forest is configured by
/// `forest`, answered from the model it publishes to `feed` (the [`crate::Handles::model_feed`] given to
/// [`crate::run`]); the root binary merges them into the `[telemetry] listen` server.
pub fn router(config: &ApiConfig, forest: &ForestConfig, feed: ModelFeed) -> axum::Router {
    app(Api {
        feed,
        enabled: forest.enabled,
        warmup_samples: forest.warmup_samples,
        min_packets: forest.min_packets.max(1),
        token: config.token.clone(),
        request_timeout: config.request_timeout,
        queue: config.queue,
        permits: Arc::new(Semaphore::new(MAX_CONCURRENT)),
        waiting: Arc::new(AtomicUsize::new(0)),
    })
}

fn app(api: Api) -> axum::Router {
    axum::Router::new().route(ANALYZE_PATH, post(analyze)).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)).with_state(api)
}

async fn analyze(State(api): State<Api>, request: axum::extract::Request) -> Response {
    match judge_request(api, request).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn judge_request(api: Api, request: axum::extract::Request) -> Result<Verdict, ApiError> {
    if let Some(token) = &api.token
        && !admits(token, request.headers())
    {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token: send Authorization: Bearer <detector.api.token>",
        ));
    }
    check_content_type(request.headers())?;
    let body = tokio::time::timeout(api.request_timeout, Bytes::from_request(request, &()))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {} (detector.api.request_timeout)", human(api.request_timeout)),
            )
        })?
        .map_err(|r| match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than {MAX_BODY_BYTES} bytes"))
            }
            status => ApiError::new(status, r.body_text()),
        })?;
    let _permit = api.permit().await?;
    tokio::task::spawn_blocking(move || api.judge(&body))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("scoring failed: {e}")))?
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

    /// Validates and scores one body (blocking: JSON parsing and scoring).
    fn judge(&self, body: &[u8]) -> Result<Verdict, ApiError> {
        let request = parse(body)?;
        let model = self.model()?;
        let mut scratch = FeatureScratch::default();
        // The host's own packets, as the detector judges them: replies (`direction: reverse`) are left out.
        let (raw, n) = own_features(&request.packets, &mut scratch);
        let score = model.score(&raw);
        let threshold = model.threshold();
        let judged = n >= self.min_packets;
        let is_anomaly = judged && score > threshold;
        let who = request.source.map_or_else(|| "the sender".to_string(), |s| s.to_string());
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

/// `{"source": …, "packets": […]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchJson {
    #[serde(default)]
    source: Option<IpAddr>,
    packets: Vec<PacketJson>,
}

/// One packet: the fields of [`PacketFeatures`], plus the optional `source` of the batch. Fields that feed the
/// model are required; the others have the defaults documented in docs/operations.md.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PacketJson {
    #[serde(default)]
    source: Option<IpAddr>,
    ts_ns: i64,
    #[serde(default)]
    network: Option<NetworkJson>,
    destination: IpAddr,
    #[serde(default)]
    src_port: u16,
    dst_port: u16,
    #[serde(alias = "protocol")]
    ip_proto: u8,
    wire_len: u32,
    #[serde(default)]
    cap_len: Option<u32>,
    payload_len: u32,
    tcp_flags: u8,
    ttl: u8,
    #[serde(default)]
    vlan: Option<u16>,
    #[serde(default)]
    icmp_type: Option<u8>,
    #[serde(default)]
    icmp_code: Option<u8>,
    #[serde(default)]
    flow_duration_ns: i64,
    flow_packets: u64,
    #[serde(default)]
    flow_bytes: Option<u64>,
    direction: DirectionJson,
    #[serde(default)]
    payload_entropy: Option<f32>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum NetworkJson {
    Ipv4,
    Ipv6,
    Arp,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum DirectionJson {
    Forward,
    Reverse,
}

impl PacketJson {
    /// The packet, with the checks the types cannot express; `at(field)` names a field in messages.
    fn into_features(self, at: &dyn Fn(&str) -> String) -> Result<PacketFeatures, ApiError> {
        if self.flow_packets == 0 {
            return Err(ApiError::unprocessable(format!(
                "{}: must be >= 1 (the packet itself is in its flow), got 0",
                at("flow_packets")
            )));
        }
        let network = match (self.network, self.destination) {
            (None, IpAddr::V4(_)) | (Some(NetworkJson::Ipv4), IpAddr::V4(_)) => Network::Ipv4,
            (None, IpAddr::V6(_)) | (Some(NetworkJson::Ipv6), IpAddr::V6(_)) => Network::Ipv6,
            (Some(NetworkJson::Arp), IpAddr::V4(_)) => Network::Arp,
            (Some(n), d) => {
                let name = match n {
                    NetworkJson::Ipv4 => "ipv4",
                    NetworkJson::Ipv6 => "ipv6",
                    NetworkJson::Arp => "arp",
                };
                return Err(ApiError::unprocessable(format!(
                    "{}: \"{name}\" does not match destination {d}",
                    at("network")
                )));
            }
        };
        Ok(PacketFeatures {
            ts_ns: self.ts_ns,
            network,
            destination: self.destination,
            src_port: self.src_port,
            dst_port: self.dst_port,
            ip_proto: self.ip_proto,
            wire_len: self.wire_len,
            cap_len: self.cap_len.unwrap_or(self.wire_len),
            payload_len: self.payload_len,
            tcp_flags: self.tcp_flags,
            ttl: self.ttl,
            vlan: self.vlan,
            icmp_type: self.icmp_type,
            icmp_code: self.icmp_code,
            flow_duration_ns: self.flow_duration_ns,
            flow_packets: self.flow_packets,
            flow_bytes: self.flow_bytes.unwrap_or(u64::from(self.wire_len)),
            direction: match self.direction {
                DirectionJson::Forward => Direction::Forward,
                DirectionJson::Reverse => Direction::Reverse,
            },
            payload_entropy: self.payload_entropy,
        })
    }
}

/// A valid request: one host's packets.
#[derive(Debug)]
struct Request {
    source: Option<IpAddr>,
    packets: Vec<PacketFeatures>,
}

/// Parses and validates a body: 400 when it is not JSON, 422 (naming the field) when it is not a request.
fn parse(body: &[u8]) -> Result<Request, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}")))?;
    let batch = match &value {
        Value::Object(m) => m.contains_key("packets"),
        other => {
            let kind = match other {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::String(_) => "a string",
                _ => "an array",
            };
            return Err(ApiError::unprocessable(format!(
                "the body must be a JSON object: one packet, or {{\"packets\": [...]}}; got {kind}"
            )));
        }
    };
    let (mut source, packets) = if batch {
        let b: BatchJson = typed(value)?;
        (b.source, b.packets)
    } else {
        (None, vec![typed::<PacketJson>(value)?])
    };
    if packets.is_empty() {
        return Err(ApiError::unprocessable(format!("packets: empty; send 1 to {MAX_PACKETS} packets")));
    }
    if packets.len() > MAX_PACKETS {
        return Err(ApiError::unprocessable(format!(
            "packets: {} packets, at most {MAX_PACKETS} per request",
            packets.len()
        )));
    }
    let mut source_field = "source".to_string();
    let mut out = Vec::with_capacity(packets.len());
    for (i, p) in packets.into_iter().enumerate() {
        let at = |field: &str| if batch { format!("packets[{i}].{field}") } else { field.to_string() };
        match (source, p.source) {
            (Some(first), Some(this)) if first != this => {
                return Err(ApiError::unprocessable(format!(
                    "{}: {this} differs from {source_field} {first}; one request holds the packets of one host",
                    at("source")
                )));
            }
            (None, Some(this)) => {
                source = Some(this);
                source_field = at("source");
            }
            _ => {}
        }
        out.push(p.into_features(&at)?);
    }
    Ok(Request { source, packets: out })
}

/// `value` as a `T`; a mismatch is a 422 naming the path of the offending field.
fn typed<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ApiError::unprocessable(if path == "." { inner.to_string() } else { format!("{path}: {inner}") })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::scan_batch;

    fn message(body: &str) -> (StatusCode, String) {
        let e = parse(body.as_bytes()).unwrap_err();
        (e.status, e.message)
    }

    const PACKET: &str = r#"{"ts_ns": 1, "destination": "10.0.0.2", "dst_port": 443, "ip_proto": 6,
        "wire_len": 60, "payload_len": 0, "tcp_flags": 2, "ttl": 64, "flow_packets": 1, "direction": "forward"}"#;

    #[test]
    fn one_packet_or_a_batch() {
        let one = parse(PACKET.as_bytes()).unwrap();
        assert_eq!(one.packets.len(), 1);
        assert!(one.packets[0].is_syn() && one.packets[0].opens_flow());
        assert_eq!(one.packets[0].network, Network::Ipv4);
        assert_eq!(one.packets[0].cap_len, 60, "cap_len defaults to wire_len");
        let many = parse(format!(r#"{{"source": "10.0.0.1", "packets": [{PACKET}, {PACKET}]}}"#).as_bytes()).unwrap();
        assert_eq!(many.packets.len(), 2);
        assert_eq!(many.source, Some("10.0.0.1".parse().unwrap()));
        let alias = PACKET.replace("ip_proto", "protocol");
        assert_eq!(parse(alias.as_bytes()).unwrap().packets[0].ip_proto, 6);
    }

    #[test]
    fn every_malformed_body_names_its_problem() {
        assert_eq!(message("{").0, StatusCode::BAD_REQUEST);
        assert_eq!(message("").0, StatusCode::BAD_REQUEST);
        let cases = [
            ("[1]", "the body must be a JSON object"),
            (&PACKET.replace(r#""ttl": 64,"#, ""), "missing field `ttl`"),
            (&PACKET.replace(r#""ttl": 64"#, r#""ttl": 300"#), "ttl: invalid value: integer `300`"),
            (&PACKET.replace(r#""10.0.0.2""#, r#""10.0.0.999""#), "destination: invalid IP address syntax"),
            (&PACKET.replace(r#""forward""#, r#""sideways""#), "direction: unknown variant `sideways`"),
            (&PACKET.replace(r#""flow_packets": 1"#, r#""flow_packets": 0"#), "flow_packets: must be >= 1"),
            (&PACKET.replace(r#""ts_ns": 1"#, r#""ts_ns": 1, "ttll": 3"#), "unknown field `ttll`"),
            (&PACKET.replace(r#""ts_ns": 1"#, r#""ts_ns": 1, "network": "ipv6""#), "network: \"ipv6\" does not match"),
            (r#"{"packets": []}"#, "packets: empty"),
            (
                &format!(r#"{{"packets": [{PACKET}, {}]}}"#, PACKET.replace("\"ttl\": 64", "\"ttl\": \"x\"")),
                "packets[1].ttl: invalid type: string \"x\"",
            ),
            (
                &format!(
                    r#"{{"source": "10.0.0.1", "packets": [{PACKET}, {}]}}"#,
                    PACKET.replace(r#""ts_ns": 1"#, r#""ts_ns": 1, "source": "10.0.0.7""#)
                ),
                "packets[1].source: 10.0.0.7 differs from source 10.0.0.1",
            ),
            (&format!(r#"{{"packets": [{}]}}"#, vec![PACKET; MAX_PACKETS + 1].join(",")), "at most 4096"),
        ];
        for (body, expected) in cases {
            let (status, text) = message(body);
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
            assert!(text.contains(expected), "{expected:?} not in {text:?}");
        }
    }

    const TOKEN: &str = "s3cret-token-0123456789";

    /// The API (no model yet) on loopback, next to a `/healthz`; returns its address and the API's state.
    async fn serve(token: Option<&str>, request_timeout: Duration, queue: usize) -> (std::net::SocketAddr, Api) {
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

    #[test]
    fn the_token_is_masked_and_validated() {
        let mut c = ApiConfig { token: Some(Secret::new(TOKEN)), ..ApiConfig::default() };
        assert!(!format!("{c:?}").contains(TOKEN));
        assert!(serde_json::to_string(&c).unwrap().contains(r#""token":"***""#));
        assert!(c.validate().is_empty());
        c.token = Some(Secret::new("short token"));
        c.request_timeout = Duration::ZERO;
        c.queue = 1_000_000;
        let keys: Vec<String> = c.validate().into_iter().map(|e| e.key).collect();
        assert_eq!(
            keys,
            ["detector.api.token", "detector.api.token", "detector.api.request_timeout", "detector.api.queue"]
        );
    }

    #[test]
    fn scan_batch_parses_to_the_same_features() {
        let b = scan_batch(0);
        let packets: Vec<String> = b
            .packets
            .iter()
            .map(|p| {
                format!(
                    r#"{{"ts_ns": {}, "destination": "{}", "src_port": {}, "dst_port": {}, "ip_proto": {},
                    "wire_len": {}, "payload_len": {}, "tcp_flags": {}, "ttl": {}, "flow_packets": {},
                    "flow_bytes": {}, "direction": "forward"}}"#,
                    p.ts_ns,
                    p.destination,
                    p.src_port,
                    p.dst_port,
                    p.ip_proto,
                    p.wire_len,
                    p.payload_len,
                    p.tcp_flags,
                    p.ttl,
                    p.flow_packets,
                    p.flow_bytes
                )
            })
            .collect();
        let r = parse(format!(r#"{{"packets": [{}]}}"#, packets.join(",")).as_bytes()).unwrap();
        assert_eq!(r.packets, b.packets);
    }
}
