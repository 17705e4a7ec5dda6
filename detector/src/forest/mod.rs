//! Isolation detector (kind `isolation`): an extended isolation forest (crate `extended-isolation-forest`)
//! over a fixed feature vector describing a host's behaviour in one packet batch (one source, at most ~1 s).
//! Owns the feature vector, seeded reproducible training, threshold calibration, persistence and explanations.
//!
//! # Reproducible training
//!
//! The crate trains with `thread_rng`, so two runs on the same data give different forests. [`train`] builds
//! the trees itself with a seeded ChaCha8 RNG, following the crate's algorithm call for call (sample
//! `sample_size` vectors without replacement per tree; at each node an intercept drawn uniformly in the
//! sample's bounding box, a normal vector from a standard normal with `features − extension_level − 1`
//! coordinates zeroed, split by the sign of (x − p)·n, depth limit ceil(log2(sample_size))), writes the
//! result in the crate's serde representation and deserialises it, so scoring is the crate's own code.
//!
//! # Threshold
//!
//! Scores are computed for every training vector; the threshold is their `threshold_quantile` (default 1.0,
//! the most isolated training vector) plus `threshold_margin` (default 0.02), but never below
//! `threshold_floor` (default 0.62). The quantile adapts to how spread the training traffic is; a lower
//! quantile (e.g. 0.995) flags that share of ordinary batches by construction, which at one vector per batch
//! is a steady stream of false alarms. The floor keeps a forest trained on very uniform traffic from flagging
//! ordinary variation (0.5 means "no evidence"; above 0.6 a vector isolates in clearly fewer splits than
//! average). Measured on the synthetic fixtures (512 training batches, trees of 256, extension 1):
//!
//! | trees | threshold | unseen benign max | benign above threshold | 400-port scans (min) | µs/score |
//! |------:|----------:|------------------:|-----------------------:|---------------------:|---------:|
//! |   100 |     0.748 |             0.751 |        1 / 4,220       |                0.765 |     25.8 |
//! |    50 |     0.736 |             0.760 |        2 / 4,220       |                0.769 |     11.5 |
//!
//! So about one ordinary batch in 2,000 isolates (the fixtures' rare all-ACK batches); the per-host cooldown
//! and the alert router's suppression absorb that, and the rule detectors carry the known attacks.
//!
//! # Features: the host's own traffic
//!
//! The vector describes the packets a host sends on flows it opened ([`crate::features::own_features`]);
//! replies (a scanned victim's SYN-ACKs and RSTs, a server's answers) are the other side's doing and are left
//! out, so a batch with fewer than `min_packets` (default 16) own packets is neither trained on nor scored.
//!
//! # Warm-up
//!
//! A detector on Kafka trains with its group ([`shared`]): each partition contributes its first
//! ceil(`warmup_samples` / partitions) clean vectors to the models topic (a vector is clean once
//! `warmup_horizon` of packet time passed with no rule flagging its host); the owner of partition 0 publishes
//! the recipe of the model in force, and every detector trains the same forest from it and hot-loads it.
//! Batches judged while the model is on its way wait in a bounded backlog and are scored when it arrives, so a
//! replay judges every batch with the one model.
//!
//! # The bar
//!
//! An anomaly needs `confirm_batches` (3) of a host's batches above the threshold within `confirm_window`
//! (1 min): ordinary hosts isolate in a single batch now and then, attacks keep isolating. Without
//! Kafka (an engine of its own), the first `warmup_samples` vectors this detector sees are the training set.
//! A persisted model (`model_path`) skips the warm-up. With `retrain_every`, the model is replaced on
//! schedule by generations trained on recent traffic ([`lifecycle`]).

pub mod config;
mod detector;
pub mod flat;
pub mod lifecycle;
pub mod model;
pub mod shared;

pub use config::ForestConfig;
pub use detector::{IsolationDetector, Verdicts, isolation_anomaly, isolation_reason};
pub use lifecycle::{ModelFeed, ModelPublisher, Retrainer};
pub use model::{ForestError, TrainOptions, TrainedForest, generation_seed, train, train_generation};
