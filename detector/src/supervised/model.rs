//! The persisted supervised model: flattened decision trees whose leaves hold P(attack), scoring, path
//! explanations and the versioned JSON file. Owns no training (see [`super::train`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::confusion::Confusion;
use crate::features::{FEATURE_NAMES, FEATURES, FeatureVector, USED_FEATURES};
use crate::model_file::{self, FileError, ModelFile, ModelKind};

/// Why a supervised model could not be trained, loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum SupervisedError {
    /// A model file could not be read or written, is of another kind, or was trained on other features.
    #[error(transparent)]
    File(#[from] FileError),
    /// The labelled data cannot be trained on.
    #[error("cannot train the supervised model: {0}")]
    Data(String),
    /// A training setting is out of range.
    #[error("invalid supervised training setting: {0}")]
    Settings(String),
    /// linfa rejected the forest's parameters.
    #[error("fitting the random forest ({params}) failed: {source}")]
    Fit {
        /// The hyper-parameters.
        params: Params,
        /// Cause.
        #[source]
        source: linfa::Error,
    },
}

/// Hyper-parameters of one forest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Trees in the forest.
    pub trees: usize,
    /// Deepest split level of each tree.
    pub max_depth: usize,
    /// Share of the features each tree is given: linfa-ensemble draws ceil(share × 13) of them per tree, with
    /// replacement.
    pub feature_fraction: f64,
}

impl std::fmt::Display for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "trees {}, max depth {}, feature fraction {}", self.trees, self.max_depth, self.feature_fraction)
    }
}

/// File format tag; a change of representation gets a new tag.
pub const FORMAT: &str = ModelKind::Supervised.format();

/// Most trees and nodes per tree a model file may hold (bounds memory and scoring time).
const MAX_TREES: usize = 1_000;
const MAX_NODES: usize = 1 << 20;

/// One node of a flattened tree.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Split feature, an index into the batch vector (internal nodes only).
    pub feature: usize,
    /// A value below `split` goes left, any other right (linfa's prediction rule).
    pub split: f64,
    /// Index of the left child in the tree's node list; 0 marks a leaf (the root is nobody's child).
    pub left: u32,
    /// Index of the right child.
    pub right: u32,
    /// P(attack): the attack share of the training vectors that reach this node.
    pub p: f64,
}

impl Node {
    fn is_leaf(&self) -> bool {
        self.left == 0
    }
}

/// P(attack) of one tree: the value of the leaf `x` reaches. Walks at most `tree.len()` steps whatever the
/// node list holds.
pub(crate) fn tree_p(tree: &[Node], x: &FeatureVector) -> f64 {
    let mut i = 0usize;
    for _ in 0..tree.len() {
        let Some(n) = tree.get(i) else { break };
        if n.is_leaf() {
            return n.p;
        }
        let v = x.get(n.feature).copied().unwrap_or(0.0);
        i = if v < n.split { n.left } else { n.right } as usize;
    }
    0.0
}

/// P(attack) of a forest: the mean over its trees.
pub(crate) fn forest_p(trees: &[Vec<Node>], x: &FeatureVector) -> f64 {
    if trees.is_empty() {
        return 0.0;
    }
    trees.iter().map(|t| tree_p(t, x)).sum::<f64>() / trees.len() as f64
}

/// How many vectors of each class a model was trained on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassCounts {
    /// Attack vectors.
    pub attack: usize,
    /// Benign vectors.
    pub benign: usize,
}

impl ClassCounts {
    /// Counts the labels.
    pub fn of(labels: impl IntoIterator<Item = bool>) -> Self {
        let mut c = Self::default();
        for a in labels {
            if a {
                c.attack += 1;
            } else {
                c.benign += 1;
            }
        }
        c
    }
}

/// One feature's share of a P(attack): how much the splits on it moved the probability, averaged over trees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Driver {
    /// Index into the batch vector.
    pub feature: usize,
    /// Change of P(attack) due to this feature (positive: towards attack).
    pub contribution: f64,
}

