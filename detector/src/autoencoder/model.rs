//! The KitNET model: the feature mapper, the ensemble of small autoencoders, the output autoencoder, seeded
//! training, threshold calibration, scoring, explanations and the model file (`netanom-kitnet-v1`).

use std::path::Path;

use rand::Rng;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::features::{FEATURE_NAMES, FEATURES, FeatureVector, model_input};
use crate::model_file::{self, FileError, ModelFile, ModelKind};

/// The format tag of the model file.
pub const FORMAT: &str = ModelKind::Autoencoder.format();

/// Fewest training vectors [`train`] accepts.
pub const MIN_SAMPLES: usize = 64;

/// Narrowest min–max span of an ensemble input, in model units (`log1p` of counts and sizes, shares as they
/// are): a feature constant in training (no ICMP at all, one TTL) is normalised over this span, so the first
/// other value reconstructs badly without swamping every other subset.
const INPUT_SPAN_FLOOR: f64 = 0.5;

/// Narrowest min–max span of an output-autoencoder input (an ensemble RMSE).
const RMSE_SPAN_FLOOR: f64 = 1e-3;

/// Why the autoencoder model could not be trained, read or written.
#[derive(Debug, thiserror::Error)]
pub enum AutoencoderError {
    /// Too few training vectors.
    #[error("cannot train the autoencoders on {got} vectors: at least {need} are needed")]
    TooFewSamples {
        /// Vectors given.
        got: usize,
        /// Vectors needed.
        need: usize,
    },
    /// A model file could not be read or written, is of another kind, or was trained on other features.
    #[error(transparent)]
    File(#[from] FileError),
}

/// How [`train`] trains: the settings of `[detector.autoencoder]` that shape the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainOptions {
    /// Most features per ensemble autoencoder (KitNET's `m`).
    pub max_subset: usize,
    /// Hidden units per visible unit of each autoencoder (rounded up, at least one).
    pub hidden_ratio: f64,
    /// Passes of stochastic gradient descent over the training vectors, per layer.
    pub epochs: usize,
    /// Step size of stochastic gradient descent.
    pub learning_rate: f64,
    /// Seed of the weights' initialisation and the order of the vectors in each pass (ChaCha8).
    pub seed: u64,
    /// Quantile of the training scores the threshold starts from.
    pub threshold_quantile: f64,
    /// The threshold is that quantile times this factor.
    pub threshold_factor: f64,
}

