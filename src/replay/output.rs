//! What `netanom replay` writes and where: anomalies (the detector's output) or, with `--alerts`, the alerts the
//! alert router's suppression ([`suppress`]) makes of them in the replay's order; each as a JSON line (a file
//! or stdout) or as a Kafka record (anomalies in Avro as the detector writes them, alerts as the alerts
//! topic's JSON, key = host); and the diff of the anomalies of two models.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use netanom_schemas::{Alert, Anomaly, AnomalyKind, SchemaIds};
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::topic_range::redacted;

/// Why an output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// Writing a file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The output producer could not be created or flushed.
    #[error("kafka: {what}: {source}")]
    Kafka {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: Box<KafkaError>,
    },
    /// A record was not acknowledged.
    #[error("producing record for {key} to {topic} failed: {source}")]
    Produce {
        /// Topic.
        topic: String,
        /// Record key.
        key: String,
        /// Cause.
        #[source]
        source: Box<KafkaError>,
    },
}

/// One output record on a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Record key (the host).
    pub key: String,
    /// Record value.
    pub payload: Vec<u8>,
    /// Record timestamp, ms since the epoch (`None`: the producer's clock).
    pub timestamp_ms: Option<i64>,
}

/// One anomaly as a JSON line (sorted keys, no trailing newline).
pub fn anomaly_json(a: &Anomaly) -> String {
    let features: Vec<serde_json::Value> = a
        .features
        .iter()
        .map(|c| serde_json::json!({ "name": c.name, "value": c.value, "baseline": c.baseline }))
        .collect();
    let mut m = BTreeMap::new();
    m.insert("id", serde_json::json!(a.id));
    m.insert("host", serde_json::json!(a.host));
    m.insert("kind", serde_json::json!(a.kind.as_str()));
    m.insert("window_start_ns", serde_json::json!(a.window_start_ns));
    m.insert("window_end_ns", serde_json::json!(a.window_end_ns));
    m.insert("score", serde_json::json!(a.score));
    m.insert("threshold", serde_json::json!(a.threshold));
    m.insert("target", serde_json::json!(a.target));
    m.insert("reason", serde_json::json!(a.reason));
    m.insert("features", serde_json::Value::Array(features));
    m.insert("sample", serde_json::json!(a.sample));
    m.insert("model_version", serde_json::json!(a.model_version));
    m.insert("detected_ns", serde_json::json!(a.detected_ns));
    m.insert("window_key", serde_json::json!(a.window_key));
    m.insert("closing", serde_json::json!(a.closing));
    serde_json::to_string(&m).unwrap_or_default()
}

/// An anomaly as a record: Avro (the detector's framing), key = host, timestamp = window end in ms.
pub fn anomaly_record(a: &Anomaly, ids: &SchemaIds) -> OutRecord {
    OutRecord { key: a.host.clone(), payload: a.encode(ids), timestamp_ms: Some(a.window_end_ns / 1_000_000) }
}

/// An alert as a JSON line (the alerts topic's `netanom` JSON, no trailing newline).
pub fn alert_json(a: &Alert) -> String {
    serde_json::to_string(a).unwrap_or_default()
}

/// An alert as a record: its JSON, key = host.
pub fn alert_record(a: &Alert) -> OutRecord {
    OutRecord { key: a.host.clone(), payload: alert_json(a).into_bytes(), timestamp_ms: None }
}

/// Writes one line per item to `out`.
pub fn write_lines<T>(items: &[T], line: impl Fn(&T) -> String, out: &mut impl Write) -> std::io::Result<()> {
    for item in items {
        writeln!(out, "{}", line(item))?;
    }
    out.flush()
}

/// Writes one line per item to the file `path`.
pub fn write_lines_file<T>(items: &[T], line: impl Fn(&T) -> String, path: &Path) -> Result<(), OutputError> {
    let err = |source| OutputError::Write { path: path.to_path_buf(), source };
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).map_err(err)?);
    write_lines(items, line, &mut w).map_err(err)
}

/// Writes the anomalies as JSON lines to `out`.
pub fn write_jsonl(anomalies: &[Anomaly], out: &mut impl Write) -> std::io::Result<()> {
    write_lines(anomalies, anomaly_json, out)
}

/// Writes the anomalies as JSON lines to the file `path`.
pub fn write_jsonl_file(anomalies: &[Anomaly], path: &Path) -> Result<(), OutputError> {
    write_lines_file(anomalies, anomaly_json, path)
}

/// Writes alerts as JSON lines (the alerts topic's `netanom` JSON).
pub fn write_alerts(alerts: &[Alert], out: &mut impl Write) -> std::io::Result<()> {
    write_lines(alerts, alert_json, out)
}

