//! Telemetry: the HTTP endpoints (`/healthz`, `/readyz`, `/metrics`) in process, and `netanom run` as a
//! subprocess exporting over OTLP/gRPC to a real receiver (`fake-opentelemetry-collector`): spans of the three
//! roles arrive, a packet batch and the alert it caused share one trace (parent chain producer → detector →
//! router), and the OTLP metrics carry the run's own totals.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{free_port, spawn_run, synth};

use fake_opentelemetry_collector::{ExportedSpan, FakeCollectorServer};
use netanom::telemetry::{Readiness, routes, serve};
use opentelemetry::metrics::MeterProvider as _;
use tokio::io::AsyncReadExt as _;
use tokio_util::sync::CancellationToken;

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_server_reports_health_readiness_flip_and_counter() {
    let registry = prometheus::Registry::new();
    let exporter = opentelemetry_prometheus::exporter().with_registry(registry.clone()).build().unwrap();
    let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder().with_reader(exporter).build();
    let counter = provider.meter("test").u64_counter("netanom.test.things").build();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let readiness = Readiness::new();
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(listener, routes(registry, readiness.clone()), stop.clone()));

    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    assert_eq!(get(&format!("{base}/readyz")).await.0, 503, "not ready before set_ready");
    let (_, before) = get(&format!("{base}/metrics")).await;
    assert!(!before.contains("netanom_test_things_total"), "no sample before the first add:\n{before}");

    readiness.set_ready();
    counter.add(3, &[opentelemetry::KeyValue::new("reason", "truncated")]);
    assert_eq!(get(&format!("{base}/readyz")).await.0, 200, "ready after set_ready");
    let (status, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    let line = text
        .lines()
        .find(|l| l.starts_with("netanom_test_things_total{"))
        .unwrap_or_else(|| panic!("counter missing from /metrics:\n{text}"));
    assert!(line.contains("reason=\"truncated\"") && line.ends_with(" 3"), "{line}");
    assert_eq!(get(&format!("{base}/nope")).await.0, 404);

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), server).await.expect("server stops").unwrap();
}

/// The process's CPU time and resident memory are served on `/metrics` with plausible values, and the CPU time
/// grows with work done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_process_cpu_time_and_resident_memory() {
    let registry = prometheus::Registry::new();
    let exporter = opentelemetry_prometheus::exporter().with_registry(registry.clone()).build().unwrap();
    let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder().with_reader(exporter).build();
    netanom::process_metrics::register(&provider.meter("netanom"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(listener, routes(registry, Readiness::new()), stop.clone()));

    let sample = |text: &str, prefix: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in:\n{text}"));
        line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no value in {line}"))
    };
    let user_cpu = "process_cpu_time_seconds_total{cpu_mode=\"user\"";
    let (status, before) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    let rss = sample(&before, "process_memory_usage_bytes");
    assert!((1e6..1e12).contains(&rss), "resident memory of {rss} bytes");
    let system = sample(&before, "process_cpu_time_seconds_total{cpu_mode=\"system\"");
    assert!((0.0..1e6).contains(&system), "{system} s of system CPU");
    let user = sample(&before, user_cpu);
    assert!(before.contains("# TYPE process_cpu_time_seconds_total counter"), "{before}");
    // Burn 0.3 s of user CPU, measured by the kernel (not by the wall clock: on a loaded machine the spinning
    // thread gets only part of a core): the counter follows.
    let user_ticks = || -> u64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        // Field 14 (utime, in clock ticks of 1/100 s) counts from the field after the command name.
        stat.rsplit_once(')').unwrap().1.split_whitespace().nth(11).unwrap().parse().unwrap()
    };
    let (start, deadline) = (user_ticks(), std::time::Instant::now() + Duration::from_secs(60));
    let mut x = 0u64;
    while user_ticks() < start + 30 && std::time::Instant::now() < deadline {
        for _ in 0..100_000 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    }
    let (_, after) = get(&format!("{base}/metrics")).await;
    let grown = sample(&after, user_cpu) - user;
    assert!(grown >= 0.25, "user CPU grew by {grown} s after 0.3 s of work");

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), server).await.expect("server stops").unwrap();
}

