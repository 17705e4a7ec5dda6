//! `netanom replay` and `netanom train`: re-running detection over a historical packets topic, and training a
//! persisted isolation model from captures or from a range of a packets topic (read and ordered as a replay
//! reads it; the supervised model's training is [`crate::supervised`]). Owns reading an offset range of every
//! partition (manual assignment, a fresh group id, nothing committed), the deterministic order in which the
//! records are fed to the detector's Kafka-free [`Engine`], and the outputs (JSON lines, an Avro anomalies
//! topic, a diff of two models). It never changes the live pipeline's offsets or state.
//!
//! # Why a replay is deterministic
//!
//! The range of each partition is fixed before reading: `--from`/`--to` offsets, or timestamps resolved once
//! with `offsets_for_times` (the broker's answer is checked against the records on either side of it, and when
//! it does not hold, as on brokers that do not implement the lookup, the partition is scanned for the first
//! record at or after the time), and without `--to` the high watermark at start. Every record of the range is read
//! and then ordered by (record timestamp, partition, offset), a total order that depends only on the topic's
//! contents, never on fetch timing. Per-host state depends only on that host's records, which all live in one
//! partition (the key is the source address), so any order that keeps each partition's order gives the same
//! per-host result; the destination (victim) view crosses partitions, so replay runs the destination
//! aggregation in this process over the one global order: after every `detector.chunk_records` records the
//! engine's destination-statistics deltas are applied to its own destination side instead of going through
//! the destinations topic. The isolation model is either loaded (`--model`) or trained with its seed on the
//! first warm-up vectors of that same order, and so is the host-profile model (the `profile` section of the
//! same file, or trained on the first warm-up profiles; the windows still open at the end of the range are
//! scored there); the supervised model, when `detector.supervised.model_path` is set, is loaded as the
//! detector loads it. So two replays of the same range with the same model and
//! configuration write byte-identical output. (A live detector group may differ from a replay in victim
//! anomalies near chunk boundaries: it sees the destination deltas as they arrive.)
//!
//! # Output
//!
//! Replay writes anomalies, the detector's output, by default: as JSON lines (`--out`, or stdout) each line is
//! one anomaly object with sorted keys; on `--output-topic` each record is the Avro `Anomaly`, key = host, as the
//! detector writes it (so `netanom alert-router` can consume it). With `--alerts` it writes alerts instead: the
//! anomalies go through the alert router's suppression ([`suppress`]) in the replay's order, and each alert is the
//! alerts topic's JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use netanom_detector::forest::{FeatureScratch, FeatureVector, TrainOptions, batch_features, train};
use netanom_detector::profile::{ProfileCollector, ProfileVector};
use netanom_detector::supervised::SupervisedDetector;
use netanom_detector::{DetectorConfig, Engine, ForestConfig, TrainedForest};
use netanom_schemas::{Anomaly, AnomalyKind, PacketBatch, SchemaIds};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Where a partition's range starts or ends: an offset, or the first record at or after a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// An offset (the same in every partition).
    Offset(i64),
    /// A record timestamp, ms since the Unix epoch (resolved per partition with `offsets_for_times`).
    Time(i64),
}

