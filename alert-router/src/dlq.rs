//! Re-delivery of parked alerts (`netanom dlq replay`). For each configured destination (or only the one
//! named), the replay reads the dead-letter topic in a consumer group of its own,
//! `<group_id>.dlq-replay.<destination>`, from that group's committed position (the topic's beginning the first
//! time), takes the records the destination parked (those whose `netanom-dlq-destination` header names it) and
//! delivers each again, with the destination's retry policy and circuit breaker. The `webhook-id` is the
//! alert's, as on the first attempt, so a receiver that got an alert already deduplicates it.
//!
//! - **Resumable**: a record's offset is committed only once its alert was delivered, or refused again and
//!   parked again; a replay that is stopped resumes at the first record it had not finished. The offsets of
//!   records it skips (other destinations', given up, duplicates) are committed in batches: before the next
//!   delivery, every 1000 records, at a partition's end and when the replay stops.
//! - **Parked again once**: an alert refused again is parked again as a new record carrying
//!   `netanom-dlq-attempts` (the failed delivery rounds: 1 for the destination's own, plus one per refused
//!   replay) and `netanom-dlq-replay` (the replay's id). A replay stops in each partition at its end (partition
//!   EOF) or at the first record it parked itself, whichever comes first, so it never takes its own records; the
//!   next replay does.
//! - **Given up**: a record whose attempts reached `max_attempts` stays parked (it is counted, not delivered).
//! - **Once per replay**: an alert parked more than once (the same `webhook-id`) is delivered once per replay;
//!   the copies are counted as duplicates. The ids of one replay are held in memory up to [`MAX_SEEN`]; a replay
//!   that reaches it stops there (committed up to that record) and the next one continues.
//! - **Incomplete**: a replay that stops before the end of every partition (at [`MAX_SEEN`], or when neither a
//!   record nor the end of a partition arrives for 10 s) reports itself `incomplete`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use netanom_schemas::{Alert, topics};
use rand::Rng;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use crate::consumer::{consumer_config, creation_error};
use crate::destination::{self, Destination};
use crate::{RouterConfig, RouterError};

/// Default of `--max-attempts`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Distinct alerts one replay of one destination handles at most (the memory of its duplicate check).
pub const MAX_SEEN: usize = 100_000;
/// How long to wait for the next record (or the end of a partition) before concluding the topic has no more.
const IDLE: Duration = Duration::from_secs(10);
/// Skipped records (other destinations', given up, duplicates) whose offsets are committed together at most.
const COMMIT_EVERY: usize = 1000;
/// librdkafka prefetch of the replay's consumer (`queued.max.messages.kbytes`).
const PREFETCH_KBYTES: &str = "1024";

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Parked alerts taken for re-delivery.
    pub found: u64,
    /// Delivered this time.
    pub delivered: u64,
    /// Refused again (parked again, with one more attempt).
    pub parked_again: u64,
    /// Left parked because their attempts reached `max_attempts`.
    pub exhausted: u64,
    /// Further copies of an alert already taken in this replay (skipped).
    pub duplicates: u64,
    /// Records naming a destination that is not configured (left as they are).
    pub unknown_destination: u64,
    /// True when a destination's replay stopped before the end of every partition (at [`MAX_SEEN`] alerts, or
    /// after waiting in vain for a record or the end of a partition): run the replay again for the rest.
    pub incomplete: bool,
}

/// Re-delivers the alerts parked on `config.dead_letter_topic` by the destination named `only` (every
/// destination when `None`), giving up on alerts whose attempts reached `max_attempts` (at least 1). See the
/// module documentation.
pub async fn replay(config: &RouterConfig, only: Option<&str>, max_attempts: u32) -> Result<ReplayReport, RouterError> {
    config.validate().map_err(RouterError::Config)?;
    if max_attempts == 0 {
        return Err(RouterError::Replay("max_attempts must be at least 1".into()));
    }
    let destinations: BTreeMap<String, Destination> =
        destination::destinations(config)?.into_iter().map(|d| (d.name().to_string(), d)).collect();
    if let Some(name) = only.filter(|n| !destinations.contains_key(*n)) {
        let known: Vec<&String> = destinations.keys().collect();
        return Err(RouterError::Replay(format!(
            "no destination named {name:?} is configured (configured: {known:?})"
        )));
    }
    let producer = destination::dead_letter_producer(config)?;
    let mut report = ReplayReport::default();
    let chosen = destinations.values().filter(|d| only.is_none_or(|o| o == d.name()));
    for (index, d) in chosen.enumerate() {
        let pass = Pass {
            config,
            destination: d,
            known: &destinations,
            producer: &producer,
            max_attempts,
            count_unknown: only.is_none() && index == 0,
        };
        pass.run(&mut report).await?;
    }
    tracing::info!(?report, "dead-letter replay finished");
    Ok(report)
}

