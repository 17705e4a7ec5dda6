//! netanom producer: reads packets from a pcap/pcapng file or a live interface, extracts per-packet features
//! (headers plus flow state), groups them per source IP into `PacketBatch` records and publishes them to the
//! packets topic. [`run`] is the service; [`pipeline`] is the same path without I/O, for benchmarks and tests;
//! [`synth`] writes synthetic captures. [`privilege`] drops the privileges of a live capture once its device is
//! open; [`pseudonymize`] replaces every captured address by its keyed pseudonym before anything else sees it.
//!
//! Threads: capture, parsing, batching and encoding run on one dedicated OS thread (`netanom-capture`) that
//! hands encoded records to librdkafka (which compresses and sends on its own threads); the async caller only
//! waits for the result.

pub mod batch;
pub mod capture;
pub mod file;
pub mod flow;
pub mod frame;
pub mod metrics;
pub mod outage;
pub mod pace;
pub mod parse;
pub mod pipeline;
pub mod privilege;
pub mod pseudonymize;
pub mod publish;
pub mod synth;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use netanom_handles::{Grace, ReadyFlag, RoleHandles, Teardown, messaging};
use netanom_schemas::packet_time::SkewConfig;
use netanom_schemas::{PacketBatch, SchemaIds};
use tokio_util::sync::CancellationToken;

/// How often a live capture reports the kernel's drop count as a metric.
const KERNEL_DROPS_EVERY: Duration = Duration::from_secs(1);

pub use batch::{BatchConfig, Batcher};
pub use capture::{CaptureError, PacketSource, Speed};
pub use flow::{FlowConfig, FlowTable};
pub use frame::Frame;
pub use outage::{OnFull, OutageConfig, OutageReport};
pub use parse::{Parsed, Skip};
pub use pipeline::{FeatureExtractor, Pipeline};
pub use privilege::{CaptureConfig, Dropped, PrivilegeError};
pub use pseudonymize::{PseudonymizeConfig, PseudonymizeError};
pub use publish::{PublishError, Publisher};

/// Producer settings (`[producer]`).
#[derive(Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProducerConfig {
    /// Capture file to read (pcap or pcapng). Exactly one of `pcap` and `interface` must be set.
    pub pcap: Option<PathBuf>,
    /// Network interface to capture from live. Exactly one of `pcap` and `interface` must be set.
    pub interface: Option<String>,
    /// BPF filter applied to the capture (tcpdump syntax), e.g. `tcp or udp`.
    pub filter: Option<String>,
    /// Bytes captured per packet on a live interface. Default 65535.
    pub snaplen: u32,
    /// Put the live interface in promiscuous mode. Default true.
    pub promiscuous: bool,
    /// The user and group a live capture continues as once its device is open (`[producer.capture]`).
    pub capture: CaptureConfig,
    /// Keyed, prefix-preserving pseudonyms of every captured address (`[producer.pseudonymize]`). Default off.
    pub pseudonymize: PseudonymizeConfig,
    /// File replay speed: `max` (no pacing, default), `realtime`, or a factor such as `10`.
    pub speed: Speed,
    /// Topic for packet batches. Default `netanom.packets`. Not a key of `[producer]`: the root binary sets it
    /// from `topics.packets`.
    #[serde(skip)]
    pub topic: String,
    /// Batching.
    pub batch: BatchConfig,
    /// Flow table.
    pub flow: FlowConfig,
    /// Packet-time skew rule (see [`Pipeline`]): a file's frames are checked against the capture's packet clock,
    /// a live capture's against the wall clock.
    pub time: SkewConfig,
    /// Kafka bootstrap servers. Not a key of `[producer]`: the root binary sets it from `kafka.brokers`.
    #[serde(skip)]
    pub brokers: String,
    /// Extra librdkafka properties, applied last (e.g. security settings, `linger.ms`). Values of secret keys
    /// (password, secret, key, token) print as `***` in `Debug`. Not a key of `[producer]`: the root binary sets
    /// it from `kafka.properties`.
    #[serde(skip)]
    pub kafka_properties: BTreeMap<String, String>,
    /// Compression codec: none, gzip, snappy, lz4 (default) or zstd.
    pub compression: String,
    /// Confluent schema ids written in each record's header. Default: the built-in ids. Not a key of
    /// `[producer]`: the root binary sets it from `[schemas]` (or the schema registry).
    #[serde(skip)]
    pub schema_ids: SchemaIds,
    /// How long to wait for outstanding records to be acknowledged at the end. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub flush_timeout: Duration,
    /// The memory budget of records waiting for Kafka, and what a live capture does with records beyond it
    /// while Kafka is away (`[producer.outage]`).
    pub outage: OutageConfig,
    /// Show a progress bar on stderr when reading a file; drawn only when stderr is a terminal, so logs and
    /// pipes never see it. Default true.
    pub progress: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            pcap: None,
            interface: None,
            filter: None,
            snaplen: 65_535,
            promiscuous: true,
            capture: CaptureConfig::default(),
            pseudonymize: PseudonymizeConfig::default(),
            speed: Speed::Max,
            topic: netanom_schemas::topics::PACKETS.to_string(),
            batch: BatchConfig::default(),
            flow: FlowConfig::default(),
            time: SkewConfig::default(),
            brokers: "localhost:9092".to_string(),
            kafka_properties: BTreeMap::new(),
            compression: "lz4".to_string(),
            schema_ids: SchemaIds::BUILT_IN,
            flush_timeout: Duration::from_secs(30),
            outage: OutageConfig::default(),
            progress: true,
        }
    }
}

