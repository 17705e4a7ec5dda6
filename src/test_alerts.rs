//! Alerts built for the unit tests of the offline tools (`eval`, `report`).

use netanom_schemas::Alert;

/// An alert of `kind` on `host` scoring `score` against `threshold`, first seen, last seen and detected at `at`
/// (RFC 3339).
pub fn alert(host: &str, kind: &str, score: f64, threshold: f64, at: &str) -> Alert {
    Alert {
        id: format!("{host}-{kind}"),
        host: host.into(),
        kind: kind.into(),
        score,
        threshold,
        first_seen: at.into(),
        last_seen: at.into(),
        detected_at: at.into(),
        count: 1,
        reason: String::new(),
        target: None,
        sample: String::new(),
        features: Vec::new(),
        model_version: "t".into(),
    }
}
