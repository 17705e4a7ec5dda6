//! Packet parsing: turns one captured frame (link type + bytes) into the addresses, ports and header fields the
//! features need ([`Parsed`]), or a typed [`Skip`] reason. Parsing is lax (etherparse `LaxSlicedPacket`) so
//! frames cut by the snaplen still yield their headers, and lengths come from the IP length fields. This module
//! knows nothing about flows, batches or Kafka, allocates nothing and never panics on any input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::err::Layer;
use etherparse::err::ip::LaxHeaderSliceError;
use etherparse::err::packet::SliceError;
use etherparse::{EtherType, LaxLinkExtSlice, LaxNetSlice, LaxSlicedPacket, LenSource};
use netanom_schemas::Network;

/// The link-layer header types (tcpdump.org `LINKTYPE_*` values) the parser understands.
pub mod linktype {
    /// BSD loopback: 4-byte address family in the capturing host's byte order.
    pub const NULL: u32 = 0;
    /// Ethernet II, with optional 802.1Q / QinQ tags.
    pub const ETHERNET: u32 = 1;
    /// Raw IP, `DLT_RAW` as numbered on most BSDs.
    pub const RAW_BSD: u32 = 12;
    /// Raw IP, `DLT_RAW` as numbered on OpenBSD.
    pub const RAW_OPENBSD: u32 = 14;
    /// Raw IP (`LINKTYPE_RAW`).
    pub const RAW: u32 = 101;
    /// OpenBSD loopback: 4-byte address family in network byte order.
    pub const LOOP: u32 = 108;
    /// Linux "cooked" capture v1 (16-byte header).
    pub const LINUX_SLL: u32 = 113;
    /// Raw IPv4.
    pub const IPV4: u32 = 228;
    /// Raw IPv6.
    pub const IPV6: u32 = 229;
    /// Linux "cooked" capture v2 (20-byte header).
    pub const LINUX_SLL2: u32 = 276;
}

/// Why a frame cannot be turned into packet features. Every read frame is either parsed or skipped for exactly
/// one of these reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    /// The capture's link-layer type is not one the parser understands.
    UnsupportedLinkType,
    /// The frame ends before the link, network or transport header it announces.
    Truncated,
    /// The frame carries neither IPv4, IPv6 nor ARP (e.g. LLDP, STP, an unknown loopback family).
    NotIp,
    /// The IP header (or an IPv6 extension header) is malformed.
    MalformedIp,
    /// The TCP header is malformed (data offset below 5 words).
    MalformedTransport,
    /// ARP for a protocol other than IPv4/IPv6.
    UnsupportedArp,
    /// The capture's BPF filter rejected the frame (file input: the filter runs in the reader).
    Filtered,
    /// A capture-file record whose length is known but whose content is malformed (e.g. a pcapng block with a
    /// bad header or options): skipped whole, reading resumes at the next record.
    CorruptRecord,
    /// A record larger than the reader buffers ([`crate::file::MAX_RECORD`]) whose length the format gives
    /// (pcapng): skipped without being buffered.
    OversizeRecord,
    /// A pcapng packet naming an interface no Interface Description Block has declared (yet).
    UnknownInterface,
}

impl Skip {
    /// Every reason, in declaration order.
    pub const ALL: [Skip; 10] = [
        Skip::UnsupportedLinkType,
        Skip::Truncated,
        Skip::NotIp,
        Skip::MalformedIp,
        Skip::MalformedTransport,
        Skip::UnsupportedArp,
        Skip::Filtered,
        Skip::CorruptRecord,
        Skip::OversizeRecord,
        Skip::UnknownInterface,
    ];