/// Written out so that secret Kafka properties print masked.
impl std::fmt::Debug for ProducerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerConfig")
            .field("pcap", &self.pcap)
            .field("interface", &self.interface)
            .field("filter", &self.filter)
            .field("snaplen", &self.snaplen)
            .field("promiscuous", &self.promiscuous)
            .field("capture", &self.capture)
            .field("pseudonymize", &self.pseudonymize)
            .field("speed", &self.speed)
            .field("topic", &self.topic)
            .field("batch", &self.batch)
            .field("flow", &self.flow)
            .field("time", &self.time)
            .field("brokers", &self.brokers)
            .field("kafka_properties", &netanom_schemas::redact::masked(&self.kafka_properties))
            .field("compression", &self.compression)
            .field("schema_ids", &self.schema_ids)
            .field("flush_timeout", &self.flush_timeout)
            .field("outage", &self.outage)
            .field("progress", &self.progress)
            .finish()
    }
}

/// One configuration problem, naming its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ProducerConfig {
    /// Checks every setting and reports all problems at once, each naming its key (`producer.…`).
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut e = Vec::new();
        match (&self.pcap, &self.interface) {
            (None, None) => {
                e.push("exactly one of producer.pcap and producer.interface must be set, got neither".into())
            }
            (Some(p), Some(i)) => e.push(format!(
                "exactly one of producer.pcap and producer.interface must be set, got both ({} and {i})",
                p.display()
            )),
            _ => {}
        }
        if let Some(p) = &self.pcap {
            if p.as_os_str().is_empty() {
                e.push("producer.pcap must not be empty".into());
            }
        }
        if matches!(&self.interface, Some(i) if i.is_empty()) {
            e.push("producer.interface must not be empty".into());
        }
        if matches!(&self.filter, Some(f) if f.trim().is_empty()) {
            e.push("producer.filter must not be empty when set (omit it to capture everything)".into());
        }
        if !(64..=262_144).contains(&self.snaplen) {
            e.push(format!("producer.snaplen must be in 64..=262144, got {}", self.snaplen));
        }
        if self.interface.is_some() && self.speed != Speed::Max {
            e.push(format!("producer.speed applies to file input only, got {} with producer.interface", self.speed));
        }
        if self.topic.is_empty() {
            e.push("producer.topic must not be empty".into());
        }
        if self.brokers.trim().is_empty() {
            e.push("producer.brokers must not be empty".into());
        }
        if !publish::COMPRESSIONS.contains(&self.compression.as_str()) {
            e.push(format!(
                "producer.compression must be one of {}, got `{}`",
                publish::COMPRESSIONS.join(", "),
                self.compression
            ));
        }
        if self.flush_timeout.is_zero() {
            e.push("producer.flush_timeout must be > 0, got 0s".into());
        }
        e.extend(self.capture.validate(self.interface.is_some()));
        e.extend(self.outage.validate());
        if let Err(problem) = self.pseudonymize.load_key() {
            e.push(problem.to_string());
        }
        e.extend(self.batch.validate("producer.batch"));
        e.extend(self.flow.validate("producer.flow"));
        e.extend(self.time.validate().into_iter().map(|(key, problem)| format!("producer.time.{key} {problem}")));
        if e.is_empty() { Ok(()) } else { Err(e.into_iter().map(ConfigError).collect()) }
    }
}

