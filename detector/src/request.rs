//! The scoring API's request bodies: their three shapes, told apart by their keys, and their validation, which
//! reports every problem of a body at once (unknown, missing and invalid fields, in one message).
//!
//! - A capture client's packet (any of `src_ip`, `dst_ip`, `packet_size` present): [`CapturedPacket`], scored in
//!   the context of its source's recent packets (`crate::sources`).
//! - A batch, `{"source": …, "packets": [packet, …]}` (a `packets` key): netanom's own packets of one host.
//! - Otherwise one of netanom's own packets: the fields of [`PacketFeatures`].

use std::net::IpAddr;

use netanom_schemas::{Direction, Network, PacketFeatures};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Most packets in one batch request (four producer batches).
pub const MAX_PACKETS: usize = 4096;
/// Problems named in one message at most; more are counted.
const MAX_PROBLEMS: usize = 20;

/// Keys of a capture client's packet.
pub const CAPTURED_FIELDS: &[&str] = &[
    "src_ip",
    "dst_ip",
    "packet_size",
    "protocol",
    "src_port",
    "dst_port",
    "tcp_flags",
    "ttl",
    "payload_len",
    "icmp_type",
    "icmp_code",
    "timestamp",
    "ts_ns",
];

/// Keys of netanom's own packet (`protocol` is an alias of `ip_proto`).
pub const PACKET_FIELDS: &[&str] = &[
    "source",
    "ts_ns",
    "network",
    "destination",
    "src_port",
    "dst_port",
    "ip_proto",
    "protocol",
    "wire_len",
    "cap_len",
    "payload_len",
    "tcp_flags",
    "ttl",
    "vlan",
    "icmp_type",
    "icmp_code",
    "flow_duration_ns",
    "flow_packets",
    "flow_bytes",
    "direction",
    "payload_entropy",
];

/// Keys of a batch.
const BATCH_FIELDS: &[&str] = &["source", "packets"];

/// One packet as a capture client sends it: addresses, size and protocol, and what else the client parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedPacket {
    /// `src_ip`: the sender, whose context scores the packet.
    pub source: IpAddr,
    /// `dst_ip`.
    pub destination: IpAddr,
    /// `packet_size`: the frame's length on the wire, bytes.
    pub wire_len: u32,
    /// `protocol`: IP protocol number (or its name: tcp, udp, icmp, icmpv6).
    pub ip_proto: u8,
    /// `src_port`, 0 when absent.
    pub src_port: u16,
    /// `dst_port`, 0 when absent.
    pub dst_port: u16,
    /// `tcp_flags`, the TCP flag bits; 0 when absent.
    pub tcp_flags: u8,
    /// `ttl`; 64 when absent.
    pub ttl: u8,
    /// `payload_len`: transport payload, bytes; when absent, `packet_size` less the usual Ethernet, IP and
    /// transport headers.
    pub payload_len: u32,
    /// `icmp_type`.
    pub icmp_type: Option<u8>,
    /// `icmp_code`.
    pub icmp_code: Option<u8>,
    /// The capture time, ns since the Unix epoch (`ts_ns`, or `timestamp` in seconds); `None`: the arrival time.
    pub ts_ns: Option<i64>,
}

impl CapturedPacket {
    /// The network layer, from the addresses' family.
    pub fn network(&self) -> Network {
        if self.source.is_ipv4() { Network::Ipv4 } else { Network::Ipv6 }
    }
}

/// A valid request.
#[derive(Debug)]
pub enum Body {
    /// netanom's own packets of one host: one packet, or a batch.
    Packets {
        /// The host, when the body names it.
        source: Option<IpAddr>,
        /// 1 to [`MAX_PACKETS`] packets.
        packets: Vec<PacketFeatures>,
    },
    /// One packet of a capture client.
    Captured(CapturedPacket),
}

/// Why a body is refused.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Not JSON at all (400).
    #[error("the body is not JSON: {0}")]
    NotJson(serde_json::Error),
    /// JSON that is not a valid request (422): every problem, `; `-separated.
    #[error("{0}")]
    Invalid(String),
}

