//! The Kafka loop: one consumer subscribed to the packets and destinations topics, records processed in
//! chunks on a blocking thread by the [`Engine`], anomalies, destination-statistics deltas and dead letters
//! produced and acknowledged before the chunk's offsets are stored (at-least-once), rebalances turned into
//! start offsets, state rebuilds and state drops (decided by [`crate::ownership`]), and the drain protocol. Owns
//! no detection logic.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use netanom_handles::kafka_log::KafkaLog;
use netanom_handles::{Grace, KafkaLink, ReadyFlag, RoleHandles, messaging};
use netanom_schemas::{Anomaly, AnomalyKind, DestinationStats, PacketBatch, SchemaIds, topics};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::DetectorConfig;
use crate::engine::Engine;
use crate::forest::model::TrainOptions;
use crate::forest::shared::{ModelRecord, WarmupSample, sample_key};
use crate::forest::{ModelPublisher, TrainedForest};
use crate::handles::{Handles, Share};
use crate::metrics::{self, Metrics};
use crate::models::Models;
use crate::models_topic::ModelsTopic;
use crate::outcome::{DetectorError, DetectorReport};
use crate::ownership::{Ownership, Start, TopicPartition};
use crate::transaction::{self, Transactions};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Consumer context: applies rebalances itself so that an assigned partition starts where
/// [`crate::ownership`] says (resuming, rebuilding or replaying state), and records revocations and state drops
/// for the consume loop. Rebalance callbacks run inside `recv`, never while a chunk is processed.
struct DetectorContext {
    ownership: Arc<Mutex<Ownership>>,
    rebuild_records: i64,
    ready: ReadyFlag,
    /// Whether the consumer reaches a broker (for `/readyz`).
    link: KafkaLink,
    log: KafkaLog,
}

fn lock(ownership: &Mutex<Ownership>) -> MutexGuard<'_, Ownership> {
    ownership.lock().unwrap_or_else(PoisonError::into_inner)
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

impl ClientContext for DetectorContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.link.observe_stats(&statistics);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.log.log_line(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.link.observe_error(&error, reason);
        self.log.error_line(&error, reason);
    }
}

impl ConsumerContext for DetectorContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let eager = !matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let applied: KafkaResult<()> = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.plan_starts(consumer, tpl, eager);
                let r = if eager { consumer.assign(tpl) } else { consumer.incremental_assign(tpl) };
                if r.is_ok() {
                    self.ready.set(true);
                    tracing::info!(partitions = tpl.count(), "partitions assigned");
                }
                r
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                lock(&self.ownership).revoke(partitions_of(tpl), eager);
                tracing::info!(partitions = tpl.count(), "partitions revoked");
                if eager { consumer.unassign() } else { consumer.incremental_unassign(tpl) }
            }
            other => {
                tracing::error!(error = %RDKafkaErrorCode::from(other), "rebalance failed; giving up the assignment");
                if eager {
                    let all = consumer.assignment().map(|a| partitions_of(&a)).unwrap_or_default();
                    lock(&self.ownership).revoke(all, true);
                    consumer.unassign()
                } else {
                    lock(&self.ownership).revoke(partitions_of(tpl), false);
                    consumer.incremental_unassign(tpl)
                }
            }
        };
        if let Err(e) = applied {
            tracing::error!(error = %e, "applying a rebalance failed");
        }
    }
}

impl DetectorContext {
    /// Sets the start offset of every partition in the assignment `tpl` from the group's committed offsets and
    /// the state held (see [`crate::ownership`]).
    fn plan_starts(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList, eager: bool) {
        let partitions = partitions_of(tpl);
        let mut query = TopicPartitionList::with_capacity(partitions.len());
        for (topic, partition) in &partitions {
            query.add_partition(topic, *partition);
        }
        let committed: HashMap<TopicPartition, i64> = match consumer.committed_offsets(query, METADATA_TIMEOUT) {
            Ok(c) => c
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) if o >= 0 => Some(((e.topic().to_string(), e.partition()), o)),
                    _ => None,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "committed offsets unavailable: partitions new here start cold, \
                    partitions kept resume where their state stops");
                HashMap::new()
            }
        };
        let assignment: Vec<(TopicPartition, Option<i64>)> = partitions
            .into_iter()
            .map(|tp| {
                let c = committed.get(&tp).copied();
                (tp, c)
            })
            .collect();
        let starts = lock(&self.ownership).assign(&assignment, eager, self.rebuild_records);
        for ((topic, partition), start) in starts {
            let Start::At { offset, rebuild_until, drop_held } = start else { continue };
            let from = if offset <= 0 { Offset::Beginning } else { Offset::Offset(offset) };
            if let Err(e) = tpl.set_partition_offset(&topic, partition, from) {
                tracing::warn!(%topic, partition, error = %e, "could not set the start offset");
            }
            if rebuild_until > offset {
                tracing::info!(%topic, partition, from = offset, until = rebuild_until, dropped_stale_state = drop_held,
                    "rebuilding the state of a partition that moved here");
            }
        }
    }
}

type DetectorConsumer = StreamConsumer<DetectorContext>;

/// One record to produce.
struct Outgoing {
    topic: String,
    key: Vec<u8>,
    payload: Vec<u8>,
    headers: Option<OwnedHeaders>,
}

/// What the worker did with one chunk.
#[derive(Default)]
struct ChunkOutput {
    records: Vec<Outgoing>,
    /// Engine totals after the chunk: packets processed, hosts tracked, hosts evicted.
    packets_total: u64,
    hosts_tracked: u64,
    hosts_evicted_total: u64,
    /// Bytes of the host map, and its evictions by reason so far.
    hosts_bytes: u64,
    host_evictions: crate::state::Evictions,
    /// Bytes and evictions of the victim tables so far.
    victim: crate::victim::VictimTables,
    anomalies: u64,
    destination_stats: u64,
    dead_lettered: u64,
    /// Records that only rebuilt state.
    rebuilt: u64,
    /// The isolation model in force after the chunk.
    model: Option<Arc<TrainedForest>>,
    /// The isolation detector still waits for the group's model after the chunk.
    awaiting_model: bool,
}

/// Where a record came from.
#[derive(Clone)]
struct Origin {
    topic: String,
    partition: i32,
    offset: i64,
}

/// Drain progress.
enum Phase {
    Running,
    Packets(BTreeMap<i32, i64>),
    Destinations(BTreeMap<i32, i64>),
}

