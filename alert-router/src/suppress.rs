//! Suppression: collapses repeats of one (host, kind) into one [`Alert`]. Owns the open groups, the packet-time
//! watermark and the wall-time flush deadlines; does no I/O and never reads a clock itself (the caller passes
//! `now`), so it is deterministic under test.
//!
//! A *window* of one (host, kind) opens at the `window_start_ns` of its first anomaly and lasts
//! [`SuppressionConfig::window`] of packet time. Anomalies starting inside it are absorbed into the window's
//! pending *group*. The pending group is emitted as an alert when
//! - the watermark (the latest accepted `window_end_ns` this router has seen) reaches the window's end: the window
//!   closes. An anomaly whose `window_end_ns` is outside the packet-time skew of the watermark
//!   ([`SuppressionConfig::time`], the rule of [`netanom_schemas::packet_time`]) is still absorbed but does not move
//!   the watermark, so one bad timestamp cannot close every window;
//! - [`SuppressionConfig::flush_after`] of wall time passed since the group opened (the window stays open; later
//!   repeats form a *continuation* group, emitted the same way with its own count);
//! - an anomaly starting after the window's end arrives (the window closes and a new one opens);
//! - the number of open windows exceeds [`SuppressionConfig::max_groups`] (by default what the suppression share
//!   of `alert_router.memory_budget_mib` fits, see [`crate::budget`]), or their bytes exceed that share: the
//!   window closing soonest in packet time is emitted early and counted in [`Suppressor::evictions`];
//! - [`Suppressor::drain`].
//!
//! Every emitted alert carries the Kafka origins (partition, offset) of the anomalies it absorbed, so the router
//! stores those offsets only after the alert is delivered. Every absorbed anomaly is in exactly one alert.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use netanom_schemas::bytes::{table_bytes, vec_bytes};
use netanom_schemas::packet_time::{Admission, PacketClock, SkewConfig};
use netanom_schemas::{Alert, Anomaly, AnomalyKind, IncidentKind, IncidentTotals, format_rfc3339_ns, time_from_ns};
use serde::Deserialize;
use tokio::time::Instant;

use crate::budget::{anomaly_heap, btree_entry_bytes};
use crate::times::{EvidenceTimes, Times};

/// Suppression settings (`[alert_router.suppression]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SuppressionConfig {
    /// Packet-time length of a suppression window per (host, kind). Default 60 s.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Wall time after which an open group is emitted even if its window is still open, so an analyst is never
    /// kept waiting longer than this. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub flush_after: Duration,
    /// Maximum number of open (host, kind) windows; beyond it the window closing soonest is emitted early.
    /// Default: what the suppression share of `alert_router.memory_budget_mib` fits at
    /// [`GROUP_BUDGET_BYTES`] each (see [`crate::budget`]); set, it must fit that share.
    pub max_groups: Option<usize>,
    /// Packet-time skew of the watermark (`[alert_router.suppression.time]`): how far an anomaly's window end may
    /// be ahead of (default 5 min) or behind (10 min) the watermark and still move it.
    pub time: SkewConfig,
}

impl Default for SuppressionConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            flush_after: Duration::from_secs(5),
            max_groups: None,
            time: SkewConfig::default(),
        }
    }
}

/// Where an anomaly came from on the anomalies topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Why a group was emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmitCause {
    /// The packet-time watermark passed the end of the window.
    Watermark,
    /// `flush_after` of wall time passed since the group opened.
    FlushAfter,
    /// An anomaly after the window's end opened a new window for the same (host, kind).
    Superseded,
    /// Too many open windows; this one was emitted early.
    Evicted,
    /// Drain or shutdown.
    Drain,
    /// An incident grew and [`crate::incident`] emitted a revision of it.
    Revision,
    /// An incident's host was quiet for the incident window: its closing revision.
    Quiet,
}

