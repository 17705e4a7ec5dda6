//! The synchronous detection core: takes decoded records (packet batches and destination statistics) and
//! returns anomalies and destination-statistics deltas. Owns the host map and every detector; knows nothing
//! about Kafka (the `consume` loop behind [`crate::run`] feeds it in chunks on a blocking thread) so benchmarks and tests
//! drive it directly.

use std::collections::BTreeMap;
use std::sync::Arc;

use netanom_schemas::{Anomaly, AnomalyKind, DestinationStats, PacketBatch};

use crate::anomaly::AnomalyParts;
use crate::beacon::{BeaconRule, beacon_anomaly};
use crate::config::DetectorConfig;
use crate::fanout::{FanoutRule, fanout_anomaly};
use crate::features::{FeatureScratch, batch_features};
use crate::flood::FloodRule;
use crate::forest::{IsolationDetector, Retrainer, TrainedForest, isolation_anomaly};
use crate::icmp_tunnel::IcmpTunnelRule;
use crate::misuse::MisuseRules;
use crate::models::Models;
use crate::profile::{ProfileDetector, ProfileModel};
use crate::rate::{RateRule, rate_anomaly};
use crate::state::HostMap;
use crate::supervised::{SupervisedDetector, supervised_anomaly};
use crate::time::{Admission, PartitionClocks, TimeRejection, ns};
use crate::victim::{DestinationSide, SourceSide};

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
    /// Destinations dropped from full per-host beacon tables.
    pub beacon_destinations_evicted: u64,
    /// Packet batches rejected by the packet-time skew rule (`[detector.time]`), not processed.
    pub time_rejected: u64,
}

/// Every detector and its state.
#[derive(Debug)]
pub struct Engine {
    hosts: HostMap,
    clocks: PartitionClocks,
    rate: Option<RateRule>,
    fanout: Option<FanoutRule>,
    beacon: Option<BeaconRule>,
    misuse: Option<MisuseRules>,
    icmp_tunnel: Option<IcmpTunnelRule>,
    flood: Option<FloodRule>,
    /// Scratch for the misuse rules' findings.
    misuse_out: Vec<AnomalyParts>,
    isolation: Option<IsolationDetector>,
    isolation_cooldown_ns: i64,
    isolation_min_packets: usize,
    profile: Option<ProfileDetector>,
    source_side: Option<SourceSide>,
    destination_side: Option<DestinationSide>,
    supervised: Option<SupervisedDetector>,
    scratch: FeatureScratch,
    stats: EngineStats,
}

impl Engine {
    /// An engine for `config`, starting from `models` (loaded by [`Models::load`]): a loaded forest or profile
    /// model replaces its detector's warm-up, a supervised detector is run when given.
    pub fn new(config: &DetectorConfig, models: Models) -> Self {
        let Models { forest: model, profiles: profile_model, supervised } = models;
        Self {
            hosts: HostMap::new(&config.state),
            clocks: PartitionClocks::new(&config.time),
            rate: config.rate.enabled.then(|| RateRule::from(&config.rate)),
            fanout: config.fanout.enabled.then(|| FanoutRule::from(&config.fanout)),
            beacon: config.beacon.enabled.then(|| BeaconRule::from(&config.beacon)),
            misuse: MisuseRules::new(&config.probe, &config.brute_force, &config.dns_tunnel),
            misuse_out: Vec::new(),
            icmp_tunnel: config.icmp_tunnel.enabled.then(|| IcmpTunnelRule::from(&config.icmp_tunnel)),
            flood: config.flood.enabled.then(|| FloodRule::from(&config.flood)),
            isolation: config.forest.enabled.then(|| {
                let retrain = Retrainer::new(&config.forest, config.state.max_hosts);
                IsolationDetector::new(&config.forest, model, retrain)
            }),
            isolation_cooldown_ns: ns(config.forest.cooldown),
            isolation_min_packets: config.forest.min_packets.max(1),
            profile: config.profile.enabled.then(|| ProfileDetector::new(&config.profile, profile_model)),
            source_side: config.victim.enabled.then(|| SourceSide::new(&config.victim)),
            destination_side: config.victim.enabled.then(|| DestinationSide::new(&config.victim)),
            supervised,
            scratch: FeatureScratch::default(),
            stats: EngineStats::default(),
        }
    }