    /// Stable lower-case name used in reports, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::UnsupportedLinkType => "unsupported_link_type",
            Skip::Truncated => "truncated",
            Skip::NotIp => "not_ip",
            Skip::MalformedIp => "malformed_ip",
            Skip::MalformedTransport => "malformed_transport",
            Skip::UnsupportedArp => "unsupported_arp",
            Skip::Filtered => "filtered",
            Skip::CorruptRecord => "corrupt_record",
            Skip::OversizeRecord => "oversize_record",
            Skip::UnknownInterface => "unknown_interface",
        }
    }
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The header fields of one packet, before flow state is added.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Parsed {
    /// Source address (ARP: sender protocol address).
    pub source: IpAddr,
    /// Destination address (ARP: target protocol address).
    pub destination: IpAddr,
    /// Network layer.
    pub network: Network,
    /// TCP/UDP source port, 0 if none.
    pub src_port: u16,
    /// TCP/UDP destination port, 0 if none.
    pub dst_port: u16,
    /// IP protocol of the transport (after IPv6 extension headers); 0 for ARP.
    pub ip_proto: u8,
    /// Transport payload length from the IP length fields.
    pub payload_len: u32,
    /// TCP flag bits, 0 when not TCP.
    pub tcp_flags: u8,
    /// TTL / hop limit, 0 for ARP.
    pub ttl: u8,
    /// Outermost VLAN id.
    pub vlan: Option<u16>,
    /// ICMP/ICMPv6 type.
    pub icmp_type: Option<u8>,
    /// ICMP/ICMPv6 code.
    pub icmp_code: Option<u8>,
    /// ICMP/ICMPv6 echo request or reply: [`payload_entropy`] of its captured payload.
    pub payload_entropy: Option<f32>,
}

/// Parses one frame of link type `link_type`. `wire_len` is the frame's length on the wire (used to recover
/// lengths the capture cut off).
pub fn parse(link_type: u32, data: &[u8], wire_len: u32) -> Result<Parsed, Skip> {
    let cut = wire_len.saturating_sub(data.len() as u32);
    match link_type {
        linktype::ETHERNET => {
            let sliced = LaxSlicedPacket::from_ethernet(data).map_err(|_| Skip::Truncated)?;
            from_sliced(&sliced, cut)
        }
        linktype::LINUX_SLL => cooked(data, 16, 14, cut),
        linktype::LINUX_SLL2 => cooked(data, 20, 0, cut),
        linktype::RAW | linktype::RAW_BSD | linktype::RAW_OPENBSD => raw_ip(data, None, cut),
        linktype::IPV4 => raw_ip(data, Some(4), cut),
        linktype::IPV6 => raw_ip(data, Some(6), cut),
        linktype::NULL | linktype::LOOP => {
            let Some(family) = data.get(..4) else { return Err(Skip::Truncated) };
            let family: [u8; 4] = [family[0], family[1], family[2], family[3]];
            let value = if link_type == linktype::LOOP {
                u32::from_be_bytes(family)
            } else {
                // Host order of the capturing machine, which may not be ours: accept either reading.
                let le = u32::from_le_bytes(family);
                if le <= 0xffff { le } else { u32::from_be_bytes(family) }
            };
            let version = match value {
                2 => 4,
                10 | 24 | 28 | 30 => 6,
                _ => return Err(Skip::NotIp),
            };
            raw_ip(&data[4..], Some(version), cut)
        }
        _ => Err(Skip::UnsupportedLinkType),
    }
}

/// Linux cooked captures: a fixed header with the EtherType at `proto_at`, the payload at `header_len`.
fn cooked(data: &[u8], header_len: usize, proto_at: usize, cut: u32) -> Result<Parsed, Skip> {
    if data.len() < header_len {
        return Err(Skip::Truncated);
    }
    let proto = u16::from_be_bytes([data[proto_at], data[proto_at + 1]]);
    if proto < 0x0600 {
        // 802.3 length / Linux pseudo protocols (802.2 LLC, CAN, ...).
        return Err(Skip::NotIp);
    }
    let sliced = LaxSlicedPacket::from_ether_type(EtherType(proto), &data[header_len..]);
    from_sliced(&sliced, cut)
}

fn raw_ip(data: &[u8], version: Option<u8>, cut: u32) -> Result<Parsed, Skip> {
    let Some(first) = data.first() else { return Err(Skip::Truncated) };
    if let Some(v) = version {
        if first >> 4 != v {
            return Err(Skip::MalformedIp);
        }
    }
    match LaxSlicedPacket::from_ip(data) {
        Ok(sliced) => from_sliced(&sliced, cut),
        Err(LaxHeaderSliceError::Len(_)) => Err(Skip::Truncated),
        Err(LaxHeaderSliceError::Content(_)) => Err(Skip::MalformedIp),
    }
}

fn outer_vlan(sliced: &LaxSlicedPacket<'_>) -> Option<u16> {
    sliced.link_exts.iter().find_map(|ext| match ext {
        LaxLinkExtSlice::Vlan(v) => Some(v.vlan_identifier().value()),
        _ => None,
    })
}

