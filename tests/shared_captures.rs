//! `netanom run` over the real third-party captures of `../shared/data` (never copied into this repository):
//! every capture labelled benign must raise no alert, and the nmap SYN scan must name the scanner. When the
//! folder is absent (a checkout without `../shared`) the test says so and passes; CI has the folder.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn data_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    dir.join("labels.csv").exists().then_some(dir)
}

/// `(file, traffic_class, malicious_sources)` of every row of labels.csv.
fn labels(dir: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(dir.join("labels.csv")).expect("labels.csv is readable");
    let mut rows = Vec::new();
    for line in text.lines().skip(1) {
        let fields = netanom::labels::split_csv(line);
        rows.push((fields[0].clone(), fields[1].clone(), fields[3].clone()));
    }
    rows
}

/// Runs `netanom run --pcap capture` and returns the alerts it wrote.
fn run(capture: &Path, out: &Path) -> Vec<serde_json::Value> {
    let _ = std::fs::remove_file(out);
    let result = Command::new(env!("CARGO_BIN_EXE_netanom"))
        .args(["run", "--quiet", "--pcap"])
        .arg(capture)
        .arg("--alerts-out")
        .arg(out)
        .output()
        .expect("netanom runs");
    assert!(
        result.status.success(),
        "netanom run --pcap {} failed: {}\n{}",
        capture.display(),
        result.status,
        String::from_utf8_lossy(&result.stderr)
    );
    common::read_alerts(out)
}

#[test]
fn benign_captures_raise_no_alert_and_the_syn_scan_names_the_scanner() {
    let Some(dir) = data_dir() else {
        eprintln!("skipping: ../shared/data (the shared captures) is not beside this checkout");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("alerts.jsonl");
    let mut false_alarms = Vec::new();
    let benign: Vec<_> = labels(&dir).into_iter().filter(|(_, class, _)| class == "benign").collect();
    assert!(benign.len() >= 10, "labels.csv lists {} benign captures", benign.len());
    for (file, _, _) in &benign {
        for alert in run(&dir.join(file), &out) {
            false_alarms.push(format!("{file}: {} {} — {}", alert["host"], alert["kind"], alert["reason"]));
        }
    }
    assert!(false_alarms.is_empty(), "benign captures raised alerts:\n{}", false_alarms.join("\n"));

    let scan = run(&dir.join("evilfingers-nmap/TCP_SYN_SCAN.pcap"), &out);
    let (_, _, scanner) = labels(&dir)
        .into_iter()
        .find(|(f, _, _)| f == "evilfingers-nmap/TCP_SYN_SCAN.pcap")
        .expect("the SYN scan is labelled");
    assert!(scan.iter().any(|a| a["host"] == scanner.as_str()), "no alert names the scanner {scanner}: {scan:#?}");
}
