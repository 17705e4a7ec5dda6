//! Destination-side detector (kind `victim`): spoofed-source floods and DDoS, where every source is
//! unremarkable and only the destination sees the crowd.
//!
//! Two halves, because sources are partitioned between detectors but victims are not:
//! - [`SourceSide`] runs on the packets a detector owns: per (destination, window, packets partition) it
//!   remembers the distinct sources it has seen (bounded) and counts packets and SYNs, and every
//!   `victim.report_every` of packet time (checked after each processed chunk, and forced at the end of the
//!   input) emits the *cumulative* counts as [`DestinationStats`] (only for entries with new activity) to the
//!   destinations topic, keyed by destination.
//! - [`DestinationSide`] runs on the destination partitions a detector owns: per (destination, window) it keeps
//!   the highest counts reported for each origin partition and sums them. Sources are disjoint between packets
//!   partitions, so the sums are exact distinct-source counts. It fires once per window when the count reaches
//!   `victim.min_sources` while the average packets per source stays at most `victim.max_packets_per_source`.
//!   That first anomaly is timely but partial: it counts the reports that arrived so far, which depends on how
//!   the origin partitions' reports interleave. Once the window is complete (every origin partition that reports
//!   to its destination partition has reported packet time two windows past its end, when the producing side has
//!   forgotten it, or the input is drained), a fired window is reported again with its exact totals: the closing
//!   update, whose id ends in `:final`. An origin partition more than four windows of packet time behind the
//!   newest of the destination partition is taken as quiet and holds no window back, so one that reported once
//!   and went quiet does not stall the closing updates, unless it counted part of the window: an origin that
//!   lags is waited for. A fired window is also closed, with what is known, when it is 30 windows old (an
//!   origin that counted part of it stopped reporting) and before it is evicted to make room; later reports of
//!   a window already closed are merged but not reported again.
//!
//! An alert is dated by the flood's own packets: its start is the earliest packet, and its end the latest, of a
//! source that matches the flood's profile (see below), as each origin reports them. It is detected at the packet
//! that took the count of distinct sources to `victim.min_sources`: each report carries the first-packet times of
//! its origin's `min_sources` earliest sources, and the `min_sources`-th earliest over the origins is that packet
//! (exact in the closing update; in the first anomaly, over the reports applied so far). Both anomalies of a window
//! carry its `window_key`, the closing update `closing`, so the router replaces the first's times and figures with
//! the closing update's. The totals count the window's distinct sources, packets and bytes on the wire.
//!
//! Memory: both halves count their bytes from their capacities and stay within their shares of the victim
//! tables' budget (1/8 of `[detector.state] memory_budget_mib`; 7/8 of that for the producing side). A new
//! source that does not fit is not remembered but its packets are counted as unlisted, so the packets per
//! source are judged on the remembered sources and the source count is a lower bound.
//!
//! The sources named in an alert are chosen deterministically among those that match the flood's profile within
//! the window (at most `victim.max_packets_per_source` packets to the destination, and only SYNs when most of its
//! traffic is SYNs): the smallest addresses first. A benign client of the destination, which sends more packets
//! or completes its handshakes, is not named.
//!
//! Because the counts are cumulative per origin partition and merged by maximum, a record produced twice (a
//! detector that crashed before committing re-processes its last chunk) or re-computed by the next owner of a
//! packets partition (which rebuilds the partition's counts from the records before its committed offset) is
//! applied idempotently: nothing is counted twice. Counts of a window older than two windows (of its packets
//! partition's packet time) are forgotten by the producing side, so a packet that late starts the window's count
//! of its partition again (never more).
//!
//! Calibration: spoofed and reflected floods in the labelled captures reach 2,800 to 7,000 distinct sources
//! within seconds at 1 to 3 packets each; benign captures never show more than a few sources per destination.
//! A popular server's clients send handshakes, requests and ACKs (well above 5 packets each), which is what the
//! packets-per-source condition separates; a busy DNS server with 500 one-query clients in 10 s would fire,
//! so raise `min_sources` for such destinations' networks.

use foldhash::HashMap;
use std::net::IpAddr;

use netanom_schemas::{Anomaly, AnomalyKind, Contribution, DestinationStats, PacketFeatures};

use crate::anomaly::{AnomalyParts, RULES_VERSION, anomaly_id, seconds, thousands};
use crate::bytes::{table_bytes, vec_bytes};
use crate::kind::{Context, DetectorKind, Setup};
use crate::time::{ns, window_start_ns};
use crate::validation::{ConfigError, Problems};
use serde::Deserialize;
use std::time::Duration;

/// `[detector.victim]`: many sources converging on one destination.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VictimConfig {
    /// Whether the detector runs (both producing and consuming destination statistics). Default true.
    pub enabled: bool,
    /// Tumbling window of packet time. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Distinct sources in one window that make a victim. Default 500.
    pub min_sources: u64,
    /// Highest average packets per source for a victim (floods send few packets per spoofed source; a popular
    /// server's clients send many). Default 5.
    pub max_packets_per_source: f64,
    /// Most (destination, window) entries kept on each side (on the producing side, one per packets partition
    /// that sent to the destination); older windows are evicted first. Default 100000.
    pub max_destinations: usize,
    /// Most distinct sources remembered per (destination, window) on the producing side. Default 65536.
    pub max_sources_per_destination: usize,
    /// How often, in packet time, the producing side reports its deltas to the destinations topic: one record
    /// per active (destination, window) per report, whatever the number of chunks in between. Shorter reports
    /// victims sooner; longer sends fewer records. At the end of the input (drain) everything pending is
    /// reported. Default 1 s; at most `victim.window`.
    #[serde(with = "humantime_serde")]
    pub report_every: Duration,
}

impl Default for VictimConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(10),
            min_sources: 500,
            max_packets_per_source: 5.0,
            max_destinations: 100_000,
            max_sources_per_destination: 65_536,
            report_every: Duration::from_secs(1),
        }
    }
}

impl VictimConfig {
    /// Checks `[detector.victim]` and returns every problem.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut p = Problems::new("victim");
        p.check(!self.window.is_zero(), "window", || "must be > 0".into());
        p.check(!self.report_every.is_zero() && self.report_every <= self.window, "report_every", || {
            format!("must be > 0 and at most victim.window ({:?}), got {:?}", self.window, self.report_every)
        });
        p.check(self.min_sources >= 2, "min_sources", || format!("must be >= 2, got {}", self.min_sources));
        p.check(
            self.max_packets_per_source.is_finite() && self.max_packets_per_source >= 1.0,
            "max_packets_per_source",
            || format!("must be >= 1, got {}", self.max_packets_per_source),
        );
        p.check(self.max_destinations >= 1, "max_destinations", || {
            format!("must be >= 1, got {}", self.max_destinations)
        });
        p.check(self.max_sources_per_destination as u64 >= self.min_sources, "max_sources_per_destination", || {
            format!(
                "must be >= detector.victim.min_sources ({}), got {}",
                self.min_sources, self.max_sources_per_destination
            )
        });
        p.into_vec()
    }
}

/// One source's packets to a destination in a window.
#[derive(Debug, Clone, Copy)]
struct SourceCounts {
    packets: u32,
    /// TCP SYNs without ACK.
    syns: u32,
    /// Packet time of its first and last packet, ns.
    first_ns: i64,
    last_ns: i64,
}

#[derive(Debug, Default)]
struct SourceEntry {
    sources: HashMap<IpAddr, SourceCounts>,
    packets: u64,
    syn_packets: u64,
    bytes: u64,
    /// Packets from sources not remembered (the table of sources was full or the budget spent).
    unlisted_packets: u64,
    last_ts_ns: i64,
    dirty: bool,
}

/// Sources named in an alert at most.
const SAMPLES: usize = 8;

/// What a report says of the sources that match a flood's profile.
#[derive(Debug, PartialEq)]
struct Evidence {
    /// The [`SAMPLES`] smallest of their addresses.
    samples: Vec<IpAddr>,
    /// Packet time of their earliest and latest packet, when any source matches.
    span: Option<(i64, i64)>,
}

impl SourceEntry {
    /// The evidence of the sources that match a flood's profile: at most `max_packets_per_source` packets, and
    /// only SYNs when most of the entry's packets are SYNs. A benign client of the destination (more packets,
    /// completed handshakes) is neither named nor dates the flood.
    fn evidence(&self, max_packets_per_source: f64) -> Evidence {
        let syn_flood = self.syn_packets.saturating_mul(2) >= self.packets && self.syn_packets > 0;
        let mut span: Option<(i64, i64)> = None;
        let mut samples: Vec<IpAddr> = Vec::new();
        for (s, c) in &self.sources {
            if f64::from(c.packets) > max_packets_per_source || syn_flood && c.syns != c.packets {
                continue;
            }
            span = Some(span.map_or((c.first_ns, c.last_ns), |(f, l)| (f.min(c.first_ns), l.max(c.last_ns))));
            samples.push(*s);
        }
        if samples.len() > SAMPLES {
            samples.select_nth_unstable(SAMPLES);
            samples.truncate(SAMPLES);
        }
        samples.sort_unstable();
        Evidence { samples, span }
    }
}

impl SourceEntry {
    /// The first-packet times of the entry's `k` earliest remembered sources, ascending.
    fn first_packets(&self, k: usize) -> Vec<i64> {
        let mut times: Vec<i64> = self.sources.values().map(|c| c.first_ns).collect();
        if times.len() > k {
            times.select_nth_unstable(k);
            times.truncate(k);
        }
        times.sort_unstable();
        times
    }
}

/// The victim kind: both halves. It keeps no per-host state: its source side is keyed by destination.
#[derive(Debug)]
pub struct Victim {
    source: SourceSide,
    destination: DestinationSide,
    /// The packets-topic partition of the batch being observed.
    partition: i32,
}

impl DetectorKind for Victim {
    type Config = VictimConfig;
    type State = ();
    const PRODUCES: &'static [AnomalyKind] = &[AnomalyKind::Victim];

