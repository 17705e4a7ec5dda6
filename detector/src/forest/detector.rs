//! The isolation detector: warm-up (its own, or its share of the group's, [`crate::forest::shared`]), scoring
//! with the model in force, retraining on schedule, and the anomaly record with its explanation.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use netanom_schemas::{Anomaly, AnomalyKind, Contribution};

use super::config::ForestConfig;
use super::lifecycle::Retrainer;
use super::model::{TrainOptions, TrainedForest, train};
use super::shared::{WarmupSample, quota};
use crate::anomaly::{AnomalyParts, BatchFacts, short};
use crate::features::FeatureVector;
use crate::kind::{Batch, Context, Cooldown, DetectorKind, Setup};
use crate::time::ns;
use crate::validation::ConfigError;

/// The isolation detector: warm-up buffer, then the trained model, retrained on schedule when `retrain` is
/// given.
#[derive(Debug)]
pub struct IsolationDetector {
    config: ForestConfig,
    warmup: Vec<FeatureVector>,
    model: Option<Arc<TrainedForest>>,
    retrain: Option<Retrainer>,
    /// Training failed once; do not retry on every batch.
    failed: bool,
    /// The group's shared warm-up, while this detector waits for the model in force from the models topic.
    shared: Option<SharedWarmup>,
    /// Packets-topic partition of the batch being judged.
    partition: i32,
    /// State is being rebuilt from records another detector judged: they join neither the warm-up nor the
    /// backlog.
    rebuilding: bool,
}

/// Batches judged while the group's model was not yet in force that wait for it, at most this many; later ones
/// are not scored (counted). About 200 bytes each.
pub const BACKLOG_MAX: usize = 65_536;

/// One judged batch of the backlog.
#[derive(Debug, Clone)]
struct Seen {
    host: IpAddr,
    raw: FeatureVector,
    facts: BatchFacts,
}

/// A warm-up candidate: the vector of one batch, until its host's rule horizon has passed.
#[derive(Debug, Clone)]
struct Candidate {
    host: IpAddr,
    raw: FeatureVector,
    end_ns: i64,
}

/// A partition's share of the warm-up.
#[derive(Debug)]
struct PartitionWarmup {
    first_ns: Option<i64>,
    /// Latest batch time of the partition.
    clock_ns: i64,
    /// Candidates whose rule horizon has not passed yet, in the partition's order.
    pending: VecDeque<Candidate>,
    /// Candidates whose horizon passed with no rule flagging their host: the partition's training vectors.
    clean: Vec<FeatureVector>,
    sent: bool,
}

impl Default for PartitionWarmup {
    fn default() -> Self {
        Self { first_ns: None, clock_ns: i64::MIN, pending: VecDeque::new(), clean: Vec::new(), sent: false }
    }
}

/// What the isolation kind remembers of a host: the packet times of its latest batches above the threshold
/// (at most `confirm_batches`) and its cooldown.
#[derive(Debug, Clone, Default)]
pub struct Verdicts {
    above: VecDeque<i64>,
    cooldown: Cooldown,
}

impl Verdicts {
    /// A batch of the host ending at `now_ns` scored above the threshold: true when an anomaly is due, that
    /// is when `config.confirm_batches` of its batches did within `config.confirm_window` and the host's
    /// cooldown has passed.
    pub fn above_threshold(&mut self, now_ns: i64, config: &ForestConfig) -> bool {
        let (need, window) = (config.confirm_batches.max(1), ns(config.confirm_window));
        while self.above.front().is_some_and(|t| now_ns.saturating_sub(*t) >= window) {
            self.above.pop_front();
        }
        self.above.push_back(now_ns);
        while self.above.len() > need {
            self.above.pop_front();
        }
        self.above.len() >= need && self.cooldown.fire(now_ns, ns(config.cooldown))
    }

    /// True when no batch of the host was above the threshold (or its state was dropped since).
    pub fn is_clear(&self) -> bool {
        self.above.is_empty() && self.cooldown.is_clear()
    }
}

/// Candidates a partition holds for its warm-up share, as a multiple of the share: the first batches of a
/// partition may be an attacker's, and a rule must have flagged it before they are dropped.
const CANDIDATES_PER_SHARE: usize = 4;

