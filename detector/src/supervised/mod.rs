//! Supervised detector (kind `supervised`): a random forest trained offline on labelled traffic
//! (`netanom train --supervised`), loaded from `[detector.supervised] model_path` and run beside the
//! unsupervised detectors. It learns from the isolation forest's per-batch behaviour vector
//! ([`crate::features::batch_features`]: rates, sizes, flags, fan-out, protocol mix, flow context of one host
//! over one batch), never from addresses, so what it learns about one network carries to another. Owns the
//! model file ([`model`]), training and its figures ([`train`], [`Confusion`]) and the anomaly; knows nothing
//! of captures or label files (the root binary turns those into labelled vectors).
//!
//! # Training
//!
//! [`train::train`] splits the labelled vectors into a training and a test set (seeded, stratified: each class
//! keeps its share; or takes a given test set, e.g. other captures), runs stratified k-fold cross-validation
//! on the training set over a small grid (trees, max depth, feature share; [`Grid`]), keeps the grid point
//! with the best pooled out-of-fold F1, chooses the threshold on that point's out-of-fold probabilities,
//! refits it on the whole training set and scores the test set once. The forest is linfa-ensemble's
//! `RandomForest` (bootstrap of the training rows, a per-tree draw of features, CART trees from linfa-trees),
//! fitted with a seeded ChaCha8 RNG, so the same vectors and seed give the same model.
//!
//! # Model file and probabilities
//!
//! linfa-ensemble's `RandomForest` has no serde support, and linfa-trees' serialised `DecisionTree` keeps one
//! class per leaf, so the forest could only vote, and its prediction code indexes features and unwraps
//! children that a damaged file could leave out (a panic in the detector). So training flattens each tree
//! through linfa-trees' public node API into a list of `(feature, split, left, right, p)` nodes (children
//! after parents, split rule exactly linfa's `value < split`), and replaces each node's value by the attack
//! share of the training vectors reaching it. P(attack) is the mean over the trees of the leaf values (as
//! scikit-learn's `predict_proba`). The file (`netanom-rf-v1`, JSON) holds the trees, the threshold, the
//! minimum batch size, the hyper-parameters, the seed, the class counts, the held-out confusion matrix and the
//! benign feature means; loading checks every index and number. The version is `rf-<hash of the trees>`.
//!
//! # Threshold
//!
//! A batch is an attack when P(attack) ≥ the model's threshold: the cut with the best F1 on the chosen grid
//! point's out-of-fold probabilities (training data only, never the test set), placed midway between that
//! probability and the next lower one ([`train::choose_threshold`]). `[detector.supervised] threshold`
//! overrides it.
//!
//! # Explanations
//!
//! Each split on a vector's path moves P(attack) from the node's value to the child's; that change is
//! credited to the split's feature and averaged over the trees (the changes add up to P(attack) minus the
//! forest's prior). The anomaly lists the features that pushed hardest towards attack, with their value and
//! their mean over the benign training vectors.

pub mod config;
mod confusion;
pub mod model;
pub mod train;

use std::net::IpAddr;

use netanom_schemas::{Anomaly, AnomalyKind, Contribution, PacketBatch};

pub use config::SupervisedConfig;
pub use confusion::Confusion;
pub use model::SupervisedModel;
pub use model::{Params, SupervisedError};
pub use train::{Grid, Settings};

use crate::anomaly::{AnomalyParts, BatchFacts, short};
use crate::features::{FEATURE_NAMES, FeatureVector};
use crate::kind::{Batch, Context, Cooldown, DetectorKind, Setup};
use crate::time::ns;
use crate::validation::ConfigError;

/// The supervised detector: a loaded model, its threshold and the per-host cooldown.
#[derive(Debug)]
pub struct SupervisedDetector {
    model: SupervisedModel,
    threshold: f64,
    cooldown_ns: i64,
}

