//! Scan and sweep detector (kind `fanout`): per host, the distinct (destination, port) targets of its
//! connection-opening packets in a tumbling packet-time window, counted exactly in bounded sets. Two counts:
//! distinct destination ports on one destination (a port scan) and distinct destination addresses (a host
//! sweep). Owns the per-host window and the rule; the host map lives in [`crate::state`].
//!
//! Calibration (labelled captures): benign hosts peak at 6 distinct ports on one destination and 22 distinct
//! destinations per 10 s; nmap scans probe 29 to 10,000 ports and sweeps reach 256 hosts within seconds.
//!
//! Sweeps slower than the 10 s window are counted over a sliding `slow_window` (60 s): the distinct
//! destinations of new connections, and separately those of ICMP echo requests (ping sweeps, which benign
//! hosts hardly send: at most 1 address a minute in the captures). Each keeps the last contact time per
//! destination and forgets those older than the window once the count reaches its threshold, so it holds at
//! most the threshold plus the destinations of one window (capped at `max_targets`). A slow sweep is reported
//! only when the 10 s window has not already reported the host in its current window.

use foldhash::{HashMap, HashSet};
use std::net::IpAddr;

use netanom_schemas::{Anomaly, AnomalyKind, Contribution, PacketFeatures};

use crate::anomaly::{AnomalyParts, RULES_VERSION, seconds, thousands};
use crate::bytes::table_bytes;
use crate::kind::{Context, DetectorKind, Setup};
use crate::time::{ns, window_start_ns};
use crate::validation::{ConfigError, Problems};
use serde::Deserialize;
use std::time::Duration;

/// `[detector.fanout]`: distinct targets of new connections per tumbling window.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FanoutConfig {
    /// Whether the detector runs. Default true.
    pub enabled: bool,
    /// Tumbling window of packet time (aligned to multiples of its length). Default 10 s.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Distinct destination ports on one destination that make a port scan. Default 24 (benign captures
    /// peak at 6; the smallest labelled scan probes 29).
    pub port_threshold: usize,
    /// Distinct destination addresses that make a host sweep. Default 64 (benign captures peak at 22).
    pub host_threshold: usize,
    /// Most (destination, port) targets remembered per host and window; counting stops beyond it. Default 4096.
    pub max_targets: usize,
    /// Sliding window of the slow sweep count: distinct destinations of new connections over the last
    /// `slow_window` of packet time, for sweeps too slow for the 10 s window. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub slow_window: Duration,
    /// Distinct destinations within `slow_window` that make a slow sweep. Default 64 (benign captures peak at
    /// 29 in a minute, a page of a news site; the slow UDP sweep of the captures reaches 96 in 51 s).
    pub slow_host_threshold: usize,
    /// Distinct destinations of ICMP echo requests within `slow_window` that make a ping sweep. Default 16
    /// (benign captures ping at most 1 address a minute; the smallest labelled ping sweep reaches 18 in 1.6 s,
    /// broadcast and network addresses included). A monitoring server that pings its fleet crosses it.
    pub icmp_host_threshold: usize,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(10),
            port_threshold: 24,
            host_threshold: 64,
            max_targets: 4096,
            slow_window: Duration::from_secs(60),
            slow_host_threshold: 64,
            icmp_host_threshold: 16,
        }
    }
}

impl FanoutConfig {
    /// Checks `[detector.fanout]` and returns every problem.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut p = Problems::new("fanout");
        p.check(!self.window.is_zero(), "window", || "must be > 0".into());
        p.check(!self.slow_window.is_zero(), "slow_window", || "must be > 0".into());
        p.check((2..=self.max_targets).contains(&self.slow_host_threshold), "slow_host_threshold", || {
            format!(
                "must be in 2..=detector.fanout.max_targets ({}), got {}",
                self.max_targets, self.slow_host_threshold
            )
        });
        p.check((2..=self.max_targets).contains(&self.icmp_host_threshold), "icmp_host_threshold", || {
            format!(
                "must be in 2..=detector.fanout.max_targets ({}), got {}",
                self.max_targets, self.icmp_host_threshold
            )
        });
        p.check(self.port_threshold >= 2, "port_threshold", || format!("must be >= 2, got {}", self.port_threshold));
        p.check(self.host_threshold >= 2, "host_threshold", || format!("must be >= 2, got {}", self.host_threshold));
        p.check(self.max_targets > self.port_threshold.max(self.host_threshold), "max_targets", || {
            format!(
                "must be > detector.fanout.port_threshold ({}) and detector.fanout.host_threshold ({}), got {}",
                self.port_threshold, self.host_threshold, self.max_targets
            )
        });
        p.into_vec()
    }
}

