//! ICMP tunnel detector (kind `icmp_tunnel`): a host whose ICMP or ICMPv6 echo requests carry data rather than
//! ping's pad, the way an interactive shell or a tunnel carried in echo traffic does (icmpsh, ptunnel, hans).
//!
//! # What is measured
//!
//! The producer summarises each echo payload by the Shannon entropy of the differences between consecutive
//! bytes (`payload_entropy`; no payload byte leaves the producer). Ping pads its echo requests with a counting
//! sequence (Linux, BSD: 0x10, 0x11, …), a repeating alphabet (Windows), zeros (nmap) or a repeated pattern
//! (`ping -p`, routers): nearly one difference, under 2 bits. Text, compressed and encrypted data score 3 bits
//! and more. Per host and tumbling `window` of packet time the rule counts
//!
//! - *data-carrying* echo requests: payload entropy of at least `min_entropy` bits, and
//! - the distinct payload sizes of its echo requests: ping sends one size for a whole run, a shell's requests
//!   follow the length of what they carry,
//!
//! and fires when the first reaches `min_packets` or the second `min_sizes`, once per window. Only requests
//! count: an ordinary host answering a tunnel's requests echoes their payload back in its replies.
//!
//! # Defaults, and how they were chosen
//!
//! On the 66 captures of `../shared/data` (`.ci/eval-shared`) no echo request of a benign capture reaches
//! 2 bits (the highest is 1.62, the Linux pings of `tcpreplay-test`); the only echo requests of any capture above
//! 2.5 bits are two 8-byte timestamp-only payloads, whose 7 differences cannot exceed log2(7) = 2.81 bits, hence
//! `min_entropy` = 3.0 (data needs at least 9 bytes to qualify). No capture sends more than 2 distinct echo sizes
//! from one host in a minute (nmap's two OS-detection probes). `min_packets` = 5 and `min_sizes` = 6 in a
//! `window` of 60 s: a shell session exchanges tens of requests a minute, an occasional odd ping does not fire.

use std::net::IpAddr;
use std::time::Duration;

use netanom_schemas::{Anomaly, AnomalyKind, Contribution, PacketFeatures};
use serde::Deserialize;

use crate::anomaly::{AnomalyParts, seconds, thousands};
use crate::kind::{Context, DetectorKind, Setup};
use crate::time::{ns, window_start_ns};
use crate::validation::{ConfigError, Problems};

/// Most distinct payload sizes remembered per host and window (bounds `min_sizes`).
const MAX_SIZES: usize = 64;

/// `[detector.icmp_tunnel]`: echo requests carrying data unlike ping's pad. See [`crate::icmp_tunnel`].
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IcmpTunnelConfig {
    /// Whether the rule runs. Default true.
    pub enabled: bool,
    /// Tumbling window of packet time. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Payload entropy (bits of the byte differences) from which an echo request carries data. Default 3.0
    /// (ping pads of the labelled captures reach 1.62; 8-byte payloads cannot exceed 2.81).
    pub min_entropy: f32,
    /// Data-carrying echo requests from one host within `window` that make an anomaly. Default 5.
    pub min_packets: u32,
    /// Distinct echo-request payload sizes from one host within `window` that make an anomaly, at most 64.
    /// Default 6 (no labelled capture sends more than 2).
    pub min_sizes: usize,
}

impl Default for IcmpTunnelConfig {
    fn default() -> Self {
        Self { enabled: true, window: Duration::from_secs(60), min_entropy: 3.0, min_packets: 5, min_sizes: 6 }
    }
}

impl IcmpTunnelConfig {
    /// Checks `[detector.icmp_tunnel]` and returns every problem.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut p = Problems::new("icmp_tunnel");
        p.check(!self.window.is_zero(), "window", || "must be > 0".into());
        p.check(self.min_entropy.is_finite() && (0.0..=8.0).contains(&self.min_entropy), "min_entropy", || {
            format!("must be in 0..=8 (bits), got {}", self.min_entropy)
        });
        p.check(self.min_packets >= 1, "min_packets", || format!("must be >= 1, got {}", self.min_packets));
        p.check((2..=MAX_SIZES).contains(&self.min_sizes), "min_sizes", || {
            format!("must be in 2..={MAX_SIZES}, got {}", self.min_sizes)
        });
        p.into_vec()
    }
}

/// The rule in hot-path units.
#[derive(Debug, Clone)]
pub struct IcmpTunnelRule {
    window_ns: i64,
    min_entropy: f32,
    min_packets: u32,
    min_sizes: usize,
}

