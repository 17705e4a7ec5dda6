//! Three rules for misuse that one host's packets show without a model, each a count over a sliding window of
//! packet time:
//!
//! - **probe** (kind `probe`): packets no standard TCP/IP stack sends. TCP with no flags, SYN with FIN, SYN with
//!   RST, or FIN, PSH or URG without ACK (nmap's NULL, FIN and Xmas scans and the T2–T7 probes of its OS
//!   detection); ICMP echo requests with a non-zero code, and timestamp, information and address-mask requests
//!   (ICMP OS fingerprinting).
//! - **brute force** (kind `brute_force`): many connection attempts (TCP SYNs) from one host to one login
//!   service (`brute_force.ports`: SSH, Telnet, FTP, mail, databases, RDP, VNC, …): password guessing. Counted
//!   twice: over `window` (seconds: a fast tool) and over `slow_window` (minutes: a tool throttled to a few
//!   attempts a minute, which the short window misses and whose steady pace looks periodic).
//! - **DNS tunnel** (kind `dns_tunnel`): many long DNS queries (payload of at least `long_query_bytes`) from
//!   one host: data encoded in query names (dnscat, iodine) or DNS exfiltration.
//!
//! # Counting
//!
//! Each count is the usual sliding-window estimate over two tumbling windows: the current window's count plus
//! the previous window's, weighted by how much of it still overlaps the last `window` of packet time, rounded
//! to a whole count. It costs
//! two counters per key whatever the rate, and a burst straddling a window boundary is still counted whole
//! (a tumbling count would split it in two halves that can both stay under the threshold). A rule fires at
//! most once per tumbling window and key; the anomaly's window ends at the packet that crossed the threshold and
//! starts at the first packet the count includes (within the `window` of packet time before it).
//!
//! # Calibration (../shared/data, 66 labelled captures: `.ci/eval-shared`)
//!
//! - probe: 0 such packets in all 17 benign captures; 3 in the small connect scan `ndpi-tests/tcp_scan`, 12–13
//!   in the two OS fingerprinting captures, 1,000 in each nmap NULL/FIN/Xmas scan. Default 3 in 60 s.
//! - brute force: benign captures open at most 1 connection per minute to a login port (telnet, FTP); the
//!   busiest benign service of any kind sees 33 SYNs in a minute (an HTTPS API), which is why only login ports
//!   count. The nmap `ssh-brute` capture sends 67 SYNs in 13 s. Default 20 in 60 s. Over 10 minutes no benign
//!   capture opens more than 1 connection to a login port, and the four throttled SSH tools of
//!   `trace-share-ssh-bruteforce` open 31 (hydra, 1 task: 4 a minute at most), 78, 99 and 104: default
//!   `slow_min_connections` 20 in a `slow_window` of 10 min (an attempt every 30 s, sustained). Connections to
//!   login ports are not judged by the beacon kind (`beacon.excluded_ports`, by default these login ports), so a
//!   throttled brute force is labelled `brute_force`, never `beacon`.
//! - DNS tunnel: benign DNS queries have payloads of at most 66 bytes (names of at most 48 characters); the
//!   dnscat capture sends 89 queries of 80 bytes or more in a minute (up to 258 bytes). Default 10 queries of
//!   at least 80 bytes in 60 s. A single long query (`ndpi-tests/dns-exf`) is below any count threshold by design:
//!   one long name is also what mail anti-spam and CDN lookups look like.

use std::net::IpAddr;

use netanom_schemas::{Anomaly, AnomalyKind, Contribution, Direction, PacketFeatures, records::tcp_flags};

use crate::anomaly::{AnomalyParts, seconds, thousands};
use crate::kind::{Context, DetectorKind, Setup};
use crate::time::{ns, window_start_ns};
use crate::validation::{ConfigError, Problems};
use serde::Deserialize;
use std::time::Duration;

/// `[detector.probe]`: packets no standard TCP/IP stack sends (TCP with no flags, SYN+FIN, SYN+RST, FIN/PSH/URG
/// without ACK; ICMP echo with a non-zero code, timestamp, information and address-mask requests). Defaults
/// measured on the labelled captures; see [`crate::misuse`].
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// Whether the rule runs. Default true.
    pub enabled: bool,
    /// Sliding window of packet time. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Such packets from one host within `window` that make an anomaly. Default 3 (benign captures send none;
    /// the smallest labelled stealth scan sends 3 in 53 s).
    pub min_packets: u32,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self { enabled: true, window: Duration::from_secs(60), min_packets: 3 }
    }
}

impl ProbeConfig {
    /// Checks `[detector.probe]` and returns every problem.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut p = Problems::new("probe");
        p.check(!self.window.is_zero(), "window", || "must be > 0".into());
        p.check(self.min_packets >= 1, "min_packets", || format!("must be >= 1, got {}", self.min_packets));
        p.into_vec()
    }
}

