//! `netanom replay` and `netanom train` against an in-process `MockCluster`: byte-identical replays with a saved
//! model, timestamp seeks resolved per partition, `--diff` of two models, training from a topic range, and the CLI
//! end to end.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use netanom::replay::detect::{Detection, detect};
use netanom::replay::output::{anomaly_json, diff, suppress, write_alerts, write_jsonl_file};
use netanom::topic_range::{Position, ReadSpec, ReplayRecord, ranges, read_range};
use netanom::train::isolation::{capture_vectors, range_training_set, train_vectors};
use netanom_detector::features::{FeatureScratch, batch_features};
use netanom_detector::fixtures::{T0, benign_batch, scan_batch, spoofed_flood, syn_flood};
use netanom_detector::{DetectorConfig, TrainedForest};
use netanom_schemas::{PacketBatch, SchemaIds};
use rdkafka::mocking::MockCluster;

fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Benign browsing from 200 hosts (enough batches to train the forest), a SYN flood, port scans and a
/// spoofed-source flood whose sources land in every partition (so the victim view crosses partitions).
fn traffic() -> Vec<PacketBatch> {
    let mut v: Vec<PacketBatch> = (0..900).map(benign_batch).collect();
    v.extend(syn_flood("10.9.9.9".parse().unwrap(), "10.0.0.80".parse().unwrap(), T0 + 700_000_000_000, 3_000, 1_000));
    v.extend((0..3).map(|i| {
        let mut b = scan_batch(i);
        for p in &mut b.packets {
            p.ts_ns += 800_000_000_000;
        }
        b
    }));
    v.extend(spoofed_flood("10.0.0.5".parse().unwrap(), T0 + 820_000_000_000, 2_000, 3_000_000_000, 9));
    v
}

/// Publishes the batches as the producer does (key = source, timestamp = first packet in ms).
fn publish(brokers: &str, topic: &str, batches: &[PacketBatch]) {
    let publisher = netanom_producer::Publisher::new(brokers, &Default::default(), "lz4", topic).unwrap();
    let mut buf = Vec::new();
    for b in batches {
        buf.clear();
        b.encode_into(&SchemaIds::BUILT_IN, &mut buf);
        let ts = b.packets.first().map_or(0, |p| p.ts_ns / 1_000_000);
        publisher.send(&b.source.to_string(), &buf, ts, b.packets.len(), None).unwrap();
    }
    publisher.flush(Duration::from_secs(30)).unwrap();
}

fn spec(brokers: &str, topic: &str, from: Position, to: Option<Position>) -> ReadSpec {
    ReadSpec {
        brokers: brokers.to_string(),
        properties: Default::default(),
        topic: topic.to_string(),
        from,
        to,
        idle_timeout: Duration::from_secs(20),
        max_records: 1_000_000,
    }
}

fn read(spec: ReadSpec) -> Vec<ReplayRecord> {
    read_range(&spec).unwrap().1
}