/// Produces one record per item to `topic` (idempotently, 1024 in flight at most) and waits for every
/// acknowledgement.
pub async fn produce<T>(
    items: &[T],
    record: impl Fn(&T) -> OutRecord,
    brokers: &str,
    properties: &BTreeMap<String, String>,
    topic: &str,
) -> Result<(), OutputError> {
    let kafka = |what: String| move |source| OutputError::Kafka { what, source: Box::new(source) };
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers).set("enable.idempotence", "true");
    for (k, v) in properties {
        c.set(k, v);
    }
    let producer: FutureProducer =
        c.create().map_err(redacted).map_err(kafka("creating the replay producer".into()))?;
    for chunk in items.chunks(1024) {
        let records: Vec<OutRecord> = chunk.iter().map(&record).collect();
        let mut pending = Vec::with_capacity(records.len());
        for r in &records {
            let mut fr = FutureRecord::to(topic).key(&r.key).payload(&r.payload);
            if let Some(ts) = r.timestamp_ms {
                fr = fr.timestamp(ts);
            }
            pending.push((r.key.clone(), producer.send(fr, Duration::from_secs(30))));
        }
        for (key, f) in pending {
            f.await.map_err(|(source, _)| OutputError::Produce {
                topic: topic.to_string(),
                key,
                source: Box::new(source),
            })?;
        }
    }
    producer.flush(Duration::from_secs(30)).map_err(kafka(format!("flushing {topic}")))
}

/// The alerts the alert router would send for `anomalies` (in this order) under `config` and `incidents`, its
/// tables held to the shares of `budget_mib` (`alert_router.memory_budget_mib`):
/// repeats of one (host, kind) collapse per suppression window of packet time, and a host's groups form one
/// incident until it is quiet for the incident window. Wall time plays no part (one instant for the whole
/// replay: no `flush_after`, no `hold`), so each incident is one closing revision and the result is
/// deterministic; the alerts still open at the end are emitted in (first seen, host, kind) order.
pub fn suppress(
    anomalies: &[Anomaly],
    config: &netanom_alert_router::SuppressionConfig,
    incidents: &netanom_alert_router::IncidentConfig,
    budget_mib: u64,
) -> Vec<Alert> {
    use netanom_alert_router::incident::Incidents;
    use netanom_alert_router::suppress::{Origin, Suppressor};
    let shares = netanom_alert_router::budget::Shares::of(budget_mib);
    let mut s = Suppressor::new(config.clone(), shares.suppression);
    let mut open = Incidents::new(incidents.clone(), shares.incidents);
    let now = tokio::time::Instant::now();
    let mut out = Vec::new();
    for (i, a) in anomalies.iter().enumerate() {
        let origin = Origin { partition: 0, offset: i as i64 };
        for group in s.offer(a.clone(), origin, now) {
            out.extend(open.absorb(group, now).into_iter().map(|e| e.alert));
        }
        out.extend(open.close_quiet(s.watermark_ns(), |h| s.open_until(h)).into_iter().map(|e| e.alert));
    }
    let mut rest: Vec<_> = Vec::new();
    for group in s.drain() {
        rest.extend(open.absorb(group, now).into_iter().map(|e| e.alert));
    }
    rest.extend(open.drain().into_iter().map(|e| e.alert));
    rest.sort_by(|a, b| (&a.first_seen, &a.host, &a.kind, &a.id).cmp(&(&b.first_seen, &b.host, &b.kind, &b.id)));
    out.extend(rest);
    out
}

/// What identifies an anomaly across two replays: host, kind, window start (ns).
pub type AnomalyKey = (String, AnomalyKind, i64);

/// Anomalies one model found and the other did not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Found with the other model only, sorted.
    pub gained: Vec<AnomalyKey>,
    /// Found with the base model only, sorted.
    pub lost: Vec<AnomalyKey>,
}

/// Compares the anomalies of the base run with those of the other run by (host, kind, window start).
pub fn diff(base: &[Anomaly], other: &[Anomaly]) -> Diff {
    let key = |a: &Anomaly| (a.host.clone(), a.kind, a.window_start_ns);
    let b: BTreeSet<AnomalyKey> = base.iter().map(key).collect();
    let o: BTreeSet<AnomalyKey> = other.iter().map(key).collect();
    Diff { gained: o.difference(&b).cloned().collect(), lost: b.difference(&o).cloned().collect() }
}

