//! `netanom report` end to end: writes the HTML report of the synth scenario, renders it in headless Chromium
//! and checks the screenshot is a picture (many colours, many non-white pixels), not a blank page; then lays the
//! report out in Chromium with a script that measures every mark and checks each one lies inside its chart's
//! plot area, and that the alert timeline holds one mark per alert the report drew (by id). Chromium is
//! required: `.ci/setup` installs it (Debian package `chromium`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{netanom, synth};

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let p = Path::new(dir).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("headless Chromium is not installed: run .ci/setup (it installs the Debian package `chromium`)");
}

/// Headless Chromium with a throw-away profile and nothing that reaches the network.
fn headless(profile: &Path) -> Command {
    let mut c = Command::new(chromium());
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// Measures the laid-out report: the marks outside their chart's plot area and the alert ids of the timeline's
/// marks, written into the page for `--dump-dom`.
const MEASURE: &str = r#"<script>
const outside = [];
for (const svg of document.querySelectorAll('svg.chart')) {
  const area = svg.querySelector('.plot-area').getBoundingClientRect();
  for (const el of svg.querySelectorAll('.plot *')) {
    if (el.tagName === 'title') continue;
    const r = el.getBoundingClientRect();
    if (r.left < area.left - 0.5 || r.right > area.right + 0.5 || r.top < area.top - 0.5 || r.bottom > area.bottom + 0.5) {
      outside.push(svg.id + ':' + el.tagName);
    }
  }
}
const marks = [...document.querySelectorAll('[data-alert]')].map(e => e.getAttribute('data-alert'));
const pre = document.createElement('pre');
pre.id = 'measured';
pre.textContent = 'charts=' + document.querySelectorAll('svg.chart').length + ' outside=' + outside.join(',') +
  ' marks=' + marks.join(',') + ' end';
document.body.appendChild(pre);
</script>"#;

#[test]
fn report_of_the_synth_scenario_renders_to_a_non_blank_picture() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, labels, html) =
        (dir.path().join("s.pcap"), dir.path().join("labels.csv"), dir.path().join("report.html"));
    let alerts_path = dir.path().join("alerts.jsonl");
    synth(&pcap, Some(&labels), &[]);
    netanom(&[
        "report".as_ref(),
        "--pcap".as_ref(),
        pcap.as_os_str(),
        "--labels".as_ref(),
        labels.as_os_str(),
        "--out".as_ref(),
        html.as_os_str(),
        "--alerts-out".as_ref(),
        alerts_path.as_os_str(),
    ]);
    let text = std::fs::read_to_string(&html).unwrap();
    assert_eq!(text.matches("<svg").count(), 6, "six charts");
    assert!(!text.contains("src=") && !text.contains("href="), "self-contained: no external asset");
    assert!(text.contains("class=\"attacker\""), "labelled attackers are marked in the tables");

    let png_path = dir.path().join("shot.png");
    let profile = dir.path().join("profile");
    let out = headless(&profile)
        .arg(format!("--screenshot={}", png_path.display()))
        .arg("--window-size=1200,1600")
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium runs");
    assert!(png_path.exists(), "chromium wrote no screenshot: {}", String::from_utf8_lossy(&out.stderr));

    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png_path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert!(channels >= 3, "an RGB screenshot, got {:?}", info.color_type);
    let (mut colours, mut non_white, mut red) = (std::collections::BTreeSet::new(), 0usize, 0usize);
    for px in buf[..info.buffer_size()].chunks(channels) {
        let (r, g, b) = (px[0], px[1], px[2]);
        colours.insert((r, g, b));
        if (r, g, b) != (255, 255, 255) {
            non_white += 1;
        }
        if r > 180 && g < 80 && b < 80 {
            red += 1;
        }
    }
    let total = (info.width * info.height) as usize;
    assert!(colours.len() > 50, "only {} distinct colours: a blank page?", colours.len());
    assert!(non_white > total / 50, "only {non_white} of {total} pixels are not white");
    assert!(red > 100, "the alerted hosts' packets and the threshold line are drawn in red ({red} red pixels)");

    // Every mark inside its chart's plot area, and one timeline mark per alert.
    let measured_html = dir.path().join("measured.html");
    std::fs::write(&measured_html, text.replace("</body>", &format!("{MEASURE}</body>"))).unwrap();
    let out = headless(&profile)
        .args(["--dump-dom", "--virtual-time-budget=5000"])
        .arg(format!("file://{}", measured_html.display()))
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout);
    let measured = dom
        .split("<pre id=\"measured\">")
        .nth(1)
        .and_then(|rest| rest.split(" end</pre>").next())
        .unwrap_or_else(|| panic!("no measurement in the page: {}", String::from_utf8_lossy(&out.stderr)));
    let field = |name: &str| {
        measured.split(' ').find_map(|f| f.strip_prefix(&format!("{name}="))).unwrap_or_default().to_string()
    };
    assert_eq!(field("charts"), "6", "{measured}");
    assert_eq!(field("outside"), "", "marks drawn outside their chart's plot area");
    let marks: std::collections::BTreeSet<String> =
        field("marks").split(',').filter(|m| !m.is_empty()).map(str::to_string).collect();
    let alerts: std::collections::BTreeSet<String> = std::fs::read_to_string(&alerts_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!alerts.is_empty(), "the scenario raises alerts");
    assert_eq!(marks, alerts, "the timeline's marks are the alerts the report drew");
}

#[test]
fn report_of_a_capture_without_packets_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, html) = (dir.path().join("empty.pcap"), dir.path().join("report.html"));
    // A pcap file header and no record.
    let mut header = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
    header.extend([0; 8]);
    header.extend(65_535u32.to_le_bytes());
    header.extend(1u32.to_le_bytes());
    std::fs::write(&pcap, header).unwrap();
    netanom(&["report".as_ref(), "--pcap".as_ref(), pcap.as_os_str(), "--out".as_ref(), html.as_os_str()]);
    let text = std::fs::read_to_string(&html).unwrap();
    assert!(text.contains("holds no packet netanom could read") && !text.contains("<svg"), "{text}");
}
