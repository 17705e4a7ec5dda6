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

/// Reads `path` to its end through the producer's parsing, handing every packet's source and features to
/// `each`; returns (frames read, frames that could not be used).
pub fn for_each_packet(
    path: &Path,
    flow: &FlowConfig,
    mut each: impl FnMut(std::net::IpAddr, &netanom_schemas::PacketFeatures),
) -> anyhow::Result<(u64, u64)> {
    let mut source = PacketSource::open_file(path, None, Speed::Max)
        .with_context(|| format!("cannot open capture {}", path.display()))?;
    let mut extractor = FeatureExtractor::new(flow);
    let (mut frames, mut skipped) = (0, 0);
    loop {
        let frame = match source.next(&|| false).with_context(|| format!("cannot read {}", path.display()))? {
            Next::Frame(f) => f,
            Next::Idle => continue,
            Next::End => break,
        };
        frames += 1;
        match extractor.extract(&frame) {
            Ok((src, f)) => each(src, &f),
            Err(_) => skipped += 1,
        }
    }
    Ok((frames, skipped))
}

/// Reads `path` to its end.
pub fn scan(path: &Path, flow: &FlowConfig) -> anyhow::Result<Traffic> {
    let mut t = Traffic::default();
    let mut seconds_dropped = 0;
    let (frames, skipped) = for_each_packet(path, flow, |src, f| {
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
                seconds_dropped += 1;
            }
        }
    })?;
    t.frames = frames;
    t.skipped = skipped;
    t.seconds_dropped = seconds_dropped;
    Ok(t)
}

/// Columns of time in a [`SizeTimeGrid`].
pub const TIME_COLUMNS: usize = 200;

/// Packet sizes over time, bounded whatever the capture's length: packets per (time column, size bin), the
/// packets of a host inside one of its alerts' windows (first_seen..=last_seen) counted apart as anomalous.
#[derive(Debug, Clone, PartialEq)]
pub struct SizeTimeGrid {
    /// Time of the first column's start, ns since the epoch.
    pub start_ns: i64,
    /// Time of the last column's end, ns since the epoch (at least 1 s after `start_ns`).
    pub end_ns: i64,
    /// Packets outside any alert window, per column and size bin.
    pub normal: Vec<[u32; SIZE_BINS]>,
    /// Packets inside an alert window of their host, per column and size bin.
    pub anomalous: Vec<[u32; SIZE_BINS]>,
}

impl SizeTimeGrid {
    /// An empty grid over `start_ns..end_ns` (widened to 1 s when shorter).
    pub fn new(start_ns: i64, end_ns: i64) -> Self {
        let end_ns = end_ns.max(start_ns.saturating_add(1_000_000_000));
        Self {
            start_ns,
            end_ns,
            normal: vec![[0; SIZE_BINS]; TIME_COLUMNS],
            anomalous: vec![[0; SIZE_BINS]; TIME_COLUMNS],
        }
    }

    /// The column of packet time `ts_ns`, clamped to the grid.
    pub fn column(&self, ts_ns: i64) -> usize {
        let span = (self.end_ns - self.start_ns) as f64;
        let at = ts_ns.saturating_sub(self.start_ns) as f64 / span * TIME_COLUMNS as f64;
        (at.max(0.0) as usize).min(TIME_COLUMNS - 1)
    }

    /// Counts one packet.
    pub fn add(&mut self, ts_ns: i64, wire_len: u32, anomalous: bool) {
        let c = self.column(ts_ns);
        let cell = if anomalous { &mut self.anomalous[c] } else { &mut self.normal[c] };
        let bin = &mut cell[size_bin(wire_len)];
        *bin = bin.saturating_add(1);
    }
}

/// Reads `path` again and counts its packets in a [`SizeTimeGrid`] over `start_ns..end_ns`; a packet is
/// anomalous when its source host has a window in `windows` (ns, inclusive) that holds its time.
pub fn size_time_grid(
    path: &Path,
    flow: &FlowConfig,
    (start_ns, end_ns): (i64, i64),
    windows: &BTreeMap<String, Vec<(i64, i64)>>,
) -> anyhow::Result<SizeTimeGrid> {
    let mut grid = SizeTimeGrid::new(start_ns, end_ns);
    let mut host = String::new();
    for_each_packet(path, flow, |src, f| {
        host.clear();
        let _ = std::fmt::Write::write_fmt(&mut host, format_args!("{src}"));
        let anomalous = windows.get(&host).is_some_and(|w| w.iter().any(|(from, to)| (*from..=*to).contains(&f.ts_ns)));
        grid.add(f.ts_ns, f.wire_len, anomalous);
    })?;
    Ok(grid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_clamps_time_and_size_and_counts_anomalous_packets_apart() {
        const S: i64 = 1_000_000_000;
        let mut g = SizeTimeGrid::new(10 * S, 10 * S);
        assert_eq!(g.end_ns, 11 * S, "widened to one second");
        assert_eq!(g.column(9 * S), 0);
        assert_eq!(g.column(11 * S), TIME_COLUMNS - 1);
        assert_eq!(g.column(10 * S + S / 2), TIME_COLUMNS / 2);
        g.add(10 * S, 60, false);
        g.add(10 * S, 60, true);
        g.add(99 * S, 100_000, true);
        assert_eq!(g.normal[0][1], 1);
        assert_eq!(g.anomalous[0][1], 1);
        assert_eq!(g.anomalous[TIME_COLUMNS - 1][SIZE_BINS - 1], 1);
        let total: u32 = g.normal.iter().chain(&g.anomalous).flat_map(|c| c.iter()).sum();
        assert_eq!(total, 3);
    }
}