impl FromStr for Position {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(o) = s.parse::<i64>() {
            return if o >= 0 { Ok(Position::Offset(o)) } else { Err(format!("offset must be >= 0, got {o}")) };
        }
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map_err(|e| {
            format!("expected an offset or an RFC 3339 time such as 2024-05-01T12:00:00Z, got {s:?}: {e}")
        })?;
        Ok(Position::Time((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Position::Offset(o) => write!(f, "offset {o}"),
            Position::Time(ms) => {
                let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                    .ok()
                    .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
                match t {
                    Some(t) => write!(f, "time {t}"),
                    None => write!(f, "time {ms} ms"),
                }
            }
        }
    }
}

/// Why a replay or a training failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A Kafka operation failed.
    #[error("kafka: {what}: {source}")]
    Kafka {
        /// What was being done (with topic and partition).
        what: String,
        /// Cause.
        #[source]
        source: Box<KafkaError>,
    },
    /// The topic does not exist or has no partitions.
    #[error("topic {0} does not exist or has no partitions")]
    NoTopic(String),
    /// Reading stopped making progress before the end of the range.
    #[error("no record for {idle:?} while partitions {pending:?} of {topic} had not reached their end offsets")]
    Stalled {
        /// Topic.
        topic: String,
        /// Partitions still short of their end.
        pending: Vec<i32>,
        /// How long nothing arrived.
        idle: Duration,
    },
    /// More records than allowed in one replay.
    #[error("the range of {topic} holds more than {max} records: narrow --from/--to or raise --max-records")]
    TooManyRecords {
        /// Topic.
        topic: String,
        /// The limit.
        max: usize,
    },
    /// A range to train on holds no packet batch.
    #[error(
        "nothing to train on: topic {topic} from {from} to {} holds no packet batch ({records} records, \
         {poison} undecodable)",
        to.map_or_else(|| "the high watermark".to_string(), |t| t.to_string())
    )]
    EmptyRange {
        /// Topic.
        topic: String,
        /// Start of the range.
        from: Position,
        /// End of the range (`None`: the high watermark at start).
        to: Option<Position>,
        /// Records read.
        records: usize,
        /// Of which undecodable.
        poison: u64,
    },
    /// A model could not be loaded, trained or saved.
    #[error(transparent)]
    Model(#[from] netanom_detector::ForestError),
    /// The supervised model could not be loaded.
    #[error(transparent)]
    Supervised(#[from] netanom_detector::supervised::SupervisedError),
    /// The host-profile model could not be trained.
    #[error(transparent)]
    Profile(#[from] netanom_detector::profile::ProfileError),
    /// A capture could not be read.
    #[error(transparent)]
    Capture(#[from] netanom_producer::CaptureError),
    /// Writing an output failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Producing to the output topic failed.
    #[error("producing anomaly for {key} to {topic} failed: {source}")]
    Produce {
        /// Topic.
        topic: String,
        /// Record key.
        key: String,
        /// Cause.
        #[source]
        source: Box<KafkaError>,
    },
}

fn kafka(what: impl Into<String>) -> impl FnOnce(KafkaError) -> ReplayError {
    let what = what.into();
    move |source| ReplayError::Kafka { what, source: Box::new(source) }
}

/// `e` with the value of a secret property masked (a client configuration error quotes the value).
fn redacted(e: rdkafka::error::KafkaError) -> rdkafka::error::KafkaError {
    match e {
        rdkafka::error::KafkaError::ClientConfig(r, desc, key, value) => {
            let (desc, value) = netanom_schemas::redact::config_error(desc, &key, value);
            rdkafka::error::KafkaError::ClientConfig(r, desc, key, value)
        }
        e => e,
    }
}

/// What to read.
#[derive(Debug, Clone)]
pub struct ReadSpec {
    /// Bootstrap servers.
    pub brokers: String,
    /// Extra librdkafka properties (security).
    pub properties: BTreeMap<String, String>,
    /// The packets topic.
    pub topic: String,
    /// Start of every partition's range (inclusive).
    pub from: Position,
    /// End of every partition's range (exclusive); `None`: the high watermark at start.
    pub to: Option<Position>,
    /// Give up when nothing arrives for this long while a partition is short of its end.
    pub idle_timeout: Duration,
    /// Most records read; more is an error (the range is held in memory to be ordered).
    pub max_records: usize,
}

/// The offsets `start..end` of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRange {
    /// Partition.
    pub partition: i32,
    /// First offset read.
    pub start: i64,
    /// First offset not read.
    pub end: i64,
}

/// One record of the range.
#[derive(Debug, Clone)]
pub struct ReplayRecord {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Record timestamp, ms (0 when absent).
    pub timestamp_ms: i64,
    /// The Avro payload.
    pub payload: Vec<u8>,
}

/// A consumer in a fresh group (nothing is committed; offsets come from manual assignment).
fn consumer(spec: &ReadSpec) -> Result<BaseConsumer, ReplayError> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &spec.brokers)
        .set("group.id", format!("netanom-replay-{}-{nanos}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    for (k, v) in &spec.properties {
        c.set(k, v);
    }
    c.create().map_err(redacted).map_err(kafka("creating the replay consumer"))
}

/// Resolves `pos` to an offset per partition (`None` = the high watermark), clamped to `lo..=hi` per partition.
fn resolve(
    consumer: &BaseConsumer,
    topic: &str,
    pos: Position,
    bounds: &BTreeMap<i32, (i64, i64)>,
    timeout: Duration,
) -> Result<BTreeMap<i32, i64>, ReplayError> {
    let mut out = BTreeMap::new();
    match pos {
        Position::Offset(o) => {
            for (p, (lo, hi)) in bounds {
                out.insert(*p, o.clamp(*lo, *hi));
            }
        }
        Position::Time(ms) => {
            let mut tpl = TopicPartitionList::new();
            for p in bounds.keys() {
                tpl.add_partition_offset(topic, *p, Offset::Offset(ms))
                    .map_err(kafka(format!("{topic}/{p}: timestamp {ms}")))?;
            }
            let found =
                consumer.offsets_for_times(tpl, timeout).map_err(kafka(format!("offsets_for_times {topic}")))?;
            for (p, (lo, hi)) in bounds {
                let o = match found.find_partition(topic, *p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    // No record at or after the time: the end.
                    _ => *hi,
                };
                let o = o.clamp(*lo, *hi);
                let o = if answer_holds(consumer, topic, *p, o, (*lo, *hi), ms, timeout)? {
                    o
                } else {
                    // Some brokers do not implement the lookup (librdkafka's mock cluster answers "none", tansu
                    // answers 0): find the first record at or after the time by reading the partition.
                    tracing::info!(topic, partition = *p, broker_answer = o, "timestamp lookup not trusted; scanning");
                    first_record(consumer, topic, *p, *lo, *hi, |ts| ts >= ms, timeout)?.map_or(*hi, |(o, _)| o)
                };
                out.insert(*p, o);
            }
        }
    }
    Ok(out)
}

/// The first record (offset, timestamp ms) of `partition` in `from..hi` whose timestamp satisfies `want`, read
/// with `consumer` (its assignment is replaced); `None` when there is none.
fn first_record(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    from: i64,
    hi: i64,
    want: impl Fn(i64) -> bool,
    timeout: Duration,
) -> Result<Option<(i64, i64)>, ReplayError> {
    if from >= hi {
        return Ok(None);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from)).map_err(kafka(format!("{topic}/{partition}")))?;
    consumer.assign(&tpl).map_err(kafka(format!("assigning {topic}/{partition}")))?;
    let mut last = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            None if last.elapsed() > timeout => {
                return Err(ReplayError::Stalled { topic: topic.to_string(), pending: vec![partition], idle: timeout });
            }
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) if p == partition => return Ok(None),
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => return Err(kafka(format!("reading {topic}/{partition}"))(e)),
            Some(Ok(m)) => {
                last = Instant::now();
                let (o, ts) = (m.offset(), m.timestamp().to_millis().unwrap_or(0));
                if m.partition() != partition || o < from {
                    continue;
                }
                if o >= hi {
                    return Ok(None);
                }
                if want(ts) {
                    return Ok(Some((o, ts)));
                }
                if o + 1 >= hi {
                    return Ok(None);
                }
            }
        }
    }
}

