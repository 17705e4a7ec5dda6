//! `netanom eval` end to end, as separate processes: `netanom synth --out X --labels Y` writes the seeded
//! labelled scenario (SYN flood, port scan, spoofed-source flood, host sweep over benign sessions), then
//! `netanom eval --pcap X --labels Y --json` runs the whole pipeline on it. Every attacker and the spoofed
//! flood's victim must be found and no benign host flagged: host-level F1 = 1. Then `netanom synth --attacks
//! beaconing` and `netanom run` on it: the beaconing host, and only it, is alerted. Last, `--attacks
//! brute-force,dns-tunnel`: both attackers alerted by their rules (kinds `brute_force` and `dns_tunnel`), nothing
//! else, F1 = 1, the brute force detected ~5 s after its first attempt.

mod common;

use std::process::Command;

use common::{by_kind, eval_json, netanom, synth};

/// A `netanom synth --attacks ATTACKS` capture with its labels, and the alerts of `netanom run` on it.
struct SynthRun {
    pcap: std::path::PathBuf,
    labels: std::path::PathBuf,
    /// The alerts file, as written.
    text: String,
    /// Each kind of each incident ([`by_kind`]).
    alerts: Vec<serde_json::Value>,
}

fn synth_and_run(dir: &std::path::Path, attacks: &str) -> SynthRun {
    let (pcap, labels, out) = (dir.join("synth.pcap"), dir.join("labels.csv"), dir.join("alerts.jsonl"));
    synth(&pcap, Some(&labels), &["--attacks", attacks]);
    let run = ["--quiet".as_ref(), "--pcap".as_ref(), pcap.as_os_str(), "--alerts-out".as_ref(), out.as_os_str()];
    netanom(&[&["run".as_ref()], &run[..]].concat());
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let incidents: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let alerts = by_kind(&incidents);
    SynthRun { pcap, labels, text, alerts }
}

#[test]
fn eval_on_the_synth_scenario_finds_every_attacker_and_no_benign_host() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, labels) = (dir.path().join("synth.pcap"), dir.path().join("labels.csv"));
    synth(&pcap, Some(&labels), &[]);
    let e = eval_json(&pcap, &labels);
    let attackers = std::fs::read_to_string(&labels).unwrap().lines().filter(|l| l.ends_with(",attacker")).count();
    assert!(attackers >= 3, "the scenario has attackers");
    assert_eq!(e["attackers"], attackers, "{e}");
    assert_eq!(e["attackers_alerted"], attackers, "{e}");
    assert_eq!(e["false_positive_hosts"], serde_json::json!([]), "{e}");
    assert_eq!(e["f1"], 1.0, "{e}");
    assert_eq!(e["roc_auc"], 1.0, "{e}");
    assert!(e["hosts"].as_u64().unwrap() > 3000, "every spoofed source is a host: {e}");
    assert_eq!(e["time_to_detect_s"].as_object().unwrap().len(), attackers, "{e}");
}

#[test]
fn run_on_a_synth_capture_with_beaconing_alerts_the_beaconing_host_only() {
    let dir = tempfile::tempdir().unwrap();
    let run = synth_and_run(dir.path(), "beaconing");
    let roles = std::fs::read_to_string(&run.labels).unwrap();
    assert!(roles.contains("10.0.0.77,attacker") && roles.contains("203.0.113.9,victim"), "{roles}");
    let (text, alerts) = (run.text, run.alerts);
    let beacon = alerts.iter().find(|a| a["kind"] == "beacon").unwrap_or_else(|| panic!("no beacon alert: {text}"));
    assert_eq!(beacon["host"], "10.0.0.77", "{beacon:#}");
    assert_eq!(beacon["target"], "203.0.113.9", "{beacon:#}");
    let reason = beacon["reason"].as_str().unwrap();
    assert!(reason.starts_with("10.0.0.77 contacted 203.0.113.9 on port 443 every "), "{reason}");
    let period = beacon["features"].as_array().unwrap().iter().find(|f| f["name"] == "period_s").unwrap();
    assert!((3.8..=4.2).contains(&period["value"].as_f64().unwrap()), "{beacon:#}");
    // Nothing else: the benign traffic of the scenario raises no alert.
    assert!(alerts.iter().all(|a| a["host"] == "10.0.0.77"), "alerts on other hosts: {text}");
}

