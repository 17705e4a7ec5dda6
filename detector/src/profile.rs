//! Host-profile detector (kind `profile`): per host, an aggregate of its traffic over a tumbling window of
//! packet time (a *profile*: packet and byte rates, new connections, distinct destinations and ports, protocol
//! mix, TCP flag ratios, reply share, packet sizes), k-means (crate `linfa-clustering`) over the profiles of a
//! warm-up sample, and an anomaly when a profile is farther from every centroid than a threshold calibrated on
//! the training distances. Owns the per-host accumulator (held in `crate::state::HostState`), the model, its
//! training, calibration, persistence format and explanations; never sees Kafka.
//!
//! # Profiles
//!
//! A host's window is `[k·window, (k+1)·window)` of packet time (aligned like the fan-out windows). It closes
//! when a packet of that host at or after its end arrives, or, for a host that went quiet, when the detector's
//! packet clock (the latest packet time of any host) passes its end by one more window (the sweep, run once per
//! window of packet time, so hosts are closed before the idle eviction of `[detector.state]` drops them). A
//! packet older than the host's last closed window (capture reordering, a lagging partition) counts in the next
//! window, so a window is never scored twice. Windows with fewer than `min_packets` packets are neither
//! trained on nor scored: a few packets say little about behaviour, and every one-packet spoofed source of a
//! flood would otherwise be an outlier (the victim detector covers those). When the input ends (a drained
//! capture in `netanom run`, the end of a replay range) [`crate::engine::Engine::flush_profiles`] closes and
//! scores every open window, partial ones included: a short capture is mostly last windows.
//!
//! Per packet the accumulator does a handful of additions and two distinct-count updates: distinct
//! destinations and destination ports are counted in 512-bit linear-counting sketches (within one up to a few
//! tens, a few percent up to several hundred, ~15 % near 1,500, saturating at 3,194), so state is O(1) per
//! host (~250 bytes) and nothing allocates. Destinations and ports count only packets the host sent as a
//! flow's initiator: a server answering many clients is not "contacting" their ephemeral ports.
//!
//! # Model
//!
//! Rates, counts and sizes enter on a `log1p` scale, fractions as they are; every coordinate is then
//! standardised with the training mean and standard deviation (with a floor, so a feature constant in training,
//! such as ICMP share 0, does not turn the first ICMP packet into an infinite distance). k-means runs on the
//! standardised training profiles with a seeded `Xoshiro256Plus` (k-means++ initialisation, 10 runs, the
//! lowest inertia kept): the same seed and profiles give the same centroids, so a model is reproducible and
//! `netanom replay` is byte-identical. k is `k` when set, else chosen by the rule: the k in `2..=max_k` with
//! the highest mean silhouette on (at most 1,000 evenly spaced) training profiles, or 1 when no k reaches a
//! silhouette of 0.25 (no cluster structure worth keeping). The rule compares fits of 3 runs each (the
//! silhouette of the best of 3 k-means++ starts barely moves with more); the chosen k is then fitted with the
//! full 10 runs, and that fit's silhouette is the one the 0.25 floor applies to. This halves the warm-up stall
//! of the 70 fits of 10 runs it replaced.
//!
//! # Threshold
//!
//! The score is the Euclidean distance (standardised units) to the nearest centroid. The global threshold is
//! the `quantile` of the training distances times `1 + margin`, computed per model (at least 1: a training set
//! of identical profiles has distance 0 everywhere, and one unit of the scale floor is the smallest change
//! worth a look). Defaults (quantile 1, margin 0.5, `min_packets` 20) come from a leave-one-capture-out
//! calibration on the labelled captures, see the crate README. Once a host has
//! `per_host_min_history` scored profiles below the global threshold, its own threshold is the mean plus
//! `per_host_sigmas` standard deviations of those distances, never below the global one: a host whose
//! ordinary behaviour is volatile needs a larger departure before it is flagged, and only ordinary profiles
//! enter the history so an attacker cannot raise its own threshold by attacking.
//!
//! # Explanations
//!
//! Every anomaly lists, strongest first, the features whose standardised difference from the nearest centroid
//! is largest: `value` is the profile's value and `baseline` the centroid's, both in original units
//! (packets/s, connections/s, counts, fractions, bytes); the `reason` says the same in words.

use std::net::IpAddr;

use netanom_schemas::{Anomaly, AnomalyKind, Contribution, PacketBatch, PacketFeatures, records::tcp_flags};
use serde::{Deserialize, Serialize};

