//! The router's tables against its memory budget, measured with a counting global allocator (`stats_alloc`): the
//! bytes the suppression groups, the incidents and the deduplication ids report match what the allocator handed
//! out, the per-entry figures the budget is sized with cover what an entry takes, and under a flood of distinct
//! hosts with a small budget the tables stay within their shares (by the allocator's count) while the alerts of
//! a host attacking throughout come out, every anomaly accounted for once and its incident kept whole; the
//! deduplication ids of partitions filled in turn and left stay within their share by the allocator's count.
//!
//! `cargo test --release -p netanom-alert-router --test memory_budget -- --nocapture` prints the figures.

use std::alloc::System;
use std::collections::BTreeSet;

use netanom_alert_router::budget::Shares;
use netanom_alert_router::dedup::{ID_BUDGET_BYTES, SeenIds};
use netanom_alert_router::incident::{INCIDENT_BUDGET_BYTES, Incidents, incidents_bytes, incidents_for};
use netanom_alert_router::suppress::{Emitted, GROUP_BUDGET_BYTES, Origin, Suppressor, groups_bytes, groups_for};
use netanom_alert_router::{IncidentConfig, SuppressionConfig};
use netanom_schemas::{Anomaly, AnomalyKind, Contribution};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::time::Instant;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The allocator counts every thread: one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Bytes held now, net of frees, since `region` began (`stats_alloc` counts a reallocation's growth in
/// `bytes_allocated` and its shrinking in `bytes_deallocated` already).
fn held(region: &Region<'_, System>) -> i64 {
    let c = region.change();
    c.bytes_allocated as i64 - c.bytes_deallocated as i64
}

const S: i64 = 1_000_000_000;
const T0: i64 = 1_700_000_000 * S;

/// The `n`-th host of a /8.
fn host(n: u32) -> String {
    std::net::Ipv4Addr::from(0x0a00_0000 + n).to_string()
}

/// An anomaly as the detector writes them: id, reason, sample and three features.
fn anomaly(host: &str, kind: AnomalyKind, at_ns: i64) -> Anomaly {
    Anomaly {
        id: format!("{kind}:{host}:{at_ns}"),
        host: host.to_string(),
        kind,
        window_start_ns: at_ns,
        window_end_ns: at_ns + 10 * S,
        score: 57.0,
        threshold: 20.0,
        target: Some("10.255.9.9".into()),
        reason: format!("fan-out: 57 distinct ports on 10.255.9.9 within 10 s from {host} (threshold 20)"),
        features: ["distinct_dst_ports", "distinct_dst_hosts", "syn_without_ack"]
            .iter()
            .map(|n| Contribution { name: (*n).to_string(), value: 57.0, baseline: Some(3.0) })
            .collect(),
        sample: format!("{host}:41234 > 10.255.9.9:445 TCP [S] len 60"),
        model_version: "rules-v1".into(),
        detected_ns: None,
        window_key: None,
        closing: false,
    }
}

#[test]
fn the_bytes_reported_are_the_bytes_allocated() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = Instant::now();
    const N: u32 = 50_000;
    let default = Shares::of(netanom_alert_router::budget::DEFAULT_BUDGET_MIB);
    println!(
        "default budget ({} MiB): {} groups, {} incidents, {} ids over all partitions",
        netanom_alert_router::budget::DEFAULT_BUDGET_MIB,
        groups_for(default.suppression),
        incidents_for(default.incidents),
        default.dedup / ID_BUDGET_BYTES
    );

    // Suppression groups: one anomaly each, anomalies made inside the region (the groups keep them).
    let mut s = Suppressor::new(SuppressionConfig::default(), usize::MAX);
    s.offer(anomaly("192.0.2.1", AnomalyKind::Fanout, T0), Origin { partition: 0, offset: 0 }, now);
    let (before, region) = (s.bytes() as i64, Region::new(GLOBAL));
    for n in 0..N {
        let out =
            s.offer(anomaly(&host(n), AnomalyKind::Fanout, T0), Origin { partition: 0, offset: 1 + i64::from(n) }, now);
        assert!(out.is_empty());
    }
    let (allocated, reported) = (held(&region), s.bytes() as i64 - before);
    println!(
        "{N} suppression groups: {} bytes each allocated, {} reported; budgeted {} each ({GROUP_BUDGET_BYTES} besides \
         the table counted twice)",
        allocated / i64::from(N),
        reported / i64::from(N),
        groups_bytes(N as usize) / N as usize
    );
    assert!((reported - allocated).abs() <= allocated / 10, "groups: reported {reported} vs allocated {allocated}");
    // What is budgeted besides the table (counted once here) covers a group.
    let table = (groups_bytes(N as usize) - N as usize * GROUP_BUDGET_BYTES) as i64 / 2;
    assert!(
        allocated - table <= i64::from(N) * GROUP_BUDGET_BYTES as i64,
        "a group takes {} bytes besides the table, more than the {GROUP_BUDGET_BYTES} budgeted",
        (allocated - table) / i64::from(N)
    );

    // Incidents: the groups the suppressor emits (made inside the region: evicted one by one by a suppressor
    // holding one window, whose own bytes are taken out).
    let mut single =
        Suppressor::new(SuppressionConfig { max_groups: Some(1), ..SuppressionConfig::default() }, usize::MAX);
    let mut incidents = Incidents::new(IncidentConfig::default(), usize::MAX);
    let first = single.offer(anomaly("192.0.2.1", AnomalyKind::Fanout, T0), Origin { partition: 0, offset: 0 }, now);
    assert!(first.is_empty());
    let region = Region::new(GLOBAL);
    let (before, single_before) = (incidents.bytes() as i64, single.bytes() as i64);
    for n in 0..N {
        for group in single.offer(
            anomaly(&host(n), AnomalyKind::Fanout, T0),
            Origin { partition: 0, offset: 1 + i64::from(n) },
            now,
        ) {
            assert!(incidents.absorb(group, now).is_empty());
        }
    }
    let (allocated, reported) =
        (held(&region) - (single.bytes() as i64 - single_before), incidents.bytes() as i64 - before);
    println!(
        "{N} incidents: {} bytes each allocated, {} reported; budgeted {} each ({INCIDENT_BUDGET_BYTES} besides the \
         table counted twice)",
        allocated / i64::from(N),
        reported / i64::from(N),
        incidents_bytes(N as usize) / N as usize
    );
    assert_eq!(incidents.open_incidents(), N as usize);
    assert!((reported - allocated).abs() <= allocated / 10, "incidents: reported {reported} vs allocated {allocated}");
    let table = (incidents_bytes(N as usize) - N as usize * INCIDENT_BUDGET_BYTES) as i64 / 2;
    assert!(
        allocated - table <= i64::from(N) * INCIDENT_BUDGET_BYTES as i64,
        "an incident takes {} bytes besides the table, more than the {INCIDENT_BUDGET_BYTES} budgeted",
        (allocated - table) / i64::from(N)
    );

    // Deduplication ids: 4 partitions.
    let mut seen = SeenIds::new(1 << 20, usize::MAX);
    let region = Region::new(GLOBAL);
    let ids = 4 * 60_000u32;
    let mut id = String::new();
    for n in 0..ids {
        use std::fmt::Write as _;
        id.clear();
        let _ = write!(id, "fanout:{}:{T0}", host(n));
        assert!(seen.insert((n % 4) as i32, &id));
    }
    drop(id);
    let (allocated, reported) = (held(&region), seen.bytes() as i64);
    println!(
        "{ids} dedup ids: {:.1} bytes each allocated, {:.1} reported; budgeted {ID_BUDGET_BYTES}",
        allocated as f64 / f64::from(ids),
        reported as f64 / f64::from(ids)
    );
    assert!((reported - allocated).abs() <= allocated / 10, "ids: reported {reported} vs allocated {allocated}");
    assert!(allocated <= i64::from(ids) * ID_BUDGET_BYTES as i64);
}

