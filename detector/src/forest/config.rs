//! `[detector.forest]`: the isolation detector's keys, defaults and validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::features::FEATURES;
use crate::time::human;
use crate::validation::{ConfigError, Problems};

/// `[detector.forest]`: extended isolation forest over per-batch host behaviour.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForestConfig {
    /// Whether the detector runs. Default true.
    pub enabled: bool,
    /// Batches with fewer packets are neither trained on nor scored: a handful of packets says too little about
    /// behaviour, and a spoofed flood would otherwise make every one-packet spoofed source an outlier (the
    /// victim detector covers those). Counted over the host's own packets (replies left out). Default 16: below
    /// that, ordinary hosts' short exchanges isolate as easily as attacks.
    pub min_packets: usize,
    /// Feature vectors (one per packet batch) used for training. On Kafka, the group's warm-up: each
    /// packets-topic partition contributes its first ceil(warmup_samples / partitions) (module
    /// `crate::forest::shared`); an engine without Kafka trains on the first ones it sees. Default 512.
    pub warmup_samples: usize,
    /// A partition whose warm-up share is not full after this much of its packet time contributes what it has
    /// (and every partition of a detector after twice this much of the detector's packet time), so quiet
    /// partitions do not hold the group's model back. Default 1 min.
    #[serde(with = "humantime_serde")]
    pub warmup_window: Duration,
    /// A warm-up vector counts as clean only once this much of its partition's packet time has passed after
    /// its batch with no rule flagging its host (a brute force is named at its 20th attempt, a sweep at its
    /// 64th address, both within 60 s); a host flagged in that time gives no training vector, and its batches
    /// are scored once the model is in force. At the end of the input every rule has had its say and the
    /// vectors still waiting are judged at once. Default 1 min.
    #[serde(with = "humantime_serde")]
    pub warmup_horizon: Duration,
    /// Trees in the forest. Default 50: scoring walks every tree and the crate's boxed nodes make that memory
    /// bound (~15 µs per vector at 50 trees, ~30 µs at 100); 50 keeps the whole path above 1M packets/s per
    /// core with batches of ~30 packets while scores stay stable to about ±0.02.
    pub trees: usize,
    /// Training vectors drawn (without replacement) per tree; the depth limit is ceil(log2(sample_size)).
    /// Default 256.
    pub sample_size: usize,
    /// Extension level of the hyperplanes, 0 (axis-parallel, classic isolation forest) to features − 1 (fully
    /// extended). Default 1: on the synthetic benign-vs-scan data it separated best (training max 0.73, scan
    /// 0.77; fully extended: 0.80 vs 0.76).
    pub extension_level: usize,
    /// Seed of the training RNG (ChaCha8): the same seed and the same training vectors give the same forest.
    /// Default 0x6e65_7461_6e6f_6d00.
    pub seed: u64,
    /// Quantile of the training scores that the threshold starts from. Default 1.0 (the most isolated
    /// training vector): with per-batch vectors, any lower quantile flags that share of ordinary batches by
    /// construction (0.995 flagged about 1 benign batch in 200 on the synthetic browsing traffic).
    pub threshold_quantile: f64,
    /// Added to that quantile: a vector must isolate clearly faster than anything seen in training. Default
    /// 0.02.
    pub threshold_margin: f64,
    /// The threshold never goes below this score (0.5 is "no evidence either way"). Default 0.62.
    pub threshold_floor: f64,
    /// Batches of one host above the threshold, within `confirm_window` of packet time, before an isolation
    /// anomaly is raised: an ordinary host isolates now and then in one batch (something it rarely does, done
    /// once); an attack that the training traffic does not explain keeps isolating. Default CONFIRM.
    pub confirm_batches: usize,
    /// Span of packet time in which `confirm_batches` batches must isolate. Default 1 min.
    #[serde(with = "humantime_serde")]
    pub confirm_window: Duration,
    /// At most one isolation anomaly per host per this much packet time. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// Load a persisted model (forest + threshold + baseline, JSON written by `TrainedForest::save`) instead
    /// of training. Default none.
    pub model_path: Option<PathBuf>,
    /// Write the trained model here after warm-up, and each retrained generation after it (see
    /// `retrain_every`), so that a restart with `model_path` set to the same file resumes from the latest
    /// model. Default none.
    pub save_path: Option<PathBuf>,
    /// Retrain the forest every this much packet time on a sample of the traffic seen since the previous
    /// training (`retrain_samples` vectors, guarded by `retrain_guard`), off the hot path, with a seed derived
    /// from `seed` and the generation; the model version gains `-g<generation>`. E.g. `"6h"`; at least `1m`.
    /// Default none (off): the model trained at warm-up (or loaded from `model_path`) stays for the whole run,
    /// so a replay, a capture or a comparison between detectors is judged by one model, and a slow change of
    /// the traffic cannot move the threshold. Turn it on for long-running detectors whose traffic drifts.
    #[serde(default, with = "humantime_serde")]
    pub retrain_every: Option<Duration>,
    /// Vectors in the retraining reservoir: a uniform sample (seeded) of the interval's batches that scored at
    /// most the current threshold and whose host no detector flagged. Default 512, like `warmup_samples`, so
    /// every generation's threshold is calibrated on as many vectors as the first; at least `sample_size`.
    pub retrain_samples: usize,
    /// Guard window in packet time: a vector is kept out of the retraining sample when its host was flagged by
    /// any detector (any kind) from this long before the vector up to the retraining. A host that slowly ramps
    /// up a scan is flagged by the rules before the forest would learn its traffic as normal. Hosts remembered
    /// are bounded by the host map's capacity (`detector.state.max_hosts` or what `memory_budget_mib` fits;
    /// oldest flags forgotten first). Default 1 h.
    #[serde(with = "humantime_serde")]
    pub retrain_guard: Duration,
}

