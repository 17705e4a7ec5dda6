//! Every packet and record accounted for: a corpus of malformed captures, built byte by byte, each run through
//! the producer against rdkafka's MockCluster. For each, `read = parsed + Σ skipped[reason]` exactly, every
//! parsed packet is published, a corrupt record is skipped and counted where the format delimits it (pcapng
//! blocks carry their length) and the input ends with a clear error only where it does not — after publishing
//! what came before.

use std::collections::BTreeMap;
use std::path::Path;

use netanom_handles::RoleHandles;
use netanom_producer::{ProducerConfig, ProducerError, ProducerReport, run};
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

// ---- frames ----

fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ipv4(proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    p.extend_from_slice(payload);
    p
}

fn ipv6(next: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    p.extend_from_slice(payload);
    p
}

fn tcp_syn() -> Vec<u8> {
    vec![0x04, 0xd2, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]
}

fn udp(payload_len: usize) -> Vec<u8> {
    let len = (8 + payload_len) as u16;
    let mut u = vec![0x30, 0x39, 0, 53];
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.resize(8 + payload_len, 0xab);
    u
}

/// Ethernet + IPv4 + TCP SYN: a frame that parses.
fn good() -> Vec<u8> {
    ethernet(0x0800, &ipv4(6, &tcp_syn()))
}

/// IPv6 with hop-by-hop, routing and fragment headers before TCP.
fn ipv6_extension_chain() -> Vec<u8> {
    let mut chain = vec![43, 0, 0, 0, 0, 0, 0, 0]; // hop-by-hop, next: routing
    chain.extend_from_slice(&[44, 0, 0, 0, 0, 0, 0, 0]); // routing, next: fragment
    chain.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 7]); // fragment (offset 0), next: TCP
    chain.extend(tcp_syn());
    ethernet(0x86dd, &ipv6(0, &chain))
}

/// IPv6 extension chains of every other shape: destination options, routing, authentication (AH) before TCP;
/// a later fragment (offset 8, no transport header: counted without ports); ESP and "no next header" (the
/// payload is opaque: counted with their protocol); and a hop-by-hop header after another extension, which
/// RFC 8200 forbids.
fn ipv6_more_extension_chains() -> Vec<Vec<u8>> {
    let mut dest_routing_ah = vec![43, 0, 0, 0, 0, 0, 0, 0]; // destination options, next: routing
    dest_routing_ah.extend_from_slice(&[51, 0, 0, 0, 0, 0, 0, 0]); // routing, next: AH
    dest_routing_ah.extend_from_slice(&[6, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]); // AH (16 bytes), next: TCP
    dest_routing_ah.extend(tcp_syn());
    let mut later_fragment = vec![6, 0, 0, 0x08, 0, 0, 0, 7]; // fragment offset 1 (8 bytes), next: TCP
    later_fragment.extend_from_slice(&[0xab; 16]);
    let esp = [0, 0, 0, 1, 0, 0, 0, 1, 0xcd, 0xcd, 0xcd, 0xcd];
    let mut late_hop_by_hop = vec![0, 0, 0, 0, 0, 0, 0, 0]; // destination options, next: hop-by-hop
    late_hop_by_hop.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]); // hop-by-hop, next: TCP
    late_hop_by_hop.extend(tcp_syn());
    vec![
        ethernet(0x86dd, &ipv6(60, &dest_routing_ah)),
        ethernet(0x86dd, &ipv6(44, &later_fragment)),
        ethernet(0x86dd, &ipv6(50, &esp)),
        ethernet(0x86dd, &ipv6(59, &[])),
        ethernet(0x86dd, &ipv6(60, &late_hop_by_hop)),
    ]
}

/// IPv6 whose hop-by-hop header announces more bytes than the packet holds.
fn ipv6_broken_chain() -> Vec<u8> {
    let chain = vec![6, 200, 0, 0, 0, 0, 0, 0];
    ethernet(0x86dd, &ipv6(0, &chain))
}

/// 802.1ad outer tag (VLAN 100) and 802.1Q inner tag (VLAN 200) around IPv4/UDP.
fn qinq() -> Vec<u8> {
    let mut inner = vec![0x00, 200, 0x08, 0x00];
    inner.extend(ipv4(17, &udp(10)));
    let mut outer = vec![0x00, 100, 0x81, 0x00];
    outer.extend(inner);
    ethernet(0x88a8, &outer)
}

/// A 9000-byte jumbo frame (IPv4/UDP).
fn jumbo() -> Vec<u8> {
    ethernet(0x0800, &ipv4(17, &udp(9000 - 14 - 20 - 8)))
}

// ---- pcap ----

fn pcap_header(snaplen: u32, link_type: u32) -> Vec<u8> {
    let mut h = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
    h.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    h.extend_from_slice(&snaplen.to_le_bytes());
    h.extend_from_slice(&link_type.to_le_bytes());
    h
}

