//! Keyed, prefix-preserving pseudonyms of IP addresses (ipcrypt-pfx, the prefix-preserving mode of the ipcrypt
//! specification, through the pure-Rust `ipcrypt-rs` crate): an IPv4 address maps to an IPv4 address and an IPv6
//! address to an IPv6 address, two addresses sharing their first `n` bits map to two pseudonyms sharing their
//! first `n` bits (so subnets stay subnets), and the mapping is a permutation that the key holder can reverse.
//!
//! The producer pseudonymizes every address it reads ([`Pseudonymizer`]); `netanom reveal` reverses the addresses
//! written in alerts ([`reveal_text`]). [`addresses_in`] finds the addresses written in a text, as both do.
//! This module owns no I/O: the key comes as text ([`IpKey::parse`]) from whoever read it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;

use ipcrypt_rs::IpcryptPfx;

/// Length of a key in bytes (two AES-128 keys).
pub const KEY_BYTES: usize = IpcryptPfx::KEY_BYTES;

/// Pseudonyms remembered by a [`Pseudonymizer`] before its cache starts over (each costs 32 AES blocks for
/// IPv4 and 128 for IPv6, so repeated addresses are looked up instead).
pub const CACHE_ENTRIES: usize = 65_536;

/// A pseudonymization key: prints as `IpKey(***)`, never its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct IpKey([u8; KEY_BYTES]);

/// Why a text is not a pseudonymization key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not 64 hexadecimal digits (whitespace around them is ignored). The text is never quoted.
    #[error("must be 64 hexadecimal digits (32 bytes, e.g. from `openssl rand -hex 32`), got {0} characters")]
    Format(usize),
    /// The two 16-byte halves are equal, which ipcrypt-pfx forbids.
    #[error("its two 16-byte halves must differ")]
    EqualHalves,
}

impl IpKey {
    /// Reads a key written as 64 hexadecimal digits.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let digits = text.as_bytes();
        if digits.len() != 2 * KEY_BYTES || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(KeyError::Format(text.chars().count()));
        }
        let mut key = [0u8; KEY_BYTES];
        for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = (hex_value(pair[0]) << 4) | hex_value(pair[1]);
        }
        if key[..KEY_BYTES / 2] == key[KEY_BYTES / 2..] {
            return Err(KeyError::EqualHalves);
        }
        Ok(Self(key))
    }
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

impl std::fmt::Debug for IpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IpKey(***)")
    }
}

/// The keyed mapping in both directions.
pub struct Cipher(IpcryptPfx);

impl Cipher {
    /// The mapping of `key`.
    pub fn new(key: &IpKey) -> Self {
        // `IpKey::parse` refused equal halves, the one key `IpcryptPfx::new` rejects.
        Self(IpcryptPfx::new(key.0))
    }

    /// The pseudonym of `ip`.
    pub fn pseudonym(&self, ip: IpAddr) -> IpAddr {
        self.0.encrypt_ipaddr(ip)
    }

    /// The address whose pseudonym is `pseudonym`.
    pub fn reveal(&self, pseudonym: IpAddr) -> IpAddr {
        self.0.decrypt_ipaddr(pseudonym)
    }
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(ipcrypt-pfx, ***)")
    }
}

/// Pseudonymizes addresses on the producer path, remembering up to [`CACHE_ENTRIES`] of them.
pub struct Pseudonymizer {
    cipher: Cipher,
    cache: HashMap<IpAddr, IpAddr>,
}

impl Pseudonymizer {
    /// A pseudonymizer with `key`.
    pub fn new(key: &IpKey) -> Self {
        Self { cipher: Cipher::new(key), cache: HashMap::with_capacity(1024) }
    }

    /// The pseudonym of `ip`.
    pub fn pseudonym(&mut self, ip: IpAddr) -> IpAddr {
        if let Some(p) = self.cache.get(&ip) {
            return *p;
        }
        if self.cache.len() >= CACHE_ENTRIES {
            self.cache.clear();
        }
        let p = self.cipher.pseudonym(ip);
        self.cache.insert(ip, p);
        p
    }
}

