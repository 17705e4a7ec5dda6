//! Synthetic traffic for tests, demos and benchmarks: a seeded (ChaCha) generator of benign sessions (TCP with
//! handshake, data and FIN; DNS over UDP; ICMP echo) plus selectable attacks, built with etherparse
//! `PacketBuilder` and written, in timestamp order, as pcap or pcapng (Ethernet link type). Same scenario and
//! seed, same bytes.
//!
//! The attacks ([`AttackKind`], named by [`AttackName`] for `netanom synth --attacks`): the packet attacks SYN
//! flood, port scan, spoofed-source SYN flood and host sweep (the default scenario), and the session attacks
//! brute force (short login sessions to one service port), DNS tunnel (long random-looking query names and large
//! TXT answers), slow exfiltration (one long, low-rate upload) and beaconing (a tiny check-in to one C2 address
//! at a fixed period with small jitter), and the attacks that test how the rules generalize: a throttled SSH
//! brute force (an attempt every ~12 s), an interactive shell carried in ICMP echo requests, UDP and ICMP
//! (echo and port-unreachable) floods that stay in one flow, and beaconing with a jitter of several seconds.
//! Benign traffic is the same whichever attacks are chosen.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use etherparse::PacketBuilder;
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One attack in a [`Scenario`].
#[derive(Debug, Clone, PartialEq)]
pub struct Attack {
    /// Offset from the scenario start.
    pub start: Duration,
    /// Attack rate: packets per second for the packet attacks (SYN flood, port scan, spoofed flood, sweep);
    /// for the session attacks the unit each kind names (attempts, queries, segments or beacons per second).
    pub rate_pps: f64,
    /// What the attack does.
    pub kind: AttackKind,
}

/// The attacks the generator knows.
#[derive(Debug, Clone, PartialEq)]
pub enum AttackKind {
    /// `packets` TCP SYNs from one host to one port of one victim (random source ports).
    SynFlood {
        /// The flooding host.
        attacker: Ipv4Addr,
        /// The victim.
        victim: Ipv4Addr,
        /// The victim's port.
        port: u16,
        /// Packets sent.
        packets: u32,
    },
    /// A SYN to each port in `first_port..=last_port` of one target; closed ports answer RST.
    PortScan {
        /// The scanner.
        attacker: Ipv4Addr,
        /// The scanned host.
        target: Ipv4Addr,
        /// First port scanned.
        first_port: u16,
        /// Last port scanned.
        last_port: u16,
    },
    /// SYNs to one victim port from `sources` random (spoofed) addresses, 1–3 packets each.
    SpoofedSynFlood {
        /// The victim.
        victim: Ipv4Addr,
        /// The victim's port.
        port: u16,
        /// Distinct spoofed sources.
        sources: u32,
    },
    /// ICMP echo requests to `hosts` consecutive addresses starting at `first`.
    HostSweep {
        /// The sweeping host.
        attacker: Ipv4Addr,
        /// First address probed.
        first: Ipv4Addr,
        /// Addresses probed.
        hosts: u32,
    },
    /// Password guessing: `attempts` short TCP sessions to one service port (SSH 22, RDP 3389...), started
    /// `rate_pps` times per second (each start ±20 %). A session is a handshake, the server banner, the client
    /// banner, one credential attempt and the server's refusal (small payloads), then FIN or RST from the server.
    BruteForce {
        /// The guessing host.
        attacker: Ipv4Addr,
        /// The server attacked.
        target: Ipv4Addr,
        /// The service port.
        port: u16,
        /// Sessions (login attempts).
        attempts: u32,
    },
    /// Data tunnelled over DNS: `queries` TXT queries to one resolver, `rate_pps` per second (each ±30 %), whose
    /// names carry two or three random base32 labels of 40–63 characters under `t.example.net`, each answered by
    /// a TXT record of 180–400 random base64 characters. Real DNS wire format.
    DnsTunnel {
        /// The tunnelling host.
        client: Ipv4Addr,
        /// The resolver queried (port 53).
        resolver: Ipv4Addr,
        /// Queries sent.
        queries: u32,
    },
    /// A steady upload: one TCP connection to an external host carrying `segments` segments of 1,200–1,400
    /// payload bytes, `rate_pps` segments per second (each ±10 %), each acknowledged, then FIN.
    Upload {
        /// The uploading host.
        host: Ipv4Addr,
        /// The external host receiving the data.
        destination: Ipv4Addr,
        /// Its port.
        port: u16,
        /// Segments uploaded.
        segments: u32,
    },
    /// Command-and-control check-ins: `beacons` short TCP sessions to one C2 address, one every 1 / `rate_pps`
    /// seconds; like an implant's sleep, each wait is the period × (1 ± `jitter`), uniform. A session is a
    /// handshake, a tiny request (80–200 bytes), a tiny response (40–160 bytes) and FIN.
    Beaconing {
        /// The infected host.
        host: Ipv4Addr,
        /// The C2 address.
        c2: Ipv4Addr,
        /// Its port.
        port: u16,
        /// Check-ins.
        beacons: u32,
        /// Relative jitter of each wait, e.g. 0.05 for ±5 % (clamped to 0..=0.9).
        jitter: f64,
    },
    /// An interactive shell carried in ICMP echo: `requests` echo requests from the compromised host, `rate_pps`
    /// per second (each ±30 %), whose payloads are command output (printable text of 16–600 bytes, random
    /// length), each answered by an echo reply carrying the next command (8–60 bytes).
    IcmpTunnel {
        /// The compromised host (sends the requests).
        client: Ipv4Addr,
        /// The operator's host (sends the replies).
        server: Ipv4Addr,
        /// Echo requests sent.
        requests: u32,
    },
    /// `packets` packets from one host to one victim, `rate_pps` per second, all in one flow: UDP datagrams of
    /// 64–512 random bytes to one port from one source port, ICMP echo requests (ping flood) or ICMP port
    /// unreachable messages (an error flood), by `protocol`.
    Flood {
        /// The flooding host.
        attacker: Ipv4Addr,
        /// The victim.
        victim: Ipv4Addr,
        /// What is sent.
        protocol: FloodProtocol,
        /// Packets sent.
        packets: u32,
    },
}

/// The packets of an [`AttackKind::Flood`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodProtocol {
    /// UDP datagrams to one port (the argument).
    Udp(u16),
    /// ICMP echo requests.
    IcmpEcho,
    /// ICMP destination unreachable (port unreachable) messages quoting a UDP datagram.
    IcmpUnreachable,
}

