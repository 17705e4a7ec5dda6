//! Delivery from the alerts topic to one destination (a webhook, or the syslog receiver), at the destination's
//! own pace. The alerts topic is the durable log: the router's main path only publishes to it, and each
//! destination consumes it in a consumer group of its own, `<group_id>.deliver.<name>` (the webhook's `name`,
//! `syslog` for the syslog receiver), in a task of its own inside the router process. A destination that is
//! slow, refusing or black-holed therefore delays neither the alerts topic nor any other destination; when it
//! returns it catches up from its committed position, and a restarted router resumes every destination there.
//!
//! - **Bounded in flight**: at most `max_concurrency` alerts of one destination are being delivered; while that
//!   many are, the destination consumes nothing more (its librdkafka prefetch is bounded to
//!   [`PREFETCH_KBYTES`]).
//! - **At least once per destination**: an alert's offset is stored (and committed) only once it and every
//!   earlier alert of its partition was delivered or parked ([`crate::offsets`]). An alert delivered but not yet
//!   committed when the router stops is delivered again after the restart, with the same `webhook-id`
//!   (`<alert id>#<revision>`, from the alert itself), so receivers deduplicate.
//! - **Retries** follow `[alert_router.retry]`: a transient failure (timeout, connection error, 408, 429, 5xx) is
//!   retried with jittered exponential backoff, or after the receiver's `Retry-After` (429 and 503, seconds or
//!   HTTP-date, capped by `max_backoff`), behind the destination's circuit breaker ([`crate::breaker`]), until
//!   delivered (or `max_attempts`, when set).
//! - **Parking**: a permanent refusal (a 4xx other than 408 and 429, a redirect, an outbound-safety refusal), or
//!   `max_attempts` used up, parks the alert on the dead-letter topic as netanom alert JSON with the headers
//!   `netanom-dlq-reason`, `netanom-dlq-origin` (`<alerts topic>/<partition>/<offset>`) and
//!   `netanom-dlq-destination` (the destination's name); the alert counts as done for its destination.
//!
//! **Which alert a record carries.** A destination renders the alert in its own format, so it needs the native
//! netanom alert. When the alerts topic's format is `netanom` the record's payload is that alert; when it is
//! `ecs` or `ocsf`, the router adds the native alert JSON to the record as the header `netanom-alert`
//! ([`netanom_schemas::topics::NATIVE_ALERT_HEADER`]). A record with neither (written by something else) is
//! parked with the reason.
//!
//! **Where a new destination starts**: `start_from` (see [`crate::position`]); `earliest` by default.
//!
//! **Rebalances.** When the group moves a partition away from this router, the destination forgets it at once:
//! its deliveries waiting or in flight are dropped (single alerts are aborted; what a digest spanning partitions
//! reports for it is ignored), nothing more is stored or committed for it, and its new owner delivers it from the
//! committed position, with the same `webhook-id`s. The consumer is polled even while every delivery slot is
//! taken (its assignment paused meanwhile), so a rebalance never waits for a slow webhook.
//!
//! **Stopping.** When the main path has finished (drain, or shutdown), every destination delivers what is on
//! the alerts topic up to its high watermarks at that moment, for `shutdown_grace` at most; what it could not
//! deliver by then stays after its committed position, for the next run. A destination the group assigned no
//! partition has nothing to deliver and stops at once.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use netanom_handles::kafka_log::KafkaLog;
use netanom_schemas::{Alert, topics};
use rdkafka::consumer::{CommitMode, Consumer, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::breaker::Breaker;
use crate::consumer::{self, creation_error};
use crate::digest::{self, Digester, MAX_DIGEST};
use crate::format::{AlertFormat, render_string};
use crate::metrics::{self, Metrics};
use crate::offsets::OffsetTracker;
use crate::position::StartFrom;
use crate::syslog::SyslogSender;
use crate::webhook::{self, Outcome, RetryConfig, WebhookSender};
use crate::{RouterConfig, RouterError};

/// librdkafka prefetch of one destination's consumer (`queued.max.messages.kbytes`): what a paused destination
/// holds at most besides its alerts in flight.
pub const PREFETCH_KBYTES: &str = "4096";
/// How long blocking Kafka metadata calls may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the producer may wait for queue space.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// The consumer group of destination `name` of the router group `group_id`.
pub fn group_of(group_id: &str, name: &str) -> String {
    format!("{group_id}.deliver.{name}")
}

/// What a destination sends with.
enum Target {
    /// One webhook (a sender holding that webhook only).
    Webhook(WebhookSender),
    /// The syslog receiver.
    Syslog(Box<SyslogTarget>),
}

/// The syslog receiver, with its retry policy and circuit breaker.
struct SyslogTarget {
    sender: SyslogSender,
    retry: RetryConfig,
    breaker: Breaker,
}

/// One destination of the router.
pub struct Destination {
    name: String,
    target: Target,
    concurrency: usize,
    /// A webhook's `digest_above` (0: no digests).
    digest_above: usize,
    /// Where the destination starts without a committed position.
    start_from: StartFrom,
}

/// What one destination did in a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationReport {
    /// The destination's name.
    pub name: String,
    /// True for the syslog destination, false for a webhook.
    pub syslog: bool,
    /// Alerts delivered.
    pub delivered: u64,
    /// Alerts parked on the dead-letter topic.
    pub parked: u64,
}

