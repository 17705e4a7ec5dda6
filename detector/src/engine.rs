//! The synchronous detection core: takes decoded records (packet batches and destination statistics) and
//! returns anomalies and destination-statistics deltas. Owns the host map and every detector; knows nothing
//! about Kafka (the `consume` loop behind [`crate::run`] feeds it in chunks on a blocking thread) so benchmarks and tests
//! drive it directly.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use netanom_schemas::{Anomaly, AnomalyKind, DestinationStats, PacketBatch};

use crate::autoencoder::AutoencoderDetector;
use crate::config::DetectorConfig;
use crate::features::FeatureScratch;
use crate::forest::shared::WarmupSample;
use crate::forest::{IsolationDetector, TrainedForest};
use crate::kind::{Batch, DetectorKind, Setup};
use crate::kinds::for_each_kind;
use crate::model_file::ModelKind;
use crate::models::{ModelInForce, Models};
use crate::profile::{ProfileDetector, ProfileModel};
use crate::state::{HostMap, HostState};
use crate::time::{Admission, PartitionClocks, TimeRejection};

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
    /// Packet batches rejected by the packet-time skew rule (`[detector.time]`), not processed.
    pub time_rejected: u64,
    /// Packets of those batches.
    pub packets_time_rejected: u64,
}

/// Generates [`Kinds`], the engine's registered kinds ([`crate::kinds`]), and its calls of each phase's hooks.
macro_rules! engine_kinds {
    ($( $(#[$doc:meta])* $section:ident: $kind:ty, )*) => {
        /// Every registered kind, `None` while off, by section.
        #[derive(Debug)]
        struct Kinds {
            $( $section: Option<$kind>, )*
        }

        impl Kinds {
            fn new(config: &DetectorConfig, setup: &mut Setup<'_>) -> Self {
                Self { $( $section: <$kind as DetectorKind>::build(&config.$section, setup), )* }
            }

            /// Every phase of one batch of `host` (see `crate::kind`), its state in `hosts`.
            fn process_batch(
                &mut self,
                hosts: &mut HostMap,
                (host, partition): (IpAddr, i32),
                batch: &mut Batch<'_>,
                out: &mut Vec<Anomaly>,
            ) {
                let state: &mut HostState = hosts.entry(host, partition, batch.last_ns);
                $( if let Some(k) = &mut self.$section {
                    k.begin_batch(partition);
                } )*
                for p in &batch.batch.packets {
                    $( if let Some(k) = &mut self.$section {
                        k.observe_packet(host, p, &mut state.$section, out);
                    } )*
                }
                $( if let Some(k) = &mut self.$section {
                    k.judge_batch(host, batch, &mut state.$section, out);
                } )*
                $( if let Some(k) = &mut self.$section {
                    k.observe_windows(host, batch.batch, &mut state.$section, out);
                } )*
                let clock_ns = hosts.clock_ns(partition);
                $( if let Some(k) = &mut self.$section {
                    k.close_windows(partition, clock_ns, hosts.hosts_of(partition).map(|(h, s)| (h, &mut s.$section)), out);
                } )*
            }

            fn flush(&mut self, hosts: &mut HostMap, out: &mut Vec<Anomaly>) {
                $( if let Some(k) = &mut self.$section {
                    k.flush(hosts.iter_mut().map(|(h, s)| (*h, &mut s.$section)), out);
                } )*
            }

            fn note_anomaly(&mut self, a: &Anomaly) {
                $( if let Some(k) = &mut self.$section {
                    k.note_anomaly(a);
                } )*
            }

            fn set_rebuilding(&mut self, rebuilding: bool) {
                $( if let Some(k) = &mut self.$section {
                    k.set_rebuilding(rebuilding);
                } )*
            }

            fn observe_destination_stats(&mut self, d: &DestinationStats, partition: i32, out: &mut Vec<Anomaly>) {
                $( if let Some(k) = &mut self.$section {
                    k.observe_destination_stats(d, partition, out);
                } )*
            }

            fn flush_destinations(&mut self, out: &mut Vec<Anomaly>) {
                $( if let Some(k) = &mut self.$section {
                    k.flush_destinations(out);
                } )*
            }

            fn destination_deltas(&mut self, all: bool) -> Vec<DestinationStats> {
                let mut deltas = Vec::new();
                $( if let Some(k) = &mut self.$section {
                    deltas.extend(k.destination_deltas(all));
                } )*
                deltas
            }

            fn revoke_packets_partitions(&mut self, partitions: &[i32]) {
                $( if let Some(k) = &mut self.$section {
                    k.revoke_packets_partitions(partitions);
                } )*
            }

            fn revoke_destination_partitions(&mut self, partitions: &[i32]) -> usize {
                let mut dropped = 0;
                $( if let Some(k) = &mut self.$section {
                    dropped += k.revoke_destination_partitions(partitions);
                } )*
                dropped
            }
        }
    };
}
for_each_kind!(engine_kinds);

/// Every detector and its state.
#[derive(Debug)]
pub struct Engine {
    hosts: HostMap,
    clocks: PartitionClocks,
    kinds: Kinds,
    scratch: FeatureScratch,
    stats: EngineStats,
}

impl Engine {
    /// An engine for `config`, starting from `models` (loaded by [`Models::load`]): a loaded forest or profile
    /// model replaces its detector's warm-up, a supervised detector is run when given.
    pub fn new(config: &DetectorConfig, mut models: Models) -> Self {
        let mut setup = Setup::new(config.state.host_capacity(), &mut models);
        setup.victim_budget_bytes = usize::try_from(config.state.victim_budget_bytes()).unwrap_or(usize::MAX);
        Self {
            hosts: HostMap::new(&config.state),
            clocks: PartitionClocks::new(&config.time),
            kinds: Kinds::new(config, &mut setup),
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
                self.stats.packets_time_rejected += batch.packets.len() as u64;
                return Some(r);
            }
            // Time went back for good (another capture replayed into the partition): its hosts start cold.
            Admission::Resynced { backwards: true } => {
                self.hosts.revoke_partitions(&[partition]);
            }
            Admission::Resynced { backwards: false } | Admission::Accepted => {}
        }
        self.stats.batches += 1;
        self.stats.packets += batch.packets.len() as u64;
        let before = out.len();
        self.hosts.entry(batch.source, partition, last).activity.observe(first, last);
        let mut view = Batch::new(batch, last, &mut self.scratch);
        self.kinds.process_batch(&mut self.hosts, (batch.source, partition), &mut view, out);
        self.hosts.settle(&batch.source);
        for a in &mut out[before..] {
            self.start_at_evidence(a);
        }
        self.tally(&out[before..]);
        None
    }

    /// Moves the start of `a`, a source-side anomaly, from its window's start to the host's first packet in the
    /// window when that is known (see [`crate::state::Activity`]), and derives its id again.
    fn start_at_evidence(&self, a: &mut Anomaly) {
        let Some(state) = a.host.parse::<IpAddr>().ok().and_then(|h| self.hosts.get(&h)) else { return };
        let start = state.activity.evidence_start(a.window_start_ns, a.window_end_ns);
        if start != a.window_start_ns {
            a.window_start_ns = start;
            a.id = crate::anomaly::anomaly_id(a.kind, &a.host, a.window_start_ns, a.window_end_ns);
        }
    }

    /// Counts anomalies just found and shows them to every kind.
    fn tally(&mut self, found: &[Anomaly]) {
        for a in found {
            *self.stats.anomalies.entry(a.kind).or_default() += 1;
            self.kinds.note_anomaly(a);
        }
    }

    /// Applies one destination-statistics delta read from destinations-topic partition `partition`.
    pub fn process_destination_stats(&mut self, d: &DestinationStats, partition: i32, out: &mut Vec<Anomaly>) {
        self.stats.destination_stats += 1;
        let before = out.len();
        self.kinds.observe_destination_stats(d, partition, out);
        self.tally(&out[before..]);
    }

    /// Closes what the destination statistics hold open (the victim windows that fired), appending the
    /// anomalies to `out`: call when the destinations topic is drained, so every report has been applied.
    pub fn flush_destinations(&mut self, out: &mut Vec<Anomaly>) {
        let before = out.len();
        self.kinds.flush_destinations(out);
        self.tally(&out[before..]);
    }

    /// Rebuilds state from one packet batch that the previous owner of its partition already processed (after a
    /// rebalance, see `detector.state.rebuild_records`): every detector's state is updated as by
    /// [`Engine::process_batch`], but its anomalies are discarded, its packets are counted by the destination
    /// side without being reported (the next report of their entries carries the rebuilt cumulative counts) and
    /// the counters do not change.
    pub fn rebuild_batch(&mut self, batch: &PacketBatch, partition: i32) {
        let stats = self.stats.clone();
        self.kinds.set_rebuilding(true);
        let _ = self.process_batch(batch, partition, &mut Vec::new());
        self.kinds.set_rebuilding(false);
        self.stats = stats;
    }

    /// Rebuilds the victim aggregates from one destination-statistics delta that the previous owner of its
    /// partition already applied: sums and fired windows are restored, no anomaly is emitted.
    pub fn rebuild_destination_stats(&mut self, d: &DestinationStats, partition: i32) {
        self.kinds.observe_destination_stats(d, partition, &mut Vec::new());
    }

    /// Destination-statistics deltas to be produced when a report is due (every `victim.report_every` of
    /// packet time), and periodic idle-host eviction. Call after every chunk.
    pub fn end_chunk(&mut self) -> Vec<DestinationStats> {
        self.hosts.maybe_sweep();
        self.kinds.destination_deltas(false)
    }

    /// Every destination-statistics delta not yet reported, due or not: at the end of the input.
    pub fn flush_destination_stats(&mut self) -> Vec<DestinationStats> {
        self.kinds.destination_deltas(true)
    }

    /// Drops the state that came from revoked partitions of the packets topic (hosts) and of the destinations
    /// topic (victim aggregates). Returns (hosts, destination windows) dropped.
    pub fn revoke(&mut self, packets_partitions: &[i32], destinations_partitions: &[i32]) -> (usize, usize) {
        self.clocks.forget(packets_partitions);
        let h = if packets_partitions.is_empty() { 0 } else { self.hosts.revoke_partitions(packets_partitions) };
        if !packets_partitions.is_empty() {
            self.kinds.revoke_packets_partitions(packets_partitions);
        }
        let d = if destinations_partitions.is_empty() {
            0
        } else {
            self.kinds.revoke_destination_partitions(destinations_partitions)
        };
        (h, d)
    }

    /// Counters so far.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Bytes and evictions of the victim tables (nothing when the kind is off).
    pub fn victim_tables(&self) -> crate::victim::VictimTables {
        self.kinds.victim.as_ref().map(crate::victim::Victim::tables).unwrap_or_default()
    }

    /// Hosts tracked now.
    pub fn hosts_tracked(&self) -> usize {
        self.hosts.len()
    }

    /// Hosts evicted so far.
    pub fn hosts_evicted(&self) -> u64 {
        self.hosts.evictions()
    }

    /// Hosts evicted so far, by reason.
    pub fn host_evictions(&self) -> crate::state::Evictions {
        self.hosts.evictions_by_reason()
    }

    /// Bytes the host map holds (see `crate::state`).
    pub fn hosts_bytes(&self) -> usize {
        self.hosts.bytes()
    }

    /// Bytes the host map may hold at once (its table counted twice, as during a rebuild): what the budget
    /// bounds.
    pub fn hosts_peak_bytes(&self) -> usize {
        self.hosts.peak_bytes()
    }

    /// The isolation model in force, once trained or loaded.
    pub fn model(&self) -> Option<&TrainedForest> {
        self.kinds.forest.as_ref().and_then(IsolationDetector::model)
    }

    /// Closes and scores every open host-profile window, appending the anomalies to `out`: call when the input
    /// ends (a drained capture, the end of a replay range), since a window otherwise closes only when later
    /// packets show it is over.
    pub fn flush_profiles(&mut self, out: &mut Vec<Anomaly>) {
        let before = out.len();
        self.kinds.flush(&mut self.hosts, out);
        self.tally(&out[before..]);
    }

    /// The profile model, once trained or loaded.
    pub fn profile_model(&self) -> Option<&ProfileModel> {
        self.kinds.profile.as_ref().and_then(ProfileDetector::model)
    }

    /// Every model in force: the isolation forest, the host-profile model, the supervised forest and the
    /// autoencoder ensemble, those loaded or trained so far.
    pub fn models_in_force(&self) -> Vec<ModelInForce> {
        let forest = self.model().map(|m| (ModelKind::IsolationForest, m.version()));
        let profiles = self.profile_model().map(|m| (ModelKind::Profiles, m.version()));
        let supervised = self.kinds.supervised.as_ref().map(|d| (ModelKind::Supervised, d.version()));
        let autoencoder = self.kinds.autoencoder.as_ref().and_then(AutoencoderDetector::model);
        let autoencoder = autoencoder.map(|m| (ModelKind::Autoencoder, m.version()));
        [forest, profiles, supervised, autoencoder]
            .into_iter()
            .flatten()
            .map(|(kind, version)| ModelInForce { kind, version: version.to_string() })
            .collect()
    }

    /// Switches the isolation detector to the group's warm-up over a packets topic of `partitions` partitions
    /// ([`crate::forest::shared`]), remembering at most `max_flagged` hosts flagged by a rule (pass
    /// `StateConfig::host_capacity`); nothing when it is off or has a model.
    pub fn share_warmup(&mut self, partitions: i32, max_flagged: usize) {
        let max_hosts = max_flagged;
        if let Some(f) = &mut self.kinds.forest {
            f.share_warmup(partitions, max_hosts);
        }
    }

    /// The packets-topic partitions this engine's detector owns now.
    pub fn set_owned_partitions(&mut self, owned: &[i32]) {
        if let Some(f) = &mut self.kinds.forest {
            f.set_owned_partitions(owned);
        }
    }

    /// True when the isolation detector runs and has no model yet (none loaded): it can train with the group.
    pub fn awaiting_model_start(&self) -> bool {
        self.kinds.forest.as_ref().is_some_and(|f| f.model().is_none())
    }

    /// True while the isolation detector waits for the group's model.
    pub fn awaiting_model(&self) -> bool {
        self.kinds.forest.as_ref().is_some_and(IsolationDetector::awaiting_model)
    }

    /// Warm-up contributions ready to be published to the models topic.
    pub fn take_warmup_samples(&mut self) -> Vec<WarmupSample> {
        self.kinds.forest.as_mut().map(IsolationDetector::take_contributions).unwrap_or_default()
    }

    /// The input ended: every owned partition contributes its warm-up share as it stands.
    pub fn end_warmup(&mut self) {
        if let Some(f) = &mut self.kinds.forest {
            f.end_warmup();
        }
    }

    /// Puts the group's isolation model in force; the batches that waited for it are scored and their anomalies
    /// appended to `out`.
    pub fn install_model(&mut self, model: Arc<TrainedForest>, out: &mut Vec<Anomaly>) {
        let before = out.len();
        if let Some(f) = &mut self.kinds.forest {
            // Hosts whose batches waited continue from what the backlog left (batches above the threshold,
            // cooldown), so a finding is not raised twice nor its confirmation started over.
            for (host, verdicts) in f.install(model, out) {
                if let Some(state) = self.hosts.get_mut(&host) {
                    state.forest = verdicts;
                }
            }
        }
        self.tally(&out[before..]);
    }

    /// The group will have no isolation model: the batches that waited for it are dropped, unscored.
    pub fn abandon_group_model(&mut self) {
        if let Some(f) = &mut self.kinds.forest {
            f.abandon_warmup();
        }
    }

    /// The isolation model in force, shared (for [`crate::forest::ModelFeed`]).
    pub fn shared_model(&self) -> Option<&Arc<TrainedForest>> {
        self.kinds.forest.as_ref().and_then(IsolationDetector::shared_model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{T0, benign_batch, scan_batch, scan_batch_at, spoofed_flood, syn, syn_flood};

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
        let in_force: Vec<_> = e.models_in_force().into_iter().map(|m| m.kind).collect();
        assert_eq!(in_force, [ModelKind::Profiles], "the forest is off");
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
        let mut cfg = DetectorConfig::default();
        // The fixture's hosts come back every 200 batches (200 s), and so does each one's DNS query: over the
        // ~3,500 s of this run the beacon rule rightly sees that as periodic.
        cfg.beacon.enabled = false;
        let mut e = Engine::new(&cfg, Models::default());
        let mut out = vec![];
        // 512 benign batches (of >= 8 packets) train the forest, 2,000 more are scored.
        let mut i = 0;
        while e.model().is_none() {
            e.process_batch(&benign_batch(i), 0, &mut out);
            i += 1;
        }
        assert_eq!(e.models_in_force()[0].kind, ModelKind::IsolationForest);
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
        // A scanner that keeps scanning: the forest names a host whose batches isolate three times in a minute.
        for at in [3, 10, 20] {
            e.process_batch(&scan_batch_at(3, at), 2, &mut out);
        }
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
        // The victim window, reported when it qualifies and once more, exactly, when complete (`:final`).
        let victims: Vec<&Anomaly> = out.iter().filter(|a| a.kind == AnomalyKind::Victim).collect();
        assert_eq!(victims.len(), 2, "{victims:#?}");
        assert_eq!(victims.iter().filter(|a| a.id.ends_with(":final")).count(), 1, "{victims:#?}");
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
        assert_eq!(
            EngineStats { time_rejected: 0, packets_time_rejected: 0, ..dirty_stats },
            clean_stats,
            "rejected batches are not processed"
        );
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
                d.sources = count;
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
