//! Incidents: groups the alerts [`crate::suppress`] emits per (host, kind) into one incident per host across
//! kinds, and decides when a revision of it is emitted. Owns the open incidents, their deadlines and the revision
//! budget; does no I/O and never reads a clock itself (the caller passes `now` and the suppressor's packet-time
//! watermark), so it is deterministic under test.
//!
//! An incident opens with the first alert about a host and absorbs every later one about the host, whatever its
//! kind, until the host has been quiet for [`IncidentConfig::window`]: the watermark passed the incident's last
//! evidence by the window and the suppressor holds no open window of the host, or no alert about the host arrived
//! for the window in wall time (a live capture whose packet time stalls). Its id, `host/first-kind/first_seen`,
//! is the same in every revision.
//!
//! Revisions: the first is emitted [`IncidentConfig::hold`] of wall time after the incident opened (so kinds that
//! fire together arrive together), or when it closes if that is sooner; a later one when the incident has
//! [`IncidentConfig::min_revision_interval`] more evidence (packet time) than the last revision reported; the
//! closing revision (`final`) when it closes, on drain, on shutdown, or when more than
//! [`IncidentConfig::max_incidents`] are open or their bytes exceed the incident share of
//! `alert_router.memory_budget_mib` (see [`crate::budget`]; the incident quiet soonest closes early). An incident has at most
//! [`IncidentConfig::max_revisions`] revisions, the closing one included, so alert volume per attacker is bounded.
//!
//! Every revision carries the Kafka origins of the alerts absorbed since the previous one, so the router stores
//! those offsets only after that revision is delivered: every absorbed alert's anomalies are accounted for by
//! exactly one revision.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use netanom_schemas::bytes::{table_bytes, vec_bytes};
use netanom_schemas::{Alert, IncidentKind, IncidentTotals, format_rfc3339_ns};
use serde::Deserialize;
use tokio::time::Instant;

use crate::budget::{alert_heap, btree_entry_bytes, evidence_heap};
use crate::suppress::{EmitCause, Emitted, Origin};
use crate::times::{EvidenceTimes, Times};

/// Incident settings (`[alert_router.incidents]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentConfig {
    /// Group the alerts of one host across kinds into incidents. Off, every suppression group is its own alert
    /// (revision 1, final). Default true.
    pub enabled: bool,
    /// How long a host must be quiet (no evidence of any kind, packet time) before its incident closes. Default
    /// 120 s.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Wall time from an incident's opening to its first revision, so that kinds firing together are reported
    /// together. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub hold: Duration,
    /// Revisions of one incident at most, the closing one included; at least 2. Default 10.
    pub max_revisions: u64,
    /// Packet time of new evidence between two revisions of an incident, at least. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub min_revision_interval: Duration,
    /// Open incidents at most; beyond, the incident quiet soonest closes early. Default: what the incident
    /// share of `alert_router.memory_budget_mib` fits at [`INCIDENT_BUDGET_BYTES`] each (see [`crate::budget`]);
    /// set, it must fit that share.
    pub max_incidents: Option<usize>,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(120),
            hold: Duration::from_secs(5),
            max_revisions: 10,
            min_revision_interval: Duration::from_secs(30),
            max_incidents: None,
        }
    }
}

impl IncidentConfig {
    /// Every problem, as (key under `incidents.`, message).
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.window.is_zero() {
            problems.push(("window", "must be > 0, got 0s".to_string()));
        }
        if self.max_revisions < 2 {
            problems.push((
                "max_revisions",
                format!("must be >= 2 (a first and a closing revision), got {}", self.max_revisions),
            ));
        }
        if self.max_incidents == Some(0) {
            problems.push(("max_incidents", "must be >= 1, got 0".to_string()));
        }
        problems
    }
}

/// Bytes budgeted per open incident when sizing the table from the budget, besides its share of the hash table:
/// its two deadline-index entries, the host name in each, its id, and one kind's evidence and the headline alert
/// (each with its strings and features; about 2,600 bytes for a detector's anomaly, measured by
/// `tests/memory_budget.rs`). An incident that holds more (several kinds, origins waiting for a revision) counts
/// what it holds: the byte bound closes incidents sooner.
pub const INCIDENT_BUDGET_BYTES: usize = 3072;

/// Incidents the incident share `share` bytes holds at [`INCIDENT_BUDGET_BYTES`] each, the hash table counted
/// twice (it is rebuilt when it grows).
pub fn incidents_for(share: usize) -> usize {
    let (mut lo, mut hi) = (0usize, share / INCIDENT_BUDGET_BYTES + 1);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if incidents_bytes(mid) <= share { lo = mid } else { hi = mid - 1 }
    }
    lo
}