/// `[detector.brute_force]`: TCP connection attempts (SYNs) from one host to one login service. See
/// [`crate::misuse`].
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BruteForceConfig {
    /// Whether the rule runs. Default true.
    pub enabled: bool,
    /// Sliding window of packet time. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Attempts to one (destination, port) within `window` that make an anomaly. Default 20 (benign captures
    /// open at most 1 a minute to a login port; nmap's ssh-brute opens 67 in 13 s).
    pub min_connections: u32,
    /// Destination ports of login services. Default: FTP 21, SSH 22, Telnet 23, SMTP submission 25/465/587,
    /// POP3 110/995, IMAP 143/993, LDAP 389/636, SMB 445, MSSQL 1433, Oracle 1521, MySQL 3306, RDP 3389,
    /// PostgreSQL 5432, VNC 5900, WinRM 5985/5986, VMware authd 902, Redis 6379, MongoDB 27017.
    pub ports: Vec<u16>,
    /// Services tracked per host; a new one replaces an entry idle for two slow windows, else it is not
    /// counted. Default 32.
    pub max_services: usize,
    /// Sliding window of packet time of the slow count (throttled guessing). Default 10 min.
    #[serde(with = "humantime_serde")]
    pub slow_window: Duration,
    /// Attempts to one (destination, port) within `slow_window` that make an anomaly. Default 20 (benign
    /// captures open at most 1 in 10 min to a login port; the slowest labelled SSH tool opens 31).
    pub slow_min_connections: u32,
}

/// The login services' ports: the default of `brute_force.ports` and of `beacon.excluded_ports`.
pub const LOGIN_PORTS: [u16; 24] = [
    21, 22, 23, 25, 110, 143, 389, 445, 465, 587, 636, 902, 993, 995, 1433, 1521, 3306, 3389, 5432, 5900, 5985, 5986,
    6379, 27017,
];

impl Default for BruteForceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(60),
            min_connections: 20,
            ports: LOGIN_PORTS.to_vec(),
            max_services: 32,
            slow_window: Duration::from_secs(600),
            slow_min_connections: 20,
        }
    }
}

impl BruteForceConfig {
    /// Checks `[detector.brute_force]` and returns every problem.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut p = Problems::new("brute_force");
        p.check(!self.window.is_zero(), "window", || "must be > 0".into());
        p.check(self.min_connections >= 2, "min_connections", || format!("must be >= 2, got {}", self.min_connections));
        p.check(!self.enabled || !self.ports.is_empty(), "ports", || {
            "must name at least one port when detector.brute_force.enabled".into()
        });
        p.check(self.slow_window > self.window, "slow_window", || {
            format!(
                "must be longer than detector.brute_force.window ({}), got {}",
                crate::time::human(self.window),
                crate::time::human(self.slow_window)
            )
        });
        p.check(self.slow_min_connections >= 2, "slow_min_connections", || {
            format!("must be >= 2, got {}", self.slow_min_connections)
        });
        p.check((1..=1024).contains(&self.max_services), "max_services", || {
            format!("must be in 1..=1024, got {}", self.max_services)
        });
        p.into_vec()
    }
}

/// `[detector.dns_tunnel]`: DNS queries (to port 53) of at least `long_query_bytes` of payload from one host.
/// See [`crate::misuse`].
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsTunnelConfig {
    /// Whether the rule runs. Default true.
    pub enabled: bool,
    /// Sliding window of packet time. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Payload bytes from which a query counts as long. Default 80 (benign queries of the labelled captures
    /// reach 66).
    pub long_query_bytes: u32,
    /// Long queries from one host within `window` that make an anomaly. Default 10 (dnscat sends 89 a minute).
    pub min_queries: u32,
}

impl Default for DnsTunnelConfig {
    fn default() -> Self {
        Self { enabled: true, window: Duration::from_secs(60), long_query_bytes: 80, min_queries: 10 }
    }
}

impl DnsTunnelConfig {
    /// Checks `[detector.dns_tunnel]` and returns every problem.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut p = Problems::new("dns_tunnel");
        p.check(!self.window.is_zero(), "window", || "must be > 0".into());
        p.check(self.min_queries >= 1, "min_queries", || format!("must be >= 1, got {}", self.min_queries));
        p.check(self.long_query_bytes >= 1, "long_query_bytes", || {
            format!("must be >= 1, got {}", self.long_query_bytes)
        });
        p.into_vec()
    }
}

/// A sliding-window count estimated from the current and previous tumbling windows.
#[derive(Debug, Clone, Copy, Default)]
struct SlidingCount {
    /// Start of the current tumbling window, ns.
    start_ns: i64,
    current: u32,
    previous: u32,
    /// Packet time of the first event counted in the current and in the previous tumbling window.
    first_current_ns: Option<i64>,
    first_previous_ns: Option<i64>,
    /// Start of the tumbling window in which the rule last fired.
    fired_in: Option<i64>,
}

