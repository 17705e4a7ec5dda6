//! Arrival-rate detector (kind `rate`): per host, the timestamps of its last N connection-opening packets in a
//! ring buffer, and the rate of new connections they imply. Owns the per-host ring and the rule; the host map
//! that holds it lives in [`crate::state`].
//!
//! # Why connection-opening packets and not all packets
//!
//! The Python prototype computed N / (t_last − t_first) over *all* packets of a host. That number is dominated
//! by bulk transfers: one download or video stream is thousands of packets per second and perfectly benign,
//! while a SYN flood or a sweep can be modest in packets yet open hundreds of connections per second. So the
//! ring holds only packets for which [`PacketFeatures::opens_flow`] is true (TCP SYNs, the first packet of a
//! UDP/ICMP flow from its initiator): the rate is *new flows per second*. Benign captures peak at 4 new flows/s
//! over 100 (most never reach 100 opens at all), scans and floods run at 300 to 20,000/s.
//!
//! "Done right" also means: the rate is (N − 1) / (t_last − t_first) (N timestamps span N − 1 intervals), it is
//! computed in packet time (replays give the same answer at any speed), the ring is allocated lazily (a host
//! with three connections costs three slots) and a host fires at most once per cooldown.

use std::net::IpAddr;

use netanom_schemas::{Anomaly, AnomalyKind, Contribution, PacketFeatures};

use crate::anomaly::{AnomalyParts, RULES_VERSION, seconds, thousands};
use crate::kind::{Context, DetectorKind, Setup};
use crate::time::ns;
use crate::validation::{ConfigError, Problems};
use serde::Deserialize;
use std::time::Duration;

/// `[detector.rate]`: new connections per second over the last `window_packets` connection-opening packets.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateConfig {
    /// Whether the detector runs. Default true.
    pub enabled: bool,
    /// Connection-opening packets kept per host (N). Default 100.
    pub window_packets: usize,
    /// New connections per second above which a host is anomalous. Default 200 (benign captures peak at
    /// 4/s; sweeps and floods run at 300 to 20,000/s; see the crate README).
    pub threshold_per_sec: f64,
    /// At most one rate anomaly per host per this much packet time. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
}

impl Default for RateConfig {
    fn default() -> Self {
        Self { enabled: true, window_packets: 100, threshold_per_sec: 200.0, cooldown: Duration::from_secs(10) }
    }
}

impl RateConfig {
    /// Checks `[detector.rate]` and returns every problem.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut p = Problems::new("rate");
        p.check((2..=100_000).contains(&self.window_packets), "window_packets", || {
            format!("must be in 2..=100000, got {}", self.window_packets)
        });
        p.check(self.threshold_per_sec.is_finite() && self.threshold_per_sec > 0.0, "threshold_per_sec", || {
            format!("must be a positive number, got {}", self.threshold_per_sec)
        });
        p.into_vec()
    }
}

/// The last N opening timestamps of one host.
#[derive(Debug, Clone, Default)]
pub struct RateWindow {
    ring: Vec<i64>,
    /// Index of the oldest entry once the ring is full.
    head: usize,
    /// Packet time of the last anomaly, if any.
    last_fire_ns: Option<i64>,
}

/// Rule parameters in the units the hot path uses.
#[derive(Debug, Clone, Copy)]
pub struct RateRule {
    /// N.
    pub window_packets: usize,
    /// New flows per second.
    pub threshold_per_sec: f64,
    /// Cooldown, ns.
    pub cooldown_ns: i64,
}

impl From<&RateConfig> for RateRule {
    fn from(c: &RateConfig) -> Self {
        Self { window_packets: c.window_packets, threshold_per_sec: c.threshold_per_sec, cooldown_ns: ns(c.cooldown) }
    }
}

impl DetectorKind for RateRule {
    type Config = RateConfig;
    type State = RateWindow;
    const PRODUCES: &'static [AnomalyKind] = &[AnomalyKind::Rate];

    fn heap_bytes(state: &RateWindow) -> usize {
        crate::bytes::vec_bytes::<i64>(state.ring.capacity())
    }

    fn validate(config: &RateConfig, _: &Context) -> Vec<ConfigError> {
        config.validate()
    }

    fn build(config: &RateConfig, _: &mut Setup<'_>) -> Option<Self> {
        config.enabled.then(|| Self::from(config))
    }

    fn observe_packet(&mut self, host: IpAddr, p: &PacketFeatures, ring: &mut RateWindow, out: &mut Vec<Anomaly>) {
        if p.opens_flow()
            && let Some(hit) = ring.observe(p.ts_ns, self)
        {
            out.push(rate_anomaly(host, self, hit, p).build());
        }
    }
}

