//! The embedded Kafka broker of `netanom run` (librdkafka's in-process mock cluster) and every workaround it
//! needs, in one place: waking its thread during control operations, the role settings that only cost time
//! against an in-process broker, and stopping it only once no client talks to it. Nothing outside this module
//! knows the broker is a mock.

use std::time::Duration;

use anyhow::Context;
use rdkafka::mocking::MockCluster;

use crate::config::Config;

/// A running embedded broker with every topic of `[topics]` created.
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker").field("bootstrap_servers", &self.bootstrap_servers()).finish()
    }
}

impl EmbeddedBroker {
    /// Starts the broker and creates every topic with `kafka.embedded_partitions` partitions (the models topic
    /// with one).
    pub fn start(cfg: &Config) -> anyhow::Result<Self> {
        let cluster = MockCluster::new(1).context("cannot start the embedded Kafka broker")?;
        let t = &cfg.topics;
        let bootstrap = cluster.bootstrap_servers();
        with_broker_wakeups(&bootstrap, || {
            for topic in [&t.packets, &t.destinations, &t.anomalies, &t.alerts, &t.dead_letter] {
                cluster
                    .create_topic(topic, cfg.kafka.embedded_partitions, 1)
                    .with_context(|| format!("cannot create topic {topic} on the embedded broker"))?;
            }
            // One partition: every detector reads the whole shared warm-up and the model in force.
            cluster
                .create_topic(&t.models, 1, 1)
                .with_context(|| format!("cannot create topic {} on the embedded broker", t.models))?;
            Ok(Self { cluster })
        })
    }

    /// The broker's `host:port`.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Adapts the roles' settings to a broker in this process (after [`crate::roles::apply_shared`]).
    pub fn adapt(cfg: &mut Config) {
        // Compressing records for an in-process broker only costs CPU.
        cfg.producer.compression = "none".to_string();
        // An idempotent producer asks for its producer id once a broker connection is up, and when none is up
        // yet it retries every 500 ms: 0.5–1 s lost at the start of most runs (librdkafka debug `eos`). The
        // in-process broker loses no request, so there is nothing for idempotence to deduplicate. An explicit
        // `enable.idempotence` in `[kafka.properties]` still wins.
        cfg.producer.kafka_properties.entry("enable.idempotence".to_string()).or_insert_with(|| "false".to_string());
        // librdkafka's mock broker answers a fetch that finds no records only after the whole fetch wait, even
        // when records arrive meanwhile: a consumer that caught up would see the next records up to 500 ms late.
        let cap = Duration::from_millis(10);
        cfg.detector.fetch_wait = cfg.detector.fetch_wait.min(cap);
        cfg.alert_router.fetch_wait = cfg.alert_router.fetch_wait.min(cap);
    }

    /// Stops the broker. Call it once every client of it is gone (stopping is a control operation too; the
    /// cluster is not `Send`, so it is stopped on this thread).
    pub fn stop(self) {
        let bootstrap = self.bootstrap_servers();
        with_broker_wakeups(&bootstrap, || drop(self.cluster));
    }

    /// Leaves the broker to the end of the process: for a process that exits next, with every output flushed
    /// and every offset committed, while the roles' clients may still be being dropped in the background.
    /// Stopping the broker before they are gone would make them log that it vanished.
    pub fn leave_to_exit(self) {
        std::mem::forget(self.cluster);
    }
}

/// How long a control operation of the embedded broker may take before its thread is woken.
const BROKER_WAKEUP_AFTER: Duration = Duration::from_millis(20);

/// Runs `setup` (control operations of the embedded broker, such as `create_topic`), waking the broker's thread
/// with a TCP connection to its listener whenever `setup` has run `BROKER_WAKEUP_AFTER` without returning.
///
/// librdkafka 2.12's mock cluster can lose the wake-up of an operation queued right after the previous one was
/// answered: its thread serves the queue, answers, and only then drains its wake-up pipe, swallowing the byte
/// the next operation wrote in between; it then sleeps out its poll timeout, 1 s, with the operation queued
/// (visible with `strace` as 1 s stalls, up to 2.3 s per run for five topics on a loaded host). A connection to the listener is an event its poll loop wakes for, and every pass of that loop
/// serves the queue. The connection is closed at once; the broker logs it at debug level only.
fn with_broker_wakeups<T>(bootstrap: &str, setup: impl FnOnce() -> T) -> T {
    let done = std::sync::atomic::AtomicBool::new(false);
    let address: Option<std::net::SocketAddr> = bootstrap.split(',').next().and_then(|a| a.parse().ok());
    std::thread::scope(|scope| {
        let waker = scope.spawn(|| {
            let Some(address) = address else { return };
            loop {
                std::thread::park_timeout(BROKER_WAKEUP_AFTER);
                if done.load(std::sync::atomic::Ordering::Acquire) {
                    return;
                }
                let _ = std::net::TcpStream::connect_timeout(&address, BROKER_WAKEUP_AFTER);
            }
        });
        let result = setup();
        done.store(true, std::sync::atomic::Ordering::Release);
        waker.thread().unpark();
        result
    })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// A setup that cannot finish until something connects to the broker's listener finishes: the waker
    /// connects once the setup has run `BROKER_WAKEUP_AFTER`.
    #[test]
    fn a_stalled_broker_setup_gets_a_wakeup_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let connected = with_broker_wakeups(&address, || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if listener.accept().is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            false
        });
        assert!(connected, "no connection reached the listener while the setup was stalled");
    }

    #[test]
    fn embedded_broker_has_every_topic_with_the_configured_partitions() {
        let mut cfg = Config::default();
        cfg.kafka.embedded_partitions = 3;
        let cluster = EmbeddedBroker::start(&cfg).unwrap();
        let consumer: rdkafka::consumer::BaseConsumer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", cluster.bootstrap_servers()).create().unwrap();
        let metadata = rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, Duration::from_secs(10)).unwrap();
        let t = &cfg.topics;
        for topic in [&t.packets, &t.destinations, &t.anomalies, &t.alerts, &t.dead_letter] {
            let found = metadata.topics().iter().find(|m| m.name() == topic.as_str());
            assert_eq!(found.map(|m| m.partitions().len()), Some(3), "{topic}");
        }
        let models = metadata.topics().iter().find(|m| m.name() == t.models.as_str());
        assert_eq!(models.map(|m| m.partitions().len()), Some(1), "the models topic has one partition");
    }
}