/// The attacks of the labelled scenario by name (`netanom synth --attacks`), each with its place and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttackName {
    /// `syn-flood`: 10,000 SYNs at 2,000/s from 203.0.113.66 to 10.0.1.2:80, at 10 s.
    SynFlood,
    /// `port-scan`: ports 1–1024 of 10.0.1.3 at 200/s from 198.51.100.23, at 25 s.
    PortScan,
    /// `spoofed-syn-flood`: 3,000 spoofed sources to 10.0.1.4:443 at 3,000 packets/s, at 35 s.
    SpoofedSynFlood,
    /// `host-sweep`: pings to 10.0.2.1–254 at 100/s from 198.51.100.77, at 45 s.
    HostSweep,
    /// `brute-force`: 120 SSH login attempts, 4 per second, from 198.51.100.45 to 10.0.1.1:22, at 5 s.
    BruteForce,
    /// `dns-tunnel`: 600 TXT queries, 20 per second, from 10.0.0.66 to the resolver 203.0.113.53, at 15 s.
    DnsTunnel,
    /// `slow-exfiltration`: 110 segments of ~1.3 kB, 2 per second (~2.6 kB/s), from 10.0.0.88 to
    /// 203.0.113.80:443, at 3 s.
    SlowExfiltration,
    /// `beaconing`: 15 check-ins every 4 s ± 5 % from 10.0.0.77 to 203.0.113.9:443, at 1 s.
    Beaconing,
    /// `slow-brute-force`: 60 SSH login attempts, one every 12 s ± 20 % (5 a minute), from 198.51.100.46 to
    /// 10.0.1.1:22, at 2 s.
    SlowBruteForce,
    /// `icmp-tunnel`: 150 echo requests carrying shell output, 2 per second, from 10.0.0.99 to 203.0.113.44, at
    /// 4 s.
    IcmpTunnel,
    /// `udp-flood`: 15,000 UDP datagrams at 5,000/s from 203.0.113.70 to 10.0.1.3:9, at 20 s.
    UdpFlood,
    /// `icmp-flood`: 9,000 ICMP echo requests at 3,000/s from 203.0.113.71 to 10.0.1.4, at 30 s.
    IcmpFlood,
    /// `icmp-error-flood`: 9,000 ICMP port-unreachable messages at 3,000/s from 203.0.113.72 to 10.0.1.2, at
    /// 40 s.
    IcmpErrorFlood,
    /// `jittered-beaconing`: 20 check-ins every 60 s ± 10 s from 10.0.0.78 to 203.0.113.10:8443, at 6 s.
    JitteredBeaconing,
    /// `bulk-exfiltration`: 1,500 segments of ~1.3 kB, 60 per second (~2 MB in 25 s), from 10.0.0.89 to
    /// 203.0.113.81:443, at 8 s.
    BulkExfiltration,
}

/// An attack name that [`AttackName`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown attack {name:?}: expected all, none or a comma-separated list of {}", AttackName::known())]
pub struct UnknownAttack {
    /// The name given.
    pub name: String,
}

impl AttackName {
    /// Every attack, in scenario order.
    pub const ALL: [AttackName; 15] = [
        Self::SynFlood,
        Self::PortScan,
        Self::SpoofedSynFlood,
        Self::HostSweep,
        Self::BruteForce,
        Self::DnsTunnel,
        Self::SlowExfiltration,
        Self::Beaconing,
        Self::SlowBruteForce,
        Self::IcmpTunnel,
        Self::UdpFlood,
        Self::IcmpFlood,
        Self::IcmpErrorFlood,
        Self::JitteredBeaconing,
        Self::BulkExfiltration,
    ];
    /// The attacks of [`Scenario::default`] and of `netanom synth` without `--attacks`: the four packet attacks
    /// that the rate, fan-out and victim detectors find.
    pub const DEFAULT: [AttackName; 4] = [Self::SynFlood, Self::PortScan, Self::SpoofedSynFlood, Self::HostSweep];

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SynFlood => "syn-flood",
            Self::PortScan => "port-scan",
            Self::SpoofedSynFlood => "spoofed-syn-flood",
            Self::HostSweep => "host-sweep",
            Self::BruteForce => "brute-force",
            Self::DnsTunnel => "dns-tunnel",
            Self::SlowExfiltration => "slow-exfiltration",
            Self::Beaconing => "beaconing",
            Self::SlowBruteForce => "slow-brute-force",
            Self::IcmpTunnel => "icmp-tunnel",
            Self::UdpFlood => "udp-flood",
            Self::IcmpFlood => "icmp-flood",
            Self::IcmpErrorFlood => "icmp-error-flood",
            Self::JitteredBeaconing => "jittered-beaconing",
            Self::BulkExfiltration => "bulk-exfiltration",
        }
    }

    fn known() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }

    /// The attack as the labelled scenario places it.
    pub fn attack(self) -> Attack {
        let at = |secs, rate_pps, kind| Attack { start: Duration::from_secs(secs), rate_pps, kind };
        match self {
            Self::SynFlood => at(
                10,
                2000.0,
                AttackKind::SynFlood {
                    attacker: Ipv4Addr::new(203, 0, 113, 66),
                    victim: SERVERS[1],
                    port: 80,
                    packets: 10_000,
                },
            ),
            Self::PortScan => at(
                25,
                200.0,
                AttackKind::PortScan {
                    attacker: Ipv4Addr::new(198, 51, 100, 23),
                    target: SERVERS[2],
                    first_port: 1,
                    last_port: 1024,
                },
            ),
            Self::SpoofedSynFlood => {
                at(35, 3000.0, AttackKind::SpoofedSynFlood { victim: SERVERS[3], port: 443, sources: 3000 })
            }
            Self::HostSweep => at(
                45,
                100.0,
                AttackKind::HostSweep {
                    attacker: Ipv4Addr::new(198, 51, 100, 77),
                    first: Ipv4Addr::new(10, 0, 2, 1),
                    hosts: 254,
                },
            ),
            Self::BruteForce => at(
                5,
                4.0,
                AttackKind::BruteForce {
                    attacker: Ipv4Addr::new(198, 51, 100, 45),
                    target: SERVERS[0],
                    port: 22,
                    attempts: 120,
                },
            ),
            Self::DnsTunnel => at(
                15,
                20.0,
                AttackKind::DnsTunnel {
                    client: Ipv4Addr::new(10, 0, 0, 66),
                    resolver: Ipv4Addr::new(203, 0, 113, 53),
                    queries: 600,
                },
            ),
            Self::SlowExfiltration => at(
                3,
                2.0,
                AttackKind::Upload {
                    host: Ipv4Addr::new(10, 0, 0, 88),
                    destination: Ipv4Addr::new(203, 0, 113, 80),
                    port: 443,
                    segments: 110,
                },
            ),
            Self::Beaconing => at(
                1,
                0.25,
                AttackKind::Beaconing {
                    host: Ipv4Addr::new(10, 0, 0, 77),
                    c2: Ipv4Addr::new(203, 0, 113, 9),
                    port: 443,
                    beacons: 15,
                    jitter: 0.05,
                },
            ),
            Self::SlowBruteForce => at(
                2,
                1.0 / 12.0,
                AttackKind::BruteForce {
                    attacker: Ipv4Addr::new(198, 51, 100, 46),
                    target: SERVERS[0],
                    port: 22,
                    attempts: 60,
                },
            ),
            Self::IcmpTunnel => at(
                4,
                2.0,
                AttackKind::IcmpTunnel {
                    client: Ipv4Addr::new(10, 0, 0, 99),
                    server: Ipv4Addr::new(203, 0, 113, 44),
                    requests: 150,
                },
            ),
            Self::UdpFlood => at(
                20,
                5000.0,
                AttackKind::Flood {
                    attacker: Ipv4Addr::new(203, 0, 113, 70),
                    victim: SERVERS[2],
                    protocol: FloodProtocol::Udp(9),
                    packets: 15_000,
                },
            ),
            Self::IcmpFlood => at(
                30,
                3000.0,
                AttackKind::Flood {
                    attacker: Ipv4Addr::new(203, 0, 113, 71),
                    victim: SERVERS[3],
                    protocol: FloodProtocol::IcmpEcho,
                    packets: 9_000,
                },
            ),
            Self::IcmpErrorFlood => at(
                40,
                3000.0,
                AttackKind::Flood {
                    attacker: Ipv4Addr::new(203, 0, 113, 72),
                    victim: SERVERS[1],
                    protocol: FloodProtocol::IcmpUnreachable,
                    packets: 9_000,
                },
            ),
            Self::JitteredBeaconing => at(
                6,
                1.0 / 60.0,
                AttackKind::Beaconing {
                    host: Ipv4Addr::new(10, 0, 0, 78),
                    c2: Ipv4Addr::new(203, 0, 113, 10),
                    port: 8443,
                    beacons: 20,
                    jitter: 10.0 / 60.0,
                },
            ),
            Self::BulkExfiltration => at(
                8,
                60.0,
                AttackKind::Upload {
                    host: Ipv4Addr::new(10, 0, 0, 89),
                    destination: Ipv4Addr::new(203, 0, 113, 81),
                    port: 443,
                    segments: 1500,
                },
            ),
        }
    }
}

