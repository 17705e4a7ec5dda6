//! `netanom report`: runs the pipeline over a capture and writes one self-contained HTML file (inline SVG, no
//! script, no external asset): packet sizes over time with the anomalous packets marked (the packets of a host
//! inside one of its alerts' windows), one timeline of the alerts (each from its first to its last evidence
//! packet, ◆ where it was detected), alert scores over time against their thresholds, new connections per second
//! of the top alerted hosts against the rate threshold, packet sizes of alerted and other hosts, top alerted
//! hosts and top talkers. Every mark is drawn inside its chart's plot area (values outside it are clamped to
//! its edge), and a capture with no packet or no alert says so instead of drawing empty charts. It draws what
//! [`crate::traffic`] and the alerts of [`crate::offline::alerts`] say; it computes no metric (that is
//! `netanom eval`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use netanom_schemas::{Alert, format_rfc3339};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::labels::Labels;
use crate::traffic::{SIZE_BIN, SIZE_BINS, SizeTimeGrid, TIME_COLUMNS, Traffic};

const W: f64 = 1000.0;
const H: f64 = 260.0;
const PAD_L: f64 = 60.0;
const PAD_R: f64 = 20.0;
const PAD_T: f64 = 20.0;
const PAD_B: f64 = 40.0;
/// Hosts drawn in the alert timeline (the earliest alerted first).
const TIMELINE_ROWS: usize = 16;
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
    /// Also write the alerts the report draws, as JSON lines (the alert format of `--alerts-out` elsewhere).
    #[arg(long)]
    pub alerts_out: Option<PathBuf>,
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
    let flow = cfg.producer.flow.clone();
    let (_, alerts) = crate::offline::alerts(cfg, &args.pcap, stop, hard).await?;
    let mut windows: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for a in &alerts {
        windows.entry(a.host.clone()).or_default().push((ns_of(a.first_seen), ns_of(a.last_seen)));
    }
    let grid = crate::traffic::size_time_grid(&args.pcap, &flow, capture_span(&traffic), &windows)?;
    let html = render(&args.pcap.display().to_string(), &traffic, &grid, &alerts, labels.as_ref(), threshold);
    std::fs::write(&args.out, html).with_context(|| format!("cannot write {}", args.out.display()))?;
    if let Some(path) = &args.alerts_out {
        let mut lines = String::new();
        for a in &alerts {
            lines.push_str(&serde_json::to_string(a).context("cannot encode an alert")?);
            lines.push('\n');
        }
        std::fs::write(path, lines).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("wrote {} ({} hosts, {} alerts)", args.out.display(), traffic.hosts.len(), alerts.len());
    Ok(())
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Packet time of `t`, ns since the epoch (saturating at the ends of the range).
fn ns_of(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(if t.unix_timestamp() < 0 { i64::MIN } else { i64::MAX })
}

/// First and last packet time of the capture (0, 0 when it holds none).
fn capture_span(traffic: &Traffic) -> (i64, i64) {
    let start = traffic.hosts.values().map(|h| h.first_ns).min().unwrap_or(0);
    let end = traffic.hosts.values().map(|h| h.last_ns).max().unwrap_or(0);
    (start, end)
}

/// Opens chart `id`: its title, the SVG, and the plot area (`class="plot-area"`) that every mark stays in.
fn svg_open(out: &mut String, id: &str, title: &str) {
    let _ = write!(
        out,
        "<h2>{}</h2><svg id=\"{id}\" class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"11\"><rect width=\"{W}\" height=\"{H}\" \
         fill=\"#fff\"/><rect class=\"plot-area\" x=\"{PAD_L}\" y=\"{PAD_T}\" width=\"{}\" height=\"{}\" fill=\"none\"/>",
        esc(title),
        W - PAD_L - PAD_R,
        H - PAD_T - PAD_B
    );
}

/// The x of a value on a linear scale `lo..hi` over the plot area, clamped to it.
fn plot_x(v: f64, lo: f64, hi: f64) -> f64 {
    let f = if hi > lo { ((v - lo) / (hi - lo)).clamp(0.0, 1.0) } else { 0.0 };
    PAD_L + f * (W - PAD_L - PAD_R)
}

/// The y of a value on a linear scale `0..max` over the plot area, clamped to it.
fn plot_y(v: f64, max: f64) -> f64 {
    let f = if max > 0.0 { (v / max).clamp(0.0, 1.0) } else { 0.0 };
    H - PAD_B - f * (H - PAD_T - PAD_B)
}

/// X ticks for seconds since `start_ns` over `start_ns..end_ns`.
fn time_ticks(out: &mut String, (start_ns, end_ns): (i64, i64)) {
    let span = (end_ns.saturating_sub(start_ns) as f64 / 1e9).max(1.0);
    for i in 0..=4 {
        let s = span * f64::from(i) / 4.0;
        x_tick(out, plot_x(s, 0.0, span), &format!("{s:.1}"));
    }
}

/// Seconds from `start_ns` to `ns`.
fn secs_since(ns: i64, start_ns: i64) -> f64 {
    ns.saturating_sub(start_ns) as f64 / 1e9
}

/// The prototype's figure: packet sizes over time, normal packets in grey (darker for more packets), anomalous
/// packets (inside an alert window of their host) as red marks.
fn size_time(out: &mut String, grid: &SizeTimeGrid) {
    svg_open(
        out,
        "sizes-over-time",
        "Packet sizes over time: anomalous packets (inside an alert window of their host) in red, the others in grey",
    );
    axes(out, "seconds since the first packet", "packet size (bytes)", &format!("{}", SIZE_BINS as u32 * SIZE_BIN));
    let span = ((grid.end_ns - grid.start_ns) as f64 / 1e9).max(1.0);
    time_ticks(out, (grid.start_ns, grid.end_ns));
    let cw = (W - PAD_L - PAD_R) / TIME_COLUMNS as f64;
    let bh = (H - PAD_T - PAD_B) / SIZE_BINS as f64;
    let peak = grid.normal.iter().flat_map(|c| c.iter()).copied().max().unwrap_or(0).max(1);
    out.push_str("<g class=\"plot\">");
    for (c, (normal, anomalous)) in grid.normal.iter().zip(&grid.anomalous).enumerate() {
        let x = PAD_L + c as f64 * cw;
        let secs = c as f64 / TIME_COLUMNS as f64 * span;
        for bin in 0..SIZE_BINS {
            let y = H - PAD_B - (bin + 1) as f64 * bh;
            let lo = bin as u32 * SIZE_BIN;
            if normal[bin] > 0 {
                let shade = 0.25 + 0.75 * (1.0 + f64::from(normal[bin])).ln() / (1.0 + f64::from(peak)).ln();
                let _ = write!(
                    out,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cw:.2}\" height=\"{bh:.2}\" fill=\"#5f6b7a\" \
                     fill-opacity=\"{shade:.2}\"><title>{secs:.1} s, {lo}+ B: {} packets</title></rect>",
                    normal[bin]
                );
            }
            if anomalous[bin] > 0 {
                let _ = write!(
                    out,
                    "<circle class=\"anomalous\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"{:.1}\" fill=\"#d62728\">\
                     <title>{secs:.1} s, {lo}+ B: {} anomalous packets</title></circle>",
                    x + cw / 2.0,
                    y + bh / 2.0,
                    (bh / 2.0).min(cw.max(2.0)),
                    anomalous[bin]
                );
            }
        }
    }
    out.push_str("</g></svg>");
}