/// The replay of one destination.
struct Pass<'a> {
    config: &'a RouterConfig,
    destination: &'a Destination,
    known: &'a BTreeMap<String, Destination>,
    producer: &'a rdkafka::producer::FutureProducer<netanom_handles::kafka_log::KafkaLog>,
    max_attempts: u32,
    /// Whether this pass counts records of destinations that are not configured (one pass does).
    count_unknown: bool,
}

/// What to do with one dead-letter record.
enum Step {
    /// Not this destination's, given up, or a duplicate: commit it and go on.
    Skip,
    /// Deliver again, with the attempts it has had.
    Deliver(u32),
}

impl Pass<'_> {
    async fn run(&self, report: &mut ReplayReport) -> Result<(), RouterError> {
        let topic = self.config.dead_letter_topic.as_str();
        let group = format!("{}.dlq-replay.{}", self.config.group_id, self.destination.name());
        let consumer = Arc::new(create_consumer(self.config, &group)?);
        let (c, t) = (consumer.clone(), topic.to_string());
        let tpl = tokio::task::spawn_blocking(move || destination::every_partition(c.as_ref(), &t, Offset::Stored))
            .await
            .map_err(|e| RouterError::Task(e.to_string()))??;
        let mut remaining: HashSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        consumer.assign(&tpl).map_err(kafka(format!("assigning {topic} to group {group}")))?;
        let run_id = format!("{:016x}", rand::thread_rng().r#gen::<u64>());
        let mut seen: HashSet<String> = HashSet::new();
        // Next offsets of skipped records not committed yet, by partition: committed together, before the next
        // delivery, every [`COMMIT_EVERY`] skipped records, at a partition's end and when the replay stops.
        let mut skipped: BTreeMap<i32, i64> = BTreeMap::new();
        let mut skipped_since_commit = 0usize;
        tracing::info!(destination = %self.destination.name(), %group, replay = %run_id, "dead-letter replay started");
        while !remaining.is_empty() {
            let m = match tokio::time::timeout(IDLE, consumer.recv()).await {
                Err(_) => {
                    tracing::warn!(destination = %self.destination.name(), partitions = ?remaining,
                        "no record and no end of partition for {IDLE:?}: stopping (run the replay again for the rest)");
                    report.incomplete = true;
                    break;
                }
                Ok(Err(KafkaError::PartitionEOF(p))) => {
                    finish(consumer.as_ref(), topic, p, &mut remaining);
                    commit_skipped(&consumer, topic, &mut skipped).await?;
                    continue;
                }
                Ok(Err(e)) => return Err(kafka(format!("reading {topic}"))(e)),
                Ok(Ok(m)) => m.detach(),
            };
            let p = m.partition();
            if !remaining.contains(&p) {
                continue;
            }
            if header(&m, topics::DLQ_REPLAY_HEADER).is_some_and(|id| id == run_id) {
                // This replay's own records begin here.
                finish(consumer.as_ref(), topic, p, &mut remaining);
                commit_skipped(&consumer, topic, &mut skipped).await?;
                continue;
            }
            let step = self.step(&m, report, &mut seen);
            let Step::Deliver(attempts) = step else {
                skipped.insert(p, m.offset() + 1);
                skipped_since_commit += 1;
                if skipped_since_commit >= COMMIT_EVERY {
                    commit_skipped(&consumer, topic, &mut skipped).await?;
                    skipped_since_commit = 0;
                }
                continue;
            };
            commit_skipped(&consumer, topic, &mut skipped).await?;
            skipped_since_commit = 0;
            if seen.len() > MAX_SEEN {
                tracing::warn!(destination = %self.destination.name(), "replay stopped at {MAX_SEEN} alerts: \
                    run it again for the rest");
                report.incomplete = true;
                break;
            }
            report.found += 1;
            let redelivered =
                destination::redeliver(self.destination, self.producer, topic, &m, attempts.saturating_add(1), &run_id)
                    .await?;
            if redelivered {
                report.delivered += 1;
            } else {
                report.parked_again += 1;
            }
            // Delivered or parked again: committed before the next record.
            commit(consumer.clone(), topic, [(p, m.offset() + 1)]).await?;
        }
        commit_skipped(&consumer, topic, &mut skipped).await
    }

    /// What to do with record `m`, counting what is skipped.
    fn step(&self, m: &OwnedMessage, report: &mut ReplayReport, seen: &mut HashSet<String>) -> Step {
        let Some(name) = header(m, topics::DLQ_DESTINATION_HEADER) else { return Step::Skip };
        if name != self.destination.name() {
            if self.count_unknown && !self.known.contains_key(&name) {
                report.unknown_destination += 1;
            }
            return Step::Skip;
        }
        let attempts = header(m, topics::DLQ_ATTEMPTS_HEADER).and_then(|a| a.parse::<u32>().ok()).unwrap_or(1);
        if attempts >= self.max_attempts {
            report.exhausted += 1;
            return Step::Skip;
        }
        // The alert's delivery id; a record without a readable alert by its origin (it is parked again as it is).
        let id = m
            .payload()
            .and_then(|p| serde_json::from_slice::<Alert>(p).ok())
            .map(|a| a.delivery_id())
            .or_else(|| header(m, topics::DLQ_ORIGIN_HEADER).map(|o| format!("origin {o}")))
            .unwrap_or_else(|| format!("record {}/{}", m.partition(), m.offset()));
        if !seen.insert(id) {
            report.duplicates += 1;
            return Step::Skip;
        }
        Step::Deliver(attempts)
    }
}

