//! netanom detector: consumes packet batches (one source each) and destination statistics from Kafka, runs
//! the detectors listed below and produces anomalies.
//!
//! - [`rate`]: new-connection arrival rate per host (kind `rate`).
//! - [`fanout`]: distinct ports / hosts contacted per window, i.e. scans and sweeps (kind `fanout`).
//! - [`forest`]: extended isolation forest over the per-batch [`features`], seeded, persisted, retrained on
//!   schedule and published to the scoring API (kind `isolation`).
//! - [`autoencoder`]: an ensemble of small autoencoders over subsets of the same per-batch features, scored by
//!   reconstruction error (KitNET), seeded, persisted in a file of its own; off by default (kind `autoencoder`).
//! - [`victim`]: many sources converging on one destination, aggregated across detectors through the
//!   destinations topic (kind `victim`).
//! - [`profile`]: k-means over per-host behaviour profiles (rates, fan-out, protocol mix, flags, sizes per 10 s
//!   window), a calibrated distance threshold, per-host thresholds, persisted in a file of its own (kind `profile`).
//! - [`beacon`]: connections to one destination at a fixed period, like C2 check-ins (kind `beacon`).
//! - [`supervised`]: a random forest trained offline on labelled traffic (`netanom train --supervised`), loaded
//!   from `[detector.supervised] model_path` (kind `supervised`).
//! - [`misuse`]: stealth-scan probes, brute force against login services and DNS tunnels (kinds `probe`,
//!   `brute_force`, `dns_tunnel`).
//! - [`icmp_tunnel`]: echo requests carrying data rather than ping's pad, by payload entropy and sizes (kind
//!   `icmp_tunnel`).
//! - [`flood`]: UDP, ICMP and other non-TCP packets at flood rate from one host (kind `flood`).
//! - [`exfiltration`]: bulk uploads to one destination out of proportion to what comes back and to the host's
//!   history (kind `exfiltration`).
//!
//! Each kind's module holds its `[detector.<kind>]` configuration section with its validation, its per-host
//! state, its implementation of [`kind::DetectorKind`] and its tests; [`kinds`] registers each kind on one line,
//! and from that list [`config`] gathers the sections with the consumer settings, [`state`] the per-host state
//! and [`engine`] the calls of each kind's hooks. [`features`] defines the
//! named feature vectors the models use, [`model_file`] tells model files apart and [`models`] loads the ones
//! a detector starts from, [`state`] holds the per-host map bounded by its memory budget (its tables counted in
//! bytes by [`bytes`]), [`engine`] ties the
//! detectors together without Kafka, [`anomaly`] builds the records, [`api`] serves the rules and the model in
//! force over HTTP (`POST /api/v1/analyze`, settings in [`api_config`], bodies parsed by [`request`], capture
//! clients' sources remembered by [`sources`]) and `consume` is the Kafka loop behind [`run`]. Detectors scale horizontally as one
//! consumer group: each owns the hosts of its packets partitions and the victims of its destinations
//! partitions; `ownership` decides where a partition that moves starts and which records rebuild its state.

pub mod anomaly;
pub mod api;
pub mod api_config;
pub mod autoencoder;
pub mod beacon;
pub mod bytes;
pub mod config;
mod consume;
pub mod engine;
pub mod exfiltration;
pub mod fanout;
pub mod features;
pub mod fixtures;
pub mod flood;
pub mod forest;
pub mod handles;
pub mod icmp_tunnel;
pub mod kind;
pub mod kinds;
pub mod metrics;
pub mod misuse;
pub mod model_file;
pub mod models;
mod models_topic;
mod outcome;
mod ownership;
pub mod profile;
pub mod rate;
pub mod request;
pub mod sources;
pub mod state;
pub mod supervised;
pub mod time;
mod transaction;
pub mod validation;
pub mod victim;

use tokio_util::sync::CancellationToken;

pub use config::DetectorConfig;
pub use engine::{Engine, EngineStats};
pub use fanout::FanoutConfig;
pub use forest::{ForestConfig, ForestError, ModelFeed, TrainedForest};
pub use handles::{Handles, Share};
pub use model_file::ModelKind;
pub use models::{ModelError, ModelInForce, Models};
pub use outcome::{DetectorError, DetectorReport};
pub use profile::ProfileConfig;
pub use rate::RateConfig;
pub use state::StateConfig;
pub use supervised::SupervisedConfig;
pub use validation::ConfigError;
pub use victim::VictimConfig;

/// Runs the detector with its runtime `handles` (model feed, partition share). `shutdown` stops it promptly
/// (pending output is flushed, offsets of acknowledged work committed); `role.drain`, when it fires, makes it
/// process every record present at that moment (packets first, then the destination statistics they caused) and
/// return. `role.ready` is set while it has its partitions; its flushed clients are dropped on `role.teardown`.
pub async fn run(
    config: DetectorConfig,
    handles: Handles,
    shutdown: CancellationToken,
    role: netanom_handles::RoleHandles,
) -> Result<DetectorReport, DetectorError> {
    consume::run(config, handles, shutdown, role).await
}
