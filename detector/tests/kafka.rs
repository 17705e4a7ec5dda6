//! In-process tests against `rdkafka::mocking::MockCluster`: the whole detector with drain, poison records,
//! and at-least-once offset storage.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use netanom_detector::fixtures::{T0, benign_batch, scan_batch, scan_batch_at, spoofed_flood, syn_flood};
use netanom_detector::{DetectorConfig, DetectorReport, Handles};
use netanom_handles::RoleHandles;
use netanom_schemas::{Anomaly, AnomalyKind, PacketBatch, SchemaIds, topics};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

mod common;

use common::{produce, run_drained, setup, unique};

async fn run_drained_ok(config: DetectorConfig) -> DetectorReport {
    run_drained(config).await.expect("detector ran")
}

fn read_all(config: &DetectorConfig, topic: &str) -> Vec<rdkafka::message::OwnedMessage> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(5)).unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut expected = 0;
    for p in md.topics()[0].partitions() {
        let (lo, hi) = c.fetch_watermarks(topic, p.id(), Duration::from_secs(5)).unwrap();
        expected += hi - lo;
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = vec![];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (out.len() as i64) < expected && std::time::Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            out.push(m.unwrap().detach());
        }
    }
    assert_eq!(out.len() as i64, expected, "read every record of {topic}");
    out
}