/// This detector's part of the group's warm-up ([`crate::forest::shared`]): per owned partition, the first
/// quota of clean vectors (their host unflagged by any rule for `warmup_horizon` of the partition's packet time
/// after the batch), sent as a contribution when the quota is full, after `warmup_window` plus the horizon of
/// the partition's packet time, or at the end of the input; and every batch judged until the model arrives,
/// in the backlog, to be scored with it (the training batches too: the model's threshold is a quantile of
/// their scores, and a host that isolates among them is still named).
#[derive(Debug)]
struct SharedWarmup {
    partitions: i32,
    quota: usize,
    window_ns: i64,
    horizon_ns: i64,
    parts: BTreeMap<i32, PartitionWarmup>,
    owned: Vec<i32>,
    /// Hosts a rule flagged: their vectors stay out of the contributions. At most `flag_capacity`.
    flagged: HashSet<IpAddr>,
    flag_capacity: usize,
    /// Highest packet time and first packet time over every partition of this detector.
    clock_ns: i64,
    first_ns: Option<i64>,
    outbox: Vec<WarmupSample>,
    backlog: VecDeque<Seen>,
    backlog_dropped: u64,
}

impl SharedWarmup {
    fn observe(&mut self, partition: i32, ts_ns: i64, seen: Seen) {
        self.clock_ns = self.clock_ns.max(ts_ns);
        let first = *self.first_ns.get_or_insert(ts_ns);
        let candidates = self.quota.saturating_mul(CANDIDATES_PER_SHARE);
        let candidate = Candidate { host: seen.host, raw: seen.raw, end_ns: seen.facts.end_ns };
        if self.backlog.len() < BACKLOG_MAX {
            self.backlog.push_back(seen);
        } else {
            self.backlog_dropped += 1;
        }
        let part = self.parts.entry(partition).or_default();
        if !part.sent {
            let start = *part.first_ns.get_or_insert(ts_ns);
            part.clock_ns = part.clock_ns.max(ts_ns);
            if part.pending.len() + part.clean.len() < candidates {
                part.pending.push_back(candidate);
            }
            let clock = part.clock_ns;
            self.mature(partition, clock.saturating_sub(self.horizon_ns));
            let full = self.parts.get(&partition).is_some_and(|p| p.clean.len() >= self.quota);
            if full || clock.saturating_sub(start) >= self.window_ns.saturating_add(self.horizon_ns) {
                self.send(partition);
            }
        }
        // Partitions that stay quiet (or empty) while this detector's others advance contribute what they have
        // after twice the window (and the horizon), so the group is not held up by them.
        if self.clock_ns.saturating_sub(first) >= self.window_ns.saturating_mul(2).saturating_add(self.horizon_ns) {
            self.send_all();
        }
    }

    /// Judges the candidates of `partition` whose batch ended at or before `cutoff_ns`: those of a host a rule
    /// flagged are dropped, the others are clean.
    fn mature(&mut self, partition: i32, cutoff_ns: i64) {
        let Some(part) = self.parts.get_mut(&partition) else { return };
        while part.pending.front().is_some_and(|c| c.end_ns <= cutoff_ns) {
            let Some(c) = part.pending.pop_front() else { break };
            if !self.flagged.contains(&c.host) {
                part.clean.push(c.raw);
            }
        }
    }

    /// Sends the contribution of `partition` (once): its first `quota` clean vectors.
    fn send(&mut self, partition: i32) {
        let part = self.parts.entry(partition).or_default();
        if part.sent {
            return;
        }
        part.sent = true;
        let mut vectors = std::mem::take(&mut part.clean);
        vectors.truncate(self.quota);
        part.pending = VecDeque::new();
        tracing::info!(partition, vectors = vectors.len(), "warm-up contribution ready");
        self.outbox.push(WarmupSample { partition, partitions: self.partitions, vectors });
    }

    /// Sends every owned or seen partition's contribution not sent yet.
    fn send_all(&mut self) {
        for p in self.unsent() {
            self.send(p);
        }
    }

    /// Owned or seen partitions whose contribution is not sent yet.
    fn unsent(&self) -> Vec<i32> {
        let mut all: Vec<i32> = self.parts.keys().copied().chain(self.owned.iter().copied()).collect();
        all.sort_unstable();
        all.dedup();
        all.retain(|p| (0..self.partitions).contains(p) && !self.parts.get(p).is_some_and(|w| w.sent));
        all
    }

