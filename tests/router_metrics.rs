//! The router's live `/metrics`, read with a real HTTP GET from `netanom alert-router` (against an in-process
//! `MockCluster`): a webhook that refuses connections opens its circuit breaker, and the gauge
//! `netanom_router_destination_breaker{destination}` shows it (1: open); the tables' byte gauges
//! (`netanom_router_{suppression,incidents,dedup}_bytes`) show what the anomaly holds.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netanom_schemas::{Anomaly, AnomalyKind, Contribution, SchemaIds};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Kills the child when dropped (a failed assertion included).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_shows_on_the_routers_live_metrics() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let (anomalies, alerts, dlq) = ("netanom.anomalies.m", "netanom.alerts.m", "netanom.dead-letter.m");
    for t in [anomalies, alerts, dlq] {
        cluster.create_topic(t, 1, 1).unwrap();
    }
    let anomaly = Anomaly {
        id: "rate/10.0.0.1/0".into(),
        host: "10.0.0.1".into(),
        kind: AnomalyKind::Rate,
        window_start_ns: 1_718_000_000_000_000_000,
        window_end_ns: 1_718_000_001_000_000_000,
        score: 30.0,
        threshold: 10.0,
        target: None,
        reason: "rate score 30".into(),
        features: vec![Contribution { name: "pps".into(), value: 30.0, baseline: Some(1.0) }],
        sample: "10.0.0.1:4242 > 10.9.9.9:80 TCP [S] len 60".into(),
        model_version: "rules-v1".into(),
        detected_ns: None,
        window_key: None,
        closing: false,
    };
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let payload = anomaly.encode(&SchemaIds::BUILT_IN);
    producer
        .send(FutureRecord::to(anomalies).key(&anomaly.host).payload(&payload), Duration::from_secs(5))
        .await
        .unwrap();

    // Nothing listens on this port: every attempt fails at once.
    let down = free_port();
    let listen = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("netanom.toml");
    std::fs::write(
        &config,
        format!(
            "[topics]\nanomalies = \"{anomalies}\"\nalerts = \"{alerts}\"\ndead_letter = \"{dlq}\"\n\n\
             [telemetry]\nlisten = \"{listen}\"\n\n\
             [alert_router.retry]\ninitial_backoff = \"10ms\"\nmax_backoff = \"50ms\"\nbreaker_failures = 2\n\
             breaker_cooldown = \"10m\"\n\n\
             [[alert_router.webhooks]]\nname = \"down\"\nurl = \"http://127.0.0.1:{down}/x\"\nallow_private = true\n\
             timeout = \"500ms\"\n"
        ),
    )
    .unwrap();
    let _router = Child(
        Command::new(env!("CARGO_BIN_EXE_netanom"))
            .args(["alert-router", "--brokers", &brokers, "--config"])
            .arg(&config)
            .env_remove("NETANOM_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("netanom alert-router starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let gauge = loop {
        if let Ok(r) = reqwest::get(format!("http://{listen}/metrics")).await
            && r.status().as_u16() == 200
        {
            last = r.text().await.unwrap_or_default();
            let line = last
                .lines()
                .find(|l| l.starts_with("netanom_router_destination_breaker{") && l.contains("destination=\"down\""))
                .map(str::to_string);
            if let Some(line) = line.filter(|l| l.ends_with(" 1")) {
                break line;
            }
        }
        assert!(Instant::now() < deadline, "no open breaker on /metrics within 60 s:\n{last}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("{gauge}");
    // The tables' byte gauges: the anomaly's suppression window (60 s of packet time), its incident (open until
    // the host is quiet) and its id are held.
    let value = |text: &str, name: &str| -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let tables = ["netanom_router_suppression_bytes", "netanom_router_incidents_bytes", "netanom_router_dedup_bytes"];
    loop {
        let text = reqwest::get(format!("http://{listen}/metrics")).await.unwrap().text().await.unwrap();
        let held: Vec<Option<f64>> = tables.iter().map(|t| value(&text, t)).collect();
        if held.iter().all(|v| v.is_some_and(|v| v > 0.0)) {
            eprintln!("{tables:?}: {held:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the tables' bytes are not on /metrics within 60 s:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
