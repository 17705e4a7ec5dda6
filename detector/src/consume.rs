//! The Kafka loop: one consumer subscribed to the packets and destinations topics, records processed in
//! chunks on a blocking thread by the [`Engine`], anomalies, destination-statistics deltas and dead letters
//! produced and acknowledged before the chunk's offsets are stored (at-least-once), rebalances turned into
//! state drops, and the drain protocol. Owns no detection logic.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netanom_schemas::{Anomaly, AnomalyKind, DestinationStats, PacketBatch, SchemaIds, topics};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::DetectorConfig;
use crate::engine::Engine;
use crate::forest::TrainedForest;
use crate::metrics::{self, Metrics};
use crate::{DetectorError, DetectorReport};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Partitions revoked by rebalances and not (yet) assigned again; applied before the next chunk.
#[derive(Debug, Default)]
struct Ownership {
    assigned: HashSet<(String, i32)>,
    revoked: HashSet<(String, i32)>,
}

/// Consumer context that records partition revocations for the worker.
struct DetectorContext {
    ownership: Arc<Mutex<Ownership>>,
}

impl ClientContext for DetectorContext {}

impl ConsumerContext for DetectorContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance
            && let Ok(mut o) = self.ownership.lock()
        {
            for e in tpl.elements() {
                let key = (e.topic().to_string(), e.partition());
                o.assigned.remove(&key);
                o.revoked.insert(key);
            }
            tracing::info!(partitions = tpl.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance
            && let Ok(mut o) = self.ownership.lock()
        {
            for e in tpl.elements() {
                let key = (e.topic().to_string(), e.partition());
                o.revoked.remove(&key);
                o.assigned.insert(key);
            }
            metrics::READY.store(true, std::sync::atomic::Ordering::Release);
            tracing::info!(partitions = tpl.count(), "partitions assigned");
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
    anomalies: u64,
    destination_stats: u64,
    dead_lettered: u64,
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

fn client_config(config: &DetectorConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers);
    for (k, v) in &config.kafka_properties {
        c.set(k, v);
    }
    c
}

/// Runs the detector until `shutdown` (stop now) or, after `drain` fires, until the input present at that
/// moment has been processed.
pub(crate) async fn run(
    config: DetectorConfig,
    shutdown: CancellationToken,
    drain: Option<CancellationToken>,
) -> Result<DetectorReport, DetectorError> {
    config.validate().map_err(DetectorError::Config)?;
    let model = match config.forest.model_path.clone() {
        Some(path) if config.forest.enabled => {
            let m = tokio::task::spawn_blocking(move || TrainedForest::load(&path))
                .await
                .map_err(|e| DetectorError::Worker(e.to_string()))??;
            tracing::info!(model_version = m.version(), threshold = m.threshold(), "isolation model loaded");
            Some(m)
        }
        _ => None,
    };

    let ownership = Arc::new(Mutex::new(Ownership::default()));
    let mut cc = client_config(&config);
    cc.set("group.id", &config.group_id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: Arc<DetectorConsumer> = Arc::new(
        cc.create_with_context(DetectorContext { ownership: ownership.clone() })
            .map_err(redacted)
            .map_err(kafka("creating the consumer"))?,
    );
    let producer: FutureProducer = client_config(&config)
        .set("linger.ms", "5")
        .create()
        .map_err(redacted)
        .map_err(kafka("creating the producer"))?;
    let topics = [config.packets_topic.as_str(), config.destinations_topic.as_str()];
    if config.static_assignment {
        let c = consumer.clone();
        let names: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        let tpl = tokio::task::spawn_blocking(move || every_partition(&c, &names))
            .await
            .map_err(|e| DetectorError::Worker(e.to_string()))??;
        consumer.assign(&tpl).map_err(kafka("assigning every partition"))?;
        metrics::READY.store(true, std::sync::atomic::Ordering::Release);
    } else {
        consumer.subscribe(&topics).map_err(kafka("subscribing"))?;
    }
    tracing::info!(
        packets = %config.packets_topic,
        destinations = %config.destinations_topic,
        group = %config.group_id,
        "detector started"
    );

    let engine = Arc::new(Mutex::new(Engine::new(&config, model)));
    let meters = Metrics::new();
    let (mut packets_seen, mut evictions_seen) = (0u64, 0u64);
    let lag = LagSampler::default();
    let mut report = DetectorReport::default();
    let mut next_offsets: HashMap<(String, i32), i64> = HashMap::new();
    let mut phase = Phase::Running;
    let drain = drain.unwrap_or_default();
    let never = CancellationToken::new();

    let result = loop {
        if shutdown.is_cancelled() {
            break Ok(());
        }
        if matches!(phase, Phase::Running) && drain.is_cancelled() {
            tracing::info!("drain requested: processing the packets present now");
            phase = Phase::Packets(match high_watermarks(&consumer, &producer, &config.packets_topic).await {
                Ok(t) => t,
                Err(e) => break Err(e),
            });
        }
        // Drain progress.
        match &phase {
            Phase::Packets(t) if reached(&consumer, &config.packets_topic, t, &next_offsets) => {
                tracing::info!("drain: packets done; processing the destination statistics present now");
                phase = Phase::Destinations(
                    match high_watermarks(&consumer, &producer, &config.destinations_topic).await {
                        Ok(t) => t,
                        Err(e) => break Err(e),
                    },
                );
                continue;
            }
            Phase::Destinations(t) if reached(&consumer, &config.destinations_topic, t, &next_offsets) => {
                tracing::info!("drain complete");
                break Ok(());
            }
            _ => {}
        }

        // Collect a chunk.
        let draining = !matches!(phase, Phase::Running);
        let mut chunk: Vec<OwnedMessage> = Vec::new();
        let first = if draining {
            tokio::select! {
                _ = shutdown.cancelled() => continue,
                r = tokio::time::timeout(config.chunk_linger.max(Duration::from_millis(20)), consumer.recv()) => r.ok(),
            }
        } else {
            let drain_signal = if drain.is_cancelled() { &never } else { &drain };
            tokio::select! {
                _ = shutdown.cancelled() => continue,
                _ = drain_signal.cancelled() => continue,
                r = consumer.recv() => Some(r),
            }
        };
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
                match tokio::time::timeout_at(deadline, consumer.recv()).await {
                    Ok(Ok(m)) => chunk.push(m.detach()),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "consumer error");
                        break;
                    }
                    Err(_) => break,
                }
            }
        }

        // Partition revocations.
        let revoked: Vec<(String, i32)> = match ownership.lock() {
            Ok(mut o) => o.revoked.drain().collect(),
            Err(_) => Vec::new(),
        };

        if chunk.is_empty() && revoked.is_empty() {
            continue;
        }
        let positions: Vec<Origin> = chunk
            .iter()
            .map(|m| Origin { topic: m.topic().to_string(), partition: m.partition(), offset: m.offset() })
            .collect();
        let chunk_started = std::time::Instant::now();
        let out = {
            let engine = engine.clone();
            let cfg = config.clone();
            let m = meters.clone();
            match tokio::task::spawn_blocking(move || process_chunk(&engine, &cfg, &m, chunk, &revoked)).await {
                Ok(Ok(o)) => o,
                Ok(Err(e)) => break Err(e),
                Err(e) => break Err(DetectorError::Worker(e.to_string())),
            }
        };

        // Produce and await every acknowledgement, then store the chunk's offsets.
        if let Err(e) = produce_all(&producer, out.records).await {
            break Err(e);
        }
        report.records += positions.len() as u64;
        meters.chunk_latency.record(chunk_started.elapsed().as_secs_f64(), &[]);
        meters.records_consumed.add(positions.len() as u64, &[]);
        meters.dead_lettered.add(out.dead_lettered, &[]);
        meters.packets_processed.add(out.packets_total.saturating_sub(packets_seen), &[]);
        meters.hosts_evicted.add(out.hosts_evicted_total.saturating_sub(evictions_seen), &[]);
        meters.hosts_tracked.record(out.hosts_tracked, &[]);
        (packets_seen, evictions_seen) =
            (packets_seen.max(out.packets_total), evictions_seen.max(out.hosts_evicted_total));
        lag.maybe_sample(&consumer, &producer, &meters);
        report.dead_lettered += out.dead_lettered;
        report.destination_stats_produced += out.destination_stats;
        let _ = out.anomalies;
        let mut tpl = TopicPartitionList::new();
        let mut highest: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for o in positions {
            let e = highest.entry((o.topic, o.partition)).or_insert(o.offset);
            *e = (*e).max(o.offset);
        }
        for ((topic, partition), offset) in highest {
            let _ = tpl.add_partition_offset(&topic, partition, Offset::Offset(offset + 1));
            let next = next_offsets.entry((topic, partition)).or_insert(offset + 1);
            *next = (*next).max(offset + 1);
        }
        if tpl.count() > 0
            && let Err(e) = consumer.store_offsets(&tpl)
        {
            // A partition revoked meanwhile: its new owner reprocesses from the last committed offset.
            tracing::warn!(error = %e, "could not store offsets");
        }
    };

    // Shut down: flush the producer, commit the stored offsets.
    let flush_producer = producer.clone();
    let _ = tokio::task::spawn_blocking(move || flush_producer.flush(Timeout::After(Duration::from_secs(10)))).await;
    let commit_consumer = consumer.clone();
    match tokio::task::spawn_blocking(move || commit_consumer.commit_consumer_state(CommitMode::Sync)).await {
        Ok(Ok(())) | Ok(Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "final offset commit failed"),
        Err(e) => tracing::warn!(error = %e, "final offset commit failed"),
    }
    consumer.unsubscribe();
    metrics::READY.store(false, std::sync::atomic::Ordering::Release);
    if let Ok(e) = engine.lock() {
        let s = e.stats();
        report.packets = s.packets;
        report.batches = s.batches;
        report.destination_stats_consumed = s.destination_stats;
        report.anomalies = s.anomalies.clone();
        report.hosts_tracked = e.hosts_tracked();
        report.hosts_evicted = e.hosts_evicted();
        report.model_version = e.model().map(|m| m.version().to_string());
    }
    for k in AnomalyKind::ALL {
        report.anomalies.entry(k).or_default();
    }
    tracing::info!(?report, "detector stopped");
    result.map(|()| report)
}

