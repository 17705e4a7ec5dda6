//! Deduplication of anomalies by their deterministic id, and the partition bookkeeping that keeps it right across
//! rebalances and restarts. Pure bookkeeping: no Kafka I/O, no clock.
//!
//! A detector that crashes, or loses a partition, produces the anomalies of the records after its last committed
//! offset again, with the same ids (`kind:host:window_start`, see the detector's `anomaly` module); an anomaly
//! record can also be redelivered to a router that restarts. The anomalies topic is keyed by host, so every copy of
//! an anomaly is in one partition: [`SeenIds`] remembers the ids accounted for per partition (the last
//! `capacity`, as 64-bit fingerprints) and the router drops an anomaly whose id it already holds, storing its
//! offset as done.
//!
//! # Across rebalances and restarts ([`Ownership`])
//!
//! - A partition this router keeps (an eager rebalance that assigns it again) resumes where the router's own
//!   consumption stopped; its ids are kept.
//! - A partition that arrives with committed offset `c` and nothing held starts at `c − R` (R = the id capacity):
//!   the records below `c` were accounted for by alerts delivered before the commit, so they only put their ids
//!   back into [`SeenIds`] (*ids-only*), and consumption proper starts at `c`. A copy of one of them after `c` is
//!   then dropped: the set survives a restart by being rebuilt from the anomalies topic itself.
//! - A partition that is revoked (lost, in an eager rebalance) is forgotten at once: its pending suppression
//!   groups, in-flight offsets and ids are dropped, so the router stops working on it and its new owner alone
//!   accounts for the records after the committed offset.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use netanom_schemas::bytes::{table_bytes, vec_bytes};

/// Bytes budgeted per remembered id: the worst case of the ring (a buffer of 8-byte fingerprints, at most
/// `dedup_ids` of them) and of the set (buckets of 8 bytes and a control byte, a power of two at most 7/8 full
/// and built with an eighth to spare: up to 18/7 buckets per id), rounded up. One partition full fits in this.
pub const ID_BUDGET_BYTES: usize = 40;

/// The last `capacity` anomaly ids accounted for, per partition of the anomalies topic, in at most the bytes of
/// the dedup share over all partitions (the partition holding the most bytes, besides the one taking an id, gives
/// way first).
///
/// The buffers are sized here, never by the collections themselves: a ring grows to twice its ids (up to
/// `capacity`) when full, and a ring trimmed for the share to a quarter of its buffer gives half of it back, so
/// the bytes counted are the bytes allocated and an abandoned partition does not keep what it once held.
#[derive(Debug)]
pub struct SeenIds {
    capacity: usize,
    /// Bytes at most over every partition (the dedup share).
    share: usize,
    total: usize,
    /// Bytes of the rings' buffers, summed.
    ring_bytes: usize,
    /// Highest capacity `partitions` had: its buckets stay allocated.
    map_capacity: usize,
    partitions: HashMap<i32, Ring>,
    evictions: Evictions,
}

/// Ids forgotten, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evictions {
    /// The partition held `dedup_ids` ids: its oldest went.
    pub capacity: u64,
    /// All partitions together held what the dedup share fits: the oldest ids of the partition holding the most
    /// bytes went, down to a quarter of its buffer, which then shrank by half.
    pub budget: u64,
}

#[derive(Debug, Default)]
struct Ring {
    order: VecDeque<u64>,
    set: HashSet<u64>,
    /// Capacity `set` was built with: its buckets stay allocated until it is rebuilt (its `capacity()` shrinks
    /// as removed ids leave tombstones).
    set_capacity: usize,
}

impl Ring {
    fn bytes(&self) -> usize {
        ring_bytes(self.order.capacity(), self.set_capacity)
    }

    /// The capacities of the buffers with room for one more id: a full ring doubles, up to `limit` ids; a set out
    /// of room (ids or tombstones) is rebuilt with an eighth to spare (its buckets, a power of two, double when
    /// the ids fill them).
    fn grown(&self, limit: usize) -> (usize, usize) {
        let len = self.order.len();
        let order =
            if len < self.order.capacity() { self.order.capacity() } else { (2 * (len + 1)).min(limit).max(len + 1) };
        let set = if self.set.len() < self.set.capacity() { self.set_capacity } else { len + 1 + len / 8 };
        (order, set)
    }

    /// Gives the buffers these capacities (the set is rebuilt when its capacity changes or it is out of room).
    fn resize(&mut self, order: usize, set: usize) {
        if order > self.order.capacity() {
            self.order.reserve_exact(order - self.order.len());
        } else if order < self.order.capacity() {
            self.order.shrink_to(order);
        }
        if set != self.set_capacity || self.set.len() >= self.set.capacity() {
            let mut rebuilt = HashSet::with_capacity(set);
            rebuilt.extend(self.order.iter().copied());
            self.set = rebuilt;
            self.set_capacity = self.set.capacity();
        }
    }
}