fn keys_of(path: &Path) -> BTreeSet<(String, String, i64)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["host"].as_str().unwrap().to_string(),
                v["kind"].as_str().unwrap().to_string(),
                v["window_start_ns"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Two models from the same benign vectors: the default threshold, and one calibrated to flag the top 10%.
fn models(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cfg = DetectorConfig::default();
    let mut scratch = FeatureScratch::default();
    let vectors: Vec<_> = (0..600)
        .map(benign_batch)
        .filter(|b| b.packets.len() >= cfg.forest.min_packets)
        .map(|b| batch_features(&b.packets, &mut scratch))
        .collect();
    let strict = train_vectors(&vectors, &cfg.forest, 11).unwrap();
    let mut loose_cfg = cfg.forest.clone();
    loose_cfg.threshold_quantile = 0.9;
    loose_cfg.threshold_margin = 0.0;
    loose_cfg.threshold_floor = 0.5;
    let loose = train_vectors(&vectors, &loose_cfg, 12).unwrap();
    let (a, b) = (dir.join("strict.json"), dir.join("loose.json"));
    strict.save(&a).unwrap();
    loose.save(&b).unwrap();
    (a, b)
}

#[test]
fn replay_with_a_saved_model_is_byte_identical_and_diff_matches_the_files() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let topic = unique("packets");
    cluster.create_topic(&topic, 4, 1).unwrap();
    let batches = traffic();
    publish(&brokers, &topic, &batches);
    let dir = tempfile::tempdir().unwrap();
    let (strict, loose) = models(dir.path());
    // One batch above the threshold is an isolation anomaly here: the test compares two thresholds, not the bar.
    let mut cfg = DetectorConfig::default();
    cfg.forest.confirm_batches = 1;
    let ids = SchemaIds::BUILT_IN;

    let mut outputs = Vec::new();
    for run in 0..2 {
        let records = read(spec(&brokers, &topic, Position::Offset(0), None));
        assert_eq!(records.len(), batches.len(), "run {run} read every record");
        let d = detect(&records, &ids, &cfg, Some(TrainedForest::load(&strict).unwrap()));
        let path = dir.path().join(format!("run{run}.jsonl"));
        write_jsonl_file(&d.anomalies, &path).unwrap();
        outputs.push(path);
    }
    let (first, second) = (std::fs::read(&outputs[0]).unwrap(), std::fs::read(&outputs[1]).unwrap());
    assert!(!first.is_empty());
    assert_eq!(first, second, "two replays with the same model differ");
    let kinds: BTreeSet<String> = keys_of(&outputs[0]).into_iter().map(|k| k.1).collect();
    for kind in ["rate", "fanout", "victim"] {
        assert!(kinds.contains(kind), "no {kind} anomaly in {kinds:?}");
    }

    // The record order given to `detect` does not matter: it orders by (timestamp, partition, offset).
    let mut shuffled = read(spec(&brokers, &topic, Position::Offset(0), None));
    shuffled.reverse();
    let d = detect(&shuffled, &ids, &cfg, Some(TrainedForest::load(&strict).unwrap()));
    let path = dir.path().join("reversed.jsonl");
    write_jsonl_file(&d.anomalies, &path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), first);

    // --diff: the loose model flags more; the diff is exactly the set difference of the two files.
    let records = read(spec(&brokers, &topic, Position::Offset(0), None));
    let base = detect(&records, &ids, &cfg, Some(TrainedForest::load(&strict).unwrap()));
    let other = detect(&records, &ids, &cfg, Some(TrainedForest::load(&loose).unwrap()));
    let other_path = dir.path().join("loose.jsonl");
    write_jsonl_file(&other.anomalies, &other_path).unwrap();
    let d = diff(&base.anomalies, &other.anomalies);
    assert!(!d.gained.is_empty(), "the loose model gained nothing");
    let (a, b) = (keys_of(&outputs[0]), keys_of(&other_path));
    let as_strings = |v: &[(String, netanom_schemas::AnomalyKind, i64)]| -> BTreeSet<(String, String, i64)> {
        v.iter().map(|(h, k, w)| (h.clone(), k.as_str().to_string(), *w)).collect()
    };
    assert_eq!(as_strings(&d.gained), b.difference(&a).cloned().collect());
    assert_eq!(as_strings(&d.lost), a.difference(&b).cloned().collect());
    assert!(d.gained.iter().all(|k| k.1 == netanom_schemas::AnomalyKind::Isolation));
}

