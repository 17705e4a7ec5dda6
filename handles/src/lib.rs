//! The runtime handles a role (`netanom_producer::run`, `netanom_detector::run`, `netanom_alert_router::run`)
//! receives from whoever runs it, as arguments, never through its configuration or a global: when to drain
//! ([`RoleHandles::drain`]), where to say it is ready for traffic ([`ReadyFlag`], read by `/readyz`), and where
//! to hand Kafka clients whose teardown must not delay its report ([`Teardown`], waited for by whoever owns the
//! broker they talk to). The defaults are private to the role: a flag nobody reads, a teardown nobody waits for.
//! Besides: [`kafka_log`], the librdkafka log every role's Kafka clients write through, rate-limited, and
//! [`messaging`], the OpenTelemetry messaging conventions of every role's spans.

pub mod kafka_log;
pub mod messaging;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

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
}

impl RoleHandles {
    /// Handles whose role drains when `drain` fires.
    pub fn draining(drain: CancellationToken) -> Self {
        Self { drain: Some(drain), ..Self::default() }
    }
}

/// Whether a role is ready for traffic: its consumer has its partitions, or its producer is created. Clones
/// share the flag.
#[derive(Debug, Clone, Default)]
pub struct ReadyFlag(Arc<AtomicBool>);

impl ReadyFlag {
    /// Sets the flag.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
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
}
