//! The scoring API on a real HTTP server on loopback, with a real model trained from the fixtures: 503 before
//! a model exists, verdicts that match the detector's own scoring, and a 4xx with a message for every kind of
//! malformed request.

use std::sync::Arc;

use netanom_detector::api::{ANALYZE_PATH, MAX_BODY_BYTES, router};
use netanom_detector::features::{FeatureScratch, FeatureVector, batch_features};
use netanom_detector::fixtures::{benign_batch, scan_batch};
use netanom_detector::forest::{TrainOptions, TrainedForest, train};
use netanom_detector::{DetectorConfig, ModelFeed};
use netanom_schemas::{Direction, PacketBatch, PacketFeatures};
use serde_json::{Value, json};

fn model() -> TrainedForest {
    let mut s = FeatureScratch::default();
    let data: Vec<FeatureVector> = (0..2_000u64)
        .map(benign_batch)
        .filter(|b| b.packets.len() >= 8)
        .take(512)
        .map(|b| batch_features(&b.packets, &mut s))
        .collect();
    train(&data, &TrainOptions::from(&DetectorConfig::default().forest)).unwrap()
}

fn packet_json(p: &PacketFeatures) -> Value {
    json!({
        "ts_ns": p.ts_ns,
        "destination": p.destination.to_string(),
        "src_port": p.src_port,
        "dst_port": p.dst_port,
        "ip_proto": p.ip_proto,
        "wire_len": p.wire_len,
        "cap_len": p.cap_len,
        "payload_len": p.payload_len,
        "tcp_flags": p.tcp_flags,
        "ttl": p.ttl,
        "flow_duration_ns": p.flow_duration_ns,
        "flow_packets": p.flow_packets,
        "flow_bytes": p.flow_bytes,
        "direction": if p.direction == Direction::Forward { "forward" } else { "reverse" },
    })
}

fn batch_json(b: &PacketBatch) -> Value {
    json!({ "source": b.source.to_string(), "packets": b.packets.iter().map(packet_json).collect::<Vec<_>>() })
}

