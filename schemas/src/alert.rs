//! The alert record: what the alerts topic, the webhooks and `--alerts-out` carry, as JSON. Field names are
//! stable (README, "Alert format"); `avro/alert.v1.avsc` describes the same record.

use serde::{Deserialize, Serialize};

use crate::records::Contribution;

/// Repeats of one (host, kind) collapsed over a suppression window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// Deterministic id: host, kind and first_seen.
    pub id: String,
    /// The anomalous address as text.
    pub host: String,
    /// The detector kind: `rate`, `fanout`, `isolation`, `victim`, `profile`, `supervised`, `beacon`, `probe`,
    /// `brute_force` or `dns_tunnel`.
    pub kind: String,
    /// Highest score among the collapsed anomalies.
    pub score: f64,
    /// Threshold of the highest-scoring anomaly.
    pub threshold: f64,
    /// Packet time of the first anomaly, RFC 3339 with nanoseconds.
    pub first_seen: String,
    /// Packet time of the end of the last anomaly, RFC 3339 with nanoseconds.
    pub last_seen: String,
    /// Packet time at which the earliest of the collapsed anomalies was raised, RFC 3339 with nanoseconds: the
    /// end of its evidence (the packet that crossed a rule's threshold, the last packet of a scored batch, the
    /// end of a closed profile or victim window). Time to detect is measured to it. Empty in alerts written
    /// before it existed.
    #[serde(default)]
    pub detected_at: String,
    /// How many anomalies were collapsed into this alert.
    pub count: u64,
    /// A sentence a person understands.
    pub reason: String,
    /// The victim, when one is known.
    #[serde(default)]
    pub target: Option<String>,
    /// Summary of a packet that triggered it.
    pub sample: String,
    /// Features that drove the strongest anomaly.
    pub features: Vec<Contribution>,
    /// Model or rule-set version.
    pub model_version: String,
}

/// Formats nanoseconds since the Unix epoch as RFC 3339 UTC with nine fraction digits,
/// e.g. `2024-02-13T14:34:38.788187000Z`. Out-of-range values are clamped to the representable range.
pub fn format_rfc3339_ns(ns: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns)).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");
    t.format(&fmt).unwrap_or_else(|_| "1970-01-01T00:00:00.000000000Z".to_string())
}