    /// The input ended: every rule has had its say (windows flushed), so every candidate is judged now, and
    /// every partition contributes.
    fn end(&mut self) {
        for p in self.unsent() {
            self.mature(p, i64::MAX);
            self.send(p);
        }
    }
}

impl IsolationDetector {
    /// A detector that trains after warm-up, or uses `model` when given, and then retrains with `retrain`.
    pub fn new(config: &ForestConfig, model: Option<TrainedForest>, retrain: Option<Retrainer>) -> Self {
        Self {
            config: config.clone(),
            warmup: Vec::new(),
            model: model.map(Arc::new),
            retrain,
            failed: false,
            shared: None,
            partition: 0,
            rebuilding: false,
        }
    }

    /// Switches the warm-up to the group's ([`crate::forest::shared`]) over a packets topic of `partitions`
    /// partitions, unless a model is in force already. At most `max_flagged` flagged hosts are remembered.
    pub fn share_warmup(&mut self, partitions: i32, max_flagged: usize) {
        if self.model.is_some() {
            return;
        }
        self.warmup = Vec::new();
        self.shared = Some(SharedWarmup {
            partitions: partitions.max(1),
            quota: quota(self.config.warmup_samples, partitions),
            window_ns: ns(self.config.warmup_window).max(1),
            horizon_ns: ns(self.config.warmup_horizon),
            parts: BTreeMap::new(),
            owned: Vec::new(),
            flagged: HashSet::new(),
            flag_capacity: max_flagged.max(1),
            clock_ns: i64::MIN,
            first_ns: None,
            outbox: Vec::new(),
            backlog: VecDeque::new(),
            backlog_dropped: 0,
        });
    }

    /// The packets-topic partitions this detector owns now (their contributions are sent, empty if need be,
    /// when the window passes or the input ends).
    pub fn set_owned_partitions(&mut self, owned: &[i32]) {
        if let Some(s) = &mut self.shared {
            s.owned = owned.to_vec();
        }
    }

    /// True while the detector waits for the group's model.
    pub fn awaiting_model(&self) -> bool {
        self.shared.is_some() && self.model.is_none()
    }

    /// The warm-up contributions ready to be published.
    pub fn take_contributions(&mut self) -> Vec<WarmupSample> {
        self.shared.as_mut().map(|s| std::mem::take(&mut s.outbox)).unwrap_or_default()
    }

    /// The input ended (its rule windows flushed): every owned partition contributes its clean candidates.
    pub fn end_warmup(&mut self) {
        if let Some(s) = &mut self.shared {
            s.end();
        }
    }

    /// Puts the group's `model` in force, and scores the batches that waited for it, appending their anomalies
    /// (by the same bar as live batches: `confirm_batches`, `cooldown`) to `out`. Returns what each host of the
    /// backlog left in its [`Verdicts`], for the live state to continue from. A model already in force is kept.
    pub fn install(&mut self, model: Arc<TrainedForest>, out: &mut Vec<Anomaly>) -> HashMap<IpAddr, Verdicts> {
        let mut verdicts: HashMap<IpAddr, Verdicts> = HashMap::new();
        if self.model.is_some() {
            return verdicts;
        }
        let Some(shared) = self.shared.take() else { return verdicts };
        let before = out.len();
        for s in &shared.backlog {
            let score = model.score(&s.raw);
            trace_score(s.host, s.facts.end_ns, score, &model);
            if score > model.threshold()
                && verdicts.entry(s.host).or_default().above_threshold(s.facts.end_ns, &self.config)
            {
                out.push(isolation_anomaly(s.host, &model, score, &s.raw, &s.facts).build());
            }
        }
        tracing::info!(
            model_version = model.version(),
            threshold = model.threshold(),
            backlog = shared.backlog.len(),
            backlog_dropped = shared.backlog_dropped,
            backlog_anomalies = out.len() - before,
            "the group's isolation forest is in force"
        );
        self.model = Some(model);
        verdicts
    }

