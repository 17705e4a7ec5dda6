//! Privacy, end to end through `netanom run` against a real Kafka broker (tansu) whose topics the test reads
//! back afterwards:
//! - with `[producer.pseudonymize]` on, no address of a real capture of `../shared/data` appears in any record of
//!   any topic (keys, headers, decoded values), in the alerts file, or on stdout or stderr (debug logs); the
//!   alerts are those of the same run without pseudonyms, address for address, once `netanom reveal` has
//!   restored them;
//! - no payload byte is stored: packets whose payloads carry a marker string leave it in no output.
//!
//! Needs the tansu broker (`.ci/setup`); the first test also needs `../shared/data` and says so when it is absent.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use netanom_schemas::pseudonym::addresses_in;
use netanom_schemas::{Anomaly, DestinationStats, PacketBatch, SchemaIds};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const KEY: &str = "3c9e1f7a5b2d8e4f6a1c9b3d7e5f2a8c4b6d1e9f3a7c5b2e8d4f6a1c3b9e7d5f";

fn data_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    dir.join("labels.csv").exists().then_some(dir)
}

/// Every source and destination address of `capture`, as the producer parses them.
fn captured_addresses(capture: &Path) -> HashSet<IpAddr> {
    use netanom_producer::capture::{Next, PacketSource};
    let mut source = PacketSource::open_file(capture, None, netanom_producer::Speed::Max).unwrap();
    let mut found = HashSet::new();
    while let Next::Frame(frame) = source.next(&|| false).unwrap() {
        if let Ok(p) = netanom_producer::parse::parse(frame.link_type, frame.data, frame.wire_len) {
            found.insert(p.source);
            found.insert(p.destination);
        }
    }
    found
}

/// One record of a topic: its key, headers and value as bytes, and its value decoded as text where the topic
/// holds Avro records (every address in it then written out).
struct Record {
    topic: String,
    key: Vec<u8>,
    headers: Vec<u8>,
    value: Vec<u8>,
    decoded: String,
}

/// Every record of every pipeline topic on `brokers`, read from the beginning to the high watermark.
fn read_topics(brokers: &str) -> Vec<Record> {
    use netanom_schemas::topics;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "privacy-scan")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    let mut expected = 0i64;
    let names = [topics::PACKETS, topics::DESTINATIONS, topics::ANOMALIES, topics::ALERTS, topics::DEAD_LETTER];
    for topic in names {
        let meta = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
        for p in meta.topics()[0].partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).unwrap();
            expected += high - low;
            assignment.add_partition_offset(topic, p.id(), Offset::Beginning).unwrap();
        }
    }
    consumer.assign(&assignment).unwrap();
    let ids = SchemaIds::BUILT_IN;
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while (records.len() as i64) < expected {
        assert!(Instant::now() < deadline, "read {} of {expected} records within 120 s", records.len());
        let Some(m) = consumer.poll(Duration::from_millis(500)) else { continue };
        let m = m.unwrap();
        let value = m.payload().unwrap_or_default().to_vec();
        let decoded = match m.topic() {
            t if t == topics::PACKETS => format!("{:?}", PacketBatch::decode(&value, &ids).unwrap()),
            t if t == topics::DESTINATIONS => format!("{:?}", DestinationStats::decode(&value, &ids).unwrap()),
            t if t == topics::ANOMALIES => format!("{:?}", Anomaly::decode(&value, &ids).unwrap()),
            // Dead letters keep the record they could not use: decoded as whichever Avro record it is.
            t if t == topics::DEAD_LETTER => PacketBatch::decode(&value, &ids)
                .map(|r| format!("{r:?}"))
                .or_else(|_| Anomaly::decode(&value, &ids).map(|r| format!("{r:?}")))
                .or_else(|_| DestinationStats::decode(&value, &ids).map(|r| format!("{r:?}")))
                .unwrap_or_else(|_| String::from_utf8_lossy(&value).into_owned()),
            _ => String::from_utf8_lossy(&value).into_owned(),
        };
        let mut headers = Vec::new();
        if let Some(h) = m.headers() {
            for header in h.iter() {
                headers.extend_from_slice(header.key.as_bytes());
                headers.push(b'=');
                headers.extend_from_slice(header.value.unwrap_or_default());
                headers.push(b'\n');
            }
        }
        records.push(Record {
            topic: m.topic().to_string(),
            key: m.key().unwrap_or_default().to_vec(),
            headers,
            value,
            decoded,
        });
    }
    records
}