/// Shows how many pseudonyms are cached, never an address or the key.
impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pseudonymizer").field("cached", &self.cache.len()).finish_non_exhaustive()
    }
}

/// The IP addresses written in `text`, with their byte ranges: dotted IPv4 (also followed by `:port`) and IPv6
/// in any RFC 5952 or RFC 4291 spelling (also inside `[…]:port`), each a whole token — a run of hexadecimal
/// digits, `.` and `:` that is not part of a longer such run (a sentence's final `.` is not part of it).
pub fn addresses_in(text: &str) -> Vec<(Range<usize>, IpAddr)> {
    let is_part = |b: u8| b.is_ascii_hexdigit() || b == b'.' || b == b':';
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !is_part(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_part(bytes[i]) {
            i += 1;
        }
        // A token glued to a letter or digit run of another kind (`x10.0.0.1`) is not an address.
        let glued = |at: usize| bytes.get(at).is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
        if start > 0 && glued(start - 1) || glued(i) {
            continue;
        }
        if let Some((range, ip)) = address_token(&text[start..i]) {
            found.push((start + range.start..start + range.end, ip));
        }
    }
    found
}

/// The address a token spells, with its range in the token: the whole token, the token without trailing `.` or
/// `:`, or an IPv4 address followed by `:port`.
fn address_token(token: &str) -> Option<(Range<usize>, IpAddr)> {
    let trimmed = token.trim_end_matches(['.', ':']);
    if let Ok(ip) = trimmed.parse::<IpAddr>() {
        return Some((0..trimmed.len(), ip));
    }
    let (host, port) = trimmed.rsplit_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    host.parse::<std::net::Ipv4Addr>().ok().map(|v4| (0..host.len(), IpAddr::V4(v4)))
}

/// `text` with every address in it ([`addresses_in`]) replaced by `map(address)`.
pub fn replace_addresses(text: &str, mut map: impl FnMut(IpAddr) -> IpAddr) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (range, ip) in addresses_in(text) {
        out.push_str(&text[at..range.start]);
        out.push_str(&map(ip).to_string());
        at = range.end;
    }
    out.push_str(&text[at..]);
    out
}