/// True when the broker's answer `o` to "first offset at or after `ms`" is consistent with the records around
/// it: the record before it (if any) is earlier than `ms` and the record at it (if any) is not.
fn answer_holds(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    o: i64,
    (lo, hi): (i64, i64),
    ms: i64,
    timeout: Duration,
) -> Result<bool, ReplayError> {
    if o > lo {
        let before = first_record(consumer, topic, partition, o - 1, hi, |_| true, timeout)?;
        if before.is_some_and(|(bo, ts)| bo < o && ts >= ms) {
            return Ok(false);
        }
    }
    if o < hi {
        let at = first_record(consumer, topic, partition, o, hi, |_| true, timeout)?;
        if at.is_some_and(|(_, ts)| ts < ms) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Resolves the range of every partition of `spec.topic`.
pub fn ranges(consumer: &BaseConsumer, spec: &ReadSpec) -> Result<Vec<PartitionRange>, ReplayError> {
    let timeout = Duration::from_secs(30);
    let topic = &spec.topic;
    let md = consumer.fetch_metadata(Some(topic), timeout).map_err(kafka(format!("metadata of {topic}")))?;
    let mut partitions: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    partitions.sort_unstable();
    if partitions.is_empty() {
        return Err(ReplayError::NoTopic(topic.clone()));
    }
    let mut bounds = BTreeMap::new();
    for p in partitions {
        let w = consumer.fetch_watermarks(topic, p, timeout).map_err(kafka(format!("watermarks of {topic}/{p}")))?;
        bounds.insert(p, w);
    }
    let start = resolve(consumer, topic, spec.from, &bounds, timeout)?;
    let end = match spec.to {
        Some(to) => resolve(consumer, topic, to, &bounds, timeout)?,
        None => bounds.iter().map(|(p, (_, hi))| (*p, *hi)).collect(),
    };
    Ok(start.iter().map(|(p, s)| PartitionRange { partition: *p, start: *s, end: end[p].max(*s) }).collect())
}

/// Reads every record of the range (blocking; run it on a blocking thread). Returns the ranges and the
/// records in (timestamp, partition, offset) order.
pub fn read_range(spec: &ReadSpec) -> Result<(Vec<PartitionRange>, Vec<ReplayRecord>), ReplayError> {
    let consumer = consumer(spec)?;
    let ranges = ranges(&consumer, spec)?;
    let topic = &spec.topic;
    let mut pending: BTreeMap<i32, i64> = BTreeMap::new();
    let mut starts: BTreeMap<i32, i64> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for r in ranges.iter().filter(|r| r.end > r.start) {
        tpl.add_partition_offset(topic, r.partition, Offset::Offset(r.start))
            .map_err(kafka(format!("{topic}/{}", r.partition)))?;
        pending.insert(r.partition, r.end);
        starts.insert(r.partition, r.start);
    }
    let mut records = Vec::new();
    if pending.is_empty() {
        return Ok((ranges, records));
    }
    consumer.assign(&tpl).map_err(kafka(format!("assigning {topic}")))?;
    let mut last_progress = Instant::now();
    while !pending.is_empty() {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            if last_progress.elapsed() > spec.idle_timeout {
                return Err(ReplayError::Stalled {
                    topic: topic.clone(),
                    pending: pending.keys().copied().collect(),
                    idle: spec.idle_timeout,
                });
            }
            continue;
        };
        last_progress = Instant::now();
        let (partition, offset) = match msg {
            Err(KafkaError::PartitionEOF(p)) => {
                // At the high watermark: whatever the end offset, nothing more is there now.
                pending.remove(&p);
                continue;
            }
            Err(e) => return Err(kafka(format!("consuming {topic}"))(e)),
            Ok(m) => {
                let (p, o) = (m.partition(), m.offset());
                if starts.get(&p).is_some_and(|start| o < *start) {
                    continue;
                }
                if pending.get(&p).is_some_and(|end| o < *end) {
                    if records.len() >= spec.max_records {
                        return Err(ReplayError::TooManyRecords { topic: topic.clone(), max: spec.max_records });
                    }
                    records.push(ReplayRecord {
                        partition: p,
                        offset: o,
                        timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
                        payload: m.payload().unwrap_or_default().to_vec(),
                    });
                }
                (p, o)
            }
        };
        if pending.get(&partition).is_some_and(|end| offset + 1 >= *end) {
            pending.remove(&partition);
            let mut done = TopicPartitionList::new();
            done.add_partition(topic, partition);
            let _ = consumer.pause(&done);
        }
    }
    records.sort_by_key(|r| (r.timestamp_ms, r.partition, r.offset));
    Ok((ranges, records))
}

/// What a detection pass over the records found.
#[derive(Debug, Clone, Default)]
pub struct Detection {
    /// Anomalies in the order the engine emitted them.
    pub anomalies: Vec<Anomaly>,
    /// Packet batches processed.
    pub batches: u64,
    /// Records that could not be decoded (skipped).
    pub poison: u64,
    /// Version of the isolation model used (loaded or trained), if any.
    pub model_version: Option<String>,
}

/// The packet batch of a record; an undecodable record is logged, counted in `poison` and skipped (`None`).
fn decode_or_skip(r: &ReplayRecord, ids: &SchemaIds, poison: &mut u64) -> Option<PacketBatch> {
    match PacketBatch::decode(&r.payload, ids) {
        Ok(b) => Some(b),
        Err(e) => {
            *poison += 1;
            tracing::warn!(partition = r.partition, offset = r.offset, error = %e, "undecodable record skipped");
            None
        }
    }
}

/// Runs the detector's engine over `records` in (timestamp, partition, offset) order, applying the destination
/// deltas in-process after every `config.chunk_records` records (see the module doc).
pub fn detect(
    records: &[ReplayRecord],
    ids: &SchemaIds,
    config: &DetectorConfig,
    model: Option<TrainedForest>,
) -> Detection {
    detect_with(records, ids, config, Engine::new(config, model))
}

/// [`detect`] with an engine built by the caller (e.g. with the supervised detector).
pub fn detect_with(
    records: &[ReplayRecord],
    ids: &SchemaIds,
    config: &DetectorConfig,
    mut engine: Engine,
) -> Detection {
    let mut order: Vec<&ReplayRecord> = records.iter().collect();
    order.sort_by_key(|r| (r.timestamp_ms, r.partition, r.offset));
    let mut d = Detection::default();
    for chunk in order.chunks(config.chunk_records.max(1)) {
        for r in chunk {
            if let Some(b) = decode_or_skip(r, ids, &mut d.poison) {
                d.batches += 1;
                engine.process_batch(&b, r.partition, &mut d.anomalies);
            }
        }
        for delta in engine.end_chunk() {
            engine.process_destination_stats(&delta, 0, &mut d.anomalies);
        }
    }
    // The end of the range ends the host-profile windows still open, as the end of a capture does.
    engine.flush_profiles(&mut d.anomalies);
    for delta in engine.flush_destination_stats() {
        engine.process_destination_stats(&delta, 0, &mut d.anomalies);
    }
    d.model_version = engine.model().map(|m| m.version().to_string());
    d
}

/// One anomaly as a JSON line (sorted keys, no trailing newline).
pub fn anomaly_json(a: &Anomaly) -> String {
    let features: Vec<serde_json::Value> = a
        .features
        .iter()
        .map(|c| serde_json::json!({ "name": c.name, "value": c.value, "baseline": c.baseline }))
        .collect();
    let mut m = BTreeMap::new();
    m.insert("id", serde_json::json!(a.id));
    m.insert("host", serde_json::json!(a.host));
    m.insert("kind", serde_json::json!(a.kind.as_str()));
    m.insert("window_start_ns", serde_json::json!(a.window_start_ns));
    m.insert("window_end_ns", serde_json::json!(a.window_end_ns));
    m.insert("score", serde_json::json!(a.score));
    m.insert("threshold", serde_json::json!(a.threshold));
    m.insert("target", serde_json::json!(a.target));
    m.insert("reason", serde_json::json!(a.reason));
    m.insert("features", serde_json::Value::Array(features));
    m.insert("sample", serde_json::json!(a.sample));
    m.insert("model_version", serde_json::json!(a.model_version));
    serde_json::to_string(&m).unwrap_or_default()
}

/// Writes the anomalies as JSON lines to `out`.
pub fn write_jsonl(anomalies: &[Anomaly], out: &mut impl Write) -> std::io::Result<()> {
    for a in anomalies {
        writeln!(out, "{}", anomaly_json(a))?;
    }
    out.flush()
}

/// Writes the anomalies as JSON lines to the file `path`.
pub fn write_jsonl_file(anomalies: &[Anomaly], path: &Path) -> Result<(), ReplayError> {
    let err = |source| ReplayError::Write { path: path.to_path_buf(), source };
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).map_err(err)?);
    write_jsonl(anomalies, &mut w).map_err(err)
}