/// One autoencoder: a hidden layer of sigmoid units with tied weights, over inputs min–max normalised with the
/// bounds learned in training (KitNET's `dA`, without input corruption).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Autoencoder {
    /// Inputs.
    pub visible: usize,
    /// Hidden units.
    pub hidden: usize,
    /// Weights, `visible × hidden`, row by visible unit.
    pub weights: Vec<f64>,
    /// Bias of each hidden unit.
    pub hidden_bias: Vec<f64>,
    /// Bias of each reconstructed input.
    pub visible_bias: Vec<f64>,
    /// Lower bound of each input in training.
    pub min: Vec<f64>,
    /// Span of each input in training (at least the layer's floor).
    pub span: Vec<f64>,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl Autoencoder {
    /// An untrained autoencoder over `inputs` (each the same length `visible`): bounds from the inputs (spans at
    /// least `floor`), weights uniform in ±1/visible, biases zero.
    fn new(inputs: &[Vec<f64>], visible: usize, hidden_ratio: f64, floor: f64, rng: &mut ChaCha8Rng) -> Self {
        let hidden = ((visible as f64 * hidden_ratio).ceil() as usize).max(1);
        let mut min = vec![f64::INFINITY; visible];
        let mut max = vec![f64::NEG_INFINITY; visible];
        for x in inputs {
            for (i, v) in x.iter().enumerate() {
                min[i] = min[i].min(*v);
                max[i] = max[i].max(*v);
            }
        }
        let span = min.iter().zip(&max).map(|(lo, hi)| (hi - lo).max(floor)).collect();
        let a = 1.0 / visible as f64;
        let weights = (0..visible * hidden).map(|_| rng.gen_range(-a..a)).collect();
        Self { visible, hidden, weights, hidden_bias: vec![0.0; hidden], visible_bias: vec![0.0; visible], min, span }
    }

    fn normalise(&self, x: &[f64], out: &mut Vec<f64>) {
        out.clear();
        out.extend(x.iter().zip(self.min.iter().zip(&self.span)).map(|(v, (lo, s))| (v - lo) / s));
    }

    /// Hidden activations and reconstruction of the normalised input `x`.
    fn forward(&self, x: &[f64], h: &mut Vec<f64>, z: &mut Vec<f64>) {
        h.clear();
        h.extend((0..self.hidden).map(|j| {
            sigmoid(
                self.hidden_bias[j] + (0..self.visible).map(|i| x[i] * self.weights[i * self.hidden + j]).sum::<f64>(),
            )
        }));
        z.clear();
        z.extend((0..self.visible).map(|i| {
            let row = &self.weights[i * self.hidden..(i + 1) * self.hidden];
            sigmoid(self.visible_bias[i] + row.iter().zip(h.iter()).map(|(w, h)| w * h).sum::<f64>())
        }));
    }

    /// One step of stochastic gradient descent on `input` (KitNET's update for the cross-entropy loss).
    fn train_step(&mut self, input: &[f64], lr: f64, s: &mut Scratch) {
        self.normalise(input, &mut s.x);
        self.forward(&s.x, &mut s.h, &mut s.z);
        let (x, h, z) = (&s.x, &s.h, &s.z);
        s.dv.clear();
        s.dv.extend(x.iter().zip(z).map(|(x, z)| x - z));
        s.dh.clear();
        s.dh.extend((0..self.hidden).map(|j| {
            let back: f64 = (0..self.visible).map(|i| s.dv[i] * self.weights[i * self.hidden + j]).sum();
            back * h[j] * (1.0 - h[j])
        }));
        for ((row, xi), dv) in self.weights.chunks_mut(self.hidden).zip(x).zip(&s.dv) {
            for ((w, dh), hj) in row.iter_mut().zip(&s.dh).zip(h) {
                *w += lr * (xi * dh + dv * hj);
            }
        }
        for (b, dv) in self.visible_bias.iter_mut().zip(&s.dv) {
            *b += lr * dv;
        }
        for (b, dh) in self.hidden_bias.iter_mut().zip(&s.dh) {
            *b += lr * dh;
        }
    }

    /// Root-mean-square reconstruction error of `input`; each input's squared error goes to `per_input` when
    /// given.
    fn rmse(&self, input: &[f64], s: &mut Scratch, per_input: Option<&mut Vec<f64>>) -> f64 {
        self.normalise(input, &mut s.x);
        self.forward(&s.x, &mut s.h, &mut s.z);
        let errors = s.x.iter().zip(&s.z).map(|(x, z)| (x - z) * (x - z));
        let sum = match per_input {
            Some(out) => {
                out.clear();
                out.extend(errors);
                out.iter().sum::<f64>()
            }
            None => errors.sum::<f64>(),
        };
        (sum / self.visible as f64).sqrt()
    }

    fn check(&self, what: &str, visible: usize) -> Result<(), String> {
        let lens =
            [self.weights.len(), self.hidden_bias.len(), self.visible_bias.len(), self.min.len(), self.span.len()];
        let want = [visible * self.hidden, self.hidden, visible, visible, visible];
        if self.visible != visible || self.hidden == 0 || lens != want {
            return Err(format!(
                "{what}: {} inputs, {} hidden units and arrays of lengths {lens:?}, expected {visible} inputs, at \
                 least one hidden unit and lengths {want:?}",
                self.visible, self.hidden
            ));
        }
        let numbers = [&self.weights, &self.hidden_bias, &self.visible_bias, &self.min];
        if numbers.iter().any(|v| v.iter().any(|x| !x.is_finite()))
            || self.span.iter().any(|s| !(*s > 0.0 && s.is_finite()))
        {
            return Err(format!("{what}: a weight, bias or bound is not a finite number (or a span is not positive)"));
        }
        Ok(())
    }
}

/// Buffers of one forward and backward pass.
#[derive(Debug, Default)]
struct Scratch {
    x: Vec<f64>,
    h: Vec<f64>,
    z: Vec<f64>,
    dv: Vec<f64>,
    dh: Vec<f64>,
    sub: Vec<f64>,
}

/// How one vector scored: the anomaly score and each subset's reconstruction error.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The output autoencoder's RMSE over the ensemble's RMSEs.
    pub score: f64,
    /// Each subset's RMSE, in subset order.
    pub subset_rmse: Vec<f64>,
}

