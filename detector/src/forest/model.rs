//! The isolation forest model: seeded reproducible training, threshold calibration, explanations and the
//! persisted file.

use std::path::Path;

use extended_isolation_forest::Forest;
use netanom_schemas::Contribution;
use rand::Rng;
use rand::SeedableRng;
use rand::distributions::Uniform;
use rand::seq::{IteratorRandom, SliceRandom};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::config::ForestConfig;
use super::flat::{FlatForest, ForestRepr, InRepr, NodeRepr, TreeRepr};
use crate::features::{FEATURE_NAMES, FEATURES, FeatureVector, model_input};
use crate::model_file::{self, FileError, ModelFile, ModelKind};

/// Why a model could not be trained, loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum ForestError {
    /// Fewer vectors than the per-tree sample.
    #[error("cannot train on {got} vectors: forest.sample_size is {need}")]
    TooFewSamples {
        /// Vectors given.
        got: usize,
        /// Vectors needed.
        need: usize,
    },
    /// The generated representation was rejected by the crate.
    #[error("building the forest representation failed: {0}")]
    Representation(#[source] serde_json::Error),
    /// The forest could not be copied into its flat scoring form.
    #[error("flattening the forest failed")]
    Flatten(#[source] super::flat::FlattenError),
    /// A recipe from the models topic was refused.
    #[error("{0}")]
    Recipe(String),
    /// A model file could not be read or written, is of another kind, or was trained on other features.
    #[error(transparent)]
    File(#[from] FileError),
}

/// Training parameters (the relevant part of [`ForestConfig`]); also the parameters of a models-topic recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainOptions {
    /// Trees.
    pub trees: usize,
    /// Vectors per tree.
    pub sample_size: usize,
    /// Hyperplane extension level (< FEATURES).
    pub extension_level: usize,
    /// Base RNG seed; generation `g` trains with [`generation_seed`]`(seed, g)`.
    pub seed: u64,
    /// Quantile of training scores used as threshold.
    pub threshold_quantile: f64,
    /// Added to the quantile.
    pub threshold_margin: f64,
    /// Lowest threshold.
    pub threshold_floor: f64,
}

impl From<&ForestConfig> for TrainOptions {
    fn from(c: &ForestConfig) -> Self {
        Self {
            trees: c.trees.max(1),
            sample_size: c.sample_size.max(2),
            extension_level: c.extension_level.min(FEATURES - 1),
            seed: c.seed,
            threshold_quantile: c.threshold_quantile,
            threshold_margin: c.threshold_margin,
            threshold_floor: c.threshold_floor,
        }
    }
}

/// A trained forest with its threshold and the training baseline used to explain anomalies. Persisted as
/// JSON; the `forest` field is the crate's own serde representation.
#[derive(Serialize, Deserialize)]
pub struct TrainedForest {
    format: String,
    features: Vec<String>,
    threshold: f64,
    training_samples: usize,
    /// The RNG seed the trees were built with ([`generation_seed`] of the configured seed).
    seed: u64,
    /// 1 for a model trained at warm-up, +1 per retraining. Files written before retraining existed have none.
    #[serde(default = "first_generation")]
    generation: u32,
    /// Mean of each feature over the training set, human units.
    baseline_mean: Vec<f64>,
    /// Mean and standard deviation of each model input over the training set.
    model_mean: Vec<f64>,
    model_std: Vec<f64>,
    forest: Forest<f64, FEATURES>,
    /// A host-profile model that older isolation-forest files carried inside: read only to warn that it
    /// is not used (the profile model has its own file, `profile.model_path`).
    #[serde(default, rename = "profile", skip_serializing)]
    embedded_profile: Option<serde::de::IgnoredAny>,
    #[serde(skip)]
    version: String,
    /// The hot-path copy of `forest` (same scores, see [`crate::forest::flat`]).
    #[serde(skip)]
    flat: FlatForest,
}

const FORMAT: &str = ModelKind::IsolationForest.format();

fn first_generation() -> u32 {
    1
}

/// The training seed of generation `generation`: `base` itself for generation 1 (so a first model is the one
/// `seed` always built), else a SplitMix64 mix of `base` and the generation, so every retraining draws
/// different trees and the same (base, generation) always draws the same ones.
pub fn generation_seed(base: u64, generation: u32) -> u64 {
    if generation <= 1 {
        return base;
    }
    let mut z = base.wrapping_add(u64::from(generation).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl std::fmt::Debug for TrainedForest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainedForest")
            .field("version", &self.version)
            .field("generation", &self.generation)
            .field("threshold", &self.threshold)
            .field("training_samples", &self.training_samples)
            .finish_non_exhaustive()
    }
}

/// Average path length of an unsuccessful search in a BST of n points (the crate's `c_factor`).
fn c_factor(n: usize) -> f64 {
    let n = n as f64;
    2.0 * ((n - 1.0).ln() + 0.5772156649) - (2.0 * (n - 1.0) / n)
}

fn direction_right(x: &FeatureVector, n: &FeatureVector, p: &FeatureVector) -> bool {
    let d = x.iter().zip(p).map(|(x, p)| x - p).zip(n).fold(0.0, |s, (d, n)| s + d * n);
    d > 0.0
}

/// True when `lo..hi` is empty or too narrow to split. The crate only special-cases `lo == hi`; for a range
/// of a few ULPs rand 0.8's `Uniform::<f64>::new` walks its scale down one ULP at a time and effectively never
/// returns (found by the hostile-input property test: two batches whose mean TTLs differed in the last bit).
/// Such a split cannot separate anything anyway, so the intercept is `lo`, as for an empty range.
fn narrow(lo: f64, hi: f64) -> bool {
    let span = hi - lo;
    !(span.is_finite() && span > lo.abs().max(hi.abs()) * 1e-9)
}

fn make_node(samples: &[&FeatureVector], rng: &mut ChaCha8Rng, depth: usize, max_depth: usize, ext: usize) -> NodeRepr {
    if depth >= max_depth || samples.len() <= 1 {
        return NodeRepr::Ex { num_samples: samples.len() };
    }
    let mut maxs = *samples[0];
    let mut mins = *samples[0];
    for s in &samples[1..] {
        for (i, v) in s.iter().enumerate() {
            if *v > maxs[i] {
                maxs[i] = *v;
            }
            if *v < mins[i] {
                mins[i] = *v;
            }
        }
    }
    let mut p = [0.0; FEATURES];
    for ((lo, hi), p_i) in mins.iter().zip(&maxs).zip(p.iter_mut()) {
        *p_i = if narrow(*lo, *hi) { *lo } else { rng.sample(Uniform::new(*lo, *hi)) };
    }
    let mut n = [0.0; FEATURES];
    for n_i in n.iter_mut() {
        *n_i = rng.sample(StandardNormal);
    }
    for idx in (0..FEATURES).choose_multiple(rng, FEATURES - ext - 1) {
        n[idx] = 0.0;
    }
    let (mut left, mut right) = (Vec::new(), Vec::new());
    for s in samples {
        if direction_right(s, &n, &p) {
            right.push(*s);
        } else {
            left.push(*s);
        }
    }
    let l = make_node(&left, rng, depth + 1, max_depth, ext);
    let r = make_node(&right, rng, depth + 1, max_depth, ext);
    NodeRepr::In(Box::new(InRepr { left: l, right: r, n, p }))
}

/// The model version: `eif-<hash>` with the FNV-1a 64 of the forest's serialisation, plus `-g<generation>`
/// for a retrained generation (2 and later).
fn forest_version(serialised: &[u8], generation: u32) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in serialised {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    if generation > 1 { format!("eif-{h:016x}-g{generation}") } else { format!("eif-{h:016x}") }
}

/// Trains a first-generation forest on `raw` (human-unit vectors), reproducibly from `opts.seed`, and calibrates
/// its threshold.
pub fn train(raw: &[FeatureVector], opts: &TrainOptions) -> Result<TrainedForest, ForestError> {
    train_generation(raw, opts, 1)
}

/// Trains generation `generation` (1 at warm-up, +1 per retraining) on `raw`, reproducibly from
/// [`generation_seed`]`(opts.seed, generation)`, and calibrates its threshold.
pub fn train_generation(
    raw: &[FeatureVector],
    opts: &TrainOptions,
    generation: u32,
) -> Result<TrainedForest, ForestError> {
    if raw.len() < opts.sample_size || raw.is_empty() {
        return Err(ForestError::TooFewSamples { got: raw.len(), need: opts.sample_size });
    }
    let inputs: Vec<FeatureVector> = raw.iter().map(model_input).collect();
    let generation = generation.max(1);
    let seed = generation_seed(opts.seed, generation);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let max_depth = (opts.sample_size as f64).log2().ceil() as usize;
    let ext = opts.extension_level.min(FEATURES - 1);
    let trees: Vec<TreeRepr> = (0..opts.trees)
        .map(|_| {
            let sample: Vec<&FeatureVector> = inputs.choose_multiple(&mut rng, opts.sample_size).collect();
            TreeRepr { root: make_node(&sample, &mut rng, 0, max_depth, ext) }
        })
        .collect();
    let repr = ForestRepr { avg_path_length_c: c_factor(opts.sample_size), trees };
    // The crate's forest is read from the representation (with `float_roundtrip`, so every float is exact) and
    // the flat copy is built from the same representation.
    let text = serde_json::to_vec(&repr).map_err(ForestError::Representation)?;
    let forest: Forest<f64, FEATURES> = serde_json::from_slice(&text).map_err(ForestError::Representation)?;
    let flat = FlatForest::from_repr(&repr).map_err(ForestError::Flatten)?;

    // The flat copy scores bit for bit like the crate (property-tested in `flat`), several times faster.
    let mut scores: Vec<f64> = inputs.iter().map(|x| flat.score(x)).collect();
    scores.sort_unstable_by(f64::total_cmp);
    let idx = ((opts.threshold_quantile * scores.len() as f64).ceil() as usize).clamp(1, scores.len()) - 1;
    let threshold = (scores[idx] + opts.threshold_margin).max(opts.threshold_floor);
    let at = |q: f64| scores[((q * scores.len() as f64).ceil() as usize).clamp(1, scores.len()) - 1];
    tracing::debug!(target: "netanom_detector::forest::scores", vectors = scores.len(), p50 = at(0.5),
        p90 = at(0.9), p95 = at(0.95), p98 = at(0.98), p99 = at(0.99), max = at(1.0), threshold, "training scores");

    let nf = raw.len() as f64;
    let mut baseline_mean = vec![0.0; FEATURES];
    let mut model_mean = vec![0.0; FEATURES];
    let mut model_std = vec![0.0; FEATURES];
    for (r, m) in raw.iter().zip(&inputs) {
        for i in 0..FEATURES {
            baseline_mean[i] += r[i] / nf;
            model_mean[i] += m[i] / nf;
        }
    }
    for m in &inputs {
        for i in 0..FEATURES {
            model_std[i] += (m[i] - model_mean[i]).powi(2) / nf;
        }
    }
    for s in &mut model_std {
        *s = s.sqrt();
    }
    let version = forest_version(&text, generation);
    Ok(TrainedForest {
        format: FORMAT.to_string(),
        features: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        threshold,
        training_samples: raw.len(),
        seed,
        generation,
        baseline_mean,
        model_mean,
        model_std,
        forest,
        embedded_profile: None,
        version,
        flat,
    })
}

impl TrainedForest {
    /// Anomaly score of a human-unit vector (0..1; higher is more isolated): the crate's score, computed on
    /// the flat copy of its forest.
    pub fn score(&self, raw: &FeatureVector) -> f64 {
        self.flat.score(&model_input(raw))
    }

    /// The calibrated threshold.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// `eif-<16 hex digits>`, a hash of the forest, with `-g<generation>` from the second generation on.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// 1 for the model trained at warm-up (or by `netanom train`), +1 per retraining.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The crate's forest.
    pub fn forest(&self) -> &Forest<f64, FEATURES> {
        &self.forest
    }

    /// The flat copy the detector scores with.
    #[cfg(test)]
    pub(crate) fn flat(&self) -> &FlatForest {
        &self.flat
    }

    /// The features that deviate most from the training sample (|z| of the model input against the training
    /// mean and standard deviation), strongest first, at most `top`; values and baselines in human units.
    pub fn explain(&self, raw: &FeatureVector, top: usize) -> Vec<Contribution> {
        let m = model_input(raw);
        let mut z: Vec<(usize, f64)> = (0..FEATURES)
            .map(|i| {
                let d = m[i] - self.model_mean[i];
                // A feature constant in training: any change is notable, scaled by a small unit.
                let s = if self.model_std[i] > 1e-9 { self.model_std[i] } else { 0.05 };
                (i, (d / s).abs())
            })
            .filter(|(_, z)| *z > 0.0)
            .collect();
        z.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        z.into_iter()
            .take(top)
            .map(|(i, _)| Contribution {
                name: FEATURE_NAMES[i].to_string(),
                value: raw[i],
                baseline: Some(self.baseline_mean[i]),
            })
            .collect()
    }

    /// Writes the model (JSON) to `path`.
    pub fn save(&self, path: &Path) -> Result<(), ForestError> {
        Ok(model_file::save(path, self)?)
    }

    /// Reads a model written by [`TrainedForest::save`], checking its kind, format and feature list.
    pub fn load(path: &Path) -> Result<Self, ForestError> {
        let mut model: TrainedForest = model_file::load(path)?;
        if model.embedded_profile.take().is_some() {
            tracing::warn!(
                path = %path.display(),
                "the model file also holds a host-profile model, which is not used: profile models have their own \
                 file (detector.profile.model_path, written by netanom train --profile-out)"
            );
        }
        Ok(model)
    }
}

impl ModelFile for TrainedForest {
    const KIND: ModelKind = ModelKind::IsolationForest;
    const FEATURE_NAMES: &'static [&'static str] = &FEATURE_NAMES;

    fn features(&self) -> &[String] {
        &self.features
    }

    fn checked(mut self) -> Result<Self, String> {
        let lens = [self.baseline_mean.len(), self.model_mean.len(), self.model_std.len()];
        if lens.iter().any(|l| *l != FEATURES) {
            return Err(format!("baseline vectors have lengths {lens:?}, expected {FEATURES}"));
        }
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return Err(format!("threshold {} is not a positive number", self.threshold));
        }
        if self.generation == 0 {
            return Err("generation 0: generations start at 1".to_string());
        }
        let text = serde_json::to_vec(&self.forest).map_err(|e| e.to_string())?;
        self.version = forest_version(&text, self.generation);
        self.flat = FlatForest::new(&self.forest).map_err(|e| e.to_string())?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{FeatureScratch, batch_features};
    use crate::fixtures::{benign_batch, scan_batch};
    use crate::model_file::Problem;

    fn training_set(n: usize) -> Vec<FeatureVector> {
        let mut s = FeatureScratch::default();
        (0..n).map(|i| batch_features(&benign_batch(i as u64).packets, &mut s)).collect()
    }

    fn opts() -> TrainOptions {
        TrainOptions::from(&ForestConfig { trees: 60, ..ForestConfig::default() })
    }

    #[test]
    fn same_seed_same_data_same_scores() {
        let data = training_set(512);
        let a = train(&data, &opts()).unwrap();
        let b = train(&data, &opts()).unwrap();
        assert_eq!(a.version(), b.version());
        assert_eq!(a.threshold(), b.threshold());
        for x in data.iter().take(50) {
            assert_eq!(a.score(x).to_bits(), b.score(x).to_bits());
        }
        let c = train(&data, &TrainOptions { seed: 7, ..opts() }).unwrap();
        assert_ne!(a.version(), c.version(), "another seed builds another forest");
    }

    #[test]
    fn persisted_forest_reloads_to_identical_scores() {
        let data = training_set(512);
        let a = train(&data, &opts()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.json");
        a.save(&path).unwrap();
        let b = TrainedForest::load(&path).unwrap();
        assert_eq!(a.version(), b.version());
        assert_eq!(a.threshold().to_bits(), b.threshold().to_bits());
        let mut s = FeatureScratch::default();
        let probe = batch_features(&scan_batch(0).packets, &mut s);
        for x in data.iter().take(50).chain([&probe]) {
            assert_eq!(a.score(x).to_bits(), b.score(x).to_bits());
        }
    }

    #[test]
    fn a_forest_of_other_features_is_refused_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.json");
        let m = train(&training_set(300), &TrainOptions { trees: 5, ..opts() }).unwrap();
        m.save(&path).unwrap();
        // An older file with a host-profile model inside loads as the same forest (the profile part unused).
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen('{', r#"{"profile": {"format": "netanom-profile-kmeans-v1"},"#, 1))
            .unwrap();
        assert_eq!(TrainedForest::load(&path).unwrap().version(), m.version());
        let text = std::fs::read_to_string(&path).unwrap().replacen("\"syn_fraction\"", "\"ack_fraction\"", 1);
        std::fs::write(&path, text).unwrap();
        let e = TrainedForest::load(&path).unwrap_err();
        assert!(matches!(&e, ForestError::File(f) if matches!(f.problem, Problem::Features(_))), "{e:?}");
        assert!(
            e.to_string().ends_with(
                "model.json was trained on other features than this build: not in this build [\"ack_fraction\"]; \
                 missing from the file [\"syn_fraction\"]"
            ),
            "{e}"
        );
    }

    #[test]
    fn load_rejects_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        std::fs::write(&path, r#"{"format": "x"}"#).unwrap();
        assert!(
            matches!(TrainedForest::load(&path), Err(ForestError::File(f)) if matches!(f.problem, Problem::Kind(_)))
        );
        std::fs::write(&path, r#"{"format": "netanom-eif-v1"}"#).unwrap();
        assert!(
            matches!(TrainedForest::load(&path), Err(ForestError::File(f)) if matches!(f.problem, Problem::Format(_)))
        );
        std::fs::write(&path, r#"{"format": "netanom-rf-v1", "trees": []}"#).unwrap();
        let e = TrainedForest::load(&path).unwrap_err().to_string();
        assert!(
            e.ends_with("x.json is a supervised model (format netanom-rf-v1), expected an isolation-forest model"),
            "{e}"
        );
        std::fs::write(&path, r#"{"format": "netanom-profile-kmeans-v1", "centroids": []}"#).unwrap();
        let e = TrainedForest::load(&path).unwrap_err().to_string();
        assert!(e.ends_with("is a host-profile (k-means) model (format netanom-profile-kmeans-v1), expected an isolation-forest model"), "{e}");
        assert!(matches!(
            TrainedForest::load(&dir.path().join("missing")),
            Err(ForestError::File(f)) if matches!(f.problem, Problem::Io(_))
        ));
    }

    #[test]
    fn scan_outscores_normal_and_is_explained() {
        let data = training_set(512);
        let m = train(&data, &opts()).unwrap();
        let mut s = FeatureScratch::default();
        let normal = batch_features(&benign_batch(100_000).packets, &mut s);
        let scan = batch_features(&scan_batch(1).packets, &mut s);
        let (sn, sa) = (m.score(&normal), m.score(&scan));
        assert!(sa > m.threshold(), "scan {sa} threshold {}", m.threshold());
        assert!(sn < m.threshold(), "normal {sn} threshold {}", m.threshold());
        assert!(m.threshold() >= 0.62);
        let why = m.explain(&scan, 4);
        assert_eq!(why.len(), 4);
        let names: Vec<&str> = why.iter().map(|c| c.name.as_str()).collect();
        assert!(names.contains(&"distinct_dst_ports") || names.contains(&"syn_fraction"), "{names:?}");
    }

    #[test]
    fn trains_like_the_crate() {
        // Our trees follow the crate's algorithm: a crate-trained forest (thread_rng) and ours must agree on
        // which points are anomalous.
        let data = training_set(512);
        let ours = train(&data, &opts()).unwrap();
        let inputs: Vec<FeatureVector> = data.iter().map(model_input).collect();
        let theirs = Forest::from_slice(
            &inputs,
            &extended_isolation_forest::ForestOptions {
                n_trees: 60,
                sample_size: 256,
                max_tree_depth: None,
                extension_level: FEATURES - 1,
            },
        )
        .unwrap();
        let mut s = FeatureScratch::default();
        for x in [batch_features(&scan_batch(2).packets, &mut s), data[3], data[77]] {
            let (a, b) = (ours.score(&x), theirs.score(&model_input(&x)));
            assert!((a - b).abs() < 0.08, "ours {a} crate {b}");
        }
    }

    #[test]
    fn nearly_identical_values_do_not_hang_training() {
        // Regression: a feature whose training values differ only in the last bits made rand's
        // `Uniform::new` loop (practically) forever.
        let base = 41.877_334_018_078_706f64;
        let data: Vec<FeatureVector> = (0..64)
            .map(|i| {
                let mut v = [base; FEATURES];
                v[13] = f64::from_bits(base.to_bits() + (i % 3));
                v[0] = f64::from(i as u32);
                v
            })
            .collect();
        let m = train(&data, &TrainOptions { sample_size: 32, trees: 10, ..opts() }).unwrap();
        assert!(m.score(&data[0]).is_finite());
    }
}