/// What a run did. Invariant once `run` returns `Ok`: `packets_read == packets_parsed + sum(skipped)` and
/// `packets_parsed + outage.resumed_packets == packets_published + outage.dropped_packets +
/// outage.spool_left_packets` (without an outage: `packets_parsed == packets_published`); file records skipped by the reader (filtered, corrupt, oversize, of an
/// undeclared interface) count as read and skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerReport {
    /// Frames read from the capture.
    pub packets_read: u64,
    /// Frames turned into packet features.
    pub packets_parsed: u64,
    /// Packets in records acknowledged by Kafka.
    pub packets_published: u64,
    /// Frames skipped, by reason ([`Skip::as_str`]).
    pub skipped: BTreeMap<&'static str, u64>,
    /// Records (batches) acknowledged by Kafka.
    pub batches_published: u64,
    /// Payload bytes of acknowledged records, before compression.
    pub bytes_published: u64,
    /// Flows removed because idle or closed.
    pub flows_evicted_idle: u64,
    /// Live flows removed because the flow table was full.
    pub flows_evicted_full: u64,
    /// Batches closed early because `batch.max_open_batches` was exceeded.
    pub batches_closed_early: u64,
    /// Packets outside the packet-time skew (`producer.time`), published alone for the detector to dead-letter.
    pub packets_time_skewed: u64,
    /// Packets the kernel or interface dropped (live capture only).
    pub kernel_dropped: u64,
    /// What a capture that cannot wait dropped or spooled while Kafka did not take its records.
    pub outage: OutageReport,
    /// Why a capture file could not be read to its end (a truncated or corrupt tail that cannot be skipped):
    /// the frames before the fault were processed and published as usual. `None` when the input ended cleanly.
    pub input_error: Option<String>,
    /// Wall time of the run.
    pub duration: Duration,
    /// For a paced file replay (`producer.speed` not `max`), where its pacing is anchored: the wall time every
    /// packet of the replay was released follows from it. `None` otherwise.
    pub paced_from: Option<pace::PaceAnchor>,
}

impl ProducerReport {
    /// Total of skipped frames.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }

    /// Frames read per second of wall time.
    pub fn packets_per_sec(&self) -> f64 {
        self.packets_read as f64 / self.duration.as_secs_f64().max(1e-9)
    }
}

