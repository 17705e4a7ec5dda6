//! Dropping Kafka clients off the critical path.
//!
//! Dropping an rdkafka client joins its threads: a `ThreadedProducer` (and so a `FutureProducer`) waits for
//! its polling thread, which looks at its stop flag every 100 ms, so a drop takes up to 100 ms even when
//! nothing is left to send. A role that has flushed its producer and committed its offsets has nothing left to
//! lose: it hands its clients to [`drop_in_background`] and reports at once, so the next stage of
//! `netanom run` (or the process exit) does not wait for the join.

/// Drops `value` on a thread of its own (or here, if no thread can be started).
pub fn drop_in_background<T: Send + 'static>(value: T) {
    // If the spawn fails, the closure (and `value` with it) is dropped here, inline.
    let _ = std::thread::Builder::new().name("kafka-teardown".into()).spawn(move || drop(value));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_is_dropped_on_another_thread() {
        struct Probe(std::sync::mpsc::Sender<std::thread::ThreadId>);
        impl Drop for Probe {
            fn drop(&mut self) {
                let _ = self.0.send(std::thread::current().id());
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        drop_in_background(Probe(tx));
        let dropped_on = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("dropped");
        assert_ne!(dropped_on, std::thread::current().id());
    }
}