fn pcap_record(ts_sec: u32, caplen: u32, wire_len: u32, data: &[u8]) -> Vec<u8> {
    let mut r = ts_sec.to_le_bytes().to_vec();
    r.extend_from_slice(&0u32.to_le_bytes());
    r.extend_from_slice(&caplen.to_le_bytes());
    r.extend_from_slice(&wire_len.to_le_bytes());
    r.extend_from_slice(data);
    r
}

fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut b = pcap_header(65535, 1);
    for (i, f) in frames.iter().enumerate() {
        b.extend(pcap_record(1_700_000_000 + i as u32, f.len() as u32, f.len() as u32, f));
    }
    b
}

// ---- pcapng (little-endian) ----

fn block(kind: u32, body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    body.resize(body.len().next_multiple_of(4), 0);
    let len = 12 + body.len() as u32;
    let mut b = kind.to_le_bytes().to_vec();
    b.extend_from_slice(&len.to_le_bytes());
    b.extend(body);
    b.extend_from_slice(&len.to_le_bytes());
    b
}

fn shb() -> Vec<u8> {
    let mut body = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
    body.extend_from_slice(&[1, 0, 0, 0]);
    body.extend_from_slice(&u64::MAX.to_le_bytes());
    block(0x0A0D_0D0A, &body)
}

fn idb(link_type: u16) -> Vec<u8> {
    let mut body = link_type.to_le_bytes().to_vec();
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    block(1, &body)
}

fn epb(interface: u32, ts: u64, data: &[u8]) -> Vec<u8> {
    let mut body = interface.to_le_bytes().to_vec();
    body.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
    body.extend_from_slice(&(ts as u32).to_le_bytes());
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(data);
    block(6, &body)
}

fn pcapng(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut b = shb();
    b.extend(idb(1));
    for (i, f) in frames.iter().enumerate() {
        b.extend(epb(0, 1_700_000_000_000_000 + i as u64, f));
    }
    b
}

// ---- the corpus ----

/// How a case must end.
#[derive(Debug)]
enum End {
    /// The whole file read.
    Clean,
    /// Frames published, then the input stopped with this text in the report's error.
    Stopped(&'static str),
    /// The file could not be opened at all: the producer fails with this text.
    Refused(&'static str),
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    filter: Option<&'static str>,
    parsed: u64,
    skipped: &'static [(&'static str, u64)],
    end: End,
}

