//! librdkafka's log and error callbacks, rate-limited: every role's client context sends them through a
//! [`KafkaLog`], so a broker that stays down for minutes writes a few lines, not ten a second.
//!
//! The first occurrence of a (level, facility) log line, or of an error code, is written at once; repeats of
//! the same key within [`WINDOW`] are counted, not written. When the window of a key ends, its count is
//! written as one line, "… repeated N times in the last 30 s", carrying the last message (next to the new
//! occurrence, or on the next callback of any key, or when the client is dropped). The key table is bounded
//! ([`MAX_KEYS`]); past it, lines of new keys are written unlimited. The counting core,
//! [`RepeatLimiter`], takes the time as an argument so it is tested without waiting.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// How long repeats of one key are counted before their count is written.
pub const WINDOW: Duration = Duration::from_secs(30);

/// Most keys tracked at once.
pub const MAX_KEYS: usize = 256;

/// What to write for one occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write the line; `repeated` occurrences of the same key were held back in the window that just ended.
    Write {
        /// Occurrences held back in the previous window of this key (0: none).
        repeated: u64,
    },
    /// Count it, write nothing now.
    Hold,
}

/// A key whose window ended with occurrences held back: write "`message` repeated `count` times".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary<K> {
    /// The key.
    pub key: K,
    /// Its last message.
    pub message: String,
    /// Occurrences held back.
    pub count: u64,
}

#[derive(Debug)]
struct Entry {
    since: Instant,
    held: u64,
    last: String,
}

/// Counts repeats of each key within a window; the caller supplies the time.
#[derive(Debug)]
pub struct RepeatLimiter<K> {
    window: Duration,
    entries: HashMap<K, Entry>,
}

impl<K: std::hash::Hash + Eq + Clone> RepeatLimiter<K> {
    /// A limiter with windows of `window`.
    pub fn new(window: Duration) -> Self {
        Self { window, entries: HashMap::new() }
    }

    /// Decides about one occurrence of `key` with `message` at `now`; also returns the other keys whose window
    /// has ended with occurrences held back (their entries are dropped).
    pub fn admit(&mut self, key: &K, message: &str, now: Instant) -> (Verdict, Vec<Summary<K>>) {
        let window = self.window;
        let ended = |e: &Entry| now.saturating_duration_since(e.since) >= window;
        let mut summaries = Vec::new();
        self.entries.retain(|k, e| {
            if k == key || !ended(e) {
                return true;
            }
            if e.held > 0 {
                summaries.push(Summary { key: k.clone(), message: std::mem::take(&mut e.last), count: e.held });
            }
            false
        });
        let verdict = match self.entries.get_mut(key) {
            Some(e) if !ended(e) => {
                e.held += 1;
                message.clone_into(&mut e.last);
                Verdict::Hold
            }
            Some(e) => {
                let repeated = e.held;
                *e = Entry { since: now, held: 0, last: message.to_string() };
                Verdict::Write { repeated }
            }
            None => {
                if self.entries.len() < MAX_KEYS {
                    self.entries.insert(key.clone(), Entry { since: now, held: 0, last: message.to_string() });
                }
                Verdict::Write { repeated: 0 }
            }
        };
        (verdict, summaries)
    }

    /// Every key with occurrences held back, emptying the table.
    pub fn drain(&mut self) -> Vec<Summary<K>> {
        self.entries
            .drain()
            .filter(|(_, e)| e.held > 0)
            .map(|(key, e)| Summary { key, message: e.last, count: e.held })
            .collect()
    }
}

/// What a line is about: a log line's level and facility, or a client error's code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LogKey {
    /// `log_cb`: librdkafka's level (syslog numbering) and facility (`FAIL`, `REQTMOUT`, …).
    Log(u8, String),
    /// `error_cb`: the error code.
    Error(String),
}

/// The severity a line is written at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Severity {
    Error,
    Warn,
    Info,
    Debug,
}

impl Severity {
    fn of(key: &LogKey) -> Self {
        match key {
            LogKey::Error(_) => Severity::Error,
            LogKey::Log(0..=3, _) => Severity::Error,
            LogKey::Log(4, _) => Severity::Warn,
            LogKey::Log(5 | 6, _) => Severity::Info,
            LogKey::Log(_, _) => Severity::Debug,
        }
    }
}

/// A librdkafka client context that writes librdkafka's log lines and errors as `tracing` events (target
/// `librdkafka`), rate-limited as the module says. Roles with a context of their own delegate their `log` and
/// `error` callbacks to one ([`KafkaLog::log_line`], [`KafkaLog::error_line`]); the others use it as their
/// context.
#[derive(Debug)]
pub struct KafkaLog {
    limiter: Mutex<RepeatLimiter<LogKey>>,
}

impl Default for KafkaLog {
    fn default() -> Self {
        Self { limiter: Mutex::new(RepeatLimiter::new(WINDOW)) }
    }
}

impl KafkaLog {
    /// A librdkafka log line.
    pub fn log_line(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.line(LogKey::Log(level as u8, facility.to_string()), message);
    }

    /// A client error. Reaching the end of a partition (`enable.partition.eof`) is no error: it is written at
    /// debug level, unlimited.
    pub fn error_line(&self, error: &KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::PartitionEOF) => tracing::debug!(target: "librdkafka", "librdkafka: {reason}"),
            code => {
                let code = code.map_or_else(|| error.to_string(), |c| format!("{c:?}"));
                self.line(LogKey::Error(code), &format!("{error}: {reason}"));
            }
        }
    }

    fn line(&self, key: LogKey, message: &str) {
        let (verdict, summaries) =
            self.limiter.lock().unwrap_or_else(PoisonError::into_inner).admit(&key, message, Instant::now());
        for s in summaries {
            write_summary(&s);
        }
        if let Verdict::Write { repeated } = verdict {
            if repeated > 0 {
                write_summary(&Summary { key: key.clone(), message: message.to_string(), count: repeated });
            } else {
                write(&key, message);
            }
        }
    }
}

