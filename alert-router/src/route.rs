//! The router pipeline: Kafka consumer → decode → [`Suppressor`] → per alert: rendered once per configured
//! [`AlertFormat`] → alerts topic (acked; the record headers name the format and its schema version, and carry
//! the native alert JSON when the format is not `netanom`), alerts-out file and stdout → offsets stored. The
//! webhooks and the syslog receiver deliver from the alerts topic, each in a task of its own with its own
//! consumer group ([`crate::destination`]), which `run` starts and stops. Owns the Kafka clients, the main loop,
//! shutdown and drain; the decisions (grouping, rendering, signing, retrying, offset order) live in the other
//! modules.
//!
//! At-least-once: an anomaly's offset is stored only after the alert that accounts for it was acknowledged by the
//! alerts topic and written to the alerts-out file; no webhook is waited for. A poison record's offset is stored
//! once the dead-letter topic acknowledged it.
//!
//! Drain ("the input is complete"): the high watermarks of the anomalies topic are read when `drain` fires; once
//! every partition was consumed up to its watermark (or belongs to another member of the group), all open groups
//! are emitted, delivered, offsets stored and committed, the producer flushed, and `run` returns.
//! Shutdown ("stop now"): open groups are emitted, deliveries get `shutdown_grace` to finish, then the stored
//! offsets are committed, the producer is flushed and `run` returns.
//! In both cases the destinations then get `shutdown_grace` (on shutdown, at most what is left of the process's
//! grace) to deliver what the alerts topic holds; the rest they deliver after a restart.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use netanom_handles::kafka_log::KafkaLog;
use netanom_handles::{Grace, KafkaLink, ReadyFlag, RoleHandles, messaging};
use netanom_schemas::{Alert, Anomaly, format_rfc3339, topics};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::consumer::{consumer_config, creation_error};
use crate::dedup::{Ownership, SeenIds, Start};
use crate::destination::{self, DestinationReport};
use crate::format::{AlertFormat, Rendered};
use crate::incident::Incidents;
use crate::metrics::{self, Metrics};
use crate::offsets::OffsetTracker;
use crate::report::redacted;
use crate::suppress::{Emitted, Origin, Suppressor};
use crate::{RouterConfig, RouterError, RouterReport};

/// How long blocking Kafka metadata calls may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the producer may wait for queue space.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the final producer flush may take.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// Trace contexts of pending anomalies kept at most (beyond, an alert's span just lacks that parent or link).
const MAX_TRACE_PARENTS: usize = 100_000;

/// Result of publishing one alert.
struct Finished {
    emitted: Emitted,
    rendered: Rendered,
}

/// Everything a delivery task needs.
struct Shared {
    producer: FutureProducer<KafkaLog>,
    alerts_topic: String,
    alerts_format: AlertFormat,
    alerts_out_format: Option<AlertFormat>,
    metrics: Metrics,
}