    /// The group has no model and will have none (its warm-up was too small, or its recipe could not be
    /// trained): the backlog is dropped and the detector stays without a model.
    pub fn abandon_warmup(&mut self) {
        if let Some(s) = self.shared.take() {
            tracing::warn!(backlog = s.backlog.len(), "no isolation model for the group: the backlog is not scored");
            self.failed = true;
        }
    }

    /// The model, once trained or loaded.
    pub fn model(&self) -> Option<&TrainedForest> {
        self.model.as_deref()
    }

    /// The model as shared with readers outside the engine (the scoring API).
    pub fn shared_model(&self) -> Option<&Arc<TrainedForest>> {
        self.model.as_ref()
    }

    /// Records that a detector (any kind) flagged the host of `anomaly`, for the retraining guard.
    pub fn note_anomaly(&mut self, anomaly: &Anomaly) {
        // Flags from the packets of this detector's partitions only: the victim kind reads the destinations
        // topic, whose timing against the packets is not reproducible, and the forest's own findings are scored.
        if let Some(s) = &mut self.shared
            && !matches!(anomaly.kind, AnomalyKind::Victim | AnomalyKind::Isolation)
            && let Ok(host) = anomaly.host.parse::<IpAddr>()
            && (s.flagged.len() < s.flag_capacity || s.flagged.contains(&host))
        {
            s.flagged.insert(host);
        }
        if let Some(r) = &mut self.retrain
            && let Ok(host) = anomaly.host.parse::<IpAddr>()
        {
            r.flag(host, anomaly.window_end_ns.max(anomaly.window_start_ns));
        }
    }

    /// Feeds the vector of one batch of `host` ending at packet time `ts_ns`: during warm-up it joins the
    /// training set (and training runs when the set is full); afterwards it is scored, offered to the
    /// retraining reservoir, and a retrained model takes over when its time has come. Returns the score (by
    /// the model in force before this call) once a model exists.
    pub fn observe(&mut self, host: IpAddr, ts_ns: i64, raw: &FeatureVector) -> Option<f64> {
        if let Some(m) = &self.model {
            let score = m.score(raw);
            if let Some(r) = &mut self.retrain
                && let Some(next) = r.observe(host, ts_ns, raw, score, m)
            {
                self.model = Some(Arc::new(next));
            }
            return Some(score);
        }
        if self.failed {
            return None;
        }
        self.warmup.push(*raw);
        if self.warmup.len() >= self.config.warmup_samples {
            let started = std::time::Instant::now();
            match train(&self.warmup, &TrainOptions::from(&self.config)) {
                Ok(m) => {
                    tracing::info!(
                        model_version = m.version(),
                        threshold = m.threshold(),
                        samples = self.warmup.len(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "isolation forest trained"
                    );
                    if let Some(path) = &self.config.save_path
                        && let Err(e) = m.save(path)
                    {
                        tracing::warn!(error = %e, "could not save the trained forest");
                    }
                    self.model = Some(Arc::new(m));
                }
                Err(e) => {
                    tracing::error!(error = %e, "isolation forest training failed; isolation detector disabled");
                    self.failed = true;
                }
            }
            self.warmup = Vec::new();
        }
        None
    }
}

/// The isolation kind, whose section is `[detector.forest]`: scores every batch of at least `min_packets`
/// packets, at most one anomaly per host per `cooldown`.
impl DetectorKind for IsolationDetector {
    type Config = ForestConfig;
    type State = Verdicts;
    const PRODUCES: &'static [AnomalyKind] = &[AnomalyKind::Isolation];

    fn validate(config: &ForestConfig, _: &Context) -> Vec<ConfigError> {
        config.validate()
    }

    fn build(config: &ForestConfig, setup: &mut Setup<'_>) -> Option<Self> {
        let model = setup.take_model::<TrainedForest>();
        config.enabled.then(|| Self::new(config, model, Retrainer::new(config, setup.max_hosts)))
    }

    fn begin_batch(&mut self, partition: i32) {
        self.partition = partition;
    }

