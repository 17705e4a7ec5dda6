//! Configuration layering for every role: built-in defaults, then a TOML file (`--config`), then `NETANOM_*`
//! environment variables, then command-line flags. All layers are merged as TOML trees before anything is
//! deserialised, so an unknown key or a bad value is reported with its key path whatever layer it came from,
//! and every semantic problem of every section is reported at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Topic names shared by all roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    /// Packet batches from the producer (Avro `PacketBatch`), keyed by source IP.
    pub packets: String,
    /// Per-destination partial aggregates between detectors (Avro `DestinationStats`), keyed by destination IP.
    pub destinations: String,
    /// Detector findings (Avro `Anomaly`), keyed by host.
    pub anomalies: String,
    /// Alerts as JSON, keyed by host: what SIEMs subscribe to.
    pub alerts: String,
    /// Records that could not be processed, with the reason in a header.
    pub dead_letter: String,
}

impl Default for Topics {
    fn default() -> Self {
        use netanom_schemas::topics;
        Self {
            packets: topics::PACKETS.into(),
            destinations: topics::DESTINATIONS.into(),
            anomalies: topics::ANOMALIES.into(),
            alerts: topics::ALERTS.into(),
            dead_letter: topics::DEAD_LETTER.into(),
        }
    }
}

/// How to reach Kafka.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kafka {
    /// Bootstrap servers, `host:port[,host:port…]`. Empty: `netanom run` starts an embedded broker; the
    /// single-role commands require it.
    pub brokers: String,
    /// Extra librdkafka properties passed to every client, e.g. `"security.protocol" = "SASL_SSL"` (TLS, SASL
    /// SCRAM, OAUTHBEARER/OIDC: see the README). Values of keys naming a password, secret, key or token print as
    /// `***` in `Debug` and in `netanom config --check`. From the environment:
    /// `NETANOM_KAFKA__PROPERTIES__SASL_PASSWORD` (under `properties`, `_` in a key stands for `.`).
    #[serde(serialize_with = "netanom_schemas::redact::serialize_properties")]
    pub properties: BTreeMap<String, String>,
    /// Partitions of each topic that `netanom run` creates on its embedded broker. The embedded broker keeps at
    /// most 5 MiB per partition, so this also bounds how far the detector may fall behind the capture.
    pub embedded_partitions: i32,
}

impl Default for Kafka {
    fn default() -> Self {
        Self { brokers: String::new(), properties: BTreeMap::new(), embedded_partitions: 16 }
    }
}

/// Written out so that secret properties print masked.
impl std::fmt::Debug for Kafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kafka")
            .field("brokers", &self.brokers)
            .field("properties", &netanom_schemas::redact::masked(&self.properties))
            .field("embedded_partitions", &self.embedded_partitions)
            .finish()
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// `tracing` filter directive, e.g. `info` or `netanom_detector=debug,info`.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for Log {
    fn default() -> Self {
        Self { level: "warn".into(), format: "text".into() }
    }
}

/// The whole configuration: one table per role plus the shared sections.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Kafka connection.
    pub kafka: Kafka,
    /// Topic names.
    pub topics: Topics,
    /// Logging.
    pub log: Log,
    /// Metrics, health endpoints and traces (`[telemetry]`).
    pub telemetry: crate::telemetry::Telemetry,
    /// The producer role.
    pub producer: netanom_producer::ProducerConfig,
    /// The detector role.
    pub detector: netanom_detector::DetectorConfig,
    /// The alert-router role.
    pub alert_router: netanom_alert_router::RouterConfig,
}

/// A configuration problem, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// An environment variable or flag names a key that cannot hold a value.
    #[error("{origin}: key `{key}` {message}")]
    Override {
        /// `NETANOM_…` variable or `--flag`.
        origin: String,
        /// Dotted key path.
        key: String,
        /// What was wrong.
        message: String,
    },
    /// Unknown key or a value of the wrong type.
    #[error("configuration: {0}")]
    Shape(String),
    /// A value that is well-formed but not allowed.
    #[error("configuration: {0}")]
    Invalid(String),
}

/// One value set by a flag: dotted key and TOML value.
pub type Override = (String, toml::Value);

/// Builds the configuration from the layers: file (if any), environment (`NETANOM_<SECTION>__<KEY>` with `__`
/// between key levels, e.g. `NETANOM_DETECTOR__RATE__THRESHOLD_PER_SEC=300`), then flags.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: &[Override],
) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut tree = toml::Table::new();
    if let Some(path) = file {
        match std::fs::read_to_string(path) {
            Err(e) => errors.push(ConfigError::Read { path: path.to_owned(), message: e.to_string() }),
            Ok(text) => match text.parse::<toml::Table>() {
                Ok(t) => tree = t,
                Err(e) => errors.push(ConfigError::Syntax { path: path.to_owned(), message: e.message().to_string() }),
            },
        }
    }
    for (name, value) in env {
        // Only `NETANOM_<SECTION>__<KEY>` names configuration keys; other NETANOM_ variables (NETANOM_CONFIG,
        // tools' own) are not configuration.
        let Some(rest) = name.strip_prefix("NETANOM_") else { continue };
        if !rest.contains("__") {
            continue;
        }
        let (path, value) = env_path(rest, &value);
        let key = path.join(".");
        if let Err(message) = set_path(&mut tree, &path, value) {
            errors.push(ConfigError::Override { origin: name.clone(), key, message });
        }
    }
    for (key, value) in flags {
        if let Err(message) = set(&mut tree, key, value.clone()) {
            errors.push(ConfigError::Override { origin: "flag".into(), key: key.clone(), message });
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let text = toml::to_string(&tree).map_err(|e| vec![ConfigError::Shape(e.to_string())])?;
    toml::from_str(&text).map_err(|e| vec![ConfigError::Shape(describe(&e, &text))])
}

/// The roles whose sections a command needs; only those are validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// `[producer]`.
    pub producer: bool,
    /// `[detector]`.
    pub detector: bool,
    /// `[alert_router]`.
    pub alert_router: bool,
}

