//! Schema registry: with `schemas.registry_url` set, every role registers the three `.avsc` schemas under
//! `<topic>-value` and frames its records with the ids the registry assigned. The registry here is a real HTTP
//! server on loopback implementing the subset of the Confluent REST API netanom uses (ids from 100, idempotent
//! per subject and schema, the Confluent content type required).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use netanom::config::{Config, load};
use netanom_schemas::{PacketBatch, SchemaIds};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// What the fake registry holds.
#[derive(Default)]
struct Registry {
    /// (subject, schema text) → id.
    ids: HashMap<(String, String), u32>,
    /// Next id to assign; starts at 100.
    next: u32,
    /// Registration requests answered.
    requests: usize,
}

type Shared = Arc<Mutex<Registry>>;

async fn register(
    State(reg): State<Shared>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let refuse =
        |status: StatusCode, code: u32, message: &str| (status, Json(json!({"error_code": code, "message": message})));
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/vnd.schemaregistry.v1+json") {
        return refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, 415, "wrong content type");
    }
    if subject.starts_with("refused") {
        return refuse(StatusCode::CONFLICT, 409, "Schema being registered is incompatible with an earlier schema");
    }
    let Some(schema) = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["schema"].as_str().map(String::from))
    else {
        return refuse(StatusCode::UNPROCESSABLE_ENTITY, 42201, "body is not {\"schema\": \"...\"}");
    };
    // The schema itself must be an Avro record schema (a JSON document inside the string).
    match serde_json::from_str::<Value>(&schema) {
        Ok(v) if v["type"] == "record" && v["name"].is_string() => {}
        _ => return refuse(StatusCode::UNPROCESSABLE_ENTITY, 42201, "Invalid schema"),
    }
    let mut reg = reg.lock().unwrap();
    reg.requests += 1;
    if reg.next == 0 {
        reg.next = 100;
    }
    let next = reg.next;
    let id = *reg.ids.entry((subject, schema)).or_insert(next);
    if id == next {
        reg.next += 1;
    }
    (StatusCode::OK, Json(json!({ "id": id })))
}

/// Starts the registry on a loopback port; returns its URL and state.
async fn start_registry() -> (String, Shared) {
    let state = Shared::default();
    let app = axum::Router::new()
        .route("/subjects/{subject}/versions", axum::routing::post(register))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, state)
}

/// The id the registry assigned to `name`'s schema under the value subject of `topic`.
fn id_of(reg: &Shared, topic: &str, name: &str) -> u32 {
    let reg = reg.lock().unwrap();
    let found: Vec<u32> = reg
        .ids
        .iter()
        .filter(|((subject, schema), _)| {
            subject == &format!("{topic}-value") && serde_json::from_str::<Value>(schema).unwrap()["name"] == name
        })
        .map(|(_, id)| *id)
        .collect();
    assert_eq!(found.len(), 1, "{name} registered {} times under {topic}-value", found.len());
    found[0]
}

fn unique(what: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{what}-{}-{t}-{n}", std::process::id())
}

/// A default configuration with random topic names and the registry at `url`.
fn config(url: &str) -> Config {
    let s = |v: String| toml::Value::String(v);
    let flags = vec![
        ("schemas.registry_url".to_string(), s(url.to_string())),
        // The test registry is on loopback, which the outbound policy refuses unless allowed.
        ("schemas.registry_allow_private".to_string(), toml::Value::Boolean(true)),
        ("topics.packets".to_string(), s(unique("packets"))),
        ("topics.destinations".to_string(), s(unique("destinations"))),
        ("topics.anomalies".to_string(), s(unique("anomalies"))),
        ("topics.alerts".to_string(), s(unique("alerts"))),
        ("topics.dead_letter".to_string(), s(unique("dlq"))),
    ];
    load(None, Vec::new(), &flags).unwrap()
}

/// The registry's ids for the topics of `cfg`.
fn registry_ids(reg: &Shared, cfg: &Config) -> SchemaIds {
    SchemaIds {
        packet_batch: id_of(reg, &cfg.topics.packets, "PacketBatch"),
        anomaly: id_of(reg, &cfg.topics.anomalies, "Anomaly"),
        destination_stats: id_of(reg, &cfg.topics.destinations, "DestinationStats"),
    }
}