/// Rule parameters in hot-path units.
#[derive(Debug, Clone, Copy)]
pub struct FanoutRule {
    /// Window length, ns.
    pub window_ns: i64,
    /// Distinct ports on one destination.
    pub port_threshold: usize,
    /// Distinct destinations.
    pub host_threshold: usize,
    /// Cap of the target set.
    pub max_targets: usize,
    /// Sliding window of the slow and ICMP sweep counts, ns.
    pub slow_window_ns: i64,
    /// Distinct destinations within the slow window.
    pub slow_host_threshold: usize,
    /// Distinct ICMP echo destinations within the slow window.
    pub icmp_host_threshold: usize,
}

impl From<&FanoutConfig> for FanoutRule {
    fn from(c: &FanoutConfig) -> Self {
        Self {
            window_ns: ns(c.window).max(1),
            port_threshold: c.port_threshold,
            host_threshold: c.host_threshold,
            max_targets: c.max_targets,
            slow_window_ns: ns(c.slow_window).max(1),
            slow_host_threshold: c.slow_host_threshold,
            icmp_host_threshold: c.icmp_host_threshold,
        }
    }
}

impl DetectorKind for FanoutRule {
    type Config = FanoutConfig;
    type State = FanoutWindow;
    const PRODUCES: &'static [AnomalyKind] = &[AnomalyKind::Fanout];

    fn validate(config: &FanoutConfig, _: &Context) -> Vec<ConfigError> {
        config.validate()
    }

    fn build(config: &FanoutConfig, _: &mut Setup<'_>) -> Option<Self> {
        config.enabled.then(|| Self::from(config))
    }

    /// A host that opened connections to [`SUSPICIOUS_TARGETS`] distinct targets in its window, or to as many
    /// destinations over the slow window: a scan or sweep may be under way.
    fn open_suspicion(w: &FanoutWindow) -> bool {
        w.targets.len() >= SUSPICIOUS_TARGETS
            || w.slow.last.len() >= SUSPICIOUS_TARGETS
            || w.icmp.last.len() >= SUSPICIOUS_TARGETS
    }

    fn heap_bytes(w: &FanoutWindow) -> usize {
        table_bytes::<(IpAddr, u16)>(w.targets.capacity())
            + table_bytes::<(IpAddr, u32)>(w.ports_per_destination.capacity())
            + table_bytes::<(IpAddr, i64)>(w.slow.last.capacity())
            + table_bytes::<(IpAddr, i64)>(w.icmp.last.capacity())
    }

    fn observe_packet(&mut self, host: IpAddr, p: &PacketFeatures, window: &mut FanoutWindow, out: &mut Vec<Anomaly>) {
        if p.opens_flow()
            && let Some(hit) = window.observe(p, self)
        {
            out.push(fanout_anomaly(host, self, hit, p).build());
        }
    }
}

/// Distinct targets (or destinations over the slow window) from which a host holds open suspicion: more than a
/// one-packet source, fewer than any threshold.
pub const SUSPICIOUS_TARGETS: usize = 3;

/// One host's current window.
#[derive(Debug, Clone, Default)]
pub struct FanoutWindow {
    window_start_ns: i64,
    /// Distinct (destination, port) pairs; at most `max_targets`.
    targets: HashSet<(IpAddr, u16)>,
    /// Distinct ports per destination; at most `max_targets` destinations.
    ports_per_destination: HashMap<IpAddr, u32>,
    fired: bool,
    /// Distinct destinations over the sliding slow window.
    slow: SlidingDestinations,
    /// Distinct ICMP echo destinations over the sliding slow window.
    icmp: SlidingDestinations,
}

/// Distinct destinations over a sliding window: the last contact time of each.
#[derive(Debug, Clone, Default)]
struct SlidingDestinations {
    last: HashMap<IpAddr, i64>,
    /// Packet time of the last report.
    fired_ns: Option<i64>,
}

