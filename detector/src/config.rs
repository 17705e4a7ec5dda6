//! The detector's configuration: every key, its default and its validation. Owns no behaviour beyond checking
//! values; each detector module reads its own section.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use netanom_schemas::{SchemaIds, topics};
use serde::Deserialize;

use crate::lifecycle::ModelFeed;

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
    /// Where the detector publishes its current isolation model for the scoring API
    /// ([`crate::api::router`]); clones share it. Not a key: the root binary hands the same feed to the HTTP
    /// server. Default: a feed of its own that nothing reads.
    #[serde(skip)]
    pub model_feed: ModelFeed,
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
    /// With `static_assignment`, this detector is one of several in one process and owns only its share of
    /// the partitions (see [`Share`]). Not a key: `netanom run` sets it (`kafka.run_detectors`). Default: all
    /// partitions.
    #[serde(skip)]
    pub share: Option<Share>,
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
    /// k-means over per-host behaviour profiles (kind `profile`).
    pub profile: ProfileConfig,
    /// Periodic check-ins to one destination (kind `beacon`).
    pub beacon: BeaconConfig,
    /// Random forest trained on labelled traffic (kind `supervised`).
    pub supervised: SupervisedConfig,
    /// Packets no standard TCP/IP stack sends: stealth scans, OS fingerprinting (kind `probe`).
    pub probe: ProbeConfig,
    /// Repeated connection attempts to one login service (kind `brute_force`).
    pub brute_force: BruteForceConfig,
    /// Sustained long DNS queries (kind `dns_tunnel`).
    pub dns_tunnel: DnsTunnelConfig,
}

/// One of `count` detectors in one process (`netanom run --detectors N`): it owns the partitions `p` of both
/// input topics with `p % count == index`. When they drain, every one of them finishes the packets (and
/// reports its last destination statistics) before any of them reads the destination statistics to the end,
/// since those come from all of them.
#[derive(Clone, Debug)]
pub struct Share {
    /// This detector's index, `0..count`.
    pub index: u32,
    /// Detectors sharing the partitions.
    pub count: u32,
    /// Waited on by all `count` detectors between the two drain phases.
    pub packets_drained: std::sync::Arc<tokio::sync::Barrier>,
}