#[tokio::test]
async fn every_role_uses_the_ids_the_registry_assigned() {
    let (url, reg) = start_registry().await;
    let mut cfg = config(&url);
    netanom::roles::prepare(&mut cfg, "127.0.0.1:1").await.unwrap();
    let ids = registry_ids(&reg, &cfg);
    assert_ne!(ids, SchemaIds::BUILT_IN);
    let mut assigned = [ids.packet_batch, ids.anomaly, ids.destination_stats];
    assigned.sort_unstable();
    assert_eq!(assigned, [100, 101, 102], "three new schemas get three new ids");
    assert_eq!(cfg.schemas.ids, ids);
    assert_eq!(cfg.producer.schema_ids, ids);
    assert_eq!(cfg.detector.schema_ids, ids);
    assert_eq!(cfg.alert_router.schema_ids, ids);

    // A second role (another process in a deployment) registers the same schemas: same ids, nothing new.
    let mut again = config(&url);
    again.topics = cfg.topics.clone();
    netanom::roles::prepare(&mut again, "127.0.0.1:1").await.unwrap();
    assert_eq!(again.detector.schema_ids, ids);
    let reg = reg.lock().unwrap();
    assert_eq!((reg.requests, reg.next), (6, 103));
}

#[tokio::test]
async fn without_a_registry_the_configured_ids_are_used() {
    let flags = vec![("schemas.ids.anomaly".to_string(), toml::Value::Integer(42))];
    let mut cfg = load(None, Vec::new(), &flags).unwrap();
    netanom::roles::prepare(&mut cfg, "127.0.0.1:1").await.unwrap();
    let want = SchemaIds { anomaly: 42, ..SchemaIds::BUILT_IN };
    assert_eq!((cfg.producer.schema_ids, cfg.detector.schema_ids, cfg.alert_router.schema_ids), (want, want, want));
}

/// Every record of `topic` on the cluster at `bootstrap`.
fn read_topic(bootstrap: &str, topic: &str, partitions: i32) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut expected = 0;
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap();
        expected += high - low;
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (out.len() as i64) < expected {
        assert!(Instant::now() < deadline, "read {} of {expected} records of {topic}", out.len());
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            out.push(m.unwrap().payload().unwrap_or_default().to_vec());
        }
    }
    out
}

