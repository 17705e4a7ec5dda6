//! The runtime handles a role (`netanom_producer::run`, `netanom_detector::run`, `netanom_alert_router::run`)
//! receives from whoever runs it, as arguments, never through its configuration or a global: when to drain
//! ([`RoleHandles::drain`]), where to say it is ready for traffic ([`ReadyFlag`], read by `/readyz`), and where
//! to hand Kafka clients whose teardown must not delay its report ([`Teardown`], waited for by whoever owns the
//! broker they talk to), and how long it has to shut down ([`Grace`]). The defaults are private to the role: a flag nobody reads, a teardown nobody waits for.
//! Besides: [`kafka_log`], the librdkafka log every role's Kafka clients write through, rate-limited, and
//! [`messaging`], the OpenTelemetry messaging conventions of every role's spans.

pub mod kafka_log;
pub mod messaging;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// What a role's `run` receives besides its configuration and its shutdown token.
#[derive(Debug, Clone, Default)]
pub struct RoleHandles {
    /// "The input is complete": when it fires, the role processes every record present at that moment,
    /// flushes and returns (the producer ends a live capture). `None`: never.
    pub drain: Option<CancellationToken>,
    /// Set while the role is ready for traffic.
    pub ready: ReadyFlag,
    /// Where the role drops the Kafka clients it has flushed and committed.
    pub teardown: Teardown,
    /// How long the role has to shut down once `shutdown` fires.
    pub grace: Grace,
}

impl RoleHandles {
    /// Handles whose role drains when `drain` fires.
    pub fn draining(drain: CancellationToken) -> Self {
        Self { drain: Some(drain), ..Self::default() }
    }
}

/// What the probes read of a role: whether it is ready for traffic (its consumer has its partitions or its
/// producer is created, and every Kafka client it registered reaches a broker: [`ReadyFlag::status`]) and when
/// its main loop last went round ([`ReadyFlag::beat`], read by `/healthz`). Clones share the state.
#[derive(Debug, Clone, Default)]
pub struct ReadyFlag(Arc<ReadyState>);

#[derive(Debug)]
struct ReadyState {
    set: AtomicBool,
    links: Mutex<Vec<KafkaLink>>,
    /// Milliseconds since `epoch` of the last beat plus one; 0 while no loop beats.
    beat: AtomicU64,
    epoch: Instant,
}

impl Default for ReadyState {
    fn default() -> Self {
        Self { set: AtomicBool::new(false), links: Mutex::default(), beat: AtomicU64::new(0), epoch: Instant::now() }
    }
}

impl ReadyFlag {
    /// Sets the flag.
    pub fn set(&self, ready: bool) {
        self.0.set.store(ready, Ordering::Release);
    }

    /// Whether the flag is set (the role's own view; [`ReadyFlag::status`] also asks its Kafka clients).
    pub fn is_set(&self) -> bool {
        self.0.set.load(Ordering::Acquire)
    }

    /// Registers a Kafka client named `client`: the role is not ready while the returned link is down, which it
    /// is until the client's first broker connection.
    pub fn kafka_link(&self, client: &str) -> KafkaLink {
        let link = KafkaLink(Arc::new(LinkState {
            client: client.to_string(),
            up: AtomicBool::new(false),
            why: Mutex::new("not connected to a broker yet".into()),
        }));
        let mut links = self.0.links.lock().unwrap_or_else(PoisonError::into_inner);
        links.retain(|l| Arc::strong_count(&l.0) > 1);
        links.push(link.clone());
        link
    }

    /// `Ok` when ready for traffic, else why not.
    pub fn status(&self) -> Result<(), String> {
        if !self.is_set() {
            return Err("not started, or no partitions assigned".into());
        }
        let links = self.0.links.lock().unwrap_or_else(PoisonError::into_inner);
        let down: Vec<String> = links
            .iter()
            .filter(|l| Arc::strong_count(&l.0) > 1 && !l.is_up())
            .map(|l| format!("Kafka {}: {}", l.0.client, l.0.why.lock().unwrap_or_else(PoisonError::into_inner)))
            .collect();
        if down.is_empty() { Ok(()) } else { Err(down.join("; ")) }
    }

    /// Records that the role's main loop went round. The first beat arms the liveness check.
    pub fn beat(&self) {
        let ms = u64::try_from(self.0.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.0.beat.store(ms + 1, Ordering::Release);
    }

    /// The main loop has ended (shutdown, drain): liveness no longer waits for beats.
    pub fn stop_beating(&self) {
        self.0.beat.store(0, Ordering::Release);
    }

    /// How long ago the main loop last went round, while one beats.
    pub fn since_beat(&self) -> Option<Duration> {
        match self.0.beat.load(Ordering::Acquire) {
            0 => None,
            b => Some(self.0.epoch.elapsed().saturating_sub(Duration::from_millis(b - 1))),
        }
    }
}

/// Whether one Kafka client reaches a broker, fed by the client's context ([`KafkaLink::observe_stats`] from
/// its statistics callback, [`KafkaLink::observe_error`] from its error callback). Dropping every clone
/// unregisters it from its [`ReadyFlag`].
#[derive(Debug, Clone)]
pub struct KafkaLink(Arc<LinkState>);

#[derive(Debug)]
struct LinkState {
    client: String,
    up: AtomicBool,
    why: Mutex<String>,
}

/// The librdkafka statistics interval a client needs for its [`KafkaLink`] to follow its broker connections
/// (`statistics.interval.ms`).
pub const STATS_INTERVAL_MS: &str = "1000";

impl KafkaLink {
    /// Whether the client is connected to at least one broker.
    pub fn is_up(&self) -> bool {
        self.0.up.load(Ordering::Acquire)
    }

