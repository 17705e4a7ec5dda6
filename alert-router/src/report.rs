//! What a run of the alert router did ([`RouterReport`]) and why it stopped with an error ([`RouterError`]).

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::webhook;

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterReport {
    /// Records consumed from the anomalies topic (poison and duplicates included, ids-only records not).
    pub anomalies_consumed: u64,
    /// Anomalies dropped because their id was already accounted for (a detector produced them again).
    pub duplicates_dropped: u64,
    /// Records read back below the committed offset of a partition that arrived, only to remember their ids.
    pub anomalies_rebuilt: u64,
    /// Alerts produced to the alerts topic.
    pub alerts_emitted: u64,
    /// (alert, webhook) deliveries that got a 2xx (by the webhooks' destinations during this run).
    pub webhook_delivered: u64,
    /// (alert, webhook) deliveries parked on the dead-letter topic (refused, or `max_attempts` used up).
    pub webhook_failed: u64,
    /// Poison anomalies sent to the dead-letter topic.
    pub dead_lettered_anomalies: u64,
    /// Alert records sent to the dead-letter topic (one per parked (alert, destination)).
    pub dead_lettered_alerts: u64,
    /// Suppression windows emitted early because `suppression.max_groups` were open or their bytes exceeded their
    /// share of `memory_budget_mib`.
    pub groups_evicted: u64,
    /// Incidents closed early because `incidents.max_incidents` were open or their bytes exceeded their share of
    /// `memory_budget_mib`.
    pub incidents_evicted: u64,
    /// Alerts sent to the syslog receiver.
    pub syslog_delivered: u64,
    /// Alerts the syslog destination parked (`max_attempts` used up; each one is on the dead-letter topic).
    pub syslog_failed: u64,
}

/// Why the router stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The configuration is invalid.
    #[error("invalid alert_router configuration:\n  {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Config(Vec<ConfigError>),
    /// A Kafka client operation failed.
    #[error("kafka: {what}: {source}")]
    Kafka {
        /// What was being done.
        what: String,
        /// The error.
        source: Box<rdkafka::error::KafkaError>,
    },
    /// A record could not be produced (after librdkafka's own retries).
    #[error("producing to {topic} (key {key:?}): {source}")]
    Produce {
        /// Topic.
        topic: String,
        /// Record key.
        key: String,
        /// The error.
        source: Box<rdkafka::error::KafkaError>,
    },
    /// The webhook client could not be set up.
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookError),
    /// The alerts-out file could not be written.
    #[error("writing alerts to {path}: {source}")]
    AlertsOut {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An alert could not be serialized.
    #[error("serializing alert {id}: {source}")]
    Encode {
        /// Alert id.
        id: String,
        /// The error.
        source: serde_json::Error,
    },
    /// An internal task failed.
    #[error("delivery task failed: {0}")]
    Task(String),
    /// `netanom dlq replay` was asked for something it cannot do.
    #[error("dlq replay: {0}")]
    Replay(String),
    /// A destination stopped delivering: the router stops too, so that it is restarted.
    #[error("destination {name} failed: {source}")]
    Destination {
        /// The destination's name.
        name: String,
        /// Why it stopped.
        source: Box<RouterError>,
    },
}

/// `e` with the value of a secret property masked (a client configuration error quotes the value).
pub(crate) fn redacted(e: rdkafka::error::KafkaError) -> rdkafka::error::KafkaError {
    match e {
        rdkafka::error::KafkaError::ClientConfig(r, desc, key, value) => {
            let (desc, value) = netanom_schemas::redact::config_error(desc, &key, value);
            rdkafka::error::KafkaError::ClientConfig(r, desc, key, value)
        }
        e => e,
    }
}
