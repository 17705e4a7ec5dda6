//! Ground truth for `netanom eval` and `netanom report`: who attacked and who was attacked in a capture. Reads
//! two formats and must not look at traffic:
//!
//! - `host,role` CSV (as written by `netanom synth --labels`): one host per line, role `attacker`, `victim` or
//!   `benign` (unknown roles are an error naming the line).
//! - The catalogue of `../shared/data/labels.csv` (header starts with `file,traffic_class`): the row whose `file`
//!   the capture path ends with. `malicious_sources` and `victims_or_targets` are free text; every IPv4/IPv6
//!   address in them is taken (an `ip:port` keeps the ip; networks such as `10.0.0.0/24` are skipped). A row of
//!   class `benign` has no attacker whatever its text says. A `malicious_sources` text that speaks of
//!   reflectors, spoofed sources, "every source" or "all N source IPs" means every source host of the capture
//!   is an attacker ([`Labels::all_sources_attack`]). MAC-only attackers (ARP spoofing) are kept as MAC text;
//!   they never match an IP host, so they count as missed. An `attack_window` that starts the attack later
//!   than the first packet ("from t=13.6 s to the end", "EK from t_rel 4.6 s; C2 from t_rel 41.3 s") gives
//!   [`Labels::attack_from_s`], the earliest such start; other texts ("whole file", frame numbers) mean the
//!   whole capture.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// The labels of one capture.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Labels {
    /// Attacking hosts (address text, as in alerts).
    pub attackers: BTreeSet<String>,
    /// Attacked hosts.
    pub victims: BTreeSet<String>,
    /// Hosts labelled benign (informational: every unlabelled host counts as benign).
    pub benign: BTreeSet<String>,
    /// Every source host of the capture is an attacker (reflection and spoofed floods).
    pub all_sources_attack: bool,
    /// `traffic_class` of the catalogue row (`benign`, `mixed`, `attack_only`), or `labelled` for `host,role`.
    pub class: String,
    /// Seconds after the capture's first packet at which the attack starts, when the catalogue says so; before
    /// it, the attackers' traffic is not attack traffic. `None`: the whole capture.
    pub attack_from_s: Option<f64>,
}

/// Why labels could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    /// The file could not be read.
    #[error("cannot read labels {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("labels {path} line {line}: {message}")]
    Line {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The catalogue has no row for the capture.
    #[error("labels {path} has no row whose file the capture path {capture} ends with")]
    NoRow {
        /// The file.
        path: String,
        /// The capture.
        capture: String,
    },
}

/// Reads the labels of `capture` from `path` (either format, chosen by the header).
pub fn load(path: &Path, capture: &Path) -> Result<Labels, LabelsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| LabelsError::Read { path: path.display().to_string(), source })?;
    parse(&text, &path.display().to_string(), &capture.to_string_lossy())
}

/// Parses labels text; `capture` selects the catalogue row.
pub fn parse(text: &str, path: &str, capture: &str) -> Result<Labels, LabelsError> {
    let header = text.lines().next().unwrap_or_default().trim();
    if header.starts_with("file,traffic_class") { catalogue(text, path, capture) } else { host_role(text, path) }
}

fn host_role(text: &str, path: &str) -> Result<Labels, LabelsError> {
    let mut l = Labels { class: "labelled".into(), ..Labels::default() };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || (i == 0 && line.eq_ignore_ascii_case("host,role")) {
            continue;
        }
        let err = |message: String| LabelsError::Line { path: path.into(), line: i + 1, message };
        let (host, role) = line.split_once(',').ok_or_else(|| err(format!("expected host,role, got {line:?}")))?;
        let host = host.trim();
        let ip: IpAddr = host.parse().map_err(|_| err(format!("{host:?} is not an IP address")))?;
        let set = match role.trim() {
            "attacker" => &mut l.attackers,
            "victim" => &mut l.victims,
            "benign" => &mut l.benign,
            other => return Err(err(format!("role must be attacker, victim or benign, got {other:?}"))),
        };
        set.insert(ip.to_string());
    }
    Ok(l)
}

