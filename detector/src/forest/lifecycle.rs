//! Model lifecycle of the isolation detector: scheduled retraining on recent traffic ([`Retrainer`]) and
//! publication of the model in force to readers outside the engine ([`ModelFeed`], read by the scoring API).
//! Owns the reservoir, the guard that keeps anomalous traffic out of it, the schedule and the background
//! training thread; training itself, generation seeds and versions belong to [`crate::forest::model`].
//!
//! # Retraining (`[detector.forest] retrain_every`)
//!
//! Every batch vector the current model scores is a candidate for the reservoir: `retrain_samples` vectors
//! drawn uniformly from the interval's candidates (Algorithm R with a seeded ChaCha8 RNG, so the sample is a
//! function of the input order). Two guards keep traffic already judged anomalous out of it:
//!
//! - a vector scoring above the current threshold is never sampled;
//! - a vector whose host was flagged by any detector (an anomaly of any kind naming it) from `retrain_guard`
//!   before the vector up to the retraining is left out: when it is offered, and again when the training set
//!   is taken, for flags raised after it.
//!
//! The second guard is the one that holds against a slow ramp. The score guard alone admits each step of a
//! scan that stays just under the threshold, and the next generation, calibrated on those steps, raises the
//! threshold for the next step; the rules flag a scanner by fixed thresholds (24 ports, 64 hosts, 200 new
//! connections/s), so its traffic stays out of every sample.
//!
//! At the first batch whose packet time reaches the schedule, the clean vectors go to a background thread
//! (`netanom-retrain`) that trains generation g + 1 with the seed [`crate::forest::generation_seed`]`(seed,
//! g + 1)` and saves it to `save_path`; the reservoir starts over. The new model takes over at the first batch
//! [`SWAP_DELAY`] of packet time later, waiting for the thread if it has not finished. On live traffic the
//! thread has seconds for a job of 0.2–0.6 s (512 vectors, 50 trees), so the hot path does not wait; a fast
//! replay waits there, and in exchange the switch, and so every anomaly, is a deterministic function of the
//! input. An interval with fewer clean vectors than `sample_size` keeps the current model (logged).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::watch;

use super::config::ForestConfig;
use super::model::{ForestError, TrainOptions, TrainedForest, train_generation};
use crate::features::FeatureVector;
use crate::time::ns;

/// Packet time between the start of a retraining and the batch at which its model takes over.
pub const SWAP_DELAY: Duration = Duration::from_secs(5);

/// Mixed into the configured seed for the reservoir's RNG, so it does not replay the training RNG's stream.
const RESERVOIR_SALT: u64 = 0x7265_7365_7276_6f69;

/// The model a running detector scores with, for readers in other tasks (the scoring API). Clones share the
/// feed; it holds the latest model only, and reading it never waits for the detector. One detector at a time
/// publishes ([`ModelFeed::claim`]): several detectors of one process (`netanom run`) each train their own
/// model on their own share of the hosts, and the feed serves one of them rather than flapping between them.
#[derive(Clone)]
pub struct ModelFeed {
    model: Arc<watch::Sender<Option<Arc<TrainedForest>>>>,
    claimed: Arc<AtomicBool>,
}

impl Default for ModelFeed {
    fn default() -> Self {
        Self { model: Arc::new(watch::Sender::new(None)), claimed: Arc::default() }
    }
}

impl std::fmt::Debug for ModelFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let version = self.model.borrow().as_ref().map(|m| m.version().to_string());
        f.debug_tuple("ModelFeed").field(&version).finish()
    }
}

/// The right to publish to a [`ModelFeed`], held by one detector; released when dropped (the last model
/// stays in the feed).
#[derive(Debug)]
pub struct ModelPublisher(ModelFeed);

impl Drop for ModelPublisher {
    fn drop(&mut self) {
        self.0.claimed.store(false, Ordering::Release);
    }
}

impl ModelPublisher {
    /// Puts `model` in the feed unless it is already there (the same `Arc`); true when it changed.
    pub fn publish(&self, model: Option<&Arc<TrainedForest>>) -> bool {
        self.0.model.send_if_modified(|current| {
            let same = match (current.as_ref(), model) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if !same {
                *current = model.cloned();
            }
            !same
        })
    }
}

impl ModelFeed {
    /// The publisher of this feed, or `None` while another detector holds it.
    pub fn claim(&self) -> Option<ModelPublisher> {
        (!self.claimed.swap(true, Ordering::AcqRel)).then(|| ModelPublisher(self.clone()))
    }