impl SlidingCount {
    /// Counts one event at `ts_ns`; returns the estimated count over the last `window_ns` (rounded to a whole
    /// count), and whether the rule may still fire in this tumbling window.
    fn add(&mut self, ts_ns: i64, window_ns: i64) -> (f64, bool) {
        let start = window_start_ns(ts_ns, window_ns);
        if start > self.start_ns {
            let adjacent = start.checked_sub(self.start_ns) == Some(window_ns);
            self.previous = if adjacent { self.current } else { 0 };
            self.first_previous_ns = if adjacent { self.first_current_ns } else { None };
            self.current = 0;
            self.first_current_ns = None;
            self.start_ns = start;
        }
        // A packet from an earlier window (reordering) counts in the current one: never rewind.
        self.current = self.current.saturating_add(1);
        self.first_current_ns = Some(self.first_current_ns.map_or(ts_ns, |f| f.min(ts_ns)));
        let elapsed = ts_ns.saturating_sub(self.start_ns) as f64 / window_ns as f64;
        let estimate = f64::from(self.current) + f64::from(self.previous) * (1.0 - elapsed.clamp(0.0, 1.0));
        (estimate.round(), self.fired_in != Some(self.start_ns))
    }

    /// The first event the count over the last `window_ns` before `ts_ns` includes: the first of the previous
    /// tumbling window when part of it is still counted (not before `ts_ns - window_ns`), else the first of the
    /// current one; `ts_ns` when nothing was counted.
    fn evidence_start(&self, ts_ns: i64, window_ns: i64) -> i64 {
        let from = ts_ns.saturating_sub(window_ns);
        let first = self.first_previous_ns.filter(|_| self.previous > 0).or(self.first_current_ns);
        first.map_or(ts_ns, |f| f.max(from).min(ts_ns))
    }

    /// Marks the current tumbling window as fired.
    fn fire(&mut self) {
        self.fired_in = Some(self.start_ns);
    }

    /// True when nothing has been counted for two windows before `ts_ns`.
    fn stale(&self, ts_ns: i64, window_ns: i64) -> bool {
        ts_ns.saturating_sub(self.start_ns) >= window_ns.saturating_mul(2)
    }
}

/// Kinds of packet the probe rule counts, in the order of [`ProbeCounts`].
const PROBE_CLASSES: [&str; 6] = [
    "tcp_no_flags",
    "tcp_syn_fin",
    "tcp_syn_rst",
    "tcp_fin_psh_urg_without_ack",
    "icmp_echo_nonzero_code",
    "icmp_timestamp_info_mask_request",
];

/// Per class, the probe packets of the current tumbling window.
type ProbeCounts = [u32; PROBE_CLASSES.len()];

/// Which probe class `p` is, if it is one.
pub fn probe_class(p: &PacketFeatures) -> Option<usize> {
    match p.ip_proto {
        6 => {
            let f = p.tcp_flags;
            let core = f
                & (tcp_flags::FIN | tcp_flags::SYN | tcp_flags::RST | tcp_flags::PSH | tcp_flags::ACK | tcp_flags::URG);
            if core == 0 {
                Some(0)
            } else if f & (tcp_flags::SYN | tcp_flags::FIN) == tcp_flags::SYN | tcp_flags::FIN {
                Some(1)
            } else if f & (tcp_flags::SYN | tcp_flags::RST) == tcp_flags::SYN | tcp_flags::RST {
                Some(2)
            } else if f & tcp_flags::ACK == 0 && f & (tcp_flags::FIN | tcp_flags::PSH | tcp_flags::URG) != 0 {
                Some(3)
            } else {
                None
            }
        }
        1 => match (p.icmp_type, p.icmp_code) {
            (Some(8), Some(code)) if code != 0 => Some(4),
            (Some(13 | 15 | 17), _) => Some(5),
            _ => None,
        },
        _ => None,
    }
}

/// True for a DNS query (to port 53, UDP or TCP, from the flow's initiator) of at least `min_bytes` of payload.
fn long_dns_query(p: &PacketFeatures, min_bytes: u32) -> bool {
    p.dst_port == 53 && matches!(p.ip_proto, 6 | 17) && p.direction == Direction::Forward && p.payload_len >= min_bytes
}

/// The probe kind in hot-path units.
#[derive(Debug, Clone)]
pub struct Probe {
    window_ns: i64,
    min_packets: u32,
}

/// One host's probe packets.
#[derive(Debug, Clone, Default)]
pub struct ProbeState {
    count: SlidingCount,
    classes: ProbeCounts,
    classes_start_ns: i64,
}

