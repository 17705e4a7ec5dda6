//! Partition ownership across rebalances: for which input partitions (packets and destinations topics) this
//! detector holds state and up to which offset, where a partition starts when it is assigned, and which records
//! rebuild the state of the hosts (or destination windows) that moved here. Pure bookkeeping: the consume loop's
//! rebalance callback asks it for start offsets and the loop reports what it processed; it does no Kafka I/O and
//! knows nothing about detection.
//!
//! # Rebuild
//!
//! Per-host state (rate rings, fan-out windows, cooldowns, the sources counted per destination) and the victim
//! aggregates live in the detector that owns the partition. When a partition is assigned with committed offset
//! `c` and no state held for it, the detector starts at `c − R` (R = `detector.state.rebuild_records`; the
//! broker clamps an offset below the partition's first one to it) and feeds the records below `c` to the engine
//! *state-only*: state is updated as if they were processed, their anomalies and destination statistics are
//! discarded (the previous owner produced them, and they were acknowledged before `c` was committed), and no
//! offset is stored for them. From `c` on, processing is normal. When it already holds state up to `n` (it kept
//! the partition through an eager rebalance, or the group moved it away and back without this detector noticing
//! in between):
//! - `c <= n`: resume at `n`; the records in between are in the state and their output was acknowledged;
//! - `n < c <= n + R`: replay `[n, c)` state-only onto the held state;
//! - `c > n + R`: drop the held state and rebuild from `c − R`.
//!
//! With no committed offset and nothing held, the partition starts where `auto.offset.reset` says (the earliest
//! record), cold as nothing came before. State is exact after a move when the R records before `c` cover
//! everything the state depends on: the longest window (`fanout.window`, `victim.window`, the rate cooldown) and
//! the last `rate.window_packets` connection openings of every host of the partition.

use std::collections::{HashMap, HashSet};

/// A topic name and a partition.
pub(crate) type TopicPartition = (String, i32);

/// Where an assigned partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// At the group's committed offset (`auto.offset.reset` without one): nothing held, nothing to rebuild.
    Committed,
    /// At `offset`; records below `rebuild_until` are state-only (none when it equals `offset`). When
    /// `drop_held`, the state held for the partition is stale and is dropped first.
    At {
        /// First offset to read.
        offset: i64,
        /// Records below this offset only rebuild state.
        rebuild_until: i64,
        /// Drop the state held for the partition before reading.
        drop_held: bool,
    },
}

/// Where a partition starts, given the offset up to which this detector holds its state (`held`), the group's
/// committed offset and `rebuild_records` (R). See the module documentation.
pub(crate) fn plan(held: Option<i64>, committed: Option<i64>, rebuild_records: i64) -> Start {
    let r = rebuild_records.max(0);
    let Some(c) = committed else {
        return match held {
            Some(n) => Start::At { offset: n, rebuild_until: n, drop_held: false },
            None => Start::Committed,
        };
    };
    match held {
        Some(n) if c <= n => Start::At { offset: n, rebuild_until: n, drop_held: false },
        Some(n) if c.saturating_sub(n) <= r => Start::At { offset: n, rebuild_until: c, drop_held: false },
        held => Start::At { offset: c.saturating_sub(r).max(0), rebuild_until: c, drop_held: held.is_some() },
    }
}

/// A rebuild in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rebuild {
    /// First offset asked for (the broker may start later, at the partition's first record).
    pub from: i64,
    /// Records below this offset are state-only.
    pub until: i64,
}

/// What the detector holds per partition, shared by the rebalance callback and the consume loop (which never
/// holds the lock across a `recv`, where the callback runs).
#[derive(Debug, Default)]
pub(crate) struct Ownership {
    /// Per partition whose state the engine holds: the first offset that state has not seen.
    held: HashMap<TopicPartition, i64>,
    /// Partitions being rebuilt.
    rebuilding: HashMap<TopicPartition, Rebuild>,
    /// Partitions whose engine state is dropped before the next record is processed.
    to_drop: HashSet<TopicPartition>,
    /// Partitions revoked since the loop last looked: records of them it already received are discarded (they
    /// are read again by the next owner, or by this detector from where its state stops).
    revoked: HashSet<TopicPartition>,
    /// Eager protocol: partitions revoked at the start of a rebalance, until the assignment that ends it shows
    /// which of them stay here.
    pending: HashSet<TopicPartition>,
}

impl Ownership {
    /// Partitions revoked. With the eager protocol every partition is revoked at each rebalance and those that
    /// stay are assigned again right after, so their state is kept until that assignment; with the cooperative
    /// protocol a revoked partition is gone.
    pub(crate) fn revoke(&mut self, partitions: impl IntoIterator<Item = TopicPartition>, eager: bool) {
        for tp in partitions {
            self.revoked.insert(tp.clone());
            if eager {
                self.pending.insert(tp);
            } else {
                self.lose(tp);
            }
        }
    }