use crate::anomaly::{AnomalyParts, seconds};
use crate::features::{PROFILE, PROFILE_FEATURES, PROFILE_NAMES, Profile, ProfileVector, Scale};
use crate::kind::{Context, DetectorKind, Setup};
use crate::model_file::{self, FileError, ModelFile, ModelKind};
use crate::time::{Admission, SkewConfig, ns, window_start_ns};
use crate::validation::{ConfigError, Problems};
use netanom_schemas::packet_time::PacketClock;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[detector.profile]`: k-means over per-host behaviour profiles (see [`crate::profile`] for the features and
/// the calibration, and the crate README for the measurements behind the defaults).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileConfig {
    /// Whether the detector runs. Default true.
    pub enabled: bool,
    /// Tumbling window of packet time a profile aggregates (aligned to multiples of its length); rates are per
    /// second of it. A model loaded from `model_path` brings its own window. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Profiles of fewer packets are neither trained on nor scored: a host's handful of packets (a DNS lookup,
    /// a keep-alive) says little about its behaviour and makes noisy outliers. A model loaded from
    /// `model_path` brings its own. Default 20 (2 packets/s over 10 s; 10 and 5 let one benign capture
    /// of the 17 alert in the leave-one-out calibration, see the crate README).
    pub min_packets: u32,
    /// Profiles (of at least `min_packets`) used for training: the first ones this detector closes. Default 512.
    pub warmup_profiles: usize,
    /// Clusters. Default 0: chosen by the silhouette rule among 2..=`max_k` (1 when no k reaches 0.25).
    pub k: usize,
    /// Largest k the silhouette rule tries. Default 8.
    pub max_k: usize,
    /// Seed of the k-means RNG (Xoshiro256Plus): the same seed and profiles give the same model. Default
    /// 0x6e65_7461_6e6f_6d01.
    pub seed: u64,
    /// Quantile of the training profiles' distances to their nearest centroid that the threshold starts from.
    /// Default 1.0 (the farthest training profile): with one profile per host and window, a lower quantile
    /// flags that share of ordinary windows by construction.
    pub quantile: f64,
    /// The threshold is that quantile times (1 + `margin`): a profile must be clearly farther out than anything
    /// seen in training. Default 0.5 (0.25 and 0.5 both kept the leave-one-out benign captures silent; 0.5
    /// leaves room for traffic the training did not cover).
    pub margin: f64,
    /// Ordinary profiles (distance at most the global threshold) a host needs before it gets its own threshold.
    /// Default 30 (5 minutes of activity with 10 s windows).
    pub per_host_min_history: u32,
    /// A host's own threshold: the mean plus this many standard deviations of its ordinary distances, never
    /// below the global threshold. Default 3.
    pub per_host_sigmas: f64,
    /// Windows in which at least this share of the host's packets answer flows that other hosts opened are not
    /// reported: a server's backscatter to a scan or a flood (RSTs, SYN-ACKs) is the initiator's anomaly, which
    /// the rules report, not the server's. In (0, 1]; 1 reports every window. Default 0.9.
    pub max_reply_fraction: f64,
    /// Start from this profile model file (written by `netanom train --profile-out`) instead of training on the
    /// first `warmup_profiles` profiles. Default none.
    pub model_path: Option<PathBuf>,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(10),
            min_packets: 20,
            warmup_profiles: 512,
            k: 0,
            max_k: 8,
            seed: 0x6e65_7461_6e6f_6d01,
            quantile: 1.0,
            margin: 0.5,
            per_host_min_history: 30,
            per_host_sigmas: 3.0,
            max_reply_fraction: 0.9,
            model_path: None,
        }
    }
}

impl ProfileConfig {
    /// Checks `[detector.profile]` and returns every problem; `idle_timeout` is `detector.state.idle_timeout`,
    /// which windows must close well within.
    pub fn validate(&self, idle_timeout: Duration) -> Vec<ConfigError> {
        let mut p = Problems::new("profile");
        p.check(!self.window.is_zero() && self.window <= Duration::from_secs(3600), "window", || {
            format!("must be in (0, 1h], got {:?}", self.window)
        });
        p.check(self.window * 2 < idle_timeout, "window", || {
            format!(
                "must be less than half of detector.state.idle_timeout ({idle_timeout:?}) so windows close before \
                 hosts are evicted, got {:?}",
                self.window
            )
        });
        p.check(self.min_packets >= 1, "min_packets", || format!("must be >= 1, got {}", self.min_packets));
        p.check((2..=32).contains(&self.max_k), "max_k", || format!("must be in 2..=32, got {}", self.max_k));
        p.check(self.k <= 64, "k", || format!("must be in 0..=64 (0: chosen by the silhouette rule), got {}", self.k));
        let need = MIN_TRAINING_PROFILES.max(4 * self.k.max(self.max_k));
        p.check((need..=1_000_000).contains(&self.warmup_profiles), "warmup_profiles", || {
            format!(
                "must be in {need}..=1000000 (at least 4 per cluster of detector.profile.k {} / detector.profile.max_k \
                 {}), got {}",
                self.k, self.max_k, self.warmup_profiles
            )
        });
        p.check(self.quantile > 0.0 && self.quantile <= 1.0, "quantile", || {
            format!("must be in (0, 1], got {}", self.quantile)
        });
        p.check(self.margin.is_finite() && (0.0..=10.0).contains(&self.margin), "margin", || {
            format!("must be in [0, 10], got {}", self.margin)
        });
        p.check(self.per_host_min_history >= 2, "per_host_min_history", || {
            format!("must be >= 2, got {}", self.per_host_min_history)
        });
        p.check(self.per_host_sigmas.is_finite() && self.per_host_sigmas > 0.0, "per_host_sigmas", || {
            format!("must be a positive number, got {}", self.per_host_sigmas)
        });
        p.check(self.max_reply_fraction > 0.0 && self.max_reply_fraction <= 1.0, "max_reply_fraction", || {
            format!("must be in (0, 1], got {}", self.max_reply_fraction)
        });
        if let Some(path) = &self.model_path
            && self.enabled
        {
            p.check(path.is_file(), "model_path", || format!("{} is not a file", path.display()));
        }
        p.into_vec()
    }
}

/// Number of features of a profile.
pub const FEATURES: usize = PROFILE_FEATURES;

/// Smallest standard deviation used to standardise a feature of `scale`: 0.25 on the log scale (a factor of
/// ~1.3), 0.1 for fractions (10 percentage points).
fn min_scale(scale: Scale) -> f64 {
    if scale == Scale::Log1p { 0.25 } else { 0.1 }
}

/// Format tag of a persisted model.
const FORMAT: &str = ModelKind::Profiles.format();

/// Profiles the silhouette rule looks at, at most.
const SILHOUETTE_SAMPLE: usize = 1_000;

/// k-means++ starts per fit of the model (the lowest inertia kept).
const RUNS: usize = 10;

/// k-means++ starts per fit while the silhouette rule compares values of k.
const SELECTION_RUNS: usize = 3;

/// Below this mean silhouette no k is worth more than one centroid.
const MIN_SILHOUETTE: f64 = 0.25;

/// Why a profile model could not be trained or is not a valid model.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Too few training profiles for the number of clusters.
    #[error("cannot train the profile model on {got} profiles: at least {need} are needed")]
    TooFewProfiles {
        /// Profiles given.
        got: usize,
        /// Profiles needed.
        need: usize,
    },
    /// The clustering itself failed.
    #[error("k-means with k = {k} failed: {source}")]
    KMeans {
        /// Clusters asked for.
        k: usize,
        /// Cause.
        #[source]
        source: linfa_clustering::KMeansError,
    },
    /// The thread k-means runs on could not be started.
    #[error("cannot start the k-means thread: {0}")]
    Worker(#[source] rayon::ThreadPoolBuildError),
    /// A model file could not be read or written, is of another kind, or was trained on other features.
    #[error(transparent)]
    File(#[from] FileError),
}

// ---------------------------------------------------------------------------------------------------------
// Aggregation.

/// A 512-bit linear-counting sketch of distinct values.
#[derive(Debug, Clone, Copy, Default)]
struct Distinct([u64; 8]);

impl Distinct {
    const BITS: f64 = 512.0;

    /// Adds a value (any 64-bit key; MurmurHash3's 64-bit finaliser makes its bit position look random, which
    /// the estimate assumes: a merely spreading hash of sequential keys would never collide and be
    /// over-corrected).
    #[inline]
    fn insert(&mut self, key: u64) {
        let mut z = key ^ (key >> 33);
        z = z.wrapping_mul(0xff51_afd7_ed55_8ccd);
        z ^= z >> 33;
        z = z.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        let bit = ((z ^ (z >> 33)) >> 55) as usize;
        self.0[bit >> 6] |= 1u64 << (bit & 63);
    }

    /// Estimated number of distinct values: −m·ln(zero bits / m), m·ln(m) when full.
    fn estimate(&self) -> f64 {
        let ones: u32 = self.0.iter().map(|w| w.count_ones()).sum();
        let zeros = Self::BITS - f64::from(ones);
        if zeros < 1.0 { Self::BITS * Self::BITS.ln() } else { (Self::BITS * (Self::BITS / zeros).ln()).max(0.0) }
    }
}

fn address_key(ip: &IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => u64::from(a.to_bits()),
        IpAddr::V6(a) => {
            let b = a.to_bits();
            (b as u64) ^ ((b >> 64) as u64).rotate_left(29) ^ 0x5555_5555_5555_5555
        }
    }
}

/// The counters of one host's open window.
#[derive(Debug, Clone, Default)]
struct Accumulator {
    start_ns: i64,
    end_ns: i64,
    /// Packet time of the window's first packet.
    first_ns: i64,
    packets: u32,
    bytes: u64,
    opens: u32,
    tcp: u32,
    udp: u32,
    icmp: u32,
    syn: u32,
    fin: u32,
    rst: u32,
    replies: u32,
    sum_len: f64,
    sum_len2: f64,
    destinations: Distinct,
    ports: Distinct,
    /// The first packet of the window, replaced by its first connection-opening packet if any.
    sample: Option<PacketFeatures>,
    sample_opens: bool,
}

impl Accumulator {
    #[inline]
    fn add(&mut self, p: &PacketFeatures) {
        self.first_ns = if self.packets == 0 { p.ts_ns } else { self.first_ns.min(p.ts_ns) };
        self.packets = self.packets.saturating_add(1);
        self.bytes = self.bytes.saturating_add(u64::from(p.wire_len));
        let opens = p.opens_flow();
        self.opens += u32::from(opens);
        match p.ip_proto {
            6 => {
                self.tcp += 1;
                self.syn += u32::from(p.is_syn());
                self.fin += u32::from(p.tcp_flags & tcp_flags::FIN != 0);
                self.rst += u32::from(p.tcp_flags & tcp_flags::RST != 0);
            }
            17 => self.udp += 1,
            1 | 58 => self.icmp += 1,
            _ => {}
        }
        if p.direction == netanom_schemas::Direction::Forward {
            self.destinations.insert(address_key(&p.destination));
            self.ports.insert(u64::from(p.dst_port));
        } else {
            self.replies += 1;
        }
        let len = f64::from(p.wire_len);
        self.sum_len += len;
        self.sum_len2 += len * len;
        if self.sample.is_none() || (opens && !self.sample_opens) {
            self.sample = Some(p.clone());
            self.sample_opens = opens;
        }
    }

    /// The profile of the window, in original units. Never NaN or infinite.
    fn features(&self, window_ns: i64) -> ProfileVector {
        let mut v = [0.0; FEATURES];
        if self.packets == 0 {
            return v;
        }
        let secs = (window_ns as f64 / 1e9).max(1e-9);
        let n = f64::from(self.packets);
        let mean = self.sum_len / n;
        let mut set = |f: Profile, x: f64| v[f.i()] = x;
        set(Profile::PacketsPerS, n / secs);
        set(Profile::BytesPerS, self.bytes as f64 / secs);
        set(Profile::NewFlowsPerS, f64::from(self.opens) / secs);
        set(Profile::DistinctDestinations, self.destinations.estimate().round());
        set(Profile::DistinctDstPorts, self.ports.estimate().round());
        set(Profile::TcpFraction, f64::from(self.tcp) / n);
        set(Profile::UdpFraction, f64::from(self.udp) / n);
        set(Profile::IcmpFraction, f64::from(self.icmp) / n);
        set(Profile::SynFraction, f64::from(self.syn) / n);
        set(Profile::FinFraction, f64::from(self.fin) / n);
        set(Profile::RstFraction, f64::from(self.rst) / n);
        set(Profile::ReplyFraction, f64::from(self.replies) / n);
        set(Profile::MeanWireLen, mean);
        set(Profile::StdWireLen, (self.sum_len2 / n - mean * mean).max(0.0).sqrt());
        for x in &mut v {
            if !x.is_finite() {
                *x = 0.0;
            }
        }
        v
    }
}

/// Running mean and variance (Welford) of a host's ordinary profile distances.
#[derive(Debug, Clone, Copy, Default)]
struct History {
    n: u32,
    mean: f64,
    m2: f64,
}

impl History {
    fn push(&mut self, x: f64) {
        self.n = self.n.saturating_add(1);
        let d = x - self.mean;
        self.mean += d / f64::from(self.n);
        self.m2 += d * (x - self.mean);
    }

    fn sd(&self) -> f64 {
        if self.n < 2 { 0.0 } else { (self.m2 / f64::from(self.n - 1)).max(0.0).sqrt() }
    }
}

/// One host's profile state: the open window and the history of its scored profiles.
#[derive(Debug, Clone, Default)]
pub struct HostProfile {
    acc: Accumulator,
    /// Packets older than this go into the next window (the window before it was closed already).
    closed_until_ns: Option<i64>,
    history: History,
}

/// A closed window.
#[derive(Debug, Clone)]
pub struct ClosedProfile {
    /// Window start, ns.
    pub window_start_ns: i64,
    /// Window end (exclusive), ns.
    pub window_end_ns: i64,
    /// Packet time of the window's first packet, the profile's first evidence.
    pub first_ns: i64,
    /// Packets in the window.
    pub packets: u32,
    /// The profile, original units.
    pub features: ProfileVector,
    /// A packet of the window (its first connection-opening packet, else its first packet).
    pub sample: Option<PacketFeatures>,
}

impl HostProfile {
    /// Adds one packet; returns the previous window when this packet is past its end. Inlined: it runs for every
    /// packet, and closing (rare) is kept out of line.
    #[inline]
    pub fn observe(&mut self, p: &PacketFeatures, window_ns: i64) -> Option<ClosedProfile> {
        let closed = if self.acc.packets > 0 && p.ts_ns >= self.acc.end_ns { self.close(window_ns) } else { None };
        if self.acc.packets == 0 {
            let aligned = window_start_ns(p.ts_ns, window_ns);
            let start = self.closed_until_ns.map_or(aligned, |c| aligned.max(c));
            self.acc.start_ns = start;
            self.acc.end_ns = start.saturating_add(window_ns);
        }
        self.acc.add(p);
        closed
    }

    /// Closes the open window if it ended at or before `before_ns`.
    pub fn close_ended(&mut self, before_ns: i64, window_ns: i64) -> Option<ClosedProfile> {
        (self.acc.packets > 0 && self.acc.end_ns <= before_ns).then(|| self.close(window_ns)).flatten()
    }

    /// Closes the open window, whatever its end.
    pub fn flush(&mut self, window_ns: i64) -> Option<ClosedProfile> {
        (self.acc.packets > 0).then(|| self.close(window_ns)).flatten()
    }

    #[cold]
    fn close(&mut self, window_ns: i64) -> Option<ClosedProfile> {
        let acc = std::mem::take(&mut self.acc);
        self.closed_until_ns = Some(acc.end_ns);
        Some(ClosedProfile {
            window_start_ns: acc.start_ns,
            window_end_ns: acc.end_ns,
            first_ns: acc.first_ns,
            packets: acc.packets,
            features: acc.features(window_ns),
            sample: acc.sample,
        })
    }
}

// ---------------------------------------------------------------------------------------------------------
// Model.

/// Training parameters (the relevant part of [`ProfileConfig`]).
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Clusters; 0 chooses by the silhouette rule.
    pub k: usize,
    /// Largest k the rule tries.
    pub max_k: usize,
    /// Seed of the k-means RNG.
    pub seed: u64,
    /// Quantile of the training distances the threshold starts from.
    pub quantile: f64,
    /// The threshold is the quantile times `1 + margin`.
    pub margin: f64,
    /// Window length the profiles were aggregated over, ns.
    pub window_ns: i64,
    /// Smallest profile (packets) trained on and scored.
    pub min_packets: u32,
}

impl From<&ProfileConfig> for TrainOptions {
    fn from(c: &ProfileConfig) -> Self {
        Self {
            k: c.k,
            max_k: c.max_k.max(2),
            seed: c.seed,
            quantile: c.quantile,
            margin: c.margin,
            window_ns: ns(c.window).max(1),
            min_packets: c.min_packets.max(1),
        }
    }
}

/// A trained profile model: standardisation, centroids and threshold. Persisted as a JSON model file of its own
/// (format `netanom-profile-kmeans-v1`, see [`crate::model_file`]).
#[derive(Clone, Serialize, Deserialize)]
pub struct ProfileModel {
    format: String,
    features: Vec<String>,
    window_ns: i64,
    min_packets: u32,
    seed: u64,
    training_profiles: usize,
    /// Mean silhouette of the chosen k when the rule chose it.
    silhouette: Option<f64>,
    /// Mean and scale of each transformed feature over the training set.
    mean: Vec<f64>,
    scale: Vec<f64>,
    /// Centroids, standardised units.
    centroids: Vec<Vec<f64>>,
    /// Training profiles nearest to each centroid.
    cluster_sizes: Vec<usize>,
    quantile: f64,
    margin: f64,
    /// The quantile of the training distances.
    quantile_distance: f64,
    threshold: f64,
    #[serde(skip)]
    version: String,
}

impl std::fmt::Debug for ProfileModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileModel")
            .field("version", &self.version)
            .field("k", &self.centroids.len())
            .field("threshold", &self.threshold)
            .field("training_profiles", &self.training_profiles)
            .finish_non_exhaustive()
    }
}

/// Each feature scaled as [`PROFILE`] says (`log1p` of rates, counts and sizes; fractions as they are), after
/// non-finite and negative values are taken as 0.
fn transform(raw: &ProfileVector) -> ProfileVector {
    let mut t = [0.0; FEATURES];
    for ((t, x), f) in t.iter_mut().zip(raw).zip(&PROFILE) {
        *t = f.scale.apply(if x.is_finite() { x.max(0.0) } else { 0.0 });
    }
    t
}

/// Back from the transformed scale to original units.
fn untransform(i: usize, t: f64) -> f64 {
    PROFILE[i].scale.invert(t)
}

fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// FNV-1a 64 of the model's serialisation: its version (`km-<hash>`).
fn model_version(model: &ProfileModel) -> String {
    let text = serde_json::to_vec(model).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("km-{h:016x}")
}

/// Fewest training profiles accepted.
pub const MIN_TRAINING_PROFILES: usize = 16;

/// k-means on `pool`. linfa parallelises each assignment step with rayon; on a few hundred profiles a step
/// takes microseconds, less than handing it to other threads, so training uses one thread of its own (the
/// steps are element-wise, so the centroids are the same on any number of threads).
fn kmeans(
    pool: &rayon::ThreadPool,
    data: &ndarray::Array2<f64>,
    k: usize,
    runs: usize,
    seed: u64,
) -> Result<ndarray::Array2<f64>, ProfileError> {
    use linfa::traits::Fit;
    use rand_xoshiro::rand_core::SeedableRng;
    let dataset = linfa::DatasetBase::from(data.clone());
    let model = pool
        .install(|| {
            linfa_clustering::KMeans::params_with_rng(k, rand_xoshiro::Xoshiro256Plus::seed_from_u64(seed))
                .n_runs(runs)
                .max_n_iterations(300)
                .tolerance(1e-6)
                .fit(&dataset)
        })
        .map_err(|source| ProfileError::KMeans { k, source })?;
    Ok(model.centroids().clone())
}

/// Index and squared distance of the centroid nearest to `x` (ties: the lower index).
fn nearest(centroids: &[Vec<f64>], x: &[f64]) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for (i, c) in centroids.iter().enumerate() {
        let d = squared_distance(c, x);
        if d < best.1 {
            best = (i, d);
        }
    }
    best
}

/// Mean silhouette of the clustering `centroids` induces on `sample` (pairwise distances precomputed).
fn silhouette(sample: &[ProfileVector], pairwise: &[f64], centroids: &[Vec<f64>]) -> f64 {
    let n = sample.len();
    let k = centroids.len();
    let labels: Vec<usize> = sample.iter().map(|x| nearest(centroids, x).0).collect();
    let mut sizes = vec![0usize; k];
    for l in &labels {
        sizes[*l] += 1;
    }
    let mut total = 0.0;
    let mut sums = vec![0.0; k];
    for i in 0..n {
        sums.iter_mut().for_each(|s| *s = 0.0);
        for j in 0..n {
            sums[labels[j]] += pairwise[i * n + j];
        }
        let own = labels[i];
        if sizes[own] <= 1 {
            continue; // a singleton's silhouette is 0
        }
        let a = sums[own] / (sizes[own] - 1) as f64;
        let b = (0..k)
            .filter(|c| *c != own && sizes[*c] > 0)
            .map(|c| sums[c] / sizes[c] as f64)
            .fold(f64::INFINITY, f64::min);
        if b.is_finite() && a.max(b) > 0.0 {
            total += (b - a) / a.max(b);
        }
    }
    total / n.max(1) as f64
}

/// Trains the profile model on `raw` (original units), reproducibly from `opts.seed`, and calibrates its
/// threshold.
pub fn train(raw: &[ProfileVector], opts: &TrainOptions) -> Result<ProfileModel, ProfileError> {
    let n = raw.len();
    let need = MIN_TRAINING_PROFILES.max(2 * opts.k);
    if n < need {
        return Err(ProfileError::TooFewProfiles { got: n, need });
    }
    let transformed: Vec<ProfileVector> = raw.iter().map(transform).collect();
    let nf = n as f64;
    let mut mean = vec![0.0; FEATURES];
    let mut scale = vec![0.0; FEATURES];
    for t in &transformed {
        for i in 0..FEATURES {
            mean[i] += t[i] / nf;
        }
    }
    for t in &transformed {
        for i in 0..FEATURES {
            scale[i] += (t[i] - mean[i]).powi(2) / nf;
        }
    }
    for (i, s) in scale.iter_mut().enumerate() {
        *s = s.sqrt().max(min_scale(PROFILE[i].scale));
    }
    let standardised: Vec<ProfileVector> = transformed
        .iter()
        .map(|t| {
            let mut z = [0.0; FEATURES];
            for i in 0..FEATURES {
                z[i] = (t[i] - mean[i]) / scale[i];
            }
            z
        })
        .collect();
    let data = ndarray::Array2::from_shape_fn((n, FEATURES), |(r, c)| standardised[r][c]);
    let to_vecs = |a: ndarray::Array2<f64>| a.rows().into_iter().map(|r| r.to_vec()).collect::<Vec<Vec<f64>>>();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .thread_name(|_| "netanom-kmeans".to_string())
        .build()
        .map_err(ProfileError::Worker)?;

    let (centroids, silhouette_of_k) = if opts.k > 0 {
        (to_vecs(kmeans(&pool, &data, opts.k, RUNS, opts.seed)?), None)
    } else {
        let step = n.div_ceil(SILHOUETTE_SAMPLE);
        let sample: Vec<ProfileVector> = standardised.iter().step_by(step).copied().collect();
        let m = sample.len();
        let mut pairwise = vec![0.0; m * m];
        for i in 0..m {
            for j in (i + 1)..m {
                let d = squared_distance(&sample[i], &sample[j]).sqrt();
                pairwise[i * m + j] = d;
                pairwise[j * m + i] = d;
            }
        }
        let mut best: Option<(f64, usize)> = None;
        for k in 2..=opts.max_k.min(n / 4).max(2) {
            let c = to_vecs(kmeans(&pool, &data, k, SELECTION_RUNS, opts.seed)?);
            let s = silhouette(&sample, &pairwise, &c);
            if best.is_none_or(|(b, _)| s > b) {
                best = Some((s, k));
            }
        }
        let chosen = match best {
            Some((s, k)) if s >= MIN_SILHOUETTE => {
                let c = to_vecs(kmeans(&pool, &data, k, RUNS, opts.seed)?);
                Some((silhouette(&sample, &pairwise, &c), c))
            }
            _ => None,
        };
        match chosen {
            Some((s, c)) if s >= MIN_SILHOUETTE => (c, Some(s)),
            _ => (to_vecs(kmeans(&pool, &data, 1, RUNS, opts.seed)?), None),
        }
    };

    let mut cluster_sizes = vec![0usize; centroids.len()];
    let mut distances: Vec<f64> = standardised
        .iter()
        .map(|z| {
            let (c, d2) = nearest(&centroids, z);
            cluster_sizes[c] += 1;
            d2.sqrt()
        })
        .collect();
    distances.sort_unstable_by(f64::total_cmp);
    let idx = ((opts.quantile * nf).ceil() as usize).clamp(1, n) - 1;
    let quantile_distance = distances[idx];
    // A degenerate training set (all profiles identical) gives distance 0: keep a threshold of one unit of the
    // scale floor so that the smallest visible change is not an anomaly by itself.
    let threshold = (quantile_distance * (1.0 + opts.margin)).max(1.0);
    let mut model = ProfileModel {
        format: FORMAT.to_string(),
        features: PROFILE_NAMES.iter().map(|s| s.to_string()).collect(),
        window_ns: opts.window_ns,
        min_packets: opts.min_packets,
        seed: opts.seed,
        training_profiles: n,
        silhouette: silhouette_of_k,
        mean,
        scale,
        centroids,
        cluster_sizes,
        quantile: opts.quantile,
        margin: opts.margin,
        quantile_distance,
        threshold,
        version: String::new(),
    };
    model.version = model_version(&model);
    Ok(model)
}

impl ProfileModel {
    /// Standardised coordinates of a profile.
    fn standardise(&self, raw: &ProfileVector) -> ProfileVector {
        let t = transform(raw);
        let mut z = [0.0; FEATURES];
        for i in 0..FEATURES {
            z[i] = (t[i] - self.mean[i]) / self.scale[i];
        }
        z
    }

    /// The nearest centroid and the distance to it (standardised units).
    pub fn score(&self, raw: &ProfileVector) -> (usize, f64) {
        let (c, d2) = nearest(&self.centroids, &self.standardise(raw));
        (c, d2.sqrt())
    }

    /// The global threshold.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Number of centroids.
    pub fn k(&self) -> usize {
        self.centroids.len()
    }

    /// Window length of the profiles, ns.
    pub fn window_ns(&self) -> i64 {
        self.window_ns
    }

    /// Smallest profile (packets) scored.
    pub fn min_packets(&self) -> u32 {
        self.min_packets
    }

    /// `km-<16 hex digits>`: a hash of the model.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Centroid `c` in original units.
    pub fn centroid(&self, c: usize) -> Option<ProfileVector> {
        let z = self.centroids.get(c)?;
        let mut v = [0.0; FEATURES];
        for i in 0..FEATURES {
            v[i] = untransform(i, z[i] * self.scale[i] + self.mean[i]);
        }
        Some(v)
    }

    /// Feature indices by their standardised distance to centroid `c`, largest first (ties: vector order);
    /// only features that differ.
    fn ranked(&self, raw: &ProfileVector, c: usize) -> Vec<(usize, f64)> {
        let z = self.standardise(raw);
        let Some(centre) = self.centroids.get(c) else { return Vec::new() };
        let mut r: Vec<(usize, f64)> =
            (0..FEATURES).map(|i| (i, (z[i] - centre[i]).abs())).filter(|(_, d)| *d > 1e-9).collect();
        r.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        r
    }

    /// The features farthest from centroid `c`, strongest first, at most `top`: the profile's value and the
    /// centroid's (the baseline), in original units.
    pub fn explain(&self, raw: &ProfileVector, c: usize, top: usize) -> Vec<Contribution> {
        let Some(centre) = self.centroid(c) else { return Vec::new() };
        self.ranked(raw, c)
            .into_iter()
            .take(top)
            .map(|(i, _)| Contribution {
                name: PROFILE_NAMES[i].to_string(),
                value: crate::anomaly::finite(raw[i]),
                baseline: Some(crate::anomaly::finite(centre[i])),
            })
            .collect()
    }

    /// Writes the model (JSON) to `path`.
    pub fn save(&self, path: &Path) -> Result<(), ProfileError> {
        Ok(model_file::save(path, self)?)
    }

    /// Reads a model written by [`ProfileModel::save`], checking its kind, format, feature list and values.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        Ok(model_file::load(path)?)
    }
}

impl ModelFile for ProfileModel {
    const KIND: ModelKind = ModelKind::Profiles;
    const FEATURE_NAMES: &'static [&'static str] = &PROFILE_NAMES;

    fn features(&self) -> &[String] {
        &self.features
    }

    fn checked(mut self) -> Result<Self, String> {
        let bad = Err;
        if self.mean.len() != FEATURES || self.scale.len() != FEATURES {
            return bad(format!(
                "mean and scale have lengths {} and {}, expected {FEATURES}",
                self.mean.len(),
                self.scale.len()
            ));
        }
        if self.mean.iter().any(|m| !m.is_finite()) || self.scale.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return bad("mean or scale holds a non-finite or non-positive value".into());
        }
        if self.centroids.is_empty()
            || self.centroids.iter().any(|c| c.len() != FEATURES || c.iter().any(|x| !x.is_finite()))
        {
            return bad(format!("centroids must be 1 or more vectors of {FEATURES} finite numbers"));
        }
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return bad(format!("threshold {} is not a positive number", self.threshold));
        }
        if self.window_ns <= 0 || self.min_packets == 0 {
            return bad(format!("window_ns {} and min_packets {} must be positive", self.window_ns, self.min_packets));
        }
        self.version = model_version(&self);
        Ok(self)
    }
}

// ---------------------------------------------------------------------------------------------------------
// Detection.

/// The profile detector: warm-up buffer, then the trained (or loaded) model.
#[derive(Debug)]
pub struct ProfileDetector {
    config: ProfileConfig,
    window_ns: i64,
    min_packets: u32,
    model: Option<ProfileModel>,
    warmup: Vec<ProfileVector>,
    /// Training failed once; do not retry on every profile.
    failed: bool,
    /// Packet time of the last sweep, per packets-topic partition.
    last_sweep_ns: std::collections::HashMap<i32, i64>,
}

impl ProfileDetector {
    /// A detector that trains after warm-up, or uses `model` when given (whose window and `min_packets`
    /// then apply, so profiles are aggregated as the model was trained).
    pub fn new(config: &ProfileConfig, model: Option<ProfileModel>) -> Self {
        let (window_ns, min_packets) = match &model {
            Some(m) => (m.window_ns(), m.min_packets()),
            None => (ns(config.window).max(1), config.min_packets.max(1)),
        };
        Self {
            config: config.clone(),
            window_ns,
            min_packets,
            model,
            warmup: Vec::new(),
            failed: false,
            last_sweep_ns: std::collections::HashMap::new(),
        }
    }

    /// The model, once trained or loaded.
    pub fn model(&self) -> Option<&ProfileModel> {
        self.model.as_ref()
    }

    /// Adds a batch of `host`'s packets to its profile; a window it closes is trained on or scored, and an
    /// anomaly appended to `out`.
    pub fn observe_batch(
        &mut self,
        host: IpAddr,
        packets: &[PacketFeatures],
        profile: &mut HostProfile,
        out: &mut Vec<Anomaly>,
    ) {
        for p in packets {
            if let Some(closed) = profile.observe(p, self.window_ns)
                && let Some(a) = self.closed(host, closed, profile)
            {
                out.push(a.build());
            }
        }
    }

    /// Closes the windows of quiet hosts of one packets-topic partition: at most once per window of that
    /// partition's packet time, every window that ended a full window before `clock_ns` (the partition's packet
    /// clock, so how partitions interleave never splits a host's window). `hosts` are the profiles of every host
    /// of the partition. Anomalies are appended in (window start, host) order.
    pub fn sweep<'a>(
        &mut self,
        partition: i32,
        clock_ns: i64,
        hosts: impl Iterator<Item = (IpAddr, &'a mut HostProfile)>,
        out: &mut Vec<Anomaly>,
    ) {
        // A clock that moved back (a partition that left and came back) sweeps at once.
        match self.last_sweep_ns.get(&partition) {
            Some(t) if (0..self.window_ns).contains(&clock_ns.saturating_sub(*t)) => return,
            _ => self.last_sweep_ns.insert(partition, clock_ns),
        };
        let (before, w) = (clock_ns.saturating_sub(self.window_ns), self.window_ns);
        self.close_all(hosts, out, |p| p.close_ended(before, w));
    }

    fn close_all<'a>(
        &mut self,
        hosts: impl Iterator<Item = (IpAddr, &'a mut HostProfile)>,
        out: &mut Vec<Anomaly>,
        mut close: impl FnMut(&mut HostProfile) -> Option<ClosedProfile>,
    ) {
        let mut closed: Vec<(IpAddr, ClosedProfile, &mut HostProfile)> =
            hosts.filter_map(|(h, p)| close(p).map(|c| (h, c, p))).collect();
        closed.sort_by_key(|(h, c, _)| (c.window_start_ns, *h));
        for (host, c, profile) in closed {
            if let Some(a) = self.closed(host, c, profile) {
                out.push(a.build());
            }
        }
    }

    /// A closed window: trained on during warm-up, scored afterwards.
    fn closed(&mut self, host: IpAddr, c: ClosedProfile, profile: &mut HostProfile) -> Option<AnomalyParts> {
        if c.packets < self.min_packets {
            return None;
        }
        let Some(model) = &self.model else {
            self.learn(c.features);
            return None;
        };
        let (cluster, distance) = model.score(&c.features);
        let global = model.threshold();
        let h = &mut profile.history;
        let own = (h.n >= self.config.per_host_min_history)
            .then(|| (h.mean + self.config.per_host_sigmas * h.sd()).max(global));
        let threshold = own.unwrap_or(global);
        // Answers to what others started (reply_fraction) are reported as the initiator's anomaly, not this one.
        let answering = c.features[Profile::ReplyFraction.i()] >= self.config.max_reply_fraction
            && self.config.max_reply_fraction < 1.0;
        if distance > threshold && !answering {
            return Some(profile_anomaly(host, model, &c, cluster, distance, threshold, own.is_some()));
        }
        if distance <= global {
            h.push(distance);
        }
        None
    }

    fn learn(&mut self, v: ProfileVector) {
        if self.failed {
            return;
        }
        self.warmup.push(v);
        if self.warmup.len() < self.config.warmup_profiles {
            return;
        }
        let started = std::time::Instant::now();
        let opts = TrainOptions {
            window_ns: self.window_ns,
            min_packets: self.min_packets,
            ..TrainOptions::from(&self.config)
        };
        match train(&self.warmup, &opts) {
            Ok(m) => {
                tracing::info!(
                    model_version = m.version(),
                    k = m.k(),
                    threshold = m.threshold(),
                    profiles = self.warmup.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "profile model trained"
                );
                self.model = Some(m);
            }
            Err(e) => {
                tracing::error!(error = %e, "profile model training failed; profile detector disabled");
                self.failed = true;
            }
        }
        self.warmup = Vec::new();
    }
}

impl DetectorKind for ProfileDetector {
    type Config = ProfileConfig;
    type State = HostProfile;
    const PRODUCES: &'static [AnomalyKind] = &[AnomalyKind::Profile];

    fn validate(config: &ProfileConfig, cx: &Context) -> Vec<ConfigError> {
        config.validate(cx.idle_timeout)
    }

    fn build(config: &ProfileConfig, setup: &mut Setup<'_>) -> Option<Self> {
        let model = setup.take_model::<ProfileModel>();
        config.enabled.then(|| Self::new(config, model))
    }

    fn observe_windows(
        &mut self,
        host: IpAddr,
        batch: &PacketBatch,
        profile: &mut HostProfile,
        out: &mut Vec<Anomaly>,
    ) {
        self.observe_batch(host, &batch.packets, profile, out);
    }

    fn close_windows<'a>(
        &mut self,
        partition: i32,
        clock_ns: i64,
        hosts: impl Iterator<Item = (IpAddr, &'a mut HostProfile)>,
        out: &mut Vec<Anomaly>,
    ) {
        self.sweep(partition, clock_ns, hosts, out);
    }

    /// Closes every open window of `hosts`, whatever its end: the input ends here (a drained capture, the end
    /// of a replay range). Anomalies are appended in (window start, host) order.
    fn flush<'a>(&mut self, hosts: impl Iterator<Item = (IpAddr, &'a mut HostProfile)>, out: &mut Vec<Anomaly>) {
        let w = self.window_ns;
        self.close_all(hosts, out, |p| p.flush(w));
    }
}

/// Builds the profile anomaly of `host` for the closed window `c`, nearest to centroid `cluster`.
pub fn profile_anomaly(
    host: IpAddr,
    model: &ProfileModel,
    c: &ClosedProfile,
    cluster: usize,
    distance: f64,
    threshold: f64,
    own_threshold: bool,
) -> AnomalyParts {
    let features = model.explain(&c.features, cluster, 4);
    let detail: Vec<String> = model
        .ranked(&c.features, cluster)
        .into_iter()
        .take(3)
        .zip(&features)
        .map(|((i, _), f)| format!("{} (usually {})", phrase(i, f.value), number(i, f.baseline.unwrap_or(0.0))))
        .collect();
    AnomalyParts {
        host,
        kind: AnomalyKind::Profile,
        window_start_ns: c.first_ns.clamp(c.window_start_ns, c.window_end_ns),
        window_end_ns: c.window_end_ns,
        score: distance,
        threshold,
        target: None,
        reason: format!(
            "{host} behaved unlike any usual host over {}: {}; distance {distance:.2} from the nearest of {} usual \
             profiles, threshold {threshold:.2}{}; {} packets",
            seconds(c.window_end_ns.saturating_sub(c.window_start_ns)),
            detail.join(", "),
            model.k(),
            if own_threshold { " (this host's own)" } else { "" },
            c.packets,
        ),
        features,
        sample: c.sample.as_ref().map(|p| p.summary(host)).unwrap_or_default(),
        model_version: model.version().to_string(),
    }
}

/// A feature value as a number with its unit: `3.10`, `1.2 kB/s`, `45%`, `157 B`.
fn number(i: usize, v: f64) -> String {
    match i {
        0 | 2 if v >= 100.0 => format!("{v:.0}"),
        0 | 2 if v >= 10.0 => format!("{v:.1}"),
        0 | 2 => format!("{v:.2}"),
        1 if v >= 1e6 => format!("{:.1} MB/s", v / 1e6),
        1 if v >= 1e3 => format!("{:.1} kB/s", v / 1e3),
        1 => format!("{v:.0} B/s"),
        3 | 4 => format!("{:.0}", v.max(0.0)),
        12 | 13 => format!("{v:.0} B"),
        _ => format!("{:.0}%", v * 100.0),
    }
}

/// A feature value in words: `3.10 new connections/s`, `45% SYN`, `1 destination port`.
fn phrase(i: usize, v: f64) -> String {
    let n = number(i, v);
    let plural = |one: &str, many: &str| if n == "1" { format!("{n} {one}") } else { format!("{n} {many}") };
    match i {
        0 => format!("{n} packets/s"),
        2 => format!("{n} new connections/s"),
        3 => plural("destination", "destinations"),
        4 => plural("destination port", "destination ports"),
        5 => format!("{n} TCP"),
        6 => format!("{n} UDP"),
        7 => format!("{n} ICMP"),
        8 => format!("{n} SYN"),
        9 => format!("{n} FIN"),
        10 => format!("{n} RST"),
        11 => format!("{n} replies"),
        12 => format!("mean packet {n}"),
        13 => format!("packet size spread {n}"),
        _ => n,
    }
}

// ---------------------------------------------------------------------------------------------------------
// Training sets from captures.

/// The profiles of a stream of packet batches, closed as the detector closes them (a host's next window, the
/// sweep one window after the packet clock passed) plus every host's last window at the end: the training set
/// `netanom train` builds from captures. Bounded: at most `max_hosts` hosts with an open window (packets of
/// further hosts are skipped) and `max_profiles` profiles. Batches outside the default packet-time skew of the
/// stream (`crate::time`) are skipped, as the detector dead-letters them.
#[derive(Debug)]
pub struct ProfileCollector {
    window_ns: i64,
    min_packets: u32,
    max_hosts: usize,
    max_profiles: usize,
    hosts: std::collections::BTreeMap<IpAddr, HostProfile>,
    clock_ns: i64,
    last_sweep_ns: i64,
    time: PacketClock,
    profiles: Vec<ProfileVector>,
}

impl ProfileCollector {
    /// An empty collector for the `config` windows.
    pub fn new(config: &ProfileConfig, max_hosts: usize, max_profiles: usize) -> Self {
        Self {
            window_ns: ns(config.window).max(1),
            min_packets: config.min_packets.max(1),
            max_hosts: max_hosts.max(1),
            max_profiles,
            hosts: std::collections::BTreeMap::new(),
            clock_ns: i64::MIN,
            last_sweep_ns: i64::MIN,
            time: PacketClock::default(),
            profiles: Vec::new(),
        }
    }

    fn keep(&mut self, c: ClosedProfile) {
        if c.packets >= self.min_packets && self.profiles.len() < self.max_profiles {
            self.profiles.push(c.features);
        }
    }

    /// Adds one batch.
    pub fn push(&mut self, batch: &PacketBatch) {
        let (Some(first), Some(last)) =
            (batch.packets.iter().map(|p| p.ts_ns).min(), batch.packets.iter().map(|p| p.ts_ns).max())
        else {
            return;
        };
        if matches!(self.time.admit(&SkewConfig::default(), first, last), Admission::Rejected(_)) {
            return;
        }
        if !self.hosts.contains_key(&batch.source) && self.hosts.len() >= self.max_hosts {
            return;
        }
        let h = self.hosts.entry(batch.source).or_default();
        let mut closed = Vec::new();
        for p in &batch.packets {
            self.clock_ns = self.clock_ns.max(p.ts_ns);
            closed.extend(h.observe(p, self.window_ns));
        }
        for c in closed {
            self.keep(c);
        }
        if self.clock_ns.saturating_sub(self.last_sweep_ns) >= self.window_ns {
            self.last_sweep_ns = self.clock_ns;
            let before = self.clock_ns.saturating_sub(self.window_ns);
            let w = self.window_ns;
            let mut ended = Vec::new();
            self.hosts.retain(|_, h| match h.close_ended(before, w) {
                Some(c) => {
                    ended.push(c);
                    false
                }
                None => h.acc.packets > 0,
            });
            for c in ended {
                self.keep(c);
            }
        }
    }

    /// The profiles, every host's last window included.
    pub fn finish(mut self) -> Vec<ProfileVector> {
        let w = self.window_ns;
        let last: Vec<ClosedProfile> = self.hosts.values_mut().filter_map(|h| h.flush(w)).collect();
        for c in last {
            self.keep(c);
        }
        self.profiles
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{T0, benign_batch, packet, syn};
    use netanom_schemas::Direction;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const W: i64 = 10_000_000_000;

    fn ip(a: u8, b: u8) -> IpAddr {
        IpAddr::from([10, 0, a, b])
    }

    /// Ordinary profiles of two kinds: browsing clients and the servers answering them.
    fn training(n: usize, seed: u64) -> Vec<ProfileVector> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let pps: f64 = rng.gen_range(2.0..30.0);
                if i % 3 == 0 {
                    let len = rng.gen_range(900.0..1400.0);
                    [
                        pps,
                        pps * len,
                        0.0,
                        0.0,
                        0.0,
                        1.0,
                        0.0,
                        0.0,
                        0.0,
                        0.01,
                        0.0,
                        1.0,
                        len,
                        rng.gen_range(300.0..500.0),
                    ]
                } else {
                    let len = rng.gen_range(150.0..400.0);
                    let tcp = rng.gen_range(0.85..1.0);
                    [
                        pps,
                        pps * len,
                        rng.gen_range(0.1..1.0),
                        rng.gen_range(1.0..8.0f64).round(),
                        rng.gen_range(1.0..3.0f64).round(),
                        tcp,
                        1.0 - tcp,
                        0.0,
                        rng.gen_range(0.0..0.08),
                        rng.gen_range(0.0..0.05),
                        0.0,
                        0.0,
                        len,
                        rng.gen_range(100.0..400.0),
                    ]
                }
            })
            .collect()
    }

    /// A slow SYN scan over one window: 3 new connections/s, 30 ports of one host, nothing else.
    fn scan_profile() -> ProfileVector {
        [3.0, 180.0, 3.0, 1.0, 30.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 60.0, 0.0]
    }

    fn opts() -> TrainOptions {
        TrainOptions { k: 0, max_k: 8, seed: 7, quantile: 1.0, margin: 0.5, window_ns: W, min_packets: 20 }
    }

    fn closed(features: ProfileVector) -> ClosedProfile {
        ClosedProfile { window_start_ns: T0, window_end_ns: T0 + W, first_ns: T0, packets: 100, features, sample: None }
    }

    #[test]
    fn a_window_aggregates_rates_fan_out_protocols_flags_and_sizes() {
        use netanom_schemas::records::tcp_flags::{ACK, PSH};
        let mut h = HostProfile::default();
        let t = T0 + 3 * W + 1_000;
        // 10 SYNs to 10 hosts on 443, 10 data packets on one of the connections, 5 DNS queries (new UDP flows)
        // and 5 replies on a connection the other side opened.
        for k in 0..10u8 {
            assert!(h.observe(&syn(t + i64::from(k), ip(1, k), 443), W).is_none());
        }
        for k in 0..10 {
            let p = packet(t + 100 + k, ip(1, 0), 40_443, 443, 6, ACK | PSH, 1054, 5, Direction::Forward);
            assert!(h.observe(&p, W).is_none());
        }
        for k in 0..5 {
            let p = packet(t + 200 + k, ip(9, 9), 5_000 + k as u16, 53, 17, 0, 80, 1, Direction::Forward);
            assert!(h.observe(&p, W).is_none());
        }
        for k in 0..5 {
            let p = packet(t + 300 + k, ip(7, 7), 22, 50_000, 6, ACK, 60, 9, Direction::Reverse);
            assert!(h.observe(&p, W).is_none());
        }
        let c = h.observe(&syn(t + W, ip(2, 2), 80), W).expect("a packet past the end closes the window");
        assert_eq!((c.window_start_ns, c.window_end_ns, c.packets), (T0 + 3 * W, T0 + 4 * W, 30));
        assert_eq!(c.first_ns, t, "the window's first packet");
        let v = c.features;
        let bytes = 10.0 * 60.0 + 10.0 * 1054.0 + 5.0 * 80.0 + 5.0 * 60.0;
        assert_eq!(v[0], 3.0, "packets/s");
        assert_eq!(v[1], bytes / 10.0, "bytes/s");
        assert_eq!(v[2], 1.5, "10 SYNs and 5 DNS flows opened in 10 s");
        assert!((v[3] - 11.0).abs() < 0.5, "11 destinations contacted, replies not counted: {}", v[3]);
        assert!((v[4] - 2.0).abs() < 0.5, "ports 443 and 53; the reply's 50000 is not one: {}", v[4]);
        assert_eq!((v[5], v[6], v[7]), (25.0 / 30.0, 5.0 / 30.0, 0.0));
        assert_eq!((v[8], v[9], v[10], v[11]), (10.0 / 30.0, 0.0, 0.0, 5.0 / 30.0));
        assert_eq!(v[12], bytes / 30.0);
        assert!(v[13] > 0.0);
        let sample = c.sample.expect("a sample packet");
        assert!(sample.opens_flow() && sample.dst_port == 443, "the first opening packet is the sample");
    }

    #[test]
    fn distinct_sketch_counts_small_sets_within_one_and_large_ones_within_a_few_percent() {
        for n in [0u32, 1, 2, 5, 10, 20, 100, 500, 1_500] {
            let (mut addresses, mut ports) = (Distinct::default(), Distinct::default());
            for k in 0..n {
                for _ in 0..3 {
                    addresses.insert(address_key(&IpAddr::from((0x0a00_0000 + k).to_be_bytes())));
                    ports.insert(u64::from(k));
                }
            }
            for d in [addresses, ports] {
                let e = d.estimate();
                let share = if n <= 500 { 0.1 } else { 0.2 };
                let tolerance = if n <= 20 { 1.0 } else { share * f64::from(n) };
                assert!((e - f64::from(n)).abs() <= tolerance, "{n} distinct values estimated as {e}");
            }
        }
        let mut full = Distinct::default();
        (0..100_000u64).for_each(|k| full.insert(k));
        assert!(full.estimate().is_finite() && full.estimate() > 3_000.0, "saturates, finite");
    }

    #[test]
    fn quiet_hosts_are_closed_by_the_sweep_and_late_packets_count_in_the_next_window() {
        let cfg = ProfileConfig { warmup_profiles: 1_000, ..ProfileConfig::default() };
        let mut det = ProfileDetector::new(&cfg, None);
        let mut hosts = crate::state::HostMap::new(&crate::state::StateConfig::default());
        let (a, b) = (ip(1, 1), ip(2, 2));
        let mut out = Vec::new();
        let burst = |t0: i64| (0..25).map(|k| syn(t0 + k * 1_000_000, ip(5, 5), 443)).collect::<Vec<_>>();
        let s = hosts.entry(a, 0, T0 + W / 2);
        det.observe_batch(a, &burst(T0), &mut s.profile, &mut out);
        det.sweep(0, hosts.clock_ns(0), hosts.hosts_of(0).map(|(h, s)| (h, &mut s.profile)), &mut out);
        assert!(det.warmup.is_empty(), "a's window is still open");
        // b's packets move the clock 2.5 windows on: a's window ended more than a window ago.
        let s = hosts.entry(b, 0, T0 + 25 * W / 10);
        det.observe_batch(b, &burst(T0 + 25 * W / 10), &mut s.profile, &mut out);
        det.sweep(0, hosts.clock_ns(0), hosts.hosts_of(0).map(|(h, s)| (h, &mut s.profile)), &mut out);
        assert_eq!(det.warmup.len(), 1, "the sweep closed a's window");
        // A late packet of a's closed window opens the next one, never the closed window again.
        let s = hosts.entry(a, 0, T0 + 1);
        det.observe_batch(a, &burst(T0 + 1), &mut s.profile, &mut out);
        let p = &mut hosts.get_mut(&a).unwrap().profile;
        assert_eq!(p.acc.start_ns, T0 + W);
        let c = p.flush(W).unwrap();
        assert_eq!((c.window_start_ns, c.packets), (T0 + W, 25));
        assert!(out.is_empty(), "no model yet, nothing scored");
    }

    #[test]
    fn threshold_is_the_calibrated_quantile_of_training_distances() {
        let data = training(400, 1);
        for (quantile, margin) in [(1.0, 0.5), (0.9, 0.0), (0.99, 0.25)] {
            let m = train(&data, &TrainOptions { quantile, margin, ..opts() }).unwrap();
            let mut d: Vec<f64> = data.iter().map(|v| m.score(v).1).collect();
            d.sort_by(f64::total_cmp);
            let q = d[(quantile * 400.0).ceil() as usize - 1];
            assert!((m.threshold() - q * (1.0 + margin)).abs() < 1e-9, "{quantile}: {} vs {q}", m.threshold());
            let flagged = d.iter().filter(|x| **x > m.threshold()).count();
            if margin == 0.0 {
                assert_eq!(flagged, 40, "the 0.9 quantile flags a tenth of the training set");
            } else {
                assert!(flagged <= 4, "{flagged}");
            }
        }
        // The two kinds of traffic are two clusters; the rule finds them.
        let m = train(&data, &opts()).unwrap();
        assert_eq!(m.k(), 2, "silhouette rule");
        assert!(m.score(&scan_profile()).1 > m.threshold());
    }

    #[test]
    fn degenerate_and_small_training_sets() {
        let same = vec![training(1, 3)[0]; 40];
        let m = train(&same, &opts()).unwrap();
        assert_eq!(m.k(), 1, "no structure, one centroid");
        assert_eq!(m.threshold(), 1.0, "a floor of one scale unit");
        assert_eq!(m.score(&same[0]).1, 0.0);
        assert!(matches!(
            train(&training(10, 3), &opts()),
            Err(ProfileError::TooFewProfiles { got: 10, need: MIN_TRAINING_PROFILES })
        ));
        assert!(matches!(
            train(&training(30, 3), &TrainOptions { k: 20, ..opts() }),
            Err(ProfileError::TooFewProfiles { .. })
        ));
    }

    #[test]
    fn same_seed_and_profiles_give_the_same_model_and_a_file_reloads_it() {
        let data = training(300, 2);
        let a = train(&data, &opts()).unwrap();
        let b = train(&data, &opts()).unwrap();
        assert_eq!(a.version(), b.version());
        assert!(a.version().starts_with("km-"));
        assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
        // Persisted in a file of its own.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.profiles.json");
        a.save(&path).unwrap();
        let c = ProfileModel::load(&path).unwrap();
        assert_eq!(c.version(), a.version());
        for v in data.iter().take(50).chain([&scan_profile()]) {
            assert_eq!(a.score(v).1.to_bits(), c.score(v).1.to_bits());
        }
        // A file listing other features is refused with the differences named.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("\"rst_fraction\"", "\"urg_fraction\"", 1)).unwrap();
        let err = ProfileModel::load(&path).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "model.profiles.json was trained on other features than this build: not in this build \
                 [\"urg_fraction\"]; missing from the file [\"rst_fraction\"]"
            ),
            "{err}"
        );
        // A damaged file is refused with the file named.
        std::fs::write(&path, text.replace("\"threshold\":", "\"threshold\":-")).unwrap();
        let err = ProfileModel::load(&path).unwrap_err().to_string();
        assert!(err.contains("model.profiles.json") && err.contains("threshold"), "{err}");
        // A file of another kind is named.
        let mut s = crate::features::FeatureScratch::default();
        let vectors: Vec<_> =
            (0..300).map(|i| crate::features::batch_features(&benign_batch(i).packets, &mut s)).collect();
        let forest_opts =
            crate::forest::TrainOptions::from(&crate::forest::ForestConfig { trees: 10, ..Default::default() });
        crate::forest::train(&vectors, &forest_opts).unwrap().save(&path).unwrap();
        let err = ProfileModel::load(&path).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "model.profiles.json is an isolation-forest model (format netanom-eif-v1), expected a host-profile \
                 (k-means) model"
            ),
            "{err}"
        );
    }

    /// A profile on the line from `near` to `far` whose distance is about `target`.
    fn at_distance(m: &ProfileModel, near: &ProfileVector, far: &ProfileVector, target: f64) -> ProfileVector {
        let point = |t: f64| -> ProfileVector { std::array::from_fn(|i| near[i] + t * (far[i] - near[i])) };
        let (mut lo, mut hi) = (0.0, 1.0);
        for _ in 0..60 {
            let mid = (lo + hi) / 2.0;
            if m.score(&point(mid)).1 < target { lo = mid } else { hi = mid }
        }
        point(hi)
    }

    #[test]
    fn a_volatile_host_earns_its_own_threshold_never_below_the_global_one() {
        let data = training(300, 4);
        let m = train(&data, &opts()).unwrap();
        let g = m.threshold();
        let near = data.iter().min_by(|a, b| m.score(a).1.total_cmp(&m.score(b).1)).unwrap();
        let far = [300.0, 18_000.0, 300.0, 1.0, 1_000.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 60.0, 0.0];
        let at = |x: f64| at_distance(&m, near, &far, x * g);
        // The probes between `near` (a training profile) and `far` inherit their reply share from `near`; the
        // thresholds, not the reply guard, are the point here, so the guard is off.
        let cfg = ProfileConfig {
            per_host_min_history: 10,
            per_host_sigmas: 3.0,
            max_reply_fraction: 1.0,
            ..ProfileConfig::default()
        };
        let mut det = ProfileDetector::new(&cfg, Some(m.clone()));
        let (mut volatile, mut calm) = (HostProfile::default(), HostProfile::default());
        for i in 0..10 {
            assert!(det.closed(ip(1, 1), closed(at(if i % 2 == 0 { 0.1 } else { 0.95 })), &mut volatile).is_none());
            assert!(det.closed(ip(2, 2), closed(at(0.1)), &mut calm).is_none());
        }
        assert_eq!((volatile.history.n, calm.history.n), (10, 10));
        // 1.3 × global: beyond the calm host's threshold (the global one), within the volatile host's own.
        let probe = at(1.3);
        assert!(det.closed(ip(1, 1), closed(probe), &mut volatile).is_none());
        let a = det.closed(ip(2, 2), closed(probe), &mut calm).expect("the calm host is flagged").build();
        assert!((a.threshold - g).abs() < 1e-9, "never below the global threshold");
        assert!(a.reason.contains("(this host's own)"), "{}", a.reason);
        // Far enough, the volatile host is flagged too, against its own (higher) threshold; flagged profiles
        // never enter the history, so attacking does not raise it.
        let a = det.closed(ip(1, 1), closed(at(4.0)), &mut volatile).expect("flagged").build();
        assert!(a.threshold > 1.3 * g, "{} vs {g}", a.threshold);
        assert_eq!(volatile.history.n, 10);
    }

    #[test]
    fn anomalies_say_which_features_drove_them() {
        let m = train(&training(300, 5), &opts()).unwrap();
        let mut det = ProfileDetector::new(&ProfileConfig::default(), Some(m.clone()));
        let mut c = closed(scan_profile());
        c.sample = Some(syn(T0, ip(3, 3), 445));
        let a = det.closed(ip(6, 6), c, &mut HostProfile::default()).expect("a scan is flagged").build();
        assert_eq!(a.kind, AnomalyKind::Profile);
        assert_eq!(a.id, format!("profile:10.0.6.6:{T0}:{}", T0 + W));
        assert_eq!((a.window_start_ns, a.window_end_ns), (T0, T0 + W));
        assert!(a.score > a.threshold && a.model_version == m.version());
        // A host whose first packet of the window came late: its evidence starts there, not at the window.
        let late = ClosedProfile { first_ns: T0 + W / 3, ..closed(scan_profile()) };
        let b = det.closed(ip(6, 7), late, &mut HostProfile::default()).expect("flagged").build();
        assert_eq!((b.window_start_ns, b.window_end_ns), (T0 + W / 3, T0 + W));
        assert_eq!(a.features.len(), 4);
        let names: Vec<&str> = a.features.iter().map(|f| f.name.as_str()).collect();
        assert!(names.contains(&"syn_fraction") && names.contains(&"distinct_dst_ports"), "{names:?}");
        let (cluster, _) = m.score(&scan_profile());
        let centre = m.centroid(cluster).unwrap();
        for f in &a.features {
            let i = PROFILE_NAMES.iter().position(|n| *n == f.name).unwrap();
            assert_eq!(f.value, scan_profile()[i], "value in original units");
            assert!((f.baseline.unwrap() - centre[i]).abs() < 1e-9, "baseline: the nearest centroid");
        }
        assert!(a.reason.contains("100% SYN (usually"), "{}", a.reason);
        assert!(a.reason.contains("30 destination ports (usually"), "{}", a.reason);
        assert_eq!(a.sample, "10.0.6.6:40445 > 10.0.3.3:445 TCP [S] len 60");
    }

    #[test]
    fn a_host_that_only_answers_is_not_reported() {
        let m = train(&training(300, 5), &opts()).unwrap();
        let mut det = ProfileDetector::new(&ProfileConfig::default(), Some(m.clone()));
        // A scanned server's window: 120 packets/s, 79 % RSTs, every packet a reply (the synth scan victim).
        let backscatter = [120.0, 20_000.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.79, 1.0, 60.0, 20.0];
        assert!(m.score(&backscatter).1 > m.threshold(), "far from every usual profile");
        assert!(det.closed(ip(4, 4), closed(backscatter), &mut HostProfile::default()).is_none());
        // The same window with 80 % replies is still reported, and with the guard off, so is the first.
        let mut own = backscatter;
        own[Profile::ReplyFraction.i()] = 0.8;
        assert!(det.closed(ip(4, 4), closed(own), &mut HostProfile::default()).is_some());
        let cfg = ProfileConfig { max_reply_fraction: 1.0, ..ProfileConfig::default() };
        let mut all = ProfileDetector::new(&cfg, Some(m));
        assert!(all.closed(ip(4, 4), closed(backscatter), &mut HostProfile::default()).is_some());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn hostile_values_never_panic(
            ts in any::<i64>(),
            ts2 in any::<i64>(),
            window in 1i64..=i64::MAX,
            len in any::<u32>(),
            flags in any::<u8>(),
            proto in any::<u8>(),
            flow_packets in any::<u64>(),
            raw in proptest::array::uniform14(any::<f64>()),
        ) {
            let mut h = HostProfile::default();
            let times = [ts, ts2, ts.wrapping_add(window), i64::MAX, i64::MIN, ts];
            let mut done = Vec::new();
            for (k, t) in times.iter().enumerate() {
                let dir = if k % 2 == 0 { Direction::Forward } else { Direction::Reverse };
                let p = packet(*t, ip(1, k as u8), k as u16, k as u16, proto, flags, len, flow_packets, dir);
                done.extend(h.observe(&p, window));
            }
            done.extend(h.close_ended(ts, window));
            done.extend(h.flush(window));
            for c in &done {
                prop_assert!(c.features.iter().all(|x| x.is_finite()));
                prop_assert!(c.window_start_ns <= c.window_end_ns);
            }
            let mut data = training(40, 9);
            data[0] = raw;
            data[1] = [f64::NAN; FEATURES];
            data[2] = [f64::INFINITY; FEATURES];
            data[3] = [-f64::MAX; FEATURES];
            data[4] = [f64::MAX; FEATURES];
            for k in [0, 1, 3] {
                let m = train(&data, &TrainOptions { k, ..opts() }).unwrap();
                prop_assert!(m.threshold().is_finite() && m.threshold() > 0.0);
                for v in [&raw, &data[1], &data[4]] {
                    let (c, d) = m.score(v);
                    prop_assert!(d.is_finite() && c < m.k());
                    let mut det = ProfileDetector::new(&ProfileConfig::default(), Some(m.clone()));
                    if let Some(a) = det.closed(ip(9, 9), closed(*v), &mut HostProfile::default()) {
                        let a = a.build();
                        prop_assert!(a.features.iter().all(|f| f.value.is_finite()));
                    }
                }
            }
        }
    }
}
