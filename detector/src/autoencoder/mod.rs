//! Autoencoder detector (kind `autoencoder`): an ensemble of small autoencoders over subsets of the per-batch
//! feature vector ([`crate::features::BATCH`], the isolation forest's), scored by reconstruction error, as
//! Kitsune's KitNET does. Owns the feature mapper, the autoencoders, seeded training, the threshold, the model
//! file ([`model`]), its warm-up and the anomaly.
//!
//! # Model
//!
//! Each batch vector is scaled as the feature table says (`log1p` of counts and sizes, shares as they are).
//! The feature mapper clusters the features by correlation (single linkage on 1 − Pearson correlation over the
//! training vectors) and cuts the dendrogram into subsets of at most `max_subset` features. Each subset gets an
//! autoencoder: its inputs min–max normalised with the bounds learned in training, one hidden layer of
//! ⌈`hidden_ratio` × inputs⌉ sigmoid units with tied weights, trained by stochastic gradient descent for
//! `epochs` shuffled passes. The RMSEs of the ensemble feed an output autoencoder of the same shape (its own
//! min–max bounds learned on the training RMSEs), and its RMSE is the anomaly score. Every random draw (the
//! weights, the order of each pass) comes from one ChaCha8 RNG seeded with `seed`, so the same vectors and
//! seed give the same model (and the same version, `ae-<hash>`).
//!
//! # Threshold
//!
//! The training vectors are scored once trained; the threshold is their `threshold_quantile` (default the
//! largest) times `threshold_factor` (default 2). A vector outside the bounds learned in training cannot be
//! reconstructed by sigmoid units, so its error grows with its distance from them.
//!
//! # Warm-up
//!
//! Without a model file the first `warmup_samples` vectors of hosts that no detector (of any kind) has flagged
//! so far are the training set; vectors of a host flagged before training are dropped (trained on what no
//! rule flags). Training runs on the detector's worker, where the engine runs, at that point of the stream, and
//! nothing is scored before. `netanom train --autoencoder` trains the same model offline from captures.
//!
//! # Evidence
//!
//! An anomaly names the subset whose reconstruction error is furthest above its largest error in training, its
//! features worst reconstructed first, each with its value and its mean over the training vectors.

pub mod config;
pub mod model;

use std::collections::HashSet;
use std::net::IpAddr;

use netanom_schemas::{Anomaly, AnomalyKind, Contribution, PacketBatch};

pub use config::AutoencoderConfig;
pub use model::{AutoencoderError, KitNet, Scored, TrainOptions, Worst, train};

use crate::anomaly::{AnomalyParts, BatchFacts, short};
use crate::features::{FEATURE_NAMES, FeatureVector};
use crate::kind::{Batch, Context, Cooldown, DetectorKind, Setup};
use crate::time::ns;
use crate::validation::ConfigError;

/// The autoencoder detector: warm-up sample, then the model.
#[derive(Debug)]
pub struct AutoencoderDetector {
    config: AutoencoderConfig,
    /// Warm-up vectors with their hosts, at most `warmup_samples`.
    warmup: Vec<(IpAddr, FeatureVector)>,
    /// Hosts flagged by any detector during the warm-up, at most `max_hosts`.
    flagged: HashSet<IpAddr>,
    max_hosts: usize,
    model: Option<KitNet>,
    /// Training failed once; do not retry on every batch.
    failed: bool,
}

impl AutoencoderDetector {
    /// A detector that trains on its warm-up, or uses `model` when given; at most `max_hosts` flagged hosts are
    /// remembered during the warm-up.
    pub fn new(config: &AutoencoderConfig, model: Option<KitNet>, max_hosts: usize) -> Self {
        Self { config: config.clone(), warmup: Vec::new(), flagged: HashSet::new(), max_hosts, model, failed: false }
    }

    /// The model, once trained or loaded.
    pub fn model(&self) -> Option<&KitNet> {
        self.model.as_ref()
    }

    /// Feeds the vector of one batch of `host`: during the warm-up it joins the training set unless its host
    /// was flagged (and training runs when the set is full); afterwards it is scored. Returns the score once a
    /// model exists.
    pub fn observe(&mut self, host: IpAddr, raw: &FeatureVector) -> Option<Scored> {
        if let Some(m) = &self.model {
            return Some(m.score(raw));
        }
        if self.failed || self.flagged.contains(&host) {
            return None;
        }
        self.warmup.push((host, *raw));
        if self.warmup.len() >= self.config.warmup_samples {
            let flagged = &self.flagged;
            self.warmup.retain(|(h, _)| !flagged.contains(h));
            if self.warmup.len() >= self.config.warmup_samples {
                self.train_warmup();
            }
        }
        None
    }

