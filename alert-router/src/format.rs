//! Alert rendering for SIEMs: turns one [`Alert`] into the JSON document an output asked for — netanom's own
//! alert JSON (the wire contract of the alerts topic), an Elastic Common Schema (ECS 8.x) document, or an OCSF
//! Detection Finding (class 2004) event — and owns the shared severity scale ([`Severity`], [`normalized_risk`])
//! that the syslog/CEF output uses too. Pure: no I/O and no clock; the processing time (ECS `event.created`, OCSF
//! `metadata.processed_time`) is an argument.
//!
//! Severity: `r = score / threshold` (an anomaly fires at `r >= 1`); the normalized risk is `100·r/(r+1)`
//! (50 at the threshold, 67 at twice it, 80 at four times, 91 at ten times), and the severity is low below the
//! threshold, medium below 2×, high below 4×, critical from 4× on.
//!
//! ECS mapping (checked against the ECS 8.x field reference by the tests): `@timestamp` = `event.start` =
//! `first_seen` (packet time), `event.created` (processing time: when the router rendered the alert),
//! `event.end` = `last_seen`, `event.kind` `alert`, `event.category` `[network,
//! intrusion_detection]`, `event.type` `[info]`, `event.severity` (CEF scale 0–10), `event.risk_score` (the
//! detector's raw score: ECS says "use your system's original value here"), `event.risk_score_norm` (0–100, above),
//! `event.reason` and `message` (the reason), `event.id`, `event.dataset` `netanom.alert`, `source.ip` (the host
//! for attacker kinds) or `destination.ip` (the host for `victim`; the target for attacker kinds that have one),
//! `related.ip`, `rule.{name (kind), ruleset "netanom", version (model)}`, `observer.{vendor, product, version,
//! type}`, `ecs.version`; `event.id` names the revision (`id#revision`). ECS has no field for the repeat count,
//! the threshold, the sample, the features or the incident (`incident_id`, `revision`, `final`, `kinds`,
//! `totals`): they are under `netanom.*`.
//!
//! OCSF mapping (OCSF [`OCSF_VERSION`], valid against 1.1 and later): `class_uid` 2004, `category_uid` 2,
//! `activity_id` 1 (Create) for an incident's first revision, 2 (Update) for later ones, 3 (Close) for a later
//! closing one, `type_uid` 200400 + `activity_id`, `time` = `start_time` = first_seen (epoch ms), `end_time`,
//! `severity_id`, `status_id` 1 (New), `confidence_id` (Low/Medium/High as the severity is low/medium/high or
//! above), `timezone_offset` 0 (times are UTC),
//! `message`, `count`, `risk_score` (0–100), `metadata {version, product, uid, processed_time}`,
//! `finding_info {uid, title, desc, first_seen_time, last_seen_time, types [kind], analytic {uid, name (kind),
//! type_id, type, version (model)}}` (analytic type Rule for the threshold detectors, Statistical for `beacon`,
//! Learning for the forests and profiles), `evidences [{ src_endpoint, dst_endpoint }]` (an `ip` when the address
//! parses, a `name` otherwise), `observables` (one per address: type IP Address or Hostname, named by the evidence
//! attribute that holds it) and `unmapped` for the score, threshold, sample, features, model version and the
//! incident's revision, final flag, kinds and totals. `finding_info.uid` is the incident id (the same in every
//! revision), `metadata.uid` the revision (`id#revision`).
//!
//! Every output names its format: [`AlertFormat::schema_version`] is the version of the document's schema, which
//! the alerts topic carries in its record headers ([`netanom_schemas::topics::FORMAT_HEADER`]).

use std::net::IpAddr;

use netanom_schemas::{Alert, Analytic, AnomalyKind, format_rfc3339};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// ECS version the ECS documents declare in `ecs.version`.
pub const ECS_VERSION: &str = "8.11.0";
/// OCSF schema version the OCSF events declare in `metadata.version`.
pub const OCSF_VERSION: &str = "1.3.0";
/// Vendor and product name in ECS `observer.*`, OCSF `metadata.product` and the CEF header.
pub const PRODUCT: &str = "netanom";
/// Version of this router, in every SIEM format.
pub const PRODUCT_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Version of netanom's own alert JSON: the `v1` of `avro/alert.v1.avsc`, which describes the same record.
pub const ALERT_SCHEMA_VERSION: &str = "1";

