//! The joining rules of `netanom eval` (pure): every source host of the capture is a host; positives are the
//! labelled attackers, plus labelled victims named by an alert with the `victim` kind (the victim detector finds
//! destinations of distributed attacks). A host is predicted positive when any alert names it; an alert of
//! another kind on a labelled victim is a false positive. Labelled victims that no alert names are left out of
//! the count (single-source attacks have no victim to find), and reported as `victims_alerted` / `victims`.
//! Time to detect of an attacker = the earliest `detected_at` of its alerts minus the time of its first packet
//! in the capture. The formulas are [`super::formulas`].

use std::collections::{BTreeMap, BTreeSet};

use netanom_schemas::{Alert, AnomalyKind};
use serde::Serialize;

use super::formulas::{Confusion, median, roc_auc};
use crate::labels::Labels;
use crate::traffic::Traffic;

/// Host-level figures of one capture.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// The capture.
    pub capture: String,
    /// Traffic class from the labels.
    pub class: String,
    /// Hosts counted.
    pub hosts: usize,
    /// Labelled attackers (every source when the labels say so).
    pub attackers: usize,
    /// The labels make every source host an attacker (reflection and spoofed floods).
    pub all_sources_attack: bool,
    /// Attackers named by at least one alert.
    pub attackers_alerted: usize,
    /// Labelled victims.
    pub victims: usize,
    /// Labelled victims named by a `victim` alert.
    pub victims_alerted: usize,
    /// Alerted hosts that are not positives.
    pub false_positive_hosts: Vec<String>,
    /// Confusion counts.
    pub true_positives: u64,
    /// Confusion counts.
    pub false_positives: u64,
    /// Confusion counts.
    pub false_negatives: u64,
    /// Confusion counts.
    pub true_negatives: u64,
    /// TP / (TP + FP).
    pub precision: f64,
    /// TP / (TP + FN); null when there is nothing to find (no attacker in the labels, no victim alerted), where
    /// a recall of 1 would say the detector found what was not there.
    pub recall: Option<f64>,
    /// F1; null when `recall` is.
    pub f1: Option<f64>,
    /// (TP + TN) / hosts.
    pub accuracy: f64,
    /// ROC-AUC of hosts ranked by max(score / threshold); null when a class is empty.
    pub roc_auc: Option<f64>,
    /// Seconds of packet time from each alerted attacker's first packet to its earliest detection: the
    /// smallest `detected_at` of its alerts (`last_seen` for alerts without one).
    pub time_to_detect_s: BTreeMap<String, f64>,
    /// Median of `time_to_detect_s`.
    pub median_time_to_detect_s: Option<f64>,
    /// Alert lines naming each alerted attacker (every revision of every incident): the volume an analyst sees.
    pub alerts_per_attacker: BTreeMap<String, u64>,
    /// Incidents (distinct alert ids) naming each alerted attacker.
    pub incidents_per_attacker: BTreeMap<String, u64>,
    /// Seconds by which each alerted attacker's earliest `first_seen` precedes its first packet in the capture
    /// (0 when its alerts start at or after it): how far an alert dates an attack before it began.
    pub first_seen_early_s: BTreeMap<String, f64>,
    /// Incidents by kind: each kind of an incident counted once, on the incident's closing revision.
    pub alerts: BTreeMap<String, u64>,
}