#[test]
fn timestamp_seeks_pick_the_first_offset_at_or_after_the_time_per_partition() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let topic = unique("packets");
    cluster.create_topic(&topic, 3, 1).unwrap();
    // 300 batches from 30 hosts, one second apart: timestamps rise within every partition.
    let batches: Vec<PacketBatch> = (0..300).map(benign_batch).collect();
    publish(&brokers, &topic, &batches);
    let all = read(spec(&brokers, &topic, Position::Offset(0), None));
    assert_eq!(all.len(), 300);

    let from_ms = (T0 + 100_500_000_000) / 1_000_000; // between batch 100 and 101
    let to_ms = (T0 + 200_000_000_000) / 1_000_000; // exactly batch 200
    let expected = |ms: i64, p: i32| -> i64 {
        let mut offs: Vec<&ReplayRecord> = all.iter().filter(|r| r.partition == p).collect();
        offs.sort_by_key(|r| r.offset);
        offs.iter().find(|r| r.timestamp_ms >= ms).map_or_else(|| offs.last().unwrap().offset + 1, |r| r.offset)
    };
    let s = spec(&brokers, &topic, Position::Time(from_ms), Some(Position::Time(to_ms)));
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", unique("seek"))
        .create()
        .unwrap();
    let r = ranges(&consumer, &s).unwrap();
    assert_eq!(r.len(), 3);
    for pr in &r {
        assert_eq!(pr.start, expected(from_ms, pr.partition), "start of partition {}", pr.partition);
        assert_eq!(pr.end, expected(to_ms, pr.partition), "end of partition {}", pr.partition);
        assert!(pr.start > 0 && pr.end > pr.start);
    }
    let got = read(s);
    let want: Vec<i64> = (101..200).map(|i| (T0 + i * 1_000_000_000) / 1_000_000).collect();
    let mut ts: Vec<i64> = got.iter().map(|r| r.timestamp_ms).collect();
    ts.sort_unstable();
    assert_eq!(ts, want, "records of [from, to) in time");

    // RFC 3339 parses to the same instant.
    let p: Position = "2024-01-01T00:01:40.5Z".parse().unwrap();
    assert_eq!(p, Position::Time(from_ms));
    assert_eq!("42".parse::<Position>().unwrap(), Position::Offset(42));
    assert!("yesterday".parse::<Position>().is_err());
}