fn from_sliced(sliced: &LaxSlicedPacket<'_>, cut: u32) -> Result<Parsed, Skip> {
    let vlan = outer_vlan(sliced);
    let Some(net) = &sliced.net else {
        return Err(match &sliced.stop_err {
            Some((SliceError::Len(_), _)) => Skip::Truncated,
            Some(_) => Skip::MalformedIp,
            None => Skip::NotIp,
        });
    };
    let (source, destination, network, ttl, payload, ip_payload_len, first_fragment) = match net {
        LaxNetSlice::Ipv4(ip) => {
            let h = ip.header();
            let payload = ip.payload();
            let header_len = u32::from(h.ihl()) * 4;
            let len = if payload.len_source == LenSource::Ipv4HeaderTotalLen {
                u32::from(h.total_len()).saturating_sub(header_len.saturating_add(extensions_len(ip)))
            } else {
                (payload.payload.len() as u32).saturating_add(cut)
            };
            let first = h.fragments_offset().value() == 0;
            (IpAddr::V4(h.source_addr()), IpAddr::V4(h.destination_addr()), Network::Ipv4, h.ttl(), payload, len, first)
        }
        LaxNetSlice::Ipv6(ip) => {
            if ipv6_extensions_malformed(sliced) {
                return Err(Skip::MalformedIp);
            }
            let h = ip.header();
            let payload = ip.payload();
            let exts = ip.extensions().slice().len() as u32;
            let len = if payload.len_source == LenSource::Ipv6HeaderPayloadLen {
                u32::from(h.payload_length()).saturating_sub(exts)
            } else {
                (payload.payload.len() as u32).saturating_add(cut)
            };
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                Network::Ipv6,
                h.hop_limit(),
                payload,
                len,
                !payload.fragmented,
            )
        }
        LaxNetSlice::Arp(arp) => {
            let (src, dst) = (arp.sender_protocol_addr(), arp.target_protocol_addr());
            let (source, destination) = match (src.len(), dst.len()) {
                (4, 4) => (
                    IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3])),
                    IpAddr::V4(Ipv4Addr::new(dst[0], dst[1], dst[2], dst[3])),
                ),
                (16, 16) => {
                    let mut a = [0u8; 16];
                    let mut b = [0u8; 16];
                    a.copy_from_slice(src);
                    b.copy_from_slice(dst);
                    (IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b)))
                }
                _ => return Err(Skip::UnsupportedArp),
            };
            return Ok(Parsed {
                source,
                destination,
                network: Network::Arp,
                src_port: 0,
                dst_port: 0,
                ip_proto: 0,
                payload_len: 0,
                tcp_flags: 0,
                ttl: 0,
                vlan,
                icmp_type: None,
                icmp_code: None,
                payload_entropy: None,
            });
        }
    };
    let ip_proto = payload.ip_number.0;
    let mut parsed = Parsed {
        source,
        destination,
        network,
        src_port: 0,
        dst_port: 0,
        ip_proto,
        payload_len: ip_payload_len,
        tcp_flags: 0,
        ttl,
        vlan,
        icmp_type: None,
        icmp_code: None,
        payload_entropy: None,
    };
    if first_fragment {
        transport(payload.payload, &mut parsed)?;
    }
    Ok(parsed)
}

/// An IPv6 extension header is invalid, or runs past the IPv6 payload length. (One that runs past the captured
/// bytes of a frame cut by the snap length is not malformed: the headers before it are kept.)
fn ipv6_extensions_malformed(sliced: &LaxSlicedPacket<'_>) -> bool {
    match &sliced.stop_err {
        Some((SliceError::Ipv6Exts(_), _)) => true,
        Some((SliceError::Len(e), _)) => {
            matches!(
                e.layer,
                Layer::Ipv6ExtHeader
                    | Layer::Ipv6HopByHopHeader
                    | Layer::Ipv6DestOptionsHeader
                    | Layer::Ipv6RouteHeader
                    | Layer::Ipv6FragHeader
            ) && e.len_source == LenSource::Ipv6HeaderPayloadLen
        }
        _ => false,
    }
}

/// Length of IPv4 extension headers (authentication header) between the IPv4 header and `payload`.
fn extensions_len(ip: &etherparse::LaxIpv4Slice<'_>) -> u32 {
    ip.extensions().auth.map_or(0, |a| a.slice().len() as u32)
}