/// The subset that reconstructed worst, relative to its largest error in training, and its features.
#[derive(Debug, Clone, PartialEq)]
pub struct Worst {
    /// Its position in [`KitNet::subsets`].
    pub subset: usize,
    /// Its RMSE for the vector.
    pub rmse: f64,
    /// Its largest RMSE over the training vectors.
    pub training_max: f64,
    /// Its features (positions in the batch vector), the worst reconstructed first.
    pub features: Vec<usize>,
}

/// A trained KitNET model: the subsets of the feature mapper, one autoencoder per subset, the output autoencoder
/// and the threshold, with what it was trained with. Saved as `netanom-kitnet-v1` JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KitNet {
    format: String,
    features: Vec<String>,
    #[serde(skip)]
    version: String,
    /// Training seed.
    seed: u64,
    max_subset: usize,
    hidden_ratio: f64,
    epochs: usize,
    learning_rate: f64,
    threshold_quantile: f64,
    threshold_factor: f64,
    training_samples: usize,
    /// Feature positions of each subset, ascending; the subsets partition the features.
    subsets: Vec<Vec<usize>>,
    ensemble: Vec<Autoencoder>,
    output: Autoencoder,
    /// Largest RMSE of each subset over the training vectors.
    subset_max: Vec<f64>,
    /// Largest score over the training vectors.
    training_max: f64,
    threshold: f64,
    /// Mean of each feature over the training vectors, original units.
    baseline_mean: Vec<f64>,
}

/// Feature mapper: single-linkage clustering of the features by correlation distance (1 − Pearson correlation,
/// a constant feature at distance 1 from every other), the dendrogram cut top-down until every cluster has at
/// most `max_subset` features (KitNET's `corClust`). Subsets come out ordered by their first feature.
pub fn feature_map(inputs: &[FeatureVector], max_subset: usize) -> Vec<Vec<usize>> {
    let n = inputs.len().max(1) as f64;
    let mut mean = [0.0; FEATURES];
    for x in inputs {
        for (m, v) in mean.iter_mut().zip(x) {
            *m += v / n;
        }
    }
    let mut cov = [[0.0; FEATURES]; FEATURES];
    for x in inputs {
        for i in 0..FEATURES {
            for j in 0..FEATURES {
                cov[i][j] += (x[i] - mean[i]) * (x[j] - mean[j]);
            }
        }
    }
    let dist = |i: usize, j: usize| {
        let d = cov[i][i].sqrt() * cov[j][j].sqrt();
        let corr = if d > 1e-12 { cov[i][j] / d } else { 0.0 };
        (1.0 - corr).max(0.0)
    };
    // Agglomerate: nodes 0..FEATURES are the features; each merge appends a node (left, right, members).
    let mut members: Vec<Vec<usize>> = (0..FEATURES).map(|i| vec![i]).collect();
    let mut children: Vec<Option<(usize, usize)>> = vec![None; FEATURES];
    let mut open: Vec<usize> = (0..FEATURES).collect();
    while open.len() > 1 {
        let mut best = (f64::INFINITY, 0, 1);
        for a in 0..open.len() {
            for b in a + 1..open.len() {
                let d = members[open[a]]
                    .iter()
                    .flat_map(|&i| members[open[b]].iter().map(move |&j| (i, j)))
                    .map(|(i, j)| dist(i, j))
                    .fold(f64::INFINITY, f64::min);
                if d < best.0 {
                    best = (d, a, b);
                }
            }
        }
        let (_, a, b) = best;
        let (left, right) = (open[a], open[b]);
        let mut m = members[left].clone();
        m.extend(&members[right]);
        members.push(m);
        children.push(Some((left, right)));
        open.remove(b);
        open[a] = members.len() - 1;
    }
    let mut subsets = Vec::new();
    let mut stack = vec![members.len() - 1];
    while let Some(node) = stack.pop() {
        match children[node] {
            Some((l, r)) if members[node].len() > max_subset.max(1) => stack.extend([r, l]),
            _ => {
                let mut s = members[node].clone();
                s.sort_unstable();
                subsets.push(s);
            }
        }
    }
    subsets.sort_unstable();
    subsets
}

