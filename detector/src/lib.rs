//! netanom detector: consumes packet batches (one source each) and destination statistics from Kafka, runs
//! the detectors listed below and produces anomalies.
//!
//! - [`window`]: new-connection arrival rate per host (kind `rate`).
//! - [`fanout`]: distinct ports / hosts contacted per window, i.e. scans and sweeps (kind `fanout`).
//! - [`forest`]: extended isolation forest over per-batch behaviour, seeded and persisted (kind `isolation`).
//! - [`victim`]: many sources converging on one destination, aggregated across detectors through the
//!   destinations topic (kind `victim`).
//! - [`profile`]: k-means over per-host behaviour profiles (rates, fan-out, protocol mix, flags, sizes per 10 s
//!   window), a calibrated distance threshold, per-host thresholds, persisted with the forest (kind `profile`).
//! - [`beacon`]: connections to one destination at a fixed period, like C2 check-ins (kind `beacon`).
//! - [`supervised`]: a random forest trained offline on labelled traffic (`netanom train --supervised`), loaded
//!   from `[detector.supervised] model_path` (kind `supervised`).
//!
//! [`state`] holds the bounded per-host map, [`engine`] ties the detectors together without Kafka, [`anomaly`]
//! builds the records, [`lifecycle`] retrains the forest on schedule and publishes the model in force, [`api`]
//! serves it over HTTP (`POST /api/v1/analyze`) and `consume` is the Kafka loop behind [`run`]. Detectors scale
//! horizontally as one consumer group: each owns the hosts of its packets partitions and the victims of its
//! destinations partitions; `ownership` decides where a partition that moves starts and which records rebuild
//! its state.

pub mod anomaly;
pub mod api;
pub mod beacon;
pub mod config;
mod consume;
pub mod engine;
pub mod fanout;
pub mod fixtures;
pub mod flat;
pub mod forest;
pub mod lifecycle;
pub mod metrics;
pub mod misuse;
mod ownership;
pub mod profile;
pub mod state;
pub mod supervised;
pub mod victim;
pub mod window;

use std::collections::BTreeMap;

use netanom_schemas::AnomalyKind;
use tokio_util::sync::CancellationToken;

pub use config::{
    ConfigError, DetectorConfig, FanoutConfig, ForestConfig, ProfileConfig, RateConfig, Share, StateConfig,
    SupervisedConfig, VictimConfig,
};
pub use engine::{Engine, EngineStats};
pub use forest::{ForestError, TrainedForest};
pub use lifecycle::ModelFeed;

/// Why the detector stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    /// The configuration is invalid; every problem is listed.
    #[error("invalid detector configuration: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Config(Vec<ConfigError>),
    /// The persisted isolation model could not be loaded.
    #[error(transparent)]
    Model(#[from] ForestError),
    /// The supervised model could not be loaded.
    #[error(transparent)]
    Supervised(#[from] supervised::SupervisedError),
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
    /// Version of the isolation model, if one was trained or loaded.
    pub model_version: Option<String>,
}

/// Runs the detector. `shutdown` stops it promptly (pending output is flushed, offsets of acknowledged work
/// committed); `handles.drain`, when it fires, makes it process every record present at that moment (packets
/// first, then the destination statistics they caused) and return. `handles.ready` is set while it has its
/// partitions; its flushed clients are dropped on `handles.teardown`.
pub async fn run(
    config: DetectorConfig,
    shutdown: CancellationToken,
    handles: netanom_handles::RoleHandles,
) -> Result<DetectorReport, DetectorError> {
    consume::run(config, shutdown, handles).await
}