/// Produces the anomalies (Avro, key = host, timestamp = window end in ms) to `topic` and waits for every
/// acknowledgement.
pub async fn produce(
    anomalies: &[Anomaly],
    brokers: &str,
    properties: &BTreeMap<String, String>,
    topic: &str,
    ids: &SchemaIds,
) -> Result<(), ReplayError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers).set("enable.idempotence", "true");
    for (k, v) in properties {
        c.set(k, v);
    }
    let producer: FutureProducer = c.create().map_err(redacted).map_err(kafka("creating the replay producer"))?;
    for chunk in anomalies.chunks(1024) {
        let payloads: Vec<Vec<u8>> = chunk.iter().map(|a| a.encode(ids)).collect();
        let mut pending = Vec::with_capacity(chunk.len());
        for (a, payload) in chunk.iter().zip(&payloads) {
            let record = FutureRecord::to(topic).key(&a.host).payload(payload).timestamp(a.window_end_ns / 1_000_000);
            pending.push((a.host.clone(), producer.send(record, Duration::from_secs(30))));
        }
        for (key, f) in pending {
            f.await.map_err(|(source, _)| ReplayError::Produce {
                topic: topic.to_string(),
                key,
                source: Box::new(source),
            })?;
        }
    }
    producer.flush(Duration::from_secs(30)).map_err(kafka(format!("flushing {topic}")))
}

/// The alerts the alert router would send for `anomalies` (in this order) under `config`: repeats of one
/// (host, kind) collapse per suppression window of packet time. Wall-time flushing (`flush_after`) plays no part
/// (one instant for the whole replay), so the result is deterministic; the alerts still open at the end are
/// emitted in (first seen, host, kind) order.
pub fn suppress(
    anomalies: &[Anomaly],
    config: &netanom_alert_router::SuppressionConfig,
) -> Vec<netanom_schemas::Alert> {
    use netanom_alert_router::suppress::{Origin, Suppressor};
    let mut s = Suppressor::new(config.clone());
    let now = tokio::time::Instant::now();
    let mut out = Vec::new();
    for (i, a) in anomalies.iter().enumerate() {
        let origin = Origin { partition: 0, offset: i as i64 };
        out.extend(s.offer(a.clone(), origin, now).into_iter().map(|e| e.alert));
    }
    let mut rest: Vec<_> = s.drain().into_iter().map(|e| e.alert).collect();
    // Kinds by name, as when they were strings.
    rest.sort_by(|a, b| {
        (a.first_seen, &a.host, a.kind.as_str(), &a.id).cmp(&(b.first_seen, &b.host, b.kind.as_str(), &b.id))
    });
    out.extend(rest);
    out
}

