//! `netanom report` end to end: writes the HTML report of the synth scenario, renders it in headless Chromium
//! and checks the screenshot is a picture (many colours, many non-white pixels), not a blank page. Chromium is
//! required: `.ci/setup` installs it (Debian package `chromium`).

use std::path::{Path, PathBuf};
use std::process::Command;

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

fn netanom(args: &[&std::ffi::OsStr]) {
    let out = Command::new(env!("CARGO_BIN_EXE_netanom")).args(args).output().expect("netanom runs");
    assert!(out.status.success(), "netanom {args:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
}

#[test]
fn report_of_the_synth_scenario_renders_to_a_non_blank_picture() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, labels, html) =
        (dir.path().join("s.pcap"), dir.path().join("labels.csv"), dir.path().join("report.html"));
    netanom(&["synth".as_ref(), "--out".as_ref(), pcap.as_os_str(), "--labels".as_ref(), labels.as_os_str()]);
    netanom(&[
        "report".as_ref(),
        "--pcap".as_ref(),
        pcap.as_os_str(),
        "--labels".as_ref(),
        labels.as_os_str(),
        "--out".as_ref(),
        html.as_os_str(),
    ]);
    let text = std::fs::read_to_string(&html).unwrap();
    assert_eq!(text.matches("<svg").count(), 3, "three charts");
    assert!(!text.contains("src=") && !text.contains("href="), "self-contained: no external asset");
    assert!(text.contains("class=\"attacker\""), "labelled attackers are marked in the tables");

    let png_path = dir.path().join("shot.png");
    let profile = dir.path().join("profile");
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
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
}
