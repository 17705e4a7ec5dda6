//! The detector's configuration: every key, its default and its validation. Owns no behaviour beyond checking
//! values; each detector module reads its own section.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use netanom_schemas::{SchemaIds, topics};
use serde::Deserialize;

/// One configuration problem, naming the key path (e.g. `detector.rate.window_packets`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} {problem}")]
pub struct ConfigError {
    /// Full key path, e.g. `detector.rate.window_packets`.
    pub key: String,
    /// What is wrong with it, with the value found.
    pub problem: String,
}

impl ConfigError {
    fn new(key: &str, problem: impl Into<String>) -> Self {
        Self { key: format!("detector.{key}"), problem: problem.into() }
    }
}

/// Configuration of `netanom detector` (the `[detector]` table).
#[derive(Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// Kafka bootstrap servers, `host:port[,host:port]`. Not a key of `[detector]`: the root binary sets it from
    /// `kafka.brokers`. Default `localhost:9092`.
    #[serde(skip)]
    pub brokers: String,
    /// Extra librdkafka properties (security, tuning) applied to the consumer and the producer. Values of secret
    /// keys (password, secret, key, token) print as `***` in `Debug`. Not a key of `[detector]`: the root
    /// binary sets it from `kafka.properties`. Default empty.
    #[serde(skip)]
    pub kafka_properties: BTreeMap<String, String>,
    /// Consumer group id. Every detector of one deployment uses the same group; partitions (and so hosts) are
    /// divided among them. Default `netanom-detector`.
    pub group_id: String,
    /// Topic of packet batches (input). Default `netanom.packets`. Set by the root binary from `topics.packets`
    /// (like the other topics and the schema ids: these are not keys of `[detector]`).
    #[serde(skip)]
    pub packets_topic: String,
    /// Topic of destination partial aggregates (produced and consumed). Default `netanom.destinations`. Set from
    /// `topics.destinations`.
    #[serde(skip)]
    pub destinations_topic: String,
    /// Topic of anomalies (output). Default `netanom.anomalies`. Set from `topics.anomalies`.
    #[serde(skip)]
    pub anomalies_topic: String,
    /// Topic for records that cannot be decoded. Default `netanom.dead-letter`. Set from `topics.dead_letter`.
    #[serde(skip)]
    pub dead_letter_topic: String,
    /// Schema ids of the Confluent framing. Default: the built-in table (1, 2, 3). Set from `[schemas]` (or the
    /// schema registry).
    #[serde(skip)]
    pub schema_ids: SchemaIds,
    /// Records processed per chunk at most; offsets are stored per chunk after its output is acknowledged.
    /// Default 512.
    pub chunk_records: usize,
    /// Longest wait for a chunk to fill before it is processed anyway. Default 50 ms.
    #[serde(with = "humantime_serde")]
    pub chunk_linger: Duration,
    /// Consume every partition of both input topics without joining the consumer group (offsets are still
    /// committed under `group_id`). For a single detector that must own everything at once, as in `netanom run`;
    /// a scaled deployment leaves it off. Default false.
    pub static_assignment: bool,
    /// Per-host state bounds.
    pub state: StateConfig,
    /// Arrival rate of new connections (kind `rate`).
    pub rate: RateConfig,
    /// Scans and sweeps (kind `fanout`).
    pub fanout: FanoutConfig,
    /// Extended isolation forest (kind `isolation`).
    pub forest: ForestConfig,
    /// Destination side, spoofed-source floods (kind `victim`).
    pub victim: VictimConfig,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            brokers: "localhost:9092".to_string(),
            kafka_properties: BTreeMap::new(),
            group_id: "netanom-detector".to_string(),
            packets_topic: topics::PACKETS.to_string(),
            destinations_topic: topics::DESTINATIONS.to_string(),
            anomalies_topic: topics::ANOMALIES.to_string(),
            dead_letter_topic: topics::DEAD_LETTER.to_string(),
            schema_ids: SchemaIds::BUILT_IN,
            chunk_records: 512,
            chunk_linger: Duration::from_millis(50),
            static_assignment: false,
            state: StateConfig::default(),
            rate: RateConfig::default(),
            fanout: FanoutConfig::default(),
            forest: ForestConfig::default(),
            victim: VictimConfig::default(),
        }
    }
}