impl fmt::Display for AttackName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttackName {
    type Err = UnknownAttack;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Self::ALL.into_iter().find(|a| a.as_str() == s).ok_or_else(|| UnknownAttack { name: s.to_string() })
    }
}

/// A set of attacks as `netanom synth --attacks` takes it: `all`, `none` (benign traffic only), or names
/// separated by commas. Kept in
/// [`AttackName::ALL`] order without repeats, so the order given does not change the bytes written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttackList(pub Vec<AttackName>);

impl Default for AttackList {
    fn default() -> Self {
        Self(AttackName::DEFAULT.to_vec())
    }
}

impl FromStr for AttackList {
    type Err = UnknownAttack;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut chosen = BTreeSet::new();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "all" {
                chosen.extend(AttackName::ALL);
            } else if name != "none" {
                chosen.insert(name.parse::<AttackName>()?);
            }
        }
        Ok(Self(chosen.into_iter().collect()))
    }
}

impl fmt::Display for AttackList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        f.write_str(&self.0.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(","))
    }
}

/// A traffic scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// RNG seed.
    pub seed: u64,
    /// Time of the first packet, ns since the Unix epoch.
    pub start_ns: i64,
    /// Length of the benign traffic.
    pub duration: Duration,
    /// Benign clients (10.0.0.10, 10.0.0.11, ...).
    pub benign_hosts: u32,
    /// Benign sessions started per second (TCP 70 %, DNS 25 %, ping 5 %).
    pub sessions_per_sec: f64,
    /// Attacks.
    pub attacks: Vec<Attack>,
}

/// The benign servers clients talk to.
pub const SERVERS: [Ipv4Addr; 4] =
    [Ipv4Addr::new(10, 0, 1, 1), Ipv4Addr::new(10, 0, 1, 2), Ipv4Addr::new(10, 0, 1, 3), Ipv4Addr::new(10, 0, 1, 4)];
/// The benign DNS resolver.
pub const RESOLVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 53);
/// The gateway benign hosts ping.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

impl Default for Scenario {
    /// 60 s, 20 clients, 20 sessions/s and the [`AttackName::DEFAULT`] attacks: a SYN flood at 10 s, a port scan
    /// at 25 s, a spoofed-source flood at 35 s and a host sweep at 45 s.
    fn default() -> Self {
        Self {
            seed: 42,
            start_ns: 1_700_000_000_000_000_000,
            duration: Duration::from_secs(60),
            benign_hosts: 20,
            sessions_per_sec: 20.0,
            attacks: AttackName::DEFAULT.map(AttackName::attack).to_vec(),
        }
    }
}

impl Scenario {
    /// Only benign traffic.
    pub fn benign(seed: u64, duration: Duration) -> Self {
        Self { seed, duration, attacks: Vec::new(), ..Self::default() }
    }

    /// The default scenario's benign traffic with the named attacks instead of the default ones (in
    /// [`AttackName::ALL`] order, each once).
    pub fn with_attacks(seed: u64, attacks: &AttackList) -> Self {
        let mut names = attacks.0.clone();
        names.sort_unstable();
        names.dedup();
        Self { seed, attacks: names.into_iter().map(AttackName::attack).collect(), ..Self::default() }
    }
}

/// What a generated capture contains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SynthSummary {
    /// Attacking hosts, infected hosts included (spoofed sources are not listed; their victim is).
    pub attackers: Vec<IpAddr>,
    /// Attacked hosts and the other end of the session attacks (C2 address, tunnel resolver, exfiltration
    /// host), like `victims_or_targets` in `../shared/data/labels.csv`.
    pub victims: Vec<IpAddr>,
    /// Benign clients and servers that sent traffic.
    pub benign: Vec<IpAddr>,
    /// Spoofed sources of spoofed-source floods.
    pub spoofed_sources: u64,
    /// Packets written.
    pub packets: u64,
    /// First packet time, ns.
    pub first_ts_ns: i64,
    /// Last packet time, ns.
    pub last_ts_ns: i64,
}

/// One generated packet: an Ethernet frame and its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthPacket {
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: i64,
    /// The Ethernet frame.
    pub data: Vec<u8>,
}

struct Gen {
    rng: ChaCha8Rng,
    out: Vec<SynthPacket>,
}

fn mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [2, 0, o[0], o[1], o[2], o[3]]
}