impl ProbeState {
    /// Counts `p` if it is a probe packet; the anomaly when the count crossed the threshold.
    pub fn observe(&mut self, host: IpAddr, p: &PacketFeatures, rule: &Probe) -> Option<AnomalyParts> {
        let class = probe_class(p)?;
        let (count, may_fire) = self.count.add(p.ts_ns, rule.window_ns);
        if self.classes_start_ns != self.count.start_ns {
            self.classes = ProbeCounts::default();
            self.classes_start_ns = self.count.start_ns;
        }
        self.classes[class] = self.classes[class].saturating_add(1);
        if !(may_fire && count >= f64::from(rule.min_packets)) {
            return None;
        }
        self.count.fire();
        let mut a = probe_anomaly(host, rule.window_ns, rule.min_packets, count, &self.classes, p);
        a.window_start_ns = self.count.evidence_start(p.ts_ns, rule.window_ns);
        Some(a)
    }
}

impl DetectorKind for Probe {
    type Config = ProbeConfig;
    type State = ProbeState;
    const PRODUCES: &'static [AnomalyKind] = &[AnomalyKind::Probe];

    fn validate(config: &ProbeConfig, _: &Context) -> Vec<ConfigError> {
        config.validate()
    }

    fn build(config: &ProbeConfig, _: &mut Setup<'_>) -> Option<Self> {
        config.enabled.then(|| Self { window_ns: ns(config.window).max(1), min_packets: config.min_packets })
    }

    fn observe_packet(&mut self, host: IpAddr, p: &PacketFeatures, state: &mut ProbeState, out: &mut Vec<Anomaly>) {
        out.extend(state.observe(host, p, self).map(AnomalyParts::build));
    }
}

/// The brute-force kind in hot-path units.
#[derive(Debug, Clone)]
pub struct BruteForce {
    window_ns: i64,
    min_connections: u32,
    /// Sorted login ports.
    ports: Vec<u16>,
    max_services: usize,
    slow_window_ns: i64,
    slow_min_connections: u32,
}

/// One host's connection attempts per login service (destination, port), over the short and the slow window;
/// at most `max_services`.
#[derive(Debug, Clone, Default)]
pub struct BruteForceState {
    services: Vec<Service>,
}

/// One login service's attempt counts.
#[derive(Debug, Clone)]
struct Service {
    destination: IpAddr,
    port: u16,
    fast: SlidingCount,
    slow: SlidingCount,
    /// Packet time of the first attempt counted.
    first_ns: i64,
}

impl Service {
    fn new(p: &PacketFeatures) -> Self {
        Self {
            destination: p.destination,
            port: p.dst_port,
            fast: SlidingCount::default(),
            slow: SlidingCount::default(),
            first_ns: p.ts_ns,
        }
    }
}

impl BruteForceState {
    /// Counts `p` if it is a SYN to a login service; the anomaly when the count crossed the threshold.
    pub fn observe(&mut self, host: IpAddr, p: &PacketFeatures, rule: &BruteForce) -> Option<AnomalyParts> {
        if !(p.is_syn() && rule.ports.binary_search(&p.dst_port).is_ok()) {
            return None;
        }
        let service = self.service(p, rule)?;
        let (fast, fast_may_fire) = service.fast.add(p.ts_ns, rule.window_ns);
        let (slow, slow_may_fire) = service.slow.add(p.ts_ns, rule.slow_window_ns);
        if fast_may_fire && fast >= f64::from(rule.min_connections) {
            service.fast.fire();
            // The slow count of this stretch is the same attack: no second anomaly for it.
            service.slow.fire();
            Some(brute_force_anomaly(host, rule, (fast, rule.min_connections, rule.window_ns), p))
        } else if slow_may_fire && slow >= f64::from(rule.slow_min_connections) {
            service.slow.fire();
            service.fast.fire();
            let mut a = brute_force_anomaly(host, rule, (slow, rule.slow_min_connections, rule.slow_window_ns), p);
            a.window_start_ns = a.window_start_ns.max(service.first_ns);
            Some(a)
        } else {
            None
        }
    }

    /// The counts of `p`'s service, added when there is room (or a stale entry to reuse).
    fn service(&mut self, p: &PacketFeatures, rule: &BruteForce) -> Option<&mut Service> {
        let i = match self.services.iter().position(|s| s.destination == p.destination && s.port == p.dst_port) {
            Some(i) => i,
            None if self.services.len() < rule.max_services => {
                self.services.push(Service::new(p));
                self.services.len() - 1
            }
            None => {
                let i = self.services.iter().position(|s| s.slow.stale(p.ts_ns, rule.slow_window_ns))?;
                self.services[i] = Service::new(p);
                i
            }
        };
        Some(&mut self.services[i])
    }
}

impl DetectorKind for BruteForce {
    type Config = BruteForceConfig;
    type State = BruteForceState;
    const PRODUCES: &'static [AnomalyKind] = &[AnomalyKind::BruteForce];

    /// A login service attempted at least twice within the slow window: a brute-force count is running.
    fn open_suspicion(state: &BruteForceState) -> bool {
        state.services.iter().any(|s| s.slow.current.saturating_add(s.slow.previous) >= 2)
    }