/// The destinations of `config`: each webhook, then the syslog receiver when enabled.
pub fn destinations(config: &RouterConfig) -> Result<Vec<Destination>, RouterError> {
    let mut out = Vec::new();
    for (index, hook) in config.effective_webhooks().into_iter().enumerate() {
        let name = webhook::destination_name(&hook, index);
        let (digest_above, start_from) = (hook.digest_above as usize, hook.start_from);
        let named = webhook::WebhookConfig { name: name.clone(), ..hook };
        let sender = WebhookSender::new(std::slice::from_ref(&named), config.retry.clone(), config.max_concurrency)
            .map_err(|e| match e {
                webhook::WebhookError::Url { url, reason, .. } => {
                    RouterError::Webhook(webhook::WebhookError::Url { index, url, reason })
                }
                webhook::WebhookError::Secret { source, .. } => {
                    RouterError::Webhook(webhook::WebhookError::Secret { index, source })
                }
                other => RouterError::Webhook(other),
            })?;
        out.push(Destination {
            name,
            target: Target::Webhook(sender),
            concurrency: config.max_concurrency,
            digest_above,
            start_from,
        });
    }
    if let Some(syslog) = config.syslog.clone().filter(|s| s.enabled) {
        let start_from = syslog.start_from;
        let breaker =
            Breaker::new(crate::syslog::DESTINATION_NAME, config.retry.breaker_failures, config.retry.breaker_cooldown);
        out.push(Destination {
            name: crate::syslog::DESTINATION_NAME.into(),
            target: Target::Syslog(Box::new(SyslogTarget {
                sender: SyslogSender::new(syslog),
                retry: config.retry.clone(),
                breaker,
            })),
            // One TCP connection, written in order.
            concurrency: 1,
            digest_above: 0,
            start_from,
        });
    }
    Ok(out)
}

impl Destination {
    /// The destination's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `syslog` target or redacted webhook URL, for logs.
    fn shown(&self) -> String {
        match &self.target {
            Target::Webhook(w) => w.urls().next().unwrap_or_default().to_string(),
            Target::Syslog(s) => s.sender.target(),
        }
    }

    /// Delivers `alert` (a record at `origin`), retrying per the policy: `Ok(())` when delivered, `Err(reason)`
    /// when it is to be parked.
    async fn send(&self, alert: &Alert) -> Result<(), String> {
        match &self.target {
            Target::Webhook(sender) => {
                let format = sender.formats().next().unwrap_or(AlertFormat::Netanom);
                let body = render_string(alert, format, time::OffsetDateTime::now_utc())
                    .map_err(|e| format!("rendering the alert as {format}: {e}"))?;
                let delivery = sender.deliver(&alert.delivery_id(), body.as_bytes()).await;
                match delivery.into_iter().next().map(|d| (d.url, d.outcome)) {
                    Some((_, Outcome::Delivered { .. })) => Ok(()),
                    Some((url, Outcome::Failed { attempts, reason })) => {
                        Err(format!("webhook {url} failed after {attempts} attempt(s): {reason}"))
                    }
                    None => Err("no webhook configured".into()),
                }
            }
            Target::Syslog(s) => {
                let SyslogTarget { sender, retry, breaker } = s.as_ref();
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    breaker.admit().await;
                    let sent = sender.send(alert).await;
                    breaker.record(sent.is_ok());
                    match sent {
                        Ok(()) => return Ok(()),
                        Err(e) if retry.exhausted(attempts) => {
                            return Err(format!("syslog {} failed after {attempts} attempt(s): {e}", sender.target()));
                        }
                        Err(e) => {
                            tracing::debug!(target = %sender.target(), id = %alert.id, attempts, error = %e,
                                "syslog send failed, retrying");
                            tokio::time::sleep(retry.delay(attempts - 1, None)).await;
                        }
                    }
                }
            }
        }
    }
}

/// What a destination task shares with its deliveries.
struct Shared {
    destination: Destination,
    producer: FutureProducer<KafkaLog>,
    alerts_topic: String,
    dead_letter_topic: String,
    metrics: Metrics,
}

