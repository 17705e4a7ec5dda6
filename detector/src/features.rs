//! The feature definitions, in one place: the per-batch vector that the isolation forest, the supervised
//! forest and the scoring API's explanations use ([`BATCH`]), and the per-host window profile of the k-means
//! detector ([`PROFILE`]). Each table lists, in vector order, every feature's name (as it appears in anomaly
//! contributions and model files) and the scaling the models apply to it. Code reads a coordinate by its name
//! ([`Batch`], [`Profile`]), never by a bare index; adding a feature means adding a variant and a table row
//! (a compile-time check keeps the two in the same order), and model files trained on the old list are
//! refused by their feature-list check.

use std::net::IpAddr;

use netanom_schemas::{Direction, PacketFeatures};

/// How a model sees a feature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    /// `ln(1 + x)` of a count, rate or size (negative values count as 0).
    Log1p,
    /// As it is.
    Identity,
    /// A share in 0..=1, clamped to it.
    Fraction,
    /// Divided by the constant, to bring the value near the others' range.
    Divide(f64),
}

impl Scale {
    /// The model's view of `x`.
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Scale::Log1p => x.max(0.0).ln_1p(),
            Scale::Identity => x,
            Scale::Fraction => x.clamp(0.0, 1.0),
            Scale::Divide(d) => x / d,
        }
    }

    /// Back from the model's view to original units.
    pub fn invert(self, t: f64) -> f64 {
        match self {
            Scale::Log1p => t.exp_m1().max(0.0),
            Scale::Identity => t,
            Scale::Fraction => t.clamp(0.0, 1.0),
            Scale::Divide(d) => t * d,
        }
    }
}

/// One named feature of a vector.
#[derive(Debug, Clone, Copy)]
pub struct Feature<Id> {
    /// Which coordinate it is.
    pub id: Id,
    /// Name in anomaly contributions and model files.
    pub name: &'static str,
    /// Scaling applied before the model sees it.
    pub scale: Scale,
    /// Whether the supervised forest uses it (per-batch features only).
    pub supervised: bool,
    /// What it measures, in original units.
    pub doc: &'static str,
}

/// A coordinate of the per-batch vector ([`BATCH`] gives its name and scaling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// Packets in the batch.
    Packets,
    /// Time from the first to the last packet, ms.
    DurationMs,
    /// Mean wire length, bytes.
    MeanWireLen,
    /// Standard deviation of the wire length, bytes.
    StdWireLen,
    /// Mean payload length, bytes.
    MeanPayloadLen,
    /// Share of TCP SYNs.
    SynFraction,
    /// Share of connection-opening packets.
    NewFlowFraction,
    /// Distinct destination addresses.
    DistinctDestinations,
    /// Distinct destination ports.
    DistinctDstPorts,
    /// Share of TCP.
    TcpFraction,
    /// Share of UDP.
    UdpFraction,
    /// Share of ICMP and ICMPv6.
    IcmpFraction,
    /// Mean packets so far of the packets' flows.
    MeanFlowPackets,
    /// Mean IP TTL / hop limit.
    MeanTtl,
}

impl Batch {
    /// Position in the vector.
    pub const fn i(self) -> usize {
        self as usize
    }
}

const fn batch(id: Batch, name: &'static str, scale: Scale, supervised: bool, doc: &'static str) -> Feature<Batch> {
    Feature { id, name, scale, supervised, doc }
}

/// The per-batch features (one source's packets of one batch, at most ~1 s), in vector order. The supervised
/// forest leaves `mean_ttl` out: the initial TTL says which operating system sent a packet and how many routers
/// it crossed, not how the host behaves; a forest given it learns "this capture's attacker runs Linux two hops
/// away", which holds for no other network.
pub const BATCH: [Feature<Batch>; 14] = [
    batch(Batch::Packets, "packets", Scale::Log1p, true, "packets in the batch"),
    batch(Batch::DurationMs, "duration_ms", Scale::Log1p, true, "first to last packet, ms"),
    batch(Batch::MeanWireLen, "mean_wire_len", Scale::Log1p, true, "mean wire length, bytes"),
    batch(Batch::StdWireLen, "std_wire_len", Scale::Log1p, true, "standard deviation of the wire length, bytes"),
    batch(Batch::MeanPayloadLen, "mean_payload_len", Scale::Log1p, true, "mean payload length, bytes"),
    batch(Batch::SynFraction, "syn_fraction", Scale::Identity, true, "share of TCP SYNs"),
    batch(Batch::NewFlowFraction, "new_flow_fraction", Scale::Identity, true, "share of connection-opening packets"),
    batch(Batch::DistinctDestinations, "distinct_destinations", Scale::Log1p, true, "distinct destination addresses"),
    batch(Batch::DistinctDstPorts, "distinct_dst_ports", Scale::Log1p, true, "distinct destination ports"),
    batch(Batch::TcpFraction, "tcp_fraction", Scale::Identity, true, "share of TCP"),
    batch(Batch::UdpFraction, "udp_fraction", Scale::Identity, true, "share of UDP"),
    batch(Batch::IcmpFraction, "icmp_fraction", Scale::Identity, true, "share of ICMP and ICMPv6"),
    batch(Batch::MeanFlowPackets, "mean_flow_packets", Scale::Log1p, true, "mean packets so far of the packets' flows"),
    batch(Batch::MeanTtl, "mean_ttl", Scale::Divide(64.0), false, "mean IP TTL / hop limit"),
];