/// Writes alerts as JSON lines (the alerts topic's `netanom` JSON).
pub fn write_alerts(alerts: &[netanom_schemas::Alert], out: &mut impl Write) -> std::io::Result<()> {
    for a in alerts {
        writeln!(out, "{}", serde_json::to_string(a).map_err(std::io::Error::other)?)?;
    }
    out.flush()
}

/// What identifies an anomaly across two replays: host, kind, window start (ns).
pub type AnomalyKey = (String, AnomalyKind, i64);

/// Produces alerts as JSON (key = host) to `topic` and waits for every acknowledgement.
pub async fn produce_alerts(
    alerts: &[netanom_schemas::Alert],
    brokers: &str,
    properties: &BTreeMap<String, String>,
    topic: &str,
) -> Result<(), ReplayError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers).set("enable.idempotence", "true");
    for (k, v) in properties {
        c.set(k, v);
    }
    let producer: FutureProducer = c.create().map_err(redacted).map_err(kafka("creating the replay producer"))?;
    for chunk in alerts.chunks(1024) {
        let payloads: Vec<String> = chunk.iter().map(|a| serde_json::to_string(a).unwrap_or_default()).collect();
        let mut pending = Vec::with_capacity(chunk.len());
        for (a, payload) in chunk.iter().zip(&payloads) {
            let record = FutureRecord::to(topic).key(&a.host).payload(payload);
            pending.push((a.host.clone(), producer.send(record, Duration::from_secs(30))));
        }
        for (key, f) in pending {
            f.await.map_err(|(source, _)| ReplayError::Produce {
                topic: topic.to_string(),
                key,
                source: Box::new(source),
            })?;
        }
    }
    producer.flush(Duration::from_secs(30)).map_err(kafka(format!("flushing {topic}")))
}

/// Anomalies one model found and the other did not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Found with the other model only, sorted.
    pub gained: Vec<AnomalyKey>,
    /// Found with the base model only, sorted.
    pub lost: Vec<AnomalyKey>,
}

/// Compares the anomalies of the base run with those of the other run by (host, kind, window start).
pub fn diff(base: &[Anomaly], other: &[Anomaly]) -> Diff {
    let key = |a: &Anomaly| (a.host.clone(), a.kind, a.window_start_ns);
    let b: BTreeSet<AnomalyKey> = base.iter().map(key).collect();
    let o: BTreeSet<AnomalyKey> = other.iter().map(key).collect();
    Diff { gained: o.difference(&b).cloned().collect(), lost: b.difference(&o).cloned().collect() }
}

impl Diff {
    /// One JSON line per difference: `{"change":"gained"|"lost","host":…,"kind":…,"window_start_ns":…}`.
    pub fn to_jsonl(&self) -> String {
        let mut s = String::new();
        for (change, keys) in [("gained", &self.gained), ("lost", &self.lost)] {
            for (host, kind, start) in keys {
                let line = serde_json::json!({
                    "change": change, "host": host, "kind": kind.as_str(), "window_start_ns": start
                });
                s.push_str(&line.to_string());
                s.push('\n');
            }
        }
        s
    }
}

/// The isolation feature vectors of a capture, as the detector computes them: the capture goes through the
/// producer's pipeline (flows, per-source batches), and each batch of at least `forest.min_packets` packets
/// gives one vector, in the order the batches close. At most `max` vectors.
pub fn capture_vectors(
    pcap: &Path,
    producer: &netanom_producer::ProducerConfig,
    forest: &ForestConfig,
    max: usize,
) -> Result<Vec<FeatureVector>, ReplayError> {
    let mut vectors = VectorCollector::new(forest, max);
    capture_batches(pcap, producer, |b| vectors.push(b))?;
    Ok(vectors.vectors)
}

/// Reads `pcap` as fast as possible through the producer's pipeline (parse, flows, batching) and hands every
/// batch to `emit` in the order the batches close, the last ones at the end of the capture.
fn capture_batches(
    pcap: &Path,
    producer: &netanom_producer::ProducerConfig,
    mut emit: impl FnMut(&PacketBatch),
) -> Result<(), ReplayError> {
    use netanom_producer::capture::Next;
    let mut source =
        netanom_producer::PacketSource::open_file(pcap, producer.filter.as_deref(), netanom_producer::Speed::Max)?;
    let mut pipeline = netanom_producer::Pipeline::new(&producer.flow, &producer.batch);
    loop {
        match source.next(&|| false)? {
            Next::Frame(f) => {
                let _ = pipeline.push(&f, &mut emit);
            }
            Next::Idle => {}
            Next::End => break,
        }
    }
    pipeline.finish(&mut emit);
    Ok(())
}

/// The isolation vectors of a stream of batches, as the detector takes its warm-up: one per batch of at least
/// `forest.min_packets` packets, the first `max`.
struct VectorCollector {
    min: usize,
    max: usize,
    scratch: FeatureScratch,
    vectors: Vec<FeatureVector>,
}

impl VectorCollector {
    fn new(forest: &ForestConfig, max: usize) -> Self {
        Self { min: forest.min_packets.max(1), max, scratch: FeatureScratch::default(), vectors: Vec::new() }
    }

    fn push(&mut self, b: &PacketBatch) {
        if b.packets.len() >= self.min && self.vectors.len() < self.max {
            self.vectors.push(batch_features(&b.packets, &mut self.scratch));
        }
    }
}

