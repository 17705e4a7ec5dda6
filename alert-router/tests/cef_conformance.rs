//! The CEF lines of the syslog output, read by a strict CEF parser written here from the ArcSight CEF
//! specification ("Implementing ArcSight Common Event Format", CEF:0): the header's seven `|`-separated fields
//! with only `\|` and `\\` escapes and no line breaks, the extension's `key=value` pairs with only `\\`, `\=`,
//! `\n` and `\r` escapes (an unescaped `=` inside a value is an error: it would start a new key), every key from
//! the extension dictionary with its data type and length limit, no key twice, and every custom field with its
//! label. The parser is independent of the renderer (its own dictionary below), and negative controls show that it
//! refuses what the dictionary forbids (a 44-character `externalId`, an IPv6 address in `src`, …).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use netanom_alert_router::cef::cef;
use netanom_schemas::Alert;
use proptest::prelude::*;

/// CEF extension data types (the dictionary's "Data Type" column).
#[derive(Debug, Clone, Copy)]
enum Ty {
    /// String with a maximum length in characters.
    Str(usize),
    /// 32-bit signed integer.
    Int,
    /// Floating point number.
    Float,
    /// IPv4 address in dotted-quad notation.
    Ipv4,
    /// IPv6 address.
    Ipv6,
    /// Milliseconds since the epoch (the dictionary also allows `MMM dd yyyy HH:mm:ss` forms; netanom writes ms).
    TimeStamp,
}

/// The type of a custom field (`cs1`–`cs6` strings, `cn1`–`cn3` numbers, `cfp1`–`cfp4` floats, `c6a1`–`c6a4`
/// IPv6 addresses). The dictionary types `cn*` as Long; checking them as 32-bit integers is stricter.
fn custom(key: &str) -> Option<Ty> {
    let fields = [("cs", 6, Ty::Str(4000)), ("cn", 3, Ty::Int), ("cfp", 4, Ty::Float), ("c6a", 4, Ty::Ipv6)];
    fields.into_iter().find_map(|(prefix, max, ty)| {
        let n = key.strip_prefix(prefix)?.parse::<u8>().ok()?;
        (1..=max).contains(&n).then_some(ty)
    })
}

/// The CEF dictionary's type of extension key `key` (for the keys netanom may use), transcribed from the CEF
/// specification's extension dictionary; `None` for a key outside it. A custom field's label is a string.
fn dictionary(key: &str) -> Option<Ty> {
    Some(match key {
        "src" | "dst" => Ty::Ipv4,
        "shost" | "dhost" | "cat" | "msg" => Ty::Str(1023),
        "cnt" | "spt" | "dpt" => Ty::Int,
        "start" | "end" | "rt" => Ty::TimeStamp,
        "externalId" => Ty::Str(40),
        "act" => Ty::Str(63),
        "app" | "proto" => Ty::Str(31),
        k if k.strip_suffix("Label").and_then(custom).is_some() => Ty::Str(1023),
        k => return custom(k),
    })
}

/// Header field names and their maximum lengths (Version and Severity are checked separately).
const HEADER_LIMITS: [(&str, usize); 5] =
    [("Device Vendor", 63), ("Device Product", 63), ("Device Version", 31), ("Signature ID", 1023), ("Name", 512)];

/// A parsed CEF event.
#[derive(Debug)]
struct Event {
    header: Vec<String>,
    severity: String,
    ext: BTreeMap<String, String>,
}

