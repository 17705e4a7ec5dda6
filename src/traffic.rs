//! One pass over a capture file with the producer's own capture and feature pieces (no Kafka): every source
//! host, its first packet time, packet and byte counts, packet sizes in fixed bins, and new connections per
//! second of packet time. `netanom eval` and `netanom report` read it; it makes no judgement about hosts.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use netanom_producer::capture::Next;
use netanom_producer::{FeatureExtractor, FlowConfig, PacketSource, Speed};

/// Width of one packet-size bin, bytes.
pub const SIZE_BIN: u32 = 50;
/// Number of size bins; the last one holds everything from `(SIZE_BINS - 1) * SIZE_BIN` up.
pub const SIZE_BINS: usize = 32;
/// Seconds of per-second connection counts kept per host (later seconds are dropped and counted).
pub const MAX_SECONDS_PER_HOST: usize = 100_000;

/// What one source host sent.
#[derive(Debug, Clone, Default)]
pub struct HostTraffic {
    /// Time of its first packet, ns since the epoch.
    pub first_ns: i64,
    /// Time of its last packet, ns since the epoch.
    pub last_ns: i64,
    /// Packets sent.
    pub packets: u64,
    /// Bytes sent (wire length).
    pub bytes: u64,
    /// Packets per size bin.
    pub sizes: [u64; SIZE_BINS],
    /// Connection-opening packets per second of packet time (key: whole seconds since the epoch).
    pub opens_per_sec: BTreeMap<i64, u32>,
}

/// Every source host of a capture.
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    /// Per source host (address text).
    pub hosts: BTreeMap<String, HostTraffic>,
    /// Frames read.
    pub frames: u64,
    /// Frames that could not be used (not IP/ARP, malformed).
    pub skipped: u64,
    /// Per-second counts dropped because a host exceeded [`MAX_SECONDS_PER_HOST`].
    pub seconds_dropped: u64,
}

/// The size bin of a packet of `len` bytes.
pub fn size_bin(len: u32) -> usize {
    ((len / SIZE_BIN) as usize).min(SIZE_BINS - 1)
}

/// Reads `path` to its end.
pub fn scan(path: &Path, flow: &FlowConfig) -> anyhow::Result<Traffic> {
    let mut source = PacketSource::open_file(path, None, Speed::Max)
        .with_context(|| format!("cannot open capture {}", path.display()))?;
    let mut extractor = FeatureExtractor::new(flow);
    let mut t = Traffic::default();
    loop {
        let frame = match source.next(&|| false).with_context(|| format!("cannot read {}", path.display()))? {
            Next::Frame(f) => f,
            Next::Idle => continue,
            Next::End => break,
        };
        t.frames += 1;
        let Ok((src, f)) = extractor.extract(&frame) else {
            t.skipped += 1;
            continue;
        };
        let h = t.hosts.entry(src.to_string()).or_insert_with(|| HostTraffic {
            first_ns: f.ts_ns,
            last_ns: f.ts_ns,
            ..HostTraffic::default()
        });
        h.first_ns = h.first_ns.min(f.ts_ns);
        h.last_ns = h.last_ns.max(f.ts_ns);
        h.packets += 1;
        h.bytes += u64::from(f.wire_len);
        h.sizes[size_bin(f.wire_len)] += 1;
        if f.opens_flow() {
            let sec = f.ts_ns.div_euclid(1_000_000_000);
            if h.opens_per_sec.len() < MAX_SECONDS_PER_HOST || h.opens_per_sec.contains_key(&sec) {
                *h.opens_per_sec.entry(sec).or_default() += 1;
            } else {
                t.seconds_dropped += 1;
            }
        }
    }
    Ok(t)
}
