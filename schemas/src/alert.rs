//! The alert record: what the alerts topic, the webhooks and `--alerts-out` carry, as JSON. Field names are
//! stable (README, "Alert format"); `avro/alert.v1.avsc` describes the same record. In memory the kind is an
//! [`AnomalyKind`] and the times are [`OffsetDateTime`]s; on the wire they are the kind's name and RFC 3339 UTC
//! times with nine fraction digits, as they always were.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::records::{AnomalyKind, Contribution};

/// One incident about one host, in one of its revisions: every kind that fired on the host, from its first
/// evidence packet until it has been quiet for the incident window. The fields from `id` to `model_version`
/// describe the incident as a whole (the strongest kind's score, reason and sample); `kinds` has each kind's own
/// evidence and `totals` what the incident amounts to so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// Deterministic incident id: host, first kind and first_seen; the same in every revision.
    pub id: String,
    /// The anomalous address as text.
    pub host: String,
    /// The first kind that fired in the incident; on the wire its name: `rate`, `fanout`, `isolation`, `victim`,
    /// `profile`, `supervised`, `beacon`, `probe`, `brute_force`, `dns_tunnel`, `icmp_tunnel`, `flood`,
    /// `exfiltration` or `autoencoder`.
    #[serde(with = "kind_name")]
    pub kind: AnomalyKind,
    /// Highest score among the collapsed anomalies.
    pub score: f64,
    /// Threshold of the highest-scoring anomaly.
    pub threshold: f64,
    /// Packet time of the first evidence packet (RFC 3339 with nanoseconds on the wire).
    #[serde(with = "rfc3339_ns")]
    pub first_seen: OffsetDateTime,
    /// Packet time of the last evidence packet so far (RFC 3339 with nanoseconds on the wire).
    #[serde(with = "rfc3339_ns")]
    pub last_seen: OffsetDateTime,
    /// Packet time at which the incident was first detected, RFC 3339 with nanoseconds: the packet that crossed
    /// a rule's threshold, the last packet of a scored batch, the end of a closed profile or victim window.
    /// Time to detect is measured to it. `None` for alerts written before it existed (absent or `""` on the
    /// wire).
    #[serde(default, with = "rfc3339_ns::option")]
    pub detected_at: Option<OffsetDateTime>,
    /// How many anomalies the incident holds so far, every kind.
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
    /// Revision of the incident: 1, 2, … in emission order. 1 for alerts written before incidents existed.
    #[serde(default = "first_revision")]
    pub revision: u64,
    /// True on the incident's closing revision (exactly one per incident); true for alerts written before
    /// incidents existed.
    #[serde(rename = "final", default = "closed")]
    pub final_revision: bool,
    /// Every kind that fired in the incident, in the order they first fired. Empty for alerts written before
    /// incidents existed (their one kind is `kind`).
    #[serde(default)]
    pub kinds: Vec<IncidentKind>,
    /// What the incident amounts to so far.
    #[serde(default)]
    pub totals: IncidentTotals,
}

fn first_revision() -> u64 {
    1
}

fn closed() -> bool {
    true
}

impl Alert {
    /// The kinds of the incident: `kinds`, or `kind` alone for an alert without them.
    pub fn kind_list(&self) -> Vec<AnomalyKind> {
        if self.kinds.is_empty() { vec![self.kind] } else { self.kinds.iter().map(|k| k.kind).collect() }
    }

    /// Whether `kind` fired in the incident.
    pub fn has_kind(&self, kind: AnomalyKind) -> bool {
        self.kind == kind || self.kinds.iter().any(|k| k.kind == kind)
    }

    /// The name a webhook delivery of this revision carries: `id#revision`, so a receiver can deduplicate
    /// redeliveries of one revision and still receive every revision.
    pub fn delivery_id(&self) -> String {
        format!("{}#{}", self.id, self.revision)
    }
}

