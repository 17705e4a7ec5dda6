//! Beaconing detector (kind `beacon`): per host and destination, the times at which the host opened
//! connections to it, and whether they come at a fixed period, the way an implant checks in with its command
//! and control (C2) address. Owns the per-host contact table and the rule; the host map that holds the table
//! lives in [`crate::state`]. Sees only connection-opening packets ([`PacketFeatures::opens_flow`]).
//!
//! # What is measured
//!
//! Openings to one destination less than `burst_gap` apart are one *contact* (a check-in that opens a DNS
//! lookup and two connections is one contact, and a continuous stream of connections is one long contact,
//! never a period). The table keeps, per destination, the last `max_intervals` intervals between contact
//! starts, in milliseconds. Once it holds `min_intervals` of them, each new contact computes their median (the
//! period) and their *spread*: the smallest relative deviation from the median that covers all intervals but
//! the `max_outliers` share of them (one in eight by default: a missed or an extra check-in). The destination
//! is a beacon when the period lies in `min_period..=max_period` and the spread is at most `max_jitter`. A gap
//! longer than `max_period` starts the series over.
//!
//! # Defaults, and how they were chosen
//!
//! The shared captures (`../shared/data`, 66 labelled) contain a *benign* semi-periodic beacon
//! (`stratosphere-slips/test-cc-capture-2.pcap`, waits of 2–3.6 s, i.e. ±29 %), so the rule must tell "every
//! 5 s ± 5 %" from "every 2.8 s ± 29 %". Small windows cannot: with 8 intervals and the median absolute
//! deviation ≤ 5 % (the first draft), 37 % of simulated 300-contact series of that benign beacon fired.
//! Simulated with the detector's windows (uniform jitter; 10,000 series of 300 contacts for the ±29 % and ±20 %
//! columns, 1,000 series of 12 or 15 intervals for the beacons):
//!
//! | rule | ±29 % (benign) series that fire | ±20 % | ±5 % beacon found within 12 / 15 intervals | ±10 % |
//! | --- | --- | --- | --- | --- |
//! | 12–24 intervals, spread ≤ 0.10 | 20 in 10,000 | 8.3 % | 100 % / 100 % | 84 % |
//! | 12–24 intervals, spread ≤ 0.08 (default) | 0 in 10,000 | 0.5 % | 99.9 % / 100 % | 40 % |
//!
//! So `min_intervals` = 12 (13 contacts: a minute at a 5 s period), `max_intervals` = 24, `max_jitter` = 0.08,
//! `max_outliers` = 0.125: beacons whose waits vary by up to about ±5 % are found, ±10 % sometimes, ±15 % and
//! more are left alone. On the real captures, with the producer's notion of an opening (new TCP SYN or new
//! UDP/ICMP flow): the benign beacon's spread is ≥ 0.229 in every window and no other benign capture has 12
//! intervals of 1 s or more to one destination (zero alerts on the 17 benign captures); the four slow SSH
//! brute-force captures of `trace-share-ssh-bruteforce` (an attempt every 5–20 s) measure 0 to 0.075 and two
//! reflector captures of `stopddos` 0 to 0.001. `min_period` = 1 s leaves sub-second polling and retries
//! alone; `max_period` = 1 h.
//!
//! # Jittered beacons
//!
//! Implants usually sleep a minute or more with a random jitter of several seconds (60 s ± 10 s is ±17 %),
//! which the ±5 % rule above misses. Periods of at least `slow_min_period` (30 s) may therefore spread up to
//! `slow_max_jitter` (0.25). Simulated with uniform jitter (5,000 series): 60 s ± 10 s is found by the 13th
//! contact in 99.6 % of series and by the 25th in all (0.2 would find 94 % by the 13th). Over long series the
//! spread cannot tell ±17 % from ±30 %: any timer at a period of 30 s or more with up to ±30 % jitter fires (some
//! update checks and telemetry look like that by timing alone), which is the price of finding jittered
//! implants. The benign ±29 % beacon of the shared captures has a 2.8 s period and stays under the ±5 % rule,
//! and no benign capture has 12 intervals of 30 s or more to one destination.
//!
//! A host with no other traffic is forgotten after `detector.state.idle_timeout`
//! (5 min), so longer periods are seen only for hosts that send something in between.
//!
//! # Bounds and cost
//!
//! At most `max_destinations` (64) destinations per host. When a new one arrives and the table is full, the
//! entry with the least evidence goes: entries with no contact for longer than `max_period` first, then the
//! fewest intervals, then the least recently seen; so an established periodic series survives a host that
//! contacts many one-off destinations. Before its second contact a C2 address has no evidence either: a host
//! that opens connections to more than `max_destinations` other new destinations within one period can hide
//! it. Each entry costs about 72 bytes plus 4 bytes per interval (≤ 11 KiB per host at the defaults, against
//! ~100 KiB for a scanning host's fan-out sets). Per opening packet: a scan of at most `max_destinations`
//! entries (and one more to pick an eviction when a new destination meets a full table); per contact once the
//! series is long enough: two selections over at most 64 intervals on the stack. Openings inside a burst
//! (floods, scans of one host) stop after the scan.