/// Bytes `incidents` open incidents take, counted as [`incidents_for`] does.
pub fn incidents_bytes(incidents: usize) -> usize {
    table_bytes::<(String, Incident)>(incidents.saturating_add(1))
        .saturating_mul(2)
        .saturating_add(incidents.saturating_mul(INCIDENT_BUDGET_BYTES))
}

/// Incidents closed early, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evictions {
    /// More than `max_incidents` were open.
    pub capacity: u64,
    /// Their bytes exceeded the incident share of the budget.
    pub budget: u64,
}

impl Evictions {
    /// Both reasons together.
    pub fn total(&self) -> u64 {
        self.capacity + self.budget
    }
}

/// Nanoseconds of `d`, saturating.
fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// One kind's evidence in an incident.
#[derive(Debug)]
struct KindEvidence {
    /// Its times, window by window (see [`crate::times`]).
    times: EvidenceTimes,
    evidence: IncidentKind,
}

/// An open incident.
#[derive(Debug)]
struct Incident {
    /// The stable id.
    id: String,
    /// Anomalies-topic partition of its alerts (the topic is keyed by host).
    partition: i32,
    first_ns: i64,
    detected_ns: i64,
    last_ns: i64,
    count: u64,
    /// Each kind, in the order they first fired.
    kinds: Vec<KindEvidence>,
    /// The strongest alert absorbed (by score over threshold): the incident's headline.
    headline: Alert,
    totals: IncidentTotals,
    /// Revisions emitted so far.
    revisions: u64,
    /// `last_ns` reported by the latest revision.
    reported_ns: i64,
    /// Origins absorbed since the latest revision.
    pending: Vec<Origin>,
    /// Wall time of the latest absorbed alert.
    touched: Instant,
    /// Wall time the incident opened.
    opened: Instant,
    /// Key in `by_quiet`.
    quiet_key: (i64, u64),
    /// Key in `by_wall`.
    wall_key: (Instant, u64),
    /// Heap bytes it holds: its host name as the map's key and in both deadline indexes, its id, kinds,
    /// headline and pending origins.
    heap: usize,
}

impl Incident {
    fn count_heap(&mut self, host: &str) -> usize {
        self.heap = 3 * host.len()
            + self.id.capacity()
            + vec_bytes::<KindEvidence>(self.kinds.capacity())
            + self.kinds.iter().map(|k| evidence_heap(&k.evidence) + k.times.heap()).sum::<usize>()
            + alert_heap(&self.headline)
            + vec_bytes::<Origin>(self.pending.capacity());
        self.heap
    }
}

/// Score relative to threshold, for comparing kinds.
fn strength(a: &Alert) -> f64 {
    if a.threshold > 0.0 { a.score / a.threshold } else { a.score }
}

/// The incident state machine. See the module documentation.
#[derive(Debug)]
pub struct Incidents {
    config: IncidentConfig,
    window_ns: i64,
    interval_ns: i64,
    open: HashMap<String, Incident>,
    /// Open incidents by (packet-time quiet deadline, sequence).
    by_quiet: BTreeMap<(i64, u64), String>,
    /// Open incidents by (next wall-time deadline, sequence): the first revision's hold, or the wall-time quiet.
    by_wall: BTreeMap<(Instant, u64), String>,
    sequence: u64,
    evictions: Evictions,
    /// Open incidents at most.
    max_incidents: usize,
    /// Bytes the incidents may hold.
    share: usize,
    /// Heap bytes of the open incidents (sum of `Incident::heap`).
    heap: usize,
    /// Highest `bytes()` so far.
    peak: usize,
    /// Highest capacity the incident table had: its buckets stay allocated (and `capacity` shrinks as removed
    /// entries leave tombstones until the table is rebuilt).
    table_capacity: usize,
}

impl Incidents {
    /// Incidents with `config`, holding at most `share` bytes (the incident share of the memory budget).
    pub fn new(config: IncidentConfig, share: usize) -> Self {
        Self {
            max_incidents: config.max_incidents.unwrap_or_else(|| incidents_for(share)).max(1),
            share,
            heap: 0,
            peak: 0,
            table_capacity: 0,
            window_ns: nanos(config.window).max(1),
            interval_ns: nanos(config.min_revision_interval),
            config,
            open: HashMap::new(),
            by_quiet: BTreeMap::new(),
            by_wall: BTreeMap::new(),
            sequence: 0,
            evictions: Evictions::default(),
        }
    }

    /// Incidents closed early, by reason.
    pub fn evictions(&self) -> Evictions {
        self.evictions
    }

    /// Open incidents at most (`max_incidents`, or what the share fits).
    pub fn max_incidents(&self) -> usize {
        self.max_incidents
    }