impl RateWindow {
    /// Records one connection-opening packet at `ts_ns`; returns the rate (new flows/s) and the window
    /// `(t_first, t_last)` when the ring is full and the rate exceeds the threshold outside the cooldown.
    pub fn observe(&mut self, ts_ns: i64, rule: &RateRule) -> Option<(f64, i64, i64)> {
        let n = rule.window_packets;
        if self.ring.len() < n {
            self.ring.push(ts_ns);
            if self.ring.len() < n {
                return None;
            }
            self.head = 0;
        } else {
            self.ring[self.head] = ts_ns;
            self.head = (self.head + 1) % n;
        }
        let first = self.ring[self.head];
        let last = ts_ns;
        // Capture order is not always time order (multi-queue NICs): never divide by zero or a negative span.
        let span = last.saturating_sub(first).max(1);
        let rate = (n as f64 - 1.0) * 1e9 / span as f64;
        if rate <= rule.threshold_per_sec {
            return None;
        }
        if let Some(prev) = self.last_fire_ns
            && ts_ns.saturating_sub(prev) < rule.cooldown_ns
        {
            return None;
        }
        self.last_fire_ns = Some(ts_ns);
        Some((rate, first, last))
    }

    /// Slots in use (for tests and memory accounting).
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// True when no opening was recorded.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
}

/// Builds the rate anomaly for `host`.
pub fn rate_anomaly(
    host: IpAddr,
    rule: &RateRule,
    (rate, first, last): (f64, i64, i64),
    packet: &PacketFeatures,
) -> AnomalyParts {
    let n = rule.window_packets;
    AnomalyParts {
        host,
        kind: AnomalyKind::Rate,
        window_start_ns: first,
        window_end_ns: last,
        score: rate,
        threshold: rule.threshold_per_sec,
        target: None,
        reason: format!(
            "{host} opened {} new connections in {} ({} per second, threshold {})",
            thousands(n as u64),
            seconds(last.saturating_sub(first)),
            thousands(rate.round().min(u64::MAX as f64) as u64),
            thousands(rule.threshold_per_sec.round() as u64),
        ),
        features: vec![Contribution {
            name: "new_flows_per_sec".into(),
            value: rate,
            baseline: Some(rule.threshold_per_sec),
        }],
        sample: packet.summary(host),
        model_version: RULES_VERSION.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> RateRule {
        RateRule::from(&RateConfig::default())
    }

    #[test]
    fn syn_flood_fires_once_per_cooldown() {
        let r = rule();
        let mut w = RateWindow::default();
        // 1,000 SYNs/s for 25 s: fires at the 100th SYN, then once per 10 s of packet time.
        let mut fires = vec![];
        for i in 0..25_000i64 {
            let ts = 1_000_000_000_000 + i * 1_000_000;
            if let Some((rate, first, last)) = w.observe(ts, &r) {
                assert!((rate - 1000.0).abs() < 1e-6, "rate {rate}");
                assert_eq!(last.saturating_sub(first), 99_000_000);
                fires.push(i);
            }
        }
        assert_eq!(fires, vec![99, 10_099, 20_099]);
        assert_eq!(w.len(), 100);
    }

    #[test]
    fn browsing_pattern_never_fires() {
        // A browser opening bursts of 30 connections within 100 ms, every 2 s, for 10 minutes: bursts are fast
        // but 100 openings always span several seconds.
        let r = rule();
        let mut w = RateWindow::default();
        for burst in 0..300i64 {
            for k in 0..30i64 {
                let ts = burst * 2_000_000_000 + k * 3_000_000;
                assert!(w.observe(ts, &r).is_none(), "burst {burst} conn {k}");
            }
        }
    }

    #[test]
    fn few_openings_never_fire_and_allocate_little() {
        let r = rule();
        let mut w = RateWindow::default();
        for i in 0..99 {
            assert!(w.observe(i, &r).is_none(), "fired before the ring is full");
        }
        assert_eq!(w.len(), 99);
        // The 100th opening at the same instant: rate is huge but finite.
        let (rate, _, _) = w.observe(99, &r).unwrap();
        assert!(rate.is_finite() && rate >= 1e9);
    }

    #[test]
    fn out_of_order_timestamps_do_not_panic() {
        let r = RateRule { window_packets: 3, threshold_per_sec: 1.0, cooldown_ns: 0 };
        let mut w = RateWindow::default();
        for ts in [10, 5, 1, 20, i64::MIN, i64::MAX, 0] {
            let _ = w.observe(ts, &r);
        }
    }
}