fn kafka(what: impl Into<String>) -> impl FnOnce(KafkaError) -> DetectorError {
    let what = what.into();
    move |source| DetectorError::Kafka { what, source: Box::new(source) }
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

/// A client configuration: the brokers, then `defaults`, then `kafka_properties` (which win over both).
fn client_config(config: &DetectorConfig, defaults: &[(&str, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers);
    for (k, v) in defaults {
        c.set(*k, v);
    }
    for (k, v) in &config.kafka_properties {
        c.set(k, v);
    }
    c
}

/// Runs the detector until `shutdown` (stop now) or, after `handles.drain` fires, until the input present at
/// that moment has been processed.
pub(crate) async fn run(
    config: DetectorConfig,
    handles: Handles,
    shutdown: CancellationToken,
    role: RoleHandles,
) -> Result<DetectorReport, DetectorError> {
    let RoleHandles { drain, ready, teardown, grace } = role;
    config.validate().map_err(DetectorError::Config)?;
    let models_config = config.clone();
    let models = tokio::task::spawn_blocking(move || Models::load(&models_config))
        .await
        .map_err(|e| DetectorError::Worker(e.to_string()))??;

    let ownership = Arc::new(Mutex::new(Ownership::default()));
    let mut cc = client_config(&config, &[("fetch.wait.max.ms", config.fetch_wait.as_millis().to_string())]);
    cc.set("group.id", &config.group_id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", netanom_handles::STATS_INTERVAL_MS);
    if config.exactly_once {
        // Offsets are committed only inside transactions; only committed records are read.
        cc.set("enable.auto.commit", "false").set("isolation.level", "read_committed");
    }
    let consumer: Arc<DetectorConsumer> = Arc::new(
        cc.create_with_context(DetectorContext {
            ownership: ownership.clone(),
            rebuild_records: i64::try_from(config.state.rebuild_records).unwrap_or(i64::MAX),
            ready: ready.clone(),
            link: ready.kafka_link("consumer"),
            log: KafkaLog::default(),
        })
        .map_err(redacted)
        .map_err(kafka("creating the consumer"))?,
    );
    // Idempotent: a retried produce request never writes an anomaly, a delta or a dead letter twice.
    let mut defaults = vec![("enable.idempotence", "true".to_string())];
    let transactional_id = transaction::transactional_id(&config, handles.share.as_ref().map(|s| s.index));
    if config.exactly_once {
        defaults.push(("transactional.id", transactional_id.clone()));
    }
    let producer: FutureProducer<KafkaLog> = client_config(&config, &defaults)
        .set("linger.ms", "5")
        .create_with_context(KafkaLog::default())
        .map_err(redacted)
        .map_err(kafka("creating the producer"))?;
    let mut txn = match config.exactly_once {
        true => Some(Transactions::init(producer.clone(), transactional_id).await?),
        false => None,
    };
    let topics = [config.packets_topic.as_str(), config.destinations_topic.as_str()];
    if config.static_assignment {
        let c = consumer.clone();
        let names: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        let share = handles.share.clone();
        let tpl = tokio::task::spawn_blocking(move || every_partition(&c, &names, share.as_ref()))
            .await
            .map_err(|e| DetectorError::Worker(e.to_string()))??;
        consumer.assign(&tpl).map_err(kafka("assigning every partition"))?;
        ready.set(true);
    } else {
        consumer.subscribe(&topics).map_err(kafka("subscribing"))?;
    }
    tracing::info!(
        packets = %config.packets_topic,
        destinations = %config.destinations_topic,
        group = %config.group_id,
        "detector started"
    );

    let mut engine = Engine::new(&config, models);
    // The isolation forest trains with the group (`crate::forest::shared`) unless a model was loaded.
    let mut group_model = None;
    if engine.awaiting_model_start() {
        let partitions = partition_count(&producer, &config.packets_topic).await;
        let setup = crate::models_topic::Setup {
            topic: config.models_topic.clone(),
            group: config.group_id.clone(),
            partitions,
            options: TrainOptions::from(&config.forest),
            save_path: config.forest.save_path.clone(),
        };
        let client = client_config(&config, &[("fetch.wait.max.ms", config.fetch_wait.as_millis().to_string())]);
        // The model is published outside the chunks' transactions: by a producer of its own when they are on.
        let models_producer = match &txn {
            Some(_) => client_config(&config, &[("enable.idempotence", "true".to_string())])
                .create_with_context(KafkaLog::default())
                .map_err(redacted)
                .map_err(kafka("creating the models producer"))?,
            None => producer.clone(),
        };
        group_model = ModelsTopic::start(client, models_producer, setup, shutdown.clone()).await;
        if group_model.is_some() {
            engine.share_warmup(partitions, config.state.host_capacity());
            tracing::info!(topic = %config.models_topic, partitions, "isolation forest: the group's warm-up");
        }
    }
    let engine = Arc::new(Mutex::new(engine));
    let meters = Metrics::new();
    // The scoring API serves the model of one detector per process: the first to start.
    let publisher = handles.model_feed.claim();
    if let Some(p) = &publisher
        && let Ok(e) = engine.lock()
    {
        publish_model(e.shared_model(), p, &meters);
    }
    let (mut packets_seen, mut evictions_seen) = (0u64, 0u64);
    let mut evictions_by_reason_seen = crate::state::Evictions::default();
    let mut victim_seen = crate::victim::VictimTables::default();
    let lag = LagSampler::default();
    let mut report = DetectorReport::default();
    let mut next_offsets: HashMap<(String, i32), i64> = HashMap::new();
    // Next offsets of packets-topic records judged while the isolation detector waits for the group's model:
    // their batches wait in its backlog, and are scored when the model arrives, so their offsets are stored
    // only once those anomalies are acknowledged (at-least-once).
    let mut held: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    let mut phase = Phase::Running;
    let drain = drain.unwrap_or_default();
    let never = CancellationToken::new();

    let result = loop {
        ready.beat();
        if shutdown.is_cancelled() {
            break Ok(());
        }
        if matches!(phase, Phase::Running) && drain.is_cancelled() {
            tracing::info!("drain requested: processing the packets present now");
            phase = Phase::Packets(
                match high_watermarks(&consumer, &producer, &config.packets_topic, handles.share.as_ref()).await {
                    Ok(t) => t,
                    Err(e) => break Err(e),
                },
            );
        }
        // Drain progress.
        match &phase {
            Phase::Packets(t) if reached(&consumer, &config.packets_topic, t, &next_offsets) => {
                // Report every destination delta not yet due, so the destinations drain below includes it.
                let pending = match engine.lock() {
                    Ok(mut e) => e.flush_destination_stats(),
                    Err(_) => break Err(DetectorError::Worker("engine mutex poisoned".into())),
                };
                report.destination_stats_produced += pending.len() as u64;
                let records = pending.iter().map(|d| destination_record(&config, d, None)).collect();
                if let Err(e) = deliver(&producer, &mut txn, &consumer, records, TopicPartitionList::new()).await {
                    break Err(e);
                }
                // Score the host-profile windows still open: no later packet will close them (`crate::profile`).
                let flushed = {
                    let (engine, config, m) = (engine.clone(), config.clone(), meters.clone());
                    let work = move || {
                        let mut anomalies = Vec::new();
                        if let Ok(mut e) = engine.lock() {
                            e.flush_profiles(&mut anomalies);
                        }
                        anomalies.iter().map(|a| anomaly_record(&config, &m, a)).collect::<Vec<_>>()
                    };
                    tokio::task::spawn_blocking(work).await.unwrap_or_default()
                };
                if let Err(e) = deliver(&producer, &mut txn, &consumer, flushed, TopicPartitionList::new()).await {
                    break Err(e);
                }
                // The group's warm-up ends with the input: contribute what is left, then score the batches that
                // waited for the model once it arrives.
                if let Some(t) = &mut group_model
                    && engine.lock().is_ok_and(|e| e.awaiting_model())
                {
                    let samples = match engine.lock() {
                        Ok(mut e) => {
                            e.set_owned_partitions(&owned_partitions(&consumer, &config, handles.share.as_ref()));
                            e.end_warmup();
                            e.take_warmup_samples()
                        }
                        Err(_) => break Err(DetectorError::Worker("engine mutex poisoned".into())),
                    };
                    let records = samples.iter().map(|c| warmup_record(&config, c)).collect();
                    if let Err(e) = deliver(&producer, &mut txn, &consumer, records, TopicPartitionList::new()).await {
                        break Err(e);
                    }
                    t.set_trainer(owns_first(&consumer, &config, handles.share.as_ref()));
                    let waited = tokio::select! {
                        _ = shutdown.cancelled() => continue,
                        m = t.wait(MODEL_WAIT) => m,
                    };
                    if let Some(model) = waited {
                        let (engine, cfg, m) = (engine.clone(), config.clone(), meters.clone());
                        let work = move || process_chunk(&engine, &cfg, &m, Vec::new(), &[], &[], Some(model), None);
                        let out = match tokio::task::spawn_blocking(work).await {
                            Ok(Ok(o)) => o,
                            Ok(Err(e)) => break Err(e),
                            Err(e) => break Err(DetectorError::Worker(e.to_string())),
                        };
                        if let Some(p) = &publisher {
                            publish_model(out.model.as_ref(), p, &meters);
                        }
                        let released = release_held(&consumer, &mut held);
                        if let Err(e) = deliver(&producer, &mut txn, &consumer, out.records, released).await {
                            break Err(e);
                        }
                    } else if t.gave_up() {
                        if let Ok(mut e) = engine.lock() {
                            e.abandon_group_model();
                        }
                        let released = release_held(&consumer, &mut held);
                        if let Err(e) = deliver(&producer, &mut txn, &consumer, Vec::new(), released).await {
                            break Err(e);
                        }
                    }
                }
                if let Some(share) = &handles.share {
                    tracing::info!(
                        index = share.index,
                        of = share.count,
                        "drain: packets done; waiting for the other detectors"
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => continue,
                        _ = share.packets_drained.wait() => {}
                    }
                }
                tracing::info!("drain: packets done; processing the destination statistics present now");
                phase = Phase::Destinations(
                    match high_watermarks(&consumer, &producer, &config.destinations_topic, handles.share.as_ref())
                        .await
                    {
                        Ok(t) => t,
                        Err(e) => break Err(e),
                    },
                );
                continue;
            }
            Phase::Destinations(t) if reached(&consumer, &config.destinations_topic, t, &next_offsets) => {
                // Every report is applied: the victim windows that fired get their exact closing update.
                let closed = {
                    let (engine, config, m) = (engine.clone(), config.clone(), meters.clone());
                    let work = move || {
                        let mut anomalies = Vec::new();
                        if let Ok(mut e) = engine.lock() {
                            e.flush_destinations(&mut anomalies);
                        }
                        anomalies.iter().map(|a| anomaly_record(&config, &m, a)).collect::<Vec<_>>()
                    };
                    tokio::task::spawn_blocking(work).await.unwrap_or_default()
                };
                if let Err(e) = deliver(&producer, &mut txn, &consumer, closed, TopicPartitionList::new()).await {
                    break Err(e);
                }
                tracing::info!("drain complete");
                break Ok(());
            }
            _ => {}
        }

        // Collect a chunk. After every `recv` (where rebalance callbacks run), records already collected from
        // partitions revoked meanwhile are discarded: their next owner reads them again, or this detector does
        // from where its state of the partition stops.
        let discard_revoked = |chunk: &mut Vec<OwnedMessage>| {
            let revoked = lock(&ownership).take_revoked();
            if !revoked.is_empty() && !chunk.is_empty() {
                chunk.retain(|m| !revoked.contains(&(m.topic().to_string(), m.partition())));
            }
        };
        let draining = !matches!(phase, Phase::Running);
        let mut chunk: Vec<OwnedMessage> = Vec::new();
        discard_revoked(&mut chunk);
        let first = if draining {
            tokio::select! {
                _ = shutdown.cancelled() => continue,
                r = tokio::time::timeout(config.chunk_linger.max(Duration::from_millis(20)), consumer.recv()) => r.ok(),
            }
        } else {
            let drain_signal = if drain.is_cancelled() { &never } else { &drain };
            // Bounded, so the loop beats while the input is idle.
            tokio::select! {
                _ = shutdown.cancelled() => continue,
                _ = drain_signal.cancelled() => continue,
                r = tokio::time::timeout(IDLE_BEAT, consumer.recv()) => r.ok(),
            }
        };
        discard_revoked(&mut chunk);
        match first {
            None => {}
            Some(Ok(m)) => chunk.push(m.detach()),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "consumer error");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        if !chunk.is_empty() {
            let deadline = tokio::time::Instant::now() + config.chunk_linger;
            while chunk.len() < config.chunk_records {
                let received = tokio::time::timeout_at(deadline, consumer.recv()).await;
                discard_revoked(&mut chunk);
                match received {
                    Ok(Ok(m)) => chunk.push(m.detach()),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "consumer error");
                        break;
                    }
                    Err(_) => break,
                }
            }
        }

        discard_revoked(&mut chunk);

        // State of partitions that left, and which records only rebuild state.
        let (drops, state_only) = {
            let mut o = lock(&ownership);
            let state_only: Vec<bool> = if o.rebuilding() {
                chunk.iter().map(|m| o.state_only(&(m.topic().to_string(), m.partition()), m.offset())).collect()
            } else {
                vec![false; chunk.len()]
            };
            (o.take_drops(), state_only)
        };
        // The group's model, put in force with this chunk; the partitions owned, for the warm-up.
        let (install, owned) = match &mut group_model {
            Some(t) => {
                let owned = owned_partitions(&consumer, &config, handles.share.as_ref());
                t.set_trainer(owned.contains(&0));
                let install = t.take_ready();
                if install.is_none() && t.gave_up() {
                    match engine.lock() {
                        Ok(mut e) => e.abandon_group_model(),
                        Err(_) => break Err(DetectorError::Worker("engine mutex poisoned".into())),
                    }
                    let released = release_held(&consumer, &mut held);
                    if let Err(e) = deliver(&producer, &mut txn, &consumer, Vec::new(), released).await {
                        break Err(e);
                    }
                }
                (install, Some(owned))
            }
            None => (None, None),
        };
        if chunk.is_empty() && drops.is_empty() && install.is_none() {
            continue;
        }
        let positions: Vec<(Origin, bool)> = chunk
            .iter()
            .zip(&state_only)
            .map(|(m, s)| (Origin { topic: m.topic().to_string(), partition: m.partition(), offset: m.offset() }, *s))
            .collect();
        let chunk_started = std::time::Instant::now();
        let out = {
            let engine = engine.clone();
            let cfg = config.clone();
            let m = meters.clone();
            let work = move || process_chunk(&engine, &cfg, &m, chunk, &state_only, &drops, install, owned);
            match tokio::task::spawn_blocking(work).await {
                Ok(Ok(o)) => o,
                Ok(Err(e)) => break Err(e),
                Err(e) => break Err(DetectorError::Worker(e.to_string())),
            }
        };
        if let Some(p) = &publisher {
            publish_model(out.model.as_ref(), p, &meters);
        }

        // The state now reflects every record of the chunk; offsets are stored (or committed with the chunk's
        // transaction) for the processed ones only (a rebuilt record's offset is below the committed one).
        let mut seen: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        let mut highest: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        let consumed = positions.len();
        for (o, rebuilt) in positions {
            let tp = (o.topic, o.partition);
            let e = seen.entry(tp.clone()).or_insert(o.offset);
            *e = (*e).max(o.offset);
            if !rebuilt {
                let e = highest.entry(tp).or_insert(o.offset);
                *e = (*e).max(o.offset);
            }
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in highest {
            let next = next_offsets.entry((topic.clone(), partition)).or_insert(offset + 1);
            *next = (*next).max(offset + 1);
            if out.awaiting_model && topic == config.packets_topic {
                let h = held.entry((topic, partition)).or_insert(offset + 1);
                *h = (*h).max(offset + 1);
            } else if held.contains_key(&(topic.clone(), partition)) {
                // Released below, with this chunk's offset.
                held.insert((topic, partition), offset + 1);
            } else {
                let _ = tpl.add_partition_offset(&topic, partition, Offset::Offset(offset + 1));
            }
        }
        if !out.awaiting_model && !held.is_empty() {
            // The model arrived with this chunk: the anomalies of the batches that waited for it go out with it.
            for e in release_held(&consumer, &mut held).elements() {
                let _ = tpl.add_partition_offset(e.topic(), e.partition(), e.offset());
            }
        }

        // Produce and await every acknowledgement, then store the chunk's offsets (at least once), or produce
        // and commit the offsets in one transaction (exactly once). A shutdown does not wait for the
        // acknowledgements (Kafka may be gone): the chunk's offsets are not stored, or its transaction is aborted,
        // so it is consumed again. Once the records are acknowledged, a commit runs to its end (never aborted
        // while it is in progress).
        let produced = tokio::select! {
            r = produce_phase(&producer, &mut txn, out.records, tpl.count() > 0) => Some(r),
            () = shutdown.cancelled() => None,
        };
        match produced {
            Some(Ok(())) => {
                if let Err(e) = settle(&mut txn, &consumer, tpl).await {
                    break Err(e);
                }
            }
            Some(Err(e)) => break Err(e),
            None => {
                tracing::warn!(
                    records = consumed,
                    "shutdown: the output of the last chunk is not acknowledged; its offsets are not stored"
                );
                if let Some(t) = &mut txn {
                    t.abort_within(grace.share(0.25)).await;
                }
                break Ok(());
            }
        }
        {
            let mut o = lock(&ownership);
            for (tp, offset) in &seen {
                if let Some(r) = o.processed(tp, offset + 1) {
                    tracing::info!(topic = %tp.0, partition = tp.1, from = r.from, until = r.until,
                        "state of a partition that moved here rebuilt");
                }
            }
        }
        report.records += consumed as u64;
        meters.chunk_latency.record(chunk_started.elapsed().as_secs_f64(), &[]);
        meters.records_consumed.add(consumed as u64, &[]);
        meters.records_rebuilt.add(out.rebuilt, &[]);
        meters.dead_lettered.add(out.dead_lettered, &[]);
        meters.packets_processed.add(out.packets_total.saturating_sub(packets_seen), &[]);
        meters.hosts_evicted.add(out.hosts_evicted_total.saturating_sub(evictions_seen), &[]);
        meters.hosts_tracked.record(out.hosts_tracked, &[]);
        meters.hosts_bytes.record(out.hosts_bytes, &[]);
        for ((reason, now), (_, seen)) in
            out.host_evictions.by_reason().into_iter().zip(evictions_by_reason_seen.by_reason())
        {
            if now > seen {
                meters.evictions.add(
                    now - seen,
                    &[opentelemetry::KeyValue::new("table", "hosts"), opentelemetry::KeyValue::new("reason", reason)],
                );
            }
        }
        evictions_by_reason_seen = out.host_evictions;
        for (side, bytes) in [("source", out.victim.source_bytes), ("destination", out.victim.destination_bytes)] {
            meters.victim_bytes.record(bytes as u64, &[opentelemetry::KeyValue::new("side", side)]);
        }
        for ((table, reason, now), (_, _, seen)) in out.victim.evictions.into_iter().zip(victim_seen.evictions) {
            if now > seen {
                meters.evictions.add(
                    now - seen,
                    &[opentelemetry::KeyValue::new("table", table), opentelemetry::KeyValue::new("reason", reason)],
                );
            }
        }
        for ((reason, now), seen) in
            crate::victim::CLOSE_REASONS.into_iter().zip(out.victim.closed).zip(victim_seen.closed)
        {
            if now > seen {
                meters.victim_closed.add(now - seen, &[opentelemetry::KeyValue::new("reason", reason)]);
            }
        }
        victim_seen = out.victim;
        (packets_seen, evictions_seen) =
            (packets_seen.max(out.packets_total), evictions_seen.max(out.hosts_evicted_total));
        lag.maybe_sample(&consumer, &producer, &meters);
        report.dead_lettered += out.dead_lettered;
        report.destination_stats_produced += out.destination_stats;
        let _ = out.anomalies;
    };

    // Shut down: report the destination deltas still held (the offsets of the records they count are stored,
    // and the next owner of those partitions rebuilds them as reported), flush the producer, commit the stored
    // offsets; after a shutdown, each step within its share of what is left of the grace.
    ready.stop_beating();
    let stopping = shutdown.is_cancelled();
    let bound = |share: f64| if stopping { grace.share(share) } else { FINAL_STEP_TIMEOUT };
    if result.is_ok() {
        let held = match engine.lock() {
            Ok(mut e) => e.flush_destination_stats(),
            Err(_) => Vec::new(),
        };
        report.destination_stats_produced += held.len() as u64;
        let records = held.iter().map(|d| destination_record(&config, d, None)).collect();
        let empty = TopicPartitionList::new();
        // Only the produce phase is bounded by the grace: a commit, once begun, runs to its end.
        let produced = tokio::time::timeout(bound(0.25), produce_phase(&producer, &mut txn, records, false)).await;
        let delivered = match produced {
            Ok(Ok(())) => Ok(settle(&mut txn, &consumer, empty).await),
            Ok(Err(e)) => Ok(Err(e)),
            Err(elapsed) => Err(elapsed),
        };
        match delivered {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not report the destination statistics held at shutdown"),
            Err(_) => tracing::error!(
                records = held.len(),
                "shutdown: {} destination statistics held were not acknowledged in time; the next owner of their \
                 partitions rebuilds them",
                held.len()
            ),
        }
    }
    let flush_producer = producer.clone();
    let flush_timeout = bound(0.5);
    let _ = tokio::task::spawn_blocking(move || flush_producer.flush(Timeout::After(flush_timeout))).await;
    if producer.in_flight_count() > 0 {
        tracing::error!(
            unflushed = producer.in_flight_count(),
            "shutdown: {} records unflushed (anomalies, destination statistics, dead letters not acknowledged)",
            producer.in_flight_count()
        );
    }
    if !held.is_empty() {
        // The batches waiting for the group's model are not scored, so the offsets held for them are committed
        // neither with a transaction nor by `commit_final`: their packets are consumed again (at least once).
        tracing::warn!(
            partitions = held.len(),
            "shutdown during the group model's warm-up: the packets offsets held for the unscored isolation backlog \
             are not committed; those packets are consumed again"
        );
    }
    match &mut txn {
        // Offsets were committed with each transaction; one left open (a deadline passed) is aborted.
        Some(t) => t.abort_within(bound(0.9)).await,
        None => commit_final(&consumer, &next_offsets, bound(0.9), &grace).await,
    }
    consumer.unsubscribe();
    ready.set(false);
    if let Ok(e) = engine.lock() {
        let s = e.stats();
        report.packets = s.packets;
        report.packets_time_rejected = s.packets_time_rejected;
        report.batches = s.batches;
        report.destination_stats_consumed = s.destination_stats;
        report.anomalies = s.anomalies.clone();
        report.hosts_tracked = e.hosts_tracked();
        report.hosts_evicted = e.hosts_evicted();
        report.models = e.models_in_force();
    }
    for &k in AnomalyKind::ALL {
        report.anomalies.entry(k).or_default();
    }
    tracing::info!(?report, "detector stopped");
    // Flushed and committed: the clients' teardown need not delay the report.
    let models_consumer = match group_model {
        Some(t) => Some(t.stop().await),
        None => None,
    };
    teardown.drop_in_background((consumer, producer, models_consumer));
    result.map(|()| report)
}

/// Takes the offsets `held` back while the isolation detector waited for the group's model, for the partitions
/// still assigned (a revoked partition's next owner reads its records again): they go with the next [`deliver`].
fn release_held(consumer: &DetectorConsumer, held: &mut BTreeMap<TopicPartition, i64>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    if held.is_empty() {
        return tpl;
    }
    let assigned: Vec<TopicPartition> = consumer.assignment().map(|a| partitions_of(&a)).unwrap_or_default();
    for ((topic, partition), offset) in std::mem::take(held) {
        if assigned.contains(&(topic.clone(), partition)) {
            let _ = tpl.add_partition_offset(&topic, partition, Offset::Offset(offset));
        }
    }
    if tpl.count() > 0 {
        tracing::info!(partitions = tpl.count(), "offsets held for the isolation backlog released");
    }
    tpl
}

/// Delivers `records` and then marks `offsets` (next offsets to consume) as processed. At least once: produces
/// and awaits every acknowledgement, then stores the offsets and starts committing them at once (not at the next
/// auto-commit), so a restart or a new owner repeats one chunk at most. Exactly once: one transaction holds the
/// records and the offsets ([`Transactions`]). [`produce_phase`] then [`settle`].
async fn deliver(
    producer: &FutureProducer<KafkaLog>,
    txn: &mut Option<Transactions>,
    consumer: &DetectorConsumer,
    records: Vec<Outgoing>,
    offsets: TopicPartitionList,
) -> Result<(), DetectorError> {
    produce_phase(producer, txn, records, offsets.count() > 0).await?;
    settle(txn, consumer, offsets).await
}

/// Produces `records` and awaits their acknowledgements; with exactly-once on, within a transaction begun here
/// (none when there are neither records nor offsets to commit, `has_offsets`). The only cancellable phase of a
/// delivery: dropped, it leaves at most an open transaction with nothing committed, to be aborted.
async fn produce_phase(
    producer: &FutureProducer<KafkaLog>,
    txn: &mut Option<Transactions>,
    records: Vec<Outgoing>,
    has_offsets: bool,
) -> Result<(), DetectorError> {
    let Some(t) = txn else {
        return produce_all(producer, records).await;
    };
    if records.is_empty() && !has_offsets {
        return Ok(());
    }
    if t.is_open() {
        // Left open by a produce phase that a shutdown interrupted.
        t.abort().await;
    }
    t.begin()?;
    if let Err(e) = produce_all(producer, records).await {
        t.abort().await;
        tracing::error!(transactional_id = %t.id(), "a record of the transaction was not delivered; aborted");
        return Err(e);
    }
    Ok(())
}

/// After [`produce_phase`]: stores `offsets` (at least once), or commits them with the open transaction (exactly
/// once). Not to be cancelled: a commit runs to its end (within about `TRANSACTION_TIMEOUT` per call), so that
/// no abort ever races it.
async fn settle(
    txn: &mut Option<Transactions>,
    consumer: &DetectorConsumer,
    offsets: TopicPartitionList,
) -> Result<(), DetectorError> {
    let Some(t) = txn else {
        if offsets.count() > 0 {
            match consumer.store_offsets(&offsets) {
                Ok(()) => {
                    if let Err(e) = consumer.commit_consumer_state(CommitMode::Async) {
                        tracing::debug!(error = %e, "offset commit not started");
                    }
                }
                // A partition revoked meanwhile: its new owner reprocesses from the last committed offset.
                Err(e) => tracing::warn!(error = %e, "could not store offsets"),
            }
        }
        return Ok(());
    };
    if !t.is_open() {
        return Ok(());
    }
    t.commit(offsets, consumer.group_metadata()).await
}

/// Longest wait, at the end of the input, for the group's isolation model (published once every partition has
/// contributed its warm-up).
const MODEL_WAIT: Duration = Duration::from_secs(60);
/// How long the receive of an idle loop waits before the loop goes round (and beats) again.
const IDLE_BEAT: Duration = Duration::from_secs(1);
/// How long each final step (held statistics, flush) may take at the end of a drain.
const FINAL_STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Commits the stored offsets within `timeout`; when that fails or times out, logs the offsets (`next`, by
/// partition) that may not be committed: the next owner of those partitions consumes them again.
async fn commit_final(
    consumer: &Arc<DetectorConsumer>,
    next: &HashMap<(String, i32), i64>,
    timeout: Duration,
    grace: &Grace,
) {
    let commit_consumer = consumer.clone();
    let commit = tokio::task::spawn_blocking(move || commit_consumer.commit_consumer_state(CommitMode::Sync));
    let failure = match tokio::time::timeout(timeout, commit).await {
        Ok(Ok(Ok(()))) | Ok(Ok(Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)))) => return,
        Ok(Ok(Err(e))) => e.to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {timeout:?} of a {:?} shutdown grace", grace.length()),
    };
    let mut offsets: Vec<String> = next.iter().map(|((t, p), o)| format!("{t}/{p}@{o}")).collect();
    offsets.sort();
    tracing::error!(
        error = %failure,
        "shutdown: final offset commit failed ({failure}); offsets of partitions not committed since the last \
         auto-commit: [{}]; records after the group's committed offsets are consumed again",
        offsets.join(", ")
    );
}

/// Decodes and processes one chunk (on a blocking thread): first drops the state of the partitions in `drops`,
/// then feeds every record, for state only where `state_only` says so (a rebuild).
#[allow(clippy::too_many_arguments)]
fn process_chunk(
    engine: &Mutex<Engine>,
    config: &DetectorConfig,
    meters: &Metrics,
    chunk: Vec<OwnedMessage>,
    state_only: &[bool],
    drops: &[TopicPartition],
    install: Option<Arc<TrainedForest>>,
    owned: Option<Vec<i32>>,
) -> Result<ChunkOutput, DetectorError> {
    use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _};
    let mut engine = engine.lock().map_err(|_| DetectorError::Worker("engine mutex poisoned".into()))?;
    if !drops.is_empty() {
        let p: Vec<i32> = drops.iter().filter(|(t, _)| *t == config.packets_topic).map(|(_, p)| *p).collect();
        let d: Vec<i32> = drops.iter().filter(|(t, _)| *t == config.destinations_topic).map(|(_, p)| *p).collect();
        let (hosts, windows) = engine.revoke(&p, &d);
        tracing::info!(hosts, destination_windows = windows, "dropped state of partitions that left");
    }
    let ids: SchemaIds = config.schema_ids;
    let mut out = ChunkOutput::default();
    let mut anomalies: Vec<Anomaly> = Vec::new();
    // Trace context: the chunk span links to (at most 128 of) its records' contexts; each anomaly's span is a
    // child of the record that raised it, so a packet batch and the alert it caused share one trace.
    let mut record_cx: Vec<Option<opentelemetry::Context>> = Vec::with_capacity(chunk.len());
    let mut anomaly_origin: Vec<usize> = Vec::new();
    if let Some(owned) = owned {
        engine.set_owned_partitions(&owned);
    }
    // The group's model scores the batches that waited for it; their anomalies belong to no record of the chunk.
    if let Some(model) = install {
        engine.install_model(model, &mut anomalies);
        anomaly_origin.resize(anomalies.len(), usize::MAX);
    }
    for (i, m) in chunk.iter().enumerate() {
        let rebuild = state_only.get(i).copied().unwrap_or(false);
        record_cx.push(if rebuild { None } else { metrics::extract(m.headers()) });
        let origin = Origin { topic: m.topic().to_string(), partition: m.partition(), offset: m.offset() };
        let payload = m.payload().unwrap_or_default();
        let decoded = if payload.is_empty() {
            Err("empty payload (tombstone or null value)".to_string())
        } else if origin.topic == config.packets_topic {
            PacketBatch::decode(payload, &ids).map(Record::Batch).map_err(|e| e.to_string())
        } else if origin.topic == config.destinations_topic {
            DestinationStats::decode(payload, &ids).map(Record::Stats).map_err(|e| e.to_string())
        } else {
            Err(format!("record from unexpected topic {}", origin.topic))
        };
        if rebuild {
            // The previous owner produced this record's output (a poison record was dead-lettered by it).
            out.rebuilt += 1;
            match decoded {
                Ok(Record::Batch(b)) => engine.rebuild_batch(&b, origin.partition),
                Ok(Record::Stats(s)) => engine.rebuild_destination_stats(&s, origin.partition),
                Err(_) => {}
            }
            continue;
        }
        let rejected = match decoded {
            Ok(Record::Batch(b)) => engine.process_batch(&b, origin.partition, &mut anomalies).map(|r| r.to_string()),
            Ok(Record::Stats(s)) => {
                engine.process_destination_stats(&s, origin.partition, &mut anomalies);
                None
            }
            Err(reason) => Some(reason),
        };
        // Dead-lettered records (undecodable, or outside the packet-time skew) raise no anomaly.
        if let Some(reason) = rejected {
            let origin_text = format!("{}/{}/{}", origin.topic, origin.partition, origin.offset);
            tracing::warn!(origin = %origin_text, %reason, "poison record sent to the dead-letter topic");
            let headers = OwnedHeaders::new()
                .insert(Header { key: topics::DLQ_REASON_HEADER, value: Some(reason.as_str()) })
                .insert(Header { key: topics::DLQ_ORIGIN_HEADER, value: Some(origin_text.as_str()) });
            out.records.push(Outgoing {
                topic: config.dead_letter_topic.clone(),
                key: m.key().unwrap_or_default().to_vec(),
                payload: payload.to_vec(),
                headers: Some(headers),
            });
            out.dead_lettered += 1;
        }
        anomaly_origin.resize(anomalies.len(), record_cx.len().saturating_sub(1));
    }
    let tracer = opentelemetry::global::tracer("netanom");
    let links: Vec<opentelemetry::trace::Link> = record_cx
        .iter()
        .flatten()
        .take(128)
        .map(|cx| opentelemetry::trace::Link::with_context(cx.span().span_context().clone()))
        .collect();
    // The chunk's span: CONSUMER, `process`, naming its topic when all its records come from one.
    let process = messaging::Operation::Process;
    let mut topics = chunk.iter().map(|m| m.topic());
    let first_topic = topics.next().unwrap_or(config.packets_topic.as_str());
    let mut attributes = if topics.all(|t| t == first_topic) {
        messaging::attributes(process, first_topic)
    } else {
        messaging::attributes(process, "").into_iter().filter(|kv| kv.key.as_str() != messaging::DESTINATION).collect()
    };
    attributes.extend([
        opentelemetry::KeyValue::new(messaging::GROUP, config.group_id.clone()),
        opentelemetry::KeyValue::new(messaging::MESSAGE_COUNT, chunk.len() as i64),
        opentelemetry::KeyValue::new("netanom.records", chunk.len() as i64),
    ]);
    let mut chunk_span = tracer
        .span_builder(metrics::CHUNK_SPAN)
        .with_kind(process.span_kind())
        .with_links(links)
        .with_attributes(attributes)
        .start(&tracer);
    let chunk_cx = opentelemetry::Context::current().with_remote_span_context(chunk_span.span_context().clone());
    for (a, origin) in anomalies.iter().zip(&anomaly_origin) {
        tracing::info!(id = %a.id, kind = %a.kind, host = %a.host, score = a.score, reason = %a.reason, "anomaly");
        meters.anomalies.add(1, &[opentelemetry::KeyValue::new("kind", a.kind.as_str())]);
        let parent = record_cx.get(*origin).cloned().flatten().unwrap_or_else(|| chunk_cx.clone());
        // PRODUCER: it publishes the anomaly record.
        let mut attributes = messaging::attributes(messaging::Operation::Publish, &config.anomalies_topic);
        attributes.push(opentelemetry::KeyValue::new("netanom.kind", a.kind.as_str()));
        let mut span = tracer
            .span_builder(metrics::ANOMALY_SPAN)
            .with_kind(messaging::Operation::Publish.span_kind())
            .with_attributes(attributes)
            .with_links(vec![opentelemetry::trace::Link::with_context(chunk_span.span_context().clone())])
            .start_with_context(&tracer, &parent);
        let cx = parent.with_remote_span_context(span.span_context().clone());
        span.end();
        out.records.push(Outgoing {
            topic: config.anomalies_topic.clone(),
            key: a.host.as_bytes().to_vec(),
            payload: a.encode(&ids),
            headers: metrics::inject(&cx, None),
        });
    }
    out.anomalies = anomalies.len() as u64;
    out.awaiting_model = engine.awaiting_model();
    for c in engine.take_warmup_samples() {
        out.records.push(warmup_record(config, &c));
    }
    for d in engine.end_chunk() {
        out.records.push(destination_record(config, &d, Some(&chunk_cx)));
        out.destination_stats += 1;
    }
    chunk_span.end();
    out.model = engine.shared_model().cloned();
    out.packets_total = engine.stats().packets;
    out.hosts_tracked = engine.hosts_tracked() as u64;
    out.hosts_evicted_total = engine.hosts_evicted();
    out.hosts_bytes = engine.hosts_bytes() as u64;
    out.host_evictions = engine.host_evictions();
    out.victim = engine.victim_tables();
    Ok(out)
}