    /// Marks the link up.
    pub fn up(&self) {
        self.0.up.store(true, Ordering::Release);
    }

    /// Marks the link down, saying why.
    pub fn down(&self, why: impl Into<String>) {
        *self.0.why.lock().unwrap_or_else(PoisonError::into_inner) = why.into();
        self.0.up.store(false, Ordering::Release);
    }

    /// Up when a broker (not librdkafka's internal or logical ones) is in state `UP`, else down naming every
    /// broker's state.
    pub fn observe_stats(&self, stats: &rdkafka::Statistics) {
        self.observe_brokers(
            stats.brokers.values().map(|b| (b.source.as_str(), b.nodename.as_str(), b.state.as_str())),
        );
    }

    /// [`KafkaLink::observe_stats`] on `(source, host:port, state)` of each broker.
    pub fn observe_brokers<'a>(&self, brokers: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) {
        let real: Vec<(&str, &str)> = brokers
            .into_iter()
            .filter(|(source, _, _)| *source != "internal" && *source != "logical")
            .map(|(_, host, state)| (host, state))
            .collect();
        if real.iter().any(|(_, state)| *state == "UP") {
            self.up();
        } else {
            let mut states: Vec<String> = real.iter().map(|(host, state)| format!("{host} {state}")).collect();
            states.sort();
            states.dedup();
            self.down(format!("no broker connection ({})", states.join(", ")));
        }
    }

    /// Down when librdkafka reports every broker down.
    pub fn observe_error(&self, error: &rdkafka::error::KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) {
            self.down(format!("all brokers down ({reason})"));
        }
    }
}

/// The time a role has to shut down once told to: the shutdown token's owner starts it ([`Grace::start`]) when
/// it cancels the token, and the role takes the timeouts of its last flush and commit from
/// [`Grace::remaining`]. Clones share the start.
#[derive(Debug, Clone)]
pub struct Grace {
    length: Duration,
    started: Arc<OnceLock<Instant>>,
}

/// The default shutdown grace: below Kubernetes' default `terminationGracePeriodSeconds` (30 s).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

impl Default for Grace {
    fn default() -> Self {
        Self::new(DEFAULT_SHUTDOWN_GRACE)
    }
}

impl Grace {
    /// A grace of `length`, not started.
    pub fn new(length: Duration) -> Self {
        Self { length, started: Arc::default() }
    }

    /// The whole grace.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// Starts the grace (once; later calls keep the first start).
    pub fn start(&self) {
        let _ = self.started.set(Instant::now());
    }

    /// What is left of the grace: all of it until it is started.
    pub fn remaining(&self) -> Duration {
        match self.started.get() {
            Some(t) => self.length.saturating_sub(t.elapsed()),
            None => self.length,
        }
    }

    /// `share` of what is left (e.g. 0.5 for a flush that a commit follows).
    pub fn share(&self, share: f64) -> Duration {
        self.remaining().mul_f64(share.clamp(0.0, 1.0))
    }
}

/// Dropping Kafka clients off the critical path.
///
/// Dropping an rdkafka client joins its threads: a `ThreadedProducer` (and so a `FutureProducer`) waits for
/// its polling thread, which looks at its stop flag every 100 ms, so a drop takes up to 100 ms even when
/// nothing is left to send. A role that has flushed its producer and committed its offsets has nothing left to
/// lose: it hands its clients to [`Teardown::drop_in_background`] and reports at once, so the next stage of
/// `netanom run` does not wait for the join. Whoever owns the broker the clients talk to (the embedded one of
/// `netanom run`) calls [`Teardown::wait`] before stopping it, so no client sees its broker vanish. Clones share
/// the list.
#[derive(Debug, Clone, Default)]
pub struct Teardown {
    /// Teardown threads not yet joined (finished ones are pruned at each new one: bounded by the clients alive).
    pending: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Teardown {
    /// Drops `value` on a thread of its own (or here, if no thread can be started).
    pub fn drop_in_background<T: Send + 'static>(&self, value: T) {
        // If the spawn fails, the closure (and `value` with it) is dropped here, inline.
        if let Ok(handle) = std::thread::Builder::new().name("kafka-teardown".into()).spawn(move || drop(value)) {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending.retain(|h| !h.is_finished());
            pending.push(handle);
        }
    }

