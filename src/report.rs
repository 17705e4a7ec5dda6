//! `netanom report`: runs the pipeline over a capture and writes one self-contained HTML file (inline SVG, no
//! script, no external asset): packet sizes with the packets of alerted hosts marked, new connections per second
//! of the top alerted hosts against the rate threshold with alert markers, the distribution of alert scores
//! (score ÷ threshold), top talkers and top alerted hosts. It draws what [`crate::traffic`] and the alerts of
//! [`crate::offline::alerts`] say;
//! it computes no metric (that is `netanom eval`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use netanom_schemas::{Alert, format_rfc3339};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::labels::Labels;
use crate::traffic::{SIZE_BIN, SIZE_BINS, Traffic};

const W: f64 = 1000.0;
const H: f64 = 260.0;
const PAD_L: f64 = 60.0;
const PAD_R: f64 = 20.0;
const PAD_T: f64 = 20.0;
const PAD_B: f64 = 40.0;
/// Colours of the timeline series.
const SERIES: [&str; 4] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"];

/// `netanom report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The capture (pcap or pcapng).
    #[arg(long)]
    pub pcap: PathBuf,
    /// Optional labels (same formats as `netanom eval`); attackers are marked in the tables.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// The HTML file to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `netanom report`.
pub async fn command(
    args: &ReportArgs,
    cfg: Config,
    stop: CancellationToken,
    hard: CancellationToken,
) -> anyhow::Result<()> {
    let labels = match &args.labels {
        Some(p) => Some(crate::labels::load(p, &args.pcap)?),
        None => None,
    };
    let traffic = crate::traffic::scan(&args.pcap, &cfg.producer.flow)?;
    let threshold = cfg.detector.rate.threshold_per_sec;
    let (_, alerts) = crate::offline::alerts(cfg, &args.pcap, stop, hard).await?;
    let html = render(&args.pcap.display().to_string(), &traffic, &alerts, labels.as_ref(), threshold);
    std::fs::write(&args.out, html).with_context(|| format!("cannot write {}", args.out.display()))?;
    println!("wrote {} ({} hosts, {} alerts)", args.out.display(), traffic.hosts.len(), alerts.len());
    Ok(())
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn svg_open(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<h2>{}</h2><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         font-family=\"sans-serif\" font-size=\"11\"><rect width=\"{W}\" height=\"{H}\" fill=\"#fff\"/>",
        esc(title)
    );
}

/// Axes with a y label, x label, and y ticks at 0 and `y_max`.
fn axes(out: &mut String, x_label: &str, y_label: &str, y_max: &str) {
    let (x0, y0, x1, y1) = (PAD_L, H - PAD_B, W - PAD_R, PAD_T);
    let _ = write!(
        out,
        "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#333\"/>\
         <line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{y1}\" stroke=\"#333\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\
         <text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">{}</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
        (x0 + x1) / 2.0,
        H - 8.0,
        esc(x_label),
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0,
        esc(y_label),
        x0 - 4.0,
        y0,
        x0 - 4.0,
        y1 + 8.0,
        esc(y_max)
    );
}

fn x_tick(out: &mut String, x: f64, label: &str) {
    let y = H - PAD_B;
    let _ = write!(
        out,
        "<line x1=\"{x:.1}\" y1=\"{y}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#333\"/>\
         <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        y + 4.0,
        y + 15.0,
        esc(label)
    );
}

