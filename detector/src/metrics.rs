//! The detector's OpenTelemetry instruments, created once per [`crate::run`] from `global::meter("netanom")`,
//! its readiness flag, and the trace-context helpers (W3C `traceparent` in Kafka record headers). Only the API
//! crate is used: without an installed SDK every instrument is a no-op and no header is written. Labels are
//! low-cardinality (anomaly kind, topic), never an address.

use opentelemetry::metrics::{Counter, Gauge, Histogram};
use opentelemetry::propagation::{Extractor, Injector};
use rdkafka::message::{Header, Headers, OwnedHeaders};

/// Name of the span of one processed chunk (linked to the context of every record in it).
pub const CHUNK_SPAN: &str = "detector.chunk";
/// Name of the span of one emitted anomaly (child of the packet batch that raised it).
pub const ANOMALY_SPAN: &str = "detector.anomaly";

/// The detector's instruments.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `netanom.detector.records.consumed`: packet-batch and destination-statistics records consumed.
    pub records_consumed: Counter<u64>,
    /// `netanom.detector.records.rebuilt`: records read again for state only after a rebalance moved their
    /// partition here (also counted in `records.consumed`).
    pub records_rebuilt: Counter<u64>,
    /// `netanom.detector.packets.processed`: packets examined.
    pub packets_processed: Counter<u64>,
    /// `netanom.detector.anomalies{kind}`: anomalies emitted, by kind (rate, fanout, isolation, victim, profile, supervised, beacon).
    pub anomalies: Counter<u64>,
    /// `netanom.detector.dead_lettered`: poison records sent to the dead-letter topic.
    pub dead_lettered: Counter<u64>,
    /// `netanom.detector.hosts.tracked`: hosts in the per-host state map.
    pub hosts_tracked: Gauge<u64>,
    /// `netanom.detector.hosts.evicted`: hosts evicted from the full state map.
    pub hosts_evicted: Counter<u64>,
    /// `netanom.detector.hosts.bytes`: bytes the per-host state map holds (see `crate::state`), at most
    /// `detector.state.memory_budget_mib`.
    pub hosts_bytes: Gauge<u64>,
    /// `netanom.detector.victim.bytes{side}`: bytes the victim tables hold, by side (`source`: the producing
    /// side's entries and their sources; `destination`: the consuming side's sums), together at most
    /// `detector.state.memory_budget_mib` / 8.
    pub victim_bytes: Gauge<u64>,
    /// `netanom.detector.evictions{table,reason}`: entries evicted, by table and reason: `hosts` (`idle`,
    /// `capacity`, `capacity_suspicious`), `victim_sources` (`age`, `capacity`, `budget`) and
    /// `victim_destinations` (`age`, `capacity`); see `crate::victim::VictimTables`.
    pub evictions: Counter<u64>,
    /// `netanom.detector.victim.closed{reason}`: closing updates of victim anomalies, by why the window closed
    /// (`complete`, `drained`, `aged_out`, `evicted`; see `crate::victim::CLOSE_REASONS`).
    pub victim_closed: Counter<u64>,
    /// `netanom.detector.chunk.duration` (s): processing time of one chunk, produce and acknowledgements included.
    pub chunk_latency: Histogram<f64>,
    /// `netanom.detector.consumer.lag{topic}`: high watermark minus position, summed over assigned partitions.
    pub consumer_lag: Gauge<i64>,
    /// `netanom.detector.model.generation`: generation of the isolation model in force (1 at warm-up, +1 per
    /// retraining).
    pub model_generation: Gauge<u64>,
}

impl Metrics {
    /// Creates the instruments on the global meter provider.
    pub fn new() -> Self {
        let m = opentelemetry::global::meter("netanom");
        Self {
            records_consumed: m
                .u64_counter("netanom.detector.records.consumed")
                .with_description("Packet-batch and destination-statistics records consumed")
                .build(),
            records_rebuilt: m
                .u64_counter("netanom.detector.records.rebuilt")
                .with_description("Records read again for state only after a rebalance moved their partition here")
                .build(),
            packets_processed: m
                .u64_counter("netanom.detector.packets.processed")
                .with_description("Packets examined")
                .build(),
            anomalies: m
                .u64_counter("netanom.detector.anomalies")
                .with_description("Anomalies emitted, by kind")
                .build(),
            dead_lettered: m
                .u64_counter("netanom.detector.dead_lettered")
                .with_description("Poison records sent to the dead-letter topic")
                .build(),
            hosts_tracked: m
                .u64_gauge("netanom.detector.hosts.tracked")
                .with_description("Hosts in the per-host state map")
                .build(),
            victim_bytes: m
                .u64_gauge("netanom.detector.victim.bytes")
                .with_description("Bytes the victim tables hold, by side")
                .build(),
            hosts_evicted: m
                .u64_counter("netanom.detector.hosts.evicted")
                .with_description("Hosts evicted from the full per-host state map")
                .build(),
            hosts_bytes: m
                .u64_gauge("netanom.detector.hosts.bytes")
                .with_unit("By")
                .with_description("Bytes the per-host state map holds (table and hosts' heap)")
                .build(),
            evictions: m
                .u64_counter("netanom.detector.evictions")
                .with_description("Entries evicted, by table and reason (idle, capacity, capacity_suspicious)")
                .build(),
            victim_closed: m
                .u64_counter("netanom.detector.victim.closed")
                .with_description("Closing updates of victim anomalies, by why the window closed")
                .build(),
            chunk_latency: m
                .f64_histogram("netanom.detector.chunk.duration")
                .with_unit("s")
                .with_description("Processing time of one chunk of records, produce and acknowledgements included")
                .with_boundaries(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
                .build(),
            consumer_lag: m
                .i64_gauge("netanom.detector.consumer.lag")
                .with_description("High watermark minus position, summed over the assigned partitions of a topic")
                .build(),
            model_generation: m
                .u64_gauge("netanom.detector.model.generation")
                .with_description("Generation of the isolation model in force (1 at warm-up, +1 per retraining)")
                .build(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads W3C trace-context headers from a Kafka record.
pub struct HeaderExtractor<'a, H: Headers>(pub &'a H);

impl<H: Headers> Extractor for HeaderExtractor<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(key))
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key).collect()
    }
}

/// Collects injected trace-context headers.
#[derive(Default)]
struct Carrier(Vec<(String, String)>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}

/// The context of a record's `traceparent` header, if it has a valid one.
pub fn extract<H: Headers>(headers: Option<&H>) -> Option<opentelemetry::Context> {
    use opentelemetry::trace::TraceContextExt as _;
    let headers = headers?;
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    cx.span().span_context().is_valid().then_some(cx)
}

/// `headers` plus the trace-context headers of `cx` (unchanged when `cx` has no valid span).
pub fn inject(cx: &opentelemetry::Context, headers: Option<OwnedHeaders>) -> Option<OwnedHeaders> {
    let mut carrier = Carrier::default();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(cx, &mut carrier));
    if carrier.0.is_empty() {
        return headers;
    }
    let mut h = headers.unwrap_or_else(|| OwnedHeaders::new_with_capacity(carrier.0.len()));
    for (k, v) in &carrier.0 {
        h = h.insert(Header { key: k, value: Some(v.as_str()) });
    }
    Some(h)
}