/// Trains a KitNET model on `raw` (vectors in original units), reproducibly from `opts.seed`: the feature
/// mapper on the whole set, then each ensemble autoencoder for `epochs` shuffled passes, then the output
/// autoencoder on the ensemble's RMSEs, then the threshold from the training scores.
pub fn train(raw: &[FeatureVector], opts: &TrainOptions) -> Result<KitNet, AutoencoderError> {
    if raw.len() < MIN_SAMPLES {
        return Err(AutoencoderError::TooFewSamples { got: raw.len(), need: MIN_SAMPLES });
    }
    let inputs: Vec<FeatureVector> = raw.iter().map(model_input).collect();
    let subsets = feature_map(&inputs, opts.max_subset);
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    let mut s = Scratch::default();
    let mut ensemble = Vec::with_capacity(subsets.len());
    for subset in &subsets {
        let part: Vec<Vec<f64>> = inputs.iter().map(|x| subset.iter().map(|&f| x[f]).collect()).collect();
        let mut ae = Autoencoder::new(&part, subset.len(), opts.hidden_ratio, INPUT_SPAN_FLOOR, &mut rng);
        for _ in 0..opts.epochs {
            order.shuffle(&mut rng);
            for &i in &order {
                ae.train_step(&part[i], opts.learning_rate, &mut s);
            }
        }
        ensemble.push(ae);
    }
    let rmses: Vec<Vec<f64>> = inputs.iter().map(|x| ensemble_rmse(&subsets, &ensemble, x, &mut s)).collect();
    let mut output = Autoencoder::new(&rmses, subsets.len(), opts.hidden_ratio, RMSE_SPAN_FLOOR, &mut rng);
    for _ in 0..opts.epochs {
        order.shuffle(&mut rng);
        for &i in &order {
            output.train_step(&rmses[i], opts.learning_rate, &mut s);
        }
    }
    let mut scores: Vec<f64> = rmses.iter().map(|r| output.rmse(r, &mut s, None)).collect();
    let subset_max = (0..subsets.len()).map(|k| rmses.iter().map(|r| r[k]).fold(0.0, f64::max)).collect();
    scores.sort_unstable_by(f64::total_cmp);
    let training_max = scores.last().copied().unwrap_or(0.0);
    let q = opts.threshold_quantile.clamp(0.0, 1.0);
    let at = ((scores.len() - 1) as f64 * q).round() as usize;
    let threshold = (scores[at.min(scores.len() - 1)] * opts.threshold_factor).max(f64::MIN_POSITIVE);
    let n = raw.len() as f64;
    let baseline_mean = (0..FEATURES).map(|f| raw.iter().map(|x| x[f]).sum::<f64>() / n).collect();
    let mut model = KitNet {
        format: FORMAT.to_string(),
        features: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        version: String::new(),
        seed: opts.seed,
        max_subset: opts.max_subset,
        hidden_ratio: opts.hidden_ratio,
        epochs: opts.epochs,
        learning_rate: opts.learning_rate,
        threshold_quantile: opts.threshold_quantile,
        threshold_factor: opts.threshold_factor,
        training_samples: raw.len(),
        subsets,
        ensemble,
        output,
        subset_max,
        training_max,
        threshold,
        baseline_mean,
    };
    model.version = model.compute_version();
    Ok(model)
}

fn ensemble_rmse(subsets: &[Vec<usize>], ensemble: &[Autoencoder], x: &FeatureVector, s: &mut Scratch) -> Vec<f64> {
    subsets
        .iter()
        .zip(ensemble)
        .map(|(subset, ae)| {
            let mut sub = std::mem::take(&mut s.sub);
            sub.clear();
            sub.extend(subset.iter().map(|&f| x[f]));
            let r = ae.rmse(&sub, s, None);
            s.sub = sub;
            r
        })
        .collect()
}

impl KitNet {
    /// The model version: `ae-<hash>`, the FNV-1a 64 of the model's serialisation.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Anomaly score above which a vector is an anomaly.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Largest score over the training vectors.
    pub fn training_max(&self) -> f64 {
        self.training_max
    }

    /// Training vectors.
    pub fn training_samples(&self) -> usize {
        self.training_samples
    }

    /// The feature subsets, one per ensemble autoencoder (positions in the batch vector).
    pub fn subsets(&self) -> &[Vec<usize>] {
        &self.subsets
    }

    /// Mean of each feature over the training vectors, original units.
    pub fn baseline_mean(&self) -> &[f64] {
        &self.baseline_mean
    }

    /// Scores `raw` (original units).
    pub fn score(&self, raw: &FeatureVector) -> Scored {
        let mut s = Scratch::default();
        let x = model_input(raw);
        let subset_rmse = ensemble_rmse(&self.subsets, &self.ensemble, &x, &mut s);
        let score = self.output.rmse(&subset_rmse, &mut s, None);
        Scored { score: if score.is_finite() { score } else { f64::MAX }, subset_rmse }
    }

