//! The scoring API's memory of the sources capture clients report, one packet at a time: each packet is given
//! its flow state by the producer's flow table, then run through the detector's own [`Engine`] and per-host
//! state ([`crate::state`]) as a batch of its source, and the source's recent packets are scored by the
//! isolation model in force. So a packet is judged in the context of its source's earlier packets, by the same
//! rules the detector applies to Kafka input.
//!
//! The engine runs every kind of `[detector.*]` that judges a source from its own packets (rate, fanout,
//! beacon, probe, brute_force, dns_tunnel, icmp_tunnel, flood, exfiltration, as configured); the isolation
//! forest is the model in force, given to [`Sources::observe`]; the destination-side victim rule and the
//! host-profile and supervised models are not run here.
//!
//! Bounded and expiring: at most `max_sources` sources are remembered (the least recently heard eighth is
//! forgotten when a new one does not fit, counted in [`Sources::evicted`]); a source not heard from for `idle`
//! (wall-clock time) is forgotten ([`Sources::expired`]). Each source has a packets "partition" of its own in the
//! engine, so its packet clock is its own: clients replaying captures of different times do not disturb each
//! other, and a source whose packet time jumps beyond the skew rule (`[detector.time]`) starts a fresh context.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use netanom_producer::flow::{FlowConfig, FlowTable};
use netanom_producer::parse::Parsed;
use netanom_schemas::{AnomalyKind, PacketBatch, PacketFeatures};

use crate::config::DetectorConfig;
use crate::engine::Engine;
use crate::features::{FeatureScratch, own_features};
use crate::forest::{TrainedForest, isolation_reason};
use crate::models::Models;
use crate::request::CapturedPacket;

/// Packet time of a source's recent packets that the isolation model scores (a producer batch's span).
pub const RECENT_SPAN: Duration = Duration::from_secs(1);
/// Most recent packets of a source kept for the isolation model.
pub const RECENT_PACKETS: usize = 128;

/// What was found about one source: the latest finding of one kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The kind that fired.
    pub kind: AnomalyKind,
    /// Its sentence.
    pub reason: String,
    /// Packet time it fired at, ns.
    pub at_ns: i64,
}

/// The isolation model's view of a source's recent packets.
#[derive(Debug, Clone, PartialEq)]
pub struct Isolation {
    /// Isolation score of the recent packets, 0..1.
    pub score: f64,
    /// The model's threshold.
    pub threshold: f64,
    /// The model's version.
    pub model_version: String,
    /// Recent packets scored.
    pub packets: usize,
}

/// A source's context after one packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// The source.
    pub source: IpAddr,
    /// Packets of the source in its context (since it was last forgotten), this one included.
    pub packets: u64,
    /// The context holds enough packets to be judged (`min_packets`), or a kind fired.
    pub judged: bool,
    /// The latest finding of each kind that fired for the source while remembered, in kind order.
    pub findings: Vec<Finding>,
    /// The isolation score of its recent packets, when a model is in force and they are at least `min_packets`.
    pub isolation: Option<Isolation>,
    /// Its packet time jumped outside the skew rule: its context started afresh with this packet.
    pub restarted: bool,
}

/// One remembered source.
#[derive(Debug)]
struct Context {
    /// Its packets partition in the engine.
    partition: i32,
    /// When it was last heard from.
    heard: Instant,
    packets: u64,
    recent: VecDeque<PacketFeatures>,
    findings: BTreeMap<AnomalyKind, Finding>,
}

/// Every remembered source, the engine holding their per-host state, and the flow table.
#[derive(Debug)]
pub struct Sources {
    engine: Engine,
    flows: FlowTable,
    contexts: HashMap<IpAddr, Context>,
    free_partitions: Vec<i32>,
    /// The partition a new source gets when none is free (at most `max_sources` are ever made).
    next_partition: i32,
    max_sources: usize,
    idle: Duration,
    min_packets: usize,
    last_sweep: Option<Instant>,
    evicted: u64,
    expired: u64,
    scratch: FeatureScratch,
}