    fn heap_bytes(state: &BruteForceState) -> usize {
        crate::bytes::vec_bytes::<Service>(state.services.capacity())
    }

    fn validate(config: &BruteForceConfig, _: &Context) -> Vec<ConfigError> {
        config.validate()
    }

    fn build(config: &BruteForceConfig, _: &mut Setup<'_>) -> Option<Self> {
        config.enabled.then(|| {
            let mut ports = config.ports.clone();
            ports.sort_unstable();
            ports.dedup();
            Self {
                window_ns: ns(config.window).max(1),
                min_connections: config.min_connections,
                ports,
                max_services: config.max_services,
                slow_window_ns: ns(config.slow_window).max(1),
                slow_min_connections: config.slow_min_connections,
            }
        })
    }

    fn observe_packet(
        &mut self,
        host: IpAddr,
        p: &PacketFeatures,
        state: &mut BruteForceState,
        out: &mut Vec<Anomaly>,
    ) {
        out.extend(state.observe(host, p, self).map(AnomalyParts::build));
    }
}

/// The DNS-tunnel kind in hot-path units.
#[derive(Debug, Clone)]
pub struct DnsTunnel {
    window_ns: i64,
    min_queries: u32,
    long_query_bytes: u32,
}

/// One host's long DNS queries.
#[derive(Debug, Clone, Default)]
pub struct DnsTunnelState {
    count: SlidingCount,
}

impl DnsTunnelState {
    /// Counts `p` if it is a long DNS query; the anomaly when the count crossed the threshold.
    pub fn observe(&mut self, host: IpAddr, p: &PacketFeatures, rule: &DnsTunnel) -> Option<AnomalyParts> {
        if !long_dns_query(p, rule.long_query_bytes) {
            return None;
        }
        let (count, may_fire) = self.count.add(p.ts_ns, rule.window_ns);
        if !(may_fire && count >= f64::from(rule.min_queries)) {
            return None;
        }
        self.count.fire();
        let mut a = dns_tunnel_anomaly(host, rule, count, p);
        a.window_start_ns = self.count.evidence_start(p.ts_ns, rule.window_ns);
        Some(a)
    }
}

impl DetectorKind for DnsTunnel {
    type Config = DnsTunnelConfig;
    type State = DnsTunnelState;
    const PRODUCES: &'static [AnomalyKind] = &[AnomalyKind::DnsTunnel];

    fn validate(config: &DnsTunnelConfig, _: &Context) -> Vec<ConfigError> {
        config.validate()
    }

    fn build(config: &DnsTunnelConfig, _: &mut Setup<'_>) -> Option<Self> {
        config.enabled.then(|| Self {
            window_ns: ns(config.window).max(1),
            min_queries: config.min_queries,
            long_query_bytes: config.long_query_bytes,
        })
    }

    fn observe_packet(&mut self, host: IpAddr, p: &PacketFeatures, state: &mut DnsTunnelState, out: &mut Vec<Anomaly>) {
        out.extend(state.observe(host, p, self).map(AnomalyParts::build));
    }
}

/// The parts every rule's anomaly shares: the window of `window_ns` ending at the packet `p` that crossed the
/// threshold, `p`'s destination as the target, `count` against `min`.
fn rule_anomaly(
    host: IpAddr,
    kind: AnomalyKind,
    p: &PacketFeatures,
    window_ns: i64,
    (count, min): (f64, u32),
    reason: String,
    features: Vec<Contribution>,
) -> AnomalyParts {
    AnomalyParts::rule(host, kind, p, p.ts_ns.saturating_sub(window_ns), (count, f64::from(min)), reason, features)
}

fn probe_anomaly(
    host: IpAddr,
    window_ns: i64,
    min: u32,
    count: f64,
    classes: &ProbeCounts,
    p: &PacketFeatures,
) -> AnomalyParts {
    let mut seen: Vec<(usize, u32)> = classes.iter().copied().enumerate().filter(|(_, n)| *n > 0).collect();
    seen.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let listed: Vec<String> = seen
        .iter()
        .map(|(c, n)| format!("{} {}", thousands(u64::from(*n)), PROBE_CLASSES[*c].replace('_', " ")))
        .collect();
    let reason = format!(
        "{host} sent {} packets within {} that no standard TCP/IP stack sends ({}), as stealth scans and OS \
         fingerprinting do (threshold {min})",
        thousands(count as u64),
        seconds(window_ns),
        listed.join(", "),
    );
    let features = seen
        .iter()
        .map(|(c, n)| Contribution { name: PROBE_CLASSES[*c].into(), value: f64::from(*n), baseline: Some(0.0) })
        .collect();
    rule_anomaly(host, AnomalyKind::Probe, p, window_ns, (count, min), reason, features)
}

