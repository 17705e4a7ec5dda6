//! The synchronous detection core: takes decoded records (packet batches and destination statistics) and
//! returns anomalies and destination-statistics deltas. Owns the host map and every detector; knows nothing
//! about Kafka (the `consume` loop behind [`crate::run`] feeds it in chunks on a blocking thread) so benchmarks and tests
//! drive it directly.

use std::collections::BTreeMap;

use netanom_schemas::{Anomaly, AnomalyKind, DestinationStats, PacketBatch};

use crate::config::{DetectorConfig, ns};
use crate::fanout::{FanoutRule, fanout_anomaly};
use crate::forest::{FeatureScratch, IsolationDetector, TrainedForest, batch_features, isolation_anomaly};
use crate::state::HostMap;
use crate::victim::{DestinationSide, SourceSide};
use crate::window::{RateRule, rate_anomaly};

/// Counters of the engine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    /// Packet batches processed.
    pub batches: u64,
    /// Packets processed.
    pub packets: u64,
    /// Destination statistics records applied.
    pub destination_stats: u64,
    /// Anomalies emitted, by kind.
    pub anomalies: BTreeMap<AnomalyKind, u64>,
}

/// Every detector and its state.
#[derive(Debug)]
pub struct Engine {
    hosts: HostMap,
    rate: Option<RateRule>,
    fanout: Option<FanoutRule>,
    isolation: Option<IsolationDetector>,
    isolation_cooldown_ns: i64,
    isolation_min_packets: usize,
    source_side: Option<SourceSide>,
    destination_side: Option<DestinationSide>,
    scratch: FeatureScratch,
    stats: EngineStats,
}

impl Engine {
    /// An engine for `config`; `model` (a loaded forest) replaces the warm-up when given.
    pub fn new(config: &DetectorConfig, model: Option<TrainedForest>) -> Self {
        Self {
            hosts: HostMap::new(&config.state),
            rate: config.rate.enabled.then(|| RateRule::from(&config.rate)),
            fanout: config.fanout.enabled.then(|| FanoutRule::from(&config.fanout)),
            isolation: config.forest.enabled.then(|| IsolationDetector::new(&config.forest, model)),
            isolation_cooldown_ns: ns(config.forest.cooldown),
            isolation_min_packets: config.forest.min_packets.max(1),
            source_side: config.victim.enabled.then(|| SourceSide::new(&config.victim)),
            destination_side: config.victim.enabled.then(|| DestinationSide::new(&config.victim)),
            scratch: FeatureScratch::default(),
            stats: EngineStats::default(),
        }
    }

    /// Processes one packet batch read from packets-topic partition `partition`, appending anomalies to `out`.
    pub fn process_batch(&mut self, batch: &PacketBatch, partition: i32, out: &mut Vec<Anomaly>) {
        let Some(last) = batch.packets.iter().map(|p| p.ts_ns).max() else {
            return;
        };
        let host = batch.source;
        self.stats.batches += 1;
        self.stats.packets += batch.packets.len() as u64;
        let before = out.len();
        let state = self.hosts.entry(host, partition, last);
        for p in &batch.packets {
            if p.opens_flow() {
                if let Some(rule) = &self.rate
                    && let Some(hit) = state.rate.observe(p.ts_ns, rule)
                {
                    out.push(rate_anomaly(host, rule, hit, p).build());
                }
                if let Some(rule) = &self.fanout
                    && let Some(hit) = state.fanout.observe(p, rule)
                {
                    out.push(fanout_anomaly(host, rule, hit, p).build());
                }
            }
            if let Some(side) = &mut self.source_side {
                side.observe(host, p);
            }
        }
        if let Some(iso) = &mut self.isolation
            && batch.packets.len() >= self.isolation_min_packets
        {
            let v = batch_features(&batch.packets, &mut self.scratch);
            if let Some(score) = iso.observe(&v)
                && let Some(model) = iso.model()
                && score > model.threshold()
                && state.last_isolation_ns.is_none_or(|t| last.saturating_sub(t) >= self.isolation_cooldown_ns)
            {
                state.last_isolation_ns = Some(last);
                out.push(isolation_anomaly(host, model, score, &v, batch).build());
            }
        }
        for a in &out[before..] {
            *self.stats.anomalies.entry(a.kind).or_default() += 1;
        }
    }

    /// Applies one destination-statistics delta read from destinations-topic partition `partition`.
    pub fn process_destination_stats(&mut self, d: &DestinationStats, partition: i32, out: &mut Vec<Anomaly>) {
        self.stats.destination_stats += 1;
        if let Some(side) = &mut self.destination_side
            && let Some(a) = side.apply(d, partition)
        {
            *self.stats.anomalies.entry(AnomalyKind::Victim).or_default() += 1;
            out.push(a.build());
        }
    }

    /// Destination-statistics deltas accumulated since the previous call (to be produced), and periodic
    /// idle-host eviction. Call after every chunk.
    pub fn end_chunk(&mut self) -> Vec<DestinationStats> {
        self.hosts.maybe_sweep();
        self.source_side.as_mut().map(SourceSide::drain).unwrap_or_default()
    }