/// What the isolation model (and the host-profile model) of `netanom train` learn from.
#[derive(Debug, Clone, Default)]
pub struct TrainingSet {
    /// Isolation feature vectors, at most the warm-up count.
    pub vectors: Vec<FeatureVector>,
    /// Host profiles, at most `profile.warmup_profiles`; `None` when the profile model is disabled.
    pub profiles: Option<Vec<ProfileVector>>,
    /// Packet batches seen (topic ranges only).
    pub batches: u64,
    /// Records that could not be decoded, skipped (topic ranges only).
    pub poison: u64,
}

/// The training set of a topic range, its records in replay's (timestamp, partition, offset) order: the
/// isolation vectors as [`capture_vectors`] takes them (first `max_vectors`) and, when `detector.profile` is
/// enabled, the host profiles of one [`ProfileCollector`] over the whole range (the range is one timeline),
/// at most `profile.warmup_profiles`. Undecodable records are skipped and counted, as [`detect`] does.
pub fn range_training_set(
    records: &[ReplayRecord],
    ids: &SchemaIds,
    detector: &DetectorConfig,
    max_vectors: usize,
) -> TrainingSet {
    let mut order: Vec<&ReplayRecord> = records.iter().collect();
    order.sort_by_key(|r| (r.timestamp_ms, r.partition, r.offset));
    let mut vectors = VectorCollector::new(&detector.forest, max_vectors);
    let p = &detector.profile;
    let mut profiles = p.enabled.then(|| ProfileCollector::new(p, detector.state.max_hosts, p.warmup_profiles));
    let mut set = TrainingSet::default();
    for r in order {
        if let Some(b) = decode_or_skip(r, ids, &mut set.poison) {
            set.batches += 1;
            vectors.push(&b);
            if let Some(c) = profiles.as_mut() {
                c.push(&b);
            }
        }
    }
    set.vectors = vectors.vectors;
    set.profiles = profiles.map(ProfileCollector::finish);
    set
}

/// Trains a forest on `vectors` with the `forest` settings and `seed` (the same inputs give the same model).
pub fn train_vectors(
    vectors: &[FeatureVector],
    forest: &ForestConfig,
    seed: u64,
) -> Result<TrainedForest, ReplayError> {
    let opts = TrainOptions { seed, ..TrainOptions::from(forest) };
    Ok(train(vectors, &opts)?)
}

/// `netanom replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Kafka bootstrap servers (key `kafka.brokers`).
    #[arg(long)]
    pub brokers: Option<String>,
    /// The historical packets topic (default: `topics.packets`).
    #[arg(long)]
    pub topic: Option<String>,
    /// Start of the range in every partition: an offset (`0`) or an RFC 3339 time (`2024-05-01T12:00:00Z`).
    #[arg(long)]
    pub from: Position,
    /// End of the range, exclusive: an offset or an RFC 3339 time; default the high watermark at start.
    #[arg(long)]
    pub to: Option<Position>,
    /// Isolation model to use (JSON written by `forest.save_path` or `netanom train`); default: the detector's
    /// `forest.model_path`, else trained with the configured seed on the first warm-up vectors of the replay.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Produce the anomalies (Avro, key = host) to this topic.
    #[arg(long, conflicts_with = "out")]
    pub output_topic: Option<String>,
    /// Write the anomalies as JSON lines to this file (default: stdout, unless --output-topic).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also run with this model and print the anomalies gained and lost, by (host, kind, window start), as
    /// JSON lines on stdout.
    #[arg(long)]
    pub diff: Option<PathBuf>,
    /// Write alerts instead of anomalies: repeats collapsed per (host, kind) by the `[alert_router.suppression]`
    /// settings, as the alert router would (JSON, the alerts topic's format, to the file, stdout or
    /// --output-topic).
    #[arg(long)]
    pub alerts: bool,
    /// Most records held in memory for ordering.
    #[arg(long, default_value_t = 5_000_000)]
    pub max_records: usize,
}

/// `netanom train`: learns from captures (`--pcap`) or from a range of a packets topic (`--from`, with
/// `--brokers`, `--topic`, `--to` as for `netanom replay`); exactly one of the two sources.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).multiple(false).args(["pcap", "from"])))]
pub struct TrainArgs {
    /// Captures (pcap or pcapng) to train on: normal traffic for the isolation forest; labelled traffic with
    /// --supervised. Repeatable, or several after one flag.
    #[arg(long, num_args = 1..)]
    pub pcap: Vec<PathBuf>,
    /// Train the isolation model on a range of a packets topic instead of captures: start of the range in every
    /// partition, an offset (`0`) or an RFC 3339 time (`2024-05-01T12:00:00Z`). The records are read and
    /// ordered as `netanom replay` orders them.
    #[arg(long, conflicts_with = "supervised")]
    pub from: Option<Position>,
    /// With --from: end of the range, exclusive: an offset or an RFC 3339 time; default the high watermark at
    /// start.
    #[arg(long, requires = "from", conflicts_with = "pcap")]
    pub to: Option<Position>,
    /// With --from: Kafka bootstrap servers (key `kafka.brokers`).
    #[arg(long, requires = "from", conflicts_with = "pcap")]
    pub brokers: Option<String>,
    /// With --from: the packets topic (default: `topics.packets`).
    #[arg(long, requires = "from", conflicts_with = "pcap")]
    pub topic: Option<String>,
    /// With --from: most records held in memory for ordering.
    #[arg(long, default_value_t = 5_000_000, requires = "from", conflicts_with = "pcap")]
    pub max_records: usize,
    /// Where to write the model (JSON): loadable by `forest.model_path` and `replay --model`, or with
    /// --supervised by `supervised.model_path`.
    #[arg(long)]
    pub out: PathBuf,
    /// Training seed of both models (default: `detector.forest.seed` for the forest, `detector.profile.seed` for
    /// the host-profile model).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Use the first this many batch vectors (default: `detector.forest.warmup_samples`, as the detector does).
    #[arg(long, conflicts_with = "supervised")]
    pub samples: Option<usize>,
    /// Train the supervised random forest on labelled traffic instead of the isolation forest: seeded
    /// stratified train/test split, k-fold cross-validation over trees, max depth and feature share, and
    /// accuracy, precision, recall, F1 and the confusion matrix on the test set.
    #[arg(long, requires = "labels")]
    pub supervised: bool,
    /// With --supervised: labels, `host,role` CSV (as `netanom synth --labels` writes) or a `labels.csv`
    /// catalogue whose `file` column each capture path ends with.
    #[arg(long, requires = "supervised")]
    pub labels: Option<PathBuf>,
    /// With --supervised: test on these captures (held out whole) instead of a split of the training captures.
    #[arg(long, num_args = 1.., requires = "supervised")]
    pub test_pcap: Vec<PathBuf>,
    /// With --supervised: share of each class held out for the test set when no --test-pcap is given.
    #[arg(long, default_value_t = 0.3, requires = "supervised")]
    pub test_fraction: f64,
    /// With --supervised: cross-validation folds (fewer if a class has fewer training vectors).
    #[arg(long, default_value_t = 5, requires = "supervised")]
    pub folds: usize,
    /// With --supervised: smallest batch (packets) trained on; the detector scores no smaller batch.
    #[arg(long, default_value_t = 8, requires = "supervised")]
    pub min_packets: usize,
    /// With --supervised: print one JSON object instead of text.
    #[arg(long, requires = "supervised")]
    pub json: bool,
}