/// How the records of one delivery (one alert, or a digest) ended: delivered and parked.
type Ended = (u64, u64);
/// The records of one delivery: partition, offset, and the partition's epoch when the delivery started.
type Records = Vec<(i32, i64, u64)>;

/// What a destination's loop has consumed and not finished, by partition.
#[derive(Default)]
struct Flight {
    tracker: OffsetTracker,
    /// The next offset to consume per partition, as far as the loop has seen.
    consumed_next: HashMap<i32, i64>,
    /// Per partition, incremented when it is revoked: what deliveries started before report is ignored.
    epochs: HashMap<i32, u64>,
    /// The single-alert deliveries per partition, aborted when it is revoked.
    handles: HashMap<i32, Vec<AbortHandle>>,
    /// Records consumed while every slot was taken, waiting for one (bounded: the assignment is paused when one
    /// arrives, which discards what librdkafka had fetched beyond it).
    waiting: VecDeque<OwnedMessage>,
    /// Whether the assignment is (or may be) paused.
    paused: bool,
    /// The consumer's count of assignments when the loop last looked.
    assignments: u64,
}

impl Flight {
    /// Forgets the partitions the consumer's rebalance callback revoked: their offsets are no longer tracked
    /// (nothing is stored for them), their waiting and held records are dropped, their single-alert deliveries
    /// aborted, and what their other deliveries report later is ignored. Their new owner delivers them again.
    fn revoke(&mut self, consumer: &StreamConsumer<DestinationContext>, digester: Option<&mut Digester>) {
        let assignments = consumer.context().assignments.load(Ordering::SeqCst);
        if assignments != self.assignments {
            // Whether the new assignment is paused is not known: resume it once a slot is free.
            self.assignments = assignments;
            self.paused = true;
        }
        let revoked = consumer.context().take_revoked();
        if revoked.is_empty() {
            return;
        }
        for p in &revoked {
            *self.epochs.entry(*p).or_default() += 1;
            self.tracker.forget(*p);
            self.consumed_next.remove(p);
            for h in self.handles.remove(p).unwrap_or_default() {
                h.abort();
            }
        }
        self.waiting.retain(|m| !revoked.contains(&m.partition()));
        let dropped = digester.map_or(0, |d| d.forget(|p| revoked.contains(&p)));
        tracing::info!(partitions = ?revoked, held_dropped = dropped,
            "partitions revoked: their deliveries in flight are dropped, their new owner delivers them");
    }

    /// The records of `held` with their partitions' epochs.
    fn records(&self, held: &[OwnedMessage]) -> Records {
        held.iter().map(|m| (m.partition(), m.offset(), self.epoch(m.partition()))).collect()
    }

    fn epoch(&self, partition: i32) -> u64 {
        self.epochs.get(&partition).copied().unwrap_or(0)
    }

    /// Marks a record done; the storable position when it advanced (never for a revoked partition's record).
    fn done(&mut self, partition: i32, offset: i64, epoch: u64) -> Option<i64> {
        if epoch != self.epoch(partition) {
            return None;
        }
        self.tracker.done(partition, offset)
    }

    /// Starts the delivery of record `m` (or holds it for a digest).
    fn dispatch(
        &mut self,
        m: OwnedMessage,
        shared: &Arc<Shared>,
        tasks: &mut JoinSet<(Records, Result<Ended, RouterError>)>,
        digester: Option<&mut Digester>,
    ) {
        let now = Instant::now();
        let held = match digester {
            Some(d) => d.over(now).then_some(d),
            None => None,
        };
        match held {
            Some(d) => d.hold(m, now),
            None => {
                let partition = m.partition();
                let epoch = self.epoch(partition);
                let handle = tasks.spawn(deliver_record(shared.clone(), m, epoch));
                let handles = self.handles.entry(partition).or_default();
                handles.retain(|h| !h.is_finished());
                handles.push(handle);
            }
        }
    }

    fn pause(&mut self, consumer: &StreamConsumer<DestinationContext>) {
        match consumer.assignment().and_then(|tpl| consumer.pause(&tpl)) {
            Ok(()) => self.paused = true,
            Err(e) => tracing::debug!(error = %e, "pausing the destination's assignment failed"),
        }
    }

    fn resume(&mut self, consumer: &StreamConsumer<DestinationContext>) {
        match consumer.assignment().and_then(|tpl| consumer.resume(&tpl)) {
            Ok(()) => self.paused = false,
            Err(e) => tracing::debug!(error = %e, "resuming the destination's assignment failed"),
        }
    }
}