/// The document an output writes for each alert. Serialized lower-case (`netanom`, `ecs`, `ocsf`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertFormat {
    /// netanom's own alert JSON ([`Alert`]), the alerts-topic contract. The default.
    #[default]
    Netanom,
    /// Elastic Common Schema 8.x document.
    Ecs,
    /// OCSF Detection Finding (class_uid 2004) event.
    Ocsf,
}

impl AlertFormat {
    /// Every format, in declaration order.
    pub const ALL: [AlertFormat; 3] = [AlertFormat::Netanom, AlertFormat::Ecs, AlertFormat::Ocsf];

    /// Version of the schema the documents of this format follow: [`ALERT_SCHEMA_VERSION`], [`ECS_VERSION`] or
    /// [`OCSF_VERSION`].
    pub fn schema_version(self) -> &'static str {
        match self {
            AlertFormat::Netanom => ALERT_SCHEMA_VERSION,
            AlertFormat::Ecs => ECS_VERSION,
            AlertFormat::Ocsf => OCSF_VERSION,
        }
    }

    fn index(self) -> usize {
        match self {
            AlertFormat::Netanom => 0,
            AlertFormat::Ecs => 1,
            AlertFormat::Ocsf => 2,
        }
    }
}

impl std::fmt::Display for AlertFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AlertFormat::Netanom => "netanom",
            AlertFormat::Ecs => "ecs",
            AlertFormat::Ocsf => "ocsf",
        })
    }
}

/// Severity of an alert, from its score relative to its threshold (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Below the threshold (`r < 1`).
    Low,
    /// Up to twice the threshold.
    Medium,
    /// Up to four times the threshold.
    High,
    /// Four times the threshold or more.
    Critical,
}

impl Severity {
    /// The severity of `alert`.
    pub fn of(alert: &Alert) -> Self {
        let r = ratio(alert);
        if r < 1.0 {
            Severity::Low
        } else if r < 2.0 {
            Severity::Medium
        } else if r < 4.0 {
            Severity::High
        } else {
            Severity::Critical
        }
    }

    /// OCSF `severity_id`: 2 Low, 3 Medium, 4 High, 5 Critical.
    pub fn ocsf_id(self) -> u8 {
        match self {
            Severity::Low => 2,
            Severity::Medium => 3,
            Severity::High => 4,
            Severity::Critical => 5,
        }
    }

    /// CEF header severity (0–10) and ECS `event.severity`: 3, 5, 8, 10.
    pub fn cef(self) -> u8 {
        match self {
            Severity::Low => 3,
            Severity::Medium => 5,
            Severity::High => 8,
            Severity::Critical => 10,
        }
    }

    /// Syslog severity (RFC 5424 §6.2.1): notice (5), warning (4), error (3), critical (2).
    pub fn syslog(self) -> u8 {
        match self {
            Severity::Low => 5,
            Severity::Medium => 4,
            Severity::High => 3,
            Severity::Critical => 2,
        }
    }

    /// OCSF `confidence_id`: 1 Low, 2 Medium, 3 High (high and critical alerts are far above their threshold).
    pub fn ocsf_confidence_id(self) -> u8 {
        match self {
            Severity::Low => 1,
            Severity::Medium => 2,
            Severity::High | Severity::Critical => 3,
        }
    }

    /// Caption, as OCSF spells it (`Low`, `Medium`, `High`, `Critical`).
    pub fn caption(self) -> &'static str {
        match self {
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
            Severity::Critical => "Critical",
        }
    }
}

/// `score / threshold`, >= 0; 1 (at the threshold) when the ratio is undefined.
fn ratio(alert: &Alert) -> f64 {
    let r = alert.score / alert.threshold;
    if alert.threshold > 0.0 && r.is_finite() { r.max(0.0) } else { 1.0 }
}

/// Risk on a 0–100 scale: `100·r/(r+1)` with `r = score / threshold`, rounded.
pub fn normalized_risk(alert: &Alert) -> u8 {
    let r = ratio(alert);
    // r >= 0, so the value is within 0..=100.
    (100.0 * r / (r + 1.0)).round().clamp(0.0, 100.0) as u8
}

/// True for the kind whose host is the attacked address rather than the attacker.
pub fn host_is_victim(alert: &Alert) -> bool {
    alert.kind == AnomalyKind::Victim
}