/// Runs the router until `shutdown` fires, or until `handles.drain` fires and the input present at that moment
/// is fully processed. `handles.ready` is set while it has its partitions; its committed and flushed clients
/// are dropped on `handles.teardown`. See the module documentation.
pub async fn run(
    config: RouterConfig,
    shutdown: CancellationToken,
    handles: RoleHandles,
) -> Result<RouterReport, RouterError> {
    config.validate().map_err(RouterError::Config)?;
    let RoleHandles { drain, ready, teardown, grace } = handles;
    let ownership = Arc::new(Mutex::new(Ownership::default()));
    let consumer = Arc::new(create_consumer(&config, &ready, &ownership)?);
    if config.static_assignment {
        let (c, topic) = (consumer.clone(), config.anomalies_topic.clone());
        let tpl = tokio::task::spawn_blocking(move || {
            let mut tpl = destination::every_partition(c.as_ref(), &topic, Offset::Stored)?;
            c.context().plan_starts(c.as_ref(), &mut tpl, true);
            Ok::<_, RouterError>(tpl)
        })
        .await
        .map_err(|e| RouterError::Task(e.to_string()))??;
        consumer.assign(&tpl).map_err(|source| RouterError::Kafka {
            what: format!("assigning every partition of {}", config.anomalies_topic),
            source: Box::new(source),
        })?;
        ready.set(true);
    } else {
        consumer.subscribe(&[config.anomalies_topic.as_str()]).map_err(|source| RouterError::Kafka {
            what: format!("subscribing to {}", config.anomalies_topic),
            source: Box::new(source),
        })?;
    }
    let shared = Arc::new(Shared {
        producer: create_producer(&config)?,
        alerts_topic: config.alerts_topic.clone(),
        alerts_format: config.alerts_format,
        alerts_out_format: config.alerts_out.as_ref().map(|_| config.alerts_out_format),
        metrics: Metrics::new(),
    });
    // Each destination delivers from the alerts topic in a task of its own until `stop_destinations` carries a
    // deadline.
    let (stop_destinations, stop) = tokio::sync::watch::channel(None);
    let mut destinations = JoinSet::new();
    let shared_config = Arc::new(config.clone());
    let names: Vec<String> = {
        let list = destination::destinations(&config)?;
        let names = list.iter().map(|d| d.name().to_string()).collect();
        for d in list {
            let name = d.name().to_string();
            let run = destination::run(
                d,
                shared_config.clone(),
                shared.producer.clone(),
                shared.metrics.clone(),
                stop.clone(),
            );
            destinations.spawn(async move {
                run.await.map_err(|source| RouterError::Destination { name, source: Box::new(source) })
            });
        }
        names
    };
    let shares = crate::budget::Shares::of(config.memory_budget_mib);
    let mut router = Router {
        alerts_out: match &config.alerts_out {
            Some(path) => Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| RouterError::AlertsOut { path: path.clone(), source })?,
            ),
            None => None,
        },
        suppressor: Suppressor::new(config.suppression.clone(), shares.suppression),
        incidents: Incidents::new(config.incidents.clone(), shares.incidents),
        seen: SeenIds::new(config.dedup_ids, shares.dedup),
        counted: Counted::default(),
        ownership,
        tracker: OffsetTracker::new(),
        trace_parents: HashMap::new(),
        report: RouterReport::default(),
        tasks: JoinSet::new(),
        consumer,
        shared,
        config,
    };
    tracing::info!(topic = %router.config.anomalies_topic, group = %router.config.group_id,
        destinations = ?names, alerts_format = %router.config.alerts_format, "alert router started");

    let result = router.main_loop(&shutdown, drain.unwrap_or_default(), &ready, &grace, &mut destinations).await;
    ready.stop_beating();
    router.finish(shutdown.is_cancelled().then_some(&grace)).await;
    // The alerts are on the topic: the destinations deliver what they can of them within the grace.
    let catch_up = if shutdown.is_cancelled() {
        router.config.shutdown_grace.min(grace.share(0.5))
    } else {
        router.config.shutdown_grace
    };
    let _ = stop_destinations.send(Some(Instant::now() + catch_up));
    let mut destination_error = None;
    while let Some(joined) = destinations.join_next().await {
        match joined.map_err(|e| RouterError::Task(e.to_string())).and_then(|r| r) {
            Ok(d) => router.account(&d),
            Err(e) => {
                tracing::error!(error = %e, "a destination failed");
                destination_error.get_or_insert(e);
            }
        }
    }
    ready.set(false);
    let result = result.and(destination_error.map_or(Ok(()), Err));
    let Router { report, consumer, shared, .. } = router;
    // Committed and flushed (`finish`): the clients' teardown need not delay the report.
    teardown.drop_in_background((consumer, shared));
    result.map(|()| report)
}

struct Router {
    config: RouterConfig,
    consumer: Arc<StreamConsumer<RouterContext>>,
    shared: Arc<Shared>,
    suppressor: Suppressor,
    /// The open incidents the suppressor's groups are reported in.
    incidents: Incidents,
    /// Anomaly ids accounted for, per partition ([`crate::dedup`]).
    seen: SeenIds,
    /// Partitions worked on, shared with the rebalance callback.
    ownership: Arc<Mutex<Ownership>>,
    tracker: OffsetTracker,
    /// Trace context (`traceparent` header) of each anomaly waiting in a suppression group, by (partition,
    /// offset); bounded by [`MAX_TRACE_PARENTS`].
    trace_parents: HashMap<(i32, i64), opentelemetry::trace::SpanContext>,
    tasks: JoinSet<Result<Finished, RouterError>>,
    alerts_out: Option<File>,
    report: RouterReport,
    /// Evictions already counted on the metrics.
    counted: Counted,
}

/// The tables' evictions as last counted on the metrics.
#[derive(Debug, Default)]
struct Counted {
    groups: crate::suppress::Evictions,
    incidents: crate::incident::Evictions,
    ids: crate::dedup::Evictions,
}