/// Packet-size histogram, log-scaled counts, the packets of alerted hosts stacked in red.
fn size_histogram(out: &mut String, traffic: &Traffic, alerted: &BTreeSet<String>) {
    let mut flagged = [0u64; SIZE_BINS];
    let mut other = [0u64; SIZE_BINS];
    for (h, t) in &traffic.hosts {
        let into = if alerted.contains(h) { &mut flagged } else { &mut other };
        for (i, n) in t.sizes.iter().enumerate() {
            into[i] += n;
        }
    }
    let max = flagged.iter().chain(&other).copied().max().unwrap_or(0).max(1);
    let scale = |n: u64| (1.0 + n as f64).log10() / (1.0 + max as f64).log10() * (H - PAD_T - PAD_B);
    svg_open(out, "Packet sizes: packets of alerted hosts (red) and of all other hosts (grey)");
    axes(out, "packet size on the wire (bytes)", "packets (log scale)", &max.to_string());
    let bw = (W - PAD_L - PAD_R) / SIZE_BINS as f64;
    let y0 = H - PAD_B;
    for i in 0..SIZE_BINS {
        let x = PAD_L + i as f64 * bw;
        let (lo, hi) = (i as u32 * SIZE_BIN, (i as u32 + 1) * SIZE_BIN);
        for (n, dx, fill, whose) in
            [(other[i], 1.0, "#9aa5b1", "other hosts"), (flagged[i], bw / 2.0, "#d62728", "alerted hosts")]
        {
            let h = scale(n);
            let _ = write!(
                out,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{fill}\">\
                 <title>{lo}-{hi} B: {n} packets from {whose}</title></rect>",
                x + dx,
                y0 - h,
                bw / 2.0 - 1.0
            );
        }
        if i % 4 == 0 {
            x_tick(out, x, &(i as u32 * SIZE_BIN).to_string());
        }
    }
    out.push_str("</svg>");
}

/// New connections per second of the top alerted hosts, with the rate threshold and alert markers.
fn timelines(out: &mut String, traffic: &Traffic, alerts: &[Alert], top: &[String], threshold: f64) {
    svg_open(
        out,
        "New connections per second of the top alerted hosts (dashed: rate threshold; ▼ first_seen of each alert)",
    );
    let start_ns = traffic.hosts.values().map(|h| h.first_ns).min().unwrap_or(0);
    let end_ns = traffic.hosts.values().map(|h| h.last_ns).max().unwrap_or(0);
    let span = ((end_ns - start_ns) as f64 / 1e9).max(1.0);
    let peak = top
        .iter()
        .filter_map(|h| traffic.hosts.get(h))
        .flat_map(|t| t.opens_per_sec.values())
        .copied()
        .max()
        .unwrap_or(0) as f64;
    let y_max = peak.max(threshold) * 1.1;
    axes(out, "seconds since the first packet", "new connections / s", &format!("{y_max:.0}"));
    let x = |secs: f64| PAD_L + secs / span * (W - PAD_L - PAD_R);
    let y = |v: f64| H - PAD_B - v / y_max * (H - PAD_T - PAD_B);
    for i in 0..=4 {
        let s = span * f64::from(i) / 4.0;
        x_tick(out, x(s), &format!("{s:.1}"));
    }
    let _ = write!(
        out,
        "<line x1=\"{PAD_L}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#d62728\" stroke-dasharray=\"6 4\"/>\
         <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#d62728\">threshold {threshold}/s</text>",
        W - PAD_R,
        y(threshold),
        y(threshold),
        W - PAD_R,
        y(threshold) - 4.0
    );
    for (i, host) in top.iter().enumerate() {
        let colour = SERIES[i % SERIES.len()];
        if let Some(t) = traffic.hosts.get(host) {
            let start_s = start_ns.div_euclid(1_000_000_000);
            let pts: Vec<String> = t
                .opens_per_sec
                .iter()
                .map(|(sec, n)| format!("{:.1},{:.1}", x((sec - start_s) as f64 + 0.5), y(f64::from(*n))))
                .collect();
            if pts.len() == 1 {
                let _ = write!(out, "<circle cx=\"{}\" r=\"3\" fill=\"{colour}\"/>", pts[0].replace(',', "\" cy=\""));
            } else if !pts.is_empty() {
                let _ = write!(
                    out,
                    "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
                    pts.join(" ")
                );
            }
        }
        for a in alerts.iter().filter(|a| &a.host == host) {
            if let Ok(ns) = i64::try_from(a.first_seen.unix_timestamp_nanos()) {
                let ax = x((ns - start_ns) as f64 / 1e9);
                let _ = write!(
                    out,
                    "<path d=\"M{:.1} {PAD_T} l-5 -9 h10 z\" transform=\"translate(0 9)\" fill=\"{colour}\">\
                     <title>{} alert on {}</title></path>",
                    ax,
                    esc(a.kind.as_str()),
                    esc(host)
                );
            }
        }
        let _ = write!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{colour}\"/>\
             <text x=\"{}\" y=\"{}\">{}</text>",
            PAD_L + 10.0,
            PAD_T + 8.0 + 14.0 * i as f64,
            PAD_L + 24.0,
            PAD_T + 17.0 + 14.0 * i as f64,
            esc(host)
        );
    }
    out.push_str("</svg>");
}