/// One row per alerted host (the first `rows` by earliest alert): each alert a bar from its first to its last
/// evidence packet, ◆ at the packet that crossed a threshold. Every bar carries its alert's id.
fn incident_timeline(out: &mut String, alerts: &[Alert], span_ns: (i64, i64), rows: &[&str]) {
    svg_open(
        out,
        "incidents",
        "Alerts over time, one row per host: a bar from the first to the last evidence packet, ◆ where it was detected",
    );
    axes(out, "seconds since the first packet", "", "");
    let span = (span_ns.1.saturating_sub(span_ns.0) as f64 / 1e9).max(1.0);
    time_ticks(out, span_ns);
    let row_h = (H - PAD_T - PAD_B) / rows.len().max(1) as f64;
    out.push_str("<g class=\"plot\">");
    for (i, host) in rows.iter().enumerate() {
        let y = PAD_T + i as f64 * row_h;
        let colour = SERIES[i % SERIES.len()];
        for a in alerts.iter().filter(|a| a.host == *host) {
            let x0 = plot_x(secs_since(ns_of(a.first_seen), span_ns.0), 0.0, span);
            let x1 = plot_x(secs_since(ns_of(a.last_seen), span_ns.0), 0.0, span).max(x0 + 2.0).min(W - PAD_R);
            let _ = write!(
                out,
                "<rect data-alert=\"{}\" x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\" \
                 fill-opacity=\"0.6\"><title>{} on {}: {} anomalies, {} to {}</title></rect>",
                esc(&a.id),
                y + row_h * 0.2,
                (x1 - x0).max(0.0),
                row_h * 0.6,
                esc(a.kind.as_str()),
                esc(host),
                a.count,
                format_rfc3339(a.first_seen),
                format_rfc3339(a.last_seen)
            );
            if let Some(at) = a.detected_at {
                let dx = plot_x(secs_since(ns_of(at), span_ns.0), 0.0, span);
                let r = (row_h * 0.3).min(5.0);
                let cy = y + row_h / 2.0;
                let _ = write!(
                    out,
                    "<path d=\"M{dx:.1} {:.1} l{r:.1} {r:.1} l-{r:.1} {r:.1} l-{r:.1} -{r:.1} z\" fill=\"#222\"/>",
                    cy - r
                );
            }
        }
    }
    out.push_str("</g>");
    for (i, host) in rows.iter().enumerate() {
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"9\">{}</text>",
            PAD_L - 2.0,
            PAD_T + (i as f64 + 0.6) * row_h,
            esc(host)
        );
    }
    out.push_str("</svg>");
}