/// A trained random forest with its threshold, persisted as JSON (see the module doc of [`super`]).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisedModel {
    format: String,
    /// The batch vector's feature names, in order (must match this build's).
    features: Vec<String>,
    /// The features the trees split on.
    used_features: Vec<String>,
    /// P(attack) at or above which a batch is an attack.
    threshold: f64,
    /// Batches with fewer packets were not trained on and are not scored.
    min_packets: usize,
    /// Hyper-parameters the forest was trained with.
    params: Params,
    /// Seed of the bootstrap and feature sampling.
    seed: u64,
    /// Training vectors per class.
    trained_on: ClassCounts,
    /// The held-out figures at `threshold`, when a test set was given.
    test: Option<Confusion>,
    /// Mean of each feature over the benign training vectors (the "usually" of explanations).
    benign_mean: Vec<f64>,
    /// The trees.
    trees: Vec<Vec<Node>>,
    #[serde(skip)]
    version: String,
}

impl std::fmt::Debug for SupervisedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisedModel")
            .field("version", &self.version)
            .field("threshold", &self.threshold)
            .field("params", &self.params)
            .field("trained_on", &self.trained_on)
            .finish_non_exhaustive()
    }
}

/// Parts of a model that training decides.
#[derive(Debug, Clone)]
pub(crate) struct ModelParts {
    pub threshold: f64,
    pub min_packets: usize,
    pub params: Params,
    pub seed: u64,
    pub trained_on: ClassCounts,
    pub benign_mean: Vec<f64>,
    pub trees: Vec<Vec<Node>>,
}

impl SupervisedModel {
    pub(crate) fn new(parts: ModelParts) -> Self {
        let mut m = Self {
            format: FORMAT.to_string(),
            features: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
            used_features: USED_FEATURES.iter().map(|&i| FEATURE_NAMES[i].to_string()).collect(),
            threshold: parts.threshold,
            min_packets: parts.min_packets,
            params: parts.params,
            seed: parts.seed,
            trained_on: parts.trained_on,
            test: None,
            benign_mean: parts.benign_mean,
            trees: parts.trees,
            version: String::new(),
        };
        m.version = m.compute_version();
        m
    }

    pub(crate) fn set_test(&mut self, c: Confusion) {
        self.test = Some(c);
    }

    /// P(attack) of a batch vector (human units, as [`crate::features::batch_features`] returns it), 0..=1.
    pub fn p_attack(&self, x: &FeatureVector) -> f64 {
        forest_p(&self.trees, x)
    }

    /// The P(attack) threshold chosen at training.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Smallest batch (packets) the model was trained on and scores.
    pub fn min_packets(&self) -> usize {
        self.min_packets
    }

    /// Hyper-parameters.
    pub fn params(&self) -> Params {
        self.params
    }

    /// Training vectors per class.
    pub fn trained_on(&self) -> ClassCounts {
        self.trained_on
    }

    /// Held-out confusion matrix at the threshold, if measured.
    pub fn test(&self) -> Option<Confusion> {
        self.test
    }

    /// Mean of each feature over the benign training vectors.
    pub fn benign_mean(&self) -> &[f64] {
        &self.benign_mean
    }

    /// `rf-<16 hex digits>`: a hash of the trees, threshold and minimum batch size.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The features that pushed P(attack) up the most for `x`, strongest first, at most `top`: every split on
    /// the path of `x` moves P(attack) from the node's value to the child's, and that change is credited to
    /// the split's feature (the per-tree sums add up to the leaf value minus the root value).
    pub fn explain(&self, x: &FeatureVector, top: usize) -> Vec<Driver> {
        let mut credit = [0.0f64; FEATURES];
        for tree in &self.trees {
            let mut i = 0usize;
            for _ in 0..tree.len() {
                let Some(n) = tree.get(i) else { break };
                if n.is_leaf() {
                    break;
                }
                let v = x.get(n.feature).copied().unwrap_or(0.0);
                let next = if v < n.split { n.left } else { n.right } as usize;
                if let (Some(c), Some(slot)) = (tree.get(next), credit.get_mut(n.feature)) {
                    *slot += c.p - n.p;
                }
                i = next;
            }
        }
        let trees = self.trees.len().max(1) as f64;
        let mut drivers: Vec<Driver> = credit
            .iter()
            .enumerate()
            .map(|(feature, c)| Driver { feature, contribution: c / trees })
            .filter(|d| d.contribution > 0.0)
            .collect();
        drivers.sort_by(|a, b| b.contribution.total_cmp(&a.contribution).then(a.feature.cmp(&b.feature)));
        drivers.truncate(top);
        drivers
    }

