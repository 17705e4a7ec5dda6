//! In-process tests of `run` against rdkafka's MockCluster: synthetic captures in, packet batches consumed back.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use netanom_handles::RoleHandles;
use netanom_producer::synth::{self, Scenario};
use netanom_producer::{ProducerConfig, ProducerReport, Speed, run};
use netanom_schemas::{PacketBatch, SchemaIds};
use rand::Rng;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, Timestamp};
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

fn random_name(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::thread_rng().r#gen::<u64>())
}

fn config(path: &Path, brokers: &str, topic: &str) -> ProducerConfig {
    ProducerConfig {
        pcap: Some(path.to_path_buf()),
        brokers: brokers.to_string(),
        topic: topic.to_string(),
        ..ProducerConfig::default()
    }
}

struct Consumed {
    key: String,
    partition: i32,
    timestamp: Option<i64>,
    batch: PacketBatch,
}

/// Consumes `topic` from the beginning until `records` records arrived (or 60 s passed).
fn consume_all(brokers: &str, topic: &str, records: u64) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", random_name("g"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (out.len() as u64) < records && Instant::now() < deadline {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else { continue };
        let msg = msg.unwrap();
        let batch = PacketBatch::decode(msg.payload().unwrap(), &SchemaIds::BUILT_IN).unwrap();
        let timestamp = match msg.timestamp() {
            Timestamp::CreateTime(t) => Some(t),
            _ => None,
        };
        out.push(Consumed {
            key: String::from_utf8(msg.key().unwrap().to_vec()).unwrap(),
            partition: msg.partition(),
            timestamp,
            batch,
        });
    }
    // Nothing beyond what was reported.
    if let Some(Ok(extra)) = consumer.poll(Duration::from_millis(500)) {
        panic!("unexpected extra record at offset {}", extra.offset());
    }
    out
}

fn assert_invariant(report: &ProducerReport) {
    assert_eq!(report.packets_read, report.packets_published + report.skipped_total(), "{report:?}");
}

/// A packet identity used to check "exactly once": source, time and the header fields.
type PacketId = (IpAddr, i64, IpAddr, u16, u16, u8, u8);

fn expected_ids(packets: &[synth::SynthPacket]) -> BTreeMap<PacketId, u32> {
    let mut m = BTreeMap::new();
    for p in packets {
        let x = netanom_producer::parse::parse(1, &p.data, p.data.len() as u32).unwrap();
        *m.entry((x.source, p.ts_ns, x.destination, x.src_port, x.dst_port, x.ip_proto, x.tcp_flags)).or_insert(0) += 1;
    }
    m
}

