//! `netanom dlq replay` through the real binary against an in-process `MockCluster` and a webhook receiver on
//! 127.0.0.1: a refused alert is parked again with its attempts counted, a later replay delivers it, each alert
//! reaches the receiver once, and a replay after that finds nothing left.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use netanom_schemas::{Alert, AnomalyKind, topics};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[derive(Default)]
struct Receiver {
    refuse: AtomicBool,
    /// `webhook-id` → requests accepted with it.
    accepted: Mutex<HashMap<String, u32>>,
}

fn alert(host: &str) -> Alert {
    let t = time::OffsetDateTime::from_unix_timestamp(1_718_000_000).unwrap();
    Alert {
        id: format!("rate/{host}/0"),
        host: host.into(),
        kind: AnomalyKind::Rate,
        score: 30.0,
        threshold: 10.0,
        first_seen: t,
        last_seen: t,
        detected_at: None,
        count: 1,
        reason: "rate score 30".into(),
        target: None,
        sample: format!("{host}:4242 > 10.9.9.9:80 TCP [S] len 60"),
        features: Vec::new(),
        model_version: "rules-v1".into(),
        revision: 1,
        final_revision: true,
        kinds: Vec::new(),
        totals: Default::default(),
    }
}

/// The `netanom-dlq-attempts` headers of every record of partition 0 of `topic`.
fn attempts(brokers: &str, topic: &str) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "dlq-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    loop {
        match c.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => out.push(
                m.headers()
                    .and_then(|h| h.iter().find(|h| h.key == topics::DLQ_ATTEMPTS_HEADER).and_then(|h| h.value))
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default(),
            ),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return out,
            other => panic!("reading {topic}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_replay_parks_again_then_delivers_each_alert_once() {
    let rx = Arc::new(Receiver::default());
    rx.refuse.store(true, Ordering::SeqCst);
    let state = rx.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap| {
            let rx = state.clone();
            async move {
                if rx.refuse.load(Ordering::SeqCst) {
                    return StatusCode::UNPROCESSABLE_ENTITY;
                }
                let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                *rx.accepted.lock().unwrap().entry(id).or_default() += 1;
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let topic = "netanom.dead-letter.cli";
    cluster.create_topic(topic, 1, 1).unwrap();
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let alerts = [alert("10.0.0.1"), alert("10.0.0.2")];
    for (i, a) in alerts.iter().enumerate() {
        let headers = OwnedHeaders::new()
            .insert(Header { key: topics::DLQ_REASON_HEADER, value: Some("HTTP 422") })
            .insert(Header { key: topics::DLQ_ORIGIN_HEADER, value: Some(&format!("netanom.alerts/0/{i}")) })
            .insert(Header { key: topics::DLQ_DESTINATION_HEADER, value: Some("pager") });
        let payload = serde_json::to_vec(a).unwrap();
        let record = FutureRecord::<str, [u8]>::to(topic).key(&a.host).payload(&payload).headers(headers);
        producer.send(record, Duration::from_secs(5)).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("netanom.toml");
    std::fs::write(
        &config,
        format!(
            "[topics]\ndead_letter = \"{topic}\"\n\n[alert_router.retry]\nmax_attempts = 1\n\n\
             [[alert_router.webhooks]]\nname = \"pager\"\nurl = \"{url}\"\nallow_private = true\n"
        ),
    )
    .unwrap();
    let replay = |brokers: String, config: std::path::PathBuf| async move {
        tokio::task::spawn_blocking(move || {
            let out = Command::new(env!("CARGO_BIN_EXE_netanom"))
                .args(["dlq", "replay", "--brokers", &brokers, "--max-attempts", "3", "--config"])
                .arg(&config)
                .env_remove("NETANOM_CONFIG")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
            stdout
        })
        .await
        .unwrap()
    };

    let out = replay(brokers.clone(), config.clone()).await;
    assert!(out.contains("2 parked alerts taken, 0 delivered, 2 refused again"), "{out}");
    assert_eq!(attempts(&brokers, topic), ["", "", "2", "2"]);

    rx.refuse.store(false, Ordering::SeqCst);
    let out = replay(brokers.clone(), config.clone()).await;
    assert!(out.contains("2 parked alerts taken, 2 delivered, 0 refused again"), "{out}");
    let out = replay(brokers.clone(), config.clone()).await;
    assert!(out.contains("0 parked alerts taken, 0 delivered"), "{out}");
    assert_eq!(attempts(&brokers, topic).len(), 4, "nothing parked again");
    let accepted = rx.accepted.lock().unwrap().clone();
    let want: HashMap<String, u32> = alerts.iter().map(|a| (a.delivery_id(), 1)).collect();
    assert_eq!(accepted, want, "each alert delivered once, with its webhook-id");
}