/// Role readiness: `run` is ready only when all three role flags are.
#[test]
fn run_readiness_needs_every_role() {
    let flags = netanom::roles::ReadyFlags::default();
    let r = Readiness::of_roles(flags.of("run"));
    assert!(!r.is_ready());
    flags.producer.set(true);
    flags.detector.set(true);
    assert!(!r.is_ready());
    flags.alert_router.set(true);
    assert!(r.is_ready());
    let detector = Readiness::of_roles(flags.of("detector"));
    flags.detector.set(false);
    assert!(!detector.is_ready() && !r.is_ready());
}

/// The probes say why: `/readyz` names the role and the Kafka client that is not connected (or the model the
/// scoring API lacks), `/healthz` the role whose main loop stalled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_name_what_is_not_ready_and_which_loop_stalled() {
    let flags = netanom::roles::ReadyFlags::default();
    let readiness = Readiness::of_roles(flags.of("detector")).with_stall_limit(Duration::from_millis(300));
    let with_model = readiness.clone().needing_model(netanom_detector::ModelFeed::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(listener, routes(prometheus::Registry::new(), readiness), stop.clone()));

    let (status, body) = get(&format!("{base}/readyz")).await;
    assert_eq!((status, body.as_str()), (503, "not ready: detector: not started, or no partitions assigned\n"));
    flags.detector.set(true);
    let consumer = flags.detector.kafka_link("consumer");
    let (status, body) = get(&format!("{base}/readyz")).await;
    assert_eq!(status, 503);
    assert!(body.contains("detector: Kafka consumer: not connected to a broker yet"), "{body}");
    consumer.up();
    assert_eq!(get(&format!("{base}/readyz")).await, (200, "ready\n".to_string()));
    let why = with_model.ready().expect_err("no model is in force");
    assert!(why.contains("scoring API: no model in force"), "{why}");
    consumer.down("all brokers down (1/1 brokers are down)");
    let (status, body) = get(&format!("{base}/readyz")).await;
    assert_eq!(status, 503);
    assert!(body.contains("Kafka consumer: all brokers down"), "{body}");

    assert_eq!(get(&format!("{base}/healthz")).await, (200, "ok\n".to_string()), "no loop beats yet");
    flags.detector.beat();
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, body) = get(&format!("{base}/healthz")).await;
    assert_eq!(status, 503);
    assert!(body.starts_with("stalled: detector: main loop stalled for"), "{body}");
    flags.detector.beat();
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200, "a beat makes it live again");

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), server).await.expect("server stops").unwrap();
}

/// Everything the collector received.
#[derive(Default)]
struct Received {
    spans: Vec<ExportedSpan>,
    metrics: Vec<serde_json::Value>,
}

impl Received {
    async fn poll(&mut self, c: &mut FakeCollectorServer) {
        self.spans.extend(c.exported_spans(1, Duration::from_millis(50)).await);
        for m in c.exported_metrics(1, Duration::from_millis(50)).await {
            self.metrics.extend(serde_json::to_value(&m).unwrap()["metrics"].as_array().cloned().unwrap_or_default());
        }
    }

    /// The data points of the last export of metric `name`.
    fn last_points(&self, name: &str) -> Vec<serde_json::Value> {
        let m = self.metrics.iter().rev().find(|m| m["name"] == name);
        let Some(m) = m else { return Vec::new() };
        let data = &m["data"];
        let inner = data.as_object().and_then(|o| o.values().next()).cloned().unwrap_or_default();
        inner["data_points"].as_array().cloned().unwrap_or_default()
    }

    /// A string attribute of a data point (the collector renders values as `Some(AnyValue { … StringValue("x") … })`).
    fn attr(p: &serde_json::Value, key: &str) -> String {
        let raw = p["attributes"][key].as_str().unwrap_or_default();
        match raw.split_once("StringValue(\"") {
            Some((_, rest)) => rest.split('"').next().unwrap_or_default().to_string(),
            None => raw.to_string(),
        }
    }

