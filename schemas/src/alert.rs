//! The alert record: what the alerts topic, the webhooks and `--alerts-out` carry, as JSON. Field names are
//! stable (README, "Alert format"); `avro/alert.v1.avsc` describes the same record. In memory the kind is an
//! [`AnomalyKind`] and the times are [`OffsetDateTime`]s; on the wire they are the kind's name and RFC 3339 UTC
//! times with nine fraction digits, as they always were.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::records::{AnomalyKind, Contribution};

/// Repeats of one (host, kind) collapsed over a suppression window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// Deterministic id: host, kind and first_seen.
    pub id: String,
    /// The anomalous address as text.
    pub host: String,
    /// The detector kind; on the wire its name: `rate`, `fanout`, `isolation`, `victim`, `profile`,
    /// `supervised`, `beacon`, `probe`, `brute_force`, `dns_tunnel`, `icmp_tunnel`, `flood` or `exfiltration`.
    #[serde(with = "kind_name")]
    pub kind: AnomalyKind,
    /// Highest score among the collapsed anomalies.
    pub score: f64,
    /// Threshold of the highest-scoring anomaly.
    pub threshold: f64,
    /// Packet time of the first anomaly (RFC 3339 with nanoseconds on the wire).
    #[serde(with = "rfc3339_ns")]
    pub first_seen: OffsetDateTime,
    /// Packet time of the end of the last anomaly (RFC 3339 with nanoseconds on the wire).
    #[serde(with = "rfc3339_ns")]
    pub last_seen: OffsetDateTime,
    /// Packet time at which the earliest of the collapsed anomalies was raised, RFC 3339 with nanoseconds: the
    /// end of its evidence (the packet that crossed a rule's threshold, the last packet of a scored batch, the
    /// end of a closed profile or victim window). Time to detect is measured to it. `None` for alerts written
    /// before it existed (absent or `""` on the wire).
    #[serde(default, with = "rfc3339_ns::option")]
    pub detected_at: Option<OffsetDateTime>,
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
    fn old_alerts_and_other_rfc3339_spellings_are_read() {
        let mut json = serde_json::to_value(alert()).unwrap();
        json.as_object_mut().unwrap().remove("detected_at");
        json["first_seen"] = "2024-06-10T08:13:20+02:00".into();
        let a: Alert = serde_json::from_value(json.clone()).unwrap();
        assert_eq!((a.detected_at, a.first_seen), (None, alert().first_seen));
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