/// An alert ready to deliver, with the anomalies it accounts for.
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    /// The alert.
    pub alert: Alert,
    /// Kafka origins of every anomaly collapsed into it.
    pub origins: Vec<Origin>,
    /// True when an earlier alert of the same window was already emitted (this is its tail).
    pub continuation: bool,
    /// Why it was emitted.
    pub cause: EmitCause,
    /// The evidence times of the alert's kind, window by window, so a later alert can replace a window's (empty
    /// in an incident's revision, whose kinds carry their times).
    pub times: EvidenceTimes,
}

type Key = (String, AnomalyKind);

/// Bytes budgeted per open window when sizing the table from the budget, besides its share of the hash table: the
/// deadline index and flush-queue entries, the host name in each, and an anomaly's heap (id, reason, sample,
/// features; about 740 bytes for a detector's anomaly, measured by `tests/memory_budget.rs`). A window
/// whose anomaly holds more counts what it holds: the byte bound evicts sooner.
pub const GROUP_BUDGET_BYTES: usize = 1024;

/// Windows the suppression share `share` bytes holds at [`GROUP_BUDGET_BYTES`] each, the hash table counted twice
/// (it is rebuilt when it grows, the old table alive until the new one is filled).
pub fn groups_for(share: usize) -> usize {
    let fits = |n: usize| {
        table_bytes::<(Key, Window)>(n.saturating_add(1))
            .saturating_mul(2)
            .saturating_add(n.saturating_mul(GROUP_BUDGET_BYTES))
            <= share
    };
    // The table's bucket count is a power of two: find the largest fitting count by bisection.
    let (mut lo, mut hi) = (0usize, share / GROUP_BUDGET_BYTES + 1);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) { lo = mid } else { hi = mid - 1 }
    }
    lo
}

/// Bytes `groups` windows take, counted as [`groups_for`] does.
pub fn groups_bytes(groups: usize) -> usize {
    table_bytes::<(Key, Window)>(groups.saturating_add(1))
        .saturating_mul(2)
        .saturating_add(groups.saturating_mul(GROUP_BUDGET_BYTES))
}

/// Windows emitted early, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evictions {
    /// More than `max_groups` windows were open.
    pub capacity: u64,
    /// The windows' bytes exceeded the suppression share of the budget.
    pub budget: u64,
}

impl Evictions {
    /// Both reasons together.
    pub fn total(&self) -> u64 {
        self.capacity + self.budget
    }
}

/// Anomalies collapsed so far, not yet emitted.
#[derive(Debug)]
struct Group {
    count: u64,
    /// First evidence, detection and last evidence of the collapsed anomalies (see [`crate::times`]).
    times: EvidenceTimes,
    /// The highest-scoring anomaly.
    best: Anomaly,
    /// Counts of every collapsed anomaly's features.
    totals: IncidentTotals,
    origins: Vec<Origin>,
    /// Generation, to recognise stale flush-queue entries.
    generation: u64,
}

#[derive(Debug)]
struct Window {
    /// Index key in `by_end`: (end_ns, sequence).
    end: (i64, u64),
    /// Anomalies-topic partition of the window's anomalies (the topic is keyed by host).
    partition: i32,
    first_seen_ns: i64,
    /// Alerts emitted for this window so far.
    emitted: u32,
    pending: Option<Group>,
    /// Heap bytes this window holds: its host name as the map's key and in the deadline index, and its pending
    /// group's anomaly and origins.
    heap: usize,
}

impl Window {
    fn count_heap(&mut self, host: &str) {
        self.heap = 2 * host.len()
            + self
                .pending
                .as_ref()
                .map_or(0, |g| anomaly_heap(&g.best) + vec_bytes::<Origin>(g.origins.capacity()) + g.times.heap());
    }
}