/// `text` with every pseudonym in it replaced by the address it stands for.
pub fn reveal_text(cipher: &Cipher, text: &str) -> String {
    replace_addresses(text, |ip| cipher.reveal(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_KEY: &str = "0123456789abcdeffedcba98765432101032547698badcfeefcdab8967452301";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_test_vectors_of_the_ipcrypt_specification() {
        let cipher = Cipher::new(&IpKey::parse(SPEC_KEY).unwrap());
        for (input, expected) in [
            ("0.0.0.0", "151.82.155.134"),
            ("255.255.255.255", "94.185.169.89"),
            ("192.0.2.1", "100.115.72.131"),
            ("2001:db8::1", "c180:5dd4:2587:3524:30ab:fa65:6ab6:f88"),
            ("2001:db8:1234:5678:9abc:def0:1234:5678", "c180:5dd4:3f39:5792:2334:a348:e913:4af5"),
        ] {
            assert_eq!(cipher.pseudonym(ip(input)), ip(expected), "{input}");
            assert_eq!(cipher.reveal(ip(expected)), ip(input), "{expected}");
        }
    }

    #[test]
    fn prefixes_are_preserved_and_families_kept() {
        let mut p = Pseudonymizer::new(&IpKey::parse(SPEC_KEY).unwrap());
        let common_prefix = |a: IpAddr, b: IpAddr| match (a, b) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (a.to_bits() ^ b.to_bits()).leading_zeros(),
            (IpAddr::V6(a), IpAddr::V6(b)) => (a.to_bits() ^ b.to_bits()).leading_zeros(),
            _ => panic!("family changed: {a} {b}"),
        };
        for (a, b) in [
            ("10.0.0.47", "10.0.0.129"),
            ("10.0.0.47", "10.0.1.1"),
            ("192.168.1.1", "192.168.200.3"),
            ("172.16.5.4", "8.8.8.8"),
            ("2001:db8::1", "2001:db8::ff"),
            ("2001:db8:1::1", "2001:db8:2::1"),
            ("fe80::1", "2001:db8::1"),
        ] {
            let (a, b) = (ip(a), ip(b));
            let (pa, pb) = (p.pseudonym(a), p.pseudonym(b));
            assert_eq!(common_prefix(a, b), common_prefix(pa, pb), "{a} {b} -> {pa} {pb}");
            assert_ne!(pa, a);
        }
    }

    #[test]
    fn the_cache_is_bounded_and_answers_like_the_cipher() {
        let key = IpKey::parse(SPEC_KEY).unwrap();
        let (mut p, cipher) = (Pseudonymizer::new(&key), Cipher::new(&key));
        for i in 0..(CACHE_ENTRIES as u32 + 10) {
            let a = IpAddr::V4(std::net::Ipv4Addr::from_bits(0x0a00_0000 + i));
            assert_eq!(p.pseudonym(a), cipher.pseudonym(a));
            assert!(p.cache.len() <= CACHE_ENTRIES);
        }
        let a = ip("10.0.0.1");
        assert_eq!(p.pseudonym(a), cipher.pseudonym(a));
    }

    #[test]
    fn keys_are_checked_and_never_printed() {
        let key = IpKey::parse(&format!("  {}\n", SPEC_KEY.to_uppercase())).unwrap();
        assert_eq!(key, IpKey::parse(SPEC_KEY).unwrap());
        assert_eq!(format!("{key:?}"), "IpKey(***)");
        assert!(!format!("{:?}", Cipher::new(&key)).contains("0123"));
        let mut p = Pseudonymizer::new(&key);
        p.pseudonym(ip("10.0.0.1"));
        assert_eq!(format!("{p:?}"), "Pseudonymizer { cached: 1, .. }");
        assert_eq!(IpKey::parse("abc"), Err(KeyError::Format(3)));
        assert_eq!(IpKey::parse(&"g".repeat(64)), Err(KeyError::Format(64)));
        assert_eq!(IpKey::parse(&"ab".repeat(32)), Err(KeyError::EqualHalves));
        let message = KeyError::Format(10).to_string();
        assert!(message.contains("64 hexadecimal digits"), "{message}");
    }

    #[test]
    fn addresses_are_found_in_every_spelling_alerts_use() {
        let text = "rate-10.0.0.5-1718 from 10.0.0.5:443 to [2001:db8::1]:80, sample 192.168.1.9. \
                    fe80::1 at 2024-02-13T14:34:38.788187000Z, score 0.25, v1.2.3 x10.0.0.1 \
                    ::ffff:10.1.2.3 cafe";
        let found: Vec<String> = addresses_in(text).into_iter().map(|(r, a)| format!("{}={a}", &text[r])).collect();
        assert_eq!(
            found,
            [
                "10.0.0.5=10.0.0.5",
                "10.0.0.5=10.0.0.5",
                "2001:db8::1=2001:db8::1",
                "192.168.1.9=192.168.1.9",
                "fe80::1=fe80::1",
                "::ffff:10.1.2.3=::ffff:10.1.2.3",
            ]
        );
    }

    #[test]
    fn reveal_text_restores_every_address() {
        let key = IpKey::parse(SPEC_KEY).unwrap();
        let mut p = Pseudonymizer::new(&key);
        let original = "10.0.0.5-fanout-17 10.0.0.5:443 -> [2001:db8::7]:80 and 8.8.8.8.";
        let hidden = replace_addresses(original, |a| p.pseudonym(a));
        assert!(!hidden.contains("10.0.0.5") && !hidden.contains("2001:db8::7"), "{hidden}");
        assert_eq!(reveal_text(&Cipher::new(&key), &hidden), original);
    }
}
