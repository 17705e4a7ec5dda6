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
    common::run_capture(capture, out).0
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

/// `netanom train` on the benign captures writes the host-profile model to a file of its own beside the
/// forest's, `netanom run` loads both (`--model`, `--profile-model`), and the small ICMP sweep (1.6 s: its one window is scored when the drained
/// capture ends) is named by `profile`, a sweep the rate and fan-out rules miss.
#[test]
fn a_model_of_the_benign_captures_names_a_small_icmp_sweep_by_its_profile() {
    let Some(dir) = data_dir() else {
        eprintln!("skipping: ../shared/data (the shared captures) is not beside this checkout");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model.json");
    let benign: Vec<PathBuf> =
        labels(&dir).into_iter().filter(|(_, class, _)| class == "benign").map(|(f, _, _)| dir.join(f)).collect();
    let trained = Command::new(env!("CARGO_BIN_EXE_netanom"))
        .args(["train", "--out"])
        .arg(&model)
        .arg("--pcap")
        .args(&benign)
        .output()
        .expect("netanom train runs");
    assert!(trained.status.success(), "train: {}", String::from_utf8_lossy(&trained.stderr));
    let stdout = String::from_utf8_lossy(&trained.stdout);
    let profiles = tmp.path().join("model.profiles.json");
    assert!(stdout.contains("profile model km-"), "no profile model written: {stdout}");
    assert!(stdout.contains(&format!("wrote {} (--profile-model)", profiles.display())), "{stdout}");

    let out = tmp.path().join("alerts.jsonl");
    let result = Command::new(env!("CARGO_BIN_EXE_netanom"))
        .args(["run", "--quiet", "--pcap"])
        .arg(dir.join("stratosphere-slips/test12-icmp-portscan.pcap"))
        .arg("--alerts-out")
        .arg(&out)
        .arg("--model")
        .arg(&model)
        .arg("--profile-model")
        .arg(&profiles)
        .output()
        .expect("netanom runs");
    assert!(result.status.success(), "run: {}", String::from_utf8_lossy(&result.stderr));
    let alerts = common::by_kind(&common::read_alerts(&out));
    let profile = alerts
        .iter()
        .find(|a| a["kind"] == "profile" && a["host"] == "192.168.1.109")
        .unwrap_or_else(|| panic!("no profile alert names the sweeper 192.168.1.109: {alerts:#?}"));
    assert_eq!(profile["features"][0]["name"], "icmp_fraction", "{profile:#?}");
    assert!(profile["model_version"].as_str().unwrap().starts_with("km-"));
    assert!(profile["reason"].as_str().unwrap().contains("100% ICMP (usually"), "{profile:#?}");
    // Its evidence starts at the sweeper's first packet, not at the start of the profile window.
    let capture = dir.join("stratosphere-slips/test12-icmp-portscan.pcap");
    let traffic = netanom::traffic::scan(&capture, &netanom_producer::FlowConfig::default()).unwrap();
    let first_packet = traffic.hosts["192.168.1.109"].first_ns;
    let first_seen = time::OffsetDateTime::parse(
        profile["first_seen"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp_nanos();
    assert_eq!(first_seen, i128::from(first_packet), "{profile:#?}");
}
