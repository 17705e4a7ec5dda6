//! The router's OpenTelemetry instruments, created once per [`crate::run`] from `global::meter("netanom")`,
//! its readiness flag, and the trace-context helpers (W3C `traceparent` in Kafka record headers and webhook
//! requests). Only the API crate is used: without an installed SDK every instrument is a no-op and no header is
//! written. Labels are low-cardinality (sink, outcome), never an address.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram};
use opentelemetry::propagation::{Extractor, Injector};
use rdkafka::message::{Header, Headers, OwnedHeaders};

/// Name of the span of one alert's delivery (child of the anomaly that opened it, linked to the others).
pub const ALERT_SPAN: &str = "router.alert";

/// Sink label values.
pub mod sink {
    /// The alerts topic.
    pub const TOPIC: &str = "topic";
    /// A webhook.
    pub const WEBHOOK: &str = "webhook";
    /// The syslog receiver.
    pub const SYSLOG: &str = "syslog";
    /// The alerts-out file.
    pub const FILE: &str = "file";
}

/// The router's instruments.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `netanom.router.anomalies.consumed`: anomaly records consumed.
    pub anomalies_consumed: Counter<u64>,
    /// `netanom.router.alerts{sink,outcome}`: alert deliveries by sink (topic, webhook, syslog, file) and
    /// outcome (ok, failed).
    pub alerts: Counter<u64>,
    /// `netanom.router.anomalies.duplicate`: anomalies dropped because their id was already accounted for.
    pub duplicates: Counter<u64>,
    /// `netanom.router.dead_lettered`: records sent to the dead-letter topic (poison anomalies, refused alerts).
    pub dead_lettered: Counter<u64>,
    /// `netanom.router.delivery.duration` (s): time to publish one alert to the alerts topic (the destinations
    /// deliver from there at their own pace; their circuit breakers are the gauge
    /// `netanom.router.destination.breaker`, see `breaker`).
    pub delivery_latency: Histogram<f64>,
    /// `netanom.router.suppression.bytes`: bytes the open suppression windows hold (see `crate::budget`), at
    /// most the suppression share of `alert_router.memory_budget_mib`.
    pub suppression_bytes: Gauge<u64>,
    /// `netanom.router.incidents.bytes`: bytes the open incidents hold, at most the incident share.
    pub incidents_bytes: Gauge<u64>,
    /// `netanom.router.dedup.bytes`: bytes the remembered anomaly ids hold, at most the dedup share.
    pub dedup_bytes: Gauge<u64>,
    /// `netanom.router.evictions{table,reason}`: entries given up early, by table (`suppression_groups`: emitted
    /// early; `incidents`: closed early; `dedup_ids`: forgotten) and reason (`capacity`: the table's count bound,
    /// `budget`: its byte share).
    pub evictions: Counter<u64>,
}

impl Metrics {
    /// Creates the instruments on the global meter provider.
    pub fn new() -> Self {
        let m = opentelemetry::global::meter("netanom");
        Self {
            anomalies_consumed: m
                .u64_counter("netanom.router.anomalies.consumed")
                .with_description("Anomaly records consumed")
                .build(),
            alerts: m
                .u64_counter("netanom.router.alerts")
                .with_description("Alert deliveries by sink and outcome")
                .build(),
            duplicates: m
                .u64_counter("netanom.router.anomalies.duplicate")
                .with_description("Anomalies dropped because their id was already accounted for")
                .build(),
            dead_lettered: m
                .u64_counter("netanom.router.dead_lettered")
                .with_description("Records sent to the dead-letter topic")
                .build(),
            delivery_latency: m
                .f64_histogram("netanom.router.delivery.duration")
                .with_unit("s")
                .with_description("Time to publish one alert to the alerts topic")
                .with_boundaries(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
                .build(),
            suppression_bytes: m
                .u64_gauge("netanom.router.suppression.bytes")
                .with_unit("By")
                .with_description("Bytes the open suppression windows hold")
                .build(),
            incidents_bytes: m
                .u64_gauge("netanom.router.incidents.bytes")
                .with_unit("By")
                .with_description("Bytes the open incidents hold")
                .build(),
            dedup_bytes: m
                .u64_gauge("netanom.router.dedup.bytes")
                .with_unit("By")
                .with_description("Bytes the remembered anomaly ids hold")
                .build(),
            evictions: m
                .u64_counter("netanom.router.evictions")
                .with_description("Entries given up early, by table and reason (capacity, budget)")
                .build(),
        }
    }

    /// Counts `n` evictions from `table` for `reason`.
    pub fn evicted(&self, table: &'static str, reason: &'static str, n: u64) {
        if n > 0 {
            self.evictions.add(n, &[KeyValue::new("table", table), KeyValue::new("reason", reason)]);
        }
    }

    /// Counts `n` deliveries to `sink` with `ok` or `failed`.
    pub fn alert(&self, sink: &'static str, ok: bool, n: u64) {
        if n > 0 {
            let outcome = if ok { "ok" } else { "failed" };
            self.alerts.add(n, &[KeyValue::new("sink", sink), KeyValue::new("outcome", outcome)]);
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

/// Collects injected trace-context headers as (name, value) pairs.
#[derive(Debug, Default)]
pub struct Carrier(pub Vec<(String, String)>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}

/// The trace-context headers of `cx` (empty when it has no valid span).
pub fn carrier(cx: &opentelemetry::Context) -> Carrier {
    let mut c = Carrier::default();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(cx, &mut c));
    c
}

/// The span context of a record's `traceparent` header, if it has a valid one.
pub fn extract<H: Headers>(headers: Option<&H>) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::trace::TraceContextExt as _;
    let headers = headers?;
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// `headers` plus the trace-context headers of `cx`.
pub fn inject(cx: &opentelemetry::Context, headers: Option<OwnedHeaders>) -> Option<OwnedHeaders> {
    let c = carrier(cx);
    if c.0.is_empty() {
        return headers;
    }
    let mut h = headers.unwrap_or_else(|| OwnedHeaders::new_with_capacity(c.0.len()));
    for (k, v) in &c.0 {
        h = h.insert(Header { key: k, value: Some(v.as_str()) });
    }
    Some(h)
}