/// Number of per-batch features.
pub const FEATURES: usize = BATCH.len();

/// A per-batch vector in original units (see [`BATCH`]).
pub type FeatureVector = [f64; FEATURES];

/// The names of [`BATCH`], in vector order.
pub const FEATURE_NAMES: [&str; FEATURES] = names(&BATCH);

/// Number of per-batch features the supervised forest uses.
pub const SUPERVISED_FEATURES: usize = count_supervised(&BATCH);

/// Positions in the per-batch vector of the features the supervised forest uses, in vector order.
pub const USED_FEATURES: [usize; SUPERVISED_FEATURES] = supervised_positions(&BATCH);

/// A coordinate of the per-host window profile ([`PROFILE`] gives its name and scaling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Packets per second of the window.
    PacketsPerS,
    /// Wire bytes per second.
    BytesPerS,
    /// Connection-opening packets per second.
    NewFlowsPerS,
    /// Distinct destinations contacted as a flow's initiator (estimated).
    DistinctDestinations,
    /// Distinct destination ports contacted as a flow's initiator (estimated).
    DistinctDstPorts,
    /// Share of TCP.
    TcpFraction,
    /// Share of UDP.
    UdpFraction,
    /// Share of ICMP and ICMPv6.
    IcmpFraction,
    /// Share of TCP SYNs.
    SynFraction,
    /// Share of TCP FINs.
    FinFraction,
    /// Share of TCP RSTs.
    RstFraction,
    /// Share of packets answering flows other hosts opened.
    ReplyFraction,
    /// Mean wire length, bytes.
    MeanWireLen,
    /// Standard deviation of the wire length, bytes.
    StdWireLen,
}

impl Profile {
    /// Position in the vector.
    pub const fn i(self) -> usize {
        self as usize
    }
}

const fn profile(id: Profile, name: &'static str, scale: Scale, doc: &'static str) -> Feature<Profile> {
    Feature { id, name, scale, supervised: false, doc }
}

/// The per-host window profile of the k-means detector, in vector order. Rates, counts and sizes enter on a
/// `log1p` scale, shares as they are.
pub const PROFILE: [Feature<Profile>; 14] = [
    profile(Profile::PacketsPerS, "packets_per_s", Scale::Log1p, "packets per second of the window"),
    profile(Profile::BytesPerS, "bytes_per_s", Scale::Log1p, "wire bytes per second"),
    profile(Profile::NewFlowsPerS, "new_flows_per_s", Scale::Log1p, "connection-opening packets per second"),
    profile(Profile::DistinctDestinations, "distinct_destinations", Scale::Log1p, "distinct destinations contacted"),
    profile(Profile::DistinctDstPorts, "distinct_dst_ports", Scale::Log1p, "distinct destination ports contacted"),
    profile(Profile::TcpFraction, "tcp_fraction", Scale::Fraction, "share of TCP"),
    profile(Profile::UdpFraction, "udp_fraction", Scale::Fraction, "share of UDP"),
    profile(Profile::IcmpFraction, "icmp_fraction", Scale::Fraction, "share of ICMP and ICMPv6"),
    profile(Profile::SynFraction, "syn_fraction", Scale::Fraction, "share of TCP SYNs"),
    profile(Profile::FinFraction, "fin_fraction", Scale::Fraction, "share of TCP FINs"),
    profile(Profile::RstFraction, "rst_fraction", Scale::Fraction, "share of TCP RSTs"),
    profile(Profile::ReplyFraction, "reply_fraction", Scale::Fraction, "share answering flows others opened"),
    profile(Profile::MeanWireLen, "mean_wire_len", Scale::Log1p, "mean wire length, bytes"),
    profile(Profile::StdWireLen, "std_wire_len", Scale::Log1p, "standard deviation of the wire length, bytes"),
];

