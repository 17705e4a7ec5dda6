//! Packet time: durations as the signed nanoseconds that packet timestamps use, and the packet clock of every
//! packets-topic partition a detector reads.
//!
//! # The skew rule (`[detector.time]`)
//!
//! Each packets-topic partition has its own packet clock ([`PartitionClocks`], the rule of
//! [`netanom_schemas::packet_time`]): a packet batch whose packets lie within `max_ahead` (default 5 min) after
//! and `max_behind` (default 10 min) before the latest accepted packet time of its partition is accepted; any
//! other batch is dead-lettered with the reason (origin topic/partition/offset kept) and moves no clock, so
//! idle eviction, the profile sweep, the victim windows and every rule's window advance only on accepted time.
//! `resync_records` rejected batches in a row that agree with each other re-anchor the partition's clock (a
//! quiet gap longer than `max_ahead`, another capture replayed into the topic); when it moves back, the
//! partition's hosts start cold. The first batch of a partition anchors its clock. A host is keyed to one
//! partition (its source address is the record key), so per-partition clocks make a host's result independent
//! of how partitions interleave.

use std::collections::HashMap;
use std::time::Duration;

use netanom_schemas::packet_time::PacketClock;
pub use netanom_schemas::packet_time::{Admission, SkewConfig, TimeRejection, duration_ns as ns, window_start_ns};

use crate::validation::{ConfigError, Problems};

/// A duration as configuration keys write it (`10s`, `1h 30m`).
pub fn human(d: Duration) -> String {
    humantime_serde::re::humantime::format_duration(d).to_string()
}

/// Checks `[detector.time]` and returns every problem.
pub fn validate(config: &SkewConfig) -> Vec<ConfigError> {
    let mut p = Problems::new("time");
    for (key, problem) in config.validate() {
        p.check(false, key, || problem);
    }
    p.into_vec()
}

/// The packet clocks of the packets-topic partitions a detector reads (bounded by their number).
#[derive(Debug)]
pub struct PartitionClocks {
    rule: SkewConfig,
    clocks: HashMap<i32, PacketClock>,
}

impl PartitionClocks {
    /// No clock yet: each partition's first batch anchors its own.
    pub fn new(rule: &SkewConfig) -> Self {
        Self { rule: rule.clone(), clocks: HashMap::new() }
    }

    /// Decides on a batch of `partition` whose packets span `earliest_ns..=latest_ns`.
    pub fn admit(&mut self, partition: i32, earliest_ns: i64, latest_ns: i64) -> Admission {
        self.clocks.entry(partition).or_default().admit(&self.rule, earliest_ns, latest_ns)
    }

    /// Forgets the clocks of partitions that left this detector.
    pub fn forget(&mut self, partitions: &[i32]) {
        self.clocks.retain(|p, _| !partitions.contains(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_saturates_and_human_matches_the_config_syntax() {
        assert_eq!(ns(Duration::from_millis(1500)), 1_500_000_000);
        assert_eq!(ns(Duration::MAX), i64::MAX);
        assert_eq!(human(Duration::from_secs(600)), "10m");
    }

    #[test]
    fn each_partition_has_its_own_clock() {
        const S: i64 = 1_000_000_000;
        let mut c = PartitionClocks::new(&SkewConfig::default());
        assert_eq!(c.admit(0, 1_000 * S, 1_000 * S), Admission::Accepted);
        // Partition 1 an hour ahead (consumed at another pace): its own anchor, and 0 is not moved by it.
        assert_eq!(c.admit(1, 4_600 * S, 4_600 * S), Admission::Accepted);
        assert_eq!(c.admit(0, 1_001 * S, 1_001 * S), Admission::Accepted);
        assert!(matches!(c.admit(0, 4_600 * S, 4_600 * S), Admission::Rejected(_)));
        c.forget(&[0]);
        assert_eq!(c.admit(0, 4_600 * S, 4_600 * S), Admission::Accepted, "a partition that comes back re-anchors");
        let errors = validate(&SkewConfig { resync_records: 0, ..SkewConfig::default() });
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().starts_with("detector.time.resync_records"), "{}", errors[0]);
    }
}