impl Sources {
    /// An empty memory of at most `max_sources` sources, forgetting those idle for `idle`, applying the rules
    /// of `config`; a context is judged once it holds `config.forest.min_packets` packets.
    pub fn new(config: &DetectorConfig, max_sources: usize, idle: Duration) -> Self {
        let max_sources = max_sources.max(1);
        let mut rules = config.clone();
        rules.forest.enabled = false;
        rules.victim.enabled = false;
        rules.profile.enabled = false;
        rules.state.max_hosts = Some(max_sources);
        Self {
            engine: Engine::new(&rules, Models::default()),
            flows: FlowTable::new(&FlowConfig {
                max_flows: Some(max_sources.saturating_mul(64)),
                ..FlowConfig::default()
            }),
            contexts: HashMap::new(),
            free_partitions: Vec::new(),
            next_partition: 0,
            max_sources,
            idle,
            min_packets: config.forest.min_packets.max(1),
            last_sweep: None,
            evicted: 0,
            expired: 0,
            scratch: FeatureScratch::default(),
        }
    }

    /// Sources remembered now.
    pub fn len(&self) -> usize {
        self.contexts.len()
    }

    /// True when no source is remembered.
    pub fn is_empty(&self) -> bool {
        self.contexts.is_empty()
    }

    /// Sources forgotten so far to make room for new ones.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Sources forgotten so far because they were idle.
    pub fn expired(&self) -> u64 {
        self.expired
    }

    /// Adds one packet that arrived at `now` (`arrival_ns` on the Unix clock, its time unless it carries its
    /// own) to its source's context and judges the context, with the isolation `model` when one is in force.
    pub fn observe(
        &mut self,
        packet: &CapturedPacket,
        now: Instant,
        arrival_ns: i64,
        model: Option<&TrainedForest>,
    ) -> Judgement {
        self.sweep(now);
        let source = packet.source;
        let ts_ns = packet.ts_ns.unwrap_or(arrival_ns);
        let parsed = Parsed {
            source,
            destination: packet.destination,
            network: packet.network(),
            src_port: packet.src_port,
            dst_port: packet.dst_port,
            ip_proto: packet.ip_proto,
            payload_len: packet.payload_len,
            tcp_flags: packet.tcp_flags,
            ttl: packet.ttl,
            vlan: None,
            icmp_type: packet.icmp_type,
            icmp_code: packet.icmp_code,
            payload_entropy: None,
        };
        let flow = self.flows.observe(&parsed, ts_ns, packet.wire_len);
        let features = PacketFeatures {
            ts_ns,
            network: parsed.network,
            destination: parsed.destination,
            src_port: parsed.src_port,
            dst_port: parsed.dst_port,
            ip_proto: parsed.ip_proto,
            wire_len: packet.wire_len,
            cap_len: packet.wire_len,
            payload_len: parsed.payload_len,
            tcp_flags: parsed.tcp_flags,
            ttl: parsed.ttl,
            vlan: None,
            icmp_type: parsed.icmp_type,
            icmp_code: parsed.icmp_code,
            flow_duration_ns: flow.duration_ns,
            flow_packets: flow.packets,
            flow_bytes: flow.bytes,
            direction: flow.direction,
            payload_entropy: None,
        };
        let mut c = self.take_context(source, now);
        let batch = PacketBatch { source, sequence: c.packets, packets: vec![features.clone()] };
        let mut found = Vec::new();
        let mut restarted = false;
        if self.engine.process_batch(&batch, c.partition, &mut found).is_some() {
            // Outside the skew of the source's own clock: its context starts afresh from this packet.
            self.engine.revoke(&[c.partition], &[]);
            c.packets = 0;
            c.recent.clear();
            c.findings.clear();
            restarted = true;
            found.clear();
            let _ = self.engine.process_batch(&batch, c.partition, &mut found);
        }
        c.heard = now;
        c.packets += 1;
        c.recent.push_back(features);
        let span_ns = i64::try_from(RECENT_SPAN.as_nanos()).unwrap_or(i64::MAX);
        while c.recent.len() > RECENT_PACKETS
            || c.recent.front().is_some_and(|p| ts_ns.saturating_sub(p.ts_ns) > span_ns)
        {
            c.recent.pop_front();
        }
        for a in found {
            let at_ns = a.window_end_ns;
            c.findings.insert(a.kind, Finding { kind: a.kind, reason: a.reason, at_ns });
        }
        // The source's own packets, as the detector judges a host: replies it sent in flows others opened are left out.
        let own = match model {
            Some(m) if c.recent.len() >= self.min_packets => {
                Some((m, own_features(c.recent.make_contiguous(), &mut self.scratch)))
            }
            _ => None,
        };
        let isolation = own.filter(|(_, (_, n))| *n >= self.min_packets).map(|(m, (raw, n))| {
            let (score, threshold) = (m.score(&raw), m.threshold());
            if score > threshold {
                let reason = isolation_reason(&source.to_string(), n, score, threshold, &m.explain(&raw, 4));
                c.findings
                    .insert(AnomalyKind::Isolation, Finding { kind: AnomalyKind::Isolation, reason, at_ns: ts_ns });
            }
            Isolation { score, threshold, model_version: m.version().to_string(), packets: n }
        });
        let findings: Vec<Finding> = c.findings.values().cloned().collect();
        let judgement = Judgement {
            source,
            packets: c.packets,
            judged: !findings.is_empty() || c.packets >= self.min_packets as u64,
            findings,
            isolation,
            restarted,
        };
        self.contexts.insert(source, c);
        judgement
    }