/// Source and destination addresses of an alert: the host is the destination for `victim`, the source
/// otherwise; the target (when known and different from the host) is the destination of attacker kinds.
pub fn endpoints(alert: &Alert) -> (Option<&str>, Option<&str>) {
    if host_is_victim(alert) {
        (None, Some(alert.host.as_str()))
    } else {
        (Some(alert.host.as_str()), alert.target.as_deref().filter(|t| *t != alert.host))
    }
}

/// Renders `alert` as a JSON document in `format`; `processed` is the processing time (ECS `event.created`,
/// OCSF `metadata.processed_time`; the netanom format does not carry it).
pub fn render(alert: &Alert, format: AlertFormat, processed: time::OffsetDateTime) -> Value {
    match format {
        // An Alert holds strings, numbers and vectors only, so it always serializes.
        AlertFormat::Netanom => serde_json::to_value(alert).unwrap_or(Value::Null),
        AlertFormat::Ecs => ecs(alert, processed),
        AlertFormat::Ocsf => ocsf(alert, processed),
    }
}

/// Renders `alert` as JSON text in `format` (see [`render`]). `Netanom` is byte-for-byte
/// `serde_json::to_string(alert)`, the alerts-topic contract (field order of [`Alert`]).
pub fn render_string(
    alert: &Alert,
    format: AlertFormat,
    processed: time::OffsetDateTime,
) -> Result<String, serde_json::Error> {
    match format {
        AlertFormat::Netanom => serde_json::to_string(alert),
        other => serde_json::to_string(&render(alert, other, processed)),
    }
}

/// An alert rendered in the formats some output needs, each rendered once.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    texts: [Option<String>; 3],
}

impl Rendered {
    /// Renders `alert` in each of `formats` (duplicates are rendered once), processed at `processed`. `Netanom`
    /// is always rendered: the dead-letter topic carries it.
    pub fn new(
        alert: &Alert,
        formats: impl IntoIterator<Item = AlertFormat>,
        processed: time::OffsetDateTime,
    ) -> Result<Self, serde_json::Error> {
        let mut rendered = Self::default();
        for f in std::iter::once(AlertFormat::Netanom).chain(formats) {
            if rendered.texts[f.index()].is_none() {
                rendered.texts[f.index()] = Some(render_string(alert, f, processed)?);
            }
        }
        Ok(rendered)
    }

    /// The text in `format`; empty if `format` was not asked for in [`Rendered::new`].
    pub fn get(&self, format: AlertFormat) -> &str {
        self.texts[format.index()].as_deref().unwrap_or_default()
    }
}

/// Inserts `value` at the dotted `path` of `doc`, creating objects on the way.
fn put(doc: &mut Map<String, Value>, path: &str, value: Value) {
    let mut parts = path.split('.').peekable();
    let mut node = doc;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            node.insert(part.to_string(), value);
            return;
        }
        let child = node.entry(part.to_string()).or_insert_with(|| Value::Object(Map::new()));
        if !child.is_object() {
            *child = Value::Object(Map::new());
        }
        let Value::Object(next) = child else { return };
        node = next;
    }
}

fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

fn features(alert: &Alert) -> Value {
    serde_json::to_value(&alert.features).unwrap_or(Value::Array(Vec::new()))
}

/// Milliseconds since the Unix epoch of `t`, saturated.
pub fn epoch_ms(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).unwrap_or(i64::MAX)
}