/// Parses one CEF:0 line strictly.
fn parse(line: &str) -> Result<Event, String> {
    if line.contains(['\n', '\r']) {
        return Err("a line break in the event".into());
    }
    let rest = line.strip_prefix("CEF:0|").ok_or("not a CEF:0 event")?;
    // Six more header fields, each ended by an unescaped '|'.
    let mut header = Vec::new();
    let mut field = String::new();
    let mut chars = rest.char_indices();
    let mut ext_start = None;
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, e @ ('\\' | '|'))) => field.push(e),
                other => return Err(format!("header escape \\{:?} is not \\| or \\\\", other.map(|(_, c)| c))),
            },
            '|' => {
                header.push(std::mem::take(&mut field));
                if header.len() == 6 {
                    ext_start = Some(i + 1);
                    break;
                }
            }
            c => field.push(c),
        }
    }
    let ext_start = ext_start.ok_or(format!("{} header fields, want 7 (with the version)", header.len() + 1))?;
    let severity = header.pop().unwrap_or_default();
    let sev_ok = severity.parse::<u8>().is_ok_and(|s| s <= 10)
        || ["Unknown", "Low", "Medium", "High", "Very-High"].contains(&severity.as_str());
    if !sev_ok {
        return Err(format!("severity {severity:?} is neither 0-10 nor a severity name"));
    }
    for ((name, limit), value) in HEADER_LIMITS.iter().zip(&header) {
        if value.chars().count() > *limit {
            return Err(format!("header {name} is {} characters, over {limit}", value.chars().count()));
        }
        if value.is_empty() && *name != "Device Version" {
            return Err(format!("header {name} is empty"));
        }
    }
    let ext = parse_extension(&rest[ext_start..])?;
    check_dictionary(&ext)?;
    Ok(Event { header, severity, ext })
}

fn is_key(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Parses `key=value key=value …`: keys are `[A-Za-z0-9_]+`, separated from the previous value by one space;
/// the value runs to the last space before the next unescaped `=`.
fn parse_extension(ext: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    if ext.is_empty() {
        return Ok(out);
    }
    let (first, mut rest) = ext.split_once('=').ok_or("extension without key=value")?;
    let mut key = first.to_string();
    loop {
        if !is_key(&key) {
            return Err(format!("extension key {key:?} is not [A-Za-z0-9_]+"));
        }
        // Raw value up to the next unescaped '=' (or the end).
        let mut value = String::new();
        let mut raw_end = rest.len();
        let mut chars = rest.char_indices();
        // (index in `value`, index in `rest`) of the last unescaped space.
        let mut last_space: Option<(usize, usize)> = None;
        let mut next_key = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '=')) => value.push('='),
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, 'r')) => value.push('\r'),
                    other => {
                        return Err(format!(
                            "{key}: escape \\{:?} is not one of \\\\ \\= \\n \\r",
                            other.map(|(_, c)| c)
                        ));
                    }
                },
                '=' => {
                    let (vi, ri) = last_space.ok_or(format!("{key}: unescaped '=' inside the value"))?;
                    next_key = Some(rest[ri + 1..i].to_string());
                    value.truncate(vi);
                    raw_end = i + 1;
                    break;
                }
                ' ' => {
                    last_space = Some((value.len(), i));
                    value.push(' ');
                }
                c => value.push(c),
            }
        }
        if out.insert(key.clone(), value).is_some() {
            return Err(format!("key {key} appears twice"));
        }
        match next_key {
            Some(k) => {
                key = k;
                rest = &rest[raw_end..];
            }
            None => return Ok(out),
        }
    }
}

/// Every key in the dictionary, every value of its type and within its length, every custom field labelled.
fn check_dictionary(ext: &BTreeMap<String, String>) -> Result<(), String> {
    for (key, value) in ext {
        let ty = dictionary(key).ok_or(format!("{key} is not in the CEF dictionary"))?;
        let ok = match ty {
            Ty::Str(max) => value.chars().count() <= max,
            Ty::Int => value.parse::<i32>().is_ok(),
            Ty::Float => value.parse::<f64>().is_ok_and(f64::is_finite),
            Ty::Ipv4 => value.parse::<Ipv4Addr>().is_ok(),
            Ty::Ipv6 => value.parse::<Ipv6Addr>().is_ok(),
            Ty::TimeStamp => !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) && value.len() <= 13,
        };
        if !ok {
            return Err(format!("{key}={value:?} is not a CEF {ty:?}"));
        }
        if custom(key).is_some() && !ext.contains_key(&format!("{key}Label")) {
            return Err(format!("custom field {key} has no {key}Label"));
        }
    }
    Ok(())
}