impl Router {
    async fn main_loop(
        &mut self,
        shutdown: &CancellationToken,
        drain: CancellationToken,
        ready: &ReadyFlag,
        grace: &Grace,
        destinations: &mut JoinSet<Result<DestinationReport, RouterError>>,
    ) -> Result<(), RouterError> {
        // Per partition: the next offset to consume, as far as this router knows.
        let mut consumed_next: HashMap<i32, i64> = HashMap::new();
        // Per partition: the high watermark to reach before a drain completes.
        let mut drain_targets: Option<HashMap<i32, i64>> = None;
        let mut recheck = tokio::time::interval(Duration::from_millis(200));
        // The loop goes round (and beats) at least this often while the input is idle.
        let mut beat = tokio::time::interval(Duration::from_secs(1));
        tracing::info!(
            budget_mib = self.config.memory_budget_mib,
            max_groups = self.suppressor.max_groups(),
            max_incidents = self.incidents.max_incidents(),
            "table bounds"
        );
        loop {
            ready.beat();
            self.record_tables();
            if drain_targets.as_ref().is_some_and(|t| self.drain_reached(t, &consumed_next)) {
                tracing::info!("drain: input consumed up to the high watermarks; flushing open groups");
                self.flush_all();
                return self.finish_deliveries(shutdown.cancelled(), "shutdown during drain").await;
            }
            let deadline = match (self.suppressor.next_deadline(), self.incidents.next_deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let can_consume = self.tasks.len() < self.config.max_in_flight_alerts;
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    tracing::info!("shutdown: emitting open groups, finishing deliveries in flight");
                    self.flush_all();
                    // Half of what is left of the process's grace at most: the commit and the flush follow.
                    let grace = tokio::time::sleep(self.config.shutdown_grace.min(grace.share(0.5)));
                    return self.finish_deliveries(grace, "shutdown grace elapsed").await;
                }
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => self.complete(joined)?,
                // A destination stops early only on an error: the router stops with it, naming it.
                Some(joined) = destinations.join_next(), if !destinations.is_empty() => {
                    let d = joined.map_err(|e| RouterError::Task(format!("destination task: {e}"))).and_then(|r| r)?;
                    tracing::warn!(destination = %d.name, "destination stopped before the router");
                    self.account(&d);
                }
                () = tokio::time::sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                    let now = Instant::now();
                    let groups = self.suppressor.poll(now);
                    self.report_groups(groups, now);
                    for revision in self.incidents.poll(now) {
                        self.spawn_delivery(revision);
                    }
                }
                () = drain.cancelled(), if drain_targets.is_none() => {
                    let (targets, committed) = self.read_drain_targets().await?;
                    for (p, o) in committed {
                        let next = consumed_next.entry(p).or_insert(o);
                        *next = (*next).max(o);
                    }
                    tracing::info!(?targets, "drain: consuming up to the high watermarks");
                    drain_targets = Some(targets);
                }
                _ = recheck.tick(), if drain_targets.is_some() => {}
                _ = beat.tick() => {}
                message = self.consumer.recv(), if can_consume => match message {
                    Ok(message) => {
                        let message = message.detach();
                        self.forget_lost();
                        consumed_next.insert(message.partition(), message.offset() + 1);
                        self.handle(message).await?;
                    }
                    Err(KafkaError::PartitionEOF(partition)) => {
                        if let Some(next) = self.position(partition) {
                            let known = consumed_next.entry(partition).or_insert(next);
                            *known = (*known).max(next);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "consumer error"),
                },
            }
        }
    }

    /// Waits for every delivery in flight, or until `stop` completes: then the rest are abandoned (their
    /// anomalies' offsets are not stored, so they are consumed again).
    async fn finish_deliveries(&mut self, stop: impl Future<Output = ()>, why: &str) -> Result<(), RouterError> {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                joined = self.tasks.join_next() => match joined {
                    Some(joined) => self.complete(joined)?,
                    None => return Ok(()),
                },
                () = &mut stop => {
                    tracing::warn!(abandoned = self.tasks.len(), "{why}; abandoning deliveries in flight \
                        (their anomalies will be consumed again)");
                    self.tasks.abort_all();
                    return Ok(());
                }
            }
        }
    }

    /// The consumer's position (next offset) in `partition` of the anomalies topic.
    fn position(&self, partition: i32) -> Option<i64> {
        let tpl = self.consumer.position().ok()?;
        match tpl.find_partition(&self.config.anomalies_topic, partition)?.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }
    }

    /// High watermarks of every partition of the anomalies topic, and the group's committed offsets.
    async fn read_drain_targets(&self) -> Result<(HashMap<i32, i64>, Vec<(i32, i64)>), RouterError> {
        let consumer = self.consumer.clone();
        let shared = self.shared.clone();
        let topic = self.config.anomalies_topic.clone();
        tokio::task::spawn_blocking(move || {
            // Metadata and watermarks go through the producer's connections: the consumer's are busy with fetch
            // long-polls, behind which each request would wait up to `fetch.wait.max.ms`.
            let client = shared.producer.client();
            let kafka = |what: String| move |source| RouterError::Kafka { what, source: Box::new(source) };
            let metadata = client
                .fetch_metadata(Some(&topic), METADATA_TIMEOUT)
                .map_err(kafka(format!("fetching metadata of {topic}")))?;
            let mut targets = HashMap::new();
            let mut tpl = TopicPartitionList::new();
            for partition in metadata.topics().iter().filter(|t| t.name() == topic).flat_map(|t| t.partitions()) {
                let p = partition.id();
                let (low, high) = client
                    .fetch_watermarks(&topic, p, METADATA_TIMEOUT)
                    .map_err(kafka(format!("fetching watermarks of {topic}/{p}")))?;
                if high > low {
                    targets.insert(p, high);
                }
                tpl.add_partition(&topic, p);
            }
            let committed = consumer
                .committed_offsets(tpl, METADATA_TIMEOUT)
                .map(|tpl| {
                    tpl.elements()
                        .iter()
                        .filter_map(|e| match e.offset() {
                            Offset::Offset(o) => Some((e.partition(), o)),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok((targets, committed))
        })
        .await
        .map_err(|e| RouterError::Task(e.to_string()))?
    }

    /// True when every partition with a drain target was consumed up to it, or is assigned to another member.
    fn drain_reached(&self, targets: &HashMap<i32, i64>, consumed_next: &HashMap<i32, i64>) -> bool {
        let assigned: Vec<i32> = self
            .consumer
            .assignment()
            .map(|tpl| {
                tpl.elements()
                    .iter()
                    .filter(|e| e.topic() == self.config.anomalies_topic)
                    .map(|e| e.partition())
                    .collect()
            })
            .unwrap_or_default();
        targets.iter().all(|(p, high)| {
            consumed_next.get(p).is_some_and(|next| next >= high) || (!assigned.is_empty() && !assigned.contains(p))
        })
    }

    /// Forgets the work of the partitions lost in rebalances since the last call: their pending groups (never
    /// emitted), in-flight offsets, ids and trace contexts. Their new owner accounts for the records after the
    /// committed offset.
    fn forget_lost(&mut self) {
        let lost = lock(&self.ownership).take_lost();
        for p in lost {
            let dropped = self.suppressor.forget_partition(p) + self.incidents.forget_partition(p);
            self.tracker.forget(p);
            self.seen.forget(p);
            self.trace_parents.retain(|(partition, _), _| *partition != p);
            tracing::info!(
                partition = p,
                pending_anomalies_dropped = dropped,
                "partition revoked: its work is forgotten"
            );
        }
    }

    /// Decodes one anomaly record and feeds it to the suppressor; dead-letters it if it cannot be decoded, drops
    /// it if its id was already accounted for, and only records its id while the partition is rebuilt.
    async fn handle(&mut self, message: rdkafka::message::OwnedMessage) -> Result<(), RouterError> {
        let origin = Origin { partition: message.partition(), offset: message.offset() };
        let ids_only = {
            let mut o = lock(&self.ownership);
            let ids_only = o.ids_only(origin.partition, origin.offset);
            o.consumed(origin.partition, origin.offset);
            ids_only
        };
        if ids_only {
            // Accounted for by an alert delivered before the committed offset: only its id is remembered.
            if let Some(a) = message.payload().and_then(|p| Anomaly::decode(p, &self.config.schema_ids).ok()) {
                self.seen.insert(origin.partition, &a.id);
            }
            self.report.anomalies_rebuilt += 1;
            return Ok(());
        }
        self.report.anomalies_consumed += 1;
        self.shared.metrics.anomalies_consumed.add(1, &[]);
        if self.trace_parents.len() < MAX_TRACE_PARENTS
            && let Some(sc) = metrics::extract(message.headers())
        {
            self.trace_parents.insert((origin.partition, origin.offset), sc);
        }
        self.tracker.track(origin.partition, origin.offset);
        let decoded = match message.payload() {
            None => Err("record has no payload".to_string()),
            Some(payload) => Anomaly::decode(payload, &self.config.schema_ids)
                .map_err(|e| e.to_string())
                .and_then(|a| check_finite(&a).map(|()| a)),
        };
        match decoded {
            Ok(anomaly) if !self.seen.insert(origin.partition, &anomaly.id) => {
                tracing::debug!(id = %anomaly.id, partition = origin.partition, offset = origin.offset,
                    "duplicate anomaly dropped");
                self.report.duplicates_dropped += 1;
                self.shared.metrics.duplicates.add(1, &[]);
                self.trace_parents.remove(&(origin.partition, origin.offset));
                self.mark_done(&[origin]);
            }
            Ok(anomaly) => {
                let evicted_before = self.suppressor.evictions().total();
                let emitted = self.suppressor.offer(anomaly, origin, Instant::now());
                let evicted = self.suppressor.evictions().total() - evicted_before;
                if evicted > 0 {
                    self.report.groups_evicted += evicted;
                    tracing::warn!(
                        evicted,
                        max_groups = self.suppressor.max_groups(),
                        bytes = self.suppressor.bytes(),
                        "suppression windows emitted early: too many open, or their memory share spent"
                    );
                }
                self.report_groups(emitted, Instant::now());
            }
            Err(reason) => {
                let origin_text = format!("{}/{}/{}", message.topic(), origin.partition, origin.offset);
                tracing::warn!(origin = %origin_text, %reason, "poison anomaly dead-lettered");
                let headers = OwnedHeaders::new()
                    .insert(Header { key: topics::DLQ_REASON_HEADER, value: Some(reason.as_str()) })
                    .insert(Header { key: topics::DLQ_ORIGIN_HEADER, value: Some(origin_text.as_str()) });
                let mut record = FutureRecord::<[u8], [u8]>::to(&self.config.dead_letter_topic).headers(headers);
                if let Some(key) = message.key() {
                    record = record.key(key);
                }
                if let Some(payload) = message.payload() {
                    record = record.payload(payload);
                }
                self.shared.producer.send(record, QUEUE_TIMEOUT).await.map_err(|(source, _)| RouterError::Produce {
                    topic: self.config.dead_letter_topic.clone(),
                    key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default(),
                    source: Box::new(source),
                })?;
                self.report.dead_lettered_anomalies += 1;
                self.shared.metrics.dead_lettered.add(1, &[]);
                self.trace_parents.remove(&(origin.partition, origin.offset));
                self.mark_done(&[origin]);
            }
        }
        Ok(())
    }

    /// Hands the suppressor's groups to the incidents and delivers the revisions that causes, then the closing
    /// revisions of the incidents whose hosts went quiet.
    fn report_groups(&mut self, groups: Vec<Emitted>, now: Instant) {
        let evicted_before = self.incidents.evictions().total();
        for group in groups {
            for revision in self.incidents.absorb(group, now) {
                self.spawn_delivery(revision);
            }
        }
        let suppressor = &self.suppressor;
        let quiet = self.incidents.close_quiet(suppressor.watermark_ns(), |host| suppressor.open_until(host));
        for revision in quiet {
            self.spawn_delivery(revision);
        }
        let evicted = self.incidents.evictions().total() - evicted_before;
        if evicted > 0 {
            self.report.incidents_evicted += evicted;
            tracing::warn!(
                evicted,
                max_incidents = self.incidents.max_incidents(),
                bytes = self.incidents.bytes(),
                "incidents closed early: too many open, or their memory share spent"
            );
        }
    }

    /// Sets the tables' byte gauges and counts their evictions since the last call.
    fn record_tables(&mut self) {
        let m = &self.shared.metrics;
        m.suppression_bytes.record(self.suppressor.bytes() as u64, &[]);
        m.incidents_bytes.record(self.incidents.bytes() as u64, &[]);
        m.dedup_bytes.record(self.seen.bytes() as u64, &[]);
        let (groups, incidents, ids) = (self.suppressor.evictions(), self.incidents.evictions(), self.seen.evictions());
        let c = &self.counted;
        for (table, reason, now, before) in [
            ("suppression_groups", "capacity", groups.capacity, c.groups.capacity),
            ("suppression_groups", "budget", groups.budget, c.groups.budget),
            ("incidents", "capacity", incidents.capacity, c.incidents.capacity),
            ("incidents", "budget", incidents.budget, c.incidents.budget),
            ("dedup_ids", "capacity", ids.capacity, c.ids.capacity),
            ("dedup_ids", "budget", ids.budget, c.ids.budget),
        ] {
            m.evicted(table, reason, now - before);
        }
        self.counted = Counted { groups, incidents, ids };
    }

    /// Emits every open group and closes every open incident (drain and shutdown).
    fn flush_all(&mut self) {
        let groups = self.suppressor.drain();
        self.report_groups(groups, Instant::now());
        for revision in self.incidents.drain() {
            self.spawn_delivery(revision);
        }
    }

    fn spawn_delivery(&mut self, emitted: Emitted) {
        use opentelemetry::context::FutureExt as _;
        use opentelemetry::trace::{TraceContextExt as _, Tracer as _};
        // The alert's span is a child of its first anomaly's context and links to the others'.
        let mut parents = emitted
            .origins
            .iter()
            .filter_map(|o| self.trace_parents.remove(&(o.partition, o.offset)))
            .collect::<Vec<_>>();
        let tracer = opentelemetry::global::tracer("netanom");
        let parent = if parents.is_empty() {
            opentelemetry::Context::new()
        } else {
            opentelemetry::Context::new().with_remote_span_context(parents.remove(0))
        };
        // CONSUMER: it processes consumed anomaly records (the first one's partition and offset named).
        let process = messaging::Operation::Process;
        let mut attributes = messaging::attributes(process, &self.config.anomalies_topic);
        if let Some(first) = emitted.origins.first() {
            attributes.extend(messaging::record(first.partition, first.offset));
        }
        attributes.extend([
            opentelemetry::KeyValue::new(messaging::GROUP, self.config.group_id.clone()),
            opentelemetry::KeyValue::new(messaging::MESSAGE_COUNT, emitted.origins.len() as i64),
            opentelemetry::KeyValue::new("netanom.kind", emitted.alert.kind.to_string()),
            opentelemetry::KeyValue::new("netanom.anomalies", emitted.origins.len() as i64),
        ]);
        let span = tracer
            .span_builder(metrics::ALERT_SPAN)
            .with_kind(process.span_kind())
            .with_attributes(attributes)
            .with_links(parents.into_iter().take(128).map(opentelemetry::trace::Link::with_context).collect())
            .start_with_context(&tracer, &parent);
        let cx = parent.with_span(span);
        let shared = self.shared.clone();
        self.tasks.spawn(deliver(shared, emitted).with_context(cx));
    }

    /// Accounts for a finished delivery: alerts-out, stdout, report, offsets.
    fn complete(
        &mut self,
        joined: Result<Result<Finished, RouterError>, tokio::task::JoinError>,
    ) -> Result<(), RouterError> {
        let done = joined.map_err(|e| RouterError::Task(e.to_string()))??;
        if let Some(file) = &mut self.alerts_out {
            let mut line = done.rendered.get(self.config.alerts_out_format).to_string();
            line.push('\n');
            let written = file.write_all(line.as_bytes());
            self.shared.metrics.alert(metrics::sink::FILE, written.is_ok(), 1);
            written.map_err(|source| RouterError::AlertsOut {
                path: self.config.alerts_out.clone().unwrap_or_default(),
                source,
            })?;
        }
        if self.config.stdout {
            println!("{}", readable(&done.emitted.alert));
        }
        self.report.alerts_emitted += 1;
        let alert = &done.emitted.alert;
        tracing::info!(id = %alert.id, revision = alert.revision, r#final = alert.final_revision, kind = %alert.kind,
            count = alert.count, cause = ?done.emitted.cause, "alert emitted");
        self.mark_done(&done.emitted.origins);
        Ok(())
    }

    /// Adds what a destination did to the report.
    fn account(&mut self, d: &DestinationReport) {
        if d.syslog {
            self.report.syslog_delivered += d.delivered;
            self.report.syslog_failed += d.parked;
        } else {
            self.report.webhook_delivered += d.delivered;
            self.report.webhook_failed += d.parked;
        }
        self.report.dead_lettered_alerts += d.parked;
    }

    /// Marks `origins` done and stores every partition position that advanced.
    fn mark_done(&mut self, origins: &[Origin]) {
        let mut advanced: HashMap<i32, i64> = HashMap::new();
        for o in origins {
            if let Some(next) = self.tracker.done(o.partition, o.offset) {
                advanced.insert(o.partition, next);
            }
        }
        if advanced.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, next) in advanced {
            if let Err(e) = tpl.add_partition_offset(&self.config.anomalies_topic, p, Offset::Offset(next)) {
                tracing::warn!(partition = p, error = %e, "cannot store offset");
            }
        }
        // Partitions revoked meanwhile refuse the store; their records are consumed again by the new owner.
        // Committed at once (not at the next auto-commit): a restart or a new owner repeats as little as possible.
        match self.consumer.store_offsets(&tpl) {
            Ok(()) => {
                if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Async) {
                    tracing::debug!(error = %e, "offset commit not started");
                }
            }
            Err(e) => tracing::warn!(error = %e, "storing offsets failed"),
        }
    }

    /// Commits stored offsets and flushes the producer; after a shutdown (`grace`), within what is left of the
    /// grace, logging what could not be committed or flushed.
    async fn finish(&mut self, grace: Option<&Grace>) {
        self.tasks.abort_all();
        let bound = |share: f64| grace.map_or(FLUSH_TIMEOUT, |g| g.share(share));
        let consumer = self.consumer.clone();
        let commit_timeout = bound(0.5);
        let commit = tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync));
        let failure = match tokio::time::timeout(commit_timeout, commit).await {
            Ok(Ok(Ok(()) | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)))) => None,
            Ok(Ok(Err(e))) => Some(e.to_string()),
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {commit_timeout:?}")),
        };
        if let Some(failure) = failure {
            let mut partitions: Vec<String> = self
                .consumer
                .position()
                .map(|tpl| {
                    tpl.elements().iter().map(|e| format!("{}/{}@{:?}", e.topic(), e.partition(), e.offset())).collect()
                })
                .unwrap_or_default();
            partitions.sort();
            tracing::error!(error = %failure,
                "shutdown: final offset commit failed ({failure}); offsets of partitions not committed since the \
                 last auto-commit: [{}]; their anomalies are consumed again", partitions.join(", "));
        }
        let shared = self.shared.clone();
        let flush_timeout = bound(0.9);
        let flushed = tokio::task::spawn_blocking(move || shared.producer.flush(flush_timeout)).await;
        if !matches!(flushed, Ok(Ok(()))) {
            let unflushed = self.shared.producer.in_flight_count();
            tracing::error!(
                unflushed,
                "shutdown: {unflushed} records unflushed (alerts or dead letters not \
                acknowledged by Kafka within {flush_timeout:?})"
            );
        }
        tracing::info!(report = ?self.report, "alert router stopped");
    }
}