fn catalogue(text: &str, path: &str, capture: &str) -> Result<Labels, LabelsError> {
    let capture_norm = capture.replace('\\', "/");
    let mut best: Option<(usize, Vec<String>)> = None;
    for (i, line) in text.lines().enumerate().skip(1) {
        let f = split_csv(line);
        if f.len() < 6 {
            if line.trim().is_empty() {
                continue;
            }
            return Err(LabelsError::Line { path: path.into(), line: i + 1, message: "fewer than 6 columns".into() });
        }
        let file = f[0].trim();
        if !file.is_empty()
            && (capture_norm == file || capture_norm.ends_with(&format!("/{file}")))
            && best.as_ref().is_none_or(|(len, _)| file.len() > *len)
        {
            best = Some((file.len(), f));
        }
    }
    let (_, f) = best.ok_or_else(|| LabelsError::NoRow { path: path.into(), capture: capture.into() })?;
    let class = f[1].trim().to_string();
    let sources = f[3].to_ascii_lowercase();
    let mut l = Labels { class, ..Labels::default() };
    l.victims = addresses(&f[4]).0;
    if l.class == "benign" {
        return Ok(l);
    }
    l.attack_from_s = attack_start(f.get(5).map_or("", String::as_str));
    l.all_sources_attack = ["reflector", "spoofed", "every source"].iter().any(|k| sources.contains(k))
        || (sources.starts_with("all ") && sources.contains("source"));
    let (ips, macs) = addresses(&f[3]);
    l.attackers = if ips.is_empty() { macs } else { ips };
    if l.all_sources_attack {
        l.attackers.clear();
    }
    Ok(l)
}

/// The earliest `t=X s` / `t_rel X s` start in an attack-window text.
fn attack_start(text: &str) -> Option<f64> {
    let mut earliest: Option<f64> = None;
    for (at, marker) in text.match_indices("t=").chain(text.match_indices("t_rel")) {
        let rest = text[at + marker.len()..].trim_start_matches([' ', '=']);
        let number: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        let unit = rest[number.len()..].trim_start();
        if let Ok(v) = number.parse::<f64>()
            && unit.starts_with('s')
            && v.is_finite()
        {
            earliest = Some(earliest.map_or(v, |e| e.min(v)));
        }
    }
    earliest
}

