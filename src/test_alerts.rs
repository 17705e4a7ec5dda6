//! Alerts built for the unit tests of the offline tools (`eval`, `report`).

use netanom_schemas::{Alert, AnomalyKind};

/// An alert of `kind` on `host` scoring `score` against `threshold`, first seen, last seen and detected at `at`
/// (RFC 3339).
pub fn alert(host: &str, kind: &str, score: f64, threshold: f64, at: &str) -> Alert {
    let at = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).expect("an RFC 3339 time");
    Alert {
        id: format!("{host}-{kind}"),
        host: host.into(),
        kind: AnomalyKind::ALL.iter().copied().find(|k| k.as_str() == kind).expect("an anomaly kind"),
        score,
        threshold,
        first_seen: at,
        last_seen: at,
        detected_at: Some(at),
        count: 1,
        reason: String::new(),
        target: None,
        sample: String::new(),
        features: Vec::new(),
        model_version: "t".into(),
        revision: 1,
        final_revision: true,
        kinds: Vec::new(),
        totals: Default::default(),
    }
}