fn check_consumed(consumed: &[Consumed], expected: &BTreeMap<PacketId, u32>) {
    let mut seen = BTreeMap::new();
    let mut per_source: HashMap<IpAddr, (i32, u64, i64)> = HashMap::new();
    for c in consumed {
        let b = &c.batch;
        assert!(!b.packets.is_empty());
        assert_eq!(c.key, b.source.to_string());
        assert_eq!(c.timestamp, Some(b.packets[0].ts_ns.div_euclid(1_000_000)));
        assert!(b.packets.len() <= 1024);
        assert!(b.packets.last().unwrap().ts_ns - b.packets[0].ts_ns < 1_000_000_000);
        // Per-source order: one partition, sequences increasing by one, packet times non-decreasing.
        let last_ts = b.packets.last().unwrap().ts_ns;
        match per_source.get(&b.source) {
            None => assert_eq!(b.sequence, 0, "{}", b.source),
            Some(&(partition, seq, ts)) => {
                assert_eq!(partition, c.partition);
                assert_eq!(b.sequence, seq + 1, "{}", b.source);
                assert!(b.packets[0].ts_ns >= ts);
            }
        }
        assert!(b.packets.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
        per_source.insert(b.source, (c.partition, b.sequence, last_ts));
        for p in &b.packets {
            *seen
                .entry((b.source, p.ts_ns, p.destination, p.src_port, p.dst_port, p.ip_proto, p.tcp_flags))
                .or_insert(0u32) += 1;
        }
    }
    assert_eq!(&seen, expected, "every packet exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_pcap_round_trips_through_mock_cluster() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = random_name("packets");
    cluster.create_topic(&topic, 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scenario.pcap");
    let scenario = Scenario { duration: Duration::from_secs(50), ..Scenario::default() };
    let summary = synth::write_pcap(&scenario, &path).unwrap();
    let (packets, _) = synth::generate(&scenario);

    let report = run(config(&path, &brokers, &topic), CancellationToken::new(), RoleHandles::default()).await.unwrap();
    assert_invariant(&report);
    assert_eq!(report.packets_read, summary.packets);
    assert_eq!(report.packets_published, summary.packets);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert!(report.batches_published > 3000, "spoofed sources make many small batches: {report:?}");

    let consumed = consume_all(&brokers, &topic, report.batches_published);
    assert_eq!(consumed.len() as u64, report.batches_published);
    check_consumed(&consumed, &expected_ids(&packets));
    let bytes: u64 = consumed.iter().map(|c| c.batch.encode(&SchemaIds::BUILT_IN).len() as u64).sum();
    assert_eq!(bytes, report.bytes_published);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcapng_input_and_skipped_frames_are_counted() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = random_name("packets");
    cluster.create_topic(&topic, 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.pcapng");
    let (mut packets, _) = synth::generate(&Scenario::benign(9, Duration::from_secs(5)));
    // Three frames that cannot be used: LLDP (not IP), a cut IP header, a malformed IHL.
    let t = packets[10].ts_ns;
    let mut lldp = vec![0u8; 60];
    lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
    let mut bad_ihl = packets[0].data.clone();
    bad_ihl[14] = 0x41;
    let cut = packets[0].data[..20].to_vec();
    for (i, data) in [lldp, bad_ihl, cut].into_iter().enumerate() {
        packets.insert(11 + i, synth::SynthPacket { ts_ns: t, data });
    }
    synth::write_packets_pcapng(&packets, &path).unwrap();

    let report = run(config(&path, &brokers, &topic), CancellationToken::new(), RoleHandles::default()).await.unwrap();
    assert_invariant(&report);
    assert_eq!(report.packets_read, packets.len() as u64);
    let expected: BTreeMap<&str, u64> = [("malformed_ip", 1), ("not_ip", 1), ("truncated", 1)].into();
    assert_eq!(report.skipped, expected);
    let good: Vec<_> =
        packets.into_iter().filter(|p| p.data.len() > 20 && p.data[12] == 8 && p.data[14] == 0x45).collect();
    let consumed = consume_all(&brokers, &topic, report.batches_published);
    check_consumed(&consumed, &expected_ids(&good));
}

#[tokio::test]
async fn missing_file_error_names_the_path() {
    let cfg = config(Path::new("/definitely/not/here.pcap"), "127.0.0.1:1", "t");
    let err = run(cfg, CancellationToken::new(), RoleHandles::default()).await.unwrap_err();
    assert!(err.to_string().contains("/definitely/not/here.pcap"), "{err}");
}

#[tokio::test]
async fn invalid_config_lists_every_problem() {
    let cfg = ProducerConfig { compression: "brotli".into(), snaplen: 1, ..ProducerConfig::default() };
    let err = run(cfg, CancellationToken::new(), RoleHandles::default()).await.unwrap_err().to_string();
    assert!(err.contains("producer.pcap"), "{err}");
    assert!(err.contains("producer.compression"), "{err}");
    assert!(err.contains("producer.snaplen"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_a_paced_replay_promptly_and_flushes() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = random_name("packets");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slow.pcap");
    synth::write_pcap(&Scenario::benign(3, Duration::from_secs(60)), &path).unwrap();
    let shutdown = CancellationToken::new();
    let cfg = ProducerConfig { speed: Speed::Realtime, ..config(&path, &brokers, &topic) };
    let handle = tokio::spawn(run(cfg, shutdown.clone(), RoleHandles::default()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cancelled = Instant::now();
    shutdown.cancel();
    let report = handle.await.unwrap().unwrap();
    assert!(cancelled.elapsed() < Duration::from_secs(5), "{:?}", cancelled.elapsed());
    assert!(report.packets_read > 0);
    assert!(report.packets_read < 5000, "paced replay read too much: {report:?}");
    assert_invariant(&report);
    let consumed = consume_all(&brokers, &topic, report.batches_published);
    let n: usize = consumed.iter().map(|c| c.batch.packets.len()).sum();
    assert_eq!(n as u64, report.packets_published);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_failure_is_an_error_naming_the_topic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.pcap");
    synth::write_pcap(&Scenario::benign(5, Duration::from_secs(2)), &path).unwrap();
    // Nothing listens on port 1: every record times out.
    let mut cfg = config(&path, "127.0.0.1:1", "unreachable-topic");
    cfg.kafka_properties.insert("message.timeout.ms".into(), "1500".into());
    let err = run(cfg, CancellationToken::new(), RoleHandles::default()).await.unwrap_err().to_string();
    assert!(err.contains("unreachable-topic"), "{err}");
    assert!(err.contains("failed delivery"), "{err}");
}

/// Runs a paced replay (which cannot wait for Kafka, like a live capture) of a benign capture while the only
/// broker is down for a while; returns the report and what reached the topic.
async fn replay_through_an_outage(outage: netanom_producer::OutageConfig) -> (ProducerReport, Vec<Consumed>) {
    let cluster = MockCluster::new(1).unwrap();
    let topic = random_name("packets");
    cluster.create_topic(&topic, 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("benign.pcap");
    synth::write_pcap(&Scenario::benign(9, Duration::from_secs(20)), &path).unwrap();
    let mut cfg = ProducerConfig { speed: Speed::Factor(5.0), outage, ..config(&path, &brokers, &topic) };
    // A queue this small fills within the outage.
    cfg.kafka_properties.insert("queue.buffering.max.messages".into(), "20".into());
    let handle = tokio::spawn(run(cfg, CancellationToken::new(), RoleHandles::default()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.broker_down(1).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.broker_up(1).unwrap();
    let report = handle.await.unwrap().expect("the producer rides out the outage");
    println!("parsed {}, published {}: {:?}", report.packets_parsed, report.packets_published, report.outage);
    let consumed = consume_all(&brokers, &topic, report.batches_published);
    (report, consumed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_drops_with_exact_counts_when_the_capture_cannot_wait() {
    let (report, consumed) = replay_through_an_outage(netanom_producer::OutageConfig::default()).await;
    let o = report.outage;
    assert!(o.dropped_records > 0 && o.dropped_packets > 0, "the outage dropped nothing: {report:?}");
    assert_eq!(report.packets_parsed, report.packets_published + o.dropped_packets, "{report:?}");
    assert_eq!(report.packets_read, report.packets_parsed + report.skipped_total());
    assert_eq!(consumed.len() as u64, report.batches_published);
    let on_topic: usize = consumed.iter().map(|c| c.batch.packets.len()).sum();
    assert_eq!(on_topic as u64, report.packets_published);
    // Records published after the outage are in capture order per source.
    let mut last: HashMap<IpAddr, (u64, i64)> = HashMap::new();
    for c in &consumed {
        let b = &c.batch;
        if let Some(&(seq, ts)) = last.get(&b.source) {
            assert!(b.sequence > seq && b.packets[0].ts_ns >= ts, "{} out of order", b.source);
        }
        last.insert(b.source, (b.sequence, b.packets.last().unwrap().ts_ns));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_spooled_and_every_packet_arrives_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("outage.spool");
    let outage = netanom_producer::OutageConfig {
        on_full: netanom_producer::OnFull::Spool,
        spool_path: Some(spool.clone()),
        ..netanom_producer::OutageConfig::default()
    };
    let (report, consumed) = replay_through_an_outage(outage).await;
    let o = report.outage;
    assert!(o.spooled_records > 0, "nothing was spooled: {report:?}");
    assert_eq!((o.dropped_records, o.spool_left_records), (0, 0), "{report:?}");
    assert_eq!(report.packets_published, report.packets_parsed, "{report:?}");
    assert_eq!(std::fs::metadata(&spool).unwrap().len(), 0, "a drained spool is emptied");
    let (packets, _) = synth::generate(&Scenario::benign(9, Duration::from_secs(20)));
    check_consumed(&consumed, &expected_ids(&packets));
}