/// The suppression state machine. See the module documentation.
#[derive(Debug)]
pub struct Suppressor {
    config: SuppressionConfig,
    window_ns: i64,
    windows: HashMap<Key, Window>,
    /// Open windows by (end_ns, sequence): closes and evictions in packet-time order.
    by_end: BTreeMap<(i64, u64), Key>,
    /// Pending groups by opening time (non-decreasing), with their generation; stale entries are skipped.
    flush_queue: VecDeque<(Instant, Key, u64)>,
    clock: PacketClock,
    watermark_ns: i64,
    sequence: u64,
    evictions: Evictions,
    /// Open windows at most.
    max_groups: usize,
    /// Bytes the windows may hold.
    share: usize,
    /// Heap bytes of the windows (sum of `Window::heap`).
    heap: usize,
    /// Heap bytes of the host names in the flush queue.
    queue_heap: usize,
    /// Highest `bytes()` so far.
    peak: usize,
    /// Highest capacity the window table had: its buckets stay allocated (and `capacity` shrinks as removed
    /// entries leave tombstones until the table is rebuilt).
    table_capacity: usize,
}

impl Suppressor {
    /// A suppressor with `config`, holding at most `share` bytes (the suppression share of the memory budget).
    pub fn new(config: SuppressionConfig, share: usize) -> Self {
        let window_ns = i64::try_from(config.window.as_nanos()).unwrap_or(i64::MAX).max(1);
        Self {
            max_groups: config.max_groups.unwrap_or_else(|| groups_for(share)).max(1),
            share,
            heap: 0,
            queue_heap: 0,
            peak: 0,
            table_capacity: 0,
            config,
            window_ns,
            windows: HashMap::new(),
            by_end: BTreeMap::new(),
            flush_queue: VecDeque::new(),
            clock: PacketClock::default(),
            watermark_ns: i64::MIN,
            sequence: 0,
            evictions: Evictions::default(),
        }
    }

    /// Windows emitted early, by reason.
    pub fn evictions(&self) -> Evictions {
        self.evictions
    }

    /// Open windows at most (`max_groups`, or what the share fits).
    pub fn max_groups(&self) -> usize {
        self.max_groups
    }

    /// Bytes the open windows hold: the hash table from its capacity, the deadline index, the flush queue, and
    /// the heap of every window (host names, pending anomalies, origins).
    pub fn bytes(&self) -> usize {
        table_bytes::<(Key, Window)>(self.table_capacity.max(self.windows.capacity()))
            + self.by_end.len() * btree_entry_bytes::<(i64, u64), Key>()
            + vec_bytes::<(Instant, Key, u64)>(self.flush_queue.capacity())
            + self.heap
            + self.queue_heap
    }

    /// The highest [`Suppressor::bytes`] so far.
    pub fn peak_bytes(&self) -> usize {
        self.peak
    }

    /// Open (host, kind) windows.
    pub fn open_windows(&self) -> usize {
        self.windows.len()
    }

    /// The packet-time watermark: latest `window_end_ns` seen, `i64::MIN` before any anomaly.
    pub fn watermark_ns(&self) -> i64 {
        self.watermark_ns
    }