use std::net::IpAddr;

use netanom_schemas::{Anomaly, AnomalyKind, Contribution, PacketFeatures};

use crate::anomaly::{AnomalyParts, RULES_VERSION};
use crate::kind::{Context, DetectorKind, Setup};
use crate::time::human;
use crate::time::ns;
use crate::validation::{ConfigError, Problems};
use serde::Deserialize;
use std::time::Duration;

/// `[detector.beacon]`: a host opening connections to one destination at a fixed period (C2 check-ins). The
/// defaults were measured on the labelled captures; see [`crate::beacon`].
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BeaconConfig {
    /// Whether the detector runs. Default true.
    pub enabled: bool,
    /// Intervals between contacts needed before a destination is judged (13 contacts). Default 12: fewer
    /// cannot tell a ±5 % beacon from the ±29 % benign one of the shared captures.
    pub min_intervals: usize,
    /// Latest intervals kept per destination, at most 64. Default 24.
    pub max_intervals: usize,
    /// Highest spread of the intervals: the relative deviation from their median (the period) that covers all
    /// of them but the `max_outliers` share. Default 0.08: finds beacons whose waits vary by up to about ±5 %;
    /// the most regular benign series of the shared captures (a semi-periodic beacon, waits of 2–3.6 s)
    /// measures 0.229 at best.
    pub max_jitter: f64,
    /// Share of the intervals (rounded down) allowed outside the spread: missed or extra check-ins. In
    /// [0, 0.5). Default 0.125 (one in eight).
    pub max_outliers: f64,
    /// Shortest period flagged; faster repeats are polling or retries. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub min_period: Duration,
    /// Longest period flagged, at most 24 h; a longer silence starts the series over. A host with no other
    /// traffic is forgotten after `detector.state.idle_timeout`, so periods beyond it are seen only for hosts
    /// that send something in between. Default 1 h.
    #[serde(with = "humantime_serde")]
    pub max_period: Duration,
    /// Openings to one destination closer together than this are one contact (a check-in that opens several
    /// connections; a continuous stream of connections is one long contact). Less than `min_period`.
    /// Default 500 ms.
    #[serde(with = "humantime_serde")]
    pub burst_gap: Duration,
    /// Destinations tracked per host; beyond it the one with the least evidence is evicted (counted). Default
    /// 64.
    pub max_destinations: usize,
    /// At most one beacon anomaly per (host, destination) per this much packet time. Default 10 min.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// Periods from which `slow_max_jitter` applies instead of `max_jitter`. Default 30 s (implants' sleeps).
    #[serde(with = "humantime_serde")]
    pub slow_min_period: Duration,
    /// Highest spread for periods of at least `slow_min_period`: finds sleeps of a minute with a random jitter
    /// of several seconds (60 s ± 10 s: by the 13th contact in 99.6 % of simulated series). In (0, 1). Default
    /// 0.25.
    pub slow_max_jitter: f64,
    /// Destination ports whose connections are never judged. Default: the login services' ports (the default
    /// of `detector.brute_force.ports`): a password-guessing tool throttled to a steady pace is the
    /// `brute_force` kind's (over its `slow_window`), not a beacon.
    pub excluded_ports: Vec<u16>,
}

impl Default for BeaconConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_intervals: 12,
            max_intervals: 24,
            max_jitter: 0.08,
            max_outliers: 0.125,
            min_period: Duration::from_secs(1),
            max_period: Duration::from_secs(3600),
            burst_gap: Duration::from_millis(500),
            max_destinations: 64,
            cooldown: Duration::from_secs(600),
            slow_min_period: Duration::from_secs(30),
            slow_max_jitter: 0.25,
            excluded_ports: crate::misuse::LOGIN_PORTS.to_vec(),
        }
    }
}

