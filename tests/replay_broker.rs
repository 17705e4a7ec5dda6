//! `netanom replay` and `netanom train --from` against a tansu broker process, whose high watermark counts
//! produce batches rather than records: with many records per produce batch, each partition is still read to its
//! end (end-of-partition events), and the disagreement with the watermark is reported with the numbers.

mod common;

use std::time::Duration;

use common::{Broker, Service};
use netanom::topic_range::{Position, ReadSpec, read_range};
use netanom_detector::fixtures::benign_batch;
use netanom_schemas::SchemaIds;

const TOPIC: &str = "replay-broker-packets";
const PARTITIONS: u32 = 2;
const BATCHES: u64 = 600;

/// Publishes `BATCHES` packet batches as the producer does, lingering so that each produce request carries many
/// records.
fn publish(brokers: &str) {
    let properties = [("linger.ms".to_string(), "200".to_string())].into();
    let publisher = netanom_producer::Publisher::new(brokers, &properties, "lz4", TOPIC).unwrap();
    let mut buf = Vec::new();
    for i in 0..BATCHES {
        let b = benign_batch(i);
        buf.clear();
        b.encode_into(&SchemaIds::BUILT_IN, &mut buf);
        let ts = b.packets.first().map_or(0, |p| p.ts_ns / 1_000_000);
        publisher.send(&b.source.to_string(), &buf, ts, b.packets.len(), None).unwrap();
    }
    publisher.flush(Duration::from_secs(30)).unwrap();
}

#[test]
fn every_record_is_read_to_the_end_of_its_partition_whatever_the_watermark_says() {
    let broker = Broker::start();
    broker.create_topic(TOPIC, PARTITIONS);
    publish(&broker.bootstrap);

    let spec = ReadSpec {
        brokers: broker.bootstrap.clone(),
        properties: Default::default(),
        topic: TOPIC.to_string(),
        from: Position::Offset(0),
        to: None,
        idle_timeout: Duration::from_secs(20),
        max_records: 1_000_000,
    };
    let (ranges, records) = read_range(&spec).expect("the topic is read");
    assert_eq!(records.len() as u64, BATCHES, "every record read: {ranges:?}");
    assert_eq!(ranges.iter().map(|r| r.read).sum::<u64>(), BATCHES, "{ranges:?}");
    for r in &ranges {
        assert!(r.to_end, "{r:?}");
        assert_eq!(r.end - r.start, r.read as i64, "offsets are dense on this topic: {r:?}");
    }
    eprintln!("ranges read: {ranges:?}");
    // Each range is checked against the watermark: where the broker's disagrees, the numbers are given.
    let disagreeing: Vec<String> = ranges.iter().filter_map(|r| r.watermark_disagreement()).collect();
    let undercounted = ranges.iter().filter(|r| r.watermark < r.end).count();
    assert_eq!(disagreeing.len(), undercounted, "{ranges:?}");
    for (why, r) in disagreeing.iter().zip(ranges.iter().filter(|r| r.watermark < r.end)) {
        assert!(why.contains(&format!("at start was {}", r.watermark)), "{why}");
        assert!(why.contains(&format!("{} records", r.read)), "{why}");
    }

    // The commands read the same records and say how many.
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("netanom.toml");
    std::fs::write(&config, format!("[kafka]\nbrokers = \"{}\"\n", broker.bootstrap)).unwrap();
    let out = tmp.path().join("anomalies.jsonl");
    let replay =
        Service::start("replay", &config, &["replay", "--from", "0", "--topic", TOPIC, "--out", out.to_str().unwrap()])
            .wait_success(Duration::from_secs(120));
    assert!(replay.contains(&format!("replayed {BATCHES} records over {PARTITIONS} partitions")), "{replay}");
    for why in &disagreeing {
        let partition = why.split_whitespace().nth(1).unwrap();
        assert!(replay.contains(&format!("partition {partition} read to its end")), "{why} not reported:\n{replay}");
    }
    let model = tmp.path().join("model.json");
    let train = Service::start(
        "train",
        &config,
        &["train", "--from", "0", "--topic", TOPIC, "--out", model.to_str().unwrap(), "--seed", "1"],
    )
    .wait_success(Duration::from_secs(120));
    assert!(train.contains(&format!("read {BATCHES} records of {TOPIC}")), "{train}");
}