/// An alert as the alerts topic carries it.
fn alert(kind: &str, host: &str, target: Option<&str>, reason: &str) -> Alert {
    serde_json::from_value(serde_json::json!({
        "id": format!("{kind}/{host}/1718000000000000000"), "host": host, "kind": kind,
        "score": 31.5, "threshold": 10.0, "count": 3, "reason": reason, "target": target,
        "first_seen": "2024-06-10T06:13:20.000000000Z", "last_seen": "2024-06-10T06:13:41.500000000Z",
        "detected_at": "2024-06-10T06:13:41.500000000Z", "model_version": "rules-v1",
        "sample": format!("{host}:4242 > 10.9.9.9:80 TCP [S] len 60"),
        "features": [{ "name": "pps", "value": 31.5, "baseline": null }],
    }))
    .unwrap()
}

fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Parses the CEF line of `a` and checks what every alert's line must say.
fn check(a: &Alert) -> Event {
    let line = cef(a);
    let e = parse(&line).unwrap_or_else(|err| panic!("{err}\n{line}"));
    assert_eq!(e.header[..3], ["netanom", "netanom", env!("CARGO_PKG_VERSION")]);
    assert_eq!(e.header[3], a.kind.to_string());
    assert_eq!(e.severity, "8", "31.5 over 10 is high");
    assert_eq!(e.ext["msg"], cut(&a.reason, 1023));
    assert_eq!(e.ext["cs3Label"], "alertId");
    assert_eq!(e.ext["cs3"], cut(&a.id, 4000));
    assert_eq!(e.ext["cs2"], cut(&a.sample, 4000));
    assert_eq!(e.ext["externalId"].len(), 40);
    assert_eq!((e.ext["start"].as_str(), e.ext["end"].as_str()), ("1718000000000", "1718000021500"));
    assert_eq!((e.ext["cfp1"].as_str(), e.ext["cfp2"].as_str()), ("31.5", "10"));
    e
}

#[test]
fn ipv4_goes_to_src_and_dst_ipv6_to_labelled_c6a_fields_names_to_hosts() {
    let e = check(&alert("fanout", "10.0.0.1", Some("10.9.9.9"), "fan-out 40 ports"));
    assert_eq!((e.ext["src"].as_str(), e.ext["dst"].as_str()), ("10.0.0.1", "10.9.9.9"));
    assert!(!e.ext.keys().any(|k| k.starts_with("c6a")));

    let host = "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff";
    let e = check(&alert("brute_force", host, Some("2001:db8::22"), "ssh"));
    assert!(!e.ext.contains_key("src") && !e.ext.contains_key("dst"), "{:?}", e.ext);
    assert_eq!((e.ext["c6a2"].as_str(), e.ext["c6a2Label"].as_str()), (host, "Source IPv6 Address"));
    assert_eq!((e.ext["c6a3"].as_str(), e.ext["c6a3Label"].as_str()), ("2001:db8::22", "Destination IPv6 Address"));
    assert!(e.ext["cs3"].len() > 40, "the id this externalId stands for is longer than 40");

    // Mixed families: each address in the field of its own family.
    let e = check(&alert("rate", "10.0.0.1", Some("fe80::1"), "r"));
    assert_eq!((e.ext["src"].as_str(), e.ext["c6a3"].as_str()), ("10.0.0.1", "fe80::1"));
    // IPv4-mapped IPv6 notation is IPv6 text: it stays out of src.
    let e = check(&alert("rate", "::ffff:10.0.0.1", None, "r"));
    assert_eq!(e.ext["c6a2"], "::ffff:10.0.0.1");
    assert!(!e.ext.contains_key("src"));

    // The victim is the destination.
    let e = check(&alert("victim", "2001:db8::9", Some("2001:db8::9"), "flood"));
    assert_eq!(e.ext["c6a3"], "2001:db8::9");
    assert!(!e.ext.contains_key("c6a2"));

    let e = check(&alert("rate", "db.internal", Some("cache.internal"), "r"));
    assert_eq!((e.ext["shost"].as_str(), e.ext["dhost"].as_str()), ("db.internal", "cache.internal"));
}