/// Histogram of score ÷ threshold over all alerts (bins of 0.25 up to 5, then one overflow bin).
fn score_distribution(out: &mut String, alerts: &[Alert]) {
    const BINS: usize = 21;
    let mut counts = [0u64; BINS];
    for a in alerts {
        let r = if a.threshold > 0.0 { a.score / a.threshold } else { a.score };
        counts[((r.max(0.0) / 0.25) as usize).min(BINS - 1)] += 1;
    }
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    svg_open(out, "Alert scores (score ÷ threshold; 1 = at the threshold)");
    axes(out, "score ÷ threshold (last bar: 5 and above)", "alerts", &max.to_string());
    let bw = (W - PAD_L - PAD_R) / BINS as f64;
    for (i, n) in counts.iter().enumerate() {
        let h = *n as f64 / max as f64 * (H - PAD_T - PAD_B);
        let x = PAD_L + i as f64 * bw;
        let _ = write!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"#1f77b4\"><title>{n}</title></rect>",
            x + 1.0,
            H - PAD_B - h,
            bw - 2.0
        );
        if i % 4 == 0 {
            x_tick(out, x, &format!("{:.0}", i as f64 * 0.25));
        }
    }
    out.push_str("</svg>");
}

fn role(labels: Option<&Labels>, host: &str) -> &'static str {
    match labels {
        Some(l) if l.attackers.contains(host) || (l.all_sources_attack && !l.victims.contains(host)) => "attacker",
        Some(l) if l.victims.contains(host) => "victim",
        Some(_) => "benign",
        None => "",
    }
}

fn time_text(ns: i64) -> String {
    netanom_schemas::format_rfc3339_ns(ns)
}

/// Per alerted host: max score ÷ threshold, alerts, kinds, earliest first_seen.
type HostAlerts<'a> = (f64, u64, BTreeSet<&'a str>, String);