/// Runs one destination until `stop` carries a deadline and everything on the alerts topic up to its high
/// watermarks at that moment was delivered or parked, or the deadline passed (see the module documentation).
pub async fn run(
    destination: Destination,
    config: Arc<RouterConfig>,
    producer: FutureProducer<KafkaLog>,
    metrics: Metrics,
    mut stop: watch::Receiver<Option<Instant>>,
) -> Result<DestinationReport, RouterError> {
    let group = group_of(&config.group_id, &destination.name);
    let consumer = Arc::new(create_consumer(&config, &group, destination.start_from)?);
    let topic = config.alerts_topic.clone();
    if config.static_assignment {
        let (c, t) = (consumer.clone(), topic.clone());
        let tpl = tokio::task::spawn_blocking(move || every_partition(c.as_ref(), &t, Offset::Stored))
            .await
            .map_err(|e| RouterError::Task(e.to_string()))??;
        consumer.assign(&tpl).map_err(|source| RouterError::Kafka {
            what: format!("assigning every partition of {topic} to destination {}", destination.name),
            source: Box::new(source),
        })?;
    } else {
        consumer.subscribe(&[topic.as_str()]).map_err(|source| RouterError::Kafka {
            what: format!("subscribing destination {} to {topic}", destination.name),
            source: Box::new(source),
        })?;
    }
    tracing::info!(destination = %destination.name, target = %destination.shown(), %group,
        concurrency = destination.concurrency, "destination started");
    let mut report = DestinationReport {
        name: destination.name.clone(),
        syslog: matches!(destination.target, Target::Syslog(_)),
        ..DestinationReport::default()
    };
    let concurrency = destination.concurrency.max(1);
    let shared = Arc::new(Shared {
        destination,
        producer,
        alerts_topic: topic.clone(),
        dead_letter_topic: config.dead_letter_topic.clone(),
        metrics,
    });
    let mut flight = Flight::default();
    let mut tasks: JoinSet<(Records, Result<Ended, RouterError>)> = JoinSet::new();
    let mut digester = (shared.destination.digest_above > 0).then(|| Digester::new(shared.destination.digest_above));
    let mut targets: Option<(HashMap<i32, i64>, Instant)> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let result = loop {
        flight.revoke(consumer.as_ref(), digester.as_mut());
        let full = |tasks: &JoinSet<_>, digester: &Option<Digester>| {
            tasks.len() >= concurrency || digester.as_ref().is_some_and(|d| d.held() >= MAX_DIGEST)
        };
        // Records that waited for a slot go first; with none waiting, a paused assignment resumes.
        while !full(&tasks, &digester)
            && let Some(m) = flight.waiting.pop_front()
        {
            flight.dispatch(m, &shared, &mut tasks, digester.as_mut());
        }
        if flight.paused && flight.waiting.is_empty() && !full(&tasks, &digester) {
            flight.resume(consumer.as_ref());
        }
        if let Some((t, _)) = &targets
            && flight.waiting.is_empty()
            && reached(consumer.as_ref(), &topic, t, &flight.consumed_next)
        {
            // Stopping: what is held for a digest goes now.
            if let Some(d) = digester.as_mut().filter(|d| d.held() > 0) {
                let held = d.take();
                let done = flight.records(&held);
                tasks.spawn(deliver_digest(shared.clone(), held, done));
            }
            if tasks.is_empty() {
                break Ok(());
            }
        }
        let deadline = targets.as_ref().map(|(_, d)| *d);
        let digest_due = digester.as_ref().and_then(Digester::due);
        tokio::select! {
            biased;
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                let (records, ended) = match joined {
                    Ok(done) => done,
                    // Aborted: its partition was revoked.
                    Err(e) if e.is_cancelled() => continue,
                    Err(e) => break Err(RouterError::Task(e.to_string())),
                };
                match ended {
                    Ok((delivered, parked)) => {
                        report.delivered += delivered;
                        report.parked += parked;
                    }
                    Err(e) => break Err(e),
                }
                flight.revoke(consumer.as_ref(), digester.as_mut());
                for (partition, offset, epoch) in records {
                    if let Some(next) = flight.done(partition, offset, epoch) {
                        store(consumer.as_ref(), &topic, partition, next);
                    }
                }
            }
            () = tokio::time::sleep_until(digest_due.unwrap_or_else(Instant::now)), if digest_due.is_some() => {
                if let Some(d) = digester.as_mut() {
                    let held = d.take();
                    let done = flight.records(&held);
                    tasks.spawn(deliver_digest(shared.clone(), held, done));
                }
            }
            changed = stop.changed(), if targets.is_none() => {
                let deadline = match (changed, *stop.borrow()) {
                    (Ok(()), Some(d)) => d,
                    (Ok(()), None) => continue,
                    // The router is gone: stop now.
                    (Err(_), _) => Instant::now(),
                };
                let (c, t) = (consumer.clone(), topic.clone());
                let highs = tokio::task::spawn_blocking(move || high_watermarks(c.as_ref(), &t))
                    .await
                    .map_err(|e| RouterError::Task(e.to_string()))?;
                tracing::debug!(destination = %shared.destination.name, ?highs, "delivering up to the high watermarks");
                targets = Some((highs, deadline));
            }
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                let behind: i64 = targets.as_ref().map_or(0, |(t, _)| {
                    t.iter().map(|(p, h)| h - flight.consumed_next.get(p).copied().unwrap_or(0)).filter(|d| *d > 0).sum()
                });
                tracing::warn!(destination = %shared.destination.name, in_flight = tasks.len(), not_consumed = behind,
                    "stopping: alerts not delivered yet stay after the destination's committed position");
                break Ok(());
            }
            _ = tick.tick() => {}
            // Polled even when every slot is taken, so that rebalances are served; a record that arrives then
            // waits (and the assignment is paused until a slot frees).
            message = consumer.recv() => match message {
                Ok(m) => {
                    let m = m.detach();
                    flight.revoke(consumer.as_ref(), digester.as_mut());
                    let (partition, offset) = (m.partition(), m.offset());
                    flight.consumed_next.insert(partition, offset + 1);
                    flight.tracker.track(partition, offset);
                    if full(&tasks, &digester) || !flight.waiting.is_empty() {
                        flight.waiting.push_back(m);
                        flight.pause(consumer.as_ref());
                    } else {
                        flight.dispatch(m, &shared, &mut tasks, digester.as_mut());
                    }
                }
                Err(KafkaError::PartitionEOF(partition)) => {
                    if let Some(next) = position(consumer.as_ref(), &topic, partition) {
                        let known = flight.consumed_next.entry(partition).or_insert(next);
                        *known = (*known).max(next);
                    }
                }
                Err(e) => tracing::warn!(destination = %shared.destination.name, error = %e, "consumer error"),
            },
        }
    };
    tasks.abort_all();
    let c = consumer.clone();
    let committed = tokio::task::spawn_blocking(move || c.commit_consumer_state(CommitMode::Sync)).await;
    match committed {
        Ok(Ok(()) | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset))) => {}
        Ok(Err(e)) => tracing::error!(destination = %report.name, error = %e,
            "final offset commit failed: alerts since the last commit are delivered again"),
        Err(e) => tracing::error!(destination = %report.name, error = %e, "final offset commit failed"),
    }
    tracing::info!(destination = %report.name, delivered = report.delivered, parked = report.parked,
        "destination stopped");
    result.map(|()| report)
}