/// Partition `p` is done: pause it (nothing more of it is read) and drop it from `remaining`.
fn finish(consumer: &StreamConsumer, topic: &str, p: i32, remaining: &mut HashSet<i32>) {
    remaining.remove(&p);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, p);
    if let Err(e) = consumer.pause(&tpl) {
        tracing::debug!(partition = p, error = %e, "pausing a finished dead-letter partition failed");
    }
}

/// Commits the skipped records' offsets held in `skipped` (none when empty), and empties it.
async fn commit_skipped(
    consumer: &Arc<StreamConsumer>,
    topic: &str,
    skipped: &mut BTreeMap<i32, i64>,
) -> Result<(), RouterError> {
    if skipped.is_empty() {
        return Ok(());
    }
    commit(consumer.clone(), topic, std::mem::take(skipped)).await
}

/// Commits the next offset of each partition in `next` (synchronously: the replay goes on only once they are
/// committed).
async fn commit(
    consumer: Arc<StreamConsumer>,
    topic: &str,
    next: impl IntoIterator<Item = (i32, i64)>,
) -> Result<(), RouterError> {
    let mut tpl = TopicPartitionList::new();
    let mut at = Vec::new();
    for (p, offset) in next {
        tpl.add_partition_offset(topic, p, Offset::Offset(offset))
            .map_err(kafka(format!("committing {topic}/{p} at {offset}")))?;
        at.push(format!("{p} at {offset}"));
    }
    let what = format!("committing {topic} ({})", at.join(", "));
    tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
        .await
        .map_err(|e| RouterError::Task(e.to_string()))?
        .map_err(kafka(what))
}

fn header(m: &OwnedMessage, key: &str) -> Option<String> {
    m.headers()
        .and_then(|h| h.iter().find(|h| h.key == key).and_then(|h| h.value))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn kafka(what: String) -> impl FnOnce(KafkaError) -> RouterError {
    move |source| RouterError::Kafka { what, source: Box::new(source) }
}

fn create_consumer(config: &RouterConfig, group: &str) -> Result<StreamConsumer, RouterError> {
    let defaults = [("auto.offset.reset", "earliest"), ("queued.max.messages.kbytes", PREFETCH_KBYTES)];
    let mut c = consumer_config(config, group, &defaults);
    // Not overridable: offsets are committed per record, after its re-delivery.
    c.set("enable.auto.commit", "false").set("enable.auto.offset.store", "false");
    c.create().map_err(creation_error(format!("creating the dead-letter reader of group {group}")))
}