impl Diff {
    /// One JSON line per difference: `{"change":"gained"|"lost","host":…,"kind":…,"window_start_ns":…}`.
    pub fn to_jsonl(&self) -> String {
        let mut s = String::new();
        for (change, keys) in [("gained", &self.gained), ("lost", &self.lost)] {
            for (host, kind, start) in keys {
                let line = serde_json::json!({
                    "change": change, "host": host, "kind": kind.as_str(), "window_start_ns": start
                });
                s.push_str(&line.to_string());
                s.push('\n');
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anomaly(host: &str, kind: AnomalyKind, start_s: i64) -> Anomaly {
        Anomaly {
            id: format!("{host}-{}-{start_s}", kind.as_str()),
            host: host.into(),
            kind,
            window_start_ns: start_s * 1_000_000_000,
            window_end_ns: (start_s + 1) * 1_000_000_000,
            score: 3.0,
            threshold: 1.0,
            target: None,
            reason: "r".into(),
            features: Vec::new(),
            sample: String::new(),
            model_version: "m".into(),
            detected_ns: None,
            window_key: None,
            closing: false,
        }
    }

    #[test]
    fn the_diff_names_gained_and_lost_anomalies_by_host_kind_and_window() {
        let base = [anomaly("b", AnomalyKind::Rate, 1), anomaly("a", AnomalyKind::Rate, 1)];
        let other = [
            anomaly("a", AnomalyKind::Rate, 1),
            anomaly("a", AnomalyKind::Fanout, 1),
            Anomaly { score: 9.0, ..anomaly("c", AnomalyKind::Rate, 2) },
        ];
        let d = diff(&base, &other);
        assert_eq!(
            d.gained,
            vec![("a".into(), AnomalyKind::Fanout, 1_000_000_000), ("c".into(), AnomalyKind::Rate, 2_000_000_000)]
        );
        assert_eq!(d.lost, vec![("b".into(), AnomalyKind::Rate, 1_000_000_000)]);
        let lines: Vec<serde_json::Value> = d.to_jsonl().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["change"], "gained");
        assert_eq!(
            lines[2],
            serde_json::json!({"change": "lost", "host": "b", "kind": "rate", "window_start_ns": 1_000_000_000})
        );
        assert_eq!(diff(&base, &base), Diff::default());
    }

    #[test]
    fn an_anomaly_line_has_sorted_keys_and_its_record_is_keyed_by_host_at_the_window_end() {
        let a = anomaly("10.0.0.1", AnomalyKind::Victim, 5);
        let line = anomaly_json(&a);
        let keys: Vec<String> = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&line)
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert!(line.starts_with("{\"closing\":false,\"detected_ns\":null,\"features\":[]"), "{line}");
        let r = anomaly_record(&a, &SchemaIds::BUILT_IN);
        assert_eq!((r.key.as_str(), r.timestamp_ms), ("10.0.0.1", Some(6_000)));
        assert_eq!(Anomaly::decode(&r.payload, &SchemaIds::BUILT_IN).unwrap(), a);
    }

    #[test]
    fn suppression_collapses_repeats_and_writes_the_rest_in_first_seen_order() {
        let config = netanom_alert_router::SuppressionConfig::default();
        let anomalies = [
            anomaly("b", AnomalyKind::Rate, 10),
            anomaly("a", AnomalyKind::Rate, 10),
            anomaly("b", AnomalyKind::Rate, 11),
            anomaly("a", AnomalyKind::Fanout, 5),
        ];
        let off = netanom_alert_router::IncidentConfig { enabled: false, ..Default::default() };
        let alerts = suppress(&anomalies, &config, &off, netanom_alert_router::budget::DEFAULT_BUDGET_MIB);
        let got: Vec<(&str, &str, u64)> = alerts.iter().map(|a| (a.host.as_str(), a.kind.as_str(), a.count)).collect();
        assert_eq!(got, vec![("a", "fanout", 1), ("a", "rate", 1), ("b", "rate", 2)]);
        let mut out = Vec::new();
        write_alerts(&alerts, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert_eq!(alert_record(&alerts[0]).payload, text.lines().next().unwrap().as_bytes());
        assert_eq!(
            suppress(&anomalies, &config, &off, netanom_alert_router::budget::DEFAULT_BUDGET_MIB),
            alerts,
            "deterministic"
        );
        // With incidents: one per host, each one closing revision listing its kinds.
        let incidents =
            suppress(&anomalies, &config, &Default::default(), netanom_alert_router::budget::DEFAULT_BUDGET_MIB);
        let got: Vec<(&str, Vec<AnomalyKind>, u64, bool)> =
            incidents.iter().map(|a| (a.host.as_str(), a.kind_list(), a.count, a.final_revision)).collect();
        let want =
            vec![("a", vec![AnomalyKind::Fanout, AnomalyKind::Rate], 2, true), ("b", vec![AnomalyKind::Rate], 2, true)];
        assert_eq!(got, want);
    }
}
