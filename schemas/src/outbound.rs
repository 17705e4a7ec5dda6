//! Outbound safety: which addresses a configured destination (a webhook, the schema registry) may reach. An
//! address in a special-purpose range — loopback, private, shared (CGNAT), link-local, cloud metadata,
//! multicast, unspecified, documentation, benchmarking or otherwise reserved — is refused unless that destination
//! explicitly allows it. Pure: no I/O. The HTTP clients apply it twice: to the URL's host when the configuration
//! is loaded ([`check_host`]), and to every address a host name resolves to, on every new connection
//! ([`check_addr`], from a checking DNS resolver), so that a name that resolves (or later re-resolves) to an
//! internal address is refused too.
//!
//! Host spellings: besides dotted decimal, an IPv4 address may be written the way `inet_aton` and the WHATWG URL
//! standard read it — one to four parts, each decimal, octal (`0177`) or hexadecimal (`0x7f`), the last part
//! filling the remaining bytes (`2130706433`, `0x7f.1`, `127.1`, `0177.0.0.1` all mean 127.0.0.1) — and an IPv6
//! address may embed an IPv4 one (IPv4-mapped `::ffff:127.0.0.1`, IPv4-compatible `::127.0.0.1`, NAT64
//! `64:ff9b::7f00:1`, 6to4 `2002:7f00:1::`): [`host_ip`] reads them all and [`classify`] judges the embedded
//! IPv4 address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A special-purpose address range an outbound destination may not reach without an explicit allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restricted {
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`, `fc00::/7` (unique local), `fec0::/10` (site-local).
    Private,
    /// `100.64.0.0/10`: shared address space of carrier-grade NAT.
    Shared,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// Cloud instance metadata services: `169.254.169.254`, `169.254.170.2`, `100.100.100.200`,
    /// `fd00:ec2::254`.
    CloudMetadata,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// `255.255.255.255`.
    Broadcast,
    /// `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`: never a real destination.
    Documentation,
    /// `198.18.0.0/15`: network benchmarking.
    Benchmarking,
    /// Other ranges no public destination uses: `192.0.0.0/24`, `240.0.0.0/4`, `100::/64` (discard),
    /// `64:ff9b:1::/48` (local NAT64).
    Reserved,
}

impl Restricted {
    /// What the range is, for messages: "a loopback address", ….
    pub fn describe(self) -> &'static str {
        match self {
            Restricted::Loopback => "a loopback address",
            Restricted::Private => "a private address",
            Restricted::Shared => "a shared (carrier-grade NAT) address",
            Restricted::LinkLocal => "a link-local address",
            Restricted::CloudMetadata => "a cloud metadata service address",
            Restricted::Multicast => "a multicast address",
            Restricted::Unspecified => "an unspecified address",
            Restricted::Broadcast => "the broadcast address",
            Restricted::Documentation => "a documentation address",
            Restricted::Benchmarking => "a benchmarking address",
            Restricted::Reserved => "a reserved address",
        }
    }
}

/// The restricted range `ip` belongs to, or `None` for an ordinary public address.
pub fn classify(ip: IpAddr) -> Option<Restricted> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Restricted> {
    let [a, b, c, d] = ip.octets();
    Some(match (a, b, c, d) {
        (169, 254, 169, 254) | (169, 254, 170, 2) | (100, 100, 100, 200) => Restricted::CloudMetadata,
        (0, ..) => Restricted::Unspecified,
        (127, ..) => Restricted::Loopback,
        (10, ..) | (192, 168, ..) => Restricted::Private,
        (172, b, ..) if (16..32).contains(&b) => Restricted::Private,
        (100, b, ..) if (64..128).contains(&b) => Restricted::Shared,
        (169, 254, ..) => Restricted::LinkLocal,
        (192, 0, 2, _) | (198, 51, 100, _) | (203, 0, 113, _) => Restricted::Documentation,
        (198, 18 | 19, ..) => Restricted::Benchmarking,
        (192, 0, 0, _) => Restricted::Reserved,
        (255, 255, 255, 255) => Restricted::Broadcast,
        (224..=239, ..) => Restricted::Multicast,
        (240..=255, ..) => Restricted::Reserved,
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<Restricted> {
    let s = ip.segments();
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some(Restricted::CloudMetadata);
    }
    if ip.is_unspecified() {
        return Some(Restricted::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Restricted::Loopback);
    }
    if let Some(v4) = embedded_v4(ip) {
        // A public IPv4 address behind a translation prefix is as public as the address itself.
        return classify_v4(v4);
    }
    Some(match s[0] {
        0xfc00..=0xfdff | 0xfec0..=0xfeff => Restricted::Private,
        0xfe80..=0xfebf => Restricted::LinkLocal,
        0xff00..=0xffff => Restricted::Multicast,
        0x2001 if s[1] == 0x0db8 => Restricted::Documentation,
        0x0100 if s[1..4] == [0, 0, 0] => Restricted::Reserved,
        0x0064 if s[1] == 0xff9b && s[2] == 1 => Restricted::Reserved,
        // Everything else below 2000::/3 is unassigned or special (IPv4-compatible ::/96 was handled above).
        0x0000..=0x1fff => Restricted::Reserved,
        _ => return None,
    })
}

/// The IPv4 address an IPv6 address carries: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`,
/// deprecated), NAT64 well-known prefix (`64:ff9b::a.b.c.d`) or 6to4 (`2002:AABB:CCDD::`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, ..] | [0, 0, 0, 0, 0, 0, ..] | [0x64, 0xff9b, 0, 0, 0, 0, ..] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)),
        _ => None,
    }
}

