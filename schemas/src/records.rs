//! The records carried on netanom's Avro topics, as Rust types. Field meanings are documented in the `.avsc`
//! files; the doc comments here repeat the essentials.

use std::net::IpAddr;

/// Network layer of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Network {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
    /// ARP (addresses are the sender and target protocol addresses).
    Arp,
}

/// Direction of a packet within its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the flow's initiator to its responder.
    Forward,
    /// From the responder back to the initiator.
    Reverse,
}

/// TCP flag bits as carried in [`PacketFeatures::tcp_flags`].
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;
}

/// Features of one packet and of its flow so far. The source address is the batch's.
#[derive(Debug, Clone, PartialEq)]
pub struct PacketFeatures {
    /// Capture timestamp, ns since the Unix epoch.
    pub ts_ns: i64,
    /// Network layer.
    pub network: Network,
    /// Destination address.
    pub destination: IpAddr,
    /// Transport source port, 0 if none.
    pub src_port: u16,
    /// Transport destination port, 0 if none.
    pub dst_port: u16,
    /// IP protocol number of the transport; 0 for ARP.
    pub ip_proto: u8,
    /// Frame length on the wire.
    pub wire_len: u32,
    /// Captured length.
    pub cap_len: u32,
    /// Transport payload length.
    pub payload_len: u32,
    /// TCP flag bits ([`tcp_flags`]).
    pub tcp_flags: u8,
    /// TTL or hop limit.
    pub ttl: u8,
    /// Outermost VLAN id.
    pub vlan: Option<u16>,
    /// ICMP/ICMPv6 type.
    pub icmp_type: Option<u8>,
    /// ICMP/ICMPv6 code.
    pub icmp_code: Option<u8>,
    /// Time since the flow's first packet, ns.
    pub flow_duration_ns: i64,
    /// Packets in the flow so far, both directions, this one included.
    pub flow_packets: u64,
    /// Wire bytes in the flow so far, both directions, this one included.
    pub flow_bytes: u64,
    /// Direction within the flow.
    pub direction: Direction,
    /// ICMP/ICMPv6 echo request and reply only: Shannon entropy, bits, of the differences between consecutive
    /// payload bytes (a ping pad scores under 2, text and encrypted data 3 and more); `None` otherwise.
    pub payload_entropy: Option<f32>,
}

impl PacketFeatures {
    /// True for the packet that opened its flow as seen from the initiator: a new connection attempt.
    pub fn opens_flow(&self) -> bool {
        self.direction == Direction::Forward && self.flow_packets == 1
    }

    /// True for a TCP SYN without ACK.
    pub fn is_syn(&self) -> bool {
        self.ip_proto == 6 && self.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
    }

    /// A one-line summary of the packet from `source`, for alerts: `10.0.0.1:4242 > 10.0.0.2:80 TCP [S] len 60`.
    pub fn summary(&self, source: IpAddr) -> String {
        let proto = match (self.network, self.ip_proto) {
            (Network::Arp, _) => "ARP".to_string(),
            (_, 6) => "TCP".to_string(),
            (_, 17) => "UDP".to_string(),
            (_, 1) => "ICMP".to_string(),
            (_, 58) => "ICMPv6".to_string(),
            (_, p) => format!("proto {p}"),
        };
        let endpoint = |ip: IpAddr, port: u16| match (ip, port) {
            (_, 0) => ip.to_string(),
            (IpAddr::V4(_), p) => format!("{ip}:{p}"),
            (IpAddr::V6(_), p) => format!("[{ip}]:{p}"),
        };
        let mut s =
            format!("{} > {} {proto}", endpoint(source, self.src_port), endpoint(self.destination, self.dst_port));
        if self.ip_proto == 6 {
            const NAMES: [(u8, char); 6] = [
                (tcp_flags::SYN, 'S'),
                (tcp_flags::FIN, 'F'),
                (tcp_flags::RST, 'R'),
                (tcp_flags::PSH, 'P'),
                (tcp_flags::ACK, '.'),
                (tcp_flags::URG, 'U'),
            ];
            let flags: String = NAMES.iter().filter(|(b, _)| self.tcp_flags & b != 0).map(|(_, c)| *c).collect();
            s.push_str(&format!(" [{flags}]"));
        }
        if let (Some(t), Some(c)) = (self.icmp_type, self.icmp_code) {
            s.push_str(&format!(" type {t} code {c}"));
        }
        s.push_str(&format!(" len {}", self.wire_len));
        s
    }
}