    /// Judges the host's own packets of the batch ([`crate::features::own_features`]): a batch with fewer than
    /// `min_packets` of them (a victim's replies, a server's answers) is neither trained on nor scored.
    fn judge_batch(&mut self, host: IpAddr, batch: &mut Batch<'_>, state: &mut Verdicts, out: &mut Vec<Anomaly>) {
        let (v, own) = batch.own_features();
        if own < self.config.min_packets.max(1) {
            return;
        }
        if self.model.is_none()
            && let Some(shared) = &mut self.shared
        {
            if !self.rebuilding {
                let facts = BatchFacts::of(host, batch.batch, own);
                shared.observe(self.partition, batch.last_ns, Seen { host, raw: v, facts });
            }
            return;
        }
        if let Some(score) = self.observe(host, batch.last_ns, &v)
            && let Some(model) = self.model()
        {
            trace_score(host, batch.last_ns, score, model);
            if score > model.threshold() && state.above_threshold(batch.last_ns, &self.config) {
                let facts = BatchFacts::of(host, batch.batch, own);
                out.push(isolation_anomaly(host, model, score, &v, &facts).build());
            }
        }
    }

    fn set_rebuilding(&mut self, rebuilding: bool) {
        self.rebuilding = rebuilding;
    }

    fn note_anomaly(&mut self, anomaly: &Anomaly) {
        IsolationDetector::note_anomaly(self, anomaly);
    }
}

/// Logs (at trace level, target `netanom_detector::forest::scores`) the score of one batch of `host` ending at
/// `end_ns`: the distribution of scores is what the threshold and `confirm_batches` are calibrated on.
fn trace_score(host: IpAddr, end_ns: i64, score: f64, model: &TrainedForest) {
    tracing::trace!(target: "netanom_detector::forest::scores", %host, end_ns, score, threshold = model.threshold(),
        "isolation score");
}

/// Builds the isolation anomaly for `host` from the vector of a batch described by `facts`.
pub fn isolation_anomaly(
    host: IpAddr,
    model: &TrainedForest,
    score: f64,
    raw: &FeatureVector,
    facts: &BatchFacts,
) -> AnomalyParts {
    let features = model.explain(raw, 4);
    AnomalyParts {
        host,
        kind: AnomalyKind::Isolation,
        window_start_ns: facts.start_ns,
        window_end_ns: facts.end_ns,
        score,
        threshold: model.threshold(),
        target: None,
        reason: isolation_reason(&host.to_string(), facts.packets, score, model.threshold(), &features),
        features,
        sample: facts.sample.clone(),
        model_version: model.version().to_string(),
    }
}

/// The sentence of an isolation finding: `who` behaved unlike the training traffic over `packets` packets,
/// with the three strongest of `features` (from [`TrainedForest::explain`]).
pub fn isolation_reason(who: &str, packets: usize, score: f64, threshold: f64, features: &[Contribution]) -> String {
    let detail: Vec<String> = features
        .iter()
        .take(3)
        .map(|c| format!("{} {} (usually {})", c.name, short(c.value), short(c.baseline.unwrap_or(0.0))))
        .collect();
    format!(
        "{who} behaved unlike the training traffic over {packets} packets (isolation score {score:.3} > \
         {threshold:.3}): {}",
        detail.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::RULES_VERSION;
    use crate::features::{FeatureScratch, batch_features};
    use crate::fixtures::{T0, benign_batch, scan_batch, scan_batch_at};
    use crate::forest::shared::Recipe;
    use netanom_schemas::PacketBatch;

    /// Judges `b` as a batch of partition `partition`.
    fn judge(d: &mut IsolationDetector, partition: i32, b: &PacketBatch, out: &mut Vec<Anomaly>) {
        let mut scratch = FeatureScratch::default();
        let last = b.packets.iter().map(|p| p.ts_ns).max().unwrap_or(0);
        d.begin_batch(partition);
        d.judge_batch(b.source, &mut Batch::new(b, last, &mut scratch), &mut Verdicts::default(), out);
    }

    fn group(cfg: &ForestConfig, detectors: usize, partitions: i32) -> Vec<IsolationDetector> {
        (0..detectors)
            .map(|_| {
                let mut d = IsolationDetector::new(cfg, None, None);
                d.share_warmup(partitions, 100);
                d
            })
            .collect()
    }

    /// Two detectors of one group over four partitions (detector k owns the partitions p % 2 == k): each sends
    /// its partitions' shares, the recipe of all four trains the same model wherever it is trained, and a
    /// scanner judged while the model was on its way is scored when it arrives, by the live bar (three batches
    /// above the threshold within a minute).
    #[test]
    fn a_group_trains_one_model_from_every_partition_and_scores_what_waited() {
        // One batch a second: a window longer than the input, so every share fills.
        let window = std::time::Duration::from_secs(3_600);
        let cfg = ForestConfig { trees: 30, warmup_samples: 256, warmup_window: window, ..ForestConfig::default() };
        let mut dets = group(&cfg, 2, 4);
        let (mut samples, mut out) = (Vec::new(), Vec::new());
        for i in 0..2_000u64 {
            let p = (i % 4) as i32;
            let d = &mut dets[(p % 2) as usize];
            judge(d, p, &benign_batch(i), &mut out);
            samples.extend(d.take_contributions());
        }
        assert_eq!(samples.len(), 4, "one contribution per partition");
        assert!(samples.iter().all(|c| c.vectors.len() == 64), "quota 256 / 4");
        for at in [2_001, 2_010, 2_020] {
            judge(&mut dets[1], 3, &scan_batch_at(3, at), &mut out);
        }
        judge(&mut dets[1], 1, &scan_batch_at(4, 2_001), &mut out);
        assert!(out.is_empty(), "nothing is scored before the model");
        assert!(dets.iter().all(IsolationDetector::awaiting_model));

        let options = TrainOptions::from(&cfg);
        let recipe = Recipe::new(&options, &samples.iter().rev().collect::<Vec<_>>()).unwrap();
        let (a, b) = (Arc::new(recipe.train().unwrap()), Arc::new(recipe.train().unwrap()));
        assert_eq!(a.version(), b.version(), "one model for the group");
        dets[0].install(a.clone(), &mut out);
        assert!(out.is_empty());
        let left = dets[1].install(b, &mut out);
        assert_eq!(out.len(), 1, "the scanner that kept scanning is scored, the one-batch scan is not: {out:?}");
        assert_eq!((out[0].host.as_str(), out[0].kind), ("10.66.0.3", AnomalyKind::Isolation));
        assert_eq!(out[0].model_version, a.version());
        assert!(!left[&scan_batch(4).source].is_clear(), "the live state continues from the backlog's");
        assert!(dets.iter().all(|d| d.model().map(TrainedForest::version) == Some(a.version())));
    }

    fn flag(d: &mut IsolationDetector, host: IpAddr, at_ns: i64) {
        d.note_anomaly(
            &AnomalyParts {
                host,
                kind: AnomalyKind::BruteForce,
                window_start_ns: at_ns,
                window_end_ns: at_ns,
                score: 30.0,
                threshold: 20.0,
                target: None,
                reason: String::new(),
                features: Vec::new(),
                sample: String::new(),
                model_version: RULES_VERSION.to_string(),
            }
            .build(),
        );
    }

    /// The guard of the warm-up: a vector counts only after `warmup_horizon` of its partition's packet time
    /// with no rule flagging its host, so an attacker whose first batches came before a rule named it (a brute
    /// force is named at its 20th attempt) gives no training vector; a partition that does not fill its share
    /// contributes what is clean after `warmup_window` plus the horizon; the input's end judges the rest.
    #[test]
    fn hosts_flagged_within_the_horizon_stay_out_of_the_warm_up_and_quiet_partitions_contribute_in_time() {
        let cfg = ForestConfig { trees: 10, warmup_samples: 400, ..ForestConfig::default() };
        let mut d = group(&cfg, 1, 2).remove(0);
        d.set_owned_partitions(&[0, 1]);
        let mut out = Vec::new();
        let attacker = scan_batch(1).source;
        // The attacker's batches at 1-3 s, benign batches of partition 0 at one a second; a rule names the
        // attacker at 30 s, after its batches but within their horizon.
        for at in 1..=3 {
            judge(&mut d, 0, &scan_batch_at(1, at), &mut out);
        }
        for i in 0..130u64 {
            if i == 30 {
                flag(&mut d, attacker, T0 + 30_000_000_000);
            }
            judge(&mut d, 0, &benign_batch(i), &mut out);
            if i < 120 {
                assert!(d.take_contributions().is_empty(), "nothing sent before window + horizon ({i} s)");
            }
        }
        let sent = d.take_contributions();
        assert_eq!(sent.len(), 1, "partition 0 contributed after window + horizon");
        assert_eq!(sent[0].partition, 0);
        // Clean: the benign batches at least 60 s older than the partition's clock when it passed 120 s.
        let mut s = FeatureScratch::default();
        let want: Vec<FeatureVector> = (0..=62u64).map(|i| own_features_of(&benign_batch(i), &mut s)).collect();
        let scan_vector = own_features_of(&scan_batch(1), &mut s);
        assert!(!sent[0].vectors.contains(&scan_vector), "the attacker flagged within its horizon is left out");
        assert!(sent[0].vectors.iter().all(|v| want.contains(v)), "only batches past their horizon");
        assert!(sent[0].vectors.len() >= 50, "{}", sent[0].vectors.len());
        d.end_warmup();
        let rest = d.take_contributions();
        assert_eq!(rest.len(), 1, "the input ended: partition 1 contributes, empty");
        assert!(rest[0].vectors.is_empty() && rest[0].partition == 1);
    }

    /// A capture shorter than the horizon: nothing is clean before the input ends; then every candidate is
    /// judged at once, those of hosts a rule flagged at any time left out.
    #[test]
    fn the_end_of_the_input_judges_every_candidate() {
        let cfg = ForestConfig { trees: 10, warmup_samples: 512, ..ForestConfig::default() };
        let mut d = group(&cfg, 1, 1).remove(0);
        d.set_owned_partitions(&[0]);
        let mut out = Vec::new();
        for i in 0..40u64 {
            judge(&mut d, 0, &benign_batch(i), &mut out);
            if i % 10 == 0 {
                judge(&mut d, 0, &scan_batch_at(2, i), &mut out);
            }
        }
        assert!(d.take_contributions().is_empty());
        flag(&mut d, scan_batch(2).source, T0 + 39_000_000_000);
        d.end_warmup();
        let sent = d.take_contributions();
        assert_eq!(sent.len(), 1);
        let mut s = FeatureScratch::default();
        let benign: Vec<FeatureVector> = (0..40u64)
            .map(|i| crate::features::own_features(&benign_batch(i).packets, &mut s))
            .filter(|(_, own)| *own >= cfg.min_packets)
            .map(|(v, _)| v)
            .collect();
        assert_eq!(sent[0].vectors, benign, "every benign candidate, no scan");
    }

    /// The bar: `confirm_batches` batches above the threshold within `confirm_window`, then the cooldown.
    #[test]
    fn an_anomaly_needs_batches_above_the_threshold_in_a_row_of_the_window() {
        let cfg = ForestConfig::default();
        let s = 1_000_000_000;
        let mut v = Verdicts::default();
        assert!(!v.above_threshold(0, &cfg) && !v.above_threshold(61 * s, &cfg), "61 s apart: two separate ones");
        assert!(!v.above_threshold(70 * s, &cfg), "two within the window");
        assert!(v.above_threshold(75 * s, &cfg), "the third within a minute");
        assert!(!v.above_threshold(80 * s, &cfg), "cooldown");
        assert!(v.above_threshold(86 * s, &cfg), "cooldown over, still three in the window");
        let one = ForestConfig { confirm_batches: 1, ..ForestConfig::default() };
        assert!(Verdicts::default().above_threshold(0, &one));
    }

    fn own_features_of(b: &PacketBatch, s: &mut FeatureScratch) -> FeatureVector {
        crate::features::own_features(&b.packets, s).0
    }

    fn training_set(n: usize) -> Vec<FeatureVector> {
        let mut s = FeatureScratch::default();
        (0..n).map(|i| batch_features(&benign_batch(i as u64).packets, &mut s)).collect()
    }

    #[test]
    fn warmup_trains_once_then_scores() {
        let cfg = ForestConfig { warmup_samples: 300, trees: 20, ..ForestConfig::default() };
        let mut d = IsolationDetector::new(&cfg, None, None);
        let data = training_set(301);
        let host = IpAddr::from([10, 1, 0, 10]);
        for x in &data[..300] {
            assert!(d.observe(host, 0, x).is_none());
        }
        assert!(d.model().is_some());
        assert_eq!(d.model().map(TrainedForest::generation), Some(1));
        assert!(d.observe(host, 0, &data[300]).is_some());
    }
}