    /// The model in force, if one was trained or loaded.
    pub fn current(&self) -> Option<Arc<TrainedForest>> {
        self.model.borrow().clone()
    }
}

/// One vector of the reservoir, with what the guard needs.
#[derive(Debug, Clone, Copy)]
struct Sample {
    host: IpAddr,
    ts_ns: i64,
    raw: FeatureVector,
}

/// Hosts flagged by any detector with the packet time of their latest flag; at most `capacity` of them.
#[derive(Debug)]
struct Flags {
    last: HashMap<IpAddr, i64>,
    capacity: usize,
}

impl Flags {
    fn note(&mut self, host: IpAddr, ts_ns: i64, horizon_ns: i64) {
        let t = self.last.entry(host).or_insert(ts_ns);
        *t = (*t).max(ts_ns);
        if self.last.len() > self.capacity {
            self.shrink(horizon_ns);
        }
    }

    /// True when `host` was flagged at `from_ns` or later.
    fn since(&self, host: &IpAddr, from_ns: i64) -> bool {
        self.last.get(host).is_some_and(|t| *t >= from_ns)
    }

    fn forget_before(&mut self, horizon_ns: i64) {
        self.last.retain(|_, t| *t >= horizon_ns);
    }

    /// Over capacity: forgets the flags older than `horizon_ns` (they can no longer exclude anything), and if
    /// that leaves more than three quarters of the capacity, the oldest flags down to half of it (ties broken
    /// by address, so the result does not depend on the map's order). Amortised O(1) per flag.
    fn shrink(&mut self, horizon_ns: i64) {
        self.forget_before(horizon_ns);
        if self.last.len() * 4 <= self.capacity * 3 {
            return;
        }
        let keep = (self.capacity / 2).max(1);
        let mut by_age: Vec<(i64, IpAddr)> = self.last.iter().map(|(h, t)| (*t, *h)).collect();
        let cut = by_age.len().saturating_sub(keep);
        if cut == 0 {
            return;
        }
        by_age.select_nth_unstable(cut - 1);
        for (_, host) in &by_age[..cut] {
            self.last.remove(host);
        }
        tracing::warn!(
            forgotten = cut,
            capacity = self.capacity,
            "retraining guard full (the host capacity of detector.state in flagged hosts): the oldest flags were forgotten"
        );
    }
}

/// A retraining running on its thread.
#[derive(Debug)]
struct Job {
    generation: u32,
    swap_at_ns: i64,
    handle: JoinHandle<Result<TrainedForest, ForestError>>,
}

/// Scheduled retraining of the isolation forest from a guarded reservoir of recent traffic (module doc).
pub struct Retrainer {
    every_ns: i64,
    guard_ns: i64,
    capacity: usize,
    options: TrainOptions,
    save_path: Option<PathBuf>,
    reservoir: Vec<Sample>,
    /// Candidates offered to the reservoir this interval.
    offered: u64,
    /// Candidates refused this interval: scored above the threshold, host flagged.
    refused_score: u64,
    refused_flagged: u64,
    rng: ChaCha8Rng,
    flags: Flags,
    /// Highest packet time seen.
    clock_ns: i64,
    interval_start_ns: i64,
    due_ns: Option<i64>,
    job: Option<Job>,
}

impl std::fmt::Debug for Retrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retrainer")
            .field("every_ns", &self.every_ns)
            .field("guard_ns", &self.guard_ns)
            .field("reservoir", &self.reservoir.len())
            .field("flagged_hosts", &self.flags.last.len())
            .field("due_ns", &self.due_ns)
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

impl Retrainer {
    /// The retrainer of `config`, or `None` when `retrain_every` is not set. At most `max_flagged` flagged
    /// hosts are remembered (the engine passes the host map's capacity, `StateConfig::host_capacity`).
    pub fn new(config: &ForestConfig, max_flagged: usize) -> Option<Self> {
        let every = config.retrain_every?;
        Some(Self {
            every_ns: ns(every).max(1),
            guard_ns: ns(config.retrain_guard),
            capacity: config.retrain_samples.max(1),
            options: TrainOptions::from(config),
            save_path: config.save_path.clone(),
            reservoir: Vec::new(),
            offered: 0,
            refused_score: 0,
            refused_flagged: 0,
            rng: ChaCha8Rng::seed_from_u64(config.seed ^ RESERVOIR_SALT),
            flags: Flags { last: HashMap::new(), capacity: max_flagged.max(1) },
            clock_ns: i64::MIN,
            interval_start_ns: i64::MIN,
            due_ns: None,
            job: None,
        })
    }