    /// Blocks until every value handed to [`Teardown::drop_in_background`] so far has been dropped.
    pub fn wait(&self) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        for handle in pending {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    struct Probe(mpsc::Sender<std::thread::ThreadId>, Duration);

    impl Drop for Probe {
        fn drop(&mut self) {
            std::thread::sleep(self.1);
            let _ = self.0.send(std::thread::current().id());
        }
    }

    #[test]
    fn values_are_dropped_on_another_thread_and_wait_joins_them() {
        let teardown = Teardown::default();
        let (tx, rx) = mpsc::channel();
        teardown.drop_in_background(Probe(tx.clone(), Duration::ZERO));
        teardown.clone().drop_in_background(Probe(tx, Duration::from_millis(200)));
        teardown.wait();
        // After `wait`, both drops have happened (no blocking receive needed), each on another thread.
        let dropped_on: Vec<_> = rx.try_iter().collect();
        assert_eq!(dropped_on.len(), 2);
        assert!(dropped_on.iter().all(|id| *id != std::thread::current().id()));
    }

    #[test]
    fn one_teardown_does_not_wait_for_another() {
        let (slow, fast) = (Teardown::default(), Teardown::default());
        let (tx, rx) = mpsc::channel();
        slow.drop_in_background(Probe(tx.clone(), Duration::from_millis(500)));
        fast.drop_in_background(Probe(tx, Duration::ZERO));
        fast.wait();
        assert_eq!(rx.try_iter().count(), 1, "only the fast drop is done");
        slow.wait();
    }

    #[test]
    fn clones_of_a_ready_flag_share_it() {
        let flag = ReadyFlag::default();
        let handles = RoleHandles { ready: flag.clone(), ..RoleHandles::default() };
        assert!(!flag.is_set());
        handles.ready.set(true);
        assert!(flag.is_set());
        assert!(!RoleHandles::default().ready.is_set(), "a default flag is private");
        assert!(RoleHandles::draining(CancellationToken::new()).drain.is_some());
    }

    #[test]
    fn a_role_is_ready_only_while_every_registered_client_reaches_a_broker() {
        let flag = ReadyFlag::default();
        flag.set(true);
        assert_eq!(flag.status(), Ok(()));
        let consumer = flag.kafka_link("consumer");
        let why = flag.status().expect_err("a new client has no connection yet");
        assert!(why.contains("Kafka consumer: not connected"), "{why}");
        consumer.up();
        assert_eq!(flag.status(), Ok(()));
        let code = rdkafka::types::RDKafkaErrorCode::AllBrokersDown;
        consumer.observe_error(&rdkafka::error::KafkaError::Global(code), "1/1 brokers are down");
        let why = flag.status().expect_err("every broker is down");
        assert!(why.contains("all brokers down (1/1 brokers are down)"), "{why}");
        consumer.up();
        flag.set(false);
        assert!(flag.status().is_err(), "the role's own flag still counts");
        flag.set(true);
        consumer.down("gone");
        drop(consumer);
        assert_eq!(flag.status(), Ok(()), "a dropped client no longer counts");
    }

    #[test]
    fn statistics_decide_the_link_from_the_real_brokers_states() {
        let flag = ReadyFlag::default();
        flag.set(true);
        let link = flag.kafka_link("producer");
        link.observe_brokers([
            ("internal", "", "UP"),
            ("logical", "", "UP"),
            ("configured", "127.0.0.1:9092", "CONNECT"),
        ]);
        let why = flag.status().expect_err("only the internal broker is up");
        assert!(why.contains("no broker connection (127.0.0.1:9092 CONNECT)"), "{why}");
        link.observe_brokers([("configured", "127.0.0.1:9092", "DOWN"), ("learned", "127.0.0.1:9092", "UP")]);
        assert_eq!(flag.status(), Ok(()));
    }

    #[test]
    fn the_heartbeat_is_armed_by_the_first_beat_and_disarmed_at_the_end_of_the_loop() {
        let flag = ReadyFlag::default();
        assert_eq!(flag.since_beat(), None, "no loop yet: nothing to judge");
        flag.beat();
        std::thread::sleep(Duration::from_millis(60));
        let since = flag.clone().since_beat().expect("armed");
        assert!(since >= Duration::from_millis(50) && since < Duration::from_secs(5), "{since:?}");
        flag.beat();
        assert!(flag.since_beat().expect("armed") < since);
        flag.stop_beating();
        assert_eq!(flag.since_beat(), None);
    }

    #[test]
    fn the_grace_counts_down_from_its_start_only() {
        let grace = Grace::new(Duration::from_millis(300));
        assert_eq!(grace.remaining(), Duration::from_millis(300));
        assert_eq!(grace.share(0.5), Duration::from_millis(150));
        grace.clone().start();
        std::thread::sleep(Duration::from_millis(100));
        grace.start(); // a second start keeps the first
        let left = grace.remaining();
        assert!(left <= Duration::from_millis(200) && left > Duration::ZERO, "{left:?}");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(grace.remaining(), Duration::ZERO);
        assert_eq!(Grace::default().length(), DEFAULT_SHUTDOWN_GRACE);
    }
}