    fn compute_version(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        eat(&self.threshold.to_bits().to_le_bytes());
        eat(&(self.min_packets as u64).to_le_bytes());
        for tree in &self.trees {
            eat(&(tree.len() as u64).to_le_bytes());
            for n in tree {
                eat(&(n.feature as u64).to_le_bytes());
                eat(&n.split.to_bits().to_le_bytes());
                eat(&n.left.to_le_bytes());
                eat(&n.right.to_le_bytes());
                eat(&n.p.to_bits().to_le_bytes());
            }
        }
        format!("rf-{h:016x}")
    }

    /// Writes the model (JSON) to `path`.
    pub fn save(&self, path: &Path) -> Result<(), SupervisedError> {
        Ok(model_file::save(path, self)?)
    }

    /// Reads a model written by [`SupervisedModel::save`] and checks every part of it, so that scoring can
    /// neither panic nor loop on a damaged or hostile file.
    pub fn load(path: &Path) -> Result<Self, SupervisedError> {
        Ok(model_file::load(path)?)
    }

    fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("format {:?}, expected {FORMAT:?}", self.format));
        }
        if let Some(f) = self.used_features.iter().find(|f| !FEATURE_NAMES.contains(&f.as_str())) {
            return Err(format!("used feature {f:?} is not a feature of this build"));
        }
        if !(self.threshold.is_finite() && self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(format!("threshold {} is not in (0, 1]", self.threshold));
        }
        if self.min_packets == 0 {
            return Err("min_packets must be >= 1".into());
        }
        if self.benign_mean.len() != FEATURES || self.benign_mean.iter().any(|v| !v.is_finite()) {
            return Err(format!("benign_mean must be {FEATURES} finite numbers"));
        }
        if self.trees.is_empty() || self.trees.len() > MAX_TREES {
            return Err(format!("{} trees, expected 1..={MAX_TREES}", self.trees.len()));
        }
        for (t, tree) in self.trees.iter().enumerate() {
            if tree.is_empty() || tree.len() > MAX_NODES {
                return Err(format!("tree {t} has {} nodes, expected 1..={MAX_NODES}", tree.len()));
            }
            for (i, n) in tree.iter().enumerate() {
                let bad = |what: &str| Err(format!("tree {t} node {i}: {what}"));
                if !(n.p.is_finite() && (0.0..=1.0).contains(&n.p)) {
                    return bad(&format!("p {} is not in [0, 1]", n.p));
                }
                if n.is_leaf() {
                    continue;
                }
                if n.feature >= FEATURES {
                    return bad(&format!("feature {} >= {FEATURES}", n.feature));
                }
                if !n.split.is_finite() {
                    return bad("split is not a finite number");
                }
                // Children after their parent: every walk moves forward, so it ends.
                for c in [n.left, n.right] {
                    if (c as usize) <= i || c as usize >= tree.len() {
                        return bad(&format!("child {c} is not after the node and within the tree"));
                    }
                }
            }
        }
        Ok(())
    }
}

impl ModelFile for SupervisedModel {
    const KIND: ModelKind = ModelKind::Supervised;
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
    use crate::model_file::Problem;

    fn leaf(p: f64) -> Node {
        Node { feature: 0, split: 0.0, left: 0, right: 0, p }
    }

    /// Root splits on distinct_dst_ports (8) at 20: below is benign (0.1), otherwise attack (0.9).
    fn stump() -> Vec<Node> {
        vec![Node { feature: 8, split: 20.0, left: 1, right: 2, p: 0.5 }, leaf(0.1), leaf(0.9)]
    }

    fn model(trees: Vec<Vec<Node>>) -> SupervisedModel {
        SupervisedModel::new(ModelParts {
            threshold: 0.5,
            min_packets: 8,
            params: Params { trees: trees.len(), max_depth: 4, feature_fraction: 1.0 },
            seed: 1,
            trained_on: ClassCounts { attack: 10, benign: 90 },
            benign_mean: vec![1.0; FEATURES],
            trees,
        })
    }

    #[test]
    fn used_features_leave_out_only_the_ttl() {
        assert_eq!(FEATURE_NAMES[FEATURES - 1], "mean_ttl");
        assert_eq!(USED_FEATURES.len(), FEATURES - 1);
        assert!(USED_FEATURES.iter().enumerate().all(|(k, &i)| k == i));
    }