/// Written out so that secret Kafka properties print masked.
impl std::fmt::Debug for DetectorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetectorConfig")
            .field("brokers", &self.brokers)
            .field("kafka_properties", &netanom_schemas::redact::masked(&self.kafka_properties))
            .field("group_id", &self.group_id)
            .field("packets_topic", &self.packets_topic)
            .field("destinations_topic", &self.destinations_topic)
            .field("anomalies_topic", &self.anomalies_topic)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("schema_ids", &self.schema_ids)
            .field("chunk_records", &self.chunk_records)
            .field("chunk_linger", &self.chunk_linger)
            .field("static_assignment", &self.static_assignment)
            .field("state", &self.state)
            .field("rate", &self.rate)
            .field("fanout", &self.fanout)
            .field("forest", &self.forest)
            .field("victim", &self.victim)
            .finish()
    }
}

/// `[detector.state]`: the per-host state map.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Most hosts (source addresses) tracked at once; beyond it the least recently seen are evicted (counted).
    /// A host costs a few hundred bytes while quiet and up to ~100 KiB while scanning (bounded target sets), so
    /// the default 200,000 keeps an ordinary mix well under 1 GiB. Default 200000.
    pub max_hosts: usize,
    /// A host not seen for this long in packet time is evicted. Default 300 s.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self { max_hosts: 200_000, idle_timeout: Duration::from_secs(300) }
    }
}

/// `[detector.rate]`: new connections per second over the last `window_packets` connection-opening packets.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateConfig {
    /// Whether the detector runs. Default true.
    pub enabled: bool,
    /// Connection-opening packets kept per host (N). Default 100.
    pub window_packets: usize,
    /// New connections per second above which a host is anomalous. Default 200 (benign captures peak at
    /// 4/s; sweeps and floods run at 300 to 20,000/s; see the crate README).
    pub threshold_per_sec: f64,
    /// At most one rate anomaly per host per this much packet time. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
}

impl Default for RateConfig {
    fn default() -> Self {
        Self { enabled: true, window_packets: 100, threshold_per_sec: 200.0, cooldown: Duration::from_secs(10) }
    }
}

/// `[detector.fanout]`: distinct targets of new connections per tumbling window.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FanoutConfig {
    /// Whether the detector runs. Default true.
    pub enabled: bool,
    /// Tumbling window of packet time (aligned to multiples of its length). Default 10 s.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Distinct destination ports on one destination that make a port scan. Default 24 (benign captures
    /// peak at 6; the smallest labelled scan probes 29).
    pub port_threshold: usize,
    /// Distinct destination addresses that make a host sweep. Default 64 (benign captures peak at 22).
    pub host_threshold: usize,
    /// Most (destination, port) targets remembered per host and window; counting stops beyond it. Default 4096.
    pub max_targets: usize,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(10),
            port_threshold: 24,
            host_threshold: 64,
            max_targets: 4096,
        }
    }
}

/// `[detector.forest]`: extended isolation forest over per-batch host behaviour.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForestConfig {
    /// Whether the detector runs. Default true.
    pub enabled: bool,
    /// Batches with fewer packets are neither trained on nor scored: a handful of packets says too little about
    /// behaviour, and a spoofed flood would otherwise make every one-packet spoofed source an outlier (the
    /// victim detector covers those). Default 8.
    pub min_packets: usize,
    /// Feature vectors (one per packet batch) used for training: the first ones this detector sees. Default 512.
    pub warmup_samples: usize,
    /// Trees in the forest. Default 50: scoring walks every tree and the crate's boxed nodes make that memory
    /// bound (~15 µs per vector at 50 trees, ~30 µs at 100); 50 keeps the whole path above 1M packets/s per
    /// core with batches of ~30 packets while scores stay stable to about ±0.02.
    pub trees: usize,
    /// Training vectors drawn (without replacement) per tree; the depth limit is ceil(log2(sample_size)).
    /// Default 256.
    pub sample_size: usize,
    /// Extension level of the hyperplanes, 0 (axis-parallel, classic isolation forest) to features − 1 (fully
    /// extended). Default 1: on the synthetic benign-vs-scan data it separated best (training max 0.73, scan
    /// 0.77; fully extended: 0.80 vs 0.76).
    pub extension_level: usize,
    /// Seed of the training RNG (ChaCha8): the same seed and the same training vectors give the same forest.
    /// Default 0x6e65_7461_6e6f_6d00.
    pub seed: u64,
    /// Quantile of the training scores that the threshold starts from. Default 1.0 (the most isolated
    /// training vector): with per-batch vectors, any lower quantile flags that share of ordinary batches by
    /// construction (0.995 flagged about 1 benign batch in 200 on the synthetic browsing traffic).
    pub threshold_quantile: f64,
    /// Added to that quantile: a vector must isolate clearly faster than anything seen in training. Default
    /// 0.02.
    pub threshold_margin: f64,
    /// The threshold never goes below this score (0.5 is "no evidence either way"). Default 0.62.
    pub threshold_floor: f64,
    /// At most one isolation anomaly per host per this much packet time. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// Load a persisted model (forest + threshold + baseline, JSON written by `TrainedForest::save`) instead
    /// of training. Default none.
    pub model_path: Option<PathBuf>,
    /// Write the trained model here after warm-up. Default none.
    pub save_path: Option<PathBuf>,
}