#[test]
fn a_flood_of_distinct_hosts_stays_within_the_budget_and_the_attackers_alerts_come_out() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    const BUDGET_MIB: u64 = 4;
    let shares = Shares::of(BUDGET_MIB);
    let now = Instant::now();
    let mut s = Suppressor::new(SuppressionConfig::default(), shares.suppression);
    let mut incidents = Incidents::new(IncidentConfig::default(), shares.incidents);
    println!(
        "budget {BUDGET_MIB} MiB: {} groups, {} incidents at most; shares {shares:?}",
        groups_for(shares.suppression),
        incidents_for(shares.incidents)
    );
    let attacker = "192.0.2.66";
    // 200,000 one-anomaly hosts over 60 s of packet time; the attacker every 75 ms (250 flood hosts
    // apart), three kinds in turn.
    const FLOOD: i64 = 200_000;
    let kinds = [AnomalyKind::Fanout, AnomalyKind::BruteForce, AnomalyKind::Rate];
    let mut offered_attacker = BTreeSet::new();
    let mut accounted_attacker = Vec::new();
    let (mut accounted, mut peak_held, mut attacker_ids) = (0usize, 0i64, BTreeSet::new());
    let mut last_attacker: Option<netanom_schemas::Alert> = None;
    let take = |emitted: Vec<Emitted>,
                accounted: &mut usize,
                accounted_attacker: &mut Vec<i64>,
                attacker_ids: &mut BTreeSet<String>,
                last: &mut Option<netanom_schemas::Alert>| {
        for e in emitted {
            *accounted += e.origins.len();
            if e.alert.host == attacker {
                accounted_attacker.extend(e.origins.iter().map(|o| o.offset));
                attacker_ids.insert(e.alert.id.clone());
                *last = Some(e.alert);
            }
        }
    };
    let region = Region::new(GLOBAL);
    let mut offset = 0i64;
    for k in 0..FLOOD {
        let at = T0 + k * 60 * S / FLOOD;
        let mut batch = vec![anomaly(&host(k as u32), AnomalyKind::Fanout, at)];
        if k % 250 == 0 {
            batch.push(anomaly(attacker, kinds[(k / 250) as usize % 3], at));
        }
        for a in batch {
            offset += 1;
            if a.host == attacker {
                offered_attacker.insert(offset);
            }
            let mut out = Vec::new();
            for group in s.offer(a, Origin { partition: 0, offset }, now) {
                out.extend(incidents.absorb(group, now));
            }
            out.extend(incidents.close_quiet(s.watermark_ns(), |h| s.open_until(h)));
            take(out, &mut accounted, &mut accounted_attacker, &mut attacker_ids, &mut last_attacker);
        }
        if k % 997 == 0 {
            peak_held = peak_held.max(held(&region));
        }
    }
    let mut out = Vec::new();
    for group in s.drain() {
        out.extend(incidents.absorb(group, now));
    }
    out.extend(incidents.drain());
    let (peaks, evictions) = ((s.peak_bytes(), incidents.peak_bytes()), (s.evictions(), incidents.evictions()));
    take(out, &mut accounted, &mut accounted_attacker, &mut attacker_ids, &mut last_attacker);
    println!(
        "{FLOOD} hosts: peak bytes reported (groups, incidents) {peaks:?} of ({}, {}); allocator's peak {peak_held} of \
         {}; evictions {evictions:?}; attacker: {} anomalies in {} incident(s), last revision {:?}",
        shares.suppression,
        shares.incidents,
        shares.suppression + shares.incidents,
        offered_attacker.len(),
        attacker_ids.len(),
        last_attacker.as_ref().map(|a| (a.revision, a.final_revision, a.count, a.kinds.len()))
    );
    assert!(peaks.0 <= shares.suppression && peaks.1 <= shares.incidents, "over a share: {peaks:?}");
    assert!(peak_held <= (shares.suppression + shares.incidents) as i64, "the allocator counted {peak_held} bytes");
    assert!(evictions.0.total() + evictions.1.total() > 150_000, "the flood was evicted: {evictions:?}");
    assert_eq!(accounted, offset as usize, "every anomaly is in exactly one alert");
    accounted_attacker.sort_unstable();
    assert_eq!(accounted_attacker, offered_attacker.into_iter().collect::<Vec<_>>(), "every attacker anomaly, once");
    assert_eq!(attacker_ids.len(), 1, "the attacker's incident stayed open through the flood: {attacker_ids:?}");
    let last = last_attacker.expect("the attacker was alerted");
    assert!(last.final_revision && last.kinds.len() == 3, "its closing revision has all three kinds: {last:?}");
}