/// Bytes of a ring's buffers at these capacities (a set built with `set` has at least 4 buckets, 3 ids).
fn ring_bytes(order: usize, set: usize) -> usize {
    let set = if set == 0 { 0 } else { set.max(3) };
    vec_bytes::<u64>(order) + table_bytes::<u64>(set)
}

impl SeenIds {
    /// Remembers up to `capacity` ids per partition (0: no deduplication), in at most `share` bytes over all
    /// partitions.
    pub fn new(capacity: usize, share: usize) -> Self {
        Self {
            capacity,
            share,
            total: 0,
            ring_bytes: 0,
            map_capacity: 0,
            partitions: HashMap::new(),
            evictions: Evictions::default(),
        }
    }

    /// Records `id` as accounted for in `partition`. Returns false when it already was (a duplicate).
    pub fn insert(&mut self, partition: i32, id: &str) -> bool {
        if self.capacity == 0 {
            return true;
        }
        let fingerprint = fingerprint(id);
        if self.partitions.get(&partition).is_some_and(|r| r.set.contains(&fingerprint)) {
            return false;
        }
        if self.partitions.get(&partition).is_some_and(|r| r.order.len() >= self.capacity) {
            self.forget_oldest(partition);
            self.evictions.capacity += 1;
        }
        self.partitions.entry(partition).or_default();
        self.map_capacity = self.map_capacity.max(self.partitions.capacity());
        // Room first, within the share, so neither buffer grows by itself past what is counted.
        loop {
            let Some(ring) = self.partitions.get(&partition) else { return true };
            let (order, set) = ring.grown(self.capacity);
            let (now, then) = (ring.bytes(), ring_bytes(order, set));
            if self.bytes() - now + then <= self.share {
                if let Some(ring) = self.partitions.get_mut(&partition) {
                    ring.resize(order, set);
                    self.ring_bytes = self.ring_bytes - now + ring.bytes();
                }
                break;
            }
            if !self.trim_largest(partition) {
                // Even with nothing else held the id does not fit the share: it is not remembered.
                return true;
            }
        }
        if let Some(ring) = self.partitions.get_mut(&partition) {
            ring.set.insert(fingerprint);
            ring.order.push_back(fingerprint);
            self.total += 1;
        }
        true
    }

    fn forget_oldest(&mut self, partition: i32) {
        if let Some(ring) = self.partitions.get_mut(&partition)
            && let Some(oldest) = ring.order.pop_front()
        {
            ring.set.remove(&oldest);
            self.total -= 1;
        }
    }

    /// For the share: the partition holding the most bytes besides `growing` (or `growing` itself when it alone
    /// holds any) forgets its oldest ids down to a quarter of its ring's buffer and halves its buffers, so a
    /// partition trimmed slowly does not reallocate per id. False when no partition holds any.
    fn trim_largest(&mut self, growing: i32) -> bool {
        let Some((_, ring)) =
            self.partitions.iter_mut().filter(|(_, r)| r.bytes() > 0).max_by_key(|(p, r)| (**p != growing, r.bytes()))
        else {
            return false;
        };
        let before = ring.bytes();
        let keep = ring.order.len().min(ring.order.capacity() / 4);
        let gone = ring.order.len() - keep;
        for oldest in ring.order.drain(..gone) {
            ring.set.remove(&oldest);
        }
        ring.resize(2 * keep, (2 * keep).min(ring.set_capacity));
        self.ring_bytes = self.ring_bytes - before + ring.bytes();
        self.total -= gone;
        self.evictions.budget += gone as u64;
        true
    }

    /// Forgets the ids of `partition`.
    pub fn forget(&mut self, partition: i32) {
        if let Some(ring) = self.partitions.remove(&partition) {
            self.total -= ring.order.len();
            self.ring_bytes -= ring.bytes();
        }
    }

    /// Ids held, over every partition.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Ids forgotten, by reason.
    pub fn evictions(&self) -> Evictions {
        self.evictions
    }

    /// Bytes the ids hold: the partitions' table and each partition's ring and set from their capacities; at most
    /// the share.
    pub fn bytes(&self) -> usize {
        table_bytes::<(i32, Ring)>(self.map_capacity) + self.ring_bytes
    }