impl Default for ForestConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_packets: 16,
            warmup_samples: 512,
            warmup_window: Duration::from_secs(60),
            warmup_horizon: Duration::from_secs(60),
            trees: 50,
            sample_size: 256,
            extension_level: 1,
            seed: 0x6e65_7461_6e6f_6d00,
            threshold_quantile: 1.0,
            threshold_margin: 0.02,
            threshold_floor: 0.62,
            confirm_batches: 3,
            confirm_window: Duration::from_secs(60),
            cooldown: Duration::from_secs(10),
            model_path: None,
            save_path: None,
            retrain_every: None,
            retrain_samples: 512,
            retrain_guard: Duration::from_secs(3600),
        }
    }
}

/// Most `confirm_batches` accepted (each host remembers that many batch times).
pub const MAX_CONFIRM_BATCHES: usize = 64;

/// Longest accepted `warmup_horizon`: the group's model waits this long for every partition's warm-up.
pub const MAX_WARMUP_HORIZON: Duration = Duration::from_secs(3600);

/// Shortest accepted `retrain_every`: well above the retraining's swap delay
/// ([`crate::forest::lifecycle::SWAP_DELAY`]), so at most one retraining runs at a time.
pub const MIN_RETRAIN_EVERY: Duration = Duration::from_secs(60);

impl ForestConfig {
    /// Checks `[detector.forest]` and returns every problem.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut p = Problems::new("forest");
        p.check(self.trees >= 1, "trees", || format!("must be >= 1, got {}", self.trees));
        p.check(self.sample_size >= 2, "sample_size", || format!("must be >= 2, got {}", self.sample_size));
        p.check(self.model_path.is_some() || self.warmup_samples >= self.sample_size, "warmup_samples", || {
            format!("must be >= detector.forest.sample_size ({}), got {}", self.sample_size, self.warmup_samples)
        });
        p.check(!self.warmup_window.is_zero(), "warmup_window", || "must be > 0".into());
        p.check((1..=MAX_CONFIRM_BATCHES).contains(&self.confirm_batches), "confirm_batches", || {
            format!("must be in 1..={MAX_CONFIRM_BATCHES}, got {}", self.confirm_batches)
        });
        p.check(!self.confirm_window.is_zero(), "confirm_window", || "must be > 0".into());
        p.check(self.warmup_horizon <= MAX_WARMUP_HORIZON, "warmup_horizon", || {
            format!("must be <= 1h, got {}", human(self.warmup_horizon))
        });
        p.check(self.warmup_samples <= 1_000_000, "warmup_samples", || {
            format!("must be <= 1000000, got {}", self.warmup_samples)
        });
        p.check(self.extension_level < FEATURES, "extension_level", || {
            format!("must be < {FEATURES} (the number of features), got {}", self.extension_level)
        });
        p.check(self.threshold_quantile > 0.0 && self.threshold_quantile <= 1.0, "threshold_quantile", || {
            format!("must be in (0, 1], got {}", self.threshold_quantile)
        });
        p.check(
            self.threshold_margin.is_finite() && (0.0..0.5).contains(&self.threshold_margin),
            "threshold_margin",
            || format!("must be in [0, 0.5), got {}", self.threshold_margin),
        );
        p.check(self.threshold_floor > 0.0 && self.threshold_floor < 1.0, "threshold_floor", || {
            format!("must be in (0, 1), got {}", self.threshold_floor)
        });
        if let Some(every) = self.retrain_every {
            p.check(every >= MIN_RETRAIN_EVERY, "retrain_every", || {
                format!("must be >= 1m when set, got {}", human(every))
            });
            p.check((self.sample_size..=1_000_000).contains(&self.retrain_samples), "retrain_samples", || {
                format!(
                    "must be in detector.forest.sample_size ({})..=1000000 when detector.forest.retrain_every is \
                     set, got {}",
                    self.sample_size, self.retrain_samples
                )
            });
            p.check(!self.retrain_guard.is_zero(), "retrain_guard", || "must be > 0".into());
        }
        if let Some(path) = &self.model_path
            && self.enabled
        {
            p.check(path.is_file(), "model_path", || format!("{} is not a file", path.display()));
        }
        p.into_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retraining_keys_are_validated_when_retraining_is_on() {
        let mut c = ForestConfig { retrain_samples: 1, retrain_guard: Duration::ZERO, ..ForestConfig::default() };
        assert!(c.validate().is_empty(), "retrain_samples and retrain_guard are unused while retraining is off");
        c.retrain_every = Some(Duration::from_secs(30));
        let text: Vec<String> = c.validate().iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "detector.forest.retrain_every must be >= 1m when set, got 30s",
                "detector.forest.retrain_samples must be in detector.forest.sample_size (256)..=1000000 when \
                 detector.forest.retrain_every is set, got 1",
                "detector.forest.retrain_guard must be > 0",
            ]
        );
        let c: ForestConfig = serde_json::from_str(r#"{"retrain_every": "6h", "retrain_guard": "30m"}"#).unwrap();
        assert_eq!(c.retrain_every, Some(Duration::from_secs(6 * 3600)));
        assert_eq!(c.retrain_guard, Duration::from_secs(1800));
        assert_eq!(c.retrain_samples, 512);
        assert!(c.validate().is_empty());
    }
}
