//! The alert router's configuration (`[alert_router]`): every field documented, defaults in one place, and
//! [`RouterConfig::validate`] reporting every problem at once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use netanom_schemas::{SchemaIds, topics};
use serde::Deserialize;

use crate::format::AlertFormat;
use crate::incident::IncidentConfig;
use crate::outbound;
use crate::suppress::SuppressionConfig;
use crate::syslog::SyslogConfig;
use crate::webhook::{self, RetryConfig, WebhookConfig};
use netanom_schemas::redact::Secret;

/// Configuration of the alert router (`[alert_router]`).
#[derive(Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// Kafka bootstrap servers, `host:port[,host:port...]`. Not a key of `[alert_router]`: the root binary sets
    /// it from `kafka.brokers`. Default `localhost:9092`.
    #[serde(skip)]
    pub brokers: String,
    /// Extra librdkafka properties for the consumer and the producer (e.g. `security.protocol`,
    /// `sasl.password`). Values of keys naming a password, secret or key are masked in `Debug`. Not a key of
    /// `[alert_router]`: the root binary sets it from `kafka.properties`.
    #[serde(skip)]
    pub kafka_properties: BTreeMap<String, String>,
    /// Consumer group id. Default `netanom-alert-router`.
    pub group_id: String,
    /// Topic the anomalies are consumed from. Default `netanom.anomalies`. Set by the root binary from
    /// `topics.anomalies` (like the other topics and the schema ids: these are not keys of `[alert_router]`).
    #[serde(skip)]
    pub anomalies_topic: String,
    /// Topic the alerts are produced to (JSON, key = host). Default `netanom.alerts`. Set from `topics.alerts`.
    #[serde(skip)]
    pub alerts_topic: String,
    /// Document format on the alerts topic: `netanom` (the [`netanom_schemas::Alert`] JSON that the wire contract
    /// names), `ecs` or `ocsf`. Default `netanom`.
    pub alerts_format: AlertFormat,
    /// Topic for poison anomalies and alerts a webhook refused. Default `netanom.dead-letter`. Set from
    /// `topics.dead_letter`.
    #[serde(skip)]
    pub dead_letter_topic: String,
    /// Confluent schema ids of the Avro records. Default: the built-in table. Set from `[schemas]` (or the
    /// schema registry).
    #[serde(skip)]
    pub schema_ids: SchemaIds,
    /// Consume every partition of the anomalies topic without joining the consumer group (offsets are still
    /// committed under `group_id`). For a single router that must own everything at once, as in `netanom run`.
    /// Default false.
    pub static_assignment: bool,
    /// `kafka.exactly_once`: the detectors write the anomalies topic in transactions, so the router and every
    /// destination read `read_committed` (only committed anomalies and alerts). What the router produces stays
    /// at least once, deduplicated by anomaly id (`crate::dedup`). Not a key of `[alert_router]`: the root binary
    /// sets it from `kafka.exactly_once`. Default false.
    #[serde(skip)]
    pub exactly_once: bool,
    /// Bytes the router's tables may hold together, in MiB: 3/8 for the suppression groups, 3/8 for the open
    /// incidents, 1/4 for the deduplication ids (see [`crate::budget`]). `suppression.max_groups` and
    /// `incidents.max_incidents` follow from it unless set, and must fit it when set. 1 to 1048576. Default 256
    /// (half of the router's manifest limit).
    pub memory_budget_mib: u64,
    /// Suppression of repeated (host, kind) anomalies.
    pub suppression: SuppressionConfig,
    /// Grouping of a host's alerts across kinds into incidents (`[alert_router.incidents]`).
    pub incidents: IncidentConfig,
    /// Webhooks every alert is POSTed to (none by default). Each delivers from the alerts topic at its own pace,
    /// with its own consumer group (see `destination`).
    pub webhooks: Vec<WebhookConfig>,
    /// Signing secret (`whsec_…`) for the webhooks that have none of their own; convenient from the environment
    /// (`NETANOM_ALERT_ROUTER__WEBHOOK_SECRET`) or a Kubernetes Secret. Default: none.
    pub webhook_secret: Option<Secret>,
    /// Longest time the broker may hold a fetch that finds no new records (librdkafka `fetch.wait.max.ms`).
    /// A Kafka broker answers as soon as records arrive, so this only bounds idle polling; librdkafka's mock
    /// broker (the embedded one of `netanom run`) holds such a fetch for the whole wait, so `netanom run` caps
    /// it at 10 ms there. At most 300 s. Default 500 ms.
    #[serde(with = "humantime_serde")]
    pub fetch_wait: Duration,
    /// Retry policy of webhook requests.
    pub retry: RetryConfig,
    /// Alerts being delivered at most by one webhook at a time (each destination has its own; the syslog
    /// receiver takes one at a time). Default 16.
    pub max_concurrency: usize,
    /// Alerts being published to the alerts topic at most; consumption of anomalies pauses while this many are
    /// in flight. Default 1024.
    pub max_in_flight_alerts: usize,
    /// Anomaly ids remembered per partition of the anomalies topic: an anomaly whose id is among them (a
    /// detector that crashed or lost a partition produced it again) is dropped. When a partition arrives, this
    /// many records below its committed offset are read back to remember their ids (see [`crate::dedup`]).
    /// About 32 bytes per id; 0 turns deduplication off. At most 10,000,000. Default 65536.
    pub dedup_ids: usize,
    /// On shutdown, open groups are emitted and deliveries in flight get this long to finish; the rest are
    /// abandoned (their anomalies' offsets are not stored, so they are consumed again). Default 10 s.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Append every alert as one JSON line to this file. Default: none.
    pub alerts_out: Option<PathBuf>,
    /// Document format of the `alerts_out` lines: `netanom`, `ecs` or `ocsf`. Default `netanom`.
    pub alerts_out_format: AlertFormat,
    /// CEF over syslog output (`[alert_router.syslog]`). Default: none.
    pub syslog: Option<SyslogConfig>,
    /// Print one readable line per alert to stdout. Default false.
    pub stdout: bool,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            brokers: "localhost:9092".into(),
            kafka_properties: BTreeMap::new(),
            group_id: "netanom-alert-router".into(),
            anomalies_topic: topics::ANOMALIES.into(),
            alerts_topic: topics::ALERTS.into(),
            alerts_format: AlertFormat::Netanom,
            dead_letter_topic: topics::DEAD_LETTER.into(),
            schema_ids: SchemaIds::BUILT_IN,
            static_assignment: false,
            exactly_once: false,
            memory_budget_mib: crate::budget::DEFAULT_BUDGET_MIB,
            suppression: SuppressionConfig::default(),
            incidents: IncidentConfig::default(),
            webhooks: Vec::new(),
            webhook_secret: None,
            fetch_wait: Duration::from_millis(500),
            retry: RetryConfig::default(),
            max_concurrency: 16,
            max_in_flight_alerts: 1024,
            dedup_ids: 65_536,
            shutdown_grace: Duration::from_secs(10),
            alerts_out: None,
            alerts_out_format: AlertFormat::Netanom,
            syslog: None,
            stdout: false,
        }
    }
}