    /// True when no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A 64-bit fingerprint of an id (`DefaultHasher::new`: fixed keys, the same in every instance): two distinct ids
/// share one with probability 2⁻⁶⁴ per pair, about 10⁻¹⁰ over 65,536 ids of one partition.
fn fingerprint(id: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

/// Where an assigned partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At the group's committed offset (`auto.offset.reset` without one).
    Committed,
    /// At `offset`; records below `ids_only_until` only put their ids back.
    At {
        /// First offset to read.
        offset: i64,
        /// Records below this offset are ids-only.
        ids_only_until: i64,
    },
}

/// Which partitions the router works on, shared by the rebalance callback and the main loop (which never holds
/// it across a `recv`, where the callback runs). See the module documentation.
#[derive(Debug, Default)]
pub struct Ownership {
    /// Per partition consumed here: the next offset.
    held: HashMap<i32, i64>,
    /// Per partition being rebuilt: records below this offset are ids-only.
    ids_only: HashMap<i32, i64>,
    /// Partitions lost since the main loop last looked.
    lost: HashSet<i32>,
    /// Eager protocol: partitions revoked at the start of a rebalance, until the assignment that ends it shows
    /// which of them stay.
    pending: HashSet<i32>,
}

impl Ownership {
    /// Partitions revoked. Eager: kept until the assignment that ends the rebalance; cooperative: lost now.
    pub fn revoke(&mut self, partitions: impl IntoIterator<Item = i32>, eager: bool) {
        for p in partitions {
            if eager {
                self.pending.insert(p);
            } else {
                self.lose(p);
            }
        }
    }

    fn lose(&mut self, p: i32) {
        self.held.remove(&p);
        self.ids_only.remove(&p);
        self.lost.insert(p);
    }

    /// Partitions assigned, each with the group's committed offset; returns where each starts. `rebuild` is the
    /// number of records read back ids-only below the committed offset. With the eager protocol `assignment` is
    /// the whole new assignment.
    pub fn assign(&mut self, assignment: &[(i32, Option<i64>)], eager: bool, rebuild: i64) -> Vec<(i32, Start)> {
        if eager {
            let kept: HashSet<i32> = assignment.iter().map(|(p, _)| *p).collect();
            let gone: Vec<i32> = self.pending.drain().filter(|p| !kept.contains(p)).collect();
            for p in gone {
                self.lose(p);
            }
        }
        let mut starts = Vec::with_capacity(assignment.len());
        for &(p, committed) in assignment {
            self.pending.remove(&p);
            let start = match (self.held.get(&p).copied(), committed) {
                // Kept, and nobody else went further: resume where this router stopped.
                (Some(n), c) if c.is_none_or(|c| c <= n) => Start::At { offset: n, ids_only_until: n },
                (held, Some(c)) => {
                    if held.is_some() {
                        // Another member went further meanwhile: what is held is stale.
                        self.lose(p);
                    }
                    Start::At { offset: c.saturating_sub(rebuild.max(0)).max(0), ids_only_until: c }
                }
                (_, None) => Start::Committed,
            };
            match start {
                Start::At { offset, ids_only_until } if ids_only_until > offset => {
                    self.ids_only.insert(p, ids_only_until);
                }
                _ => {
                    self.ids_only.remove(&p);
                }
            }
            starts.push((p, start));
        }
        starts
    }

    /// True when the record at `offset` of partition `p` only puts its id back.
    pub fn ids_only(&self, p: i32, offset: i64) -> bool {
        self.ids_only.get(&p).is_some_and(|until| offset < *until)
    }

    /// The record at `offset` of `p` was consumed.
    pub fn consumed(&mut self, p: i32, offset: i64) {
        let next = self.held.entry(p).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
        if self.ids_only.get(&p).is_some_and(|until| offset + 1 >= *until) {
            self.ids_only.remove(&p);
        }
    }