    /// Absorbs one anomaly received at wall time `now`; returns the alerts this causes to be emitted (windows the
    /// watermark passed, a superseded window, evictions). Non-finite scores must be rejected by the caller.
    pub fn offer(&mut self, anomaly: Anomaly, origin: Origin, now: Instant) -> Vec<Emitted> {
        let mut out = Vec::new();
        let end = anomaly.window_end_ns;
        if !matches!(self.clock.admit(&self.config.time, end, end), Admission::Rejected(_)) {
            self.watermark_ns = self.clock.now_ns().unwrap_or(i64::MIN);
        }
        let key: Key = (anomaly.host.clone(), anomaly.kind);
        let inside = self.windows.get(&key).map(|w| anomaly.window_start_ns < w.end.0);
        match inside {
            Some(true) => {}
            Some(false) => self.close(&key, EmitCause::Superseded, &mut out),
            None => {}
        }
        if !self.windows.contains_key(&key) {
            self.sequence += 1;
            let end = (anomaly.window_start_ns.saturating_add(self.window_ns), self.sequence);
            self.by_end.insert(end, key.clone());
            self.windows.insert(
                key.clone(),
                Window {
                    end,
                    partition: origin.partition,
                    first_seen_ns: anomaly.window_start_ns,
                    emitted: 0,
                    pending: None,
                    heap: 0,
                },
            );
            self.table_capacity = self.table_capacity.max(self.windows.capacity());
        }
        self.absorb(&key, anomaly, origin, now);

        // Windows the watermark passed.
        while let Some(entry) = self.by_end.first_entry() {
            if entry.key().0 > self.watermark_ns {
                break;
            }
            let key = entry.get().clone();
            self.close(&key, EmitCause::Watermark, &mut out);
        }
        // Bounds on open windows: their number, then their bytes, down to one window (each closed window's alert is
        // emitted).
        while self.windows.len() > self.max_groups {
            let Some((_, key)) = self.by_end.first_key_value() else { break };
            let key = key.clone();
            self.close(&key, EmitCause::Evicted, &mut out);
            self.evictions.capacity += 1;
        }
        while self.bytes() > self.share && self.windows.len() > 1 {
            let Some((_, key)) = self.by_end.first_key_value() else { break };
            let key = key.clone();
            self.close(&key, EmitCause::Evicted, &mut out);
            self.evictions.budget += 1;
        }
        self.prune_queue();
        self.peak = self.peak.max(self.bytes());
        out
    }

    /// Drops the flush queue's stale entries (of windows closed or groups emitted) once they outnumber the open
    /// windows, so the queue stays within twice the windows.
    fn prune_queue(&mut self) {
        if self.flush_queue.len() <= 2 * self.windows.len() + 16 {
            return;
        }
        let windows = &self.windows;
        let mut freed = 0;
        self.flush_queue.retain(|(_, key, generation)| {
            let live = windows.get(key).and_then(|w| w.pending.as_ref()).is_some_and(|g| g.generation == *generation);
            if !live {
                freed += key.0.capacity();
            }
            live
        });
        self.queue_heap -= freed;
    }

    fn absorb(&mut self, key: &Key, anomaly: Anomaly, origin: Origin, now: Instant) {
        let Some(window) = self.windows.get_mut(key) else { return };
        self.heap -= window.heap;
        match &mut window.pending {
            Some(group) => {
                group.count += 1;
                group.times.observe(&anomaly);
                group.origins.push(origin);
                group.totals.observe(&anomaly.features);
                // On a tie the later evidence wins: it carries the newer figures. A window's closing report
                // replaces the figures of its earlier reports.
                let closes_best =
                    anomaly.closing && anomaly.window_key.is_some() && anomaly.window_key == group.best.window_key;
                if anomaly.score >= group.best.score || closes_best {
                    group.best = anomaly;
                }
            }
            None => {
                self.sequence += 1;
                let mut totals = IncidentTotals::default();
                totals.observe(&anomaly.features);
                window.pending = Some(Group {
                    count: 1,
                    times: EvidenceTimes::of(&anomaly),
                    totals,
                    best: anomaly,
                    origins: vec![origin],
                    generation: self.sequence,
                });
                let queued = key.clone();
                self.queue_heap += queued.0.capacity();
                self.flush_queue.push_back((now, queued, self.sequence));
            }
        }
        window.count_heap(&key.0);
        self.heap += window.heap;
    }

    /// Removes the window of `key`, emitting its pending group if any.
    fn close(&mut self, key: &Key, cause: EmitCause, out: &mut Vec<Emitted>) {
        if let Some(mut window) = self.windows.remove(key) {
            self.heap -= window.heap;
            self.by_end.remove(&window.end);
            if let Some(e) = Self::emit(key, &mut window, cause) {
                out.push(e);
            }
        }
    }