#[test]
fn escapes_and_limits_hold_for_hostile_text() {
    let reason = format!("a=b | c\\d\nnext\r line {}", "é=|\\ ".repeat(400));
    let mut a = alert("rate", "10.0.0.1", None, &reason);
    a.sample = "x=y ".repeat(1500);
    a.model_version = "rules=v1 | \\".into();
    a.count = u64::MAX;
    let e = check(&a);
    assert_eq!(e.ext["msg"].chars().count(), 1023, "cut at the dictionary limit");
    assert_eq!(e.ext["cs2"].chars().count(), 4000);
    assert_eq!(e.ext["cs1"], a.model_version);
    assert_eq!(e.ext["cnt"], i32::MAX.to_string(), "saturated to the CEF Integer");
    let long_host = "h".repeat(2000);
    let e = check(&alert("rate", &long_host, None, "r"));
    assert_eq!(e.ext["shost"].len(), 1023);
    assert_eq!(e.header[4].chars().count(), 512, "the header name is cut at 512");
}

#[test]
fn the_parser_refuses_what_the_dictionary_forbids() {
    let good = cef(&alert("rate", "10.0.0.1", Some("10.9.9.9"), "r"));
    parse(&good).unwrap();
    let bad = [
        // What the renderer wrote before: the alert id (44-54 characters) as externalId, IPv6 in src.
        good.replace(
            &format!("externalId={}", parse(&good).unwrap().ext["externalId"]),
            "externalId=brute_force/2001:db8::1/1718000000000000000",
        ),
        good.replace("src=10.0.0.1", "src=2001:db8::1"),
        good.replace("msg=r", "msg=a=b"),
        good.replace("msg=r", "msg=a\\tb"),
        good.replace("cs1Label=model ", ""),
        good.replace("msg=r", "msg=r unknownKey=1"),
        good.replace("msg=r", "msg=r cnt=4"),
        good.replace("cnt=3", "cnt=3000000000"),
        good.replace("|8|", "|11|"),
        good.replace("|rate|", "|ra\\te|"),
        good.replace("msg=r", "msg=r\nCEF:0|forged"),
        good.replace("CEF:0|", "CEF:0 "),
    ];
    for line in &bad {
        assert_ne!(line, &good, "the negative control did not change the line");
        assert!(parse(line).is_err(), "accepted: {line}");
    }
}

fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![Just('='), Just('\\'), Just('|'), Just('\n'), Just('\r'), Just(' '), any::<char>()],
        0..300,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn address() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u32>().prop_map(|a| Ipv4Addr::from(a).to_string()),
        any::<u128>().prop_map(|a| Ipv6Addr::from(a).to_string()),
        "[a-z][a-z0-9.-]{0,40}",
    ]
}

proptest! {
    #[test]
    fn every_alert_renders_to_a_strictly_valid_cef_line(
        host in address(),
        target in proptest::option::of(address()),
        reason in text(),
        sample in text(),
        model in text(),
        kind in prop::sample::select(vec!["rate", "fanout", "victim", "brute_force", "dns_tunnel", "isolation"]),
    ) {
        let mut a = alert(kind, &host, target.as_deref(), &reason);
        a.sample = sample;
        a.model_version = model;
        let e = check(&a);
        prop_assert_eq!(&e.ext["cs1"], &cut(&a.model_version, 4000));
        for (v4, v6) in [("src", "c6a2"), ("dst", "c6a3")] {
            prop_assert!(!(e.ext.contains_key(v4) && e.ext.contains_key(v6)));
        }
    }
}