/// The address a URL or socket host names literally, in any spelling (see the module documentation), or `None`
/// for a host name. IPv6 may be bracketed.
pub fn host_ip(host: &str) -> Option<IpAddr> {
    let host = host.trim_end_matches('.');
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip);
    }
    legacy_v4(host).map(IpAddr::V4)
}

/// `inet_aton` / WHATWG IPv4: 1–4 parts, each decimal, octal (leading 0) or hex (0x); the last part fills the
/// remaining bytes.
fn legacy_v4(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for p in &parts {
        let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
            (h, 16)
        } else if p.len() > 1 && p.starts_with('0') {
            (&p[1..], 8)
        } else {
            (*p, 10)
        };
        if p.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return None;
        }
        // "0x" alone is 0, like the WHATWG parser reads it.
        let v = if digits.is_empty() { 0 } else { u64::from_str_radix(digits, radix).ok()? };
        values.push(v);
    }
    let (last, init) = values.split_last()?;
    if init.iter().any(|v| *v > 255) {
        return None;
    }
    let last_bits = 8 * (5 - values.len() as u32);
    if last_bits < 64 && *last >= 1u64 << last_bits {
        return None;
    }
    let mut n: u64 = *last;
    for (i, v) in init.iter().enumerate() {
        n |= v << (24 - 8 * i as u32);
    }
    u32::try_from(n).ok().map(Ipv4Addr::from)
}

/// Why an outbound destination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} is {} ({ip})", .class.describe())]
pub struct Refused {
    /// The host as configured (or the name that resolved to `ip`).
    pub host: String,
    /// The address it is, or resolved to.
    pub ip: IpAddr,
    /// Its range.
    pub class: Restricted,
}

/// Refuses `ip` (which `host` names or resolved to) when it is restricted, unless `allow_private`.
pub fn check_addr(host: &str, ip: IpAddr, allow_private: bool) -> Result<(), Refused> {
    match classify(ip) {
        Some(class) if !allow_private => Err(Refused { host: host.to_string(), ip, class }),
        _ => Ok(()),
    }
}

