//! What a detector run ends with: its [`DetectorReport`], or the [`DetectorError`] that stopped it.

use std::collections::BTreeMap;

use netanom_schemas::AnomalyKind;

use crate::models::{ModelError, ModelInForce};
use crate::validation::ConfigError;

/// Why the detector stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    /// The configuration is invalid; every problem is listed.
    #[error("invalid detector configuration: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Config(Vec<ConfigError>),
    /// A model file could not be loaded.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A Kafka client operation failed.
    #[error("kafka: {what}: {source}")]
    Kafka {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: Box<rdkafka::error::KafkaError>,
    },
    /// A record could not be delivered; its input offsets were not stored.
    #[error("producing to {topic} (key {key}) failed: {source}")]
    Produce {
        /// Topic.
        topic: String,
        /// Record key.
        key: String,
        /// Cause.
        #[source]
        source: Box<rdkafka::error::KafkaError>,
    },
    /// A Kafka transaction of exactly-once output (`kafka.exactly_once = true`) failed: the broker refused to
    /// start transactions, or one had to be aborted. Nothing of it is visible to `read_committed` readers and its
    /// input offsets are not committed: a restart (same `transactional_id`) resumes from the committed offsets.
    #[error("kafka transaction ({transactional_id}, kafka.exactly_once = true): {what}: {source}")]
    Transaction {
        /// The producer's `transactional.id`.
        transactional_id: String,
        /// The step that failed.
        what: String,
        /// Cause.
        #[source]
        source: Box<rdkafka::error::KafkaError>,
    },
    /// The processing thread failed.
    #[error("detector worker failed: {0}")]
    Worker(String),
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetectorReport {
    /// Records consumed (both topics, poison included).
    pub records: u64,
    /// Packet batches processed.
    pub batches: u64,
    /// Packets processed.
    pub packets: u64,
    /// Packets of batches dead-lettered as outside the packet-time skew (`[detector.time]`), not processed.
    pub packets_time_rejected: u64,
    /// Destination statistics records consumed.
    pub destination_stats_consumed: u64,
    /// Destination statistics records produced.
    pub destination_stats_produced: u64,
    /// Anomalies produced, by kind (every kind present).
    pub anomalies: BTreeMap<AnomalyKind, u64>,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Hosts tracked at the end.
    pub hosts_tracked: usize,
    /// Hosts evicted (idle or capacity).
    pub hosts_evicted: u64,
    /// The models in force at the end (isolation forest, host profiles, supervised forest), those loaded or
    /// trained.
    pub models: Vec<ModelInForce>,
}