    fn value(p: &serde_json::Value) -> i64 {
        p["value"]["AsInt"].as_i64().or_else(|| p["value"]["AsDouble"].as_f64().map(|f| f as i64)).unwrap_or(-1)
    }
}

/// `anomalies N (rate a, fanout b, isolation c, victim d)` of the run summary, by kind.
fn summary_anomalies(stdout: &str) -> BTreeMap<String, i64> {
    let line = stdout.lines().find(|l| l.starts_with("detection:")).unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    let inner = line.split('(').nth(1).and_then(|s| s.split(')').next()).expect("kinds in parentheses");
    inner
        .split(", ")
        .map(|kv| {
            let (k, v) = kv.split_once(' ').expect("kind count");
            (k.to_string(), v.parse().expect("a count"))
        })
        .collect()
}

/// What a `netanom run` exporting to the collector left behind.
struct Run {
    got: Received,
    stdout: String,
    stderr: String,
    /// `/metrics` as scraped while the run went on.
    scraped: String,
    elapsed: Duration,
}

/// Runs `netanom run` over `pcap`, exporting over OTLP to `collector` with the default span queue and
/// sampling, draining the collector while it runs; asserts it succeeds and serves `/metrics` meanwhile.
async fn run_exporting(collector: &mut FakeCollectorServer, pcap: &std::path::Path) -> Run {
    let listen = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_netanom"))
        .args(["run", "--quiet", "--pcap"])
        .arg(pcap)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_BSP_MAX_QUEUE_SIZE")
        .env("NETANOM_TELEMETRY__LISTEN", &listen)
        .env("NETANOM_TELEMETRY__METRICS_INTERVAL", "500ms")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("netanom runs");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_task = tokio::spawn(async move {
        let (mut o, mut e) = (String::new(), String::new());
        let _ = tokio::join!(stdout.read_to_string(&mut o), stderr.read_to_string(&mut e));
        (o, e)
    });

    // The collector's channels are small: drain them while the run goes on.
    let mut got = Received::default();
    let mut scraped = String::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        assert!(Instant::now() < deadline, "netanom run did not finish within 300 s");
        got.poll(collector).await;
        if scraped.is_empty()
            && let Ok(r) = reqwest::get(format!("http://{listen}/metrics")).await
            && r.status().as_u16() == 200
        {
            scraped = r.text().await.unwrap_or_default();
        }
    };
    let elapsed = started.elapsed();
    let (stdout, stderr) = out_task.await.unwrap();
    assert!(status.success(), "netanom run failed: {status}\n{stderr}");
    for _ in 0..10 {
        got.poll(collector).await;
    }
    assert!(!scraped.is_empty(), "/metrics on {listen} never answered 200 while the run went on\n{stderr}");
    Run { got, stdout, stderr, scraped, elapsed }
}