/// A server for `config` reading `feed` on a free loopback port; returns the endpoint URL.
async fn serve(config: &DetectorConfig, feed: &ModelFeed) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{ANALYZE_PATH}", listener.local_addr().unwrap());
    let app = router(config, feed.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// POSTs `body` with `content_type` (none when `None`); returns status, `Retry-After` and the JSON answer.
async fn post(url: &str, content_type: Option<&str>, body: impl Into<reqwest::Body>) -> (u16, Option<String>, Value) {
    let mut r = reqwest::Client::new().post(url).body(body);
    if let Some(ct) = content_type {
        r = r.header("content-type", ct);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("answer {text:?} is not JSON: {e}"));
    (status, retry, value)
}

async fn post_json(url: &str, body: &Value) -> (u16, Option<String>, Value) {
    post(url, Some("application/json"), body.to_string()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_503_until_a_model_is_published_then_scores_like_the_detector() {
    let config = DetectorConfig::default();
    let feed = ModelFeed::default();
    let url = serve(&config, &feed).await;
    let scan = scan_batch(1);

    let (status, retry, body) = post_json(&url, &batch_json(&scan)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry.as_deref(), Some("10"));
    let error = body["error"].as_str().unwrap();
    assert!(error.starts_with("no isolation model yet") && error.contains("warmup_samples"), "{error}");

    let m = Arc::new(model());
    let publisher = feed.claim().unwrap();
    assert!(publisher.publish(Some(&m)));
    let mut s = FeatureScratch::default();

    let (status, _, v) = post_json(&url, &batch_json(&scan)).await;
    assert_eq!(status, 200, "{v}");
    let expected = m.score(&batch_features(&scan.packets, &mut s));
    assert_eq!(v["anomaly_score"].as_f64(), Some(expected), "the API scores exactly as the detector does");
    assert_eq!(v["is_anomaly"], json!(true));
    assert_eq!(v["model_version"], json!(m.version()));
    assert_eq!(v["threshold"].as_f64(), Some(m.threshold()));
    assert_eq!(v["packets"], json!(400));
    let reason = v["reason"].as_str().unwrap();
    assert!(reason.starts_with(&format!("{} behaved unlike the training traffic over 400 packets", scan.source)));
    assert!(reason.contains("distinct_dst_ports") || reason.contains("syn_fraction"), "{reason}");

    let benign = (100_000u64..).map(benign_batch).find(|b| b.packets.len() >= 20).unwrap();
    let (status, _, v) = post_json(&url, &batch_json(&benign)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["anomaly_score"].as_f64(), Some(m.score(&batch_features(&benign.packets, &mut s))));
    assert_eq!(v["is_anomaly"], json!(false), "{v}");
    assert!(v["reason"].as_str().unwrap().contains("behaved like the training traffic"), "{v}");

    // One packet object: scored, but fewer packets than the detector judges.
    let (status, _, v) = post_json(&url, &packet_json(&scan.packets[0])).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["packets"], json!(1));
    assert_eq!(v["is_anomaly"], json!(false));
    assert!(v["reason"].as_str().unwrap().contains("detector.forest.min_packets"), "{v}");
    assert!(v["anomaly_score"].as_f64().is_some_and(|x| x > 0.0 && x < 1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_request_gets_a_4xx_naming_the_problem() {
    let config = DetectorConfig::default();
    let feed = ModelFeed::default();
    let publisher = feed.claim().unwrap();
    publisher.publish(Some(&Arc::new(model())));
    let url = serve(&config, &feed).await;
    let good = packet_json(&scan_batch(0).packets[0]);
    let with = |key: &str, value: Value| {
        let mut p = good.clone();
        p[key] = value;
        p
    };
    let without = |key: &str| {
        let mut p = good.clone();
        p.as_object_mut().unwrap().remove(key);
        p
    };
    assert_eq!(post_json(&url, &good).await.0, 200, "the baseline request is valid");
    // Only the fields the model needs: small enough for 4,097 of them to fit in the body limit.
    let mut small = good.clone();
    for optional in ["src_port", "cap_len", "flow_duration_ns", "flow_bytes"] {
        small.as_object_mut().unwrap().remove(optional);
    }
    assert_eq!(post_json(&url, &small).await.0, 200, "the optional fields are optional");
    assert!(json!({ "packets": vec![small.clone(); 4097] }).to_string().len() < MAX_BODY_BYTES);

    // 415: no content type, or not JSON.
    for ct in [None, Some("text/plain"), Some("application/x-www-form-urlencoded")] {
        let (status, _, v) = post(&url, ct, good.to_string()).await;
        assert_eq!(status, 415, "{ct:?}: {v}");
        assert!(v["error"].as_str().unwrap().contains("Content-Type must be application/json"), "{v}");
    }
    assert_eq!(post(&url, Some("application/json; charset=utf-8"), good.to_string()).await.0, 200);

    // 400: not JSON.
    for body in ["", "{", "packets", "{\"ts_ns\": 1,}"] {
        let (status, _, v) = post(&url, Some("application/json"), body).await;
        assert_eq!(status, 400, "{body:?}: {v}");
        assert!(v["error"].as_str().unwrap().starts_with("the body is not JSON"), "{v}");
    }

    // 413: over the limit, whether or not the rest would be valid.
    let big = format!("{{\"packets\": [{}]}}", vec![good.to_string(); MAX_BODY_BYTES / 200].join(","));
    assert!(big.len() > MAX_BODY_BYTES);
    let (status, _, v) = post(&url, Some("application/json"), big).await;
    assert_eq!(status, 413, "{v}");
    assert!(v["error"].as_str().unwrap().contains("larger than 1048576 bytes"), "{v}");

    // 422: JSON that is not a request; the message names the field.
    let cases: Vec<(Value, &str)> = vec![
        (json!([good]), "the body must be a JSON object"),
        (json!(null), "the body must be a JSON object"),
        (without("ttl"), "missing field `ttl`"),
        (without("direction"), "missing field `direction`"),
        (with("ttl", json!(256)), "ttl: invalid value: integer `256`, expected u8"),
        (with("dst_port", json!(-1)), "dst_port: invalid value: integer `-1`, expected u16"),
        (with("wire_len", json!("60")), "wire_len: invalid type: string \"60\", expected u32"),
        (with("destination", json!("10.0.0")), "destination: invalid IP address syntax"),
        (with("direction", json!("up")), "direction: unknown variant `up`"),
        (with("flow_packets", json!(0)), "flow_packets: must be >= 1"),
        (with("network", json!("ipv6")), "network: \"ipv6\" does not match destination 192.168.1.25"),
        (with("colour", json!("blue")), "unknown field `colour`"),
        (json!({"packets": []}), "packets: empty"),
        (json!({"packets": good}), "packets: invalid type: map, expected a sequence"),
        (json!({"packets": [good, with("ttl", json!(null))]}), "packets[1].ttl: invalid type: null, expected u8"),
        (json!({"packets": [good, without("ip_proto")]}), "packets[1]: missing field `ip_proto`"),
        (
            json!({"source": "10.0.0.1", "packets": [good, with("source", json!("10.0.0.2"))]}),
            "packets[1].source: 10.0.0.2 differs from source 10.0.0.1",
        ),
        (
            json!({"packets": [with("source", json!("10.0.0.3")), with("source", json!("10.0.0.2"))]}),
            "packets[1].source: 10.0.0.2 differs from packets[0].source 10.0.0.3",
        ),
        (json!({"packets": vec![small.clone(); 4097]}), "packets: 4097 packets, at most 4096 per request"),
    ];
    for (body, expected) in cases {
        let (status, _, v) = post_json(&url, &body).await;
        assert_eq!(status, 422, "{expected}: {v}");
        let error = v["error"].as_str().unwrap();
        assert!(error.contains(expected), "expected {expected:?} in {error:?}");
    }

    // GET is not the API.
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_forest_answers_503_without_retry_after() {
    let mut config = DetectorConfig::default();
    config.forest.enabled = false;
    let url = serve(&config, &ModelFeed::default()).await;
    let (status, retry, v) = post_json(&url, &batch_json(&scan_batch(0))).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(retry, None);
    assert!(v["error"].as_str().unwrap().contains("detector.forest.enabled = false"), "{v}");
}