impl SlidingDestinations {
    /// Records a contact with `destination` at `ts`; returns the distinct destinations within `window_ns` when
    /// they reach `threshold` (at most once per window).
    fn observe(&mut self, ts: i64, destination: IpAddr, window_ns: i64, threshold: usize, cap: usize) -> Option<usize> {
        let horizon = ts.saturating_sub(window_ns);
        if self.last.len() >= cap && !self.last.contains_key(&destination) {
            self.last.retain(|_, t| *t > horizon);
            if self.last.len() >= cap {
                return None;
            }
        }
        let t = self.last.entry(destination).or_insert(ts);
        *t = (*t).max(ts);
        if self.last.len() < threshold {
            return None;
        }
        self.last.retain(|_, t| *t > horizon);
        if self.last.len() < threshold || self.fired_ns.is_some_and(|f| ts.saturating_sub(f) < window_ns) {
            return None;
        }
        self.fired_ns = Some(ts);
        Some(self.last.len())
    }
}

/// What crossed a threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FanoutHit {
    /// Many ports on one destination.
    PortScan {
        /// The scanned destination.
        destination: IpAddr,
        /// Distinct ports on it.
        ports: usize,
        /// Window start, ns.
        window_start_ns: i64,
    },
    /// Many destinations.
    HostSweep {
        /// Distinct destinations.
        hosts: usize,
        /// Window start, ns.
        window_start_ns: i64,
    },
    /// Many destinations over the sliding slow window: new connections, or ICMP echo requests.
    SlowSweep {
        /// Distinct destinations.
        hosts: usize,
        /// Counted ICMP echo requests only (a ping sweep).
        icmp: bool,
    },
}

impl FanoutWindow {
    /// Records one connection-opening packet; returns a hit the first time a threshold is crossed in the window.
    pub fn observe(&mut self, p: &PacketFeatures, rule: &FanoutRule) -> Option<FanoutHit> {
        let start = window_start_ns(p.ts_ns, rule.window_ns);
        if start > self.window_start_ns {
            self.window_start_ns = start;
            self.fired = false;
            self.targets.clear();
            self.ports_per_destination.clear();
            // Give the memory of a finished scan back; quiet hosts keep small sets.
            if self.targets.capacity() > 1024 {
                self.targets.shrink_to(64);
                self.ports_per_destination.shrink_to(64);
            }
        }
        let fast_fired = self.fired;
        let echo = matches!((p.ip_proto, p.icmp_type), (1, Some(8)) | (58, Some(128)));
        let (window, cap) = (rule.slow_window_ns, rule.max_targets);
        let slow = self.slow.observe(p.ts_ns, p.destination, window, rule.slow_host_threshold, cap);
        let icmp =
            if echo { self.icmp.observe(p.ts_ns, p.destination, window, rule.icmp_host_threshold, cap) } else { None };
        let fast = self.observe_window(p, rule);
        if fast.is_some() || fast_fired {
            return fast;
        }
        match (slow, icmp) {
            (Some(hosts), _) => Some(FanoutHit::SlowSweep { hosts, icmp: false }),
            (None, Some(hosts)) => Some(FanoutHit::SlowSweep { hosts, icmp: true }),
            (None, None) => None,
        }
    }

    /// The tumbling window's part of [`FanoutWindow::observe`].
    fn observe_window(&mut self, p: &PacketFeatures, rule: &FanoutRule) -> Option<FanoutHit> {
        // A packet from an earlier window (reordering) counts in the current one: never rewind.
        if self.targets.len() >= rule.max_targets {
            return None;
        }
        if !self.targets.insert((p.destination, p.dst_port)) {
            return None;
        }
        let ports = self.ports_per_destination.entry(p.destination).or_insert(0);
        *ports += 1;
        let ports = *ports as usize;
        if self.fired {
            return None;
        }
        if ports >= rule.port_threshold {
            self.fired = true;
            return Some(FanoutHit::PortScan {
                destination: p.destination,
                ports,
                window_start_ns: self.window_start_ns,
            });
        }
        let hosts = self.ports_per_destination.len();
        if hosts >= rule.host_threshold {
            self.fired = true;
            return Some(FanoutHit::HostSweep { hosts, window_start_ns: self.window_start_ns });
        }
        None
    }

    /// Distinct destinations in the current window.
    pub fn destinations(&self) -> usize {
        self.ports_per_destination.len()
    }