/// The models-topic record of one partition's warm-up contribution.
fn warmup_record(config: &DetectorConfig, c: &WarmupSample) -> Outgoing {
    Outgoing {
        topic: config.models_topic.clone(),
        key: sample_key(c.partition).into_bytes(),
        payload: ModelRecord::Sample(c.clone()).encode(),
        headers: None,
    }
}

/// Partitions of `topic`, asked through the producer's connections; 1 when unknown (logged).
async fn partition_count(producer: &FutureProducer<KafkaLog>, topic: &str) -> i32 {
    let (producer, name) = (producer.clone(), topic.to_string());
    let counted = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(Some(&name), METADATA_TIMEOUT)
            .map(|md| md.topics().iter().filter(|t| t.name() == name).map(|t| t.partitions().len()).sum::<usize>())
    })
    .await;
    match counted {
        Ok(Ok(n)) if n > 0 => i32::try_from(n).unwrap_or(i32::MAX),
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
                Ok(Ok(_)) => "no partitions".to_string(),
            };
            tracing::warn!(%topic, error = %why, "partition count unknown: the warm-up counts one partition");
            1
        }
    }
}

/// The packets-topic partitions this detector owns now.
fn owned_partitions(consumer: &DetectorConsumer, config: &DetectorConfig, share: Option<&Share>) -> Vec<i32> {
    let assigned = consumer.assignment().map(|a| partitions_of(&a)).unwrap_or_default();
    assigned
        .into_iter()
        .filter(|(t, p)| *t == config.packets_topic && share.is_none_or(|s| s.owns(*p)))
        .map(|(_, p)| p)
        .collect()
}