impl Gen {
    fn tcp(&mut self, ts: i64, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8, payload: usize) {
        let seq = self.rng.r#gen::<u32>();
        let mut b = PacketBuilder::ethernet2(mac(src.0), mac(dst.0))
            .ipv4(src.0.octets(), dst.0.octets(), 64)
            .tcp(src.1, dst.1, seq, 64240);
        if flags & 0x02 != 0 {
            b = b.syn();
        }
        if flags & 0x10 != 0 {
            b = b.ack(self.rng.r#gen());
        }
        if flags & 0x01 != 0 {
            b = b.fin();
        }
        if flags & 0x04 != 0 {
            b = b.rst();
        }
        if flags & 0x08 != 0 {
            b = b.psh();
        }
        let payload = vec![0x61u8; payload];
        let mut data = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut data, &payload).expect("writing to a Vec cannot fail");
        self.out.push(SynthPacket { ts_ns: ts, data });
    }

    fn udp(&mut self, ts: i64, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: usize) {
        self.udp_bytes(ts, src, dst, &vec![0x62u8; payload]);
    }

    fn udp_bytes(&mut self, ts: i64, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) {
        let b =
            PacketBuilder::ethernet2(mac(src.0), mac(dst.0)).ipv4(src.0.octets(), dst.0.octets(), 64).udp(src.1, dst.1);
        let mut data = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut data, payload).expect("writing to a Vec cannot fail");
        self.out.push(SynthPacket { ts_ns: ts, data });
    }

    /// A uniform offset within ± `fraction` × `span` (`fraction` clamped to 0..=0.9).
    fn jitter(&mut self, span: i64, fraction: f64) -> i64 {
        let f = if fraction.is_finite() { fraction.clamp(0.0, 0.9) } else { 0.0 };
        if f == 0.0 { 0 } else { (span as f64 * self.rng.gen_range(-f..=f)) as i64 }
    }

    /// A TCP handshake from `c` to `s` starting at `t`; returns the time of the client's ACK.
    fn handshake(&mut self, mut t: i64, c: (Ipv4Addr, u16), s: (Ipv4Addr, u16)) -> i64 {
        self.tcp(t, c, s, 0x02, 0);
        t += self.rtt();
        self.tcp(t, s, c, 0x12, 0);
        t += self.rtt();
        self.tcp(t, c, s, 0x10, 0);
        t
    }

    /// Client FIN, server FIN, client ACK, from `t`.
    fn close(&mut self, mut t: i64, c: (Ipv4Addr, u16), s: (Ipv4Addr, u16)) {
        t += self.rtt();
        self.tcp(t, c, s, 0x11, 0);
        t += self.rtt();
        self.tcp(t, s, c, 0x11, 0);
        t += self.rtt();
        self.tcp(t, c, s, 0x10, 0);
    }

    /// One login attempt: handshake, server banner, client banner, credentials, refusal, then the server ends
    /// the session with FIN or RST.
    fn login_attempt(&mut self, t: i64, client: Ipv4Addr, server: (Ipv4Addr, u16)) {
        let c = (client, self.rng.gen_range(32768..61000));
        let mut t = self.handshake(t, c, server);
        for (from_client, size) in [(false, 20..40), (true, 20..40), (true, 60..120), (false, 20..60)] {
            t += self.rtt();
            let len = self.rng.gen_range(size);
            if from_client {
                self.tcp(t, c, server, 0x18, len);
            } else {
                self.tcp(t, server, c, 0x18, len);
            }
        }
        t += self.rtt();
        if self.rng.gen_bool(0.5) {
            self.tcp(t, server, c, 0x14, 0);
        } else {
            self.tcp(t, server, c, 0x11, 0);
            t += self.rtt();
            self.tcp(t, c, server, 0x11, 0);
            t += self.rtt();
            self.tcp(t, server, c, 0x10, 0);
        }
    }

    /// One tunnelled DNS exchange: a TXT query whose name carries random base32 labels, and its TXT answer.
    fn tunnel_query(&mut self, t: i64, client: Ipv4Addr, resolver: Ipv4Addr) {
        const BASE32: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
        const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let id: u16 = self.rng.r#gen();
        // Header: id, flags (standard query, recursion desired), 1 question.
        let mut query = Vec::with_capacity(256);
        query.extend_from_slice(&id.to_be_bytes());
        query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for _ in 0..self.rng.gen_range(2..=3) {
            let len = self.rng.gen_range(40..=63);
            query.push(len as u8);
            query.extend((0..len).map(|_| BASE32[self.rng.gen_range(0..BASE32.len())]));
        }
        for label in [&b"t"[..], b"example", b"net"] {
            query.push(label.len() as u8);
            query.extend_from_slice(label);
        }
        query.extend_from_slice(&[0, 0, 16, 0, 1]); // end of name, QTYPE TXT, QCLASS IN
        let sport = self.rng.gen_range(32768..61000);
        self.udp_bytes(t, (client, sport), (resolver, 53), &query);
        // Answer: the query with response flags and one TXT record (name = pointer to the question).
        let mut answer = query;
        answer[2..4].copy_from_slice(&[0x81, 0x80]);
        answer[6..8].copy_from_slice(&[0, 1]);
        let text: Vec<u8> =
            (0..self.rng.gen_range(180..=400)).map(|_| BASE64[self.rng.gen_range(0..BASE64.len())]).collect();
        let strings: Vec<&[u8]> = text.chunks(255).collect();
        let rdlength = text.len() + strings.len();
        answer.extend_from_slice(&[0xc0, 0x0c, 0, 16, 0, 1, 0, 0, 0, 0]); // name, TXT, IN, TTL 0
        answer.extend_from_slice(&(rdlength as u16).to_be_bytes());
        for s in strings {
            answer.push(s.len() as u8);
            answer.extend_from_slice(s);
        }
        let rtt = self.rtt();
        self.udp_bytes(t + rtt, (resolver, 53), (client, sport), &answer);
    }

    /// One check-in: handshake, tiny request, tiny response, FIN.
    fn beacon(&mut self, t: i64, host: Ipv4Addr, c2: (Ipv4Addr, u16)) {
        let c = (host, self.rng.gen_range(32768..61000));
        let mut t = self.handshake(t, c, c2);
        t += self.rtt();
        let req = self.rng.gen_range(80..200);
        self.tcp(t, c, c2, 0x18, req);
        t += self.rtt();
        let resp = self.rng.gen_range(40..160);
        self.tcp(t, c2, c, 0x18, resp);
        self.close(t, c, c2);
    }

    /// One ICMP packet from `src` to `dst` of type `icmp` with `payload`.
    fn icmp(&mut self, ts: i64, src: Ipv4Addr, dst: Ipv4Addr, icmp: etherparse::Icmpv4Type, payload: &[u8]) {
        let b = PacketBuilder::ethernet2(mac(src), mac(dst)).ipv4(src.octets(), dst.octets(), 64).icmpv4(icmp);
        let mut data = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut data, payload).expect("writing to a Vec cannot fail");
        self.out.push(SynthPacket { ts_ns: ts, data });
    }

    /// `len` bytes of printable text (what a shell prints), random.
    fn text(&mut self, len: usize) -> Vec<u8> {
        const TEXT: &[u8] = b"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/.-_:=\n\t";
        (0..len).map(|_| TEXT[self.rng.gen_range(0..TEXT.len())]).collect()
    }

    fn ping(&mut self, ts: i64, src: Ipv4Addr, dst: Ipv4Addr, reply: bool, seq: u16) {
        let b = PacketBuilder::ethernet2(mac(src), mac(dst)).ipv4(src.octets(), dst.octets(), 64);
        let b = if reply { b.icmpv4_echo_reply(7, seq) } else { b.icmpv4_echo_request(7, seq) };
        let mut data = Vec::with_capacity(b.size(32));
        b.write(&mut data, &[0u8; 32]).expect("writing to a Vec cannot fail");
        self.out.push(SynthPacket { ts_ns: ts, data });
    }

    fn rtt(&mut self) -> i64 {
        self.rng.gen_range(200_000..20_000_000)
    }

    fn tcp_session(&mut self, mut t: i64, client: Ipv4Addr, server: Ipv4Addr) {
        let c = (client, self.rng.gen_range(32768..61000));
        let s = (server, if self.rng.gen_bool(0.5) { 443 } else { 80 });
        self.tcp(t, c, s, 0x02, 0);
        t += self.rtt();
        self.tcp(t, s, c, 0x12, 0);
        t += self.rtt();
        self.tcp(t, c, s, 0x10, 0);
        for _ in 0..self.rng.gen_range(1..4) {
            t += self.rtt();
            let req = self.rng.gen_range(50..400);
            self.tcp(t, c, s, 0x18, req);
            for _ in 0..self.rng.gen_range(1..6) {
                t += self.rtt() / 4;
                let resp = self.rng.gen_range(100..1400);
                self.tcp(t, s, c, 0x18, resp);
            }
            t += self.rtt() / 4;
            self.tcp(t, c, s, 0x10, 0);
        }
        t += self.rtt();
        self.tcp(t, c, s, 0x11, 0);
        t += self.rtt();
        self.tcp(t, s, c, 0x11, 0);
        t += self.rtt();
        self.tcp(t, c, s, 0x10, 0);
    }

    fn dns(&mut self, t: i64, client: Ipv4Addr) {
        let c = (client, self.rng.gen_range(32768..61000));
        let q = self.rng.gen_range(30..60);
        self.udp(t, c, (RESOLVER, 53), q);
        let rtt = self.rtt();
        let a = q + self.rng.gen_range(16..200);
        self.udp(t + rtt / 4, (RESOLVER, 53), c, a);
    }
}

