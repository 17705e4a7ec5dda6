//! In-process tests of the whole router against `rdkafka::mocking::MockCluster` and a real axum webhook receiver on
//! 127.0.0.1 that verifies every Standard Webhooks signature.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use netanom_alert_router::format::OCSF_VERSION;
use netanom_alert_router::webhook::{decode_secret, verify};
use netanom_alert_router::{
    AlertFormat, IncidentConfig, RetryConfig, RouterConfig, RouterReport, Secret, SyslogConfig, Transport,
    WebhookConfig, run,
};
use netanom_handles::RoleHandles;
use netanom_schemas::{
    Alert, Anomaly, AnomalyKind, Contribution, SchemaIds, format_rfc3339, format_rfc3339_ns, time_from_ns, topics,
};
use rand::Rng;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const S: i64 = 1_000_000_000;
const T0: i64 = 1_718_000_000 * S;

/// What the webhook receiver saw.
#[derive(Default)]
struct Receiver {
    /// Per hook name: (webhook-id, body) of accepted requests.
    accepted: Mutex<HashMap<String, Vec<(String, Alert)>>>,
    /// Per hook name: all requests, accepted or not.
    calls: Mutex<HashMap<String, u32>>,
    /// Requests whose signature or timestamp did not verify.
    bad_signatures: Mutex<u32>,
    /// Per hook name starting with `raw-`: the JSON bodies, whatever their format.
    raw: Mutex<HashMap<String, Vec<serde_json::Value>>>,
    /// The `webhook-id` of every digest request to a hook named `raw-…`, answered or not.
    digest_ids: Mutex<Vec<String>>,
    /// While set, the hooks named `hole…` and `raw-digest` accept requests and never answer them.
    black_hole: std::sync::atomic::AtomicBool,
    /// While set, the hook named `picky` answers 422.
    picky: std::sync::atomic::AtomicBool,
    /// The hook named `slow`: 0 answers 422; 1 accepts one alert, then never answers; 2 accepts every alert.
    slow: std::sync::atomic::AtomicU32,
}

