//! Scan and sweep detector (kind `fanout`): per host, the distinct (destination, port) targets of its
//! connection-opening packets in a tumbling packet-time window, counted exactly in bounded sets. Two counts:
//! distinct destination ports on one destination (a port scan) and distinct destination addresses (a host
//! sweep). Owns the per-host window and the rule; the host map lives in [`crate::state`].
//!
//! Calibration (labelled captures): benign hosts peak at 6 distinct ports on one destination and 22 distinct
//! destinations per 10 s; nmap scans probe 29 to 10,000 ports and sweeps reach 256 hosts within seconds.

use foldhash::{HashMap, HashSet};
use std::net::IpAddr;

use netanom_schemas::{AnomalyKind, Contribution, PacketFeatures};

use crate::anomaly::{AnomalyParts, RULES_VERSION, seconds, thousands};
use crate::config::{FanoutConfig, ns};

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
}

impl From<&FanoutConfig> for FanoutRule {
    fn from(c: &FanoutConfig) -> Self {
        Self {
            window_ns: ns(c.window).max(1),
            port_threshold: c.port_threshold,
            host_threshold: c.host_threshold,
            max_targets: c.max_targets,
        }
    }
}

/// One host's current window.
#[derive(Debug, Clone, Default)]
pub struct FanoutWindow {
    window_start_ns: i64,
    /// Distinct (destination, port) pairs; at most `max_targets`.
    targets: HashSet<(IpAddr, u16)>,
    /// Distinct ports per destination; at most `max_targets` destinations.
    ports_per_destination: HashMap<IpAddr, u32>,
    fired: bool,
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
}

impl FanoutWindow {
    /// Records one connection-opening packet; returns a hit the first time a threshold is crossed in the window.
    pub fn observe(&mut self, p: &PacketFeatures, rule: &FanoutRule) -> Option<FanoutHit> {
        let start = p.ts_ns - p.ts_ns.rem_euclid(rule.window_ns);
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
        window_end_ns: window_start_ns.saturating_add(rule.window_ns),
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
    use crate::fixtures::syn;

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
    fn target_sets_are_bounded() {
        let r =
            FanoutRule { max_targets: 100, port_threshold: 1_000_000, host_threshold: 1_000_000, window_ns: i64::MAX };
        let mut w = FanoutWindow::default();
        for i in 0..10_000u32 {
            let d = IpAddr::from(i.to_be_bytes());
            assert!(w.observe(&syn(1, d, (i % 65535) as u16), &r).is_none());
        }
        assert_eq!(w.targets(), 100);
        assert_eq!(w.destinations(), 100);
    }
}
