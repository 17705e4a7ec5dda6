//! Detection quality: host-level and per-attacker figures from the alerts of a run and the labels of its
//! capture. Pure formulas; [`super::evaluation`] applies them and `netanom eval` prints what they compute.
//!
//! Host level: every address that sent traffic is a host; a host is positive when the labels name it as an
//! attacker (or victim, for destination-side alerts) and predicted positive when an alert names it. ROC-AUC ranks
//! hosts by their strongest alert (score ÷ threshold, 0 for hosts never alerted); ties count half, as in the
//! Mann–Whitney statistic.

use std::collections::{BTreeMap, BTreeSet};

/// Confusion counts and the figures derived from them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Confusion {
    /// Positives alerted.
    pub true_positives: u64,
    /// Negatives alerted.
    pub false_positives: u64,
    /// Positives not alerted.
    pub false_negatives: u64,
    /// Negatives not alerted.
    pub true_negatives: u64,
}

impl Confusion {
    /// Counts from the sets of all hosts, positive hosts and alerted hosts. Hosts that are alerted or positive
    /// but absent from `all` are counted too.
    pub fn from_sets(all: &BTreeSet<String>, positive: &BTreeSet<String>, alerted: &BTreeSet<String>) -> Self {
        let universe: BTreeSet<&String> = all.iter().chain(positive).chain(alerted).collect();
        let mut c = Confusion::default();
        for h in universe {
            match (positive.contains(h), alerted.contains(h)) {
                (true, true) => c.true_positives += 1,
                (false, true) => c.false_positives += 1,
                (true, false) => c.false_negatives += 1,
                (false, false) => c.true_negatives += 1,
            }
        }
        c
    }

    /// TP / (TP + FP); 1 when nothing was alerted (no false alarm was raised).
    pub fn precision(&self) -> f64 {
        ratio(self.true_positives, self.true_positives + self.false_positives, 1.0)
    }

    /// TP / (TP + FN); 1 when there was nothing to find.
    pub fn recall(&self) -> f64 {
        ratio(self.true_positives, self.true_positives + self.false_negatives, 1.0)
    }

    /// Harmonic mean of precision and recall.
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) }
    }

    /// (TP + TN) / all.
    pub fn accuracy(&self) -> f64 {
        let all = self.true_positives + self.false_positives + self.false_negatives + self.true_negatives;
        ratio(self.true_positives + self.true_negatives, all, 1.0)
    }
}

fn ratio(num: u64, den: u64, empty: f64) -> f64 {
    if den == 0 { empty } else { num as f64 / den as f64 }
}

/// Area under the ROC curve of `scores` (host → score) against `positive`; `None` when either class is empty.
pub fn roc_auc(scores: &BTreeMap<String, f64>, positive: &BTreeSet<String>) -> Option<f64> {
    let (pos, neg): (Vec<f64>, Vec<f64>) = {
        let mut p = Vec::new();
        let mut n = Vec::new();
        for (h, s) in scores {
            if positive.contains(h) { p.push(*s) } else { n.push(*s) }
        }
        (p, n)
    };
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    let mut wins = 0.0;
    for p in &pos {
        for n in &neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    Some(wins / (pos.len() * neg.len()) as f64)
}

/// Median of `values`; `None` when empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let m = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[m] } else { (values[m - 1] + values[m]) / 2.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(hosts: &[&str]) -> BTreeSet<String> {
        hosts.iter().map(|h| h.to_string()).collect()
    }

    #[test]
    fn confusion_counts_every_host_once() {
        let all = set(&["a", "b", "c", "d", "e"]);
        let c = Confusion::from_sets(&all, &set(&["a", "b"]), &set(&["a", "c"]));
        assert_eq!(c, Confusion { true_positives: 1, false_positives: 1, false_negatives: 1, true_negatives: 2 });
        assert_eq!(c.precision(), 0.5);
        assert_eq!(c.recall(), 0.5);
        assert_eq!(c.f1(), 0.5);
        assert_eq!(c.accuracy(), 0.6);
    }

    #[test]
    fn perfect_detection_scores_one_and_silence_on_attacks_scores_zero_recall() {
        let all = set(&["a", "b", "c"]);
        let perfect = Confusion::from_sets(&all, &set(&["a"]), &set(&["a"]));
        assert_eq!((perfect.precision(), perfect.recall(), perfect.f1()), (1.0, 1.0, 1.0));
        let silent = Confusion::from_sets(&all, &set(&["a"]), &set(&[]));
        assert_eq!((silent.precision(), silent.recall(), silent.f1()), (1.0, 0.0, 0.0));
    }

    #[test]
    fn roc_auc_ranks_and_counts_ties_half() {
        let scores: BTreeMap<String, f64> =
            [("a", 3.0), ("b", 1.0), ("c", 1.0), ("d", 0.0)].iter().map(|(h, s)| (h.to_string(), *s)).collect();
        assert_eq!(roc_auc(&scores, &set(&["a"])), Some(1.0));
        assert_eq!(roc_auc(&scores, &set(&["d"])), Some(0.0));
        // b against a (loss), c (tie), d (win): (0 + 0.5 + 1) / 3.
        assert_eq!(roc_auc(&scores, &set(&["b"])), Some(0.5));
        assert_eq!(roc_auc(&scores, &set(&[])), None);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }
}
