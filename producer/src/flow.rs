//! The bounded flow table: per packet, the state of its bidirectional flow (canonical 5-tuple) so far —
//! duration, packets, bytes and direction. It owns flow lifetime (idle timeout in packet time, TCP FIN/RST
//! close) and the memory bound (`memory_budget_mib`, or `max_flows`: least-recently-seen eviction done in amortised
//! sweeps, never O(n) per packet), and counts its bytes ([`FlowTable::bytes`]). It knows nothing of capture,
//! batching or Kafka.

use foldhash::{HashMap, HashMapExt};
use std::net::IpAddr;
use std::time::Duration;

use netanom_schemas::Direction;
use netanom_schemas::bytes::{table_bytes, vec_bytes};
use netanom_schemas::records::tcp_flags;

use crate::parse::Parsed;

/// Flow table settings (`[producer.flow]`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowConfig {
    /// Bytes the flow table may hold, in MiB: the number of flows it tracks follows from it ([`flows_for`]: the
    /// hash table counted twice, as it is rebuilt when it grows, plus the eviction scratch). 1 to 1048576.
    /// Default 128 (458,752 flows), within the producer's manifest limit with `[producer.outage]
    /// queue_budget_mib`.
    pub memory_budget_mib: u64,
    /// Maximum number of flows tracked at once; when full, the least recently seen flows are evicted (about
    /// 1/8 of the table at a time). Default: what `memory_budget_mib` fits; set, at least 16 and it must fit
    /// the budget.
    pub max_flows: Option<usize>,
    /// A flow with no packet for this long (packet time) ends; its next packet starts a new flow. Default 120 s.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A TCP flow closed by RST or by FIN in both directions ends after this long without packets, or at once
    /// when a new SYN arrives for the same 5-tuple. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub closed_timeout: Duration,
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            memory_budget_mib: 128,
            max_flows: None,
            idle_timeout: Duration::from_secs(120),
            closed_timeout: Duration::from_secs(5),
        }
    }
}

/// Largest flow-table budget accepted, in MiB (1 TiB).
pub const MAX_BUDGET_MIB: u64 = 1 << 20;

/// Bytes `flows` flows take at most: the hash table of that many entries counted twice (it is rebuilt when it
/// grows, the old table alive until the new one is filled) and the eviction scratch (a timestamp per flow).
pub fn flows_bytes(flows: usize) -> usize {
    table_bytes::<(FlowKey, Entry)>(flows).saturating_mul(2).saturating_add(vec_bytes::<i64>(flows))
}

/// Flows a budget of `budget` bytes holds, counted as [`flows_bytes`] does.
pub fn flows_for(budget: usize) -> usize {
    let (mut lo, mut hi) = (0usize, budget / std::mem::size_of::<(FlowKey, Entry)>() + 1);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if flows_bytes(mid) <= budget { lo = mid } else { hi = mid - 1 }
    }
    lo
}

impl FlowConfig {
    /// The budget in bytes.
    pub fn budget_bytes(&self) -> usize {
        usize::try_from(self.memory_budget_mib.min(MAX_BUDGET_MIB)).unwrap_or(usize::MAX).saturating_mul(1 << 20)
    }

    /// Flows tracked at most: `max_flows`, or what the budget fits (16 at least).
    pub fn capacity(&self) -> usize {
        self.max_flows.unwrap_or_else(|| flows_for(self.budget_bytes())).max(16)
    }

    /// Checks the settings; each problem names its key under `prefix` (e.g. `producer.flow`).
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut errors = Vec::new();
        if self.memory_budget_mib == 0 || self.memory_budget_mib > MAX_BUDGET_MIB {
            errors.push(format!(
                "{prefix}.memory_budget_mib must be 1 to {MAX_BUDGET_MIB}, got {}",
                self.memory_budget_mib
            ));
        }
        match self.max_flows {
            Some(n) if n < 16 => errors.push(format!("{prefix}.max_flows must be >= 16, got {n}")),
            Some(n) if flows_bytes(n) > self.budget_bytes() => errors.push(format!(
                "{prefix}.max_flows ({n}) needs {} MiB, more than {prefix}.memory_budget_mib ({} MiB): raise the \
                 budget or lower max_flows (the budget fits {})",
                flows_bytes(n).div_ceil(1 << 20),
                self.memory_budget_mib,
                flows_for(self.budget_bytes())
            )),
            _ => {}
        }
        if self.idle_timeout.is_zero() {
            errors.push(format!("{prefix}.idle_timeout must be > 0, got 0s"));
        }
        if self.closed_timeout > self.idle_timeout {
            errors.push(format!(
                "{prefix}.closed_timeout ({}) must not exceed {prefix}.idle_timeout ({})",
                humantime_serde::re::humantime::format_duration(self.closed_timeout),
                humantime_serde::re::humantime::format_duration(self.idle_timeout)
            ));
        }
        errors
    }
}