impl BeaconConfig {
    /// Checks `[detector.beacon]` and returns every problem.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut p = Problems::new("beacon");
        p.check((3..=MAX_INTERVALS).contains(&self.max_intervals), "max_intervals", || {
            format!("must be in 3..={MAX_INTERVALS}, got {}", self.max_intervals)
        });
        p.check((3..=self.max_intervals).contains(&self.min_intervals), "min_intervals", || {
            format!("must be in 3..=detector.beacon.max_intervals ({}), got {}", self.max_intervals, self.min_intervals)
        });
        p.check(self.max_jitter.is_finite() && self.max_jitter > 0.0 && self.max_jitter < 1.0, "max_jitter", || {
            format!("must be in (0, 1), got {}", self.max_jitter)
        });
        p.check(
            self.slow_max_jitter.is_finite() && self.slow_max_jitter > 0.0 && self.slow_max_jitter < 1.0,
            "slow_max_jitter",
            || format!("must be in (0, 1), got {}", self.slow_max_jitter),
        );
        p.check((0.0..0.5).contains(&self.max_outliers), "max_outliers", || {
            format!("must be in [0, 0.5), got {}", self.max_outliers)
        });
        p.check(!self.min_period.is_zero(), "min_period", || "must be > 0".into());
        p.check(
            self.max_period > self.min_period && self.max_period <= Duration::from_secs(86_400),
            "max_period",
            || {
                format!(
                    "must be > detector.beacon.min_period ({}) and <= 24h, got {}",
                    human(self.min_period),
                    human(self.max_period)
                )
            },
        );
        p.check(self.burst_gap < self.min_period, "burst_gap", || {
            format!("must be < detector.beacon.min_period ({}), got {}", human(self.min_period), human(self.burst_gap))
        });
        p.check((1..=4096).contains(&self.max_destinations), "max_destinations", || {
            format!("must be in 1..=4096, got {}", self.max_destinations)
        });
        p.into_vec()
    }
}

/// Upper bound of `beacon.max_intervals`: statistics run on a stack copy of this many intervals.
pub const MAX_INTERVALS: usize = 64;

/// Rule parameters in hot-path units.
#[derive(Debug, Clone, Copy)]
pub struct BeaconRule {
    /// Intervals needed before a destination is judged (≥ 3).
    pub min_intervals: usize,
    /// Intervals kept per destination (≤ [`MAX_INTERVALS`]).
    pub max_intervals: usize,
    /// Highest spread (relative deviation from the period covering all but the outliers).
    pub max_jitter: f64,
    /// Share of the intervals allowed outside the spread.
    pub max_outliers: f64,
    /// Shortest period, ms.
    pub min_period_ms: f64,
    /// Longest period, ms; a longer gap restarts the series.
    pub max_period_ms: i64,
    /// Openings closer than this to the previous one are the same contact, ns.
    pub burst_gap_ns: i64,
    /// Destinations tracked per host.
    pub max_destinations: usize,
    /// At most one anomaly per (host, destination) per this much packet time, ns.
    pub cooldown_ns: i64,
    /// Periods from which `slow_max_jitter` applies, ms.
    pub slow_min_period_ms: f64,
    /// Highest spread for periods of at least `slow_min_period_ms`.
    pub slow_max_jitter: f64,
}

impl From<&BeaconConfig> for BeaconRule {
    fn from(c: &BeaconConfig) -> Self {
        let max_intervals = c.max_intervals.clamp(3, MAX_INTERVALS);
        Self {
            min_intervals: c.min_intervals.clamp(3, max_intervals),
            max_intervals,
            max_jitter: c.max_jitter,
            max_outliers: c.max_outliers.clamp(0.0, 0.5),
            min_period_ms: c.min_period.as_secs_f64() * 1e3,
            max_period_ms: i64::try_from(c.max_period.as_millis()).unwrap_or(i64::MAX),
            burst_gap_ns: ns(c.burst_gap),
            max_destinations: c.max_destinations.max(1),
            cooldown_ns: ns(c.cooldown),
            slow_min_period_ms: c.slow_min_period.as_secs_f64() * 1e3,
            slow_max_jitter: c.slow_max_jitter,
        }
    }
}

/// The beacon kind: the rule, the ports it leaves alone and a count of the destinations dropped from full
/// per-host tables.
#[derive(Debug)]
pub struct Beacon {
    rule: BeaconRule,
    /// Sorted `excluded_ports`.
    excluded_ports: Vec<u16>,
    /// Destinations dropped from full per-host tables (`max_destinations`).
    destinations_evicted: u64,
}

impl Beacon {
    /// Destinations dropped from full per-host tables so far.
    pub fn destinations_evicted(&self) -> u64 {
        self.destinations_evicted
    }
}

impl DetectorKind for Beacon {
    type Config = BeaconConfig;
    type State = BeaconTable;
    const PRODUCES: &'static [AnomalyKind] = &[AnomalyKind::Beacon];

    /// A destination contacted three times or more: a beacon series is being measured.
    fn open_suspicion(state: &BeaconTable) -> bool {
        state.contacts.iter().any(|c| c.intervals.len() >= 2)
    }