/// Produces the alert to the alerts topic (with the native alert JSON in a header when the topic's format is
/// not `netanom`, for the destinations).
async fn deliver(shared: Arc<Shared>, emitted: Emitted) -> Result<Finished, RouterError> {
    let started = std::time::Instant::now();
    let m = &shared.metrics;
    let alert = &emitted.alert;
    let formats = std::iter::once(shared.alerts_format).chain(shared.alerts_out_format);
    let rendered = Rendered::new(alert, formats, time::OffsetDateTime::now_utc())
        .map_err(|source| RouterError::Encode { id: alert.id.clone(), source })?;
    let format = shared.alerts_format.to_string();
    let mut headers = metrics::inject(&opentelemetry::Context::current(), None)
        .unwrap_or_default()
        .insert(Header { key: topics::FORMAT_HEADER, value: Some(format.as_str()) })
        .insert(Header { key: topics::SCHEMA_VERSION_HEADER, value: Some(shared.alerts_format.schema_version()) });
    if shared.alerts_format != AlertFormat::Netanom {
        headers = headers
            .insert(Header { key: topics::NATIVE_ALERT_HEADER, value: Some(rendered.get(AlertFormat::Netanom)) });
    }
    let record = FutureRecord::to(&shared.alerts_topic)
        .key(&alert.host)
        .payload(rendered.get(shared.alerts_format))
        .headers(headers);
    let delivery = shared.producer.send(record, QUEUE_TIMEOUT).await;
    m.alert(metrics::sink::TOPIC, delivery.is_ok(), 1);
    delivery.map_err(|(source, _)| RouterError::Produce {
        topic: shared.alerts_topic.clone(),
        key: alert.host.clone(),
        source: Box::new(source),
    })?;
    m.delivery_latency.record(started.elapsed().as_secs_f64(), &[]);
    Ok(Finished { emitted, rendered })
}

