//! Per-host state: the map from source address to everything the source-side detectors remember about it,
//! bounded in bytes by its share (7/8) of `state.memory_budget_mib` (and in hosts by `state.max_hosts`, derived
//! from the budget unless set) with idle eviction in packet time and eviction counters by reason, plus the Kafka
//! partition each host came from.
//!
//! # Memory budget
//!
//! The map counts its bytes: its hash table (from its capacity) plus, per host, the heap its kinds' growing
//! tables hold (`DetectorKind::heap_bytes`, from their capacities) and [`QUIET_HOST_HEAP_BYTES`] for the small
//! allocations every host makes; a host's heap is accounted after each of its batches. The budget bounds these
//! bytes with the table counted twice ([`HostMap::peak_bytes`]): a rebuild after evictions, like a growth,
//! allocates the fresh table while the old one still lives. When a new host does not
//! fit (the hosts or the bytes), idle hosts go first; then hosts are evicted down to 7/8 of both bounds, those
//! without open suspicion (`DetectorKind::open_suspicion`: a partial scan, a brute-force count, a beacon
//! series) last. Among the others, hosts evicted before and back since go after those never seen before: the
//! map remembers the addresses it evicted in a fixed bitset (1/32 of the budget, two generations), so a slow
//! scanner whose first packet was pushed out by a flood of one-packet spoofed sources keeps its state from its
//! second packet on, long enough to show open suspicion. Evictions are counted by reason: `idle`, `capacity`
//! (a host without open suspicion) and `capacity_suspicious`.
//!
//! # Partition ownership
//!
//! Detectors form one consumer group; each owns the hosts whose packet batches land in its partitions (the
//! record key is the source address, so a host always maps to one partition). When a rebalance revokes
//! partitions, [`HostMap::revoke_partitions`] drops the state of every host that came from them: that state
//! now belongs to another detector. Nothing is handed over: the new owner rebuilds the moved hosts' state by
//! reading the last `detector.state.rebuild_records` records of the partition before its committed offset again,
//! for state only (see `crate::ownership`), so a scan in progress across the rebalance is counted as by one
//! detector. With the rebuild off the new owner starts cold: rate rings and fanout windows refill from new
//! traffic and cooldowns restart (a short blind spot, never a double count).

use foldhash::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::bytes::{table_bytes, vec_bytes};
use crate::kind::DetectorKind;
use crate::kinds::for_each_kind;
use crate::time::ns;
use crate::validation::{ConfigError, Problems};
use serde::Deserialize;

/// `[detector.state]`: the per-host state map.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Bytes the host map and the victim tables may hold, in MiB: the victim tables take 1/8 (`VICTIM_SHARE`,
    /// see `crate::victim`), the host map the rest, its table and every host's state (see the module
    /// documentation). The default fits the detector's manifest limit of 2 GiB next to the scoring API's bodies, the victim
    /// tables and the Kafka queues (docs/memory.md). 1..=1048576. Default 1024.
    pub memory_budget_mib: u64,
    /// Most hosts (source addresses) tracked at once, overriding the number the budget fits
    /// ([`StateConfig::host_capacity`]); must fit the budget at the bytes of a quiet host. Default: none (from
    /// the budget).
    pub max_hosts: Option<usize>,
    /// A host not seen for this long in packet time is evicted. Default 300 s.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Records per partition read again to rebuild state when a rebalance moves a partition (of the packets or
    /// the destinations topic) to this detector: it starts `rebuild_records` before the group's committed
    /// offset and feeds those records to the detectors for state only (no anomaly, no destination statistics,
    /// no offset stored), so moved hosts keep their rate rings, fan-out windows and cooldowns and the victim
    /// sums their windows. Exact when the records cover the longest window (`fanout.window`, `victim.window`,
    /// `rate.cooldown`) and the last `rate.window_packets` connection openings of a partition's hosts: at
    /// least the records one partition receives in 10 s of packet time at peak. A rebuild costs reading that
    /// many records per moved partition. 0 turns it off (moved hosts start cold). Default 20000, 0..=10000000.
    pub rebuild_records: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            memory_budget_mib: 1024,
            max_hosts: None,
            idle_timeout: Duration::from_secs(300),
            rebuild_records: 20_000,
        }
    }
}