fn dns_tunnel_anomaly(host: IpAddr, rule: &DnsTunnel, count: f64, p: &PacketFeatures) -> AnomalyParts {
    let (window_ns, min, bytes) = (rule.window_ns, rule.min_queries, rule.long_query_bytes);
    let reason = format!(
        "{host} sent {} DNS queries of at least {bytes} bytes within {} to {} (the last {} bytes): data carried in \
         query names, as DNS tunnels and exfiltration do (threshold {min}; ordinary lookups stay under 70 bytes)",
        thousands(count as u64),
        seconds(window_ns),
        p.destination,
        p.payload_len,
    );
    let features = vec![
        Contribution { name: "long_dns_queries".into(), value: count, baseline: Some(f64::from(min)) },
        Contribution {
            name: "dns_query_bytes".into(),
            value: f64::from(p.payload_len),
            baseline: Some(f64::from(bytes)),
        },
    ];
    rule_anomaly(host, AnomalyKind::DnsTunnel, p, window_ns, (count, min), reason, features)
}

/// A brute-force anomaly: `count` attempts against `min` over `window_ns` (the short or the slow window).
fn brute_force_anomaly(
    host: IpAddr,
    rule: &BruteForce,
    (count, min, window_ns): (f64, u32, i64),
    p: &PacketFeatures,
) -> AnomalyParts {
    let pace = if window_ns == rule.window_ns { "password guessing" } else { "throttled password guessing" };
    let reason = format!(
        "{host} opened {} connections to the login service {}:{} within {} ({pace}; threshold {min})",
        thousands(count as u64),
        p.destination,
        p.dst_port,
        seconds(window_ns),
    );
    let name = if window_ns == rule.window_ns {
        "connections_to_login_service"
    } else {
        "connections_to_login_service_slow_window"
    };
    let features = vec![Contribution { name: name.into(), value: count, baseline: Some(f64::from(min)) }];
    rule_anomaly(host, AnomalyKind::BruteForce, p, window_ns, (count, min), reason, features)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{T0, packet, syn};
    use netanom_schemas::records::tcp_flags::{ACK, FIN, PSH, RST, SYN, URG};

    const HOST: [u8; 4] = [10, 0, 0, 7];

    /// The three kinds with their defaults, and one host's state of each.
    #[derive(Default)]
    struct Host(ProbeState, BruteForceState, DnsTunnelState);

    fn rules() -> (Probe, BruteForce, DnsTunnel) {
        let mut models = crate::models::Models::default();
        let setup = &mut Setup::new(1, &mut models);
        let probe = Probe::build(&ProbeConfig::default(), setup).unwrap();
        let brute_force = BruteForce::build(&BruteForceConfig::default(), setup).unwrap();
        (probe, brute_force, DnsTunnel::build(&DnsTunnelConfig::default(), setup).unwrap())
    }

    impl Host {
        /// One packet through the three kinds, in registration order.
        fn observe(&mut self, p: &PacketFeatures, rules: &(Probe, BruteForce, DnsTunnel), out: &mut Vec<AnomalyParts>) {
            let host = IpAddr::from(HOST);
            out.extend(self.0.observe(host, p, &rules.0));
            out.extend(self.1.observe(host, p, &rules.1));
            out.extend(self.2.observe(host, p, &rules.2));
        }
    }

    fn tcp(ts: i64, flags: u8) -> PacketFeatures {
        packet(ts, IpAddr::from([10, 0, 0, 9]), 40_000, 80, 6, flags, 60, 1, Direction::Forward)
    }

    fn icmp(ts: i64, kind: u8, code: u8) -> PacketFeatures {
        let mut p = packet(ts, IpAddr::from([10, 0, 0, 9]), 0, 0, 1, 0, 42, 1, Direction::Forward);
        p.icmp_type = Some(kind);
        p.icmp_code = Some(code);
        p
    }

    fn dns(ts: i64, payload: u32) -> PacketFeatures {
        let mut p = packet(ts, IpAddr::from([10, 0, 0, 53]), 5_353, 53, 17, 0, 42 + payload, 1, Direction::Forward);
        p.payload_len = payload;
        p
    }

    fn run(packets: &[PacketFeatures]) -> Vec<AnomalyParts> {
        let (r, mut s, mut out) = (rules(), Host::default(), Vec::new());
        for p in packets {
            s.observe(p, &r, &mut out);
        }
        out
    }

    #[test]
    fn probe_classes_are_the_packets_no_stack_sends() {
        let classes = |f: u8| probe_class(&tcp(0, f));
        assert_eq!(classes(0), Some(0));
        assert_eq!(classes(0x40 | 0x80), Some(0), "ECE and CWR alone are still no flags");
        assert_eq!(classes(SYN | FIN), Some(1));
        assert_eq!(classes(SYN | RST), Some(2));
        assert_eq!(classes(FIN), Some(3));
        assert_eq!(classes(FIN | PSH | URG), Some(3));
        for ordinary in [SYN, SYN | ACK, ACK, ACK | PSH, FIN | ACK, RST, RST | ACK, SYN | 0x40 | 0x80, URG | ACK] {
            assert_eq!(classes(ordinary), None, "flags {ordinary:#x}");
        }
        assert_eq!(probe_class(&icmp(0, 8, 9)), Some(4));
        assert_eq!(probe_class(&icmp(0, 13, 0)), Some(5));
        assert_eq!(probe_class(&icmp(0, 17, 0)), Some(5));
        assert_eq!(probe_class(&icmp(0, 8, 0)), None, "an ordinary ping");
        assert_eq!(probe_class(&icmp(0, 0, 0)), None);
    }

    #[test]
    fn three_probes_in_a_minute_fire_once_and_say_which() {
        let s = 1_000_000_000i64;
        // The ndpi-tests/tcp_scan pattern: a FIN, a NULL and an Xmas packet 8 s apart, then more of the same.
        let mut packets = vec![tcp(T0, FIN), tcp(T0 + 8 * s, 0), tcp(T0 + 13 * s, FIN | PSH | URG)];
        packets.extend((0..20).map(|i| tcp(T0 + 14 * s + i, 0)));
        let out = run(&packets);
        assert_eq!(out.len(), 1, "{out:?}");
        let a = &out[0];
        assert_eq!((a.kind, a.score, a.threshold), (AnomalyKind::Probe, 3.0, 3.0));
        assert_eq!(a.window_end_ns, T0 + 13 * s);
        assert_eq!(a.window_start_ns, T0, "the first probe packet, not a minute before the last");
        assert!(a.reason.contains("2 tcp fin psh urg without ack, 1 tcp no flags"), "{}", a.reason);
        assert_eq!(a.features[0].name, "tcp_fin_psh_urg_without_ack");
        // Spread over three minutes, the same three packets are not a probe burst.
        assert!(run(&[tcp(T0, FIN), tcp(T0 + 70 * s, 0), tcp(T0 + 140 * s, FIN)]).is_empty());
        // Ordinary traffic never counts.
        let ordinary: Vec<_> =
            (0..1_000).map(|i| tcp(T0 + i * 1_000_000, if i % 2 == 0 { SYN } else { ACK | PSH })).collect();
        assert!(run(&ordinary).is_empty());
    }

    #[test]
    fn a_burst_across_a_window_boundary_is_counted_whole() {
        // 10 long queries, 5 before and 5 after a minute boundary, within 2 s: a tumbling count sees 5 and 5.
        let boundary = T0 - T0.rem_euclid(60_000_000_000) + 60_000_000_000;
        let packets: Vec<_> = (-5i64..5).map(|i| dns(boundary + i * 200_000_000, 120)).collect();
        let out = run(&packets);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].kind, AnomalyKind::DnsTunnel);
        assert_eq!(out[0].target, Some(IpAddr::from([10, 0, 0, 53])));
    }

    #[test]
    fn rules_start_at_the_first_packet_they_count() {
        let s = 1_000_000_000i64;
        // Two probes late in one tumbling minute, the third early in the next: the count includes the two.
        let out = run(&[tcp(T0 + 50 * s, FIN), tcp(T0 + 55 * s, 0), tcp(T0 + 65 * s, FIN)]);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!((out[0].window_start_ns, out[0].window_end_ns), (T0 + 50 * s, T0 + 65 * s));
        // Ten long DNS queries a second apart, after 30 s of short ones.
        let mut packets: Vec<PacketFeatures> = (0..30).map(|i| dns(T0 + i * s, 30)).collect();
        packets.extend((30..40).map(|i| dns(T0 + i * s, 120)));
        let out = run(&packets);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].kind, AnomalyKind::DnsTunnel);
        assert_eq!((out[0].window_start_ns, out[0].window_end_ns), (T0 + 30 * s, T0 + 39 * s));
    }

    #[test]
    fn dns_tunnel_needs_long_queries_not_many_queries() {
        let s = 1_000_000_000i64;
        // 300 ordinary lookups (payload 28–77 bytes) in a minute: quiet.
        let busy: Vec<_> = (0..300).map(|i| dns(T0 + i * s / 5, 28 + (i % 50) as u32)).collect();
        assert!(run(&busy).is_empty());
        // dnscat-like: 2 queries a second of 80–258 bytes; fires at the 10th, once per minute window.
        let tunnel: Vec<_> = (0..240).map(|i| dns(T0 + i * s / 2, 80 + (i % 179) as u32)).collect();
        let out = run(&tunnel);
        assert!(!out.is_empty() && out.len() <= 3, "{out:?}");
        assert_eq!(out[0].window_end_ns, T0 + 9 * s / 2);
        assert!(
            out[0].reason.contains("10 DNS queries of at least 80 bytes within 60 s to 10.0.0.53"),
            "{}",
            out[0].reason
        );
        // Responses (reverse direction) from a resolver do not count as queries.
        let mut answers = tunnel.clone();
        answers.iter_mut().for_each(|p| p.direction = Direction::Reverse);
        assert!(run(&answers).is_empty());
    }

    #[test]
    fn brute_force_counts_attempts_per_login_service() {
        let target = IpAddr::from([192, 168, 1, 22]);
        let s = 1_000_000_000i64;
        // 40 logins in 13 s to SSH: fires at the 20th attempt.
        let ssh: Vec<_> = (0..40).map(|i| syn(T0 + i * s / 3, target, 22)).collect();
        let out = run(&ssh);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!((out[0].kind, out[0].score, out[0].target), (AnomalyKind::BruteForce, 20.0, Some(target)));
        assert!(
            out[0].reason.contains("20 connections to the login service 192.168.1.22:22 within 60 s"),
            "{}",
            out[0].reason
        );
        // The same to HTTPS (a busy API client) is not a login service.
        let https: Vec<_> = (0..40).map(|i| syn(T0 + i * s / 3, target, 443)).collect();
        assert!(run(&https).is_empty());
        // 40 SSH attempts spread over 20 different servers: 2 each.
        let spread: Vec<_> =
            (0..40).map(|i| syn(T0 + i * s / 3, IpAddr::from([192, 168, 1, (i % 20) as u8]), 22)).collect();
        assert!(run(&spread).is_empty());
    }

    #[test]
    fn service_table_is_bounded_and_reuses_stale_entries() {
        let mut rules = rules();
        rules.1.max_services = 4;
        let mut state = Host::default();
        let mut out = Vec::new();
        for i in 0..100u8 {
            state.observe(&syn(T0, IpAddr::from([10, 1, 0, i]), 22), &rules, &mut out);
        }
        assert_eq!(state.1.services.len(), 4);
        // Ten minutes later the entries still count toward the slow window: a new service is not tracked.
        let soon = T0 + 600_000_000_000;
        state.observe(&syn(soon, IpAddr::from([10, 2, 0, 1]), 22), &rules, &mut out);
        assert!(!state.1.services.iter().any(|s| s.destination == IpAddr::from([10, 2, 0, 1])));
        // Twenty minutes later (two slow windows) every entry is stale: a new service takes one over.
        let later = T0 + 1_200_000_000_000;
        state.observe(&syn(later, IpAddr::from([10, 2, 0, 1]), 22), &rules, &mut out);
        assert!(state.1.services.iter().any(|s| s.destination == IpAddr::from([10, 2, 0, 1])));
        assert_eq!(state.1.services.len(), 4);
    }

    #[test]
    fn throttled_brute_force_is_counted_over_minutes() {
        let target = IpAddr::from([192, 168, 1, 22]);
        let s = 1_000_000_000i64;
        // hydra with one task: an attempt every 15 s for 20 minutes, never 20 in a minute.
        let slow: Vec<_> = (0..80).map(|i| syn(T0 + i * 15 * s, target, 22)).collect();
        let out = run(&slow);
        assert_eq!(out.len(), 2, "one per slow window: {out:?}");
        let a = &out[0];
        assert_eq!((a.kind, a.score, a.threshold), (AnomalyKind::BruteForce, 20.0, 20.0));
        assert_eq!((a.window_start_ns, a.window_end_ns), (T0, T0 + 19 * 15 * s), "first to crossing attempt");
        assert!(a.reason.contains("within 600 s (throttled password guessing"), "{}", a.reason);
        assert_eq!(a.features[0].name, "connections_to_login_service_slow_window");
        // An administrator's SSH logins, one every two minutes for an hour: 5 in ten minutes.
        let admin: Vec<_> = (0..30).map(|i| syn(T0 + i * 120 * s, target, 22)).collect();
        assert!(run(&admin).is_empty());
        // A fast brute force is reported by the short window only, once a minute.
        let fast: Vec<_> = (0..120).map(|i| syn(T0 + i * s, target, 22)).collect();
        let out = run(&fast);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out.iter().all(|a| a.reason.contains("within 60 s (password guessing")), "{out:?}");
    }

    proptest::proptest! {
        #[test]
        fn hostile_times_never_panic(ts in proptest::prelude::any::<i64>(), ts2 in proptest::prelude::any::<i64>(), flags in 0u8..=255) {
            let mut packets = Vec::new();
            for t in [ts, ts2, i64::MIN, i64::MAX, ts] {
                packets.push(tcp(t, flags));
                packets.push(dns(t, 200));
                packets.push(syn(t, IpAddr::from([10, 0, 0, 1]), 22));
            }
            for a in run(&packets) {
                proptest::prop_assert!(a.score.is_finite() && a.window_start_ns <= a.window_end_ns);
            }
        }
    }
}
