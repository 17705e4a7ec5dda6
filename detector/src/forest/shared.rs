//! The group's shared warm-up: the records of the models topic (`topics.models`, compacted) and the decisions
//! taken on them. Owns the record format, the per-partition quota, the choice of the training set and the
//! check of a recipe read from Kafka; the Kafka clients belong to the consume loop (`consume`), the warm-up buffers to
//! the isolation detector.
//!
//! # Protocol
//!
//! - Every detector collects, for each packets-topic partition it owns, the first
//!   ceil(`warmup_samples` / partitions) clean vectors of that partition (hosts' own traffic, batches of at
//!   least `min_packets` own packets; clean once `warmup_horizon` of the partition's packet time passed after
//!   the batch with no rule flagging its host). The partition's contribution is published, keyed
//!   `sample-<partition>`, when the quota is full, when the partition's packet time passes `warmup_window` plus
//!   the horizon after its first batch, or when the input ends (a drain, which judges every vector waiting).
//! - The detector that owns partition 0 gathers the contributions; once every partition has contributed, it
//!   publishes the model in force, keyed `forest`: a [`Recipe`] (the training vectors, in partition order, and
//!   the training parameters with the seed).
//! - Every detector reads the topic from its beginning and trains the recipe with the seeded trainer
//!   ([`crate::forest::train`]): the whole group scores with one model, whose version (`eif-<hash>`) is the
//!   same in every detector and in every run on the same input. A restarted detector finds the recipe and
//!   skips the warm-up.

use serde::{Deserialize, Serialize};

use super::model::{ForestError, TrainOptions, TrainedForest, train};
use crate::features::{FEATURES, FeatureVector};

/// Key of the model in force on the models topic.
pub const FOREST_KEY: &str = "forest";

/// Format of a recipe record.
pub const RECIPE_FORMAT: &str = "netanom-eif-recipe-v2";

/// Fewest warm-up vectors a group trains on: below this a forest says nothing (the sample per tree shrinks to
/// the vectors there are, from `sample_size`, down to this).
pub const MIN_TRAINING_VECTORS: usize = 32;

/// Most trees a recipe from the topic may ask for (the configuration allows the same).
const MAX_TREES: usize = 10_000;

/// Most vectors a recipe or a contribution may carry (`warmup_samples` is at most 1,000,000).
const MAX_VECTORS: usize = 1_000_000;

/// The key of partition `partition`'s contribution.
pub fn sample_key(partition: i32) -> String {
    format!("sample-{partition}")
}

/// Vectors each of `partitions` partitions contributes for a warm-up of `warmup_samples`.
pub fn quota(warmup_samples: usize, partitions: i32) -> usize {
    warmup_samples.div_ceil(usize::try_from(partitions.max(1)).unwrap_or(1)).max(1)
}

/// One record of the models topic (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelRecord {
    /// The warm-up vectors of one packets-topic partition.
    Sample(WarmupSample),
    /// The model in force.
    Forest(Recipe),
    /// The group's warm-up ended with too few vectors to train on: there is no model in force.
    Untrained {
        /// Vectors contributed.
        vectors: usize,
        /// Vectors needed ([`MIN_TRAINING_VECTORS`]).
        need: usize,
    },
}

/// The warm-up vectors of one packets-topic partition, in the partition's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmupSample {
    /// The partition.
    pub partition: i32,
    /// Partitions of the packets topic when it was written: contributions of another layout are not mixed.
    pub partitions: i32,
    /// The vectors (human units, [`crate::features::BATCH`] order).
    pub vectors: Vec<FeatureVector>,
}

/// The model in force, as the vectors and parameters every detector trains it from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// [`RECIPE_FORMAT`].
    pub format: String,
    /// The training parameters; the sample per tree is at most the number of vectors.
    pub options: TrainOptions,
    /// The training vectors, partition by partition.
    pub vectors: Vec<FeatureVector>,
}

/// Why a models-topic record was refused.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Not a models-topic record.
    #[error("not a models-topic record: {0}")]
    Decode(#[source] serde_json::Error),
    /// A recipe outside what a detector accepts.
    #[error("recipe refused: {0}")]
    Recipe(String),
}