/// The flow state of one packet, this packet included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowInfo {
    /// Time since the flow's first packet, ns.
    pub duration_ns: i64,
    /// Packets in the flow so far, both directions.
    pub packets: u64,
    /// Wire bytes in the flow so far, both directions.
    pub bytes: u64,
    /// Direction relative to the flow's initiator.
    pub direction: Direction,
}

/// Counters of the flow table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Flows currently tracked.
    pub active: usize,
    /// Flows started.
    pub created: u64,
    /// Flows removed because they were idle (or closed) past their timeout.
    pub evicted_idle: u64,
    /// Flows removed, still live, because the table was full (least recently seen first).
    pub evicted_full: u64,
    /// Bytes the table holds ([`FlowTable::bytes`]).
    pub bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    lo: [u8; 16],
    hi: [u8; 16],
    lo_port: u16,
    hi_port: u16,
    /// IP protocol, or 0x100 for ARP.
    proto: u16,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    first_ts: i64,
    last_ts: i64,
    packets: u64,
    bytes: u64,
    initiator_is_lo: bool,
    fin_lo: bool,
    fin_hi: bool,
    closed: bool,
}

fn addr16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The bounded flow table.
#[derive(Debug)]
pub struct FlowTable {
    map: HashMap<FlowKey, Entry>,
    max_flows: usize,
    idle_ns: i64,
    closed_ns: i64,
    next_sweep_ns: i64,
    scratch: Vec<i64>,
    stats: FlowStats,
    /// Highest capacity the table had: its buckets stay allocated (and `capacity` shrinks as removed flows
    /// leave tombstones until the table is rebuilt).
    table_capacity: usize,
}