/// Whether this detector owns packets-topic partition 0 (and so publishes the group's model).
fn owns_first(consumer: &DetectorConsumer, config: &DetectorConfig, share: Option<&Share>) -> bool {
    owned_partitions(consumer, config, share).contains(&0)
}

/// Hands the model in force to the scoring API's feed when it changed (trained, retrained).
fn publish_model(model: Option<&Arc<TrainedForest>>, publisher: &ModelPublisher, meters: &Metrics) {
    if publisher.publish(model)
        && let Some(m) = model
    {
        tracing::info!(model_version = m.version(), generation = m.generation(), "model in force published");
        meters.model_generation.record(u64::from(m.generation()), &[]);
    }
}

/// The anomalies-topic record of an anomaly raised outside a chunk (the profile windows flushed at the end of
/// the input), logged and counted like the chunk's.
fn anomaly_record(config: &DetectorConfig, meters: &Metrics, a: &Anomaly) -> Outgoing {
    tracing::info!(id = %a.id, kind = %a.kind, host = %a.host, score = a.score, reason = %a.reason, "anomaly");
    meters.anomalies.add(1, &[opentelemetry::KeyValue::new("kind", a.kind.as_str())]);
    Outgoing {
        topic: config.anomalies_topic.clone(),
        key: a.host.as_bytes().to_vec(),
        payload: a.encode(&config.schema_ids),
        headers: None,
    }
}

