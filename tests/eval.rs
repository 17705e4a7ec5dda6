//! `netanom eval` end to end, as separate processes: `netanom synth --out X --labels Y` writes the seeded
//! labelled scenario (SYN flood, port scan, spoofed-source flood, host sweep over benign sessions), then
//! `netanom eval --pcap X --labels Y --json` runs the whole pipeline on it. Every attacker and the spoofed
//! flood's victim must be found and no benign host flagged: host-level F1 = 1.

use std::process::Command;

fn netanom(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_netanom")).args(args).output().expect("netanom runs");
    assert!(out.status.success(), "netanom {args:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
fn eval_on_the_synth_scenario_finds_every_attacker_and_no_benign_host() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, labels) = (dir.path().join("synth.pcap"), dir.path().join("labels.csv"));
    netanom(&["synth".as_ref(), "--out".as_ref(), pcap.as_os_str(), "--labels".as_ref(), labels.as_os_str()]);
    let out = netanom(&[
        "eval".as_ref(),
        "--pcap".as_ref(),
        pcap.as_os_str(),
        "--labels".as_ref(),
        labels.as_os_str(),
        "--json".as_ref(),
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    let e: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|err| panic!("{err}: {text}"));
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
