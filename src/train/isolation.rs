//! `netanom train` of the isolation model and the host-profile model, each to its own file, from captures or from a
//! topic range. Captures go through [`crate::offline::batches`], a topic range is read by
//! [`crate::topic_range`] in the replay order, and either becomes a [`TrainingSet`]: the vectors the detector
//! would take for its warm-up, and the host profiles it would aggregate. Training is seeded: the same inputs
//! and seed give the same model.

use std::path::{Path, PathBuf};

use netanom_detector::features::{FeatureScratch, FeatureVector, ProfileVector, own_features};
use netanom_detector::forest::shared::MIN_TRAINING_VECTORS;
use netanom_detector::forest::{TrainOptions, train};
use netanom_detector::profile::ProfileCollector;
use netanom_detector::{DetectorConfig, ForestConfig, TrainedForest};
use netanom_schemas::{PacketBatch, SchemaIds};

use super::args::TrainArgs;
use crate::config::Config;
use crate::offline;
use crate::topic_range::{Position, RangeError, ReadSpec, ReplayRecord, read_range, replay_order};

/// Why an isolation model could not be trained.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A range to train on holds no packet batch.
    #[error(
        "nothing to train on: topic {topic} from {from} to {} holds no packet batch ({records} records, \
         {poison} undecodable)",
        to.map_or_else(|| "the high watermark".to_string(), |t| t.to_string())
    )]
    EmptyRange {
        /// Topic.
        topic: String,
        /// Start of the range.
        from: Position,
        /// End of the range (`None`: the high watermark at start).
        to: Option<Position>,
        /// Records read.
        records: usize,
        /// Of which undecodable.
        poison: u64,
    },
    /// The topic range could not be read.
    #[error(transparent)]
    Range(#[from] RangeError),
    /// A model could not be trained or saved.
    #[error(transparent)]
    Model(#[from] netanom_detector::ForestError),
    /// The host-profile model could not be trained.
    #[error(transparent)]
    Profile(#[from] netanom_detector::profile::ProfileError),
    /// A capture could not be read.
    #[error(transparent)]
    Capture(#[from] netanom_producer::CaptureError),
}

/// Runs `netanom train` without `--supervised` (CPU-bound: call it off the async reactor).
pub fn run(args: &TrainArgs, cfg: &Config) -> anyhow::Result<()> {
    let max = args.samples.unwrap_or(cfg.detector.forest.warmup_samples);
    let set = match args.from {
        Some(from) => topic_training_set(args, from, cfg, max)?,
        None => captures_training_set(&args.pcap, cfg, max)?,
    };
    train_and_save(&set, args, cfg)
}

/// The training set of the captures, each read once: their vectors in order (first `max`, as
/// [`capture_vectors`] takes them) and their host profiles as the detector aggregates them
/// (`detector.profile` windows, hosts bounded by the host capacity of `detector.state`), each capture through a
/// [`ProfileCollector`] of its own (captures are not one timeline; every host's last window is included), at
/// most `profile.warmup_profiles` in all.
pub(crate) fn captures_training_set(pcaps: &[PathBuf], cfg: &Config, max: usize) -> Result<TrainingSet, TrainError> {
    let (detector, p) = (&cfg.detector, &cfg.detector.profile);
    let mut vectors = Vec::new();
    let mut profiles = p.enabled.then(Vec::new);
    for pcap in pcaps {
        let mut v = VectorCollector::new(&detector.forest, max - vectors.len());
        let mut c = profiles.as_ref().map(|got: &Vec<ProfileVector>| {
            ProfileCollector::new(p, detector.state.host_capacity(), p.warmup_profiles.saturating_sub(got.len()))
        });
        offline::batches(pcap, &cfg.producer, |b, _| {
            v.push(b);
            if let Some(c) = c.as_mut() {
                c.push(b);
            }
        })?;
        vectors.extend(v.vectors);
        if let (Some(all), Some(c)) = (profiles.as_mut(), c) {
            all.extend(c.finish());
        }
    }
    Ok(TrainingSet { vectors, profiles, ..TrainingSet::default() })
}

/// The training set of the `--from`/`--to` range of the topic, read as `netanom replay` reads it.
pub(crate) fn topic_training_set(
    args: &TrainArgs,
    from: Position,
    cfg: &Config,
    max: usize,
) -> anyhow::Result<TrainingSet> {
    let spec = ReadSpec::for_command(
        "train",
        args.brokers.as_deref(),
        args.topic.as_deref(),
        (from, args.to),
        args.max_records,
        cfg,
    )?;
    let (ranges, records) = read_range(&spec)?;
    for r in &ranges {
        tracing::info!(partition = r.partition, start = r.start, end = r.end, records = r.read, "training range");
    }
    let set = range_training_set(&records, &cfg.schemas.ids, &cfg.detector, max);
    eprintln!(
        "read {} records of {} over {} partitions: {} batches, {} undecodable",
        records.len(),
        spec.topic,
        ranges.len(),
        set.batches,
        set.poison
    );
    if set.batches == 0 {
        return Err(TrainError::EmptyRange {
            topic: spec.topic,
            from,
            to: args.to,
            records: records.len(),
            poison: set.poison,
        }
        .into());
    }
    Ok(set)
}

/// Trains the isolation model and, when profiles are given, the host-profile model with the seed, saves them to
/// `--out` and [`TrainArgs::profile_out`], and prints what was trained and where.
fn train_and_save(set: &TrainingSet, args: &TrainArgs, cfg: &Config) -> anyhow::Result<()> {
    let forest = &cfg.detector.forest;
    let vectors = &set.vectors;
    let model = train_vectors(vectors, forest, args.seed.unwrap_or(forest.seed))?;
    let p = &cfg.detector.profile;
    let mut profile_note = String::new();
    if let Some(profiles) = &set.profiles {
        let opts = netanom_detector::profile::TrainOptions {
            seed: args.seed.unwrap_or(p.seed),
            ..netanom_detector::profile::TrainOptions::from(p)
        };
        match netanom_detector::profile::train(profiles, &opts) {
            Ok(m) => {
                let path = args.profile_out();
                m.save(&path)?;
                profile_note = format!(
                    "; profile model {} (k = {}, threshold {:.2}) on {} host profiles, wrote {} (--profile-model)",
                    m.version(),
                    m.k(),
                    m.threshold(),
                    profiles.len(),
                    path.display()
                );
            }
            // Too little traffic for profiles is not fatal: the detector then trains them on its warm-up.
            Err(e @ netanom_detector::profile::ProfileError::TooFewProfiles { .. }) => {
                eprintln!("note: no profile model written ({e}); the detector will train one on its warm-up");
            }
            Err(e) => return Err(TrainError::from(e).into()),
        }
    }
    model.save(&args.out)?;
    println!(
        "trained {} on {} batch vectors (threshold {:.3}), wrote {} (--model){profile_note}",
        model.version(),
        vectors.len(),
        model.threshold(),
        args.out.display()
    );
    Ok(())
}

/// The isolation feature vectors of a capture, as the detector computes them: the capture goes through the
/// producer's pipeline (flows, per-source batches), and each batch of at least `forest.min_packets` packets
/// gives one vector, in the order the batches close. At most `max` vectors.
pub fn capture_vectors(
    pcap: &Path,
    producer: &netanom_producer::ProducerConfig,
    forest: &ForestConfig,
    max: usize,
) -> Result<Vec<FeatureVector>, TrainError> {
    let mut vectors = VectorCollector::new(forest, max);
    offline::batches(pcap, producer, |b, _| vectors.push(b))?;
    Ok(vectors.vectors)
}

/// The isolation vectors of a stream of batches, as the detector takes its warm-up: one per batch of at least
/// `forest.min_packets` packets, the first `max`.
struct VectorCollector {
    min: usize,
    max: usize,
    scratch: FeatureScratch,
    vectors: Vec<FeatureVector>,
}

impl VectorCollector {
    fn new(forest: &ForestConfig, max: usize) -> Self {
        Self { min: forest.min_packets.max(1), max, scratch: FeatureScratch::default(), vectors: Vec::new() }
    }

    /// Takes the vector of the host's own packets ([`own_features`]), as the detector does.
    fn push(&mut self, b: &PacketBatch) {
        if self.vectors.len() < self.max {
            let (v, own) = own_features(&b.packets, &mut self.scratch);
            if own >= self.min {
                self.vectors.push(v);
            }
        }
    }
}

/// What the isolation model (and the host-profile model) of `netanom train` learn from.
#[derive(Debug, Clone, Default)]
pub struct TrainingSet {
    /// Isolation feature vectors, at most the warm-up count.
    pub vectors: Vec<FeatureVector>,
    /// Host profiles, at most `profile.warmup_profiles`; `None` when the profile model is disabled.
    pub profiles: Option<Vec<ProfileVector>>,
    /// Packet batches seen (topic ranges only).
    pub batches: u64,
    /// Records that could not be decoded, skipped (topic ranges only).
    pub poison: u64,
}

/// The training set of a topic range, its records in replay's (timestamp, partition, offset) order: the
/// isolation vectors as [`capture_vectors`] takes them (first `max_vectors`) and, when `detector.profile` is
/// enabled, the host profiles of one [`ProfileCollector`] over the whole range (the range is one timeline),
/// at most `profile.warmup_profiles`. Undecodable records are skipped and counted, as replay's detection does.
pub fn range_training_set(
    records: &[ReplayRecord],
    ids: &SchemaIds,
    detector: &DetectorConfig,
    max_vectors: usize,
) -> TrainingSet {
    let order = replay_order(records);
    let mut vectors = VectorCollector::new(&detector.forest, max_vectors);
    let p = &detector.profile;
    let mut profiles = p.enabled.then(|| ProfileCollector::new(p, detector.state.host_capacity(), p.warmup_profiles));
    let mut set = TrainingSet::default();
    for r in order {
        if let Some(b) = r.batch(ids, &mut set.poison) {
            set.batches += 1;
            vectors.push(&b);
            if let Some(c) = profiles.as_mut() {
                c.push(&b);
            }
        }
    }
    set.vectors = vectors.vectors;
    set.profiles = profiles.map(ProfileCollector::finish);
    set
}

/// Trains a forest on `vectors` with the `forest` settings and `seed` (the same inputs give the same model); with
/// fewer vectors than `forest.sample_size` (and at least 32), each tree samples them all.
pub fn train_vectors(vectors: &[FeatureVector], forest: &ForestConfig, seed: u64) -> Result<TrainedForest, TrainError> {
    let mut opts = TrainOptions { seed, ..TrainOptions::from(forest) };
    // Fewer vectors than the per-tree sample: every tree takes them all, as the group's warm-up does.
    if (MIN_TRAINING_VECTORS..opts.sample_size).contains(&vectors.len()) {
        opts.sample_size = vectors.len();
    }
    Ok(train(vectors, &opts)?)
}

#[cfg(test)]
mod tests {
    use netanom_detector::fixtures::{T0, benign_batch};

    use super::*;

    fn record(partition: i32, offset: i64, batch: &PacketBatch) -> ReplayRecord {
        let timestamp_ms = batch.packets.first().map_or(0, |p| p.ts_ns / 1_000_000);
        ReplayRecord { partition, offset, timestamp_ms, payload: batch.encode(&SchemaIds::BUILT_IN) }
    }

    #[test]
    fn the_collector_takes_the_first_batches_big_enough_up_to_the_maximum() {
        let batches: Vec<PacketBatch> = (0..40).map(benign_batch).collect();
        let mut scratch = FeatureScratch::default();
        let own = |b: &PacketBatch, s: &mut FeatureScratch| own_features(&b.packets, s);
        let mut sizes: Vec<usize> = batches.iter().map(|b| own(b, &mut scratch).1).collect();
        sizes.sort_unstable();
        let forest = ForestConfig { min_packets: sizes[sizes.len() / 2], ..ForestConfig::default() };
        let big: Vec<&PacketBatch> = batches.iter().filter(|b| own(b, &mut scratch).1 >= forest.min_packets).collect();
        assert!(big.len() > 5 && big.len() < batches.len(), "the fixture mixes small and big batches");
        let mut c = VectorCollector::new(&forest, 5);
        for b in &batches {
            c.push(b);
        }
        let want: Vec<FeatureVector> = big.iter().take(5).map(|b| own(b, &mut scratch).0).collect();
        assert_eq!(c.vectors, want);
    }

    #[test]
    fn a_topic_training_set_follows_the_replay_order_and_counts_undecodable_records() {
        let mut detector = DetectorConfig::default();
        detector.profile.enabled = false;
        detector.forest.min_packets = 1;
        let batches: Vec<PacketBatch> = (0..6).map(benign_batch).collect();
        // Given newest first, over two partitions, with one undecodable record in between.
        let mut records: Vec<ReplayRecord> =
            batches.iter().enumerate().rev().map(|(i, b)| record((i % 2) as i32, i as i64, b)).collect();
        records.insert(2, ReplayRecord { partition: 0, offset: 99, timestamp_ms: T0 / 1_000_000, payload: vec![1] });
        let set = range_training_set(&records, &SchemaIds::BUILT_IN, &detector, 4);
        assert_eq!((set.batches, set.poison), (6, 1));
        assert!(set.profiles.is_none(), "profiles are off");
        let mut scratch = FeatureScratch::default();
        let want: Vec<FeatureVector> = batches
            .iter()
            .filter_map(|b| Some(own_features(&b.packets, &mut scratch)).filter(|(_, n)| *n >= 1))
            .take(4)
            .map(|(v, _)| v)
            .collect();
        assert_eq!(set.vectors, want, "the oldest four batches, in time order");
    }

    #[test]
    fn an_empty_range_says_where_it_ends() {
        let e =
            TrainError::EmptyRange { topic: "p".into(), from: Position::Offset(5), to: None, records: 3, poison: 3 };
        assert_eq!(
            e.to_string(),
            "nothing to train on: topic p from offset 5 to the high watermark holds no packet batch (3 records, 3 \
             undecodable)"
        );
        let e = TrainError::EmptyRange {
            topic: "p".into(),
            from: Position::Offset(5),
            to: Some(Position::Offset(9)),
            records: 3,
            poison: 3,
        };
        assert!(e.to_string().contains("from offset 5 to offset 9"), "{e}");
    }

    #[test]
    fn the_same_vectors_and_seed_give_the_same_model() {
        let forest = ForestConfig { min_packets: 1, ..ForestConfig::default() };
        let mut scratch = FeatureScratch::default();
        let vectors: Vec<FeatureVector> =
            (0..300).map(|i| own_features(&benign_batch(i).packets, &mut scratch).0).collect();
        let a = train_vectors(&vectors, &forest, 7).unwrap();
        let b = train_vectors(&vectors, &forest, 7).unwrap();
        let c = train_vectors(&vectors, &forest, 8).unwrap();
        assert_eq!(a.version(), b.version());
        assert_eq!(a.threshold(), b.threshold());
        assert_ne!(a.version(), c.version(), "the seed is part of the model");
    }
}
