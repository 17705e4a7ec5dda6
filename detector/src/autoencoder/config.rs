//! `[detector.autoencoder]`: the autoencoder detector's keys, defaults and validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::model::{MIN_SAMPLES, TrainOptions};
use crate::features::FEATURES;
use crate::validation::{ConfigError, Problems};

/// `[detector.autoencoder]`: an ensemble of small autoencoders over subsets of the per-batch features (KitNET),
/// scored by reconstruction error.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoencoderConfig {
    /// Whether the detector runs. Default false: out of sample it finds what the isolation forest finds and
    /// alerts on more benign hosts (docs/detection.md, "Autoencoders and the isolation forest").
    pub enabled: bool,
    /// Batches with fewer packets are neither trained on nor scored. Default 8.
    pub min_packets: usize,
    /// Batch vectors of hosts no detector has flagged that make the training set: the first ones this detector
    /// sees. At least 64. Default 512.
    pub warmup_samples: usize,
    /// Most features per ensemble autoencoder (KitNET's `m`): the feature mapper clusters correlated features
    /// into subsets of at most this many. 1 to the number of features. Default 5.
    pub max_subset: usize,
    /// Hidden units per input of each autoencoder, in (0, 1] (rounded up). Default 0.75.
    pub hidden_ratio: f64,
    /// Passes of stochastic gradient descent over the training vectors, per layer, 1 to 1000. Default 20.
    pub epochs: usize,
    /// Step size of stochastic gradient descent, in (0, 1]. Default 0.1.
    pub learning_rate: f64,
    /// Seed of the training RNG (ChaCha8): the same seed and the same training vectors give the same model.
    /// Default 0x6e65_7461_6e6f_6d01.
    pub seed: u64,
    /// Quantile of the training scores that the threshold starts from, in (0, 1]. Default 1.0 (the worst
    /// reconstructed training vector).
    pub threshold_quantile: f64,
    /// The threshold is that quantile times this factor, at least 1. Default 2.
    pub threshold_factor: f64,
    /// At most one autoencoder anomaly per host per this much packet time. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// Load a model file written by `netanom train --autoencoder` (format `netanom-kitnet-v1`) instead of
    /// training on the warm-up. Default none.
    pub model_path: Option<PathBuf>,
    /// Write the model trained at warm-up here. Default none.
    pub save_path: Option<PathBuf>,
}

impl Default for AutoencoderConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            min_packets: 8,
            warmup_samples: 512,
            max_subset: 5,
            hidden_ratio: 0.75,
            epochs: 20,
            learning_rate: 0.1,
            seed: 0x6e65_7461_6e6f_6d01,
            threshold_quantile: 1.0,
            threshold_factor: 2.0,
            cooldown: Duration::from_secs(10),
            model_path: None,
            save_path: None,
        }
    }
}

impl AutoencoderConfig {
    /// Checks `[detector.autoencoder]` and returns every problem.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut p = Problems::new("autoencoder");
        p.check(self.min_packets >= 1, "min_packets", || format!("must be >= 1, got {}", self.min_packets));
        p.check((MIN_SAMPLES..=1_000_000).contains(&self.warmup_samples), "warmup_samples", || {
            format!("must be in {MIN_SAMPLES}..=1000000, got {}", self.warmup_samples)
        });
        p.check((1..=FEATURES).contains(&self.max_subset), "max_subset", || {
            format!("must be in 1..={FEATURES} (the number of features), got {}", self.max_subset)
        });
        p.check(self.hidden_ratio > 0.0 && self.hidden_ratio <= 1.0, "hidden_ratio", || {
            format!("must be in (0, 1], got {}", self.hidden_ratio)
        });
        p.check((1..=1000).contains(&self.epochs), "epochs", || format!("must be in 1..=1000, got {}", self.epochs));
        p.check(self.learning_rate > 0.0 && self.learning_rate <= 1.0, "learning_rate", || {
            format!("must be in (0, 1], got {}", self.learning_rate)
        });
        p.check(self.threshold_quantile > 0.0 && self.threshold_quantile <= 1.0, "threshold_quantile", || {
            format!("must be in (0, 1], got {}", self.threshold_quantile)
        });
        p.check(self.threshold_factor.is_finite() && self.threshold_factor >= 1.0, "threshold_factor", || {
            format!("must be a number >= 1, got {}", self.threshold_factor)
        });
        if let Some(path) = &self.model_path {
            p.check(path.is_file(), "model_path", || format!("{} is not a file", path.display()));
        }
        p.into_vec()
    }

    /// The training settings of this section, with `seed`.
    pub fn train_options(&self, seed: u64) -> TrainOptions {
        TrainOptions {
            max_subset: self.max_subset,
            hidden_ratio: self.hidden_ratio,
            epochs: self.epochs,
            learning_rate: self.learning_rate,
            seed,
            threshold_quantile: self.threshold_quantile,
            threshold_factor: self.threshold_factor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_at_once() {
        assert!(AutoencoderConfig::default().validate().is_empty());
        let c = AutoencoderConfig {
            min_packets: 0,
            warmup_samples: 10,
            max_subset: 0,
            hidden_ratio: 1.5,
            epochs: 0,
            learning_rate: 0.0,
            threshold_quantile: 0.0,
            threshold_factor: 0.5,
            model_path: Some("/nonexistent/ae.json".into()),
            ..AutoencoderConfig::default()
        };
        let text: Vec<String> = c.validate().iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "detector.autoencoder.min_packets must be >= 1, got 0",
                "detector.autoencoder.warmup_samples must be in 64..=1000000, got 10",
                "detector.autoencoder.max_subset must be in 1..=14 (the number of features), got 0",
                "detector.autoencoder.hidden_ratio must be in (0, 1], got 1.5",
                "detector.autoencoder.epochs must be in 1..=1000, got 0",
                "detector.autoencoder.learning_rate must be in (0, 1], got 0",
                "detector.autoencoder.threshold_quantile must be in (0, 1], got 0",
                "detector.autoencoder.threshold_factor must be a number >= 1, got 0.5",
                "detector.autoencoder.model_path /nonexistent/ae.json is not a file",
            ]
        );
        let c: AutoencoderConfig = serde_json::from_str(r#"{"enabled": true, "cooldown": "30s"}"#).unwrap();
        assert_eq!((c.enabled, c.cooldown, c.max_subset), (true, Duration::from_secs(30), 5));
        assert!(serde_json::from_str::<AutoencoderConfig>(r#"{"epoch": 3}"#).is_err(), "unknown keys are refused");
    }
}