    fn validate(config: &VictimConfig, _: &Context) -> Vec<ConfigError> {
        config.validate()
    }

    fn build(config: &VictimConfig, setup: &mut Setup<'_>) -> Option<Self> {
        let budget = setup.victim_budget_bytes;
        let destination_budget = budget / DESTINATION_SHARE;
        config.enabled.then(|| Self {
            source: SourceSide::new(config).with_budget(budget - destination_budget),
            destination: DestinationSide::new(config).with_budget(destination_budget),
            partition: 0,
        })
    }

    fn observe_packet(&mut self, host: IpAddr, p: &PacketFeatures, _: &mut (), _: &mut Vec<Anomaly>) {
        self.source.observe(host, p, self.partition);
    }

    fn begin_batch(&mut self, partition: i32) {
        self.partition = partition;
    }

    fn revoke_packets_partitions(&mut self, partitions: &[i32]) {
        self.source.revoke_partitions(partitions);
    }

    fn set_rebuilding(&mut self, rebuilding: bool) {
        self.source.set_rebuilding(rebuilding);
    }

    fn observe_destination_stats(&mut self, d: &DestinationStats, partition: i32, out: &mut Vec<Anomaly>) {
        self.destination.apply(d, partition, out);
    }

    fn flush_destinations(&mut self, out: &mut Vec<Anomaly>) {
        self.destination.close_all(out);
    }

    fn destination_deltas(&mut self, all: bool) -> Vec<DestinationStats> {
        self.source.drain(all)
    }

    fn revoke_destination_partitions(&mut self, partitions: &[i32]) -> usize {
        self.destination.revoke_partitions(partitions)
    }
}

/// The destination side's share of the victim tables' budget: 1/`DESTINATION_SHARE` (the producing side, whose
/// entries remember their sources, has the rest).
const DESTINATION_SHARE: usize = 8;

impl Victim {
    /// Bytes and evictions of both halves' tables.
    pub fn tables(&self) -> VictimTables {
        VictimTables {
            source_bytes: self.source.bytes(),
            destination_bytes: self.destination.bytes(),
            evictions: [
                ("victim_sources", "age", self.source.evictions),
                ("victim_sources", "capacity", self.source.overflows),
                ("victim_sources", "budget", self.source.sources_refused),
                ("victim_destinations", "age", self.destination.evictions),
                ("victim_destinations", "capacity", self.destination.refused),
            ],
            closed: self.destination.closed(),
        }
    }
}

/// What the victim tables hold and what they gave up, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct VictimTables {
    /// Bytes of the producing side's tables (entries and their sources).
    pub source_bytes: usize,
    /// Bytes of the consuming side's tables.
    pub destination_bytes: usize,
    /// (table, reason, count) so far: `victim_sources` entries forgotten two windows after their window
    /// (`age`), packets not counted because the entry table was full (`capacity`) and sources not remembered
    /// because the byte budget was spent (`budget`); `victim_destinations` entries evicted to make room (`age`)
    /// and records not merged because no room could be made (`capacity`).
    pub evictions: [(&'static str, &'static str, u64); 5],
    /// Closing updates by why the window closed, in the order of [`CLOSE_REASONS`].
    pub closed: [u64; 4],
}

/// Why a fired window closed, as the `reason` of `netanom.detector.victim.closed`: every origin partition reported
/// two windows past its end (`complete`), the input was drained (`drained`), it grew too old (`aged_out`) or it
/// was evicted to make room (`evicted`).
pub const CLOSE_REASONS: [&str; 4] = ["complete", "drained", "aged_out", "evicted"];

/// (destination, window start, packets partition).
type SourceKey = (IpAddr, i64, i32);

/// Bytes a hash table of `len` entries of `T` and `capacity` grows by when one more is inserted.
fn table_growth<T>(len: usize, capacity: usize) -> usize {
    if len < capacity { 0 } else { table_bytes::<T>(len + 1).saturating_sub(table_bytes::<T>(capacity)) }
}

/// Bytes a vector of `len` elements of `T` and `capacity` grows by when one more is pushed (it doubles).
fn vec_growth<T>(len: usize, capacity: usize) -> usize {
    if len < capacity {
        0
    } else {
        vec_bytes::<T>(capacity.max(4)).saturating_mul(2).saturating_sub(vec_bytes::<T>(capacity))
    }
}

/// Heap bytes a new consuming-side entry takes: one origin partition naming [`SAMPLES`] sources.
const ENTRY_HEAP_BYTES: usize = std::mem::size_of::<OriginCounts>() * 4 + std::mem::size_of::<IpAddr>() * SAMPLES;

/// The producing half: cumulative aggregates of the packets this detector owns, per packets partition.
#[derive(Debug)]
pub struct SourceSide {
    window_ns: i64,
    max_sources: usize,
    max_packets_per_source: f64,
    /// Sources whose first-packet times a report carries: `victim.min_sources`.
    min_sources: usize,
    max_entries: usize,
    entries: HashMap<SourceKey, SourceEntry>,
    /// Entries with activity since their last report.
    dirty: usize,
    /// The newest window of each packets partition: a partition's windows are forgotten by its own packet time,
    /// so a partition read behind the others keeps counting its windows.
    newest_window_ns: HashMap<i32, i64>,
    newest_ts_ns: i64,
    report_ns: i64,
    last_report_ns: Option<i64>,
    evictions: u64,
    overflows: u64,
    /// Bytes the tables may hold, and the bytes of the entries' source tables.
    budget_bytes: usize,
    sources_bytes: usize,
    /// New sources not remembered because the budget was spent.
    sources_refused: u64,
    rebuilding: bool,
}

impl SourceSide {
    /// An empty aggregate.
    pub fn new(config: &VictimConfig) -> Self {
        Self {
            window_ns: ns(config.window).max(1),
            max_sources: config.max_sources_per_destination,
            max_packets_per_source: config.max_packets_per_source,
            min_sources: usize::try_from(config.min_sources).unwrap_or(usize::MAX),
            max_entries: config.max_destinations.max(1),
            entries: HashMap::default(),
            dirty: 0,
            newest_window_ns: HashMap::default(),
            newest_ts_ns: i64::MIN,
            report_ns: ns(config.report_every).max(1),
            last_report_ns: None,
            evictions: 0,
            overflows: 0,
            budget_bytes: usize::MAX,
            sources_bytes: 0,
            sources_refused: 0,
            rebuilding: false,
        }
    }

    /// The same, holding at most `bytes` (see [`SourceSide::bytes`]).
    pub fn with_budget(mut self, bytes: usize) -> Self {
        self.budget_bytes = bytes;
        self
    }

    /// Bytes of the tables, from their capacities: the entry table and every entry's table of sources.
    pub fn bytes(&self) -> usize {
        table_bytes::<(SourceKey, SourceEntry)>(self.entries.capacity()).saturating_add(self.sources_bytes)
    }

    fn recount_sources_bytes(&mut self) {
        self.sources_bytes =
            self.entries.values().map(|e| table_bytes::<(IpAddr, SourceCounts)>(e.sources.capacity())).sum();
    }

    /// While `rebuilding` (a state rebuild after a rebalance), [`SourceSide::observe`] counts without marking
    /// anything to report: the detector that owned the packets before reported them, and the next report of an
    /// entry carries the rebuilt cumulative counts.
    pub fn set_rebuilding(&mut self, rebuilding: bool) {
        self.rebuilding = rebuilding;
    }

    /// Counts one packet from `source`, read from packets partition `partition`.
    pub fn observe(&mut self, source: IpAddr, p: &PacketFeatures, partition: i32) {
        let window = window_start_ns(p.ts_ns, self.window_ns);
        let newest = self.newest_window_ns.entry(partition).or_insert(window);
        *newest = (*newest).max(window);
        self.newest_ts_ns = self.newest_ts_ns.max(p.ts_ns);
        let key = (p.destination, window, partition);
        if !self.entries.contains_key(&key) {
            let full = |s: &Self| {
                let growth = table_growth::<(SourceKey, SourceEntry)>(s.entries.len(), s.entries.capacity());
                s.entries.len() >= s.max_entries || s.bytes().saturating_add(growth) > s.budget_bytes
            };
            if full(self) {
                self.evict_old_windows();
                if full(self) {
                    self.overflows += 1;
                    return;
                }
            }
        }
        self.entries.entry(key).or_default();
        let (budget, spent) = (self.budget_bytes, self.bytes());
        let Some(e) = self.entries.get_mut(&key) else { return };
        if !e.dirty && !self.rebuilding {
            e.dirty = true;
            self.dirty += 1;
        }
        let syn = p.is_syn();
        e.packets += 1;
        e.syn_packets += u64::from(syn);
        e.bytes = e.bytes.saturating_add(u64::from(p.wire_len));
        e.last_ts_ns = e.last_ts_ns.max(p.ts_ns);
        let full = e.sources.len() >= self.max_sources;
        match e.sources.get_mut(&source) {
            Some(c) => {
                c.packets = c.packets.saturating_add(1);
                c.syns = c.syns.saturating_add(u32::from(syn));
                c.first_ns = c.first_ns.min(p.ts_ns);
                c.last_ns = c.last_ns.max(p.ts_ns);
            }
            None if !full => {
                // A table that grows takes its next size at once: refused when that passes the budget.
                let before = table_bytes::<(IpAddr, SourceCounts)>(e.sources.capacity());
                let grown = if e.sources.len() < e.sources.capacity() {
                    before
                } else {
                    table_bytes::<(IpAddr, SourceCounts)>(e.sources.len() + 1)
                };
                if spent.saturating_add(grown - before) > budget {
                    self.sources_refused += 1;
                    e.unlisted_packets += 1;
                } else {
                    let c = SourceCounts { packets: 1, syns: u32::from(syn), first_ns: p.ts_ns, last_ns: p.ts_ns };
                    e.sources.insert(source, c);
                    let after = table_bytes::<(IpAddr, SourceCounts)>(e.sources.capacity());
                    self.sources_bytes = self.sources_bytes.saturating_add(after).saturating_sub(before);
                }
            }
            None => e.unlisted_packets += 1,
        }
    }