/// Why the producer stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// Invalid configuration (every problem listed).
    #[error("invalid producer configuration: {}", .0.iter().map(|e| e.0.as_str()).collect::<Vec<_>>().join("; "))]
    Config(Vec<ConfigError>),
    /// Opening or reading the capture failed.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// Kafka refused or failed to acknowledge records.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The capture thread could not be started or died.
    #[error("capture thread failed: {0}")]
    Thread(String),
    /// The privileges of a live capture could not be dropped.
    #[error(transparent)]
    Privilege(#[from] PrivilegeError),
    /// The pseudonymization key could not be loaded.
    #[error(transparent)]
    Pseudonymize(#[from] PseudonymizeError),
    /// The outage spool could not be opened.
    #[error(transparent)]
    Spool(#[from] outage::SpoolError),
}

/// A capture opened, and for a live interface its privileges dropped, before the producer runs
/// ([`open_capture`], [`run_with_capture`]).
#[derive(Debug)]
pub struct OpenedCapture {
    source: PacketSource,
    dropped: Option<Dropped>,
    /// Loaded before the drop: the key file may be readable by the starting user only.
    pseudonyms: Option<netanom_schemas::pseudonym::Pseudonymizer>,
}

/// Opens the configured input. A live interface is opened, its BPF filter attached, and then the privileges are
/// dropped ([`privilege::drop_privileges`]): capability sets belong to threads, so a process should call this
/// before it starts any other thread (the `netanom` binary does, before its async runtime), after which nothing
/// in the process holds a capability.
pub fn open_capture(config: &ProducerConfig) -> Result<OpenedCapture, ProducerError> {
    config.validate().map_err(ProducerError::Config)?;
    let pseudonyms = config.pseudonymize.pseudonymizer()?;
    let source = open_source(config)?;
    let dropped = if source.is_live() { Some(privilege::drop_privileges(&config.capture)?) } else { None };
    Ok(OpenedCapture { source, dropped, pseudonyms })
}

fn open_source(config: &ProducerConfig) -> Result<PacketSource, ProducerError> {
    Ok(match (&config.pcap, &config.interface) {
        (Some(path), _) => {
            PacketSource::open_file(path, config.filter.as_deref(), config.speed)?.with_time(&config.time)
        }
        (None, Some(iface)) => {
            PacketSource::open_live(iface, config.filter.as_deref(), config.snaplen, config.promiscuous)?
        }
        (None, None) => {
            return Err(ProducerError::Config(vec![ConfigError(
                "producer.pcap or producer.interface must be set".into(),
            )]));
        }
    })
}

/// Runs the producer until the file ends (after flushing) or `shutdown` is cancelled (then it closes every open
/// batch, flushes and returns). `handles.drain` means "the input is complete": it ends a live capture like
/// `shutdown`; a file is always read to its end, so it is ignored there. `handles.ready` is set while the Kafka
/// producer is created and the input open; the flushed Kafka producer is dropped on `handles.teardown`.
pub async fn run(
    config: ProducerConfig,
    shutdown: CancellationToken,
    handles: RoleHandles,
) -> Result<ProducerReport, ProducerError> {
    run_with_capture(config, None, shutdown, handles).await
}

/// [`run`] on a capture already opened by [`open_capture`]; with `None`, the capture thread opens the input
/// itself and, for a live interface with `[producer.capture] user` set, then drops the privileges (the user
/// switch clears every thread's capabilities when the process started as root; without a user, other threads
/// would keep theirs, so the drop is left to [`open_capture`]).
pub async fn run_with_capture(
    config: ProducerConfig,
    capture: Option<OpenedCapture>,
    shutdown: CancellationToken,
    handles: RoleHandles,
) -> Result<ProducerReport, ProducerError> {
    config.validate().map_err(ProducerError::Config)?;
    let stop = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread_stop = stop.clone();
    let RoleHandles { drain, ready, teardown, grace } = handles;
    std::thread::Builder::new()
        .name("netanom-capture".into())
        .spawn(move || {
            let _ = tx.send(run_blocking(&config, capture, &thread_stop, &ready, &teardown, &grace));
        })
        .map_err(|e| ProducerError::Thread(e.to_string()))?;
    let drain = drain.unwrap_or_default();
    let mut rx = rx;
    let result = tokio::select! {
        r = &mut rx => r,
        _ = shutdown.cancelled() => { stop.cancel(); rx.await }
        _ = drain.cancelled() => { stop.cancel(); rx.await }
    };
    result.unwrap_or_else(|_| Err(ProducerError::Thread("capture thread exited without a result".into())))
}

/// The capture thread: read → pipeline → encode → publish, then flush. `stop` is honoured within ~100 ms;
/// for file input it is only set by `shutdown` (see [`run`]).
fn run_blocking(
    config: &ProducerConfig,
    capture: Option<OpenedCapture>,
    stop: &CancellationToken,
    ready: &ReadyFlag,
    teardown: &Teardown,
    grace: &Grace,
) -> Result<ProducerReport, ProducerError> {
    let started = Instant::now();
    let OpenedCapture { mut source, dropped, pseudonyms } = match capture {
        Some(opened) => opened,
        None => {
            let pseudonyms = config.pseudonymize.pseudonymizer()?;
            let source = open_source(config)?;
            let dropped = (source.is_live() && config.capture.user.is_some())
                .then(|| privilege::drop_privileges(&config.capture))
                .transpose()?;
            OpenedCapture { source, dropped, pseudonyms }
        }
    };
    // A live capture (or a paced replay) cannot wait for Kafka: its records wait in the queue for as long as the
    // broker is away, and beyond the budget go to the outage handling instead of blocking the reader.
    let cannot_wait = source.is_live() || config.speed != Speed::Max;
    let mut properties: BTreeMap<String, String> =
        config.outage.queue_properties().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    if cannot_wait {
        properties.insert("message.timeout.ms".to_string(), "0".to_string());
    }
    properties.extend(config.kafka_properties.iter().map(|(k, v)| (k.clone(), v.clone())));
    let publisher = Publisher::new(&config.brokers, &properties, &config.compression, &config.topic)?;
    publisher.watch(ready.kafka_link("producer"));
    let metrics = metrics::Metrics::new();
    let overflow = if cannot_wait { Some(outage::Overflow::new(&config.outage, metrics.clone())?) } else { None };
    let mut synced = metrics::CountSync::default();
    ready.set(true);
    tracing::info!(
        input = source.target(),
        link_type = source.link_type(),
        topic = %config.topic,
        pseudonymized = pseudonyms.is_some(),
        "producer started"
    );
    if let Some(d) = dropped {
        tracing::info!(
            uid = d.uid,
            gid = d.gid,
            switched_user = d.switched_user,
            "capture privileges dropped: no capability left in any thread"
        );
    }
    let live = source.is_live();
    let is_stopped = || stop.is_cancelled();
    let progress = (config.progress && !live && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(source.file_len().unwrap_or(0));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg} ({eta})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut pipeline = Pipeline::new(&config.flow, &config.batch).with_time(&config.time).with_pseudonyms(pseudonyms);
    let mut out = Emitter {
        publisher: &publisher,
        ids: config.schema_ids,
        encoded: Vec::with_capacity(64 * 1024),
        key: String::with_capacity(48),
        error: None,
        tracer: opentelemetry::global::tracer("netanom"),
        overflow,
    };
    let mut kernel_checked = Instant::now();
    let mut n = 0u64;
    let mut input_error = None;
    let result: Result<(), ProducerError> = loop {
        ready.beat();
        n += 1;
        if n % 1024 == 0 {
            let c = counts(&pipeline, &source);
            synced.sync(&metrics, c.read, &c.skipped);
            synced.sync_flows(&metrics, pipeline.flow_stats());
            if is_stopped() {
                break Ok(());
            }
            if let Err(e) = publisher.check_failures() {
                break Err(e.into());
            }
            if live && kernel_checked.elapsed() >= KERNEL_DROPS_EVERY {
                kernel_checked = Instant::now();
                if let Some(d) = source.kernel_drops() {
                    metrics.kernel_dropped.record(d, &[]);
                }
            }
            if let Some(bar) = &progress {
                bar.set_position(source.position());
            }
        }
        match source.next(&is_stopped) {
            Ok(capture::Next::Frame(frame)) => {
                let emit = &mut |b: &PacketBatch| out.emit(b);
                let _ =
                    if live { pipeline.push_live(&frame, wall_clock_ns(), emit) } else { pipeline.push(&frame, emit) };
            }
            Ok(capture::Next::Idle) => {
                if is_stopped() {
                    break Ok(());
                }
                pipeline.tick(wall_clock_ns(), &mut |b: &PacketBatch| out.emit(b));
                if let Err(e) = out.pump() {
                    break Err(e.into());
                }
            }
            Ok(capture::Next::End) => break Ok(()),
            // A file that cannot be read past some point: what came before is still published and reported.
            Err(e @ CaptureError::ReadFile { .. }) => {
                tracing::error!(error = %e, "input ended early: publishing the packets read before the fault");
                input_error = Some(e.to_string());
                break Ok(());
            }
            Err(e) => break Err(e.into()),
        }
        if out.error.is_some() {
            break Ok(());
        }
    };
    ready.stop_beating();
    pipeline.finish(&mut |b: &PacketBatch| out.emit(b));
    ready.set(false);
    let counts = counts(&pipeline, &source);
    synced.sync(&metrics, counts.read, &counts.skipped);
    synced.sync_flows(&metrics, pipeline.flow_stats());
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let kernel_dropped = source.kernel_drops().unwrap_or(0);
    let paced_from = source.pace_anchor();
    drop(source);
    // Flush what was enqueued whatever happened, so acknowledged counts are final; after a shutdown, within what
    // is left of the grace. A spool is drained first, within the same time.
    let flush_timeout =
        if stop.is_cancelled() { config.flush_timeout.min(grace.remaining()) } else { config.flush_timeout };
    let flush_deadline = Instant::now() + flush_timeout;
    let outage = out.overflow.take().map(|o| o.finish(&publisher, flush_deadline)).unwrap_or_default();
    let flushed = publisher.flush(flush_deadline.saturating_duration_since(Instant::now()));
    if flushed.is_err() && publisher.unacknowledged() > 0 {
        tracing::error!(
            unflushed = publisher.unacknowledged(),
            topic = %config.topic,
            timeout = ?flush_timeout,
            "shutdown: {} records unflushed (not acknowledged by Kafka); their packets are lost",
            publisher.unacknowledged()
        );
    }
    result?;
    if let Some(e) = out.error {
        return Err(e.into());
    }
    flushed?;
    let published = publisher.stats();
    // Flushed: nothing is left to deliver, so the client's teardown need not delay the report.
    teardown.drop_in_background(publisher);
    let flows = pipeline.flow_stats();
    let report = ProducerReport {
        packets_read: counts.read,
        packets_parsed: counts.parsed,
        packets_published: published.packets,
        skipped: counts.skipped,
        batches_published: published.records,
        bytes_published: published.bytes,
        flows_evicted_idle: flows.evicted_idle,
        flows_evicted_full: flows.evicted_full,
        batches_closed_early: pipeline.batch_stats().closed_capacity,
        packets_time_skewed: counts.time_skewed,
        kernel_dropped,
        outage,
        input_error,
        duration: started.elapsed(),
        paced_from,
    };
    tracing::info!(
        read = report.packets_read,
        published = report.packets_published,
        skipped = report.skipped_total(),
        batches = report.batches_published,
        pps = report.packets_per_sec() as u64,
        "producer finished"
    );
    Ok(report)
}

/// The pipeline's frame counts plus the records the reader skipped before the pipeline saw them.
fn counts(pipeline: &Pipeline, source: &PacketSource) -> pipeline::PipelineCounts {
    let mut counts = pipeline.counts();
    for (reason, n) in source.skipped() {
        counts.read = counts.read.saturating_add(n);
        let total = counts.skipped.entry(reason.as_str()).or_default();
        *total = total.saturating_add(n);
    }
    counts
}

/// Encodes closed batches and hands them to the publisher, remembering the first send error.
struct Emitter<'a> {
    publisher: &'a Publisher,
    ids: SchemaIds,
    encoded: Vec<u8>,
    key: String,
    error: Option<PublishError>,
    tracer: opentelemetry::global::BoxedTracer,
    /// For a capture that cannot wait: where records go when Kafka does not take them.
    overflow: Option<outage::Overflow>,
}

impl Emitter<'_> {
    /// Moves spooled records to Kafka while it takes them.
    fn pump(&mut self) -> Result<(), PublishError> {
        self.overflow.as_mut().map_or(Ok(()), |o| o.pump(self.publisher))
    }

    fn emit(&mut self, batch: &PacketBatch) {
        if self.error.is_some() {
            return;
        }
        self.encoded.clear();
        batch.encode_into(&self.ids, &mut self.encoded);
        self.key.clear();
        let _ = write!(self.key, "{}", batch.source);
        let ts_ms = batch.packets.first().map_or(0, |p| p.ts_ns.div_euclid(1_000_000));
        // One PRODUCER span per record (a batch of packets, not one per packet); its context travels in the
        // record's `traceparent` header, with the sampling decision, which the downstream roles follow (none when
        // no tracer provider is installed: the span context is then invalid). The partition is chosen
        // by librdkafka after the span ends, and the key (a source address) is not recorded.
        use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _};
        let op = messaging::Operation::Publish;
        let mut attributes = messaging::attributes(op, self.publisher.topic());
        attributes.push(opentelemetry::KeyValue::new("netanom.packets", batch.packets.len() as i64));
        let mut span = self
            .tracer
            .span_builder(metrics::BATCH_SPAN)
            .with_kind(op.span_kind())
            .with_attributes(attributes)
            .start(&self.tracer);
        let headers = if span.span_context().is_valid() {
            let cx = opentelemetry::Context::current().with_remote_span_context(span.span_context().clone());
            let mut carrier = std::collections::HashMap::new();
            opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
            let mut h = rdkafka::message::OwnedHeaders::new_with_capacity(carrier.len());
            for (k, v) in &carrier {
                h = h.insert(rdkafka::message::Header { key: k, value: Some(v.as_str()) });
            }
            Some(h)
        } else {
            None
        };
        let packets = batch.packets.len();
        let sent = match &mut self.overflow {
            Some(o) => o.send(self.publisher, &self.key, &self.encoded, ts_ms, packets as u32, headers),
            None => self.publisher.send(&self.key, &self.encoded, ts_ms, packets, headers),
        };
        span.end();
        if let Err(e) = sent {
            self.error = Some(e);
        }
    }
}