fn load_model(path: &Path) -> Result<TrainedForest, ReplayError> {
    let m = TrainedForest::load(path)?;
    tracing::info!(model_version = m.version(), path = %path.display(), "isolation model loaded");
    Ok(m)
}

/// The range `netanom <command>` reads: `--brokers` (else `kafka.brokers`, required), `--topic` (else
/// `topics.packets`), `--from`/`--to`, at most `max_records`, with the configured Kafka properties.
fn read_spec(
    command: &str,
    brokers: Option<&str>,
    topic: Option<&str>,
    (from, to): (Position, Option<Position>),
    max_records: usize,
    cfg: &crate::config::Config,
) -> anyhow::Result<ReadSpec> {
    let brokers = brokers.map_or_else(|| cfg.kafka.brokers.clone(), str::to_string);
    if brokers.is_empty() {
        anyhow::bail!("netanom {command} needs Kafka: pass --brokers or set kafka.brokers (NETANOM_KAFKA__BROKERS)");
    }
    Ok(ReadSpec {
        brokers,
        properties: cfg.kafka.properties.clone(),
        topic: topic.map_or_else(|| cfg.topics.packets.clone(), str::to_string),
        from,
        to,
        idle_timeout: Duration::from_secs(30),
        max_records,
    })
}

/// Runs `netanom replay`.
pub async fn run_replay(args: ReplayArgs, cfg: crate::config::Config) -> anyhow::Result<()> {
    use anyhow::Context;
    let spec = read_spec(
        "replay",
        args.brokers.as_deref(),
        args.topic.as_deref(),
        (args.from, args.to),
        args.max_records,
        &cfg,
    )?;
    let brokers = spec.brokers.clone();
    let detector = cfg.detector.clone();
    let ids = cfg.schemas.ids;
    let model_path = args.model.clone().or_else(|| detector.forest.model_path.clone());
    let diff_path = args.diff.clone();
    let (ranges, base, other) = tokio::task::spawn_blocking(move || -> Result<_, ReplayError> {
        let (ranges, records) = read_range(&spec)?;
        let model = model_path.as_deref().map(load_model).transpose()?;
        let engine = |m| -> Result<Engine, ReplayError> {
            Ok(Engine::new(&detector, m).with_supervised(SupervisedDetector::load(&detector.supervised)?))
        };
        let base = detect_with(&records, &ids, &detector, engine(model)?);
        let other = match diff_path {
            Some(p) => Some(detect_with(&records, &ids, &detector, engine(Some(load_model(&p)?))?)),
            None => None,
        };
        Ok((ranges, base, other))
    })
    .await
    .context("replay worker panicked")??;
    for r in &ranges {
        tracing::info!(partition = r.partition, start = r.start, end = r.end, "replayed range");
    }
    let records: i64 = ranges.iter().map(|r| r.end - r.start).sum();
    eprintln!(
        "replayed {records} offsets over {} partitions: {} batches, {} undecodable, {} anomalies (model {})",
        ranges.len(),
        base.batches,
        base.poison,
        base.anomalies.len(),
        base.model_version.as_deref().unwrap_or("none")
    );
    if args.alerts {
        let alerts = suppress(&base.anomalies, &cfg.alert_router.suppression);
        eprintln!("{} alerts after suppression", alerts.len());
        if let Some(topic) = &args.output_topic {
            produce_alerts(&alerts, &brokers, &cfg.kafka.properties, topic).await?;
        } else if let Some(path) = &args.out {
            let err = |source| ReplayError::Write { path: path.clone(), source };
            let mut w = std::io::BufWriter::new(std::fs::File::create(path).map_err(err)?);
            write_alerts(&alerts, &mut w).map_err(err)?;
        } else if args.diff.is_none() {
            write_alerts(&alerts, &mut std::io::stdout().lock()).context("cannot write to stdout")?;
        }
    } else if let Some(topic) = &args.output_topic {
        produce(&base.anomalies, &brokers, &cfg.kafka.properties, topic, &ids).await?;
    } else if let Some(path) = &args.out {
        write_jsonl_file(&base.anomalies, path)?;
    } else if args.diff.is_none() {
        write_jsonl(&base.anomalies, &mut std::io::stdout().lock()).context("cannot write to stdout")?;
    }
    if let Some(other) = other {
        let d = diff(&base.anomalies, &other.anomalies);
        print!("{}", d.to_jsonl());
        eprintln!(
            "diff: {} anomalies gained, {} lost with model {}",
            d.gained.len(),
            d.lost.len(),
            other.model_version.as_deref().unwrap_or("none")
        );
    }
    Ok(())
}