    /// Drops the counts of packets partitions revoked from this detector (their next owner rebuilds them).
    pub fn revoke_partitions(&mut self, partitions: &[i32]) -> usize {
        let before = self.entries.len();
        self.entries.retain(|k, _| !partitions.contains(&k.2));
        self.dirty = self.entries.values().filter(|e| e.dirty).count();
        self.newest_window_ns.retain(|p, _| !partitions.contains(p));
        self.recount_sources_bytes();
        before - self.entries.len()
    }

    /// The cumulative counts of every (destination, window, partition) with activity since the previous report,
    /// when a report is due (`report_every` of packet time since the previous one; the first is due at once) or `force`d; then
    /// evicts windows older than two windows before the newest of their packets partition. Empty when no report
    /// is due.
    pub fn drain(&mut self, force: bool) -> Vec<DestinationStats> {
        if self.dirty == 0
            || !force && self.last_report_ns.is_some_and(|t| self.newest_ts_ns < t.saturating_add(self.report_ns))
        {
            return Vec::new();
        }
        self.last_report_ns = Some(self.newest_ts_ns);
        // In (destination, window, partition) order, so a report is the same from run to run.
        let mut keys: Vec<SourceKey> = self.entries.iter().filter(|(_, e)| e.dirty).map(|(k, _)| *k).collect();
        keys.sort_unstable();
        self.dirty = 0;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(e) = self.entries.get_mut(&key) {
                e.dirty = false;
                let evidence = e.evidence(self.max_packets_per_source);
                out.push(DestinationStats {
                    destination: key.0,
                    window_start_ns: key.1,
                    window_ns: self.window_ns,
                    sources: e.sources.len() as u64,
                    packets: e.packets,
                    syn_packets: e.syn_packets,
                    sample_sources: evidence.samples,
                    last_ts_ns: e.last_ts_ns,
                    origin_partition: key.2,
                    bytes: e.bytes,
                    first_evidence_ns: evidence.span.map(|s| s.0),
                    last_evidence_ns: evidence.span.map(|s| s.1),
                    unlisted_packets: e.unlisted_packets,
                    first_packet_ns: e.first_packets(self.min_sources),
                });
            }
        }
        self.evict_old_windows();
        out
    }

    fn evict_old_windows(&mut self) {
        let horizon = self.window_ns.saturating_mul(2);
        let newest = &self.newest_window_ns;
        let before = self.entries.len();
        // Dirty entries are kept until reported.
        self.entries.retain(|k, e| e.dirty || newest.get(&k.2).is_none_or(|n| k.1 >= n.saturating_sub(horizon)));
        if self.entries.len() < before {
            self.evictions += (before - self.entries.len()) as u64;
            self.recount_sources_bytes();
        }
    }

    /// (destination, window) entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Packets not counted because the entry map was full.
    pub fn overflows(&self) -> u64 {
        self.overflows
    }
}

/// The highest counts reported by one origin partition, and the evidence of its fullest report.
#[derive(Debug, Clone)]
struct OriginCounts {
    origin: i32,
    sources: u64,
    packets: u64,
    syn_packets: u64,
    bytes: u64,
    unlisted_packets: u64,
    samples: Vec<IpAddr>,
    /// Earliest and latest packet of a source matching a flood's profile.
    span: Option<(i64, i64)>,
    /// First-packet times of its earliest sources, ascending (at most `min_sources`).
    first_packets: Vec<i64>,
}

#[derive(Debug, Default)]
struct DestinationEntry {
    partition: i32,
    window_ns: i64,
    /// One per origin partition (at most the packets topic's partition count).
    origins: Vec<OriginCounts>,
    last_ts_ns: i64,
    fired: bool,
    /// The end of the first anomaly's evidence: the window's detection when the reports date too few sources
    /// (see `DestinationEntry::crossing`).
    detected_ns: i64,
    /// The closing update was emitted (or, during a rebuild, would have been).
    closed: bool,
}

/// Counts of a (destination, window) summed over its origin partitions.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Totals {
    sources: u64,
    packets: u64,
    syn_packets: u64,
    bytes: u64,
    /// Packets from sources an origin could not remember: `sources` is a lower bound when non-zero.
    unlisted_packets: u64,
}

impl DestinationEntry {
    /// Heap bytes of the entry: its origins and their named sources.
    fn heap_bytes(&self) -> usize {
        let per_origin =
            |o: &OriginCounts| vec_bytes::<IpAddr>(o.samples.capacity()) + vec_bytes::<i64>(o.first_packets.capacity());
        vec_bytes::<OriginCounts>(self.origins.capacity()).saturating_add(self.origins.iter().map(per_origin).sum())
    }

    /// The packet that took the window's count of distinct sources to `min_sources`: the `min_sources`-th
    /// earliest first packet over the origin partitions' sources. `None` when the reports date fewer sources
    /// (records written before `first_packet_ns`).
    fn crossing(&self, min_sources: u64) -> Option<i64> {
        let k = usize::try_from(min_sources).ok()?.checked_sub(1)?;
        let mut all: Vec<i64> = self.origins.iter().flat_map(|o| o.first_packets.iter().copied()).collect();
        if all.len() <= k {
            return None;
        }
        Some(*all.select_nth_unstable(k).1)
    }

    /// The counts summed over the origin partitions.
    fn totals(&self) -> Totals {
        let sum = |f: fn(&OriginCounts) -> u64| self.origins.iter().fold(0u64, |a, o| a.saturating_add(f(o)));
        Totals {
            sources: sum(|o| o.sources),
            packets: sum(|o| o.packets),
            syn_packets: sum(|o| o.syn_packets),
            bytes: sum(|o| o.bytes),
            unlisted_packets: sum(|o| o.unlisted_packets),
        }
    }

    /// The flood's first and last evidence packet: the earliest and latest packet of a source matching its
    /// profile over the origin partitions; the window's start and its latest packet when no report has any.
    fn span(&self, window_start_ns: i64) -> (i64, i64) {
        let first = self.origins.iter().filter_map(|o| o.span.map(|s| s.0)).min();
        let last = self.origins.iter().filter_map(|o| o.span.map(|s| s.1)).max();
        let first = first.unwrap_or(window_start_ns);
        (first, last.unwrap_or(self.last_ts_ns).max(first))
    }

    /// The [`SAMPLES`] smallest of the origins' named sources: the same whatever order the reports came in.
    fn samples(&self) -> Vec<IpAddr> {
        let mut all: Vec<IpAddr> = self.origins.iter().flat_map(|o| o.samples.iter().copied()).collect();
        all.sort_unstable();
        all.dedup();
        all.truncate(SAMPLES);
        all
    }
}

/// The [`SAMPLES`] smallest distinct addresses of `sources` (a record names any number): what an origin
/// partition keeps, which leaves `DestinationEntry::samples` as it would be with all of them.
fn smallest_sources(sources: &[IpAddr]) -> Vec<IpAddr> {
    let mut all = sources.to_vec();
    all.sort_unstable();
    all.dedup();
    all.truncate(SAMPLES);
    all.shrink_to_fit();
    all
}

/// The `min_sources` earliest of a record's first-packet times, ascending (a record may carry any number, in any
/// order).
fn first_packets(times: &[i64], min_sources: u64) -> Vec<i64> {
    let k = usize::try_from(min_sources).unwrap_or(usize::MAX);
    let mut all = times.to_vec();
    if all.len() > k {
        all.select_nth_unstable(k);
        all.truncate(k);
    }
    all.sort_unstable();
    all.shrink_to_fit();
    all
}

/// The consuming half: exact sums per (destination, window) for the destination partitions this detector owns.
#[derive(Debug)]
pub struct DestinationSide {
    min_sources: u64,
    max_packets_per_source: f64,
    max_entries: usize,
    entries: HashMap<(IpAddr, i64), DestinationEntry>,
    /// Fired windows whose closing update is still to come.
    open: Vec<(IpAddr, i64)>,
    newest_window_ns: i64,
    /// The newest packet time reported by each origin partition on each destination partition: (destination
    /// partition, origin partition) → packet time. Records of one origin reach one destination partition in
    /// order, so an entry's completeness is judged on its own destination partition.
    newest_ts_ns: HashMap<(i32, i32), i64>,
    evictions: u64,
    /// Records not merged, or merged without the longer lists of named sources and first-packet times they
    /// carry, because no room could be made.
    refused: u64,
    /// Bytes the tables may hold, and the heap of the entries (their origins and named sources).
    budget_bytes: usize,
    heap_bytes: usize,
    /// Closing updates by [`CloseReason`].
    closed: [u64; 4],
}

/// Why a fired window's closing update went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseReason {
    /// Every origin partition reported packet time two windows past its end: the counts are exact.
    Complete,
    /// The input was drained: every report has been applied.
    Drained,
    /// More than [`AGE_OUT_WINDOWS`] windows old: an origin that counted part of it stopped reporting.
    AgedOut,
    /// Evicted to make room: closed with what is known.
    Evicted,
}

/// An origin partition whose newest packet time on a destination partition is more than this many windows behind
/// the newest of that destination partition is taken as quiet: it no longer holds back the closing updates there
/// (and is forgotten until it reports again).
const QUIET_ORIGIN_WINDOWS: i64 = 4;

/// A fired window still open this many windows before the newest window reported is closed with what is known
/// (its closing update is marked final all the same): an origin partition that counted part of it has stopped
/// reporting (its traffic ended, or it lags this far behind).
const AGE_OUT_WINDOWS: i64 = 30;

impl DestinationSide {
    /// An empty aggregate.
    pub fn new(config: &VictimConfig) -> Self {
        Self {
            min_sources: config.min_sources,
            max_packets_per_source: config.max_packets_per_source,
            max_entries: config.max_destinations.max(1),
            entries: HashMap::default(),
            open: Vec::new(),
            newest_window_ns: i64::MIN,
            newest_ts_ns: HashMap::default(),
            evictions: 0,
            refused: 0,
            budget_bytes: usize::MAX,
            heap_bytes: 0,
            closed: [0; 4],
        }
    }