    /// Bytes the open incidents hold: the hash table from its capacity, both deadline indexes, and the heap of
    /// every incident.
    pub fn bytes(&self) -> usize {
        table_bytes::<(String, Incident)>(self.table_capacity.max(self.open.capacity()))
            + self.by_quiet.len() * btree_entry_bytes::<(i64, u64), String>()
            + self.by_wall.len() * btree_entry_bytes::<(Instant, u64), String>()
            + self.heap
    }

    /// The highest [`Incidents::bytes`] so far.
    pub fn peak_bytes(&self) -> usize {
        self.peak
    }

    /// Open incidents.
    pub fn open_incidents(&self) -> usize {
        self.open.len()
    }

    fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    /// Absorbs one alert of the suppressor received at wall time `now`; returns the revisions this causes (the
    /// incident's update, evictions). With incidents off, the alert itself.
    pub fn absorb(&mut self, emitted: Emitted, now: Instant) -> Vec<Emitted> {
        if !self.config.enabled {
            return vec![emitted];
        }
        let mut out = Vec::new();
        let Emitted { alert, origins, times, .. } = emitted;
        let host = alert.host.clone();
        if !self.open.contains_key(&host) {
            let mut incident = self.start(alert, origins, times, now);
            self.heap += incident.count_heap(&host);
            self.open.insert(host.clone(), incident);
            self.table_capacity = self.table_capacity.max(self.open.capacity());
            while self.open.len() > self.max_incidents {
                let Some((_, soonest)) = self.by_quiet.first_key_value() else { break };
                let soonest = soonest.clone();
                out.extend(self.close(&soonest, EmitCause::Evicted));
                self.evictions.capacity += 1;
            }
            self.keep_to_share(&mut out);
            return out;
        }
        let (quiet_seq, wall_seq) = (self.next_sequence(), self.next_sequence());
        let (hold, window) = (self.config.hold, self.config.window);
        let Some(incident) = self.open.get_mut(&host) else { return out };
        self.heap -= incident.heap;
        merge(incident, alert, origins, times, now);
        self.by_quiet.remove(&incident.quiet_key);
        self.by_wall.remove(&incident.wall_key);
        incident.quiet_key = (incident.last_ns.saturating_add(self.window_ns), quiet_seq);
        let due = if incident.revisions == 0 { incident.opened + hold } else { incident.touched + window };
        incident.wall_key = (due, wall_seq);
        self.by_quiet.insert(incident.quiet_key, host.clone());
        self.by_wall.insert(incident.wall_key, host.clone());
        let grown = incident.last_ns.saturating_sub(incident.reported_ns) >= self.interval_ns;
        if incident.revisions > 0 && incident.revisions + 1 < self.config.max_revisions && grown {
            out.push(revision(&host, incident, false, EmitCause::Revision));
        }
        self.heap += incident.count_heap(&host);
        self.keep_to_share(&mut out);
        out
    }

    /// Closes the incidents quiet soonest while their bytes exceed the share, down to one incident (each closed one
    /// emits its closing revision).
    fn keep_to_share(&mut self, out: &mut Vec<Emitted>) {
        while self.bytes() > self.share && self.open.len() > 1 {
            let Some((_, soonest)) = self.by_quiet.first_key_value() else { break };
            let soonest = soonest.clone();
            out.extend(self.close(&soonest, EmitCause::Evicted));
            self.evictions.budget += 1;
        }
        self.peak = self.peak.max(self.bytes());
    }

    fn start(&mut self, alert: Alert, origins: Vec<Origin>, times: EvidenceTimes, now: Instant) -> Incident {
        let first_ns = ns_of(alert.first_seen);
        let last_ns = ns_of(alert.last_seen);
        let detected_ns = alert.detected_at.map_or(last_ns, ns_of);
        let id = format!("{}/{}/{}", alert.host, alert.kind, format_rfc3339_ns(first_ns));
        let quiet_key = (last_ns.saturating_add(self.window_ns), self.next_sequence());
        let wall_key = (now + self.config.hold, self.next_sequence());
        self.by_quiet.insert(quiet_key, alert.host.clone());
        self.by_wall.insert(wall_key, alert.host.clone());
        let mut incident = Incident {
            id,
            partition: origins.first().map_or(0, |o| o.partition),
            first_ns,
            detected_ns,
            last_ns,
            count: 0,
            kinds: Vec::new(),
            headline: alert.clone(),
            totals: IncidentTotals::default(),
            revisions: 0,
            reported_ns: i64::MIN,
            pending: Vec::new(),
            touched: now,
            opened: now,
            quiet_key,
            wall_key,
            heap: 0,
        };
        merge(&mut incident, alert, origins, times, now);
        incident
    }

