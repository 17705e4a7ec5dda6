//! Building [`Anomaly`] records: the deterministic id, the rule-set version and number formatting for the
//! human-readable `reason`. Owns no detection logic.

use std::net::IpAddr;

use netanom_schemas::{Anomaly, AnomalyKind, Contribution, PacketBatch, PacketFeatures};

/// Version string of the rule-based detectors (rate, fanout, victim, beacon, probe, brute force, DNS tunnel): v2
/// added the last three and ends a fan-out window at the packet that crossed the threshold.
pub const RULES_VERSION: &str = "rules-v2";

/// The deterministic anomaly id: `{kind}:{host}:{start_ns}:{end_ns}`, the span of its evidence. Replays of the
/// same input give the same ids, so downstream deduplication works across redeliveries.
pub fn anomaly_id(kind: AnomalyKind, host: &str, start_ns: i64, end_ns: i64) -> String {
    format!("{kind}:{host}:{start_ns}:{end_ns}")
}

/// Everything an anomaly needs except the id, which is derived.
#[derive(Debug, Clone)]
pub struct AnomalyParts {
    /// The anomalous host.
    pub host: IpAddr,
    /// Detector kind.
    pub kind: AnomalyKind,
    /// Window start, ns.
    pub window_start_ns: i64,
    /// Window end, ns.
    pub window_end_ns: i64,
    /// Score, in the unit of the threshold.
    pub score: f64,
    /// Threshold exceeded.
    pub threshold: f64,
    /// Victim, when known.
    pub target: Option<IpAddr>,
    /// Human sentence.
    pub reason: String,
    /// Contributions, strongest first.
    pub features: Vec<Contribution>,
    /// Summary of a triggering packet.
    pub sample: String,
    /// Model or rule-set version.
    pub model_version: String,
}

/// What an anomaly of a model that judges whole batches (isolation forest, supervised forest, autoencoder)
/// says about the batch it judged; the forest keeps it while the batch waits for the group's model.
#[derive(Debug, Clone)]
pub struct BatchFacts {
    /// First and last packet time of the batch.
    pub start_ns: i64,
    /// Last packet time.
    pub end_ns: i64,
    /// The host's own packets in the batch.
    pub packets: usize,
    /// One packet, summarised (the first that opens a flow, else the first).
    pub sample: String,
}

impl BatchFacts {
    /// The facts of `batch` of `host`, of which `own` packets are the host's own traffic.
    pub fn of(host: IpAddr, batch: &PacketBatch, own: usize) -> Self {
        let sample = batch.packets.iter().find(|p| p.opens_flow()).or(batch.packets.first());
        Self {
            start_ns: batch.packets.iter().map(|p| p.ts_ns).min().unwrap_or(0),
            end_ns: batch.packets.iter().map(|p| p.ts_ns).max().unwrap_or(0),
            packets: own,
            sample: sample.map(|p| p.summary(host)).unwrap_or_default(),
        }
    }
}

impl AnomalyParts {
    /// A rule's anomaly about `host` raised by the packet `p` that crossed its threshold: the window from
    /// `window_start_ns` to `p`, `p`'s destination as the target and `p` as the sample, `score` against
    /// `threshold`, the rule-set version.
    pub fn rule(
        host: IpAddr,
        kind: AnomalyKind,
        p: &PacketFeatures,
        window_start_ns: i64,
        (score, threshold): (f64, f64),
        reason: String,
        features: Vec<Contribution>,
    ) -> Self {
        Self {
            host,
            kind,
            window_start_ns: window_start_ns.min(p.ts_ns),
            window_end_ns: p.ts_ns,
            score,
            threshold,
            target: Some(p.destination),
            reason,
            features,
            sample: p.summary(host),
            model_version: RULES_VERSION.into(),
        }
    }

    /// Builds the record.
    pub fn build(self) -> Anomaly {
        let host = self.host.to_string();
        Anomaly {
            id: anomaly_id(self.kind, &host, self.window_start_ns, self.window_end_ns),
            host,
            kind: self.kind,
            window_start_ns: self.window_start_ns,
            window_end_ns: self.window_end_ns,
            score: finite(self.score),
            threshold: finite(self.threshold),
            target: self.target.map(|t| t.to_string()),
            reason: self.reason,
            features: self.features,
            sample: self.sample,
            model_version: self.model_version,
            detected_ns: None,
            window_key: None,
            closing: false,
        }
    }
}

/// A finite stand-in for infinities and NaN (the alert JSON cannot carry them).
pub fn finite(v: f64) -> f64 {
    if v.is_nan() { 0.0 } else { v.clamp(-f64::MAX, f64::MAX) }
}

/// A measured value for a `reason`: no decimals for whole numbers and from 100 on, else two.
pub fn short(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.2}") }
}

/// Formats an integer with thousands separators: `3412` → `3,412`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Formats seconds for a sentence: `10 s`, `1.24 s`, `35 ms`.
pub fn seconds(ns: i64) -> String {
    let s = ns as f64 / 1e9;
    if s >= 10.0 {
        format!("{s:.0} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.0} ms", s * 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(3412), "3,412");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn id_is_kind_host_window() {
        let a = AnomalyParts {
            host: "10.0.0.1".parse().unwrap(),
            kind: AnomalyKind::Rate,
            window_start_ns: 42,
            window_end_ns: 43,
            score: f64::INFINITY,
            threshold: 1.0,
            target: None,
            reason: String::new(),
            features: vec![],
            sample: String::new(),
            model_version: RULES_VERSION.into(),
        }
        .build();
        assert_eq!(a.id, "rate:10.0.0.1:42:43");
        assert!(a.score.is_finite());
        assert_eq!(seconds(1_240_000_000), "1.24 s");
        assert_eq!(seconds(35_000_000), "35 ms");
    }
}