/// A string attribute of a span as the collector renders it (`Some(AnyValue { … StringValue("x") … })`), or
/// an integer's digits.
fn span_attr(s: &ExportedSpan, key: &str) -> String {
    let raw = s.attributes.get(key).map(String::as_str).unwrap_or_default();
    for tag in ["StringValue(\"", "IntValue("] {
        if let Some((_, rest)) = raw.split_once(tag) {
            return rest.split(['"', ')']).next().unwrap_or_default().to_string();
        }
    }
    raw.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exports_linked_spans_and_metrics_over_otlp() {
    let mut collector = FakeCollectorServer::start().await.expect("collector starts");
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("synth.pcap");
    let written = netanom_producer::synth::write_pcap(&netanom_producer::synth::Scenario::default(), &pcap).unwrap();
    let Run { got, stdout, stderr, scraped, .. } = run_exporting(&mut collector, &pcap).await;
    for name in ["process_cpu_time_seconds_total{", "process_memory_usage_bytes"] {
        assert!(scraped.lines().any(|l| l.starts_with(name)), "{name} missing from /metrics:\n{scraped}");
    }

    // (a) spans of every role.
    let by_name = |n: &str| got.spans.iter().filter(|s| s.name == n).collect::<Vec<_>>();
    let (batches, chunks, anomalies, alerts) =
        (by_name("producer.batch"), by_name("detector.chunk"), by_name("detector.anomaly"), by_name("router.alert"));
    let names: BTreeMap<&str, usize> = got.spans.iter().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(s.name.as_str()).or_default() += 1;
        m
    });
    for (what, v) in [("producer.batch", &batches), ("detector.chunk", &chunks), ("detector.anomaly", &anomalies)] {
        assert!(!v.is_empty(), "no {what} span among {names:?}\n{stderr}");
    }
    assert!(!alerts.is_empty(), "no router.alert span among {names:?}");
    assert!(chunks.iter().any(|c| !c.links.is_empty()), "chunk spans link to their records' contexts");

    // (b) an alert's trace goes back to the packet batch that raised it: router.alert → detector.anomaly →
    // producer.batch by parent span id, all in one trace.
    let spans_by_id: HashMap<&str, &ExportedSpan> = got.spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let linked = alerts.iter().filter(|alert| {
        let Some(anomaly) = spans_by_id.get(alert.parent_span_id.as_str()) else { return false };
        let Some(batch) = spans_by_id.get(anomaly.parent_span_id.as_str()) else { return false };
        anomaly.name == "detector.anomaly"
            && batch.name == "producer.batch"
            && alert.trace_id == batch.trace_id
            && anomaly.trace_id == batch.trace_id
    });
    assert!(linked.count() > 0, "no router.alert span descends from a producer.batch span: {alerts:#?}");

    // (c) OTLP metrics carry the run's totals.
    let read: i64 = got.last_points("netanom.producer.packets.read").iter().map(Received::value).sum();
    assert_eq!(read, written.packets as i64, "packets read over OTLP vs packets in the capture");
    let processed: i64 = got.last_points("netanom.detector.packets.processed").iter().map(Received::value).sum();
    assert_eq!(processed, written.packets as i64, "packets processed over OTLP");
    let expected = summary_anomalies(&stdout);
    let exported: BTreeMap<String, i64> = got
        .last_points("netanom.detector.anomalies")
        .iter()
        .map(|p| (Received::attr(p, "kind"), Received::value(p)))
        .collect();
    let expected_nonzero: BTreeMap<String, i64> = expected.into_iter().filter(|(_, v)| *v > 0).collect();
    assert!(!expected_nonzero.is_empty(), "the synthetic capture raises anomalies:\n{stdout}");
    assert_eq!(exported, expected_nonzero, "anomalies by kind over OTLP vs the run summary");
    let topic_ok: i64 = got
        .last_points("netanom.router.alerts")
        .iter()
        .filter(|p| Received::attr(p, "sink") == "topic" && Received::attr(p, "outcome") == "ok")
        .map(Received::value)
        .sum();
    assert_eq!(topic_ok, alerts.len() as i64, "alerts to the topic over OTLP vs router.alert spans");
}

