//! The detector's configuration: the consumer settings (`[detector]`) and one section per detector kind, each
//! defined, defaulted and validated in its kind's module. [`DetectorConfig::validate`] merges every section's
//! problems. Runtime handles (the model feed of the scoring API, the partition share of `netanom run`) are not
//! configuration: they are passed to [`crate::run`] as [`crate::Handles`].

use std::collections::BTreeMap;
use std::time::Duration;

use netanom_schemas::{SchemaIds, topics};
use serde::Deserialize;

use crate::api_config::ApiConfig;
use crate::kind::{Context, DetectorKind};
use crate::kinds::for_each_kind;
use crate::state::StateConfig;
use crate::time::{SkewConfig, human};
pub use crate::validation::ConfigError;
use crate::validation::Problems;

/// Generates [`DetectorConfig`] with one section per registered kind ([`crate::kinds`]), in registration order.
macro_rules! detector_config {
    ($( $(#[$doc:meta])* $section:ident: $kind:ty, )*) => {
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
        /// Compacted topic of the isolation forest's shared warm-up and of the model in force
        /// (`crate::forest::shared`). Default `netanom.models`. Set from `topics.models`.
        #[serde(skip)]
        pub models_topic: String,
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
        /// Longest time the broker may hold a fetch that finds no new records (librdkafka `fetch.wait.max.ms`).
        /// A Kafka broker answers as soon as records arrive, so this only bounds idle polling; librdkafka's mock
        /// broker (the embedded one of `netanom run`) holds such a fetch for the whole wait, so `netanom run` caps
        /// it at 10 ms there. At most 300 s. Default 500 ms.
        #[serde(with = "humantime_serde")]
        pub fetch_wait: Duration,
        /// Consume every partition of both input topics without joining the consumer group (offsets are still
        /// committed under `group_id`). For a single detector that must own everything at once, as in `netanom run`;
        /// a scaled deployment leaves it off. Default false.
        pub static_assignment: bool,
        /// Exactly-once output (`crate::transaction`): each chunk's anomalies, destination deltas, warm-up samples
        /// and dead letters are produced, and its input offsets committed, in one Kafka transaction, and both input
        /// topics are read `read_committed`. Off: at least once (idempotent producer, offsets stored after the
        /// acknowledgements). Not a key of `[detector]`: the root binary sets it from `kafka.exactly_once`.
        /// Default false.
        #[serde(skip)]
        pub exactly_once: bool,
        /// The producer's `transactional.id` when `kafka.exactly_once` is on: stable per running instance (a
        /// restarted instance with the same id aborts what its predecessor left open) and unique among the
        /// instances running at once (two with one id fence each other). Default: `<group_id>-<group.instance.id>`
        /// when `kafka.properties` sets `group.instance.id`, else `<group_id>-<host name>`; `netanom run` appends
        /// each in-process detector's index. At most 200 bytes (UTF-8).
        pub transactional_id: Option<String>,
        /// Per-host state bounds.
        pub state: StateConfig,
        /// Packet-time skew rule per packets-topic partition (`crate::time`).
        pub time: SkewConfig,
        $( $(#[$doc])* pub $section: <$kind as DetectorKind>::Config, )*
        /// The scoring API (`POST /api/v1/analyze`): token, request timeout, queue.
        pub api: ApiConfig,
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
                models_topic: topics::MODELS.to_string(),
                schema_ids: SchemaIds::BUILT_IN,
                chunk_records: 512,
                chunk_linger: Duration::from_millis(50),
                fetch_wait: Duration::from_millis(500),
                static_assignment: false,
                exactly_once: false,
                transactional_id: None,
                state: StateConfig::default(),
                time: SkewConfig::default(),
                $( $section: Default::default(), )*
                api: ApiConfig::default(),
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
                .field("models_topic", &self.models_topic)
                .field("schema_ids", &self.schema_ids)
                .field("chunk_records", &self.chunk_records)
                .field("chunk_linger", &self.chunk_linger)
                .field("fetch_wait", &self.fetch_wait)
                .field("static_assignment", &self.static_assignment)
                .field("exactly_once", &self.exactly_once)
                .field("transactional_id", &self.transactional_id)
                .field("state", &self.state)
                .field("time", &self.time)
                $( .field(stringify!($section), &self.$section) )*
                .field("api", &self.api)
                .finish()
        }
    }

    impl DetectorConfig {
        /// Checks every value, the consumer settings and each detector's section, and reports every problem at once.
        pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
            let mut p = Problems::new("");
            p.check(!self.brokers.trim().is_empty(), "brokers", || "must not be empty".into());
            p.check(!self.group_id.trim().is_empty(), "group_id", || "must not be empty".into());
            for (key, v) in [
                ("packets_topic", &self.packets_topic),
                ("destinations_topic", &self.destinations_topic),
                ("anomalies_topic", &self.anomalies_topic),
                ("dead_letter_topic", &self.dead_letter_topic),
                ("models_topic", &self.models_topic),
            ] {
                p.check(!v.trim().is_empty(), key, || "must not be empty".into());
            }
            p.check(self.packets_topic != self.destinations_topic, "destinations_topic", || {
                format!("must differ from detector.packets_topic, both are {:?}", self.packets_topic)
            });
            p.check((1..=100_000).contains(&self.chunk_records), "chunk_records", || {
                format!("must be in 1..=100000, got {}", self.chunk_records)
            });
            p.check(!self.chunk_linger.is_zero(), "chunk_linger", || "must be > 0".into());
            p.check(self.fetch_wait <= Duration::from_secs(300), "fetch_wait", || {
                format!("must be at most 300s, got {}", human(self.fetch_wait))
            });
            if let Some(id) = &self.transactional_id {
                p.check(!id.trim().is_empty() && id.len() <= 200, "transactional_id", || {
                    format!("must be 1 to 200 bytes (UTF-8), got {} bytes", id.len())
                });
            }
            let mut errs = p.into_vec();
            errs.extend(self.state.validate());
            errs.extend(crate::time::validate(&self.time));
            let cx = Context { idle_timeout: self.state.idle_timeout };
            $( errs.extend(<$kind as DetectorKind>::validate(&self.$section, &cx)); )*
            errs.extend(self.api.validate());
            if errs.is_empty() { Ok(()) } else { Err(errs) }
        }
    }
    };
}
for_each_kind!(detector_config);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_configuration_errors_name_the_key() {
        let mut c = DetectorConfig::default();
        c.validate().unwrap();
        c.profile.window = std::time::Duration::ZERO;
        c.profile.quantile = 0.0;
        c.profile.margin = f64::NAN;
        c.profile.max_k = 1;
        c.profile.warmup_profiles = 3;
        c.profile.per_host_sigmas = -1.0;
        let text: Vec<String> = c.validate().unwrap_err().iter().map(ToString::to_string).collect();
        for key in ["window", "quantile", "margin", "max_k", "warmup_profiles", "per_host_sigmas"] {
            let key = format!("detector.profile.{key} ");
            assert!(text.iter().any(|e| e.starts_with(&key)), "{key}: {text:?}");
        }
        let mut c = DetectorConfig::default();
        c.profile.window = std::time::Duration::from_secs(200);
        let text = c.validate().unwrap_err()[0].to_string();
        assert!(text.starts_with("detector.profile.window") && text.contains("detector.state.idle_timeout"), "{text}");
    }

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
        c.state.rebuild_records = 10_000_001;
        c.beacon.burst_gap = Duration::from_secs(2);
        c.brute_force.ports.clear();
        c.dns_tunnel.min_queries = 0;
        c.beacon.max_jitter = f64::NAN;
        c.fetch_wait = Duration::from_secs(600);
        c.transactional_id = Some(" ".into());
        let errs = c.validate().unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(text.iter().any(|e| e == "detector.rate.window_packets must be in 2..=100000, got 1"), "{text:?}");
        assert!(text.iter().any(|e| e.starts_with("detector.fanout.port_threshold")));
        assert!(text.iter().any(|e| e.starts_with("detector.forest.threshold_floor")));
        assert!(text.iter().any(|e| e.starts_with("detector.victim.min_sources")));
        assert!(text.iter().any(|e| e.starts_with("detector.brute_force.ports must name at least one port")));
        assert!(text.iter().any(|e| e == "detector.dns_tunnel.min_queries must be >= 1, got 0"));
        assert!(text.iter().any(|e| e == "detector.state.rebuild_records must be in 0..=10000000, got 10000001"));
        assert!(
            text.iter().any(|e| e == "detector.beacon.burst_gap must be < detector.beacon.min_period (1s), got 2s"),
            "{text:?}"
        );
        assert!(text.iter().any(|e| e == "detector.beacon.max_jitter must be in (0, 1), got NaN"), "{text:?}");
        assert!(text.iter().any(|e| e == "detector.fetch_wait must be at most 300s, got 10m"), "{text:?}");
        assert!(
            text.iter().any(|e| e == "detector.transactional_id must be 1 to 200 bytes (UTF-8), got 1 bytes"),
            "{text:?}"
        );
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
