//! Exactly-once output (`kafka.exactly_once`, `DetectorConfig::exactly_once`) on `rdkafka::mocking::MockCluster`:
//! the transactional path gives the anomalies of the at-least-once path, a broker that refuses transactions
//! gives an error naming the setting (not a hang), and a transaction that fails (an injected TxnOffsetCommit or
//! Produce error) stops the detector with `DetectorError::Transaction`, after which a restart produces exactly
//! the fault-free anomalies.
//!
//! librdkafka's mock broker speaks the transaction protocol but keeps no transaction state: its Fetch ignores
//! the isolation level (records of an aborted or open transaction stay visible) and its TxnOffsetCommit does not
//! store the offsets, so a restart reads its input from the beginning. What a `read_committed` reader sees after
//! a crash is therefore checked here on the records the restarted detector produced (from the topic's end
//! before the restart), not on the whole topic.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use netanom_detector::fixtures::{T0, benign_batch, scan_batch, spoofed_flood, syn_flood};
use netanom_detector::{DetectorConfig, DetectorError};
use netanom_schemas::{Anomaly, PacketBatch, SchemaIds};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};

mod common;

use common::{Setup, produce, run_drained, unique};

/// The shared setup with exactly-once output on.
fn setup() -> Setup {
    let mut s = common::setup();
    s.config.exactly_once = true;
    s.config.transactional_id = Some(unique("txn"));
    // The mock broker does not act on a member's LeaveGroup; a restarted member waits for the old session.
    s.config.kafka_properties.insert("session.timeout.ms".into(), "6000".into());
    s
}

/// Benign hosts, a SYN flood, a port scan and a spoofed flood on one victim: rate, fanout and victim anomalies.
fn traffic() -> Vec<PacketBatch> {
    let mut batches: Vec<PacketBatch> = (0..40).map(benign_batch).collect();
    let flooder: IpAddr = "10.9.9.9".parse().unwrap();
    batches.extend(syn_flood(flooder, "10.0.0.80".parse().unwrap(), T0 + 50_000_000_000, 2_000, 1_000));
    batches.push(scan_batch(7));
    batches.push(scan_batch(8));
    let victim: IpAddr = "10.0.0.5".parse().unwrap();
    batches.extend(spoofed_flood(victim, T0 + 60_000_000_000, 1_500, 4_000_000_000, 3));
    batches
}

/// End offset of each partition of `topic`.
fn ends(config: &DetectorConfig, topic: &str) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &config.brokers).create().unwrap();
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(5)).unwrap();
    md.topics()[0]
        .partitions()
        .iter()
        .map(|p| (p.id(), c.fetch_watermarks(topic, p.id(), Duration::from_secs(5)).unwrap().1))
        .collect()
}

/// The anomalies on `topic` from `from` (per partition) to its end, read `read_committed`: id → copies.
fn anomalies_from(config: &DetectorConfig, topic: &str, from: &BTreeMap<i32, i64>) -> BTreeMap<String, usize> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let end = ends(config, topic);
    let mut tpl = TopicPartitionList::new();
    let mut expected = 0;
    for (p, hi) in &end {
        let lo = from.get(p).copied().unwrap_or(0);
        expected += hi - lo;
        tpl.add_partition_offset(topic, *p, Offset::Offset(lo)).unwrap();
    }
    c.assign(&tpl).unwrap();
    // Every record up to the end, or, on a broker with transaction state (where the end counts commit and abort
    // markers and aborted records, which are not read), until nothing more comes for 3 s.
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    let mut read = 0;
    let mut idle_since = std::time::Instant::now();
    while read < expected && idle_since.elapsed() < Duration::from_secs(3) {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            read += 1;
            idle_since = std::time::Instant::now();
            let a = Anomaly::decode(m.payload().unwrap(), &SchemaIds::BUILT_IN).unwrap();
            *out.entry(a.id).or_default() += 1;
        }
    }
    out
}

