//! The C capture client (clients/c, libpcap + libcurl + jansson) against a running `netanom detector` (on a tansu
//! broker, serving the scoring API on loopback, no model: the rules judge): it is built with make and the system
//! C compiler, streams a labelled capture from `netanom synth` (a port scan among benign hosts) packet by packet
//! in the capture client's body, and its per-source summary must show the scanner's packets ending up
//! `is_anomaly: true` and never a benign host's. The answers the service gave (a verdict and each error status
//! the client can cause) are checked against docs/openapi.yaml by .ci/openapi-check.py.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Broker, Service, counter, free_port, http_get, synth, wait_for};
use serde_json::{Value, json};

/// Builds clients/c into `out` with make and the system C compiler; returns the binary.
fn build_client(out: &Path) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/c");
    let built = Command::new("make")
        .arg("-C")
        .arg(&dir)
        .arg(format!("OUT={}", out.display()))
        .output()
        .expect("make runs (install make, a C compiler, libpcap-dev, libcurl4-openssl-dev, libjansson-dev)");
    assert!(
        built.status.success(),
        "building clients/c failed:\n{}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    out.join("netanom-client")
}

/// The labels of `netanom synth --labels`: host → role.
fn labels(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .expect("labels written")
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(','))
        .map(|(h, r)| (h.to_string(), r.to_string()))
        .collect()
}

/// One row of the client's `-s` summary.
#[derive(Debug)]
struct Row {
    packets: u64,
    judged: u64,
    anomalous: u64,
    first_anomalous: i64,
    kinds: String,
}

fn summary(stdout: &str) -> BTreeMap<String, Row> {
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("source\tpackets\tjudged\tanomalous\tfirst_anomalous\tkinds"), "{stdout}");
    lines
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 6, "{l}");
            let n = |i: usize| f[i].parse::<u64>().unwrap_or_else(|e| panic!("{l}: {e}"));
            let row = Row {
                packets: n(1),
                judged: n(2),
                anomalous: n(3),
                first_anomalous: f[4].parse().unwrap(),
                kinds: f[5].to_string(),
            };
            (f[0].to_string(), row)
        })
        .collect()
}

/// POSTs `body` to the API: `{"status", "body"}`, as .ci/openapi-check.py reads answers.
fn answer(url: &str, body: &str) -> Value {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        json!({ "status": status, "body": r.json::<Value>().await.unwrap() })
    })
}

