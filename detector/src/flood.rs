//! Flood detector (kind `flood`): a host sending UDP, ICMP or ICMPv6 (echo, error messages, anything) or
//! packets of another non-TCP protocol at a rate no ordinary host sends, reported within the second the rate is
//! reached.
//!
//! TCP floods are the `rate` rule's (every SYN, ACK or RST to a new port or from a new source port opens a flow)
//! and spoofed-source floods are the `victim` rule's; what neither sees is a flood that stays in one flow (a
//! UDP flood with fixed ports, an ICMP echo or error flood: one flow per address pair) and so opens almost no
//! connection. Only packets of flows the host started count (`direction` FORWARD): a server's answers to its
//! clients, and a reflector's to a spoofed victim, are the other side's traffic.
//!
//! # What is measured
//!
//! Per host, the packets counted over a sliding `window` (1 s), estimated from two tumbling windows as the
//! misuse rules do; the rule fires when the estimate reaches `min_packets`, at most once per `cooldown`, naming
//! the protocol mix of the current window and the destination of the packet that crossed.
//!
//! # Defaults, and how they were chosen
//!
//! In the 17 benign captures of `../shared/data` no host sends more than 15 UDP packets or 5 ICMP packets to one
//! destination in any second. The busiest non-TCP sources of the attack captures are nmap's UDP scan (518 UDP
//! packets a second, and the scanned host's 500 ICMP port-unreachable answers a second: a reaction, not an
//! attack) and masscan's UDP scan (110). `min_packets` = 1,000 in 1 s (twice the reactive errors; flood tools
//! send 10,000 and more a second) so a flood is reported within its first second or two of packet time.
//! `cooldown` 60 s bounds a long flood to one anomaly a minute.

use std::net::IpAddr;
use std::time::Duration;

use netanom_schemas::{Anomaly, AnomalyKind, Contribution, Direction, PacketFeatures};
use serde::Deserialize;

use crate::anomaly::{AnomalyParts, seconds, thousands};
use crate::kind::{Context, DetectorKind, Setup};
use crate::time::{ns, window_start_ns};
use crate::validation::{ConfigError, Problems};

/// `[detector.flood]`: UDP, ICMP and other non-TCP packets at flood rate. See [`crate::flood`].
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FloodConfig {
    /// Whether the rule runs. Default true.
    pub enabled: bool,
    /// Sliding window of packet time. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Packets from one host within `window` that make an anomaly. Default 1000 (benign hosts of the labelled
    /// captures send at most 15 UDP or 5 ICMP packets a second).
    pub min_packets: u32,
    /// At most one flood anomaly per host per this much packet time. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
}

impl Default for FloodConfig {
    fn default() -> Self {
        Self { enabled: true, window: Duration::from_secs(1), min_packets: 1000, cooldown: Duration::from_secs(60) }
    }
}

impl FloodConfig {
    /// Checks `[detector.flood]` and returns every problem.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut p = Problems::new("flood");
        p.check(!self.window.is_zero(), "window", || "must be > 0".into());
        p.check(self.min_packets >= 2, "min_packets", || format!("must be >= 2, got {}", self.min_packets));
        p.into_vec()
    }
}

/// The rule in hot-path units.
#[derive(Debug, Clone)]
pub struct FloodRule {
    window_ns: i64,
    min_packets: u32,
    cooldown_ns: i64,
}

impl From<&FloodConfig> for FloodRule {
    fn from(c: &FloodConfig) -> Self {
        Self { window_ns: ns(c.window).max(1), min_packets: c.min_packets, cooldown_ns: ns(c.cooldown) }
    }
}

impl DetectorKind for FloodRule {
    type Config = FloodConfig;
    type State = FloodWindow;
    const PRODUCES: &'static [AnomalyKind] = &[AnomalyKind::Flood];

    fn validate(config: &FloodConfig, _: &Context) -> Vec<ConfigError> {
        config.validate()
    }