/// The destinations-topic record of one delta, keyed by destination.
fn destination_record(config: &DetectorConfig, d: &DestinationStats, cx: Option<&opentelemetry::Context>) -> Outgoing {
    Outgoing {
        topic: config.destinations_topic.clone(),
        key: d.destination.to_string().into_bytes(),
        payload: d.encode(&config.schema_ids),
        headers: cx.and_then(|cx| metrics::inject(cx, None)),
    }
}

/// Samples the consumer lag (high watermark minus position per topic, summed over assigned partitions) at most
/// every 5 s, on a blocking thread through the producer's connections, without stalling the loop.
#[derive(Default)]
struct LagSampler {
    busy: Arc<std::sync::atomic::AtomicBool>,
    last: Mutex<Option<std::time::Instant>>,
}

impl LagSampler {
    const EVERY: Duration = Duration::from_secs(5);

    fn maybe_sample(&self, consumer: &Arc<DetectorConsumer>, producer: &FutureProducer<KafkaLog>, meters: &Metrics) {
        use std::sync::atomic::Ordering;
        let Ok(mut last) = self.last.lock() else { return };
        if last.is_some_and(|t| t.elapsed() < Self::EVERY) || self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        *last = Some(std::time::Instant::now());
        let Ok(positions) = consumer.position() else {
            self.busy.store(false, Ordering::Release);
            return;
        };
        let (producer, meters, busy) = (producer.clone(), meters.clone(), self.busy.clone());
        tokio::task::spawn_blocking(move || {
            let mut lag: BTreeMap<String, i64> = BTreeMap::new();
            for e in positions.elements() {
                let Offset::Offset(position) = e.offset() else { continue };
                if let Ok((_, high)) =
                    producer.client().fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(2))
                {
                    *lag.entry(e.topic().to_string()).or_default() += (high - position).max(0);
                }
            }
            for (topic, n) in lag {
                meters.consumer_lag.record(n, &[opentelemetry::KeyValue::new("topic", topic)]);
            }
            busy.store(false, Ordering::Release);
        });
    }
}