/// At benchmark scale (a capture of over 100 k packets read at full speed), with the default span queue and
/// sampling, the exporter drops nothing: one PRODUCER span per record published arrives, with the messaging
/// attributes; the consuming side's spans are CONSUMER spans naming their partition and offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_span_arrives_at_benchmark_rate_with_messaging_conventions() {
    let mut collector = FakeCollectorServer::start().await.expect("collector starts");
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("big.pcap");
    let scenario = netanom_producer::synth::Scenario {
        duration: Duration::from_secs(120),
        benign_hosts: 50,
        sessions_per_sec: 200.0,
        ..netanom_producer::synth::Scenario::default()
    };
    let written = netanom_producer::synth::write_pcap(&scenario, &pcap).unwrap();
    assert!(written.packets >= 100_000, "{} packets", written.packets);
    let Run { got, stderr, elapsed, .. } = run_exporting(&mut collector, &pcap).await;

    let published: i64 = got.last_points("netanom.producer.batches.published").iter().map(Received::value).sum();
    let batches: Vec<&ExportedSpan> = got.spans.iter().filter(|s| s.name == "producer.batch").collect();
    eprintln!(
        "{} packets, {published} records published, {} producer spans received in {elapsed:?}",
        written.packets,
        batches.len()
    );
    assert!(published > 1000, "{published} records published\n{stderr}");
    assert_eq!(batches.len() as i64, published, "producer spans received vs records published\n{stderr}");
    assert!(!stderr.contains("dropped"), "the span processor reports drops:\n{stderr}");

    let packets_topic = netanom_schemas::topics::PACKETS;
    for s in &batches {
        assert_eq!(s.kind, "SPAN_KIND_PRODUCER", "{s:?}");
        assert_eq!(span_attr(s, "messaging.system"), "kafka", "{s:?}");
        assert_eq!(span_attr(s, "messaging.destination.name"), packets_topic, "{s:?}");
        assert_eq!(span_attr(s, "messaging.operation.type"), "publish", "{s:?}");
        assert!(!s.attributes.contains_key("messaging.kafka.message.key"), "no source address: {s:?}");
    }
    let spans = &got.spans;
    let of = |name: &'static str| spans.iter().filter(move |s| s.name == name);
    assert!(of("detector.chunk").all(|s| s.kind == "SPAN_KIND_CONSUMER"
        && span_attr(s, "messaging.operation.type") == "process"
        && span_attr(s, "messaging.consumer.group.name") == "netanom-detector"));
    assert!(of("detector.anomaly").all(|s| s.kind == "SPAN_KIND_PRODUCER"
        && span_attr(s, "messaging.destination.name") == netanom_schemas::topics::ANOMALIES));
    let alerts: Vec<&ExportedSpan> = of("router.alert").collect();
    assert!(!alerts.is_empty(), "the capture raises alerts");
    for s in alerts {
        assert_eq!(s.kind, "SPAN_KIND_CONSUMER", "{s:?}");
        assert_eq!(span_attr(s, "messaging.destination.name"), netanom_schemas::topics::ANOMALIES, "{s:?}");
        assert!(span_attr(s, "messaging.destination.partition.id").parse::<i32>().is_ok(), "{s:?}");
        assert!(span_attr(s, "messaging.kafka.offset").parse::<i64>().is_ok(), "{s:?}");
    }
}

/// With `telemetry.probes_listen` set, the probes and metrics answer there only, and `telemetry.listen` serves
/// the scoring API alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_can_have_a_listener_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("demo.pcap");
    synth(&pcap, None, &[]);
    let (api, probes) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let mut child =
        spawn_run(&pcap, "10", &[("NETANOM_TELEMETRY__LISTEN", &api), ("NETANOM_TELEMETRY__PROBES_LISTEN", &probes)]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (healthz, metrics) = loop {
        assert!(Instant::now() < deadline, "the probes listener {probes} never answered");
        if let (Ok(h), Ok(m)) = (
            reqwest::get(format!("http://{probes}/healthz")).await,
            reqwest::get(format!("http://{probes}/metrics")).await,
        ) {
            break (h.status().as_u16(), m.status().as_u16());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((healthz, metrics), (200, 200));
    assert_eq!(get(&format!("http://{api}/healthz")).await.0, 404, "the probes are not on the API listener");
    assert_eq!(get(&format!("http://{api}/metrics")).await.0, 404);
    let analyze = reqwest::Client::new().post(format!("http://{api}/api/v1/analyze")).body("{}").send().await.unwrap();
    assert_ne!(analyze.status().as_u16(), 404, "the scoring API is on the API listener");
    assert_eq!(get(&format!("http://{probes}/api/v1/analyze")).await.0, 404, "and not on the probes listener");
    let _ = child.kill().await;
}