    fn build(config: &FloodConfig, _: &mut Setup<'_>) -> Option<Self> {
        config.enabled.then(|| Self::from(config))
    }

    fn observe_packet(&mut self, host: IpAddr, p: &PacketFeatures, window: &mut FloodWindow, out: &mut Vec<Anomaly>) {
        out.extend(window.observe(host, p, self).map(AnomalyParts::build));
    }
}

/// Protocol classes of counted packets, in the order of [`FloodWindow::classes`].
const CLASSES: [&str; 4] = ["udp", "icmp_echo", "icmp_error_or_other", "other_ip"];

/// Which class `p` is counted in, if it counts.
fn class(p: &PacketFeatures) -> Option<usize> {
    if p.direction != Direction::Forward {
        return None;
    }
    match (p.ip_proto, p.icmp_type) {
        (6, _) | (0, _) => None,
        (17 | 136, _) => Some(0),
        (1, Some(0 | 8)) | (58, Some(128 | 129)) => Some(1),
        (1 | 58, _) => Some(2),
        _ => Some(3),
    }
}

/// One host's counts.
#[derive(Debug, Clone, Default)]
pub struct FloodWindow {
    start_ns: i64,
    current: u32,
    previous: u32,
    /// Per class, the packets of the current tumbling window.
    classes: [u32; CLASSES.len()],
    /// First counted packet of the current run of adjacent non-empty windows.
    run_start_ns: i64,
    last_fired_ns: Option<i64>,
}

impl FloodWindow {
    /// Counts `p`; returns the anomaly when the rate is crossed.
    pub fn observe(&mut self, host: IpAddr, p: &PacketFeatures, rule: &FloodRule) -> Option<AnomalyParts> {
        let c = class(p)?;
        let start = window_start_ns(p.ts_ns, rule.window_ns);
        if start > self.start_ns || self.current == 0 {
            let adjacent = self.current > 0 && start.checked_sub(self.start_ns) == Some(rule.window_ns);
            self.previous = if adjacent { self.current } else { 0 };
            // A flood starts where the previous window was still quiet (a tenth of the threshold or less).
            if !adjacent || self.previous.saturating_mul(10) <= rule.min_packets {
                self.run_start_ns = p.ts_ns;
            }
            self.current = 0;
            self.classes = Default::default();
            self.start_ns = start.max(self.start_ns);
        }
        self.current = self.current.saturating_add(1);
        self.classes[c] = self.classes[c].saturating_add(1);
        let elapsed = (p.ts_ns.saturating_sub(self.start_ns) as f64 / rule.window_ns as f64).clamp(0.0, 1.0);
        let estimate = (f64::from(self.current) + f64::from(self.previous) * (1.0 - elapsed)).round();
        if estimate < f64::from(rule.min_packets)
            || self.last_fired_ns.is_some_and(|t| p.ts_ns.saturating_sub(t) < rule.cooldown_ns)
        {
            return None;
        }
        self.last_fired_ns = Some(p.ts_ns);
        Some(self.anomaly(host, p, rule, estimate))
    }