    fn train_warmup(&mut self) {
        let started = std::time::Instant::now();
        let vectors: Vec<FeatureVector> = self.warmup.iter().map(|(_, v)| *v).collect();
        match train(&vectors, &self.config.train_options(self.config.seed)) {
            Ok(m) => {
                tracing::info!(
                    model_version = m.version(),
                    threshold = m.threshold(),
                    subsets = m.subsets().len(),
                    samples = vectors.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "autoencoder model trained"
                );
                if let Some(path) = &self.config.save_path
                    && let Err(e) = m.save(path)
                {
                    tracing::warn!(error = %e, "could not save the trained autoencoder model");
                }
                self.model = Some(m);
            }
            Err(e) => {
                tracing::error!(error = %e, "autoencoder training failed; autoencoder detector disabled");
                self.failed = true;
            }
        }
        self.warmup = Vec::new();
        self.flagged = HashSet::new();
    }
}

/// The autoencoder kind: scores every batch with at least `min_packets` packets of the host's own (replies left
/// out), at most one anomaly per host per `cooldown`.
impl DetectorKind for AutoencoderDetector {
    type Config = AutoencoderConfig;
    type State = Cooldown;
    const PRODUCES: &'static [AnomalyKind] = &[AnomalyKind::Autoencoder];

    fn validate(config: &AutoencoderConfig, _: &Context) -> Vec<ConfigError> {
        config.validate()
    }

    fn build(config: &AutoencoderConfig, setup: &mut Setup<'_>) -> Option<Self> {
        let model = setup.take_model::<KitNet>();
        config.enabled.then(|| Self::new(config, model, setup.max_hosts))
    }

    fn judge_batch(&mut self, host: IpAddr, batch: &mut Batch<'_>, cooldown: &mut Cooldown, out: &mut Vec<Anomaly>) {
        // A host is judged by the traffic it sends in flows it opened, as the forest judges it and as
        // `netanom train` builds the training vectors: replies are left out.
        let (v, own) = batch.own_features();
        if own < self.config.min_packets.max(1) {
            return;
        }
        if let Some(scored) = self.observe(host, &v)
            && let Some(model) = self.model()
            && scored.score > model.threshold()
            && cooldown.fire(batch.last_ns, ns(self.config.cooldown))
        {
            out.push(autoencoder_anomaly(host, model, &scored, &v, batch.batch).build());
        }
    }

    fn note_anomaly(&mut self, anomaly: &Anomaly) {
        if self.model.is_none()
            && self.flagged.len() < self.max_hosts
            && let Ok(host) = anomaly.host.parse::<IpAddr>()
        {
            self.flagged.insert(host);
        }
    }
}