    fn emit(key: &Key, window: &mut Window, cause: EmitCause) -> Option<Emitted> {
        let group = window.pending.take()?;
        let continuation = window.emitted > 0;
        window.emitted += 1;
        let Times { first_ns, detected_ns, last_ns } = group.times.times()?;
        let first_seen = format_rfc3339_ns(first_ns);
        let id = if continuation {
            format!("{}/{}/{}+{}", key.0, key.1, format_rfc3339_ns(window.first_seen_ns), window.emitted - 1)
        } else {
            format!("{}/{}/{}", key.0, key.1, first_seen)
        };
        let best = group.best;
        let evidence = IncidentKind {
            kind: key.1,
            count: group.count,
            score: best.score,
            threshold: best.threshold,
            first_seen: time_from_ns(first_ns),
            detected_at: time_from_ns(detected_ns),
            last_seen: time_from_ns(last_ns),
            reason: best.reason.clone(),
            target: best.target.clone(),
            sample: best.sample.clone(),
            features: best.features.clone(),
            model_version: best.model_version.clone(),
        };
        let totals = IncidentTotals { duration_s: last_ns.saturating_sub(first_ns) as f64 / 1e9, ..group.totals };
        let alert = Alert {
            id,
            host: key.0.clone(),
            kind: key.1,
            score: best.score,
            threshold: best.threshold,
            first_seen: time_from_ns(first_ns),
            last_seen: time_from_ns(last_ns),
            detected_at: Some(time_from_ns(detected_ns)),
            count: group.count,
            reason: best.reason,
            target: best.target,
            sample: best.sample,
            features: best.features,
            model_version: best.model_version,
            revision: 1,
            final_revision: true,
            kinds: vec![evidence],
            totals,
        };
        Some(Emitted { alert, origins: group.origins, continuation, cause, times: group.times })
    }

    /// The latest packet-time end of the open windows of `host` (any kind), `None` when it has none: anomalies
    /// of `host` may still be pending here until the watermark reaches it.
    pub fn open_until(&self, host: &str) -> Option<i64> {
        let mut key: Key = (host.to_string(), AnomalyKind::Rate);
        let mut latest = None;
        for &kind in AnomalyKind::ALL {
            key.1 = kind;
            if let Some(w) = self.windows.get(&key) {
                latest = Some(latest.map_or(w.end.0, |l: i64| l.max(w.end.0)));
            }
        }
        latest
    }