/// Rejects anomalies whose numbers cannot be carried by the alert JSON.
fn check_finite(a: &Anomaly) -> Result<(), String> {
    if !a.score.is_finite() || !a.threshold.is_finite() {
        return Err(format!("anomaly {} has a non-finite score or threshold ({} / {})", a.id, a.score, a.threshold));
    }
    if let Some(f) = a.features.iter().find(|f| !f.value.is_finite() || f.baseline.is_some_and(|b| !b.is_finite())) {
        return Err(format!("anomaly {} has a non-finite value in feature {}", a.id, f.name));
    }
    Ok(())
}

/// One line for a person: host, kinds, score/threshold, evidence span, count, revision, reason, sample.
pub fn readable(a: &Alert) -> String {
    let target = a.target.as_deref().map(|t| format!(" -> {t}")).unwrap_or_default();
    let kinds: Vec<&str> = a.kind_list().into_iter().map(|k| k.as_str()).collect();
    let stage = if a.final_revision { " final" } else { "" };
    format!(
        "ALERT {host}{target} {kind} score {score:.2}/{threshold:.2} {first}..{last} x{count} rev {revision}{stage}: \
         {reason} [{sample}]",
        host = a.host,
        kind = kinds.join("+"),
        revision = a.revision,
        score = a.score,
        threshold = a.threshold,
        first = format_rfc3339(a.first_seen),
        last = format_rfc3339(a.last_seen),
        count = a.count,
        reason = a.reason,
        sample = a.sample,
    )
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// The consumer's client context: librdkafka reports reaching the end of a partition through the error callback
/// when `enable.partition.eof` is on (drain needs it); that is not an error, so [`KafkaLog`] writes it at debug
/// level (every other librdkafka line and error goes through it, rate-limited). It
/// also sets the router's ready flag once partitions are assigned.
pub struct RouterContext {
    /// Set once partitions are assigned.
    ready: ReadyFlag,
    /// Partitions worked on; where an assigned partition starts ([`crate::dedup`]).
    ownership: Arc<Mutex<Ownership>>,
    /// Records read back ids-only below the committed offset of a partition that arrives.
    rebuild_records: i64,
    /// Whether the consumer reaches a broker (for `/readyz`).
    link: KafkaLink,
    /// librdkafka's log lines and errors, rate-limited.
    log: KafkaLog,
}

impl rdkafka::ClientContext for RouterContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.link.observe_stats(&statistics);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.log.log_line(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.link.observe_error(&error, reason);
        self.log.error_line(&error, reason);
    }
}