/// Runs `netanom train` on a blocking thread (training is CPU-bound).
pub async fn run_train(args: TrainArgs, cfg: crate::config::Config) -> anyhow::Result<()> {
    use anyhow::Context;
    tokio::task::spawn_blocking(move || {
        if args.supervised { crate::supervised::run(&args, &cfg) } else { train_isolation(&args, &cfg) }
    })
    .await
    .context("training worker panicked")?
}

fn train_isolation(args: &TrainArgs, cfg: &crate::config::Config) -> anyhow::Result<()> {
    let max = args.samples.unwrap_or(cfg.detector.forest.warmup_samples);
    let set = match args.from {
        Some(from) => topic_training_set(args, from, cfg, max)?,
        None => captures_training_set(&args.pcap, cfg, max)?,
    };
    train_and_save(&set, args, cfg)
}

/// The training set of the captures, each read once: their vectors in order (first `max`, as
/// [`capture_vectors`] takes them) and their host profiles as the detector aggregates them
/// (`detector.profile` windows, hosts bounded by `detector.state.max_hosts`), each capture through a
/// [`ProfileCollector`] of its own (captures are not one timeline; every host's last window is included), at
/// most `profile.warmup_profiles` in all.
fn captures_training_set(
    pcaps: &[PathBuf],
    cfg: &crate::config::Config,
    max: usize,
) -> Result<TrainingSet, ReplayError> {
    let (detector, p) = (&cfg.detector, &cfg.detector.profile);
    let mut vectors = Vec::new();
    let mut profiles = p.enabled.then(Vec::new);
    for pcap in pcaps {
        let mut v = VectorCollector::new(&detector.forest, max - vectors.len());
        let mut c = profiles.as_ref().map(|got: &Vec<ProfileVector>| {
            ProfileCollector::new(p, detector.state.max_hosts, p.warmup_profiles.saturating_sub(got.len()))
        });
        capture_batches(pcap, &cfg.producer, |b| {
            v.push(b);
            if let Some(c) = c.as_mut() {
                c.push(b);
            }
        })?;
        vectors.extend(v.vectors);
        if let (Some(all), Some(c)) = (profiles.as_mut(), c) {
            all.extend(c.finish());
        }
    }
    Ok(TrainingSet { vectors, profiles, ..TrainingSet::default() })
}

/// The training set of the `--from`/`--to` range of the topic, read as `netanom replay` reads it.
fn topic_training_set(
    args: &TrainArgs,
    from: Position,
    cfg: &crate::config::Config,
    max: usize,
) -> anyhow::Result<TrainingSet> {
    let spec =
        read_spec("train", args.brokers.as_deref(), args.topic.as_deref(), (from, args.to), args.max_records, cfg)?;
    let (ranges, records) = read_range(&spec)?;
    for r in &ranges {
        tracing::info!(partition = r.partition, start = r.start, end = r.end, "training range");
    }
    let set = range_training_set(&records, &cfg.schemas.ids, &cfg.detector, max);
    let offsets: i64 = ranges.iter().map(|r| r.end - r.start).sum();
    eprintln!(
        "read {offsets} offsets of {} over {} partitions: {} batches, {} undecodable",
        spec.topic,
        ranges.len(),
        set.batches,
        set.poison
    );
    if set.batches == 0 {
        return Err(ReplayError::EmptyRange {
            topic: spec.topic,
            from,
            to: args.to,
            records: records.len(),
            poison: set.poison,
        }
        .into());
    }
    Ok(set)
}

/// Trains the isolation model (and, when profiles are given, the host-profile model) with the seed and saves
/// them to `--out`, printing what was trained.
fn train_and_save(set: &TrainingSet, args: &TrainArgs, cfg: &crate::config::Config) -> anyhow::Result<()> {
    let forest = &cfg.detector.forest;
    let vectors = &set.vectors;
    let model = train_vectors(vectors, forest, args.seed.unwrap_or(forest.seed))?;
    let p = &cfg.detector.profile;
    let mut profile_note = String::new();
    let profile = if let Some(profiles) = &set.profiles {
        let opts = netanom_detector::profile::TrainOptions {
            seed: args.seed.unwrap_or(p.seed),
            ..netanom_detector::profile::TrainOptions::from(p)
        };
        match netanom_detector::profile::train(profiles, &opts) {
            Ok(m) => {
                profile_note = format!(
                    "; profile model {} (k = {}, threshold {:.2}) on {} host profiles",
                    m.version(),
                    m.k(),
                    m.threshold(),
                    profiles.len()
                );
                Some(m)
            }
            // Too little traffic for profiles is not fatal: the detector then trains them on its warm-up.
            Err(e @ netanom_detector::profile::ProfileError::TooFewProfiles { .. }) => {
                eprintln!("note: no profile model written ({e}); the detector will train one on its warm-up");
                None
            }
            Err(e) => return Err(ReplayError::from(e).into()),
        }
    } else {
        None
    };
    let model = model.with_profile(profile);
    model.save(&args.out)?;
    println!(
        "trained {} on {} batch vectors (threshold {:.3}){profile_note}; wrote {}",
        model.version(),
        vectors.len(),
        model.threshold(),
        args.out.display()
    );
    Ok(())
}