fn wall_clock_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_toml_with_defaults_durations_and_speed() {
        let cfg: ProducerConfig = toml::from_str(
            r#"
            pcap = "/tmp/x.pcap"
            speed = "realtime"
            compression = "zstd"
            [batch]
            max_interval = "250ms"
            [flow]
            idle_timeout = "30s"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.speed, Speed::Realtime);
        assert_eq!(cfg.batch.max_interval, Duration::from_millis(250));
        assert_eq!(cfg.batch.max_packets, 1024);
        assert_eq!(cfg.flow.idle_timeout, Duration::from_secs(30));
        assert_eq!(cfg.topic, netanom_schemas::topics::PACKETS);
        cfg.validate().unwrap();
        let factor: ProducerConfig = toml::from_str("speed = 2.5").unwrap();
        assert_eq!(factor.speed, Speed::Factor(2.5));
    }

    #[test]
    fn config_rejects_unknown_keys_and_reports_all_problems() {
        let err = toml::from_str::<ProducerConfig>("pcap = \"x\"\nbatchsize = 3").unwrap_err().to_string();
        assert!(err.contains("batchsize"), "{err}");
        let cfg = ProducerConfig {
            pcap: Some("a.pcap".into()),
            interface: Some("eth0".into()),
            topic: String::new(),
            batch: BatchConfig { max_packets: 0, ..BatchConfig::default() },
            ..ProducerConfig::default()
        };
        let errs: Vec<String> = cfg.validate().unwrap_err().into_iter().map(|e| e.0).collect();
        assert!(errs.iter().any(|e| e.contains("producer.pcap and producer.interface")), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("producer.topic")), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("producer.batch.max_packets")), "{errs:?}");
    }
}
