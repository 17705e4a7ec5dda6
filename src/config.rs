//! Configuration layering for every role: built-in defaults, then a TOML file (`--config`), then `NETANOM_*`
//! environment variables (an empty one is unset), then command-line flags. All layers are merged as TOML trees
//! before anything is deserialised; every syntax error of the file, then every unknown key, value of the wrong
//! type and malformed value of the merged tree (the `shape` module) is reported at once with its key path and where it
//! was set (the `sources` module: `file:line`, the variable, or the command line), and every semantic problem of every
//! section at once ([`Config::validate`]). [`Config::template`] is the file `netanom config` prints.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use self::sources::Sources;

mod shape;
mod sources;
mod template;

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
    /// The isolation forest's shared warm-up and model in force (JSON, compacted, one partition): detectors
    /// publish warm-up vectors here and hot-load the group's model from it.
    pub models: String,
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
            models: topics::MODELS.into(),
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
    /// SCRAM, OAUTHBEARER/OIDC: docs/operations.md). Values of keys naming a password, secret, key or token print as
    /// `***` in `Debug` and in `netanom config --check`. From the environment:
    /// `NETANOM_KAFKA__PROPERTIES__SASL_PASSWORD` (under `properties`, `_` in a key stands for `.`).
    #[serde(serialize_with = "netanom_schemas::redact::serialize_properties")]
    pub properties: BTreeMap<String, String>,
    /// Partitions of each topic that `netanom run` creates on its embedded broker. The embedded broker keeps at
    /// most 5 MiB per partition, so this also bounds how far the detector may fall behind the capture.
    pub embedded_partitions: i32,
    /// Detectors `netanom run` runs in its process, each owning a share of the partitions as members of a
    /// consumer group would, so detection uses more than one core. 0: one per CPU core, at most 4. Default 0.
    pub run_detectors: usize,
    /// Exactly-once from packets to alerts where the broker supports Kafka transactions: each detector produces
    /// a chunk's anomalies, destination deltas and dead letters and commits the chunk's input offsets in one
    /// transaction (`detector.transactional_id`), and every reader of those topics reads `read_committed`
    /// (docs/operations.md, delivery guarantees). A broker that refuses transactions stops the detector with an
    /// error naming this setting. Off: at least once, deduplicated by record id. Default false.
    pub exactly_once: bool,
}

impl Default for Kafka {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            properties: BTreeMap::new(),
            embedded_partitions: 16,
            run_detectors: 0,
            exactly_once: false,
        }
    }
}

/// Written out so that secret properties print masked.
impl std::fmt::Debug for Kafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kafka")
            .field("brokers", &self.brokers)
            .field("properties", &netanom_schemas::redact::masked(&self.properties))
            .field("embedded_partitions", &self.embedded_partitions)
            .field("run_detectors", &self.run_detectors)
            .field("exactly_once", &self.exactly_once)
            .finish()
    }
}

/// Confluent schema ids of the Avro records (`[schemas]`), shared by every role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Schemas {
    /// Schema ids written in (and expected from) the Confluent framing of each Avro record type
    /// (`packet_batch`, `anomaly`, `destination_stats`) when no registry is configured. Default: the built-in
    /// table (1, 2, 3).
    pub ids: netanom_schemas::SchemaIds,
    /// Confluent Schema Registry base URL, e.g. `http://schema-registry:8081`. When set, every role registers
    /// the three `.avsc` schemas at startup under `<topic>-value` (TopicNameStrategy: `topics.packets` →
    /// PacketBatch, `topics.anomalies` → Anomaly, `topics.destinations` → DestinationStats) and uses the ids the
    /// registry returns instead of `ids`; registering is idempotent, so every role can do it. A registry that
    /// cannot be reached or refuses a schema stops the role at startup. Default: none.
    pub registry_url: Option<String>,
    /// Lets `registry_url` reach a loopback, private, link-local or otherwise special-purpose address (a
    /// registry on the cluster network, say). Without it such a URL is a configuration error, and a host name
    /// resolving to such an address is refused when the role connects (docs/security.md, "Outbound safety").
    /// Default: false.
    pub registry_allow_private: bool,
}