    /// The subset of `scored` (the score of `raw`) furthest above its largest training error, with its features
    /// ordered by their reconstruction error.
    pub fn worst(&self, raw: &FeatureVector, scored: &Scored) -> Worst {
        let ratio = |k: usize| scored.subset_rmse[k] / self.subset_max[k].max(1e-12);
        let subset = (0..self.subsets.len()).max_by(|a, b| ratio(*a).total_cmp(&ratio(*b))).unwrap_or(0);
        let mut s = Scratch::default();
        let x = model_input(raw);
        let features = &self.subsets[subset];
        let input: Vec<f64> = features.iter().map(|&f| x[f]).collect();
        let mut errors = Vec::new();
        let rmse = self.ensemble[subset].rmse(&input, &mut s, Some(&mut errors));
        let mut order: Vec<usize> = (0..features.len()).collect();
        order.sort_by(|a, b| errors[*b].total_cmp(&errors[*a]).then(a.cmp(b)));
        Worst {
            subset,
            rmse,
            training_max: self.subset_max[subset],
            features: order.into_iter().map(|i| features[i]).collect(),
        }
    }

    fn compute_version(&self) -> String {
        let text = serde_json::to_vec(self).unwrap_or_default();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in &text {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("ae-{h:016x}")
    }

    /// Writes the model (JSON) to `path`.
    pub fn save(&self, path: &Path) -> Result<(), AutoencoderError> {
        Ok(model_file::save(path, self)?)
    }

    /// Reads a model written by [`KitNet::save`], checking its kind, format, feature list and every array and
    /// number.
    pub fn load(path: &Path) -> Result<Self, AutoencoderError> {
        Ok(model_file::load(path)?)
    }

    fn check(&self) -> Result<(), String> {
        let mut seen = [false; FEATURES];
        for s in &self.subsets {
            if s.is_empty() {
                return Err("an empty feature subset".to_string());
            }
            for &f in s {
                if f >= FEATURES || std::mem::replace(&mut seen[f], true) {
                    return Err(format!("feature {f} is out of range or in two subsets"));
                }
            }
        }
        if seen.iter().any(|s| !s) {
            return Err("the subsets leave features out".to_string());
        }
        if self.ensemble.len() != self.subsets.len() || self.subset_max.len() != self.subsets.len() {
            return Err(format!(
                "{} subsets but {} autoencoders and {} training maxima",
                self.subsets.len(),
                self.ensemble.len(),
                self.subset_max.len()
            ));
        }
        for (k, (ae, s)) in self.ensemble.iter().zip(&self.subsets).enumerate() {
            ae.check(&format!("autoencoder {k}"), s.len())?;
        }
        self.output.check("output autoencoder", self.subsets.len())?;
        if self.baseline_mean.len() != FEATURES || self.baseline_mean.iter().any(|x| !x.is_finite()) {
            return Err(format!(
                "baseline has {} values or one is not finite, expected {FEATURES}",
                self.baseline_mean.len()
            ));
        }
        if self.subset_max.iter().any(|x| !(x.is_finite() && *x >= 0.0)) || !self.training_max.is_finite() {
            return Err("a training maximum is not a finite non-negative number".to_string());
        }
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return Err(format!("threshold {} is not a positive number", self.threshold));
        }
        Ok(())
    }
}