impl From<&IcmpTunnelConfig> for IcmpTunnelRule {
    fn from(c: &IcmpTunnelConfig) -> Self {
        Self {
            window_ns: ns(c.window).max(1),
            min_entropy: c.min_entropy,
            min_packets: c.min_packets,
            min_sizes: c.min_sizes.clamp(2, MAX_SIZES),
        }
    }
}

impl DetectorKind for IcmpTunnelRule {
    type Config = IcmpTunnelConfig;
    type State = EchoWindow;
    const PRODUCES: &'static [AnomalyKind] = &[AnomalyKind::IcmpTunnel];

    fn validate(config: &IcmpTunnelConfig, _: &Context) -> Vec<ConfigError> {
        config.validate()
    }

    fn build(config: &IcmpTunnelConfig, _: &mut Setup<'_>) -> Option<Self> {
        config.enabled.then(|| Self::from(config))
    }

    fn observe_packet(&mut self, host: IpAddr, p: &PacketFeatures, window: &mut EchoWindow, out: &mut Vec<Anomaly>) {
        out.extend(window.observe(host, p, self).map(AnomalyParts::build));
    }
}

/// One host's echo requests in the current window.
#[derive(Debug, Clone, Default)]
pub struct EchoWindow {
    start_ns: i64,
    requests: u32,
    data_carrying: u32,
    payload_bytes: u64,
    max_entropy: f32,
    /// First packet time of a data-carrying request (or of the request that brought a new size).
    first_evidence_ns: Option<i64>,
    /// Distinct payload sizes, at most `MAX_SIZES`.
    sizes: Vec<u32>,
    fired: bool,
}

/// True for an ICMP echo request or ICMPv6 echo request.
fn echo_request(p: &PacketFeatures) -> bool {
    matches!((p.ip_proto, p.icmp_type), (1, Some(8)) | (58, Some(128)))
}

impl EchoWindow {
    /// Counts `p` (ignored unless an echo request); returns the anomaly when a threshold is crossed.
    pub fn observe(&mut self, host: IpAddr, p: &PacketFeatures, rule: &IcmpTunnelRule) -> Option<AnomalyParts> {
        if !echo_request(p) {
            return None;
        }
        let start = window_start_ns(p.ts_ns, rule.window_ns);
        if start > self.start_ns {
            *self = Self { start_ns: start, sizes: std::mem::take(&mut self.sizes), ..Self::default() };
            self.sizes.clear();
        }
        self.requests = self.requests.saturating_add(1);
        self.payload_bytes = self.payload_bytes.saturating_add(u64::from(p.payload_len));
        let entropy = p.payload_entropy.unwrap_or(0.0);
        self.max_entropy = self.max_entropy.max(entropy);
        let mut evidence = false;
        if entropy >= rule.min_entropy {
            self.data_carrying = self.data_carrying.saturating_add(1);
            evidence = true;
        }
        if !self.sizes.contains(&p.payload_len) && self.sizes.len() < MAX_SIZES {
            self.sizes.push(p.payload_len);
            evidence |= self.sizes.len() > 1;
        }
        if evidence && self.first_evidence_ns.is_none() {
            self.first_evidence_ns = Some(p.ts_ns);
        }
        if self.fired || (self.data_carrying < rule.min_packets && self.sizes.len() < rule.min_sizes) {
            return None;
        }
        self.fired = true;
        Some(self.anomaly(host, p, rule))
    }

