//! A real librdkafka producer whose broker is unreachable for 10 s, reconnecting every 100 ms, writes its
//! errors through [`KafkaLog`]: librdkafka calls back on every failed attempt, the log gets a few lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netanom_handles::kafka_log::KafkaLog;
use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};

/// Counts the callbacks librdkafka makes, then hands them to the limiter.
#[derive(Default)]
struct Counting {
    callbacks: AtomicU64,
    log: KafkaLog,
}

impl ClientContext for Counting {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if (level as u8) <= RDKafkaLogLevel::Warning as u8 {
            self.callbacks.fetch_add(1, Ordering::Relaxed);
        }
        self.log.log_line(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.callbacks.fetch_add(1, Ordering::Relaxed);
        self.log.error_line(&error, reason);
    }
}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn an_unreachable_broker_writes_a_bounded_number_of_lines() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let producer: BaseProducer<Counting> = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "100")
        .set("message.timeout.ms", "60000")
        .create_with_context(Counting::default())
        .unwrap();
    producer.send(BaseRecord::<(), _>::to("t").payload("x")).unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        producer.poll(Duration::from_millis(100));
    }
    let callbacks = producer.context().callbacks.load(Ordering::Relaxed);
    let during: Vec<String> =
        String::from_utf8_lossy(&captured.0.lock().unwrap()).lines().map(str::to_string).collect();
    producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
    drop(producer);
    let after: Vec<String> = String::from_utf8_lossy(&captured.0.lock().unwrap()).lines().map(str::to_string).collect();

    eprintln!("{callbacks} librdkafka errors and warnings, {} lines while down, {} in all", during.len(), after.len());
    assert!(callbacks >= 30, "librdkafka reported {callbacks} errors and warnings in 10 s, expected many");
    assert!(!during.is_empty(), "the first error is written");
    assert!(during.len() <= 6, "{} lines for {callbacks} callbacks:\n{}", during.len(), during.join("\n"));
    // Dropping the client writes what was held back, as counts.
    let counts: Vec<&String> = after[during.len()..].iter().filter(|l| l.contains("times in the last 30 s")).collect();
    assert!(!counts.is_empty(), "held-back repeats are written as a count on drop:\n{}", after.join("\n"));
    assert!(after.len() <= 12, "{} lines in all:\n{}", after.len(), after.join("\n"));
}