    /// Closes the incidents whose host has been quiet for the window by packet time `watermark_ns`, asking
    /// `open_until` (the suppressor) whether alerts of a host may still be pending; returns their closing
    /// revisions.
    pub fn close_quiet(&mut self, watermark_ns: i64, open_until: impl Fn(&str) -> Option<i64>) -> Vec<Emitted> {
        let mut out = Vec::new();
        let mut later = Vec::new();
        while let Some(entry) = self.by_quiet.first_entry() {
            if entry.key().0 > watermark_ns {
                break;
            }
            let host = entry.remove();
            match open_until(&host) {
                // Anomalies of the host wait in a suppression window: look again once it closes.
                Some(end) => later.push((end.max(watermark_ns.saturating_add(1)), host)),
                None => out.extend(self.close(&host, EmitCause::Quiet)),
            }
        }
        for (deadline, host) in later {
            let key = (deadline, self.next_sequence());
            if let Some(incident) = self.open.get_mut(&host) {
                incident.quiet_key = key;
                self.by_quiet.insert(key, host);
            }
        }
        out
    }

    /// When [`Incidents::poll`] next has something to emit (possibly earlier, never later).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_wall.first_key_value().map(|((at, _), _)| *at)
    }

    /// Emits what is due at wall time `now`: first revisions whose hold elapsed, closing revisions of incidents
    /// that absorbed nothing for the window.
    pub fn poll(&mut self, now: Instant) -> Vec<Emitted> {
        let mut out = Vec::new();
        while let Some(entry) = self.by_wall.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let host = entry.remove();
            let seq = self.next_sequence();
            let window = self.config.window;
            let Some(incident) = self.open.get_mut(&host) else { continue };
            if incident.revisions == 0 {
                out.push(revision(&host, incident, false, EmitCause::FlushAfter));
                self.heap -= incident.heap;
                self.heap += incident.count_heap(&host);
                incident.wall_key = (incident.touched + window, seq);
                self.by_wall.insert(incident.wall_key, host);
            } else {
                out.extend(self.close(&host, EmitCause::Quiet));
            }
        }
        out
    }

    /// Forgets every incident of `partition` without emitting it (the partition was revoked: its new owner
    /// accounts for the anomalies after the committed offset). Returns the pending origins dropped.
    pub fn forget_partition(&mut self, partition: i32) -> u64 {
        let hosts: Vec<String> =
            self.open.iter().filter(|(_, i)| i.partition == partition).map(|(h, _)| h.clone()).collect();
        let mut dropped = 0;
        for host in hosts {
            if let Some(incident) = self.open.remove(&host) {
                self.heap -= incident.heap;
                self.by_quiet.remove(&incident.quiet_key);
                self.by_wall.remove(&incident.wall_key);
                dropped += incident.pending.len() as u64;
            }
        }
        dropped
    }

    /// Closes every open incident (drain and shutdown), in the order they began.
    pub fn drain(&mut self) -> Vec<Emitted> {
        let mut hosts: Vec<(i64, String)> = self.open.iter().map(|(h, i)| (i.first_ns, h.clone())).collect();
        hosts.sort();
        let out = hosts.into_iter().filter_map(|(_, h)| self.close(&h, EmitCause::Drain)).collect();
        self.by_quiet.clear();
        self.by_wall.clear();
        self.heap = 0;
        out
    }

    /// Removes the incident of `host`, returning its closing revision.
    fn close(&mut self, host: &str, cause: EmitCause) -> Option<Emitted> {
        let mut incident = self.open.remove(host)?;
        self.heap -= incident.heap;
        self.by_quiet.remove(&incident.quiet_key);
        self.by_wall.remove(&incident.wall_key);
        Some(revision(host, &mut incident, true, cause))
    }
}

fn ns_of(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(if t.unix_timestamp() < 0 { i64::MIN } else { i64::MAX })
}