    fn lose(&mut self, tp: TopicPartition) {
        self.held.remove(&tp);
        self.rebuilding.remove(&tp);
        self.to_drop.insert(tp);
    }

    /// Partitions assigned, each with the group's committed offset; returns where each starts. With the eager
    /// protocol `assignment` is the whole new assignment, and the partitions revoked before it that are not in
    /// it are lost.
    pub(crate) fn assign(
        &mut self,
        assignment: &[(TopicPartition, Option<i64>)],
        eager: bool,
        rebuild_records: i64,
    ) -> Vec<(TopicPartition, Start)> {
        if eager {
            let kept: HashSet<&TopicPartition> = assignment.iter().map(|(tp, _)| tp).collect();
            let lost: Vec<TopicPartition> = self.pending.drain().filter(|tp| !kept.contains(tp)).collect();
            for tp in lost {
                self.lose(tp);
            }
        }
        let mut starts = Vec::with_capacity(assignment.len());
        for (tp, committed) in assignment {
            self.pending.remove(tp);
            let start = plan(self.held.get(tp).copied(), *committed, rebuild_records);
            match start {
                Start::Committed => {
                    self.rebuilding.remove(tp);
                }
                Start::At { offset, rebuild_until, drop_held } => {
                    if drop_held {
                        self.lose(tp.clone());
                    }
                    if rebuild_until > offset {
                        self.rebuilding.insert(tp.clone(), Rebuild { from: offset, until: rebuild_until });
                    } else {
                        self.rebuilding.remove(tp);
                    }
                }
            }
            starts.push((tp.clone(), start));
        }
        starts
    }

    /// Takes the partitions revoked since the last call (records of them received before are to be discarded).
    pub(crate) fn take_revoked(&mut self) -> HashSet<TopicPartition> {
        std::mem::take(&mut self.revoked)
    }

    /// Takes the partitions whose engine state is to be dropped now.
    pub(crate) fn take_drops(&mut self) -> Vec<TopicPartition> {
        self.to_drop.drain().collect()
    }

    /// True while some partition is being rebuilt.
    pub(crate) fn rebuilding(&self) -> bool {
        !self.rebuilding.is_empty()
    }

    /// True when the record at `offset` of `tp` only rebuilds state.
    pub(crate) fn state_only(&self, tp: &TopicPartition, offset: i64) -> bool {
        self.rebuilding.get(tp).is_some_and(|r| offset < r.until)
    }

    /// The engine processed (or rebuilt from) the records of `tp` below `next`. Returns the rebuild this
    /// completes, if any.
    pub(crate) fn processed(&mut self, tp: &TopicPartition, next: i64) -> Option<Rebuild> {
        let held = self.held.entry(tp.clone()).or_insert(next);
        *held = (*held).max(next);
        let done = self.rebuilding.get(tp).is_some_and(|r| next >= r.until);
        if done { self.rebuilding.remove(tp) } else { None }
    }

