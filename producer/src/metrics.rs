//! The producer's OpenTelemetry instruments, created once per [`crate::run`] from `global::meter("netanom")`,
//! and its readiness flag. Only the API crate is used: without an installed SDK every instrument is a no-op.
//! Labels are low-cardinality (a skip reason), never an address.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram};

/// Name of the trace span of one published packet batch.
pub const BATCH_SPAN: &str = "producer.batch";

/// The producer's instruments.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `netanom.producer.packets.read`: frames read from the capture.
    pub packets_read: Counter<u64>,
    /// `netanom.producer.packets.skipped{reason}`: frames not published, by reason.
    pub packets_skipped: Counter<u64>,
    /// `netanom.producer.batches.published`: packet-batch records acknowledged by Kafka.
    pub batches_published: Counter<u64>,
    /// `netanom.producer.packets.published`: packets in acknowledged records.
    pub packets_published: Counter<u64>,
    /// `netanom.producer.publish.failed`: records that failed delivery.
    pub publish_failed: Counter<u64>,
    /// `netanom.producer.publish.duration` (s): from enqueueing a record to its acknowledgement.
    pub publish_latency: Histogram<f64>,
    /// `netanom.producer.outage.dropped{reason}`: packets of a capture that cannot wait dropped because Kafka
    /// did not take them (`queue_full`, `spool_full`, `spool_error`).
    pub outage_dropped: Counter<u64>,
    /// `netanom.producer.spool.bytes`: size of the spool file.
    pub spool_bytes: Gauge<u64>,
    /// `netanom.producer.spool.records`: records in the spool not yet handed to Kafka.
    pub spool_records: Gauge<u64>,
    /// `netanom.producer.kernel.dropped`: packets the kernel or interface dropped so far (live capture).
    pub kernel_dropped: Gauge<u64>,
    /// `netanom.producer.flows.bytes`: bytes the flow table holds, at most `producer.flow.memory_budget_mib`.
    pub flows_bytes: Gauge<u64>,
    /// `netanom.producer.evictions{table,reason}`: entries removed, by table (`flows`) and reason (`idle`: idle or
    /// closed past its timeout; `full`: live, least recently seen, the table full).
    pub evictions: Counter<u64>,
}

impl Metrics {
    /// Creates the instruments on the global meter provider.
    pub fn new() -> Self {
        let m = opentelemetry::global::meter("netanom");
        Self {
            packets_read: m
                .u64_counter("netanom.producer.packets.read")
                .with_description("Frames read from the capture")
                .build(),
            packets_skipped: m
                .u64_counter("netanom.producer.packets.skipped")
                .with_description("Frames not published, by reason")
                .build(),
            batches_published: m
                .u64_counter("netanom.producer.batches.published")
                .with_description("Packet-batch records acknowledged by Kafka")
                .build(),
            packets_published: m
                .u64_counter("netanom.producer.packets.published")
                .with_description("Packets in acknowledged packet-batch records")
                .build(),
            publish_failed: m
                .u64_counter("netanom.producer.publish.failed")
                .with_description("Packet-batch records that failed delivery")
                .build(),
            publish_latency: m
                .f64_histogram("netanom.producer.publish.duration")
                .with_unit("s")
                .with_description("Time from enqueueing a packet-batch record to its acknowledgement")
                .with_boundaries(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
                .build(),
            outage_dropped: m
                .u64_counter("netanom.producer.outage.dropped")
                .with_description("Packets dropped because Kafka did not take them, by reason")
                .build(),
            spool_bytes: m
                .u64_gauge("netanom.producer.spool.bytes")
                .with_unit("By")
                .with_description("Size of the outage spool file")
                .build(),
            spool_records: m
                .u64_gauge("netanom.producer.spool.records")
                .with_description("Records in the outage spool not yet handed to Kafka")
                .build(),
            kernel_dropped: m
                .u64_gauge("netanom.producer.kernel.dropped")
                .with_description("Packets the kernel or interface dropped so far (live capture)")
                .build(),
            flows_bytes: m
                .u64_gauge("netanom.producer.flows.bytes")
                .with_unit("By")
                .with_description("Bytes the flow table holds")
                .build(),
            evictions: m
                .u64_counter("netanom.producer.evictions")
                .with_description("Entries removed, by table and reason (idle, full)")
                .build(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Adds the growth of the pipeline's read and skipped counts since the last call to the counters.
#[derive(Debug, Default)]
pub struct CountSync {
    read: u64,
    skipped: std::collections::BTreeMap<&'static str, u64>,
    flows: crate::flow::FlowStats,
}

impl CountSync {
    /// Reports `read` and `skipped` (running totals) as deltas.
    pub fn sync(&mut self, m: &Metrics, read: u64, skipped: &std::collections::BTreeMap<&'static str, u64>) {
        if read > self.read {
            m.packets_read.add(read - self.read, &[]);
            self.read = read;
        }
        for (reason, n) in skipped {
            let last = self.skipped.entry(reason).or_default();
            if *n > *last {
                m.packets_skipped.add(n - *last, &[KeyValue::new("reason", *reason)]);
                *last = *n;
            }
        }
    }

    /// Reports the flow table's bytes, and its evictions (running totals) as deltas.
    pub fn sync_flows(&mut self, m: &Metrics, flows: crate::flow::FlowStats) {
        m.flows_bytes.record(flows.bytes as u64, &[]);
        for (reason, now, before) in [
            ("idle", flows.evicted_idle, self.flows.evicted_idle),
            ("full", flows.evicted_full, self.flows.evicted_full),
        ] {
            if now > before {
                m.evictions.add(now - before, &[KeyValue::new("table", "flows"), KeyValue::new("reason", reason)]);
            }
        }
        self.flows = flows;
    }
}
