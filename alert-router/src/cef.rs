//! ArcSight Common Event Format (CEF) rendering of an alert, within the CEF dictionary's field types and length
//! limits (ArcSight "Implementing ArcSight Common Event Format", the extension dictionary): the syslog output
//! ([`crate::syslog`]) sends these lines.
//!
//! `CEF:0|netanom|netanom|<version>|<kind>|<title>|<severity 0-10>|<extension>`. Header fields escape `\` and `|`
//! (and carry no line breaks: they become spaces); extension values escape `\` and `=` and write line breaks as
//! `\n` / `\r`. Extension keys and their dictionary types:
//!
//! | key | value | CEF type (limit) |
//! |---|---|---|
//! | `src` / `dst` | an IPv4 source / destination address | IPv4 Address |
//! | `c6a2` / `c6a3` | an IPv6 source / destination address, labelled by `c6a2Label` / `c6a3Label` | IPv6 Address |
//! | `shost` / `dhost` | a source / destination that is not an IP address | String (1023) |
//! | `cnt` | repeats collapsed into the alert (saturated at 2^31-1) | Integer |
//! | `start` / `end` | first and last packet time, epoch ms | Time Stamp |
//! | `externalId` | the first 40 hex digits of SHA-256 of `id#revision`: stable, so a SIEM can deduplicate | String (40) |
//! | `cat` | the detector kind | String (1023) |
//! | `cs1` `model` | model or rule-set version | String (4000) |
//! | `cs2` `sample` | summary of a triggering packet | String (4000) |
//! | `cs3` `alertId` | the full alert (incident) id of the alerts topic and the webhooks | String (4000) |
//! | `cs4` `kinds` | every kind of the incident, comma-separated | String (4000) |
//! | `cs5` `final` | `true` on the incident's closing revision, else `false` | String (4000) |
//! | `cn1` `revision` | the incident's revision | Integer |
//! | `cfp1` `score`, `cfp2` `threshold` | | Floating Point |
//! | `msg` | the reason | String (1023) |
//!
//! IPv4 addresses (including IPv4-mapped IPv6 written in IPv6 notation, which stays in `c6a*`) never go into the
//! IPv6 fields and IPv6 addresses never into `src`/`dst`, which CEF:0 types as IPv4. Values longer than their
//! limit are cut at the limit (in characters, before escaping); the header's name (512), vendor and product (63),
//! version (31) and signature id (1023) likewise.

use std::net::IpAddr;

use netanom_schemas::Alert;
use sha2::{Digest as _, Sha256};

use crate::format::{PRODUCT, PRODUCT_VERSION, Severity, endpoints, epoch_ms};

/// Longest header Device Vendor and Device Product.
pub const MAX_VENDOR: usize = 63;
/// Longest header Device Version.
pub const MAX_VERSION: usize = 31;
/// Longest header Device Event Class ID (signature id).
pub const MAX_SIGNATURE: usize = 1023;
/// Longest header Name.
pub const MAX_NAME: usize = 512;
/// Longest `externalId`.
pub const MAX_EXTERNAL_ID: usize = 40;
/// Longest `msg`, `cat`, `shost`, `dhost` and custom-field label.
pub const MAX_STRING: usize = 1023;
/// Longest custom string (`csN`).
pub const MAX_CUSTOM_STRING: usize = 4000;

/// `s` cut to at most `max` characters.
fn fit(s: &str, max: usize) -> &str {
    s.char_indices().nth(max).map_or(s, |(i, _)| &s[..i])
}

/// `s` with each character that `rule` maps replaced by its replacement.
fn escape(s: &str, rule: impl Fn(char) -> Option<&'static str>) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match rule(c) {
            Some(replacement) => out.push_str(replacement),
            None => out.push(c),
        }
    }
    out
}

/// Escapes a CEF header field: `\` and `|`; line breaks become spaces.
pub fn escape_header(s: &str) -> String {
    escape(s, |c| match c {
        '\\' => Some("\\\\"),
        '|' => Some("\\|"),
        '\r' | '\n' => Some(" "),
        _ => None,
    })
}

/// Escapes a CEF extension value: `\`, `=`, and line breaks as `\n` / `\r`.
pub fn escape_value(s: &str) -> String {
    escape(s, |c| match c {
        '\\' => Some("\\\\"),
        '=' => Some("\\="),
        '\n' => Some("\\n"),
        '\r' => Some("\\r"),
        _ => None,
    })
}

/// The CEF `externalId` of an alert id: the first 40 hex digits of its SHA-256 (the id itself is up to ~60
/// characters, over the dictionary's 40; it travels whole in `cs3`).
pub fn external_id(alert_id: &str) -> String {
    let digest = Sha256::digest(alert_id.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..MAX_EXTERNAL_ID].to_string()
}