impl ModelFile for KitNet {
    const KIND: ModelKind = ModelKind::Autoencoder;
    const FEATURE_NAMES: &'static [&'static str] = &FEATURE_NAMES;

    fn features(&self) -> &[String] {
        &self.features
    }

    fn checked(mut self) -> Result<Self, String> {
        self.check()?;
        self.version = self.compute_version();
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{Batch, FeatureScratch, batch_features};
    use crate::fixtures::{benign_batch, scan_batch};
    use crate::model_file::Problem;

    fn options() -> TrainOptions {
        TrainOptions {
            max_subset: 5,
            hidden_ratio: 0.75,
            epochs: 10,
            learning_rate: 0.1,
            seed: 7,
            threshold_quantile: 1.0,
            threshold_factor: 1.5,
        }
    }

    fn benign(n: u64) -> Vec<FeatureVector> {
        let mut s = FeatureScratch::default();
        (0..n)
            .map(|i| batch_features(&benign_batch(i).packets, &mut s))
            .filter(|v| v[Batch::Packets.i()] >= 8.0)
            .collect()
    }

    #[test]
    fn feature_map_partitions_the_features_into_small_correlated_subsets() {
        let inputs: Vec<FeatureVector> = benign(600).iter().map(model_input).collect();
        for m in [1, 3, 5, FEATURES] {
            let subsets = feature_map(&inputs, m);
            let mut all: Vec<usize> = subsets.iter().flatten().copied().collect();
            all.sort_unstable();
            assert_eq!(all, (0..FEATURES).collect::<Vec<_>>(), "m = {m}: {subsets:?}");
            assert!(subsets.iter().all(|s| !s.is_empty() && s.len() <= m), "m = {m}: {subsets:?}");
        }
        assert_eq!(feature_map(&inputs, FEATURES).len(), 1);
        assert_eq!(feature_map(&inputs, 1).len(), FEATURES);
        // Two perfectly correlated features and the rest constant: the pair stays together.
        let mut x = vec![[0.0; FEATURES]; 10];
        for (i, v) in x.iter_mut().enumerate() {
            v[3] = i as f64;
            v[9] = 2.0 * i as f64 + 1.0;
        }
        assert!(feature_map(&x, 2).contains(&vec![3, 9]));
    }

    #[test]
    fn training_is_reproducible_for_a_seed() {
        let data = benign(700);
        let a = train(&data, &options()).unwrap();
        let b = train(&data, &options()).unwrap();
        let c = train(&data, &TrainOptions { seed: 8, ..options() }).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.version(), b.version());
        assert!(a.version().starts_with("ae-"), "{}", a.version());
        assert_ne!(a.version(), c.version(), "the seed is part of the model");
        assert!(matches!(
            train(&data[..10], &options()),
            Err(AutoencoderError::TooFewSamples { got: 10, need: MIN_SAMPLES })
        ));
    }

    #[test]
    fn an_injected_outlier_scores_far_above_the_training_traffic() {
        let data = benign(700);
        let m = train(&data, &options()).unwrap();
        assert!(m.threshold() >= m.training_max());
        let unseen = benign(1400);
        let above = unseen[data.len()..].iter().filter(|x| m.score(x).score > m.threshold()).count();
        assert!(above * 100 <= unseen.len() - data.len(), "{above} unseen benign vectors above the threshold");
        let mut s = FeatureScratch::default();
        for i in 0..20 {
            let scan = batch_features(&scan_batch(i).packets, &mut s);
            let scored = m.score(&scan);
            assert!(scored.score > 2.0 * m.threshold(), "scan {i}: {} <= 2 × {}", scored.score, m.threshold());
            let worst = m.worst(&scan, &scored);
            assert!(worst.rmse > worst.training_max, "{worst:?}");
            assert_eq!(worst.features.len(), m.subsets()[worst.subset].len());
        }
    }

    #[test]
    fn the_file_round_trips_and_refuses_other_kinds_and_features() {
        let m = train(&benign(400), &options()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ae.json");
        m.save(&path).unwrap();
        let back = KitNet::load(&path).unwrap();
        assert_eq!(back, m);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(r#"{"format":"netanom-kitnet-v1","features":["packets","#), "{}", &text[..80]);

        std::fs::write(&path, r#"{"format": "netanom-eif-v1", "trees": []}"#).unwrap();
        let e = KitNet::load(&path).unwrap_err().to_string();
        assert!(
            e.ends_with("is an isolation-forest model (format netanom-eif-v1), expected an autoencoder (KitNET) model"),
            "{e}"
        );

        let renamed = text.replacen(r#""packets""#, r#""packets_total""#, 1);
        std::fs::write(&path, renamed).unwrap();
        let e = KitNet::load(&path).unwrap_err();
        assert!(matches!(&e, AutoencoderError::File(f) if matches!(f.problem, Problem::Features(_))), "{e:?}");
        assert!(e.to_string().contains(r#"not in this build ["packets_total"]"#), "{e}");

        let mut broken = m.clone();
        broken.ensemble[0].weights.pop();
        std::fs::write(&path, serde_json::to_vec(&broken).unwrap()).unwrap();
        let e = KitNet::load(&path).unwrap_err().to_string();
        assert!(e.contains("autoencoder 0:"), "{e}");
        let mut broken = m.clone();
        let twice = broken.subsets[1][0];
        broken.subsets[0].push(twice);
        std::fs::write(&path, serde_json::to_vec(&broken).unwrap()).unwrap();
        assert!(KitNet::load(&path).unwrap_err().to_string().contains("in two subsets"));
        std::fs::write(&path, "{\"format\": \"netanom-kitnet-v1\", \"features\": 3").unwrap();
        assert!(KitNet::load(&path).is_err());
    }
}