async fn hook(
    State(rx): State<Arc<Receiver>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let calls = {
        let mut calls = rx.calls.lock().unwrap();
        let c = calls.entry(name.clone()).or_default();
        *c += 1;
        *c
    };
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let id = header("webhook-id");
    let ts: i64 = header("webhook-timestamp").parse().unwrap_or(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let key = decode_secret(&Secret::new(SECRET)).unwrap();
    if (now - ts).abs() > 300 || !verify(&key, &id, ts, &body, &header("webhook-signature")) {
        *rx.bad_signatures.lock().unwrap() += 1;
        return StatusCode::UNAUTHORIZED;
    }
    if name.starts_with("raw-") && id.starts_with("digest-") {
        rx.digest_ids.lock().unwrap().push(id.clone());
    }
    if name.starts_with("hole") && rx.black_hole.load(std::sync::atomic::Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    if name == "picky" && rx.picky.load(std::sync::atomic::Ordering::SeqCst) {
        return StatusCode::UNPROCESSABLE_ENTITY;
    }
    if name == "slow" {
        match rx.slow.load(std::sync::atomic::Ordering::SeqCst) {
            0 => return StatusCode::UNPROCESSABLE_ENTITY,
            1 if rx.accepted.lock().unwrap().get("slow").is_some_and(|v| !v.is_empty()) => {
                std::future::pending::<()>().await;
            }
            _ => {}
        }
    }
    match name.as_str() {
        "flaky" if calls <= 2 => return StatusCode::INTERNAL_SERVER_ERROR,
        "fail" => return StatusCode::SERVICE_UNAVAILABLE,
        "reject" => return StatusCode::BAD_REQUEST,
        _ => {}
    }
    if name == "raw-digest" && rx.black_hole.load(std::sync::atomic::Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    if name.starts_with("raw-") {
        let Ok(doc) = serde_json::from_slice(&body) else { return StatusCode::UNPROCESSABLE_ENTITY };
        rx.raw.lock().unwrap().entry(name).or_default().push(doc);
        return StatusCode::OK;
    }
    let Ok(alert) = serde_json::from_slice::<Alert>(&body) else { return StatusCode::UNPROCESSABLE_ENTITY };
    rx.accepted.lock().unwrap().entry(name).or_default().push((id, alert));
    StatusCode::OK
}

async fn start_receiver() -> (Arc<Receiver>, String) {
    let rx = Arc::new(Receiver::default());
    let app = axum::Router::new().route("/{name}", axum::routing::post(hook)).with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (rx, base)
}

fn anomaly(host: &str, kind: AnomalyKind, start_s: i64, score: f64) -> Anomaly {
    Anomaly {
        id: format!("{kind}/{host}/{start_s}"),
        host: host.into(),
        kind,
        window_start_ns: T0 + start_s * S,
        window_end_ns: T0 + (start_s + 1) * S,
        score,
        threshold: 10.0,
        target: None,
        reason: format!("{kind} score {score}"),
        features: vec![Contribution { name: "pps".into(), value: score, baseline: Some(1.0) }],
        sample: format!("{host}:4242 > 10.9.9.9:80 TCP [S] len 60"),
        model_version: "rules-v1".into(),
        detected_ns: None,
        window_key: None,
        closing: false,
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::thread_rng().r#gen::<u64>())
}

/// Reads `n` records from partition 0 of `topic` (or fails after 30 s).
async fn read_topic(bootstrap: &str, topic: &str, n: usize) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while out.len() < n {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => out.push(m.detach()),
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Err(_) => panic!("only {} of {n} records on {topic} after 30 s", out.len()),
        }
    }
    // Nothing beyond the expected records.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await.is_err(),
        "extra records on {topic}"
    );
    out
}

fn header(m: &OwnedMessage, key: &str) -> String {
    m.headers()
        .and_then(|h| h.iter().find(|h| h.key == key).and_then(|h| h.value))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

struct Fixture {
    _cluster: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    bootstrap: String,
    config: RouterConfig,
}

fn fixture(webhooks: Vec<WebhookConfig>, alerts_out: Option<std::path::PathBuf>) -> Fixture {
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let config = RouterConfig {
        brokers: bootstrap.clone(),
        group_id: unique("router"),
        anomalies_topic: unique("anomalies"),
        alerts_topic: unique("alerts"),
        dead_letter_topic: unique("dlq"),
        webhooks,
        retry: RetryConfig {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            max_attempts: 3,
            breaker_cooldown: Duration::from_millis(10),
            ..RetryConfig::default()
        },
        alerts_out,
        // Most tests here are about suppression and delivery: each group is its own alert.
        incidents: IncidentConfig { enabled: false, ..IncidentConfig::default() },
        ..RouterConfig::default()
    };
    for t in [&config.anomalies_topic, &config.alerts_topic, &config.dead_letter_topic] {
        cluster.create_topic(t, 1, 1).unwrap();
    }
    Fixture { _cluster: cluster, bootstrap, config }
}

async fn produce(bootstrap: &str, topic: &str, records: &[(String, Vec<u8>)]) {
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    for (key, payload) in records {
        producer.send(FutureRecord::to(topic).key(key).payload(payload), Duration::from_secs(5)).await.unwrap();
    }
}

fn encoded(a: &Anomaly) -> (String, Vec<u8>) {
    (a.host.clone(), a.encode(&SchemaIds::BUILT_IN))
}

async fn committed(bootstrap: &str, group: &str, topic: &str) -> Offset {
    let consumer: StreamConsumer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let tpl = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    tpl.find_partition(topic, 0).unwrap().offset()
}

/// Runs the router until it has drained the anomalies present now (the drain fires at once).
async fn run_drained(config: &RouterConfig) -> RouterReport {
    let drain = CancellationToken::new();
    drain.cancel();
    tokio::time::timeout(
        Duration::from_secs(60),
        run(config.clone(), CancellationToken::new(), RoleHandles::draining(drain)),
    )
    .await
    .expect("drain finished within 60 s")
    .expect("router ran")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_collapses_repeats_delivers_signed_webhooks_and_dead_letters_failures() {
    let (rx, base) = start_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("alerts.jsonl");
    let hook = |name: &str| WebhookConfig {
        url: format!("{base}/{name}"),
        secret: Some(Secret::new(SECRET)),
        timeout: Duration::from_secs(5),
        allow_private: true,
        ..WebhookConfig::default()
    };
    let f = fixture(vec![hook("ok"), hook("flaky"), hook("fail")], Some(out_path.clone()));
    let (a, b) = ("10.0.0.1", "10.0.0.2");
    let mut records = vec![
        encoded(&anomaly(a, AnomalyKind::Rate, 0, 11.0)),
        encoded(&anomaly(a, AnomalyKind::Rate, 10, 30.0)),
        encoded(&anomaly(a, AnomalyKind::Fanout, 5, 50.0)),
        // Poison: right framing, garbage Avro body.
        (a.to_string(), vec![0, 0, 0, 0, 2, 0xff, 0xff, 0xff]),
        encoded(&anomaly(a, AnomalyKind::Rate, 20, 12.0)),
        encoded(&anomaly(b, AnomalyKind::Rate, 0, 15.0)),
        // 100 s later: closes every window above; its own is emitted by the drain.
        encoded(&anomaly(b, AnomalyKind::Rate, 100, 16.0)),
    ];
    // Poison with a non-finite score (valid Avro, but not representable in the alert JSON).
    records.push(encoded(&anomaly(b, AnomalyKind::Victim, 100, f64::NAN)));
    produce(&f.bootstrap, &f.config.anomalies_topic, &records).await;

    let report = run_drained(&f.config).await;

    assert_eq!(report.anomalies_consumed, 8);
    assert_eq!(report.alerts_emitted, 4);
    assert_eq!(report.webhook_delivered, 8, "ok and flaky took every alert");
    assert_eq!(report.webhook_failed, 4, "fail refused every alert");
    assert_eq!(report.dead_lettered_anomalies, 2);
    assert_eq!(report.dead_lettered_alerts, 4);
    assert_eq!(report.groups_evicted, 0);

    // Alerts topic: the collapsed alerts.
    let alerts: Vec<Alert> = read_topic(&f.bootstrap, &f.config.alerts_topic, 4)
        .await
        .iter()
        .map(|m| {
            let alert: Alert = serde_json::from_slice(m.payload().unwrap()).unwrap();
            assert_eq!(m.key(), Some(alert.host.as_bytes()), "keyed by host");
            assert_eq!(header(m, topics::FORMAT_HEADER), "netanom");
            assert_eq!(header(m, topics::SCHEMA_VERSION_HEADER), "1");
            alert
        })
        .collect();
    let by_key: BTreeMap<(String, String, String), &Alert> =
        alerts.iter().map(|x| ((x.host.clone(), x.kind.to_string(), format_rfc3339(x.first_seen)), x)).collect();
    let get = |host: &str, kind: &str, start_s: i64| {
        *by_key
            .get(&(host.to_string(), kind.to_string(), format_rfc3339_ns(T0 + start_s * S)))
            .unwrap_or_else(|| panic!("no alert {host} {kind} at {start_s}s in {alerts:#?}"))
    };
    let rate_a = get(a, "rate", 0);
    assert_eq!((rate_a.count, rate_a.score, rate_a.last_seen), (3, 30.0, time_from_ns(T0 + 21 * S)));
    assert_eq!(rate_a.reason, "rate score 30");
    assert_eq!(get(a, "fanout", 5).count, 1);
    assert_eq!(get(b, "rate", 0).count, 1);
    let late = get(b, "rate", 100);
    assert_eq!((late.count, late.score), (1, 16.0));
    assert_eq!(by_key.len(), 4);

    // Webhooks: every alert reached ok and flaky with a valid signature; flaky needed two retries.
    assert_eq!(*rx.bad_signatures.lock().unwrap(), 0);
    for name in ["ok", "flaky"] {
        let accepted = rx.accepted.lock().unwrap().get(name).cloned().unwrap_or_default();
        let mut got: Vec<_> = accepted.iter().map(|(id, a)| (id.clone(), a.clone())).collect();
        got.sort_by(|x, y| x.0.cmp(&y.0));
        let mut want: Vec<_> = alerts.iter().map(|a| (a.delivery_id(), a.clone())).collect();
        want.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(got, want, "webhook {name}");
    }
    let calls = rx.calls.lock().unwrap().clone();
    assert_eq!(calls["flaky"], 4 + 2);
    assert_eq!(calls["fail"], 4 * 3, "3 attempts per alert");

    // Dead-letter topic: two poison anomalies and one record per alert the failing webhook refused.
    let dlq = read_topic(&f.bootstrap, &f.config.dead_letter_topic, 6).await;
    let poison: Vec<_> =
        dlq.iter().filter(|m| header(m, topics::DLQ_ORIGIN_HEADER).starts_with(&f.config.anomalies_topic)).collect();
    assert_eq!(poison.len(), 2);
    assert_eq!(header(poison[0], topics::DLQ_ORIGIN_HEADER), format!("{}/0/3", f.config.anomalies_topic));
    assert!(
        header(poison[0], topics::DLQ_REASON_HEADER).contains("malformed"),
        "{}",
        header(poison[0], topics::DLQ_REASON_HEADER)
    );
    assert_eq!(poison[0].payload(), Some(&records[3].1[..]));
    assert!(header(poison[1], topics::DLQ_REASON_HEADER).contains("non-finite"));
    let refused: Vec<_> =
        dlq.iter().filter(|m| header(m, topics::DLQ_ORIGIN_HEADER).starts_with(&f.config.alerts_topic)).collect();
    assert_eq!(refused.len(), 4);
    for m in &refused {
        let reason = header(m, topics::DLQ_REASON_HEADER);
        assert!(reason.contains(&format!("{base}/fail")) && reason.contains("503"), "{reason}");
        let alert: Alert = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert!(alerts.contains(&alert));
    }

    // alerts_out: the same alerts, one JSON line each.
    let text = std::fs::read_to_string(&out_path).unwrap();
    let mut lines: Vec<Alert> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut want = alerts.clone();
    lines.sort_by(|x, y| x.id.cmp(&y.id));
    want.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(lines, want);

    // Every offset was stored and committed: the group resumes after the last record.
    assert_eq!(committed(&f.bootstrap, &f.config.group_id, &f.config.anomalies_topic).await, Offset::Offset(8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_emits_open_groups_and_client_errors_are_not_retried() {
    let (rx, base) = start_receiver().await;
    let hooks = vec![WebhookConfig {
        url: format!("{base}/reject"),
        secret: Some(Secret::new(SECRET)),
        timeout: Duration::from_secs(5),
        allow_private: true,
        ..WebhookConfig::default()
    }];
    let mut f = fixture(hooks, None);
    // Neither the packet-time window nor flush_after can close the group: only shutdown emits it.
    f.config.suppression.flush_after = Duration::from_secs(3600);
    let records = [
        encoded(&anomaly("10.0.0.7", AnomalyKind::Fanout, 0, 20.0)),
        encoded(&anomaly("10.0.0.7", AnomalyKind::Fanout, 1, 21.0)),
        // Poison last: once it is on the dead-letter topic, both anomalies before it were consumed.
        ("10.0.0.7".to_string(), b"not avro".to_vec()),
    ];
    produce(&f.bootstrap, &f.config.anomalies_topic, &records).await;

    let shutdown = CancellationToken::new();
    let router = tokio::spawn(run(f.config.clone(), shutdown.clone(), RoleHandles::default()));
    let poison = read_topic(&f.bootstrap, &f.config.dead_letter_topic, 1).await;
    assert_eq!(header(&poison[0], topics::DLQ_ORIGIN_HEADER), format!("{}/0/2", f.config.anomalies_topic));
    assert!(rx.calls.lock().unwrap().is_empty(), "the group is still open");
    // The poison record is done, but the anomalies before it are not: nothing may be committed yet.
    assert_eq!(committed(&f.bootstrap, &f.config.group_id, &f.config.anomalies_topic).await, Offset::Invalid);

    shutdown.cancel();
    let report = tokio::time::timeout(Duration::from_secs(30), router).await.unwrap().unwrap().unwrap();
    assert_eq!(rx.calls.lock().unwrap()["reject"], 1, "a 400 is not retried");
    assert_eq!(*rx.bad_signatures.lock().unwrap(), 0);
    assert_eq!(report.anomalies_consumed, 3);
    assert_eq!(report.alerts_emitted, 1);
    assert_eq!(report.webhook_failed, 1);
    assert_eq!(report.dead_lettered_anomalies, 1);
    assert_eq!(report.dead_lettered_alerts, 1);
    let dlq = read_topic(&f.bootstrap, &f.config.dead_letter_topic, 2).await;
    assert!(
        header(&dlq[1], topics::DLQ_REASON_HEADER).contains("HTTP 400"),
        "{}",
        header(&dlq[1], topics::DLQ_REASON_HEADER)
    );
    let alerts = read_topic(&f.bootstrap, &f.config.alerts_topic, 1).await;
    let alert: Alert = serde_json::from_slice(alerts[0].payload().unwrap()).unwrap();
    assert_eq!((alert.count, alert.score), (2, 21.0));
    assert_eq!(committed(&f.bootstrap, &f.config.group_id, &f.config.anomalies_topic).await, Offset::Offset(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_output_gets_its_format_and_syslog_failures_are_dead_lettered() {
    let (rx, base) = start_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("alerts.ecs.jsonl");
    let hook = |name: &str, format| WebhookConfig {
        url: format!("{base}/{name}"),
        secret: Some(Secret::new(SECRET)),
        format,
        allow_private: true,
        ..WebhookConfig::default()
    };
    let mut f = fixture(
        vec![hook("raw-ecs", AlertFormat::Ecs), hook("raw-ocsf", AlertFormat::Ocsf), hook("ok", AlertFormat::Netanom)],
        Some(out_path.clone()),
    );
    f.config.alerts_format = AlertFormat::Ocsf;
    f.config.alerts_out_format = AlertFormat::Ecs;
    // Bind and drop a listener: connecting to this port is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    f.config.syslog = Some(SyslogConfig {
        address: format!("127.0.0.1:{port}"),
        transport: Transport::Tcp,
        timeout: Duration::from_secs(2),
        ..SyslogConfig::default()
    });
    let records = [
        encoded(&anomaly("10.0.0.1", AnomalyKind::Rate, 0, 30.0)),
        encoded(&anomaly("10.0.0.2", AnomalyKind::Fanout, 0, 50.0)),
    ];
    produce(&f.bootstrap, &f.config.anomalies_topic, &records).await;
    let report = run_drained(&f.config).await;
    assert_eq!(report.alerts_emitted, 2);
    assert_eq!((report.webhook_delivered, report.webhook_failed), (6, 0));
    assert_eq!((report.syslog_delivered, report.syslog_failed), (0, 2));
    assert_eq!(report.dead_lettered_alerts, 2, "one per failed syslog send");

    // Alerts topic: OCSF Detection Findings, still keyed by host.
    let topic = read_topic(&f.bootstrap, &f.config.alerts_topic, 2).await;
    let mut hosts = Vec::new();
    for m in &topic {
        let doc: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!(doc["class_uid"], 2004, "{doc:#}");
        assert_eq!(header(m, topics::FORMAT_HEADER), "ocsf");
        assert_eq!(header(m, topics::SCHEMA_VERSION_HEADER), OCSF_VERSION);
        assert_eq!(doc["metadata"]["version"], OCSF_VERSION);
        let ip = doc["evidences"][0]["src_endpoint"]["ip"].as_str().unwrap().to_string();
        assert_eq!(m.key(), Some(ip.as_bytes()));
        hosts.push(ip);
    }
    hosts.sort();
    assert_eq!(hosts, ["10.0.0.1", "10.0.0.2"]);

    // Webhooks: each in its own format, signatures valid.
    assert_eq!(*rx.bad_signatures.lock().unwrap(), 0);
    let raw = rx.raw.lock().unwrap().clone();
    assert_eq!(raw["raw-ecs"].len(), 2);
    for doc in &raw["raw-ecs"] {
        assert_eq!(doc["event"]["kind"], "alert", "{doc:#}");
        let (packet, processed) = (doc["@timestamp"].as_str().unwrap(), doc["event"]["created"].as_str().unwrap());
        assert!(processed > packet, "processing time {processed} is now, the packet time {packet} is in 2024");
        assert!(doc["source"]["ip"].is_string());
    }
    assert_eq!(raw["raw-ocsf"].len(), 2);
    assert!(raw["raw-ocsf"].iter().all(|d| d["type_uid"] == 200_401));
    let netanom = rx.accepted.lock().unwrap().get("ok").cloned().unwrap_or_default();
    assert_eq!(netanom.len(), 2, "the default format is still the alert JSON");

    // alerts_out: ECS lines.
    let text = std::fs::read_to_string(&out_path).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|d| d["ecs"]["version"].is_string() && d["rule"]["ruleset"] == "netanom"));

    // Dead-letter topic: the alert JSON of each alert the syslog receiver did not take, with the reason.
    let dlq = read_topic(&f.bootstrap, &f.config.dead_letter_topic, 2).await;
    let mut dead: Vec<String> = Vec::new();
    for m in &dlq {
        let reason = header(m, topics::DLQ_REASON_HEADER);
        assert!(reason.starts_with(&format!("syslog tcp://127.0.0.1:{port} failed")), "{reason}");
        assert!(header(m, topics::DLQ_ORIGIN_HEADER).starts_with(&f.config.alerts_topic));
        let alert: Alert = serde_json::from_slice(m.payload().unwrap()).unwrap();
        dead.push(alert.host);
    }
    dead.sort();
    assert_eq!(dead, ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(committed(&f.bootstrap, &f.config.group_id, &f.config.anomalies_topic).await, Offset::Offset(2));
}

/// Copies of an anomaly (a detector that crashed before committing produces its last chunk again) are counted
/// once, also by a router that restarts after the originals were accounted for: it reads the ids below its
/// committed offset back before consuming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_of_an_anomaly_count_once_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("alerts.jsonl");
    let f = fixture(vec![], Some(out_path.clone()));
    let a = "10.0.0.1";
    let originals: Vec<Anomaly> = [0, 10, 20].iter().map(|s| anomaly(a, AnomalyKind::Rate, *s, 20.0)).collect();
    let mut records: Vec<(String, Vec<u8>)> = originals.iter().map(encoded).collect();
    records.extend([encoded(&originals[0]), encoded(&originals[1])]);
    produce(&f.bootstrap, &f.config.anomalies_topic, &records).await;
    let report = run_drained(&f.config).await;
    assert_eq!((report.anomalies_consumed, report.duplicates_dropped, report.alerts_emitted), (5, 2, 1));
    assert_eq!(committed(&f.bootstrap, &f.config.group_id, &f.config.anomalies_topic).await, Offset::Offset(5));

    // After a restart: copies of two anomalies accounted for, and a new one.
    let later = anomaly(a, AnomalyKind::Rate, 30, 20.0);
    produce(
        &f.bootstrap,
        &f.config.anomalies_topic,
        &[encoded(&originals[2]), encoded(&originals[0]), encoded(&later)],
    )
    .await;
    let report = run_drained(&f.config).await;
    assert_eq!(report.anomalies_rebuilt, 5, "the records below the committed offset put their ids back");
    assert_eq!((report.anomalies_consumed, report.duplicates_dropped, report.alerts_emitted), (3, 2, 1));
    let counts: Vec<u64> = std::fs::read_to_string(&out_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Alert>(l).unwrap().count)
        .collect();
    assert_eq!(counts, [3, 1], "every distinct anomaly counted once");

    // Deduplication off: the copies inflate the count.
    let g = fixture(vec![], None);
    let config = RouterConfig { dedup_ids: 0, ..g.config.clone() };
    produce(&g.bootstrap, &config.anomalies_topic, &records).await;
    let report = run_drained(&config).await;
    assert_eq!((report.anomalies_consumed, report.duplicates_dropped), (5, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kinds_of_one_host_reach_every_output_as_one_incident() {
    let (rx, base) = start_receiver().await;
    let hook = WebhookConfig {
        url: format!("{base}/ok"),
        secret: Some(Secret::new(SECRET)),
        timeout: Duration::from_secs(5),
        allow_private: true,
        ..WebhookConfig::default()
    };
    let mut f = fixture(vec![hook], None);
    // Held past the run: each incident is told once, by its closing revision at drain.
    f.config.incidents = IncidentConfig { hold: Duration::from_secs(3600), ..IncidentConfig::default() };
    let (a, b) = ("10.0.0.1", "10.0.0.2");
    let records = [
        encoded(&anomaly(a, AnomalyKind::Rate, 0, 11.0)),
        encoded(&anomaly(a, AnomalyKind::Fanout, 5, 50.0)),
        encoded(&anomaly(b, AnomalyKind::Rate, 3, 15.0)),
        encoded(&anomaly(a, AnomalyKind::Profile, 40, 12.0)),
        encoded(&anomaly(a, AnomalyKind::Rate, 70, 30.0)),
    ];
    produce(&f.bootstrap, &f.config.anomalies_topic, &records).await;
    let report = run_drained(&f.config).await;
    assert_eq!((report.anomalies_consumed, report.alerts_emitted), (5, 2), "one incident per host");

    let alerts: Vec<Alert> = read_topic(&f.bootstrap, &f.config.alerts_topic, 2)
        .await
        .iter()
        .map(|m| serde_json::from_slice(m.payload().unwrap()).unwrap())
        .collect();
    let incident = alerts.iter().find(|x| x.host == a).unwrap_or_else(|| panic!("{alerts:#?}"));
    assert_eq!(incident.id, format!("{a}/rate/{}", format_rfc3339_ns(T0)));
    assert_eq!((incident.revision, incident.final_revision, incident.count), (1, true, 4));
    let kinds: Vec<(AnomalyKind, u64)> = incident.kinds.iter().map(|k| (k.kind, k.count)).collect();
    assert_eq!(kinds, [(AnomalyKind::Rate, 2), (AnomalyKind::Fanout, 1), (AnomalyKind::Profile, 1)]);
    assert_eq!((incident.first_seen, incident.last_seen), (time_from_ns(T0), time_from_ns(T0 + 71 * S)));
    assert_eq!(incident.reason, "fanout score 50", "the strongest kind heads the incident");
    // The webhook got each revision under id#revision.
    let accepted = rx.accepted.lock().unwrap().get("ok").cloned().unwrap_or_default();
    let mut ids: Vec<String> = accepted.iter().map(|(id, _)| id.clone()).collect();
    ids.sort();
    let mut want: Vec<String> = alerts.iter().map(Alert::delivery_id).collect();
    want.sort();
    assert_eq!(ids, want);
    assert!(ids.iter().all(|id| id.ends_with("#1")), "{ids:?}");
    assert_eq!(committed(&f.bootstrap, &f.config.group_id, &f.config.anomalies_topic).await, Offset::Offset(5));
}

/// The webhooks deliver from the alerts topic, each with its own consumer group: a black-holed webhook (it
/// accepts requests and never answers) delays neither the alerts topic, nor the anomalies' committed offsets, nor
/// a healthy webhook. A restarted router resumes each webhook from its own committed position: the healthy one
/// gets nothing twice; the black-holed one, once it answers again, catches up with every alert, each under the
/// same `webhook-id` as the attempts it left unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_webhook_holds_up_nothing_and_catches_up_after_a_restart() {
    use std::sync::atomic::Ordering;
    let (rx, base) = start_receiver().await;
    rx.black_hole.store(true, Ordering::SeqCst);
    let hook = |name: &str| WebhookConfig {
        name: name.into(),
        url: format!("{base}/{name}"),
        secret: Some(Secret::new(SECRET)),
        timeout: Duration::from_millis(500),
        allow_private: true,
        ..WebhookConfig::default()
    };
    let mut f = fixture(vec![hook("hole"), hook("ok")], None);
    f.config.retry = RetryConfig {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        max_attempts: 0,
        breaker_failures: 4,
        breaker_cooldown: Duration::from_millis(300),
    };
    f.config.max_concurrency = 4;
    // The restarted router's destinations join their groups again; the mock broker holds that join until the
    // previous member's session expired (45 s by default).
    f.config.kafka_properties.insert("session.timeout.ms".into(), "6000".into());
    f.config.kafka_properties.insert("heartbeat.interval.ms".into(), "500".into());
    f.config.suppression.flush_after = Duration::from_millis(50);
    f.config.shutdown_grace = Duration::from_secs(1);
    const N: usize = 40;
    let records: Vec<_> =
        (0..N).map(|i| encoded(&anomaly(&format!("10.1.0.{i}"), AnomalyKind::Rate, 0, 20.0))).collect();
    produce(&f.bootstrap, &f.config.anomalies_topic, &records).await;

    let started = tokio::time::Instant::now();
    let shutdown = CancellationToken::new();
    let router = tokio::spawn(run(f.config.clone(), shutdown.clone(), RoleHandles::default()));
    // Every alert reaches the topic and the healthy webhook, and every anomaly is committed, while the black hole
    // has answered nothing.
    let alerts: Vec<Alert> = read_topic(&f.bootstrap, &f.config.alerts_topic, N)
        .await
        .iter()
        .map(|m| serde_json::from_slice(m.payload().unwrap()).unwrap())
        .collect();
    let topic_latency = started.elapsed();
    let ok_ids = || -> Vec<String> {
        rx.accepted.lock().unwrap().get("ok").map(|v| v.iter().map(|(id, _)| id.clone()).collect()).unwrap_or_default()
    };
    let hole_ids = || -> Vec<String> {
        rx.accepted
            .lock()
            .unwrap()
            .get("hole")
            .map(|v| v.iter().map(|(id, _)| id.clone()).collect())
            .unwrap_or_default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ok_ids().len() < N && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let healthy_latency = started.elapsed();
    assert_eq!(ok_ids().len(), N, "the healthy webhook got every alert while the other one is black-holed");
    assert_eq!(committed(&f.bootstrap, &f.config.group_id, &f.config.anomalies_topic).await, Offset::Offset(N as i64));
    let hole_calls = rx.calls.lock().unwrap().get("hole").copied().unwrap_or(0);
    assert!(hole_calls >= 1 && hole_ids().is_empty(), "the black hole was called ({hole_calls}) and answered nothing");
    let hole_group = format!("{}.deliver.hole", f.config.group_id);
    assert_eq!(committed(&f.bootstrap, &hole_group, &f.config.alerts_topic).await, Offset::Invalid);

    // Stopped while it is still black-holed: nothing of it is committed.
    shutdown.cancel();
    let report = tokio::time::timeout(Duration::from_secs(30), router).await.unwrap().unwrap().unwrap();
    assert_eq!((report.alerts_emitted, report.webhook_delivered, report.webhook_failed), (N as u64, N as u64, 0));
    assert_eq!(committed(&f.bootstrap, &hole_group, &f.config.alerts_topic).await, Offset::Invalid);
    let unanswered = rx.calls.lock().unwrap().get("hole").copied().unwrap_or(0);

    // A restarted router: each webhook resumes from its committed position; the black hole answers again a
    // little later and catches up (its breaker, open by then, lets a probe through, then closes).
    let shutdown = CancellationToken::new();
    let router = tokio::spawn(run(f.config.clone(), shutdown.clone(), RoleHandles::default()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    rx.black_hole.store(false, Ordering::SeqCst);
    let recovered = tokio::time::Instant::now();
    let want: std::collections::BTreeSet<String> = alerts.iter().map(Alert::delivery_id).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got: std::collections::BTreeSet<String> = hole_ids().into_iter().collect();
        if got == want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after the restart the webhook has {} of {N}; calls {:?}",
            got.len(),
            rx.calls.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let caught_up = recovered.elapsed();
    // Settle: nothing more comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    let report = tokio::time::timeout(Duration::from_secs(30), router).await.unwrap().unwrap().unwrap();
    assert_eq!(report.alerts_emitted, 0, "the restarted router had no new anomaly");
    let ok = ok_ids();
    assert_eq!(ok.len(), N, "the healthy webhook got nothing twice");
    let hole = hole_ids();
    assert_eq!(hole.len(), N, "the black hole acknowledged nothing before the restart: no alert twice");
    assert_eq!(*rx.bad_signatures.lock().unwrap(), 0);
    assert_eq!(committed(&f.bootstrap, &hole_group, &f.config.alerts_topic).await, Offset::Offset(N as i64));
    eprintln!(
        "black hole: {N} alerts on the topic after {topic_latency:?}, at the healthy webhook after \
         {healthy_latency:?}; {unanswered} requests unanswered by the black hole before the restart; after the \
         restart it caught up {caught_up:?} after it answered again, {} alerts to it, {} to the healthy one",
        hole.len(),
        ok.len()
    );
}

/// A refused alert is parked with the destination's name; once the receiver takes it, `dlq replay` delivers it
/// (same `webhook-id`), for that destination only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_alerts_name_their_destination_and_replay_delivers_them() {
    use std::sync::atomic::Ordering;
    let (rx, base) = start_receiver().await;
    rx.picky.store(true, Ordering::SeqCst);
    let hook = |name: &str| WebhookConfig {
        name: name.into(),
        url: format!("{base}/{name}"),
        secret: Some(Secret::new(SECRET)),
        allow_private: true,
        ..WebhookConfig::default()
    };
    let mut f = fixture(vec![hook("picky"), hook("reject")], None);
    f.config.alerts_format = AlertFormat::Ecs;
    let records = [
        encoded(&anomaly("10.0.0.1", AnomalyKind::Rate, 0, 30.0)),
        encoded(&anomaly("10.0.0.2", AnomalyKind::Fanout, 0, 50.0)),
    ];
    produce(&f.bootstrap, &f.config.anomalies_topic, &records).await;
    let report = run_drained(&f.config).await;
    assert_eq!((report.webhook_delivered, report.webhook_failed, report.dead_lettered_alerts), (0, 4, 4));
    assert_eq!(rx.calls.lock().unwrap()["picky"], 2, "a 422 is not retried");
    let dlq = read_topic(&f.bootstrap, &f.config.dead_letter_topic, 4).await;
    let mut named: Vec<String> = dlq.iter().map(|m| header(m, topics::DLQ_DESTINATION_HEADER)).collect();
    named.sort();
    assert_eq!(named, ["picky", "picky", "reject", "reject"]);
    for m in &dlq {
        // The native alert, though the topic is ECS.
        let alert: Alert = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert!(header(m, topics::DLQ_ORIGIN_HEADER).starts_with(&f.config.alerts_topic));
        assert!(header(m, topics::DLQ_REASON_HEADER).contains("HTTP 4"), "{}", alert.id);
    }

    rx.picky.store(false, Ordering::SeqCst);
    let replayed = netanom_alert_router::dlq::replay(&f.config, Some("picky"), 5).await.unwrap();
    assert_eq!((replayed.found, replayed.delivered, replayed.parked_again), (2, 2, 0));
    assert!(!replayed.incomplete, "every partition read to its end: {replayed:?}");
    let accepted = rx.accepted.lock().unwrap().get("picky").cloned().unwrap_or_default();
    let mut ids: Vec<String> = accepted
        .iter()
        .map(|(id, a)| {
            assert_eq!(*id, a.delivery_id());
            id.clone()
        })
        .collect();
    ids.sort();
    let mut want: Vec<String> = dlq
        .iter()
        .filter(|m| header(m, topics::DLQ_DESTINATION_HEADER) == "picky")
        .map(|m| serde_json::from_slice::<Alert>(m.payload().unwrap()).unwrap().delivery_id())
        .collect();
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(rx.calls.lock().unwrap()["reject"], 2, "the other destination's parked alerts were left alone");

    // Every destination: `picky` resumes after what it delivered (nothing new), the two `reject` refuses again
    // are parked again; unknown names are an error.
    let replayed = netanom_alert_router::dlq::replay(&f.config, None, 5).await.unwrap();
    assert_eq!((replayed.found, replayed.delivered, replayed.parked_again), (2, 0, 2));
    assert_eq!(rx.accepted.lock().unwrap()["picky"].len(), 2, "nothing delivered twice");
    let e = netanom_alert_router::dlq::replay(&f.config, Some("nope"), 5).await.unwrap_err().to_string();
    assert!(e.contains("nope") && e.contains("picky"), "{e}");
}

/// Beyond `digest_above` alerts a minute, a webhook gets the further alerts as one signed digest naming them;
/// another webhook without `digest_above` gets every alert on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_over_its_rate_gets_one_digest_naming_the_rest() {
    let (rx, base) = start_receiver().await;
    let hook = |name: &str, digest_above| WebhookConfig {
        name: name.into(),
        url: format!("{base}/{name}"),
        secret: Some(Secret::new(SECRET)),
        allow_private: true,
        digest_above,
        ..WebhookConfig::default()
    };
    let mut f = fixture(vec![hook("raw-digest", 3), hook("ok", 0)], None);
    // One alert at a time, so the first three go on their own.
    f.config.max_concurrency = 1;
    const N: usize = 10;
    let records: Vec<_> =
        (0..N).map(|i| encoded(&anomaly(&format!("10.2.0.{i}"), AnomalyKind::Rate, 0, 20.0))).collect();
    produce(&f.bootstrap, &f.config.anomalies_topic, &records).await;
    let report = run_drained(&f.config).await;
    assert_eq!((report.alerts_emitted, report.webhook_delivered, report.webhook_failed), (N as u64, 2 * N as u64, 0));
    assert_eq!(*rx.bad_signatures.lock().unwrap(), 0, "the digest is signed like any alert");
    let raw = rx.raw.lock().unwrap()["raw-digest"].clone();
    let (digests, singles): (Vec<_>, Vec<_>) = raw.iter().partition(|d| d["type"] == "netanom.digest");
    assert_eq!((singles.len(), digests.len()), (3, 1), "{raw:#?}");
    let digest = digests[0];
    assert_eq!(digest["count"], N - 3);
    let mut ids: Vec<String> = singles
        .iter()
        .map(|a| format!("{}#{}", a["id"].as_str().unwrap(), a["revision"]))
        .chain(digest["alerts"].as_array().unwrap().iter().map(|a| a["webhook_id"].as_str().unwrap().to_string()))
        .collect();
    ids.sort();
    let mut want: Vec<String> = rx.accepted.lock().unwrap()["ok"].iter().map(|(id, _)| id.clone()).collect();
    want.sort();
    assert_eq!(want.len(), N, "the other webhook got every alert on its own");
    assert_eq!(ids, want, "the singles and the digest name every alert once");
    assert!(digest["alerts"][0]["host"].as_str().unwrap().starts_with("10.2.0."));
    assert_eq!(
        committed(&f.bootstrap, &format!("{}.deliver.raw-digest", f.config.group_id), &f.config.alerts_topic).await,
        Offset::Offset(N as i64)
    );
}

/// A destination that cannot park an alert (the dead-letter topic refuses writes) stops the router with an error
/// naming it, so that the process exits non-zero and is restarted, instead of running on without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_destination_stops_the_router_with_its_error() {
    let (_rx, base) = start_receiver().await;
    let f = fixture(
        vec![WebhookConfig {
            name: "reject".into(),
            url: format!("{base}/reject"),
            secret: Some(Secret::new(SECRET)),
            allow_private: true,
            ..WebhookConfig::default()
        }],
        None,
    );
    f._cluster
        .topic_error(
            &f.config.dead_letter_topic,
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        )
        .unwrap();
    produce(&f.bootstrap, &f.config.anomalies_topic, &[encoded(&anomaly("10.0.0.1", AnomalyKind::Rate, 0, 30.0))])
        .await;
    // No drain, no shutdown: only the destination's failure ends the run.
    let ended = tokio::time::timeout(
        Duration::from_secs(60),
        run(f.config.clone(), CancellationToken::new(), RoleHandles::default()),
    )
    .await
    .expect("the router stopped when its destination failed");
    let e = ended.expect_err("the router reports the destination's failure");
    assert!(matches!(e, netanom_alert_router::RouterError::Destination { ref name, .. } if name == "reject"), "{e}");
    assert!(e.to_string().contains("destination reject failed"), "{e}");
}

/// `dlq replay` resumes where the last one stopped, parks a refused alert again once per replay (with its attempts
/// counted), takes one of several copies of an alert, and leaves an alert parked once its attempts reached
/// `max_attempts`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_resumes_parks_again_once_and_gives_up_after_max_attempts() {
    let (rx, base) = start_receiver().await;
    let f = fixture(
        vec![WebhookConfig {
            name: "reject".into(),
            url: format!("{base}/reject"),
            secret: Some(Secret::new(SECRET)),
            allow_private: true,
            ..WebhookConfig::default()
        }],
        None,
    );
    let records = [
        encoded(&anomaly("10.0.0.1", AnomalyKind::Rate, 0, 30.0)),
        encoded(&anomaly("10.0.0.2", AnomalyKind::Fanout, 0, 50.0)),
    ];
    produce(&f.bootstrap, &f.config.anomalies_topic, &records).await;
    let report = run_drained(&f.config).await;
    assert_eq!(report.dead_lettered_alerts, 2);
    let parked = read_topic(&f.bootstrap, &f.config.dead_letter_topic, 2).await;
    assert!(parked.iter().all(|m| header(m, topics::DLQ_ATTEMPTS_HEADER) == "1"));
    // A copy of the first parked alert (as a restarted router parks it again).
    let copy = &parked[0];
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &f.bootstrap).create().unwrap();
    let mut headers = rdkafka::message::OwnedHeaders::new();
    for h in copy.headers().unwrap().iter() {
        headers = headers.insert(rdkafka::message::Header { key: h.key, value: h.value });
    }
    producer
        .send(
            FutureRecord::<[u8], [u8]>::to(&f.config.dead_letter_topic)
                .payload(copy.payload().unwrap())
                .headers(headers),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let calls = || rx.calls.lock().unwrap().get("reject").copied().unwrap_or(0);
    assert_eq!(calls(), 2);

    let replay = |max| netanom_alert_router::dlq::replay(&f.config, None, max);
    let r = replay(3).await.unwrap();
    assert_eq!((r.found, r.duplicates, r.delivered, r.parked_again, r.exhausted), (2, 1, 0, 2, 0), "{r:?}");
    assert_eq!(calls(), 4, "each alert tried once");
    let dlq = read_topic(&f.bootstrap, &f.config.dead_letter_topic, 5).await;
    let again = &dlq[3..];
    assert!(again.iter().all(|m| header(m, topics::DLQ_ATTEMPTS_HEADER) == "2"), "attempts counted");
    assert!(!header(&again[0], topics::DLQ_REPLAY_HEADER).is_empty());
    assert!(again.iter().all(|m| header(m, topics::DLQ_ORIGIN_HEADER).starts_with(&f.config.alerts_topic)));

    // The next replay takes only what the previous one parked again.
    let r = replay(3).await.unwrap();
    assert_eq!((r.found, r.duplicates, r.parked_again, r.exhausted), (2, 0, 2, 0), "{r:?}");
    assert_eq!(calls(), 6);
    let dlq = read_topic(&f.bootstrap, &f.config.dead_letter_topic, 7).await;
    assert!(dlq[5..].iter().all(|m| header(m, topics::DLQ_ATTEMPTS_HEADER) == "3"));

    // Attempts reached: they stay parked, untried.
    let r = replay(3).await.unwrap();
    assert_eq!((r.found, r.parked_again, r.exhausted), (0, 0, 2), "{r:?}");
    assert_eq!(calls(), 6);
    read_topic(&f.bootstrap, &f.config.dead_letter_topic, 7).await;
    let group = format!("{}.dlq-replay.reject", f.config.group_id);
    assert_eq!(committed(&f.bootstrap, &group, &f.config.dead_letter_topic).await, Offset::Offset(7));
    let e = replay(0).await.unwrap_err().to_string();
    assert!(e.contains("max_attempts"), "{e}");
}

/// `dlq replay` commits each record once its alert was delivered: a replay stopped while the second alert is in
/// flight has committed the first, and the next replay delivers only the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replay_resumes_after_the_last_delivered_alert() {
    use std::sync::atomic::Ordering;
    let (rx, base) = start_receiver().await;
    let f = fixture(
        vec![WebhookConfig {
            name: "slow".into(),
            url: format!("{base}/slow"),
            secret: Some(Secret::new(SECRET)),
            allow_private: true,
            timeout: Duration::from_secs(30),
            ..WebhookConfig::default()
        }],
        None,
    );
    let records = [
        encoded(&anomaly("10.0.0.1", AnomalyKind::Rate, 0, 30.0)),
        encoded(&anomaly("10.0.0.2", AnomalyKind::Fanout, 0, 50.0)),
    ];
    produce(&f.bootstrap, &f.config.anomalies_topic, &records).await;
    assert_eq!(run_drained(&f.config).await.dead_lettered_alerts, 2);
    rx.slow.store(1, Ordering::SeqCst);
    let config = f.config.clone();
    let replay = tokio::spawn(async move { netanom_alert_router::dlq::replay(&config, None, 5).await });
    let accepted = || rx.accepted.lock().unwrap().get("slow").map(Vec::len).unwrap_or(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while (accepted() < 1 || rx.calls.lock().unwrap()["slow"] < 4) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!((accepted(), rx.calls.lock().unwrap()["slow"]), (1, 4), "the first delivered, the second hangs");
    replay.abort();
    let _ = replay.await;
    let group = format!("{}.dlq-replay.slow", f.config.group_id);
    assert_eq!(committed(&f.bootstrap, &group, &f.config.dead_letter_topic).await, Offset::Offset(1));

    rx.slow.store(2, Ordering::SeqCst);
    let r = netanom_alert_router::dlq::replay(&f.config, None, 5).await.unwrap();
    assert_eq!((r.found, r.delivered), (1, 1), "{r:?}");
    let mut ids: Vec<String> = rx.accepted.lock().unwrap()["slow"].iter().map(|(id, _)| id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2, "both alerts delivered, each once");
    assert_eq!(committed(&f.bootstrap, &group, &f.config.dead_letter_topic).await, Offset::Offset(2));
}

/// Two routers of one group whose webhook (one destination, `hole`) is black-holed: the second joins while the
/// first has every alert in flight (more than its concurrency), the destination's partitions are shared out, and
/// once the webhook answers every alert reaches it exactly once. The first router dropped the deliveries of the
/// partition it lost (the new owner made them; the first router's URL is `hole`, the second's `hole-b`), and it
/// kept serving the rebalance while all its slots were taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_partitions_deliveries_are_dropped_and_its_new_owner_makes_them() {
    use std::sync::atomic::Ordering;
    let (rx, base) = start_receiver().await;
    rx.black_hole.store(true, Ordering::SeqCst);
    let hook = |path: &str| WebhookConfig {
        name: "hole".into(),
        url: format!("{base}/{path}"),
        secret: Some(Secret::new(SECRET)),
        timeout: Duration::from_millis(500),
        allow_private: true,
        ..WebhookConfig::default()
    };
    let mut f = fixture(vec![hook("hole")], None);
    f.config.alerts_topic = unique("alerts");
    f._cluster.create_topic(&f.config.alerts_topic, 2, 1).unwrap();
    f.config.retry = RetryConfig {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        max_attempts: 0,
        breaker_failures: 0,
        breaker_cooldown: Duration::from_millis(300),
    };
    f.config.max_concurrency = 4;
    f.config.kafka_properties.insert("session.timeout.ms".into(), "6000".into());
    f.config.kafka_properties.insert("heartbeat.interval.ms".into(), "500".into());
    f.config.suppression.flush_after = Duration::from_millis(50);
    f.config.shutdown_grace = Duration::from_secs(1);
    const N: usize = 12;
    let records: Vec<_> =
        (0..N).map(|i| encoded(&anomaly(&format!("10.3.0.{i}"), AnomalyKind::Rate, 0, 20.0))).collect();
    produce(&f.bootstrap, &f.config.anomalies_topic, &records).await;
    let calls = || rx.calls.lock().unwrap().get("hole").copied().unwrap_or(0);
    let stop_a = CancellationToken::new();
    let a = tokio::spawn(run(f.config.clone(), stop_a.clone(), RoleHandles::default()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while calls() < 4 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(calls() >= 4, "the first router has its slots taken");

    let mut config_b = f.config.clone();
    config_b.webhooks = vec![hook("hole-b")];
    let stop_b = CancellationToken::new();
    let b = tokio::spawn(run(config_b, stop_b.clone(), RoleHandles::default()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while rx.calls.lock().unwrap().get("hole-b").copied().unwrap_or(0) == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rx.calls.lock().unwrap().contains_key("hole-b"), "the second router got a partition");
    // Both members settled.
    tokio::time::sleep(Duration::from_secs(3)).await;
    rx.black_hole.store(false, Ordering::SeqCst);
    let ids = |name: &str| -> Vec<String> {
        rx.accepted.lock().unwrap().get(name).map(|v| v.iter().map(|(id, _)| id.clone()).collect()).unwrap_or_default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let all: std::collections::BTreeSet<String> = ids("hole").into_iter().chain(ids("hole-b")).collect();
        if all.len() == N {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{} of {N} alerts delivered", all.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing more comes: no retry of a dropped delivery.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (from_a, from_b) = (ids("hole"), ids("hole-b"));
    assert!(!from_a.is_empty() && !from_b.is_empty(), "each router delivered its partition: {from_a:?} {from_b:?}");
    assert_eq!(from_a.len() + from_b.len(), N, "every alert exactly once: {from_a:?} {from_b:?}");
    stop_a.cancel();
    stop_b.cancel();
    for r in [a, b] {
        tokio::time::timeout(Duration::from_secs(30), r).await.unwrap().unwrap().unwrap();
    }
    assert_eq!(*rx.bad_signatures.lock().unwrap(), 0);
}

/// A router whose destination the group assigned no partition stops at once on shutdown, instead of waiting its
/// whole `shutdown_grace` for alerts another member delivers. Two routers share one destination (`ok`) with a
/// one-partition alerts topic; each reaches the receiver by its own URL, which tells which one owns the partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_assigned_nothing_stops_at_once() {
    let (rx, base) = start_receiver().await;
    let hook = |path: &str| WebhookConfig {
        name: "ok".into(),
        url: format!("{base}/{path}"),
        secret: Some(Secret::new(SECRET)),
        allow_private: true,
        ..WebhookConfig::default()
    };
    let mut f = fixture(vec![hook("ok")], None);
    f.config.kafka_properties.insert("session.timeout.ms".into(), "6000".into());
    f.config.kafka_properties.insert("heartbeat.interval.ms".into(), "500".into());
    f.config.suppression.flush_after = Duration::from_millis(50);
    f.config.shutdown_grace = Duration::from_secs(20);
    let accepted = |name: &str| rx.accepted.lock().unwrap().get(name).map(Vec::len).unwrap_or(0);
    let wait_for = |n: usize| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while accepted("ok") + accepted("ok-b") < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(accepted("ok") + accepted("ok-b"), n, "alerts delivered");
    };
    produce(&f.bootstrap, &f.config.anomalies_topic, &[encoded(&anomaly("10.0.0.1", AnomalyKind::Rate, 0, 30.0))])
        .await;
    let stop_a = CancellationToken::new();
    let a = tokio::spawn(run(f.config.clone(), stop_a.clone(), RoleHandles::default()));
    wait_for(1).await;
    let mut config_b = f.config.clone();
    config_b.webhooks = vec![hook("ok-b")];
    let stop_b = CancellationToken::new();
    let b = tokio::spawn(run(config_b, stop_b.clone(), RoleHandles::default()));
    // The group shares out the one partition of each topic; the owner of the alerts topic's delivers the next.
    tokio::time::sleep(Duration::from_secs(8)).await;
    produce(&f.bootstrap, &f.config.anomalies_topic, &[encoded(&anomaly("10.0.0.2", AnomalyKind::Rate, 0, 30.0))])
        .await;
    wait_for(2).await;
    let b_owns = rx.accepted.lock().unwrap().get("ok-b").is_some_and(|v| v.iter().any(|(_, a)| a.host == "10.0.0.2"));
    let ((idle_stop, idle), (busy_stop, busy)) =
        if b_owns { ((stop_a, a), (stop_b, b)) } else { ((stop_b, b), (stop_a, a)) };
    let t0 = tokio::time::Instant::now();
    idle_stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), idle).await.unwrap().unwrap().unwrap();
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(5), "the member assigned nothing stopped after {took:?} (grace 20 s)");
    busy_stop.cancel();
    tokio::time::timeout(Duration::from_secs(40), busy).await.unwrap().unwrap().unwrap();
    eprintln!("the member assigned nothing stopped after {took:?} (grace 20 s); second router owned: {b_owns}");
}

/// A digest interrupted by a restart (the webhook never answered it) is sent again after the restart with the
/// same `webhook-id`: the id is derived from the alerts it summarises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_keeps_its_webhook_id_across_a_restart() {
    use std::sync::atomic::Ordering;
    let (rx, base) = start_receiver().await;
    rx.black_hole.store(true, Ordering::SeqCst);
    let mut f = fixture(
        vec![WebhookConfig {
            name: "raw-digest".into(),
            url: format!("{base}/raw-digest"),
            secret: Some(Secret::new(SECRET)),
            allow_private: true,
            digest_above: 3,
            timeout: Duration::from_secs(30),
            ..WebhookConfig::default()
        }],
        None,
    );
    f.config.shutdown_grace = Duration::from_secs(2);
    f.config.kafka_properties.insert("session.timeout.ms".into(), "6000".into());
    f.config.kafka_properties.insert("heartbeat.interval.ms".into(), "500".into());
    const N: usize = 10;
    let records: Vec<_> =
        (0..N).map(|i| encoded(&anomaly(&format!("10.4.0.{i}"), AnomalyKind::Rate, 0, 20.0))).collect();
    produce(&f.bootstrap, &f.config.anomalies_topic, &records).await;
    // First run: the webhook answers nothing; the digest of the alerts beyond the rate goes out at the stop.
    run_drained(&f.config).await;
    let first = rx.digest_ids.lock().unwrap().clone();
    assert_eq!(first.len(), 1, "one digest attempt: {first:?}");
    let group = format!("{}.deliver.raw-digest", f.config.group_id);
    assert_eq!(committed(&f.bootstrap, &group, &f.config.alerts_topic).await, Offset::Invalid);

    // Restarted: the alerts not committed are delivered again, the digest with the id it had.
    rx.black_hole.store(false, Ordering::SeqCst);
    rx.digest_ids.lock().unwrap().clear();
    let stop = CancellationToken::new();
    let router = tokio::spawn(run(f.config.clone(), stop.clone(), RoleHandles::default()));
    let delivered = || rx.raw.lock().unwrap().get("raw-digest").map(Vec::len).unwrap_or(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while delivered() < 4 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), router).await.unwrap().unwrap().unwrap();
    let raw = rx.raw.lock().unwrap().get("raw-digest").cloned().unwrap_or_default();
    let digests: Vec<_> = raw.iter().filter(|d| d["type"] == "netanom.digest").collect();
    assert_eq!(digests.len(), 1, "{raw:#?}");
    let again = rx.digest_ids.lock().unwrap().clone();
    assert_eq!(again, first, "the same webhook-id after the restart");
    assert_eq!(committed(&f.bootstrap, &group, &f.config.alerts_topic).await, Offset::Offset(N as i64));
}

/// A webhook added with `start_from = "latest"` gets only the alerts published after it started; one added with
/// the default (`earliest`) gets every alert the topic holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_destination_starts_at_the_end_of_the_topic_when_configured_so() {
    let (rx, base) = start_receiver().await;
    let hook = |name: &str, start_from| WebhookConfig {
        name: name.into(),
        url: format!("{base}/{name}"),
        secret: Some(Secret::new(SECRET)),
        allow_private: true,
        start_from,
        ..WebhookConfig::default()
    };
    let mut f = fixture(vec![hook("ok", netanom_alert_router::StartFrom::Earliest)], None);
    f.config.suppression.flush_after = Duration::from_millis(50);
    // The restarted router joins its groups again; the mock broker holds that join until the previous member's
    // session expired.
    f.config.kafka_properties.insert("session.timeout.ms".into(), "6000".into());
    f.config.kafka_properties.insert("heartbeat.interval.ms".into(), "500".into());
    let first: Vec<_> = (0..3).map(|i| encoded(&anomaly(&format!("10.5.0.{i}"), AnomalyKind::Rate, 0, 20.0))).collect();
    produce(&f.bootstrap, &f.config.anomalies_topic, &first).await;
    assert_eq!(run_drained(&f.config).await.webhook_delivered, 3);

    f.config.webhooks.push(hook("late", netanom_alert_router::StartFrom::Latest));
    f.config.webhooks.push(hook("all", netanom_alert_router::StartFrom::Earliest));
    let stop = CancellationToken::new();
    let router = tokio::spawn(run(f.config.clone(), stop.clone(), RoleHandles::default()));
    let hosts = |name: &str| -> Vec<String> {
        let mut h: Vec<String> = rx
            .accepted
            .lock()
            .unwrap()
            .get(name)
            .map(|v| v.iter().map(|(_, a)| a.host.clone()).collect())
            .unwrap_or_default();
        h.sort();
        h
    };
    // The new destinations take their starting positions when they join their groups.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while hosts("all").len() < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    produce(&f.bootstrap, &f.config.anomalies_topic, &[encoded(&anomaly("10.5.0.9", AnomalyKind::Rate, 0, 20.0))])
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while (hosts("late").is_empty() || hosts("ok").len() < 4 || hosts("all").len() < 4)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), router).await.unwrap().unwrap().unwrap();
    assert_eq!(hosts("late"), ["10.5.0.9"], "latest: only the alert published after it started");
    assert_eq!(hosts("all"), ["10.5.0.0", "10.5.0.1", "10.5.0.2", "10.5.0.9"], "earliest: every alert");
    assert_eq!(hosts("ok"), ["10.5.0.0", "10.5.0.1", "10.5.0.2", "10.5.0.9"], "resumed: nothing twice");
}