    #[test]
    fn scores_walk_the_trees_and_average() {
        let mut x = [0.0; FEATURES];
        let m = model(vec![stump(), vec![leaf(0.3)]]);
        x[8] = 3.0;
        assert!((m.p_attack(&x) - 0.2).abs() < 1e-12);
        x[8] = 20.0;
        assert!((m.p_attack(&x) - 0.6).abs() < 1e-12, "equal to the split goes right");
        let why = m.explain(&x, 4);
        assert_eq!(why.len(), 1);
        assert_eq!(why[0].feature, 8);
        assert!((why[0].contribution - 0.2).abs() < 1e-12, "(0.9 - 0.5) over two trees");
    }

    #[test]
    fn saved_model_reloads_to_the_same_version_and_scores() {
        let m = model(vec![stump(), stump()]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        m.save(&path).unwrap();
        let back = SupervisedModel::load(&path).unwrap();
        assert_eq!(back.version(), m.version());
        assert!(m.version().starts_with("rf-"));
        let x = [25.0; FEATURES];
        assert_eq!(back.p_attack(&x).to_bits(), m.p_attack(&x).to_bits());
    }

    #[test]
    fn load_rejects_damaged_and_hostile_files_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        let good = serde_json::to_value(model(vec![stump()])).unwrap();
        let cases: Vec<(&str, serde_json::Value)> = vec![
            ("format", serde_json::json!("netanom-eif-v1")),
            ("threshold", serde_json::json!(1.5)),
            ("min_packets", serde_json::json!(0)),
            ("benign_mean", serde_json::json!([1.0])),
            ("trees", serde_json::json!([])),
            ("trees", serde_json::json!([[]])),
            // A cycle: node 1 is its own child.
            (
                "trees",
                serde_json::json!([[{"feature": 0, "split": 1.0, "left": 1, "right": 2, "p": 0.5},
                                          {"feature": 0, "split": 1.0, "left": 1, "right": 2, "p": 0.5},
                                          {"feature": 0, "split": 0.0, "left": 0, "right": 0, "p": 0.5}]]),
            ),
            (
                "trees",
                serde_json::json!([[{"feature": 0, "split": 1.0, "left": 1, "right": 0, "p": 0.5},
                                          {"feature": 0, "split": 1.0, "left": 0, "right": 0, "p": 0.5}]]),
            ),
            (
                "trees",
                serde_json::json!([[{"feature": 99, "split": 1.0, "left": 1, "right": 2, "p": 0.5},
                                          {"feature": 0, "split": 0.0, "left": 0, "right": 0, "p": 0.5},
                                          {"feature": 0, "split": 0.0, "left": 0, "right": 0, "p": 0.5}]]),
            ),
            ("trees", serde_json::json!([[{"feature": 0, "split": 0.0, "left": 0, "right": 0, "p": 7.0}]])),
        ];
        for (key, value) in cases {
            let mut v = good.clone();
            v[key] = value.clone();
            std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
            let e = SupervisedModel::load(&path).unwrap_err();
            assert!(
                matches!(&e, SupervisedError::File(f) if matches!(f.problem, Problem::Format(_) | Problem::Kind(_))),
                "{key} = {value}: {e}"
            );
        }
        let mut v = good.clone();
        v["features"] = serde_json::json!(FEATURE_NAMES[..FEATURES - 1]);
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let e = SupervisedModel::load(&path).unwrap_err();
        let last = FEATURE_NAMES[FEATURES - 1];
        assert!(matches!(&e, SupervisedError::File(f) if matches!(f.problem, Problem::Features(_))), "{e:?}");
        assert!(
            e.to_string().ends_with(&format!(
                "m.json was trained on other features than this build: missing from the file [{last:?}]"
            )),
            "{e}"
        );
        let mut v = good.clone();
        v["surprise"] = serde_json::json!(1);
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        assert!(SupervisedModel::load(&path).unwrap_err().to_string().contains("surprise"));
        std::fs::write(&path, b"\xff\x00not json").unwrap();
        assert!(
            matches!(SupervisedModel::load(&path), Err(SupervisedError::File(f)) if matches!(f.problem, Problem::Format(_)))
        );
        assert!(matches!(
            SupervisedModel::load(&dir.path().join("none")),
            Err(SupervisedError::File(f)) if matches!(f.problem, Problem::Io(_))
        ));
    }

    #[test]
    fn hostile_vectors_score_within_zero_and_one() {
        let m = model(vec![stump(), stump()]);
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, f64::MAX] {
            let p = m.p_attack(&[v; FEATURES]);
            assert!((0.0..=1.0).contains(&p), "{v}: {p}");
            assert!(m.explain(&[v; FEATURES], 4).iter().all(|d| d.contribution.is_finite()));
        }
    }
}
