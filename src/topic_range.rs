//! Reading a range of a packets topic, as `netanom replay` and `netanom train --from` do: every partition from
//! `--from` to `--to` (offsets, or times resolved per partition), with manual assignment in a fresh consumer
//! group, nothing committed, so the live pipeline's offsets are never touched. The records are held in memory
//! (at most `max_records`) and handed over in one total order, (record timestamp, partition, offset), that
//! depends only on the topic's contents, never on fetch timing.
//!
//! Times are resolved once with `offsets_for_times`; the broker's answer is checked against the records on
//! either side of it, and when it does not hold (brokers that do not implement the lookup), the partition is
//! scanned for the first record at or after the time. Without `--to`, each partition is read to its end (the
//! consumer's end-of-partition event), not to the high watermark the broker reported at start: a broker whose
//! watermark does not count records (the test broker counts produce batches) would otherwise cut the range
//! short without a word. The records read are then checked against that watermark, and a disagreement is
//! logged with the numbers ([`PartitionRange::watermark_disagreement`]).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use netanom_schemas::{PacketBatch, SchemaIds};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::Config;

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

/// Why a range could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    /// No broker to read from.
    #[error("netanom {command} needs Kafka: pass --brokers or set kafka.brokers (NETANOM_KAFKA__BROKERS)")]
    NoBrokers {
        /// The command.
        command: String,
    },
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
    /// More records than allowed in one range.
    #[error("the range of {topic} holds more than {max} records: narrow --from/--to or raise --max-records")]
    TooManyRecords {
        /// Topic.
        topic: String,
        /// The limit.
        max: usize,
    },
}

/// The [`RangeError`] of a failed Kafka operation, saying what was being done.
pub fn kafka(what: impl Into<String>) -> impl FnOnce(KafkaError) -> RangeError {
    let what = what.into();
    move |source| RangeError::Kafka { what, source: Box::new(source) }
}

/// `e` with the value of a secret property masked (a client configuration error quotes the value).
pub fn redacted(e: rdkafka::error::KafkaError) -> rdkafka::error::KafkaError {
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
    /// End of every partition's range (exclusive); `None`: the end of each partition (end-of-partition event).
    pub to: Option<Position>,
    /// Give up when nothing arrives for this long while a partition is short of its end.
    pub idle_timeout: Duration,
    /// Most records read; more is an error (the range is held in memory to be ordered).
    pub max_records: usize,
}

impl ReadSpec {
    /// The range `netanom <command>` reads: `brokers` (else `kafka.brokers`, required), `topic` (else
    /// `topics.packets`), `from`..`to`, at most `max_records`, with the configured Kafka properties.
    pub fn for_command(
        command: &str,
        brokers: Option<&str>,
        topic: Option<&str>,
        (from, to): (Position, Option<Position>),
        max_records: usize,
        cfg: &Config,
    ) -> Result<ReadSpec, RangeError> {
        let brokers = brokers.map_or_else(|| cfg.kafka.brokers.clone(), str::to_string);
        if brokers.is_empty() {
            return Err(RangeError::NoBrokers { command: command.to_string() });
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
}

/// The offsets `start..end` of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRange {
    /// Partition.
    pub partition: i32,
    /// First offset read.
    pub start: i64,
    /// First offset not read: the end asked for (`--to`), or, for a range read to the end of its partition,
    /// one past the last record read (the high watermark at start until the range is read).
    pub end: i64,
    /// The partition's high watermark when the range was resolved.
    pub watermark: i64,
    /// True when the range runs to the end of the partition (no `--to`).
    pub to_end: bool,
    /// Records read in the range.
    pub read: u64,
}

impl PartitionRange {
    /// For a range read to the end of its partition: why the records read disagree with the high watermark the
    /// broker reported at start, with the numbers; `None` when they agree (or the range had an explicit end).
    /// Records past the watermark mean the broker's watermark does not count records, or records arrived while
    /// the range was read; a range ending before the watermark means records were missing.
    pub fn watermark_disagreement(&self) -> Option<String> {
        if !self.to_end || self.end == self.watermark.max(self.start) {
            return None;
        }
        let why = if self.end > self.watermark {
            "the broker's watermark does not count records, or records arrived while reading"
        } else {
            "records below the watermark were not delivered"
        };
        Some(format!(
            "partition {} read to its end at offset {} ({} records from offset {}), but its high watermark at start was {}: {why}",
            self.partition, self.end, self.read, self.start, self.watermark
        ))
    }
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

impl ReplayRecord {
    /// The key of the replay order: (record timestamp, partition, offset), a total order that depends only on
    /// the topic's contents.
    pub fn order_key(&self) -> (i64, i32, i64) {
        (self.timestamp_ms, self.partition, self.offset)
    }