impl Default for Schemas {
    fn default() -> Self {
        Self { ids: netanom_schemas::SchemaIds::BUILT_IN, registry_url: None, registry_allow_private: false }
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

/// The standard variable naming the OTLP endpoint when `telemetry.otlp_endpoint` is not set.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// `[telemetry]`: where metrics, health and traces go (used by [`crate::telemetry`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Telemetry {
    /// Address of the HTTP server with `/healthz`, `/readyz` and `/metrics` (Prometheus text), and for
    /// `netanom detector` and `netanom run` the scoring API `POST /api/v1/analyze`, e.g. `"0.0.0.0:9100"`.
    /// Default: none (no server).
    pub listen: Option<SocketAddr>,
    /// A separate address for `/healthz`, `/readyz` and `/metrics`, e.g. `"0.0.0.0:9101"`: with it set, the
    /// probes and metrics are served there only, and `listen` serves only the scoring API, so the API can be
    /// exposed to capture clients while the probes stay on the cluster network. Default: none (everything on
    /// `listen`).
    pub probes_listen: Option<SocketAddr>,
    /// OTLP/gRPC endpoint for traces and metrics, e.g. `"http://otel-collector:4317"`. Default: the
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` environment variable when set and not empty, else none (nothing is exported
    /// over OTLP). An empty value is the same as none.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported telemetry. Default: `OTEL_SERVICE_NAME` when set, else `netanom-<role>`
    /// (`netanom-producer`, `netanom-detector`, `netanom-alert-router`, `netanom-run`).
    pub service_name: Option<String>,
    /// How often metrics are exported over OTLP. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub metrics_interval: Duration,
    /// Share of traces recorded, from 0.0 (none) to 1.0 (all): a trace that starts here (a producer's record) is
    /// kept with this probability, decided by its trace id; a span whose parent came in a record header follows
    /// its parent's decision, so a trace is kept or dropped whole across the roles. Default `1.0`.
    pub trace_sample_ratio: f64,
    /// Most finished spans waiting for export; past it, spans are dropped (the OTLP exporter sends up to 2,048
    /// per request, as soon as that many wait). Default `65536` (one span per Kafka record, not per packet).
    pub span_queue: usize,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            listen: None,
            probes_listen: None,
            otlp_endpoint: None,
            service_name: None,
            metrics_interval: Duration::from_secs(10),
            trace_sample_ratio: 1.0,
            span_queue: 65_536,
        }
    }
}

impl Telemetry {
    /// Every problem of this section, each naming its key.
    pub fn problems(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if self.metrics_interval < Duration::from_millis(100) {
            errors.push(ConfigError::Invalid(format!(
                "telemetry.metrics_interval must be >= 100ms, got {}",
                humantime_serde::re::humantime::format_duration(self.metrics_interval)
            )));
        }
        if let Some(e) = self.otlp_endpoint.as_ref().filter(|e| !e.is_empty())
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            errors.push(ConfigError::Invalid(format!(
                "telemetry.otlp_endpoint must be an http(s) URL such as http://collector:4317, got {e:?}"
            )));
        }
        if matches!(&self.service_name, Some(n) if n.trim().is_empty()) {
            errors.push(ConfigError::Invalid("telemetry.service_name must not be empty when set".into()));
        }
        if !(0.0..=1.0).contains(&self.trace_sample_ratio) {
            errors.push(ConfigError::Invalid(format!(
                "telemetry.trace_sample_ratio must be between 0.0 and 1.0, got {}",
                self.trace_sample_ratio
            )));
        }
        if let (Some(a), Some(p)) = (self.listen, self.probes_listen)
            && a == p
            && a.port() != 0
        {
            errors.push(ConfigError::Invalid(format!(
                "telemetry.probes_listen must differ from telemetry.listen, both are {a} (unset probes_listen to \
                 serve everything on listen)"
            )));
        }
        if !(512..=1_048_576).contains(&self.span_queue) {
            errors.push(ConfigError::Invalid(format!(
                "telemetry.span_queue must be between 512 and 1048576, got {}",
                self.span_queue
            )));
        }
        errors
    }

    /// The endpoint in force: the configured one, else `OTEL_EXPORTER_OTLP_ENDPOINT`; an empty value is no
    /// value (an empty variable turns OTLP export off, as the OpenTelemetry convention has it).
    pub fn endpoint(&self) -> Option<String> {
        self.otlp_endpoint
            .clone()
            .filter(|e| !e.trim().is_empty())
            .or_else(|| std::env::var(OTLP_ENDPOINT_ENV).ok().filter(|v| !v.trim().is_empty()))
    }

    /// The service name in force for `role`.
    pub fn service_name_for(&self, role: &str) -> String {
        self.service_name
            .clone()
            .or_else(|| std::env::var("OTEL_SERVICE_NAME").ok().filter(|v| !v.trim().is_empty()))
            .unwrap_or_else(|| format!("netanom-{role}"))
    }
}

/// `[lifecycle]`: how a role's probes judge it and how long it may take to stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lifecycle {
    /// How long a role has to stop after the first SIGTERM or Ctrl-C: its last flush and offset commit get what
    /// is left of it, and what they could not finish is logged; the process exits when it ends, whatever is
    /// left. Keep it below the pod's `terminationGracePeriodSeconds` (30 s by default). A second signal exits at
    /// once. Default `20s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// `/healthz` answers 503 once the role's main loop has not gone round for this long (it goes round at least
    /// once a second when idle). Default `60s`.
    #[serde(with = "humantime_serde")]
    pub stall_after: Duration,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self { shutdown_grace: netanom_handles::DEFAULT_SHUTDOWN_GRACE, stall_after: Duration::from_secs(60) }
    }
}