/// The fault-free anomalies of [`traffic`]: a drained at-least-once run on a cluster of its own.
async fn fault_free() -> BTreeMap<String, usize> {
    let s = setup();
    let config = DetectorConfig { exactly_once: false, ..s.config.clone() };
    produce(&config, &traffic(), &[]).await;
    run_drained(config.clone()).await.expect("the at-least-once run");
    let got = anomalies_from(&config, &config.anomalies_topic, &BTreeMap::new());
    drop(s.cluster);
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_on_give_the_anomalies_of_transactions_off() {
    let expected = fault_free().await;
    assert!(expected.len() >= 4, "{expected:?}");
    assert!(expected.values().all(|n| *n == 1), "{expected:?}");
    let s = setup();
    produce(&s.config, &traffic(), &[]).await;
    let report = run_drained(s.config.clone()).await.expect("the exactly-once run");
    let got = anomalies_from(&s.config, &s.config.anomalies_topic, &BTreeMap::new());
    assert_eq!(got, expected, "exactly once (left) against at least once (right)");
    assert_eq!(report.anomalies.values().sum::<u64>(), expected.len() as u64);
    assert_eq!(report.batches, traffic().len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_refusing_transactions_is_an_error_naming_the_setting() {
    let s = setup();
    produce(&s.config, &[scan_batch(4)], &[]).await;
    s.cluster.request_errors(
        RDKafkaApiKey::InitProducerId,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED; 16],
    );
    let started = std::time::Instant::now();
    let err = run_drained(s.config.clone()).await.expect_err("no transactions, no run");
    assert!(started.elapsed() < Duration::from_secs(40), "took {:?}", started.elapsed());
    assert!(matches!(err, DetectorError::Transaction { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("kafka.exactly_once") && text.contains("initialising transactions"), "{text}");
    assert!(text.contains(s.config.transactional_id.as_deref().unwrap()), "{text}");
}

/// A request error injected in the transaction stops the detector with a typed error naming the step; a detector
/// restarted with the same transactional id initialises and produces exactly the fault-free anomalies: 0 lost,
/// 0 extra. The MockCluster's TxnOffsetCommit stores no offset and its fetch shows aborted records, so the
/// restart reads the input from the start again (a second full run, not a resumption from committed offsets or
/// a state rebuild), and only the records it produced are compared: this checks the typed stop, the
/// re-initialisation and the deterministic ids, not the broker's hiding of the aborted transaction.
async fn a_failed_transaction_then_a_restart_equals_the_fault_free_run(api: RDKafkaApiKey, step: &str) {
    let expected = fault_free().await;
    let s = setup();
    produce(&s.config, &traffic(), &[]).await;
    s.cluster.request_errors(api, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 64]);
    let err = run_drained(s.config.clone()).await.expect_err("the transaction fails");
    let text = err.to_string();
    assert!(
        matches!(&err, DetectorError::Transaction { .. } | DetectorError::Produce { .. }) && text.contains(step),
        "{text}"
    );
    s.cluster.clear_request_errors(api);
    let before = ends(&s.config, &s.config.anomalies_topic);
    let report = run_drained(s.config.clone()).await.expect("the restarted run");
    let got = anomalies_from(&s.config, &s.config.anomalies_topic, &before);
    assert_eq!(got, expected, "after the restart (left) against the fault-free run (right)");
    assert_eq!(report.anomalies.values().sum::<u64>(), expected.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_txn_offset_commit_error_aborts_and_a_restart_equals_the_fault_free_run() {
    a_failed_transaction_then_a_restart_equals_the_fault_free_run(
        RDKafkaApiKey::TxnOffsetCommit,
        "sending offsets to the transaction",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_error_aborts_and_a_restart_equals_the_fault_free_run() {
    a_failed_transaction_then_a_restart_equals_the_fault_free_run(RDKafkaApiKey::Produce, "producing to").await;
}

/// A tansu broker process (`NETANOM_TANSU`) on a free loopback port, killed on drop.
struct Tansu {
    child: std::process::Child,
    bin: std::path::PathBuf,
    bootstrap: String,
}

impl Tansu {
    /// `None` (the test is skipped, said on stderr) when `NETANOM_TANSU` is unset.
    fn start() -> Option<Self> {
        let Some(bin) = std::env::var_os("NETANOM_TANSU").map(std::path::PathBuf::from) else {
            eprintln!("NETANOM_TANSU unset: skipped");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = std::process::Command::new(&bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let bootstrap = format!("127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&bootstrap).is_err() {
            assert!(std::time::Instant::now() < deadline, "tansu did not listen on {bootstrap}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Self { child, bin, bootstrap })
    }

    /// A configuration like [`setup`]'s with its topics created on this broker.
    fn config(&self, exactly_once: bool) -> DetectorConfig {
        let mut config = DetectorConfig {
            brokers: self.bootstrap.clone(),
            group_id: unique("group"),
            packets_topic: unique("packets"),
            destinations_topic: unique("destinations"),
            anomalies_topic: unique("anomalies"),
            dead_letter_topic: unique("dlq"),
            chunk_linger: Duration::from_millis(20),
            exactly_once,
            transactional_id: Some(unique("txn")),
            static_assignment: true,
            ..DetectorConfig::default()
        };
        config.forest.enabled = false;
        for (topic, partitions) in [
            (&config.packets_topic, 3),
            (&config.destinations_topic, 2),
            (&config.anomalies_topic, 1),
            (&config.dead_letter_topic, 1),
        ] {
            let status = std::process::Command::new(&self.bin)
                .args(["topic", "create", topic, "--partitions", &partitions.to_string()])
                .args(["--broker", &format!("tcp://{}", self.bootstrap)])
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "tansu topic create {topic}");
        }
        config
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// On a broker with transaction state (tansu, when `NETANOM_TANSU` is set): a producer with the detector's
/// transactional id that died with a transaction open (records produced, nothing committed, nothing aborted)
/// leaves nothing visible to a `read_committed` reader; the detector that starts with that id fences it, aborts
/// its transaction, and what `read_committed` readers then see is exactly the fault-free anomalies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "tansu 0.6 hides the open transaction but commits it, instead of aborting it, when the next instance \
            with its transactional id initialises; run with --ignored against a broker that aborts it"]
async fn a_transaction_left_open_by_a_dead_instance_is_never_seen() {
    use rdkafka::producer::Producer;
    let Some(broker) = Tansu::start() else { return };
    let fault_free_config = broker.config(false);
    produce(&fault_free_config, &traffic(), &[]).await;
    run_drained(fault_free_config.clone()).await.expect("the at-least-once run");
    let expected = anomalies_from(&fault_free_config, &fault_free_config.anomalies_topic, &BTreeMap::new());
    assert!(expected.len() >= 4, "{expected:?}");

    let config = broker.config(true);
    produce(&config, &traffic(), &[]).await;
    // The dead instance: its transaction holds a copy of a real anomaly record and one that no fault-free run has.
    let zombie: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("transactional.id", config.transactional_id.as_deref().unwrap())
        .create()
        .unwrap();
    zombie.init_transactions(Duration::from_secs(30)).unwrap();
    zombie.begin_transaction().unwrap();
    let ghost = Anomaly {
        id: "fanout:10.66.0.250:0".into(),
        host: "10.66.0.250".into(),
        kind: netanom_schemas::AnomalyKind::Fanout,
        window_start_ns: T0,
        window_end_ns: T0 + 1,
        score: 100.0,
        threshold: 24.0,
        target: None,
        reason: "a record of a transaction never committed".into(),
        features: Vec::new(),
        sample: String::new(),
        model_version: String::new(),
        detected_ns: None,
        window_key: None,
        closing: false,
    };
    let payload = ghost.encode(&SchemaIds::BUILT_IN);
    zombie
        .send(FutureRecord::to(&config.anomalies_topic).key(&ghost.host).payload(&payload), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    // Killed: neither committed nor aborted, and never destroyed (a destroyed producer could end the transaction).
    std::mem::forget(zombie);
    let visible = anomalies_from(&config, &config.anomalies_topic, &BTreeMap::new());
    assert!(visible.is_empty(), "records of an open transaction are visible: {visible:?}");

    run_drained(config.clone()).await.expect("the exactly-once run");
    let got = anomalies_from(&config, &config.anomalies_topic, &BTreeMap::new());
    assert_eq!(got, expected, "exactly once after a dead instance (left) against the fault-free run (right)");
}
