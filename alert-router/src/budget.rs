//! The router's memory budget (`alert_router.memory_budget_mib`) and how its tables count their bytes. The budget
//! is split into fixed shares, one per table that holds per-host or per-anomaly state: the suppression groups
//! ([`crate::suppress`]) 3/8, the open incidents ([`crate::incident`]) 3/8, the anomaly ids remembered for
//! deduplication ([`crate::dedup`]) 1/4. Each table counts its bytes from its capacities and the heap its entries
//! hold (strings, feature lists, origins), keeps them within its share by evicting, and reports them as a gauge.
//! Per-entry figures are checked against a counting allocator by `tests/memory_budget.rs`.
//!
//! What is bounded by counts instead (alerts in flight, digest buffers, the Kafka clients' queues) is outside the
//! budget and sized by its own keys.

use netanom_schemas::bytes::vec_bytes;
use netanom_schemas::{Alert, Anomaly, Contribution, IncidentKind};

/// Default budget: half of the router's manifest limit (`deploy/k8s/base/alert-router.yaml`, 512 MiB).
pub const DEFAULT_BUDGET_MIB: u64 = 256;

/// Largest budget accepted (1 TiB).
pub const MAX_BUDGET_MIB: u64 = 1 << 20;

/// Bytes of each table's share of a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shares {
    /// Suppression groups: 3/8.
    pub suppression: usize,
    /// Open incidents: 3/8.
    pub incidents: usize,
    /// Deduplication ids: 1/4.
    pub dedup: usize,
}

impl Shares {
    /// The shares of `budget_mib`.
    pub fn of(budget_mib: u64) -> Self {
        let total = usize::try_from(budget_mib.min(MAX_BUDGET_MIB)).unwrap_or(usize::MAX).saturating_mul(1 << 20);
        let eighth = total / 8;
        Self { suppression: 3 * eighth, incidents: 3 * eighth, dedup: total - 6 * eighth }
    }
}

/// Bytes of a `BTreeMap` entry of key `K` and value `V`: a leaf node holds 11 entries and is split when full,
/// so entries inserted in increasing order (deadlines) leave nodes about 6 full; the internal nodes add a
/// sixth of that.
pub fn btree_entry_bytes<K, V>() -> usize {
    let leaf = 16 + 11 * (std::mem::size_of::<K>() + std::mem::size_of::<V>());
    leaf / 6 + leaf / 36
}

/// Heap bytes of a feature list.
fn features_heap(features: &Vec<Contribution>) -> usize {
    vec_bytes::<Contribution>(features.capacity()) + features.iter().map(|c| c.name.capacity()).sum::<usize>()
}

/// Heap bytes an anomaly holds (its strings and feature list).
pub fn anomaly_heap(a: &Anomaly) -> usize {
    a.id.capacity()
        + a.host.capacity()
        + a.target.as_ref().map_or(0, String::capacity)
        + a.reason.capacity()
        + a.sample.capacity()
        + a.model_version.capacity()
        + features_heap(&a.features)
}

/// Heap bytes one kind's evidence holds.
pub fn evidence_heap(k: &IncidentKind) -> usize {
    k.target.as_ref().map_or(0, String::capacity)
        + k.reason.capacity()
        + k.sample.capacity()
        + k.model_version.capacity()
        + features_heap(&k.features)
}

/// Heap bytes an alert holds (its strings, feature list and kinds).
pub fn alert_heap(a: &Alert) -> usize {
    a.id.capacity()
        + a.host.capacity()
        + a.target.as_ref().map_or(0, String::capacity)
        + a.reason.capacity()
        + a.sample.capacity()
        + a.model_version.capacity()
        + features_heap(&a.features)
        + vec_bytes::<IncidentKind>(a.kinds.capacity())
        + a.kinds.iter().map(evidence_heap).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shares_add_up_to_the_budget() {
        let s = Shares::of(256);
        assert_eq!((s.suppression, s.incidents, s.dedup), (96 << 20, 96 << 20, 64 << 20));
        assert_eq!(s.suppression + s.incidents + s.dedup, 256 << 20);
        let odd = Shares::of(1);
        assert_eq!(odd.suppression + odd.incidents + odd.dedup, 1 << 20);
        assert_eq!(Shares::of(u64::MAX), Shares::of(MAX_BUDGET_MIB), "clamped, no overflow");
    }
}