impl Lifecycle {
    /// Every problem of this section, each naming its key.
    pub fn problems(&self) -> Vec<ConfigError> {
        let show = |d: Duration| humantime_serde::re::humantime::format_duration(d).to_string();
        let mut errors = Vec::new();
        if self.shutdown_grace < Duration::from_secs(1) {
            errors.push(ConfigError::Invalid(format!(
                "lifecycle.shutdown_grace must be >= 1s, got {}",
                show(self.shutdown_grace)
            )));
        }
        if self.stall_after < Duration::from_secs(5) {
            errors.push(ConfigError::Invalid(format!(
                "lifecycle.stall_after must be >= 5s (an idle loop goes round once a second), got {}",
                show(self.stall_after)
            )));
        }
        errors
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
    /// Schema ids and the optional schema registry (`[schemas]`).
    pub schemas: Schemas,
    /// Logging.
    pub log: Log,
    /// Metrics, health endpoints and traces (`[telemetry]`).
    pub telemetry: Telemetry,
    /// Probes' stall limit and the shutdown grace (`[lifecycle]`).
    pub lifecycle: Lifecycle,
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
    /// The file is not valid TOML (every syntax error of the file is reported).
    #[error("{}: not valid TOML: {message}", at(path, *line))]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The line (1-based) when known.
        line: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// An environment variable or flag names a key that cannot hold a value.
    #[error("{origin}: key `{key}` {message}")]
    Override {
        /// `NETANOM_…` variable or `command line`.
        origin: String,
        /// Dotted key path.
        key: String,
        /// What was wrong.
        message: String,
    },
    /// An unknown key, a value of the wrong type or a malformed value (a duration, an address, a name).
    #[error("{origin}: key `{key}`: {message}")]
    Shape {
        /// Where the value was set: `file:line`, the `NETANOM_…` variable, `command line`, or `configuration`
        /// when no layer names the key.
        origin: String,
        /// Key path, with array indices: `alert_router.webhooks[0].timeout`.
        key: String,
        /// The deserialiser's message.
        message: String,
    },
    /// A value that is well-formed but not allowed.
    #[error("configuration: {0}")]
    Invalid(String),
}

fn at(path: &Path, line: Option<usize>) -> String {
    match line {
        Some(l) => format!("{}:{l}", path.display()),
        None => path.display().to_string(),
    }
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
    let mut sources = Sources::default();
    if let Some(path) = file {
        match std::fs::read_to_string(path) {
            Err(e) => errors.push(ConfigError::Read { path: path.to_owned(), message: e.to_string() }),
            Ok(text) => match text.parse::<toml::Table>() {
                Ok(t) => {
                    tree = t;
                    sources.file(path, &text);
                }
                Err(_) => errors.extend(toml::de::DeTable::parse_recoverable(&text).1.into_iter().map(|e| {
                    ConfigError::Syntax {
                        path: path.to_owned(),
                        line: e.span().map(|s| sources::line_of(&text, s.start)),
                        message: e.message().trim().to_string(),
                    }
                })),
            },
        }
    }
    for (name, value) in env {
        // Only `NETANOM_<SECTION>__<KEY>` names configuration keys; other NETANOM_ variables (NETANOM_CONFIG,
        // tools' own) are not configuration. An empty value is no value: the key keeps what the layers below
        // set, as for any unset variable.
        let Some(rest) = name.strip_prefix("NETANOM_") else { continue };
        if !rest.contains("__") || value.is_empty() {
            continue;
        }
        let (path, value) = env_path(rest, &value);
        let key = path.join(".");
        match set_path(&mut tree, &path, value) {
            Ok(()) => sources.set(&path, &name),
            Err(message) => errors.push(ConfigError::Override { origin: name.clone(), key, message }),
        }
    }
    for (key, value) in flags {
        match set(&mut tree, key, value.clone()) {
            Ok(()) => sources.set(&key.split('.').map(str::to_string).collect::<Vec<_>>(), "command line"),
            Err(message) => {
                errors.push(ConfigError::Override { origin: "command line".into(), key: key.clone(), message })
            }
        }
    }
    stringify_properties(&mut tree);
    match shape::deserialize::<Config>(&tree) {
        Ok(config) if errors.is_empty() => Ok(config),
        Ok(_) => Err(errors),
        Err(problems) => {
            let mut shape: Vec<(Option<usize>, ConfigError)> = problems
                .into_iter()
                .map(|p| {
                    let error = ConfigError::Shape {
                        origin: sources.origin(&p.path).unwrap_or_else(|| "configuration".into()),
                        key: sources::display(&p.path),
                        message: p.message,
                    };
                    (sources.line(&p.path), error)
                })
                .collect();
            // The file's problems in line order, then those of the environment and the flags.
            shape.sort_by_key(|(line, _)| line.unwrap_or(usize::MAX));
            errors.extend(shape.into_iter().map(|(_, e)| e));
            Err(errors)
        }
    }
}

/// librdkafka properties are strings: `"linger.ms" = 5` or `"enable.ssl.certificate.verification" = false` in
/// the file are taken as `"5"` and `"false"`. This also keeps a mistyped secret (`"sasl.password" = 1234`) out
/// of the type error, which would quote it.
fn stringify_properties(tree: &mut toml::Table) {
    for (section, key) in [
        ("kafka", "properties"),
        ("producer", "kafka_properties"),
        ("detector", "kafka_properties"),
        ("alert_router", "kafka_properties"),
    ] {
        let Some(toml::Value::Table(props)) = tree.get_mut(section).and_then(|s| s.get_mut(key)) else { continue };
        for (_, v) in props.iter_mut() {
            let text = match v {
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Datetime(d) => d.to_string(),
                _ => continue,
            };
            *v = toml::Value::String(text);
        }
    }
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

/// Interprets an environment value as a TOML value when it is one (`300`, `true`, `[1, 2]`, `"x"`), else as a
/// string.
pub fn parse_scalar(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// The key path and value of the environment variable `NETANOM_<rest>`. Below the librdkafka properties map
/// (`kafka.properties`) the rest of the name is one property: `_` and `__` stand
/// for `.` (librdkafka names have no `_`), a literal `.` is kept (`NETANOM_KAFKA__PROPERTIES__SASL.PASSWORD`
/// works where the platform allows dots in names), and the value is always a string, never parsed (a password
/// such as `1234` stays a string, and a malformed value never appears in an error message).
fn env_path(rest: &str, value: &str) -> (Vec<String>, toml::Value) {
    let lower = rest.to_ascii_lowercase();
    let parts: Vec<&str> = lower.split("__").collect();
    let props = parts.iter().position(|p| *p == "properties");
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
    /// The configuration file `netanom config` prints: every key with its default, every key without one
    /// commented out with an example and its meaning.
    pub fn template() -> Result<String, toml::ser::Error> {
        Ok(template::render(&toml::to_string_pretty(&Config::default())?))
    }

    /// Settings of the sections of `roles` that are valid but probably not meant (a webhook that would go
    /// unsigned), one line each naming the key; printed as warnings before the roles start.
    pub fn warnings(&self, roles: Roles) -> Vec<String> {
        if roles.alert_router {
            self.alert_router.warnings().iter().map(ToString::to_string).collect()
        } else {
            Vec::new()
        }
    }

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
        if self.kafka.run_detectors > 64 {
            errors.push(ConfigError::Invalid(format!(
                "kafka.run_detectors must be at most 64, got {}",
                self.kafka.run_detectors
            )));
        }
        if self.kafka.properties.contains_key("transactional.id") {
            errors.push(ConfigError::Invalid(
                "kafka.properties must not set transactional.id (every client would share it): set \
                 kafka.exactly_once = true and, if needed, detector.transactional_id"
                    .into(),
            ));
        }
        if self.kafka.exactly_once
            && self.kafka.properties.get("enable.idempotence").is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
        {
            errors.push(ConfigError::Invalid(
                "kafka.exactly_once = true needs idempotent producers: remove kafka.properties.enable.idempotence = \
                 false"
                    .into(),
            ));
        }
        errors.extend(self.telemetry.problems());
        errors.extend(self.lifecycle.problems());
        let t = &self.topics;
        for (key, name) in [
            ("packets", &t.packets),
            ("destinations", &t.destinations),
            ("anomalies", &t.anomalies),
            ("alerts", &t.alerts),
            ("dead_letter", &t.dead_letter),
            ("models", &t.models),
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
        // The roles read and write these pairs as different streams; one name for both would loop records.
        for (a, first, b, second) in [
            ("packets", &t.packets, "destinations", &t.destinations),
            ("anomalies", &t.anomalies, "alerts", &t.alerts),
            ("anomalies", &t.anomalies, "dead_letter", &t.dead_letter),
        ] {
            if !second.is_empty() && first == second {
                errors
                    .push(ConfigError::Invalid(format!("topics.{b} must differ from topics.{a}, both are {second:?}")));
            }
        }
        if let Some(url) = &self.schemas.registry_url {
            if let Err(e) = crate::registry::check_url(url, self.schemas.registry_allow_private) {
                errors.push(ConfigError::Invalid(e.to_string()));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    fn texts(errors: &[ConfigError]) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    /// The errors of loading `file` with the environment `pairs`, one a line.
    fn load_errors(file: Option<&Path>, pairs: &[(&str, &str)]) -> String {
        texts(&load(file, env(pairs), &[]).unwrap_err()).join("\n")
    }

    const FILE: &str = "[detector.rate]\nthreshold_per_sec = 250.0\nwindow_packets = 50\n[topics]\npackets = \"p\"\n";

    #[test]
    fn defaults_load_and_are_valid() {
        let cfg = load(None, Vec::new(), &[]).unwrap();
        assert_eq!(cfg.detector.rate.threshold_per_sec, 200.0);
        assert_eq!(cfg.topics, Topics::default());
        assert_eq!(cfg.schemas, Schemas::default());
        assert_eq!(cfg.schemas.ids, netanom_schemas::SchemaIds::BUILT_IN);
        cfg.validate(Roles::NONE).unwrap();
    }

    #[test]
    fn the_file_overrides_defaults_the_environment_the_file_and_flags_the_environment() {
        let f = file(FILE);
        let cfg = load(Some(f.path()), Vec::new(), &[]).unwrap();
        assert_eq!(cfg.detector.rate.threshold_per_sec, 250.0);
        assert_eq!(cfg.detector.rate.window_packets, 50);
        assert_eq!(cfg.topics.packets, "p");
        assert_eq!(cfg.topics.alerts, netanom_schemas::topics::ALERTS, "keys the file does not set keep defaults");

        let e = env(&[("NETANOM_DETECTOR__RATE__THRESHOLD_PER_SEC", "300")]);
        let cfg = load(Some(f.path()), e.clone(), &[]).unwrap();
        assert_eq!(cfg.detector.rate.threshold_per_sec, 300.0);
        assert_eq!(cfg.detector.rate.window_packets, 50, "the file's other keys stay");

        let flags = vec![("detector.rate.threshold_per_sec".to_string(), toml::Value::Float(400.0))];
        let cfg = load(Some(f.path()), e, &flags).unwrap();
        assert_eq!(cfg.detector.rate.threshold_per_sec, 400.0);
    }

    /// Unknown keys and wrong types name their dotted key, from a file (tables, arrays of tables, inline
    /// tables) or from the environment.
    #[test]
    fn a_shape_error_names_its_key() {
        for (text, key) in [
            ("[detector.rate]\nthresold = 3\n", "detector.rate.thresold"),
            ("[detector.rate]\nwindow_packets = \"many\"\n", "detector.rate.window_packets"),
            (
                "[[alert_router.webhooks]]\nurl = \"http://127.0.0.1:9/x\"\nmethod = \"PUT\"\n",
                "alert_router.webhooks[0].method",
            ),
            ("detector = { rate = { window_packets = \"many\" } }\n", "window_packets"),
        ] {
            let f = file(text);
            let errors = load_errors(Some(f.path()), &[]);
            assert!(errors.contains(key), "{key} missing from {errors}");
        }
        for (name, key) in [
            ("NETANOM_DETECTOR__RATE__THRESOLD", "detector.rate.thresold"),
            ("NETANOM_PRODUCER__SNAPLEN", "producer.snaplen"),
        ] {
            let errors = load_errors(None, &[(name, "big")]);
            assert!(errors.contains(key), "{key} missing from {errors}");
        }
    }

    /// Every unknown key, wrong type and malformed value of every layer in one report, each with where it was
    /// set; a problem in one layer does not hide those of the others.
    #[test]
    fn every_shape_problem_of_every_layer_is_reported_with_its_origin() {
        let f = file("[detector.rate]\nthresold = 3\ncooldown = \"10 parsecs\"\n[producer]\nsnaplen = \"big\"\n");
        let flags: Vec<Override> = vec![("telemetry.listen".into(), toml::Value::String("not an address".into()))];
        let errors = load(Some(f.path()), env(&[("NETANOM_LOG__COLOUR", "yes")]), &flags).unwrap_err();
        let text = texts(&errors).join("\n");
        let at = |line: usize| format!("{}:{line}", f.path().display());
        for want in [
            format!("{}: key `detector.rate.thresold`: unknown field `thresold`", at(2)),
            format!("{}: key `detector.rate.cooldown`: ", at(3)),
            format!("{}: key `producer.snaplen`: invalid type: string \"big\"", at(5)),
            "NETANOM_LOG__COLOUR: key `log.colour`: unknown field".to_string(),
            "command line: key `telemetry.listen`: ".to_string(),
        ] {
            assert!(text.contains(&want), "`{want}` missing from:\n{text}");
        }
        assert_eq!(errors.len(), 5, "{text}");
        let pos = |line: usize| text.find(&format!("{}: key", at(line))).unwrap();
        assert!(pos(2) < pos(3) && pos(3) < pos(5), "the file's problems in line order:\n{text}");
    }

    #[test]
    fn an_empty_environment_value_is_unset() {
        let f = file("[producer]\nfilter = \"tcp\"\n");
        let e = env(&[
            ("NETANOM_PRODUCER__FILTER", ""),
            ("NETANOM_TELEMETRY__LISTEN", ""),
            ("NETANOM_DETECTOR__RATE__COOLDOWN", ""),
            ("NETANOM_TELEMETRY__OTLP_ENDPOINT", ""),
        ]);
        let cfg = load(Some(f.path()), e, &[]).unwrap();
        assert_eq!(cfg.producer.filter.as_deref(), Some("tcp"), "the file's value stays");
        assert_eq!(cfg.telemetry, Telemetry::default());
        assert_eq!(cfg.detector.rate.cooldown, Config::default().detector.rate.cooldown);
        let off = Telemetry { otlp_endpoint: Some(String::new()), ..Telemetry::default() };
        assert!(off.problems().is_empty(), "an empty endpoint is no endpoint");
    }

    /// `netanom config` prints the defaults; uncommenting every example gives a file that loads with every
    /// optional key set.
    #[test]
    fn the_template_parses_back_and_its_commented_examples_load() {
        let shown = Config::template().unwrap();
        let f = file(&shown);
        let back = load(Some(f.path()), Vec::new(), &[]).unwrap();
        assert_eq!(toml::to_string(&back).unwrap(), toml::to_string(&Config::default()).unwrap());
        let examples: String = shown
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.starts_with('[') || rest.parse::<toml::Table>().is_ok() => rest,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let f = file(&examples);
        let all = load(Some(f.path()), Vec::new(), &[]).unwrap_or_else(|e| panic!("{e:?}\n{examples}"));
        assert_eq!(all.kafka.properties.get("security.protocol").map(String::as_str), Some("SASL_SSL"));
        assert!(all.schemas.registry_url.is_some());
        let t = &all.telemetry;
        assert!(t.listen.is_some() && t.otlp_endpoint.is_some() && t.service_name.is_some());
        let p = &all.producer;
        assert!(p.pcap.is_some() && p.interface.is_some() && p.filter.is_some());
        let d = &all.detector;
        assert!(d.forest.model_path.is_some() && d.forest.save_path.is_some() && d.forest.retrain_every.is_some());
        assert!(d.supervised.model_path.is_some() && d.supervised.threshold.is_some());
        let r = &all.alert_router;
        assert!(r.webhook_secret.is_some() && r.alerts_out.is_some() && r.webhooks.len() == 1);
        assert!(r.webhooks[0].secret.is_some());
        assert!(r.syslog.as_ref().is_some_and(|s| s.hostname.is_some()), "{examples}");
        // The router's examples also pass its validation (table sizes within the default memory budget).
        let router = Roles { producer: false, detector: false, alert_router: true };
        if let Err(problems) = all.validate(router) {
            panic!("the router's examples do not validate: {:?}\n{examples}", texts(&problems));
        }
    }

    #[test]
    fn validate_reports_problems_of_every_section_at_once() {
        let flags: Vec<Override> = vec![
            ("log.format".into(), toml::Value::String("xml".into())),
            ("kafka.embedded_partitions".into(), toml::Value::Integer(0)),
            ("topics.alerts".into(), toml::Value::String("bad topic!".into())),
            ("detector.rate.window_packets".into(), toml::Value::Integer(1)),
            ("producer.snaplen".into(), toml::Value::Integer(1)),
            ("alert_router.max_concurrency".into(), toml::Value::Integer(0)),
            ("schemas.registry_url".into(), toml::Value::String("registry:8081".into())),
        ];
        let cfg = load(None, Vec::new(), &flags).unwrap();
        let text = texts(&cfg.validate(Roles::ALL).unwrap_err()).join("\n");
        for key in [
            "log.format",
            "kafka.embedded_partitions",
            "topics.alerts",
            "detector.rate.window_packets",
            "producer.snaplen",
            "alert_router.max_concurrency",
            "schemas.registry_url",
        ] {
            assert!(text.contains(key), "{key} missing from:\n{text}");
        }
    }

    #[test]
    fn one_topic_name_for_two_streams_is_invalid() {
        let flags: Vec<Override> = vec![
            ("topics.destinations".into(), toml::Value::String("same".into())),
            ("topics.packets".into(), toml::Value::String("same".into())),
            ("topics.alerts".into(), toml::Value::String(netanom_schemas::topics::ANOMALIES.into())),
        ];
        let cfg = load(None, Vec::new(), &flags).unwrap();
        let text = texts(&cfg.validate(Roles::ALL).unwrap_err()).join("\n");
        assert!(text.contains("topics.destinations must differ from topics.packets"), "{text}");
        assert!(text.contains("topics.alerts must differ from topics.anomalies"), "{text}");
    }

    #[test]
    fn netanom_variables_without_a_key_path_are_not_configuration() {
        let e = env(&[
            ("NETANOM_CONFIG", "/etc/netanom.toml"),
            ("NETANOM_TANSU", "/usr/bin/tansu"),
            ("NETANOM_", "x"),
            ("OTHER__THING", "1"),
        ]);
        let cfg = load(None, e, &[]).unwrap();
        assert_eq!(toml::to_string(&cfg).unwrap(), toml::to_string(&Config::default()).unwrap());
    }

    #[test]
    fn an_environment_value_that_is_not_toml_is_a_string() {
        let e = env(&[
            ("NETANOM_PRODUCER__INTERFACE", "eth0"),
            ("NETANOM_PRODUCER__FILTER", "tcp port 80"),
            ("NETANOM_LOG__LEVEL", "netanom_detector=debug,info"),
            ("NETANOM_PRODUCER__SNAPLEN", "1500"),
        ]);
        let cfg = load(None, e, &[]).unwrap();
        assert_eq!(cfg.producer.interface.as_deref(), Some("eth0"));
        assert_eq!(cfg.producer.filter.as_deref(), Some("tcp port 80"));
        assert_eq!(cfg.log.level, "netanom_detector=debug,info");
        assert_eq!(cfg.producer.snaplen, 1500, "a TOML value is parsed");
        assert_eq!(parse_scalar("eth0"), toml::Value::String("eth0".into()));
        assert_eq!(parse_scalar("\"300\""), toml::Value::String("300".into()));
    }

    #[test]
    fn shared_settings_are_not_keys_of_the_role_sections() {
        for (key, value) in [
            ("producer.brokers", "b:9092"),
            ("producer.topic", "t"),
            ("producer.schema_ids", "{ packet_batch = 7, anomaly = 8, destination_stats = 9 }"),
            ("detector.kafka_properties", "{ \"a.b\" = \"c\" }"),
            ("detector.packets_topic", "t"),
            ("detector.schema_ids", "{ packet_batch = 7, anomaly = 8, destination_stats = 9 }"),
            ("alert_router.brokers", "b:9092"),
            ("alert_router.alerts_topic", "t"),
            ("alert_router.schema_ids", "{ packet_batch = 7, anomaly = 8, destination_stats = 9 }"),
        ] {
            let (table, field) = key.split_once('.').unwrap();
            let f = file(&format!("[{table}]\n{field} = {}\n", parse_scalar_text(value)));
            let text = load_errors(Some(f.path()), &[]);
            assert!(text.contains(key), "{key}: {text}");
        }
    }

    /// A value as TOML source: tables and quoted strings as given, bare words quoted.
    fn parse_scalar_text(v: &str) -> String {
        if v.starts_with('{') { v.to_string() } else { format!("{v:?}") }
    }

    #[test]
    fn schema_ids_are_one_shared_section_and_printed_once() {
        let f = file(
            "[schemas]\nregistry_url = \"http://registry:8081\"\n[schemas.ids]\npacket_batch = 11\nanomaly = 12\n\
             destination_stats = 13\n",
        );
        let cfg = load(Some(f.path()), Vec::new(), &[]).unwrap();
        cfg.validate(Roles::NONE).unwrap();
        assert_eq!(
            cfg.schemas.ids,
            netanom_schemas::SchemaIds { packet_batch: 11, anomaly: 12, destination_stats: 13 }
        );
        assert_eq!(cfg.schemas.registry_url.as_deref(), Some("http://registry:8081"));
        let shown = toml::to_string_pretty(&cfg).unwrap();
        for key in ["brokers", "packet_batch", "kafka_properties", "schema_ids", "packets_topic", "alerts_topic"] {
            let n = shown.lines().filter(|l| l.trim_start().starts_with(&format!("{key} ="))).count();
            assert!(n <= 1, "{key} printed {n} times:\n{shown}");
        }
        assert!(!shown.contains("schema_ids") && !shown.contains("_topic ="), "{shown}");
    }

    #[test]
    fn telemetry_section_parses_with_defaults_and_rejects_unknown_keys() {
        let t: Telemetry = toml::from_str("listen = \"0.0.0.0:9100\"\nmetrics_interval = \"2s\"").unwrap();
        assert_eq!(t.listen, Some("0.0.0.0:9100".parse().unwrap()));
        assert_eq!(t.metrics_interval, Duration::from_secs(2));
        assert_eq!(t.otlp_endpoint, None);
        assert_eq!((t.trace_sample_ratio, t.span_queue), (1.0, 65_536));
        assert!(t.problems().is_empty());
        let sampled: Telemetry = toml::from_str("trace_sample_ratio = 0.25").unwrap();
        assert!(sampled.problems().is_empty() && sampled.trace_sample_ratio == 0.25);
        let err = toml::from_str::<Telemetry>("listen_addr = \"x\"").unwrap_err().to_string();
        assert!(err.contains("listen_addr"), "{err}");
    }

    #[test]
    fn telemetry_problems_name_every_key() {
        let t = Telemetry {
            otlp_endpoint: Some("collector:4317".into()),
            service_name: Some(" ".into()),
            metrics_interval: Duration::from_millis(10),
            trace_sample_ratio: f64::NAN,
            span_queue: 10,
            listen: Some("0.0.0.0:9100".parse().unwrap()),
            probes_listen: Some("0.0.0.0:9100".parse().unwrap()),
        };
        let p: Vec<String> = t.problems().iter().map(ToString::to_string).collect();
        assert_eq!(p.len(), 6, "{p:?}");
        for key in [
            "telemetry.probes_listen",
            "telemetry.otlp_endpoint",
            "telemetry.service_name",
            "telemetry.trace_sample_ratio",
            "telemetry.span_queue",
        ] {
            assert!(p.iter().any(|e| e.contains(key)), "{key} missing from {p:?}");
        }
        assert_eq!(
            Telemetry { service_name: Some("x".into()), ..Telemetry::default() }.service_name_for("detector"),
            "x"
        );
    }

    #[test]
    fn lifecycle_defaults_stay_below_the_kubernetes_grace_and_problems_name_their_keys() {
        let l = Lifecycle::default();
        assert!(l.problems().is_empty());
        assert!(l.shutdown_grace < Duration::from_secs(30), "default grace {:?}", l.shutdown_grace);
        let parsed: Lifecycle = toml::from_str("shutdown_grace = \"12s\"").unwrap();
        assert_eq!(parsed.shutdown_grace, Duration::from_secs(12));
        let bad = Lifecycle { shutdown_grace: Duration::from_millis(200), stall_after: Duration::from_secs(1) };
        let p: Vec<String> = bad.problems().iter().map(ToString::to_string).collect();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("lifecycle.shutdown_grace") && p[1].contains("lifecycle.stall_after"), "{p:?}");
    }
}
