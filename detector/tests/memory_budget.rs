//! The host map's byte budget, measured with a counting global allocator (`stats_alloc`): the bytes it reports
//! match what the allocator handed out for quiet and for scanning hosts, and under a flood of one-packet spoofed
//! sources with a small budget a slow host sweep and a slow port scan mixed into it are still alerted while the
//! reported bytes stay within the budget.
//!
//! `cargo test --release -p netanom-detector --test memory_budget -- --nocapture` prints the figures.

use std::alloc::System;
use std::net::IpAddr;

use netanom_detector::bytes::table_bytes;
use netanom_detector::fixtures::{T0, spoofed_flood, syn};
use netanom_detector::state::{HostState, QUIET_HOST_HEAP_BYTES, quiet_hosts_bytes};
use netanom_detector::{DetectorConfig, Engine, Models};
use netanom_schemas::{Anomaly, AnomalyKind, PacketBatch};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The allocator counts every thread: one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Bytes held now, net of frees, since `region` began (a reallocation's growth is in `bytes_allocated`, its
/// shrinking in `bytes_deallocated`).
fn held(region: &Region<'_, System>) -> i64 {
    let c = region.change();
    c.bytes_allocated as i64 - c.bytes_deallocated as i64
}

/// The host-side rules only: the models and their warm-up buffers (the isolation forest's samples, the
/// profile model's closed windows) are tables of their own.
fn config(budget_mib: u64) -> DetectorConfig {
    let mut c = DetectorConfig::default();
    c.forest.enabled = false;
    c.profile.enabled = false;
    // The destination side (victim tables) is a table of its own.
    c.victim.enabled = false;
    c.state.memory_budget_mib = budget_mib;
    c
}

fn one(source: IpAddr, p: netanom_schemas::PacketFeatures) -> PacketBatch {
    PacketBatch { source, sequence: 0, packets: vec![p] }
}

const SEC: i64 = 1_000_000_000;

#[test]
fn the_bytes_reported_are_the_bytes_allocated() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let victim: IpAddr = "10.9.9.9".parse().unwrap();
    let flood = spoofed_flood(victim, T0, 100_000, 20 * SEC, 7);
    let mut out: Vec<Anomaly> = Vec::with_capacity(100_000);
    let mut engine = Engine::new(&config(4096), Models::default());
    // Warm the engine's own buffers with one host, then count.
    engine.process_batch(&one("10.1.1.1".parse().unwrap(), syn(T0, victim, 80)), 0, &mut out);
    let (before, region) = (engine.hosts_bytes() as i64, Region::new(GLOBAL));
    for b in &flood {
        engine.process_batch(b, 0, &mut out);
    }
    let (allocated, reported) = (held(&region), engine.hosts_bytes() as i64 - before);
    let n = flood.len() as i64;
    println!(
        "{n} one-packet hosts: {} bytes each allocated, {} reported (HostState {} bytes inline; heap per host \
         {} allocated, QUIET_HOST_HEAP_BYTES {QUIET_HOST_HEAP_BYTES})",
        allocated / n,
        reported / n,
        std::mem::size_of::<HostState>(),
        (allocated - table_bytes::<(IpAddr, HostState)>(engine.hosts_tracked()) as i64) / n,
    );
    assert!((reported - allocated).abs() <= allocated / 10, "reported {reported} vs allocated {allocated}");
    let heap = (allocated - table_bytes::<(IpAddr, HostState)>(engine.hosts_tracked()) as i64) / n;
    assert!((heap - QUIET_HOST_HEAP_BYTES as i64).abs() <= heap / 20, "measured {heap} bytes of heap per host");

    // Scanners: 200 hosts, 2,000 ports each, in one window.
    let region = Region::new(GLOBAL);
    let before = engine.hosts_bytes() as i64;
    let mut alerts = Vec::new();
    for h in 0..200u32 {
        let source = IpAddr::from((0x0a02_0000 + h).to_be_bytes());
        for port in 1..=2_000u16 {
            let p = syn(T0 + 21 * SEC + i64::from(port) * 1_000, victim, port);
            engine.process_batch(&one(source, p), 0, &mut alerts);
        }
    }
    // The alerts are the caller's, not the map's.
    assert!(!alerts.is_empty());
    drop(alerts);
    let (allocated, reported) = (held(&region), engine.hosts_bytes() as i64 - before);
    println!("200 scanners of 2,000 ports: {} bytes each allocated, {} reported", allocated / 200, reported / 200);
    assert!((reported - allocated).abs() <= allocated / 10, "reported {reported} vs allocated {allocated}");
}

