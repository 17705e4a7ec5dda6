//! The isolation detector: warm-up, scoring with the model in force, retraining on schedule, and the anomaly
//! record with its explanation.

use std::net::IpAddr;
use std::sync::Arc;

use netanom_schemas::{Anomaly, AnomalyKind, Contribution, PacketBatch};

use super::config::ForestConfig;
use super::lifecycle::Retrainer;
use super::model::{TrainOptions, TrainedForest, train};
use crate::anomaly::AnomalyParts;
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
}

impl IsolationDetector {
    /// A detector that trains after warm-up, or uses `model` when given, and then retrains with `retrain`.
    pub fn new(config: &ForestConfig, model: Option<TrainedForest>, retrain: Option<Retrainer>) -> Self {
        Self { config: config.clone(), warmup: Vec::new(), model: model.map(Arc::new), retrain, failed: false }
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
    type State = Cooldown;
    const PRODUCES: &'static [AnomalyKind] = &[AnomalyKind::Isolation];

    fn validate(config: &ForestConfig, _: &Context) -> Vec<ConfigError> {
        config.validate()
    }

    fn build(config: &ForestConfig, setup: &mut Setup<'_>) -> Option<Self> {
        let model = setup.take_model::<TrainedForest>();
        config.enabled.then(|| Self::new(config, model, Retrainer::new(config, setup.max_hosts)))
    }

    fn judge_batch(&mut self, host: IpAddr, batch: &mut Batch<'_>, cooldown: &mut Cooldown, out: &mut Vec<Anomaly>) {
        if batch.batch.packets.len() < self.config.min_packets.max(1) {
            return;
        }
        let v = batch.features();
        if let Some(score) = self.observe(host, batch.last_ns, &v)
            && let Some(model) = self.model()
            && score > model.threshold()
            && cooldown.fire(batch.last_ns, ns(self.config.cooldown))
        {
            out.push(isolation_anomaly(host, model, score, &v, batch.batch).build());
        }
    }

    fn note_anomaly(&mut self, anomaly: &Anomaly) {
        IsolationDetector::note_anomaly(self, anomaly);
    }
}

/// Builds the isolation anomaly for `host` from the vector of `batch`.
pub fn isolation_anomaly(
    host: IpAddr,
    model: &TrainedForest,
    score: f64,
    raw: &FeatureVector,
    batch: &PacketBatch,
) -> AnomalyParts {
    let features = model.explain(raw, 4);
    let start = batch.packets.iter().map(|p| p.ts_ns).min().unwrap_or(0);
    let end = batch.packets.iter().map(|p| p.ts_ns).max().unwrap_or(0);
    let sample = batch.packets.iter().find(|p| p.opens_flow()).or(batch.packets.first());
    AnomalyParts {
        host,
        kind: AnomalyKind::Isolation,
        window_start_ns: start,
        window_end_ns: end,
        score,
        threshold: model.threshold(),
        target: None,
        reason: isolation_reason(&host.to_string(), batch.packets.len(), score, model.threshold(), &features),
        features,
        sample: sample.map(|p| p.summary(host)).unwrap_or_default(),
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

fn short(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.2}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{FeatureScratch, batch_features};
    use crate::fixtures::benign_batch;

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