    /// Distinct targets in the current window.
    pub fn targets(&self) -> usize {
        self.targets.len()
    }
}

/// Builds the fanout anomaly for `host`.
pub fn fanout_anomaly(host: IpAddr, rule: &FanoutRule, hit: FanoutHit, packet: &PacketFeatures) -> AnomalyParts {
    let (window_start_ns, score, threshold, target, reason, name) = match hit {
        FanoutHit::SlowSweep { hosts, icmp } => {
            let threshold = if icmp { rule.icmp_host_threshold } else { rule.slow_host_threshold };
            let what = if icmp { "sent ICMP echo requests to" } else { "opened connections to" };
            let kind = if icmp { "ping sweep" } else { "slow host sweep" };
            (
                packet.ts_ns.saturating_sub(rule.slow_window_ns),
                hosts as f64,
                threshold as f64,
                None,
                format!(
                    "{host} {what} {} distinct hosts within {} ({kind}; threshold {threshold})",
                    thousands(hosts as u64),
                    seconds(rule.slow_window_ns),
                ),
                if icmp { "distinct_echo_destinations" } else { "distinct_destinations_slow" },
            )
        }
        FanoutHit::PortScan { destination, ports, window_start_ns } => (
            window_start_ns,
            ports as f64,
            rule.port_threshold as f64,
            Some(destination),
            format!(
                "{host} opened connections to {} distinct ports on {destination} within {} (port scan; threshold {})",
                thousands(ports as u64),
                seconds(rule.window_ns),
                rule.port_threshold
            ),
            "distinct_dst_ports",
        ),
        FanoutHit::HostSweep { hosts, window_start_ns } => (
            window_start_ns,
            hosts as f64,
            rule.host_threshold as f64,
            None,
            format!(
                "{host} opened connections to {} distinct hosts within {} (host sweep; threshold {})",
                thousands(hosts as u64),
                seconds(rule.window_ns),
                rule.host_threshold
            ),
            "distinct_destinations",
        ),
    };
    AnomalyParts {
        host,
        kind: AnomalyKind::Fanout,
        window_start_ns,
        // The evidence ends at the packet that crossed the threshold (inside the tumbling window).
        window_end_ns: packet.ts_ns.max(window_start_ns),
        score,
        threshold,
        target,
        reason,
        features: vec![Contribution { name: name.into(), value: score, baseline: Some(threshold) }],
        sample: packet.summary(host),
        model_version: RULES_VERSION.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{T0, syn};

    fn rule() -> FanoutRule {
        FanoutRule::from(&FanoutConfig::default())
    }

    #[test]
    fn port_scan_fires_once_per_window_naming_the_target() {
        let r = rule();
        let mut w = FanoutWindow::default();
        let target: IpAddr = "192.168.1.25".parse().unwrap();
        let mut hits = vec![];
        // 1,000 ports in 1.2 s, then the same scan again in the next window.
        for round in 0..2i64 {
            for port in 1..=1000u16 {
                let ts = 20_000_000_000 + round * 10_000_000_000 + i64::from(port) * 1_200_000;
                if let Some(h) = w.observe(&syn(ts, target, port), &r) {
                    hits.push(h);
                }
            }
        }
        assert_eq!(
            hits,
            vec![
                FanoutHit::PortScan { destination: target, ports: 24, window_start_ns: 20_000_000_000 },
                FanoutHit::PortScan { destination: target, ports: 24, window_start_ns: 30_000_000_000 },
            ]
        );
    }

    #[test]
    fn host_sweep_fires() {
        let r = rule();
        let mut w = FanoutWindow::default();
        let mut hits = vec![];
        for i in 0..=255u8 {
            let d = IpAddr::from([10, 0, 0, i]);
            if let Some(h) = w.observe(&syn(1_000_000 * i64::from(i), d, 80), &r) {
                hits.push(h);
            }
        }
        assert_eq!(hits, vec![FanoutHit::HostSweep { hosts: 64, window_start_ns: 0 }]);
    }

    #[test]
    fn browsing_many_connections_to_few_services_is_quiet() {
        let r = rule();
        let mut w = FanoutWindow::default();
        // 20 servers, ports 80/443, many connections each.
        for i in 0..2_000i64 {
            let d = IpAddr::from([93, 184, 0, (i % 20) as u8]);
            let port = if i % 3 == 0 { 80 } else { 443 };
            assert!(w.observe(&syn(i * 4_000_000, d, port), &r).is_none());
        }
    }

    #[test]
    fn slow_sweep_is_counted_over_a_sliding_minute() {
        let r = rule();
        let mut w = FanoutWindow::default();
        let s = 1_000_000_000i64;
        // The hs-udpScan pattern: UDP to 96 hosts in 51 s (~19 per 10 s window, under the 64 of the fast rule),
        // starting 20 s before a minute boundary so that no tumbling minute holds 64 of them.
        let t0 = T0 - T0.rem_euclid(60 * s) + 40 * s;
        let mut hits = vec![];
        for i in 0..96i64 {
            let mut p = syn(t0 + i * 530_000_000, IpAddr::from([246, 237, 0, i as u8]), 40_125);
            p.ip_proto = 17;
            if let Some(h) = w.observe(&p, &r) {
                hits.push((h, p.ts_ns));
            }
        }
        assert_eq!(hits.len(), 1, "{hits:?}");
        let (hit, at) = hits[0];
        assert_eq!(hit, FanoutHit::SlowSweep { hosts: 64, icmp: false });
        assert_eq!(at, t0 + 63 * 530_000_000);
        let a =
            fanout_anomaly(IpAddr::from([10, 0, 0, 1]), &r, hit, &syn(at, IpAddr::from([246, 237, 0, 63]), 1)).build();
        assert_eq!((a.window_start_ns, a.window_end_ns), (at - 60 * s, at));
        assert!(
            a.reason.contains("opened connections to 64 distinct hosts within 60 s (slow host sweep"),
            "{}",
            a.reason
        );
        // The same 96 hosts over ten minutes are never 64 within one minute.
        let mut w = FanoutWindow::default();
        for i in 0..96i64 {
            assert!(w.observe(&syn(t0 + i * 6 * s, IpAddr::from([246, 237, 0, i as u8]), 80), &r).is_none());
        }
    }

    #[test]
    fn ping_sweep_of_eighteen_addresses_is_reported_once() {
        let r = rule();
        let mut w = FanoutWindow::default();
        let echo = |i: u8| {
            let mut p = syn(T0 + i64::from(i) * 90_000_000, IpAddr::from([192, 168, 1, i]), 0);
            (p.ip_proto, p.tcp_flags, p.dst_port, p.icmp_type, p.icmp_code) = (1, 0, 0, Some(8), Some(0));
            p
        };
        let hits: Vec<_> = (0..18).filter_map(|i| w.observe(&echo(i), &r)).collect();
        assert_eq!(hits, vec![FanoutHit::SlowSweep { hosts: 16, icmp: true }]);
        // 18 TCP destinations are no sweep at all.
        let mut w = FanoutWindow::default();
        assert!((0..18u8).all(|i| w.observe(&syn(T0, IpAddr::from([192, 168, 1, i]), 443), &r).is_none()));
    }

    #[test]
    fn a_fast_sweep_is_not_reported_again_as_a_slow_one() {
        let r = rule();
        let mut w = FanoutWindow::default();
        let hits: Vec<_> = (0..200u8)
            .filter_map(|i| w.observe(&syn(T0 + i64::from(i), IpAddr::from([10, 0, 1, i]), 80), &r))
            .collect();
        assert_eq!(hits, vec![FanoutHit::HostSweep { hosts: 64, window_start_ns: T0 - T0.rem_euclid(10_000_000_000) }]);
    }

    #[test]
    fn target_sets_are_bounded() {
        let r = FanoutRule {
            max_targets: 100,
            port_threshold: 1_000_000,
            host_threshold: 1_000_000,
            window_ns: i64::MAX,
            slow_host_threshold: 1_000_000,
            icmp_host_threshold: 1_000_000,
            ..rule()
        };
        let mut w = FanoutWindow::default();
        for i in 0..10_000u32 {
            let d = IpAddr::from(i.to_be_bytes());
            assert!(w.observe(&syn(1, d, (i % 65535) as u16), &r).is_none());
        }
        assert_eq!(w.targets(), 100);
        assert_eq!(w.destinations(), 100);
        assert_eq!(w.slow.last.len(), 100, "the sliding count is capped at max_targets too");
    }
}