/// Heap bytes of a host that sent one packet, as the allocator counts them: measured with a counting
/// allocator over one-packet hosts (`cargo test --release -p netanom-detector --test memory_budget --
/// --nocapture`, which checks the figure).
pub const QUIET_HOST_HEAP_BYTES: usize = 820;

/// The victim tables' share of `memory_budget_mib`: 1/`VICTIM_SHARE` (the host map has the rest).
pub const VICTIM_SHARE: u64 = 8;

/// The share of the host map's budget for the bitset of evicted addresses: 1/`RETURNING_SHARE`.
const RETURNING_SHARE: u64 = 32;

/// Addresses evicted without suspicion, one bit each in a fixed bitset (a one-hash Bloom filter), in two
/// generations: when the current one has taken an eighth of its bits, the older one is cleared and becomes the
/// current one, so a false positive stays below about one in four and an address is remembered for at least
/// one generation.
#[derive(Debug)]
struct Evicted {
    bits: [Vec<u64>; 2],
    current: usize,
    marked: usize,
}

impl Evicted {
    fn new(bytes: usize) -> Self {
        let words = (bytes / 16).max(1);
        Self { bits: [vec![0; words], vec![0; words]], current: 0, marked: 0 }
    }

    fn bit(&self, host: &IpAddr) -> (usize, u64) {
        use std::hash::BuildHasher as _;
        let h = foldhash::fast::FixedState::with_seed(0x6e65_7461_6e6f_6d00).hash_one(host);
        let n = self.bits[0].len() * 64;
        let i = usize::try_from(h % n as u64).unwrap_or(0);
        (i / 64, 1u64 << (i % 64))
    }

    fn mark(&mut self, host: &IpAddr) {
        if self.marked >= self.bits[0].len() * 64 / 8 {
            self.current ^= 1;
            self.bits[self.current].fill(0);
            self.marked = 0;
        }
        let (word, bit) = self.bit(host);
        self.bits[self.current][word] |= bit;
        self.marked += 1;
    }

    fn contains(&self, host: &IpAddr) -> bool {
        let (word, bit) = self.bit(host);
        self.bits.iter().any(|b| b[word] & bit != 0)
    }

    fn bytes(&self) -> usize {
        vec_bytes::<u64>(self.bits[0].len() * 2)
    }
}

/// Bytes `hosts` quiet hosts may take in the host map at once (without its bitset of evicted addresses): the
/// table counted twice, because a rebuild (or a growth) allocates the new table while the old one still lives.
pub fn quiet_hosts_bytes(hosts: usize) -> usize {
    table_bytes::<(IpAddr, HostState)>(hosts)
        .saturating_mul(2)
        .saturating_add(hosts.saturating_mul(QUIET_HOST_HEAP_BYTES))
}