/// Generates the packets of `scenario`, sorted by time, and what they contain.
pub fn generate(scenario: &Scenario) -> (Vec<SynthPacket>, SynthSummary) {
    let mut g = Gen { rng: ChaCha8Rng::seed_from_u64(scenario.seed), out: Vec::new() };
    let start = scenario.start_ns;
    let end = start + i64::try_from(scenario.duration.as_nanos()).unwrap_or(i64::MAX / 2);
    let clients: Vec<Ipv4Addr> =
        (0..scenario.benign_hosts.max(1)).map(|i| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 10)) + i)).collect();
    let mut benign = BTreeSet::new();
    if scenario.sessions_per_sec > 0.0 {
        let mean_gap = 1e9 / scenario.sessions_per_sec;
        let mut t = start as f64;
        loop {
            let u: f64 = g.rng.r#gen::<f64>().max(1e-12);
            t += -u.ln() * mean_gap;
            if t >= end as f64 {
                break;
            }
            let client = clients[g.rng.gen_range(0..clients.len())];
            benign.insert(IpAddr::V4(client));
            let kind = g.rng.gen_range(0..100);
            if kind < 70 {
                let server = SERVERS[g.rng.gen_range(0..SERVERS.len())];
                benign.insert(IpAddr::V4(server));
                g.tcp_session(t as i64, client, server);
            } else if kind < 95 {
                benign.insert(IpAddr::V4(RESOLVER));
                g.dns(t as i64, client);
            } else {
                benign.insert(IpAddr::V4(GATEWAY));
                let seq = g.rng.r#gen();
                g.ping(t as i64, client, GATEWAY, false, seq);
                let rtt = g.rtt();
                g.ping(t as i64 + rtt, GATEWAY, client, true, seq);
            }
        }
    }
    let mut attackers = BTreeSet::new();
    let mut victims = BTreeSet::new();
    let mut spoofed = 0u64;
    for attack in &scenario.attacks {
        let t0 = start + i64::try_from(attack.start.as_nanos()).unwrap_or(0);
        let gap = (1e9 / attack.rate_pps.max(1e-3)) as i64;
        match attack.kind {
            AttackKind::SynFlood { attacker, victim, port, packets } => {
                attackers.insert(IpAddr::V4(attacker));
                victims.insert(IpAddr::V4(victim));
                for i in 0..i64::from(packets) {
                    let sport = g.rng.gen_range(1024..65535);
                    g.tcp(t0 + i * gap, (attacker, sport), (victim, port), 0x02, 0);
                }
            }
            AttackKind::PortScan { attacker, target, first_port, last_port } => {
                attackers.insert(IpAddr::V4(attacker));
                victims.insert(IpAddr::V4(target));
                let sport = g.rng.gen_range(40000..60000);
                for (i, port) in (first_port..=last_port).enumerate() {
                    let t = t0 + i as i64 * gap;
                    g.tcp(t, (attacker, sport), (target, port), 0x02, 0);
                    let rtt = g.rtt() / 10;
                    if port == 80 || port == 443 {
                        g.tcp(t + rtt, (target, port), (attacker, sport), 0x12, 0);
                        g.tcp(t + 2 * rtt, (attacker, sport), (target, port), 0x04, 0);
                    } else {
                        g.tcp(t + rtt, (target, port), (attacker, sport), 0x14, 0);
                    }
                }
            }
            AttackKind::SpoofedSynFlood { victim, port, sources } => {
                victims.insert(IpAddr::V4(victim));
                spoofed += u64::from(sources);
                let mut t = t0;
                for _ in 0..sources {
                    let src = loop {
                        let a = Ipv4Addr::from(g.rng.gen_range(0x0100_0000u32..0xdf00_0000));
                        if a.octets()[0] != 10 && a.octets()[0] != 127 {
                            break a;
                        }
                    };
                    for _ in 0..g.rng.gen_range(1..=3) {
                        let sport = g.rng.gen_range(1024..65535);
                        g.tcp(t, (src, sport), (victim, port), 0x02, 0);
                        t += gap;
                    }
                }
            }
            AttackKind::HostSweep { attacker, first, hosts } => {
                attackers.insert(IpAddr::V4(attacker));
                for i in 0..hosts {
                    let dst = Ipv4Addr::from(u32::from(first).wrapping_add(i));
                    g.ping(t0 + i64::from(i) * gap, attacker, dst, false, i as u16);
                }
            }
            AttackKind::BruteForce { attacker, target, port, attempts } => {
                attackers.insert(IpAddr::V4(attacker));
                victims.insert(IpAddr::V4(target));
                for i in 0..i64::from(attempts) {
                    let t = (t0 + i * gap + g.jitter(gap, 0.2)).max(t0);
                    g.login_attempt(t, attacker, (target, port));
                }
            }
            AttackKind::DnsTunnel { client, resolver, queries } => {
                attackers.insert(IpAddr::V4(client));
                victims.insert(IpAddr::V4(resolver));
                for i in 0..i64::from(queries) {
                    let t = (t0 + i * gap + g.jitter(gap, 0.3)).max(t0);
                    g.tunnel_query(t, client, resolver);
                }
            }
            AttackKind::Upload { host, destination, port, segments } => {
                attackers.insert(IpAddr::V4(host));
                victims.insert(IpAddr::V4(destination));
                let c = (host, g.rng.gen_range(32768..61000));
                let s = (destination, port);
                let mut t = g.handshake(t0, c, s);
                for _ in 0..segments {
                    t += gap + g.jitter(gap, 0.1);
                    let len = g.rng.gen_range(1200..=1400);
                    g.tcp(t, c, s, 0x18, len);
                    let rtt = g.rtt();
                    g.tcp(t + rtt, s, c, 0x10, 0);
                }
                g.close(t, c, s);
            }
            AttackKind::IcmpTunnel { client, server, requests } => {
                use etherparse::{IcmpEchoHeader, Icmpv4Type};
                attackers.insert(IpAddr::V4(client));
                victims.insert(IpAddr::V4(server));
                for i in 0..requests {
                    let t = (t0 + i64::from(i) * gap + g.jitter(gap, 0.3)).max(t0);
                    let echo = IcmpEchoHeader { id: 0x4242, seq: i as u16 };
                    let len = g.rng.gen_range(16..=600);
                    let output = g.text(len);
                    g.icmp(t, client, server, Icmpv4Type::EchoRequest(echo), &output);
                    let len = g.rng.gen_range(8..=60);
                    let command = g.text(len);
                    let rtt = g.rtt();
                    g.icmp(t + rtt, server, client, Icmpv4Type::EchoReply(echo), &command);
                }
            }
            AttackKind::Flood { attacker, victim, protocol, packets } => {
                use etherparse::{IcmpEchoHeader, Icmpv4Type, icmpv4::DestUnreachableHeader};
                attackers.insert(IpAddr::V4(attacker));
                victims.insert(IpAddr::V4(victim));
                let sport = g.rng.gen_range(1024..65535);
                for i in 0..i64::from(packets) {
                    let t = t0 + i * gap;
                    match protocol {
                        FloodProtocol::Udp(port) => {
                            let len = g.rng.gen_range(64..=512);
                            let junk: Vec<u8> = (0..len).map(|_| g.rng.r#gen()).collect();
                            g.udp_bytes(t, (attacker, sport), (victim, port), &junk);
                        }
                        FloodProtocol::IcmpEcho => {
                            let echo = IcmpEchoHeader { id: 0x0101, seq: i as u16 };
                            g.icmp(t, attacker, victim, Icmpv4Type::EchoRequest(echo), &[0u8; 56]);
                        }
                        FloodProtocol::IcmpUnreachable => {
                            // The quoted datagram: an IPv4 header and the first 8 bytes of a UDP header.
                            let mut quoted = vec![0x45, 0, 0, 36, 0, 0, 0x40, 0, 64, 17, 0, 0];
                            quoted.extend_from_slice(&victim.octets());
                            quoted.extend_from_slice(&attacker.octets());
                            quoted.extend_from_slice(&[0x30, 0x39, 0, 53, 0, 16, 0, 0]);
                            let unreachable = Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port);
                            g.icmp(t, attacker, victim, unreachable, &quoted);
                        }
                    }
                }
            }
            AttackKind::Beaconing { host, c2, port, beacons, jitter } => {
                attackers.insert(IpAddr::V4(host));
                victims.insert(IpAddr::V4(c2));
                let mut t = t0;
                for _ in 0..beacons {
                    g.beacon(t, host, (c2, port));
                    t += gap + g.jitter(gap, jitter);
                }
            }
        }
    }
    let mut packets = g.out;
    packets.sort_by_key(|p| p.ts_ns);
    let summary = SynthSummary {
        benign: benign.into_iter().filter(|ip| !victims.contains(ip) && !attackers.contains(ip)).collect(),
        attackers: attackers.into_iter().collect(),
        victims: victims.into_iter().collect(),
        spoofed_sources: spoofed,
        packets: packets.len() as u64,
        first_ts_ns: packets.first().map_or(0, |p| p.ts_ns),
        last_ts_ns: packets.last().map_or(0, |p| p.ts_ns),
    };
    (packets, summary)
}