    /// Records that a detector flagged `host` at packet time `ts_ns`.
    pub fn flag(&mut self, host: IpAddr, ts_ns: i64) {
        self.flags.note(host, ts_ns, self.interval_start_ns.saturating_sub(self.guard_ns));
    }

    /// Offers the vector of a batch of `host` ending at `ts_ns`, which `current` (the model in force) scored
    /// `score`. Returns the next generation when its time has come; the caller puts it in force.
    pub fn observe(
        &mut self,
        host: IpAddr,
        ts_ns: i64,
        raw: &FeatureVector,
        score: f64,
        current: &TrainedForest,
    ) -> Option<TrainedForest> {
        self.clock_ns = self.clock_ns.max(ts_ns);
        let due = match self.due_ns {
            Some(due) => due,
            None => {
                // The schedule starts with the first model in force.
                self.interval_start_ns = self.clock_ns;
                *self.due_ns.insert(self.clock_ns.saturating_add(self.every_ns))
            }
        };
        if score > current.threshold() {
            self.refused_score += 1;
        } else if self.flags.since(&host, ts_ns.saturating_sub(self.guard_ns)) {
            self.refused_flagged += 1;
        } else {
            self.offer(Sample { host, ts_ns, raw: *raw });
        }
        if let Some(next) = self.take_finished() {
            return Some(next);
        }
        if self.job.is_none() && self.clock_ns >= due {
            self.start(current);
        }
        None
    }

    /// Algorithm R: the reservoir stays a uniform sample of everything offered this interval.
    fn offer(&mut self, sample: Sample) {
        self.offered += 1;
        if self.reservoir.len() < self.capacity {
            self.reservoir.push(sample);
            return;
        }
        let j = self.rng.gen_range(0..self.offered);
        if let Some(slot) = usize::try_from(j).ok().and_then(|j| self.reservoir.get_mut(j)) {
            *slot = sample;
        }
    }