impl StateConfig {
    /// Checks `[detector.state]` and returns every problem.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut p = Problems::new("state");
        p.check((1..=1_048_576).contains(&self.memory_budget_mib), "memory_budget_mib", || {
            format!("must be in 1..=1048576, got {}", self.memory_budget_mib)
        });
        if let Some(n) = self.max_hosts {
            p.check(n >= 1, "max_hosts", || format!("must be >= 1, got {n}"));
            let needed = quiet_hosts_bytes(n) as u64 + self.budget_bytes() / RETURNING_SHARE;
            p.check(needed <= self.budget_bytes(), "max_hosts", || {
                format!(
                    "{n} hosts need {} MiB even while quiet, more than memory_budget_mib = {}: raise the budget or \
                     lower max_hosts (the budget fits {})",
                    needed.div_ceil(1 << 20),
                    self.memory_budget_mib,
                    self.host_capacity()
                )
            });
        }
        p.check(!self.idle_timeout.is_zero(), "idle_timeout", || "must be > 0".into());
        p.check(self.rebuild_records <= 10_000_000, "rebuild_records", || {
            format!("must be in 0..=10000000, got {}", self.rebuild_records)
        });
        p.into_vec()
    }

    /// The host map's share of the budget in bytes: all of `memory_budget_mib` but the victim tables' share
    /// ([`StateConfig::victim_budget_bytes`]).
    pub fn budget_bytes(&self) -> u64 {
        let all = self.memory_budget_mib.saturating_mul(1 << 20);
        all - all / VICTIM_SHARE
    }

    /// The victim tables' share of `memory_budget_mib` in bytes: 1/[`VICTIM_SHARE`] (see `crate::victim`).
    pub fn victim_budget_bytes(&self) -> u64 {
        self.memory_budget_mib.saturating_mul(1 << 20) / VICTIM_SHARE
    }

    /// Most hosts tracked at once: `max_hosts` when set, else the most quiet hosts the budget fits.
    pub fn host_capacity(&self) -> usize {
        if let Some(n) = self.max_hosts {
            return n.max(1);
        }
        let budget = usize::try_from(self.budget_bytes() - self.budget_bytes() / RETURNING_SHARE).unwrap_or(usize::MAX);
        // The largest hash table whose hosts, all quiet, fit: then halve the search within its bucket count.
        let (mut lo, mut hi) = (1usize, budget / std::mem::size_of::<HostState>().max(1) + 1);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if quiet_hosts_bytes(mid) <= budget { lo = mid } else { hi = mid - 1 }
        }
        lo
    }
}

