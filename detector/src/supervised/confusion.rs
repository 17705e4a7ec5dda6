//! The binary confusion matrix of attack-vs-benign predictions and the figures derived from it (accuracy,
//! precision, recall, F1). Pure arithmetic; owns no model.

use serde::{Deserialize, Serialize};

/// Counts of predictions against labels; "positive" is attack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confusion {
    /// Attack predicted attack.
    pub tp: u64,
    /// Benign predicted attack.
    pub fp: u64,
    /// Attack predicted benign.
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// Benign predicted benign.
    pub tn: u64,
}

impl Confusion {
    /// The matrix of `P(attack) >= threshold` over `(probability, is_attack)` pairs.
    pub fn at_threshold(scored: impl IntoIterator<Item = (f64, bool)>, threshold: f64) -> Self {
        let mut c = Self::default();
        for (p, attack) in scored {
            c.add(attack, p >= threshold);
        }
        c
    }

    /// Counts one prediction.
    pub fn add(&mut self, attack: bool, predicted_attack: bool) {
        match (attack, predicted_attack) {
            (true, true) => self.tp += 1,
            (false, true) => self.fp += 1,
            (true, false) => self.fn_ += 1,
            (false, false) => self.tn += 1,
        }
    }

    /// All predictions.
    pub fn total(&self) -> u64 {
        self.tp + self.fp + self.fn_ + self.tn
    }

    /// (tp + tn) / total; 0 when empty.
    pub fn accuracy(&self) -> f64 {
        ratio(self.tp + self.tn, self.total())
    }

    /// tp / (tp + fp); 0 when nothing was predicted attack.
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    /// tp / (tp + fn); 0 when there is no attack.
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// Harmonic mean of precision and recall, 2·tp / (2·tp + fp + fn); 0 when both are 0.
    pub fn f1(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 { 0.0 } else { num as f64 / den as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_of_a_known_matrix() {
        // 8 attacks of which 6 found, 2 false alarms among 90 benign.
        let c = Confusion { tp: 6, fp: 2, fn_: 2, tn: 88 };
        assert_eq!(c.total(), 98);
        assert!((c.accuracy() - 94.0 / 98.0).abs() < 1e-12);
        assert!((c.precision() - 0.75).abs() < 1e-12);
        assert!((c.recall() - 0.75).abs() < 1e-12);
        assert!((c.f1() - 0.75).abs() < 1e-12);
        let c = Confusion { tp: 9, fp: 1, fn_: 3, tn: 0 };
        let (p, r) = (0.9, 0.75);
        assert!((c.f1() - 2.0 * p * r / (p + r)).abs() < 1e-12);
    }

    #[test]
    fn empty_and_degenerate_matrices_are_zero_not_nan() {
        for c in [Confusion::default(), Confusion { tn: 5, ..Confusion::default() }] {
            assert_eq!((c.precision(), c.recall(), c.f1()), (0.0, 0.0, 0.0));
        }
        assert_eq!(Confusion::default().accuracy(), 0.0);
    }

    #[test]
    fn threshold_is_inclusive() {
        let c = Confusion::at_threshold([(0.5, true), (0.49, true), (0.5, false), (0.1, false)], 0.5);
        assert_eq!(c, Confusion { tp: 1, fp: 1, fn_: 1, tn: 1 });
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"{"tp":1,"fp":1,"fn":1,"tn":1}"#);
    }
}