    /// Drops the state that came from revoked partitions of the packets topic (hosts) and of the destinations
    /// topic (victim aggregates). Returns (hosts, destination windows) dropped.
    pub fn revoke(&mut self, packets_partitions: &[i32], destinations_partitions: &[i32]) -> (usize, usize) {
        let h = if packets_partitions.is_empty() { 0 } else { self.hosts.revoke_partitions(packets_partitions) };
        let d = match &mut self.destination_side {
            Some(side) if !destinations_partitions.is_empty() => side.revoke_partitions(destinations_partitions),
            _ => 0,
        };
        (h, d)
    }

    /// Counters so far.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Hosts tracked now.
    pub fn hosts_tracked(&self) -> usize {
        self.hosts.len()
    }

    /// Hosts evicted so far.
    pub fn hosts_evicted(&self) -> u64 {
        self.hosts.evictions()
    }

    /// The isolation model, once trained or loaded.
    pub fn model(&self) -> Option<&TrainedForest> {
        self.isolation.as_ref().and_then(IsolationDetector::model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{T0, benign_batch, scan_batch, spoofed_flood, syn_flood};
    use std::net::IpAddr;

    #[test]
    fn end_to_end_without_kafka() {
        let cfg = DetectorConfig::default();
        let mut e = Engine::new(&cfg, None);
        let mut out = vec![];
        // 512 benign batches (of >= 8 packets) train the forest, 2,000 more are scored.
        let mut i = 0;
        while e.model().is_none() {
            e.process_batch(&benign_batch(i), 0, &mut out);
            i += 1;
        }
        for j in i..i + 2_000 {
            e.process_batch(&benign_batch(j), 0, &mut out);
        }
        let rules: Vec<_> = out.iter().filter(|a| a.kind != AnomalyKind::Isolation).map(|a| &a.reason).collect();
        assert!(rules.is_empty(), "rules fired on benign traffic: {rules:?}");
        // The forest flags rare benign outliers (about 1 batch in 2,000 on these fixtures); allow 1 in 400.
        assert!(out.len() <= 5, "isolation flagged {} of 2,000 benign batches", out.len());
        let benign_flags = out.len();
        let flooder: IpAddr = "10.9.9.9".parse().unwrap();
        for b in syn_flood(flooder, "10.0.0.80".parse().unwrap(), T0 + 700_000_000_000, 3_000, 1_000) {
            e.process_batch(&b, 1, &mut out);
        }
        e.process_batch(&scan_batch(3), 2, &mut out);
        let victim: IpAddr = "10.0.0.5".parse().unwrap();
        let mut deltas = vec![];
        for b in spoofed_flood(victim, T0 + 800_000_000_000, 2_000, 3_000_000_000, 9) {
            e.process_batch(&b, 3, &mut out);
        }
        deltas.extend(e.end_chunk());
        for d in &deltas {
            e.process_destination_stats(d, 0, &mut out);
        }
        let named = |host: &str, kind| out.iter().any(|a| a.host == host && a.kind == kind);
        assert!(named("10.9.9.9", AnomalyKind::Rate));
        assert!(named("10.66.0.3", AnomalyKind::Fanout));
        assert!(named("10.66.0.3", AnomalyKind::Isolation));
        assert!(named("10.0.0.5", AnomalyKind::Victim));
        assert_eq!(out.iter().filter(|a| a.kind == AnomalyKind::Victim).count(), 1);
        assert_eq!(out.iter().filter(|a| a.host.starts_with("10.1.")).count(), benign_flags, "benign named again");
        // Spoofed sources each sent one packet: none of them is a source-side anomaly.
        assert!(!out.iter().any(|a| a.host.starts_with("100.")));
        let s = e.stats();
        assert_eq!(s.anomalies.values().sum::<u64>(), out.len() as u64);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn hostile_values_never_panic(
            ts in proptest::prelude::any::<i64>(),
            ts2 in proptest::prelude::any::<i64>(),
            window in proptest::prelude::any::<i64>(),
            count in proptest::prelude::any::<u64>(),
            flow_packets in proptest::prelude::any::<u64>(),
            wire_len in proptest::prelude::any::<u32>(),
            ttl in proptest::prelude::any::<u8>(),
        ) {
            let mut cfg = DetectorConfig::default();
            cfg.forest.warmup_samples = 256;
            cfg.forest.min_packets = 1;
            cfg.forest.trees = 2;
            cfg.victim.min_sources = 2;
            let mut e = Engine::new(&cfg, None);
            let mut out = vec![];
            for i in 0..300u32 {
                let mut b = benign_batch(u64::from(i));
                for (k, p) in b.packets.iter_mut().enumerate() {
                    p.ts_ns = if k % 2 == 0 { ts } else { ts2.wrapping_add(i64::from(i)) };
                    p.flow_packets = if k % 3 == 0 { 1 } else { flow_packets };
                    p.wire_len = wire_len;
                    p.ttl = ttl;
                    p.destination = IpAddr::from((i % 7).to_be_bytes());
                    p.dst_port = i as u16;
                }
                e.process_batch(&b, 0, &mut out);
            }
            let deltas = e.end_chunk();
            for mut d in deltas {
                d.window_ns = window;
                d.new_sources = count;
                d.packets = count;
                d.window_start_ns = ts;
                e.process_destination_stats(&d, 1, &mut out);
            }
            for a in &out {
                proptest::prop_assert!(a.score.is_finite() && a.threshold.is_finite());
            }
        }
    }
}