    fn anomaly(&self, host: IpAddr, p: &PacketFeatures, rule: &FloodRule, estimate: f64) -> AnomalyParts {
        let mut seen: Vec<(usize, u32)> = self.classes.iter().copied().enumerate().filter(|(_, n)| *n > 0).collect();
        seen.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mix: Vec<String> = seen
            .iter()
            .map(|(c, n)| format!("{} {}", thousands(u64::from(*n)), CLASSES[*c].replace('_', " ")))
            .collect();
        let reason = format!(
            "{host} sent {} packets within {} ({} in the current window), the last to {}: a flood (threshold {}; \
             ordinary hosts send at most tens of UDP or ICMP packets a second)",
            thousands(estimate as u64),
            seconds(rule.window_ns),
            mix.join(", "),
            p.destination,
            rule.min_packets,
        );
        let mut features = vec![Contribution {
            name: "packets_per_window".into(),
            value: estimate,
            baseline: Some(f64::from(rule.min_packets)),
        }];
        features.extend(seen.iter().map(|(c, n)| Contribution {
            name: format!("{}_packets", CLASSES[*c]),
            value: f64::from(*n),
            baseline: None,
        }));
        let threshold = f64::from(rule.min_packets);
        AnomalyParts::rule(host, AnomalyKind::Flood, p, self.run_start_ns, (estimate, threshold), reason, features)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{T0, packet};

    const S: i64 = 1_000_000_000;
    const VICTIM: [u8; 4] = [10, 0, 0, 9];

    fn udp(ts: i64, direction: Direction) -> PacketFeatures {
        packet(ts, IpAddr::from(VICTIM), 40_000, 9, 17, 0, 512, 2, direction)
    }

    fn icmp(ts: i64, icmp_type: u8) -> PacketFeatures {
        let mut p = packet(ts, IpAddr::from(VICTIM), 0, 0, 1, 0, 70, 2, Direction::Forward);
        p.icmp_type = Some(icmp_type);
        p.icmp_code = Some(3);
        p
    }

    fn run(packets: &[PacketFeatures]) -> Vec<AnomalyParts> {
        let rule = FloodRule::from(&FloodConfig::default());
        let mut w = FloodWindow::default();
        packets.iter().filter_map(|p| w.observe(IpAddr::from([10, 0, 0, 7]), p, &rule)).collect()
    }

    /// `n` packets a second for `secs` seconds from `start`, built by `f`.
    fn stream(start: i64, per_sec: i64, secs: i64, f: impl Fn(i64) -> PacketFeatures) -> Vec<PacketFeatures> {
        (0..per_sec * secs).map(|i| f(start + i * S / per_sec)).collect()
    }

    #[test]
    fn udp_and_icmp_floods_are_reported_within_two_seconds() {
        let start = T0 + S / 3;
        for (name, packets) in [
            ("udp", stream(start, 5_000, 30, |t| udp(t, Direction::Forward))),
            ("icmp echo", stream(start, 2_000, 30, |t| icmp(t, 8))),
            ("icmp unreachable", stream(start, 1_500, 30, |t| icmp(t, 3))),
        ] {
            let out = run(&packets);
            assert_eq!(out.len(), 1, "{name}: one per cooldown: {out:?}");
            let a = &out[0];
            assert_eq!(a.kind, AnomalyKind::Flood);
            assert_eq!(a.window_start_ns, start, "{name}: first packet of the flood");
            assert!(a.window_end_ns - start <= 2 * S, "{name}: detected after {} ns", a.window_end_ns - start);
        }
        let long = stream(T0, 2_000, 130, |t| udp(t, Direction::Forward));
        assert_eq!(run(&long).len(), 3, "one a minute");
    }

    #[test]
    fn ordinary_rates_answers_and_tcp_do_not_fire() {
        assert!(run(&stream(T0, 500, 60, |t| icmp(t, 3))).is_empty(), "reactive unreachables of a scanned host");
        assert!(run(&stream(T0, 50, 60, |t| udp(t, Direction::Forward))).is_empty(), "a voice call");
        assert!(run(&stream(T0, 20_000, 5, |t| udp(t, Direction::Reverse))).is_empty(), "a server's answers");
        let tcp = stream(T0, 20_000, 5, |t| {
            packet(t, IpAddr::from(VICTIM), 40_000, 443, 6, 0x10, 1514, 9, Direction::Forward)
        });
        assert!(run(&tcp).is_empty(), "a TCP upload");
    }

    #[test]
    fn validate_names_every_bad_key() {
        let c = FloodConfig { window: Duration::ZERO, min_packets: 1, ..FloodConfig::default() };
        assert_eq!(c.validate().len(), 2);
        assert!(FloodConfig::default().validate().is_empty());
    }
}