/// Joins traffic, labels and alerts (see the module doc for the rules).
pub fn evaluate(capture: &str, traffic: &Traffic, labels: &Labels, alerts: &[Alert]) -> Evaluation {
    let attackers: BTreeSet<String> = if labels.all_sources_attack {
        traffic.hosts.keys().filter(|h| !labels.victims.contains(*h)).cloned().collect()
    } else {
        labels.attackers.clone()
    };
    let mut strongest: BTreeMap<String, f64> = BTreeMap::new();
    let mut detected_ns: BTreeMap<String, i64> = BTreeMap::new();
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut victim_hits = BTreeSet::new();
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    let mut ids: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    let mut first_seen_ns: BTreeMap<String, i64> = BTreeMap::new();
    let mut alerted = BTreeSet::new();
    for a in alerts {
        // An incident counts once per kind, on its closing revision.
        if a.final_revision {
            for kind in a.kind_list() {
                *kinds.entry(kind.to_string()).or_default() += 1;
            }
        }
        let s = if a.threshold > 0.0 { a.score / a.threshold } else { a.score };
        let e = strongest.entry(a.host.clone()).or_insert(0.0);
        *e = e.max(s);
        if let Ok(t) = i64::try_from(a.detected_at.unwrap_or(a.last_seen).unix_timestamp_nanos()) {
            let e = detected_ns.entry(a.host.clone()).or_insert(t);
            *e = (*e).min(t);
        }
        if a.has_kind(AnomalyKind::Victim) && labels.victims.contains(&a.host) {
            victim_hits.insert(a.host.clone());
        }
        *lines.entry(a.host.clone()).or_default() += 1;
        ids.entry(a.host.clone()).or_default().insert(&a.id);
        if let Ok(t) = i64::try_from(a.first_seen.unix_timestamp_nanos()) {
            let e = first_seen_ns.entry(a.host.clone()).or_insert(t);
            *e = (*e).min(t);
        }
        alerted.insert(a.host.clone());
    }
    let positive: BTreeSet<String> = attackers.union(&victim_hits).cloned().collect();
    let mut all: BTreeSet<String> = traffic.hosts.keys().cloned().collect();
    all.retain(|h| !labels.victims.contains(h) || alerted.contains(h) || attackers.contains(h));
    let confusion = Confusion::from_sets(&all, &positive, &alerted);
    let universe: BTreeSet<&String> = all.iter().chain(&positive).chain(&alerted).collect();
    let scores: BTreeMap<String, f64> =
        universe.iter().map(|h| ((*h).clone(), strongest.get(*h).copied().unwrap_or(0.0))).collect();
    let mut ttd = BTreeMap::new();
    for h in &attackers {
        if let (Some(at), Some(t)) = (detected_ns.get(h), traffic.hosts.get(h)) {
            ttd.insert(h.clone(), at.saturating_sub(t.first_ns) as f64 / 1e9);
        }
    }
    let mut ttd_values: Vec<f64> = ttd.values().copied().collect();
    let alerted_attackers: Vec<&String> = attackers.intersection(&alerted).collect();
    let per_attacker = |m: &BTreeMap<String, u64>| -> BTreeMap<String, u64> {
        alerted_attackers.iter().map(|h| ((*h).clone(), m.get(*h).copied().unwrap_or(0))).collect()
    };
    let id_counts: BTreeMap<String, u64> = ids.iter().map(|(h, s)| (h.clone(), s.len() as u64)).collect();
    let mut first_seen_early_s = BTreeMap::new();
    for h in &alerted_attackers {
        if let (Some(seen), Some(t)) = (first_seen_ns.get(*h), traffic.hosts.get(*h)) {
            first_seen_early_s.insert((*h).clone(), t.first_ns.saturating_sub(*seen).max(0) as f64 / 1e9);
        }
    }
    Evaluation {
        capture: capture.to_string(),
        class: labels.class.clone(),
        hosts: universe.len(),
        attackers: attackers.len(),
        all_sources_attack: labels.all_sources_attack,
        attackers_alerted: attackers.intersection(&alerted).count(),
        victims: labels.victims.len(),
        victims_alerted: victim_hits.len(),
        false_positive_hosts: alerted.difference(&positive).cloned().collect(),
        true_positives: confusion.true_positives,
        false_positives: confusion.false_positives,
        false_negatives: confusion.false_negatives,
        true_negatives: confusion.true_negatives,
        precision: confusion.precision(),
        recall: (!positive.is_empty()).then(|| confusion.recall()),
        f1: (!positive.is_empty()).then(|| confusion.f1()),
        accuracy: confusion.accuracy(),
        roc_auc: roc_auc(&scores, &positive),
        median_time_to_detect_s: median(&mut ttd_values),
        time_to_detect_s: ttd,
        alerts_per_attacker: per_attacker(&lines),
        incidents_per_attacker: per_attacker(&id_counts),
        first_seen_early_s,
        alerts: kinds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::HostTraffic;

    fn time(rfc3339: &str) -> time::OffsetDateTime {
        time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).unwrap()
    }

    fn alert(host: &str, kind: &str, score: f64, first_seen: &str) -> Alert {
        crate::test_alerts::alert(host, kind, score, 1.0, first_seen)
    }

    fn traffic(hosts: &[(&str, i64)]) -> Traffic {
        let mut t = Traffic::default();
        for (h, first) in hosts {
            t.hosts.insert(h.to_string(), HostTraffic { first_ns: *first, ..HostTraffic::default() });
        }
        t
    }

    #[test]
    fn victims_count_only_for_victim_alerts_and_time_to_detect_uses_first_packet() {
        let t = traffic(&[("10.0.0.1", 1_000_000_000), ("10.0.0.2", 0), ("10.0.0.3", 0), ("10.0.0.9", 0)]);
        let mut l = Labels::default();
        l.attackers.insert("10.0.0.1".into());
        l.victims.extend(["10.0.0.2".to_string(), "10.0.0.3".to_string(), "10.0.0.4".to_string()]);
        let alerts = [
            Alert {
                last_seen: time("1970-01-01T00:00:09Z"),
                detected_at: Some(time("1970-01-01T00:00:04Z")),
                ..alert("10.0.0.1", "rate", 3.0, "1970-01-01T00:00:03.5Z")
            },
            // Raised earlier than its window start suggests; and an alert without detected_at uses last_seen.
            // Its first_seen half a second before the host's first packet.
            Alert {
                detected_at: None,
                first_seen: time("1970-01-01T00:00:00.5Z"),
                ..alert("10.0.0.1", "fanout", 1.0, "1970-01-01T00:00:05Z")
            },
            alert("10.0.0.2", "victim", 2.0, "1970-01-01T00:00:04Z"),
            alert("10.0.0.3", "isolation", 1.5, "1970-01-01T00:00:04Z"),
        ];
        let e = evaluate("c", &t, &l, &alerts);
        // 10.0.0.1 and .2 are TPs, .3 (a victim flagged as a source) is a FP, .9 a TN; .4 never alerted is out.
        assert_eq!((e.true_positives, e.false_positives, e.false_negatives, e.true_negatives), (2, 1, 0, 1));
        assert_eq!(e.false_positive_hosts, vec!["10.0.0.3".to_string()]);
        assert_eq!(e.victims_alerted, 1);
        assert_eq!(e.time_to_detect_s.get("10.0.0.1"), Some(&3.0), "the earliest detected_at counts");
        assert_eq!(e.alerts_per_attacker.get("10.0.0.1"), Some(&2));
        assert_eq!(e.incidents_per_attacker.get("10.0.0.1"), Some(&2), "two ids");
        assert_eq!(e.first_seen_early_s.get("10.0.0.1"), Some(&0.5), "the earliest first_seen counts");
        assert_eq!(e.roc_auc, Some(1.0), "both positives outrank both negatives");
    }

    #[test]
    fn labels_without_attackers_give_no_recall_and_no_f1() {
        let t = traffic(&[("10.0.0.1", 0), ("10.0.0.2", 0)]);
        let quiet = evaluate("c", &t, &Labels::default(), &[]);
        assert_eq!((quiet.attackers, quiet.recall, quiet.f1), (0, None, None));
        assert_eq!((quiet.precision, quiet.true_negatives), (1.0, 2));
        let noisy = evaluate("c", &t, &Labels::default(), &[alert("10.0.0.1", "rate", 2.0, "1970-01-01T00:00:00Z")]);
        assert_eq!((noisy.recall, noisy.f1, noisy.precision), (None, None, 0.0));
        assert_eq!(noisy.false_positive_hosts, vec!["10.0.0.1".to_string()]);
    }

    #[test]
    fn every_source_labels_make_all_non_victim_hosts_attackers() {
        let t = traffic(&[("1.1.1.1", 0), ("2.2.2.2", 0), ("10.10.10.10", 0)]);
        let l = Labels { all_sources_attack: true, victims: ["10.10.10.10".to_string()].into(), ..Labels::default() };
        let e = evaluate("c", &t, &l, &[alert("10.10.10.10", "victim", 5.0, "1970-01-01T00:00:00Z")]);
        assert_eq!((e.attackers, e.attackers_alerted, e.victims_alerted), (2, 0, 1));
        assert_eq!((e.true_positives, e.false_negatives), (1, 2));
    }
}