fn committed(config: &DetectorConfig, topic: &str) -> BTreeMap<i32, (i64, i64)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group_id)
        .create()
        .unwrap();
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(5)).unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition(topic, p.id());
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
    got.elements()
        .iter()
        .map(|e| {
            let (_, hi) = c.fetch_watermarks(topic, e.partition(), Duration::from_secs(5)).unwrap();
            let o = match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            };
            (e.partition(), (o, hi))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_run_names_attackers_and_victim_but_not_benign_hosts() {
    let s = setup();
    let mut batches: Vec<PacketBatch> = (0..40).map(benign_batch).collect();
    let flooder: IpAddr = "10.9.9.9".parse().unwrap();
    batches.extend(syn_flood(flooder, "10.0.0.80".parse().unwrap(), T0 + 50_000_000_000, 2_000, 1_000));
    batches.push(scan_batch(7));
    let victim: IpAddr = "10.0.0.5".parse().unwrap();
    batches.extend(spoofed_flood(victim, T0 + 60_000_000_000, 1_500, 4_000_000_000, 3));
    produce(&s.config, &batches, &[("garbage", b"\x00\x00\x00\x00\x01\xff\xff\xff")]).await;

    let report = run_drained_ok(s.config.clone()).await;

    let anomalies: Vec<Anomaly> = read_all(&s.config, &s.config.anomalies_topic)
        .iter()
        .map(|m| Anomaly::decode(m.payload().unwrap(), &SchemaIds::BUILT_IN).unwrap())
        .collect();
    let named: HashSet<(String, AnomalyKind)> = anomalies.iter().map(|a| (a.host.clone(), a.kind)).collect();
    assert!(named.contains(&("10.9.9.9".into(), AnomalyKind::Rate)), "{named:?}");
    assert!(named.contains(&("10.66.0.7".into(), AnomalyKind::Fanout)), "{named:?}");
    assert!(named.contains(&("10.0.0.5".into(), AnomalyKind::Victim)), "{named:?}");
    assert!(!anomalies.iter().any(|a| a.host.starts_with("10.1.")), "benign host named: {named:?}");
    assert!(!anomalies.iter().any(|a| a.host.starts_with("100.")), "a spoofed source named: {named:?}");
    // The victim window is reported when it qualifies and once more, exactly, when it is complete (`:final`).
    let victims: Vec<&Anomaly> = anomalies.iter().filter(|a| a.kind == AnomalyKind::Victim).collect();
    assert_eq!(victims.len(), 2, "{victims:#?}");
    assert_eq!(victims.iter().filter(|a| a.id.ends_with(":final")).count(), 1, "{victims:#?}");
    for v in &victims {
        assert!(v.reason.contains("distinct sources"), "{}", v.reason);
        assert_eq!(v.target.as_deref(), Some("10.0.0.5"));
    }
    // Anomalies are keyed by host.
    let anomaly_keys: HashSet<Vec<u8>> =
        read_all(&s.config, &s.config.anomalies_topic).iter().map(|m| m.key().unwrap().to_vec()).collect();
    assert!(anomaly_keys.contains(b"10.9.9.9".as_slice()));

    assert_eq!(report.batches, batches.len() as u64);
    assert_eq!(report.packets, batches.iter().map(|b| b.packets.len() as u64).sum::<u64>());
    assert_eq!(report.dead_lettered, 1);
    assert_eq!(report.anomalies.values().sum::<u64>(), anomalies.len() as u64);
    assert_eq!(report.anomalies[&AnomalyKind::Victim], 2);
    assert!(report.destination_stats_consumed > 0);
    assert_eq!(report.destination_stats_consumed, report.destination_stats_produced);

    // The poison record is on the dead-letter topic with its reason and origin.
    let dlq = read_all(&s.config, &s.config.dead_letter_topic);
    assert_eq!(dlq.len(), 1);
    let headers = dlq[0].headers().expect("headers");
    let header = |name: &str| {
        headers.iter().find(|h| h.key == name).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let reason = header(topics::DLQ_REASON_HEADER).expect("reason header");
    assert!(reason.contains("malformed PacketBatch") || reason.contains("PacketBatch"), "{reason}");
    let origin = header(topics::DLQ_ORIGIN_HEADER).expect("origin header");
    assert!(origin.starts_with(&format!("{}/", s.config.packets_topic)), "{origin}");
    assert_eq!(dlq[0].key(), Some(b"garbage".as_slice()));

    // At-least-once: everything was acknowledged before its offsets were stored, and after the drain the
    // committed offsets are the ends of both input topics.
    for topic in [&s.config.packets_topic, &s.config.destinations_topic] {
        for (p, (committed, high)) in committed(&s.config, topic) {
            if high > 0 {
                assert_eq!(committed, high, "{topic}/{p}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_continues_after_poison_records() {
    let s = setup();
    produce(&s.config, &[], &[("a", b"not avro"), ("b", b"")]).await;
    let batches: Vec<PacketBatch> = vec![scan_batch(9)];
    produce(&s.config, &batches, &[]).await;
    let report = run_drained_ok(s.config.clone()).await;
    assert_eq!(report.dead_lettered, 2);
    assert_eq!(report.batches, 1);
    assert_eq!(report.anomalies[&AnomalyKind::Fanout], 1);
    let dlq = read_all(&s.config, &s.config.dead_letter_topic);
    let reasons: Vec<String> = dlq
        .iter()
        .map(|m| {
            let h = m.headers().unwrap();
            let v = h.iter().find(|h| h.key == topics::DLQ_REASON_HEADER).unwrap().value.unwrap();
            String::from_utf8_lossy(v).into_owned()
        })
        .collect();
    assert!(reasons.iter().any(|r| r.contains("empty payload")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("magic byte")), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_is_reported_before_connecting() {
    let mut c = DetectorConfig { brokers: String::new(), ..DetectorConfig::default() };
    c.rate.window_packets = 1;
    let err = netanom_detector::run(c, Handles::default(), CancellationToken::new(), RoleHandles::default())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("detector.brokers") && text.contains("detector.rate.window_packets"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_an_idle_detector() {
    let s = setup();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(netanom_detector::run(
        s.config.clone(),
        Handles::default(),
        shutdown.clone(),
        RoleHandles::default(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.cancel();
    let report = tokio::time::timeout(Duration::from_secs(30), task).await.unwrap().unwrap().unwrap();
    assert_eq!(report.records, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_not_stored_when_anomalies_are_not_acknowledged() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let s = setup();
    // The mock broker does not seem to act on a member's LeaveGroup; the next member of the group then waits
    // for the old session to expire. Keep that short.
    let mut config = s.config.clone();
    config.kafka_properties.insert("session.timeout.ms".into(), "6000".into());
    produce(&s.config, &[scan_batch(4)], &[]).await;
    // Every produce request fails with a non-retriable error: the anomaly cannot be delivered.
    s.cluster
        .request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 64]);
    let drain = CancellationToken::new();
    drain.cancel();
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        netanom_detector::run(
            config.clone(),
            Handles::default(),
            CancellationToken::new(),
            RoleHandles::draining(drain),
        ),
    )
    .await
    .expect("returns in time")
    .expect_err("delivery failure stops the detector");
    assert!(matches!(err, netanom_detector::DetectorError::Produce { .. }), "{err}");
    eprintln!("failed run took {:?}", started.elapsed());
    for (p, (committed, high)) in committed(&s.config, &s.config.packets_topic) {
        assert!(committed < high || high == 0, "partition {p}: offset {committed} committed without an ack");
    }
    // Once the broker accepts again, the same group reprocesses the batch and the anomaly is delivered.
    s.cluster.clear_request_errors(RDKafkaApiKey::Produce);
    let started = std::time::Instant::now();
    let report = run_drained_ok(config.clone()).await;
    eprintln!("second run took {:?}", started.elapsed());
    assert_eq!(report.batches, 1, "the unacknowledged batch is processed again");
    // The anomaly may have been delivered in the failed run too (only another record of the chunk failed):
    // at-least-once means duplicates, and they carry the same deterministic id.
    let ids: HashSet<String> = read_all(&s.config, &s.config.anomalies_topic)
        .iter()
        .map(|m| Anomaly::decode(m.payload().unwrap(), &SchemaIds::BUILT_IN).unwrap().id)
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.iter().any(|id| id.starts_with("fanout:10.66.0.4:")), "{ids:?}");
    assert!(ids.iter().any(|id| id.starts_with("rate:10.66.0.4:")), "{ids:?}");
}

/// Two detectors of one group (each owning half of the partitions, as in `netanom run`) share one warm-up over
/// the models topic: both report the same isolation model, the same in a second run on the same input, and the
/// forest names the scanners that came after the warm-up and no benign host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_detectors_trains_and_scores_with_one_model() {
    let run = || async {
        let s = setup();
        let mut config = s.config.clone();
        config.models_topic = unique("models");
        config.static_assignment = true;
        config.forest.enabled = true;
        config.forest.warmup_window = Duration::from_secs(3600);
        s.cluster.create_topic(&config.models_topic, 1, 1).unwrap();
        // Ten scanners from 1,400 s of packet time, among the benign batches (one a second), each scanning
        // three times 10 s apart.
        let scans = |i: u64| (0..10).filter(move |k| (1_400 + k..1_430 + k).step_by(10).any(|t| t == i));
        let batches: Vec<PacketBatch> = (0..1_500)
            .flat_map(|i| std::iter::once(benign_batch(i)).chain(scans(i).map(move |k| scan_batch_at(k, i))))
            .collect();
        produce(&config, &batches, &[]).await;

        let drain = CancellationToken::new();
        drain.cancel();
        let detectors: Vec<_> = netanom_detector::Share::split(2)
            .into_iter()
            .map(|share| {
                let handles = Handles { share: Some(share), ..Handles::default() };
                let role = RoleHandles::draining(drain.clone());
                tokio::spawn(netanom_detector::run(config.clone(), handles, CancellationToken::new(), role))
            })
            .collect();
        let mut reports = Vec::new();
        for d in detectors {
            let r = tokio::time::timeout(Duration::from_secs(120), d).await.expect("drained in time");
            reports.push(r.expect("detector task").expect("detector ran"));
        }
        let versions: Vec<String> = reports
            .into_iter()
            .map(|r| {
                let forest = r.models.iter().find(|m| m.version.starts_with("eif-"));
                forest.map(|m| m.version.clone()).unwrap_or_else(|| panic!("no forest in force: {:?}", r.models))
            })
            .collect();
        let anomalies: Vec<Anomaly> = read_all(&config, &config.anomalies_topic)
            .iter()
            .map(|m| Anomaly::decode(m.payload().unwrap(), &SchemaIds::BUILT_IN).unwrap())
            .collect();
        let isolated: HashSet<String> =
            anomalies.iter().filter(|a| a.kind == AnomalyKind::Isolation).map(|a| a.host.clone()).collect();
        (versions, isolated)
    };
    let (versions, isolated) = run().await;
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0], versions[1], "one model for the group");
    assert!(isolated.iter().all(|h| h.starts_with("10.66.0.")), "isolation anomalies on scanners only: {isolated:?}");
    assert!(isolated.len() >= 5, "the forest names the scanners: {isolated:?}");
    let (again, _) = run().await;
    assert_eq!(again, versions, "the same input and seed give the same model");
}

/// The anomalies on `config`'s anomalies topic so far (waiting at most `limit` for one that `want` accepts).
async fn wait_for_anomaly(config: &DetectorConfig, limit: Duration, want: impl Fn(&Anomaly) -> bool) -> bool {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", unique("watcher"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[&config.anomalies_topic]).unwrap();
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200))
            && want(&Anomaly::decode(m.payload().unwrap_or_default(), &SchemaIds::BUILT_IN).unwrap())
        {
            return true;
        }
    }
    false
}

/// At-least-once with the group's warm-up: batches judged while the isolation detector waits for the group's
/// model wait in its backlog and are scored when the model arrives, so the offsets of their records are not
/// stored before then: a detector stopped while waiting commits none (the rules' anomalies of those records
/// were delivered; they are delivered again), and the next run, whose model arrives at the end of its input,
/// scores the backlog and commits every offset once the forest's anomalies are acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_of_batches_waiting_for_the_group_model_are_held_until_it_has_scored_them() {
    let s = setup();
    let mut config = s.config.clone();
    config.models_topic = unique("models");
    config.forest.enabled = true;
    // A share (1,000 vectors a partition) that 300 s of traffic does not fill, and a window longer than the
    // input: the model comes only when the input ends.
    config.forest.warmup_samples = 3_000;
    config.forest.warmup_window = Duration::from_secs(3_600);
    config.kafka_properties.insert("session.timeout.ms".into(), "6000".into());
    s.cluster.create_topic(&config.models_topic, 1, 1).unwrap();
    let scanner = scan_batch(7).source;
    let batches: Vec<PacketBatch> =
        (0..300).map(benign_batch).chain([200, 210, 220].map(|t| scan_batch_at(7, t))).collect();
    produce(&config, &batches, &[]).await;

    let shutdown = CancellationToken::new();
    let live = tokio::spawn(netanom_detector::run(
        config.clone(),
        Handles::default(),
        shutdown.clone(),
        RoleHandles::default(),
    ));
    let host = scanner.to_string();
    assert!(
        wait_for_anomaly(&config, Duration::from_secs(60), |a| a.host == host && a.kind == AnomalyKind::Fanout).await,
        "the rules' anomaly of the scanner is delivered"
    );
    // Several commit rounds (each chunk commits at once, auto-commit every 5 s).
    tokio::time::sleep(Duration::from_secs(6)).await;
    shutdown.cancel();
    let report = tokio::time::timeout(Duration::from_secs(30), live).await.unwrap().unwrap().unwrap();
    assert_eq!(report.batches, batches.len() as u64, "every batch judged");
    assert!(report.models.is_empty(), "no model yet: {:?}", report.models);
    for (p, (committed, high)) in committed(&config, &config.packets_topic) {
        assert!(
            committed < high || high == 0,
            "partition {p}: offset {committed} of {high} stored before the forest scored it"
        );
    }

    let report = run_drained_ok(config.clone()).await;
    assert_eq!(report.batches, batches.len() as u64, "the held records are read again");
    assert!(report.models.iter().any(|m| m.version.starts_with("eif-")), "{:?}", report.models);
    let isolated: Vec<Anomaly> = read_all(&config, &config.anomalies_topic)
        .iter()
        .map(|m| Anomaly::decode(m.payload().unwrap(), &SchemaIds::BUILT_IN).unwrap())
        .filter(|a| a.kind == AnomalyKind::Isolation)
        .collect();
    assert!(isolated.iter().any(|a| a.host == host), "the backlog is scored: {isolated:?}");
    assert!(isolated.iter().all(|a| a.host == host), "{isolated:?}");
    for (p, (committed, high)) in committed(&config, &config.packets_topic) {
        if high > 0 {
            assert_eq!(committed, high, "partition {p}: committed once the backlog's anomalies are acknowledged");
        }
    }
}