#[test]
fn a_flood_of_spoofed_sources_hides_neither_a_slow_sweep_nor_a_slow_scan() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    const BUDGET_MIB: u64 = 2;
    let c = config(BUDGET_MIB);
    let capacity = c.state.host_capacity();
    let default_capacity = DetectorConfig::default().state.host_capacity();
    println!(
        "default budget: {default_capacity} quiet hosts, {} bytes budgeted each (the table counted twice)",
        quiet_hosts_bytes(default_capacity) / default_capacity
    );
    let victim: IpAddr = "10.9.9.9".parse().unwrap();
    let (sweeper, scanner): (IpAddr, IpAddr) = ("192.0.2.10".parse().unwrap(), "192.0.2.20".parse().unwrap());
    // 200,000 one-packet sources over 60 s; the sweep contacts a new address every 700 ms (64 distinct within the
    // 60 s slow window: about 45 s in), the scan a new port every 300 ms (33 in each 10 s window, 24 fire).
    let flood = spoofed_flood(victim, T0, 200_000, 60 * SEC, 11);
    let sweep_every = 700_000_000;
    let flood_between = 200_000 * sweep_every / (60 * SEC);
    assert!(
        (flood_between as usize) > capacity,
        "{flood_between} flood sources arrive between two of the sweep's packets, more than the {capacity} hosts \
         the budget holds: the least recently seen host would be gone"
    );
    let mut batches: Vec<PacketBatch> = flood;
    for k in 0..85i64 {
        let destination = IpAddr::from((0x0a05_0000u32 + k as u32).to_be_bytes());
        batches.push(one(sweeper, syn(T0 + k * sweep_every, destination, 445)));
    }
    for k in 0..200i64 {
        batches.push(one(scanner, syn(T0 + k * 300_000_000, "10.7.7.7".parse().unwrap(), 1 + k as u16)));
    }
    batches.sort_by_key(|b| b.packets[0].ts_ns);

    let mut engine = Engine::new(&c, Models::default());
    let budget = BUDGET_MIB as usize * (1 << 20);
    let (mut out, mut peak) = (Vec::new(), 0);
    for b in &batches {
        engine.process_batch(b, 0, &mut out);
        peak = peak.max(engine.hosts_peak_bytes());
    }
    let evicted = engine.host_evictions();
    let fired =
        |host: IpAddr| out.iter().filter(|a| a.kind == AnomalyKind::Fanout && a.host == host.to_string()).count();
    println!(
        "budget {BUDGET_MIB} MiB ({capacity} quiet hosts): peak {peak} bytes, {} hosts at the end; evictions \
         {evicted:?}; fanout alerts: sweep {}, scan {}",
        engine.hosts_tracked(),
        fired(sweeper),
        fired(scanner)
    );
    assert!(peak <= budget, "the host map held {peak} bytes, more than the {budget} budgeted");
    assert!(evicted.capacity > 150_000, "the flood was evicted: {evicted:?}");
    assert_eq!(evicted.capacity_suspicious, 0, "no host with open suspicion had to go");
    assert!(fired(sweeper) >= 1, "the slow sweep was alerted");
    assert!(fired(scanner) >= 1, "the slow port scan was alerted");
}