/// Delivers the alert of record `m`, or parks it; returns its partition and offset with how it ended.
async fn deliver_record(shared: Arc<Shared>, m: OwnedMessage, epoch: u64) -> (Records, Result<Ended, RouterError>) {
    use opentelemetry::context::FutureExt as _;
    use opentelemetry::trace::TraceContextExt as _;
    let (partition, offset) = (m.partition(), m.offset());
    // The delivery continues the trace of the alert (its record's `traceparent`).
    let cx = match metrics::extract(m.headers()) {
        Some(sc) => opentelemetry::Context::new().with_remote_span_context(sc),
        None => opentelemetry::Context::new(),
    };
    let ended = deliver_one(&shared, &m).with_context(cx).await;
    (vec![(partition, offset, epoch)], ended)
}

/// Delivers the alerts of `records` as one digest ([`crate::digest`]); a record without a native alert, and
/// every alert of a digest the webhook refused, is parked. `done` are the records with their epochs.
async fn deliver_digest(
    shared: Arc<Shared>,
    records: Vec<OwnedMessage>,
    done: Records,
) -> (Records, Result<Ended, RouterError>) {
    let ended = async {
        let d = &shared.destination;
        let mut alerts = Vec::with_capacity(records.len());
        let mut parked = 0;
        for m in &records {
            match native_alert(m) {
                Ok((bytes, alert)) => alerts.push((m, bytes, alert)),
                Err(reason) => {
                    park_record(&shared, m, m.payload().unwrap_or_default(), &reason).await?;
                    parked += 1;
                }
            }
        }
        let Target::Webhook(sender) = &d.target else { return Ok((0, parked)) };
        if alerts.is_empty() {
            return Ok((0, parked));
        }
        let list: Vec<Alert> = alerts.iter().map(|(_, _, a)| a.clone()).collect();
        let (id, body) = digest::body(&list);
        let delivery = sender.deliver(&id, body.as_bytes()).await.into_iter().next();
        match delivery.map(|d| (d.url, d.outcome)) {
            Some((_, Outcome::Delivered { .. })) => {
                shared.metrics.alert(metrics::sink::WEBHOOK, true, list.len() as u64);
                tracing::info!(destination = %d.name, %id, alerts = list.len(), "digest delivered");
                Ok((list.len() as u64, parked))
            }
            other => {
                let reason = match other {
                    Some((url, Outcome::Failed { attempts, reason })) => {
                        format!("digest {id} to webhook {url} failed after {attempts} attempt(s): {reason}")
                    }
                    _ => "no webhook configured".to_string(),
                };
                for (m, bytes, _) in &alerts {
                    park_record(&shared, m, bytes, &reason).await?;
                }
                shared.metrics.alert(metrics::sink::WEBHOOK, false, list.len() as u64);
                Ok((0, parked + list.len() as u64))
            }
        }
    }
    .await;
    (done, ended)
}