    /// Takes the partitions lost since the last call: their work is to be forgotten.
    pub fn take_lost(&mut self) -> Vec<i32> {
        self.lost.drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_id_is_a_duplicate_within_its_partition_and_the_memory_is_bounded() {
        let mut seen = SeenIds::new(3, usize::MAX);
        assert!(seen.insert(0, "rate:10.0.0.1:1"));
        assert!(!seen.insert(0, "rate:10.0.0.1:1"), "a copy is a duplicate");
        assert!(seen.insert(1, "rate:10.0.0.1:1"), "partitions are separate");
        for i in 2..=4 {
            assert!(seen.insert(0, &format!("rate:10.0.0.1:{i}")));
        }
        assert_eq!(seen.len(), 4, "3 in partition 0, 1 in partition 1");
        assert!(seen.insert(0, "rate:10.0.0.1:1"), "the oldest id was pushed out");
        seen.forget(0);
        assert_eq!(seen.len(), 1);
        let mut off = SeenIds::new(0, usize::MAX);
        assert!(off.insert(0, "a") && off.insert(0, "a"), "capacity 0 keeps nothing");
        assert!(off.is_empty());
    }

    #[test]
    fn the_ids_of_all_partitions_stay_within_the_share_the_largest_giving_way() {
        // One partition full fits the share (as the configuration requires), two do not.
        let share = 64 * ID_BUDGET_BYTES;
        let mut seen = SeenIds::new(64, share);
        for i in 0..64 {
            assert!(seen.insert(0, &format!("a{i}")));
        }
        assert_eq!(seen.evictions(), Evictions::default(), "one partition full fits: {} bytes", seen.bytes());
        for i in 0..32 {
            assert!(seen.insert(1, &format!("b{i}")));
            assert!(seen.bytes() <= share, "{} bytes over {share}", seen.bytes());
        }
        let evictions = seen.evictions();
        assert_eq!(evictions.capacity, 0);
        assert_eq!(evictions.budget, 48, "partition 0 gave its oldest ids down to a quarter of its buffer");
        assert_eq!(seen.len(), 16 + 32);
        assert!((0..32).all(|i| !seen.insert(1, &format!("b{i}"))), "the growing partition kept its ids");
        assert!((48..64).all(|i| !seen.insert(0, &format!("a{i}"))), "partition 0 kept its newest ids");
        assert!(seen.insert(0, "a0"), "partition 0's oldest went");
    }

    #[test]
    fn traffic_moving_across_partitions_stays_within_the_share_and_newest_ids_are_still_duplicates() {
        // Each partition filled past its capacity and then abandoned for the next: an abandoned partition gives
        // its buffers back when it is trimmed, so the bytes stay within the share however many partitions pass.
        let (capacity, share) = (1024, 1024 * ID_BUDGET_BYTES);
        let mut seen = SeenIds::new(capacity, share);
        let mut peak = 0;
        for p in 0..40 {
            for i in 0..capacity + 100 {
                assert!(seen.insert(p, &format!("{p}:{i}")));
                peak = peak.max(seen.bytes());
                assert!(seen.bytes() <= share, "partition {p}, id {i}: {} bytes over {share}", seen.bytes());
            }
            let newest = (capacity + 100 - 64..capacity + 100).map(|i| format!("{p}:{i}"));
            for id in newest {
                assert!(!seen.insert(p, &id), "{id} was seen last in partition {p}: a duplicate");
            }
        }
        let evictions = seen.evictions();
        assert_eq!(evictions.capacity, 40 * 100);
        assert!(evictions.budget > 39 * capacity as u64 / 2, "the abandoned partitions gave way: {evictions:?}");
        assert!(peak > share / 2, "the share was used: {peak} of {share}");
    }

    #[test]
    fn a_partition_arriving_with_a_commit_is_rebuilt_ids_only() {
        let mut o = Ownership::default();
        let starts = o.assign(&[(0, Some(500)), (1, Some(40)), (2, None)], true, 100);
        assert_eq!(
            starts,
            vec![
                (0, Start::At { offset: 400, ids_only_until: 500 }),
                (1, Start::At { offset: 0, ids_only_until: 40 }),
                (2, Start::Committed)
            ]
        );
        assert!(o.ids_only(0, 400) && o.ids_only(0, 499) && !o.ids_only(0, 500) && !o.ids_only(2, 0));
        o.consumed(0, 499);
        assert!(!o.ids_only(0, 450), "rebuild over");
        // Rebuild off: start at the commit.
        let mut o = Ownership::default();
        assert_eq!(o.assign(&[(0, Some(500))], true, 0), vec![(0, Start::At { offset: 500, ids_only_until: 500 })]);
        assert!(!o.ids_only(0, 499));
    }

    #[test]
    fn eager_rebalance_keeps_what_stays_and_forgets_what_leaves() {
        let mut o = Ownership::default();
        o.assign(&[(0, None), (1, None)], true, 100);
        o.consumed(0, 49);
        o.consumed(1, 69);
        o.revoke([0, 1], true);
        assert!(o.take_lost().is_empty(), "nothing is lost before the assignment ends the rebalance");
        let starts = o.assign(&[(0, Some(30)), (2, Some(900))], true, 100);
        assert_eq!(
            starts,
            vec![
                (0, Start::At { offset: 50, ids_only_until: 50 }),
                (2, Start::At { offset: 800, ids_only_until: 900 })
            ]
        );
        assert_eq!(o.take_lost(), vec![1]);
        // Back after another member went further: stale, forgotten and rebuilt.
        o.revoke([0, 2], true);
        let starts = o.assign(&[(0, Some(700))], true, 100);
        assert_eq!(starts, vec![(0, Start::At { offset: 600, ids_only_until: 700 })]);
        let mut lost = o.take_lost();
        lost.sort();
        assert_eq!(lost, vec![0, 2]);
    }

    #[test]
    fn cooperative_revocation_is_lost_at_once() {
        let mut o = Ownership::default();
        o.assign(&[(3, None)], false, 10);
        o.consumed(3, 5);
        o.revoke([3], false);
        assert_eq!(o.take_lost(), vec![3]);
        assert_eq!(o.assign(&[(3, Some(6))], false, 10), vec![(3, Start::At { offset: 0, ids_only_until: 6 })]);
    }
}