fn lock(ownership: &Mutex<Ownership>) -> MutexGuard<'_, Ownership> {
    ownership.lock().unwrap_or_else(PoisonError::into_inner)
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

impl ConsumerContext for RouterContext {
    /// Applies rebalances itself so that an assigned partition starts where [`crate::dedup`] says (resuming, or
    /// reading ids back below the committed offset), and records lost partitions for the main loop.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::types::RDKafkaRespErr as E;
        let eager = !matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let applied: KafkaResult<()> = match err {
            E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.plan_starts(consumer, tpl, eager);
                let r = if eager { consumer.assign(tpl) } else { consumer.incremental_assign(tpl) };
                if r.is_ok() {
                    self.ready.set(true);
                    tracing::info!(partitions = tpl.count(), "partitions assigned");
                }
                r
            }
            E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                lock(&self.ownership).revoke(partitions_of(tpl), eager);
                tracing::info!(partitions = tpl.count(), "partitions revoked");
                if eager { consumer.unassign() } else { consumer.incremental_unassign(tpl) }
            }
            other => {
                tracing::error!(error = %rdkafka::types::RDKafkaErrorCode::from(other),
                    "rebalance failed; giving up the assignment");
                let all = consumer.assignment().map(|a| partitions_of(&a)).unwrap_or_default();
                lock(&self.ownership).revoke(all, false);
                if eager { consumer.unassign() } else { consumer.incremental_unassign(tpl) }
            }
        };
        if let Err(e) = applied {
            tracing::error!(error = %e, "applying a rebalance failed");
        }
    }
}