impl Share {
    /// The `count` shares of one process.
    pub fn split(count: u32) -> Vec<Share> {
        let count = count.max(1);
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(count as usize));
        (0..count).map(|index| Share { index, count, packets_drained: barrier.clone() }).collect()
    }

    /// Whether partition `p` is this detector's.
    pub fn owns(&self, p: i32) -> bool {
        p.rem_euclid(self.count.max(1) as i32) == self.index as i32
    }
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
            model_feed: ModelFeed::default(),
            chunk_records: 512,
            chunk_linger: Duration::from_millis(50),
            fetch_wait: Duration::from_millis(500),
            static_assignment: false,
            share: None,
            state: StateConfig::default(),
            rate: RateConfig::default(),
            fanout: FanoutConfig::default(),
            forest: ForestConfig::default(),
            victim: VictimConfig::default(),
            profile: ProfileConfig::default(),
            beacon: BeaconConfig::default(),
            supervised: SupervisedConfig::default(),
            probe: ProbeConfig::default(),
            brute_force: BruteForceConfig::default(),
            dns_tunnel: DnsTunnelConfig::default(),
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
            .field("model_feed", &self.model_feed)
            .field("chunk_records", &self.chunk_records)
            .field("chunk_linger", &self.chunk_linger)
            .field("fetch_wait", &self.fetch_wait)
            .field("static_assignment", &self.static_assignment)
            .field("share", &self.share)
            .field("state", &self.state)
            .field("rate", &self.rate)
            .field("fanout", &self.fanout)
            .field("forest", &self.forest)
            .field("victim", &self.victim)
            .field("profile", &self.profile)
            .field("beacon", &self.beacon)
            .field("supervised", &self.supervised)
            .field("probe", &self.probe)
            .field("brute_force", &self.brute_force)
            .field("dns_tunnel", &self.dns_tunnel)
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
    /// Records per partition read again to rebuild state when a rebalance moves a partition (of the packets or
    /// the destinations topic) to this detector: it starts `rebuild_records` before the group's committed
    /// offset and feeds those records to the detectors for state only (no anomaly, no destination statistics,
    /// no offset stored), so moved hosts keep their rate rings, fan-out windows and cooldowns and the victim
    /// sums their windows. Exact when the records cover the longest window (`fanout.window`, `victim.window`,
    /// `rate.cooldown`) and the last `rate.window_packets` connection openings of a partition's hosts: at
    /// least the records one partition receives in 10 s of packet time at peak. A rebuild costs reading that
    /// many records per moved partition. 0 turns it off (moved hosts start cold). Default 20000, 0..=10000000.
    pub rebuild_records: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self { max_hosts: 200_000, idle_timeout: Duration::from_secs(300), rebuild_records: 20_000 }
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
    /// Sliding window of the slow sweep count: distinct destinations of new connections over the last
    /// `slow_window` of packet time, for sweeps too slow for the 10 s window. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub slow_window: Duration,
    /// Distinct destinations within `slow_window` that make a slow sweep. Default 64 (benign captures peak at
    /// 29 in a minute, a page of a news site; the slow UDP sweep of the captures reaches 96 in 51 s).
    pub slow_host_threshold: usize,
    /// Distinct destinations of ICMP echo requests within `slow_window` that make a ping sweep. Default 16
    /// (benign captures ping at most 1 address a minute; the smallest labelled ping sweep reaches 18 in 1.6 s,
    /// broadcast and network addresses included). A monitoring server that pings its fleet crosses it.
    pub icmp_host_threshold: usize,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(10),
            port_threshold: 24,
            host_threshold: 64,
            max_targets: 4096,
            slow_window: Duration::from_secs(60),
            slow_host_threshold: 64,
            icmp_host_threshold: 16,
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
    /// Write the trained model here after warm-up, and each retrained generation after it (see
    /// `retrain_every`), so that a restart with `model_path` set to the same file resumes from the latest
    /// model. Default none.
    pub save_path: Option<PathBuf>,
    /// Retrain the forest every this much packet time on a sample of the traffic seen since the previous
    /// training (`retrain_samples` vectors, guarded by `retrain_guard`), off the hot path, with a seed derived
    /// from `seed` and the generation; the model version gains `-g<generation>`. E.g. `"6h"`; at least `1m`.
    /// Default none (off): the model trained at warm-up (or loaded from `model_path`) stays for the whole run,
    /// so a replay, a capture or a comparison between detectors is judged by one model, and a slow change of
    /// the traffic cannot move the threshold. Turn it on for long-running detectors whose traffic drifts.
    #[serde(default, with = "humantime_serde")]
    pub retrain_every: Option<Duration>,
    /// Vectors in the retraining reservoir: a uniform sample (seeded) of the interval's batches that scored at
    /// most the current threshold and whose host no detector flagged. Default 512, like `warmup_samples`, so
    /// every generation's threshold is calibrated on as many vectors as the first; at least `sample_size`.
    pub retrain_samples: usize,
    /// Guard window in packet time: a vector is kept out of the retraining sample when its host was flagged by
    /// any detector (any kind) from this long before the vector up to the retraining. A host that slowly ramps
    /// up a scan is flagged by the rules before the forest would learn its traffic as normal. Hosts remembered
    /// are bounded by `detector.state.max_hosts` (oldest flags forgotten first). Default 1 h.
    #[serde(with = "humantime_serde")]
    pub retrain_guard: Duration,
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
            retrain_every: None,
            retrain_samples: 512,
            retrain_guard: Duration::from_secs(3600),
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
    /// How often, in packet time, the producing side reports its deltas to the destinations topic: one record
    /// per active (destination, window) per report, whatever the number of chunks in between. Shorter reports
    /// victims sooner; longer sends fewer records. At the end of the input (drain) everything pending is
    /// reported. Default 1 s; at most `victim.window`.
    #[serde(with = "humantime_serde")]
    pub report_every: Duration,
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
            report_every: Duration::from_secs(1),
        }
    }
}

