//! Per-source batching: groups the features of each source's packets into [`PacketBatch`] records of at most
//! `max_packets` packets and `max_interval` of packet time, numbers them per source, and keeps each source's
//! packets in capture order. Bounded: at most `max_open_batches` open batches (the oldest is closed early when
//! exceeded) and at most `max_sources` remembered sequence counters. It knows nothing of parsing or Kafka.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;

use foldhash::HashMap;
use netanom_schemas::{PacketBatch, PacketFeatures};

use crate::flow::duration_ns;

/// Batching settings (`[producer.batch]`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Most packets in one batch. Default 1024.
    pub max_packets: usize,
    /// Most packet time one batch spans (first to last packet); also closes a quiet source's batch once packet
    /// time has moved this far past its first packet. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub max_interval: Duration,
    /// Most batches open at once (one per active source); when exceeded the oldest is closed early.
    /// Default 65536.
    pub max_open_batches: usize,
    /// Most sources whose sequence counter is remembered; past it the counters of sources without an open batch
    /// are dropped (a returning source then continues above every sequence number issued so far, so per-source
    /// sequence numbers stay strictly increasing). Default 1048576.
    pub max_sources: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self { max_packets: 1024, max_interval: Duration::from_secs(1), max_open_batches: 65_536, max_sources: 1 << 20 }
    }
}

impl BatchConfig {
    /// Checks the settings; each problem names its key under `prefix` (e.g. `producer.batch`).
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut errors = Vec::new();
        if self.max_packets == 0 || self.max_packets > 1 << 20 {
            errors.push(format!("{prefix}.max_packets must be in 1..=1048576, got {}", self.max_packets));
        }
        if self.max_interval.is_zero() {
            errors.push(format!("{prefix}.max_interval must be > 0, got 0s"));
        }
        if self.max_open_batches == 0 {
            errors.push(format!("{prefix}.max_open_batches must be >= 1, got 0"));
        }
        if self.max_sources < self.max_open_batches {
            errors.push(format!(
                "{prefix}.max_sources ({}) must be >= {prefix}.max_open_batches ({})",
                self.max_sources, self.max_open_batches
            ));
        }
        errors
    }
}

/// Why batches were closed, and how many packets they carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Batches emitted.
    pub batches: u64,
    /// Packets in emitted batches.
    pub packets: u64,
    /// Closed because they reached `max_packets`.
    pub closed_full: u64,
    /// Closed because packet time moved `max_interval` past their first packet.
    pub closed_interval: u64,
    /// Closed early because `max_open_batches` was exceeded.
    pub closed_capacity: u64,
    /// Closed by [`Batcher::flush_all`] (end of input or shutdown).
    pub closed_flush: u64,
    /// Batches of one packet outside the packet-time skew ([`Batcher::emit_alone`]).
    pub alone: u64,
    /// Sequence counters dropped because `max_sources` was exceeded.
    pub sources_forgotten: u64,
}

#[derive(Debug)]
struct Open {
    first_ts: i64,
    generation: u64,
    packets: Vec<PacketFeatures>,
}

