//! Synthetic traffic for tests, demos and benchmarks: a seeded (ChaCha) generator of benign sessions (TCP with
//! handshake, data and FIN; DNS over UDP; ICMP echo) plus selectable attacks (SYN flood, port scan, spoofed-source
//! SYN flood, host sweep), built with etherparse `PacketBuilder` and written, in timestamp order, as pcap or
//! pcapng (Ethernet link type). Same scenario and seed, same bytes.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufWriter};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
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
    /// Attack packets per second.
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
    /// 60 s, 20 clients, 20 sessions/s and one of each attack: a SYN flood at 10 s, a port scan at 25 s, a
    /// spoofed-source flood at 35 s and a host sweep at 45 s.
    fn default() -> Self {
        Self {
            seed: 42,
            start_ns: 1_700_000_000_000_000_000,
            duration: Duration::from_secs(60),
            benign_hosts: 20,
            sessions_per_sec: 20.0,
            attacks: vec![
                Attack {
                    start: Duration::from_secs(10),
                    rate_pps: 2000.0,
                    kind: AttackKind::SynFlood {
                        attacker: Ipv4Addr::new(203, 0, 113, 66),
                        victim: SERVERS[1],
                        port: 80,
                        packets: 10_000,
                    },
                },
                Attack {
                    start: Duration::from_secs(25),
                    rate_pps: 200.0,
                    kind: AttackKind::PortScan {
                        attacker: Ipv4Addr::new(198, 51, 100, 23),
                        target: SERVERS[2],
                        first_port: 1,
                        last_port: 1024,
                    },
                },
                Attack {
                    start: Duration::from_secs(35),
                    rate_pps: 3000.0,
                    kind: AttackKind::SpoofedSynFlood { victim: SERVERS[3], port: 443, sources: 3000 },
                },
                Attack {
                    start: Duration::from_secs(45),
                    rate_pps: 100.0,
                    kind: AttackKind::HostSweep {
                        attacker: Ipv4Addr::new(198, 51, 100, 77),
                        first: Ipv4Addr::new(10, 0, 2, 1),
                        hosts: 254,
                    },
                },
            ],
        }
    }
}

impl Scenario {
    /// Only benign traffic.
    pub fn benign(seed: u64, duration: Duration) -> Self {
        Self { seed, duration, attacks: Vec::new(), ..Self::default() }
    }
}

/// What a generated capture contains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SynthSummary {
    /// Attacking hosts (spoofed sources are not listed; their victim is).
    pub attackers: Vec<IpAddr>,
    /// Attacked hosts.
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
        let b =
            PacketBuilder::ethernet2(mac(src.0), mac(dst.0)).ipv4(src.0.octets(), dst.0.octets(), 64).udp(src.1, dst.1);
        let payload = vec![0x62u8; payload];
        let mut data = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut data, &payload).expect("writing to a Vec cannot fail");
        self.out.push(SynthPacket { ts_ns: ts, data });
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
        }
    }
    let mut packets = g.out;
    packets.sort_by_key(|p| p.ts_ns);
    let summary = SynthSummary {
        attackers: attackers.into_iter().collect(),
        victims: victims.iter().copied().collect(),
        benign: benign.into_iter().filter(|ip| !victims.contains(ip)).collect(),
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

    #[test]
    fn mixed_packets_exact_count() {
        let p = mixed_packets(1, 50_000);
        assert_eq!(p.len(), 50_000);
    }
}
