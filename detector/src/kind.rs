//! What every detector kind is: [`DetectorKind`], the trait a kind's module implements, and the contexts its
//! hooks get. The list of kinds a detector runs is [`crate::kinds`]; the configuration, the per-host state and
//! the engine are generated from that list, so a kind is added by implementing this trait in a module of its own
//! and registering it there (see docs/detectors.md, "How to add a detector kind").
//!
//! The engine calls the hooks of every kind that is on, in registration order, phase by phase:
//! 1. [`DetectorKind::begin_batch`] with the batch's packets-topic partition, then for each packet of the batch
//!    [`DetectorKind::observe_packet`];
//! 2. once per batch, [`DetectorKind::judge_batch`] (models scoring the batch's feature vector);
//! 3. once per batch, [`DetectorKind::observe_windows`] with the host's state, then
//!    [`DetectorKind::close_windows`] with every host of the batch's partition (windowed models);
//! 4. for every anomaly found, by any kind, [`DetectorKind::note_anomaly`].
//!
//! Kinds that read the destinations topic (the victim side) implement the `destination` hooks. Every hook has
//! a default that does nothing, so a kind implements only what it uses.

use std::any::{Any, TypeId};
use std::net::IpAddr;
use std::time::Duration;

use netanom_schemas::{Anomaly, AnomalyKind, DestinationStats, PacketBatch, PacketFeatures};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::features::{FeatureScratch, FeatureVector, batch_features, own_features};
use crate::validation::ConfigError;

/// What a section's validation may compare with outside its own section.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// `[detector.state] idle_timeout`: a host idle this long is evicted with its state.
    pub idle_timeout: Duration,
}

/// Where a loaded model file is taken from when a kind is built (implemented by [`crate::Models`]).
pub trait ModelStore {
    /// The model of type `kind`, once: `None` when none was loaded or it was taken already.
    fn take(&mut self, kind: TypeId) -> Option<Box<dyn Any>>;
}

/// What building a kind may use besides its own section.
pub struct Setup<'a> {
    /// `[detector.state] max_hosts`.
    pub max_hosts: usize,
    /// The victim tables' share of `[detector.state] memory_budget_mib`, bytes (unbounded unless set).
    pub victim_budget_bytes: usize,
    models: &'a mut dyn ModelStore,
}

impl<'a> Setup<'a> {
    /// A setup with the host-map bound and the loaded models.
    pub fn new(max_hosts: usize, models: &'a mut dyn ModelStore) -> Self {
        Self { max_hosts, victim_budget_bytes: usize::MAX, models }
    }

    /// The loaded model of type `T`, if one was loaded.
    pub fn take_model<T: Any>(&mut self) -> Option<T> {
        self.models.take(TypeId::of::<T>()).and_then(|m| m.downcast::<T>().ok()).map(|m| *m)
    }
}

/// One packet batch as the batch hooks see it: the batch, its latest packet time and its feature vector,
/// computed once for every kind that asks.
pub struct Batch<'a> {
    /// The batch (one source host).
    pub batch: &'a PacketBatch,
    /// Latest packet time of the batch, ns.
    pub last_ns: i64,
    features: Option<FeatureVector>,
    own: Option<(FeatureVector, usize)>,
    scratch: &'a mut FeatureScratch,
}

impl<'a> Batch<'a> {
    /// A batch whose latest packet time is `last_ns`; `scratch` holds the feature extraction's buffers.
    pub fn new(batch: &'a PacketBatch, last_ns: i64, scratch: &'a mut FeatureScratch) -> Self {
        Self { batch, last_ns, features: None, own: None, scratch }
    }

    /// The per-batch feature vector ([`crate::features::BATCH`]).
    pub fn features(&mut self) -> FeatureVector {
        *self.features.get_or_insert_with(|| batch_features(&self.batch.packets, self.scratch))
    }

    /// The per-batch feature vector of the host's own packets, and how many there are
    /// ([`crate::features::own_features`]).
    pub fn own_features(&mut self) -> (FeatureVector, usize) {
        *self.own.get_or_insert_with(|| own_features(&self.batch.packets, self.scratch))
    }
}

/// At most one anomaly per host per cooldown of packet time: the per-host state of the kinds that score whole
/// batches (isolation, supervised).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cooldown {
    last_ns: Option<i64>,
}

impl Cooldown {
    /// Fires at `now_ns` unless the last firing is less than `cooldown_ns` before; true when it fired.
    pub fn fire(&mut self, now_ns: i64, cooldown_ns: i64) -> bool {
        let ready = self.last_ns.is_none_or(|t| now_ns.saturating_sub(t) >= cooldown_ns);
        if ready {
            self.last_ns = Some(now_ns);
        }
        ready
    }

    /// True when it never fired (or the host's state was dropped since).
    pub fn is_clear(&self) -> bool {
        self.last_ns.is_none()
    }
}