impl Default for ForestConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_packets: 8,
            warmup_samples: 512,
            trees: 50,
            sample_size: 256,
            extension_level: 1,
            seed: 0x6e65_7461_6e6f_6d00,
            threshold_quantile: 1.0,
            threshold_margin: 0.02,
            threshold_floor: 0.62,
            cooldown: Duration::from_secs(10),
            model_path: None,
            save_path: None,
        }
    }
}

/// `[detector.victim]`: many sources converging on one destination.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VictimConfig {
    /// Whether the detector runs (both producing and consuming destination statistics). Default true.
    pub enabled: bool,
    /// Tumbling window of packet time. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Distinct sources in one window that make a victim. Default 500.
    pub min_sources: u64,
    /// Highest average packets per source for a victim (floods send few packets per spoofed source; a popular
    /// server's clients send many). Default 5.
    pub max_packets_per_source: f64,
    /// Most (destination, window) entries kept on each side; older windows are evicted first. Default 100000.
    pub max_destinations: usize,
    /// Most distinct sources remembered per (destination, window) on the producing side. Default 65536.
    pub max_sources_per_destination: usize,
}

impl Default for VictimConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(10),
            min_sources: 500,
            max_packets_per_source: 5.0,
            max_destinations: 100_000,
            max_sources_per_destination: 65_536,
        }
    }
}