/// Parses and validates a body.
pub fn parse(body: &[u8]) -> Result<Body, BodyError> {
    let value: Value = serde_json::from_slice(body).map_err(BodyError::NotJson)?;
    let Value::Object(map) = value else {
        let kind = match value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            _ => "an array",
        };
        return Err(BodyError::Invalid(format!(
            "the body must be a JSON object: one packet ({{\"src_ip\", \"dst_ip\", \"packet_size\", \"protocol\", \
             …}} or netanom's packet), or {{\"packets\": [...]}}; got {kind}"
        )));
    };
    let mut problems = Problems::default();
    let body = if ["src_ip", "dst_ip", "packet_size"].iter().any(|k| map.contains_key(*k)) {
        captured(&map, &mut problems).map(Body::Captured)
    } else if map.contains_key("packets") {
        batch(&map, &mut problems)
    } else {
        netanom_packet(&map, "", &mut problems).map(|(source, p)| Body::Packets { source, packets: vec![p] })
    };
    match (body, problems.into_message()) {
        (Some(b), None) => Ok(b),
        (_, Some(message)) => Err(BodyError::Invalid(message)),
        (None, None) => Err(BodyError::Invalid("the body is not a valid request".into())),
    }
}

/// Every problem found, in order; at most [`MAX_PROBLEMS`] kept.
#[derive(Default)]
struct Problems {
    named: Vec<String>,
    total: usize,
}

impl Problems {
    fn push(&mut self, problem: String) {
        if self.named.len() < MAX_PROBLEMS {
            self.named.push(problem);
        }
        self.total += 1;
    }

    fn into_message(self) -> Option<String> {
        if self.total == 0 {
            return None;
        }
        let mut m = self.named.join("; ");
        if self.total > self.named.len() {
            m.push_str(&format!("; and {} more problem(s)", self.total - self.named.len()));
        }
        Some(m)
    }
}

/// The fields of one JSON object, read by name: reading records what is invalid, [`Fields::finish`] what is
/// missing or unknown.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    /// `packets[3].` inside a batch, empty at the top.
    at: &'a str,
    known: &'static [&'static str],
    missing: Vec<&'static str>,
    problems: &'a mut Problems,
}

impl<'a> Fields<'a> {
    fn new(
        map: &'a Map<String, Value>,
        at: &'a str,
        known: &'static [&'static str],
        problems: &'a mut Problems,
    ) -> Self {
        Self { map, at, known, missing: Vec::new(), problems }
    }

    fn invalid(&mut self, name: &str, problem: impl std::fmt::Display) {
        let at = self.at;
        self.problems.push(format!("{at}{name}: {problem}"));
    }

    /// A field that may be absent (or `null`); `None` also when invalid (recorded).
    fn optional<T: DeserializeOwned>(&mut self, name: &'static str) -> Option<T> {
        let v = self.map.get(name)?;
        match Option::<T>::deserialize(v) {
            Ok(t) => t,
            Err(e) => {
                self.invalid(name, e);
                None
            }
        }
    }

    /// A field that must be present; `None` when missing or invalid (recorded).
    fn required<T: DeserializeOwned>(&mut self, name: &'static str) -> Option<T> {
        let Some(v) = self.map.get(name) else {
            self.missing.push(name);
            return None;
        };
        match T::deserialize(v) {
            Ok(t) => Some(t),
            Err(e) => {
                self.invalid(name, e);
                None
            }
        }
    }

    /// Records the missing and the unknown fields.
    fn finish(self) {
        let at = self.at.strip_suffix('.').map(|a| format!("{a}: ")).unwrap_or_default();
        let quoted = |names: &[&str]| names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
        let unknown: Vec<&str> = self.map.keys().map(String::as_str).filter(|k| !self.known.contains(k)).collect();
        match unknown.len() {
            0 => {}
            1 => self.problems.push(format!(
                "{at}unknown field {}, expected one of {}",
                quoted(&unknown),
                self.known.join(", ")
            )),
            _ => self.problems.push(format!(
                "{at}unknown fields {}, expected one of {}",
                quoted(&unknown),
                self.known.join(", ")
            )),
        }
        match self.missing.len() {
            0 => {}
            1 => self.problems.push(format!("{at}missing field {}", quoted(&self.missing))),
            _ => self.problems.push(format!("{at}missing fields {}", quoted(&self.missing))),
        }
    }
}

/// `protocol` of a capture client: a number, or a name.
fn protocol(v: &Value) -> Result<u8, String> {
    if let Some(name) = v.as_str() {
        return match name.to_ascii_lowercase().as_str() {
            "tcp" => Ok(6),
            "udp" => Ok(17),
            "icmp" => Ok(1),
            "icmpv6" => Ok(58),
            _ => Err(format!("unknown protocol name {name:?}: give the IP protocol number or tcp, udp, icmp, icmpv6")),
        };
    }
    u8::deserialize(v).map_err(|e| e.to_string())
}