impl ModelRecord {
    /// The record's JSON.
    pub fn encode(&self) -> Vec<u8> {
        // Plain data of numbers and strings: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a record's value.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        serde_json::from_slice(bytes).map_err(RecordError::Decode)
    }
}

impl Recipe {
    /// The recipe of `options` over the contributions `samples` (one per partition, taken in partition order),
    /// or `None` when they hold fewer than [`MIN_TRAINING_VECTORS`] vectors. The sample per tree is
    /// `options.sample_size`, or every vector when there are fewer.
    pub fn new(options: &TrainOptions, samples: &[&WarmupSample]) -> Option<Self> {
        let mut ordered: Vec<&&WarmupSample> = samples.iter().collect();
        ordered.sort_by_key(|c| c.partition);
        let vectors: Vec<FeatureVector> = ordered.iter().flat_map(|c| c.vectors.iter().copied()).collect();
        (vectors.len() >= MIN_TRAINING_VECTORS).then(|| Self {
            format: RECIPE_FORMAT.to_string(),
            options: TrainOptions { sample_size: options.sample_size.min(vectors.len()), ..options.clone() },
            vectors,
        })
    }

    /// Checks a recipe read from the topic: every value within what the configuration accepts.
    pub fn check(&self) -> Result<(), RecordError> {
        let bad = |what: String| Err(RecordError::Recipe(what));
        let o = &self.options;
        if self.format != RECIPE_FORMAT {
            return bad(format!("format {:?}, expected {RECIPE_FORMAT:?}", self.format));
        }
        if !(1..=MAX_TREES).contains(&o.trees) {
            return bad(format!("trees {} outside 1..={MAX_TREES}", o.trees));
        }
        if self.vectors.len() > MAX_VECTORS || self.vectors.len() < MIN_TRAINING_VECTORS.min(o.sample_size) {
            return bad(format!("{} vectors", self.vectors.len()));
        }
        if !(2..=self.vectors.len()).contains(&o.sample_size) {
            return bad(format!("sample_size {} outside 2..={}", o.sample_size, self.vectors.len()));
        }
        if o.extension_level >= FEATURES {
            return bad(format!("extension_level {} >= {FEATURES}", o.extension_level));
        }
        let unit = |x: f64| x.is_finite() && x > 0.0 && x <= 1.0;
        if !unit(o.threshold_quantile) || !unit(o.threshold_floor) {
            return bad(format!(
                "threshold_quantile {} or threshold_floor {}",
                o.threshold_quantile, o.threshold_floor
            ));
        }
        if !(o.threshold_margin.is_finite() && (0.0..0.5).contains(&o.threshold_margin)) {
            return bad(format!("threshold_margin {}", o.threshold_margin));
        }
        if self.vectors.iter().flatten().any(|x| !x.is_finite()) {
            return bad("a vector holds a value that is not a finite number".to_string());
        }
        Ok(())
    }

    /// Trains the model of the recipe (checked first): the same recipe gives the same model everywhere.
    pub fn train(&self) -> Result<TrainedForest, ForestError> {
        self.check().map_err(|e| ForestError::Recipe(e.to_string()))?;
        train(&self.vectors, &self.options)
    }
}

/// The contributions gathered by the trainer, one per partition (the latest of each, as compaction keeps).
#[derive(Debug, Default)]
pub struct Gathered {
    by_partition: std::collections::BTreeMap<i32, WarmupSample>,
}

impl Gathered {
    /// Keeps `c` as its partition's contribution (a later one replaces an earlier one).
    pub fn add(&mut self, c: WarmupSample) {
        if c.partition >= 0 && c.partition < c.partitions {
            self.by_partition.insert(c.partition, c);
        }
    }

