//! Publishing encoded `PacketBatch` records to Kafka: an idempotent, compressing rdkafka `ThreadedProducer`
//! (its own thread polls delivery reports) whose delivery callback counts acknowledged records, packets and
//! bytes and records failures. `send` copies the payload into librdkafka and blocks (backpressure) while the
//! local queue is full. It knows nothing of packets beyond the counts it is given.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use netanom_handles::KafkaLink;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

/// Compression codecs librdkafka accepts for `compression.type`.
pub const COMPRESSIONS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

/// A publishing failure.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The producer could not be created (bad property, bad broker list).
    #[error("cannot create Kafka producer for topic {topic}: {source}")]
    Create {
        /// Topic.
        topic: String,
        /// rdkafka's error.
        source: Box<KafkaError>,
    },
    /// librdkafka refused a record.
    #[error("cannot enqueue record with key {key} for topic {topic}: {source}")]
    Send {
        /// Topic.
        topic: String,
        /// Record key.
        key: String,
        /// rdkafka's error.
        source: Box<KafkaError>,
    },
    /// Records were not acknowledged by the brokers.
    #[error("{records} records ({packets} packets) to topic {topic} failed delivery; first error: {first}")]
    Delivery {
        /// Topic.
        topic: String,
        /// Records that failed.
        records: u64,
        /// Packets in them.
        packets: u64,
        /// The first error reported.
        first: String,
    },
    /// Records were still unacknowledged when the flush timed out.
    #[error("flush of topic {topic} timed out after {timeout:?} with {pending} records unacknowledged")]
    FlushTimeout {
        /// Topic.
        topic: String,
        /// Flush timeout.
        timeout: Duration,
        /// Records still in flight.
        pending: i32,
    },
}

/// Acknowledged traffic so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishStats {
    /// Records acknowledged.
    pub records: u64,
    /// Packets in acknowledged records.
    pub packets: u64,
    /// Payload bytes of acknowledged records (before compression).
    pub bytes: u64,
    /// Records that failed delivery.
    pub failed_records: u64,
    /// Packets in failed records.
    pub failed_packets: u64,
}

/// Delivery-report bookkeeping; the delivery opaque of each record packs its packet count (low 32 bits) and
/// its enqueue time in microseconds since `epoch` (high 32 bits, wrapping every ~71 minutes: latencies are
/// computed modulo that), so no allocation is needed per record.
#[derive(Debug, Default)]
pub struct DeliveryCounter {
    metrics: Option<crate::metrics::Metrics>,
    epoch: Option<Instant>,
    records: AtomicU64,
    packets: AtomicU64,
    bytes: AtomicU64,
    failed_records: AtomicU64,
    failed_packets: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Where broker reachability is reported (for `/readyz`), once [`Publisher::watch`] is called.
    link: OnceLock<KafkaLink>,
    log: netanom_handles::kafka_log::KafkaLog,
}

impl ClientContext for DeliveryCounter {
    fn stats(&self, statistics: rdkafka::Statistics) {
        if let Some(link) = self.link.get() {
            link.observe_stats(&statistics);
        }
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.log.log_line(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(link) = self.link.get() {
            link.observe_error(&error, reason);
        }
        self.log.error_line(&error, reason);
    }
}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let packets = opaque & 0xFFFF_FFFF;
        if let (Some(m), Some(epoch)) = (&self.metrics, self.epoch) {
            let sent = (opaque >> 32) as u32;
            let latency_us = micros_since(epoch).wrapping_sub(sent);
            m.publish_latency.record(f64::from(latency_us) / 1e6, &[]);
            if result.is_ok() {
                m.batches_published.add(1, &[]);
                m.packets_published.add(packets as u64, &[]);
            } else {
                m.publish_failed.add(1, &[]);
            }
        }
        match result {
            Ok(msg) => {
                self.records.fetch_add(1, Ordering::Relaxed);
                self.packets.fetch_add(packets as u64, Ordering::Relaxed);
                self.bytes.fetch_add(msg.payload_len() as u64, Ordering::Relaxed);
            }
            Err((err, msg)) => {
                self.failed_records.fetch_add(1, Ordering::Relaxed);
                self.failed_packets.fetch_add(packets as u64, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
                if first.is_none() {
                    let key = msg.key().map(String::from_utf8_lossy).unwrap_or_default();
                    *first = Some(format!("{err} (partition {}, key {key})", msg.partition()));
                }
                tracing::warn!(topic = msg.topic(), error = %err, "packet batch delivery failed");
            }
        }
    }
}

/// Microseconds since `epoch`, truncated to 32 bits.
fn micros_since(epoch: Instant) -> u32 {
    epoch.elapsed().as_micros() as u32
}

/// Whether [`Publisher::try_send`] enqueued a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// In librdkafka's queue.
    Queued,
    /// The queue is full; nothing was enqueued.
    Full,
}

/// The Kafka side of the producer.
pub struct Publisher {
    producer: ThreadedProducer<DeliveryCounter>,
    topic: String,
    enqueued: AtomicU64,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("topic", &self.topic).finish()
    }
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

