//! The flow table against its memory budget, measured with a counting global allocator (`stats_alloc`): the bytes
//! it reports match what the allocator handed out, and under a flood of distinct flows with a 1 MiB budget it
//! stays within the budget (by the allocator's count) while a flow that keeps sending keeps its state.
//!
//! `cargo test --release -p netanom-producer --test memory_budget -- --nocapture` prints the figures.

use std::alloc::System;
use std::net::{IpAddr, Ipv4Addr};

use netanom_producer::flow::{FlowConfig, FlowTable, flows_bytes};
use netanom_producer::parse::Parsed;
use netanom_schemas::Network;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

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

/// A TCP SYN of flow `n` (a distinct source address and port each).
fn syn(n: u32) -> Parsed {
    Parsed {
        source: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)),
        destination: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        network: Network::Ipv4,
        src_port: 1024 + (n % 60_000) as u16,
        dst_port: 443,
        ip_proto: 6,
        payload_len: 0,
        tcp_flags: 0x02,
        ttl: 64,
        vlan: None,
        icmp_type: None,
        icmp_code: None,
        payload_entropy: None,
    }
}

#[test]
fn the_bytes_reported_are_the_bytes_allocated() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let config = FlowConfig::default();
    let mut table = FlowTable::new(&config);
    let (before, region) = (table.bytes() as i64, Region::new(GLOBAL));
    const N: u32 = 400_000;
    for n in 0..N {
        table.observe(&syn(n), i64::from(n), 60);
    }
    let (allocated, reported) = (held(&region), table.bytes() as i64 - before);
    println!(
        "{N} flows: {} bytes allocated, {} reported ({:.1} each); the default budget ({} MiB) holds {} flows, \
         {} bytes with the table counted twice",
        allocated,
        reported,
        reported as f64 / f64::from(N),
        config.memory_budget_mib,
        config.capacity(),
        flows_bytes(config.capacity())
    );
    assert_eq!(table.stats().active, N as usize);
    assert!((reported - allocated).abs() <= allocated / 20, "reported {reported} vs allocated {allocated}");
}

#[test]
fn a_flood_of_distinct_flows_stays_within_the_budget_and_a_busy_flow_keeps_its_state() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let config = FlowConfig { memory_budget_mib: 1, ..FlowConfig::default() };
    let budget = 1i64 << 20;
    let region = Region::new(GLOBAL);
    let mut table = FlowTable::new(&config);
    let busy = Parsed { source: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), ..syn(0) };
    let (mut peak, mut busy_packets) = (0i64, 0);
    const FLOOD: u32 = 500_000;
    for n in 0..FLOOD {
        let ts = i64::from(n) * 1_000;
        table.observe(&syn(n), ts, 60);
        if n % 500 == 0 {
            busy_packets = table.observe(&busy, ts, 1500).packets;
        }
        if n % 1000 == 0 {
            peak = peak.max(held(&region));
        }
    }
    let stats = table.stats();
    println!(
        "budget 1 MiB ({} flows): allocator's peak {peak} bytes, reported {}; {stats:?}; busy flow {busy_packets} packets",
        config.capacity(),
        stats.bytes
    );
    assert!(peak <= budget, "the flow table held {peak} bytes, more than the {budget} budgeted");
    assert!(stats.bytes as i64 <= budget);
    assert!(stats.evicted_full > 490_000, "the flood was evicted: {stats:?}");
    assert_eq!(busy_packets, u64::from(FLOOD / 500), "the busy flow kept its state through every eviction");
}