/// About `packets` packets (exactly that many) of mixed benign and attack traffic, quickly, for benchmarks.
pub fn mixed_packets(seed: u64, packets: usize) -> Vec<SynthPacket> {
    // A default scenario yields ~25k attack packets plus ~19 packets per benign session.
    let sessions_per_sec = (packets as f64 / 60.0 / 15.0).max(1.0);
    let mut scenario = Scenario { seed, sessions_per_sec, benign_hosts: 500, ..Scenario::default() };
    loop {
        let (mut out, _) = generate(&scenario);
        if out.len() >= packets {
            out.truncate(packets);
            return out;
        }
        scenario.sessions_per_sec *= 1.5;
    }
}

/// Writes `packets` to a nanosecond pcap file (Ethernet).
pub fn write_packets_pcap(packets: &[SynthPacket], path: &Path) -> io::Result<()> {
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ts_resolution: pcap_file::TsResolution::NanoSecond,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(BufWriter::new(File::create(path)?), header).map_err(io::Error::other)?;
    for p in packets {
        let ts = Duration::from_nanos(u64::try_from(p.ts_ns).unwrap_or(0));
        w.write_packet(&PcapPacket::new(ts, p.data.len() as u32, &p.data)).map_err(io::Error::other)?;
    }
    io::Write::flush(&mut w.into_writer())
}