impl SupervisedDetector {
    /// Loads the model of `config.model_path`; `None` when no model is configured (the detector is off).
    pub fn load(config: &SupervisedConfig) -> Result<Option<Self>, SupervisedError> {
        let Some(path) = &config.model_path else { return Ok(None) };
        let model = SupervisedModel::load(path)?;
        tracing::info!(
            model_version = model.version(),
            threshold = config.threshold.unwrap_or(model.threshold()),
            path = %path.display(),
            "supervised model loaded"
        );
        Ok(Some(Self::new(config, model)))
    }

    /// A detector for `model` with the threshold and cooldown of `config`.
    pub fn new(config: &SupervisedConfig, model: SupervisedModel) -> Self {
        let threshold = config.threshold.unwrap_or(model.threshold());
        Self { model, threshold, cooldown_ns: ns(config.cooldown) }
    }

    /// The model's version (`rf-…`).
    pub fn version(&self) -> &str {
        self.model.version()
    }

    /// Smallest batch scored.
    pub fn min_packets(&self) -> usize {
        self.model.min_packets()
    }

    /// At most one anomaly per host per this much packet time, ns.
    pub fn cooldown_ns(&self) -> i64 {
        self.cooldown_ns
    }

    /// P(attack) of `x` when it reaches the threshold.
    pub fn detect(&self, x: &FeatureVector) -> Option<f64> {
        let p = self.model.p_attack(x);
        (p >= self.threshold).then_some(p)
    }
}

/// The supervised kind: on when [`crate::Models`] holds a supervised detector (`supervised.model_path` set);
/// scores every batch the model is meant for, at most one anomaly per host per `cooldown`.
impl DetectorKind for SupervisedDetector {
    type Config = SupervisedConfig;
    type State = Cooldown;
    const PRODUCES: &'static [AnomalyKind] = &[AnomalyKind::Supervised];

    fn validate(config: &SupervisedConfig, _: &Context) -> Vec<ConfigError> {
        config.validate()
    }

    fn build(_: &SupervisedConfig, setup: &mut Setup<'_>) -> Option<Self> {
        setup.take_model::<SupervisedDetector>()
    }

    fn judge_batch(&mut self, host: IpAddr, batch: &mut Batch<'_>, cooldown: &mut Cooldown, out: &mut Vec<Anomaly>) {
        if batch.batch.packets.len() < self.min_packets() {
            return;
        }
        let v = batch.features();
        if let Some(p) = self.detect(&v)
            && cooldown.fire(batch.last_ns, self.cooldown_ns)
        {
            out.push(supervised_anomaly(host, self, p, &v, batch.batch).build());
        }
    }
}

