//! In-flight offset tracking for the anomalies topic: which consumed offsets are still waiting for their alert to
//! be delivered, and how far each partition's offset may be stored. Owns no Kafka handle; the router calls
//! `store_offsets` with what this module returns.
//!
//! An offset becomes storable only when it **and every earlier tracked offset of its partition** is done. The
//! value returned is the *next offset to consume* (last contiguous done offset + 1), which is what a Kafka commit
//! carries. Verified against librdkafka 2.12 (rdkafka-sys 4.10, rdkafka 0.39):
//!
//! - `Consumer::store_offset(topic, partition, offset)` calls `rd_kafka_offset_store`, which stores
//!   `offset + 1` ("Store offset `offset` + 1", rdkafka.h): it takes the offset of the last *processed* message.
//! - `Consumer::store_offsets(&TopicPartitionList)` calls `rd_kafka_offsets_store`: "The .offset field is stored
//!   as is, it will NOT be + 1".
//!
//! The router therefore passes [`OffsetTracker::done`]'s result to `store_offsets` unchanged.

use std::collections::{BTreeSet, HashMap};

/// Per-partition state.
#[derive(Debug, Default)]
struct PartitionState {
    /// Tracked offsets not yet done, ascending.
    in_flight: BTreeSet<i64>,
    /// Highest offset ever tracked.
    highest_tracked: Option<i64>,
    /// The last storable position handed out (next offset to consume), or the first tracked offset before any.
    stored: Option<i64>,
}

impl PartitionState {
    /// Next offset to consume such that everything before it is done.
    fn storable(&self) -> Option<i64> {
        match self.in_flight.first() {
            Some(&first) => Some(first),
            None => self.highest_tracked.map(|h| h + 1),
        }
    }
}

/// Tracks in-flight offsets of the partitions of one topic.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<i32, PartitionState>,
}

impl OffsetTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `offset` of `partition` was consumed and is now in flight. Offsets of one partition arrive in
    /// ascending order; an offset at or below the highest tracked one means the partition was rewound (rebalance,
    /// seek), so its state is reset and tracking starts over from `offset`.
    pub fn track(&mut self, partition: i32, offset: i64) {
        let state = self.partitions.entry(partition).or_default();
        if state.highest_tracked.is_some_and(|h| offset <= h) {
            *state = PartitionState::default();
        }
        if state.stored.is_none() {
            state.stored = Some(offset);
        }
        state.in_flight.insert(offset);
        state.highest_tracked = Some(offset);
    }

    /// Marks `offset` of `partition` done. Returns the new storable position (next offset to consume) when it
    /// advanced, `None` otherwise. Unknown offsets are ignored.
    pub fn done(&mut self, partition: i32, offset: i64) -> Option<i64> {
        let state = self.partitions.get_mut(&partition)?;
        if !state.in_flight.remove(&offset) {
            return None;
        }
        let next = state.storable()?;
        if state.stored.is_none_or(|s| next > s) {
            state.stored = Some(next);
            Some(next)
        } else {
            None
        }
    }

    /// The storable position of `partition` (next offset to consume), if anything was tracked there.
    pub fn storable(&self, partition: i32) -> Option<i64> {
        self.partitions.get(&partition).and_then(PartitionState::storable)
    }

    /// Offsets still in flight, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|p| p.in_flight.len()).sum()
    }

    /// Forgets `partition` (revoked from this consumer).
    pub fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn out_of_order_completion_waits_for_the_gap() {
        let mut t = OffsetTracker::new();
        for o in 10..15 {
            t.track(0, o);
        }
        assert_eq!(t.done(0, 12), None);
        assert_eq!(t.done(0, 11), None);
        assert_eq!(t.done(0, 10), Some(13), "10, 11, 12 done: next to consume is 13");
        assert_eq!(t.done(0, 14), None);
        assert_eq!(t.done(0, 13), Some(15));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn partitions_are_independent_and_unknown_offsets_ignored() {
        let mut t = OffsetTracker::new();
        t.track(0, 0);
        t.track(1, 100);
        assert_eq!(t.done(1, 100), Some(101));
        assert_eq!(t.done(0, 5), None);
        assert_eq!(t.done(2, 0), None);
        assert_eq!(t.storable(0), Some(0));
        assert_eq!(t.done(0, 0), Some(1));
    }

    #[test]
    fn gaps_in_offsets_do_not_block() {
        // Compacted topics and transaction markers leave holes; only tracked offsets matter.
        let mut t = OffsetTracker::new();
        t.track(0, 3);
        t.track(0, 7);
        assert_eq!(t.done(0, 7), None);
        assert_eq!(t.done(0, 3), Some(8));
    }

    #[test]
    fn rewind_resets_partition() {
        let mut t = OffsetTracker::new();
        t.track(0, 5);
        t.track(0, 6);
        t.track(0, 5); // re-delivered after a rebalance
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.done(0, 5), Some(6));
    }

    proptest! {
        /// Whatever the completion order, a returned position never passes an offset that is not done, positions
        /// only increase, and after everything is done the position is last + 1.
        #[test]
        fn storable_never_passes_an_unfinished_offset(
            start in 0i64..1000,
            steps in proptest::collection::vec(1i64..4, 1..60),
            seed in any::<u64>(),
        ) {
            let mut offsets = Vec::new();
            let mut o = start;
            for s in steps {
                offsets.push(o);
                o += s;
            }
            let mut t = OffsetTracker::new();
            for &o in &offsets {
                t.track(3, o);
            }
            // Deterministic shuffle from the seed.
            let mut order = offsets.clone();
            let mut x = seed | 1;
            for i in (1..order.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut done = std::collections::BTreeSet::new();
            let mut last = None;
            for o in order {
                done.insert(o);
                if let Some(next) = t.done(3, o) {
                    prop_assert!(offsets.iter().filter(|&&x| x < next).all(|x| done.contains(x)));
                    prop_assert!(last.is_none_or(|l| next > l));
                    last = Some(next);
                }
            }
            prop_assert_eq!(last, Some(offsets[offsets.len() - 1] + 1));
        }
    }
}