/// Header bytes a frame of protocol `proto` usually carries before its payload (Ethernet, IP, transport).
fn usual_headers(network: Network, proto: u8) -> u32 {
    let ip = if network == Network::Ipv6 { 40 } else { 20 };
    let transport = match proto {
        6 => 20,
        17 | 1 | 58 => 8,
        _ => 0,
    };
    14 + ip + transport
}

fn captured(map: &Map<String, Value>, problems: &mut Problems) -> Option<CapturedPacket> {
    let mut f = Fields::new(map, "", CAPTURED_FIELDS, problems);
    let source: Option<IpAddr> = f.required("src_ip");
    let destination: Option<IpAddr> = f.required("dst_ip");
    let wire_len: Option<u32> = f.required("packet_size");
    let ip_proto = match map.get("protocol") {
        None => {
            f.missing.push("protocol");
            None
        }
        Some(v) => protocol(v).map_err(|e| f.invalid("protocol", e)).ok(),
    };
    let src_port: Option<u16> = f.optional("src_port");
    let dst_port: Option<u16> = f.optional("dst_port");
    let tcp_flags: Option<u8> = f.optional("tcp_flags");
    let ttl: Option<u8> = f.optional("ttl");
    let payload_len: Option<u32> = f.optional("payload_len");
    let icmp_type: Option<u8> = f.optional("icmp_type");
    let icmp_code: Option<u8> = f.optional("icmp_code");
    let ts_ns: Option<i64> = f.optional("ts_ns");
    let seconds: Option<f64> = f.optional("timestamp");
    let timestamp = seconds.and_then(|s| {
        if s.is_finite() && (0.0..9.0e9).contains(&s) {
            // Whole seconds and the fraction apart: `s * 1e9` would round away the microseconds.
            Some(s.trunc() as i64 * 1_000_000_000 + (s.fract() * 1e9).round() as i64)
        } else {
            f.invalid("timestamp", format!("must be seconds since the Unix epoch in [0, 9e9), got {s}"));
            None
        }
    });
    if ts_ns.is_some() && timestamp.is_some() {
        f.invalid("timestamp", "give one of timestamp (seconds) and ts_ns (nanoseconds), not both");
    }
    if let (Some(s), Some(d)) = (source, destination)
        && s.is_ipv4() != d.is_ipv4()
    {
        f.invalid("dst_ip", format!("{d} is not of the family of src_ip {s}"));
    }
    if wire_len == Some(0) {
        f.invalid("packet_size", "must be >= 1, got 0");
    }
    if let (Some(p), Some(w)) = (payload_len, wire_len)
        && p > w
    {
        f.invalid("payload_len", format!("{p} is larger than packet_size {w}"));
    }
    f.finish();
    let (source, destination, wire_len, ip_proto) = (source?, destination?, wire_len?, ip_proto?);
    let network = if source.is_ipv4() { Network::Ipv4 } else { Network::Ipv6 };
    Some(CapturedPacket {
        source,
        destination,
        wire_len,
        ip_proto,
        src_port: src_port.unwrap_or(0),
        dst_port: dst_port.unwrap_or(0),
        tcp_flags: tcp_flags.unwrap_or(0),
        ttl: ttl.unwrap_or(64),
        payload_len: payload_len.unwrap_or_else(|| wire_len.saturating_sub(usual_headers(network, ip_proto))),
        icmp_type,
        icmp_code,
        ts_ns: ts_ns.or(timestamp),
    })
}