#[test]
fn the_c_client_streams_a_capture_and_only_the_scanner_ends_up_anomalous() {
    let tmp = tempfile::tempdir().unwrap();
    let client = build_client(tmp.path());
    let capture = tmp.path().join("scan.pcap");
    let labels_path = tmp.path().join("labels.csv");
    synth(&capture, Some(&labels_path), &["--attacks", "port-scan"]);
    let roles = labels(&labels_path);
    let scanners: Vec<&String> = roles.iter().filter(|(_, r)| *r == "attacker").map(|(h, _)| h).collect();
    assert_eq!(scanners.len(), 1, "{roles:?}");

    let broker = Broker::start();
    broker.create_pipeline_topics(1, 1, 1);
    let port = free_port();
    let config = tmp.path().join("netanom.toml");
    broker.write_config(
        &config,
        "",
        &tmp.path().join("alerts.jsonl"),
        &format!("\n[telemetry]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let detector = Service::start("detector", &config, &["detector"]);
    let addr = format!("127.0.0.1:{port}");
    wait_for(Duration::from_secs(60), || http_get(&addr, "/healthz").filter(|(s, _)| *s == 200))
        .unwrap_or_else(|| panic!("the detector did not serve /healthz:\n{}", detector.output()));
    let url = format!("http://{addr}/api/v1/analyze");

    // A line per packet: the first packets, as a person reads them.
    let lines = Command::new(&client).args(["-u", &url, "-c", "5", "-r"]).arg(&capture).output().unwrap();
    assert!(lines.status.success(), "{}", String::from_utf8_lossy(&lines.stderr));
    let text = String::from_utf8_lossy(&lines.stdout);
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(text.lines().all(|l| l.contains(" score ") && l.contains(" anomaly ") && l.contains(" judged ")), "{text}");

    // The whole capture, summarised per source.
    let run = Command::new(&client).args(["-s", "-u", &url, "-r"]).arg(&capture).output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "the client failed: {stderr}\n{}", detector.output());
    let rows = summary(&String::from_utf8_lossy(&run.stdout));
    eprintln!("{stderr}");
    for (host, row) in &rows {
        eprintln!("{host} {} {row:?}", roles.get(host).map_or("unlabelled", String::as_str));
    }
    let scanner = &rows[scanners[0]];
    assert!(scanner.first_anomalous >= 1, "the scanner is found: {scanner:?}");
    assert_eq!(
        scanner.anomalous,
        scanner.packets - scanner.first_anomalous as u64 + 1,
        "once found, every later packet of the scanner is anomalous: {scanner:?}"
    );
    assert!(scanner.kinds.contains("fanout"), "{scanner:?}");
    let benign: Vec<(&String, &Row)> =
        rows.iter().filter(|(h, _)| roles.get(*h).is_some_and(|r| r == "benign")).collect();
    assert!(benign.len() >= 3, "benign hosts sent packets: {rows:?}");
    assert!(benign.iter().all(|(_, r)| r.judged > 0), "benign hosts are judged: {benign:?}");
    let flagged: Vec<_> = benign.iter().filter(|(_, r)| r.anomalous > 0).collect();
    assert!(flagged.is_empty(), "benign hosts flagged: {flagged:?}");
    // The scanned server's replies are replies: it is not taken for a scanner.
    let victims: Vec<(&String, &Row)> =
        rows.iter().filter(|(h, _)| roles.get(*h).is_some_and(|r| r == "victim")).collect();
    assert!(!victims.is_empty() && victims.iter().all(|(_, r)| r.anomalous == 0), "{victims:?}");
    // The service remembers every source it judged (far under `max_sources`, none forgotten).
    let (_, page) = http_get(&addr, "/metrics").expect("/metrics answers");
    assert_eq!(counter(&page, "netanom_api_sources_tracked"), Some(rows.len() as f64), "{page}");
    assert_eq!(counter(&page, "netanom_api_sources_forgotten_total"), None, "{page}");

    // Real answers against the contract: a verdict, and each error a client can cause.
    let packet = r#"{"src_ip": "10.0.0.1", "dst_ip": "10.0.0.2", "packet_size": 60, "protocol": "tcp"}"#;
    let answers = [
        answer(&url, packet),
        answer(&url, r#"{"src_ip": "10.0.0.1", "packet_size": 60, "protocol": 6, "extra": 1}"#),
        answer(&url, r#"{"packets": [{"ts_ns": 1}]}"#),
        answer(&url, "{"),
        answer(
            &url,
            r#"{"packets": [{"ts_ns": 1, "destination": "10.0.0.2", "dst_port": 80, "ip_proto": 6, "wire_len": 60, "payload_len": 0, "tcp_flags": 2, "ttl": 64, "flow_packets": 1, "direction": "forward"}]}"#,
        ),
    ];
    let statuses: Vec<u64> = answers.iter().map(|a| a["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [200, 422, 422, 400, 503], "{answers:?}");
    let recorded = tmp.path().join("answers.jsonl");
    std::fs::write(&recorded, answers.iter().map(|a| format!("{a}\n")).collect::<String>()).unwrap();
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let check = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/openapi-check.py"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml"))
        .arg(&recorded)
        .output()
        .unwrap_or_else(|e| panic!("{} (run `bash .ci/setup`): {e}", python.display()));
    assert!(
        check.status.success(),
        "answers do not conform to docs/openapi.yaml:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    detector.stop(Duration::from_secs(30));
}