/// Adds one suppressor alert to `incident`, with `times`, the evidence times of its kind window by window: a
/// window the alert closes replaces what the incident holds of it (see [`crate::times`]).
fn merge(incident: &mut Incident, alert: Alert, origins: Vec<Origin>, times: EvidenceTimes, now: Instant) {
    incident.count = incident.count.saturating_add(alert.count);
    incident.pending.extend(origins);
    incident.touched = now;
    let t = &mut incident.totals;
    for (slot, v) in [
        (&mut t.ports, alert.totals.ports),
        (&mut t.hosts, alert.totals.hosts),
        (&mut t.sources, alert.totals.sources),
        (&mut t.packets, alert.totals.packets),
        (&mut t.bytes, alert.totals.bytes),
    ] {
        if let Some(v) = v {
            *slot = Some(slot.map_or(v, |s| s.max(v)));
        }
    }
    let parts: Vec<IncidentKind> = if alert.kinds.is_empty() {
        vec![IncidentKind {
            kind: alert.kind,
            count: alert.count,
            score: alert.score,
            threshold: alert.threshold,
            first_seen: alert.first_seen,
            detected_at: alert.detected_at.unwrap_or(alert.last_seen),
            last_seen: alert.last_seen,
            reason: alert.reason.clone(),
            target: alert.target.clone(),
            sample: alert.sample.clone(),
            features: alert.features.clone(),
            model_version: alert.model_version.clone(),
        }]
    } else {
        alert.kinds.clone()
    };
    for part in parts {
        // The suppressor's alert is of one kind, whose times it hands over window by window; any other part's
        // times stand alone.
        let part_times = if part.kind == alert.kind && times.times().is_some() {
            times.clone()
        } else {
            EvidenceTimes::settled(Times {
                first_ns: ns_of(part.first_seen),
                detected_ns: ns_of(part.detected_at),
                last_ns: ns_of(part.last_seen),
            })
        };
        match incident.kinds.iter_mut().find(|k| k.evidence.kind == part.kind) {
            Some(k) => {
                k.times.absorb(&part_times);
                k.evidence.count = k.evidence.count.saturating_add(part.count);
                // On a tie the later evidence wins: it carries the newer figures (a victim's closing update).
                if part.score >= k.evidence.score {
                    let count = k.evidence.count;
                    k.evidence = IncidentKind { count, ..part };
                }
            }
            None => incident.kinds.push(KindEvidence { times: part_times, evidence: part }),
        }
    }
    // The incident's times are its kinds': the earliest first evidence and detection, the latest last evidence.
    if let Some(t) = incident.kinds.iter().filter_map(|k| k.times.times()).reduce(Times::merged) {
        (incident.first_ns, incident.detected_ns, incident.last_ns) = (t.first_ns, t.detected_ns, t.last_ns);
    }
    let (new, held) = (strength(&alert), strength(&incident.headline));
    if new > held || new == held && alert.kind == incident.headline.kind {
        incident.headline = alert;
    }
}