/// Refuses a URL or socket host that is a restricted address in any spelling, unless `allow_private`. A host
/// name passes here; its addresses are checked when it is resolved ([`check_addr`]).
pub fn check_host(host: &str, allow_private: bool) -> Result<(), Refused> {
    match host_ip(host) {
        Some(ip) => check_addr(host, ip, allow_private),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_an_internal_address_is_read_and_refused() {
        use Restricted::*;
        let table: &[(&str, &str, Restricted)] = &[
            ("127.0.0.1", "127.0.0.1", Loopback),
            ("2130706433", "127.0.0.1", Loopback),
            ("0177.0.0.1", "127.0.0.1", Loopback),
            ("0x7f.1", "127.0.0.1", Loopback),
            ("0x7F000001", "127.0.0.1", Loopback),
            ("127.1", "127.0.0.1", Loopback),
            ("017700000001", "127.0.0.1", Loopback),
            ("127.0.0.1.", "127.0.0.1", Loopback),
            ("[::1]", "::1", Loopback),
            ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1", Loopback),
            ("[::ffff:7f00:1]", "::ffff:127.0.0.1", Loopback),
            ("[::127.0.0.1]", "::127.0.0.1", Loopback),
            ("[64:ff9b::7f00:1]", "64:ff9b::7f00:1", Loopback),
            ("[2002:7f00:1::1]", "2002:7f00:1::1", Loopback),
            ("169.254.169.254", "169.254.169.254", CloudMetadata),
            ("2852039166", "169.254.169.254", CloudMetadata),
            ("0251.0376.0251.0376", "169.254.169.254", CloudMetadata),
            ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254", CloudMetadata),
            ("[::ffff:169.254.169.254]", "::ffff:169.254.169.254", CloudMetadata),
            ("[fd00:ec2::254]", "fd00:ec2::254", CloudMetadata),
            ("169.254.170.2", "169.254.170.2", CloudMetadata),
            ("100.100.100.200", "100.100.100.200", CloudMetadata),
            ("10.0.0.1", "10.0.0.1", Private),
            ("012.1", "10.0.0.1", Private),
            ("172.16.0.1", "172.16.0.1", Private),
            ("172.31.255.255", "172.31.255.255", Private),
            ("192.168.1.1", "192.168.1.1", Private),
            ("0xc0a80101", "192.168.1.1", Private),
            ("[fd12:3456::1]", "fd12:3456::1", Private),
            ("[fec0::1]", "fec0::1", Private),
            ("100.64.0.1", "100.64.0.1", Shared),
            ("100.127.255.254", "100.127.255.254", Shared),
            ("169.254.1.1", "169.254.1.1", LinkLocal),
            ("[fe80::1]", "fe80::1", LinkLocal),
            ("224.0.0.1", "224.0.0.1", Multicast),
            ("239.255.255.250", "239.255.255.250", Multicast),
            ("[ff02::1]", "ff02::1", Multicast),
            ("0.0.0.0", "0.0.0.0", Unspecified),
            ("0", "0.0.0.0", Unspecified),
            ("[::]", "::", Unspecified),
            ("255.255.255.255", "255.255.255.255", Broadcast),
            ("192.0.2.10", "192.0.2.10", Documentation),
            ("198.51.100.1", "198.51.100.1", Documentation),
            ("203.0.113.7", "203.0.113.7", Documentation),
            ("[2001:db8::1]", "2001:db8::1", Documentation),
            ("198.18.0.1", "198.18.0.1", Benchmarking),
            ("240.0.0.1", "240.0.0.1", Reserved),
            ("192.0.0.8", "192.0.0.8", Reserved),
            ("[100::1]", "100::1", Reserved),
        ];
        for (host, ip, class) in table {
            let read = host_ip(host).unwrap_or_else(|| panic!("{host} was not read as an address"));
            assert_eq!(read, ip.parse::<IpAddr>().unwrap(), "{host}");
            assert_eq!(classify(read), Some(*class), "{host}");
            let e = check_host(host, false).unwrap_err();
            assert_eq!((e.ip, e.class), (read, *class), "{host}");
            assert!(e.to_string().contains(class.describe()), "{e}");
            assert_eq!(check_host(host, true), Ok(()), "{host}: allowed explicitly");
        }
    }

    #[test]
    fn public_addresses_and_names_pass() {
        for host in [
            "93.184.215.14",
            "1.1.1.1",
            "0x01010101",
            "172.32.0.1",
            "100.128.0.1",
            "[2606:4700:4700::1111]",
            "[::ffff:1.1.1.1]",
            "[64:ff9b::101:101]",
            "hooks.example",
            "localhost",
            "0x7f.evil.example",
            "1.2.3.4.5",
            "256.1.1.1",
            "08.1.1.1",
        ] {
            assert_eq!(check_host(host, false), Ok(()), "{host}");
        }
        // Names (and things that are not addresses) are left to the resolver's check.
        for host in ["localhost", "hooks.example", "1.2.3.4.5", "256.1.1.1", "08.1.1.1", "0x7f.evil.example"] {
            assert_eq!(host_ip(host), None, "{host}");
        }
        assert_eq!(
            check_addr("localhost", "127.0.0.1".parse().unwrap(), false).unwrap_err().class,
            Restricted::Loopback
        );
    }
}
