//! `[detector.supervised]`: the supervised detector's keys, defaults and validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::validation::{ConfigError, Problems};

/// `[detector.supervised]`: a random forest trained on labelled traffic by `netanom train --supervised`,
/// scoring every batch of at least the model's minimum size beside the unsupervised detectors.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisedConfig {
    /// Model file written by `netanom train --supervised --out FILE` (format `netanom-rf-v1`). The detector runs
    /// only when this is set; the file must exist and is checked in full at start. Default none (off).
    pub model_path: Option<PathBuf>,
    /// P(attack) at or above which a batch is an anomaly, in (0, 1]. Default none: the model's own threshold,
    /// the cut with the best F1 on the training data's out-of-fold probabilities (printed by the training).
    pub threshold: Option<f64>,
    /// At most one supervised anomaly per host per this much packet time. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
}

impl Default for SupervisedConfig {
    fn default() -> Self {
        Self { model_path: None, threshold: None, cooldown: Duration::from_secs(10) }
    }
}

impl SupervisedConfig {
    /// Checks `[detector.supervised]` and returns every problem.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut p = Problems::new("supervised");
        if let Some(path) = &self.model_path {
            p.check(path.is_file(), "model_path", || format!("{} is not a file", path.display()));
        }
        if let Some(t) = self.threshold {
            p.check(t > 0.0 && t <= 1.0, "threshold", || format!("must be in (0, 1], got {t}"));
        }
        p.into_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_path_must_exist_and_threshold_be_a_probability() {
        let c = SupervisedConfig {
            model_path: Some("/nonexistent/rf.json".into()),
            threshold: Some(0.0),
            ..SupervisedConfig::default()
        };
        let text: Vec<String> = c.validate().iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "detector.supervised.model_path /nonexistent/rf.json is not a file",
                "detector.supervised.threshold must be in (0, 1], got 0"
            ]
        );
        let c: SupervisedConfig = serde_json::from_str(r#"{"cooldown": "30s"}"#).unwrap();
        assert_eq!((c.cooldown, c.model_path), (Duration::from_secs(30), None));
    }
}