/// Parks record `m` (as `payload`) for the destination of `shared`, counting it.
async fn park_record(shared: &Shared, m: &OwnedMessage, payload: &[u8], reason: &str) -> Result<(), RouterError> {
    tracing::warn!(destination = %shared.destination.name, partition = m.partition(), offset = m.offset(), %reason,
        "alert parked on the dead-letter topic");
    let origin = format!("{}/{}/{}", shared.alerts_topic, m.partition(), m.offset());
    let dlq = DeadLetter {
        producer: &shared.producer,
        topic: &shared.dead_letter_topic,
        destination: &shared.destination.name,
    };
    dlq.park(m.key(), payload, &origin, reason, &[(topics::DLQ_ATTEMPTS_HEADER, "1")]).await?;
    shared.metrics.dead_lettered.add(1, &[]);
    Ok(())
}

async fn deliver_one(shared: &Shared, m: &OwnedMessage) -> Result<Ended, RouterError> {
    let d = &shared.destination;
    let sink = if matches!(d.target, Target::Syslog(_)) { metrics::sink::SYSLOG } else { metrics::sink::WEBHOOK };
    let (native, failure) = match native_alert(m) {
        Ok((bytes, alert)) => match d.send(&alert).await {
            Ok(()) => {
                shared.metrics.alert(sink, true, 1);
                return Ok((1, 0));
            }
            Err(reason) => (bytes, reason),
        },
        Err(reason) => (m.payload().unwrap_or_default(), reason),
    };
    shared.metrics.alert(sink, false, 1);
    park_record(shared, m, native, &failure).await?;
    Ok((0, 1))
}

/// The native alert of record `m` (its bytes and the alert): the `netanom-alert` header, else the payload when
/// the record's format is `netanom`.
fn native_alert(m: &OwnedMessage) -> Result<(&[u8], Alert), String> {
    let header = |key: &str| m.headers().and_then(|h| h.iter().find(|h| h.key == key).and_then(|h| h.value));
    let format = header(topics::FORMAT_HEADER).map(String::from_utf8_lossy);
    let bytes = match (header(topics::NATIVE_ALERT_HEADER), format.as_deref()) {
        (Some(native), _) => native,
        (None, None | Some("netanom")) => m.payload().ok_or("record has no payload")?,
        (None, Some(other)) => {
            return Err(format!("record is in format {other} and has no {} header", topics::NATIVE_ALERT_HEADER));
        }
    };
    let alert = serde_json::from_slice(bytes).map_err(|e| format!("record is not a netanom alert: {e}"))?;
    Ok((bytes, alert))
}

/// Where a destination parks what it cannot deliver.
struct DeadLetter<'a> {
    producer: &'a FutureProducer<KafkaLog>,
    topic: &'a str,
    destination: &'a str,
}

impl DeadLetter<'_> {
    /// Produces `payload` (the native alert, or the record as it was) to the dead-letter topic with the reason,
    /// the origin (`topic/partition/offset` of the alert), the destination and the `extra` headers.
    async fn park(
        &self,
        key: Option<&[u8]>,
        payload: &[u8],
        origin: &str,
        reason: &str,
        extra: &[(&str, &str)],
    ) -> Result<(), RouterError> {
        let mut headers = OwnedHeaders::new()
            .insert(Header { key: topics::DLQ_REASON_HEADER, value: Some(reason) })
            .insert(Header { key: topics::DLQ_ORIGIN_HEADER, value: Some(origin) })
            .insert(Header { key: topics::DLQ_DESTINATION_HEADER, value: Some(self.destination) });
        for (key, value) in extra {
            headers = headers.insert(Header { key, value: Some(*value) });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(self.topic).payload(payload).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        self.producer.send(record, QUEUE_TIMEOUT).await.map(|_| ()).map_err(|(source, _)| RouterError::Produce {
            topic: self.topic.to_string(),
            key: key.map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default(),
            source: Box::new(source),
        })
    }
}