/// Number of profile features.
pub const PROFILE_FEATURES: usize = PROFILE.len();

/// A profile in original units (see [`PROFILE`]).
pub type ProfileVector = [f64; PROFILE_FEATURES];

/// The names of [`PROFILE`], in vector order.
pub const PROFILE_NAMES: [&str; PROFILE_FEATURES] = names(&PROFILE);

const fn names<Id: Copy, const N: usize>(table: &[Feature<Id>; N]) -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = table[i].name;
        i += 1;
    }
    out
}

const fn count_supervised(table: &[Feature<Batch>]) -> usize {
    let (mut n, mut i) = (0, 0);
    while i < table.len() {
        n += table[i].supervised as usize;
        i += 1;
    }
    n
}

const fn supervised_positions<const N: usize>(table: &[Feature<Batch>]) -> [usize; N] {
    let mut out = [0; N];
    let (mut k, mut i) = (0, 0);
    while i < table.len() {
        if table[i].supervised {
            out[k] = i;
            k += 1;
        }
        i += 1;
    }
    out
}

// Every table row sits at its id's position, so `v[Batch::X.i()]` is the feature the table names X.
const _: () = {
    let mut i = 0;
    while i < BATCH.len() {
        assert!(BATCH[i].id.i() == i, "BATCH rows must follow the order of enum Batch");
        i += 1;
    }
    let mut i = 0;
    while i < PROFILE.len() {
        assert!(PROFILE[i].id.i() == i, "PROFILE rows must follow the order of enum Profile");
        i += 1;
    }
};

/// Scratch buffers reused across batches so feature extraction does not allocate.
#[derive(Debug, Default)]
pub struct FeatureScratch {
    destinations: Vec<IpAddr>,
    ports: Vec<u16>,
}

/// The per-batch vector of one batch, in original units. Never NaN or infinite.
pub fn batch_features(packets: &[PacketFeatures], scratch: &mut FeatureScratch) -> FeatureVector {
    features_of(packets.iter(), scratch).0
}

/// True for a packet of the host's own traffic: sent on a flow the host opened (or, for traffic without a
/// flow direction, any packet it sends). A reply (a SYN-ACK or RST of a scanned victim, a server's answer) is
/// traffic the other side caused.
pub fn is_own(p: &PacketFeatures) -> bool {
    p.direction == Direction::Forward
}

/// The per-batch vector of the host's own packets of one batch ([`is_own`]), and how many there are. The
/// isolation forest judges a host by what it starts, so a scanned victim's replies or a server's answers do
/// not make it an outlier: they are the scanner's or the clients' doing.
pub fn own_features(packets: &[PacketFeatures], scratch: &mut FeatureScratch) -> (FeatureVector, usize) {
    features_of(packets.iter().filter(|p| is_own(p)), scratch)
}

fn features_of<'a>(
    packets: impl Iterator<Item = &'a PacketFeatures>,
    scratch: &mut FeatureScratch,
) -> (FeatureVector, usize) {
    let mut v = [0.0; FEATURES];
    scratch.destinations.clear();
    scratch.ports.clear();
    let mut n = 0usize;
    let (mut sum_len, mut sum_len2, mut sum_payload) = (0.0f64, 0.0f64, 0.0f64);
    let (mut syn, mut opens, mut tcp, mut udp, mut icmp) = (0u32, 0u32, 0u32, 0u32, 0u32);
    let (mut sum_flow, mut sum_ttl) = (0.0f64, 0.0f64);
    let (mut t_min, mut t_max) = (i64::MAX, i64::MIN);
    for p in packets {
        n += 1;
        let len = f64::from(p.wire_len);
        sum_len += len;
        sum_len2 += len * len;
        sum_payload += f64::from(p.payload_len);
        syn += u32::from(p.is_syn());
        opens += u32::from(p.opens_flow());
        match p.ip_proto {
            6 => tcp += 1,
            17 => udp += 1,
            1 | 58 => icmp += 1,
            _ => {}
        }
        sum_flow += p.flow_packets as f64;
        sum_ttl += f64::from(p.ttl);
        t_min = t_min.min(p.ts_ns);
        t_max = t_max.max(p.ts_ns);
        scratch.destinations.push(p.destination);
        scratch.ports.push(p.dst_port);
    }
    if n == 0 {
        return (v, 0);
    }
    let nf = n as f64;
    scratch.destinations.sort_unstable();
    scratch.destinations.dedup();
    scratch.ports.sort_unstable();
    scratch.ports.dedup();
    let mean_len = sum_len / nf;
    let mut set = |f: Batch, x: f64| v[f.i()] = if x.is_finite() { x } else { 0.0 };
    set(Batch::Packets, nf);
    set(Batch::DurationMs, t_max.saturating_sub(t_min) as f64 / 1e6);
    set(Batch::MeanWireLen, mean_len);
    set(Batch::StdWireLen, (sum_len2 / nf - mean_len * mean_len).max(0.0).sqrt());
    set(Batch::MeanPayloadLen, sum_payload / nf);
    set(Batch::SynFraction, f64::from(syn) / nf);
    set(Batch::NewFlowFraction, f64::from(opens) / nf);
    set(Batch::DistinctDestinations, scratch.destinations.len() as f64);
    set(Batch::DistinctDstPorts, scratch.ports.len() as f64);
    set(Batch::TcpFraction, f64::from(tcp) / nf);
    set(Batch::UdpFraction, f64::from(udp) / nf);
    set(Batch::IcmpFraction, f64::from(icmp) / nf);
    set(Batch::MeanFlowPackets, sum_flow / nf);
    set(Batch::MeanTtl, sum_ttl / nf);
    (v, n)
}