impl RouterContext {
    /// Sets the start offset of every partition in the assignment `tpl` from the group's committed offsets and
    /// what this router holds (see [`crate::dedup`]).
    fn plan_starts<C: Consumer<Self>>(&self, consumer: &C, tpl: &mut TopicPartitionList, eager: bool) {
        let mut query = TopicPartitionList::with_capacity(tpl.count());
        for e in tpl.elements() {
            query.add_partition(e.topic(), e.partition());
        }
        let committed: HashMap<i32, i64> = match consumer.committed_offsets(query, METADATA_TIMEOUT) {
            Ok(c) => c
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) if o >= 0 => Some((e.partition(), o)),
                    _ => None,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "committed offsets unavailable: partitions start at the group's position \
                    without reading back the ids accounted for");
                HashMap::new()
            }
        };
        let topic_of: HashMap<i32, String> =
            tpl.elements().iter().map(|e| (e.partition(), e.topic().to_string())).collect();
        let assignment: Vec<(i32, Option<i64>)> =
            partitions_of(tpl).into_iter().map(|p| (p, committed.get(&p).copied())).collect();
        let starts = lock(&self.ownership).assign(&assignment, eager, self.rebuild_records);
        for (p, start) in starts {
            let Start::At { offset, ids_only_until } = start else { continue };
            let Some(topic) = topic_of.get(&p) else { continue };
            let from = if offset <= 0 { Offset::Beginning } else { Offset::Offset(offset) };
            if let Err(e) = tpl.set_partition_offset(topic, p, from) {
                tracing::warn!(%topic, partition = p, error = %e, "could not set the start offset");
            }
            if ids_only_until > offset {
                tracing::info!(%topic, partition = p, from = offset, until = ids_only_until,
                    "reading back the anomaly ids accounted for before the committed offset");
            }
        }
    }
}

