//! The bounded flow table: per packet, the state of its bidirectional flow (canonical 5-tuple) so far —
//! duration, packets, bytes and direction. It owns flow lifetime (idle timeout in packet time, TCP FIN/RST
//! close) and the memory bound (`max_flows`, least-recently-seen eviction done in amortised sweeps, never O(n)
//! per packet). It knows nothing of capture, batching or Kafka.

use foldhash::{HashMap, HashMapExt};
use std::net::IpAddr;
use std::time::Duration;

use netanom_schemas::Direction;
use netanom_schemas::records::tcp_flags;

use crate::parse::Parsed;

/// Flow table settings (`[producer.flow]`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowConfig {
    /// Maximum number of flows tracked at once; when full, the least recently seen flows are evicted (about
    /// 1/8 of the table at a time). Default 262144.
    pub max_flows: usize,
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
        Self { max_flows: 262_144, idle_timeout: Duration::from_secs(120), closed_timeout: Duration::from_secs(5) }
    }
}

impl FlowConfig {
    /// Checks the settings; each problem names its key under `prefix` (e.g. `producer.flow`).
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut errors = Vec::new();
        if self.max_flows < 16 {
            errors.push(format!("{prefix}.max_flows must be >= 16, got {}", self.max_flows));
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
}

impl FlowTable {
    /// An empty table.
    pub fn new(config: &FlowConfig) -> Self {
        let max_flows = config.max_flows.max(16);
        Self {
            map: HashMap::with_capacity(max_flows.min(1 << 16)),
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
        FlowStats { active: self.map.len(), ..self.stats }
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
        FlowInfo {
            duration_ns: ts_ns.saturating_sub(entry.first_ts).max(0),
            packets: entry.packets,
            bytes: entry.bytes,
            direction: if sender_is_lo == entry.initiator_is_lo { Direction::Forward } else { Direction::Reverse },
        }
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
        self.scratch.extend(self.map.values().map(|e| e.last_ts));
        let (_, cutoff, _) = self.scratch.select_nth_unstable(excess - 1);
        let cutoff = *cutoff;
        let before = self.map.len();
        self.map.retain(|_, e| e.last_ts > cutoff);
        self.stats.evicted_full += (before - self.map.len()) as u64;
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
        let cfg = FlowConfig { max_flows: 64, ..FlowConfig::default() };
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
        let cfg = FlowConfig { max_flows: 1, idle_timeout: Duration::ZERO, ..FlowConfig::default() };
        let errs = cfg.validate("producer.flow");
        assert!(errs.iter().any(|e| e.contains("producer.flow.max_flows")));
        assert!(errs.iter().any(|e| e.contains("producer.flow.idle_timeout")));
        assert!(errs.iter().any(|e| e.contains("producer.flow.closed_timeout")));
        assert!(FlowConfig::default().validate("p").is_empty());
    }
}