impl std::fmt::Debug for RouterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let props = netanom_schemas::redact::masked(&self.kafka_properties);
        f.debug_struct("RouterConfig")
            .field("brokers", &self.brokers)
            .field("kafka_properties", &props)
            .field("group_id", &self.group_id)
            .field("anomalies_topic", &self.anomalies_topic)
            .field("alerts_topic", &self.alerts_topic)
            .field("alerts_format", &self.alerts_format)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("schema_ids", &self.schema_ids)
            .field("static_assignment", &self.static_assignment)
            .field("exactly_once", &self.exactly_once)
            .field("memory_budget_mib", &self.memory_budget_mib)
            .field("suppression", &self.suppression)
            .field("incidents", &self.incidents)
            .field("webhooks", &self.webhooks)
            .field("webhook_secret", &self.webhook_secret)
            .field("fetch_wait", &self.fetch_wait)
            .field("retry", &self.retry)
            .field("max_concurrency", &self.max_concurrency)
            .field("max_in_flight_alerts", &self.max_in_flight_alerts)
            .field("dedup_ids", &self.dedup_ids)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("alerts_out", &self.alerts_out)
            .field("alerts_out_format", &self.alerts_out_format)
            .field("syslog", &self.syslog)
            .field("stdout", &self.stdout)
            .finish()
    }
}

