//! Incidents end to end, as separate processes: `netanom synth` writes a labelled capture with attackers that
//! several detector kinds fire on (a SYN flood, a port scan, a host sweep, a brute force), `netanom run --pcap
//! --alerts-out` runs the whole pipeline on it. Each attacker must be told as one incident: every alert line
//! about it shares one id, its revisions count up from 1 and exactly one is final; the incident's first evidence
//! is not before the attacker's first packet and its detection not before its first evidence; only attackers and
//! victims are alerted, and no benign host is named as a target.

mod common;

use std::collections::BTreeMap;

use common::{netanom, run_capture};
use netanom::labels;
use netanom::traffic;
use serde_json::Value;

/// Nanoseconds since the epoch of an alert's RFC 3339 time field.
fn ns(alert: &Value, field: &str) -> i64 {
    let text = alert[field].as_str().unwrap_or_else(|| panic!("{field} missing: {alert:#}"));
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{field} {text:?}: {e}"));
    i64::try_from(t.unix_timestamp_nanos()).unwrap()
}

#[test]
fn each_attacker_is_one_incident_that_starts_at_its_first_packet() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, labels_path, out) =
        (dir.path().join("s.pcap"), dir.path().join("labels.csv"), dir.path().join("a.jsonl"));
    let attacks = "syn-flood,port-scan,host-sweep,brute-force";
    netanom(&[
        "synth".as_ref(),
        "--out".as_ref(),
        pcap.as_os_str(),
        "--labels".as_ref(),
        labels_path.as_os_str(),
        "--attacks".as_ref(),
        attacks.as_ref(),
    ]);
    let (alerts, _) = run_capture(&pcap, &out);
    let text = std::fs::read_to_string(&out).unwrap();
    let truth = labels::load(&labels_path, &pcap).unwrap();
    let packets = traffic::scan(&pcap, &netanom_producer::FlowConfig::default()).unwrap();
    assert!(truth.attackers.len() >= 4, "the scenario has an attacker per attack: {:?}", truth.attackers);

    let mut by_host: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for a in &alerts {
        by_host.entry(a["host"].as_str().unwrap()).or_default().push(a);
    }
    for attacker in &truth.attackers {
        let revisions = by_host.get(attacker.as_str()).unwrap_or_else(|| panic!("{attacker} not alerted: {text}"));
        let ids: std::collections::BTreeSet<&str> = revisions.iter().map(|a| a["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 1, "{attacker}: one incident, got {ids:?}");
        let numbers: Vec<u64> = revisions.iter().map(|a| a["revision"].as_u64().unwrap()).collect();
        assert_eq!(numbers, (1..=numbers.len() as u64).collect::<Vec<_>>(), "{attacker}: revisions in order");
        let finals: Vec<bool> = revisions.iter().map(|a| a["final"].as_bool().unwrap()).collect();
        assert_eq!(finals.iter().filter(|f| **f).count(), 1, "{attacker}: exactly one final revision");
        assert!(finals.last().unwrap(), "{attacker}: the final revision is the last one");
        let last = revisions.last().unwrap();
        let first_packet = packets.hosts[attacker].first_ns;
        let (first_seen, detected_at) = (ns(last, "first_seen"), ns(last, "detected_at"));
        assert!(
            first_seen >= first_packet,
            "{attacker}: first_seen {first_seen} before its first packet {first_packet}"
        );
        assert!(detected_at >= first_seen && ns(last, "last_seen") >= detected_at, "{attacker}: {last:#}");
        let kinds = last["kinds"].as_array().unwrap();
        assert!(!kinds.is_empty(), "{attacker}: {last:#}");
        for k in kinds {
            assert!(ns(k, "first_seen") >= first_packet, "{attacker}: {k:#}");
        }
        let count: u64 = kinds.iter().map(|k| k["count"].as_u64().unwrap()).sum();
        assert_eq!(last["count"].as_u64(), Some(count), "{attacker}: the count is every kind's");
    }
    for a in &alerts {
        let host = a["host"].as_str().unwrap();
        assert!(truth.attackers.contains(host) || truth.victims.contains(host), "{host} is not an attacker: {a:#}");
        if let Some(target) = a["target"].as_str() {
            assert!(!truth.benign.contains(target), "benign host {target} named as a target: {a:#}");
        }
    }
}