/// Delivers the alert of dead-letter record `m` (parked by a destination) to `d` again: `true` when delivered,
/// `false` when it was refused again and parked again on `dead_letter_topic`, keeping its origin, with
/// `attempts` (the failed delivery rounds, this one included) and the replay's id `replay` as headers.
pub async fn redeliver(
    d: &Destination,
    producer: &FutureProducer<KafkaLog>,
    dead_letter_topic: &str,
    m: &OwnedMessage,
    attempts: u32,
    replay: &str,
) -> Result<bool, RouterError> {
    let failure = match native_alert(m) {
        Ok((_, alert)) => match d.send(&alert).await {
            Ok(()) => return Ok(true),
            Err(reason) => reason,
        },
        Err(reason) => reason,
    };
    let origin = m
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == topics::DLQ_ORIGIN_HEADER).and_then(|h| h.value))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    let dlq = DeadLetter { producer, topic: dead_letter_topic, destination: &d.name };
    let attempts = attempts.to_string();
    let extra = [(topics::DLQ_ATTEMPTS_HEADER, attempts.as_str()), (topics::DLQ_REPLAY_HEADER, replay)];
    dlq.park(m.key(), m.payload().unwrap_or_default(), &origin, &failure, &extra).await?;
    Ok(false)
}

/// An idempotent producer for dead letters (`netanom dlq replay`).
pub fn dead_letter_producer(config: &RouterConfig) -> Result<FutureProducer<KafkaLog>, RouterError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers).set("enable.idempotence", "true");
    for (k, v) in &config.kafka_properties {
        c.set(k, v);
    }
    c.create_with_context(KafkaLog::default()).map_err(|source| RouterError::Kafka {
        what: "creating the dead-letter producer".into(),
        source: Box::new(crate::report::redacted(source)),
    })
}

/// A destination consumer's client context: librdkafka's log lines and errors, rate-limited (the end of a
/// partition, reported as an error because `enable.partition.eof` is on, at debug level), and the rebalance
/// callbacks: the partitions revoked, for the destination's loop to forget, and whether a group assignment
/// (possibly empty) was received.
#[derive(Default)]
pub struct DestinationContext {
    log: KafkaLog,
    /// Partitions revoked since the loop last looked.
    revoked: Mutex<BTreeSet<i32>>,
    /// Assignments received so far (a new one may carry a pause of this member's from before the rebalance).
    assignments: std::sync::atomic::AtomicU64,
    /// True while the group's last assignment (none, possibly) stands: set when one is received, cleared when
    /// partitions are revoked.
    assigned: AtomicBool,
}

impl DestinationContext {
    /// The partitions revoked since the last call.
    fn take_revoked(&self) -> BTreeSet<i32> {
        std::mem::take(&mut *self.revoked.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl rdkafka::ClientContext for DestinationContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.log.log_line(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error_line(&error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for DestinationContext {
    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.assigned.store(false, Ordering::SeqCst);
            let mut revoked = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
            revoked.extend(tpl.elements().iter().map(|e| e.partition()));
        }
    }

    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.assignments.fetch_add(1, Ordering::SeqCst);
            self.assigned.store(true, Ordering::SeqCst);
        }
    }
}

/// Stores `next` (the next offset to consume) for `partition`.
fn store(consumer: &StreamConsumer<DestinationContext>, topic: &str, partition: i32, next: i64) {
    let mut tpl = TopicPartitionList::new();
    if tpl.add_partition_offset(topic, partition, Offset::Offset(next)).is_err() {
        return;
    }
    // A partition revoked meanwhile refuses the store: its new owner delivers from the committed offset.
    // Auto-commit sends the stored offsets periodically; the final commit is synchronous.
    if let Err(e) = consumer.store_offsets(&tpl) {
        tracing::debug!(partition, error = %e, "storing a destination offset failed");
    }
}

/// True when every partition with a target was consumed up to it, or is assigned to another member (a member
/// the group assigned nothing has nothing to deliver).
fn reached(
    consumer: &StreamConsumer<DestinationContext>,
    topic: &str,
    targets: &HashMap<i32, i64>,
    consumed_next: &HashMap<i32, i64>,
) -> bool {
    let assigned: Vec<i32> = consumer
        .assignment()
        .map(|tpl| tpl.elements().iter().filter(|e| e.topic() == topic).map(|e| e.partition()).collect())
        .unwrap_or_default();
    let none_assigned = assigned.is_empty() && consumer.context().assigned.load(Ordering::SeqCst);
    targets.iter().all(|(p, high)| {
        *high <= 0
            || none_assigned
            || consumed_next.get(p).is_some_and(|next| next >= high)
            || (!assigned.is_empty() && !assigned.contains(p))
    })
}

/// The consumer's position (next offset) in `partition` of `topic`.
fn position(consumer: &StreamConsumer<DestinationContext>, topic: &str, partition: i32) -> Option<i64> {
    let tpl = consumer.position().ok()?;
    match tpl.find_partition(topic, partition)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// The high watermark of every partition of `topic` (a partition that cannot be read counts as empty).
fn high_watermarks<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    topic: &str,
) -> HashMap<i32, i64> {
    let partitions = every_partition(consumer, topic, Offset::Stored)
        .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect::<Vec<_>>());
    let partitions = match partitions {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "partitions of the alerts topic unknown");
            return HashMap::new();
        }
    };
    partitions
        .into_iter()
        .map(|p| (p, consumer.fetch_watermarks(topic, p, METADATA_TIMEOUT).map_or(0, |(_, high)| high)))
        .collect()
}

