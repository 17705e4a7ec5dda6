//! Evidence times of one kind of an alert or incident: its first evidence packet, the packet that crossed a
//! threshold and its last evidence packet, merged over the anomalies it absorbed.
//!
//! Anomalies are merged by earliest `first_seen` and `detected_at` and latest `last_seen`, except the reports of
//! one detector window (anomalies with the same `window_key`): a window's closing report carries the window's
//! exact times, so it replaces what the window's earlier reports contributed (a victim's first report, made on
//! partial counts, may date the flood by a benign client's packet). Reports of different windows are still merged
//! by earliest and latest.
//!
//! Bounded: at most [`MAX_OPEN`] windows awaiting their closing report and [`MAX_CLOSED`] closed ones are
//! remembered; beyond, the oldest open window's times are kept as they are (merged by earliest and latest) and the
//! oldest closed window is forgotten (a repeat of one of its earlier reports is then merged like any anomaly).

use netanom_schemas::Anomaly;
use netanom_schemas::bytes::vec_bytes;

/// Windows awaiting their closing report, at most.
pub const MAX_OPEN: usize = 16;

/// Closed windows remembered, at most.
pub const MAX_CLOSED: usize = 16;

/// Packet times of evidence, ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    /// The first evidence packet.
    pub first_ns: i64,
    /// The packet that crossed a threshold.
    pub detected_ns: i64,
    /// The last evidence packet.
    pub last_ns: i64,
}

impl Times {
    /// The times of one anomaly.
    pub fn of(a: &Anomaly) -> Self {
        Self { first_ns: a.window_start_ns, detected_ns: a.detected_at_ns(), last_ns: a.window_end_ns }
    }

    /// The earliest first and detection, the latest last, of `self` and `other`.
    pub fn merged(self, other: Self) -> Self {
        Self {
            first_ns: self.first_ns.min(other.first_ns),
            detected_ns: self.detected_ns.min(other.detected_ns),
            last_ns: self.last_ns.max(other.last_ns),
        }
    }
}

/// The evidence times of one kind. See the module documentation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvidenceTimes {
    /// Merged times of the anomalies that stand alone and of closed windows.
    settled: Option<Times>,
    /// Windows whose closing report has not been seen, by window key, oldest first.
    open: Vec<(String, Times)>,
    /// Windows whose closing report has been seen, oldest first.
    closed: Vec<String>,
}

impl EvidenceTimes {
    /// The times of one anomaly.
    pub fn of(a: &Anomaly) -> Self {
        let mut t = Self::default();
        t.observe(a);
        t
    }

    /// Times that stand alone (of no window).
    pub fn settled(t: Times) -> Self {
        Self { settled: Some(t), ..Self::default() }
    }

    /// Heap bytes held: the window lists and their keys (for the router's memory budget).
    pub fn heap(&self) -> usize {
        vec_bytes::<(String, Times)>(self.open.capacity())
            + self.open.iter().map(|(key, _)| key.capacity()).sum::<usize>()
            + vec_bytes::<String>(self.closed.capacity())
            + self.closed.iter().map(String::capacity).sum::<usize>()
    }

    /// Absorbs one anomaly.
    pub fn observe(&mut self, a: &Anomaly) {
        let times = Times::of(a);
        match a.window_key.as_deref() {
            None => self.settle(times),
            Some(key) if a.closing => self.close(key, times),
            Some(key) => self.report(key, times),
        }
    }

    /// Absorbs the times of a later group of anomalies of the same kind (`other` came after `self`): a window it
    /// closed replaces what `self` holds of that window.
    pub fn absorb(&mut self, other: &EvidenceTimes) {
        for key in &other.closed {
            self.open.retain(|(k, _)| k != key);
            self.remember_closed(key);
        }
        if let Some(t) = other.settled {
            self.settle(t);
        }
        for (key, t) in &other.open {
            self.report(key, *t);
        }
    }

    /// The merged times: `None` before any anomaly.
    pub fn times(&self) -> Option<Times> {
        self.open.iter().map(|(_, t)| *t).chain(self.settled).reduce(Times::merged)
    }

    fn settle(&mut self, t: Times) {
        self.settled = Some(self.settled.map_or(t, |s| s.merged(t)));
    }