/// `[detector.supervised]`: a random forest trained on labelled traffic by `netanom train --supervised`,
/// scoring every batch of at least the model's minimum size beside the unsupervised detectors.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisedConfig {
    /// Model file written by `netanom train --supervised --out FILE` (format `netanom-rf-v1`). The detector runs
    /// only when this is set; the file must exist and is checked in full at start. Default none (off).
    pub model_path: Option<PathBuf>,
    /// P(attack) at or above which a batch is an anomaly, in (0, 1]. Default none: the model's own threshold,
    /// the cut with the best F1 on the training data's out-of-fold probabilities (printed by the training).
    pub threshold: Option<f64>,
    /// At most one supervised anomaly per host per this much packet time. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
}

impl Default for SupervisedConfig {
    fn default() -> Self {
        Self { model_path: None, threshold: None, cooldown: Duration::from_secs(10) }
    }
}

/// `[detector.probe]`: packets no standard TCP/IP stack sends (TCP with no flags, SYN+FIN, SYN+RST, FIN/PSH/URG
/// without ACK; ICMP echo with a non-zero code, timestamp, information and address-mask requests). Defaults
/// measured on the labelled captures; see [`crate::misuse`].
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// Whether the rule runs. Default true.
    pub enabled: bool,
    /// Sliding window of packet time. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Such packets from one host within `window` that make an anomaly. Default 3 (benign captures send none;
    /// the smallest labelled stealth scan sends 3 in 53 s).
    pub min_packets: u32,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self { enabled: true, window: Duration::from_secs(60), min_packets: 3 }
    }
}

/// `[detector.brute_force]`: TCP connection attempts (SYNs) from one host to one login service. See
/// [`crate::misuse`].
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BruteForceConfig {
    /// Whether the rule runs. Default true.
    pub enabled: bool,
    /// Sliding window of packet time. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Attempts to one (destination, port) within `window` that make an anomaly. Default 20 (benign captures
    /// open at most 1 a minute to a login port; nmap's ssh-brute opens 67 in 13 s).
    pub min_connections: u32,
    /// Destination ports of login services. Default: FTP 21, SSH 22, Telnet 23, SMTP submission 25/465/587,
    /// POP3 110/995, IMAP 143/993, LDAP 389/636, SMB 445, MSSQL 1433, Oracle 1521, MySQL 3306, RDP 3389,
    /// PostgreSQL 5432, VNC 5900, WinRM 5985/5986, VMware authd 902, Redis 6379, MongoDB 27017.
    pub ports: Vec<u16>,
    /// Services tracked per host; a new one replaces an entry idle for two windows, else it is not counted.
    /// Default 32.
    pub max_services: usize,
}

impl Default for BruteForceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(60),
            min_connections: 20,
            ports: vec![
                21, 22, 23, 25, 110, 143, 389, 445, 465, 587, 636, 902, 993, 995, 1433, 1521, 3306, 3389, 5432, 5900,
                5985, 5986, 6379, 27017,
            ],
            max_services: 32,
        }
    }
}

/// `[detector.dns_tunnel]`: DNS queries (to port 53) of at least `long_query_bytes` of payload from one host.
/// See [`crate::misuse`].
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsTunnelConfig {
    /// Whether the rule runs. Default true.
    pub enabled: bool,
    /// Sliding window of packet time. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Payload bytes from which a query counts as long. Default 80 (benign queries of the labelled captures
    /// reach 66).
    pub long_query_bytes: u32,
    /// Long queries from one host within `window` that make an anomaly. Default 10 (dnscat sends 89 a minute).
    pub min_queries: u32,
}

