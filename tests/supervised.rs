//! `netanom train --supervised` and the supervised detector end to end, as separate processes: `netanom synth
//! --labels` writes a labelled capture (SYN flood, port scan, spoofed-source flood, host sweep over benign
//! sessions), `netanom train --supervised` learns from it and prints its held-out figures, and `netanom run`
//! with `detector.supervised.model_path` set finds the attackers of a capture generated with another seed.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

fn netanom(args: &[&OsStr], env: &[(&str, &OsStr)]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_netanom"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("netanom runs");
    assert!(out.status.success(), "netanom {args:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

fn synth(dir: &Path, seed: u64) -> (std::path::PathBuf, std::path::PathBuf) {
    let (pcap, labels) = (dir.join(format!("synth-{seed}.pcap")), dir.join(format!("labels-{seed}.csv")));
    let seed = seed.to_string();
    netanom(
        &[
            "synth".as_ref(),
            "--seed".as_ref(),
            seed.as_ref(),
            "--out".as_ref(),
            pcap.as_os_str(),
            "--labels".as_ref(),
            labels.as_os_str(),
        ],
        &[],
    );
    (pcap, labels)
}

fn hosts_with_role(labels: &Path, role: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(labels).unwrap();
    text.lines().filter_map(|l| l.strip_suffix(&format!(",{role}"))).map(str::to_string).collect()
}

fn train(pcap: &Path, labels: &Path, model: &Path, json: bool) -> String {
    let mut args: Vec<&OsStr> = vec![
        "train".as_ref(),
        "--supervised".as_ref(),
        "--labels".as_ref(),
        labels.as_os_str(),
        "--pcap".as_ref(),
        pcap.as_os_str(),
        "--out".as_ref(),
        model.as_os_str(),
        "--seed".as_ref(),
        "7".as_ref(),
    ];
    if json {
        args.push("--json".as_ref());
    }
    String::from_utf8(netanom(&args, &[]).stdout).unwrap()
}

#[test]
fn trained_on_one_synth_capture_the_forest_alerts_the_attackers_of_another() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, labels) = synth(dir.path(), 1);
    let model = dir.path().join("rf.json");

    let text = train(&pcap, &labels, &model, true);
    let r: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    let c = &r["confusion"];
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or_else(|| panic!("not a count: {v} in {r}"));
    let (tp, fp, fn_, tn) = (n(&c["tp"]), n(&c["fp"]), n(&c["fn"]), n(&c["tn"]));
    assert_eq!(tp + fn_, n(&r["test"]["attack"]), "{r}");
    assert_eq!(fp + tn, n(&r["test"]["benign"]), "{r}");
    assert!(tp + fn_ >= 3, "the test set holds attack batches: {r}");
    let f = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {r}"));
    assert!((f("precision") - tp as f64 / (tp + fp).max(1) as f64).abs() < 1e-9, "{r}");
    assert!((f("recall") - tp as f64 / (tp + fn_) as f64).abs() < 1e-9, "{r}");
    assert!((f("accuracy") - (tp + tn) as f64 / (tp + fp + fn_ + tn) as f64).abs() < 1e-9, "{r}");
    assert!(f("f1") >= 0.9, "held-out F1: {r}");
    let cv = r["cv"].as_array().unwrap_or_else(|| panic!("no cross-validation: {r}"));
    assert!(cv.len() >= 4, "a grid was cross-validated: {r}");
    for row in cv {
        let (a, p, rc) = (row["accuracy"].as_f64(), row["precision"].as_f64(), row["recall"].as_f64());
        assert!(a.is_some_and(|a| (0.0..=1.0).contains(&a)) && p.is_some() && rc.is_some(), "{row}");
    }
    let threshold = f("threshold");
    assert!(threshold > 0.0 && threshold <= 1.0, "{r}");
    let version = r["model_version"].as_str().unwrap().to_string();
    assert!(version.starts_with("rf-"), "{r}");
    assert_eq!(r["captures"][0]["attackers_seen"].as_array().map(Vec::len), Some(3), "{r}");

    // Another process, the same seed: the same model; the text report shows the same figures.
    let again = dir.path().join("rf-again.json");
    let text = train(&pcap, &labels, &again, false);
    assert!(text.contains(&version), "{text}");
    assert!(text.contains("F1") && text.contains("confusion matrix") && text.contains("<- chosen"), "{text}");
    assert!(text.contains("features  accuracy  precision  recall"), "cross-validated accuracy: {text}");
    assert_eq!(std::fs::read(&model).unwrap(), std::fs::read(&again).unwrap(), "training is reproducible");

    let (other, other_labels) = synth(dir.path(), 2);
    let alerts = dir.path().join("alerts.jsonl");
    netanom(
        &[
            "run".as_ref(),
            "--quiet".as_ref(),
            "--pcap".as_ref(),
            other.as_os_str(),
            "--alerts-out".as_ref(),
            alerts.as_os_str(),
            "--supervised-model".as_ref(),
            model.as_os_str(),
        ],
        &[],
    );
    let incidents: Vec<serde_json::Value> = std::fs::read_to_string(&alerts)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .collect();
    // The supervised kind's evidence in each incident, with the incident's host.
    let supervised: Vec<serde_json::Value> = incidents
        .iter()
        .flat_map(|a| {
            let kinds = a["kinds"].as_array().cloned().unwrap_or_default();
            kinds.into_iter().filter(|k| k["kind"] == "supervised").map(|mut k| {
                k["host"] = a["host"].clone();
                k
            })
        })
        .collect();
    let alerted: BTreeSet<String> = supervised.iter().map(|a| a["host"].as_str().unwrap().to_string()).collect();
    let attackers = hosts_with_role(&other_labels, "attacker");
    assert_eq!(attackers.len(), 3);
    assert_eq!(alerted, attackers, "supervised alerts name exactly the attackers");
    for a in &supervised {
        assert_eq!(a["model_version"], version.as_str(), "{a}");
        assert!(a["score"].as_f64().unwrap() >= a["threshold"].as_f64().unwrap(), "{a}");
        assert!(a["features"].as_array().is_some_and(|f| !f.is_empty()), "explained: {a}");
    }
}

#[test]
fn a_missing_model_is_a_configuration_error_naming_the_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_netanom"))
        .args(["config", "--check", "--role", "detector"])
        .env("NETANOM_DETECTOR__SUPERVISED__MODEL_PATH", "/nonexistent/rf.json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("detector.supervised.model_path /nonexistent/rf.json is not a file"), "{err}");
}