enum Record {
    Batch(PacketBatch),
    Stats(DestinationStats),
}

/// Enqueues every record (waiting while the producer queue is full) and awaits every acknowledgement.
async fn produce_all(producer: &FutureProducer<KafkaLog>, records: Vec<Outgoing>) -> Result<(), DetectorError> {
    let mut pending: Vec<(String, Vec<u8>, DeliveryFuture)> = Vec::with_capacity(records.len());
    for r in &records {
        let mut record = FutureRecord::to(&r.topic).key(&r.key[..]).payload(&r.payload[..]);
        if let Some(h) = &r.headers {
            record = record.headers(h.clone());
        }
        loop {
            match producer.send_result(record) {
                Ok(f) => {
                    pending.push((r.topic.clone(), r.key.clone(), f));
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(produce_error(&r.topic, &r.key, e)),
            }
        }
    }
    for (topic, key, f) in pending {
        match f.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(produce_error(&topic, &key, e)),
            Err(_) => return Err(produce_error(&topic, &key, KafkaError::Canceled)),
        }
    }
    Ok(())
}

fn produce_error(topic: &str, key: &[u8], source: KafkaError) -> DetectorError {
    DetectorError::Produce {
        topic: topic.to_string(),
        key: String::from_utf8_lossy(key).into_owned(),
        source: Box::new(source),
    }
}