    fn close(&mut self, key: &str, t: Times) {
        self.open.retain(|(k, _)| k != key);
        self.remember_closed(key);
        self.settle(t);
    }

    fn remember_closed(&mut self, key: &str) {
        if !self.closed.iter().any(|k| k == key) {
            if self.closed.len() >= MAX_CLOSED {
                self.closed.remove(0);
            }
            self.closed.push(key.to_string());
        }
    }

    fn report(&mut self, key: &str, t: Times) {
        if self.closed.iter().any(|k| k == key) {
            // A repeat of an earlier report of a closed window: the closing report's times stand.
            return;
        }
        if let Some((_, held)) = self.open.iter_mut().find(|(k, _)| k == key) {
            *held = held.merged(t);
            return;
        }
        if self.open.len() >= MAX_OPEN {
            let (_, oldest) = self.open.remove(0);
            self.settle(oldest);
        }
        self.open.push((key.to_string(), t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netanom_schemas::AnomalyKind;

    fn report(key: Option<&str>, closing: bool, (first, detected, last): (i64, i64, i64)) -> Anomaly {
        Anomaly {
            id: format!("{key:?}-{closing}"),
            host: "10.0.0.5".into(),
            kind: AnomalyKind::Victim,
            window_start_ns: first,
            window_end_ns: last,
            score: 600.0,
            threshold: 500.0,
            target: None,
            reason: String::new(),
            features: vec![],
            sample: String::new(),
            model_version: "test".into(),
            detected_ns: Some(detected),
            window_key: key.map(str::to_string),
            closing,
        }
    }

    fn t(first_ns: i64, detected_ns: i64, last_ns: i64) -> Option<Times> {
        Some(Times { first_ns, detected_ns, last_ns })
    }

    #[test]
    fn a_closing_report_replaces_its_window_and_other_windows_merge() {
        let mut e = EvidenceTimes::of(&report(Some("w1"), false, (2, 4, 5)));
        e.observe(&report(Some("w1"), false, (1, 6, 7)));
        assert_eq!(e.times(), t(1, 4, 7), "reports of an open window merge");
        e.observe(&report(Some("w2"), false, (12, 14, 15)));
        e.observe(&report(Some("w1"), true, (3, 5, 9)));
        assert_eq!(e.times(), t(3, 5, 15), "w1's closing report replaces its earlier ones; w2 is merged");
        e.observe(&report(Some("w1"), false, (0, 0, 1)));
        assert_eq!(e.times(), t(3, 5, 15), "a repeat of a closed window's early report changes nothing");
        e.observe(&report(None, false, (10, 11, 20)));
        assert_eq!(e.times(), t(3, 5, 20), "an anomaly without a window merges");
    }

    #[test]
    fn a_later_group_that_closes_a_window_replaces_it_in_the_earlier() {
        let mut earlier = EvidenceTimes::of(&report(Some("w1"), false, (1, 4, 5)));
        earlier.observe(&report(Some("w0"), true, (0, 2, 3)));
        let later = EvidenceTimes::of(&report(Some("w1"), true, (2, 6, 9)));
        earlier.absorb(&later);
        assert_eq!(earlier.times(), t(0, 2, 9));
        let mut alone = EvidenceTimes::of(&report(Some("w1"), false, (1, 4, 5)));
        alone.absorb(&later);
        assert_eq!(alone.times(), t(2, 6, 9), "the closing report's times, exactly");
        alone.absorb(&EvidenceTimes::of(&report(Some("w1"), false, (1, 4, 5))));
        assert_eq!(alone.times(), t(2, 6, 9), "a repeated early report after the closing one changes nothing");
    }

    #[test]
    fn the_windows_remembered_are_bounded() {
        let mut e = EvidenceTimes::default();
        for w in 0..100i64 {
            e.observe(&report(Some(&format!("open{w}")), false, (w, w, w)));
            e.observe(&report(Some(&format!("closed{w}")), true, (w, w, w)));
        }
        assert_eq!((e.open.len(), e.closed.len()), (MAX_OPEN, MAX_CLOSED));
        assert_eq!(e.times(), t(0, 0, 99), "the windows let go of are merged, not lost");
    }
}