fn create_consumer(
    config: &RouterConfig,
    ready: &ReadyFlag,
    ownership: &Arc<Mutex<Ownership>>,
) -> Result<StreamConsumer<RouterContext>, RouterError> {
    let fetch_wait = config.fetch_wait.as_millis().to_string();
    let defaults = [
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "true"),
        ("statistics.interval.ms", netanom_handles::STATS_INTERVAL_MS),
        ("fetch.wait.max.ms", fetch_wait.as_str()),
    ];
    let mut c = consumer_config(config, &config.group_id, &defaults);
    // Not overridable: offsets are stored only after delivery.
    c.set("enable.auto.offset.store", "false");
    if config.exactly_once {
        // Not overridable either: records of open or aborted transactions are never read.
        c.set("isolation.level", "read_committed");
    }
    c.create_with_context(RouterContext {
        ready: ready.clone(),
        ownership: ownership.clone(),
        rebuild_records: i64::try_from(config.dedup_ids).unwrap_or(i64::MAX),
        link: ready.kafka_link("consumer"),
        log: KafkaLog::default(),
    })
    .map_err(creation_error("creating the consumer".into()))
}

fn create_producer(config: &RouterConfig) -> Result<FutureProducer<KafkaLog>, RouterError> {
    let mut c = ClientConfig::new();
    // Idempotent: a retried produce request never writes an alert or a dead letter twice.
    c.set("bootstrap.servers", &config.brokers).set("enable.idempotence", "true");
    for (k, v) in &config.kafka_properties {
        c.set(k, v);
    }
    c.create_with_context(KafkaLog::default())
        .map_err(redacted)
        .map_err(|source| RouterError::Kafka { what: "creating the producer".into(), source: Box::new(source) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netanom_schemas::{AnomalyKind, Contribution};

    fn anomaly() -> Anomaly {
        Anomaly {
            id: "a1".into(),
            host: "10.0.0.1".into(),
            kind: AnomalyKind::Victim,
            window_start_ns: 0,
            window_end_ns: 1_000_000_000,
            score: 12.5,
            threshold: 10.0,
            target: Some("10.0.0.9".into()),
            reason: "many sources".into(),
            features: vec![Contribution { name: "sources".into(), value: 900.0, baseline: Some(3.0) }],
            sample: "10.0.0.3 > 10.0.0.9:80 TCP [S] len 60".into(),
            model_version: "v1".into(),
            detected_ns: None,
            window_key: None,
            closing: false,
        }
    }

    #[test]
    fn non_finite_numbers_are_poison() {
        assert!(check_finite(&anomaly()).is_ok());
        let mut a = anomaly();
        a.score = f64::INFINITY;
        assert!(check_finite(&a).unwrap_err().contains("score"));
        let mut a = anomaly();
        a.features[0].baseline = Some(f64::NAN);
        assert!(check_finite(&a).unwrap_err().contains("feature sources"));
    }

    #[test]
    fn readable_line_names_everything_an_analyst_needs() {
        let alert = Alert {
            id: "x".into(),
            host: "10.0.0.1".into(),
            kind: AnomalyKind::Victim,
            score: 12.5,
            threshold: 10.0,
            first_seen: time::macros::datetime!(2024-01-01 00:00:00 UTC),
            last_seen: time::macros::datetime!(2024-01-01 00:00:09 UTC),
            detected_at: Some(time::macros::datetime!(2024-01-01 00:00:09 UTC)),
            count: 4,
            reason: "many sources".into(),
            target: Some("10.0.0.9".into()),
            sample: "s".into(),
            features: vec![],
            model_version: "v1".into(),
            revision: 1,
            final_revision: true,
            kinds: Vec::new(),
            totals: Default::default(),
        };
        assert_eq!(
            readable(&alert),
            "ALERT 10.0.0.1 -> 10.0.0.9 victim score 12.50/10.00 \
             2024-01-01T00:00:00.000000000Z..2024-01-01T00:00:09.000000000Z x4 rev 1 final: many sources [s]"
        );
    }
}