/// The packets of one source over a short interval of packet time, in capture order.
#[derive(Debug, Clone, PartialEq)]
pub struct PacketBatch {
    /// Source address of every packet in the batch.
    pub source: IpAddr,
    /// Per-producer sequence number of this source's batches.
    pub sequence: u64,
    /// The packets, in capture order; never empty on the wire.
    pub packets: Vec<PacketFeatures>,
}

/// Which detector produced an anomaly. The declaration order is the order of the Avro enum's symbols (the wire
/// encoding is the position), and each kind's name (`as_str`, `Display`) is its snake-case variant name; both
/// tables are derived, so a new kind needs only its variant here (with its [`Analytic`] in
/// [`AnomalyKind::analytic`]) and its symbol in `anomaly.v1.avsc`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, strum::VariantArray, strum::IntoStaticStr, strum::Display,
)]
#[strum(serialize_all = "snake_case")]
pub enum AnomalyKind {
    /// Packet arrival rate over the last N packets of a host.
    Rate,
    /// Fan-out: distinct destinations or ports contacted in a window (scans, sweeps).
    Fanout,
    /// Extended isolation forest over the host's behaviour in an interval.
    Isolation,
    /// Destination side: many sources converging on one victim (spoofed-source floods, DDoS).
    Victim,
    /// k-means over per-host behaviour profiles: a profile far from every learned centroid.
    Profile,
    /// Supervised random forest trained on labelled traffic.
    Supervised,
    /// Periodic connections from a host to one destination (malware command-and-control beaconing).
    Beacon,
    /// Packets no standard TCP/IP stack sends (stealth scans, OS fingerprinting).
    Probe,
    /// Repeated connection attempts to one login service (password guessing).
    BruteForce,
    /// Sustained long DNS queries (DNS tunnelling, exfiltration).
    DnsTunnel,
    /// ICMP echo requests carrying data unlike ping's pad (a shell or a tunnel in echo traffic).
    IcmpTunnel,
    /// A host sending UDP, ICMP or other non-TCP packets at flood rate.
    Flood,
    /// A bulk upload to one destination, out of proportion to what comes back and to the host's history.
    Exfiltration,
    /// Ensemble of small autoencoders over feature subsets (KitNET): a batch its autoencoders reconstruct badly.
    Autoencoder,
}

impl AnomalyKind {
    /// All kinds, in schema symbol order (derived from the declaration).
    pub const ALL: &'static [AnomalyKind] = <Self as strum::VariantArray>::VARIANTS;

    /// Lower-case name used in alerts, configuration and metrics (`brute_force`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// How the kind's detector decides.
    pub const fn analytic(self) -> Analytic {
        match self {
            AnomalyKind::Isolation | AnomalyKind::Profile | AnomalyKind::Supervised | AnomalyKind::Autoencoder => {
                Analytic::Learning
            }
            AnomalyKind::Beacon => Analytic::Statistical,
            AnomalyKind::Rate
            | AnomalyKind::Fanout
            | AnomalyKind::Victim
            | AnomalyKind::Probe
            | AnomalyKind::BruteForce
            | AnomalyKind::DnsTunnel
            | AnomalyKind::IcmpTunnel
            | AnomalyKind::Flood
            | AnomalyKind::Exfiltration => Analytic::Rule,
        }
    }

    /// Position of the kind's symbol in the Avro enum.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The kind whose Avro symbol is at `index`.
    pub fn from_index(index: usize) -> Option<Self> {
        Self::ALL.get(index).copied()
    }
}

/// How a detector decides, as SIEM formats classify analytics (OCSF `analytic.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Analytic {
    /// A threshold on a count or a rate.
    Rule,
    /// A statistical test (the periodicity of `beacon`).
    Statistical,
    /// A learned model (isolation forest, k-means profiles, supervised forest).
    Learning,
}

/// One feature's part in an anomaly.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Contribution {
    /// Feature name, e.g. `distinct_dst_ports`.
    pub name: String,
    /// Observed value.
    pub value: f64,
    /// The baseline it is compared with, when there is one.
    pub baseline: Option<f64>,
}