    /// The same, holding at most `bytes` (see [`DestinationSide::bytes`]).
    pub fn with_budget(mut self, bytes: usize) -> Self {
        self.budget_bytes = bytes;
        self
    }

    /// Bytes of the tables, from their capacities: the entry table, every entry's origins and named sources,
    /// and the origins' packet times.
    pub fn bytes(&self) -> usize {
        table_bytes::<((IpAddr, i64), DestinationEntry)>(self.entries.capacity())
            .saturating_add(table_bytes::<((i32, i32), i64)>(self.newest_ts_ns.capacity()))
            .saturating_add(vec_bytes::<(IpAddr, i64)>(self.open.capacity()))
            .saturating_add(self.heap_bytes)
    }

    fn recount_heap_bytes(&mut self) {
        self.heap_bytes = self.entries.values().map(DestinationEntry::heap_bytes).sum();
    }

    /// Merges one record (from the destinations topic partition `partition`): the highest counts of its origin
    /// partition are kept, so a repeated or stale record changes nothing. Appends to `out` the victim anomaly the
    /// first time its window qualifies, and the closing update of every fired window this record shows complete
    /// (every live origin partition of its destination partition two windows past its end).
    pub fn apply(&mut self, d: &DestinationStats, partition: i32, out: &mut Vec<Anomaly>) {
        let window_ns = d.window_ns.max(1);
        let newer_window = d.window_start_ns > self.newest_window_ns;
        self.newest_window_ns = self.newest_window_ns.max(d.window_start_ns);
        let newest = self.newest_ts_ns.entry((partition, d.origin_partition)).or_insert(d.last_ts_ns);
        *newest = (*newest).max(d.last_ts_ns);
        if newer_window {
            self.forget_quiet_origins(window_ns);
            self.age_out(window_ns, out);
        }
        let key = (d.destination, d.window_start_ns);
        // What the record's origin partition would hold: its named sources (at most [`SAMPLES`]) and first-packet
        // times (at most `min_sources`).
        let (mut samples, mut dates) =
            (smallest_sources(&d.sample_sources), first_packets(&d.first_packet_ns, self.min_sources));
        let listed = vec_bytes::<IpAddr>(samples.capacity()).saturating_add(vec_bytes::<i64>(dates.capacity()));
        // A window that fires joins the open ones.
        let opened = |s: &Self, e: &DestinationEntry| {
            if e.fired { 0 } else { vec_growth::<(IpAddr, i64)>(s.open.len(), s.open.capacity()) }
        };
        // Whether merging `d` grows the tables within the budget: a new entry, a new origin partition of an entry,
        // or the lists of an origin already there replaced by longer ones (reports are cumulative: a first report
        // dates a few sources, a later one `min_sources`).
        let room = |s: &Self| match s.entries.get(&key) {
            Some(e) => match e.origins.iter().find(|o| o.origin == d.origin_partition) {
                Some(o) => {
                    let held = vec_bytes::<IpAddr>(o.samples.capacity())
                        .saturating_add(vec_bytes::<i64>(o.first_packets.capacity()));
                    let lists = if d.packets < o.packets { 0 } else { listed.saturating_sub(held) };
                    s.bytes().saturating_add(lists).saturating_add(opened(s, e)) <= s.budget_bytes
                }
                None => {
                    let growth = vec_growth::<OriginCounts>(e.origins.len(), e.origins.capacity())
                        .saturating_add(vec_bytes::<IpAddr>(SAMPLES))
                        .saturating_add(listed)
                        .saturating_add(opened(s, e));
                    s.bytes().saturating_add(growth) <= s.budget_bytes
                }
            },
            None => {
                let growth = table_growth::<((IpAddr, i64), DestinationEntry)>(s.entries.len(), s.entries.capacity())
                    .saturating_add(table_growth::<((i32, i32), i64)>(s.newest_ts_ns.len(), s.newest_ts_ns.capacity()))
                    .saturating_add(vec_growth::<(IpAddr, i64)>(s.open.len(), s.open.capacity()))
                    .saturating_add(ENTRY_HEAP_BYTES)
                    .saturating_add(listed);
                s.entries.len() < s.max_entries && s.bytes().saturating_add(growth) <= s.budget_bytes
            }
        };
        let admitted = room(self) || {
            let keep_from = self.newest_window_ns.saturating_sub(window_ns.saturating_mul(2));
            // A fired window about to be forgotten is closed first, with what is known.
            let (evicted, open): (Vec<_>, Vec<_>) = self.open.drain(..).partition(|k| k.1 < keep_from);
            self.open = open;
            self.close(evicted, CloseReason::Evicted, out);
            let before = self.entries.len();
            self.entries.retain(|k, _| k.1 >= keep_from);
            self.evictions += (before - self.entries.len()) as u64;
            self.recount_heap_bytes();
            room(self)
        };
        // An origin already held whose longer lists do not fit still has its counts merged (when the window, should
        // it fire, fits among the open ones): it keeps as many of the smallest named sources and earliest
        // first-packet times as its lists hold now (the window's crossing is then dated from fewer sources, see
        // `DestinationEntry::crossing`).
        let held = self.entries.get(&key).and_then(|e| {
            let o = e.origins.iter().find(|o| o.origin == d.origin_partition)?;
            let fits = self.bytes().saturating_add(opened(self, e)) <= self.budget_bytes;
            Some((o.samples.capacity(), o.first_packets.capacity(), fits))
        });
        let merged = match held {
            Some(_) if admitted => true,
            Some((_, _, false)) => false,
            Some((named, dated, true)) => {
                samples.truncate(named);
                samples.shrink_to_fit();
                dates.truncate(dated);
                dates.shrink_to_fit();
                true
            }
            None => admitted,
        };
        if !admitted {
            self.refused += 1;
        }
        if merged {
            out.extend(self.merge(key, d, (samples, dates), partition, window_ns));
        }
        self.close_complete(out);
    }

    /// Merges `d` into the entry `key`; the first anomaly of the window when it qualifies now.
    fn merge(
        &mut self,
        key: (IpAddr, i64),
        d: &DestinationStats,
        (samples, dates): (Vec<IpAddr>, Vec<i64>),
        partition: i32,
        window_ns: i64,
    ) -> Option<Anomaly> {
        let span = d.first_evidence_ns.map(|f| (f, d.last_evidence_ns.unwrap_or(d.last_ts_ns).max(f)));
        let e = self.entries.entry(key).or_default();
        let heap_before = e.heap_bytes();
        e.partition = partition;
        e.window_ns = window_ns;
        match e.origins.iter_mut().find(|o| o.origin == d.origin_partition) {
            Some(o) => {
                // Reports are cumulative: the one with the most packets is the latest, and names its sources
                // and dates its evidence.
                if d.packets >= o.packets {
                    o.samples = samples;
                    o.span = span;
                    o.first_packets = dates;
                }
                o.sources = o.sources.max(d.sources);
                o.packets = o.packets.max(d.packets);
                o.syn_packets = o.syn_packets.max(d.syn_packets);
                o.bytes = o.bytes.max(d.bytes);
                o.unlisted_packets = o.unlisted_packets.max(d.unlisted_packets);
            }
            None => e.origins.push(OriginCounts {
                origin: d.origin_partition,
                sources: d.sources,
                packets: d.packets,
                syn_packets: d.syn_packets,
                bytes: d.bytes,
                unlisted_packets: d.unlisted_packets,
                samples,
                span,
                first_packets: dates,
            }),
        }
        e.last_ts_ns = e.last_ts_ns.max(d.last_ts_ns);
        self.heap_bytes = self.heap_bytes.saturating_add(e.heap_bytes()).saturating_sub(heap_before);
        let Totals { sources, packets, unlisted_packets, .. } = e.totals();
        // Packets per source over the remembered sources (their packets alone).
        let listed = packets.saturating_sub(unlisted_packets);
        if e.fired || sources < self.min_sources || listed as f64 / sources as f64 > self.max_packets_per_source {
            return None;
        }
        e.fired = true;
        e.detected_ns = e.span(key.1).1;
        self.open.push(key);
        Some(self.anomaly(key, false))
    }

    /// Closes, with what is known, the fired windows more than [`AGE_OUT_WINDOWS`] windows before the newest.
    fn age_out(&mut self, window_ns: i64, out: &mut Vec<Anomaly>) {
        let before = self.newest_window_ns.saturating_sub(window_ns.saturating_mul(AGE_OUT_WINDOWS));
        if !self.open.iter().any(|k| k.1 < before) {
            return;
        }
        let (old, open): (Vec<_>, Vec<_>) = self.open.drain(..).partition(|k| k.1 < before);
        self.open = open;
        self.close(old, CloseReason::AgedOut, out);
    }

    /// The packet time every live origin partition of destination partition `partition` has reported: the
    /// oldest among those not more than [`QUIET_ORIGIN_WINDOWS`] windows behind the newest there.
    fn reported_through(&self, partition: i32, window_ns: i64) -> i64 {
        let of_partition = || self.newest_ts_ns.iter().filter(move |((p, _), _)| *p == partition).map(|(_, t)| *t);
        let top = of_partition().max().unwrap_or(i64::MIN);
        let quiet_before = top.saturating_sub(window_ns.saturating_mul(QUIET_ORIGIN_WINDOWS));
        of_partition().filter(|t| *t >= quiet_before).min().unwrap_or(i64::MIN)
    }

    /// Forgets the origin partitions that are quiet on their destination partition (see
    /// [`QUIET_ORIGIN_WINDOWS`]), so the map holds only origins that still report.
    fn forget_quiet_origins(&mut self, window_ns: i64) {
        let mut top: HashMap<i32, i64> = HashMap::default();
        for ((p, _), t) in &self.newest_ts_ns {
            let e = top.entry(*p).or_insert(*t);
            *e = (*e).max(*t);
        }
        let horizon = window_ns.saturating_mul(QUIET_ORIGIN_WINDOWS);
        self.newest_ts_ns.retain(|(p, _), t| top.get(p).is_none_or(|n| *t >= n.saturating_sub(horizon)));
    }