impl Roles {
    /// Every role (`netanom run`).
    pub const ALL: Roles = Roles { producer: true, detector: true, alert_router: true };
    /// No role (`netanom synth`).
    pub const NONE: Roles = Roles { producer: false, detector: false, alert_router: false };
}

/// Names the key of a deserialisation error: toml reports a span in the merged document; the line there is
/// `key = value` under a `[table]` header, so the dotted key is recovered from the text.
fn describe(e: &toml::de::Error, text: &str) -> String {
    let Some(span) = e.span() else { return e.message().to_string() };
    let before = &text[..span.start.min(text.len())];
    let table = before.lines().rev().find_map(|l| l.trim().strip_prefix('[').and_then(|l| l.strip_suffix(']')));
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line.split('=').next().unwrap_or("").trim();
    let path = match (table, key.is_empty() || line.trim_start().starts_with('[')) {
        (Some(t), false) => format!("{t}.{key}"),
        (Some(t), true) => t.to_string(),
        (None, false) => key.to_string(),
        (None, true) => String::new(),
    };
    if path.is_empty() { e.message().to_string() } else { format!("key `{path}`: {}", e.message()) }
}

/// Interprets an environment value as a TOML value when it is one (`300`, `true`, `[1, 2]`, `"x"`), else as a
/// string.
pub fn parse_scalar(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// The key path and value of the environment variable `NETANOM_<rest>`. Below a librdkafka properties map
/// (`kafka.properties`, `<role>.kafka_properties`) the rest of the name is one property: `_` and `__` stand
/// for `.` (librdkafka names have no `_`), a literal `.` is kept (`NETANOM_KAFKA__PROPERTIES__SASL.PASSWORD`
/// works where the platform allows dots in names), and the value is always a string, never parsed (a password
/// such as `1234` stays a string, and a malformed value never appears in an error message).
fn env_path(rest: &str, value: &str) -> (Vec<String>, toml::Value) {
    let lower = rest.to_ascii_lowercase();
    let parts: Vec<&str> = lower.split("__").collect();
    let props = parts.iter().position(|p| *p == "properties" || *p == "kafka_properties");
    match props {
        Some(i) if i + 1 < parts.len() => {
            let mut path: Vec<String> = parts[..=i].iter().map(|p| p.to_string()).collect();
            path.push(parts[i + 1..].join(".").replace('_', "."));
            (path, toml::Value::String(value.to_string()))
        }
        _ => (parts.iter().map(|p| p.to_string()).collect(), parse_scalar(value)),
    }
}

fn set(tree: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), String> {
    let parts: Vec<String> = key.split('.').map(str::to_string).collect();
    set_path(tree, &parts, value)
}

/// Sets the value at `parts` (each one key, dots and all), creating tables on the way.
fn set_path(tree: &mut toml::Table, parts: &[String], value: toml::Value) -> Result<(), String> {
    let mut parts = parts.iter().map(String::as_str).peekable();
    let mut table = tree;
    while let Some(part) = parts.next() {
        if part.is_empty() {
            return Err("has an empty path segment".into());
        }
        if parts.peek().is_none() {
            table.insert(part.to_string(), value);
            return Ok(());
        }
        let entry = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(format!("cannot be set: `{part}` is not a table")),
        };
    }
    Err("is empty".into())
}

impl Config {
    /// Checks the shared sections and those of `roles`, and reports every problem at once.
    pub fn validate(&self, roles: Roles) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        if !["text", "json"].contains(&self.log.format.as_str()) {
            errors.push(ConfigError::Invalid(format!("log.format must be text or json, got {:?}", self.log.format)));
        }
        if self.kafka.embedded_partitions < 1 {
            errors.push(ConfigError::Invalid(format!(
                "kafka.embedded_partitions must be >= 1, got {}",
                self.kafka.embedded_partitions
            )));
        }
        errors.extend(self.telemetry.problems());
        let t = &self.topics;
        for (key, name) in [
            ("packets", &t.packets),
            ("destinations", &t.destinations),
            ("anomalies", &t.anomalies),
            ("alerts", &t.alerts),
            ("dead_letter", &t.dead_letter),
        ] {
            if name.is_empty()
                || name.len() > 249
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                errors.push(ConfigError::Invalid(format!(
                    "topics.{key} must be 1-249 characters of [a-zA-Z0-9._-], got {name:?}"
                )));
            }
        }
        let invalid = |e: &dyn std::fmt::Display| ConfigError::Invalid(e.to_string());
        if roles.producer {
            errors.extend(self.producer.validate().err().into_iter().flatten().map(|e| invalid(&e)));
        }
        if roles.detector {
            errors.extend(self.detector.validate().err().into_iter().flatten().map(|e| invalid(&e)));
        }
        if roles.alert_router {
            errors.extend(self.alert_router.validate().err().into_iter().flatten().map(|e| invalid(&e)));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}