/// One kind's part of an incident: its own evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentKind {
    /// The detector kind, by name on the wire.
    #[serde(with = "kind_name")]
    pub kind: AnomalyKind,
    /// Anomalies of this kind in the incident.
    pub count: u64,
    /// Highest score of this kind.
    pub score: f64,
    /// Threshold of the highest-scoring anomaly of this kind.
    pub threshold: f64,
    /// First evidence packet of this kind.
    #[serde(with = "rfc3339_ns")]
    pub first_seen: OffsetDateTime,
    /// Packet that first crossed this kind's threshold.
    #[serde(with = "rfc3339_ns")]
    pub detected_at: OffsetDateTime,
    /// Last evidence packet of this kind.
    #[serde(with = "rfc3339_ns")]
    pub last_seen: OffsetDateTime,
    /// Reason of the highest-scoring anomaly of this kind.
    pub reason: String,
    /// Its victim, when one is known.
    #[serde(default)]
    pub target: Option<String>,
    /// A packet of its evidence.
    pub sample: String,
    /// Features of the highest-scoring anomaly of this kind.
    pub features: Vec<Contribution>,
    /// Model or rule-set version of the highest-scoring anomaly of this kind.
    pub model_version: String,
}

/// What an incident amounts to so far. Counts are the largest any anomaly of the incident reported (a window's
/// count), so they are lower bounds of the whole incident's; `None` where no kind of the incident counts it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentTotals {
    /// Distinct destination ports.
    pub ports: Option<u64>,
    /// Distinct destination hosts.
    pub hosts: Option<u64>,
    /// Distinct sources converging on the host (a victim).
    pub sources: Option<u64>,
    /// Packets.
    pub packets: Option<u64>,
    /// Bytes.
    pub bytes: Option<u64>,
    /// Seconds from `first_seen` to `last_seen`.
    pub duration_s: f64,
}

impl IncidentTotals {
    /// Raises the counts with the features of one anomaly (by their names in the detectors' tables). Negative,
    /// non-finite and fractional values are ignored or truncated.
    pub fn observe(&mut self, features: &[Contribution]) {
        for f in features {
            let slot = match f.name.as_str() {
                "distinct_dst_ports" => &mut self.ports,
                "distinct_destinations" | "distinct_destinations_slow" | "distinct_echo_destinations" => {
                    &mut self.hosts
                }
                "distinct_sources" => &mut self.sources,
                "packets" | "packets_per_window" => &mut self.packets,
                "bytes" => &mut self.bytes,
                _ => continue,
            };
            if f.value.is_finite() && f.value >= 0.0 {
                // Saturating: a count beyond u64 is u64::MAX.
                let v = f.value as u64;
                *slot = Some(slot.map_or(v, |s| s.max(v)));
            }
        }
    }
}

/// The time `ns` nanoseconds after the Unix epoch, UTC (the epoch itself for values `OffsetDateTime` cannot
/// hold, which an `i64` of nanoseconds never reaches).
pub fn time_from_ns(ns: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Formats `t` as RFC 3339 UTC with nine fraction digits, e.g. `2024-02-13T14:34:38.788187000Z`.
pub fn format_rfc3339(t: OffsetDateTime) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");
    t.to_offset(time::UtcOffset::UTC).format(&fmt).unwrap_or_else(|_| "1970-01-01T00:00:00.000000000Z".to_string())
}

/// Formats nanoseconds since the Unix epoch as RFC 3339 UTC with nine fraction digits,
/// e.g. `2024-02-13T14:34:38.788187000Z`.
pub fn format_rfc3339_ns(ns: i64) -> String {
    format_rfc3339(time_from_ns(ns))
}

/// Serde of an [`AnomalyKind`] as its name.
mod kind_name {
    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    use crate::records::AnomalyKind;

    pub fn serialize<S: Serializer>(kind: &AnomalyKind, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(kind)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AnomalyKind, D::Error> {
        let name = std::borrow::Cow::<str>::deserialize(d)?;
        AnomalyKind::ALL
            .iter()
            .copied()
            .find(|k| k.to_string() == name)
            .ok_or_else(|| D::Error::custom(format!("unknown anomaly kind {name:?}")))
    }
}

/// Serde of an alert time: written as RFC 3339 UTC with nine fraction digits ([`format_rfc3339`]: the wire
/// format alerts always had, which `time::serde::rfc3339` would shorten), read as any RFC 3339 time
/// (`time::serde::rfc3339`).
mod rfc3339_ns {
    use serde::{Deserializer, Serializer};
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_rfc3339(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        time::serde::rfc3339::deserialize(d)
    }

    /// The same for an optional time, `""` when absent.
    pub mod option {
        use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};
        use time::OffsetDateTime;
        use time::format_description::well_known::Rfc3339;

        pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&t.map(super::super::format_rfc3339).unwrap_or_default())
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OffsetDateTime>, D::Error> {
            let text = std::borrow::Cow::<str>::deserialize(d)?;
            if text.is_empty() {
                return Ok(None);
            }
            OffsetDateTime::parse(&text, &Rfc3339).map(Some).map_err(D::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        Alert {
            id: "brute_force/10.0.0.1/2024-06-10T06:13:20.000000000Z".into(),
            host: "10.0.0.1".into(),
            kind: AnomalyKind::BruteForce,
            score: 30.0,
            threshold: 10.0,
            first_seen: time_from_ns(1_718_000_000_000_000_000),
            last_seen: time_from_ns(1_718_000_021_500_000_001),
            detected_at: Some(time_from_ns(1_718_000_021_000_000_000)),
            count: 3,
            reason: "r".into(),
            target: None,
            sample: "s".into(),
            features: Vec::new(),
            model_version: "rules-v1".into(),
            revision: 1,
            final_revision: true,
            kinds: Vec::new(),
            totals: Default::default(),
        }
    }

    #[test]
    fn the_wire_format_is_unchanged() {
        let json = serde_json::to_value(alert()).unwrap();
        assert_eq!(json["kind"], "brute_force");
        assert_eq!(json["first_seen"], "2024-06-10T06:13:20.000000000Z");
        assert_eq!(json["last_seen"], "2024-06-10T06:13:41.500000001Z");
        assert_eq!(json["detected_at"], "2024-06-10T06:13:41.000000000Z");
        assert_eq!(serde_json::from_value::<Alert>(json).unwrap(), alert());
        let none = Alert { detected_at: None, ..alert() };
        assert_eq!(serde_json::to_value(&none).unwrap()["detected_at"], "");
    }

    #[test]
    fn totals_keep_the_largest_count_of_each_feature_they_know() {
        let f = |name: &str, value: f64| Contribution { name: name.into(), value, baseline: None };
        let mut t = IncidentTotals::default();
        t.observe(&[f("distinct_dst_ports", 24.0), f("distinct_sources", 572.0), f("syn_fraction", 0.9)]);
        t.observe(&[f("distinct_dst_ports", 12.0), f("distinct_destinations_slow", 64.0), f("packets", f64::NAN)]);
        t.observe(&[f("packets_per_window", -1.0), f("distinct_destinations", 80.0)]);
        let want = IncidentTotals { ports: Some(24), hosts: Some(80), sources: Some(572), ..IncidentTotals::default() };
        assert_eq!(t, want);
        let incident = Alert { revision: 3, ..alert() };
        assert_eq!(incident.delivery_id(), "brute_force/10.0.0.1/2024-06-10T06:13:20.000000000Z#3");
    }

    #[test]
    fn old_alerts_and_other_rfc3339_spellings_are_read() {
        let mut json = serde_json::to_value(alert()).unwrap();
        for field in ["detected_at", "revision", "final", "kinds", "totals"] {
            json.as_object_mut().unwrap().remove(field);
        }
        json["first_seen"] = "2024-06-10T08:13:20+02:00".into();
        let a: Alert = serde_json::from_value(json.clone()).unwrap();
        assert_eq!((a.detected_at, a.first_seen), (None, alert().first_seen));
        // An alert from before incidents: one revision, final, its one kind.
        assert_eq!((a.revision, a.final_revision, a.kind_list()), (1, true, vec![AnomalyKind::BruteForce]));
        assert_eq!(a.totals, IncidentTotals::default());
        json["detected_at"] = "".into();
        assert_eq!(serde_json::from_value::<Alert>(json.clone()).unwrap().detected_at, None);
        for (field, bad) in [("kind", "nope"), ("first_seen", "yesterday"), ("detected_at", "soon")] {
            let mut j = json.clone();
            j[field] = bad.into();
            let e = serde_json::from_value::<Alert>(j).unwrap_err().to_string();
            assert!(!e.is_empty(), "{field}");
        }
        for &kind in AnomalyKind::ALL {
            let mut j = json.clone();
            j["kind"] = kind.to_string().into();
            assert_eq!(serde_json::from_value::<Alert>(j).unwrap().kind, kind);
        }
    }
}