/// The Elastic Common Schema document of `alert`.
fn ecs(alert: &Alert, processed: time::OffsetDateTime) -> Value {
    let severity = Severity::of(alert);
    let mut doc = Map::new();
    put(&mut doc, "@timestamp", json!(format_rfc3339(alert.first_seen)));
    put(&mut doc, "message", json!(alert.reason));
    put(&mut doc, "ecs.version", json!(ECS_VERSION));
    put(&mut doc, "event.kind", json!("alert"));
    put(&mut doc, "event.category", json!(["network", "intrusion_detection"]));
    put(&mut doc, "event.type", json!(["info"]));
    put(&mut doc, "event.created", json!(format_rfc3339(processed)));
    put(&mut doc, "event.start", json!(format_rfc3339(alert.first_seen)));
    put(&mut doc, "event.end", json!(format_rfc3339(alert.last_seen)));
    if let Ok(duration) = i64::try_from((alert.last_seen - alert.first_seen).whole_nanoseconds()) {
        put(&mut doc, "event.duration", json!(duration.max(0)));
    }
    put(&mut doc, "event.severity", json!(severity.cef()));
    put(&mut doc, "event.risk_score", json!(alert.score));
    put(&mut doc, "event.risk_score_norm", json!(f64::from(normalized_risk(alert))));
    put(&mut doc, "event.reason", json!(alert.reason));
    put(&mut doc, "event.id", json!(alert.delivery_id()));
    put(&mut doc, "event.dataset", json!("netanom.alert"));
    put(&mut doc, "event.provider", json!(PRODUCT));
    let (src, dst) = endpoints(alert);
    let mut related = Vec::new();
    for (field, addr) in [("source", src), ("destination", dst)] {
        if let Some(addr) = addr {
            if is_ip(addr) {
                put(&mut doc, &format!("{field}.ip"), json!(addr));
                related.push(addr);
            } else {
                put(&mut doc, &format!("{field}.address"), json!(addr));
            }
        }
    }
    if !related.is_empty() {
        put(&mut doc, "related.ip", json!(related));
    }
    put(&mut doc, "rule.name", json!(alert.kind.to_string()));
    put(&mut doc, "rule.ruleset", json!(PRODUCT));
    put(&mut doc, "rule.version", json!(alert.model_version));
    put(&mut doc, "rule.category", json!("network anomaly"));
    put(&mut doc, "observer.vendor", json!(PRODUCT));
    put(&mut doc, "observer.product", json!(PRODUCT));
    put(&mut doc, "observer.version", json!(PRODUCT_VERSION));
    put(&mut doc, "observer.type", json!("ids"));
    put(&mut doc, "netanom.host", json!(alert.host));
    put(&mut doc, "netanom.kind", json!(alert.kind.to_string()));
    if let Some(target) = &alert.target {
        put(&mut doc, "netanom.target", json!(target));
    }
    put(&mut doc, "netanom.count", json!(alert.count));
    put(&mut doc, "netanom.score", json!(alert.score));
    put(&mut doc, "netanom.threshold", json!(alert.threshold));
    put(&mut doc, "netanom.severity", json!(severity.caption().to_ascii_lowercase()));
    put(&mut doc, "netanom.sample", json!(alert.sample));
    put(&mut doc, "netanom.features", features(alert));
    put(&mut doc, "netanom.model_version", json!(alert.model_version));
    put(&mut doc, "netanom.incident_id", json!(alert.id));
    put(&mut doc, "netanom.revision", json!(alert.revision));
    put(&mut doc, "netanom.final", json!(alert.final_revision));
    put(&mut doc, "netanom.kinds", json!(alert.kinds));
    put(&mut doc, "netanom.totals", json!(alert.totals));
    Value::Object(doc)
}

/// An OCSF `network_endpoint`: `ip` when `addr` is an address, `name` otherwise.
fn ocsf_endpoint(addr: &str) -> Value {
    if is_ip(addr) { json!({ "ip": addr }) } else { json!({ "name": addr }) }
}

/// OCSF analytic `type_id` and `type` of a detector kind: Rule for the threshold detectors, Statistical for the
/// periodicity test of `beacon`, Learning (ML/DL) for the isolation forest, the k-means profiles and the
/// supervised forest.
fn ocsf_analytic_type(kind: AnomalyKind) -> (u8, &'static str) {
    match kind.analytic() {
        Analytic::Learning => (4, "Learning (ML/DL)"),
        Analytic::Statistical => (3, "Statistical"),
        Analytic::Rule => (1, "Rule"),
    }
}