/// The CEF line of `alert` (see the module documentation).
pub fn cef(alert: &Alert) -> String {
    let severity = Severity::of(alert);
    let title = format!("netanom {} anomaly: {}", alert.kind, alert.host);
    let mut ext: Vec<(&str, String)> = Vec::new();
    let (src, dst) = endpoints(alert);
    for (addr, v4_key, v6_key, v6_label_key, v6_label, name_key) in [
        (src, "src", "c6a2", "c6a2Label", "Source IPv6 Address", "shost"),
        (dst, "dst", "c6a3", "c6a3Label", "Destination IPv6 Address", "dhost"),
    ] {
        match addr.map(|a| (a, a.parse::<IpAddr>())) {
            None => {}
            Some((_, Ok(IpAddr::V4(ip)))) => ext.push((v4_key, ip.to_string())),
            Some((_, Ok(IpAddr::V6(ip)))) => {
                ext.push((v6_key, ip.to_string()));
                ext.push((v6_label_key, v6_label.into()));
            }
            Some((name, Err(_))) => ext.push((name_key, fit(name, MAX_STRING).to_string())),
        }
    }
    ext.push(("cnt", alert.count.min(i32::MAX as u64).to_string()));
    ext.push(("start", epoch_ms(alert.first_seen).to_string()));
    ext.push(("end", epoch_ms(alert.last_seen).to_string()));
    ext.push(("externalId", external_id(&alert.delivery_id())));
    let kind = alert.kind.to_string();
    ext.push(("cat", fit(&kind, MAX_STRING).to_string()));
    ext.push(("cs1Label", "model".into()));
    ext.push(("cs1", fit(&alert.model_version, MAX_CUSTOM_STRING).to_string()));
    ext.push(("cs2Label", "sample".into()));
    ext.push(("cs2", fit(&alert.sample, MAX_CUSTOM_STRING).to_string()));
    ext.push(("cs3Label", "alertId".into()));
    ext.push(("cs3", fit(&alert.id, MAX_CUSTOM_STRING).to_string()));
    let kinds: Vec<&str> = alert.kind_list().into_iter().map(|k| k.as_str()).collect();
    ext.push(("cs4Label", "kinds".into()));
    ext.push(("cs4", fit(&kinds.join(","), MAX_CUSTOM_STRING).to_string()));
    ext.push(("cs5Label", "final".into()));
    ext.push(("cs5", alert.final_revision.to_string()));
    ext.push(("cn1Label", "revision".into()));
    ext.push(("cn1", alert.revision.min(i32::MAX as u64).to_string()));
    ext.push(("cfp1Label", "score".into()));
    ext.push(("cfp1", alert.score.to_string()));
    ext.push(("cfp2Label", "threshold".into()));
    ext.push(("cfp2", alert.threshold.to_string()));
    // msg last: the longest free text.
    ext.push(("msg", fit(&alert.reason, MAX_STRING).to_string()));
    let extension: Vec<String> = ext.iter().map(|(k, v)| format!("{k}={}", escape_value(v))).collect();
    format!(
        "CEF:0|{vendor}|{product}|{version}|{kind}|{title}|{sev}|{ext}",
        vendor = escape_header(fit(PRODUCT, MAX_VENDOR)),
        product = escape_header(fit(PRODUCT, MAX_VENDOR)),
        version = escape_header(fit(PRODUCT_VERSION, MAX_VERSION)),
        kind = escape_header(fit(&kind, MAX_SIGNATURE)),
        title = escape_header(fit(&title, MAX_NAME)),
        sev = severity.cef(),
        ext = extension.join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_escapes_pipe_and_backslash() {
        assert_eq!(escape_header(r"a|b\c"), r"a\|b\\c");
        assert_eq!(escape_header("a=b\nc"), "a=b c", "= is literal in the header, line breaks are not allowed");
    }

    #[test]
    fn extension_escapes_equals_backslash_and_line_breaks() {
        assert_eq!(escape_value(r"a=b\c"), r"a\=b\\c");
        assert_eq!(escape_value("l1\nl2\r"), r"l1\nl2\r");
        assert_eq!(escape_value("a|b"), "a|b", "pipes are literal in extension values");
        assert!(!escape_value("x\ny\rz").contains(['\n', '\r']));
    }

    #[test]
    fn fit_cuts_at_a_character_boundary() {
        assert_eq!(fit("abc", 5), "abc");
        assert_eq!(fit("abcdef", 3), "abc");
        assert_eq!(fit("ééé", 2), "éé");
        assert_eq!(fit("", 0), "");
    }

    #[test]
    fn external_id_is_40_stable_hex_digits() {
        let a = external_id("brute_force/2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/1718000000000000000");
        assert_eq!(a.len(), MAX_EXTERNAL_ID);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, external_id("brute_force/2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/1718000000000000000"));
        assert_ne!(a, external_id("rate/10.0.0.1/1718000000000000000"));
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.
        assert_eq!(external_id("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a3");
    }
}