    /// Every partition's contribution once all `partitions` partitions have contributed (under that layout).
    pub fn complete(&self, partitions: i32) -> Option<Vec<&WarmupSample>> {
        let of_layout: Vec<&WarmupSample> = self.by_partition.values().filter(|c| c.partitions == partitions).collect();
        (i32::try_from(of_layout.len()).ok() == Some(partitions)).then_some(of_layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{FeatureScratch, own_features};
    use crate::fixtures::benign_batch;
    use crate::forest::ForestConfig;

    fn vectors(from: u64, n: usize) -> Vec<FeatureVector> {
        let mut s = FeatureScratch::default();
        (from..from + n as u64).map(|i| own_features(&benign_batch(i).packets, &mut s).0).collect()
    }

    #[test]
    fn quota_splits_the_warm_up_over_the_partitions() {
        assert_eq!(quota(512, 16), 32);
        assert_eq!(quota(512, 3), 171);
        assert_eq!(quota(512, 0), 512);
        assert_eq!(quota(1, 16), 1);
    }

    #[test]
    fn the_recipe_is_the_same_whatever_the_arrival_order_and_trains_one_model() {
        let options = TrainOptions::from(&ForestConfig { trees: 20, ..ForestConfig::default() });
        let parts: Vec<WarmupSample> = (0..3)
            .map(|p| WarmupSample { partition: p, partitions: 3, vectors: vectors(p as u64 * 1000, 120) })
            .collect();
        let mut g = Gathered::default();
        for c in parts.iter().skip(1).rev() {
            g.add(c.clone());
        }
        assert!(g.complete(3).is_none(), "partition 0 missing");
        g.add(WarmupSample { partitions: 4, ..parts[0].clone() });
        assert!(g.complete(3).is_none(), "a contribution of another layout does not count");
        g.add(parts[0].clone());
        let a = Recipe::new(&options, &g.complete(3).unwrap()).unwrap();
        let b = Recipe::new(&options, &parts.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.vectors.len(), 360);
        assert_eq!(a.vectors[0], parts[0].vectors[0], "partition order");
        // Through the topic's JSON and back: the same model, bit for bit.
        let text = ModelRecord::Forest(a.clone()).encode();
        let ModelRecord::Forest(back) = ModelRecord::decode(&text).unwrap() else { panic!("not a recipe") };
        let (ma, mb) = (a.train().unwrap(), back.train().unwrap());
        assert_eq!(ma.version(), mb.version());
        assert_eq!(ma.threshold().to_bits(), mb.threshold().to_bits());
    }

    #[test]
    fn small_warm_ups_shrink_the_sample_and_tiny_ones_train_nothing() {
        let options = TrainOptions::from(&ForestConfig::default());
        let c = WarmupSample { partition: 0, partitions: 1, vectors: vectors(0, 100) };
        let r = Recipe::new(&options, &[&c]).unwrap();
        assert_eq!(r.options.sample_size, 100);
        assert!(r.train().is_ok());
        let tiny = WarmupSample { vectors: vectors(0, MIN_TRAINING_VECTORS - 1), ..c };
        assert!(Recipe::new(&options, &[&tiny]).is_none());
    }

    #[test]
    fn hostile_recipes_are_refused_not_trained() {
        let options = TrainOptions::from(&ForestConfig::default());
        let c = WarmupSample { partition: 0, partitions: 1, vectors: vectors(0, 300) };
        let good = Recipe::new(&options, &[&c]).unwrap();
        let mut nan = good.clone();
        nan.vectors[5][3] = f64::NAN;
        let cases = [
            Recipe { options: TrainOptions { trees: 0, ..good.options.clone() }, ..good.clone() },
            Recipe { options: TrainOptions { trees: usize::MAX, ..good.options.clone() }, ..good.clone() },
            Recipe { options: TrainOptions { sample_size: 301, ..good.options.clone() }, ..good.clone() },
            Recipe { options: TrainOptions { extension_level: FEATURES, ..good.options.clone() }, ..good.clone() },
            Recipe {
                options: TrainOptions { threshold_margin: f64::INFINITY, ..good.options.clone() },
                ..good.clone()
            },
            Recipe { format: "x".into(), ..good.clone() },
            nan,
        ];
        for r in cases {
            assert!(matches!(r.train(), Err(ForestError::Recipe(_))), "{:?}", r.options);
        }
        assert!(ModelRecord::decode(b"{\"record\": \"other\"}").is_err());
        assert!(ModelRecord::decode(b"\xff").is_err());
    }
}