/// The OCSF Detection Finding event of `alert`.
fn ocsf(alert: &Alert, processed: time::OffsetDateTime) -> Value {
    let severity = Severity::of(alert);
    let first = epoch_ms(alert.first_seen);
    let last = epoch_ms(alert.last_seen);
    let processed_ms = epoch_ms(processed);
    let kind = alert.kind.to_string();
    let mut doc = Map::new();
    put(&mut doc, "class_uid", json!(2004));
    put(&mut doc, "class_name", json!("Detection Finding"));
    put(&mut doc, "category_uid", json!(2));
    put(&mut doc, "category_name", json!("Findings"));
    let (activity_id, activity) = activity(alert);
    put(&mut doc, "activity_id", json!(activity_id));
    put(&mut doc, "activity_name", json!(activity));
    put(&mut doc, "type_uid", json!(200_400 + u32::from(activity_id)));
    put(&mut doc, "type_name", json!("Detection Finding: Create"));
    put(&mut doc, "time", json!(first));
    put(&mut doc, "start_time", json!(first));
    put(&mut doc, "end_time", json!(last));
    put(&mut doc, "severity_id", json!(severity.ocsf_id()));
    put(&mut doc, "severity", json!(severity.caption()));
    put(&mut doc, "status_id", json!(1));
    put(&mut doc, "status", json!("New"));
    put(&mut doc, "confidence_id", json!(severity.ocsf_confidence_id()));
    put(&mut doc, "confidence", json!(severity.caption()));
    put(&mut doc, "timezone_offset", json!(0));
    put(&mut doc, "message", json!(alert.reason));
    put(&mut doc, "count", json!(alert.count));
    put(&mut doc, "risk_score", json!(normalized_risk(alert)));
    put(&mut doc, "metadata.version", json!(OCSF_VERSION));
    put(&mut doc, "metadata.uid", json!(alert.delivery_id()));
    put(&mut doc, "metadata.product", json!({ "name": PRODUCT, "vendor_name": PRODUCT, "version": PRODUCT_VERSION }));
    put(&mut doc, "metadata.processed_time", json!(processed_ms));
    let mut info = Map::new();
    put(&mut info, "uid", json!(alert.id));
    put(&mut info, "title", json!(format!("netanom {} anomaly: {}", alert.kind, alert.host)));
    put(&mut info, "desc", json!(alert.reason));
    put(&mut info, "types", json!([kind]));
    let (type_id, type_name) = ocsf_analytic_type(alert.kind);
    put(
        &mut info,
        "analytic",
        json!({
            "uid": kind,
            "name": kind,
            "type_id": type_id,
            "type": type_name,
            "version": alert.model_version,
        }),
    );
    put(&mut info, "first_seen_time", json!(first));
    put(&mut info, "last_seen_time", json!(last));
    put(&mut doc, "finding_info", Value::Object(info));
    let (src, dst) = endpoints(alert);
    let mut evidence = Map::new();
    let mut observables = Vec::new();
    for (attribute, addr) in [("src_endpoint", src), ("dst_endpoint", dst)] {
        if let Some(addr) = addr {
            evidence.insert(attribute.into(), ocsf_endpoint(addr));
            let (field, type_id, type_name) =
                if is_ip(addr) { ("ip", 2, "IP Address") } else { ("name", 1, "Hostname") };
            observables.push(json!({
                "name": format!("evidences.{attribute}.{field}"),
                "type_id": type_id,
                "type": type_name,
                "value": addr,
            }));
        }
    }
    if !evidence.is_empty() {
        put(&mut doc, "evidences", json!([evidence]));
        put(&mut doc, "observables", Value::Array(observables));
    }
    put(
        &mut doc,
        "unmapped",
        json!({
            "host": alert.host,
            "kind": kind,
            "target": alert.target,
            "score": alert.score,
            "threshold": alert.threshold,
            "sample": alert.sample,
            "features": features(alert),
            "model_version": alert.model_version,
            "revision": alert.revision,
            "final": alert.final_revision,
            "kinds": alert.kinds,
            "totals": alert.totals,
        }),
    );
    Value::Object(doc)
}

