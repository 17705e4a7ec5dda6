//! The scoring API of a running `netanom run` process (embedded broker, a generated capture replayed at 4×
//! real time, `[telemetry] listen` on loopback): 503 while the detector warms up, then verdicts from the model
//! the run reports, and a 422 naming the field for a malformed request.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Kills the process on drop unless it was waited for.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// `n` SYNs from one host to `n` ports of one destination within `n` ms: a port scan batch.
fn scan(n: u16) -> Value {
    let packets: Vec<Value> = (1..=n)
        .map(|port| {
            json!({
                "ts_ns": 1_700_000_030_000_000_000i64 + i64::from(port) * 1_000_000,
                "destination": "10.0.1.3", "src_port": 40000 + port, "dst_port": port, "ip_proto": 6,
                "wire_len": 54, "payload_len": 0, "tcp_flags": 2, "ttl": 64, "flow_packets": 1,
                "direction": "forward"
            })
        })
        .collect();
    json!({ "source": "198.51.100.99", "packets": packets })
}

/// `n` packets of one ordinary HTTPS download: one flow, full-sized ACKs, spaced 20 ms apart.
fn download(n: u16) -> Value {
    let packets: Vec<Value> = (1..=n)
        .map(|i| {
            json!({
                "ts_ns": 1_700_000_030_000_000_000i64 + i64::from(i) * 20_000_000,
                "destination": "10.0.1.3", "src_port": 51000, "dst_port": 443, "ip_proto": 6,
                "wire_len": 1514, "payload_len": 1448, "tcp_flags": 16, "ttl": 64, "flow_packets": i,
                "flow_bytes": u64::from(i) * 1514, "flow_duration_ns": i64::from(i - 1) * 20_000_000,
                "direction": "forward"
            })
        })
        .collect();
    json!({ "source": "10.0.0.7", "packets": packets })
}

async fn analyze(url: &str, body: &Value) -> Option<(u16, Value)> {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_netanom_serves_503_then_the_model_it_reports() {
    let bin = env!("CARGO_BIN_EXE_netanom");
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("demo.pcap");
    let synth = Command::new(bin).arg("synth").arg("--out").arg(&pcap).stdout(Stdio::null()).status().unwrap();
    assert!(synth.success());

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/api/v1/analyze");
    let child = Command::new(bin)
        .args(["run", "--speed", "4", "--pcap"])
        .arg(&pcap)
        .env("NETANOM_TELEMETRY__LISTEN", format!("127.0.0.1:{port}"))
        // A short warm-up (each partition's first 15 s of the demo's 60 s of packet time, judged clean after 10 s
        // more; partitions without traffic of their own after 40 s), so that the group's model is in force well
        // before the 15 s replay ends.
        .env("NETANOM_DETECTOR__FOREST__WARMUP_WINDOW", "15s")
        .env("NETANOM_DETECTOR__FOREST__WARMUP_HORIZON", "10s")
        .env("NETANOM_LOG__LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut running = Running(Some(child));

    let probe = scan(400);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut unavailable = 0;
    let verdict = loop {
        assert!(Instant::now() < deadline, "no verdict within 60 s ({unavailable} answers of 503)");
        match analyze(&url, &probe).await {
            None => {} // not listening yet
            Some((503, v)) => {
                assert!(v["error"].as_str().unwrap().starts_with("no isolation model yet"), "{v}");
                unavailable += 1;
            }
            Some((200, v)) => break v,
            Some((status, v)) => panic!("unexpected {status}: {v}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(unavailable > 0, "the API answered 503 while the detector warmed up");
    let version = verdict["model_version"].as_str().unwrap().to_string();
    assert!(version.starts_with("eif-"), "{verdict}");
    assert_eq!(verdict["packets"], json!(400));
    // A model of a short warm-up calibrates its own threshold: whether this scan crosses it is the model's business
    // (detector/tests/api.rs checks the verdicts against the detector's scoring); the answer must be coherent.
    let (score, threshold) = (verdict["anomaly_score"].as_f64().unwrap(), verdict["threshold"].as_f64().unwrap());
    assert!(score > 0.0 && score < 1.0 && threshold > 0.0, "{verdict}");
    assert_eq!(verdict["is_anomaly"], json!(score > threshold), "{verdict}");
    let reason = verdict["reason"].as_str().unwrap();
    assert!(reason.starts_with("198.51.100.99 behaved") && reason.contains(&format!("{score:.3}")), "{reason}");
    // Whatever the threshold, the same model ranks the scan above an ordinary download.
    let (status, ordinary) = analyze(&url, &download(40)).await.expect("the server still runs");
    assert_eq!(status, 200, "{ordinary}");
    assert_eq!(ordinary["model_version"].as_str(), Some(version.as_str()), "{ordinary}");
    assert!(ordinary["anomaly_score"].as_f64().unwrap() < score, "download {ordinary} vs scan {verdict}");

    let mut bad = scan(10);
    bad["packets"][3]["tcp_flags"] = json!("SYN");
    let (status, v) = analyze(&url, &bad).await.expect("the server still runs");
    assert_eq!(status, 422, "{v}");
    assert!(v["error"].as_str().unwrap().starts_with("packets[3].tcp_flags: invalid type: string"), "{v}");

    let child = running.0.take().unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    assert!(output.status.success(), "netanom run failed: {}", output.status);
    let summary = String::from_utf8_lossy(&output.stdout);
    let model_line = summary.lines().find(|l| l.starts_with("detection:")).unwrap_or_default();
    assert!(model_line.contains(&version), "the API served a model the run reports: {model_line}");
}