    /// The context of `source`, taken out of the map (put it back when done); made, and room made for it, when
    /// the source is new.
    fn take_context(&mut self, source: IpAddr, now: Instant) -> Context {
        if let Some(c) = self.contexts.remove(&source) {
            return c;
        }
        if self.contexts.len() >= self.max_sources {
            self.forget_idle(now);
        }
        if self.contexts.len() >= self.max_sources {
            self.evict_oldest((self.max_sources / 8).max(1));
        }
        let partition = self.free_partitions.pop().unwrap_or_else(|| {
            self.next_partition += 1;
            self.next_partition - 1
        });
        Context { partition, heard: now, packets: 0, recent: VecDeque::new(), findings: BTreeMap::new() }
    }

    /// Forgets idle sources when a quarter of the idle time passed since the last sweep.
    fn sweep(&mut self, now: Instant) {
        let due = self.last_sweep.is_none_or(|t| now.saturating_duration_since(t) >= self.idle / 4);
        if due {
            self.forget_idle(now);
        }
    }

    fn forget_idle(&mut self, now: Instant) {
        self.last_sweep = Some(now);
        let idle = self.idle;
        let gone: Vec<IpAddr> = self
            .contexts
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.heard) > idle)
            .map(|(s, _)| *s)
            .collect();
        self.expired += gone.len() as u64;
        self.forget(&gone);
    }

    /// Forgets the `n` least recently heard sources.
    fn evict_oldest(&mut self, n: usize) {
        let mut by_age: Vec<(Instant, IpAddr)> = self.contexts.iter().map(|(s, c)| (c.heard, *s)).collect();
        let n = n.min(by_age.len());
        if n == 0 {
            return;
        }
        by_age.select_nth_unstable(n - 1);
        let gone: Vec<IpAddr> = by_age[..n].iter().map(|(_, s)| *s).collect();
        self.evicted += gone.len() as u64;
        self.forget(&gone);
    }

    fn forget(&mut self, sources: &[IpAddr]) {
        let partitions: Vec<i32> =
            sources.iter().filter_map(|s| self.contexts.remove(s)).map(|c| c.partition).collect();
        if !partitions.is_empty() {
            self.engine.revoke(&partitions, &[]);
            self.free_partitions.extend(partitions);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::FeatureVector;
    use crate::fixtures::benign_batch;
    use crate::forest::{TrainOptions, train};

    const T0: i64 = 1_700_000_000_000_000_000;
    const MS: i64 = 1_000_000;

    fn syn(source: [u8; 4], port: u16, ts_ns: i64) -> CapturedPacket {
        CapturedPacket {
            source: IpAddr::from(source),
            destination: IpAddr::from([10, 0, 1, 3]),
            wire_len: 60,
            ip_proto: 6,
            src_port: 40_000,
            dst_port: port,
            tcp_flags: 2,
            ttl: 64,
            payload_len: 0,
            icmp_type: None,
            icmp_code: None,
            ts_ns: Some(ts_ns),
        }
    }

    /// One HTTPS exchange's packet: `i`-th of a flow from `source`'s port 51000, 20 ms apart.
    fn download(source: [u8; 4], i: i64) -> CapturedPacket {
        CapturedPacket {
            wire_len: 1514,
            src_port: 51_000,
            dst_port: 443,
            tcp_flags: if i == 0 { 2 } else { 16 },
            payload_len: if i == 0 { 0 } else { 1448 },
            ..syn(source, 443, T0 + i * 20 * MS)
        }
    }

    fn sources(max: usize) -> Sources {
        Sources::new(&DetectorConfig::default(), max, Duration::from_secs(60))
    }

    #[test]
    fn a_scanners_packets_turn_anomalous_and_a_downloads_do_not() {
        let mut s = sources(16);
        let now = Instant::now();
        let first = s.observe(&syn([10, 9, 9, 9], 1, T0), now, 0, None);
        assert!(!first.judged && first.findings.is_empty() && first.packets == 1, "{first:?}");
        let mut verdicts = Vec::new();
        for port in 2..=200u16 {
            verdicts.push(s.observe(&syn([10, 9, 9, 9], port, T0 + i64::from(port) * 5 * MS), now, 0, None));
        }
        let fired = verdicts.iter().position(|j| !j.findings.is_empty()).expect("the scan is found");
        assert!(verdicts[fired..].iter().all(|j| j.judged && !j.findings.is_empty()), "stays anomalous");
        let kinds: Vec<AnomalyKind> = verdicts.last().unwrap().findings.iter().map(|f| f.kind).collect();
        assert!(kinds.contains(&AnomalyKind::Fanout), "{kinds:?}");
        let min_packets = DetectorConfig::default().forest.min_packets as i64;
        for i in 0..200 {
            let j = s.observe(&download([10, 0, 0, 7], i), now, 0, None);
            assert!(j.findings.is_empty(), "{j:?}");
            assert_eq!(j.judged, i + 1 >= min_packets, "judged from forest.min_packets");
        }
        assert_eq!((s.len(), s.evicted(), s.expired()), (2, 0, 0));
    }

    #[test]
    fn the_model_in_force_scores_the_recent_packets() {
        let mut scratch = crate::features::FeatureScratch::default();
        let data: Vec<FeatureVector> = (0..2_000u64)
            .map(benign_batch)
            .filter(|b| b.packets.len() >= 8)
            .take(512)
            .map(|b| crate::features::batch_features(&b.packets, &mut scratch))
            .collect();
        let model = train(&data, &TrainOptions::from(&DetectorConfig::default().forest)).unwrap();
        let mut s = sources(16);
        let now = Instant::now();
        let mut last = None;
        for port in 1..=100u16 {
            last = Some(s.observe(&syn([10, 9, 9, 9], port, T0 + i64::from(port) * MS), now, 0, Some(&model)));
            if port < 8 {
                assert!(last.as_ref().unwrap().isolation.is_none(), "fewer than min_packets");
            }
        }
        let j = last.unwrap();
        let i = j.isolation.as_ref().expect("scored");
        assert_eq!((i.packets, i.model_version.as_str()), (100, model.version()));
        assert!(i.score > i.threshold, "{i:?}");
        assert!(j.findings.iter().any(|f| f.kind == AnomalyKind::Isolation), "{j:?}");
    }

    #[test]
    fn sources_are_bounded_and_forgotten_when_idle() {
        let mut s = sources(8);
        let now = Instant::now();
        for i in 0..20u8 {
            s.observe(&syn([10, 1, 0, i], 80, T0), now + Duration::from_millis(u64::from(i)), 0, None);
            assert!(s.len() <= 8);
        }
        assert_eq!(s.evicted() as usize + s.len(), 20, "each forgotten source is counted");
        assert_eq!(s.expired(), 0);
        // Over a minute later, every one of them is idle.
        s.observe(&syn([10, 2, 0, 1], 80, T0), now + Duration::from_secs(61), 0, None);
        assert_eq!((s.len(), s.expired() as usize), (1, 20 - s.evicted() as usize));
        // A forgotten source starts afresh.
        let j = s.observe(&syn([10, 1, 0, 19], 81, T0 + MS), now + Duration::from_secs(61), 0, None);
        assert_eq!(j.packets, 1);
    }

    #[test]
    fn a_jump_in_packet_time_restarts_the_context_and_arrival_time_stands_in() {
        let mut s = sources(4);
        let now = Instant::now();
        for port in 1..=3 {
            assert!(!s.observe(&syn([10, 3, 3, 3], port, T0), now, 0, None).restarted);
        }
        let j = s.observe(&syn([10, 3, 3, 3], 4, T0 + 3_600 * 1_000 * MS), now, 0, None);
        assert!(j.restarted && j.packets == 1, "{j:?}");
        // Without its own time, a packet is placed at its arrival.
        let p = CapturedPacket { ts_ns: None, ..syn([10, 4, 4, 4], 80, 0) };
        let j = s.observe(&p, now, T0, None);
        assert_eq!((j.packets, j.restarted), (1, false));
        let j = s.observe(&p, now, T0 + 10 * MS, None);
        assert_eq!((j.packets, j.restarted), (2, false));
    }
}