    fn heap_bytes(state: &BeaconTable) -> usize {
        crate::bytes::vec_bytes::<Contact>(state.contacts.capacity())
            + state.contacts.iter().map(|c| crate::bytes::vec_bytes::<u32>(c.intervals.capacity())).sum::<usize>()
    }

    fn validate(config: &BeaconConfig, _: &Context) -> Vec<ConfigError> {
        config.validate()
    }

    fn build(config: &BeaconConfig, _: &mut Setup<'_>) -> Option<Self> {
        config.enabled.then(|| {
            let mut excluded_ports = config.excluded_ports.clone();
            excluded_ports.sort_unstable();
            excluded_ports.dedup();
            Self { rule: BeaconRule::from(config), excluded_ports, destinations_evicted: 0 }
        })
    }

    fn observe_packet(&mut self, host: IpAddr, p: &PacketFeatures, table: &mut BeaconTable, out: &mut Vec<Anomaly>) {
        // Connections to a login service are the brute-force kind's evidence, never a beacon.
        if p.opens_flow()
            && self.excluded_ports.binary_search(&p.dst_port).is_err()
            && let Some(hit) = table.observe(p, &self.rule, &mut self.destinations_evicted)
        {
            out.push(beacon_anomaly(host, &self.rule, &hit, p).build());
        }
    }
}

/// What one host remembers about one destination.
#[derive(Debug, Clone)]
struct Contact {
    destination: IpAddr,
    /// Destination port of the latest contact (for the reason).
    port: u16,
    /// Index of the oldest interval once the ring is full.
    head: u8,
    /// Start of the latest contact, ns.
    contact_ns: i64,
    /// Latest opening (a contact goes on while openings come less than `burst_gap` apart), ns.
    last_open_ns: i64,
    /// Packet time of the last anomaly; `i64::MIN` when none.
    last_fire_ns: i64,
    /// Intervals between contact starts, ms; a ring of at most `max_intervals`, order irrelevant.
    intervals: Vec<u32>,
}

impl Contact {
    fn new(p: &PacketFeatures) -> Self {
        Self {
            destination: p.destination,
            port: p.dst_port,
            head: 0,
            contact_ns: p.ts_ns,
            last_open_ns: p.ts_ns,
            last_fire_ns: i64::MIN,
            intervals: Vec::new(),
        }
    }

    fn push(&mut self, ms: u32, cap: usize) {
        if self.intervals.len() < cap {
            self.intervals.push(ms);
        } else {
            let head = usize::from(self.head) % cap;
            self.intervals[head] = ms;
            self.head = ((head + 1) % cap) as u8;
        }
    }

    fn restart(&mut self) {
        self.intervals.clear();
        self.head = 0;
    }
}

/// The contacts of one host, at most `max_destinations`.
#[derive(Debug, Clone, Default)]
pub struct BeaconTable {
    contacts: Vec<Contact>,
}

/// A destination contacted at a regular period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BeaconHit {
    /// The destination (C2 candidate).
    pub destination: IpAddr,
    /// Its port at the latest contact.
    pub port: u16,
    /// Median interval, ms.
    pub period_ms: f64,
    /// Spread around the period covering all intervals but the outliers, ms.
    pub jitter_ms: f64,
    /// Intervals judged (contacts − 1).
    pub intervals: usize,
    /// Start of the first contact judged, ns (millisecond precision).
    pub window_start_ns: i64,
    /// Start of the latest contact, ns.
    pub window_end_ns: i64,
    /// The highest spread allowed for this period (relative): `max_jitter`, or `slow_max_jitter` for slow
    /// periods.
    pub max_jitter: f64,
}

impl BeaconTable {
    /// Records one connection-opening packet; returns a hit when its destination's contacts are periodic,
    /// outside the cooldown. Adds 1 to `evictions` when a destination had to make room for this one.
    pub fn observe(&mut self, p: &PacketFeatures, rule: &BeaconRule, evictions: &mut u64) -> Option<BeaconHit> {
        let Some(c) = self.contacts.iter_mut().find(|c| c.destination == p.destination) else {
            self.insert(Contact::new(p), rule, evictions);
            return None;
        };
        let ts = p.ts_ns;
        // Out-of-order openings (gap < 0) belong to the current contact too.
        let gap = ts.saturating_sub(c.last_open_ns);
        c.last_open_ns = c.last_open_ns.max(ts);
        if gap < rule.burst_gap_ns {
            return None;
        }
        // contact_ns <= last_open_ns, so the interval is at least the gap: positive.
        let interval_ms = ts.saturating_sub(c.contact_ns) / 1_000_000;
        c.contact_ns = ts;
        c.port = p.dst_port;
        if interval_ms > rule.max_period_ms {
            c.restart();
            return None;
        }
        c.push(u32::try_from(interval_ms).unwrap_or(u32::MAX), rule.max_intervals);
        if c.intervals.len() < rule.min_intervals || ts.saturating_sub(c.last_fire_ns) < rule.cooldown_ns {
            return None;
        }
        let (period_ms, jitter_ms) = period_and_spread(&c.intervals, rule.max_outliers);
        if period_ms < rule.min_period_ms || period_ms > rule.max_period_ms as f64 {
            return None;
        }
        let max_jitter = if period_ms >= rule.slow_min_period_ms {
            rule.max_jitter.max(rule.slow_max_jitter)
        } else {
            rule.max_jitter
        };
        if jitter_ms > max_jitter * period_ms {
            return None;
        }
        c.last_fire_ns = ts;
        let span_ms: i64 = c.intervals.iter().map(|&i| i64::from(i)).sum();
        Some(BeaconHit {
            destination: c.destination,
            port: c.port,
            period_ms,
            jitter_ms,
            intervals: c.intervals.len(),
            window_start_ns: ts.saturating_sub(span_ms.saturating_mul(1_000_000)),
            window_end_ns: ts,
            max_jitter,
        })
    }