/// `netanom run --pcap capture --brokers … --alerts-out alerts` with debug logs and alerts on stdout, and `env`.
fn run(capture: &Path, brokers: &str, alerts: &Path, env: &[(&str, &str)]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_netanom"))
        .args(["run", "--pcap"])
        .arg(capture)
        .args(["--brokers", brokers, "--alerts-out"])
        .arg(alerts)
        .env("NETANOM_LOG__LEVEL", "debug")
        .env("NETANOM_KAFKA__RUN_DETECTORS", "1")
        .envs(env.iter().copied())
        .output()
        .expect("netanom runs");
    assert!(out.status.success(), "netanom run failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

/// A broker with the pipeline's topics, one partition each (so two runs see their records in the same order).
fn broker() -> common::Broker {
    let broker = common::Broker::start();
    broker.create_pipeline_topics(1, 1, 1);
    broker
}

/// The alerts of a file as comparable lines, in id order.
fn alert_lines(text: &str) -> BTreeSet<String> {
    text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
}

#[test]
fn pseudonymized_runs_leak_no_captured_address_and_reveal_restores_the_same_alerts() {
    let Some(dir) = data_dir() else {
        eprintln!("skipping: ../shared/data (the shared captures) is not beside this checkout");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("ip.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    // A port scan with an alert (IPv4) and HTTP over IPv6.
    for capture in ["evilfingers-nmap/TCP_SYN_SCAN.pcap", "ndpi-tests/http_ipv6.pcap"] {
        let capture = dir.join(capture);
        let raw = captured_addresses(&capture);
        assert!(raw.len() >= 2, "{} has {} addresses", capture.display(), raw.len());

        let hidden_broker = broker();
        let hidden_alerts = tmp.path().join("hidden.jsonl");
        let _ = std::fs::remove_file(&hidden_alerts);
        let key_env = [("NETANOM_PRODUCER__PSEUDONYMIZE__KEY", KEY)];
        let out = run(&capture, &hidden_broker.bootstrap, &hidden_alerts, &key_env);
        let records = read_topics(&hidden_broker.bootstrap);
        assert!(records.iter().any(|r| r.topic == netanom_schemas::topics::PACKETS), "no packet records");

        // Every output, as text with every address written out; and no raw key text either.
        let mut outputs: Vec<(String, String)> = vec![
            ("stdout".into(), String::from_utf8_lossy(&out.stdout).into_owned()),
            ("stderr".into(), String::from_utf8_lossy(&out.stderr).into_owned()),
            ("alerts file".into(), std::fs::read_to_string(&hidden_alerts).unwrap_or_default()),
        ];
        for r in &records {
            let text = format!(
                "key {} headers {} value {}",
                String::from_utf8_lossy(&r.key),
                String::from_utf8_lossy(&r.headers),
                r.decoded
            );
            outputs.push((format!("topic {}", r.topic), text));
        }
        let mut seen = 0;
        for (name, text) in &outputs {
            assert!(!text.contains(KEY), "the key appears in {name}");
            for (range, ip) in addresses_in(text) {
                seen += 1;
                assert!(!raw.contains(&ip), "captured address {ip} in {name}: …{}…", &text[range]);
            }
        }
        // Each record names at least its key and its source: fewer addresses would mean the scan read nothing.
        assert!(
            seen > 2 * records.len(),
            "only {seen} addresses in {} records: the scan proves nothing",
            records.len()
        );

        // The same capture without pseudonyms: the revealed alerts are exactly its alerts.
        let plain_broker = broker();
        let plain_alerts = tmp.path().join("plain.jsonl");
        let _ = std::fs::remove_file(&plain_alerts);
        run(&capture, &plain_broker.bootstrap, &plain_alerts, &[]);
        let revealed = Command::new(env!("CARGO_BIN_EXE_netanom"))
            .args(["reveal", "--key-file"])
            .arg(&key_file)
            .arg(&hidden_alerts)
            .output()
            .unwrap();
        assert!(revealed.status.success(), "reveal: {}", String::from_utf8_lossy(&revealed.stderr));
        let plain = alert_lines(&std::fs::read_to_string(&plain_alerts).unwrap_or_default());
        assert_eq!(alert_lines(&String::from_utf8_lossy(&revealed.stdout)), plain, "{}", capture.display());
        if capture.ends_with("TCP_SYN_SCAN.pcap") {
            assert!(!plain.is_empty(), "the SYN scan raised no alert");
        }
    }
}

/// Ethernet frames of a TCP port scan, UDP datagrams and IPv6 datagrams whose payloads all carry `marker`.
fn marked_packets(marker: &[u8]) -> Vec<netanom_producer::synth::SynthPacket> {
    use etherparse::PacketBuilder;
    let t0 = 1_718_000_000_000_000_000i64;
    let (mac_a, mac_b) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let mut packets = Vec::new();
    let mut push = |ts_ns: i64, data: Vec<u8>| packets.push(netanom_producer::synth::SynthPacket { ts_ns, data });
    let (a6, b6) = (
        [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
        [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    );
    for port in 1..=600u16 {
        let ts = t0 + i64::from(port) * 2_000_000;
        let mut data = Vec::new();
        let scan = PacketBuilder::ethernet2(mac_a, mac_b).ipv4([10, 9, 8, 7], [10, 9, 8, 1], 64);
        scan.tcp(40_000, port, u32::from(port), 1024).syn().write(&mut data, marker).unwrap();
        push(ts, data);
        let mut data = Vec::new();
        let dns = PacketBuilder::ethernet2(mac_b, mac_a).ipv4([10, 9, 8, 1], [10, 9, 8, 53], 64);
        dns.udp(5353, 53).write(&mut data, marker).unwrap();
        push(ts + 1_000_000, data);
        let mut data = Vec::new();
        PacketBuilder::ethernet2(mac_a, mac_b).ipv6(a6, b6, 64).udp(40_000, port).write(&mut data, marker).unwrap();
        push(ts + 1_500_000, data);
    }
    packets
}

#[test]
fn no_payload_byte_reaches_any_topic_log_or_alert() {
    let marker = b"NETANOM-PAYLOAD-MARKER-b7f3c1";
    let tmp = tempfile::tempdir().unwrap();
    let capture = tmp.path().join("marked.pcap");
    netanom_producer::synth::write_packets_pcap(&marked_packets(marker), &capture).unwrap();
    let broker = broker();
    let alerts = tmp.path().join("alerts.jsonl");
    let out = run(&capture, &broker.bootstrap, &alerts, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("packets: read 1800, parsed 1800, published 1800"), "{stdout}");
    let alerts_text = std::fs::read_to_string(&alerts).unwrap_or_default();
    assert!(alerts_text.contains("10.9.8.7"), "the scan raised no alert: {alerts_text}\n{stdout}");

    let records = read_topics(&broker.bootstrap);
    assert!(records.len() >= 3, "{} records", records.len());
    let contains = |hay: &[u8]| hay.windows(marker.len()).any(|w| w == marker);
    // A part of the marker too, in case a payload were cut: its first 12 bytes.
    let head = &marker[..12];
    let contains_head = |hay: &[u8]| hay.windows(head.len()).any(|w| w == head);
    for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr), ("alerts file", &alerts_text.into_bytes())]
    {
        assert!(!contains(bytes) && !contains_head(bytes), "payload bytes in {name}");
    }
    for r in &records {
        for part in [&r.key, &r.headers, &r.value] {
            assert!(!contains(part) && !contains_head(part), "payload bytes in a record of {}", r.topic);
        }
    }
}