#[test]
fn dedup_ids_moving_across_partitions_stay_within_the_share_by_the_allocators_count() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // A 1 MiB share (a 4 MiB budget) with the most ids per partition it fits; 64 partitions each filled past
    // that and then abandoned for the next, none revoked.
    let share = Shares::of(4).dedup;
    let per_partition = share / ID_BUDGET_BYTES;
    const PARTITIONS: i32 = 64;
    let mut id = String::with_capacity(64);
    let mut seen = SeenIds::new(per_partition, share);
    let region = Region::new(GLOBAL);
    let (mut peak_reported, mut peak_held, mut worst_gap) = (0usize, 0i64, 0i64);
    for p in 0..PARTITIONS {
        for n in 0..per_partition + per_partition / 4 {
            use std::fmt::Write as _;
            id.clear();
            let _ = write!(id, "fanout:{}:{T0}", host(p as u32 * 1_000_000 + n as u32));
            assert!(seen.insert(p, &id));
            if n % 257 == 0 {
                let (reported, allocated) = (seen.bytes(), held(&region));
                assert!(reported <= share, "partition {p}: {reported} bytes reported, over the share {share}");
                assert!(
                    (reported as i64 - allocated).abs() <= allocated / 10,
                    "partition {p}: reported {reported} vs allocated {allocated}"
                );
                peak_reported = peak_reported.max(reported);
                peak_held = peak_held.max(allocated);
                worst_gap = worst_gap.max((reported as i64 - allocated).abs());
            }
        }
        // The newest ids of the partition just filled are still duplicates.
        for n in per_partition + per_partition / 4 - 1000..per_partition + per_partition / 4 {
            use std::fmt::Write as _;
            id.clear();
            let _ = write!(id, "fanout:{}:{T0}", host(p as u32 * 1_000_000 + n as u32));
            assert!(!seen.insert(p, &id), "{id} was seen last in partition {p}");
        }
    }
    println!(
        "{PARTITIONS} partitions of {per_partition} ids in turn through a {share}-byte share: peak reported {peak_reported}, \
         allocator's peak {peak_held}, largest gap {worst_gap}; {} ids held; evictions {:?}",
        seen.len(),
        seen.evictions()
    );
    assert!(peak_held <= share as i64 + share as i64 / 10, "the allocator counted {peak_held} bytes");
    assert!(seen.evictions().budget > (PARTITIONS as u64 - 2) * per_partition as u64 / 2, "{:?}", seen.evictions());
}