    /// Adds a destination, evicting the one with the least evidence when the table is full.
    fn insert(&mut self, c: Contact, rule: &BeaconRule, evictions: &mut u64) {
        if self.contacts.len() < rule.max_destinations {
            if self.contacts.capacity() == 0 {
                // Most hosts talk to one or two destinations: grow from one slot, not the default four.
                self.contacts.reserve_exact(1);
            }
            self.contacts.push(c);
            return;
        }
        let now = c.last_open_ns;
        let max_period_ns = rule.max_period_ms.saturating_mul(1_000_000);
        let weakest = self.contacts.iter().enumerate().min_by_key(|(_, e)| {
            let stale = now.saturating_sub(e.last_open_ns) > max_period_ns;
            (if stale { 0 } else { e.intervals.len() }, e.last_open_ns)
        });
        if let Some((i, _)) = weakest {
            self.contacts[i] = c;
            *evictions += 1;
        }
    }

    /// Destinations tracked.
    pub fn len(&self) -> usize {
        self.contacts.len()
    }

    /// True when no destination is tracked.
    pub fn is_empty(&self) -> bool {
        self.contacts.is_empty()
    }

    /// Intervals held over every destination (for tests and memory accounting).
    pub fn intervals(&self) -> usize {
        self.contacts.iter().map(|c| c.intervals.len()).sum()
    }
}

/// The median of `v` (ms) and the smallest deviation from it that covers all values but the `outliers` share
/// of them (rounded down), via two selections on a stack copy of at most [`MAX_INTERVALS`] values, in integer
/// half-milliseconds (twice the median is exact, whatever the parity of the count).
fn period_and_spread(v: &[u32], outliers: f64) -> (f64, f64) {
    let mut buf = [0u64; MAX_INTERVALS];
    let n = v.len().min(MAX_INTERVALS);
    if n == 0 {
        return (0.0, 0.0);
    }
    for (b, &x) in buf.iter_mut().zip(&v[..n]) {
        *b = 2 * u64::from(x);
    }
    let values = &mut buf[..n];
    let (lower, upper, _) = values.select_nth_unstable(n / 2);
    let upper = *upper;
    let twice_median = if n % 2 == 1 { upper } else { (lower.iter().copied().max().unwrap_or(upper) + upper) / 2 };
    for b in values.iter_mut() {
        *b = b.abs_diff(twice_median);
    }
    let allowed = ((n as f64 * outliers) as usize).min(n - 1);
    let (_, spread, _) = values.select_nth_unstable(n - 1 - allowed);
    (twice_median as f64 / 2.0, *spread as f64 / 2.0)
}

/// A period or jitter for a sentence: `5.0 s`, `40 ms`, `2.5 min`, `1.0 h`.
fn duration_text(ms: f64) -> String {
    if ms < 100.0 {
        format!("{ms:.0} ms")
    } else if ms < 60_000.0 {
        format!("{:.1} s", ms / 1e3)
    } else if ms < 3_600_000.0 {
        format!("{:.1} min", ms / 60e3)
    } else {
        format!("{:.1} h", ms / 3_600e3)
    }
}