/// Generates [`HostState`] with the per-host state of every registered kind ([`crate::kinds`]).
macro_rules! host_state {
    ($( $(#[$doc:meta])* $section:ident: $kind:ty, )*) => {
        /// What the source-side detectors remember about one host: a field per registered kind, named after
        /// its section.
        #[derive(Debug, Clone, Default)]
        pub struct HostState {
            /// Packets-topic partition the host's batches come from.
            pub partition: i32,
            /// Latest packet time seen from the host, ns.
            pub last_seen_ns: i64,
            /// When the host was active: where each anomaly's evidence begins.
            pub activity: Activity,
            /// Heap bytes last accounted to the host map for this host.
            accounted_bytes: usize,
            /// The host was evicted before (as far as the map remembers) and came back.
            returning: bool,
            $(
                #[doc = concat!("State of the kind of `[detector.", stringify!($section), "]`.")]
                pub $section: <$kind as DetectorKind>::State,
            )*
        }

        impl HostState {
            /// Some kind holds open suspicion about the host (`DetectorKind::open_suspicion`).
            pub fn open_suspicion(&self) -> bool {
                false $( || <$kind as DetectorKind>::open_suspicion(&self.$section) )*
            }

            /// Heap bytes the host holds: its activity spans and its kinds' tables.
            pub fn heap_bytes(&self) -> usize {
                vec_bytes::<(i64, i64)>(self.activity.spans.capacity())
                    $( + <$kind as DetectorKind>::heap_bytes(&self.$section) )*
            }
        }
    };
}
for_each_kind!(host_state);

/// Gap of packet time that separates two spans of a host's activity.
const ACTIVITY_GAP_NS: i64 = 1_000_000_000;
/// Spans of activity remembered per host.
const ACTIVITY_SPANS: usize = 8;

/// When one host was active, to tell where an anomaly's evidence begins: a detector's window starts on its own
/// grid (a tumbling window, a profile interval), the evidence at the host's first packet inside it. Remembers the
/// host's first packet and its last `ACTIVITY_SPANS` spans of activity (packets less than 1 s apart); bounded.
#[derive(Debug, Clone, Default)]
pub struct Activity {
    /// The host's first packet, ns; `None` before any.
    first_ns: Option<i64>,
    /// Spans (first, last packet), oldest first.
    spans: std::collections::VecDeque<(i64, i64)>,
}

impl Activity {
    /// Records a batch of the host's packets from `first_ns` to `last_ns`.
    pub fn observe(&mut self, first_ns: i64, last_ns: i64) {
        let (first_ns, last_ns) = (first_ns.min(last_ns), first_ns.max(last_ns));
        self.first_ns = Some(self.first_ns.map_or(first_ns, |f| f.min(first_ns)));
        match self.spans.back_mut() {
            Some(span) if first_ns.saturating_sub(span.1) <= ACTIVITY_GAP_NS => {
                span.0 = span.0.min(first_ns);
                span.1 = span.1.max(last_ns);
            }
            _ => {
                if self.spans.len() == ACTIVITY_SPANS {
                    self.spans.pop_front();
                }
                self.spans.push_back((first_ns, last_ns));
            }
        }
    }

    /// The host's first packet at or after `window_start_ns` when it is known (the window began while the host
    /// was quiet), else `window_start_ns`: never before the window, never after `window_end_ns`.
    pub fn evidence_start(&self, window_start_ns: i64, window_end_ns: i64) -> i64 {
        let Some(first_ns) = self.first_ns else { return window_start_ns };
        let start = if window_start_ns <= first_ns {
            first_ns
        } else {
            let mut previous_end: Option<i64> = None;
            let mut found = window_start_ns;
            for &(s, e) in &self.spans {
                if window_start_ns <= s {
                    // The host was quiet from the previous span to `s`; unknown before the oldest span kept.
                    if previous_end.is_some_and(|p| p < window_start_ns) || s == first_ns {
                        found = s;
                    }
                    break;
                }
                if window_start_ns <= e {
                    break;
                }
                previous_end = Some(e);
            }
            found
        };
        if start <= window_end_ns { start } else { window_start_ns }
    }
}

/// Evictions of one table, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evictions {
    /// Idle longer than the idle timeout.
    pub idle: u64,
    /// Evicted to make room, without open suspicion.
    pub capacity: u64,
    /// Evicted to make room although it held open suspicion: nothing else was left to evict.
    pub capacity_suspicious: u64,
}

impl Evictions {
    /// Every count with its reason, as the `evictions{table,reason}` metric labels it.
    pub fn by_reason(&self) -> [(&'static str, u64); 3] {
        [("idle", self.idle), ("capacity", self.capacity), ("capacity_suspicious", self.capacity_suspicious)]
    }

    /// All evictions.
    pub fn total(&self) -> u64 {
        self.idle + self.capacity + self.capacity_suspicious
    }
}

/// The bounded host map.
#[derive(Debug)]
pub struct HostMap {
    hosts: HashMap<IpAddr, HostState>,
    max_hosts: usize,
    budget_bytes: usize,
    /// Sum of the hosts' `accounted_bytes`.
    heap_bytes: usize,
    /// The table's largest capacity since it was last rebuilt (removals leave their slots taken until then).
    table_capacity: usize,
    /// Addresses evicted without suspicion.
    evicted: Evicted,
    idle_ns: i64,
    /// Per packets-topic partition: (packet clock, packet time of the last idle sweep).
    clocks: HashMap<i32, (i64, i64)>,
    evictions: Evictions,
}

impl HostMap {
    /// An empty map with the configured bounds.
    pub fn new(config: &StateConfig) -> Self {
        Self {
            hosts: HashMap::default(),
            max_hosts: config.host_capacity(),
            budget_bytes: usize::try_from(config.budget_bytes()).unwrap_or(usize::MAX),
            heap_bytes: 0,
            table_capacity: 0,
            evicted: Evicted::new(usize::try_from(config.budget_bytes() / RETURNING_SHARE).unwrap_or(usize::MAX)),
            idle_ns: ns(config.idle_timeout).max(1),
            clocks: HashMap::default(),
            evictions: Evictions::default(),
        }
    }

    /// The state of `host`, created if new (evicting idle hosts or, if none is, making room as the module
    /// documentation says when the map is full in hosts or bytes). Advances the packet clock of `partition` to
    /// `ts_ns`: pass only accepted packet time (see `crate::time`).
    pub fn entry(&mut self, host: IpAddr, partition: i32, ts_ns: i64) -> &mut HostState {
        let clock = self.clocks.entry(partition).or_insert((ts_ns, i64::MIN));
        clock.0 = clock.0.max(ts_ns);
        if !self.hosts.contains_key(&host) {
            if self.full() {
                self.sweep_idle();
                if self.full() {
                    self.make_room();
                }
            }
            let mut s = HostState { returning: self.evicted.contains(&host), ..HostState::default() };
            s.accounted_bytes = s.heap_bytes();
            self.heap_bytes += s.accounted_bytes;
            self.hosts.insert(host, s);
            self.table_capacity = self.table_capacity.max(self.hosts.capacity());
        }
        let s = self.hosts.entry(host).or_default();
        s.partition = partition;
        s.last_seen_ns = s.last_seen_ns.max(ts_ns);
        s
    }

    /// Accounts the heap `host` holds now, after its kinds changed its state.
    pub fn settle(&mut self, host: &IpAddr) {
        if let Some(s) = self.hosts.get_mut(host) {
            let now = s.heap_bytes();
            self.heap_bytes = self.heap_bytes.saturating_sub(s.accounted_bytes).saturating_add(now);
            s.accounted_bytes = now;
        }
        if self.peak_bytes() > self.budget_bytes {
            self.make_room();
        }
    }

    /// Bytes of the hash table, from its largest capacity since it was last rebuilt.
    fn table_bytes(&self) -> usize {
        table_bytes::<(IpAddr, HostState)>(self.table_capacity.max(self.hosts.capacity()))
    }

    /// Bytes the map may hold at once: [`HostMap::bytes`] with the table counted twice, since a rebuild
    /// allocates the fresh table while the old one still lives. The budget bounds this figure.
    pub fn peak_bytes(&self) -> usize {
        self.bytes().saturating_add(self.table_bytes())
    }

    /// Bytes the map holds: its table and its hosts' heap as last accounted.
    pub fn bytes(&self) -> usize {
        self.table_bytes().saturating_add(self.heap_bytes).saturating_add(self.evicted.bytes())
    }

    /// Moves the hosts into a fresh table of the same capacity, so that the slots of removed hosts are free
    /// again (a table grows when its free slots run out, removed ones included).
    fn rebuild(&mut self) {
        let capacity = self.table_capacity.max(self.hosts.len());
        let mut fresh = HashMap::with_capacity_and_hasher(capacity, Default::default());
        fresh.extend(self.hosts.drain());
        self.hosts = fresh;
        self.table_capacity = self.hosts.capacity();
    }

    /// A new host would not fit (the table counted twice, see [`HostMap::peak_bytes`]).
    fn full(&self) -> bool {
        self.hosts.len() >= self.max_hosts
            || self.peak_bytes().saturating_add(QUIET_HOST_HEAP_BYTES) > self.budget_bytes
    }

    /// Looks a host up.
    pub fn get(&self, host: &IpAddr) -> Option<&HostState> {
        self.hosts.get(host)
    }

    /// Looks a host up for changing its state (without touching its last-seen time).
    pub fn get_mut(&mut self, host: &IpAddr) -> Option<&mut HostState> {
        self.hosts.get_mut(host)
    }

    /// Every host, in no particular order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&IpAddr, &mut HostState)> {
        self.hosts.iter_mut()
    }

    /// The packet clock of `partition`: the latest packet time seen from its hosts, ns (`i64::MIN` before the
    /// first). Each partition has its own, so how partitions interleave never changes a host's result.
    pub fn clock_ns(&self, partition: i32) -> i64 {
        self.clocks.get(&partition).map_or(i64::MIN, |c| c.0)
    }

    /// The hosts of one partition, in no particular order.
    pub fn hosts_of(&mut self, partition: i32) -> impl Iterator<Item = (IpAddr, &mut HostState)> {
        self.hosts.iter_mut().filter(move |(_, s)| s.partition == partition).map(|(h, s)| (*h, s))
    }

    /// Evicts hosts idle for longer than the idle timeout in their partition's packet time, when some partition's
    /// clock moved a quarter of it since its last sweep. Returns how many were evicted.
    pub fn maybe_sweep(&mut self) -> usize {
        let quarter = self.idle_ns / 4;
        if !self.clocks.values().any(|(now, last)| now.saturating_sub(*last) >= quarter) {
            return 0;
        }
        self.sweep_idle()
    }

    fn sweep_idle(&mut self) -> usize {
        for c in self.clocks.values_mut() {
            c.1 = c.0;
        }
        let (clocks, idle_ns) = (&self.clocks, self.idle_ns);
        let before = self.hosts.len();
        let mut freed = 0;
        self.hosts.retain(|_, s| {
            let now = clocks.get(&s.partition).map_or(i64::MIN, |c| c.0);
            let keep = s.last_seen_ns >= now.saturating_sub(idle_ns);
            if !keep {
                freed += s.accounted_bytes;
            }
            keep
        });
        self.heap_bytes = self.heap_bytes.saturating_sub(freed);
        let n = before - self.hosts.len();
        self.evictions.idle += n as u64;
        if n > 0 {
            self.rebuild();
            tracing::debug!(evicted = n, reason = "idle", hosts = self.hosts.len(), "hosts evicted");
        }
        n
    }

    /// Evicts hosts down to 7/8 of the host bound and of the byte budget (at least one): those without open
    /// suspicion first, least recently seen first; those with open suspicion only when no other is left (an
    /// O(len log len) ordering, amortised over the eighth of the map it frees).
    fn make_room(&mut self) {
        let mut order: Vec<(bool, bool, i64, IpAddr)> =
            self.hosts.iter().map(|(h, s)| (s.open_suspicion(), s.returning, s.last_seen_ns, *h)).collect();
        order.sort_unstable();
        // The rebuild below holds two tables at once.
        let table = self.table_bytes().saturating_mul(2).saturating_add(self.evicted.bytes());
        let heap_target = (self.budget_bytes / 8 * 7).saturating_sub(table);
        let hosts_target = self.max_hosts / 8 * 7;
        let (mut quiet, mut suspicious) = (0u64, 0u64);
        for (open, _, _, host) in order {
            let done = self.hosts.len() <= hosts_target && self.heap_bytes <= heap_target;
            if done && quiet + suspicious > 0 {
                break;
            }
            if let Some(s) = self.hosts.remove(&host) {
                self.heap_bytes = self.heap_bytes.saturating_sub(s.accounted_bytes);
                if open {
                    suspicious += 1;
                } else {
                    quiet += 1;
                    self.evicted.mark(&host);
                }
            }
        }
        self.rebuild();
        self.evictions.capacity += quiet;
        self.evictions.capacity_suspicious += suspicious;
        tracing::debug!(quiet, suspicious, hosts = self.hosts.len(), bytes = self.bytes(), "hosts evicted");
    }

    /// Drops the state of every host that came from one of `partitions` (they were revoked in a rebalance).
    /// Returns how many hosts were dropped. Not counted as evictions.
    pub fn revoke_partitions(&mut self, partitions: &[i32]) -> usize {
        let before = self.hosts.len();
        let mut freed = 0;
        self.hosts.retain(|_, s| {
            let keep = !partitions.contains(&s.partition);
            if !keep {
                freed += s.accounted_bytes;
            }
            keep
        });
        self.heap_bytes = self.heap_bytes.saturating_sub(freed);
        self.clocks.retain(|p, _| !partitions.contains(p));
        before - self.hosts.len()
    }

    /// Hosts tracked.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// True when no host is tracked.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Hosts evicted so far (idle or capacity).
    pub fn evictions(&self) -> u64 {
        self.evictions.total()
    }

    /// Hosts evicted so far, by reason.
    pub fn evictions_by_reason(&self) -> Evictions {
        self.evictions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn evidence_starts_at_the_hosts_first_packet_in_the_window() {
        const S: i64 = 1_000_000_000;
        let mut a = Activity::default();
        assert_eq!(a.evidence_start(0, 60 * S), 0, "nothing known");
        // Active 5.2..7 s and 30..31 s, then 45..50 s.
        a.observe(5 * S + S / 5, 6 * S);
        a.observe(6 * S + S / 2, 7 * S);
        a.observe(30 * S, 31 * S);
        a.observe(45 * S, 50 * S);
        assert_eq!(a.evidence_start(0, 60 * S), 5 * S + S / 5, "a window opened before the first packet");
        assert_eq!(a.evidence_start(10 * S, 60 * S), 30 * S, "quiet from 7 s to 30 s");
        assert_eq!(a.evidence_start(40 * S, 60 * S), 45 * S);
        assert_eq!(a.evidence_start(46 * S, 60 * S), 46 * S, "inside a span: the window start");
        assert_eq!(a.evidence_start(40 * S, 44 * S), 40 * S, "never after the window's end");
        // Older spans forgotten: before the oldest kept, nothing is known.
        for i in 0..ACTIVITY_SPANS as i64 {
            a.observe((100 + 10 * i) * S, (101 + 10 * i) * S);
        }
        assert_eq!(a.evidence_start(10 * S, 200 * S), 10 * S);
        assert_eq!(a.evidence_start(95 * S, 200 * S), 95 * S, "the span before 100 s is forgotten");
        assert_eq!(a.evidence_start(102 * S, 200 * S), 110 * S);
    }

    fn ip(i: u32) -> IpAddr {
        IpAddr::from(i.to_be_bytes())
    }

    #[test]
    fn capacity_is_never_exceeded_and_evictions_are_counted() {
        let mut m = HostMap::new(&StateConfig {
            max_hosts: Some(100),
            idle_timeout: Duration::from_secs(300),
            ..StateConfig::default()
        });
        for i in 0..1_000u32 {
            m.entry(ip(i), 0, i64::from(i));
            assert!(m.len() <= 100);
        }
        assert_eq!(m.evictions() as usize + m.len(), 1_000);
        // The most recent host survives; the oldest does not.
        assert!(m.get(&ip(999)).is_some());
        assert!(m.get(&ip(0)).is_none());
    }

    #[test]
    fn idle_hosts_are_evicted_in_packet_time() {
        let sec = 1_000_000_000i64;
        let mut m = HostMap::new(&StateConfig {
            max_hosts: Some(1000),
            idle_timeout: Duration::from_secs(300),
            ..StateConfig::default()
        });
        m.entry(ip(1), 0, 0);
        m.entry(ip(2), 0, 0);
        m.entry(ip(2), 0, 200 * sec);
        assert_eq!(m.maybe_sweep(), 0, "nobody idle for 300 s yet");
        m.entry(ip(3), 0, 301 * sec);
        assert_eq!(m.maybe_sweep(), 1);
        assert!(m.get(&ip(1)).is_none());
        assert!(m.get(&ip(2)).is_some());
        assert_eq!(m.evictions(), 1);
    }

    #[test]
    fn each_partition_evicts_on_its_own_packet_time() {
        let sec = 1_000_000_000i64;
        let mut m = HostMap::new(&StateConfig::default());
        m.entry(ip(1), 0, 0);
        // Partition 1 is consumed an hour ahead: partition 0's quiet host is not idle in its own time.
        m.entry(ip(2), 1, 3_600 * sec);
        m.entry(ip(3), 1, 4_000 * sec);
        m.maybe_sweep();
        assert!(m.get(&ip(1)).is_some() && m.get(&ip(2)).is_none(), "idle in partition 1's time only");
        assert_eq!((m.clock_ns(0), m.clock_ns(1), m.clock_ns(7)), (0, 4_000 * sec, i64::MIN));
        m.entry(ip(4), 0, 301 * sec);
        m.maybe_sweep();
        assert!(m.get(&ip(1)).is_none() && m.get(&ip(4)).is_some());
    }

    #[test]
    fn revocation_drops_hosts_of_revoked_partitions_only() {
        let mut m = HostMap::new(&StateConfig::default());
        let forest = crate::forest::ForestConfig { confirm_batches: 1, ..Default::default() };
        for i in 0..30u32 {
            let s = m.entry(ip(i), (i % 3) as i32, 1);
            assert!(s.forest.above_threshold(1, &forest));
        }
        assert_eq!(m.revoke_partitions(&[1, 2]), 20);
        assert_eq!(m.len(), 10);
        assert!((0..30u32).filter(|i| m.get(&ip(*i)).is_some()).all(|i| i % 3 == 0));
        assert_eq!(m.evictions(), 0, "revocation is not eviction");
        // A moved host that comes back starts cold.
        let s = m.entry(ip(1), 1, 2);
        assert!(s.rate.is_empty() && s.forest.is_clear());
    }
}