/// A detector kind: its configuration section, its per-host state and its hooks. Implemented by the type the
/// engine holds while the kind is on (the rule in hot-path units, or the detector with its model).
pub trait DetectorKind: Sized + std::fmt::Debug {
    /// The `[detector.<section>]` section (`#[serde(deny_unknown_fields, default)]`, every key documented).
    type Config: Clone + std::fmt::Debug + Default + Serialize + DeserializeOwned;
    /// What the kind remembers about one source host (`()` for nothing); dropped with the host.
    type State: Clone + std::fmt::Debug + Default;
    /// The anomaly kinds it produces.
    const PRODUCES: &'static [AnomalyKind];

    /// Every problem of `config`, keys named `detector.<section>.<key>`.
    fn validate(config: &Self::Config, cx: &Context) -> Vec<ConfigError>;

    /// The kind as configured, or `None` when it is off.
    fn build(config: &Self::Config, setup: &mut Setup<'_>) -> Option<Self>;

    /// Before the packets of a batch read from packets-topic `partition`.
    fn begin_batch(&mut self, partition: i32) {
        let _ = partition;
    }

    /// One packet of `host`.
    fn observe_packet(&mut self, host: IpAddr, p: &PacketFeatures, state: &mut Self::State, out: &mut Vec<Anomaly>) {
        let _ = (host, p, state, out);
    }

    /// One whole batch of `host`, after its packets.
    fn judge_batch(&mut self, host: IpAddr, batch: &mut Batch<'_>, state: &mut Self::State, out: &mut Vec<Anomaly>) {
        let _ = (host, batch, state, out);
    }

    /// One whole batch of `host` for a windowed kind, after [`DetectorKind::judge_batch`] of every kind.
    fn observe_windows(&mut self, host: IpAddr, batch: &PacketBatch, state: &mut Self::State, out: &mut Vec<Anomaly>) {
        let _ = (host, batch, state, out);
    }

    /// After each batch: the state of every host of packets-topic `partition`, whose packet clock is
    /// `clock_ns`, to close windows that ended. Iterate `hosts` only when there is work: it visits every host.
    fn close_windows<'a>(
        &mut self,
        partition: i32,
        clock_ns: i64,
        hosts: impl Iterator<Item = (IpAddr, &'a mut Self::State)>,
        out: &mut Vec<Anomaly>,
    ) where
        Self::State: 'a,
    {
        let _ = (partition, clock_ns, hosts, out);
    }

    /// The input ends: close whatever is open in the state of every host.
    fn flush<'a>(&mut self, hosts: impl Iterator<Item = (IpAddr, &'a mut Self::State)>, out: &mut Vec<Anomaly>)
    where
        Self::State: 'a,
    {
        let _ = (hosts, out);
    }

    /// `state` holds open suspicion: evidence building up toward an anomaly (a partial scan, a brute-force
    /// count, a beacon series). Under memory pressure such hosts are evicted last. Default: never.
    fn open_suspicion(state: &Self::State) -> bool {
        let _ = state;
        false
    }

    /// Heap bytes `state` holds in tables that grow with a host's behaviour, from their capacities (see
    /// `crate::bytes::table_bytes`); the host map adds them up against its memory budget. Default: none.
    fn heap_bytes(state: &Self::State) -> usize {
        let _ = state;
        0
    }

    /// An anomaly found by any kind (this one included).
    fn note_anomaly(&mut self, anomaly: &Anomaly) {
        let _ = anomaly;
    }

    /// State is being rebuilt from records another detector already processed (after a rebalance): until
    /// called with `false`, remember but report nothing to other detectors.
    fn set_rebuilding(&mut self, rebuilding: bool) {
        let _ = rebuilding;
    }

    /// One destination-statistics delta read from destinations-topic `partition`: appends the anomalies it
    /// completes to `out`.
    fn observe_destination_stats(&mut self, d: &DestinationStats, partition: i32, out: &mut Vec<Anomaly>) {
        let _ = (d, partition, out);
    }

    /// The destination statistics are drained (every report has been applied): close whatever is open.
    fn flush_destinations(&mut self, out: &mut Vec<Anomaly>) {
        let _ = out;
    }

    /// Destination-statistics deltas to produce: those due, or every one held when `all`.
    fn destination_deltas(&mut self, all: bool) -> Vec<DestinationStats> {
        let _ = all;
        Vec::new()
    }

    /// Drops what came from revoked packets-topic partitions (their new owner accounts for them).
    fn revoke_packets_partitions(&mut self, partitions: &[i32]) {
        let _ = partitions;
    }

    /// Drops what came from revoked destinations-topic partitions; returns how many entries.
    fn revoke_destination_partitions(&mut self, partitions: &[i32]) -> usize {
        let _ = partitions;
        0
    }
}