/// Builds the beacon anomaly for `host`. Score = period / spread (spread floored at 1 ms), threshold =
/// 1 / `max_jitter`: a beacon scores at least the threshold, and a more regular one scores higher. The `±` of
/// the reason is the spread: all check-ins but the allowed outliers came that close to the period.
pub fn beacon_anomaly(host: IpAddr, rule: &BeaconRule, hit: &BeaconHit, packet: &PacketFeatures) -> AnomalyParts {
    let contacts = hit.intervals + 1;
    let target =
        if hit.port == 0 { hit.destination.to_string() } else { format!("{} on port {}", hit.destination, hit.port) };
    AnomalyParts {
        host,
        kind: AnomalyKind::Beacon,
        window_start_ns: hit.window_start_ns,
        window_end_ns: hit.window_end_ns,
        score: hit.period_ms / hit.jitter_ms.max(1.0),
        threshold: 1.0 / hit.max_jitter,
        target: Some(hit.destination),
        reason: format!(
            "{host} contacted {target} every {} (±{}) {contacts} times",
            duration_text(hit.period_ms),
            duration_text(hit.jitter_ms),
        ),
        features: vec![
            Contribution {
                name: "jitter_s".into(),
                value: hit.jitter_ms / 1e3,
                baseline: Some(hit.max_jitter * hit.period_ms / 1e3),
            },
            Contribution { name: "period_s".into(), value: hit.period_ms / 1e3, baseline: None },
            Contribution {
                name: "contacts".into(),
                value: contacts as f64,
                baseline: Some((rule.min_intervals + 1) as f64),
            },
        ],
        sample: packet.summary(host),
        model_version: RULES_VERSION.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{T0, syn};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const SEC: i64 = 1_000_000_000;

    fn rule() -> BeaconRule {
        BeaconRule::from(&BeaconConfig::default())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Feeds SYNs to `dst` at `times` (ns) and returns the hits.
    fn feed(t: &mut BeaconTable, r: &BeaconRule, dst: IpAddr, times: &[i64]) -> Vec<BeaconHit> {
        let mut ev = 0;
        times.iter().filter_map(|&ts| t.observe(&syn(ts, dst, 443), r, &mut ev)).collect()
    }

    #[test]
    fn excluded_ports_are_never_judged() {
        let mut models = crate::models::Models::default();
        let mut kind = Beacon::build(&BeaconConfig::default(), &mut Setup::new(1, &mut models)).unwrap();
        let dst = ip("203.0.113.22");
        let host = ip("10.0.0.7");
        for (port, expected) in [(22, 0), (443, 1)] {
            let (mut table, mut out) = (BeaconTable::default(), Vec::new());
            for ts in schedule(1, 20, 10.0, 0.0) {
                kind.observe_packet(host, &syn(ts, dst, port), &mut table, &mut out);
            }
            assert_eq!(out.len(), expected, "port {port}: {out:?}");
        }
    }

    /// `n` contact times from T0, each wait `period` × (1 ± `jitter`) uniform.
    fn schedule(seed: u64, n: usize, period_s: f64, jitter: f64) -> Vec<i64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut t = T0;
        (0..n)
            .map(|_| {
                let now = t;
                let f = if jitter > 0.0 { rng.gen_range(-jitter..=jitter) } else { 0.0 };
                t += (period_s * (1.0 + f) * 1e9) as i64;
                now
            })
            .collect()
    }

    #[test]
    fn periodic_check_ins_are_flagged_with_period_jitter_and_count() {
        let r = rule();
        for seed in 0..100 {
            let mut t = BeaconTable::default();
            let hits = feed(&mut t, &r, ip("203.0.113.9"), &schedule(seed, 15, 5.0, 0.05));
            // 15 contacts = 14 intervals: judged from the 12th interval (13th contact) on; one hit per cooldown.
            assert_eq!(hits.len(), 1, "seed {seed}: {hits:?}");
            let h = hits[0];
            assert!((h.period_ms - 5000.0).abs() < 250.0, "{h:?}");
            assert!(h.jitter_ms <= 0.08 * h.period_ms);
            assert!((12..=14).contains(&h.intervals), "{h:?}");
            assert_eq!(h.destination, ip("203.0.113.9"));
            assert!(h.window_end_ns - h.window_start_ns > 55 * SEC);
            let a = beacon_anomaly(ip("10.0.0.7"), &r, &h, &syn(h.window_end_ns, h.destination, 443)).build();
            assert_eq!(a.kind, AnomalyKind::Beacon);
            assert_eq!(a.target.as_deref(), Some("203.0.113.9"));
            assert!(a.reason.starts_with("10.0.0.7 contacted 203.0.113.9 on port 443 every "), "{}", a.reason);
            assert!(a.reason.ends_with(&format!(" {} times", h.intervals + 1)), "{}", a.reason);
            assert!(a.score >= a.threshold, "{} < {}", a.score, a.threshold);
            let names: Vec<&str> = a.features.iter().map(|f| f.name.as_str()).collect();
            assert_eq!(names, ["jitter_s", "period_s", "contacts"]);
            assert_eq!(a.model_version, RULES_VERSION);
        }
    }

    #[test]
    fn exact_period_fires_again_after_the_cooldown() {
        let r = BeaconRule { cooldown_ns: 60 * SEC, ..rule() };
        let mut t = BeaconTable::default();
        let times: Vec<i64> = (0..40).map(|i| T0 + i * 5 * SEC).collect();
        let hits = feed(&mut t, &r, ip("203.0.113.9"), &times);
        // Judged at contact 13 (t = 60 s), then again once 60 s have passed: t = 120 s, 180 s.
        let at: Vec<i64> = hits.iter().map(|h| (h.window_end_ns - T0) / SEC).collect();
        assert_eq!(at, [60, 120, 180]);
        assert_eq!(hits[0].jitter_ms, 0.0);
        let a = beacon_anomaly(ip("10.0.0.7"), &r, &hits[0], &syn(0, hits[0].destination, 443)).build();
        assert_eq!(a.score, 5000.0, "spread floored at 1 ms");
        assert_eq!(a.threshold, 12.5);
        assert!(a.reason.contains("every 5.0 s (±0 ms) 13 times"), "{}", a.reason);
    }

    #[test]
    fn jittery_and_benign_patterns_are_not_flagged() {
        let r = rule();
        let dst = ip("203.0.113.9");
        // The benign semi-periodic beacon of the shared captures: waits uniform in 2-3.6 s (±29 %).
        for seed in 0..200 {
            let mut t = BeaconTable::default();
            assert!(feed(&mut t, &r, dst, &schedule(seed, 300, 2.8, 0.285)).is_empty(), "seed {seed}");
        }
        // Human browsing: exponential gaps (mean 20 s) to one site.
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut ts = T0;
        let browsing: Vec<i64> = (0..200)
            .map(|_| {
                ts += (-rng.r#gen::<f64>().max(1e-9).ln() * 20e9) as i64;
                ts
            })
            .collect();
        assert!(feed(&mut BeaconTable::default(), &r, dst, &browsing).is_empty());
        // Sub-second polling: regular, but under min_period (and one long contact by the burst rule).
        let polling: Vec<i64> = (0..500).map(|i| T0 + i * 300_000_000).collect();
        assert!(feed(&mut BeaconTable::default(), &r, dst, &polling).is_empty());
        // 700 ms polling is past the burst gap but under min_period.
        let polling: Vec<i64> = (0..500).map(|i| T0 + i * 700_000_000).collect();
        assert!(feed(&mut BeaconTable::default(), &r, dst, &polling).is_empty());
        // A SYN flood: one endless contact, never an interval.
        let mut t = BeaconTable::default();
        let flood: Vec<i64> = (0..100_000).map(|i| T0 + i * 100_000).collect();
        assert!(feed(&mut t, &r, dst, &flood).is_empty());
        assert_eq!(t.intervals(), 0);
        // Regular but longer than max_period: each gap restarts the series.
        let daily: Vec<i64> = (0..30).map(|i| T0 + i * 2 * 3600 * SEC).collect();
        let mut t = BeaconTable::default();
        assert!(feed(&mut t, &r, dst, &daily).is_empty());
        assert_eq!(t.intervals(), 0);
    }

    #[test]
    fn minute_sleeps_with_seconds_of_jitter_are_flagged_and_human_gaps_are_not() {
        let r = rule();
        let dst = ip("203.0.113.9");
        for seed in 0..1_000 {
            // An implant sleeping 60 s ± 10 s: found by the 25th contact (by the 13th in 99.6 % of series).
            let hits = feed(&mut BeaconTable::default(), &r, dst, &schedule(seed, 25, 60.0, 10.0 / 60.0));
            assert!(!hits.is_empty(), "seed {seed}");
            assert!((h_period(&hits[0]) - 60.0).abs() < 10.0, "{:?}", hits[0]);
            assert_eq!(hits[0].max_jitter, 0.25);
        }
        // The same jitter at a 5 s period is left to the strict rule, which does not flag it.
        let fired = (0..200)
            .filter(|&seed| {
                !feed(&mut BeaconTable::default(), &r, dst, &schedule(seed, 40, 5.0, 10.0 / 60.0)).is_empty()
            })
            .count();
        assert!(fired < 20, "{fired} of 200");
        // A person visiting a site about once a minute (exponential gaps, mean 60 s) is not a beacon.
        for seed in 0..200 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut ts = T0;
            let visits: Vec<i64> = (0..60)
                .map(|_| {
                    ts += (-rng.r#gen::<f64>().max(1e-9).ln() * 60e9) as i64;
                    ts
                })
                .collect();
            assert!(feed(&mut BeaconTable::default(), &r, dst, &visits).is_empty(), "seed {seed}");
        }
    }

    fn h_period(h: &BeaconHit) -> f64 {
        h.period_ms / 1e3
    }

    #[test]
    fn bursts_count_as_one_contact_and_one_outlier_does_not_hide_a_beacon() {
        let r = rule();
        let dst = ip("203.0.113.9");
        let mut times = vec![];
        for i in 0..16i64 {
            // Each check-in opens three connections within 40 ms; the 6th check-in is missed.
            if i != 6 {
                times.extend([T0 + i * 10 * SEC, T0 + i * 10 * SEC + 20_000_000, T0 + i * 10 * SEC + 40_000_000]);
            }
        }
        let hits = feed(&mut BeaconTable::default(), &r, dst, &times);
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!(hits[0].period_ms, 10_000.0);
    }

    #[test]
    fn state_is_bounded_and_established_series_survive_churn() {
        let r = rule();
        let mut t = BeaconTable::default();
        let mut ev = 0u64;
        let c2 = ip("203.0.113.9");
        let mut hits = vec![];
        // Every 5 s: one check-in to the C2 and 40 connections to never-seen destinations.
        for i in 0..20i64 {
            let base = T0 + i * 5 * SEC;
            hits.extend(t.observe(&syn(base, c2, 443), &r, &mut ev));
            for k in 0..40u32 {
                let d = IpAddr::from((0x0a00_0000u32 + (i as u32) * 100 + k).to_be_bytes());
                hits.extend(t.observe(&syn(base + i64::from(k + 1) * 10_000_000, d, 80), &r, &mut ev));
                assert!(t.len() <= r.max_destinations);
            }
        }
        assert_eq!(hits.len(), 1, "the C2 kept its slot: {hits:?}");
        assert_eq!(hits[0].destination, c2);
        assert_eq!(ev as usize, 20 * 40 + 1 - r.max_destinations, "every new destination past the first 64");
        assert!(t.intervals() <= r.max_destinations * r.max_intervals);
        // Intervals per destination never exceed max_intervals.
        let mut t = BeaconTable::default();
        feed(&mut t, &r, c2, &(0..1_000).map(|i| T0 + i * 5 * SEC).collect::<Vec<_>>());
        assert_eq!(t.intervals(), r.max_intervals);
    }

    #[test]
    fn durations_read_naturally_and_the_spread_leaves_out_outliers() {
        assert_eq!(duration_text(5_000.0), "5.0 s");
        assert_eq!(duration_text(40.0), "40 ms");
        assert_eq!(duration_text(150_000.0), "2.5 min");
        assert_eq!(duration_text(3_600_000.0), "1.0 h");
        assert_eq!(period_and_spread(&[3, 1, 2, 10], 0.0), (2.5, 7.5));
        assert_eq!(period_and_spread(&[5_000], 0.125), (5_000.0, 0.0));
        // One in eight may lie outside: six values allow none, eight allow the 100 ms outlier.
        assert_eq!(period_and_spread(&[10, 10, 10, 11, 9, 100], 0.125), (10.0, 90.0));
        assert_eq!(period_and_spread(&[10, 10, 10, 11, 9, 100, 10, 10], 0.125), (10.0, 1.0));
        assert_eq!(period_and_spread(&[10, 10, 10, 11, 9, 100, 10, 10], 0.0), (10.0, 90.0));
        assert_eq!(period_and_spread(&[], 0.125), (0.0, 0.0));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn hostile_values_never_panic_and_stay_bounded(
            times in proptest::collection::vec(proptest::prelude::any::<i64>(), 1..200),
            dsts in proptest::collection::vec(0u8..40, 1..200),
            min_intervals in 0usize..100,
            max_intervals in 0usize..100,
            max_destinations in 0usize..50,
            max_jitter in proptest::prelude::any::<f64>(),
            burst_ms in 0u64..10_000,
            port in proptest::prelude::any::<u16>(),
        ) {
            let cfg = BeaconConfig {
                min_intervals,
                max_intervals,
                max_destinations,
                max_jitter,
                burst_gap: std::time::Duration::from_millis(burst_ms),
                ..BeaconConfig::default()
            };
            let r = BeaconRule::from(&cfg);
            let mut t = BeaconTable::default();
            let mut ev = 0;
            for (i, &ts) in times.iter().enumerate() {
                let mut p = syn(ts, IpAddr::from([10, 0, 0, dsts[i % dsts.len()]]), port);
                p.dst_port = port;
                if let Some(h) = t.observe(&p, &r, &mut ev) {
                    let a = beacon_anomaly(ip("10.0.0.1"), &r, &h, &p).build();
                    proptest::prop_assert!(a.score.is_finite() && a.threshold.is_finite());
                }
                proptest::prop_assert!(t.len() <= r.max_destinations);
                proptest::prop_assert!(t.intervals() <= t.len() * r.max_intervals);
            }
        }
    }
}