/// The IP addresses and the MAC addresses named in free text.
fn addresses(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut ips, mut macs) = (BTreeSet::new(), BTreeSet::new());
    let tokens = text.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '(' | ')' | '[' | ']'));
    for token in tokens {
        let token = token.trim_end_matches(['.', ':']);
        if token.is_empty() || token.contains('/') {
            continue;
        }
        if let Ok(ip) = token.parse::<IpAddr>() {
            ips.insert(ip.to_string());
        } else if let Ok(sa) = token.parse::<SocketAddr>() {
            ips.insert(sa.ip().to_string());
        } else if let Some(ip) = token.rsplit_once(':').and_then(|(h, _)| h.parse::<std::net::Ipv4Addr>().ok()) {
            ips.insert(ip.to_string());
        } else if is_mac(token) {
            macs.insert(token.to_ascii_lowercase());
        }
    }
    (ips, macs)
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Splits one CSV line with double-quoted fields (`""` inside quotes is a quote), as labels.csv writes them.
pub fn split_csv(line: &str) -> Vec<String> {
    let (mut fields, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "file,traffic_class,category,malicious_sources,victims_or_targets,attack_window\n";

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn host_role_csv_reads_all_three_roles() {
        let l = parse("host,role\n10.0.0.1,attacker\n10.0.0.2,victim\n10.0.0.3,benign\n", "x", "c.pcap").unwrap();
        assert_eq!(l.attackers, set(&["10.0.0.1"]));
        assert_eq!(l.victims, set(&["10.0.0.2"]));
        assert_eq!(l.benign, set(&["10.0.0.3"]));
        assert!(!l.all_sources_attack);
    }

    #[test]
    fn host_role_csv_rejects_unknown_role_and_bad_host_naming_the_line() {
        let e = parse("host,role\n10.0.0.1,villain\n", "l.csv", "c").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("villain"), "{e}");
        let e = parse("host,role\nnot-an-ip,attacker\n", "l.csv", "c").unwrap_err().to_string();
        assert!(e.contains("not an IP"), "{e}");
    }

    #[test]
    fn catalogue_row_is_chosen_by_path_suffix_and_ports_and_networks_are_handled() {
        let text = format!(
            "{HEADER}a/scan.pcap,attack_only,x,192.168.1.10,192.168.1.25:80,whole\n\
             b/scan.pcap,attack_only,x,\"10.0.0.128 (MAC 00:0c:29:20:a8:7f)\",10.0.0.0/24:80,whole\n"
        );
        let l = parse(&text, "labels.csv", "/data/b/scan.pcap").unwrap();
        assert_eq!(l.attackers, set(&["10.0.0.128"]));
        assert!(l.victims.is_empty(), "a network is not a host: {:?}", l.victims);
        let l = parse(&text, "labels.csv", "/data/a/scan.pcap").unwrap();
        assert_eq!((l.attackers, l.victims), (set(&["192.168.1.10"]), set(&["192.168.1.25"])));
        assert!(matches!(parse(&text, "labels.csv", "/data/c/scan.pcap"), Err(LabelsError::NoRow { .. })));
    }

    #[test]
    fn catalogue_benign_rows_have_no_attacker_even_when_the_text_names_an_ip() {
        let text = format!(
            "{HEADER}d.pcap,benign,x,\"none (the anomaly comes from the ISP DNS 4.2.2.1 / Level3)\",172.16.16.170,n/a\n"
        );
        let l = parse(&text, "labels.csv", "d.pcap").unwrap();
        assert!(l.attackers.is_empty());
        assert_eq!(l.class, "benign");
    }

    #[test]
    fn catalogue_reflector_and_spoofed_texts_mean_every_source() {
        for text in [
            "\"~7,000 distinct reflector IPs (every source)\"",
            "all 60 source IPs",
            "\"about 9,700 random spoofed sources\"",
            "\"240 reflector/resolver IPs (top: 24.132.150.54, 95.214.104.15)\"",
        ] {
            let l = parse(&format!("{HEADER}f.pcap,attack_only,x,{text},10.10.10.10,whole\n"), "l", "f.pcap").unwrap();
            assert!(l.all_sources_attack, "{text}");
            assert!(l.attackers.is_empty(), "{text}");
            assert_eq!(l.victims, set(&["10.10.10.10"]));
        }
    }

    #[test]
    fn catalogue_attack_window_gives_the_earliest_start() {
        let row = |w: &str| format!("{HEADER}w.pcap,attack_only,x,10.0.0.1,10.0.0.2,\"{w}\"\n");
        let start = |w: &str| parse(&row(w), "l", "w.pcap").unwrap().attack_from_s;
        assert_eq!(start("from t=13.6 s to the end"), Some(13.6));
        assert_eq!(start("EK from t_rel 4.6 s; C2 from t_rel 41.3 s"), Some(4.6));
        assert_eq!(start("whole file (12.8 s)"), None);
        assert_eq!(start("attacker requests reuse the victim cookie from frame 115 on"), None);
        assert_eq!(start("t= s, t=x s, t_rel"), None, "malformed starts are ignored");
    }

    #[test]
    fn catalogue_lists_several_attackers_and_mac_only_attackers() {
        let text = format!(
            "{HEADER}e.pcap,attack_only,x,\"infected hosts 10.2.25.102, 10.3.29.101\",\"193.252.22.84:587, 104.161.127.22\",w\n\
             s.pcap,attack_only,x,MAC 00:E0:4d:3c:25:7b (the attacker; it claims both IPs),10.0.0.153,w\n"
        );
        let l = parse(&text, "l", "e.pcap").unwrap();
        assert_eq!(l.attackers, set(&["10.2.25.102", "10.3.29.101"]));
        assert_eq!(l.victims, set(&["193.252.22.84", "104.161.127.22"]));
        let l = parse(&text, "l", "s.pcap").unwrap();
        assert_eq!(l.attackers, set(&["00:e0:4d:3c:25:7b"]));
    }
}
