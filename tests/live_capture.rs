//! Live capture through libpcap on a veth pair into a network namespace this test creates: a port scan from
//! inside the namespace, seen on the host side with a BPF filter, raises an alert naming the scanner; Ctrl-C
//! (SIGINT) stops the capture, drains the pipeline and prints the summary. Needs root (CI runs as root) and
//! iproute2; without root the test says so and passes.

use std::io::{Read as _, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

struct Namespace {
    name: String,
    host_if: String,
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("iproute2 `ip` runs (run .ci/setup)");
    assert!(status.success(), "ip {} failed: {status}", args.join(" "));
}

impl Namespace {
    /// Creates `ns` with `peer` inside (10.77.<n>.2/24) and `host_if` outside (10.77.<n>.1/24).
    fn create(n: u8) -> Self {
        let id = std::process::id();
        let (name, host_if, peer) = (format!("nanom{id}"), format!("nah{id}"), format!("nap{id}"));
        ip(&["netns", "add", &name]);
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &name]);
        ip(&["addr", "add", &format!("10.77.{n}.1/24"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&["-n", &name, "addr", "add", &format!("10.77.{n}.2/24"), "dev", &peer]);
        ip(&["-n", &name, "link", "set", &peer, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Self { name, host_if }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Starts `netanom ARGS` with info logs and waits until its producer reports the capture open (a fixed sleep
/// is too short on a loaded machine: packets sent before the capture opens are never seen). Returns the
/// child (stdout still piped) and its stderr so far. With `listen`, serves its probes and metrics there.
fn start_capture(args: &[&str], alerts: Option<&std::path::Path>, listen: Option<&str>) -> (Child, Arc<Mutex<String>>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_netanom"));
    command.args(args);
    if let Some(a) = alerts {
        command.arg("--alerts-out").arg(a);
    }
    if let Some(l) = listen {
        command.env("NETANOM_TELEMETRY__LISTEN", l);
    }
    let mut child = command
        .env("NETANOM_LOG__LEVEL", "info")
        .env("NETANOM_ALERT_ROUTER__SUPPRESSION__FLUSH_AFTER", "\"1s\"")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("netanom runs");
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("stderr piped");
    common::collect_lines(stderr, Arc::clone(&log));
    let opened =
        common::wait_for(Duration::from_secs(60), || log.lock().unwrap().contains("producer started").then_some(()));
    assert!(opened.is_some(), "the capture did not open within 60 s:\n{}", log.lock().unwrap());
    (child, log)
}

#[test]
fn live_capture_with_a_bpf_filter_alerts_on_a_scan_and_stops_cleanly_on_sigint() {
    if !is_root() {
        eprintln!("skipping: live capture needs root to create a network namespace");
        return;
    }
    let ns = Namespace::create(9);
    let tmp = tempfile::tempdir().unwrap();
    let alerts = tmp.path().join("alerts.jsonl");
    let listen = format!("127.0.0.1:{}", common::free_port());
    let (child, log) =
        start_capture(&["run", "--interface", &ns.host_if, "--filter", "tcp"], Some(&alerts), Some(&listen));

    // A TCP connect scan of 300 ports from inside the namespace (bash's /dev/tcp opens a connection), plus UDP
    // noise that the `tcp` filter must keep out.
    let scan = "for p in $(seq 1 300); do (exec 3<>/dev/tcp/10.77.9.1/$p) 2>/dev/null; done; \
                for i in $(seq 1 50); do echo x > /dev/udp/10.77.9.1/9999; done";
    let status = Command::new("ip")
        .args(["netns", "exec", &ns.name, "bash", "-c", scan])
        .status()
        .expect("the scan runs in the namespace");
    assert!(status.success(), "scan script failed: {status}");

    let found = common::wait_for(Duration::from_secs(30), || {
        common::read_alerts(&alerts).into_iter().find(|a| a["host"] == "10.77.9.2")
    });
    // Kernel drops are a live metric, sampled while the capture runs (not only in the summary at the end).
    let kernel_dropped = common::wait_for(Duration::from_secs(10), || {
        let mut c = std::net::TcpStream::connect(&listen).ok()?;
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: netanom\r\nConnection: close\r\n\r\n").ok()?;
        let mut metrics = String::new();
        c.read_to_string(&mut metrics).ok()?;
        metrics.lines().find(|l| l.starts_with("netanom_producer_kernel_dropped")).map(str::to_string)
    });
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let started = Instant::now();
    let out = child.wait_with_output().expect("netanom exits");
    let stdout = String::from_utf8_lossy(&out.stdout);
    std::thread::sleep(Duration::from_millis(100)); // the reader thread catches up
    let stderr = log.lock().unwrap().clone();
    assert!(started.elapsed() < Duration::from_secs(30), "SIGINT took {:?} to stop netanom", started.elapsed());
    assert!(out.status.success(), "netanom run exited with {}:\n{stdout}\n{stderr}", out.status);
    let alert = found.unwrap_or_else(|| panic!("no alert names the scanner 10.77.9.2:\n{stdout}\n{stderr}"));
    let kinds = common::by_kind(std::slice::from_ref(&alert));
    assert!(
        kinds.iter().any(|k| k["kind"] == "fanout" || k["kind"] == "rate"),
        "a scan is a fan-out or rate finding: {alert:#}"
    );
    assert!(stdout.contains("== netanom run summary =="), "no summary:\n{stdout}");
    let kernel_dropped = kernel_dropped.unwrap_or_else(|| panic!("no kernel drop gauge on /metrics:\n{stderr}"));
    assert!(kernel_dropped.split_whitespace().last().is_some_and(|v| v.parse::<f64>().is_ok()), "{kernel_dropped}");

    // The BPF filter decides what is read: with `udp and port 9999`, exactly the 50 datagrams sent.
    let (child, log) =
        start_capture(&["run", "--quiet", "--interface", &ns.host_if, "--filter", "udp and port 9999"], None, None);
    let udp = "for i in $(seq 1 50); do echo x > /dev/udp/10.77.9.1/9999; done; \
               for p in $(seq 1 20); do (exec 3<>/dev/tcp/10.77.9.1/$p) 2>/dev/null; done; true";
    let status = Command::new("ip").args(["netns", "exec", &ns.name, "bash", "-c", udp]).status().unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let out = child.wait_with_output().expect("netanom exits");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", log.lock().unwrap());
    assert!(stdout.contains("packets: read 50, parsed 50, published 50"), "the filter let other packets in:\n{stdout}");
}

/// The uid of `nobody` from the user database.
fn nobody_uid() -> Option<u32> {
    let out = Command::new("id").args(["-u", "nobody"]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The `/proc/<pid>/status` field `name` of every thread of `pid`, as `(tid, value)`.
fn thread_fields(pid: u32, name: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
        if let Some(v) = status.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':'))) {
            fields.push((task.file_name().to_string_lossy().into_owned(), v.trim().to_string()));
        }
    }
    fields
}

/// `tcpdump -Z` for netanom: `netanom run` capturing live on the loopback of a network namespace of its own,
/// with `[producer.capture] user = "nobody"`, runs as nobody with no capability in any thread once the capture
/// is open, and keeps counting the packets that arrive after that.
#[test]
fn a_live_capture_drops_to_nobody_with_no_capability_and_keeps_capturing() {
    if !is_root() {
        eprintln!("skipping: dropping privileges needs root to start with (and to create a network namespace)");
        return;
    }
    let Some(nobody) = nobody_uid() else {
        eprintln!("skipping: no user `nobody` on this system");
        return;
    };
    let ns = format!("nadrop{}", std::process::id());
    if !Command::new("ip").args(["netns", "add", &ns]).status().is_ok_and(|s| s.success()) {
        eprintln!("skipping: network namespaces are unavailable here (`ip netns add` failed)");
        return;
    }
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _cleanup = Cleanup(ns.clone());
    ip(&["-n", &ns, "link", "set", "lo", "up"]);

    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &ns, env!("CARGO_BIN_EXE_netanom")])
        .args(["run", "--quiet", "--interface", "lo", "--filter", "udp and port 9999"])
        .env("NETANOM_LOG__LEVEL", "info")
        .env("NETANOM_PRODUCER__CAPTURE__USER", "nobody")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("netanom runs in the namespace");
    let pid = child.id(); // `ip netns exec` executes netanom in its own process
    let log = Arc::new(Mutex::new(String::new()));
    common::collect_lines(child.stderr.take().unwrap(), Arc::clone(&log));
    let dropped = common::wait_for(Duration::from_secs(60), || {
        log.lock().unwrap().contains("capture privileges dropped").then_some(())
    });
    assert!(dropped.is_some(), "no privilege drop logged within 60 s:\n{}", log.lock().unwrap());

    // Every thread: no effective, permitted or ambient capability, and nobody's uid (real, effective, saved, fs).
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    let threads = thread_fields(pid, "CapEff");
    assert!(threads.len() > 3, "netanom run has its runtime and Kafka threads: {threads:?}");
    for set in ["CapEff", "CapPrm", "CapAmb", "CapInh"] {
        for (tid, v) in thread_fields(pid, set) {
            assert_eq!(v, "0000000000000000", "thread {tid} has {set} {v}");
        }
    }
    for (tid, v) in thread_fields(pid, "Uid") {
        assert!(v.split_whitespace().all(|u| u == nobody.to_string()), "thread {tid} runs as uid {v}");
    }
    assert!(thread_fields(pid, "NoNewPrivs").iter().all(|(_, v)| v == "1"), "no_new_privs not set");

    // Traffic after the drop is still captured: 50 datagrams on the namespace's loopback.
    let udp = "for i in $(seq 1 50); do echo x > /dev/udp/127.0.0.1/9999; done; true";
    let status = Command::new("ip").args(["netns", "exec", &ns, "bash", "-c", udp]).status().unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill").args(["-INT", &pid.to_string()]).status();
    let out = child.wait_with_output().expect("netanom exits");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", log.lock().unwrap());
    assert!(
        stdout.contains("packets: read 50, parsed 50, published 50"),
        "the capture stopped counting after the drop:\n{stdout}\n{}",
        log.lock().unwrap()
    );
}