impl FlowTable {
    /// An empty table.
    pub fn new(config: &FlowConfig) -> Self {
        let max_flows = config.capacity();
        let map = HashMap::with_capacity(max_flows.min(1 << 16));
        Self {
            table_capacity: map.capacity(),
            map,
            max_flows,
            idle_ns: duration_ns(config.idle_timeout).max(1),
            closed_ns: duration_ns(config.closed_timeout),
            next_sweep_ns: i64::MIN,
            scratch: Vec::new(),
            stats: FlowStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> FlowStats {
        FlowStats { active: self.map.len(), bytes: self.bytes(), ..self.stats }
    }

    /// Bytes the table holds: the hash table from its (highest) capacity, and the eviction scratch.
    pub fn bytes(&self) -> usize {
        table_bytes::<(FlowKey, Entry)>(self.table_capacity.max(self.map.capacity()))
            + vec_bytes::<i64>(self.scratch.capacity())
    }

    /// Accounts one packet of `wire_len` bytes at `ts_ns` and returns its flow state.
    pub fn observe(&mut self, p: &Parsed, ts_ns: i64, wire_len: u32) -> FlowInfo {
        let (a, b) = (addr16(p.source), addr16(p.destination));
        let sender_is_lo = (a, p.src_port) <= (b, p.dst_port);
        let key = if sender_is_lo {
            FlowKey { lo: a, hi: b, lo_port: p.src_port, hi_port: p.dst_port, proto: proto_key(p) }
        } else {
            FlowKey { lo: b, hi: a, lo_port: p.dst_port, hi_port: p.src_port, proto: proto_key(p) }
        };
        if ts_ns >= self.next_sweep_ns {
            if self.next_sweep_ns != i64::MIN {
                self.sweep_idle(ts_ns);
            }
            self.next_sweep_ns = ts_ns.saturating_add((self.idle_ns / 2).max(1_000_000_000));
        }
        let syn_only = p.ip_proto == 6 && p.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
        let fresh = Entry {
            first_ts: ts_ns,
            last_ts: ts_ns,
            packets: 0,
            bytes: 0,
            initiator_is_lo: sender_is_lo,
            fin_lo: false,
            fin_hi: false,
            closed: false,
        };
        let (idle_ns, closed_ns) = (self.idle_ns, self.closed_ns);
        let entry = match self.map.get_mut(&key) {
            Some(e) => {
                let timeout = if e.closed { closed_ns } else { idle_ns };
                if ts_ns.saturating_sub(e.last_ts) > timeout {
                    self.stats.evicted_idle += 1;
                    self.stats.created += 1;
                    *e = fresh;
                } else if e.closed && syn_only {
                    self.stats.created += 1;
                    *e = fresh;
                }
                e
            }
            None => {
                if self.map.len() >= self.max_flows {
                    self.make_room(ts_ns);
                } else if self.map.len() >= self.map.capacity() && self.table_capacity >= self.max_flows {
                    // Removed flows' tombstones used up the room of a full-size table: rebuilt at its size, it
                    // does not grow (the insertion would double it).
                    self.rebuild();
                }
                self.stats.created += 1;
                self.map.entry(key).or_insert(fresh)
            }
        };
        entry.packets = entry.packets.saturating_add(1);
        entry.bytes = entry.bytes.saturating_add(u64::from(wire_len));
        entry.last_ts = entry.last_ts.max(ts_ns);
        if p.ip_proto == 6 {
            if p.tcp_flags & tcp_flags::RST != 0 {
                entry.closed = true;
            }
            if p.tcp_flags & tcp_flags::FIN != 0 {
                if sender_is_lo {
                    entry.fin_lo = true;
                } else {
                    entry.fin_hi = true;
                }
                entry.closed |= entry.fin_lo && entry.fin_hi;
            }
        }
        let info = FlowInfo {
            duration_ns: ts_ns.saturating_sub(entry.first_ts).max(0),
            packets: entry.packets,
            bytes: entry.bytes,
            direction: if sender_is_lo == entry.initiator_is_lo { Direction::Forward } else { Direction::Reverse },
        };
        self.table_capacity = self.table_capacity.max(self.map.capacity());
        info
    }

    /// Removes every flow idle (or closed) past its timeout at `now_ns`.
    pub fn sweep_idle(&mut self, now_ns: i64) {
        let (idle_ns, closed_ns) = (self.idle_ns, self.closed_ns);
        let before = self.map.len();
        self.map.retain(|_, e| now_ns.saturating_sub(e.last_ts) <= if e.closed { closed_ns } else { idle_ns });
        self.stats.evicted_idle += (before - self.map.len()) as u64;
    }

    /// The table is full: drop idle flows, then the least recently seen ones down to 7/8 of `max_flows`.
    fn make_room(&mut self, now_ns: i64) {
        self.sweep_idle(now_ns);
        let target = self.max_flows - self.max_flows / 8;
        if self.map.len() <= target {
            return;
        }
        let excess = self.map.len() - target;
        self.scratch.clear();
        // Exactly the flows' count: an amortised growth could double the scratch past what the budget counts.
        self.scratch.reserve_exact(self.map.len());
        self.scratch.extend(self.map.values().map(|e| e.last_ts));
        let (_, cutoff, _) = self.scratch.select_nth_unstable(excess - 1);
        let cutoff = *cutoff;
        let before = self.map.len();
        self.map.retain(|_, e| e.last_ts > cutoff);
        self.stats.evicted_full += (before - self.map.len()) as u64;
        self.rebuild();
    }

    /// Moves the flows into a fresh table of `max_flows`, free of the removed flows' tombstones: without it the
    /// next insertions would find no room and double the table. The old table lives until the new one is
    /// filled, so the budget counts the table twice ([`flows_bytes`]).
    fn rebuild(&mut self) {
        let mut fresh = HashMap::with_capacity(self.max_flows);
        fresh.extend(self.map.drain());
        self.map = fresh;
        self.table_capacity = self.table_capacity.max(self.map.capacity());
    }
}

fn proto_key(p: &Parsed) -> u16 {
    if p.network == netanom_schemas::Network::Arp { 0x100 } else { u16::from(p.ip_proto) }
}

pub(crate) fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netanom_schemas::Network;

    const S: i64 = 1_000_000_000;

    fn pkt(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Parsed {
        Parsed {
            source: src.parse().unwrap(),
            destination: dst.parse().unwrap(),
            network: Network::Ipv4,
            src_port: sport,
            dst_port: dport,
            ip_proto: 6,
            payload_len: 0,
            tcp_flags: flags,
            ttl: 64,
            vlan: None,
            icmp_type: None,
            icmp_code: None,
            payload_entropy: None,
        }
    }

    #[test]
    fn direction_duration_counts_both_directions() {
        let mut t = FlowTable::new(&FlowConfig::default());
        let syn = pkt("10.0.0.9", 5000, "10.0.0.1", 80, tcp_flags::SYN);
        let synack = pkt("10.0.0.1", 80, "10.0.0.9", 5000, tcp_flags::SYN | tcp_flags::ACK);
        let ack = pkt("10.0.0.9", 5000, "10.0.0.1", 80, tcp_flags::ACK);
        let a = t.observe(&syn, 10 * S, 60);
        assert_eq!(a, FlowInfo { duration_ns: 0, packets: 1, bytes: 60, direction: Direction::Forward });
        let b = t.observe(&synack, 10 * S + 500, 70);
        assert_eq!(b, FlowInfo { duration_ns: 500, packets: 2, bytes: 130, direction: Direction::Reverse });
        let c = t.observe(&ack, 11 * S, 50);
        assert_eq!(c, FlowInfo { duration_ns: S, packets: 3, bytes: 180, direction: Direction::Forward });
        // Initiator on the "high" side of the canonical order: direction still follows the first sender.
        let d = t.observe(&synack.clone(), 12 * S, 1);
        assert_eq!(d.direction, Direction::Reverse);
        let other = t.observe(&pkt("10.0.0.9", 5001, "10.0.0.1", 80, tcp_flags::SYN), 12 * S, 1);
        assert_eq!((other.packets, other.direction), (1, Direction::Forward));
        assert_eq!(t.stats().active, 2);
        assert_eq!(t.stats().created, 2);
    }

    #[test]
    fn idle_flow_restarts_with_new_initiator() {
        let cfg = FlowConfig { idle_timeout: Duration::from_secs(10), ..FlowConfig::default() };
        let mut t = FlowTable::new(&cfg);
        let fwd = pkt("1.1.1.1", 1, "2.2.2.2", 2, 0);
        let rev = pkt("2.2.2.2", 2, "1.1.1.1", 1, 0);
        t.observe(&fwd, 0, 1);
        assert_eq!(t.observe(&rev, 10 * S, 1).packets, 2);
        let r = t.observe(&rev, 20 * S + 1, 1);
        assert_eq!((r.packets, r.duration_ns, r.direction), (1, 0, Direction::Forward));
        assert_eq!(t.stats().evicted_idle, 1);
    }

    #[test]
    fn rst_and_double_fin_close_and_new_syn_restarts() {
        let mut t = FlowTable::new(&FlowConfig::default());
        let c = pkt("1.1.1.1", 1000, "2.2.2.2", 22, tcp_flags::SYN);
        t.observe(&c, 0, 1);
        t.observe(&pkt("1.1.1.1", 1000, "2.2.2.2", 22, tcp_flags::FIN | tcp_flags::ACK), S, 1);
        // Half-closed: a SYN does not restart yet.
        assert_eq!(t.observe(&c, 2 * S, 1).packets, 3);
        t.observe(&pkt("2.2.2.2", 22, "1.1.1.1", 1000, tcp_flags::FIN | tcp_flags::ACK), 3 * S, 1);
        // The last ACK still belongs to the closed flow ...
        let last = t.observe(&pkt("1.1.1.1", 1000, "2.2.2.2", 22, tcp_flags::ACK), 3 * S, 1);
        assert_eq!(last.packets, 5);
        // ... a new SYN starts a new one.
        assert_eq!(t.observe(&c, 4 * S, 1).packets, 1);
        t.observe(&pkt("2.2.2.2", 22, "1.1.1.1", 1000, tcp_flags::RST), 4 * S, 1);
        // Closed flows end after closed_timeout even without a SYN.
        let late = t.observe(&pkt("2.2.2.2", 22, "1.1.1.1", 1000, tcp_flags::ACK), 10 * S, 1);
        assert_eq!((late.packets, late.direction), (1, Direction::Forward));
    }

    #[test]
    fn table_stays_bounded_and_evicts_least_recently_seen() {
        let cfg = FlowConfig { max_flows: Some(64), ..FlowConfig::default() };
        let mut t = FlowTable::new(&cfg);
        let keep = pkt("9.9.9.9", 1, "8.8.8.8", 2, 0);
        for i in 0..10_000u32 {
            let ts = i64::from(i) * 1000;
            let p = pkt(&format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255), 1, "1.1.1.1", 80, 0);
            t.observe(&p, ts, 1);
            if i % 4 == 0 {
                t.observe(&keep, ts, 1);
            }
            assert!(t.stats().active <= 64);
        }
        // The flow refreshed all along survived every eviction round.
        assert_eq!(t.observe(&keep, 10_000_000, 1).packets, 2501);
        let s = t.stats();
        assert!(s.evicted_full > 9_000, "{s:?}");
        assert_eq!(s.created, 10_001);
        assert_eq!(s.created, s.active as u64 + s.evicted_full + s.evicted_idle);
    }

    #[test]
    fn periodic_sweep_removes_idle_flows() {
        let cfg = FlowConfig {
            idle_timeout: Duration::from_secs(2),
            closed_timeout: Duration::from_secs(1),
            ..FlowConfig::default()
        };
        let mut t = FlowTable::new(&cfg);
        for port in 0..100 {
            t.observe(&pkt("1.1.1.1", port, "2.2.2.2", 80, 0), 0, 1);
        }
        assert_eq!(t.stats().active, 100);
        t.observe(&pkt("3.3.3.3", 1, "4.4.4.4", 80, 0), 5 * S, 1);
        assert_eq!(t.stats().active, 1);
        assert_eq!(t.stats().evicted_idle, 100);
    }

    #[test]
    fn validate_names_keys() {
        let cfg = FlowConfig { max_flows: Some(1), idle_timeout: Duration::ZERO, ..FlowConfig::default() };
        let errs = cfg.validate("producer.flow");
        assert!(errs.iter().any(|e| e.contains("producer.flow.max_flows")));
        assert!(errs.iter().any(|e| e.contains("producer.flow.idle_timeout")));
        assert!(errs.iter().any(|e| e.contains("producer.flow.closed_timeout")));
        assert!(FlowConfig::default().validate("p").is_empty());
    }

    #[test]
    fn the_budget_sizes_the_table_and_bounds_an_explicit_max_flows() {
        let default = FlowConfig::default();
        assert_eq!(default.capacity(), 458_752, "128 MiB: 524,288 buckets at most 7/8 full");
        assert!(flows_bytes(default.capacity()) <= 128 << 20 && flows_bytes(default.capacity() + 1) > 128 << 20);
        let small = FlowConfig { memory_budget_mib: 1, ..FlowConfig::default() };
        assert_eq!(small.capacity(), flows_for(1 << 20));
        let over = FlowConfig { memory_budget_mib: 1, max_flows: Some(100_000), ..FlowConfig::default() };
        let errs = over.validate("producer.flow");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with(
                "producer.flow.max_flows (100000) needs 22 MiB, more than producer.flow.memory_budget_mib (1 MiB)"
            ),
            "{errs:?}"
        );
        let zero = FlowConfig { memory_budget_mib: 0, ..FlowConfig::default() };
        assert_eq!(zero.validate("p"), ["p.memory_budget_mib must be 1 to 1048576, got 0"]);
        // The table never holds more than its budget, whatever arrives.
        let mut t = FlowTable::new(&small);
        for i in 0..200_000u32 {
            let p = pkt(&format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255), 1, "1.1.1.1", 80, 0);
            t.observe(&p, i64::from(i), 1);
            assert!(t.bytes() <= 1 << 20);
        }
        assert!(t.stats().evicted_full > 190_000);
    }
}
