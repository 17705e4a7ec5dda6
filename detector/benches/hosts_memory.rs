//! Memory per tracked host: one detector engine (the default configuration but `memory_budget_mib`, 8192 unless
//! `--budget-mib` says otherwise, so that every host fits: the default 1024 holds ~230,000 one-packet hosts) fed
//! one SYN from each of `--hosts` distinct sources (default 1,000,000) spread over 60 s of packet time, so no
//! host goes idle; prints the process's peak resident memory (`VmHWM`) before and after, the host map's bytes
//! (the `netanom.detector.hosts.bytes` gauge) and both per million hosts tracked. The batches are made one at a
//! time, so the input holds no memory.
//!
//! `cargo bench -p netanom-detector --bench hosts_memory [-- --hosts 1000000] [--budget-mib 8192]`

use std::net::IpAddr;

use netanom_detector::fixtures::{T0, syn};
use netanom_detector::{DetectorConfig, Engine, Models};
use netanom_schemas::PacketBatch;

/// Peak resident memory of this process in KiB (`VmHWM` of `/proc/self/status`).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `--hosts` and `--budget-mib` over their defaults (cargo's own `--bench` flag is ignored).
fn flags() -> Result<(u32, u64), String> {
    let mut hosts = 1_000_000;
    let mut budget_mib = 8192;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--bench" => {}
            "--hosts" => {
                let v = args.next().ok_or("--hosts needs a value")?;
                hosts = v.parse().map_err(|e| format!("--hosts {v:?}: {e}"))?;
            }
            "--budget-mib" => {
                let v = args.next().ok_or("--budget-mib needs a value")?;
                budget_mib = v.parse().map_err(|e| format!("--budget-mib {v:?}: {e}"))?;
            }
            other => return Err(format!("unknown flag {other}: expected --hosts or --budget-mib")),
        }
    }
    Ok((hosts, budget_mib))
}

fn main() -> Result<(), String> {
    let (hosts, budget_mib) = flags()?;
    let mut config = DetectorConfig::default();
    config.state.memory_budget_mib = budget_mib;
    let victim: IpAddr = "10.9.9.9".parse().map_err(|e| format!("{e}"))?;
    let mut engine = Engine::new(&config, Models::default());
    let mut out = Vec::new();
    let mut batch = PacketBatch { source: victim, sequence: 0, packets: vec![syn(T0, victim, 80)] };
    engine.process_batch(&batch, 0, &mut out);
    let before = peak_rss_kib().ok_or("no VmHWM in /proc/self/status")?;
    let span_ns = 60_000_000_000i64;
    for k in 0..hosts {
        // 100.64.0.0/10 and up: distinct addresses, none the victim.
        batch.source = IpAddr::from((0x6440_0000u32.wrapping_add(k)).to_be_bytes());
        batch.packets[0] = syn(T0 + i64::from(k) * span_ns / i64::from(hosts.max(1)), victim, 80);
        engine.process_batch(&batch, 0, &mut out);
        out.clear();
    }
    let after = peak_rss_kib().ok_or("no VmHWM in /proc/self/status")?;
    let tracked = engine.hosts_tracked() as f64;
    let per_million = |bytes: f64| bytes * 1e6 / tracked.max(1.0) / (1024.0 * 1024.0);
    let grown = after.saturating_sub(before) as f64 * 1024.0;
    println!(
        "hosts_memory: {hosts} sources, {} hosts tracked, {} evicted (memory_budget_mib {})",
        engine.hosts_tracked(),
        engine.hosts_evicted(),
        config.state.memory_budget_mib
    );
    println!(
        "hosts_memory: peak RSS {:.1} MiB before, {:.1} MiB after: {:.1} MiB per 1 M hosts tracked",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        per_million(grown)
    );
    println!(
        "hosts_memory: host map {:.1} MiB (hosts.bytes gauge): {:.1} MiB per 1 M hosts tracked",
        engine.hosts_bytes() as f64 / (1024.0 * 1024.0),
        per_million(engine.hosts_bytes() as f64)
    );
    Ok(())
}