    /// Appends the closing update of every fired window that is complete: every origin partition that counted
    /// part of it, and every other live origin partition of its destination partition (one that is not quiet
    /// there, see [`QUIET_ORIGIN_WINDOWS`]), has reported packet time two windows past the window's end, so the
    /// producing side has forgotten the window and its counts can no longer grow. An origin partition that went
    /// quiet holds nothing back once it is quiet, unless it counted part of the window: one that lags is waited
    /// for (up to [`AGE_OUT_WINDOWS`]).
    fn close_complete(&mut self, out: &mut Vec<Anomaly>) {
        if self.open.is_empty() {
            return;
        }
        // Per destination partition of an open window (few: the partitions this detector owns).
        let mut through: Vec<(i32, i64)> = Vec::new();
        for k in &self.open {
            if let Some(e) = self.entries.get(k)
                && !through.iter().any(|(p, _)| *p == e.partition)
            {
                through.push((e.partition, self.reported_through(e.partition, e.window_ns)));
            }
        }
        let (entries, newest) = (&self.entries, &self.newest_ts_ns);
        let complete = |k: &(IpAddr, i64)| {
            entries.get(k).is_some_and(|e| {
                let needed = k.1.saturating_add(e.window_ns.saturating_mul(3));
                let reported = through.iter().find(|(p, _)| *p == e.partition).map_or(i64::MIN, |(_, t)| *t);
                reported >= needed
                    && e.origins.iter().all(|o| newest.get(&(e.partition, o.origin)).is_some_and(|t| *t >= needed))
            })
        };
        if !self.open.iter().any(complete) {
            return;
        }
        let (done, open): (Vec<_>, Vec<_>) = self.open.drain(..).partition(complete);
        self.open = open;
        self.close(done, CloseReason::Complete, out);
    }

    /// Appends the closing update of every fired window still open, in (destination, window) order: the input
    /// ends (a drained capture), so every report has been applied.
    pub fn close_all(&mut self, out: &mut Vec<Anomaly>) {
        let mut done = std::mem::take(&mut self.open);
        done.sort_unstable();
        self.close(done, CloseReason::Drained, out);
    }

    fn close(&mut self, mut keys: Vec<(IpAddr, i64)>, reason: CloseReason, out: &mut Vec<Anomaly>) {
        keys.sort_unstable();
        for key in keys {
            if let Some(e) = self.entries.get_mut(&key)
                && !e.closed
            {
                e.closed = true;
                self.closed[reason as usize] += 1;
                out.push(self.anomaly(key, true));
            }
        }
    }

    /// Closing updates emitted so far, by why the window closed: `[complete, drained, aged_out, evicted]`.
    pub fn closed(&self) -> [u64; 4] {
        self.closed
    }

    /// The anomaly of the fired window `key`: its first (`closing` false) or its closing update. Both end at the
    /// last packet reported so far; the first's id is `victim:{destination}:{window start}:{window end}`, the
    /// closing update's the same with `:final` appended.
    fn anomaly(&self, key: (IpAddr, i64), closing: bool) -> Anomaly {
        let e = &self.entries[&key];
        let (victim, window_start_ns) = key;
        let Totals { sources, packets, syn_packets, bytes, unlisted_packets } = e.totals();
        let (first_ns, last_ns) = e.span(window_start_ns);
        let per_source = packets.saturating_sub(unlisted_packets) as f64 / sources.max(1) as f64;
        let at_least = if unlisted_packets > 0 { "at least " } else { "" };
        let syn_pct = if packets > 0 { 100.0 * syn_packets as f64 / packets as f64 } else { 0.0 };
        let samples: Vec<String> = e.samples().iter().map(ToString::to_string).collect();
        let complete = if closing { " (window complete)" } else { "" };
        let parts = AnomalyParts {
            host: victim,
            kind: AnomalyKind::Victim,
            window_start_ns: first_ns,
            window_end_ns: last_ns,
            score: sources as f64,
            threshold: self.min_sources as f64,
            target: Some(victim),
            reason: format!(
                "{at_least}{} distinct sources sent {} packets ({} bytes, {syn_pct:.0}% SYN, {per_source:.1} per source) to {victim} within {}{complete}",
                thousands(sources),
                thousands(packets),
                thousands(bytes),
                seconds(e.window_ns)
            ),
            features: vec![
                Contribution {
                    name: "distinct_sources".into(),
                    value: sources as f64,
                    baseline: Some(self.min_sources as f64),
                },
                Contribution {
                    name: "packets_per_source".into(),
                    value: per_source,
                    baseline: Some(self.max_packets_per_source),
                },
                Contribution { name: "syn_fraction".into(), value: syn_pct / 100.0, baseline: None },
                Contribution { name: "packets".into(), value: packets as f64, baseline: None },
                Contribution { name: "bytes".into(), value: bytes as f64, baseline: None },
            ],
            sample: format!(
                "{} > {victim} (sources include {})",
                samples.first().map_or("?", |s| s),
                samples.join(", ")
            ),
            model_version: RULES_VERSION.into(),
        };
        let mut anomaly = parts.build();
        // The id names the window, not the evidence seen so far (which depends on when reports arrived), so
        // whichever detector applies the same records raises the same ids.
        let window_end_ns = window_start_ns.saturating_add(e.window_ns);
        anomaly.id = anomaly_id(AnomalyKind::Victim, &anomaly.host, window_start_ns, window_end_ns);
        // Both reports of the window carry its key, so the router replaces the first's times and figures with
        // the closing update's.
        anomaly.window_key = Some(anomaly.id.clone());
        let detected_ns = e.crossing(self.min_sources).unwrap_or(e.detected_ns);
        anomaly.detected_ns = Some(detected_ns.clamp(first_ns, last_ns));
        anomaly.closing = closing;
        if closing {
            anomaly.id.push_str(":final");
        }
        anomaly
    }

