//! Packet time you can trust, end to end through `netanom run` on the real nmap SYN scan of `../shared/data`
//! (used in place, never copied into this repository; the test says so and passes when the folder is absent):
//! - one packet stamped ten years ahead and one stamped in 1970 inserted into the capture leave the alerts
//!   identical to the clean capture's, and exactly those two records are dead-lettered;
//! - the capture moved to start in the first minute after the Unix epoch raises the same alerts, moved by the same
//!   amount;
//! - a quiet gap longer than the skew in the middle of the capture re-anchors the clocks: every packet published is
//!   examined or counted as outside the skew, and the run ends with its summary.

mod common;

use std::path::{Path, PathBuf};

fn scan_capture() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/evilfingers-nmap/TCP_SYN_SCAN.pcap");
    path.exists().then_some(path)
}

/// A classic little-endian pcap: its global header and its records as (seconds, microseconds, rest of the
/// record: lengths and data).
struct Pcap {
    header: Vec<u8>,
    records: Vec<(u32, u32, Vec<u8>)>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

impl Pcap {
    fn read(path: &Path) -> Self {
        let b = std::fs::read(path).unwrap();
        assert_eq!(u32_at(&b, 0), 0xa1b2_c3d4, "a little-endian microsecond pcap");
        let mut records = Vec::new();
        let mut at = 24;
        while at + 16 <= b.len() {
            let len = u32_at(&b, at + 8) as usize;
            records.push((u32_at(&b, at), u32_at(&b, at + 4), b[at + 8..at + 16 + len].to_vec()));
            at += 16 + len;
        }
        Self { header: b[..24].to_vec(), records }
    }

    fn write(&self, path: &Path) {
        let mut b = self.header.clone();
        for (sec, usec, rest) in &self.records {
            b.extend_from_slice(&sec.to_le_bytes());
            b.extend_from_slice(&usec.to_le_bytes());
            b.extend_from_slice(rest);
        }
        std::fs::write(path, b).unwrap();
    }
}

fn summary_line<'a>(summary: &'a str, prefix: &str) -> &'a str {
    summary.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} line in {summary}"))
}