impl DetectorConfig {
    /// Checks every value and reports every problem at once.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errs = Vec::new();
        let mut check = |ok: bool, key: &str, problem: String| {
            if !ok {
                errs.push(ConfigError::new(key, problem));
            }
        };
        check(!self.brokers.trim().is_empty(), "brokers", "must not be empty".into());
        check(!self.group_id.trim().is_empty(), "group_id", "must not be empty".into());
        for (key, v) in [
            ("packets_topic", &self.packets_topic),
            ("destinations_topic", &self.destinations_topic),
            ("anomalies_topic", &self.anomalies_topic),
            ("dead_letter_topic", &self.dead_letter_topic),
        ] {
            check(!v.trim().is_empty(), key, "must not be empty".into());
        }
        check(
            self.packets_topic != self.destinations_topic,
            "destinations_topic",
            format!("must differ from detector.packets_topic, both are {:?}", self.packets_topic),
        );
        check(
            (1..=100_000).contains(&self.chunk_records),
            "chunk_records",
            format!("must be in 1..=100000, got {}", self.chunk_records),
        );
        check(!self.chunk_linger.is_zero(), "chunk_linger", "must be > 0".into());
        check(self.state.max_hosts >= 1, "state.max_hosts", format!("must be >= 1, got {}", self.state.max_hosts));
        check(!self.state.idle_timeout.is_zero(), "state.idle_timeout", "must be > 0".into());
        let r = &self.rate;
        check(
            (2..=100_000).contains(&r.window_packets),
            "rate.window_packets",
            format!("must be in 2..=100000, got {}", r.window_packets),
        );
        check(
            r.threshold_per_sec.is_finite() && r.threshold_per_sec > 0.0,
            "rate.threshold_per_sec",
            format!("must be a positive number, got {}", r.threshold_per_sec),
        );
        let f = &self.fanout;
        check(!f.window.is_zero(), "fanout.window", "must be > 0".into());
        check(f.port_threshold >= 2, "fanout.port_threshold", format!("must be >= 2, got {}", f.port_threshold));
        check(f.host_threshold >= 2, "fanout.host_threshold", format!("must be >= 2, got {}", f.host_threshold));
        check(
            f.max_targets > f.port_threshold.max(f.host_threshold),
            "fanout.max_targets",
            format!(
                "must be > detector.fanout.port_threshold ({}) and detector.fanout.host_threshold ({}), got {}",
                f.port_threshold, f.host_threshold, f.max_targets
            ),
        );
        let e = &self.forest;
        check(e.trees >= 1, "forest.trees", format!("must be >= 1, got {}", e.trees));
        check(e.sample_size >= 2, "forest.sample_size", format!("must be >= 2, got {}", e.sample_size));
        check(
            e.model_path.is_some() || e.warmup_samples >= e.sample_size,
            "forest.warmup_samples",
            format!("must be >= detector.forest.sample_size ({}), got {}", e.sample_size, e.warmup_samples),
        );
        check(
            e.warmup_samples <= 1_000_000,
            "forest.warmup_samples",
            format!("must be <= 1000000, got {}", e.warmup_samples),
        );
        check(
            e.extension_level < crate::forest::FEATURES,
            "forest.extension_level",
            format!("must be < {} (the number of features), got {}", crate::forest::FEATURES, e.extension_level),
        );
        check(
            e.threshold_quantile > 0.0 && e.threshold_quantile <= 1.0,
            "forest.threshold_quantile",
            format!("must be in (0, 1], got {}", e.threshold_quantile),
        );
        check(
            e.threshold_margin.is_finite() && (0.0..0.5).contains(&e.threshold_margin),
            "forest.threshold_margin",
            format!("must be in [0, 0.5), got {}", e.threshold_margin),
        );
        check(
            e.threshold_floor > 0.0 && e.threshold_floor < 1.0,
            "forest.threshold_floor",
            format!("must be in (0, 1), got {}", e.threshold_floor),
        );
        let v = &self.victim;
        check(!v.window.is_zero(), "victim.window", "must be > 0".into());
        check(v.min_sources >= 2, "victim.min_sources", format!("must be >= 2, got {}", v.min_sources));
        check(
            v.max_packets_per_source.is_finite() && v.max_packets_per_source >= 1.0,
            "victim.max_packets_per_source",
            format!("must be >= 1, got {}", v.max_packets_per_source),
        );
        check(v.max_destinations >= 1, "victim.max_destinations", format!("must be >= 1, got {}", v.max_destinations));
        check(
            v.max_sources_per_destination as u64 >= v.min_sources,
            "victim.max_sources_per_destination",
            format!(
                "must be >= detector.victim.min_sources ({}), got {}",
                v.min_sources, v.max_sources_per_destination
            ),
        );
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }
}

/// Nanoseconds of a duration, saturating.
pub(crate) fn ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        DetectorConfig::default().validate().unwrap();
    }

    #[test]
    fn validate_reports_every_problem_with_key() {
        let mut c = DetectorConfig::default();
        c.rate.window_packets = 1;
        c.fanout.port_threshold = 0;
        c.forest.threshold_floor = 1.5;
        c.victim.min_sources = 1;
        let errs = c.validate().unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(text.iter().any(|e| e == "detector.rate.window_packets must be in 2..=100000, got 1"), "{text:?}");
        assert!(text.iter().any(|e| e.starts_with("detector.fanout.port_threshold")));
        assert!(text.iter().any(|e| e.starts_with("detector.forest.threshold_floor")));
        assert!(text.iter().any(|e| e.starts_with("detector.victim.min_sources")));
    }

    #[test]
    fn toml_like_json_rejects_unknown_keys() {
        let err = serde_json::from_str::<DetectorConfig>(r#"{"rate": {"windw_packets": 3}}"#).unwrap_err();
        assert!(err.to_string().contains("windw_packets"));
        let c: DetectorConfig =
            serde_json::from_str(r#"{"rate": {"cooldown": "5s"}, "fanout": {"window": "1m"}}"#).unwrap();
        assert_eq!(c.rate.cooldown, Duration::from_secs(5));
        assert_eq!(c.fanout.window, Duration::from_secs(60));
        assert_eq!(c.rate.window_packets, 100);
    }
}