/// Every partition of `topics`, to be consumed from the group's committed offsets (else the earliest).
fn every_partition(
    consumer: &DetectorConsumer,
    topics: &[String],
    share: Option<&Share>,
) -> Result<TopicPartitionList, DetectorError> {
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let md =
            consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT).map_err(kafka(format!("metadata of {topic}")))?;
        for t in md.topics().iter().filter(|t| t.name() == topic) {
            for p in t.partitions().iter().filter(|p| share.is_none_or(|s| s.owns(p.id()))) {
                tpl.add_partition_offset(topic, p.id(), Offset::Stored)
                    .map_err(kafka(format!("partition {topic}/{}", p.id())))?;
            }
        }
    }
    Ok(tpl)
}

/// High watermark of every partition of `topic` (in drain mode one detector owns them all).
/// Metadata and watermarks are asked through the producer's connections: the consumer's are busy with fetch
/// long-polls, behind which each request would wait up to `fetch.wait.max.ms`.
async fn high_watermarks(
    consumer: &Arc<DetectorConsumer>,
    producer: &FutureProducer<KafkaLog>,
    topic: &str,
    share: Option<&Share>,
) -> Result<BTreeMap<i32, i64>, DetectorError> {
    let c = consumer.clone();
    let share = share.cloned();
    let producer = producer.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let client = producer.client();
        let md =
            client.fetch_metadata(Some(&topic), METADATA_TIMEOUT).map_err(kafka(format!("metadata of {topic}")))?;
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .filter(|p| share.as_ref().is_none_or(|s| s.owns(*p)))
            .collect();
        let mut out = BTreeMap::new();
        let mut committed_tpl = TopicPartitionList::new();
        for p in &partitions {
            let (low, high) = client
                .fetch_watermarks(&topic, *p, METADATA_TIMEOUT)
                .map_err(kafka(format!("watermarks of {topic}/{p}")))?;
            // An empty partition (or one whose records expired) has nothing to wait for.
            out.insert(*p, if high <= low { i64::MIN } else { high });
            committed_tpl.add_partition(&topic, *p);
        }
        // Offsets committed by an earlier run of this group count as processed.
        if let Ok(committed) = c.committed_offsets(committed_tpl, METADATA_TIMEOUT) {
            for e in committed.elements() {
                if let Offset::Offset(o) = e.offset()
                    && let Some(h) = out.get_mut(&e.partition())
                    && o >= *h
                {
                    *h = i64::MIN;
                }
            }
        }
        tracing::info!(topic = %topic, targets = ?out, "drain targets");
        Ok(out)
    })
    .await
    .map_err(|e| DetectorError::Worker(e.to_string()))?
}

/// True when every partition of `topic` in `targets` has been processed up to its target.
fn reached(
    consumer: &DetectorConsumer,
    topic: &str,
    targets: &BTreeMap<i32, i64>,
    next_offsets: &HashMap<(String, i32), i64>,
) -> bool {
    let positions: HashMap<i32, i64> = consumer
        .position()
        .map(|tpl| {
            tpl.elements_for_topic(topic)
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some((e.partition(), o)),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    targets.iter().all(|(p, high)| {
        *high == i64::MIN
            || next_offsets.get(&(topic.to_string(), *p)).is_some_and(|n| n >= high)
            || positions.get(p).is_some_and(|n| n >= high)
    })
}
