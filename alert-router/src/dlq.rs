//! Re-delivery of parked alerts (`netanom dlq replay`): reads the dead-letter topic from its beginning up to its
//! high watermarks at the start (without a consumer group: nothing is committed), takes the records a
//! destination parked (those with the `netanom-dlq-destination` header, naming `only` when given), and delivers
//! each again to the destination it names, with that destination's retry policy and circuit breaker. An alert
//! refused again is parked again (a new dead-letter record, after the watermarks read at the start, so one
//! replay never sees it twice). The `webhook-id` is the alert's, as on the first attempt, so a receiver that got
//! an alert already deduplicates it.

use std::collections::HashMap;
use std::time::Duration;

use netanom_schemas::topics;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset};

use crate::destination::{self, Destination};
use crate::{RouterConfig, RouterError};

/// How long to wait for the next record before concluding the topic has no more below the watermarks.
const IDLE: Duration = Duration::from_secs(10);

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Parked alerts found for the chosen destinations.
    pub found: u64,
    /// Delivered this time.
    pub delivered: u64,
    /// Refused again (parked again).
    pub parked_again: u64,
    /// Records naming a destination that is not configured (left as they are).
    pub unknown_destination: u64,
}

/// Re-delivers the alerts parked on `config.dead_letter_topic` by the destination named `only` (every
/// destination when `None`). See the module documentation.
pub async fn replay(config: &RouterConfig, only: Option<&str>) -> Result<ReplayReport, RouterError> {
    config.validate().map_err(RouterError::Config)?;
    let destinations: HashMap<String, Destination> =
        destination::destinations(config)?.into_iter().map(|d| (d.name().to_string(), d)).collect();
    if let Some(name) = only.filter(|n| !destinations.contains_key(*n)) {
        let mut known: Vec<&String> = destinations.keys().collect();
        known.sort();
        return Err(RouterError::Task(format!("no destination named {name:?} is configured (configured: {known:?})")));
    }
    let producer = destination::dead_letter_producer(config)?;
    let (brokers, topic, props) =
        (config.brokers.clone(), config.dead_letter_topic.clone(), config.kafka_properties.clone());
    let records = tokio::task::spawn_blocking(move || read_all(&brokers, &topic, &props))
        .await
        .map_err(|e| RouterError::Task(e.to_string()))??;
    let mut report = ReplayReport::default();
    for m in &records {
        let named = m
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == topics::DLQ_DESTINATION_HEADER).and_then(|h| h.value))
            .map(|v| String::from_utf8_lossy(v).into_owned());
        let Some(name) = named else { continue };
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let Some(d) = destinations.get(&name) else {
            report.unknown_destination += 1;
            continue;
        };
        report.found += 1;
        match destination::redeliver(d, &producer, &config.dead_letter_topic, m).await? {
            true => report.delivered += 1,
            false => report.parked_again += 1,
        }
    }
    tracing::info!(?report, "dead-letter replay finished");
    Ok(report)
}

/// Every record of `topic` below its high watermarks at the start.
fn read_all(
    brokers: &str,
    topic: &str,
    props: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<rdkafka::message::OwnedMessage>, RouterError> {
    let kafka = |what: &str| {
        let what = format!("{what} {topic}");
        move |source| RouterError::Kafka { what, source: Box::new(source) }
    };
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers).set("enable.auto.commit", "false").set("group.id", "netanom-dlq-replay");
    for (k, v) in props {
        c.set(k, v);
    }
    let consumer: BaseConsumer = c.create().map_err(kafka("creating a reader of"))?;
    let tpl = destination::every_partition(&consumer, topic, Offset::Beginning)?;
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    for e in tpl.elements() {
        let (_, high) = consumer
            .fetch_watermarks(topic, e.partition(), Duration::from_secs(10))
            .map_err(kafka("reading the watermarks of"))?;
        if high > 0 {
            remaining.insert(e.partition(), high);
        }
    }
    consumer.assign(&tpl).map_err(kafka("assigning"))?;
    let mut out = Vec::new();
    while !remaining.is_empty() {
        match consumer.poll(IDLE) {
            Some(Ok(m)) => {
                let (p, o) = (m.partition(), m.offset());
                if remaining.get(&p).is_some_and(|h| o < *h) {
                    out.push(m.detach());
                }
                if remaining.get(&p).is_some_and(|h| o + 1 >= *h) {
                    remaining.remove(&p);
                }
            }
            Some(Err(e)) => return Err(kafka("reading")(e)),
            None => break,
        }
    }
    Ok(out)
}