impl ClientContext for KafkaLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.log_line(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.error_line(&error, reason);
    }
}

impl Drop for KafkaLog {
    fn drop(&mut self) {
        for s in self.limiter.get_mut().unwrap_or_else(PoisonError::into_inner).drain() {
            write_summary(&s);
        }
    }
}

fn facility(key: &LogKey) -> &str {
    match key {
        LogKey::Log(_, f) => f,
        LogKey::Error(_) => "error",
    }
}

fn write(key: &LogKey, message: &str) {
    let facility = facility(key);
    match Severity::of(key) {
        Severity::Error => tracing::error!(target: "librdkafka", facility, "librdkafka: {message}"),
        Severity::Warn => tracing::warn!(target: "librdkafka", facility, "librdkafka: {message}"),
        Severity::Info => tracing::info!(target: "librdkafka", facility, "librdkafka: {message}"),
        Severity::Debug => tracing::debug!(target: "librdkafka", facility, "librdkafka: {message}"),
    }
}

fn write_summary(s: &Summary<LogKey>) {
    let (facility, n, secs) = (facility(&s.key), s.count, WINDOW.as_secs());
    let m = &s.message;
    match Severity::of(&s.key) {
        Severity::Error => {
            tracing::error!(target: "librdkafka", facility, repeated = n, "librdkafka: {m} (repeated {n} times in the last {secs} s)")
        }
        Severity::Warn => {
            tracing::warn!(target: "librdkafka", facility, repeated = n, "librdkafka: {m} (repeated {n} times in the last {secs} s)")
        }
        Severity::Info => {
            tracing::info!(target: "librdkafka", facility, repeated = n, "librdkafka: {m} (repeated {n} times in the last {secs} s)")
        }
        Severity::Debug => {
            tracing::debug!(target: "librdkafka", facility, repeated = n, "librdkafka: {m} (repeated {n} times in the last {secs} s)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn first_occurrence_is_written_repeats_are_counted_into_one_line() {
        let t0 = Instant::now();
        let mut l = RepeatLimiter::new(WINDOW);
        let fail = "FAIL".to_string();
        assert_eq!(l.admit(&fail, "connect refused", t0), (Verdict::Write { repeated: 0 }, vec![]));
        for s in 1..30 {
            assert_eq!(l.admit(&fail, &format!("connect refused {s}"), at(t0, s)).0, Verdict::Hold, "at {s} s");
        }
        // The window has ended: the next occurrence is written with the count of the 29 held back.
        assert_eq!(l.admit(&fail, "connect refused", at(t0, 30)).0, Verdict::Write { repeated: 29 });
        assert_eq!(l.admit(&fail, "connect refused", at(t0, 31)).0, Verdict::Hold);
        // Nothing more of this key: another key's occurrence after the window reports the count.
        let other = "REQTMOUT".to_string();
        let (v, summaries) = l.admit(&other, "timed out", at(t0, 61));
        assert_eq!(v, Verdict::Write { repeated: 0 });
        assert_eq!(summaries, vec![Summary { key: fail.clone(), message: "connect refused".into(), count: 1 }]);
        // A key seen once per window never produces a count.
        assert_eq!(l.admit(&fail, "connect refused", at(t0, 200)), (Verdict::Write { repeated: 0 }, vec![]));
    }

    #[test]
    fn keys_are_limited_independently_and_drained_at_the_end() {
        let t0 = Instant::now();
        let mut l = RepeatLimiter::new(Duration::from_secs(10));
        let (a, b) = (LogKey::Log(3, "FAIL".into()), LogKey::Error("AllBrokersDown".into()));
        assert!(matches!(l.admit(&a, "x", t0).0, Verdict::Write { .. }));
        assert!(matches!(l.admit(&b, "y", t0).0, Verdict::Write { .. }));
        // Same facility at another level is another key.
        assert!(matches!(l.admit(&LogKey::Log(4, "FAIL".into()), "z", t0).0, Verdict::Write { .. }));
        for _ in 0..5 {
            assert_eq!(l.admit(&a, "x", at(t0, 1)).0, Verdict::Hold);
        }
        assert_eq!(l.admit(&b, "y2", at(t0, 2)).0, Verdict::Hold);
        let mut drained = l.drain();
        drained.sort_by_key(|s| s.count);
        assert_eq!(
            drained,
            vec![
                Summary { key: b, message: "y2".into(), count: 1 },
                Summary { key: a.clone(), message: "x".into(), count: 5 }
            ]
        );
        assert_eq!(l.admit(&a, "x", at(t0, 3)), (Verdict::Write { repeated: 0 }, vec![]), "drain empties the table");
    }

    #[test]
    fn the_key_table_is_bounded() {
        let t0 = Instant::now();
        let mut l = RepeatLimiter::new(WINDOW);
        for k in 0..MAX_KEYS + 10 {
            assert_eq!(l.admit(&k, "m", t0).0, Verdict::Write { repeated: 0 });
        }
        assert_eq!(l.entries.len(), MAX_KEYS);
        // Untracked keys are written every time, tracked ones are held.
        assert_eq!(l.admit(&(MAX_KEYS + 1), "m", t0).0, Verdict::Write { repeated: 0 });
        assert_eq!(l.admit(&0, "m", t0).0, Verdict::Hold);
    }
}
