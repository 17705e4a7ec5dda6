//! Incidents end to end, as separate processes: `netanom synth` writes a labelled capture with attackers that
//! several detector kinds fire on (a SYN flood, a port scan, a host sweep, a brute force), `netanom run --pcap
//! --alerts-out` runs the whole pipeline on it. Each attacker must be told as one incident: every alert line
//! about it shares one id, its revisions count up from 1 and exactly one is final; the incident's first evidence
//! is not before the attacker's first packet and its detection not before its first evidence; only attackers and
//! victims are alerted, and no benign host is named as a target.

mod common;

use std::collections::BTreeMap;

use common::{run_capture, synth};
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
    synth(&pcap, Some(&labels_path), &["--attacks", attacks]);
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

/// The flood of the default scenario, run three times: the victim's final revision states the exact totals of
/// the window (distinct sources and packets sent to the victim within it, counted from the capture) every time,
/// whatever the order the detector read its partitions in, and names no benign host among the flood's sources.
#[test]
fn victim_totals_are_exact_and_identical_from_run_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, labels_path, out) =
        (dir.path().join("s.pcap"), dir.path().join("labels.csv"), dir.path().join("a.jsonl"));
    synth(&pcap, Some(&labels_path), &["--attacks", "spoofed-syn-flood"]);
    let truth = labels::load(&labels_path, &pcap).unwrap();
    const WINDOW_NS: i64 = 10_000_000_000;
    let mut finals = Vec::new();
    for run in 0..3 {
        let (alerts, _) = run_capture(&pcap, &out);
        let victim: Vec<&Value> = alerts
            .iter()
            .filter(|a| a["final"] == true && a["kinds"].as_array().unwrap().iter().any(|k| k["kind"] == "victim"))
            .collect();
        assert_eq!(victim.len(), 1, "run {run}: one victim incident: {alerts:#?}");
        let a = victim[0];
        let kind = a["kinds"].as_array().unwrap().iter().find(|k| k["kind"] == "victim").unwrap();
        let sample = kind["sample"].as_str().unwrap().to_string();
        finals.push((
            a["host"].as_str().unwrap().to_string(),
            ns(kind, "first_seen"),
            ns(kind, "detected_at"),
            (ns(a, "first_seen"), ns(a, "detected_at"), ns(a, "last_seen")),
            a["totals"]["sources"].as_u64(),
            a["totals"]["packets"].as_u64(),
            a["totals"]["bytes"].as_u64(),
            ns(kind, "last_seen"),
            sample,
        ));
    }
    assert!(finals.iter().all(|f| *f == finals[0]), "the same final figures each run: {finals:#?}");
    let (host, first, detected, incident_times, sources, packets, bytes, last, sample) = &finals[0];
    assert_eq!(*incident_times, (*first, *detected, *last), "the incident's times are the victim's");
    let start = first.div_euclid(WINDOW_NS) * WINDOW_NS;
    assert!(truth.victims.contains(host), "{host} is a labelled victim");

    // The exact figures, from the capture.
    let victim: std::net::IpAddr = host.parse().unwrap();
    // Per source: packets, SYNs, first and last packet time.
    let mut exact_sources: BTreeMap<std::net::IpAddr, (u64, u64, i64, i64)> = BTreeMap::new();
    let (mut exact_packets, mut exact_bytes) = (0u64, 0u64);
    netanom::traffic::for_each_packet(&pcap, &netanom_producer::FlowConfig::default(), |src, p| {
        if p.destination == victim && p.ts_ns.div_euclid(WINDOW_NS) * WINDOW_NS == start {
            let e = exact_sources.entry(src).or_insert((0, 0, i64::MAX, i64::MIN));
            e.0 += 1;
            e.1 += u64::from(p.is_syn());
            e.2 = e.2.min(p.ts_ns);
            e.3 = e.3.max(p.ts_ns);
            exact_packets += 1;
            exact_bytes += u64::from(p.wire_len);
        }
    })
    .unwrap();
    assert!(exact_sources.len() >= 1_000, "the flood's window: {} sources", exact_sources.len());
    assert_eq!(*sources, Some(exact_sources.len() as u64), "distinct sources");
    assert_eq!(*packets, Some(exact_packets), "packets");
    assert_eq!(*bytes, Some(exact_bytes), "bytes");
    // The flood's own packets date it: sources with the flood's profile (at most 5 packets, only SYNs, the
    // default `victim.max_packets_per_source` of a SYN flood), not a benign client of the victim.
    let flood = exact_sources.values().filter(|(sent, syns, _, _)| *sent <= 5 && syns == sent);
    let (exact_first, exact_last) = flood.fold((i64::MAX, i64::MIN), |(f, l), s| (f.min(s.2), l.max(s.3)));
    // The window's closing update replaces the times of its first report (which may date the flood by a benign
    // client whose only packet so far was a SYN).
    assert_eq!(*first, exact_first, "first_seen is the flood's first packet");
    assert_eq!(*last, exact_last, "last_seen is the flood's last packet");
    // Detected at the packet that took the window's distinct sources to the threshold (500 by default): the
    // first packet of its 500th source.
    let mut first_packets: Vec<i64> = exact_sources.values().map(|s| s.2).collect();
    first_packets.sort_unstable();
    assert_eq!(*detected, first_packets[499], "detected_at is the 500th source's first packet");

    // The named sources sent to the victim within the window, only SYNs, and none is a benign host.
    let named: Vec<&str> =
        sample.split("sources include ").nth(1).unwrap_or_default().trim_end_matches(')').split(", ").collect();
    assert_eq!(named.len(), 8, "{sample}");
    for n in named {
        assert!(!truth.benign.contains(n), "benign host {n} named as a flood source: {sample}");
        let (sent, syns, _, _) = exact_sources[&n.parse::<std::net::IpAddr>().unwrap()];
        assert!(sent <= 5 && syns == sent, "{n} sent {sent} packets ({syns} SYN): not the flood's profile");
    }
}