    /// The packet batch of the record; an undecodable record is logged, counted in `poison` and skipped
    /// (`None`).
    pub fn batch(&self, ids: &SchemaIds, poison: &mut u64) -> Option<PacketBatch> {
        match PacketBatch::decode(&self.payload, ids) {
            Ok(b) => Some(b),
            Err(e) => {
                *poison += 1;
                tracing::warn!(partition = self.partition, offset = self.offset, error = %e, "undecodable record skipped");
                None
            }
        }
    }
}

/// `records` in the replay order ([`ReplayRecord::order_key`]), whatever order they are given in.
pub fn replay_order(records: &[ReplayRecord]) -> Vec<&ReplayRecord> {
    let mut order: Vec<&ReplayRecord> = records.iter().collect();
    order.sort_by_key(|r| r.order_key());
    order
}

/// A consumer in a fresh group (nothing is committed; offsets come from manual assignment).
fn consumer(spec: &ReadSpec) -> Result<BaseConsumer, RangeError> {
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
) -> Result<BTreeMap<i32, i64>, RangeError> {
    let mut out = BTreeMap::new();
    match pos {
        Position::Offset(o) => out = clamp_offset(o, bounds),
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
) -> Result<Option<(i64, i64)>, RangeError> {
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
                return Err(RangeError::Stalled { topic: topic.to_string(), pending: vec![partition], idle: timeout });
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
) -> Result<bool, RangeError> {
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
pub fn ranges(consumer: &BaseConsumer, spec: &ReadSpec) -> Result<Vec<PartitionRange>, RangeError> {
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
        return Err(RangeError::NoTopic(topic.clone()));
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
    let mut ranges = partition_ranges(&start, &end);
    for r in &mut ranges {
        r.watermark = bounds.get(&r.partition).map_or(r.end, |(_, hi)| *hi);
        r.to_end = spec.to.is_none();
    }
    Ok(ranges)
}

/// Reads every record of the range (blocking; run it on a blocking thread). Returns the ranges (their ends and
/// counts as read) and the records in (timestamp, partition, offset) order. A range read to the end of its
/// partition that disagrees with the partition's high watermark is logged as a warning with the numbers.
pub fn read_range(spec: &ReadSpec) -> Result<(Vec<PartitionRange>, Vec<ReplayRecord>), RangeError> {
    let consumer = consumer(spec)?;
    let mut ranges = ranges(&consumer, spec)?;
    let topic = &spec.topic;
    // The end of each partition still being read: an offset, or `None` for "until end of partition".
    let mut pending: BTreeMap<i32, Option<i64>> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for r in ranges.iter().filter(|r| r.to_end || r.end > r.start) {
        tpl.add_partition_offset(topic, r.partition, Offset::Offset(r.start))
            .map_err(kafka(format!("{topic}/{}", r.partition)))?;
        pending.insert(r.partition, (!r.to_end).then_some(r.end));
    }
    let mut records = Vec::new();
    if !pending.is_empty() {
        consumer.assign(&tpl).map_err(kafka(format!("assigning {topic}")))?;
    }
    let mut last_progress = Instant::now();
    let mut next: BTreeMap<i32, i64> = ranges.iter().map(|r| (r.partition, r.start)).collect();
    let mut read: BTreeMap<i32, u64> = BTreeMap::new();
    while !pending.is_empty() {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            if last_progress.elapsed() > spec.idle_timeout {
                return Err(RangeError::Stalled {
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
                // Nothing more is there now, whatever the end asked for.
                pending.remove(&p);
                continue;
            }
            Err(e) => return Err(kafka(format!("consuming {topic}"))(e)),
            Ok(m) => {
                let (p, o) = (m.partition(), m.offset());
                let in_range = match pending.get(&p) {
                    Some(end) => next.get(&p).is_some_and(|n| o >= *n) && end.is_none_or(|end| o < end),
                    None => false,
                };
                if in_range {
                    if records.len() >= spec.max_records {
                        return Err(RangeError::TooManyRecords { topic: topic.clone(), max: spec.max_records });
                    }
                    records.push(ReplayRecord {
                        partition: p,
                        offset: o,
                        timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
                        payload: m.payload().unwrap_or_default().to_vec(),
                    });
                    next.insert(p, o + 1);
                    *read.entry(p).or_default() += 1;
                }
                (p, o)
            }
        };
        if pending.get(&partition).is_some_and(|end| end.is_some_and(|end| offset + 1 >= end)) {
            pending.remove(&partition);
            let mut done = TopicPartitionList::new();
            done.add_partition(topic, partition);
            let _ = consumer.pause(&done);
        }
    }
    for r in &mut ranges {
        r.read = read.get(&r.partition).copied().unwrap_or(0);
        if r.to_end {
            r.end = next.get(&r.partition).copied().unwrap_or(r.start);
        }
        if let Some(why) = r.watermark_disagreement() {
            tracing::warn!(topic = %topic, "{why}");
        }
    }
    records.sort_by_key(ReplayRecord::order_key);
    Ok((ranges, records))
}

/// `o` in every partition, clamped to the partition's `lo..=hi` (watermarks).
pub fn clamp_offset(o: i64, bounds: &BTreeMap<i32, (i64, i64)>) -> BTreeMap<i32, i64> {
    bounds.iter().map(|(p, (lo, hi))| (*p, o.clamp(*lo, *hi))).collect()
}

/// The range of every partition of `start` from its start to its end in `end` (the high watermark when `end`
/// lacks it), never ending before it starts: an end before the start reads nothing.
pub fn partition_ranges(start: &BTreeMap<i32, i64>, end: &BTreeMap<i32, i64>) -> Vec<PartitionRange> {
    start
        .iter()
        .map(|(p, s)| {
            let end = end.get(p).copied().unwrap_or(*s).max(*s);
            PartitionRange { partition: *p, start: *s, end, watermark: end, to_end: false, read: 0 }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use netanom_detector::fixtures::{T0, benign_batch};

    use super::*;

    fn record(partition: i32, offset: i64, timestamp_ms: i64) -> ReplayRecord {
        ReplayRecord { partition, offset, timestamp_ms, payload: Vec::new() }
    }

    #[test]
    fn a_position_is_an_offset_or_an_rfc3339_time_and_prints_back() {
        assert_eq!("42".parse::<Position>(), Ok(Position::Offset(42)));
        assert_eq!(" 0 ".parse::<Position>(), Ok(Position::Offset(0)));
        let err = "-1".parse::<Position>().unwrap_err();
        assert!(err.contains("offset must be >= 0"), "{err}");
        let t: Position = "2024-01-01T00:00:01.5Z".parse().unwrap();
        assert_eq!(t, Position::Time(1_704_067_201_500));
        assert_eq!(t.to_string(), "time 2024-01-01T00:00:01.5Z");
        assert_eq!(t.to_string().trim_start_matches("time ").parse::<Position>(), Ok(t));
        assert_eq!(Position::Offset(7).to_string(), "offset 7");
        let err = "yesterday".parse::<Position>().unwrap_err();
        assert!(err.contains("RFC 3339") && err.contains("yesterday"), "{err}");
    }

    #[test]
    fn an_offset_is_clamped_to_each_partitions_watermarks() {
        let bounds: BTreeMap<i32, (i64, i64)> = [(0, (0, 100)), (1, (50, 60)), (2, (0, 0))].into();
        assert_eq!(clamp_offset(55, &bounds), [(0, 55), (1, 55), (2, 0)].into());
        assert_eq!(clamp_offset(10, &bounds), [(0, 10), (1, 50), (2, 0)].into());
        assert_eq!(clamp_offset(1_000, &bounds), [(0, 100), (1, 60), (2, 0)].into());
    }

    #[test]
    fn a_range_never_ends_before_it_starts() {
        let start: BTreeMap<i32, i64> = [(0, 10), (1, 20), (2, 5)].into();
        let end: BTreeMap<i32, i64> = [(0, 30), (1, 15)].into();
        let r = partition_ranges(&start, &end);
        assert_eq!(
            r,
            vec![
                PartitionRange { partition: 0, start: 10, end: 30, watermark: 30, to_end: false, read: 0 },
                PartitionRange { partition: 1, start: 20, end: 20, watermark: 20, to_end: false, read: 0 },
                PartitionRange { partition: 2, start: 5, end: 5, watermark: 5, to_end: false, read: 0 },
            ]
        );
    }

    #[test]
    fn a_range_read_to_its_end_is_checked_against_the_watermark() {
        let read = |end, watermark, to_end| PartitionRange { partition: 3, start: 0, end, watermark, to_end, read: 0 };
        assert_eq!(read(1_055, 1_055, true).watermark_disagreement(), None);
        assert_eq!(read(1_055, 1, false).watermark_disagreement(), None, "an explicit end is not checked");
        let more = PartitionRange { read: 1_055, ..read(1_055, 1, true) }.watermark_disagreement().unwrap();
        assert_eq!(
            more,
            "partition 3 read to its end at offset 1055 (1055 records from offset 0), but its high watermark at \
             start was 1: the broker's watermark does not count records, or records arrived while reading"
        );
        let fewer = read(10, 20, true).watermark_disagreement().unwrap();
        assert!(fewer.ends_with("records below the watermark were not delivered"), "{fewer}");
        let empty = PartitionRange { start: 7, ..read(7, 0, true) };
        assert_eq!(empty.watermark_disagreement(), None, "an empty range past a smaller watermark agrees");
    }

    #[test]
    fn the_replay_order_is_timestamp_then_partition_then_offset_whatever_the_input_order() {
        let records = vec![
            record(1, 7, 2_000),
            record(0, 9, 2_000),
            record(2, 1, 1_000),
            record(0, 8, 2_000),
            record(1, 6, 3_000),
        ];
        let keys = |rs: Vec<&ReplayRecord>| rs.iter().map(|r| (r.partition, r.offset)).collect::<Vec<_>>();
        let want = vec![(2, 1), (0, 8), (0, 9), (1, 7), (1, 6)];
        assert_eq!(keys(replay_order(&records)), want);
        let mut reversed = records.clone();
        reversed.reverse();
        assert_eq!(keys(replay_order(&reversed)), want);
        let mut sorted = records;
        sorted.sort_by_key(ReplayRecord::order_key);
        assert_eq!(sorted.iter().map(|r| (r.partition, r.offset)).collect::<Vec<_>>(), want);
    }

    #[test]
    fn an_undecodable_record_is_counted_and_skipped() {
        let ids = SchemaIds::BUILT_IN;
        let batch = benign_batch(3);
        let good = ReplayRecord { payload: batch.encode(&ids), ..record(0, 0, T0 / 1_000_000) };
        let bad = ReplayRecord { payload: vec![0, 0, 0, 0, 1, 2], ..record(0, 1, T0 / 1_000_000) };
        let mut poison = 0;
        assert_eq!(good.batch(&ids, &mut poison), Some(batch));
        assert_eq!(bad.batch(&ids, &mut poison), None);
        assert_eq!(record(0, 2, 0).batch(&ids, &mut poison), None);
        assert_eq!(poison, 2);
    }

    #[test]
    fn the_read_spec_of_a_command_needs_brokers_and_defaults_to_the_packets_topic() {
        let mut cfg = Config::default();
        let range = (Position::Offset(0), None);
        let err = ReadSpec::for_command("replay", None, None, range, 10, &cfg).unwrap_err();
        assert!(err.to_string().contains("netanom replay needs Kafka"), "{err}");
        cfg.kafka.brokers = "config:9092".into();
        cfg.kafka.properties.insert("security.protocol".into(), "SSL".into());
        let spec = ReadSpec::for_command("train", None, None, range, 10, &cfg).unwrap();
        assert_eq!((spec.brokers.as_str(), spec.topic.as_str()), ("config:9092", cfg.topics.packets.as_str()));
        assert_eq!(spec.properties, cfg.kafka.properties);
        assert_eq!(spec.max_records, 10);
        let spec = ReadSpec::for_command("train", Some("flag:9092"), Some("old"), range, 10, &cfg).unwrap();
        assert_eq!((spec.brokers.as_str(), spec.topic.as_str()), ("flag:9092", "old"));
    }
}
