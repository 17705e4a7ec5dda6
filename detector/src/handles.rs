//! Runtime handles a detector is given beside its configuration: where it publishes its model for the scoring
//! API, and which share of the partitions it owns when several run in one process. Created by the caller of
//! [`crate::run`] (the root binary), never read from a configuration file.

use std::sync::Arc;

use tokio::sync::Barrier;

use crate::forest::ModelFeed;

/// What a detector shares with the rest of its process.
#[derive(Debug, Clone, Default)]
pub struct Handles {
    /// Where the detector publishes its current isolation model; the scoring API ([`crate::api::router`])
    /// reads the same feed. Default: a feed of its own that nothing reads.
    pub model_feed: ModelFeed,
    /// With `static_assignment`, this detector is one of several in one process and owns only its share of
    /// the partitions. Default: all partitions.
    pub share: Option<Share>,
}

/// One of `count` detectors in one process (`netanom run --detectors N`): it owns the partitions `p` of both
/// input topics with `p % count == index`. When they drain, every one of them finishes the packets (and
/// reports its last destination statistics) before any of them reads the destination statistics to the end,
/// since those come from all of them.
#[derive(Clone, Debug)]
pub struct Share {
    /// This detector's index, `0..count`.
    pub index: u32,
    /// Detectors sharing the partitions.
    pub count: u32,
    /// Waited on by all `count` detectors between the two drain phases.
    pub packets_drained: Arc<Barrier>,
}

impl Share {
    /// The `count` shares of one process.
    pub fn split(count: u32) -> Vec<Share> {
        let count = count.max(1);
        let barrier = Arc::new(Barrier::new(count as usize));
        (0..count).map(|index| Share { index, count, packets_drained: barrier.clone() }).collect()
    }

    /// Whether partition `p` is this detector's.
    pub fn owns(&self, p: i32) -> bool {
        p.rem_euclid(self.count.max(1) as i32) == self.index as i32
    }
}
