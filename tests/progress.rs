//! The file-reading progress bar: drawn on stderr when stderr is a terminal, never when it is a pipe or a file
//! (logs and CI output stay clean). The terminal is a real pseudo-terminal from util-linux `script`, which
//! records everything the program writes to it.

use std::path::Path;
use std::process::Command;

fn synth(pcap: &Path, packets: usize) {
    let out = Command::new(env!("CARGO_BIN_EXE_netanom"))
        .args(["synth", "--packets", &packets.to_string(), "--out"])
        .arg(pcap)
        .output()
        .expect("netanom synth runs");
    assert!(out.status.success(), "synth failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs `netanom run --quiet --pcap FILE` with its output on a pseudo-terminal; returns what it wrote there.
fn run_on_a_terminal(pcap: &Path, typescript: &Path) -> String {
    let command = format!("'{}' run --quiet --pcap '{}'", env!("CARGO_BIN_EXE_netanom"), pcap.display());
    let status = Command::new("script")
        .args(["--quiet", "--return", "--flush", "--command", &command])
        .arg(typescript)
        .env("TERM", "xterm")
        .status()
        .expect("util-linux `script` runs (Debian package bsdutils)");
    assert!(status.success(), "netanom run on a terminal failed: {status}");
    String::from_utf8_lossy(&std::fs::read(typescript).unwrap()).into_owned()
}

#[test]
fn progress_bar_is_drawn_on_a_terminal_and_not_on_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("p.pcap");
    synth(&pcap, 300_000);
    let file_len = std::fs::metadata(&pcap).unwrap().len();

    let terminal = run_on_a_terminal(&pcap, &dir.path().join("typescript"));
    assert!(terminal.contains("== netanom run summary =="), "no summary on the terminal:\n{terminal}");
    // indicatif draws `{bar} {bytes}/{total_bytes}`: the total is the file size in binary units.
    let total = format!("{:.2} MiB", file_len as f64 / (1024.0 * 1024.0));
    assert!(terminal.contains(&total), "no progress bar with total {total} on the terminal:\n{terminal}");
    assert!(terminal.contains('█') || terminal.contains('░'), "no bar characters on the terminal:\n{terminal}");

    let piped =
        Command::new(env!("CARGO_BIN_EXE_netanom")).args(["run", "--quiet", "--pcap"]).arg(&pcap).output().unwrap();
    assert!(piped.status.success());
    let (stdout, stderr) = (String::from_utf8_lossy(&piped.stdout), String::from_utf8_lossy(&piped.stderr));
    assert!(stdout.contains("== netanom run summary =="));
    for text in [&stdout, &stderr] {
        assert!(!text.contains(&total) && !text.contains('█'), "progress drawn on a pipe:\n{text}");
    }
}
