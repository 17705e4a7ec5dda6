//! Harness of the detector's MockCluster tests: a mock cluster with the detector's topics and a rules-only
//! configuration, producing packet batches, and running a detector until it has drained its input.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::time::Duration;

use netanom_detector::{DetectorConfig, DetectorError, DetectorReport, Handles};
use netanom_handles::RoleHandles;
use netanom_schemas::{PacketBatch, SchemaIds};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

/// `prefix` with a random suffix: topic, group and transactional names no other test uses.
pub fn unique(prefix: &str) -> String {
    use rand::Rng;
    format!("{prefix}-{:016x}", rand::thread_rng().r#gen::<u64>())
}

pub struct Setup {
    pub cluster: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    pub config: DetectorConfig,
}

/// A mock cluster with the detector's topics (packets in 3 partitions, destinations in 2) and a rules-only
/// configuration: isolation needs 512 warm-up batches and is covered by unit tests, so the expected output
/// does not depend on the partition interleaving.
pub fn setup() -> Setup {
    let cluster = MockCluster::new(1).unwrap();
    let mut config = DetectorConfig {
        brokers: cluster.bootstrap_servers(),
        group_id: unique("group"),
        packets_topic: unique("packets"),
        destinations_topic: unique("destinations"),
        anomalies_topic: unique("anomalies"),
        dead_letter_topic: unique("dlq"),
        chunk_linger: Duration::from_millis(20),
        ..DetectorConfig::default()
    };
    config.forest.enabled = false;
    cluster.create_topic(&config.packets_topic, 3, 1).unwrap();
    cluster.create_topic(&config.destinations_topic, 2, 1).unwrap();
    cluster.create_topic(&config.anomalies_topic, 1, 1).unwrap();
    cluster.create_topic(&config.dead_letter_topic, 1, 1).unwrap();
    Setup { cluster, config }
}

/// Produces `batches` (keyed by source, stamped with their first packet's time) and then the `poison`
/// records (key, value) to the packets topic, and waits for every acknowledgement.
pub async fn produce(config: &DetectorConfig, batches: &[PacketBatch], poison: &[(&str, &[u8])]) {
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &config.brokers).create().unwrap();
    let ids = SchemaIds::BUILT_IN;
    let mut futures = vec![];
    for b in batches {
        let key = b.source.to_string();
        let payload = b.encode(&ids);
        let ts = b.packets[0].ts_ns / 1_000_000;
        futures.push(
            producer
                .send_result(FutureRecord::to(&config.packets_topic).key(&key).payload(&payload).timestamp(ts))
                .map_err(|(e, _)| e)
                .unwrap(),
        );
    }
    for (key, payload) in poison {
        futures.push(
            producer
                .send_result(FutureRecord::to(&config.packets_topic).key(*key).payload(*payload))
                .map_err(|(e, _)| e)
                .unwrap(),
        );
    }
    for f in futures {
        f.await.unwrap().unwrap();
    }
}

/// Runs the detector until it has drained its input (at most 2 minutes).
pub async fn run_drained(config: DetectorConfig) -> Result<DetectorReport, DetectorError> {
    let drain = CancellationToken::new();
    drain.cancel();
    tokio::time::timeout(
        Duration::from_secs(120),
        netanom_detector::run(config, Handles::default(), CancellationToken::new(), RoleHandles::draining(drain)),
    )
    .await
    .expect("the detector returned in time")
}