/// Builds the supervised anomaly for `host` from the vector `x` of `batch` and its P(attack) `p`.
pub fn supervised_anomaly(
    host: IpAddr,
    detector: &SupervisedDetector,
    p: f64,
    x: &FeatureVector,
    batch: &PacketBatch,
) -> AnomalyParts {
    let model = &detector.model;
    let drivers = model.explain(x, 4);
    let usual = |f: usize| model.benign_mean().get(f).copied().unwrap_or(0.0);
    let detail: Vec<String> = drivers
        .iter()
        .take(3)
        .map(|d| {
            format!(
                "{} {} (benign {}, {:+.2})",
                FEATURE_NAMES[d.feature],
                short(x[d.feature]),
                short(usual(d.feature)),
                d.contribution
            )
        })
        .collect();
    let facts = BatchFacts::of(host, batch, batch.packets.len());
    AnomalyParts {
        host,
        kind: AnomalyKind::Supervised,
        window_start_ns: facts.start_ns,
        window_end_ns: facts.end_ns,
        score: p,
        threshold: detector.threshold,
        target: None,
        reason: format!(
            "{host} behaved like the labelled attack traffic over {} packets (P(attack) {p:.2} >= {:.2}): {}",
            facts.packets,
            detector.threshold,
            detail.join(", ")
        ),
        features: drivers
            .iter()
            .map(|d| Contribution {
                name: FEATURE_NAMES[d.feature].to_string(),
                value: x[d.feature],
                baseline: Some(usual(d.feature)),
            })
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
    use std::time::Duration;

    fn trained() -> SupervisedModel {
        let mut s = FeatureScratch::default();
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..600 {
            let b = benign_batch(i);
            if b.packets.len() >= 8 {
                x.push(batch_features(&b.packets, &mut s));
                y.push(false);
            }
        }
        for i in 0..30 {
            x.push(batch_features(&scan_batch(i).packets, &mut s));
            y.push(true);
        }
        let settings = Settings {
            grid: Grid { trees: vec![10], max_depth: vec![6], feature_fraction: vec![1.0] },
            folds: 3,
            ..Settings::default()
        };
        train::train(&x, &y, None, &settings).unwrap().model
    }

    #[test]
    fn scan_is_an_explained_supervised_anomaly_and_threshold_override_applies() {
        let model = trained();
        let config = SupervisedConfig { cooldown: Duration::from_secs(3), ..SupervisedConfig::default() };
        let d = SupervisedDetector::new(&config, model.clone());
        assert_eq!(d.cooldown_ns(), 3_000_000_000);
        let mut s = FeatureScratch::default();
        let scan = scan_batch(999);
        let x = batch_features(&scan.packets, &mut s);
        let p = d.detect(&x).expect("a scan is an attack");
        let a = supervised_anomaly(scan.source, &d, p, &x, &scan).build();
        assert_eq!(a.kind, AnomalyKind::Supervised);
        assert_eq!(a.model_version, model.version());
        assert_eq!(a.threshold, model.threshold());
        assert!(!a.features.is_empty() && a.features.iter().all(|c| c.baseline.is_some()));
        assert!(a.reason.contains("P(attack)"), "{}", a.reason);
        let benign = benign_batch(123_457);
        assert!(d.detect(&batch_features(&benign.packets, &mut s)).is_none());
        let never = SupervisedDetector::new(&SupervisedConfig { threshold: Some(1.0), ..config }, model);
        assert!(never.detect(&x).is_none_or(|p| p >= 1.0));
    }

    #[test]
    fn engine_runs_the_supervised_detector_once_per_host_per_cooldown() {
        let mut config = crate::DetectorConfig::default();
        config.forest.enabled = false;
        let model = trained();
        let version = model.version().to_string();
        let d = SupervisedDetector::new(&config.supervised, model);
        let mut on = crate::Engine::new(&config, crate::Models { supervised: Some(d), ..Default::default() });
        let mut off = crate::Engine::new(&config, crate::Models::default());
        let scan = scan_batch(0);
        let shifted = |s: i64| {
            let mut b = scan.clone();
            b.packets.iter_mut().for_each(|p| p.ts_ns += s * 1_000_000_000);
            b
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        // Default cooldown 10 s: the batches at 0 s and 12 s alert, the one at 2 s is within the cooldown.
        for batch in [shifted(0), shifted(2), shifted(12), benign_batch(5)] {
            on.process_batch(&batch, 0, &mut a);
            off.process_batch(&batch, 0, &mut b);
        }
        let supervised: Vec<_> = a.iter().filter(|x| x.kind == AnomalyKind::Supervised).collect();
        assert_eq!(supervised.len(), 2, "{supervised:?}");
        let in_force: Vec<_> = on.models_in_force().into_iter().map(|m| (m.kind, m.version)).collect();
        assert_eq!(in_force, [(crate::ModelKind::Supervised, version)]);
        assert!(off.models_in_force().is_empty());
        assert!(supervised.iter().all(|x| x.host == scan.source.to_string()));
        assert_eq!(on.stats().anomalies.get(&AnomalyKind::Supervised), Some(&2));
        assert!(!b.iter().any(|x| x.kind == AnomalyKind::Supervised), "off unless a model is given");
        assert_eq!(a.len() - 2, b.len(), "the other detectors are unchanged");
    }

    #[test]
    fn load_is_off_without_a_path_and_names_a_missing_file() {
        assert!(SupervisedDetector::load(&SupervisedConfig::default()).unwrap().is_none());
        let config = SupervisedConfig { model_path: Some("/nonexistent/m.json".into()), ..Default::default() };
        let e = SupervisedDetector::load(&config).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/m.json"), "{e}");
    }
}