/// Every partition of `topic`, each at `offset`.
pub fn every_partition<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    topic: &str,
    offset: Offset,
) -> Result<TopicPartitionList, RouterError> {
    let kafka = |what: String| move |source| RouterError::Kafka { what, source: Box::new(source) };
    let md = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(kafka(format!("fetching the metadata of {topic}")))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), offset).map_err(kafka(format!("adding {topic}/{}", p.id())))?;
        }
    }
    Ok(tpl)
}

fn create_consumer(
    config: &RouterConfig,
    group: &str,
    start_from: StartFrom,
) -> Result<StreamConsumer<DestinationContext>, RouterError> {
    consumer_config(config, group, start_from)
        .create_with_context(DestinationContext::default())
        .map_err(creation_error(format!("creating the consumer of group {group}")))
}

/// The settings of a destination's consumer: the `kafka_properties`, under the ones the destination needs.
fn consumer_config(config: &RouterConfig, group: &str, start_from: StartFrom) -> ClientConfig {
    let fetch_wait = config.fetch_wait.as_millis().to_string();
    let defaults = [
        ("enable.auto.commit", "true"),
        ("queued.max.messages.kbytes", PREFETCH_KBYTES),
        ("fetch.wait.max.ms", fetch_wait.as_str()),
    ];
    let mut c = consumer::consumer_config(config, group, &defaults);
    // Not overridable: a new destination starts where its `start_from` says (the beginning of the alerts topic's
    // retention, so no alert is skipped, or its end), whatever `kafka_properties` holds.
    c.set("auto.offset.reset", start_from.offset_reset());
    // Not overridable: offsets are stored only after delivery.
    c.set("enable.auto.offset.store", "false");
    if config.exactly_once {
        // Not overridable either: records of open or aborted transactions are never read.
        c.set("isolation.level", "read_committed");
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    fn record(headers: Option<OwnedHeaders>, payload: &[u8]) -> OwnedMessage {
        OwnedMessage::new(Some(payload.to_vec()), None, "alerts".into(), Timestamp::NotAvailable, 0, 7, headers)
    }

    #[test]
    fn the_native_alert_comes_from_the_header_or_a_netanom_payload() {
        let alert = serde_json::json!({"id": "x"});
        let err = native_alert(&record(None, alert.to_string().as_bytes())).unwrap_err();
        assert!(err.contains("not a netanom alert"), "{err}");
        let ocsf = OwnedHeaders::new().insert(Header { key: topics::FORMAT_HEADER, value: Some("ocsf") });
        let err = native_alert(&record(Some(ocsf), b"{}")).unwrap_err();
        assert!(err.contains("format ocsf") && err.contains(topics::NATIVE_ALERT_HEADER), "{err}");
        assert_eq!(group_of("netanom-alert-router", "pager"), "netanom-alert-router.deliver.pager");
    }

    #[test]
    fn start_from_is_not_overridden_by_kafka_properties() {
        let mut config = RouterConfig::default();
        config.kafka_properties.insert("auto.offset.reset".into(), "latest".into());
        config.kafka_properties.insert("client.id".into(), "router-7".into());
        let c = consumer_config(&config, "g", StartFrom::Earliest);
        assert_eq!(c.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(c.get("client.id"), Some("router-7"), "other properties still apply");
        config.kafka_properties.insert("auto.offset.reset".into(), "earliest".into());
        assert_eq!(consumer_config(&config, "g", StartFrom::Latest).get("auto.offset.reset"), Some("latest"));
    }
}