    /// Partitions held.
    #[cfg(test)]
    fn held(&self, tp: &TopicPartition) -> Option<i64> {
        self.held.get(tp).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DetectorConfig;
    use crate::engine::Engine;
    use crate::fixtures::{T0, split_batches, spoofed_flood, syn};
    use netanom_schemas::{DestinationStats, PacketBatch};
    use std::net::IpAddr;

    const SEC: i64 = 1_000_000_000;

    /// One detector's share of the stream: processes packet batches in chunks of 16, appends the destination
    /// statistics of each chunk to `log` (the destinations topic) and applies the log from `dest_next` on.
    struct Owner {
        engine: Engine,
        dest_next: usize,
        anomalies: Vec<String>,
    }

    impl Owner {
        fn process(&mut self, batches: &[PacketBatch], log: &mut Vec<DestinationStats>) {
            let mut out = Vec::new();
            for chunk in batches.chunks(16) {
                for b in chunk {
                    self.engine.process_batch(b, 0, &mut out);
                }
                log.extend(self.engine.end_chunk());
                for d in &log[self.dest_next..] {
                    self.engine.process_destination_stats(d, 0, &mut out);
                }
                self.dest_next = log.len();
            }
            self.anomalies.extend(out.into_iter().map(|a| a.id));
        }
    }

    /// The rebuild contract at the engine level: a detector that takes both partitions over mid-stream and
    /// rebuilds from the records of the 10 s before the hand-over emits, together with the previous owner,
    /// exactly the anomalies of one detector that saw everything (a slow scan and a spoofed flood whose sources
    /// send again after the hand-over span it); started cold, it misses the scan's window across the hand-over.
    #[test]
    fn rebuilt_hand_over_emits_what_one_detector_emits() {
        let mut cfg = DetectorConfig::default();
        cfg.forest.enabled = false;
        // A slow scan: a new port every 400 ms for 30 s, 25 ports per 10 s window (threshold 24).
        let scanner: IpAddr = "10.66.1.1".parse().unwrap();
        let target: IpAddr = "192.168.1.25".parse().unwrap();
        let scan = split_batches(
            scanner,
            (0..75u16).map(|k| syn(T0 + i64::from(k) * 400_000_000, target, 1000 + k)).collect(),
        );
        // A spoofed flood: 700 sources over 9 s from T0 + 10 s, each sending again 2 s later.
        let victim: IpAddr = "10.0.0.5".parse().unwrap();
        let first = spoofed_flood(victim, T0 + 10 * SEC, 700, 9 * SEC, 7);
        let again: Vec<PacketBatch> = first
            .iter()
            .map(|b| {
                let mut b = b.clone();
                b.packets[0].ts_ns += 2 * SEC;
                b
            })
            .collect();
        let mut stream: Vec<PacketBatch> = scan.into_iter().chain(first).chain(again).collect();
        stream.sort_by_key(|b| b.packets[0].ts_ns);
        let hand_over = T0 + 15 * SEC;
        let k = stream.iter().position(|b| b.packets[0].ts_ns >= hand_over).unwrap();
        // R: the records of the 10 s before the hand-over (the longest window).
        let r = k - stream.iter().position(|b| b.packets[0].ts_ns >= hand_over - 10 * SEC).unwrap();

        let owner =
            || Owner { engine: Engine::new(&cfg, crate::Models::default()), dest_next: 0, anomalies: Vec::new() };
        let mut single = owner();
        single.process(&stream, &mut Vec::new());
        let mut expected = single.anomalies.clone();
        expected.sort();
        assert!(expected.iter().filter(|id| id.contains("10.66.1.1")).count() >= 3, "{expected:?}");
        assert!(expected.iter().any(|id| id.contains("10.0.0.5")), "{expected:?}");

        let hand_over_run = |rebuild: bool| {
            let mut log = Vec::new();
            let mut before = owner();
            before.process(&stream[..k], &mut log);
            let mut after = owner();
            after.dest_next = log.len();
            if rebuild {
                for b in &stream[k - r..k] {
                    after.engine.rebuild_batch(b, 0);
                }
                for d in &log[log.len().saturating_sub(r)..] {
                    after.engine.rebuild_destination_stats(d, 0);
                }
                assert!(after.engine.end_chunk().is_empty(), "a rebuild reports no destination statistics");
                assert_eq!(after.engine.stats().batches, 0, "a rebuild is not counted as processing");
            }
            after.process(&stream[k..], &mut log);
            let mut got: Vec<String> = before.anomalies.into_iter().chain(after.anomalies).collect();
            got.sort();
            got
        };
        assert_eq!(hand_over_run(true), expected, "rebuilt hand-over vs one detector");
        let cold = hand_over_run(false);
        let missed: Vec<&String> = expected.iter().filter(|id| !cold.contains(id)).collect();
        assert!(missed.iter().any(|id| id.contains("10.66.1.1")), "cold start should miss the scan window: {cold:?}");
    }

    fn tp(p: i32) -> TopicPartition {
        ("packets".to_string(), p)
    }

    #[test]
    fn plan_covers_every_case() {
        let r = 100;
        assert_eq!(plan(None, None, r), Start::Committed);
        // Nothing held: rebuild the R records before the committed offset (from 0 when fewer exist).
        assert_eq!(plan(None, Some(500), r), Start::At { offset: 400, rebuild_until: 500, drop_held: false });
        assert_eq!(plan(None, Some(40), r), Start::At { offset: 0, rebuild_until: 40, drop_held: false });
        // Rebuild off: start at the committed offset, cold.
        assert_eq!(plan(None, Some(500), 0), Start::At { offset: 500, rebuild_until: 500, drop_held: false });
        // Held up to 300: resume there when the commit is not ahead (our own uncommitted progress) …
        assert_eq!(plan(Some(300), Some(300), r), Start::At { offset: 300, rebuild_until: 300, drop_held: false });
        assert_eq!(plan(Some(300), Some(250), r), Start::At { offset: 300, rebuild_until: 300, drop_held: false });
        assert_eq!(plan(Some(300), None, r), Start::At { offset: 300, rebuild_until: 300, drop_held: false });
        // … replay the gap another member processed when it is at most R …
        assert_eq!(plan(Some(300), Some(400), r), Start::At { offset: 300, rebuild_until: 400, drop_held: false });
        // … else drop the stale state and rebuild.
        assert_eq!(plan(Some(300), Some(401), r), Start::At { offset: 301, rebuild_until: 401, drop_held: true });
        assert_eq!(plan(Some(300), Some(401), 0), Start::At { offset: 401, rebuild_until: 401, drop_held: true });
        // Hostile offsets do not overflow.
        assert!(matches!(plan(Some(i64::MIN), Some(i64::MAX), i64::MAX), Start::At { .. }));
        assert!(matches!(plan(None, Some(i64::MIN), i64::MAX), Start::At { offset: 0, .. }));
    }

    #[test]
    fn eager_rebalance_keeps_what_stays_and_rebuilds_what_arrives() {
        let mut o = Ownership::default();
        // First assignment: nothing committed yet.
        let starts = o.assign(&[(tp(0), None), (tp(1), None)], true, 100);
        assert!(starts.iter().all(|(_, s)| *s == Start::Committed));
        assert_eq!(o.processed(&tp(0), 50), None);
        assert_eq!(o.processed(&tp(1), 70), None);
        // Rebalance: everything revoked, then partition 0 assigned again with partition 2 (new here).
        o.revoke([tp(0), tp(1)], true);
        assert_eq!(o.take_revoked(), HashSet::from([tp(0), tp(1)]));
        assert!(o.take_drops().is_empty(), "nothing is dropped before the assignment ends the rebalance");
        let starts: HashMap<TopicPartition, Start> =
            o.assign(&[(tp(0), Some(50)), (tp(2), Some(900))], true, 100).into_iter().collect();
        assert_eq!(starts[&tp(0)], Start::At { offset: 50, rebuild_until: 50, drop_held: false });
        assert_eq!(starts[&tp(2)], Start::At { offset: 800, rebuild_until: 900, drop_held: false });
        assert_eq!(o.take_drops(), vec![tp(1)], "partition 1 went elsewhere");
        assert_eq!(o.held(&tp(1)), None);
        // Records 800..900 of partition 2 are state-only; the rebuild completes at 900.
        assert!(o.state_only(&tp(2), 800) && o.state_only(&tp(2), 899));
        assert!(!o.state_only(&tp(2), 900) && !o.state_only(&tp(0), 10));
        assert_eq!(o.processed(&tp(2), 850), None);
        assert_eq!(o.processed(&tp(2), 905), Some(Rebuild { from: 800, until: 900 }));
        assert!(!o.state_only(&tp(2), 899), "rebuild over");
    }

    #[test]
    fn rebuild_interrupted_by_a_rebalance_continues_where_it_stopped() {
        let mut o = Ownership::default();
        o.assign(&[(tp(3), Some(1_000))], true, 500);
        assert_eq!(o.processed(&tp(3), 700), None);
        o.revoke([tp(3)], true);
        // Still here after the rebalance; nothing was committed meanwhile (rebuilt records store no offset).
        let starts = o.assign(&[(tp(3), Some(1_000))], true, 500);
        assert_eq!(starts, vec![(tp(3), Start::At { offset: 700, rebuild_until: 1_000, drop_held: false })]);
        assert!(o.take_drops().is_empty());
        assert!(o.state_only(&tp(3), 999));
    }

    #[test]
    fn cooperative_revocation_drops_at_once_and_a_partition_moved_back_is_repaired() {
        let mut o = Ownership::default();
        o.assign(&[(tp(0), Some(10))], false, 100);
        assert_eq!(o.processed(&tp(0), 200), Some(Rebuild { from: 0, until: 10 }));
        o.revoke([tp(0)], false);
        assert_eq!(o.take_drops(), vec![tp(0)]);
        assert_eq!(o.held(&tp(0)), None);
        // Back after another member processed up to 260: rebuilt from 160, nothing held to drop.
        let starts = o.assign(&[(tp(0), Some(260))], false, 100);
        assert_eq!(starts, vec![(tp(0), Start::At { offset: 160, rebuild_until: 260, drop_held: false })]);
        assert!(o.take_drops().is_empty());
    }

    #[test]
    fn stale_state_beyond_reach_is_dropped_before_the_rebuild() {
        let mut o = Ownership::default();
        o.assign(&[(tp(0), None)], true, 100);
        assert_eq!(o.processed(&tp(0), 200), None);
        // The assignment was lost (session timeout) and another member went far ahead meanwhile.
        o.revoke([tp(0)], true);
        let starts = o.assign(&[(tp(0), Some(5_000))], true, 100);
        assert_eq!(starts, vec![(tp(0), Start::At { offset: 4_900, rebuild_until: 5_000, drop_held: true })]);
        assert_eq!(o.take_drops(), vec![tp(0)]);
        assert!(o.state_only(&tp(0), 4_950));
    }
}