    /// When [`Suppressor::poll`] next has something to emit (possibly earlier, never later).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.flush_queue.front().map(|(opened, _, _)| *opened + self.config.flush_after)
    }

    /// Emits the groups that have been open for `flush_after` of wall time at `now`. Their windows stay open.
    pub fn poll(&mut self, now: Instant) -> Vec<Emitted> {
        let mut out = Vec::new();
        while let Some((opened, _, _)) = self.flush_queue.front() {
            if *opened + self.config.flush_after > now {
                break;
            }
            let Some((_, key, generation)) = self.flush_queue.pop_front() else { break };
            self.queue_heap -= key.0.capacity();
            let Some(window) = self.windows.get_mut(&key) else { continue };
            if window.pending.as_ref().is_some_and(|g| g.generation == generation) {
                out.extend(Self::emit(&key, window, EmitCause::FlushAfter));
                self.heap -= window.heap;
                window.count_heap(&key.0);
                self.heap += window.heap;
            }
        }
        out
    }

    /// Forgets every window of `partition` without emitting it (the partition was revoked: its new owner accounts
    /// for the anomalies after the committed offset). Returns the pending anomalies dropped.
    pub fn forget_partition(&mut self, partition: i32) -> u64 {
        let keys: Vec<Key> =
            self.windows.iter().filter(|(_, w)| w.partition == partition).map(|(k, _)| k.clone()).collect();
        let mut dropped = 0;
        for key in keys {
            if let Some(window) = self.windows.remove(&key) {
                self.heap -= window.heap;
                self.by_end.remove(&window.end);
                dropped += window.pending.map_or(0, |g| g.count);
            }
        }
        dropped
    }

    /// Emits every pending group and forgets all windows (drain and shutdown), in packet-time order.
    pub fn drain(&mut self) -> Vec<Emitted> {
        let mut out = Vec::new();
        let keys: Vec<Key> = std::mem::take(&mut self.by_end).into_values().collect();
        for key in keys {
            if let Some(mut window) = self.windows.remove(&key) {
                out.extend(Self::emit(&key, &mut window, EmitCause::Drain));
            }
        }
        self.windows.clear();
        self.flush_queue.clear();
        (self.heap, self.queue_heap) = (0, 0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;
    const T0: i64 = 1_700_000_000 * S;

    fn anomaly(host: &str, kind: AnomalyKind, start_s: i64, score: f64) -> Anomaly {
        Anomaly {
            id: format!("{host}-{kind}-{start_s}"),
            host: host.to_string(),
            kind,
            window_start_ns: T0 + start_s * S,
            window_end_ns: T0 + (start_s + 1) * S,
            score,
            threshold: 10.0,
            target: None,
            reason: format!("score {score}"),
            features: vec![],
            sample: format!("sample {start_s}"),
            model_version: "test".into(),
            detected_ns: None,
            window_key: None,
            closing: false,
        }
    }

    fn origin(offset: i64) -> Origin {
        Origin { partition: 0, offset }
    }

    fn cfg() -> SuppressionConfig {
        SuppressionConfig::default()
    }

    #[test]
    fn a_far_future_or_1970_window_end_moves_no_watermark() {
        let now = Instant::now();
        let mut s = Suppressor::new(cfg(), usize::MAX);
        assert!(s.offer(anomaly("10.0.0.1", AnomalyKind::Rate, 0, 11.0), origin(0), now).is_empty());
        let watermark = s.watermark_ns();
        for (i, start_s) in [10 * 365 * 86_400, -T0 / S, i64::MAX / S - T0 / S - 1].into_iter().enumerate() {
            let host = format!("10.9.9.{i}");
            let out = s.offer(anomaly(&host, AnomalyKind::Fanout, start_s, 11.0), origin(1 + i as i64), now);
            // A window already past the watermark (1970) closes at once; no other window does.
            assert!(out.iter().all(|e| e.alert.host == host), "a bad time closed another window: {out:?}");
            assert_eq!(s.watermark_ns(), watermark);
        }
        // Repeats of the first host are still collapsed into one group.
        assert!(s.offer(anomaly("10.0.0.1", AnomalyKind::Rate, 10, 12.0), origin(5), now).is_empty());
        let out = s.offer(anomaly("10.0.0.2", AnomalyKind::Rate, 60, 11.0), origin(6), now);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].alert.count, 2);
    }

    #[test]
    fn repeats_collapse_until_watermark_passes_window() {
        let now = Instant::now();
        let mut s = Suppressor::new(cfg(), usize::MAX);
        assert!(s.offer(anomaly("10.0.0.1", AnomalyKind::Rate, 0, 11.0), origin(0), now).is_empty());
        assert!(s.offer(anomaly("10.0.0.1", AnomalyKind::Rate, 10, 30.0), origin(1), now).is_empty());
        assert!(s.offer(anomaly("10.0.0.1", AnomalyKind::Rate, 20, 12.0), origin(2), now).is_empty());
        // Another kind for the same host is its own group.
        assert!(s.offer(anomaly("10.0.0.1", AnomalyKind::Fanout, 5, 50.0), origin(3), now).is_empty());
        // An unrelated host at t=60 s moves the watermark to 61 s: the rate window [0, 60) closes.
        let out = s.offer(anomaly("10.0.0.2", AnomalyKind::Rate, 60, 11.0), origin(4), now);
        assert_eq!(out.len(), 1);
        let e = &out[0];
        assert_eq!(e.cause, EmitCause::Watermark);
        assert!(!e.continuation);
        assert_eq!(e.alert.count, 3);
        assert_eq!(e.alert.score, 30.0);
        assert_eq!(e.alert.reason, "score 30");
        assert_eq!(e.alert.sample, "sample 10");
        assert_eq!(e.alert.first_seen, time_from_ns(T0));
        assert_eq!(e.alert.last_seen, time_from_ns(T0 + 21 * S));
        assert_eq!(e.alert.id, format!("10.0.0.1/rate/{}", format_rfc3339_ns(T0)));
        assert_eq!(e.origins, vec![origin(0), origin(1), origin(2)]);
        // Fanout window [5, 65) is still open; drain emits it and the second host's group.
        let rest = s.drain();
        assert_eq!(rest.len(), 2);
        assert_eq!(rest[0].alert.kind, AnomalyKind::Fanout);
        assert_eq!(rest[1].alert.host, "10.0.0.2");
        assert!(rest.iter().all(|e| e.cause == EmitCause::Drain));
        assert_eq!(s.open_windows(), 0);
    }

    #[test]
    fn anomaly_after_window_end_supersedes() {
        let now = Instant::now();
        let mut s = Suppressor::new(cfg(), usize::MAX);
        s.offer(anomaly("h", AnomalyKind::Fanout, 0, 11.0), origin(0), now);
        // Window end is 60 s; watermark after this offer is 61 s, so the old window is closed by supersession
        // first and the new window [60, 120) stays open.
        let out = s.offer(anomaly("h", AnomalyKind::Fanout, 60, 11.0), origin(1), now);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].cause, EmitCause::Superseded);
        assert_eq!(out[0].origins, vec![origin(0)]);
        let rest = s.drain();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].alert.first_seen, time_from_ns(T0 + 60 * S));
    }

    #[test]
    fn flush_after_emits_head_then_continuation_tail() {
        let t = Instant::now();
        let mut s = Suppressor::new(cfg(), usize::MAX);
        s.offer(anomaly("h", AnomalyKind::Rate, 0, 11.0), origin(0), t);
        s.offer(anomaly("h", AnomalyKind::Rate, 1, 11.0), origin(1), t + Duration::from_secs(1));
        assert_eq!(s.next_deadline(), Some(t + Duration::from_secs(5)));
        assert!(s.poll(t + Duration::from_millis(4999)).is_empty());
        let head = s.poll(t + Duration::from_secs(5));
        assert_eq!(head.len(), 1);
        assert_eq!(head[0].cause, EmitCause::FlushAfter);
        assert_eq!(head[0].alert.count, 2);
        assert!(!head[0].continuation);
        assert_eq!(s.next_deadline(), None);

        // Repeats in the same packet-time window form a tail opened at 6 s, flushed at 11 s.
        s.offer(anomaly("h", AnomalyKind::Rate, 2, 40.0), origin(2), t + Duration::from_secs(6));
        s.offer(anomaly("h", AnomalyKind::Rate, 3, 12.0), origin(3), t + Duration::from_secs(7));
        s.offer(anomaly("h", AnomalyKind::Rate, 4, 13.0), origin(4), t + Duration::from_secs(8));
        assert!(s.poll(t + Duration::from_secs(10)).is_empty());
        let tail = s.poll(t + Duration::from_secs(11));
        assert_eq!(tail.len(), 1);
        let tail = &tail[0];
        assert!(tail.continuation);
        assert_eq!(tail.alert.count, 3);
        assert_eq!(tail.alert.score, 40.0);
        assert_eq!(tail.alert.first_seen, time_from_ns(T0 + 2 * S));
        assert_eq!(tail.alert.last_seen, time_from_ns(T0 + 5 * S));
        assert_ne!(tail.alert.id, head[0].alert.id);
        assert_eq!(tail.origins, vec![origin(2), origin(3), origin(4)]);
        // The window is still open but has nothing pending.
        assert_eq!(s.open_windows(), 1);
        assert!(s.drain().is_empty());
    }

    #[test]
    fn stale_flush_entries_are_ignored() {
        let t = Instant::now();
        let mut s = Suppressor::new(cfg(), usize::MAX);
        s.offer(anomaly("h", AnomalyKind::Rate, 0, 11.0), origin(0), t);
        // The window is superseded at 1 s; its flush entry from t is stale, the new group's is at 1 s + 5 s.
        let out = s.offer(anomaly("h", AnomalyKind::Rate, 100, 11.0), origin(1), t + Duration::from_secs(1));
        assert_eq!(out.len(), 1);
        assert!(s.poll(t + Duration::from_secs(5)).is_empty());
        let out = s.poll(t + Duration::from_secs(6));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].origins, vec![origin(1)]);
    }

    #[test]
    fn late_anomaly_behind_watermark_is_emitted_at_once() {
        let t = Instant::now();
        let mut s = Suppressor::new(cfg(), usize::MAX);
        s.offer(anomaly("a", AnomalyKind::Rate, 500, 11.0), origin(0), t);
        let out = s.offer(anomaly("b", AnomalyKind::Rate, 0, 11.0), origin(1), t);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].alert.host, "b");
        assert_eq!(out[0].cause, EmitCause::Watermark);
    }

    #[test]
    fn open_windows_are_bounded_and_evictions_counted() {
        let t = Instant::now();
        let mut s = Suppressor::new(SuppressionConfig { max_groups: Some(2), ..cfg() }, usize::MAX);
        s.offer(anomaly("a", AnomalyKind::Rate, 2, 11.0), origin(0), t);
        s.offer(anomaly("b", AnomalyKind::Rate, 1, 11.0), origin(1), t);
        let out = s.offer(anomaly("c", AnomalyKind::Rate, 3, 11.0), origin(2), t);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].cause, EmitCause::Evicted);
        assert_eq!(out[0].alert.host, "b", "the window closing soonest in packet time goes first");
        assert_eq!(s.evictions().capacity, 1);
        assert_eq!(s.open_windows(), 2);
        let total: usize = s.drain().iter().map(|e| e.origins.len()).sum::<usize>() + out[0].origins.len();
        assert_eq!(total, 3, "every anomaly is accounted for");
    }

    #[test]
    fn a_forgotten_partition_is_never_emitted() {
        let t = Instant::now();
        let mut s = Suppressor::new(cfg(), usize::MAX);
        let on = |p: i32, o: i64| Origin { partition: p, offset: o };
        assert!(s.offer(anomaly("a", AnomalyKind::Rate, 0, 20.0), on(0, 1), t).is_empty());
        assert!(s.offer(anomaly("a", AnomalyKind::Rate, 1, 20.0), on(0, 2), t).is_empty());
        assert!(s.offer(anomaly("b", AnomalyKind::Rate, 0, 20.0), on(1, 1), t).is_empty());
        assert_eq!(s.forget_partition(0), 2, "both pending anomalies of partition 0 dropped");
        assert_eq!(s.forget_partition(0), 0);
        let left: Vec<Emitted> = s.drain();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].alert.host, "b");
        assert!(s.poll(t + Duration::from_secs(3600)).is_empty(), "stale flush entries are skipped");
    }

    #[test]
    fn every_anomaly_is_in_exactly_one_alert() {
        // A deterministic pseudo-random stream over few hosts, with flushes interleaved.
        let t = Instant::now();
        let mut s = Suppressor::new(SuppressionConfig { max_groups: Some(3), ..cfg() }, usize::MAX);
        let mut seen = Vec::new();
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut counted = 0u64;
        for i in 0..2000i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let host = format!("h{}", x % 5);
            let kind = AnomalyKind::ALL[(x >> 8) as usize % 4];
            let start = i / 4 + (x >> 16) as i64 % 30;
            let now = t + Duration::from_millis(i as u64 * 37);
            let out = s.offer(anomaly(&host, kind, start, (x % 100) as f64), origin(i), now);
            let polled = s.poll(now);
            for e in out.into_iter().chain(polled) {
                counted += e.alert.count;
                assert_eq!(e.alert.count as usize, e.origins.len());
                seen.extend(e.origins);
            }
        }
        for e in s.drain() {
            counted += e.alert.count;
            seen.extend(e.origins);
        }
        seen.sort();
        assert_eq!(counted, 2000);
        assert_eq!(seen, (0..2000).map(origin).collect::<Vec<_>>());
    }
}