impl Default for DnsTunnelConfig {
    fn default() -> Self {
        Self { enabled: true, window: Duration::from_secs(60), long_query_bytes: 80, min_queries: 10 }
    }
}

/// `[detector.beacon]`: a host opening connections to one destination at a fixed period (C2 check-ins). The
/// defaults were measured on the labelled captures; see [`crate::beacon`].
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BeaconConfig {
    /// Whether the detector runs. Default true.
    pub enabled: bool,
    /// Intervals between contacts needed before a destination is judged (13 contacts). Default 12: fewer
    /// cannot tell a ±5 % beacon from the ±29 % benign one of the shared captures.
    pub min_intervals: usize,
    /// Latest intervals kept per destination, at most 64. Default 24.
    pub max_intervals: usize,
    /// Highest spread of the intervals: the relative deviation from their median (the period) that covers all
    /// of them but the `max_outliers` share. Default 0.08: finds beacons whose waits vary by up to about ±5 %;
    /// the most regular benign series of the shared captures (a semi-periodic beacon, waits of 2–3.6 s)
    /// measures 0.229 at best.
    pub max_jitter: f64,
    /// Share of the intervals (rounded down) allowed outside the spread: missed or extra check-ins. In
    /// [0, 0.5). Default 0.125 (one in eight).
    pub max_outliers: f64,
    /// Shortest period flagged; faster repeats are polling or retries. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub min_period: Duration,
    /// Longest period flagged, at most 24 h; a longer silence starts the series over. A host with no other
    /// traffic is forgotten after `detector.state.idle_timeout`, so periods beyond it are seen only for hosts
    /// that send something in between. Default 1 h.
    #[serde(with = "humantime_serde")]
    pub max_period: Duration,
    /// Openings to one destination closer together than this are one contact (a check-in that opens several
    /// connections; a continuous stream of connections is one long contact). Less than `min_period`.
    /// Default 500 ms.
    #[serde(with = "humantime_serde")]
    pub burst_gap: Duration,
    /// Destinations tracked per host; beyond it the one with the least evidence is evicted (counted). Default
    /// 64.
    pub max_destinations: usize,
    /// At most one beacon anomaly per (host, destination) per this much packet time. Default 10 min.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
}

impl Default for BeaconConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_intervals: 12,
            max_intervals: 24,
            max_jitter: 0.08,
            max_outliers: 0.125,
            min_period: Duration::from_secs(1),
            max_period: Duration::from_secs(3600),
            burst_gap: Duration::from_millis(500),
            max_destinations: 64,
            cooldown: Duration::from_secs(600),
        }
    }
}