/// The next revision of `incident` (its closing one when `last`), carrying the origins absorbed since the
/// previous revision.
fn revision(host: &str, incident: &mut Incident, last: bool, cause: EmitCause) -> Emitted {
    use netanom_schemas::time_from_ns;
    incident.revisions += 1;
    incident.reported_ns = incident.last_ns;
    let kinds = incident
        .kinds
        .iter()
        .map(|k| match k.times.times() {
            Some(t) => IncidentKind {
                first_seen: time_from_ns(t.first_ns),
                detected_at: time_from_ns(t.detected_ns),
                last_seen: time_from_ns(t.last_ns),
                ..k.evidence.clone()
            },
            None => k.evidence.clone(),
        })
        .collect();
    let h = &incident.headline;
    let alert = Alert {
        id: incident.id.clone(),
        host: host.to_string(),
        kind: incident.kinds.first().map_or(h.kind, |k| k.evidence.kind),
        score: h.score,
        threshold: h.threshold,
        first_seen: time_from_ns(incident.first_ns),
        last_seen: time_from_ns(incident.last_ns),
        detected_at: Some(time_from_ns(incident.detected_ns)),
        count: incident.count,
        reason: h.reason.clone(),
        target: h.target.clone(),
        sample: h.sample.clone(),
        features: h.features.clone(),
        model_version: h.model_version.clone(),
        revision: incident.revisions,
        final_revision: last,
        kinds,
        totals: IncidentTotals {
            duration_s: incident.last_ns.saturating_sub(incident.first_ns) as f64 / 1e9,
            ..incident.totals.clone()
        },
    };
    let origins = std::mem::take(&mut incident.pending);
    // A revision is delivered, never absorbed again: its kinds carry their times.
    Emitted { alert, origins, continuation: incident.revisions > 1, cause, times: EvidenceTimes::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netanom_schemas::{AnomalyKind, Contribution, time_from_ns};

    const S: i64 = 1_000_000_000;
    const T0: i64 = 1_700_000_000 * S;

    /// A suppressor group of `kind` about `host`, evidence from `first_s` to `last_s` (s after T0).
    fn group(host: &str, kind: AnomalyKind, (first_s, last_s): (i64, i64), score: f64, offset: i64) -> Emitted {
        let features = vec![Contribution { name: "distinct_dst_ports".into(), value: score, baseline: None }];
        let mut totals = IncidentTotals::default();
        totals.observe(&features);
        let alert = Alert {
            id: format!("{host}/{kind}/{first_s}"),
            host: host.into(),
            kind,
            score,
            threshold: 10.0,
            first_seen: time_from_ns(T0 + first_s * S),
            last_seen: time_from_ns(T0 + last_s * S),
            detected_at: Some(time_from_ns(T0 + last_s * S)),
            count: 1,
            reason: format!("{kind} {score}"),
            target: None,
            sample: "s".into(),
            features,
            model_version: "test".into(),
            revision: 1,
            final_revision: true,
            kinds: Vec::new(),
            totals,
        };
        let times = EvidenceTimes::settled(Times {
            first_ns: T0 + first_s * S,
            detected_ns: T0 + last_s * S,
            last_ns: T0 + last_s * S,
        });
        Emitted {
            alert,
            origins: vec![Origin { partition: 0, offset }],
            continuation: false,
            cause: EmitCause::Drain,
            times,
        }
    }

    fn closed_host(_: &str) -> Option<i64> {
        None
    }

    #[test]
    fn the_kinds_of_one_host_are_one_incident_with_one_id() {
        let t = Instant::now();
        let mut i = Incidents::new(IncidentConfig::default(), usize::MAX);
        assert!(i.absorb(group("10.0.0.1", AnomalyKind::Rate, (5, 9), 20.0, 0), t).is_empty());
        assert!(i.absorb(group("10.0.0.1", AnomalyKind::Fanout, (3, 12), 50.0, 1), t).is_empty());
        assert!(i.absorb(group("10.0.0.2", AnomalyKind::Rate, (4, 6), 11.0, 2), t).is_empty());
        assert_eq!(i.open_incidents(), 2);
        assert!(i.poll(t + Duration::from_millis(4999)).is_empty(), "the first revision is held");
        let first = i.poll(t + Duration::from_secs(5));
        assert_eq!(first.len(), 2);
        let a = first.iter().find(|e| e.alert.host == "10.0.0.1").unwrap();
        assert_eq!(a.alert.id, format!("10.0.0.1/rate/{}", format_rfc3339_ns(T0 + 5 * S)), "first kind, first seen");
        assert_eq!((a.alert.revision, a.alert.final_revision), (1, false));
        assert_eq!(a.alert.kind_list(), [AnomalyKind::Rate, AnomalyKind::Fanout]);
        assert_eq!(a.alert.first_seen, time_from_ns(T0 + 3 * S), "the earliest evidence of any kind");
        assert_eq!(a.alert.detected_at, Some(time_from_ns(T0 + 9 * S)), "the earliest detection");
        assert_eq!(a.alert.last_seen, time_from_ns(T0 + 12 * S));
        assert_eq!((a.alert.count, a.alert.score, a.alert.reason.as_str()), (2, 50.0, "fanout 50"));
        assert_eq!(a.alert.totals.ports, Some(50));
        assert_eq!(a.alert.totals.duration_s, 9.0);
        assert_eq!(a.origins.len(), 2);
        let last = i.drain();
        assert_eq!(last.len(), 2);
        let a2 = last.iter().find(|e| e.alert.host == "10.0.0.1").unwrap();
        assert_eq!((a2.alert.id.as_str(), a2.alert.revision, a2.alert.final_revision), (a.alert.id.as_str(), 2, true));
        assert!(a2.origins.is_empty(), "every origin was in revision 1");
        assert_eq!(i.open_incidents(), 0);
    }

    #[test]
    fn revisions_are_bounded_and_spaced_and_account_for_every_origin() {
        let t = Instant::now();
        let config = IncidentConfig { max_revisions: 4, ..IncidentConfig::default() };
        let mut i = Incidents::new(config, usize::MAX);
        let mut out = Vec::new();
        // Ten minutes of evidence, a group every 5 s of packet time, wall time advancing 100 ms a group.
        for n in 0..120i64 {
            let now = t + Duration::from_millis(100 * n as u64);
            let kind = if n % 2 == 0 { AnomalyKind::Rate } else { AnomalyKind::Profile };
            out.extend(i.absorb(group("h", kind, (5 * n, 5 * n + 4), 11.0 + n as f64, n), now));
            out.extend(i.poll(now));
            out.extend(i.close_quiet(T0 + (5 * n + 4) * S, closed_host));
        }
        out.extend(i.drain());
        let revisions: Vec<u64> = out.iter().map(|e| e.alert.revision).collect();
        assert_eq!(revisions, [1, 2, 3, 4], "at most max_revisions, in order");
        assert!(out.iter().all(|e| e.alert.id == out[0].alert.id));
        assert_eq!(out.iter().filter(|e| e.alert.final_revision).count(), 1);
        assert!(out.last().unwrap().alert.final_revision);
        // Non-final revisions are min_revision_interval of packet time apart.
        let lasts: Vec<i64> = out.iter().map(|e| ns_of(e.alert.last_seen)).collect();
        assert!(lasts[1] - lasts[0] >= 30 * S && lasts[2] - lasts[1] >= 30 * S, "{lasts:?}");
        let mut offsets: Vec<i64> = out.iter().flat_map(|e| e.origins.iter().map(|o| o.offset)).collect();
        offsets.sort_unstable();
        assert_eq!(offsets, (0..120).collect::<Vec<_>>(), "every origin in exactly one revision");
        assert_eq!(out.last().unwrap().alert.count, 120);
        let kinds = &out.last().unwrap().alert.kinds;
        assert_eq!(kinds.iter().map(|k| k.count).collect::<Vec<_>>(), [60, 60]);
        assert_eq!(kinds[1].score, 11.0 + 119.0, "each kind keeps its strongest evidence");
    }

    #[test]
    fn a_quiet_host_closes_unless_the_suppressor_still_holds_its_anomalies() {
        let t = Instant::now();
        let mut i = Incidents::new(IncidentConfig::default(), usize::MAX);
        i.absorb(group("h", AnomalyKind::Fanout, (0, 10), 30.0, 0), t);
        assert!(i.close_quiet(T0 + 129 * S, closed_host).is_empty(), "quiet for 119 s only");
        let busy = |_: &str| Some(T0 + 150 * S);
        assert!(i.close_quiet(T0 + 130 * S, busy).is_empty(), "a suppression window of the host is open");
        assert!(i.close_quiet(T0 + 149 * S, closed_host).is_empty(), "looked at again when that window closes");
        let out = i.close_quiet(T0 + 150 * S, closed_host);
        assert_eq!(out.len(), 1);
        let e = &out[0];
        assert_eq!((e.alert.revision, e.alert.final_revision, e.cause), (1, true, EmitCause::Quiet));
        assert_eq!(e.origins.len(), 1);
        // Later evidence of the host is a new incident.
        i.absorb(group("h", AnomalyKind::Fanout, (400, 410), 30.0, 1), t);
        let next = i.drain();
        assert_ne!(next[0].alert.id, e.alert.id);
    }

    #[test]
    fn an_incident_idle_for_the_window_in_wall_time_closes() {
        let t = Instant::now();
        let mut i = Incidents::new(IncidentConfig::default(), usize::MAX);
        i.absorb(group("h", AnomalyKind::Rate, (0, 1), 30.0, 0), t);
        assert_eq!(i.next_deadline(), Some(t + Duration::from_secs(5)));
        assert_eq!(i.poll(t + Duration::from_secs(5)).len(), 1);
        i.absorb(group("h", AnomalyKind::Rate, (2, 3), 30.0, 1), t + Duration::from_secs(10));
        assert_eq!(i.next_deadline(), Some(t + Duration::from_secs(130)));
        assert!(i.poll(t + Duration::from_secs(129)).is_empty());
        let out = i.poll(t + Duration::from_secs(130));
        assert_eq!(out.len(), 1);
        assert!(out[0].alert.final_revision);
        assert_eq!(out[0].origins, vec![Origin { partition: 0, offset: 1 }]);
        assert_eq!((i.open_incidents(), i.next_deadline()), (0, None));
    }

    #[test]
    fn open_incidents_are_bounded_and_a_revoked_partition_is_forgotten() {
        let t = Instant::now();
        let mut i = Incidents::new(IncidentConfig { max_incidents: Some(2), ..IncidentConfig::default() }, usize::MAX);
        i.absorb(group("a", AnomalyKind::Rate, (0, 50), 30.0, 0), t);
        i.absorb(group("b", AnomalyKind::Rate, (0, 10), 30.0, 1), t);
        let out = i.absorb(group("c", AnomalyKind::Rate, (0, 30), 30.0, 2), t);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].alert.host.as_str(), out[0].cause), ("b", EmitCause::Evicted), "quiet soonest goes");
        assert!(out[0].alert.final_revision);
        assert_eq!((i.evictions().capacity, i.open_incidents()), (1, 2));
        assert_eq!(i.forget_partition(0), 2);
        assert!(i.drain().is_empty());
        assert!(i.poll(t + Duration::from_secs(3600)).is_empty());
    }

    #[test]
    fn incidents_off_pass_every_group_through() {
        let mut i = Incidents::new(IncidentConfig { enabled: false, ..IncidentConfig::default() }, usize::MAX);
        let g = group("h", AnomalyKind::Rate, (0, 1), 30.0, 0);
        assert_eq!(i.absorb(g.clone(), Instant::now()), vec![g]);
        assert_eq!(i.open_incidents(), 0);
    }

    /// A victim report of the window `key`: first evidence, detection and last evidence at `(f, d, l)` s after T0.
    fn victim_report(key: &str, closing: bool, (f, d, l): (i64, i64, i64), sources: f64) -> netanom_schemas::Anomaly {
        netanom_schemas::Anomaly {
            id: format!("victim:{key}{}", if closing { ":final" } else { "" }),
            host: "10.0.0.5".into(),
            kind: AnomalyKind::Victim,
            window_start_ns: T0 + f * S,
            window_end_ns: T0 + l * S,
            score: sources,
            threshold: 500.0,
            target: Some("10.0.0.5".into()),
            reason: format!("{sources} sources"),
            features: vec![Contribution { name: "distinct_sources".into(), value: sources, baseline: None }],
            sample: String::new(),
            model_version: "test".into(),
            detected_ns: Some(T0 + d * S),
            window_key: Some(key.into()),
            closing,
        }
    }

    #[test]
    fn a_closing_update_replaces_its_windows_times_and_other_windows_merge() {
        use crate::suppress::{SuppressionConfig, Suppressor};
        let t = Instant::now();
        // The first report of window w0 dates the flood by a benign client's SYN at 1 s; its closing update
        // (the flood from 3 s to 9 s, detected at 4 s) comes in the same suppression group, or in a later one
        // after the first was flushed, and its times win either way. Window w1 (12 s to 18 s) is merged.
        for flushed in [false, true] {
            let mut s = Suppressor::new(SuppressionConfig::default(), usize::MAX);
            let mut i = Incidents::new(IncidentConfig::default(), usize::MAX);
            let mut out = Vec::new();
            let origin = |offset| Origin { partition: 0, offset };
            let offer = |s: &mut Suppressor, a, offset, now| {
                let mut emitted = s.poll(now);
                emitted.extend(s.offer(a, origin(offset), now));
                emitted
            };
            let mut alerts = offer(&mut s, victim_report("w0", false, (1, 5, 5), 600.0), 0, t);
            let later = if flushed { t + Duration::from_secs(6) } else { t };
            alerts.extend(offer(&mut s, victim_report("w0", true, (3, 4, 9), 640.0), 1, later));
            assert_eq!(alerts.len(), usize::from(flushed), "the first report flushed on its own: {alerts:?}");
            if flushed {
                let first = &alerts[0].alert;
                assert_eq!(first.first_seen, time_from_ns(T0 + S), "what the first report knew");
                out.extend(i.absorb(alerts.remove(0), t));
            }
            let mut alerts = s.drain();
            assert_eq!(alerts.len(), 1);
            let closing = &alerts[0].alert;
            assert_eq!(
                (closing.first_seen, closing.detected_at, closing.last_seen, closing.score),
                (time_from_ns(T0 + 3 * S), Some(time_from_ns(T0 + 4 * S)), time_from_ns(T0 + 9 * S), 640.0),
                "flushed {flushed}: the closing update's times and figures"
            );
            out.extend(i.absorb(alerts.remove(0), later));
            out.extend(i.drain());
            let last = &out.last().unwrap().alert;
            assert!(last.final_revision);
            let times = |a: &Alert| (a.first_seen, a.detected_at, a.last_seen);
            let exact = (time_from_ns(T0 + 3 * S), Some(time_from_ns(T0 + 4 * S)), time_from_ns(T0 + 9 * S));
            assert_eq!(times(last), exact, "flushed {flushed}: the incident has the closing update's times");
            assert_eq!(last.kinds[0].first_seen, exact.0);
            assert_eq!((last.score, last.totals.sources), (640.0, Some(640)));

            // A second window of the same victim: merged by earliest and latest, its closing update replacing
            // its own first report only.
            let mut s = Suppressor::new(SuppressionConfig::default(), usize::MAX);
            let mut i = Incidents::new(IncidentConfig::default(), usize::MAX);
            let reports = [
                victim_report("w0", false, (1, 5, 5), 600.0),
                victim_report("w1", false, (11, 13, 13), 550.0),
                victim_report("w0", true, (3, 4, 9), 640.0),
                victim_report("w1", true, (12, 14, 18), 700.0),
            ];
            let mut alerts = Vec::new();
            for (n, a) in reports.into_iter().enumerate() {
                let now = if flushed { t + Duration::from_secs(6 * n as u64) } else { t };
                alerts.extend(offer(&mut s, a, n as i64, now));
            }
            alerts.extend(s.drain());
            let mut out = Vec::new();
            for a in alerts {
                out.extend(i.absorb(a, t));
            }
            out.extend(i.drain());
            let last = &out.last().unwrap().alert;
            let merged = (time_from_ns(T0 + 3 * S), Some(time_from_ns(T0 + 4 * S)), time_from_ns(T0 + 18 * S));
            assert_eq!(times(last), merged, "flushed {flushed}: both windows' closing times, merged");
            assert_eq!(last.count, 4);
            assert_eq!(last.totals.duration_s, 15.0);
        }
    }

    #[test]
    fn the_configuration_reports_every_problem() {
        let bad =
            IncidentConfig { window: Duration::ZERO, max_revisions: 1, max_incidents: Some(0), ..Default::default() };
        let keys: Vec<&str> = bad.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["window", "max_revisions", "max_incidents"]);
        assert!(IncidentConfig::default().validate().is_empty());
    }
}