/// Decodes and processes one chunk (on a blocking thread).
fn process_chunk(
    engine: &Mutex<Engine>,
    config: &DetectorConfig,
    meters: &Metrics,
    chunk: Vec<OwnedMessage>,
    revoked: &[(String, i32)],
) -> Result<ChunkOutput, DetectorError> {
    use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _};
    let mut engine = engine.lock().map_err(|_| DetectorError::Worker("engine mutex poisoned".into()))?;
    if !revoked.is_empty() {
        let p: Vec<i32> = revoked.iter().filter(|(t, _)| *t == config.packets_topic).map(|(_, p)| *p).collect();
        let d: Vec<i32> = revoked.iter().filter(|(t, _)| *t == config.destinations_topic).map(|(_, p)| *p).collect();
        let (hosts, windows) = engine.revoke(&p, &d);
        tracing::info!(hosts, destination_windows = windows, "dropped state of revoked partitions");
    }
    let ids: SchemaIds = config.schema_ids;
    let mut out = ChunkOutput::default();
    let mut anomalies: Vec<Anomaly> = Vec::new();
    // Trace context: the chunk span links to (at most 128 of) its records' contexts; each anomaly's span is a
    // child of the record that raised it, so a packet batch and the alert it caused share one trace.
    let mut record_cx: Vec<Option<opentelemetry::Context>> = Vec::with_capacity(chunk.len());
    let mut anomaly_origin: Vec<usize> = Vec::new();
    for m in &chunk {
        record_cx.push(metrics::extract(m.headers()));
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
        match decoded {
            Ok(Record::Batch(b)) => engine.process_batch(&b, origin.partition, &mut anomalies),
            Ok(Record::Stats(s)) => engine.process_destination_stats(&s, origin.partition, &mut anomalies),
            // Dead-lettered records raise no anomaly.
            Err(reason) => {
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
        }
        anomaly_origin.resize(anomalies.len(), record_cx.len() - 1);
    }
    let tracer = opentelemetry::global::tracer("netanom");
    let links: Vec<opentelemetry::trace::Link> = record_cx
        .iter()
        .flatten()
        .take(128)
        .map(|cx| opentelemetry::trace::Link::with_context(cx.span().span_context().clone()))
        .collect();
    let mut chunk_span = tracer
        .span_builder(metrics::CHUNK_SPAN)
        .with_links(links)
        .with_attributes([opentelemetry::KeyValue::new("netanom.records", chunk.len() as i64)])
        .start(&tracer);
    let chunk_cx = opentelemetry::Context::current().with_remote_span_context(chunk_span.span_context().clone());
    for (a, origin) in anomalies.iter().zip(&anomaly_origin) {
        tracing::info!(kind = %a.kind, host = %a.host, score = a.score, reason = %a.reason, "anomaly");
        meters.anomalies.add(1, &[opentelemetry::KeyValue::new("kind", a.kind.as_str())]);
        let parent = record_cx.get(*origin).cloned().flatten().unwrap_or_else(|| chunk_cx.clone());
        let mut span = tracer
            .span_builder(metrics::ANOMALY_SPAN)
            .with_attributes([opentelemetry::KeyValue::new("netanom.kind", a.kind.as_str())])
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
    for d in engine.end_chunk() {
        out.records.push(Outgoing {
            topic: config.destinations_topic.clone(),
            key: d.destination.to_string().into_bytes(),
            payload: d.encode(&ids),
            headers: metrics::inject(&chunk_cx, None),
        });
        out.destination_stats += 1;
    }
    chunk_span.end();
    out.packets_total = engine.stats().packets;
    out.hosts_tracked = engine.hosts_tracked() as u64;
    out.hosts_evicted_total = engine.hosts_evicted();
    Ok(out)
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

    fn maybe_sample(&self, consumer: &Arc<DetectorConsumer>, producer: &FutureProducer, meters: &Metrics) {
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
async fn produce_all(producer: &FutureProducer, records: Vec<Outgoing>) -> Result<(), DetectorError> {
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
fn every_partition(consumer: &DetectorConsumer, topics: &[String]) -> Result<TopicPartitionList, DetectorError> {
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let md =
            consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT).map_err(kafka(format!("metadata of {topic}")))?;
        for t in md.topics().iter().filter(|t| t.name() == topic) {
            for p in t.partitions() {
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
    producer: &FutureProducer,
    topic: &str,
) -> Result<BTreeMap<i32, i64>, DetectorError> {
    let c = consumer.clone();
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