/// The librdkafka properties the publisher sets before applying user overrides.
pub fn base_properties(brokers: &str, compression: &str) -> BTreeMap<String, String> {
    [
        ("bootstrap.servers", brokers),
        ("enable.idempotence", "true"),
        ("compression.type", compression),
        ("linger.ms", "20"),
        ("batch.size", "1000000"),
        ("batch.num.messages", "10000"),
        ("queue.buffering.max.messages", "1000000"),
        ("queue.buffering.max.kbytes", "1048576"),
        ("message.timeout.ms", "60000"),
        ("statistics.interval.ms", netanom_handles::STATS_INTERVAL_MS),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl Publisher {
    /// Creates the producer. `properties` are extra librdkafka properties applied last (they override the
    /// defaults of [`base_properties`]).
    pub fn new(
        brokers: &str,
        properties: &BTreeMap<String, String>,
        compression: &str,
        topic: &str,
    ) -> Result<Self, PublishError> {
        let mut config = ClientConfig::new();
        for (k, v) in base_properties(brokers, compression).iter().chain(properties) {
            config.set(k, v);
        }
        let producer = config
            .create_with_context(DeliveryCounter {
                metrics: Some(crate::metrics::Metrics::new()),
                epoch: Some(Instant::now()),
                ..DeliveryCounter::default()
            })
            .map_err(redacted)
            .map_err(|source| PublishError::Create { topic: topic.to_string(), source: Box::new(source) })?;
        Ok(Self { producer, topic: topic.to_string(), enqueued: AtomicU64::new(0) })
    }

    /// Reports whether the producer reaches a broker to `link` from now on (its statistics and errors).
    pub fn watch(&self, link: KafkaLink) {
        let _ = self.producer.context().link.set(link);
    }

    /// Records enqueued and not yet acknowledged or failed.
    pub fn unacknowledged(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Enqueues one record without blocking: [`Sent::Full`] when librdkafka's queue is full.
    pub fn try_send(
        &self,
        key: &str,
        payload: &[u8],
        timestamp_ms: i64,
        packets: usize,
        headers: Option<OwnedHeaders>,
    ) -> Result<Sent, PublishError> {
        self.enqueue(key, payload, timestamp_ms, packets, headers, false)
    }

    /// Serves delivery reports for up to `timeout` (the producer's own thread does this too; this lets a caller
    /// wait for queue room).
    pub fn poll(&self, timeout: Duration) {
        self.producer.poll(timeout);
    }

    /// Enqueues one record carrying `packets` packets (with `headers`, e.g. `traceparent`); blocks while
    /// librdkafka's queue is full.
    pub fn send(
        &self,
        key: &str,
        payload: &[u8],
        timestamp_ms: i64,
        packets: usize,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), PublishError> {
        self.enqueue(key, payload, timestamp_ms, packets, headers, true).map(|_| ())
    }

    fn enqueue(
        &self,
        key: &str,
        payload: &[u8],
        timestamp_ms: i64,
        packets: usize,
        headers: Option<OwnedHeaders>,
        wait: bool,
    ) -> Result<Sent, PublishError> {
        let sent = self.producer.context().epoch.map_or(0, micros_since) as usize;
        let opaque = (packets & 0xFFFF_FFFF) | (sent << 32);
        let mut record =
            BaseRecord::with_opaque_to(&self.topic, opaque).key(key).payload(payload).timestamp(timestamp_ms);
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.enqueued.fetch_add(1, Ordering::Relaxed);
                    return Ok(Sent::Queued);
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) if !wait => return Ok(Sent::Full),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((source, _)) => {
                    return Err(PublishError::Send {
                        topic: self.topic.clone(),
                        key: key.to_string(),
                        source: Box::new(source),
                    });
                }
            }
        }
    }

    /// Acknowledged and failed traffic so far.
    pub fn stats(&self) -> PublishStats {
        let c = self.producer.context();
        PublishStats {
            records: c.records.load(Ordering::Relaxed),
            packets: c.packets.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            failed_records: c.failed_records.load(Ordering::Relaxed),
            failed_packets: c.failed_packets.load(Ordering::Relaxed),
        }
    }

    /// The delivery failure so far, if any.
    pub fn check_failures(&self) -> Result<(), PublishError> {
        let s = self.stats();
        if s.failed_records == 0 {
            return Ok(());
        }
        let first = self.producer.context().first_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Err(PublishError::Delivery {
            topic: self.topic.clone(),
            records: s.failed_records,
            packets: s.failed_packets,
            first: first.unwrap_or_default(),
        })
    }

    /// Waits until every enqueued record is acknowledged (or failed), then reports failures.
    pub fn flush(&self, timeout: Duration) -> Result<(), PublishError> {
        if self.producer.flush(timeout).is_err() {
            // Let delivery reports of the last moment be counted before judging.
            self.producer.poll(Duration::from_millis(10));
            self.check_failures()?;
            return Err(PublishError::FlushTimeout {
                topic: self.topic.clone(),
                timeout,
                pending: self.producer.in_flight_count(),
            });
        }
        // The polling thread may still be inside the last delivery callbacks: wait (bounded) until every
        // enqueued record is accounted for.
        let enqueued = self.enqueued.load(Ordering::Relaxed);
        for _ in 0..1000 {
            let s = self.stats();
            if s.records + s.failed_records >= enqueued {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.check_failures()
    }
}