/// Builds the autoencoder anomaly for `host` from the vector `raw` of `batch` and its score.
pub fn autoencoder_anomaly(
    host: IpAddr,
    model: &KitNet,
    scored: &Scored,
    raw: &FeatureVector,
    batch: &PacketBatch,
) -> AnomalyParts {
    let worst = model.worst(raw, scored);
    let usual = |f: usize| model.baseline_mean().get(f).copied().unwrap_or(0.0);
    let names: Vec<&str> = worst.features.iter().map(|&f| FEATURE_NAMES[f]).collect();
    let detail: Vec<String> = worst
        .features
        .iter()
        .take(3)
        .map(|&f| format!("{} {} (usually {})", FEATURE_NAMES[f], short(raw[f]), short(usual(f))))
        .collect();
    let facts = BatchFacts::of(host, batch, batch.packets.len());
    AnomalyParts {
        host,
        kind: AnomalyKind::Autoencoder,
        window_start_ns: facts.start_ns,
        window_end_ns: facts.end_ns,
        score: scored.score,
        threshold: model.threshold(),
        target: None,
        reason: format!(
            "{host} behaved unlike the training traffic over {} packets (reconstruction error {:.3} > {:.3}); \
             worst reconstructed: [{}] (error {:.3}, at most {:.3} in training): {}",
            facts.packets,
            scored.score,
            model.threshold(),
            names.join(", "),
            worst.rmse,
            worst.training_max,
            detail.join(", ")
        ),
        features: worst
            .features
            .iter()
            .map(|&f| Contribution { name: FEATURE_NAMES[f].to_string(), value: raw[f], baseline: Some(usual(f)) })
            .collect(),
        sample: facts.sample,
        model_version: model.version().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{FeatureScratch, batch_features};
    use crate::fixtures::{benign_batch, scan_batch};

    #[test]
    fn warmup_skips_flagged_hosts_trains_once_then_scores() {
        let config = AutoencoderConfig { enabled: true, warmup_samples: 300, epochs: 5, ..Default::default() };
        let mut d = AutoencoderDetector::new(&config, None, 10);
        let mut s = FeatureScratch::default();
        let (good, bad) = (IpAddr::from([10, 1, 0, 10]), IpAddr::from([10, 1, 0, 66]));
        let flag = Anomaly { host: bad.to_string(), ..scan_anomaly() };
        assert!(d.observe(bad, &batch_features(&scan_batch(0).packets, &mut s)).is_none());
        d.note_anomaly(&flag);
        assert!(d.observe(bad, &batch_features(&scan_batch(1).packets, &mut s)).is_none());
        let mut i = 0;
        while d.model().is_none() {
            assert!(d.observe(good, &batch_features(&benign_batch(i).packets, &mut s)).is_none());
            i += 1;
        }
        assert_eq!(i, 300, "the flagged host's vector was dropped, so 300 benign vectors were needed");
        assert_eq!(d.model().map(KitNet::training_samples), Some(300));
        let scan = batch_features(&scan_batch(9).packets, &mut s);
        let scored = d.observe(bad, &scan).expect("scored after the warm-up");
        assert!(scored.score > d.model().unwrap().threshold());
    }

    fn scan_anomaly() -> Anomaly {
        let config = AutoencoderConfig { warmup_samples: 300, epochs: 5, ..Default::default() };
        let mut s = FeatureScratch::default();
        let vectors: Vec<FeatureVector> = (0..400).map(|i| batch_features(&benign_batch(i).packets, &mut s)).collect();
        let m = train(&vectors, &config.train_options(1)).unwrap();
        let scan = scan_batch(3);
        let v = batch_features(&scan.packets, &mut s);
        autoencoder_anomaly(scan.source, &m, &m.score(&v), &v, &scan).build()
    }

    #[test]
    fn a_scan_is_an_anomaly_that_names_the_worst_subset() {
        let a = scan_anomaly();
        assert_eq!(a.kind, AnomalyKind::Autoencoder);
        assert!(a.score > a.threshold, "{a:?}");
        assert!(a.model_version.starts_with("ae-"));
        assert!(a.reason.contains("worst reconstructed: ["), "{}", a.reason);
        assert!(!a.features.is_empty() && a.features.iter().all(|c| c.baseline.is_some()));
        assert!(a.features.iter().all(|c| a.reason.contains(&c.name)), "{}", a.reason);
    }

    #[test]
    fn the_engine_runs_the_kind_only_when_enabled() {
        let mut config = crate::DetectorConfig::default();
        config.forest.enabled = false;
        assert!(!config.autoencoder.enabled, "off by default");
        let mut s = FeatureScratch::default();
        let vectors: Vec<FeatureVector> = (0..400).map(|i| batch_features(&benign_batch(i).packets, &mut s)).collect();
        let m = train(&vectors, &config.autoencoder.train_options(3)).unwrap();
        let version = m.version().to_string();
        let mut off = crate::Engine::new(&config, crate::Models { autoencoder: Some(m.clone()), ..Default::default() });
        config.autoencoder.enabled = true;
        let mut on = crate::Engine::new(&config, crate::Models { autoencoder: Some(m), ..Default::default() });
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for batch in [scan_batch(0), benign_batch(5)] {
            on.process_batch(&batch, 0, &mut a);
            off.process_batch(&batch, 0, &mut b);
        }
        let found: Vec<_> = a.iter().filter(|x| x.kind == AnomalyKind::Autoencoder).collect();
        assert_eq!(found.len(), 1, "{a:?}");
        assert_eq!(found[0].host, scan_batch(0).source.to_string());
        assert!(!b.iter().any(|x| x.kind == AnomalyKind::Autoencoder));
        let in_force: Vec<_> = on.models_in_force().into_iter().map(|m| (m.kind, m.version)).collect();
        assert!(in_force.contains(&(crate::ModelKind::Autoencoder, version)), "{in_force:?}");
        assert!(off.models_in_force().iter().all(|m| m.kind != crate::ModelKind::Autoencoder));
    }
}