/// Shannon entropy, in bits (0 to 8), of the differences between consecutive bytes of `payload` (mod 256):
/// what an echo payload carries, summarised without keeping any of it. A counting pad (Linux and BSD ping:
/// 0x10, 0x11, …) or a repeating alphabet (Windows ping) has nearly one difference and scores under 2; text,
/// compressed or encrypted data score 3 and more. `None` for fewer than 2 bytes. The bytes are only read here.
pub fn payload_entropy(payload: &[u8]) -> Option<f32> {
    if payload.len() < 2 {
        return None;
    }
    let mut counts = [0u32; 256];
    for w in payload.windows(2) {
        counts[usize::from(w[1].wrapping_sub(w[0]))] += 1;
    }
    let n = (payload.len() - 1) as f64;
    let bits: f64 = counts.iter().filter(|&&c| c > 0).map(|&c| f64::from(c) / n).map(|q| -q * q.log2()).sum();
    Some(bits.max(0.0) as f32)
}

/// Reads the transport header fields from the (possibly truncated) IP payload.
fn transport(bytes: &[u8], p: &mut Parsed) -> Result<(), Skip> {
    match p.ip_proto {
        6 => {
            if bytes.len() < 14 {
                return Err(Skip::Truncated);
            }
            let header_len = u32::from(bytes[12] >> 4) * 4;
            if header_len < 20 {
                return Err(Skip::MalformedTransport);
            }
            p.src_port = u16::from_be_bytes([bytes[0], bytes[1]]);
            p.dst_port = u16::from_be_bytes([bytes[2], bytes[3]]);
            p.tcp_flags = bytes[13];
            p.payload_len = p.payload_len.saturating_sub(header_len);
        }
        17 | 136 => {
            // UDP and UDP-Lite: ports are enough.
            if bytes.len() < 4 {
                return Err(Skip::Truncated);
            }
            p.src_port = u16::from_be_bytes([bytes[0], bytes[1]]);
            p.dst_port = u16::from_be_bytes([bytes[2], bytes[3]]);
            p.payload_len = p.payload_len.saturating_sub(8);
        }
        1 | 58 => {
            if bytes.len() < 2 {
                return Err(Skip::Truncated);
            }
            p.icmp_type = Some(bytes[0]);
            p.icmp_code = Some(bytes[1]);
            p.payload_len = p.payload_len.saturating_sub(8);
            let echo = if p.ip_proto == 1 { matches!(bytes[0], 0 | 8) } else { matches!(bytes[0], 128 | 129) };
            if echo {
                p.payload_entropy = bytes.get(8..).and_then(payload_entropy);
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, TcpOptionElement};
    use netanom_schemas::records::tcp_flags;
    use proptest::prelude::*;

    const ETHERTYPE_IPV4: u16 = 0x0800;
    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn tcp_syn_ipv4() -> Vec<u8> {
        let b =
            PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).tcp(4242, 80, 7, 1000).syn();
        let mut out = Vec::new();
        b.write(&mut out, &[]).unwrap();
        out
    }

    /// The IPv4 packet of an Ethernet frame with `payload` bytes of TCP data.
    fn ipv4_tcp(payload: usize) -> Vec<u8> {
        let b = PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).tcp(4242, 80, 7, 1000).ack(9).psh();
        let mut out = Vec::new();
        b.write(&mut out, &vec![0xab; payload]).unwrap();
        out
    }

    #[test]
    fn ethernet_ipv4_tcp_syn() {
        let frame = tcp_syn_ipv4();
        let p = parse(linktype::ETHERNET, &frame, frame.len() as u32).unwrap();
        assert_eq!(p.source, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(p.destination, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!((p.src_port, p.dst_port, p.ip_proto, p.ttl), (4242, 80, 6, 64));
        assert_eq!(p.tcp_flags, tcp_flags::SYN);
        assert_eq!(p.payload_len, 0);
        assert_eq!(p.network, Network::Ipv4);
        assert_eq!(p.vlan, None);
    }

    #[test]
    fn ethernet_tcp_with_options_payload_len_excludes_options() {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1, 2, 3, 4)
            .options(&[TcpOptionElement::MaximumSegmentSize(1460), TcpOptionElement::Noop, TcpOptionElement::Noop])
            .unwrap();
        let mut out = Vec::new();
        b.write(&mut out, &[1, 2, 3, 4, 5]).unwrap();
        let p = parse(linktype::ETHERNET, &out, out.len() as u32).unwrap();
        assert_eq!(p.payload_len, 5);
    }

    #[test]
    fn vlan_and_qinq_record_outermost_id() {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .single_vlan(42.try_into().unwrap())
            .ipv4([1, 1, 1, 1], [2, 2, 2, 2], 9)
            .udp(53, 5353);
        let mut out = Vec::new();
        b.write(&mut out, &[0; 11]).unwrap();
        let p = parse(linktype::ETHERNET, &out, out.len() as u32).unwrap();
        assert_eq!(p.vlan, Some(42));
        assert_eq!((p.src_port, p.dst_port, p.ip_proto, p.payload_len), (53, 5353, 17, 11));

        let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .double_vlan(100.try_into().unwrap(), 200.try_into().unwrap())
            .ipv4([1, 1, 1, 1], [2, 2, 2, 2], 9)
            .udp(53, 5353);
        let mut out = Vec::new();
        b.write(&mut out, &[0; 3]).unwrap();
        let p = parse(linktype::ETHERNET, &out, out.len() as u32).unwrap();
        assert_eq!(p.vlan, Some(100));
        assert_eq!(p.payload_len, 3);
    }

    #[test]
    fn linux_sll_and_sll2() {
        let ip = ipv4_tcp(10);
        let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0];
        sll.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        sll.extend_from_slice(&ip);
        let p = parse(linktype::LINUX_SLL, &sll, sll.len() as u32).unwrap();
        assert_eq!((p.src_port, p.dst_port, p.payload_len), (4242, 80, 10));

        let mut sll2 = ETHERTYPE_IPV4.to_be_bytes().to_vec();
        sll2.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0]);
        assert_eq!(sll2.len(), 20);
        sll2.extend_from_slice(&ip);
        let p2 = parse(linktype::LINUX_SLL2, &sll2, sll2.len() as u32).unwrap();
        assert_eq!(p, p2);

        // A cooked frame whose protocol is 802.2 LLC is not IP; a short one is truncated.
        let mut llc = sll.clone();
        llc[14..16].copy_from_slice(&4u16.to_be_bytes());
        assert_eq!(parse(linktype::LINUX_SLL, &llc, llc.len() as u32), Err(Skip::NotIp));
        assert_eq!(parse(linktype::LINUX_SLL2, &sll2[..19], 19), Err(Skip::Truncated));
    }

    #[test]
    fn raw_ip_link_types() {
        let ip = ipv4_tcp(3);
        for lt in [linktype::RAW, linktype::RAW_BSD, linktype::RAW_OPENBSD, linktype::IPV4] {
            let p = parse(lt, &ip, ip.len() as u32).unwrap();
            assert_eq!((p.src_port, p.payload_len), (4242, 3), "link type {lt}");
        }
        assert_eq!(parse(linktype::IPV6, &ip, ip.len() as u32), Err(Skip::MalformedIp));
        let v6 = ipv6_udp();
        assert_eq!(parse(linktype::IPV6, &v6, v6.len() as u32).unwrap().network, Network::Ipv6);
        assert_eq!(parse(linktype::RAW, &v6, v6.len() as u32).unwrap().network, Network::Ipv6);
    }

    fn ipv6_udp() -> Vec<u8> {
        let b = PacketBuilder::ipv6([0xfe; 16], [0x20; 16], 33).udp(1000, 53);
        let mut out = Vec::new();
        b.write(&mut out, &[7; 20]).unwrap();
        out
    }

    #[test]
    fn loopback_null_both_byte_orders_and_loop() {
        let ip = ipv4_tcp(0);
        for family in [2u32.to_le_bytes(), 2u32.to_be_bytes()] {
            let mut f = family.to_vec();
            f.extend_from_slice(&ip);
            assert_eq!(parse(linktype::NULL, &f, f.len() as u32).unwrap().dst_port, 80);
        }
        let v6 = ipv6_udp();
        for family in [10u32, 24, 28, 30] {
            let mut f = family.to_be_bytes().to_vec();
            f.extend_from_slice(&v6);
            assert_eq!(parse(linktype::LOOP, &f, f.len() as u32).unwrap().network, Network::Ipv6);
        }
        let mut f = 7u32.to_be_bytes().to_vec();
        f.extend_from_slice(&ip);
        assert_eq!(parse(linktype::LOOP, &f, f.len() as u32), Err(Skip::NotIp));
        assert_eq!(parse(linktype::NULL, &[2, 0], 2), Err(Skip::Truncated));
    }

    #[test]
    fn ipv6_extension_headers_are_walked() {
        // Hop-by-hop (8 bytes) then a destination-options header (8 bytes) before TCP.
        let tcp = {
            let b = PacketBuilder::ipv4([0; 4], [0; 4], 1).tcp(5555, 443, 1, 1).syn();
            let mut v = Vec::new();
            b.write(&mut v, &[9; 6]).unwrap();
            v[20..].to_vec()
        };
        let mut pkt = vec![0x60, 0, 0, 0];
        let payload_len = (16 + tcp.len()) as u16;
        pkt.extend_from_slice(&payload_len.to_be_bytes());
        pkt.push(0); // next header: hop-by-hop
        pkt.push(17); // hop limit
        pkt.extend_from_slice(&[0x11; 16]);
        pkt.extend_from_slice(&[0x22; 16]);
        pkt.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop -> dest opts
        pkt.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]); // dest opts -> TCP
        pkt.extend_from_slice(&tcp);
        let p = parse(linktype::RAW, &pkt, pkt.len() as u32).unwrap();
        assert_eq!((p.ip_proto, p.src_port, p.dst_port, p.ttl), (6, 5555, 443, 17));
        assert_eq!(p.tcp_flags, tcp_flags::SYN);
        assert_eq!(p.payload_len, 6);
    }

    #[test]
    fn icmp_and_icmpv6() {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4([10, 0, 0, 1], [10, 0, 0, 9], 64).icmpv4_echo_request(1, 2);
        let mut out = Vec::new();
        b.write(&mut out, &[0; 32]).unwrap();
        let p = parse(linktype::ETHERNET, &out, out.len() as u32).unwrap();
        assert_eq!((p.ip_proto, p.icmp_type, p.icmp_code, p.payload_len), (1, Some(8), Some(0), 32));

        let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6([1; 16], [2; 16], 255).icmpv6_echo_reply(1, 2);
        let mut out = Vec::new();
        b.write(&mut out, &[0; 4]).unwrap();
        let p = parse(linktype::ETHERNET, &out, out.len() as u32).unwrap();
        assert_eq!((p.ip_proto, p.icmp_type, p.icmp_code, p.payload_len), (58, Some(129), Some(0), 4));
        assert_eq!(p.network, Network::Ipv6);
    }

    /// Echo payloads are summarised by the entropy of their byte differences: ping's pads score low, a shell
    /// session's text and random bytes high; other ICMP messages and other protocols carry none.
    #[test]
    fn echo_payloads_get_an_entropy_summary() {
        let echo = |payload: &[u8], request: bool| {
            let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4([10, 0, 0, 1], [10, 0, 0, 9], 64);
            let b = if request { b.icmpv4_echo_request(1, 2) } else { b.icmpv4_echo_reply(1, 2) };
            let mut out = Vec::new();
            b.write(&mut out, payload).unwrap();
            parse(linktype::ETHERNET, &out, out.len() as u32).unwrap().payload_entropy
        };
        // Linux ping: 8 bytes of timestamp, then 0x10, 0x11, ... 0x37.
        let mut linux: Vec<u8> = vec![0x5f, 0x3a, 0x91, 0x0c, 0x00, 0x00, 0x00, 0x00];
        linux.extend(0x10u8..0x38);
        let windows = b"abcdefghijklmnopqrstuvwabcdefghi";
        let shell = b"uid=0(root) gid=0(root) groups=0(root)\n/root\nLinux victim 6.1.0 x86_64 GNU/Linux\n";
        let mut x = 0x2545_f491u32;
        let random: Vec<u8> = (0..200)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            })
            .collect();
        assert!(echo(&linux, true).unwrap() < 2.0, "{:?}", echo(&linux, true));
        assert!(echo(windows, false).unwrap() < 2.0, "{:?}", echo(windows, false));
        assert!(echo(shell, true).unwrap() > 3.0, "{:?}", echo(shell, true));
        assert!(echo(&random, true).unwrap() > 6.0, "{:?}", echo(&random, true));
        assert_eq!(echo(&[0; 32], true), Some(0.0));
        assert_eq!(echo(&[7], true), None);
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4([10, 0, 0, 1], [10, 0, 0, 9], 64).udp(5353, 53);
        let mut out = Vec::new();
        b.write(&mut out, shell).unwrap();
        assert_eq!(parse(linktype::ETHERNET, &out, out.len() as u32).unwrap().payload_entropy, None);
    }

    #[test]
    fn arp_uses_protocol_addresses() {
        let arp = etherparse::ArpPacket::new(
            etherparse::ArpHardwareId::ETHERNET,
            EtherType::IPV4,
            etherparse::ArpOperation::REQUEST,
            &MAC_A,
            &[192, 168, 0, 1],
            &[0; 6],
            &[192, 168, 0, 77],
        )
        .unwrap();
        let b = PacketBuilder::ethernet2(MAC_A, [0xff; 6]).arp(arp);
        let mut out = Vec::new();
        b.write(&mut out).unwrap();
        let p = parse(linktype::ETHERNET, &out, out.len() as u32).unwrap();
        assert_eq!(p.network, Network::Arp);
        assert_eq!(p.source, "192.168.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(p.destination, "192.168.0.77".parse::<IpAddr>().unwrap());
        assert_eq!((p.ip_proto, p.ttl, p.src_port), (0, 0, 0));
    }

    #[test]
    fn snaplen_truncated_frame_keeps_headers_and_exact_payload_len() {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).tcp(1, 2, 3, 4).ack(1);
        let mut out = Vec::new();
        b.write(&mut out, &[0x55; 1400]).unwrap();
        let wire = out.len() as u32;
        let cut = &out[..54];
        let p = parse(linktype::ETHERNET, cut, wire).unwrap();
        assert_eq!((p.src_port, p.dst_port, p.payload_len), (1, 2, 1400));
        // Cut inside the TCP header: truncated, not a panic.
        assert_eq!(parse(linktype::ETHERNET, &out[..40], wire), Err(Skip::Truncated));
        // Cut inside the IP header.
        assert_eq!(parse(linktype::ETHERNET, &out[..20], wire), Err(Skip::Truncated));
        assert_eq!(parse(linktype::ETHERNET, &out[..5], wire), Err(Skip::Truncated));
    }

    #[test]
    fn non_ip_garbage_and_unknown_link_types_are_skipped() {
        let mut lldp = vec![0u8; 60];
        lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
        assert_eq!(parse(linktype::ETHERNET, &lldp, 60), Err(Skip::NotIp));
        let mut bad_ip = tcp_syn_ipv4();
        bad_ip[14] = 0x42; // version 4, IHL 2 words: malformed
        assert_eq!(parse(linktype::ETHERNET, &bad_ip, 60), Err(Skip::MalformedIp));
        let mut bad_tcp = tcp_syn_ipv4();
        bad_tcp[14 + 20 + 12] = 0x20; // data offset 2 words
        assert_eq!(parse(linktype::ETHERNET, &bad_tcp, 60), Err(Skip::MalformedTransport));
        assert_eq!(parse(147, &tcp_syn_ipv4(), 60), Err(Skip::UnsupportedLinkType));
        assert_eq!(parse(linktype::RAW, &[], 0), Err(Skip::Truncated));
        assert_eq!(parse(linktype::RAW, &[0xff; 40], 40), Err(Skip::MalformedIp));
    }

    #[test]
    fn later_ipv4_fragments_have_no_ports() {
        let mut ip = ipv4_tcp(40);
        ip[6] = 0x00;
        ip[7] = 0x10; // fragment offset 16 * 8 bytes
        // Header checksum is not verified by the lax parser.
        let p = parse(linktype::RAW, &ip, ip.len() as u32).unwrap();
        assert_eq!((p.src_port, p.dst_port, p.tcp_flags, p.ip_proto), (0, 0, 0, 6));
    }

    #[test]
    fn skip_names_are_distinct_and_lower_case() {
        let names: std::collections::BTreeSet<_> = Skip::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names.len(), Skip::ALL.len());
        assert!(names.iter().all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn random_bytes_never_panic(
            lt in prop::sample::select(vec![0u32, 1, 12, 14, 101, 108, 113, 228, 229, 276, 999]),
            data in prop::collection::vec(any::<u8>(), 0..200),
            extra in 0u32..2000,
        ) {
            let _ = parse(lt, &data, data.len() as u32 + extra);
        }

        #[test]
        fn mutated_valid_frames_never_panic(
            idx in 0usize..54, byte in any::<u8>(), cut in 0usize..60,
        ) {
            let mut f = tcp_syn_ipv4();
            f[idx] = byte;
            let n = cut.min(f.len());
            let _ = parse(linktype::ETHERNET, &f[..n], 60);
            let _ = parse(linktype::RAW, &f[14..n.max(14)], 60);
        }
    }
}