fn case(name: &'static str, bytes: Vec<u8>, parsed: u64, skipped: &'static [(&'static str, u64)]) -> Case {
    Case { name, bytes, filter: None, parsed, skipped, end: End::Clean }
}

fn corpus() -> Vec<Case> {
    let mut cases = Vec::new();
    cases.push(Case {
        end: End::Refused("not a pcap or pcapng file"),
        ..case("bad magic", b"\xde\xad\xbe\xef not a capture, just text of some length".to_vec(), 0, &[])
    });
    // A pcap magic (nanosecond, little-endian) before text: the header parses, the first record does not fit.
    cases.push(Case {
        end: End::Stopped("ends in the middle of a record"),
        ..case("pcap magic, then text", b"\x4d\x3c\xb2\xa1 not a capture, just text of some length".to_vec(), 0, &[])
    });
    // caplen > len: the bytes are there, the wire length is raised to the captured length.
    let mut b = pcap_header(65535, 1);
    b.extend(pcap_record(1, good().len() as u32, 20, &good()));
    cases.push(case("caplen > len", b, 1, &[]));
    let mut b = pcap_header(0, 1);
    b.extend(pcap_record(1, good().len() as u32, good().len() as u32, &good()));
    b.extend(pcap_record(2, 30, 1500, &good()[..30]));
    cases.push(case("snaplen 0", b, 1, &[("truncated", 1)]));
    // A record announcing more bytes than the file holds: pcap records do not delimit themselves.
    let mut b = pcap(&[good(), good()]);
    b.extend(pcap_record(3, 1000, 1000, &good()));
    cases.push(Case {
        end: End::Stopped("ends in the middle of a record"),
        ..case("record beyond the file", b, 2, &[])
    });
    let mut b = pcap(&[good()]);
    b.extend(pcap_record(3, u32::MAX, 60, &good()));
    b.extend(pcap_record(4, good().len() as u32, good().len() as u32, &good()));
    cases.push(Case { end: End::Stopped("capture file"), ..case("hostile pcap length", b, 1, &[]) });
    let l4_cut = ethernet(0x0800, &ipv4(6, &tcp_syn()))[..14 + 20 + 6].to_vec();
    let l3_cut = good()[..14 + 12].to_vec();
    let link_cut = good()[..10].to_vec();
    cases.push(case("truncated L2/L3/L4", pcap(&[link_cut, l3_cut, l4_cut, good()]), 1, &[("truncated", 3)]));
    cases.push(case(
        "IPv6 extension chains",
        pcap(&[ipv6_extension_chain(), ipv6_broken_chain()]),
        1,
        &[("malformed_ip", 1)],
    ));
    cases.push(case(
        "IPv6 extension chains of every other shape",
        pcap(&ipv6_more_extension_chains()),
        4,
        &[("malformed_ip", 1)],
    ));
    cases.push(case("QinQ", pcapng(&[qinq(), qinq()]), 2, &[]));
    cases.push(case("jumbo frames", pcap(&[jumbo(), good(), jumbo()]), 3, &[]));

    // pcapng: an unknown block type and a custom block are not packets; a corrupt packet block (its captured
    // length beyond the block) and an oversize block (larger than the reader buffers) are skipped and counted.
    let mut b = pcapng(&[good()]);
    b.extend(block(0x0BAD_0BAD, b"whatever this is"));
    b.extend(block(0x0000_0BAD, &[0xA9, 0x4D, 0, 0, 1, 2, 3, 4]));
    let mut corrupt = epb(0, 5, &good());
    corrupt[20..24].copy_from_slice(&5000u32.to_le_bytes());
    b.extend(corrupt);
    b.extend(epb(0, 6, &good()));
    cases.push(case("pcapng unknown and corrupt blocks", b, 2, &[("corrupt_record", 1)]));
    let mut b = pcapng(&[good()]);
    b.extend(epb(0, 7, &vec![0u8; 17 << 20]));
    b.extend(epb(0, 8, &jumbo()));
    cases.push(case("pcapng oversize block", b, 2, &[("oversize_record", 1)]));
    let mut b = pcapng(&[good()]);
    let mut bad_trailer = epb(0, 9, &good());
    let n = bad_trailer.len();
    bad_trailer[n - 4..].copy_from_slice(&4u32.to_le_bytes());
    bad_trailer[20..24].copy_from_slice(&5000u32.to_le_bytes());
    b.extend(bad_trailer);
    b.extend(epb(0, 10, &good()));
    cases.push(Case { end: End::Stopped("malformed record"), ..case("pcapng corrupt length", b, 1, &[]) });
    let mut b = pcapng(&[good(), good()]);
    b.truncate(b.len() - 30);
    cases.push(Case { end: End::Stopped("ends in the middle of a record"), ..case("pcapng cut", b, 1, &[]) });

    // Interfaces declared after use: interface 1's packets before its description are skipped, after it read.
    let mut b = shb();
    b.extend(epb(0, 1, &good()));
    b.extend(idb(1));
    b.extend(epb(1, 2, &good()));
    b.extend(epb(0, 3, &good()));
    b.extend(idb(101));
    b.extend(epb(1, 4, &ipv4(17, &udp(4))));
    cases.push(case("interfaces declared after use", b, 2, &[("unknown_interface", 2)]));

    // BPF-filtered frames are read and counted.
    cases.push(Case {
        filter: Some("tcp"),
        ..case("filtered", pcapng(&[good(), qinq(), jumbo(), good(), ipv6_extension_chain()]), 2, &[("filtered", 3)])
    });
    cases
}

fn config(path: &Path, brokers: &str, topic: &str, filter: Option<&str>) -> ProducerConfig {
    ProducerConfig {
        pcap: Some(path.to_path_buf()),
        brokers: brokers.to_string(),
        topic: topic.to_string(),
        filter: filter.map(str::to_string),
        progress: false,
        ..ProducerConfig::default()
    }
}

fn check(case: &Case, report: &ProducerReport) {
    let name = case.name;
    let skipped: BTreeMap<&str, u64> = case.skipped.iter().copied().collect();
    assert_eq!(report.packets_read, report.packets_parsed + report.skipped_total(), "{name}: {report:?}");
    assert_eq!(report.packets_parsed, case.parsed, "{name}: {report:?}");
    assert_eq!(report.skipped, skipped, "{name}");
    assert_eq!(report.packets_published, report.packets_parsed, "{name}: every parsed packet is published");
    match (&case.end, &report.input_error) {
        (End::Clean, None) => {}
        (End::Stopped(text), Some(error)) => assert!(error.contains(text), "{name}: {error}"),
        (end, error) => panic!("{name}: expected {end:?}, got {error:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_of_a_malformed_capture_is_accounted_for() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    for (i, case) in corpus().into_iter().enumerate() {
        let topic = format!("packets-{i}");
        cluster.create_topic(&topic, 1, 1).unwrap();
        let path = dir.path().join(format!("case-{i}.pcap"));
        std::fs::write(&path, &case.bytes).unwrap();
        let result =
            run(config(&path, &brokers, &topic, case.filter), CancellationToken::new(), RoleHandles::default()).await;
        match (&case.end, result) {
            (End::Refused(text), Err(e @ ProducerError::Capture(_))) => {
                assert!(e.to_string().contains(text), "{}: {e}", case.name);
            }
            (End::Refused(_), other) => panic!("{}: expected a refusal, got {other:?}", case.name),
            (_, Ok(report)) => check(&case, &report),
            (_, Err(e)) => panic!("{}: {e}", case.name),
        }
    }
}
