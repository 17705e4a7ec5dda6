//! The OpenTelemetry messaging semantic conventions every role's spans follow: span kind PRODUCER for a span
//! that publishes one Kafka record, CONSUMER for one that receives or processes consumed records, and the
//! `messaging.*` attributes of each. Record keys are never recorded (`messaging.kafka.message.key`): a
//! packets-topic key is a source address. Only builds attributes; starting and ending spans is the roles' work.

use opentelemetry::KeyValue;

/// `messaging.system`.
pub const SYSTEM: &str = "messaging.system";
/// `messaging.destination.name`: the topic.
pub const DESTINATION: &str = "messaging.destination.name";
/// `messaging.operation.type`: `publish`, `receive` or `process`.
pub const OPERATION: &str = "messaging.operation.type";
/// `messaging.destination.partition.id`.
pub const PARTITION: &str = "messaging.destination.partition.id";
/// `messaging.kafka.offset`.
pub const OFFSET: &str = "messaging.kafka.offset";
/// `messaging.consumer.group.name`.
pub const GROUP: &str = "messaging.consumer.group.name";
/// `messaging.batch.message_count`: records a span covers, when more than one.
pub const MESSAGE_COUNT: &str = "messaging.batch.message_count";

/// What a span does with records (`messaging.operation.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Sends a record (span kind PRODUCER).
    Publish,
    /// Takes records from the broker (span kind CONSUMER).
    Receive,
    /// Handles consumed records (span kind CONSUMER).
    Process,
}

impl Operation {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Publish => "publish",
            Operation::Receive => "receive",
            Operation::Process => "process",
        }
    }

    /// The span kind of a span doing it.
    pub fn span_kind(self) -> opentelemetry::trace::SpanKind {
        match self {
            Operation::Publish => opentelemetry::trace::SpanKind::Producer,
            Operation::Receive | Operation::Process => opentelemetry::trace::SpanKind::Consumer,
        }
    }
}

/// The attributes of a span that does `operation` on `topic`.
pub fn attributes(operation: Operation, topic: &str) -> Vec<KeyValue> {
    vec![
        KeyValue::new(SYSTEM, "kafka"),
        KeyValue::new(DESTINATION, topic.to_string()),
        KeyValue::new(OPERATION, operation.as_str()),
    ]
}

/// The attributes naming one consumed record: its partition (as a string, as the convention says) and offset.
pub fn record(partition: i32, offset: i64) -> [KeyValue; 2] {
    [KeyValue::new(PARTITION, partition.to_string()), KeyValue::new(OFFSET, offset)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_is_a_producer_span_and_the_others_consumer_spans() {
        use opentelemetry::trace::SpanKind;
        assert_eq!(Operation::Publish.span_kind(), SpanKind::Producer);
        assert_eq!(Operation::Receive.span_kind(), SpanKind::Consumer);
        assert_eq!(Operation::Process.span_kind(), SpanKind::Consumer);
        let a = attributes(Operation::Process, "anomalies");
        let get = |k: &str| a.iter().find(|kv| kv.key.as_str() == k).map(|kv| kv.value.to_string());
        assert_eq!(get(SYSTEM).as_deref(), Some("kafka"));
        assert_eq!(get(DESTINATION).as_deref(), Some("anomalies"));
        assert_eq!(get(OPERATION).as_deref(), Some("process"));
        let [p, o] = record(3, 42);
        assert_eq!((p.value.to_string(), o.value.to_string()), ("3".to_string(), "42".to_string()));
    }
}
