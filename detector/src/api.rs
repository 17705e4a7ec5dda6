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
//! Answers: 200 `{"anomaly_score", "is_anomaly", "model_version", "threshold", "packets", "reason"}`; 400 the
//! body is not JSON; 413 the body is too large; 415 the content type is not JSON; 422 valid JSON that is not a
//! valid request, the message naming the field (`packets[3].ttl: missing field`); 503 no model yet (with
//! `Retry-After`) or the forest is disabled. Every error is `{"error": "<message>"}`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use netanom_schemas::{Direction, Network, PacketFeatures};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::config::DetectorConfig;
use crate::features::{FeatureScratch, batch_features};
use crate::forest::{ModelFeed, TrainedForest, isolation_reason};

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
    /// Packets scored.
    pub packets: usize,
    /// One sentence: what stood out, or why it is not an anomaly.
    pub reason: String,
}

/// A refused request: status and message, answered as `{"error": message}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: bool,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after: false }
    }

    fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(serde_json::json!({ "error": self.message }))).into_response();
        if self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
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
    permits: Arc<Semaphore>,
}

/// The scoring API's routes for the detector of `config`, answered from the model it publishes to `feed` (the
/// [`crate::Handles::model_feed`] given to [`crate::run`]); the root binary merges them into the
/// `[telemetry] listen` server.
pub fn router(config: &DetectorConfig, feed: ModelFeed) -> axum::Router {
    let api = Api {
        feed,
        enabled: config.forest.enabled,
        warmup_samples: config.forest.warmup_samples,
        min_packets: config.forest.min_packets.max(1),
        permits: Arc::new(Semaphore::new(MAX_CONCURRENT)),
    };
    axum::Router::new().route(ANALYZE_PATH, post(analyze)).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)).with_state(api)
}

async fn analyze(State(api): State<Api>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    match judge_request(api, &headers, body).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn judge_request(
    api: Api,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Verdict, ApiError> {
    check_content_type(headers)?;
    let body = body.map_err(|r| match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than {MAX_BODY_BYTES} bytes"))
        }
        status => ApiError::new(status, r.body_text()),
    })?;
    let _permit =
        api.permits.clone().acquire_owned().await.map_err(|_| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the scoring API is shutting down".to_string())
        })?;
    tokio::task::spawn_blocking(move || api.judge(&body))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("scoring failed: {e}")))?
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
    /// Validates and scores one body (blocking: JSON parsing and scoring).
    fn judge(&self, body: &[u8]) -> Result<Verdict, ApiError> {
        let request = parse(body)?;
        let model = self.model()?;
        let mut scratch = FeatureScratch::default();
        let raw = batch_features(&request.packets, &mut scratch);
        let score = model.score(&raw);
        let (n, threshold) = (request.packets.len(), model.threshold());
        let judged = n >= self.min_packets;
        let is_anomaly = judged && score > threshold;
        let who = request.source.map_or_else(|| "the sender".to_string(), |s| s.to_string());
        let reason = if is_anomaly {
            isolation_reason(&who, n, score, threshold, &model.explain(&raw, 4))
        } else if !judged {
            format!(
                "{n} packet(s) are fewer than the {} of a batch the detector judges (detector.forest.min_packets): \
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
            retry_after: true,
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