fn schema_id(payload: &[u8]) -> u32 {
    netanom_schemas::frame::split(payload).unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_frames_every_record_with_the_registry_ids() {
    use netanom_producer::synth::{Attack, AttackKind, Scenario, write_pcap};
    let (url, reg) = start_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("scan.pcap");
    // Benign traffic plus a port scan: packets, destination statistics and (fanout) anomalies.
    let scenario = Scenario {
        attacks: vec![Attack {
            start: Duration::from_secs(1),
            rate_pps: 500.0,
            kind: AttackKind::PortScan {
                attacker: "198.51.100.23".parse().unwrap(),
                target: netanom_producer::synth::SERVERS[2],
                first_port: 1,
                last_port: 300,
            },
        }],
        ..Scenario::benign(5, Duration::from_secs(4))
    };
    write_pcap(&scenario, &pcap).unwrap();

    let cluster = MockCluster::new(1).unwrap();
    let mut cfg = config(&url);
    let t = cfg.topics.clone();
    for topic in [&t.packets, &t.destinations, &t.anomalies, &t.alerts, &t.dead_letter] {
        cluster.create_topic(topic, 2, 1).unwrap();
    }
    cfg.kafka.brokers = cluster.bootstrap_servers();
    cfg.producer.pcap = Some(pcap);
    cfg.validate(netanom::config::Roles::ALL).unwrap();
    let outcome =
        netanom::run::run_pipeline(cfg.clone(), CancellationToken::new(), CancellationToken::new()).await.unwrap();
    assert!(outcome.producer.packets_published > 0);
    let ids = registry_ids(&reg, &cfg);
    assert!(ids.packet_batch >= 100 && ids.anomaly >= 100 && ids.destination_stats >= 100, "{ids:?}");

    let bootstrap = cluster.bootstrap_servers();
    let packets = read_topic(&bootstrap, &t.packets, 2);
    let destinations = read_topic(&bootstrap, &t.destinations, 2);
    let anomalies = read_topic(&bootstrap, &t.anomalies, 2);
    assert!(!packets.is_empty() && !destinations.is_empty() && !anomalies.is_empty(), "{outcome:?}");
    assert!(packets.iter().all(|p| schema_id(p) == ids.packet_batch), "packets framed with another id");
    assert!(destinations.iter().all(|p| schema_id(p) == ids.destination_stats), "destinations: another id");
    assert!(anomalies.iter().all(|p| schema_id(p) == ids.anomaly), "anomalies framed with another id");
    for p in &packets {
        PacketBatch::decode(p, &ids).unwrap();
    }
    assert!(read_topic(&bootstrap, &t.dead_letter, 2).is_empty(), "a record was dead-lettered");
    // The router decoded every anomaly with the registry's id (a mismatch would have been dead-lettered).
    assert_eq!(outcome.detector.anomalies.values().sum::<u64>(), anomalies.len() as u64);
}

#[tokio::test]
async fn an_unreachable_registry_is_an_error_naming_the_url_and_subject() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let mut cfg = config(&url);
    let err = netanom::roles::prepare(&mut cfg, "127.0.0.1:1").await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains(&url), "{text}");
    assert!(text.contains(&format!("{}-value", cfg.topics.packets)), "{text}");
}

#[tokio::test]
async fn a_refused_schema_is_an_error_naming_the_subject_and_the_reason() {
    let (url, _reg) = start_registry().await;
    let mut cfg = config(&url);
    cfg.topics.anomalies = unique("refused");
    let err = netanom::roles::prepare(&mut cfg, "127.0.0.1:1").await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains(&url) && text.contains(&format!("{}-value", cfg.topics.anomalies)), "{text}");
    assert!(text.contains("409") && text.contains("incompatible"), "{text}");
}

/// The single-role command stops at startup, before touching Kafka, when the registry is unreachable.
#[test]
fn a_role_does_not_start_without_its_registry() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_netanom"))
        .args(["detector", "--brokers", "127.0.0.1:1"])
        .env("NETANOM_SCHEMAS__REGISTRY_URL", &url)
        .env("NETANOM_SCHEMAS__REGISTRY_ALLOW_PRIVATE", "true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&url) && stderr.contains("netanom.packets-value"), "{stderr}");
}

/// Without `schemas.registry_allow_private`, a registry on a loopback address is a configuration error, reported
/// before anything starts, in every spelling of the address and with the credentials masked.
#[test]
fn a_registry_on_an_internal_address_is_refused_at_start() {
    for url in ["http://127.0.0.1:8081", "http://user:hunter2@2130706433:8081/"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_netanom"))
            .args(["detector", "--brokers", "127.0.0.1:1"])
            .env("NETANOM_SCHEMAS__REGISTRY_URL", url)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{stderr}");
        assert!(stderr.contains("schemas.registry_url") && stderr.contains("loopback"), "{url}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{url}: the password was shown: {stderr}");
    }
}

/// A host *name* that resolves to loopback passes the start-time check and is refused when the role connects:
/// the registry receives nothing.
#[tokio::test]
async fn a_registry_name_resolving_to_loopback_is_refused_at_connect() {
    let (url, reg) = start_registry().await;
    let by_name = url.replace("127.0.0.1", "localhost");
    let mut cfg = config(&by_name);
    cfg.schemas.registry_allow_private = false;
    cfg.validate(netanom::config::Roles::NONE).unwrap();
    let err = netanom::roles::prepare(&mut cfg, "127.0.0.1:1").await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("loopback") && text.contains(&by_name), "{text}");
    assert_eq!(reg.lock().unwrap().requests, 0, "the registry was reached");
}