/// One configuration problem, naming its key path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} {message}")]
pub struct ConfigError {
    /// Key path, e.g. `alert_router.webhooks[1].url`.
    pub key: String,
    /// What is wrong, with the offending value.
    pub message: String,
}

impl RouterConfig {
    /// The webhooks with `webhook_secret` filled in where a webhook has no secret of its own.
    pub fn effective_webhooks(&self) -> Vec<WebhookConfig> {
        let mut hooks = self.webhooks.clone();
        for h in &mut hooks {
            if h.secret.is_none() {
                h.secret.clone_from(&self.webhook_secret);
            }
        }
        hooks
    }

    /// Settings that are valid but probably not meant, one message each with its key: a webhook that would
    /// be sent unsigned (no `secret` of its own and no `webhook_secret`), so its receiver cannot tell an alert
    /// from a forgery.
    pub fn warnings(&self) -> Vec<ConfigError> {
        self.effective_webhooks()
            .iter()
            .enumerate()
            .filter(|(_, h)| h.secret.is_none())
            .map(|(i, h)| ConfigError {
                key: format!("alert_router.webhooks[{i}]"),
                message: format!(
                    "({}) has no secret and alert_router.webhook_secret is unset: its requests will not be signed",
                    h.url
                ),
            })
            .collect()
    }