/// OCSF activity of an incident's revision: Create (1) for the first, Close (3) for a later closing one, Update
/// (2) otherwise.
fn activity(alert: &Alert) -> (u8, &'static str) {
    match (alert.revision, alert.final_revision) {
        (..=1, _) => (1, "Create"),
        (_, true) => (3, "Close"),
        (_, false) => (2, "Update"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netanom_schemas::Contribution;

    /// Processing time of the rendered documents: a minute after the alerts' last packet.
    pub(crate) const PROCESSED: time::OffsetDateTime = time::macros::datetime!(2024-06-10 06:14:41.25 UTC);

    /// The ECS 8.x fields the ECS document may use, with their ECS data type. Transcribed from the ECS field
    /// reference (<https://www.elastic.co/guide/en/ecs/8.11/ecs-field-reference.html>, the same data as
    /// `generated/ecs/ecs_flat.yml` of elastic/ecs 8.11): base `@timestamp` date, `message` match_only_text;
    /// ecs, event, source, destination, related, rule and observer field sets. No PyPI package ships the field
    /// reference (`ecs-logging` is a log formatter), hence this list.
    const ECS_FIELDS: &[(&str, &str)] = &[
        ("@timestamp", "date"),
        ("message", "match_only_text"),
        ("ecs.version", "keyword"),
        ("event.kind", "keyword"),
        ("event.category", "keyword"),
        ("event.type", "keyword"),
        ("event.created", "date"),
        ("event.start", "date"),
        ("event.end", "date"),
        ("event.duration", "long"),
        ("event.severity", "long"),
        ("event.risk_score", "float"),
        ("event.risk_score_norm", "float"),
        ("event.reason", "keyword"),
        ("event.id", "keyword"),
        ("event.dataset", "keyword"),
        ("event.provider", "keyword"),
        ("source.ip", "ip"),
        ("source.address", "keyword"),
        ("destination.ip", "ip"),
        ("destination.address", "keyword"),
        ("related.ip", "ip"),
        ("rule.name", "keyword"),
        ("rule.ruleset", "keyword"),
        ("rule.version", "keyword"),
        ("rule.category", "keyword"),
        ("observer.vendor", "keyword"),
        ("observer.product", "keyword"),
        ("observer.version", "keyword"),
        ("observer.type", "keyword"),
    ];

    /// ECS allowed values of the categorization fields (ECS categorization reference).
    const ECS_KINDS: &[&str] =
        &["alert", "asset", "enrichment", "event", "metric", "state", "pipeline_error", "signal"];
    const ECS_CATEGORIES_USED: &[&str] = &["network", "intrusion_detection"];
    const ECS_TYPES_FOR_THEM: &[&str] = &[
        "access",
        "allowed",
        "connection",
        "denied",
        "end",
        "info",
        "protocol",
        "start", // network
    ];

    pub(crate) fn alert(kind: &str, host: &str, target: Option<&str>, score: f64, threshold: f64) -> Alert {
        let kind = *AnomalyKind::ALL.iter().find(|k| k.to_string() == kind).unwrap();
        Alert {
            id: format!("{kind}/{host}/1718000000000000000"),
            host: host.into(),
            kind,
            score,
            threshold,
            first_seen: time::macros::datetime!(2024-06-10 06:13:20 UTC),
            last_seen: time::macros::datetime!(2024-06-10 06:13:41.5 UTC),
            detected_at: Some(time::macros::datetime!(2024-06-10 06:13:41.5 UTC)),
            count: 3,
            reason: "rate 30 pps = 3x | baseline\nnext line".into(),
            target: target.map(Into::into),
            sample: format!("{host}:4242 > 10.9.9.9:80 TCP [S] len 60"),
            features: vec![Contribution { name: "pps".into(), value: 30.0, baseline: Some(1.0) }],
            model_version: "rules-v1".into(),
            revision: 1,
            final_revision: true,
            kinds: Vec::new(),
            totals: Default::default(),
        }
    }

    /// Every (dotted path, leaf value) of `v`; arrays of scalars are one leaf, arrays of objects are descended.
    fn leaves(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    leaves(&path, v, out);
                }
            }
            Value::Array(items) if items.iter().any(Value::is_object) => {
                for item in items {
                    leaves(prefix, item, out);
                }
            }
            other => out.push((prefix.to_string(), other.clone())),
        }
    }

    fn ecs_type_accepts(ty: &str, v: &Value) -> bool {
        match ty {
            "keyword" | "match_only_text" => v.is_string(),
            "ip" => v.as_str().is_some_and(is_ip),
            "date" => v.as_str().is_some_and(|s| {
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
            }),
            "long" => v.is_i64() || v.is_u64(),
            "float" => v.is_number(),
            _ => false,
        }
    }

    #[test]
    fn every_ecs_leaf_is_an_ecs_field_of_the_right_type() {
        let cases = [
            alert("rate", "10.0.0.1", None, 30.0, 10.0),
            alert("fanout", "2001:db8::1", Some("10.9.9.9"), 50.0, 10.0),
            alert("victim", "10.0.0.9", Some("10.0.0.9"), 900.0, 100.0),
            alert("isolation", "not-an-ip", Some("also-not"), 0.7, 0.6),
        ];
        for a in &cases {
            let doc = render(a, AlertFormat::Ecs, PROCESSED);
            let mut all = Vec::new();
            leaves("", &doc, &mut all);
            let mut checked = 0;
            for (path, value) in &all {
                if path.starts_with("netanom.") || path.starts_with("labels.") {
                    continue;
                }
                let ty = ECS_FIELDS
                    .iter()
                    .find(|(name, _)| name == path)
                    .map(|(_, ty)| *ty)
                    .unwrap_or_else(|| panic!("{path} is not in the ECS field list ({})", a.kind));
                let values: Vec<&Value> = match value {
                    Value::Array(items) => items.iter().collect(),
                    v => vec![v],
                };
                assert!(!values.is_empty(), "{path} is an empty array");
                for v in values {
                    assert!(ecs_type_accepts(ty, v), "{path} = {v} is not an ECS {ty}");
                }
                checked += 1;
            }
            assert!(checked >= 20, "only {checked} ECS fields in {doc:#}");
            assert!(ECS_KINDS.contains(&doc["event"]["kind"].as_str().unwrap()));
            for c in doc["event"]["category"].as_array().unwrap() {
                assert!(ECS_CATEGORIES_USED.contains(&c.as_str().unwrap()));
            }
            for t in doc["event"]["type"].as_array().unwrap() {
                assert!(ECS_TYPES_FOR_THEM.contains(&t.as_str().unwrap()));
            }
        }
    }

    #[test]
    fn ecs_maps_attackers_to_source_and_victims_to_destination() {
        let rate = render(&alert("rate", "10.0.0.1", Some("10.9.9.9"), 30.0, 10.0), AlertFormat::Ecs, PROCESSED);
        assert_eq!(rate["source"]["ip"], "10.0.0.1");
        assert_eq!(rate["destination"]["ip"], "10.9.9.9");
        assert_eq!(rate["related"]["ip"], json!(["10.0.0.1", "10.9.9.9"]));
        assert_eq!(rate["@timestamp"], "2024-06-10T06:13:20.000000000Z", "packet time");
        assert_eq!(rate["event"]["created"], "2024-06-10T06:14:41.250000000Z", "processing time");
        assert_eq!(rate["event"]["end"], "2024-06-10T06:13:41.500000000Z");
        assert_eq!(rate["event"]["duration"], 21_500_000_000_i64);
        assert_eq!(rate["event"]["severity"], 8, "3x the threshold is high");
        assert_eq!(rate["event"]["risk_score"], 30.0);
        assert_eq!(rate["event"]["risk_score_norm"], 75.0);
        assert_eq!(rate["rule"]["name"], "rate");
        assert_eq!(rate["rule"]["ruleset"], "netanom");
        assert_eq!(rate["message"], rate["event"]["reason"]);
        assert_eq!(rate["netanom"]["count"], 3);
        let victim = render(&alert("victim", "10.0.0.9", Some("10.0.0.9"), 900.0, 100.0), AlertFormat::Ecs, PROCESSED);
        assert_eq!(victim["destination"]["ip"], "10.0.0.9");
        assert!(victim.get("source").is_none(), "{victim:#}");
        assert_eq!(victim["event"]["severity"], 10);
    }

    #[test]
    fn ocsf_detection_finding_carries_the_required_attributes() {
        let a = alert("victim", "10.0.0.9", Some("10.0.0.9"), 150.0, 100.0);
        let e = render(&a, AlertFormat::Ocsf, PROCESSED);
        assert_eq!((e["class_uid"].as_i64(), e["category_uid"].as_i64()), (Some(2004), Some(2)));
        assert_eq!((e["activity_id"].as_i64(), e["type_uid"].as_i64()), (Some(1), Some(200_401)));
        assert_eq!(e["time"], 1_718_000_000_000_i64);
        assert_eq!(e["end_time"], 1_718_000_021_500_i64);
        assert_eq!(e["finding_info"]["first_seen_time"], 1_718_000_000_000_i64);
        assert_eq!(e["finding_info"]["last_seen_time"], 1_718_000_021_500_i64);
        assert_eq!(e["finding_info"]["uid"], a.id);
        assert_eq!(e["finding_info"]["types"], json!(["victim"]));
        assert_eq!(e["severity_id"], 3, "1.5x the threshold is medium");
        assert_eq!(e["risk_score"], 60);
        assert_eq!(e["evidences"], json!([{ "dst_endpoint": { "ip": "10.0.0.9" } }]));
        assert_eq!(e["metadata"]["version"], OCSF_VERSION);
        assert_eq!(e["metadata"]["product"]["vendor_name"], "netanom");
        assert_eq!(e["count"], 3);
        assert_eq!(e["unmapped"]["threshold"], 100.0);
        assert_eq!(e["metadata"]["processed_time"], 1_718_000_081_250_i64);
        assert_eq!((e["confidence_id"].as_i64(), e["confidence"].as_str()), (Some(2), Some("Medium")));
        assert_eq!(
            e["finding_info"]["analytic"],
            json!({ "uid": "victim", "name": "victim", "type_id": 1, "type": "Rule", "version": "rules-v1" })
        );
        assert_eq!(
            e["observables"],
            json!([{ "name": "evidences.dst_endpoint.ip", "type_id": 2, "type": "IP Address", "value": "10.0.0.9" }])
        );
        let e = render(&alert("fanout", "10.0.0.1", Some("10.9.9.9"), 5.0, 10.0), AlertFormat::Ocsf, PROCESSED);
        assert_eq!(e["severity_id"], 2);
        assert_eq!(e["confidence_id"], 1);
        assert_eq!(
            e["evidences"],
            json!([{ "src_endpoint": { "ip": "10.0.0.1" }, "dst_endpoint": { "ip": "10.9.9.9" } }])
        );
        let names: Vec<&str> =
            e["observables"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["evidences.src_endpoint.ip", "evidences.dst_endpoint.ip"]);
        let e = render(&alert("isolation", "db.internal", None, 0.9, 0.6), AlertFormat::Ocsf, PROCESSED);
        assert_eq!(e["finding_info"]["analytic"]["type_id"], 4, "the isolation forest learns");
        assert_eq!(e["observables"][0]["type_id"], 1, "a name is a Hostname observable");
        assert_eq!(e["observables"][0]["name"], "evidences.src_endpoint.name");
        assert_eq!(
            render(&alert("beacon", "10.0.0.1", None, 20.0, 10.0), AlertFormat::Ocsf, PROCESSED)["finding_info"]["analytic"]
                ["type"],
            "Statistical"
        );
    }

    #[test]
    fn netanom_format_is_the_unchanged_alert_json() {
        let a = alert("rate", "10.0.0.1", None, 30.0, 10.0);
        assert_eq!(render_string(&a, AlertFormat::Netanom, PROCESSED).unwrap(), serde_json::to_string(&a).unwrap());
        let back: Alert = serde_json::from_value(render(&a, AlertFormat::Netanom, PROCESSED)).unwrap();
        assert_eq!(back, a);
        let r = Rendered::new(&a, [AlertFormat::Ocsf], PROCESSED).unwrap();
        assert_eq!(r.get(AlertFormat::Netanom), serde_json::to_string(&a).unwrap());
        assert!(r.get(AlertFormat::Ocsf).contains("\"class_uid\":2004"));
        assert_eq!(r.get(AlertFormat::Ecs), "", "not asked for");
    }

    #[test]
    fn severity_and_risk_scale_with_score_over_threshold() {
        let s = |score: f64, threshold: f64| {
            let a = alert("rate", "h", None, score, threshold);
            (Severity::of(&a), normalized_risk(&a))
        };
        assert_eq!(s(5.0, 10.0), (Severity::Low, 33));
        assert_eq!(s(10.0, 10.0), (Severity::Medium, 50));
        assert_eq!(s(20.0, 10.0), (Severity::High, 67));
        assert_eq!(s(40.0, 10.0), (Severity::Critical, 80));
        assert_eq!(s(1e300, 1e-300), (Severity::Medium, 50), "overflow is treated as at the threshold");
        assert_eq!(s(5.0, 0.0), (Severity::Medium, 50));
        assert_eq!(s(-5.0, 10.0), (Severity::Low, 0));
    }

    #[test]
    fn format_names_are_lower_case_and_default_to_netanom() {
        assert_eq!(AlertFormat::default(), AlertFormat::Netanom);
        for f in AlertFormat::ALL {
            assert_eq!(serde_json::to_value(f).unwrap(), json!(f.to_string()));
            assert_eq!(serde_json::from_value::<AlertFormat>(json!(f.to_string())).unwrap(), f);
        }
        assert!(serde_json::from_value::<AlertFormat>(json!("ECS")).is_err());
        let versions: Vec<&str> = AlertFormat::ALL.iter().map(|f| f.schema_version()).collect();
        assert_eq!(versions, [ALERT_SCHEMA_VERSION, ECS_VERSION, OCSF_VERSION]);
    }
}