/// The vector the isolation forest sees: every coordinate scaled as [`BATCH`] says (log1p of counts and sizes,
/// TTL / 64, fractions as they are), which keeps each within about 0..15 so no single feature dominates the
/// random hyperplanes.
pub fn model_input(raw: &FeatureVector) -> FeatureVector {
    let mut m = *raw;
    for (x, f) in m.iter_mut().zip(&BATCH) {
        *x = f.scale.apply(*x);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::scan_batch;

    #[test]
    fn features_of_a_scan_batch() {
        let mut s = FeatureScratch::default();
        let b = scan_batch(0);
        let v = batch_features(&b.packets, &mut s);
        assert_eq!(v[Batch::Packets.i()], b.packets.len() as f64);
        assert_eq!(v[Batch::SynFraction.i()], 1.0, "all SYN");
        assert_eq!(v[Batch::DistinctDstPorts.i()], b.packets.len() as f64, "one port each");
        assert_eq!(v[Batch::DistinctDestinations.i()], 1.0);
        assert!(v.iter().all(|x| x.is_finite()));
        assert_eq!(batch_features(&[], &mut s), [0.0; FEATURES]);
    }

    /// A scanned victim answers a scan with SYN-ACKs and RSTs: replies, not its own traffic, so its own
    /// vector is empty; the scanner's packets are all its own.
    #[test]
    fn replies_are_not_a_hosts_own_traffic() {
        let mut s = FeatureScratch::default();
        let scan = scan_batch(0);
        let replies: Vec<PacketFeatures> = scan
            .packets
            .iter()
            .map(|p| PacketFeatures { direction: Direction::Reverse, flow_packets: 2, ..p.clone() })
            .collect();
        assert_eq!(own_features(&replies, &mut s), ([0.0; FEATURES], 0));
        assert!(batch_features(&replies, &mut s)[Batch::Packets.i()] > 0.0, "all packets count in the batch vector");
        assert_eq!(own_features(&scan.packets, &mut s), (batch_features(&scan.packets, &mut s), scan.packets.len()));
        let mut mixed = scan.packets[..10].to_vec();
        mixed.extend_from_slice(&replies[..30]);
        let (v, n) = own_features(&mixed, &mut s);
        assert_eq!((n, v[Batch::Packets.i()]), (10, 10.0));
    }

    #[test]
    fn tables_name_each_feature_once_and_scale_as_documented() {
        for names in [&FEATURE_NAMES[..], &PROFILE_NAMES[..]] {
            let mut sorted = names.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), names.len(), "{names:?}");
        }
        assert_eq!(USED_FEATURES.to_vec(), (0..FEATURES - 1).collect::<Vec<_>>(), "all but mean_ttl");
        let mut raw = [0.0; FEATURES];
        raw[Batch::MeanTtl.i()] = 128.0;
        raw[Batch::Packets.i()] = std::f64::consts::E - 1.0;
        raw[Batch::TcpFraction.i()] = 0.5;
        let m = model_input(&raw);
        assert_eq!(m[Batch::MeanTtl.i()], 2.0);
        assert!((m[Batch::Packets.i()] - 1.0).abs() < 1e-12);
        assert_eq!(m[Batch::TcpFraction.i()], 0.5);
        for s in [Scale::Log1p, Scale::Identity, Scale::Fraction, Scale::Divide(64.0)] {
            assert!((s.invert(s.apply(0.25)) - 0.25).abs() < 1e-12, "{s:?}");
        }
    }
}
