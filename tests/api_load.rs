//! The scoring API of a running `netanom run` process under hostile clients: slow headers, bodies that stall
//! half-way, bodies declared or streamed beyond the limit, and many bodies just under it, all at once from many
//! client addresses. The process's resident memory (`VmHWM` in /proc/<pid>/status) grows by no more than the
//! bodies the server can hold at once, and `/healthz` on the same listener keeps answering quickly.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{free_port, spawn_run, synth};

use netanom::telemetry::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_CLIENT};
use netanom_detector::api::{ANALYZE_PATH, MAX_BODY_BYTES, MAX_CONCURRENT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// hyper's largest read buffer per connection (its default `max_buf_size`: 8 KiB + 100 × 4 KiB).
const HYPER_READ_BUFFER: usize = 8192 + 4096 * 100;

/// `VmRSS` and `VmHWM` of `pid`, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process runs");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A connection to `server` from the loopback address `from` (each attacker has its own address, so that the
/// per-client connection limit is not what stops it).
async fn connect_from(from: IpAddr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(server).await
}

/// Attacker `i` of group `group`: address 127.0.`group`.x, [`MAX_CONNECTIONS_PER_CLIENT`]` / 4` attackers per
/// address.
fn attacker(group: u8, i: usize) -> IpAddr {
    let per_address = MAX_CONNECTIONS_PER_CLIENT / 4;
    IpAddr::V4(Ipv4Addr::new(127, 0, group, 1 + u8::try_from(i / per_address).unwrap()))
}

/// Reads what the server answers until it closes or `within` passes; returns the status code (0 for none).
async fn status_of(s: &mut TcpStream, within: Duration) -> u16 {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(within, s.read_to_end(&mut answer)).await;
    std::str::from_utf8(answer.get(9..12).unwrap_or_default()).ok().and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn head(addr: SocketAddr, extra: &str) -> String {
    format!("POST {ANALYZE_PATH} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{extra}\r\n")
}

/// A valid request of 4,096 small packets, padded with whitespace to `len` bytes.
fn just_under(len: usize) -> Vec<u8> {
    let packet = r#"{"ts_ns": 1, "destination": "10.0.0.2", "dst_port": 443, "ip_proto": 6, "wire_len": 60,
        "payload_len": 0, "tcp_flags": 2, "ttl": 64, "flow_packets": 1, "direction": "forward"}"#;
    let mut body = format!("{{\"source\": \"10.0.0.1\", \"packets\": [{}]", vec![packet; 4096].join(","));
    assert!(body.len() < len, "{} bytes of packets", body.len());
    body.push_str(&" ".repeat(len - body.len() - 1));
    body.push('}');
    body.into_bytes()
}

#[derive(Default)]
struct Tally {
    statuses: std::sync::Mutex<std::collections::BTreeMap<(&'static str, u16), u64>>,
    sent: AtomicU64,
}

impl Tally {
    fn count(&self, what: &'static str, status: u16) {
        *self.statuses.lock().unwrap().entry((what, status)).or_default() += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_oversized_clients_leave_memory_bounded_and_healthz_answering() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("benign.pcap");
    synth(&pcap, None, &["--attacks", "none"]);

    const QUEUE: usize = 8;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // The capture's 60 s of benign traffic in real time: the process serves throughout the attack.
    let mut child = spawn_run(
        &pcap,
        "1",
        &[
            ("NETANOM_TELEMETRY__LISTEN", &addr.to_string()),
            ("NETANOM_DETECTOR__API__QUEUE", &QUEUE.to_string()),
            ("NETANOM_DETECTOR__API__REQUEST_TIMEOUT", "3s"),
            ("NETANOM_LOG__LEVEL", "error"),
        ],
    );
    let pid = child.id().unwrap();
    let healthz = format!("http://{addr}/healthz");
    let deadline = Instant::now() + Duration::from_secs(60);
    while reqwest::get(&healthz).await.map(|r| r.status().as_u16()).ok() != Some(200) {
        assert!(Instant::now() < deadline, "/healthz never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Settled: the pipeline has started and the replay runs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (baseline, hwm_before) = memory(pid);

    // Connections by kind; every group stays within the per-client limit and all together within the server's.
    let (slow_headers, slow_bodies, declared_over, streamed_over, under) = (128usize, 96usize, 48usize, 48, 48);
    let total = slow_headers + slow_bodies + declared_over + streamed_over + under;
    assert!(total < MAX_CONNECTIONS, "{total} connections leave a slot for /healthz");
    let attack = Duration::from_secs(12);
    let end = Instant::now() + attack;
    let tally = Arc::new(Tally::default());
    let under_body = Arc::new(just_under(MAX_BODY_BYTES - 64));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..slow_headers {
        let tally = tally.clone();
        tasks.spawn(async move {
            // Half a request line and one header, then nothing: closed after the header timeout.
            let Ok(mut s) = connect_from(attacker(11, i), addr).await else { return tally.count("slow headers", 1) };
            let _ = s.write_all(format!("POST {ANALYZE_PATH} HTTP/1.1\r\nHost: {addr}\r\n").as_bytes()).await;
            let status = status_of(&mut s, HEADER_READ_TIMEOUT + Duration::from_secs(5)).await;
            tally.count("slow headers", status);
        });
    }
    for i in 0..slow_bodies {
        let tally = tally.clone();
        tasks.spawn(async move {
            while Instant::now() < end {
                // All but the last few bytes of a just-under-limit body, then a stall: 408 after the timeout.
                let Ok(mut s) = connect_from(attacker(12, i), addr).await else { continue };
                let len = MAX_BODY_BYTES - 64;
                let _ = s.write_all(head(addr, &format!("Content-Length: {len}\r\n")).as_bytes()).await;
                let _ = s.write_all(&vec![b' '; len - 16]).await;
                tally.sent.fetch_add((len - 16) as u64, Ordering::Relaxed);
                tally.count("slow body", status_of(&mut s, Duration::from_secs(10)).await);
            }
        });
    }
    for i in 0..declared_over {
        let tally = tally.clone();
        tasks.spawn(async move {
            while Instant::now() < end {
                let Ok(mut s) = connect_from(attacker(13, i), addr).await else { continue };
                let len = 4 * MAX_BODY_BYTES;
                let _ = s.write_all(head(addr, &format!("Content-Length: {len}\r\n")).as_bytes()).await;
                let _ = s.write_all(&vec![b' '; 64 * 1024]).await;
                tally.count("declared over", status_of(&mut s, Duration::from_secs(10)).await);
            }
        });
    }
    for i in 0..streamed_over {
        let tally = tally.clone();
        tasks.spawn(async move {
            while Instant::now() < end {
                // Chunked, no length: the server learns it is too large only by reading.
                let Ok(mut s) = connect_from(attacker(14, i), addr).await else { continue };
                let _ = s.write_all(head(addr, "Transfer-Encoding: chunked\r\n").as_bytes()).await;
                let chunk =
                    [format!("{:x}\r\n", 64 * 1024).into_bytes(), vec![b' '; 64 * 1024], b"\r\n".to_vec()].concat();
                for _ in 0..(2 * MAX_BODY_BYTES / (64 * 1024)) {
                    if s.write_all(&chunk).await.is_err() {
                        break;
                    }
                    tally.sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                tally.count("streamed over", status_of(&mut s, Duration::from_secs(10)).await);
            }
        });
    }
    for i in 0..under {
        let (tally, body) = (tally.clone(), under_body.clone());
        tasks.spawn(async move {
            while Instant::now() < end {
                let Ok(mut s) = connect_from(attacker(15, i), addr).await else { continue };
                let extra = format!("Content-Length: {}\r\nConnection: close\r\n", body.len());
                let _ = s.write_all(head(addr, &extra).as_bytes()).await;
                let _ = s.write_all(&body).await;
                tally.sent.fetch_add(body.len() as u64, Ordering::Relaxed);
                tally.count("just under", status_of(&mut s, Duration::from_secs(20)).await);
            }
        });
    }

    // Meanwhile: /healthz from its own address, and the process's memory.
    let mut latencies = Vec::new();
    let mut peak_rss = baseline;
    let probe = reqwest::Client::builder().timeout(Duration::from_secs(5)).pool_max_idle_per_host(0).build().unwrap();
    let watch_until = end + HEADER_READ_TIMEOUT;
    while Instant::now() < watch_until {
        let started = Instant::now();
        let status = probe.get(&healthz).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
        latencies.push(started.elapsed());
        assert_eq!(status, 200, "/healthz failed {:?} into the attack", started.duration_since(end - attack));
        peak_rss = peak_rss.max(memory(pid).0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while tasks.join_next().await.is_some() {}
    let (after, hwm) = memory(pid);

    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    let statuses = tally.statuses.lock().unwrap().clone();
    // What the limits allow the server to hold: per connection, a body and hyper's read buffer; the bodies being
    // parsed; and 64 MiB for everything else the process does meanwhile (the replay, the allocator's slack).
    let bound =
        (total * (MAX_BODY_BYTES + HYPER_READ_BUFFER) + (MAX_CONCURRENT + QUEUE) * MAX_BODY_BYTES) as u64 + (64 << 20);
    let growth = hwm.saturating_sub(baseline);
    println!(
        "attack {attack:?}, {total} connections, {:.0} MiB sent; statuses {statuses:?}\n\
         VmRSS baseline {:.1} MiB (VmHWM {:.1}), peak sampled VmRSS {:.1} MiB, VmHWM after {:.1} MiB \
         (growth {:.1} MiB, bound {:.1} MiB), VmRSS after {:.1} MiB\n\
         /healthz: {} answers, p50 {:?}, p99 {:?}, max {:?}",
        mib(tally.sent.load(Ordering::Relaxed)),
        mib(baseline),
        mib(hwm_before),
        mib(peak_rss),
        mib(hwm),
        mib(growth),
        mib(bound),
        mib(after),
        latencies.len(),
        p(0.5),
        p(0.99),
        latencies.last().unwrap(),
    );
    assert!(growth <= bound, "resident memory grew by {:.1} MiB, more than {:.1} MiB", mib(growth), mib(bound));
    assert!(*latencies.last().unwrap() < Duration::from_secs(1), "/healthz took {:?}", latencies.last());
    // Every kind of abuse got the answer it should, and nothing else.
    let answered = |what: &str, code: u16| statuses.get(&(what, code)).copied().unwrap_or(0);
    assert_eq!(answered("slow headers", 0), slow_headers as u64, "closed without an answer: {statuses:?}");
    assert!(answered("slow body", 408) > 0 && answered("declared over", 413) > 0, "{statuses:?}");
    assert!(answered("streamed over", 413) > 0, "{statuses:?}");
    for ((what, code), n) in &statuses {
        let expected: &[u16] = match *what {
            "slow headers" => &[0],
            "slow body" => &[408],
            "declared over" | "streamed over" => &[413],
            // Parsed (503: no model yet, or 200) or refused because the queue is full (503).
            _ => &[200, 503],
        };
        assert!(expected.contains(code), "{n} {what} answered {code}: {statuses:?}");
    }
    assert!(answered("just under", 200) + answered("just under", 503) > 0, "{statuses:?}");
    // The server serves again once the attack is over.
    let r = reqwest::Client::new()
        .post(format!("http://{addr}{ANALYZE_PATH}"))
        .header("content-type", "application/json")
        .body(under_body.to_vec())
        .send()
        .await
        .unwrap();
    assert!([200, 503].contains(&r.status().as_u16()), "{}", r.status());
    let _ = child.kill().await;
}