#[derive(Debug)]
struct Slot {
    next_sequence: u64,
    open: Option<Open>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reason {
    Full,
    Interval,
    Capacity,
    Flush,
}

/// The per-source batcher. Closed batches are lent to the `emit` callback of each call, oldest first; their
/// packet vectors are reused afterwards, so steady-state batching allocates nothing.
#[derive(Debug)]
pub struct Batcher {
    slots: HashMap<IpAddr, Slot>,
    /// (first packet time, source, generation) of opened batches, in opening order; stale entries (batches
    /// closed by size) are skipped when they reach the front.
    queue: VecDeque<(i64, IpAddr, u64)>,
    open_count: usize,
    next_generation: u64,
    sequence_floor: u64,
    max_packets: usize,
    interval_ns: i64,
    max_open: usize,
    max_sources: usize,
    pool: Vec<Vec<PacketFeatures>>,
    stats: BatchStats,
}

const POOL_MAX: usize = 256;

impl Batcher {
    /// An empty batcher.
    pub fn new(config: &BatchConfig) -> Self {
        Self {
            slots: HashMap::default(),
            queue: VecDeque::new(),
            open_count: 0,
            next_generation: 0,
            sequence_floor: 0,
            max_packets: config.max_packets.max(1),
            interval_ns: duration_ns(config.max_interval).max(1),
            max_open: config.max_open_batches.max(1),
            max_sources: config.max_sources.max(config.max_open_batches).max(1),
            pool: Vec::new(),
            stats: BatchStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> BatchStats {
        self.stats
    }

    /// Batches currently open.
    pub fn open_batches(&self) -> usize {
        self.open_count
    }

    /// Packets held in open batches.
    pub fn pending_packets(&self) -> usize {
        self.slots.values().filter_map(|s| s.open.as_ref()).map(|o| o.packets.len()).sum()
    }

    fn recycle(&mut self, mut packets: Vec<PacketFeatures>) {
        if self.pool.len() < POOL_MAX && packets.capacity() <= (2 * self.max_packets).max(16) {
            packets.clear();
            self.pool.push(packets);
        }
    }

    /// Adds one packet of `source`; closes whatever batches this makes due.
    pub fn push(&mut self, source: IpAddr, features: PacketFeatures, emit: &mut impl FnMut(&PacketBatch)) {
        let ts = features.ts_ns;
        self.expire(ts, emit);
        let stale = match self.slots.get(&source) {
            Some(Slot { open: Some(o), .. }) => Some(ts.saturating_sub(o.first_ts) >= self.interval_ns),
            _ => None,
        };
        if stale == Some(true) {
            self.close(source, Reason::Interval, emit);
        }
        let needs_open = stale != Some(false);
        if needs_open {
            if self.open_count >= self.max_open {
                self.close_oldest(emit);
            }
            if self.slots.len() >= self.max_sources && !self.slots.contains_key(&source) {
                self.forget_idle_sources();
            }
            let generation = self.next_generation;
            self.next_generation += 1;
            let packets = self.pool.pop().unwrap_or_default();
            let floor = self.sequence_floor;
            let slot = self.slots.entry(source).or_insert(Slot { next_sequence: floor, open: None });
            slot.open = Some(Open { first_ts: ts, generation, packets });
            self.open_count += 1;
            self.queue.push_back((ts, source, generation));
            if self.queue.len() > 2 * self.max_open + 1024 {
                self.compact_queue();
            }
        }
        let full = match self.slots.get_mut(&source).and_then(|s| s.open.as_mut()) {
            Some(open) => {
                open.packets.push(features);
                open.packets.len() >= self.max_packets
            }
            None => false,
        };
        if full {
            self.close(source, Reason::Full, emit);
        }
    }

    /// Emits one packet as a batch of its own, numbered in its source's sequence, leaving the open batches and the
    /// batcher's packet time alone: for a packet outside the packet-time skew, which the detector dead-letters.
    pub fn emit_alone(&mut self, source: IpAddr, features: PacketFeatures, emit: &mut impl FnMut(&PacketBatch)) {
        if self.slots.len() >= self.max_sources && !self.slots.contains_key(&source) {
            self.forget_idle_sources();
        }
        let floor = self.sequence_floor;
        let slot = self.slots.entry(source).or_insert(Slot { next_sequence: floor, open: None });
        let sequence = slot.next_sequence;
        slot.next_sequence += 1;
        self.stats.batches += 1;
        self.stats.packets += 1;
        self.stats.alone += 1;
        emit(&PacketBatch { source, sequence, packets: vec![features] });
    }

    /// Closes every batch whose first packet is `max_interval` or more before `now_ns` (packet time). Call it
    /// when a live capture is idle so quiet sources are not held back.
    pub fn expire(&mut self, now_ns: i64, emit: &mut impl FnMut(&PacketBatch)) {
        while let Some(&(first_ts, source, generation)) = self.queue.front() {
            if now_ns.saturating_sub(first_ts) < self.interval_ns {
                break;
            }
            self.queue.pop_front();
            if self.is_current(source, generation) {
                self.close(source, Reason::Interval, emit);
            }
        }
    }

    /// Closes every open batch, oldest first (end of input, shutdown).
    pub fn flush_all(&mut self, emit: &mut impl FnMut(&PacketBatch)) {
        while let Some((_, source, generation)) = self.queue.pop_front() {
            if self.is_current(source, generation) {
                self.close(source, Reason::Flush, emit);
            }
        }
        debug_assert_eq!(self.open_count, 0);
    }

    fn is_current(&self, source: IpAddr, generation: u64) -> bool {
        matches!(self.slots.get(&source), Some(Slot { open: Some(o), .. }) if o.generation == generation)
    }

    fn close_oldest(&mut self, emit: &mut impl FnMut(&PacketBatch)) {
        while let Some((_, source, generation)) = self.queue.pop_front() {
            if self.is_current(source, generation) {
                self.close(source, Reason::Capacity, emit);
                return;
            }
        }
    }

    fn compact_queue(&mut self) {
        let slots = &self.slots;
        self.queue.retain(
            |&(_, source, generation)| matches!(slots.get(&source), Some(Slot { open: Some(o), .. }) if o.generation == generation),
        );
    }

    fn forget_idle_sources(&mut self) {
        let before = self.slots.len();
        self.slots.retain(|_, s| s.open.is_some());
        self.stats.sources_forgotten += (before - self.slots.len()) as u64;
        // Every sequence number issued so far is below the number of batches emitted so far.
        self.sequence_floor = self.stats.batches;
    }

    fn close(&mut self, source: IpAddr, reason: Reason, emit: &mut impl FnMut(&PacketBatch)) {
        let Some(slot) = self.slots.get_mut(&source) else { return };
        let Some(open) = slot.open.take() else { return };
        let sequence = slot.next_sequence;
        slot.next_sequence += 1;
        self.open_count -= 1;
        let s = &mut self.stats;
        s.batches += 1;
        s.packets += open.packets.len() as u64;
        match reason {
            Reason::Full => s.closed_full += 1,
            Reason::Interval => s.closed_interval += 1,
            Reason::Capacity => s.closed_capacity += 1,
            Reason::Flush => s.closed_flush += 1,
        }
        let batch = PacketBatch { source, sequence, packets: open.packets };
        emit(&batch);
        self.recycle(batch.packets);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netanom_schemas::{Direction, Network};

    const MS: i64 = 1_000_000;

    fn f(ts_ns: i64, dst_port: u16) -> PacketFeatures {
        PacketFeatures {
            ts_ns,
            network: Network::Ipv4,
            destination: "10.9.9.9".parse().unwrap(),
            src_port: 1,
            dst_port,
            ip_proto: 6,
            wire_len: 60,
            cap_len: 60,
            payload_len: 0,
            tcp_flags: 2,
            ttl: 64,
            vlan: None,
            icmp_type: None,
            icmp_code: None,
            flow_duration_ns: 0,
            flow_packets: 1,
            flow_bytes: 60,
            direction: Direction::Forward,
            payload_entropy: None,
        }
    }

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn max_packets_and_interval_close_batches_in_order() {
        let cfg = BatchConfig { max_packets: 3, max_interval: Duration::from_millis(100), ..BatchConfig::default() };
        let mut b = Batcher::new(&cfg);
        let mut out = Vec::new();
        let mut emit = |batch: &PacketBatch| out.push(batch.clone());
        for i in 0..7 {
            b.push(ip(1), f(i * MS, i as u16), &mut emit);
        }
        // 150 ms later: the open batch (packet 6, opened at 6 ms) is past its interval.
        b.push(ip(1), f(150 * MS, 100), &mut emit);
        b.flush_all(&mut emit);
        let sizes: Vec<_> = out.iter().map(|b| b.packets.len()).collect();
        assert_eq!(sizes, vec![3, 3, 1, 1]);
        let seqs: Vec<_> = out.iter().map(|b| b.sequence).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3]);
        let ports: Vec<_> = out.iter().flat_map(|b| b.packets.iter().map(|p| p.dst_port)).collect();
        assert_eq!(ports, vec![0, 1, 2, 3, 4, 5, 6, 100]);
        let s = b.stats();
        assert_eq!((s.closed_full, s.closed_interval, s.closed_flush, s.batches, s.packets), (2, 1, 1, 4, 8));
    }

    #[test]
    fn quiet_source_is_closed_by_other_traffic_and_by_expire() {
        let cfg = BatchConfig { max_interval: Duration::from_millis(10), ..BatchConfig::default() };
        let mut b = Batcher::new(&cfg);
        let out = std::cell::RefCell::new(Vec::new());
        let mut emit = |batch: &PacketBatch| out.borrow_mut().push(batch.clone());
        b.push(ip(1), f(0, 1), &mut emit);
        b.push(ip(2), f(5 * MS, 1), &mut emit);
        b.push(ip(3), f(12 * MS, 1), &mut emit);
        assert_eq!(out.borrow().len(), 1);
        assert_eq!(out.borrow()[0].source, ip(1));
        b.expire(100 * MS, &mut emit);
        let out = out.into_inner();
        assert_eq!(out.iter().map(|b| b.source).collect::<Vec<_>>(), vec![ip(1), ip(2), ip(3)]);
        assert_eq!(b.open_batches(), 0);
    }

    #[test]
    fn open_batches_are_bounded_oldest_closed_first() {
        let cfg = BatchConfig { max_open_batches: 4, max_sources: 8, ..BatchConfig::default() };
        let mut b = Batcher::new(&cfg);
        let mut out = Vec::new();
        let mut emit = |batch: &PacketBatch| out.push(batch.clone());
        for i in 0..100u32 {
            b.push(ip(i % 20), f(i64::from(i), i as u16), &mut emit);
            assert!(b.open_batches() <= 4);
        }
        b.flush_all(&mut emit);
        assert_eq!(out.iter().map(|b| b.packets.len()).sum::<usize>(), 100);
        assert!(b.stats().closed_capacity > 0);
        assert!(b.stats().sources_forgotten > 0);
        // Per-source order and strictly increasing sequence numbers hold through evictions.
        for src in 0..20 {
            let mine: Vec<_> = out.iter().filter(|x| x.source == ip(src)).collect();
            let seqs: Vec<_> = mine.iter().map(|x| x.sequence).collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
            let ports: Vec<_> = mine.iter().flat_map(|x| x.packets.iter().map(|p| p.dst_port)).collect();
            assert!(ports.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(ports.len(), 5);
        }
    }

    #[test]
    fn recycled_vectors_are_reused_empty() {
        let mut b = Batcher::new(&BatchConfig { max_packets: 2, ..BatchConfig::default() });
        let mut out = Vec::new();
        b.push(ip(1), f(0, 1), &mut |x: &PacketBatch| out.push(x.clone()));
        b.push(ip(1), f(1, 2), &mut |x: &PacketBatch| out.push(x.clone()));
        assert_eq!(out.pop().unwrap().packets.len(), 2);
        assert_eq!(b.pool.len(), 1);
        b.push(ip(1), f(2, 3), &mut |x: &PacketBatch| out.push(x.clone()));
        b.flush_all(&mut |x: &PacketBatch| out.push(x.clone()));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].packets.len(), 1);
        assert_eq!(out[0].packets[0].dst_port, 3);
    }

    #[test]
    fn validate_names_keys() {
        let cfg = BatchConfig { max_packets: 0, max_interval: Duration::ZERO, max_open_batches: 10, max_sources: 5 };
        let errs = cfg.validate("producer.batch");
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[0].starts_with("producer.batch.max_packets"));
        assert!(BatchConfig::default().validate("x").is_empty());
    }
}