/// `[detector.profile]`: k-means over per-host behaviour profiles (see [`crate::profile`] for the features and
/// the calibration, and the crate README for the measurements behind the defaults).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileConfig {
    /// Whether the detector runs. Default true.
    pub enabled: bool,
    /// Tumbling window of packet time a profile aggregates (aligned to multiples of its length); rates are per
    /// second of it. A model loaded from `forest.model_path` brings its own window. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Profiles of fewer packets are neither trained on nor scored: a host's handful of packets (a DNS lookup,
    /// a keep-alive) says little about its behaviour and makes noisy outliers. A model loaded from
    /// `forest.model_path` brings its own. Default 20 (2 packets/s over 10 s; 10 and 5 let one benign capture
    /// of the 17 alert in the leave-one-out calibration, see the crate README).
    pub min_packets: u32,
    /// Profiles (of at least `min_packets`) used for training: the first ones this detector closes. Default 512.
    pub warmup_profiles: usize,
    /// Clusters. Default 0: chosen by the silhouette rule among 2..=`max_k` (1 when no k reaches 0.25).
    pub k: usize,
    /// Largest k the silhouette rule tries. Default 8.
    pub max_k: usize,
    /// Seed of the k-means RNG (Xoshiro256Plus): the same seed and profiles give the same model. Default
    /// 0x6e65_7461_6e6f_6d01.
    pub seed: u64,
    /// Quantile of the training profiles' distances to their nearest centroid that the threshold starts from.
    /// Default 1.0 (the farthest training profile): with one profile per host and window, a lower quantile
    /// flags that share of ordinary windows by construction.
    pub quantile: f64,
    /// The threshold is that quantile times (1 + `margin`): a profile must be clearly farther out than anything
    /// seen in training. Default 0.5 (0.25 and 0.5 both kept the leave-one-out benign captures silent; 0.5
    /// leaves room for traffic the training did not cover).
    pub margin: f64,
    /// Ordinary profiles (distance at most the global threshold) a host needs before it gets its own threshold.
    /// Default 30 (5 minutes of activity with 10 s windows).
    pub per_host_min_history: u32,
    /// A host's own threshold: the mean plus this many standard deviations of its ordinary distances, never
    /// below the global threshold. Default 3.
    pub per_host_sigmas: f64,
    /// Windows in which at least this share of the host's packets answer flows that other hosts opened are not
    /// reported: a server's backscatter to a scan or a flood (RSTs, SYN-ACKs) is the initiator's anomaly, which
    /// the rules report, not the server's. In (0, 1]; 1 reports every window. Default 0.9.
    pub max_reply_fraction: f64,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(10),
            min_packets: 20,
            warmup_profiles: 512,
            k: 0,
            max_k: 8,
            seed: 0x6e65_7461_6e6f_6d01,
            quantile: 1.0,
            margin: 0.5,
            per_host_min_history: 30,
            per_host_sigmas: 3.0,
            max_reply_fraction: 0.9,
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
        check(
            self.fetch_wait <= Duration::from_secs(300),
            "fetch_wait",
            format!("must be at most 300s, got {}", humantime_serde::re::humantime::format_duration(self.fetch_wait)),
        );
        check(self.state.max_hosts >= 1, "state.max_hosts", format!("must be >= 1, got {}", self.state.max_hosts));
        check(!self.state.idle_timeout.is_zero(), "state.idle_timeout", "must be > 0".into());
        check(
            self.state.rebuild_records <= 10_000_000,
            "state.rebuild_records",
            format!("must be in 0..=10000000, got {}", self.state.rebuild_records),
        );
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
        check(!f.slow_window.is_zero(), "fanout.slow_window", "must be > 0".into());
        check(
            (2..=f.max_targets).contains(&f.slow_host_threshold),
            "fanout.slow_host_threshold",
            format!("must be in 2..=detector.fanout.max_targets ({}), got {}", f.max_targets, f.slow_host_threshold),
        );
        check(
            (2..=f.max_targets).contains(&f.icmp_host_threshold),
            "fanout.icmp_host_threshold",
            format!("must be in 2..=detector.fanout.max_targets ({}), got {}", f.max_targets, f.icmp_host_threshold),
        );
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
        if let Some(every) = e.retrain_every {
            check(
                every >= crate::lifecycle::MIN_RETRAIN_EVERY,
                "forest.retrain_every",
                format!("must be >= 1m when set, got {}", humantime_serde::re::humantime::format_duration(every)),
            );
            check(
                (e.sample_size..=1_000_000).contains(&e.retrain_samples),
                "forest.retrain_samples",
                format!(
                    "must be in detector.forest.sample_size ({})..=1000000 when detector.forest.retrain_every is \
                     set, got {}",
                    e.sample_size, e.retrain_samples
                ),
            );
            check(!e.retrain_guard.is_zero(), "forest.retrain_guard", "must be > 0".into());
        }
        if let Some(path) = &e.model_path
            && e.enabled
        {
            check(path.is_file(), "forest.model_path", format!("{} is not a file", path.display()));
        }
        let v = &self.victim;
        check(!v.window.is_zero(), "victim.window", "must be > 0".into());
        check(
            !v.report_every.is_zero() && v.report_every <= v.window,
            "victim.report_every",
            format!("must be > 0 and at most victim.window ({:?}), got {:?}", v.window, v.report_every),
        );
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
        let s = &self.supervised;
        if let Some(path) = &s.model_path {
            check(path.is_file(), "supervised.model_path", format!("{} is not a file", path.display()));
        }
        if let Some(t) = s.threshold {
            check(t > 0.0 && t <= 1.0, "supervised.threshold", format!("must be in (0, 1], got {t}"));
        }
        let b = &self.beacon;
        check(
            (3..=crate::beacon::MAX_INTERVALS).contains(&b.max_intervals),
            "beacon.max_intervals",
            format!("must be in 3..={}, got {}", crate::beacon::MAX_INTERVALS, b.max_intervals),
        );
        check(
            (3..=b.max_intervals).contains(&b.min_intervals),
            "beacon.min_intervals",
            format!("must be in 3..=detector.beacon.max_intervals ({}), got {}", b.max_intervals, b.min_intervals),
        );
        check(
            b.max_jitter.is_finite() && b.max_jitter > 0.0 && b.max_jitter < 1.0,
            "beacon.max_jitter",
            format!("must be in (0, 1), got {}", b.max_jitter),
        );
        check(
            (0.0..0.5).contains(&b.max_outliers),
            "beacon.max_outliers",
            format!("must be in [0, 0.5), got {}", b.max_outliers),
        );
        let fmt = |d: Duration| humantime_serde::re::humantime::format_duration(d).to_string();
        check(!b.min_period.is_zero(), "beacon.min_period", "must be > 0".into());
        check(
            b.max_period > b.min_period && b.max_period <= Duration::from_secs(86_400),
            "beacon.max_period",
            format!(
                "must be > detector.beacon.min_period ({}) and <= 24h, got {}",
                fmt(b.min_period),
                fmt(b.max_period)
            ),
        );
        check(
            b.burst_gap < b.min_period,
            "beacon.burst_gap",
            format!("must be < detector.beacon.min_period ({}), got {}", fmt(b.min_period), fmt(b.burst_gap)),
        );
        check(
            (1..=4096).contains(&b.max_destinations),
            "beacon.max_destinations",
            format!("must be in 1..=4096, got {}", b.max_destinations),
        );
        check(!self.probe.window.is_zero(), "probe.window", "must be > 0".into());
        check(
            self.probe.min_packets >= 1,
            "probe.min_packets",
            format!("must be >= 1, got {}", self.probe.min_packets),
        );
        let bf = &self.brute_force;
        check(!bf.window.is_zero(), "brute_force.window", "must be > 0".into());
        check(
            bf.min_connections >= 2,
            "brute_force.min_connections",
            format!("must be >= 2, got {}", bf.min_connections),
        );
        check(
            !bf.enabled || !bf.ports.is_empty(),
            "brute_force.ports",
            "must name at least one port when detector.brute_force.enabled".into(),
        );
        check(
            (1..=1024).contains(&bf.max_services),
            "brute_force.max_services",
            format!("must be in 1..=1024, got {}", bf.max_services),
        );
        let d = &self.dns_tunnel;
        check(!d.window.is_zero(), "dns_tunnel.window", "must be > 0".into());
        check(d.min_queries >= 1, "dns_tunnel.min_queries", format!("must be >= 1, got {}", d.min_queries));
        check(
            d.long_query_bytes >= 1,
            "dns_tunnel.long_query_bytes",
            format!("must be >= 1, got {}", d.long_query_bytes),
        );
        let p = &self.profile;
        check(
            !p.window.is_zero() && p.window <= Duration::from_secs(3600),
            "profile.window",
            format!("must be in (0, 1h], got {:?}", p.window),
        );
        check(
            p.window * 2 < self.state.idle_timeout,
            "profile.window",
            format!(
                "must be less than half of detector.state.idle_timeout ({:?}) so windows close before hosts are \
                 evicted, got {:?}",
                self.state.idle_timeout, p.window
            ),
        );
        check(p.min_packets >= 1, "profile.min_packets", format!("must be >= 1, got {}", p.min_packets));
        check((2..=32).contains(&p.max_k), "profile.max_k", format!("must be in 2..=32, got {}", p.max_k));
        check(p.k <= 64, "profile.k", format!("must be in 0..=64 (0: chosen by the silhouette rule), got {}", p.k));
        let need = crate::profile::MIN_TRAINING_PROFILES.max(4 * p.k.max(p.max_k));
        check(
            (need..=1_000_000).contains(&p.warmup_profiles),
            "profile.warmup_profiles",
            format!(
                "must be in {need}..=1000000 (at least 4 per cluster of detector.profile.k {} / detector.profile.max_k \
                 {}), got {}",
                p.k, p.max_k, p.warmup_profiles
            ),
        );
        check(
            p.quantile > 0.0 && p.quantile <= 1.0,
            "profile.quantile",
            format!("must be in (0, 1], got {}", p.quantile),
        );
        check(
            p.margin.is_finite() && (0.0..=10.0).contains(&p.margin),
            "profile.margin",
            format!("must be in [0, 10], got {}", p.margin),
        );
        check(
            p.per_host_min_history >= 2,
            "profile.per_host_min_history",
            format!("must be >= 2, got {}", p.per_host_min_history),
        );
        check(
            p.per_host_sigmas.is_finite() && p.per_host_sigmas > 0.0,
            "profile.per_host_sigmas",
            format!("must be a positive number, got {}", p.per_host_sigmas),
        );
        check(
            p.max_reply_fraction > 0.0 && p.max_reply_fraction <= 1.0,
            "profile.max_reply_fraction",
            format!("must be in (0, 1], got {}", p.max_reply_fraction),
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
        c.state.rebuild_records = 10_000_001;
        c.beacon.burst_gap = Duration::from_secs(2);
        c.brute_force.ports.clear();
        c.dns_tunnel.min_queries = 0;
        c.beacon.max_jitter = f64::NAN;
        c.fetch_wait = Duration::from_secs(600);
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
    }

    #[test]
    fn supervised_model_path_must_exist_and_threshold_be_a_probability() {
        let mut c = DetectorConfig::default();
        c.supervised.model_path = Some("/nonexistent/rf.json".into());
        c.supervised.threshold = Some(0.0);
        let text: Vec<String> = c.validate().unwrap_err().iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "detector.supervised.model_path /nonexistent/rf.json is not a file",
                "detector.supervised.threshold must be in (0, 1], got 0"
            ]
        );
        let c: DetectorConfig = serde_json::from_str(r#"{"supervised": {"cooldown": "30s"}}"#).unwrap();
        assert_eq!((c.supervised.cooldown, c.supervised.model_path), (Duration::from_secs(30), None));
    }

    #[test]
    fn retraining_keys_are_validated_when_retraining_is_on() {
        let mut c = DetectorConfig::default();
        c.forest.retrain_samples = 1;
        c.forest.retrain_guard = Duration::ZERO;
        c.validate().expect("retrain_samples and retrain_guard are unused while retraining is off");
        c.forest.retrain_every = Some(Duration::from_secs(30));
        let text: Vec<String> = c.validate().unwrap_err().iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "detector.forest.retrain_every must be >= 1m when set, got 30s",
                "detector.forest.retrain_samples must be in detector.forest.sample_size (256)..=1000000 when \
                 detector.forest.retrain_every is set, got 1",
                "detector.forest.retrain_guard must be > 0",
            ]
        );
        let c: DetectorConfig =
            serde_json::from_str(r#"{"forest": {"retrain_every": "6h", "retrain_guard": "30m"}}"#).unwrap();
        assert_eq!(c.forest.retrain_every, Some(Duration::from_secs(6 * 3600)));
        assert_eq!(c.forest.retrain_guard, Duration::from_secs(1800));
        assert_eq!(c.forest.retrain_samples, 512);
        c.validate().unwrap();
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