fn batch(map: &Map<String, Value>, problems: &mut Problems) -> Option<Body> {
    let mut f = Fields::new(map, "", BATCH_FIELDS, problems);
    let mut source: Option<IpAddr> = f.optional("source");
    let list: Option<Vec<Value>> = f.required("packets");
    f.finish();
    let list = list?;
    if list.is_empty() {
        problems.push(format!("packets: empty; send 1 to {MAX_PACKETS} packets"));
        return None;
    }
    if list.len() > MAX_PACKETS {
        problems.push(format!("packets: {} packets, at most {MAX_PACKETS} per request", list.len()));
        return None;
    }
    let mut source_field = "source".to_string();
    let mut packets = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let at = format!("packets[{i}].");
        let Value::Object(m) = v else {
            problems.push(format!("packets[{i}]: must be a packet object"));
            continue;
        };
        let Some((this, p)) = netanom_packet(m, &at, problems) else { continue };
        match (source, this) {
            (Some(first), Some(this)) if first != this => problems.push(format!(
                "{at}source: {this} differs from {source_field} {first}; one request holds the packets of one host"
            )),
            (None, Some(this)) => {
                source = Some(this);
                source_field = format!("{at}source");
            }
            _ => {}
        }
        packets.push(p);
    }
    (packets.len() == list.len()).then_some(Body::Packets { source, packets })
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum NetworkJson {
    Ipv4,
    Ipv6,
    Arp,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum DirectionJson {
    Forward,
    Reverse,
}

/// One of netanom's packets (`at` prefixes its field names in messages): its optional `source` and its
/// features. Fields that feed the model are required; the others have the defaults documented in
/// docs/operations.md.
fn netanom_packet(
    map: &Map<String, Value>,
    at: &str,
    problems: &mut Problems,
) -> Option<(Option<IpAddr>, PacketFeatures)> {
    let before = problems.total;
    let mut f = Fields::new(map, at, PACKET_FIELDS, problems);
    let source: Option<IpAddr> = f.optional("source");
    let ts_ns: Option<i64> = f.required("ts_ns");
    let network: Option<NetworkJson> = f.optional("network");
    let destination: Option<IpAddr> = f.required("destination");
    let src_port: Option<u16> = f.optional("src_port");
    let dst_port: Option<u16> = f.required("dst_port");
    let ip_proto: Option<u8> = match (map.contains_key("ip_proto"), map.contains_key("protocol")) {
        (true, true) => {
            f.invalid("protocol", "an alias of ip_proto: give one of them");
            None
        }
        (false, true) => f.required("protocol"),
        _ => f.required("ip_proto"),
    };
    let wire_len: Option<u32> = f.required("wire_len");
    let cap_len: Option<u32> = f.optional("cap_len");
    let payload_len: Option<u32> = f.required("payload_len");
    let tcp_flags: Option<u8> = f.required("tcp_flags");
    let ttl: Option<u8> = f.required("ttl");
    let vlan: Option<u16> = f.optional("vlan");
    let icmp_type: Option<u8> = f.optional("icmp_type");
    let icmp_code: Option<u8> = f.optional("icmp_code");
    let flow_duration_ns: Option<i64> = f.optional("flow_duration_ns");
    let flow_packets: Option<u64> = f.required("flow_packets");
    let flow_bytes: Option<u64> = f.optional("flow_bytes");
    let direction: Option<DirectionJson> = f.required("direction");
    let payload_entropy: Option<f32> = f.optional("payload_entropy");
    if flow_packets == Some(0) {
        f.invalid("flow_packets", "must be >= 1 (the packet itself is in its flow), got 0");
    }
    let network = match (network, destination) {
        (_, None) => None,
        (None | Some(NetworkJson::Ipv4), Some(IpAddr::V4(_))) => Some(Network::Ipv4),
        (None | Some(NetworkJson::Ipv6), Some(IpAddr::V6(_))) => Some(Network::Ipv6),
        (Some(NetworkJson::Arp), Some(IpAddr::V4(_))) => Some(Network::Arp),
        (Some(n), Some(d)) => {
            let name = match n {
                NetworkJson::Ipv4 => "ipv4",
                NetworkJson::Ipv6 => "ipv6",
                NetworkJson::Arp => "arp",
            };
            f.invalid("network", format!("\"{name}\" does not match destination {d}"));
            None
        }
    };
    f.finish();
    if problems.total > before {
        return None;
    }
    let wire_len = wire_len?;
    Some((
        source,
        PacketFeatures {
            ts_ns: ts_ns?,
            network: network?,
            destination: destination?,
            src_port: src_port.unwrap_or(0),
            dst_port: dst_port?,
            ip_proto: ip_proto?,
            wire_len,
            cap_len: cap_len.unwrap_or(wire_len),
            payload_len: payload_len?,
            tcp_flags: tcp_flags?,
            ttl: ttl?,
            vlan,
            icmp_type,
            icmp_code,
            flow_duration_ns: flow_duration_ns.unwrap_or(0),
            flow_packets: flow_packets?,
            flow_bytes: flow_bytes.unwrap_or(u64::from(wire_len)),
            direction: match direction? {
                DirectionJson::Forward => Direction::Forward,
                DirectionJson::Reverse => Direction::Reverse,
            },
            payload_entropy,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::scan_batch;

    const PACKET: &str = r#"{"ts_ns": 1, "destination": "10.0.0.2", "dst_port": 443, "ip_proto": 6,
        "wire_len": 60, "payload_len": 0, "tcp_flags": 2, "ttl": 64, "flow_packets": 1, "direction": "forward"}"#;

    /// The message of an invalid body; `None` for one that is not JSON.
    fn message(body: &str) -> Option<String> {
        match parse(body.as_bytes()) {
            Err(BodyError::Invalid(m)) => Some(m),
            Err(BodyError::NotJson(_)) => None,
            Ok(b) => panic!("{body} is valid: {b:?}"),
        }
    }

    /// netanom's packets of a body that must be valid.
    fn packets(body: &str) -> (Option<IpAddr>, Vec<PacketFeatures>) {
        match parse(body.as_bytes()) {
            Ok(Body::Packets { source, packets }) => (source, packets),
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn one_packet_or_a_batch() {
        let (_, one) = packets(PACKET);
        assert_eq!(one.len(), 1);
        assert!(one[0].is_syn() && one[0].opens_flow());
        assert_eq!(one[0].network, Network::Ipv4);
        assert_eq!(one[0].cap_len, 60, "cap_len defaults to wire_len");
        let (source, many) = packets(&format!(r#"{{"source": "10.0.0.1", "packets": [{PACKET}, {PACKET}]}}"#));
        assert_eq!(many.len(), 2);
        assert_eq!(source, Some("10.0.0.1".parse().unwrap()));
        let alias = PACKET.replace("ip_proto", "protocol");
        assert_eq!(packets(&alias).1[0].ip_proto, 6);
    }

    #[test]
    fn every_malformed_body_names_its_problem() {
        assert_eq!(message("{"), None);
        assert_eq!(message(""), None);
        let cases = [
            ("[1]", "the body must be a JSON object"),
            (&PACKET.replace(r#""ttl": 64,"#, ""), "missing field `ttl`"),
            (&PACKET.replace(r#""ttl": 64"#, r#""ttl": 300"#), "ttl: invalid value: integer `300`"),
            (&PACKET.replace(r#""10.0.0.2""#, r#""10.0.0.999""#), "destination: invalid IP address syntax"),
            (&PACKET.replace(r#""forward""#, r#""sideways""#), "direction: unknown variant `sideways`"),
            (&PACKET.replace(r#""flow_packets": 1"#, r#""flow_packets": 0"#), "flow_packets: must be >= 1"),
            (&PACKET.replace(r#""ts_ns": 1"#, r#""ts_ns": 1, "ttll": 3"#), "unknown field `ttll`"),
            (&PACKET.replace(r#""ts_ns": 1"#, r#""ts_ns": 1, "network": "ipv6""#), "network: \"ipv6\" does not match"),
            (r#"{"packets": []}"#, "packets: empty"),
            (
                &format!(r#"{{"packets": [{PACKET}, {}]}}"#, PACKET.replace("\"ttl\": 64", "\"ttl\": \"x\"")),
                "packets[1].ttl: invalid type: string \"x\"",
            ),
            (
                &format!(
                    r#"{{"source": "10.0.0.1", "packets": [{PACKET}, {}]}}"#,
                    PACKET.replace(r#""ts_ns": 1"#, r#""ts_ns": 1, "source": "10.0.0.7""#)
                ),
                "packets[1].source: 10.0.0.7 differs from source 10.0.0.1",
            ),
            (&format!(r#"{{"packets": [{}]}}"#, vec![PACKET; MAX_PACKETS + 1].join(",")), "at most 4096"),
        ];
        for (body, expected) in cases {
            let text = message(body).unwrap();
            assert!(text.contains(expected), "{expected:?} not in {text:?}");
        }
    }

    #[test]
    fn scan_batch_parses_to_the_same_features() {
        let b = scan_batch(0);
        let packets: Vec<String> = b
            .packets
            .iter()
            .map(|p| {
                format!(
                    r#"{{"ts_ns": {}, "destination": "{}", "src_port": {}, "dst_port": {}, "ip_proto": {},
                    "wire_len": {}, "payload_len": {}, "tcp_flags": {}, "ttl": {}, "flow_packets": {},
                    "flow_bytes": {}, "direction": "forward"}}"#,
                    p.ts_ns,
                    p.destination,
                    p.src_port,
                    p.dst_port,
                    p.ip_proto,
                    p.wire_len,
                    p.payload_len,
                    p.tcp_flags,
                    p.ttl,
                    p.flow_packets,
                    p.flow_bytes
                )
            })
            .collect();
        assert_eq!(self::packets(&format!(r#"{{"packets": [{}]}}"#, packets.join(","))).1, b.packets);
    }
    #[test]
    fn a_capture_clients_packet_with_what_it_has() {
        let tutorial = r#"{"src_ip": "10.0.0.1", "dst_ip": "10.0.0.2", "packet_size": 74, "protocol": 6}"#;
        let Ok(Body::Captured(p)) = parse(tutorial.as_bytes()) else { panic!("{tutorial}") };
        assert_eq!((p.wire_len, p.ip_proto, p.src_port, p.ttl, p.ts_ns), (74, 6, 0, 64, None));
        assert_eq!(p.payload_len, 74 - 14 - 20 - 20, "the usual headers");
        let full = r#"{"src_ip": "2001:db8::1", "dst_ip": "2001:db8::2", "packet_size": 90, "protocol": "udp",
            "src_port": 5353, "dst_port": 53, "ttl": 3, "payload_len": 20, "timestamp": 1700000000.25}"#;
        let Ok(Body::Captured(p)) = parse(full.as_bytes()) else { panic!("{full}") };
        assert_eq!((p.ip_proto, p.src_port, p.dst_port, p.ttl, p.payload_len), (17, 5353, 53, 3, 20));
        assert_eq!(p.ts_ns, Some(1_700_000_000_250_000_000));
        assert_eq!(p.network(), Network::Ipv6);
        let precise = tutorial.replace("74,", r#"74, "ts_ns": 1700000000123456789, "tcp_flags": 18,"#);
        let Ok(Body::Captured(p)) = parse(precise.as_bytes()) else { panic!("{precise}") };
        assert_eq!((p.ts_ns, p.tcp_flags), (Some(1_700_000_000_123_456_789), 18));
    }

    #[test]
    fn every_problem_of_a_body_is_named_at_once() {
        // The tutorial's original body: what is missing, in one answer.
        let m = message(r#"{"src_ip": "10.0.0.1", "packet_size": 60, "protocol": 6, "colour": 1, "size": 2}"#);
        assert_eq!(
            m.as_deref(),
            Some(
                "unknown fields `colour`, `size`, expected one of src_ip, dst_ip, packet_size, protocol, src_port, \
                 dst_port, tcp_flags, ttl, payload_len, icmp_type, icmp_code, timestamp, ts_ns; missing field `dst_ip`"
            )
        );
        let m = message(
            r#"{"src_ip": "10.0.0.1", "dst_ip": "::1", "packet_size": 0, "protocol": "gre", "ttl": 999,
                "timestamp": 1, "ts_ns": 1}"#,
        )
        .unwrap();
        for part in [
            "protocol: unknown protocol name \"gre\"",
            "ttl: invalid value: integer `999`, expected u8",
            "timestamp: give one of timestamp (seconds) and ts_ns",
            "dst_ip: ::1 is not of the family of src_ip 10.0.0.1",
            "packet_size: must be >= 1, got 0",
        ] {
            assert!(m.contains(part), "{part:?} not in {m:?}");
        }
        // netanom's packet and the batch: every field of every packet.
        let m =
            message(&PACKET.replace(r#""ttl": 64,"#, r#""ttl": "x", "wat": 1,"#).replace(r#""dst_port": 443,"#, ""))
                .unwrap();
        assert!(m.starts_with("ttl: invalid type: string \"x\", expected u8; unknown field `wat`"), "{m}");
        assert!(m.ends_with("; missing field `dst_port`"), "{m}");
        let bad = PACKET.replace(r#""ttl": 64,"#, "");
        let m = message(&format!(r#"{{"packets": [{bad}, {PACKET}, {bad}], "extra": 1}}"#)).unwrap();
        assert!(m.starts_with("unknown field `extra`, expected one of source, packets; packets[0]: missing field `ttl`; packets[2]: missing field `ttl`"), "{m}");
        // Bounded: 4,096 broken packets name 20 problems and count the rest.
        let m = message(&format!(r#"{{"packets": [{}]}}"#, vec![bad.as_str(); MAX_PACKETS].join(","))).unwrap();
        assert!(m.ends_with(&format!("; and {} more problem(s)", MAX_PACKETS - 20)), "{}", &m[m.len() - 60..]);
    }
}