/// Each alert's score ÷ threshold at the time it was detected (its first_seen when that is unknown), coloured
/// by kind, against the threshold (1, dashed).
fn scores_over_time(out: &mut String, alerts: &[Alert], span_ns: (i64, i64)) {
    svg_open(out, "scores", "Alert scores over time (score ÷ threshold; dashed: the threshold)");
    let ratio = |a: &Alert| if a.threshold > 0.0 { a.score / a.threshold } else { a.score };
    let y_max = alerts.iter().map(ratio).fold(1.0_f64, f64::max).min(1e6) * 1.1;
    axes(out, "seconds since the first packet", "score ÷ threshold", &format!("{y_max:.1}"));
    let span = (span_ns.1.saturating_sub(span_ns.0) as f64 / 1e9).max(1.0);
    time_ticks(out, span_ns);
    let _ = write!(
        out,
        "<g class=\"plot\"><line x1=\"{PAD_L}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#d62728\" \
         stroke-dasharray=\"6 4\"/>",
        W - PAD_R,
        y = plot_y(1.0, y_max)
    );
    let kinds: Vec<&str> = alerts.iter().map(|a| a.kind.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
    for a in alerts {
        let at = a.detected_at.unwrap_or(a.first_seen);
        let colour = SERIES[kinds.iter().position(|k| *k == a.kind.as_str()).unwrap_or(0) % SERIES.len()];
        let _ = write!(
            out,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{colour}\"><title>{} on {}: {:.2}</title></circle>",
            plot_x(secs_since(ns_of(at), span_ns.0), 0.0, span),
            plot_y(ratio(a), y_max),
            esc(a.kind.as_str()),
            esc(&a.host),
            ratio(a)
        );
    }
    out.push_str("</g>");
    for (i, k) in kinds.iter().enumerate() {
        let _ = write!(
            out,
            "<circle cx=\"{}\" cy=\"{}\" r=\"4\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            W - PAD_R - 110.0,
            PAD_T + 6.0 + 14.0 * i as f64,
            SERIES[i % SERIES.len()],
            W - PAD_R - 100.0,
            PAD_T + 10.0 + 14.0 * i as f64,
            esc(k)
        );
    }
    out.push_str("</svg>");
}

/// Axes with a y label, x label, and y ticks at 0 and `y_max` (none when `y_max` is empty).
fn axes(out: &mut String, x_label: &str, y_label: &str, y_max: &str) {
    let (x0, y0, x1, y1) = (PAD_L, H - PAD_B, W - PAD_R, PAD_T);
    let zero = if y_max.is_empty() { "" } else { "0" };
    let _ = write!(
        out,
        "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#333\"/>\
         <line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{y1}\" stroke=\"#333\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\
         <text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">{}</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{zero}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
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
    svg_open(out, "sizes", "Packet sizes: packets of alerted hosts (red) and of all other hosts (grey)");
    axes(out, "packet size on the wire (bytes)", "packets (log scale)", &max.to_string());
    out.push_str("<g class=\"plot\">");
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
    }
    out.push_str("</g>");
    for i in (0..SIZE_BINS).step_by(4) {
        x_tick(out, PAD_L + i as f64 * bw, &(i as u32 * SIZE_BIN).to_string());
    }
    out.push_str("</svg>");
}

/// New connections per second of the top alerted hosts, with the rate threshold.
fn timelines(out: &mut String, traffic: &Traffic, top: &[String], threshold: f64) {
    svg_open(out, "rates", "New connections per second of the top alerted hosts (dashed: rate threshold)");
    let (start_ns, end_ns) = capture_span(traffic);
    let span = (end_ns.saturating_sub(start_ns) as f64 / 1e9).max(1.0);
    let peak = top
        .iter()
        .filter_map(|h| traffic.hosts.get(h))
        .flat_map(|t| t.opens_per_sec.values())
        .copied()
        .max()
        .unwrap_or(0) as f64;
    let y_max = peak.max(threshold) * 1.1;
    axes(out, "seconds since the first packet", "new connections / s", &format!("{y_max:.0}"));
    time_ticks(out, (start_ns, end_ns));
    let y = plot_y(threshold, y_max);
    let _ = write!(
        out,
        "<g class=\"plot\"><line x1=\"{PAD_L}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#d62728\" \
         stroke-dasharray=\"6 4\"/>",
        W - PAD_R
    );
    let start_s = start_ns.div_euclid(1_000_000_000);
    for (i, host) in top.iter().enumerate() {
        let colour = SERIES[i % SERIES.len()];
        let Some(t) = traffic.hosts.get(host) else { continue };
        let pts: Vec<String> = t
            .opens_per_sec
            .iter()
            .map(|(sec, n)| {
                let secs = sec.saturating_sub(start_s) as f64 + 0.5;
                format!("{:.1},{:.1}", plot_x(secs, 0.0, span), plot_y(f64::from(*n), y_max))
            })
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
    out.push_str("</g>");
    let _ = write!(
        out,
        "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#d62728\">threshold {threshold}/s</text>",
        W - PAD_R,
        (y - 4.0).max(PAD_T + 10.0)
    );
    for (i, host) in top.iter().enumerate() {
        let _ = write!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            PAD_L + 10.0,
            PAD_T + 8.0 + 14.0 * i as f64,
            SERIES[i % SERIES.len()],
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
    svg_open(out, "score-distribution", "Alert scores (score ÷ threshold; 1 = at the threshold)");
    axes(out, "score ÷ threshold (last bar: 5 and above)", "alerts", &max.to_string());
    let bw = (W - PAD_L - PAD_R) / BINS as f64;
    out.push_str("<g class=\"plot\">");
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
    }
    out.push_str("</g>");
    for i in (0..BINS).step_by(4) {
        x_tick(out, PAD_L + i as f64 * bw, &format!("{:.0}", i as f64 * 0.25));
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
pub fn render(
    capture: &str,
    traffic: &Traffic,
    grid: &SizeTimeGrid,
    alerts: &[Alert],
    labels: Option<&Labels>,
    threshold: f64,
) -> String {
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
    if packets == 0 {
        out.push_str(
            "<p class=\"empty\">The capture holds no packet netanom could read: there is nothing to draw.</p>\
             <p>Made by <code>netanom report</code>.</p></body></html>\n",
        );
        return out;
    }
    size_time(&mut out, grid);
    if alerts.is_empty() {
        out.push_str("<p class=\"no-alert\">No alert: netanom raised no alert on this capture.</p>");
    } else {
        let mut rows: Vec<(&str, &HostAlerts<'_>)> = by_host.iter().map(|(h, v)| (*h, v)).collect();
        rows.sort_by(|a, b| a.1.3.cmp(&b.1.3).then(a.0.cmp(b.0)));
        let drawn: Vec<&str> = rows.iter().take(TIMELINE_ROWS).map(|(h, _)| *h).collect();
        incident_timeline(&mut out, alerts, capture_span(traffic), &drawn);
        if rows.len() > TIMELINE_ROWS {
            let _ = write!(
                out,
                "<p>The timeline shows the first {TIMELINE_ROWS} of {} alerted hosts; the tables list them all.</p>",
                rows.len()
            );
        }
        scores_over_time(&mut out, alerts, capture_span(traffic));
        timelines(&mut out, traffic, &top_hosts, threshold);
        score_distribution(&mut out, alerts);
    }
    size_histogram(&mut out, traffic, &alerted);

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
        let mut grid = SizeTimeGrid::new(0, 2_000_000_000);
        grid.add(0, 60, false);
        grid.add(1_000_000_000, 60, true);
        // An alert whose window starts before the capture: its bar starts at the chart's left edge.
        let mut alert = crate::test_alerts::alert("10.0.0.1", "rate", 400.0, 200.0, "1970-01-01T00:00:01Z");
        alert.first_seen = time::OffsetDateTime::UNIX_EPOCH - time::Duration::seconds(60);
        let html = render("<a&b>.pcap", &t, &grid, &[alert], None, 200.0);
        assert!(html.contains("&lt;a&amp;b&gt;.pcap") && !html.contains("<a&b>"));
        assert!(html.contains("50-100 B: 3 packets from alerted hosts"), "the alerted host's packets are marked");
        assert!(html.contains("50-100 B: 0 packets from other hosts"));
        assert!(html.contains("1.0 s, 50+ B: 1 anomalous packets") && html.contains("0.0 s, 50+ B: 1 packets"));
        assert!(html.contains("<polyline") && html.contains("rate on 10.0.0.1: 1 anomalies"));
        assert!(html.contains(&format!("data-alert=\"10.0.0.1-rate\" x=\"{PAD_L:.1}\"")), "clamped to the plot area");
        assert!(!html.contains("http://") || html.matches("http://").count() == 6, "only SVG namespaces");
        assert!(html.contains("<td>2.00</td>"));
        assert_eq!(html.matches("class=\"chart\"").count(), 6);
    }

    #[test]
    fn an_empty_capture_and_a_capture_without_alerts_say_so() {
        let grid = SizeTimeGrid::new(0, 0);
        let html = render("empty.pcap", &Traffic::default(), &grid, &[], None, 200.0);
        assert!(html.contains("holds no packet netanom could read") && !html.contains("<svg"), "{html}");
        let mut t = Traffic::default();
        t.hosts.insert("10.0.0.1".into(), HostTraffic { packets: 1, ..Default::default() });
        let html = render("quiet.pcap", &t, &grid, &[], None, 200.0);
        assert!(html.contains("No alert: netanom raised no alert on this capture."));
        assert_eq!(html.matches("class=\"chart\"").count(), 2, "packet sizes over time and the size histogram");
    }
}