    /// The finished job's model once the packet time reaches its swap point (waiting for the thread if needed).
    fn take_finished(&mut self) -> Option<TrainedForest> {
        let job = self.job.take_if(|j| self.clock_ns >= j.swap_at_ns)?;
        let waiting = Instant::now();
        let result = job.handle.join();
        let waited_ms = waiting.elapsed().as_millis() as u64;
        match result {
            Ok(Ok(m)) => {
                tracing::info!(
                    model_version = m.version(),
                    generation = job.generation,
                    threshold = m.threshold(),
                    waited_ms,
                    "retrained isolation forest in force"
                );
                Some(m)
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, generation = job.generation, "retraining failed; the current model stays");
                None
            }
            Err(_) => {
                tracing::error!(generation = job.generation, "the retraining thread panicked; the current model stays");
                None
            }
        }
    }

    /// Ends the interval: takes the clean part of the reservoir and starts training the next generation on it.
    fn start(&mut self, current: &TrainedForest) {
        let taken = std::mem::take(&mut self.reservoir);
        let offered = std::mem::take(&mut self.offered);
        let refused_score = std::mem::take(&mut self.refused_score);
        let refused_flagged = std::mem::take(&mut self.refused_flagged);
        let (flags, guard_ns) = (&self.flags, self.guard_ns);
        let clean: Vec<FeatureVector> =
            taken.iter().filter(|s| !flags.since(&s.host, s.ts_ns.saturating_sub(guard_ns))).map(|s| s.raw).collect();
        let flagged_later = taken.len() - clean.len();
        self.interval_start_ns = self.clock_ns;
        self.due_ns = Some(self.clock_ns.saturating_add(self.every_ns));
        self.flags.forget_before(self.interval_start_ns.saturating_sub(self.guard_ns));
        let generation = current.generation().saturating_add(1);
        if clean.len() < self.options.sample_size {
            tracing::warn!(
                generation,
                clean = clean.len(),
                need = self.options.sample_size,
                offered,
                refused_score,
                refused_flagged,
                flagged_later,
                "too few clean vectors to retrain the isolation forest; the current model stays"
            );
            return;
        }
        let options = self.options.clone();
        let save_path = self.save_path.clone();
        let previous = current.version().to_string();
        let spawned = std::thread::Builder::new().name("netanom-retrain".into()).spawn(move || {
            let started = Instant::now();
            let m = train_generation(&clean, &options, generation)?;
            tracing::info!(
                model_version = m.version(),
                previous = %previous,
                generation,
                threshold = m.threshold(),
                samples = clean.len(),
                offered,
                refused_score,
                refused_flagged,
                flagged_later,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "isolation forest retrained"
            );
            if let Some(path) = &save_path
                && let Err(e) = m.save(path)
            {
                tracing::warn!(error = %e, "could not save the retrained forest");
            }
            Ok(m)
        });
        match spawned {
            Ok(handle) => {
                self.job = Some(Job { generation, swap_at_ns: self.clock_ns.saturating_add(ns(SWAP_DELAY)), handle });
            }
            Err(e) => {
                tracing::error!(error = %e, generation, "cannot start the retraining thread; the current model stays");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::AnomalyParts;
    use crate::config::DetectorConfig;
    use crate::engine::Engine;
    use crate::features::{FeatureScratch, batch_features};
    use crate::fixtures::{T0, benign_batch, scan_batch, syn};
    use crate::forest::{IsolationDetector, train};
    use netanom_schemas::{Anomaly, AnomalyKind, PacketBatch};

    const S: i64 = 1_000_000_000;

    /// `b` moved to start at packet time `t_ns`.
    fn at(mut b: PacketBatch, t_ns: i64) -> PacketBatch {
        let shift = t_ns - b.packets.iter().map(|p| p.ts_ns).min().unwrap_or(t_ns);
        for p in &mut b.packets {
            p.ts_ns += shift;
        }
        b
    }

    /// Second `s` of ordinary traffic: 20 benign batches, each from one of 5,000 hosts picked by a hash (so no
    /// host sends at a steady period, which the beacon detector would rightly flag).
    fn benign_second(s: i64) -> impl Iterator<Item = PacketBatch> {
        (0..20u64).map(move |k| {
            let i = s as u64 * 20 + k;
            let mut b = at(benign_batch(i), T0 + s * S);
            let h = (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) % 5_000;
            b.source = IpAddr::from([10, 1 + (h / 250) as u8, (h % 250) as u8, 10]);
            b
        })
    }

    /// Defaults with retraining every `every_s` s; the profile and beacon detectors off, so that only the
    /// detectors a test is about can flag hosts.
    fn retraining(every_s: u64) -> DetectorConfig {
        let mut cfg = DetectorConfig::default();
        cfg.forest.retrain_every = Some(Duration::from_secs(every_s));
        // Every fixture batch of 8 packets or more is judged, so each second of packet time has judged batches
        // and a generation takes over on the second its schedule says.
        cfg.forest.min_packets = 8;
        // Each scanner scans once: one batch above the threshold is a finding here (the bar is not under test).
        cfg.forest.confirm_batches = 1;
        cfg.profile.enabled = false;
        cfg.beacon.enabled = false;
        cfg
    }

    /// A fan-out anomaly naming `host` at `t_ns`, as the rule would raise it.
    fn fanout_flag(host: IpAddr, t_ns: i64) -> Anomaly {
        AnomalyParts {
            host,
            kind: AnomalyKind::Fanout,
            window_start_ns: t_ns,
            window_end_ns: t_ns,
            score: 30.0,
            threshold: 24.0,
            target: None,
            reason: String::new(),
            features: Vec::new(),
            sample: String::new(),
            model_version: crate::anomaly::RULES_VERSION.to_string(),
        }
        .build()
    }

    fn benign_vectors(n: usize) -> Vec<FeatureVector> {
        let mut s = FeatureScratch::default();
        (0..)
            .map(benign_batch)
            .filter(|b| b.packets.len() >= 8)
            .take(n)
            .map(|b| batch_features(&b.packets, &mut s))
            .collect()
    }

    #[test]
    fn generation_seeds_keep_the_first_and_differ_after() {
        use crate::forest::generation_seed;
        assert_eq!(generation_seed(7, 1), 7, "generation 1 trains with the configured seed");
        let seeds: std::collections::HashSet<u64> = (2..200).map(|g| generation_seed(7, g)).collect();
        assert_eq!(seeds.len(), 198);
        assert!(!seeds.contains(&7));
        assert_eq!(generation_seed(7, 5), generation_seed(7, 5));
        assert_ne!(generation_seed(7, 5), generation_seed(8, 5));
    }

    #[test]
    fn one_publisher_at_a_time_publishes_changes_only() {
        let feed = ModelFeed::default();
        assert!(feed.current().is_none());
        let publisher = feed.claim().expect("the first claim succeeds");
        assert!(feed.clone().claim().is_none(), "a second detector of the process does not publish");
        assert!(!publisher.publish(None));
        let cfg = DetectorConfig::default();
        let m = Arc::new(train(&benign_vectors(512), &TrainOptions::from(&cfg.forest)).unwrap());
        let reader = feed.clone();
        assert!(publisher.publish(Some(&m)));
        assert!(!publisher.publish(Some(&m)), "the same model is not published twice");
        assert!(reader.current().is_some_and(|c| Arc::ptr_eq(&c, &m)), "clones share the feed");
        assert_eq!(format!("{feed:?}"), format!("ModelFeed(Some({:?}))", m.version()));
        drop(publisher);
        assert!(feed.current().is_some(), "the last model stays when its detector stops");
        assert!(feed.claim().is_some(), "released on drop");
    }

    #[test]
    fn reservoir_is_a_bounded_deterministic_sample_of_the_whole_interval() {
        let mut cfg = retraining(3600).forest;
        cfg.retrain_samples = 300;
        let vectors = benign_vectors(512);
        let model = train(&vectors, &TrainOptions::from(&cfg)).unwrap();
        let fill = |r: &mut Retrainer| {
            for i in 0..10_000i64 {
                let mut v = vectors[i as usize % 512];
                v[0] = i as f64; // marks the arrival order
                r.observe(IpAddr::from([10, 0, 0, 1]), T0 + i * 1_000_000, &v, 0.0, &model);
            }
        };
        let (mut a, mut b) = (Retrainer::new(&cfg, 10).unwrap(), Retrainer::new(&cfg, 10).unwrap());
        fill(&mut a);
        fill(&mut b);
        assert_eq!(a.offered, 10_000);
        assert_eq!(a.reservoir.len(), 300, "bounded by retrain_samples");
        let order = |r: &Retrainer| r.reservoir.iter().map(|s| s.raw[0] as i64).collect::<Vec<_>>();
        assert_eq!(order(&a), order(&b), "the same input gives the same sample");
        let late = order(&a).iter().filter(|i| **i >= 5_000).count();
        assert!((100..200).contains(&late), "about half from the second half of the interval, got {late}");
    }

    #[test]
    fn flags_are_bounded_and_forget_the_oldest_first() {
        let mut f = Flags { last: HashMap::new(), capacity: 100 };
        for i in 0..10_000u32 {
            f.note(IpAddr::from(i.to_be_bytes()), i64::from(i), i64::MIN);
            assert!(f.last.len() <= 100);
        }
        assert!(f.since(&IpAddr::from(9_999u32.to_be_bytes()), 0), "the newest flag is kept");
        assert!(!f.since(&IpAddr::from(0u32.to_be_bytes()), i64::MIN), "the oldest is forgotten");
        assert!(f.last.keys().all(|h| f.last[h] >= 9_900), "only the newest are kept");

        // Over capacity, flags older than the horizon go first, whatever is left.
        let mut f = Flags { last: HashMap::new(), capacity: 3 };
        for (i, t) in [1, 2, 3].into_iter().enumerate() {
            f.note(IpAddr::from([10, 0, 0, i as u8]), t, i64::MIN);
        }
        f.note(IpAddr::from([10, 0, 0, 9]), 20_000, 15_000);
        assert_eq!(f.last.len(), 1);
        assert!(f.since(&IpAddr::from([10, 0, 0, 9]), 20_000));
    }

    /// The guard against a slow ramp, on feature vectors: a host whose batches move, over ten minutes, from an
    /// ordinary batch's vector to a port scan's, among 20 ordinary batches a second, with retraining every
    /// minute. Flagged every 10 s (as the fan-out rule flags a scanner), it stays out of every sample and
    /// every generation isolates the scan as the first model did. Without the flags, the score guard alone
    /// admits each step of the ramp and the generations learn the scan as ordinary (the control).
    #[test]
    fn slowly_ramping_scanner_stays_detected_after_retraining() {
        let cfg = retraining(60);
        let ordinary = benign_vectors(20_000);
        let mut s = FeatureScratch::default();
        let scan = batch_features(&scan_batch(0).packets, &mut s);
        let start = ordinary[7];
        let scanner = IpAddr::from([10, 66, 0, 7]);
        let ramp = 600i64;
        let run = |flagged: bool| {
            let first = train(&ordinary[..512], &TrainOptions::from(&cfg.forest)).unwrap();
            let mut iso = IsolationDetector::new(&cfg.forest, Some(first), Retrainer::new(&cfg.forest, 1_000));
            let mut next = 512;
            // (generation, score of the full scan, threshold) of every generation put in force.
            let mut generations = Vec::new();
            for sec in 0..ramp + 200 {
                let t = T0 + sec * S;
                for k in 0..20u8 {
                    iso.observe(IpAddr::from([10, 1, k, (sec % 250) as u8]), t, &ordinary[next % ordinary.len()]);
                    next += 1;
                }
                let level = (sec as f64 / ramp as f64).min(1.0);
                let v: FeatureVector = std::array::from_fn(|i| start[i] + level * (scan[i] - start[i]));
                if flagged && sec % 10 == 0 {
                    iso.note_anomaly(&fanout_flag(scanner, t));
                }
                iso.observe(scanner, t, &v);
                let m = iso.model().unwrap();
                if generations.last().is_none_or(|(g, _, _)| *g != m.generation()) {
                    generations.push((m.generation(), m.score(&scan), m.threshold()));
                }
            }
            generations
        };
        let guarded = run(true);
        assert!(guarded.len() >= 13, "a generation a minute: {guarded:?}");
        assert!(guarded.iter().all(|(_, score, _)| *score > 0.7), "every generation isolates the scan: {guarded:?}");
        let detected = guarded.iter().filter(|(_, score, threshold)| score > threshold).count();
        assert!(detected * 4 >= guarded.len() * 3, "most generations flag the scan: {guarded:?}");
        let (g, score, threshold) = guarded[guarded.len() - 1];
        assert!(g >= 13 && score > 0.7, "the last generation still isolates it: {score} (threshold {threshold})");

        let unguarded = run(false);
        let (_, score, threshold) = unguarded[unguarded.len() - 1];
        assert!(score < 0.5 && score < threshold, "without the flags the scan is learnt: {unguarded:?}");
    }

    /// The wiring of the guard in the engine: a host that the fan-out rule flags once stays out of the
    /// retraining sample, so the next generations do not learn its batches (the control without the rule
    /// learns them: they score lower).
    #[test]
    fn a_host_flagged_by_a_rule_is_kept_out_of_the_training_sample() {
        let host = IpAddr::from([10, 77, 0, 1]);
        let shape = (1_000_000u64..).map(benign_batch).find(|b| b.packets.len() >= 30).unwrap();
        let run = |rules: bool| {
            let mut cfg = retraining(60);
            cfg.fanout.enabled = rules;
            let mut e = Engine::new(&cfg, crate::Models::default());
            let mut out = Vec::new();
            let mut s = FeatureScratch::default();
            let probe = batch_features(&shape.packets, &mut s);
            let mut scores = Vec::new();
            for sec in 0..200i64 {
                let t = T0 + sec * S;
                for b in benign_second(sec) {
                    e.process_batch(&b, 0, &mut out);
                }
                let mut b = at(shape.clone(), t);
                b.source = host;
                if sec == 30 {
                    // A burst of 30 ports on one destination: the fan-out rule flags the host once.
                    b.packets
                        .extend((0..30u16).map(|p| syn(t + i64::from(p) * 1_000_000, [192, 168, 1, 25].into(), p + 1)));
                }
                e.process_batch(&b, 0, &mut out);
                if let Some(m) = e.model()
                    && scores.last().is_none_or(|(g, _)| *g != m.generation())
                {
                    scores.push((m.generation(), m.score(&probe)));
                }
            }
            let flagged = out.iter().any(|a| a.host == host.to_string() && a.kind == AnomalyKind::Fanout);
            (scores, flagged)
        };
        let (guarded, flagged) = run(true);
        assert!(flagged);
        let (learnt, not_flagged) = run(false);
        assert!(!not_flagged);
        assert_eq!(guarded.len(), 3, "generations 1 to 3: {guarded:?}");
        assert_eq!(guarded[0], learnt[0], "the same first model (warm-up has no guard)");
        for (g, l) in guarded.iter().zip(&learnt).skip(1) {
            assert!(g.1 > l.1 + 0.05, "generation {}: guarded {} vs learnt {}", g.0, g.1, l.1);
        }
    }

    /// Engine-level lifecycle: a generation a minute of packet time, each in force `SWAP_DELAY` after its
    /// retraining started, its version `eif-<hash>-g<n>` on the anomalies it raises; the same input and seed
    /// give the same generations and anomalies, another seed other generations.
    #[test]
    fn generations_bump_the_version_on_schedule_and_are_deterministic() {
        let traffic: Vec<PacketBatch> = (0..300i64)
            .flat_map(|sec| {
                let scans = (sec % 20 == 0).then(|| at(scan_batch(sec as u64), T0 + sec * S));
                benign_second(sec).chain(scans)
            })
            .collect();
        let run = |seed: u64| {
            let mut cfg = retraining(60);
            cfg.forest.seed = seed;
            let mut e = Engine::new(&cfg, crate::Models::default());
            let mut out = Vec::new();
            let mut switches = Vec::new();
            for b in &traffic {
                e.process_batch(b, 0, &mut out);
                let now = b.packets.iter().map(|p| p.ts_ns).max().unwrap_or(0);
                if let Some(m) = e.model()
                    && switches.last().is_none_or(|(_, v): &(i64, String)| v != m.version())
                {
                    switches.push(((now - T0) / S, m.version().to_string()));
                }
            }
            (switches, out)
        };
        let (switches, anomalies) = run(1);
        assert_eq!(switches.len(), 5, "{switches:?}");
        for (k, (_, version)) in switches.iter().enumerate() {
            let g = k + 1;
            assert!(version.starts_with("eif-"));
            assert_eq!(version.ends_with(&format!("-g{g}")), g > 1, "{version}");
        }
        for w in switches.windows(2).skip(1) {
            assert_eq!(w[1].0 - w[0].0, 60, "one generation a minute: {switches:?}");
        }
        let isolation: Vec<&Anomaly> = anomalies.iter().filter(|a| a.kind == AnomalyKind::Isolation).collect();
        for a in &isolation {
            let sec = (a.window_end_ns - T0) / S;
            let in_force = switches.iter().rev().find(|(from, _)| *from <= sec).map(|(_, v)| v);
            assert_eq!(Some(&a.model_version), in_force, "{} at {sec} s", a.id);
        }
        assert!(isolation.iter().any(|a| a.model_version.contains("-g")), "retrained generations flag scans");

        assert_eq!(run(1), (switches.clone(), anomalies), "same input and seed, same lifecycle");
        let (other, _) = run(2);
        assert_eq!(other.len(), switches.len());
        assert!(other.iter().zip(&switches).all(|(a, b)| a.1 != b.1), "another seed, other forests");
    }

    #[test]
    fn too_few_clean_vectors_keep_the_model() {
        let cfg = retraining(60).forest;
        let vectors = benign_vectors(512);
        let first = train(&vectors, &TrainOptions::from(&cfg)).unwrap();
        let version = first.version().to_string();
        let mut iso = IsolationDetector::new(&cfg, Some(first), Retrainer::new(&cfg, 100));
        // 3 vectors a second: 180 a minute, fewer than sample_size (256).
        for i in 0..600i64 {
            iso.observe(IpAddr::from([10, 0, 0, (i % 3) as u8]), T0 + i * S / 3, &vectors[i as usize % 512]);
        }
        assert_eq!(iso.model().map(TrainedForest::version), Some(version.as_str()));
    }

    #[test]
    fn retrained_generation_is_saved_and_reloads_with_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.json");
        let mut cfg = retraining(60).forest;
        cfg.save_path = Some(path.clone());
        let vectors = benign_vectors(2_000);
        let first = train(&vectors[..512], &TrainOptions::from(&cfg)).unwrap();
        let mut iso = IsolationDetector::new(&cfg, Some(first), Retrainer::new(&cfg, 100));
        for i in 0..1_400i64 {
            iso.observe(IpAddr::from([10, 0, 0, (i % 7) as u8]), T0 + i * S / 20, &vectors[i as usize % 2_000]);
        }
        let m = iso.model().unwrap();
        assert_eq!(m.generation(), 2);
        let loaded = TrainedForest::load(&path).unwrap();
        assert_eq!(loaded.version(), m.version());
        assert!(loaded.version().ends_with("-g2"));
        assert_eq!(loaded.generation(), 2);
        assert_eq!(loaded.score(&vectors[3]).to_bits(), m.score(&vectors[3]).to_bits());
    }
}
