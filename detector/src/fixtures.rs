//! Synthetic traffic built in code, for tests and benchmarks: benign browsing batches, port scans, SYN floods
//! and spoofed-source floods. Deterministic (seeded). Not used by the detector itself.

use std::net::IpAddr;

use netanom_schemas::{Direction, Network, PacketBatch, PacketFeatures, records::tcp_flags};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One packet with the given fields; the rest are plausible defaults (IPv4, TTL 64, no VLAN).
#[allow(clippy::too_many_arguments)]
pub fn packet(
    ts_ns: i64,
    destination: IpAddr,
    src_port: u16,
    dst_port: u16,
    ip_proto: u8,
    flags: u8,
    wire_len: u32,
    flow_packets: u64,
    direction: Direction,
) -> PacketFeatures {
    let header = match ip_proto {
        6 => 54,
        17 => 42,
        _ => 42,
    };
    PacketFeatures {
        ts_ns,
        network: if destination.is_ipv4() { Network::Ipv4 } else { Network::Ipv6 },
        destination,
        src_port,
        dst_port,
        ip_proto,
        wire_len,
        cap_len: wire_len,
        payload_len: wire_len.saturating_sub(header),
        tcp_flags: flags,
        ttl: 64,
        vlan: None,
        icmp_type: None,
        icmp_code: None,
        flow_duration_ns: 0,
        flow_packets,
        flow_bytes: u64::from(wire_len).saturating_mul(flow_packets),
        direction,
        payload_entropy: None,
    }
}

/// A TCP SYN opening a new connection to `destination:port`.
pub fn syn(ts_ns: i64, destination: IpAddr, port: u16) -> PacketFeatures {
    let src_port = 40_000u16.wrapping_add(port);
    packet(ts_ns, destination, src_port, port, 6, tcp_flags::SYN, 60, 1, Direction::Forward)
}

/// Base of the fixtures' packet time: 2024-01-01T00:00:00Z.
pub const T0: i64 = 1_704_067_200_000_000_000;

/// One ~1 s batch of benign browsing from `10.1.x.y`: mostly ACK/PSH data packets on a few established
/// HTTPS/HTTP flows to a handful of servers, an occasional new connection or DNS query. Varies with `i`.
pub fn benign_batch(i: u64) -> PacketBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(i);
    let source = IpAddr::from([10, 1, (i % 200) as u8, 10]);
    let t0 = T0 + i as i64 * 1_000_000_000;
    let n = rng.gen_range(5..60);
    let servers = rng.gen_range(1..5u8);
    let mut packets = Vec::with_capacity(n);
    for k in 0..n {
        let ts = t0 + k as i64 * rng.gen_range(5_000_000..15_000_000);
        let server = IpAddr::from([93, 184, 216, rng.gen_range(0..servers)]);
        let r: f64 = rng.r#gen();
        let p = if r < 0.04 {
            syn(ts, server, if rng.gen_bool(0.8) { 443 } else { 80 })
        } else if r < 0.08 {
            packet(
                ts,
                IpAddr::from([10, 1, 0, 1]),
                rng.r#gen(),
                53,
                17,
                0,
                rng.gen_range(70..120),
                1,
                Direction::Forward,
            )
        } else {
            let len = if rng.gen_bool(0.6) { 66 } else { rng.gen_range(200..1514) };
            let flags = tcp_flags::ACK | if len > 66 { tcp_flags::PSH } else { 0 };
            packet(ts, server, 50_000 + k as u16 % 4, 443, 6, flags, len, rng.gen_range(3..400), Direction::Forward)
        };
        packets.push(p);
    }
    PacketBatch { source, sequence: i, packets }
}

/// One batch of a SYN port scan from `10.66.0.<i>` against `192.168.1.25`: 400 SYNs to 400 ports in 400 ms.
pub fn scan_batch(i: u64) -> PacketBatch {
    let source = IpAddr::from([10, 66, 0, (i % 250) as u8]);
    let target = IpAddr::from([192, 168, 1, 25]);
    let t0 = T0 + i as i64 * 1_000_000_000;
    let packets = (0..400u16).map(|p| syn(t0 + i64::from(p) * 1_000_000, target, 1 + p)).collect();
    PacketBatch { source, sequence: i, packets }
}

/// [`scan_batch`]`(i)`'s scan (from `10.66.0.<i>`) starting `at_s` seconds after [`T0`] instead: a scanner that
/// keeps scanning.
pub fn scan_batch_at(i: u64, at_s: u64) -> PacketBatch {
    let mut b = scan_batch(i);
    let shift = (at_s as i64 - i as i64) * 1_000_000_000;
    for p in &mut b.packets {
        p.ts_ns += shift;
    }
    b.sequence = at_s;
    b
}

/// Batches of a SYN flood from `source` to `destination:80`: `n` SYNs from distinct source ports at `per_sec`,
/// split into batches of at most 1 s / 1024 packets like the producer does.
pub fn syn_flood(source: IpAddr, destination: IpAddr, t0: i64, n: u32, per_sec: u32) -> Vec<PacketBatch> {
    let gap = 1_000_000_000 / i64::from(per_sec.max(1));
    let packets: Vec<PacketFeatures> = (0..n)
        .map(|k| {
            let mut p = syn(t0 + i64::from(k) * gap, destination, 80);
            p.src_port = 1024 + (k % 60_000) as u16;
            p
        })
        .collect();
    split_batches(source, packets)
}

/// Splits one source's packets into producer-like batches (≤ 1024 packets, ≤ 1 s of packet time).
pub fn split_batches(source: IpAddr, packets: Vec<PacketFeatures>) -> Vec<PacketBatch> {
    let mut out: Vec<PacketBatch> = Vec::new();
    let mut cur: Vec<PacketFeatures> = Vec::new();
    for p in packets {
        if cur.len() >= 1024 || cur.first().is_some_and(|f| p.ts_ns - f.ts_ns >= 1_000_000_000) {
            out.push(PacketBatch { source, sequence: out.len() as u64, packets: std::mem::take(&mut cur) });
        }
        cur.push(p);
    }
    if !cur.is_empty() {
        out.push(PacketBatch { source, sequence: out.len() as u64, packets: cur });
    }
    out
}

/// A spoofed-source SYN flood on `victim:80`: `sources` distinct random sources in `100.64.0.0/10`, one SYN
/// each, spread over `span_ns` from `t0`; one single-packet batch per source.
pub fn spoofed_flood(victim: IpAddr, t0: i64, sources: u32, span_ns: i64, seed: u64) -> Vec<PacketBatch> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..sources)
        .map(|k| {
            let source = IpAddr::from((0x6440_0000u32 | (k & 0x003f_ffff)).to_be_bytes());
            let mut p = syn(t0 + i64::from(k) * span_ns / i64::from(sources.max(1)), victim, 80);
            p.src_port = rng.gen_range(1024..65535);
            p.ttl = rng.gen_range(30..250);
            PacketBatch { source, sequence: 0, packets: vec![p] }
        })
        .collect()
}