#[test]
fn cli_train_then_replay_twice_writes_identical_files() {
    let exe = env!("CARGO_BIN_EXE_netanom");
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("benign.pcap");
    let scenario = netanom_producer::synth::Scenario::benign(5, Duration::from_secs(60));
    netanom_producer::synth::write_pcap(&scenario, &pcap).unwrap();
    let model = dir.path().join("model.json");
    let out = std::process::Command::new(exe)
        .args(["train", "--pcap"])
        .arg(&pcap)
        .arg("--out")
        .arg(&model)
        .args(["--seed", "3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "train: {}", String::from_utf8_lossy(&out.stderr));
    let m = TrainedForest::load(&model).unwrap();
    assert!(m.threshold() > 0.0);

    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let topic = unique("packets");
    cluster.create_topic(&topic, 2, 1).unwrap();
    publish(&brokers, &topic, &traffic());
    let mut files = Vec::new();
    for run in 0..2 {
        let path = dir.path().join(format!("cli{run}.jsonl"));
        let out = std::process::Command::new(exe)
            .args(["replay", "--brokers", &brokers, "--topic", &topic, "--from", "0", "--model"])
            .arg(&model)
            .arg("--out")
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "replay: {}", String::from_utf8_lossy(&out.stderr));
        files.push(std::fs::read(&path).unwrap());
    }
    assert!(!files[0].is_empty());
    assert_eq!(files[0], files[1]);
    let hosts: BTreeSet<IpAddr> = String::from_utf8(files[0].clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["host"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(hosts.contains(&"10.9.9.9".parse::<IpAddr>().unwrap()), "the SYN flooder is missing: {hosts:?}");

    // --alerts writes the alerts topic's JSON; --diff against a second model prints only change lines.
    let other = dir.path().join("other.json");
    let trained = std::process::Command::new(exe)
        .args(["train", "--pcap"])
        .arg(&pcap)
        .arg("--out")
        .arg(&other)
        .args(["--seed", "4"])
        .output()
        .unwrap();
    assert!(trained.status.success());
    let out = std::process::Command::new(exe)
        .args(["replay", "--brokers", &brokers, "--topic", &topic, "--from", "0", "--alerts", "--model"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(out.status.success(), "replay --alerts: {}", String::from_utf8_lossy(&out.stderr));
    let alerts: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!alerts.is_empty() && alerts.iter().all(|a| a["count"].as_u64().is_some_and(|c| c >= 1)));
    let anomalies = String::from_utf8(files[0].clone()).unwrap().lines().count() as u64;
    assert_eq!(alerts.iter().map(|a| a["count"].as_u64().unwrap()).sum::<u64>(), anomalies);
    let out = std::process::Command::new(exe)
        .args(["replay", "--brokers", &brokers, "--topic", &topic, "--from", "0", "--model"])
        .arg(&model)
        .arg("--diff")
        .arg(&other)
        .output()
        .unwrap();
    assert!(out.status.success(), "replay --diff: {}", String::from_utf8_lossy(&out.stderr));
    for l in String::from_utf8(out.stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(v["change"] == "gained" || v["change"] == "lost", "{l}");
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("diff: "));
}

#[test]
fn train_vectors_come_from_the_capture() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("b.pcap");
    netanom_producer::synth::write_pcap(&netanom_producer::synth::Scenario::benign(9, Duration::from_secs(10)), &pcap)
        .unwrap();
    let cfg = DetectorConfig::default();
    let v = capture_vectors(&pcap, &Default::default(), &cfg.forest, 300).unwrap();
    assert!(!v.is_empty() && v.len() <= 300);
    assert!(v.iter().all(|x| x[0] >= cfg.forest.min_packets as f64), "a vector from a batch below min_packets");
}

/// Records as a topic of 4 partitions would hold them, without a broker.
fn in_memory_records(batches: &[PacketBatch]) -> Vec<ReplayRecord> {
    let mut next = [0i64; 4];
    batches
        .iter()
        .map(|b| {
            let partition = (b.source.to_string().bytes().map(u32::from).sum::<u32>() % 4) as i32;
            let offset = next[partition as usize];
            next[partition as usize] += 1;
            ReplayRecord {
                partition,
                offset,
                timestamp_ms: b.packets.first().map_or(0, |p| p.ts_ns / 1_000_000),
                payload: b.encode(&SchemaIds::BUILT_IN),
            }
        })
        .collect()
}

#[test]
fn without_a_model_the_warm_up_training_is_reproducible_and_alerts_account_for_every_anomaly() {
    let records = in_memory_records(&traffic());
    let cfg = DetectorConfig::default();
    let ids = SchemaIds::BUILT_IN;
    let a = detect(&records, &ids, &cfg, None);
    let b = detect(&records, &ids, &cfg, None);
    assert!(a.model_version.is_some(), "the forest was trained during the replay");
    assert_eq!(a.model_version, b.model_version);
    let lines = |d: &Detection| d.anomalies.iter().map(anomaly_json).collect::<Vec<_>>();
    assert_eq!(lines(&a), lines(&b));

    let suppression = netanom_alert_router::SuppressionConfig::default();
    let incidents = netanom_alert_router::IncidentConfig::default();
    let budget = netanom_alert_router::budget::DEFAULT_BUDGET_MIB;
    let alerts = suppress(&a.anomalies, &suppression, &incidents, budget);
    let again = suppress(&b.anomalies, &suppression, &incidents, budget);
    let mut first = Vec::new();
    write_alerts(&alerts, &mut first).unwrap();
    let mut second = Vec::new();
    write_alerts(&again, &mut second).unwrap();
    assert_eq!(first, second);
    assert!(!alerts.is_empty() && alerts.len() <= a.anomalies.len());
    assert_eq!(alerts.iter().map(|x| x.count).sum::<u64>(), a.anomalies.len() as u64, "an anomaly lost or doubled");
    for al in &alerts {
        assert!(a.anomalies.iter().any(|x| x.host == al.host && x.kind == al.kind), "{al:?}");
    }
}

#[test]
fn cli_train_from_a_topic_range_is_reproducible_and_the_model_replays() {
    let exe = env!("CARGO_BIN_EXE_netanom");
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let topic = unique("packets");
    cluster.create_topic(&topic, 3, 1).unwrap();
    let batches = traffic();
    publish(&brokers, &topic, &batches);
    // One record that is no packet batch: skipped and counted, as replay does.
    let publisher = netanom_producer::Publisher::new(&brokers, &Default::default(), "lz4", &topic).unwrap();
    publisher.send("10.0.0.1", b"not avro", T0 / 1_000_000, 1, None).unwrap();
    publisher.flush(Duration::from_secs(30)).unwrap();
    let dir = tempfile::tempdir().unwrap();

    let train = |out: &Path| {
        std::process::Command::new(exe)
            .args(["train", "--brokers", &brokers, "--topic", &topic, "--from", "0", "--out"])
            .arg(out)
            .output()
            .unwrap()
    };
    let (m1, m2) = (dir.path().join("m1.json"), dir.path().join("m2.json"));
    let (first, second) = (train(&m1), train(&m2));
    for o in [&first, &second] {
        assert!(o.status.success(), "train --from: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("1 undecodable"), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(std::fs::read(&m1).unwrap(), std::fs::read(&m2).unwrap(), "two trainings on one range differ");

    // The vectors are the detector's warm-up: the first warmup_samples batches of at least min_packets packets.
    let cfg = DetectorConfig::default();
    let eligible = batches.iter().filter(|b| b.packets.len() >= cfg.forest.min_packets).count();
    let n = eligible.min(cfg.forest.warmup_samples);
    assert!(n > 0);
    let stdout = String::from_utf8(first.stdout).unwrap();
    assert!(stdout.contains(&format!(" on {n} batch vectors ")), "{stdout}");
    let records = read(spec(&brokers, &topic, Position::Offset(0), None));
    let set = range_training_set(&records, &SchemaIds::BUILT_IN, &cfg, cfg.forest.warmup_samples);
    assert_eq!((set.vectors.len(), set.batches, set.poison), (n, batches.len() as u64, 1));

    let m = TrainedForest::load(&m1).unwrap();
    assert!(m.threshold() > 0.0);
    assert!(stdout.contains(m.version()), "{stdout}");
    let anomalies = dir.path().join("replay.jsonl");
    let out = std::process::Command::new(exe)
        .args(["replay", "--brokers", &brokers, "--topic", &topic, "--from", "0", "--model"])
        .arg(&m1)
        .arg("--out")
        .arg(&anomalies)
        .output()
        .unwrap();
    assert!(out.status.success(), "replay --model: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("(model {})", m.version())));
    assert!(!std::fs::read(&anomalies).unwrap().is_empty());

    // A range without a packet batch is an error naming the topic, not a panic.
    let out = std::process::Command::new(exe)
        .args(["train", "--brokers", &brokers, "--topic", &topic, "--from", "1000000", "--out"])
        .arg(dir.path().join("empty.json"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&topic) && stderr.contains("no packet batch"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!dir.path().join("empty.json").exists());
}

#[test]
fn cli_train_needs_exactly_one_source() {
    let exe = env!("CARGO_BIN_EXE_netanom");
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(exe)
            .arg("train")
            .args(extra)
            .arg("--out")
            .arg(dir.path().join("x.json"))
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, stderr) = run(&[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--pcap") && stderr.contains("--from"), "{stderr}");
    let (code, stderr) = run(&["--pcap", "a.pcap", "--from", "0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--pcap") && stderr.contains("--from") && stderr.contains("cannot be used"), "{stderr}");
    let (code, stderr) = run(&["--from", "0", "--supervised", "--labels", "l.csv"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--supervised"), "{stderr}");
    let (code, stderr) = run(&["--pcap", "a.pcap", "--brokers", "localhost:9092"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--brokers"), "{stderr}");
    assert!(!dir.path().join("x.json").exists());
}