/// The whole HTML document.
pub fn render(capture: &str, traffic: &Traffic, alerts: &[Alert], labels: Option<&Labels>, threshold: f64) -> String {
    let mut by_host: BTreeMap<&str, HostAlerts<'_>> = BTreeMap::new();
    for a in alerts {
        let r = if a.threshold > 0.0 { a.score / a.threshold } else { a.score };
        let first_seen = format_rfc3339(a.first_seen);
        let e = by_host.entry(&a.host).or_insert_with(|| (0.0, 0, BTreeSet::new(), first_seen.clone()));
        e.0 = e.0.max(r);
        e.1 += 1;
        e.2.insert(a.kind.as_str());
        if first_seen < e.3 {
            e.3 = first_seen;
        }
    }
    let mut top_alerted: Vec<(&str, &HostAlerts<'_>)> = by_host.iter().map(|(h, v)| (*h, v)).collect();
    top_alerted.sort_by(|a, b| b.1.0.total_cmp(&a.1.0).then(a.0.cmp(b.0)));
    let alerted: BTreeSet<String> = by_host.keys().map(|h| h.to_string()).collect();
    let top_hosts: Vec<String> = top_alerted.iter().take(4).map(|(h, _)| h.to_string()).collect();
    let packets: u64 = traffic.hosts.values().map(|h| h.packets).sum();

    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>netanom report: {cap}</title>\
         <style>body{{font-family:sans-serif;margin:24px;color:#222;background:#fff}}\
         table{{border-collapse:collapse;margin:8px 0 24px}}td,th{{border:1px solid #ccc;padding:3px 8px;\
         text-align:right}}td:first-child,th:first-child{{text-align:left}}th{{background:#eef}}\
         .attacker{{color:#d62728;font-weight:bold}}</style></head><body>\
         <h1>netanom report</h1><p>Capture <code>{cap}</code>: {packets} packets from {hosts} source hosts \
         ({skipped} frames skipped); {alerts} alerts on {ah} hosts.</p>",
        cap = esc(capture),
        hosts = traffic.hosts.len(),
        skipped = traffic.skipped,
        alerts = alerts.len(),
        ah = by_host.len()
    );
    size_histogram(&mut out, traffic, &alerted);
    timelines(&mut out, traffic, alerts, &top_hosts, threshold);
    score_distribution(&mut out, alerts);

    out.push_str(
        "<h2>Top alerted hosts</h2><table><tr><th>host</th><th>label</th><th>kinds</th><th>alerts</th>\
                  <th>max score ÷ threshold</th><th>first alert</th><th>first packet</th></tr>",
    );
    for (h, (r, n, kinds, first)) in top_alerted.iter().take(20) {
        let role = role(labels, h);
        let first_packet = traffic.hosts.get(*h).map_or_else(|| "(not a source)".into(), |t| time_text(t.first_ns));
        let kinds: Vec<&str> = kinds.iter().copied().collect();
        let _ = write!(
            out,
            "<tr class=\"{role}\"><td>{}</td><td>{role}</td><td>{}</td><td>{n}</td><td>{r:.2}</td><td>{}</td>\
             <td>{}</td></tr>",
            esc(h),
            esc(&kinds.join(", ")),
            esc(first),
            esc(&first_packet)
        );
    }
    out.push_str("</table>");

    let mut talkers: Vec<(&String, &crate::traffic::HostTraffic)> = traffic.hosts.iter().collect();
    talkers.sort_by(|a, b| b.1.packets.cmp(&a.1.packets).then(a.0.cmp(b.0)));
    out.push_str(
        "<h2>Top talkers</h2><table><tr><th>host</th><th>label</th><th>packets</th><th>bytes</th>\
                  <th>new connections</th><th>alerts</th><th>first packet</th></tr>",
    );
    for (h, t) in talkers.iter().take(15) {
        let role = role(labels, h);
        let opens: u32 = t.opens_per_sec.values().sum();
        let n = by_host.get(h.as_str()).map_or(0, |v| v.1);
        let _ = write!(
            out,
            "<tr class=\"{role}\"><td>{}</td><td>{role}</td><td>{}</td><td>{}</td><td>{opens}</td><td>{n}</td>\
             <td>{}</td></tr>",
            esc(h),
            t.packets,
            t.bytes,
            time_text(t.first_ns)
        );
    }
    out.push_str("</table><p>Made by <code>netanom report</code>.</p></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::HostTraffic;

    #[test]
    fn render_escapes_and_marks_alerted_packets() {
        let mut t = Traffic::default();
        let mut h = HostTraffic { first_ns: 0, last_ns: 2_000_000_000, packets: 3, bytes: 180, ..Default::default() };
        h.sizes[1] = 3;
        h.opens_per_sec.insert(0, 2);
        h.opens_per_sec.insert(1, 1);
        t.hosts.insert("10.0.0.1".into(), h);
        let alert = crate::test_alerts::alert("10.0.0.1", "rate", 400.0, 200.0, "1970-01-01T00:00:01Z");
        let html = render("<a&b>.pcap", &t, &[alert], None, 200.0);
        assert!(html.contains("&lt;a&amp;b&gt;.pcap") && !html.contains("<a&b>"));
        assert!(html.contains("50-100 B: 3 packets from alerted hosts"), "the alerted host's packets are marked");
        assert!(html.contains("50-100 B: 0 packets from other hosts"));
        assert!(html.contains("<polyline") && html.contains("rate alert on 10.0.0.1"));
        assert!(!html.contains("http://") || html.matches("http://").count() == 3, "only SVG namespaces");
        assert!(html.contains("<td>2.00</td>"));
    }
}