    /// Checks every setting and reports all problems at once.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut err =
            |key: &str, message: String| errors.push(ConfigError { key: format!("alert_router.{key}"), message });
        if self.brokers.trim().is_empty() {
            err("brokers", "must not be empty".into());
        }
        if self.group_id.trim().is_empty() {
            err("group_id", "must not be empty".into());
        }
        for (key, topic) in [
            ("anomalies_topic", &self.anomalies_topic),
            ("alerts_topic", &self.alerts_topic),
            ("dead_letter_topic", &self.dead_letter_topic),
        ] {
            if topic.trim().is_empty() {
                err(key, "must not be empty".into());
            }
        }
        for (key, topic) in [("alerts_topic", &self.alerts_topic), ("dead_letter_topic", &self.dead_letter_topic)] {
            if !topic.is_empty() && *topic == self.anomalies_topic {
                err(key, format!("must differ from alert_router.anomalies_topic, both are {topic:?}"));
            }
        }
        if self.suppression.window.is_zero() {
            err("suppression.window", "must be > 0, got 0s".into());
        }
        if self.suppression.flush_after.is_zero() {
            err("suppression.flush_after", "must be > 0, got 0s".into());
        }
        if self.memory_budget_mib == 0 || self.memory_budget_mib > crate::budget::MAX_BUDGET_MIB {
            err(
                "memory_budget_mib",
                format!("must be 1 to {}, got {}", crate::budget::MAX_BUDGET_MIB, self.memory_budget_mib),
            );
        }
        let shares = crate::budget::Shares::of(self.memory_budget_mib);
        let mib = |bytes: usize| bytes.div_ceil(1 << 20);
        match self.suppression.max_groups {
            Some(0) => err("suppression.max_groups", "must be >= 1, got 0".into()),
            Some(n) if crate::suppress::groups_bytes(n) > shares.suppression => err(
                "suppression.max_groups",
                format!(
                    "({n}) needs {} MiB at {} bytes per group, more than the suppression share (3/8) of \
                     alert_router.memory_budget_mib ({} MiB): raise the budget or lower max_groups (the share fits {})",
                    mib(crate::suppress::groups_bytes(n)),
                    crate::suppress::GROUP_BUDGET_BYTES,
                    self.memory_budget_mib,
                    crate::suppress::groups_for(shares.suppression)
                ),
            ),
            _ => {}
        }
        if let Some(n) = self.incidents.max_incidents.filter(|&n| n > 0)
            && crate::incident::incidents_bytes(n) > shares.incidents
        {
            err(
                "incidents.max_incidents",
                format!(
                    "({n}) needs {} MiB at {} bytes per incident, more than the incident share (3/8) of \
                     alert_router.memory_budget_mib ({} MiB): raise the budget or lower max_incidents (the share fits {})",
                    mib(crate::incident::incidents_bytes(n)),
                    crate::incident::INCIDENT_BUDGET_BYTES,
                    self.memory_budget_mib,
                    crate::incident::incidents_for(shares.incidents)
                ),
            );
        }
        let dedup_bytes = self.dedup_ids.saturating_mul(crate::dedup::ID_BUDGET_BYTES);
        if dedup_bytes > shares.dedup {
            err(
                "dedup_ids",
                format!(
                    "({}) needs {} MiB per partition at {} bytes per id, more than the dedup share (1/4) of \
                     alert_router.memory_budget_mib ({} MiB): raise the budget or lower dedup_ids",
                    self.dedup_ids,
                    mib(dedup_bytes),
                    crate::dedup::ID_BUDGET_BYTES,
                    self.memory_budget_mib
                ),
            );
        }
        for (key, problem) in self.suppression.time.validate() {
            err(&format!("suppression.time.{key}"), problem);
        }
        for (key, problem) in self.incidents.validate() {
            err(&format!("incidents.{key}"), problem);
        }
        for (i, hook) in self.webhooks.iter().enumerate() {
            if let Ok(url) = reqwest::Url::parse(&hook.url)
                && let Err(refused) = outbound::check_url(&url, hook.allow_private)
            {
                err(
                    &format!("webhooks[{i}].url"),
                    format!(
                        "({:?}) is refused: {refused}; set alert_router.webhooks[{i}].allow_private = true to allow it",
                        webhook::redact_url(&hook.url)
                    ),
                );
            }
            match reqwest::Url::parse(&hook.url) {
                Ok(url) if url.scheme() == "http" => {}
                Ok(url) if url.scheme() == "https" => {
                    if !cfg!(feature = "rustls-tls") {
                        err(
                            &format!("webhooks[{i}].url"),
                            format!(
                                "is https ({:?}), which needs netanom built with the rustls-tls feature",
                                webhook::redact_url(&hook.url)
                            ),
                        );
                    }
                }
                _ => err(
                    &format!("webhooks[{i}].url"),
                    format!("is not an http(s) URL: {:?}", webhook::redact_url_or_raw(&hook.url)),
                ),
            }
            if let Some(Err(e)) = hook.secret.as_ref().map(webhook::decode_secret) {
                err(&format!("webhooks[{i}].secret"), format!("is not a Standard Webhooks secret: {e}"));
            }
            if hook.timeout.is_zero() {
                err(&format!("webhooks[{i}].timeout"), "must be > 0, got 0s".into());
            }
        }
        if let Some(Err(e)) = self.webhook_secret.as_ref().map(webhook::decode_secret) {
            err("webhook_secret", format!("is not a Standard Webhooks secret: {e}"));
        }
        if self.retry.initial_backoff.is_zero() {
            err("retry.initial_backoff", "must be > 0, got 0s".into());
        }
        if self.retry.max_backoff < self.retry.initial_backoff {
            err(
                "retry.max_backoff",
                format!(
                    "({:?}) must be >= alert_router.retry.initial_backoff ({:?})",
                    self.retry.max_backoff, self.retry.initial_backoff
                ),
            );
        }
        if self.retry.breaker_failures > 0 && self.retry.breaker_cooldown.is_zero() {
            err("retry.breaker_cooldown", "must be > 0 when alert_router.retry.breaker_failures is set, got 0s".into());
        }
        let mut names: Vec<(String, String)> = Vec::new();
        for (i, hook) in self.webhooks.iter().enumerate() {
            let name = webhook::destination_name(hook, i);
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) || name.len() > 100 {
                err(
                    &format!("webhooks[{i}].name"),
                    format!("({name:?}) may hold only letters, digits, '.', '_' and '-', 100 at most"),
                );
            }
            names.push((format!("webhooks[{i}].name"), name));
        }
        if self.syslog.as_ref().is_some_and(|s| s.enabled) {
            names.push(("syslog".into(), crate::syslog::DESTINATION_NAME.into()));
        }
        for (i, (key, name)) in names.iter().enumerate() {
            if let Some((first, _)) = names[..i].iter().find(|(_, n)| n == name) {
                err(
                    key,
                    format!("({name:?}) is also the name of alert_router.{first}: destination names must be unique"),
                );
            }
        }
        if self.fetch_wait > Duration::from_secs(300) {
            err(
                "fetch_wait",
                format!(
                    "must be at most 300s, got {}",
                    humantime_serde::re::humantime::format_duration(self.fetch_wait)
                ),
            );
        }
        if self.max_concurrency == 0 {
            err("max_concurrency", "must be >= 1, got 0".into());
        }
        if self.max_in_flight_alerts == 0 {
            err("max_in_flight_alerts", "must be >= 1, got 0".into());
        }
        if self.dedup_ids > 10_000_000 {
            err("dedup_ids", format!("must be at most 10000000, got {}", self.dedup_ids));
        }
        if let Some(syslog) = self.syslog.as_ref().filter(|s| s.enabled) {
            for (key, message) in syslog.problems() {
                err(&format!("syslog.{key}"), message);
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syslog::{SyslogFormat, TcpFraming, Transport};

    #[test]
    fn defaults_are_valid() {
        RouterConfig::default().validate().unwrap();
    }

    #[test]
    fn destination_names_are_checked_and_unique() {
        let hook = |name: &str| WebhookConfig {
            name: name.into(),
            url: "http://hooks.example/x".into(),
            ..WebhookConfig::default()
        };
        let config = RouterConfig {
            webhooks: vec![hook("pager"), hook("pager"), hook(""), hook("webhook-2"), hook("bad name")],
            syslog: Some(SyslogConfig { address: "syslog.example:514".into(), ..SyslogConfig::default() }),
            ..RouterConfig::default()
        };
        let errors = config.validate().unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            ["alert_router.webhooks[4].name", "alert_router.webhooks[1].name", "alert_router.webhooks[3].name"],
            "{errors:#?}"
        );
        assert!(errors[1].message.contains("webhooks[0].name"), "{}", errors[1]);
        let clash = RouterConfig { webhooks: vec![hook("syslog")], ..config.clone() };
        let errors = clash.validate().unwrap_err();
        assert_eq!(errors[0].key, "alert_router.syslog", "{errors:#?}");
    }

    #[test]
    fn a_webhook_without_any_secret_is_warned_about() {
        let hook = |url: &str, secret: Option<&str>| WebhookConfig {
            url: url.into(),
            secret: secret.map(Secret::new),
            ..WebhookConfig::default()
        };
        let mut config = RouterConfig {
            webhooks: vec![hook("http://a.example/x", Some("whsec_c2VjcmV0")), hook("http://b.example/x", None)],
            ..RouterConfig::default()
        };
        let w: Vec<String> = config.warnings().iter().map(ToString::to_string).collect();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("alert_router.webhooks[1] (http://b.example/x)") && w[0].contains("not be signed"));
        config.webhook_secret = Some(Secret::new("whsec_c2VjcmV0"));
        assert!(config.warnings().is_empty());
        assert!(RouterConfig::default().warnings().is_empty(), "no webhook, nothing unsigned");
    }

    #[test]
    fn validate_reports_every_problem_with_its_key() {
        let config = RouterConfig {
            brokers: String::new(),
            alerts_topic: topics::ANOMALIES.into(),
            suppression: SuppressionConfig { window: Duration::ZERO, ..SuppressionConfig::default() },
            webhooks: vec![
                WebhookConfig { url: "http://127.0.0.1:9/ok".into(), ..WebhookConfig::default() },
                WebhookConfig {
                    name: "ftp server".into(),
                    url: "ftp://example.com/x".into(),
                    secret: Some(Secret::new("nope-c2VjcmV0")),
                    timeout: Duration::ZERO,
                    format: AlertFormat::Ocsf,
                    allow_private: false,
                    digest_above: 0,
                    start_from: crate::StartFrom::Latest,
                },
            ],
            retry: RetryConfig {
                initial_backoff: Duration::from_secs(2),
                max_backoff: Duration::from_secs(1),
                max_attempts: 0,
                breaker_failures: 3,
                breaker_cooldown: Duration::ZERO,
            },
            max_concurrency: 0,
            fetch_wait: Duration::from_secs(301),
            syslog: Some(SyslogConfig { address: "siem.example".into(), facility: 30, ..SyslogConfig::default() }),
            ..RouterConfig::default()
        };
        let errors: Vec<String> = config.validate().unwrap_err().iter().map(ToString::to_string).collect();
        let expect = [
            "alert_router.brokers must not be empty",
            "alert_router.alerts_topic must differ from alert_router.anomalies_topic",
            "alert_router.suppression.window must be > 0",
            "alert_router.webhooks[0].url (\"http://127.0.0.1:9/ok\") is refused: 127.0.0.1 is a loopback address \
             (127.0.0.1); set alert_router.webhooks[0].allow_private = true to allow it",
            "alert_router.webhooks[1].url is not an http(s) URL: \"ftp://example.com/x\"",
            "alert_router.webhooks[1].secret is not a Standard Webhooks secret",
            "alert_router.webhooks[1].timeout must be > 0",
            "alert_router.retry.max_backoff (1s) must be >= alert_router.retry.initial_backoff (2s)",
            "alert_router.retry.breaker_cooldown must be > 0",
            "alert_router.webhooks[1].name (\"ftp server\") may hold only letters",
            "alert_router.fetch_wait must be at most 300s, got 5m 1s",
            "alert_router.max_concurrency must be >= 1",
            "alert_router.syslog.address must be host:port",
            "alert_router.syslog.facility must be in 0..=23, got 30",
        ];
        for e in expect {
            assert!(errors.iter().any(|x| x.starts_with(e)), "missing {e:?} in {errors:#?}");
        }
        assert_eq!(errors.len(), expect.len(), "{errors:#?}");
        assert!(!errors.iter().any(|e| e.contains("c2VjcmV0")), "secret leaked: {errors:#?}");
    }

    #[test]
    fn explicit_table_sizes_must_fit_the_budget() {
        let config = RouterConfig {
            memory_budget_mib: 1,
            suppression: SuppressionConfig { max_groups: Some(1_000_000), ..SuppressionConfig::default() },
            incidents: IncidentConfig { max_incidents: Some(1_000_000), ..IncidentConfig::default() },
            ..RouterConfig::default()
        };
        let errors: Vec<String> = config.validate().unwrap_err().iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(errors[0].starts_with("alert_router.suppression.max_groups (1000000) needs"), "{errors:#?}");
        assert!(errors[0].contains("memory_budget_mib (1 MiB)") && errors[0].contains("the share fits"), "{errors:#?}");
        assert!(errors[1].starts_with("alert_router.incidents.max_incidents (1000000) needs"), "{errors:#?}");
        assert!(errors[2].starts_with("alert_router.dedup_ids (65536) needs 3 MiB per partition"), "{errors:#?}");
        // What the budget fits is accepted.
        let share = crate::budget::Shares::of(1);
        let fits = RouterConfig {
            memory_budget_mib: 1,
            suppression: SuppressionConfig {
                max_groups: Some(crate::suppress::groups_for(share.suppression)),
                ..SuppressionConfig::default()
            },
            incidents: IncidentConfig::default(),
            dedup_ids: 4096,
            ..RouterConfig::default()
        };
        fits.validate().unwrap();
        let zero = RouterConfig { memory_budget_mib: 0, ..RouterConfig::default() };
        let errors = zero.validate().unwrap_err();
        assert!(errors.iter().any(|e| e.to_string() == "alert_router.memory_budget_mib must be 1 to 1048576, got 0"));
    }

    #[test]
    fn debug_masks_secrets() {
        let mut config = RouterConfig::default();
        config.kafka_properties.insert("sasl.password".into(), "hunter2".into());
        config.kafka_properties.insert("security.protocol".into(), "SASL_SSL".into());
        config.webhooks.push(WebhookConfig {
            url: "http://h/".into(),
            secret: Some(Secret::new("whsec_aHVudGVyMw==")),
            ..WebhookConfig::default()
        });
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("aHVudGVyMw"), "{shown}");
        assert!(shown.contains("SASL_SSL"));
    }

    #[test]
    fn deserializes_with_humantime_and_rejects_unknown_keys() {
        let config: RouterConfig = serde_json::from_value(serde_json::json!({
            "suppression": {"window": "2m", "flush_after": "1s"},
            "webhooks": [{"url": "http://127.0.0.1:1/", "secret": "whsec_c2VjcmV0", "timeout": "250ms"}],
            "retry": {"max_attempts": 3}
        }))
        .unwrap();
        assert_eq!(config.suppression.window, Duration::from_secs(120));
        assert_eq!(config.suppression.max_groups, None, "from the budget");
        assert_eq!(config.webhooks[0].timeout, Duration::from_millis(250));
        assert_eq!(config.retry.initial_backoff, Duration::from_millis(200));
        assert!(serde_json::from_value::<RouterConfig>(serde_json::json!({"nope": 1})).is_err());
    }

    #[test]
    fn formats_and_syslog_deserialize_and_default_to_the_old_behaviour() {
        let defaults: RouterConfig = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(
            (defaults.alerts_format, defaults.alerts_out_format, &defaults.syslog),
            (AlertFormat::Netanom, AlertFormat::Netanom, &None)
        );
        let config: RouterConfig = serde_json::from_value(serde_json::json!({
            "alerts_format": "ocsf",
            "alerts_out_format": "ecs",
            "webhooks": [
                {"url": "http://127.0.0.1:1/", "format": "ecs", "allow_private": true},
                {"url": "http://127.0.0.1:1/", "allow_private": true}
            ],
            "syslog": {"address": "127.0.0.1:514", "transport": "tcp", "format": "rfc3164",
                       "tcp_framing": "newline", "timeout": "2s"}
        }))
        .unwrap();
        assert_eq!((config.alerts_format, config.alerts_out_format), (AlertFormat::Ocsf, AlertFormat::Ecs));
        assert_eq!((config.webhooks[0].format, config.webhooks[1].format), (AlertFormat::Ecs, AlertFormat::Netanom));
        let syslog = config.syslog.clone().unwrap();
        assert!(syslog.enabled, "a present table is on unless disabled");
        assert_eq!(
            (syslog.transport, syslog.format, syslog.tcp_framing),
            (Transport::Tcp, SyslogFormat::Rfc3164, TcpFraming::Newline)
        );
        assert_eq!((syslog.timeout, syslog.facility), (Duration::from_secs(2), 16));
        config.validate().unwrap();
        // Serialize round-trips (the root prints the effective configuration).
        let back: RouterConfig = serde_json::from_value(serde_json::to_value(&config).unwrap()).unwrap();
        assert_eq!(back.syslog, config.syslog);
        assert_eq!(back.webhooks[0].format, AlertFormat::Ecs);
        assert!(back.webhooks[0].allow_private && !RouterConfig::default().webhooks.iter().any(|w| w.allow_private));
        assert!(
            serde_json::from_value::<RouterConfig>(serde_json::json!({"syslog": {"address": "h:1", "port": 2}}))
                .is_err()
        );
        assert!(serde_json::from_value::<RouterConfig>(serde_json::json!({"alerts_format": "cef"})).is_err());
        // A disabled table is not validated.
        let off = RouterConfig {
            syslog: Some(SyslogConfig { enabled: false, ..SyslogConfig::default() }),
            ..RouterConfig::default()
        };
        off.validate().unwrap();
    }
}