    fn anomaly(&self, host: IpAddr, p: &PacketFeatures, rule: &IcmpTunnelRule) -> AnomalyParts {
        let mean = self.payload_bytes as f64 / f64::from(self.requests.max(1));
        let reason = format!(
            "{host} sent {} ICMP echo requests within {} ({} of them carrying data: payload entropy >= {} bits, at \
             most {:.1}; {} distinct payload sizes, {mean:.0} bytes on average), the last to {}: a shell or a \
             tunnel in echo traffic, not ping (its pad scores under 2 bits at one size; thresholds {} data-carrying \
             requests or {} sizes)",
            thousands(u64::from(self.requests)),
            seconds(rule.window_ns),
            thousands(u64::from(self.data_carrying)),
            rule.min_entropy,
            self.max_entropy,
            self.sizes.len(),
            p.destination,
            rule.min_packets,
            rule.min_sizes,
        );
        let features = vec![
            Contribution {
                name: "data_carrying_echo_requests".into(),
                value: f64::from(self.data_carrying),
                baseline: Some(f64::from(rule.min_packets)),
            },
            Contribution {
                name: "echo_payload_sizes".into(),
                value: self.sizes.len() as f64,
                baseline: Some(rule.min_sizes as f64),
            },
            Contribution {
                name: "echo_payload_entropy_max".into(),
                value: f64::from(self.max_entropy),
                baseline: Some(f64::from(rule.min_entropy)),
            },
            Contribution { name: "echo_payload_bytes_mean".into(), value: mean, baseline: None },
        ];
        let crossed = if self.data_carrying >= rule.min_packets {
            (f64::from(self.data_carrying), f64::from(rule.min_packets))
        } else {
            (self.sizes.len() as f64, rule.min_sizes as f64)
        };
        let start_ns = self.first_evidence_ns.unwrap_or(self.start_ns);
        AnomalyParts::rule(host, AnomalyKind::IcmpTunnel, p, start_ns, crossed, reason, features)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{T0, packet};
    use netanom_schemas::Direction;

    const S: i64 = 1_000_000_000;

    fn echo(ts: i64, icmp_type: u8, payload_len: u32, entropy: Option<f32>) -> PacketFeatures {
        let mut p = packet(ts, IpAddr::from([10, 0, 0, 9]), 0, 0, 1, 0, 42 + payload_len, 1, Direction::Forward);
        p.icmp_type = Some(icmp_type);
        p.icmp_code = Some(0);
        p.payload_len = payload_len;
        p.payload_entropy = entropy;
        p
    }

    fn run(packets: &[PacketFeatures]) -> Vec<AnomalyParts> {
        let rule = IcmpTunnelRule::from(&IcmpTunnelConfig::default());
        let mut w = EchoWindow::default();
        packets.iter().filter_map(|p| w.observe(IpAddr::from([10, 0, 0, 7]), p, &rule)).collect()
    }

    #[test]
    fn a_shell_in_echo_requests_fires_once_per_window() {
        // Command output of varying length and high entropy, one request every 2 s for 3 minutes.
        let packets: Vec<_> = (0..90).map(|i| echo(T0 + i * 2 * S, 8, 40 + (i as u32 * 37) % 300, Some(4.2))).collect();
        let out = run(&packets);
        assert_eq!(out.len(), 3, "one per minute: {out:?}");
        let a = &out[0];
        assert_eq!(a.kind, AnomalyKind::IcmpTunnel);
        assert_eq!(a.window_start_ns, T0, "the first evidence packet");
        assert!(a.reason.contains("carrying data"), "{}", a.reason);
        assert_eq!(a.features[0].name, "data_carrying_echo_requests");
    }

    #[test]
    fn varying_sizes_alone_fire_and_high_entropy_alone_fires() {
        let sizes: Vec<_> = (0..6).map(|i| echo(T0 + i * S, 8, 10 + i as u32 * 100, Some(0.5))).collect();
        let out = run(&sizes);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].score, out[0].threshold), (6.0, 6.0));
        let data: Vec<_> = (0..5).map(|i| echo(T0 + i * S, 8, 64, Some(5.0))).collect();
        assert_eq!(run(&data).len(), 1);
    }

    #[test]
    fn ping_does_not_fire() {
        // Linux ping for ten minutes: one 56-byte request a second, a counting pad.
        let linux: Vec<_> = (0..600).map(|i| echo(T0 + i * S, 8, 56, Some(0.8))).collect();
        assert!(run(&linux).is_empty());
        // nmap host discovery and OS detection: empty and zero payloads, two sizes.
        let nmap = [echo(T0, 8, 0, None), echo(T0 + S, 8, 120, Some(0.0)), echo(T0 + 2 * S, 8, 150, Some(0.0))];
        assert!(run(&nmap).is_empty());
        // Replies carry whatever the requests carried: an ordinary host answering a tunnel is not flagged.
        let replies: Vec<_> = (0..60).map(|i| echo(T0 + i * S, 0, 30 + i as u32, Some(5.0))).collect();
        assert!(run(&replies).is_empty());
        // Four data-carrying requests a minute stay under the threshold.
        let few: Vec<_> = (0..12).map(|i| echo(T0 + i * 15 * S, 8, 64, Some(5.0))).collect();
        assert!(run(&few).is_empty());
    }

    #[test]
    fn validate_names_every_bad_key() {
        let c = IcmpTunnelConfig {
            window: Duration::ZERO,
            min_entropy: 9.0,
            min_packets: 0,
            min_sizes: 1,
            ..IcmpTunnelConfig::default()
        };
        let text: Vec<String> = c.validate().iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 4, "{text:?}");
        assert!(text.iter().any(|e| e.contains("icmp_tunnel.min_entropy")), "{text:?}");
        assert!(IcmpTunnelConfig::default().validate().is_empty());
    }
}
