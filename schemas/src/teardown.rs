//! Dropping Kafka clients off the critical path.
//!
//! Dropping an rdkafka client joins its threads: a `ThreadedProducer` (and so a `FutureProducer`) waits for
//! its polling thread, which looks at its stop flag every 100 ms, so a drop takes up to 100 ms even when
//! nothing is left to send. A role that has flushed its producer and committed its offsets has nothing left to
//! lose: it hands its clients to [`drop_in_background`] and reports at once, so the next stage of
//! `netanom run` does not wait for the join. Whoever owns the broker the clients talk to (the embedded one of
//! `netanom run`) calls [`wait`] before stopping it, so no client sees its broker vanish.

use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;

/// Teardown threads not yet joined (finished ones are pruned at each new one: bounded by the clients alive).
static PENDING: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// Drops `value` on a thread of its own (or here, if no thread can be started).
pub fn drop_in_background<T: Send + 'static>(value: T) {
    // If the spawn fails, the closure (and `value` with it) is dropped here, inline.
    if let Ok(handle) = std::thread::Builder::new().name("kafka-teardown".into()).spawn(move || drop(value)) {
        let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
        pending.retain(|h| !h.is_finished());
        pending.push(handle);
    }
}

/// Blocks until every value handed to [`drop_in_background`] so far has been dropped.
pub fn wait() {
    let pending = std::mem::take(&mut *PENDING.lock().unwrap_or_else(PoisonError::into_inner));
    for handle in pending {
        let _ = handle.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    struct Probe(mpsc::Sender<std::thread::ThreadId>, Duration);

    impl Drop for Probe {
        fn drop(&mut self) {
            std::thread::sleep(self.1);
            let _ = self.0.send(std::thread::current().id());
        }
    }

    #[test]
    fn values_are_dropped_on_another_thread_and_wait_joins_them() {
        let (tx, rx) = mpsc::channel();
        drop_in_background(Probe(tx.clone(), Duration::ZERO));
        drop_in_background(Probe(tx, Duration::from_millis(200)));
        wait();
        // After `wait`, both drops have happened (no blocking receive needed), each on another thread.
        let dropped_on: Vec<_> = rx.try_iter().collect();
        assert_eq!(dropped_on.len(), 2);
        assert!(dropped_on.iter().all(|id| *id != std::thread::current().id()));
    }
}