/// Writes `packets` to a pcapng file (one Ethernet interface, nanosecond timestamps).
pub fn write_packets_pcapng(packets: &[SynthPacket], path: &Path) -> io::Result<()> {
    let mut w = PcapNgWriter::new(BufWriter::new(File::create(path)?)).map_err(io::Error::other)?;
    let idb = InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    };
    w.write_pcapng_block(idb).map_err(io::Error::other)?;
    for p in packets {
        let epb = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_nanos(u64::try_from(p.ts_ns).unwrap_or(0)),
            original_len: p.data.len() as u32,
            data: std::borrow::Cow::Borrowed(&p.data),
            options: Vec::new(),
        };
        w.write_pcapng_block(epb).map_err(io::Error::other)?;
    }
    io::Write::flush(&mut w.into_inner())
}

/// Generates `scenario` and writes it to a pcap file.
pub fn write_pcap(scenario: &Scenario, path: &Path) -> io::Result<SynthSummary> {
    let (packets, summary) = generate(scenario);
    write_packets_pcap(&packets, path)?;
    Ok(summary)
}

/// Generates `scenario` and writes it to a pcapng file.
pub fn write_pcapng(scenario: &Scenario, path: &Path) -> io::Result<SynthSummary> {
    let (packets, summary) = generate(scenario);
    write_packets_pcapng(&packets, path)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{linktype, parse};

    #[test]
    fn same_seed_same_packets_sorted_and_parseable() {
        let s = Scenario { duration: Duration::from_secs(20), ..Scenario::default() };
        let (a, sa) = generate(&s);
        let (b, _) = generate(&s);
        assert_eq!(a, b);
        assert!(a.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
        assert_eq!(sa.packets, a.len() as u64);
        for p in &a {
            parse(linktype::ETHERNET, &p.data, p.data.len() as u32).unwrap();
        }
        let (c, _) = generate(&Scenario { seed: 7, ..s });
        assert_ne!(a, c);
    }

    #[test]
    fn summary_lists_roles() {
        let (packets, s) = generate(&Scenario::default());
        assert!(s.attackers.contains(&"203.0.113.66".parse().unwrap()));
        assert!(s.attackers.contains(&"198.51.100.23".parse().unwrap()));
        assert!(s.attackers.contains(&"198.51.100.77".parse().unwrap()));
        assert!(s.victims.contains(&IpAddr::V4(SERVERS[3])));
        assert!(s.benign.contains(&IpAddr::V4(RESOLVER)));
        assert!(s.benign.iter().all(|b| !s.attackers.contains(b)));
        // Spoofed flood: thousands of distinct sources to one victim.
        let spoof: BTreeSet<_> = packets
            .iter()
            .filter_map(|p| parse(linktype::ETHERNET, &p.data, 0).ok())
            .filter(|p| p.destination == IpAddr::V4(SERVERS[3]) && p.dst_port == 443 && p.tcp_flags == 2)
            .map(|p| p.source)
            .collect();
        assert!(spoof.len() >= 2900, "{}", spoof.len());
        assert_eq!(s.spoofed_sources, 3000);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The parsed packets of `packets` with their times, in seconds from `start_ns`.
    fn parsed(packets: &[SynthPacket], start_ns: i64) -> Vec<(f64, crate::parse::Parsed)> {
        packets
            .iter()
            .map(|p| {
                let q = parse(linktype::ETHERNET, &p.data, p.data.len() as u32).unwrap();
                ((p.ts_ns - start_ns) as f64 / 1e9, q)
            })
            .collect()
    }

    #[test]
    fn every_attack_is_deterministic_parseable_and_labelled() {
        let s = Scenario::with_attacks(42, &"all".parse().unwrap());
        assert_eq!(s.attacks.len(), AttackName::ALL.len());
        let (a, sa) = generate(&s);
        let (b, sb) = generate(&s);
        assert_eq!(a, b, "same seed, same packets");
        assert_eq!(sa, sb);
        assert!(a.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
        let _ = parsed(&a, s.start_ns);
        for (attacker, target) in [
            ("198.51.100.45", "10.0.1.1"),
            ("10.0.0.66", "203.0.113.53"),
            ("10.0.0.88", "203.0.113.80"),
            ("10.0.0.77", "203.0.113.9"),
        ] {
            assert!(sa.attackers.contains(&ip(attacker)), "{attacker} is an attacker: {sa:?}");
            assert!(sa.victims.contains(&ip(target)), "{target} is a target: {sa:?}");
        }
        assert!(sa.benign.iter().all(|h| !sa.attackers.contains(h) && !sa.victims.contains(h)));
        let (c, _) = generate(&Scenario { seed: 7, ..s });
        assert_ne!(a, c);
    }

    #[test]
    fn benign_traffic_is_the_same_whatever_the_attacks() {
        let key = |p: &SynthPacket| (p.ts_ns, p.data.clone());
        let mut benign: Vec<_> = generate(&Scenario::benign(3, Duration::from_secs(60))).0.iter().map(key).collect();
        let mut full: Vec<_> =
            generate(&Scenario::with_attacks(3, &"all".parse().unwrap())).0.iter().map(key).collect();
        benign.sort();
        full.sort();
        let mut rest = full.into_iter();
        for p in &benign {
            assert!(rest.any(|q| &q == p), "benign packet at {} missing from the attack scenario", p.0);
        }
    }

    #[test]
    fn attack_lists_parse_in_canonical_order_and_default_is_the_classic_four() {
        let l: AttackList = " beaconing, syn-flood,beaconing ,".parse().unwrap();
        assert_eq!(l.0, vec![AttackName::SynFlood, AttackName::Beaconing]);
        assert_eq!(l.to_string(), "syn-flood,beaconing");
        assert_eq!("all".parse::<AttackList>().unwrap().0, AttackName::ALL.to_vec());
        let err = "syn-flood,ddos".parse::<AttackList>().unwrap_err();
        assert_eq!(err.name, "ddos");
        assert!(err.to_string().contains("slow-exfiltration"), "{err}");
        assert_eq!(Scenario::with_attacks(42, &AttackList::default()), Scenario::default());
        let reordered: AttackList = "host-sweep,spoofed-syn-flood,port-scan,syn-flood".parse().unwrap();
        assert_eq!(Scenario::with_attacks(42, &reordered), Scenario::default());
    }

    #[test]
    fn no_attacks_is_a_benign_only_scenario() {
        let none: AttackList = "none".parse().unwrap();
        assert!(none.0.is_empty());
        assert_eq!(none.to_string(), "none");
        assert_eq!(none.to_string().parse::<AttackList>().unwrap(), none, "printed as it is parsed");
        let (packets, summary) = generate(&Scenario::with_attacks(42, &none));
        assert!(
            summary.attackers.is_empty() && summary.victims.is_empty() && summary.spoofed_sources == 0,
            "{summary:?}"
        );
        assert!(!packets.is_empty() && !summary.benign.is_empty(), "the benign traffic stays");
    }

    #[test]
    fn beaconing_checks_in_every_four_seconds_within_five_percent() {
        let s = Scenario::with_attacks(42, &"beaconing".parse().unwrap());
        let (p, _) = generate(&s);
        let pk = parsed(&p, s.start_ns);
        let (host, c2) = (ip("10.0.0.77"), ip("203.0.113.9"));
        let syns: Vec<f64> = pk
            .iter()
            .filter(|(_, q)| q.source == host && q.destination == c2 && q.tcp_flags == 0x02)
            .map(|x| x.0)
            .collect();
        assert_eq!(syns.len(), 15);
        assert!(syns[14] < 60.0, "every check-in within the minute: {syns:?}");
        for w in syns.windows(2) {
            let gap = w[1] - w[0];
            assert!((3.8..=4.2).contains(&gap), "check-in gap {gap} s");
        }
        let gaps: Vec<f64> = syns.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().any(|g| (g - 4.0).abs() > 0.01), "the waits are jittered: {gaps:?}");
        // Tiny requests and responses, every session closed.
        let data: Vec<u32> = pk
            .iter()
            .filter(|(_, q)| (q.source == host || q.source == c2) && q.payload_len > 0)
            .map(|(_, q)| q.payload_len)
            .collect();
        assert_eq!(data.len(), 30);
        assert!(data.iter().all(|l| *l < 200), "{data:?}");
        let fins = pk.iter().filter(|(_, q)| q.source == host && q.tcp_flags & 0x01 != 0).count();
        assert_eq!(fins, 15);
    }

    #[test]
    fn brute_force_is_short_sessions_with_small_payloads_a_few_per_second() {
        let s = Scenario::with_attacks(42, &"brute-force".parse().unwrap());
        let (p, _) = generate(&s);
        let pk = parsed(&p, s.start_ns);
        let (attacker, server) = (ip("198.51.100.45"), ip("10.0.1.1"));
        let mine: Vec<_> = pk.iter().filter(|(_, q)| q.source == attacker || q.destination == attacker).collect();
        let syns: Vec<f64> = mine.iter().filter(|(_, q)| q.tcp_flags == 0x02).map(|x| x.0).collect();
        assert_eq!(syns.len(), 120);
        assert!(mine.iter().all(|(_, q)| q.dst_port == 22 || q.src_port == 22));
        let per_sec = (syns.len() - 1) as f64 / (syns[syns.len() - 1] - syns[0]);
        assert!((3.5..4.5).contains(&per_sec), "{per_sec} attempts/s");
        let data: Vec<u32> = mine.iter().filter(|(_, q)| q.payload_len > 0).map(|(_, q)| q.payload_len).collect();
        assert_eq!(data.len(), 4 * 120, "banner, banner, credentials, refusal per attempt");
        assert!(data.iter().all(|l| *l < 120));
        // Every session is ended by the server: RST or FIN.
        let ends = mine.iter().filter(|(_, q)| q.source == server && q.tcp_flags & 0x05 != 0).count();
        assert_eq!(ends, 120);
    }

    #[test]
    fn dns_tunnel_sends_long_random_names_and_gets_large_txt_answers() {
        let s = Scenario::with_attacks(42, &"dns-tunnel".parse().unwrap());
        let (p, _) = generate(&s);
        let (client, resolver) = ([10, 0, 0, 66], [203, 0, 113, 53]);
        let (mut queries, mut answers) = (0, 0);
        for pkt in &p {
            let Ok(sl) = etherparse::SlicedPacket::from_ethernet(&pkt.data) else { panic!("unparseable") };
            let Some(etherparse::NetSlice::Ipv4(v4)) = &sl.net else { continue };
            let (src, dst) = (v4.header().source(), v4.header().destination());
            let Some(etherparse::TransportSlice::Udp(udp)) = &sl.transport else { continue };
            let dns = udp.payload();
            if src == client && dst == resolver {
                queries += 1;
                assert_eq!(udp.destination_port(), 53);
                // The first label is 40-63 base32 characters; the question asks for TXT.
                let len = usize::from(dns[12]);
                assert!((40..=63).contains(&len), "label of {len}");
                assert!(dns[13..13 + len].iter().all(|c| c.is_ascii_lowercase() || (b'2'..=b'7').contains(c)));
                assert_eq!(&dns[dns.len() - 4..], &[0, 16, 0, 1]);
                assert!(dns.len() > 100);
            } else if src == resolver && dst == client {
                answers += 1;
                assert_eq!(&dns[2..4], &[0x81, 0x80]);
                assert!(dns.len() > 300, "TXT answer of {} bytes", dns.len());
            }
        }
        assert_eq!((queries, answers), (600, 600));
    }

    #[test]
    fn slow_exfiltration_is_one_long_low_rate_upload_of_large_segments() {
        let s = Scenario::with_attacks(42, &"slow-exfiltration".parse().unwrap());
        let (p, _) = generate(&s);
        let pk = parsed(&p, s.start_ns);
        let (host, dst) = (ip("10.0.0.88"), ip("203.0.113.80"));
        let up: Vec<_> = pk.iter().filter(|(_, q)| q.source == host && q.destination == dst).collect();
        assert_eq!(up.iter().filter(|(_, q)| q.tcp_flags == 0x02).count(), 1, "one connection");
        let seg: Vec<_> = up.iter().filter(|(_, q)| q.payload_len > 0).collect();
        assert_eq!(seg.len(), 110);
        assert!(seg.iter().all(|(_, q)| (1200..=1400).contains(&q.payload_len)));
        let span = seg[seg.len() - 1].0 - seg[0].0;
        assert!(span > 50.0, "lasts {span} s");
        let bytes: u32 = seg.iter().map(|(_, q)| q.payload_len).sum();
        assert!(f64::from(bytes) / span < 4000.0, "{} B/s is not slow", f64::from(bytes) / span);
    }

    #[test]
    fn bulk_exfiltration_is_two_megabytes_in_one_connection_answered_by_acknowledgements() {
        let s = Scenario::with_attacks(42, &"bulk-exfiltration".parse().unwrap());
        let (p, _) = generate(&s);
        let pk = parsed(&p, s.start_ns);
        let (host, dst) = (ip("10.0.0.89"), ip("203.0.113.81"));
        let up: u32 =
            pk.iter().filter(|(_, q)| q.source == host && q.destination == dst).map(|(_, q)| q.payload_len).sum();
        let back: u32 =
            pk.iter().filter(|(_, q)| q.source == dst && q.destination == host).map(|(_, q)| q.payload_len).sum();
        assert!((1_800_000..=2_100_000).contains(&up), "{up} bytes uploaded");
        assert_eq!(back, 0, "the drop server only acknowledges");
    }

    #[test]
    fn mixed_packets_exact_count() {
        let p = mixed_packets(1, 50_000);
        assert_eq!(p.len(), 50_000);
    }
}