/// One detector finding about one host over a window of packet time.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    /// Deterministic id (detector, host, window start).
    pub id: String,
    /// The anomalous address as text.
    pub host: String,
    /// Which detector fired.
    pub kind: AnomalyKind,
    /// Window start, ns.
    pub window_start_ns: i64,
    /// Window end, ns.
    pub window_end_ns: i64,
    /// Score.
    pub score: f64,
    /// Threshold exceeded.
    pub threshold: f64,
    /// The victim, when known.
    pub target: Option<String>,
    /// A sentence a person understands.
    pub reason: String,
    /// Features that made it anomalous, strongest first.
    pub features: Vec<Contribution>,
    /// Summary of a triggering packet.
    pub sample: String,
    /// Model or rule-set version.
    pub model_version: String,
    /// Packet time of the packet that took the score over the threshold, ns; `None`: `window_end_ns`.
    pub detected_ns: Option<i64>,
    /// The detector window this anomaly reports on, when a detector reports one window more than once (a
    /// victim: destination and window start); `None` when the anomaly stands alone.
    pub window_key: Option<String>,
    /// With `window_key`: the window's closing report, whose times and figures replace those of the window's
    /// earlier reports.
    pub closing: bool,
}

impl Anomaly {
    /// Packet time of the packet that took the score over the threshold: `detected_ns`, else `window_end_ns`.
    pub fn detected_at_ns(&self) -> i64 {
        self.detected_ns.unwrap_or(self.window_end_ns)
    }
}

/// One packets partition's view of one destination in one packet-time window, cumulative: a later record of the
/// same (destination, window, origin partition) supersedes an earlier one, so applying one twice, or out of
/// order, changes nothing (readers keep the highest counts and sum over origin partitions).
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationStats {
    /// The destination.
    pub destination: IpAddr,
    /// Window start, ns (a multiple of `window_ns`).
    pub window_start_ns: i64,
    /// Window length, ns.
    pub window_ns: i64,
    /// Distinct sources of the origin partition seen so far.
    pub sources: u64,
    /// Packets of the origin partition so far.
    pub packets: u64,
    /// TCP SYN-without-ACK packets among them.
    pub syn_packets: u64,
    /// Up to 8 of the sources.
    pub sample_sources: Vec<IpAddr>,
    /// Latest packet time counted, ns.
    pub last_ts_ns: i64,
    /// The packets-topic partition whose packets are counted (-1: unknown).
    pub origin_partition: i32,
    /// Bytes on the wire of the origin partition's packets so far (0 in records written before the field).
    pub bytes: u64,
    /// Packet time of the earliest packet from a source matching a flood's profile, ns; `None` when no source
    /// matches (or the record predates the field).
    pub first_evidence_ns: Option<i64>,
    /// Packet time of the latest packet from a source matching a flood's profile, ns; `None` as above.
    pub last_evidence_ns: Option<i64>,
    /// Packets among `packets` from sources the origin could not remember (its table was full): `sources` is
    /// then a lower bound (0 in records written before the field).
    pub unlisted_packets: u64,
    /// Packet time of the first packet of each of the origin's earliest remembered sources, ascending, at most
    /// `detector.victim.min_sources` of them (empty in records written before the field).
    pub first_packet_ns: Vec<i64>,
}

impl DestinationStats {
    /// The record's deterministic id, `{destination}/{window_start_ns}/{origin_partition}/{packets}`: the same
    /// counts of the same packets give the same id, whichever detector (re)computes them.
    pub fn id(&self) -> String {
        format!("{}/{}/{}/{}", self.destination, self.window_start_ns, self.origin_partition, self.packets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anomaly_kinds_follow_the_avro_symbols_and_name_themselves_in_snake_case() {
        let schema: serde_json::Value = serde_json::from_str(include_str!("../avro/anomaly.v1.avsc")).unwrap();
        let kind = schema["fields"].as_array().unwrap().iter().find(|f| f["name"] == "kind").unwrap();
        let names: Vec<String> = AnomalyKind::ALL.iter().map(|k| k.as_str().to_uppercase()).collect();
        assert_eq!(kind["type"]["symbols"], serde_json::json!(names));
        for (i, k) in AnomalyKind::ALL.iter().enumerate() {
            assert_eq!((k.index(), AnomalyKind::from_index(i)), (i, Some(*k)));
            assert_eq!(k.to_string(), k.as_str());
        }
        assert_eq!(AnomalyKind::from_index(AnomalyKind::ALL.len()), None);
        assert_eq!(AnomalyKind::BruteForce.as_str(), "brute_force");
        assert_eq!(AnomalyKind::DnsTunnel.to_string(), "dns_tunnel");
    }
}
