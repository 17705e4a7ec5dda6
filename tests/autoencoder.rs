//! `netanom train --autoencoder` and the autoencoder detector end to end, as separate processes: `netanom synth
//! --attacks none` writes benign traffic, `netanom train --autoencoder` learns the KitNET model from it (twice,
//! to check that the file is reproducible), and `netanom run --autoencoder-model` on a capture generated with
//! another seed and its attacks finds attackers by reconstruction error, with the subset that reconstructed
//! worst named in feature names.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::Path;

mod common;
use common::{by_kind, netanom, read_alerts, synth};

fn hosts_with_role(labels: &Path, role: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(labels).unwrap();
    text.lines().filter_map(|l| l.strip_suffix(&format!(",{role}"))).map(str::to_string).collect()
}

fn train(pcap: &Path, model: &Path) -> String {
    let out = netanom(&[
        "train".as_ref(),
        "--autoencoder".as_ref(),
        "--pcap".as_ref(),
        pcap.as_os_str(),
        "--out".as_ref(),
        model.as_os_str(),
        "--seed".as_ref(),
        "7".as_ref(),
    ]);
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn trained_on_benign_synth_traffic_the_autoencoders_find_attackers_of_another_capture() {
    let dir = tempfile::tempdir().unwrap();
    let benign = dir.path().join("benign.pcap");
    synth(&benign, None, &["--seed", "1", "--attacks", "none"]);
    let model = dir.path().join("ae.json");
    let text = train(&benign, &model);
    assert!(text.contains("(--autoencoder-model)") && text.contains("autoencoders over ["), "{text}");
    let version = text.split_whitespace().nth(1).unwrap().to_string();
    assert!(version.starts_with("ae-"), "{text}");
    let again = dir.path().join("ae-again.json");
    assert!(train(&benign, &again).contains(&version));
    assert_eq!(std::fs::read(&model).unwrap(), std::fs::read(&again).unwrap(), "training is reproducible");

    let (attack, labels) = (dir.path().join("attack.pcap"), dir.path().join("labels.csv"));
    synth(&attack, Some(&labels), &["--seed", "2"]);
    let alerts_out = dir.path().join("alerts.jsonl");
    let out = netanom(&[
        "run".as_ref(),
        "--quiet".as_ref(),
        "--pcap".as_ref(),
        attack.as_os_str(),
        "--alerts-out".as_ref(),
        alerts_out.as_os_str(),
        "--autoencoder-model".as_ref(),
        model.as_os_str(),
    ]);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains(&format!("autoencoder ensemble {version} (netanom-kitnet-v1)")), "{summary}");
    let found: Vec<serde_json::Value> =
        by_kind(&read_alerts(&alerts_out)).into_iter().filter(|a| a["kind"] == "autoencoder").collect();
    let hosts: BTreeSet<String> = found.iter().map(|a| a["host"].as_str().unwrap().to_string()).collect();
    let attackers = hosts_with_role(&labels, "attacker");
    let benign_hosts = hosts_with_role(&labels, "benign");
    assert!(hosts.intersection(&attackers).count() >= 2, "attackers {attackers:?}, autoencoder alerts {hosts:?}");
    assert!(hosts.is_disjoint(&benign_hosts), "benign hosts alerted: {hosts:?}");
    for a in &found {
        assert_eq!(a["model_version"], version.as_str(), "{a}");
        assert!(a["score"].as_f64().unwrap() > a["threshold"].as_f64().unwrap(), "{a}");
        assert!(a["reason"].as_str().unwrap().contains("worst reconstructed: ["), "{a}");
        assert!(a["features"].as_array().is_some_and(|f| !f.is_empty()), "explained: {a}");
    }
}

#[test]
fn a_model_file_of_another_kind_is_named_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("forest.json");
    std::fs::write(&wrong, r#"{"format": "netanom-eif-v1", "features": []}"#).unwrap();
    let capture = dir.path().join("c.pcap");
    synth(&capture, None, &["--packets", "200"]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_netanom"))
        .args([OsStr::new("run"), "--quiet".as_ref(), "--pcap".as_ref(), capture.as_os_str()])
        .arg("--autoencoder-model")
        .arg(&wrong)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is an isolation-forest model (format netanom-eif-v1), expected an autoencoder (KitNET) model"),
        "{err}"
    );
}