    /// Drops the aggregates that came from revoked destination partitions (their new owner rebuilds them from
    /// the deltas before its committed offset, see `detector.state.rebuild_records`).
    pub fn revoke_partitions(&mut self, partitions: &[i32]) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| !partitions.contains(&e.partition));
        let entries = &self.entries;
        self.open.retain(|k| entries.contains_key(k));
        self.newest_ts_ns.retain(|(p, _), _| !partitions.contains(p));
        self.recount_heap_bytes();
        before - self.entries.len()
    }

    /// (destination, window) entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries evicted so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{T0, benign_batch, spoofed_flood};

    /// Applies `deltas` in order to `dst`: the anomalies they raise.
    fn apply_all<'a>(
        dst: &mut DestinationSide,
        deltas: impl IntoIterator<Item = &'a DestinationStats>,
    ) -> Vec<Anomaly> {
        let mut out = Vec::new();
        for d in deltas {
            dst.apply(d, 0, &mut out);
        }
        out
    }

    /// The closing updates of what `dst` holds open.
    fn close_all(dst: &mut DestinationSide) -> Vec<Anomaly> {
        let mut out = Vec::new();
        dst.close_all(&mut out);
        out
    }

    #[test]
    fn two_detectors_sum_exactly_and_fire_once() {
        let cfg = VictimConfig::default();
        let victim: IpAddr = "10.0.0.5".parse().unwrap();
        // 1,200 spoofed sources over 5 s, split between two detectors (packets partitions 0 and 1) by source;
        // each source sends 1 SYN, and source 0 sends a second SYN in a later chunk (must not count twice).
        let flood = spoofed_flood(victim, T0, 1_200, 5_000_000_000, 1);
        let (mut a, mut b) = (SourceSide::new(&cfg), SourceSide::new(&cfg));
        let mut deltas = vec![];
        for (i, chunk) in flood.chunks(100).enumerate() {
            for batch in chunk {
                let partition = (u32::from_be_bytes(match batch.source {
                    IpAddr::V4(v) => v.octets(),
                    IpAddr::V6(_) => unreachable!(),
                }) % 2) as i32;
                let side = if partition == 0 { &mut a } else { &mut b };
                for p in &batch.packets {
                    side.observe(batch.source, p, partition);
                }
            }
            if i == 3 {
                a.observe(flood[0].source, &flood[0].packets[0], 0);
            }
            deltas.extend(a.drain(false));
            deltas.extend(b.drain(false));
        }
        let before_flush = deltas.len();
        deltas.extend(a.drain(true));
        deltas.extend(b.drain(true));
        assert!(deltas.len() > before_flush, "the flush reports what was not due yet");
        assert!(a.drain(true).is_empty(), "nothing new, nothing reported");
        let mut dst = DestinationSide::new(&cfg);
        let fired = apply_all(&mut dst, &deltas);
        assert_eq!(fired.len(), 1);
        // The last record of each origin partition carries its totals.
        let last = |p: i32| deltas.iter().rfind(|d| d.origin_partition == p).unwrap();
        assert_eq!(last(0).sources + last(1).sources, 1_200);
        assert_eq!(last(0).packets + last(1).packets, 1_201);
        let f = &fired[0];
        assert_eq!(f.host, victim.to_string());
        // Reports come once per second of packet time (240 sources each here): it fires at the first report
        // that takes the summed count to min_sources.
        assert!((500.0..=740.0).contains(&f.score), "fires at the report reaching min_sources: {}", f.score);
        assert!(f.reason.contains(&format!("{} distinct sources", f.score)), "{}", f.reason);
        assert!(f.reason.contains("100% SYN"), "{}", f.reason);
        assert_eq!(f.window_start_ns % 10_000_000_000, 0);
        // The input ends: the closing update states the exact totals, under an id of its own.
        let closing = close_all(&mut dst);
        assert_eq!(closing.len(), 1);
        let c = &closing[0];
        assert_eq!((c.score, c.window_start_ns), (1_200.0, f.window_start_ns));
        assert_eq!(c.features.iter().find(|x| x.name == "packets").map(|x| x.value), Some(1_201.0));
        assert!(c.reason.starts_with("1,200 distinct sources sent 1,201 packets"), "{}", c.reason);
        assert!(c.id.ends_with(":final") && c.id != f.id, "{} {}", c.id, f.id);
        assert!(close_all(&mut dst).is_empty(), "closed once");

        // Every record twice, then all of them again in reverse order (a detector that produced its last chunk
        // again, a next owner replaying older counts): the same single anomaly, nothing counted twice.
        let mut again = DestinationSide::new(&cfg);
        let replayed = apply_all(&mut again, deltas.iter().flat_map(|d| [d, d]).chain(deltas.iter().rev()));
        assert_eq!(replayed.len(), 1);
        assert_eq!(replayed[0].score, f.score, "fires at the same counts");
        assert_eq!(close_all(&mut again), closing, "the same closing update");
        let key = (victim, f.window_start_ns);
        let held = &again.entries[&key];
        assert_eq!(held.origins.iter().map(|o| o.sources).sum::<u64>(), 1_200);
        assert_eq!(held.origins.iter().map(|o| o.packets).sum::<u64>(), 1_201);
    }

    /// A flood on `victim` from 1,500 spoofed sources (1 to 3 SYNs each) mixed with its benign clients
    /// (`10.9.0.x`: 8 packets each, or a SYN and an ACK), in the order of packet time, and the benign clients.
    fn flood_with_clients(victim: IpAddr) -> (Vec<(IpAddr, PacketFeatures)>, Vec<IpAddr>) {
        use netanom_schemas::{Direction, records::tcp_flags};
        let mut packets: Vec<(IpAddr, PacketFeatures)> = Vec::new();
        for (k, b) in spoofed_flood(victim, T0 + 1_000_000_000, 1_500, 6_000_000_000, 7).into_iter().enumerate() {
            for repeat in 0..=(k % 3) as i64 {
                let mut p = b.packets[0].clone();
                p.ts_ns += repeat * 700_000_000;
                packets.push((b.source, p));
            }
        }
        let mut clients = Vec::new();
        for c in 0..12u8 {
            let client = IpAddr::from([10, 9, 0, c]);
            clients.push(client);
            let n = if c < 8 { 8 } else { 2 };
            for i in 0..n {
                let flags = if i == 0 { tcp_flags::SYN } else { tcp_flags::ACK };
                let ts = T0 + i64::from(c) * 500_000_000 + i64::from(i) * 100_000_000;
                let p = crate::fixtures::packet(ts, victim, 50_000, 443, 6, flags, 60, 1, Direction::Forward);
                packets.push((client, p));
            }
        }
        packets.sort_by_key(|(_, p)| p.ts_ns);
        (packets, clients)
    }

    #[test]
    fn the_closing_update_is_exact_whatever_the_interleaving_and_names_no_benign_client() {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        let cfg = VictimConfig::default();
        let victim: IpAddr = "10.0.0.5".parse().unwrap();
        let (packets, clients) = flood_with_clients(victim);
        let exact_sources = packets.iter().map(|(s, _)| *s).collect::<std::collections::BTreeSet<_>>().len();
        // Four packets partitions by source, each with its own producing side (as four detectors would).
        let mut sides: Vec<SourceSide> = (0..4).map(|_| SourceSide::new(&cfg)).collect();
        let mut reports: Vec<Vec<DestinationStats>> = vec![Vec::new(); 4];
        for chunk in packets.chunks(64) {
            for (source, p) in chunk {
                let partition = match source {
                    IpAddr::V4(v) => (u32::from(*v) % 4) as usize,
                    IpAddr::V6(_) => 0,
                };
                sides[partition].observe(*source, p, partition as i32);
            }
            for (side, out) in sides.iter_mut().zip(&mut reports) {
                out.extend(side.drain(false));
            }
        }
        for (side, out) in sides.iter_mut().zip(&mut reports) {
            out.extend(side.drain(true));
        }
        assert!(reports.iter().all(|r| r.len() > 1), "every partition reports several times");
        let spoofed_last = packets.iter().filter(|(s, _)| !clients.contains(s)).map(|(_, p)| p.ts_ns).max().unwrap();
        let mut closings = Vec::new();
        let mut firsts = std::collections::BTreeSet::new();
        for seed in 0..6u64 {
            // Each partition's reports in order, the partitions interleaved at random.
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut order: Vec<usize> = reports.iter().enumerate().flat_map(|(i, r)| vec![i; r.len()]).collect();
            order.shuffle(&mut rng);
            let mut next = [0usize; 4];
            let mut dst = DestinationSide::new(&cfg);
            let mut out = Vec::new();
            for i in order {
                dst.apply(&reports[i][next[i]], 0, &mut out);
                next[i] += 1;
            }
            assert_eq!(out.len(), 1, "fires once");
            firsts.insert(out[0].score as u64);
            // detected_at: the latest flood packet of the reports that took the count over the threshold.
            assert!(out[0].window_end_ns < spoofed_last, "detected before the flood ended");
            assert!(out[0].window_start_ns <= out[0].window_end_ns);
            assert!(!out[0].closing && out[0].window_key.is_some(), "the first report of the window");
            dst.close_all(&mut out);
            assert_eq!(out[1].window_key, out[0].window_key, "the closing update of the same window");
            assert_eq!(out.len(), 2, "one closing update");
            closings.push(out.pop().unwrap());
        }
        assert!(closings.iter().all(|c| *c == closings[0]), "the same closing update: {closings:#?}");
        let c = &closings[0];
        assert_eq!(c.score, exact_sources as f64, "{}", c.reason);
        let packets_total = c.features.iter().find(|f| f.name == "packets").map(|f| f.value);
        assert_eq!(packets_total, Some(packets.len() as f64));
        // Dated by the flood's own packets: the benign clients' earlier packets do not start it.
        let spoofed = || packets.iter().filter(|(s, _)| !clients.contains(s)).map(|(_, p)| p.ts_ns);
        let first_flood = spoofed().min().unwrap();
        assert!(first_flood > packets[0].1.ts_ns, "the clients start first");
        assert_eq!(c.window_start_ns, first_flood, "first_seen: the first packet of the flood");
        assert_eq!(c.window_end_ns, spoofed().max().unwrap(), "last_seen: the last packet of the flood");
        // Detected at the packet that took the count of distinct sources to `min_sources`: the first packet of
        // the window's 500th source.
        let mut first_packets: std::collections::BTreeMap<IpAddr, i64> = std::collections::BTreeMap::new();
        for (s, p) in &packets {
            first_packets.entry(*s).or_insert(p.ts_ns);
        }
        let mut firsts_ns: Vec<i64> = first_packets.into_values().collect();
        firsts_ns.sort_unstable();
        let crossing = firsts_ns[cfg.min_sources as usize - 1];
        assert_eq!(c.detected_ns, Some(crossing), "detected_at: the packet that crossed the threshold");
        assert!((c.window_start_ns..=c.window_end_ns).contains(&crossing));
        assert_eq!(c.window_key.as_deref(), Some(c.id.trim_end_matches(":final")), "the window's key");
        assert!(c.closing);
        assert!(closings.iter().chain(&[]).all(|c| c.window_start_ns == first_flood));
        let bytes_total = c.features.iter().find(|f| f.name == "bytes").map(|f| f.value);
        assert_eq!(bytes_total, Some(packets.iter().map(|(_, p)| f64::from(p.wire_len)).sum::<f64>()));
        assert!(c.reason.contains(" bytes, "), "{}", c.reason);
        let named = c.sample.split("sources include ").nth(1).unwrap();
        assert_eq!(named.split(", ").count(), SAMPLES, "{}", c.sample);
        for client in &clients {
            assert!(!named.split(", ").any(|n| n == client.to_string()), "{client} named: {}", c.sample);
        }
        assert!(firsts.iter().all(|f| *f >= 500 && *f <= exact_sources as u64), "{firsts:?}");
    }

    #[test]
    fn a_fired_window_closes_once_every_partition_is_two_windows_past_its_end() {
        let cfg = VictimConfig::default();
        let victim: IpAddr = "10.0.0.5".parse().unwrap();
        let other: IpAddr = "10.0.0.6".parse().unwrap();
        let (mut fast, mut slow) = (SourceSide::new(&cfg), SourceSide::new(&cfg));
        let mut dst = DestinationSide::new(&cfg);
        // Packets partition 1 reports early, then is read behind partition 0.
        slow.observe("10.1.0.1".parse().unwrap(), &crate::fixtures::syn(T0, other, 80), 1);
        assert!(apply_all(&mut dst, &slow.drain(true)).is_empty());
        for b in spoofed_flood(victim, T0, 600, 5_000_000_000, 1) {
            fast.observe(b.source, &b.packets[0], 0);
        }
        assert_eq!(apply_all(&mut dst, &fast.drain(true)).len(), 1);
        // Later traffic to another destination moves packet time on.
        let mut later = |side: &mut SourceSide, partition: i32, ts: i64| {
            side.observe("10.1.0.1".parse().unwrap(), &crate::fixtures::syn(ts, other, 80), partition);
            apply_all(&mut dst, &side.drain(true))
        };
        assert!(later(&mut fast, 0, T0 + 29_000_000_000).is_empty(), "partition 0 may still report the window");
        assert!(later(&mut fast, 0, T0 + 30_000_000_000).is_empty(), "partition 1 may still report the window");
        let closing = later(&mut slow, 1, T0 + 30_000_000_000);
        assert_eq!(closing.len(), 1);
        assert!(closing[0].id.ends_with(":final") && closing[0].score == 600.0, "{closing:?}");
        assert!(later(&mut fast, 0, T0 + 40_000_000_000).is_empty(), "closed once");
        let mut out = Vec::new();
        dst.close_all(&mut out);
        assert!(out.is_empty(), "closed once");
    }

    #[test]
    fn a_partition_that_went_quiet_does_not_stop_windows_from_closing() {
        let cfg = VictimConfig::default();
        let victim: IpAddr = "10.0.0.5".parse().unwrap();
        let other: IpAddr = "10.0.0.6".parse().unwrap();
        let (mut fast, mut quiet) = (SourceSide::new(&cfg), SourceSide::new(&cfg));
        let mut dst = DestinationSide::new(&cfg);
        // Packets partition 1 reports once, then never again (its traffic stopped).
        quiet.observe("10.1.0.1".parse().unwrap(), &crate::fixtures::syn(T0, other, 80), 1);
        assert!(apply_all(&mut dst, &quiet.drain(true)).is_empty());
        let flood_at = T0 + 60_000_000_000;
        for b in spoofed_flood(victim, flood_at, 600, 5_000_000_000, 1) {
            fast.observe(b.source, &b.packets[0], 0);
        }
        assert_eq!(apply_all(&mut dst, &fast.drain(true)).len(), 1);
        let mut later = |ts: i64| {
            fast.observe("10.1.0.1".parse().unwrap(), &crate::fixtures::syn(ts, other, 80), 0);
            apply_all(&mut dst, &fast.drain(true))
        };
        assert!(later(flood_at + 29_000_000_000).is_empty(), "partition 0 may still report the window");
        let closing = later(flood_at + 30_000_000_000);
        assert_eq!(closing.len(), 1, "the quiet partition holds nothing back");
        assert!(closing[0].id.ends_with(":final") && closing[0].score == 600.0, "{closing:?}");
        assert!(!dst.newest_ts_ns.contains_key(&(0, 1)), "the quiet partition is forgotten");
        assert!(dst.newest_ts_ns.contains_key(&(0, 0)));
        dst.revoke_partitions(&[0]);
        assert!(dst.newest_ts_ns.is_empty(), "a revoked partition's packet times are dropped");
    }

    #[test]
    fn a_partition_read_behind_the_others_keeps_counting_its_windows() {
        let cfg = VictimConfig::default();
        let victim: IpAddr = "10.0.0.5".parse().unwrap();
        let mut src = SourceSide::new(&cfg);
        let flood = spoofed_flood(victim, T0, 600, 5_000_000_000, 1);
        let (early, late) = flood.split_at(300);
        for b in early {
            src.observe(b.source, &b.packets[0], 1);
        }
        let mut reports = src.drain(true);
        // Partition 0 is a minute ahead; partition 1's window must not be forgotten meanwhile.
        src.observe(victim, &crate::fixtures::syn(T0 + 60_000_000_000, "10.0.0.6".parse().unwrap(), 80), 0);
        reports.extend(src.drain(true));
        for b in late {
            src.observe(b.source, &b.packets[0], 1);
        }
        reports.extend(src.drain(true));
        let last = reports.iter().rfind(|d| d.destination == victim).unwrap();
        assert_eq!((last.sources, last.origin_partition), (600, 1), "every source of partition 1 counted");
        // Merged on the destination side too (a minute behind, partition 1 is taken as quiet there, so the
        // window's closing update may already have gone out; the counts are still exact).
        let mut dst = DestinationSide::new(&cfg);
        apply_all(&mut dst, &reports);
        assert_eq!(dst.entries[&(victim, last.window_start_ns)].totals().sources, 600);
    }

    #[test]
    fn a_rebuilt_partition_reports_the_counts_of_the_previous_owner() {
        let cfg = VictimConfig::default();
        let victim: IpAddr = "10.0.0.5".parse().unwrap();
        let flood = spoofed_flood(victim, T0, 600, 5_000_000_000, 1);
        let (before, after) = flood.split_at(300);
        // The previous owner counted the first half and reported it; the next owner rebuilds from the same
        // records (not reporting them), then counts the second half.
        let mut old = SourceSide::new(&cfg);
        let mut new = SourceSide::new(&cfg);
        new.set_rebuilding(true);
        for b in before {
            for p in &b.packets {
                old.observe(b.source, p, 4);
                new.observe(b.source, p, 4);
            }
        }
        new.set_rebuilding(false);
        let reported = old.drain(true);
        assert!(new.drain(true).is_empty(), "a rebuild reports nothing");
        for b in after {
            for p in &b.packets {
                new.observe(b.source, p, 4);
            }
        }
        let mut dst = DestinationSide::new(&cfg);
        let fired = apply_all(&mut dst, reported.iter().chain(&new.drain(true)));
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].score, 600.0, "every source once");
        assert_eq!(close_all(&mut dst)[0].score, 600.0, "every source once");
        let held = new.len();
        assert!(held > 0);
        assert_eq!(new.revoke_partitions(&[4]), held, "a revoked partition's counts are dropped");
        assert!(new.is_empty());
    }

    #[test]
    fn popular_server_with_chatty_clients_is_not_a_victim() {
        let cfg = VictimConfig::default();
        let mut src = SourceSide::new(&cfg);
        let server: IpAddr = "93.184.216.0".parse().unwrap();
        // 800 clients, each a full benign batch to the same server (tens of packets each).
        for i in 0..800u64 {
            let mut b = benign_batch(i);
            b.source = IpAddr::from((0x0a00_0000u32 + i as u32).to_be_bytes());
            for p in &mut b.packets {
                p.destination = server;
                p.ts_ns = T0 + (p.ts_ns - T0) % 5_000_000_000;
            }
            if b.packets.len() < 10 {
                continue;
            }
            for p in &b.packets {
                src.observe(b.source, p, 0);
            }
        }
        let mut dst = DestinationSide::new(&cfg);
        let deltas = src.drain(false);
        assert!(deltas.iter().any(|d| d.sources >= 500));
        assert!(apply_all(&mut dst, &deltas).is_empty());
    }

    #[test]
    fn maps_are_bounded() {
        let cfg = VictimConfig { max_destinations: 50, ..VictimConfig::default() };
        let mut src = SourceSide::new(&cfg);
        let mut dst = DestinationSide::new(&cfg);
        let s: IpAddr = "1.2.3.4".parse().unwrap();
        for i in 0..1_000u32 {
            let p = crate::fixtures::syn(T0, IpAddr::from(i.to_be_bytes()), 80);
            src.observe(s, &p, 0);
        }
        assert_eq!(src.len(), 50);
        assert_eq!(src.overflows(), 950);
        for d in src.drain(false) {
            dst.apply(&d, 3, &mut Vec::new());
        }
        assert_eq!(dst.len(), 50);
        assert_eq!(dst.revoke_partitions(&[3]), 50);
        assert!(dst.is_empty());
    }

    /// `side` counts one SYN to an unrelated destination at `ts` on `partition` and reports: packet time moves on.
    fn tick(side: &mut SourceSide, partition: i32, ts: i64) -> Vec<DestinationStats> {
        side.observe(
            "10.1.0.1".parse().unwrap(),
            &crate::fixtures::syn(ts, "10.0.0.6".parse().unwrap(), 80),
            partition,
        );
        side.drain(true)
    }

    #[test]
    fn a_lagging_partition_that_counted_the_flood_is_waited_for() {
        let cfg = VictimConfig::default();
        let victim: IpAddr = "10.0.0.5".parse().unwrap();
        let (mut fast, mut slow) = (SourceSide::new(&cfg), SourceSide::new(&cfg));
        let mut dst = DestinationSide::new(&cfg);
        // Partition 1 counts the flood but is read ten windows behind partition 0.
        let flood = spoofed_flood(victim, T0, 800, 5_000_000_000, 1);
        let (early, late) = flood.split_at(600);
        assert!(apply_all(&mut dst, &tick(&mut fast, 0, T0 + 100_000_000_000)).is_empty());
        for b in early {
            slow.observe(b.source, &b.packets[0], 1);
        }
        let fired = apply_all(&mut dst, &slow.drain(true));
        assert_eq!(fired.len(), 1, "the first anomaly, partial: {fired:?}");
        assert!(!fired[0].id.ends_with(":final"));
        // Partition 0 moves on; the window stays open while partition 1, which counted part of it, lags.
        assert!(apply_all(&mut dst, &tick(&mut fast, 0, T0 + 110_000_000_000)).is_empty());
        for b in late {
            slow.observe(b.source, &b.packets[0], 1);
        }
        assert!(apply_all(&mut dst, &slow.drain(true)).is_empty(), "not complete yet");
        assert!(apply_all(&mut dst, &tick(&mut slow, 1, T0 + 29_000_000_000)).is_empty(), "not complete yet");
        let closing = apply_all(&mut dst, &tick(&mut slow, 1, T0 + 30_000_000_000));
        assert_eq!(closing.len(), 1, "{closing:?}");
        assert!(closing[0].id.ends_with(":final"));
        assert_eq!(closing[0].score, 800.0, "every source of the lagging partition: {}", closing[0].reason);
        assert_eq!(closing[0].window_start_ns, T0, "the first flood packet");
        assert_eq!(dst.closed(), [1, 0, 0, 0]);
    }

    #[test]
    fn a_window_whose_partition_stopped_reporting_closes_when_it_ages_out() {
        let cfg = VictimConfig::default();
        let victim: IpAddr = "10.0.0.5".parse().unwrap();
        let (mut fast, mut stopped) = (SourceSide::new(&cfg), SourceSide::new(&cfg));
        let mut dst = DestinationSide::new(&cfg);
        assert!(apply_all(&mut dst, &tick(&mut fast, 0, T0)).is_empty());
        for b in spoofed_flood(victim, T0, 600, 5_000_000_000, 1) {
            stopped.observe(b.source, &b.packets[0], 1);
        }
        assert_eq!(apply_all(&mut dst, &stopped.drain(true)).len(), 1);
        // Partition 1 never reports again; partition 0 goes on.
        let window = 10_000_000_000;
        for w in 1..=AGE_OUT_WINDOWS {
            assert!(apply_all(&mut dst, &tick(&mut fast, 0, T0 + w * window)).is_empty(), "window {w}");
        }
        let closing = apply_all(&mut dst, &tick(&mut fast, 0, T0 + (AGE_OUT_WINDOWS + 1) * window));
        assert_eq!(closing.len(), 1, "closed with what is known");
        assert!(closing[0].id.ends_with(":final") && closing[0].score == 600.0, "{closing:?}");
        assert_eq!(dst.closed(), [0, 0, 1, 0]);
        assert!(close_all(&mut dst).is_empty(), "closed once");
    }

    #[test]
    fn a_fired_window_evicted_to_make_room_is_closed_first() {
        let cfg = VictimConfig { max_destinations: 4, ..VictimConfig::default() };
        let victim: IpAddr = "10.0.0.5".parse().unwrap();
        let (mut src, mut flooded) = (SourceSide::new(&cfg), SourceSide::new(&cfg));
        let mut dst = DestinationSide::new(&cfg);
        for b in spoofed_flood(victim, T0, 600, 5_000_000_000, 1) {
            flooded.observe(b.source, &b.packets[0], 1);
        }
        assert_eq!(apply_all(&mut dst, &flooded.drain(true)).len(), 1);
        // Four other destinations, three windows later on partition 0, fill the table before partition 1 shows
        // the flood's window complete: the window goes, closed first.
        let mut out = Vec::new();
        for i in 0..4u8 {
            let mut d = tick(&mut src, 0, T0 + 30_000_000_000);
            for d in &mut d {
                d.destination = IpAddr::from([10, 0, 1, i]);
            }
            out.extend(apply_all(&mut dst, &d));
        }
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].id.ends_with(":final") && out[0].score == 600.0, "{out:?}");
        assert_eq!(dst.closed(), [0, 0, 0, 1]);
        assert_eq!(CLOSE_REASONS[CloseReason::Evicted as usize], "evicted", "the metric's reason");
        assert_eq!(CLOSE_REASONS[CloseReason::AgedOut as usize], "aged_out");
        assert!(dst.evictions() >= 1);
        assert!(close_all(&mut dst).is_empty(), "closed once");
    }

    #[test]
    fn a_record_naming_many_sources_is_kept_within_the_budget() {
        let cfg = VictimConfig::default();
        let victim: IpAddr = "10.0.0.5".parse().unwrap();
        let mut flooded = SourceSide::new(&cfg);
        for b in spoofed_flood(victim, T0, 600, 5_000_000_000, 1) {
            flooded.observe(b.source, &b.packets[0], 1);
        }
        let mut reports = flooded.drain(true);
        assert_eq!(reports.len(), 1, "{reports:?}");
        // A record naming 100,000 sources (the decoder does not cap the list), largest first, with repeats.
        let named = |i: u32| IpAddr::from((0x0a80_0000u32 + i).to_be_bytes());
        reports[0].sample_sources = (0..100_000u32).rev().chain(0..4).map(named).collect();
        let mut dst = DestinationSide::new(&cfg);
        let fired = apply_all(&mut dst, &reports);
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert!(dst.bytes() < 16 * 1024, "{} bytes held", dst.bytes());
        let want: Vec<String> = (0..SAMPLES as u32).map(|i| named(i).to_string()).collect();
        assert!(fired[0].sample.ends_with(&format!("include {})", want.join(", "))), "{}", fired[0].sample);
        // Repeated, the record changes nothing.
        let held = dst.bytes();
        apply_all(&mut dst, &reports);
        assert_eq!(dst.bytes(), held);

        // A new origin partition of the same window grows the entry: refused once the budget is spent.
        let mut dst = DestinationSide::new(&cfg);
        apply_all(&mut dst, &reports);
        let full = dst.bytes();
        let mut dst = dst.with_budget(full);
        let mut other = reports[0].clone();
        other.origin_partition = 2;
        let mut out = Vec::new();
        dst.apply(&other, 0, &mut out);
        assert_eq!(dst.refused, 1);
        assert!(dst.bytes() <= full, "{} bytes held, budget {full}", dst.bytes());
        let mut dst = dst.with_budget(usize::MAX);
        dst.apply(&other, 0, &mut out);
        assert_eq!(dst.refused, 1, "merged when there is room");
    }

    #[test]
    fn cumulative_reports_dating_more_sources_stay_within_the_budget() {
        let cfg = VictimConfig::default();
        let budget = 64 * 1024;
        let mut dst = DestinationSide::new(&cfg).with_budget(budget);
        let window_ns = cfg.window.as_nanos() as i64;
        // One origin's cumulative reports of a destination: the first dates `sources` sources, the later one more.
        let report = |destination: IpAddr, window_start_ns: i64, sources: u64| DestinationStats {
            destination,
            window_start_ns,
            window_ns,
            sources,
            packets: sources * 2,
            syn_packets: sources * 2,
            sample_sources: (0..sources.min(16) as u32)
                .map(|k| IpAddr::from((0x6400_0000u32 + k).to_be_bytes()))
                .collect(),
            last_ts_ns: window_start_ns + 1_000,
            origin_partition: 1,
            bytes: sources * 120,
            first_evidence_ns: Some(window_start_ns),
            last_evidence_ns: Some(window_start_ns + 1_000),
            unlisted_packets: 0,
            first_packet_ns: (0..sources as i64).map(|k| window_start_ns + k).collect(),
        };
        let (mut peak, mut fired) = (0, 0);
        // 400 destinations under a spoofed flood in one window, every one reported first with 2 sources, then
        // with `min_sources`.
        let destinations: Vec<IpAddr> = (0..400u32).map(|i| IpAddr::from((0x0a00_0000u32 + i).to_be_bytes())).collect();
        for sources in [2, cfg.min_sources] {
            for &v in &destinations {
                let mut out = Vec::new();
                dst.apply(&report(v, T0, sources), 0, &mut out);
                fired += out.len();
                peak = peak.max(dst.bytes());
                let held = dst.heap_bytes;
                dst.recount_heap_bytes();
                assert_eq!(dst.heap_bytes, held, "the counted bytes are the held ones");
            }
        }
        println!("budget {budget}: peak bytes {peak}, entries {}, refused {}, fired {fired}", dst.len(), dst.refused);
        assert!(peak <= budget, "{peak} bytes held, budget {budget}");
        assert!(dst.refused > 0, "refused {}", dst.refused);
        // An entry whose longer lists do not fit keeps counting: floods fire all the same.
        assert!(fired > 0 && fired <= dst.len(), "fired {fired} of {} entries", dst.len());
    }

    #[test]
    fn a_flood_of_a_million_spoofed_sources_is_alerted_within_a_small_budget() {
        // 8 MiB for the detector: 1 MiB for the victim tables, 896 KiB of it for the producing side.
        let state = crate::state::StateConfig { memory_budget_mib: 8, ..Default::default() };
        let mut models = crate::models::Models::default();
        let mut setup = Setup::new(1, &mut models);
        setup.victim_budget_bytes = state.victim_budget_bytes() as usize;
        let cfg = VictimConfig::default();
        let mut kind = Victim::build(&cfg, &mut setup).unwrap();
        let budget = (state.victim_budget_bytes() as usize, state.victim_budget_bytes() as usize / DESTINATION_SHARE);
        let victim: IpAddr = "10.0.0.5".parse().unwrap();
        // 1,000,000 one-SYN sources over 8 s at the victim, and every 4th also sends one packet to a destination
        // of its own (250,000 more entries than the table could hold in bytes).
        let (mut out, mut peak) = (Vec::new(), (0, 0));
        for k in 0..1_000_000u32 {
            let ts = T0 + i64::from(k) * 8_000;
            let source = IpAddr::from((0x6400_0000u32 + k).to_be_bytes());
            kind.observe_packet(source, &crate::fixtures::syn(ts, victim, 80), &mut (), &mut out);
            if k % 4 == 0 {
                let other = IpAddr::from((0x0b00_0000u32 + k).to_be_bytes());
                kind.observe_packet(source, &crate::fixtures::syn(ts, other, 80), &mut (), &mut out);
            }
            if k % 10_000 == 0 {
                for d in kind.destination_deltas(false) {
                    kind.observe_destination_stats(&d, 0, &mut out);
                }
                let t = kind.tables();
                peak = (peak.0.max(t.source_bytes), peak.1.max(t.destination_bytes));
            }
        }
        for d in kind.destination_deltas(true) {
            kind.observe_destination_stats(&d, 0, &mut out);
        }
        kind.flush_destinations(&mut out);
        let t = kind.tables();
        println!("budget {budget:?}: peak bytes {peak:?}, evictions {:?}, closed {:?}", t.evictions, t.closed);
        assert!(peak.0 <= budget.0 - budget.1 && peak.1 <= budget.1, "{peak:?} within {budget:?}");
        let alerts: Vec<&Anomaly> = out.iter().filter(|a| a.host == victim.to_string()).collect();
        assert_eq!(alerts.len(), 2, "the first anomaly and the closing update: {alerts:#?}");
        assert!(alerts[1].id.ends_with(":final") && alerts[1].score >= cfg.min_sources as f64, "{alerts:#?}");
        assert_eq!(alerts[1].window_start_ns, T0, "first_seen: the first SYN of the flood");
        let by = |reason: &str| t.evictions.iter().find(|e| e.0 == "victim_sources" && e.1 == reason).unwrap().2;
        assert!(by("budget") > 0 && by("capacity") > 0, "{:?}", t.evictions);
    }

    #[test]
    fn reports_are_due_every_interval_of_packet_time() {
        let cfg = VictimConfig { report_every: std::time::Duration::from_secs(1), ..VictimConfig::default() };
        let mut src = SourceSide::new(&cfg);
        let s: IpAddr = "1.2.3.4".parse().unwrap();
        let server: IpAddr = "10.0.0.1".parse().unwrap();
        // 10 s of packet time, one packet every 10 ms, a drain after every packet (as after every chunk).
        let mut reports = 0;
        let mut packets = 0;
        for i in 0..1_000i64 {
            src.observe(s, &crate::fixtures::syn(T0 + i * 10_000_000, server, 80), 0);
            let d = src.drain(false);
            reports += usize::from(!d.is_empty());
            packets = d.iter().map(|d| d.packets).max().unwrap_or(packets);
        }
        assert_eq!(reports, 10, "one report per second of packet time");
        packets = src.drain(true).iter().map(|d| d.packets).max().unwrap_or(packets);
        assert_eq!(packets, 1_000, "the counts are cumulative: nothing is lost between reports");
    }
}