#[test]
fn a_far_future_and_a_1970_timestamp_are_dead_lettered_and_change_no_alert() {
    let Some(scan) = scan_capture() else {
        eprintln!("skipping: ../shared/data (the shared captures) is not beside this checkout");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("alerts.jsonl");
    let (clean, clean_summary) = common::run_capture(&scan, &out);
    assert!(!clean.is_empty(), "the scan is alerted");
    assert!(summary_line(&clean_summary, "detection:").contains("dead-lettered 0;"), "{clean_summary}");

    // Two copies of a packet 95 % into the capture, one stamped ten years later, one in 1970. The capture lasts
    // 1.24 s and batches close after 1 s of packet time, so by then both hosts' partitions have received a batch
    // and have a packet clock (the first record of a partition anchors its clock).
    let mut pcap = Pcap::read(&scan);
    let k = pcap.records.len() * 95 / 100;
    let (sec, usec, rest) = pcap.records[k].clone();
    pcap.records.insert(k + 1, (sec + 10 * 365 * 86_400, usec, rest.clone()));
    pcap.records.insert(k + 2, (1, 0, rest));
    let dirty_path = dir.path().join("skewed.pcap");
    pcap.write(&dirty_path);
    let (dirty, summary) = common::run_capture(&dirty_path, &out);

    let sorted = |mut v: Vec<serde_json::Value>| {
        v.sort_by_key(|a| a.to_string());
        v
    };
    assert_eq!(sorted(dirty), sorted(clean), "alerts changed by two bad timestamps");
    assert!(
        summary_line(&summary, "detection:").contains("dead-lettered 2 (2 packets outside the packet-time skew);"),
        "{summary}"
    );
    assert!(summary_line(&summary, "packets:").contains("outside the packet-time skew 2"), "{summary}");
}

#[test]
fn a_capture_starting_at_the_epoch_raises_the_alerts_of_the_same_capture_at_a_modern_date() {
    let Some(scan) = scan_capture() else {
        eprintln!("skipping: ../shared/data (the shared captures) is not beside this checkout");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("alerts.jsonl");
    let (modern, _) = common::run_capture(&scan, &out);
    assert!(!modern.is_empty(), "the scan is alerted");

    // Moved back by whole minutes, so every window (10 s, 60 s) stays aligned the same way: the capture starts
    // within the first minute of 1970.
    let mut pcap = Pcap::read(&scan);
    let start = pcap.records[0].0 / 60 * 60;
    for r in &mut pcap.records {
        r.0 -= start;
    }
    assert!(pcap.records[0].0 < 60);
    let epoch_path = dir.path().join("epoch.pcap");
    pcap.write(&epoch_path);
    let (epoch, _) = common::run_capture(&epoch_path, &out);

    let shift_ns = i128::from(start) * 1_000_000_000;
    // Everything but the times (and the id, which names the window) is equal; the times are shifted, those of
    // the incident and those of each of its kinds.
    fn shift_times(obj: &mut serde_json::Map<String, serde_json::Value>, shift: i128) {
        for key in ["first_seen", "last_seen", "detected_at"] {
            if let Some(t) = obj.get(key).and_then(|v| v.as_str()) {
                let t = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .unwrap_or_else(|e| panic!("{key} {t}: {e}"));
                obj.insert(key.into(), serde_json::json!(t.unix_timestamp_nanos() - shift));
            }
        }
    }
    let comparable = |alerts: &[serde_json::Value], shift: i128| -> Vec<serde_json::Value> {
        alerts
            .iter()
            .map(|a| {
                let mut a = a.clone();
                let obj = a.as_object_mut().unwrap();
                obj.remove("id");
                shift_times(obj, shift);
                if let Some(kinds) = obj.get_mut("kinds").and_then(|k| k.as_array_mut()) {
                    for k in kinds {
                        shift_times(k.as_object_mut().unwrap(), shift);
                    }
                }
                a
            })
            .collect()
    };
    // The router may emit alerts of the same moment in either order.
    let sorted = |mut v: Vec<serde_json::Value>| {
        v.sort_by_key(|a| a.to_string());
        v
    };
    assert_eq!(sorted(comparable(&epoch, 0)), sorted(comparable(&modern, shift_ns)));
}

/// The number after `label` in a summary line (`published 1234`).
fn number_after(line: &str, label: &str) -> u64 {
    let at = line.find(label).unwrap_or_else(|| panic!("no {label:?} in {line}")) + label.len();
    line[at..].trim_start().split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

#[test]
fn a_quiet_gap_longer_than_the_skew_costs_no_packet_unaccounted() {
    let Some(scan) = scan_capture() else {
        eprintln!("skipping: ../shared/data (the shared captures) is not beside this checkout");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("alerts.jsonl");
    // The second half of the capture 20 minutes later than the first: longer than the default 5 min `max_ahead`.
    let mut pcap = Pcap::read(&scan);
    let half = pcap.records.len() / 2;
    for r in &mut pcap.records[half..] {
        r.0 += 20 * 60;
    }
    let gap_path = dir.path().join("gap.pcap");
    pcap.write(&gap_path);
    let (alerts, summary) = common::run_capture(&gap_path, &out);
    assert!(!alerts.is_empty(), "the scan is alerted: {summary}");
    let published = number_after(summary_line(&summary, "packets:"), "published");
    let detection = summary_line(&summary, "detection:");
    let examined = number_after(detection, "detection:");
    // `dead-lettered N (M packets outside the packet-time skew)`, the part in brackets only when M > 0.
    let dead_lettered = &detection[detection.find("dead-lettered").unwrap()..];
    let skewed = if dead_lettered.contains("packets outside the packet-time skew") {
        number_after(dead_lettered, "(")
    } else {
        0
    };
    assert_eq!(examined + skewed, published, "{summary}");
    assert!(skewed > 0, "the batches just after the gap are outside their partitions' skew: {summary}");
}