#[test]
fn run_on_a_synth_capture_with_brute_force_and_a_dns_tunnel_names_both_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let run = synth_and_run(dir.path(), "brute-force,dns-tunnel");
    let (pcap, labels, text, alerts) = (run.pcap, run.labels, run.text, run.alerts);
    let find = |kind: &str| {
        alerts.iter().find(|a| a["kind"] == kind).unwrap_or_else(|| panic!("no {kind} alert: {text}")).clone()
    };
    let brute = find("brute_force");
    assert_eq!(
        (brute["host"].as_str(), brute["target"].as_str()),
        (Some("198.51.100.45"), Some("10.0.1.1")),
        "{brute:#}"
    );
    assert!(brute["reason"].as_str().unwrap().contains("connections to the login service 10.0.1.1:22"), "{brute:#}");
    let tunnel = find("dns_tunnel");
    assert_eq!(
        (tunnel["host"].as_str(), tunnel["target"].as_str()),
        (Some("10.0.0.66"), Some("203.0.113.53")),
        "{tunnel:#}"
    );
    assert!(
        alerts.iter().all(|a| a["host"] == "198.51.100.45" || a["host"] == "10.0.0.66"),
        "alerts on other hosts: {text}"
    );
    // Detected within seconds of their first packet: the 20th attempt at 4/s comes ~5 s in; the tunnel host
    // made ordinary lookups before its 10th long query.
    let e = eval_json(&pcap, &labels);
    assert_eq!(
        (e["attackers"].as_u64(), e["attackers_alerted"].as_u64(), e["f1"].as_f64()),
        (Some(2), Some(2), Some(1.0)),
        "{e}"
    );
    let ttd = |h: &str, kind: &str| {
        common::kind_time_to_detect(&e, &alerts, h, kind).unwrap_or_else(|| panic!("no time to detect for {h}: {e}"))
    };
    // Each rule's own detection (the isolation forest may name a host first): the brute forcer at its 20th
    // attempt, ~5 s in.
    assert!((4.0..6.0).contains(&ttd("198.51.100.45", "brute_force")), "{e}");
    assert!(ttd("10.0.0.66", "dns_tunnel") < 60.0, "{e}");
    // The tunnel's evidence starts at its first long query, not at its ordinary lookups a minute before.
    let tunneller: std::net::IpAddr = "10.0.0.66".parse().unwrap();
    let mut first_long_query = i64::MAX;
    netanom::traffic::for_each_packet(&pcap, &netanom_producer::FlowConfig::default(), |src, p| {
        if src == tunneller && p.dst_port == 53 && p.payload_len >= 80 {
            first_long_query = first_long_query.min(p.ts_ns);
        }
    })
    .unwrap();
    let first_seen = time::OffsetDateTime::parse(
        tunnel["first_seen"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp_nanos();
    assert!(first_long_query < i64::MAX, "the capture has long queries");
    assert_eq!(first_seen, i128::from(first_long_query), "{tunnel:#}");
    assert_eq!(e["first_seen_early_s"]["10.0.0.66"].as_f64(), Some(0.0), "{e}");
}

#[test]
fn a_model_trained_saved_and_loaded_with_model_evaluates_a_synth_capture() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    // Train on one seed's traffic (benign sessions and a beaconing host), evaluate on another seed's scenario.
    let (train, model) = (path("train.pcap"), path("model.json"));
    synth(&train, None, &["--seed", "1", "--attacks", "beaconing"]);
    let out = netanom(&["train".as_ref(), "--pcap".as_ref(), train.as_os_str(), "--out".as_ref(), model.as_os_str()]);
    let line = String::from_utf8(out.stdout).unwrap();
    // Each model in a file of its own, each naming its kind.
    let profiles = path("model.profiles.json");
    assert!(line.contains(&format!("wrote {} (--model)", model.display())), "{line}");
    assert!(line.contains(&format!("wrote {} (--profile-model)", profiles.display())), "{line}");
    let format = |p: &std::path::Path| {
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(p).unwrap()).unwrap()["format"].clone()
    };
    assert_eq!(format(&model), "netanom-eif-v1");
    assert_eq!(format(&profiles), "netanom-profile-kmeans-v1");
    let version = line
        .split_whitespace()
        .nth(1)
        .filter(|v| v.starts_with("eif-"))
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();

    let (test, labels) = (path("test.pcap"), path("labels.csv"));
    synth(&test, Some(&labels), &["--seed", "2"]);
    let out = netanom(&[
        "eval".as_ref(),
        "--pcap".as_ref(),
        test.as_os_str(),
        "--labels".as_ref(),
        labels.as_os_str(),
        "--model".as_ref(),
        model.as_os_str(),
        "--profile-model".as_ref(),
        profiles.as_os_str(),
        "--json".as_ref(),
    ]);
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["f1"], 1.0, "{e}");
    assert_eq!(e["false_positive_hosts"], serde_json::json!([]), "{e}");

    // The run reports the loaded model, not one trained on its warm-up.
    let out = netanom(&[
        "run".as_ref(),
        "--quiet".as_ref(),
        "--pcap".as_ref(),
        test.as_os_str(),
        "--model".as_ref(),
        model.as_os_str(),
        "--profile-model".as_ref(),
        profiles.as_os_str(),
    ]);
    let summary = String::from_utf8(out.stdout).unwrap();
    let detection = summary.lines().find(|l| l.starts_with("detection:")).unwrap_or_else(|| panic!("{summary}"));
    assert!(detection.contains(&version), "{detection} does not name {version}");
    // A missing model file is a configuration error that names the key.
    let missing = Command::new(env!("CARGO_BIN_EXE_netanom"))
        .args(["eval", "--labels"])
        .arg(&labels)
        .arg("--pcap")
        .arg(&test)
        .arg("--model")
        .arg(path("absent.json"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("model_path") && err.contains("absent.json"), "{err}");
    // Model files swapped: the error names the kind each file is.
    let swapped = Command::new(env!("CARGO_BIN_EXE_netanom"))
        .args(["run", "--quiet", "--pcap"])
        .arg(&test)
        .arg("--model")
        .arg(&profiles)
        .arg("--profile-model")
        .arg(&model)
        .output()
        .unwrap();
    assert!(!swapped.status.success());
    let err = String::from_utf8_lossy(&swapped.stderr);
    assert!(
        err.contains(&format!(
            "{} is a host-profile (k-means) model (format netanom-profile-kmeans-v1), expected an isolation-forest model",
            profiles.display()
        )),
        "{err}"
    );
}