    /// Processes one packet batch read from packets-topic partition `partition`, appending anomalies to `out`.
    /// A batch outside the packet-time skew of its partition (`[detector.time]`, see `crate::time`) is not
    /// processed and changes no state: the reason is returned, for the dead-letter topic.
    pub fn process_batch(
        &mut self,
        batch: &PacketBatch,
        partition: i32,
        out: &mut Vec<Anomaly>,
    ) -> Option<TimeRejection> {
        let (Some(first), Some(last)) =
            (batch.packets.iter().map(|p| p.ts_ns).min(), batch.packets.iter().map(|p| p.ts_ns).max())
        else {
            return None;
        };
        match self.clocks.admit(partition, first, last) {
            Admission::Rejected(r) => {
                self.stats.time_rejected += 1;
                return Some(r);
            }
            // Time went back for good (another capture replayed into the partition): its hosts start cold.
            Admission::Resynced { backwards: true } => {
                self.hosts.revoke_partitions(&[partition]);
            }
            Admission::Resynced { backwards: false } | Admission::Accepted => {}
        }
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
                // Connections to a login service are the brute-force rule's evidence, never a beacon.
                if let Some(rule) = &self.beacon
                    && !self.misuse.as_ref().is_some_and(|m| m.login_service(p.dst_port))
                    && let Some(hit) = state.beacon.observe(p, rule, &mut self.stats.beacon_destinations_evicted)
                {
                    out.push(beacon_anomaly(host, rule, &hit, p).build());
                }
            }
            if let Some(rules) = &self.misuse {
                state.misuse.observe(host, p, rules, &mut self.misuse_out);
                out.extend(self.misuse_out.drain(..).map(AnomalyParts::build));
            }
            if let Some(rule) = &self.icmp_tunnel
                && let Some(a) = state.echo.observe(host, p, rule)
            {
                out.push(a.build());
            }
            if let Some(rule) = &self.flood
                && let Some(a) = state.flood.observe(host, p, rule)
            {
                out.push(a.build());
            }
            if let Some(side) = &mut self.source_side {
                side.observe(host, p);
            }
        }
        if let Some(iso) = &mut self.isolation
            && batch.packets.len() >= self.isolation_min_packets
        {
            let v = batch_features(&batch.packets, &mut self.scratch);
            if let Some(score) = iso.observe(host, last, &v)
                && let Some(model) = iso.model()
                && score > model.threshold()
                && state.last_isolation_ns.is_none_or(|t| last.saturating_sub(t) >= self.isolation_cooldown_ns)
            {
                state.last_isolation_ns = Some(last);
                out.push(isolation_anomaly(host, model, score, &v, batch).build());
            }
        }
        if let Some(sup) = &self.supervised
            && batch.packets.len() >= sup.min_packets()
        {
            let v = batch_features(&batch.packets, &mut self.scratch);
            if let Some(p) = sup.detect(&v)
                && state.last_supervised_ns.is_none_or(|t| last.saturating_sub(t) >= sup.cooldown_ns())
            {
                state.last_supervised_ns = Some(last);
                out.push(supervised_anomaly(host, sup, p, &v, batch).build());
            }
        }
        if let Some(det) = &mut self.profile {
            det.observe_batch(host, &batch.packets, &mut state.profile, out);
            det.sweep(partition, self.hosts.clock_ns(partition), self.hosts.profiles_of(partition), out);
        }
        for a in &out[before..] {
            *self.stats.anomalies.entry(a.kind).or_default() += 1;
            if let Some(iso) = &mut self.isolation {
                iso.note_anomaly(a);
            }
        }
        None
    }

    /// Applies one destination-statistics delta read from destinations-topic partition `partition`.
    pub fn process_destination_stats(&mut self, d: &DestinationStats, partition: i32, out: &mut Vec<Anomaly>) {
        self.stats.destination_stats += 1;
        if let Some(side) = &mut self.destination_side
            && let Some(a) = side.apply(d, partition)
        {
            *self.stats.anomalies.entry(AnomalyKind::Victim).or_default() += 1;
            let a = a.build();
            if let Some(iso) = &mut self.isolation {
                iso.note_anomaly(&a);
            }
            out.push(a);
        }
    }

    /// Rebuilds state from one packet batch that the previous owner of its partition already processed (after a
    /// rebalance, see `detector.state.rebuild_records`): every detector's state is updated as by
    /// [`Engine::process_batch`], but its anomalies are discarded, its sources are only remembered by the
    /// destination side (no statistics delta) and the counters do not change.
    pub fn rebuild_batch(&mut self, batch: &PacketBatch, partition: i32) {
        let stats = self.stats.clone();
        if let Some(side) = &mut self.source_side {
            side.set_silent(true);
        }
        let _ = self.process_batch(batch, partition, &mut Vec::new());
        if let Some(side) = &mut self.source_side {
            side.set_silent(false);
        }
        self.stats = stats;
    }

    /// Rebuilds the victim aggregates from one destination-statistics delta that the previous owner of its
    /// partition already applied: sums and fired windows are restored, no anomaly is emitted.
    pub fn rebuild_destination_stats(&mut self, d: &DestinationStats, partition: i32) {
        if let Some(side) = &mut self.destination_side {
            let _ = side.apply(d, partition);
        }
    }

    /// Destination-statistics deltas to be produced when a report is due (every `victim.report_every` of
    /// packet time), and periodic idle-host eviction. Call after every chunk.
    pub fn end_chunk(&mut self) -> Vec<DestinationStats> {
        self.hosts.maybe_sweep();
        self.source_side.as_mut().map(|s| s.drain(false)).unwrap_or_default()
    }

    /// Every destination-statistics delta not yet reported, due or not: at the end of the input.
    pub fn flush_destination_stats(&mut self) -> Vec<DestinationStats> {
        self.source_side.as_mut().map(|s| s.drain(true)).unwrap_or_default()
    }

    /// Drops the state that came from revoked partitions of the packets topic (hosts) and of the destinations
    /// topic (victim aggregates). Returns (hosts, destination windows) dropped.
    pub fn revoke(&mut self, packets_partitions: &[i32], destinations_partitions: &[i32]) -> (usize, usize) {
        self.clocks.forget(packets_partitions);
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

    /// The isolation model in force, once trained or loaded.
    pub fn model(&self) -> Option<&TrainedForest> {
        self.isolation.as_ref().and_then(IsolationDetector::model)
    }

    /// Closes and scores every open host-profile window, appending the anomalies to `out`: call when the input
    /// ends (a drained capture, the end of a replay range), since a window otherwise closes only when later
    /// packets show it is over.
    pub fn flush_profiles(&mut self, out: &mut Vec<Anomaly>) {
        let before = out.len();
        if let Some(det) = &mut self.profile {
            det.flush(self.hosts.profiles(), out);
        }
        for a in &out[before..] {
            *self.stats.anomalies.entry(a.kind).or_default() += 1;
            if let Some(iso) = &mut self.isolation {
                iso.note_anomaly(a);
            }
        }
    }

    /// The profile model, once trained or loaded.
    pub fn profile_model(&self) -> Option<&ProfileModel> {
        self.profile.as_ref().and_then(ProfileDetector::model)
    }

    /// The isolation model in force, shared (for [`crate::forest::ModelFeed`]).
    pub fn shared_model(&self) -> Option<&Arc<TrainedForest>> {
        self.isolation.as_ref().and_then(IsolationDetector::shared_model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{T0, benign_batch, scan_batch, spoofed_flood, syn, syn_flood};
    use std::net::IpAddr;

    #[test]
    fn the_engine_flags_a_slow_scan_the_rules_miss() {
        let mut cfg = DetectorConfig::default();
        cfg.forest.enabled = false;
        cfg.beacon.enabled = false;

        let mut e = Engine::new(&cfg, Models::default());
        let mut out = Vec::new();
        let mut i = 0;
        while e.profile_model().is_none() && i < 5_000 {
            e.process_batch(&benign_batch(i), 0, &mut out);
            i += 1;
        }
        assert!(e.profile_model().is_some(), "trained after the warm-up profiles");
        for j in i..i + 1_000 {
            e.process_batch(&benign_batch(j), 0, &mut out);
        }
        // Ordinary windows stay under the threshold (1.5 × the farthest of 512 training profiles): allow one in
        // 500 for the fixtures' widely varying packet sizes.
        assert!(out.len() <= 2, "benign traffic flagged: {:?}", out.iter().map(|a| &a.reason).collect::<Vec<_>>());
        assert!(out.iter().all(|a| a.kind == AnomalyKind::Profile));
        out.clear();
        // 23 ports of one host in 10 s: under the fan-out rule's 24 and far under the rate rule.
        let scanner = IpAddr::from([10, 66, 6, 6]);
        // The start of the next profile window (10 s).
        const W: i64 = 10_000_000_000;
        let t = ((T0 + (i as i64 + 1_000) * 1_000_000_000) / W + 1) * W;
        let packets =
            (0..30u16).map(|k| syn(t + i64::from(k) * 300_000_000, IpAddr::from([10, 0, 3, 3]), 1 + k % 23)).collect();
        e.process_batch(&PacketBatch { source: scanner, sequence: 0, packets }, 0, &mut out);
        assert!(out.is_empty(), "the scanner's window is still open");
        e.flush_profiles(&mut out);
        let kinds: Vec<(String, AnomalyKind)> = out.iter().map(|a| (a.host.clone(), a.kind)).collect();
        assert!(kinds.contains(&("10.66.6.6".to_string(), AnomalyKind::Profile)), "{out:?}");
        assert!(kinds.iter().all(|(h, k)| *k == AnomalyKind::Profile && (h == "10.66.6.6" || h.starts_with("10.1."))));
        assert!(kinds.len() <= 2, "{out:?}");
    }

    #[test]
    fn end_to_end_without_kafka() {
        let cfg = DetectorConfig::default();
        let mut e = Engine::new(&cfg, Models::default());
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

    /// The scenario of [`end_to_end_without_kafka`] with the rules only, each batch on the partition of its host;
    /// `bogus` batches (one packet of the flooder at the given time) are inserted after the flood's second batch.
    fn anomalies_with(bogus: &[i64]) -> (Vec<Anomaly>, usize, EngineStats) {
        let mut cfg = DetectorConfig::default();
        cfg.forest.enabled = false;
        cfg.profile.enabled = false;
        let mut e = Engine::new(&cfg, Models::default());
        let (mut out, mut rejected) = (vec![], 0);
        let flooder: IpAddr = "10.9.9.9".parse().unwrap();
        for i in 0..600 {
            let _ = e.process_batch(&benign_batch(i), 0, &mut out);
        }
        for (i, b) in
            syn_flood(flooder, "10.0.0.80".parse().unwrap(), T0 + 700_000_000_000, 3_000, 1_000).into_iter().enumerate()
        {
            let _ = e.process_batch(&b, 1, &mut out);
            if i == 1 {
                for t in bogus {
                    let p = syn(*t, "10.0.0.80".parse().unwrap(), 80);
                    let batch = PacketBatch { source: flooder, sequence: 0, packets: vec![p] };
                    rejected += usize::from(e.process_batch(&batch, 1, &mut out).is_some());
                }
            }
        }
        let _ = e.process_batch(&scan_batch(3), 2, &mut out);
        for b in spoofed_flood("10.0.0.5".parse().unwrap(), T0 + 800_000_000_000, 2_000, 3_000_000_000, 9) {
            let _ = e.process_batch(&b, 3, &mut out);
        }
        let deltas = e.flush_destination_stats();
        for d in &deltas {
            e.process_destination_stats(d, 0, &mut out);
        }
        (out, rejected, e.stats().clone())
    }

    #[test]
    fn batches_outside_the_packet_time_skew_change_nothing() {
        let (clean, rejected, clean_stats) = anomalies_with(&[]);
        assert_eq!(rejected, 0);
        assert!(
            clean.iter().any(|a| a.kind == AnomalyKind::Rate) && clean.iter().any(|a| a.kind == AnomalyKind::Victim)
        );
        let ten_years = 10 * 365 * 86_400 * 1_000_000_000i64;
        let bogus = [T0 + ten_years, 1_000_000_000, -1, i64::MIN, i64::MAX];
        let (dirty, rejected, dirty_stats) = anomalies_with(&bogus);
        assert_eq!(rejected, bogus.len());
        assert_eq!(dirty, clean, "a rejected batch moved a clock or a window");
        assert_eq!(dirty_stats.time_rejected, bogus.len() as u64);
        assert_eq!(EngineStats { time_rejected: 0, ..dirty_stats }, clean_stats, "rejected batches are not processed");
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
            let mut e = Engine::new(&cfg, Models::default());
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
