//! The router's path for one anomaly record without Kafka: Avro decode → deduplication by id
//! (`netanom_alert_router::dedup::SeenIds`, `alert_router.dedup_ids`) → suppression → incidents, over 100,000
//! anomalies with distinct ids from 1,000 hosts spread over 16 partitions, with deduplication at its default
//! capacity (65,536 ids per partition) and off (0), the tables within the default memory budget, in the same run: the cost of deduplication.
//!
//! `cargo bench -p netanom-alert-router --bench router_path`

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use netanom_alert_router::budget::{DEFAULT_BUDGET_MIB, Shares};
use netanom_alert_router::dedup::SeenIds;
use netanom_alert_router::incident::Incidents;
use netanom_alert_router::suppress::{Origin, Suppressor};
use netanom_alert_router::{IncidentConfig, SuppressionConfig};
use netanom_schemas::{Anomaly, AnomalyKind, SchemaIds};
use tokio::time::Instant;

const ANOMALIES: usize = 100_000;
const HOSTS: usize = 1_000;
const PARTITIONS: i32 = 16;
const T0: i64 = 1_704_067_200_000_000_000;

/// The encoded anomalies: each host's every 100 ms of packet time, alternating two kinds.
fn records(ids: &SchemaIds) -> Vec<(i32, Vec<u8>)> {
    (0..ANOMALIES)
        .map(|i| {
            let host = i % HOSTS;
            let start = T0 + (i / HOSTS) as i64 * 100_000_000;
            let kind = if i % 2 == 0 { AnomalyKind::Fanout } else { AnomalyKind::Rate };
            let a = Anomaly {
                id: format!("{}:10.{}.{}.1:{start}", kind.as_str(), host / 256, host % 256),
                host: format!("10.{}.{}.1", host / 256, host % 256),
                kind,
                window_start_ns: start,
                window_end_ns: start + 50_000_000,
                score: 40.0,
                threshold: 24.0,
                target: Some("10.0.1.3".into()),
                reason: "40 distinct ports in 10 s".into(),
                features: Vec::new(),
                sample: "TCP 10.0.0.1:40000 -> 10.0.1.3:22 [S]".into(),
                model_version: "rules".into(),
                detected_ns: None,
                window_key: None,
                closing: false,
            };
            ((host as i32) % PARTITIONS, a.encode(ids))
        })
        .collect()
}

/// Runs every record through the path; returns the alerts emitted (so the work is not optimised away).
fn route(records: &[(i32, Vec<u8>)], ids: &SchemaIds, dedup_ids: usize) -> usize {
    let shares = Shares::of(DEFAULT_BUDGET_MIB);
    let mut seen = SeenIds::new(dedup_ids, shares.dedup);
    let mut suppressor = Suppressor::new(SuppressionConfig::default(), shares.suppression);
    let mut incidents = Incidents::new(IncidentConfig::default(), shares.incidents);
    let now = Instant::now();
    let mut emitted = 0;
    for (offset, (partition, payload)) in records.iter().enumerate() {
        let Ok(anomaly) = Anomaly::decode(payload, ids) else { continue };
        if !seen.insert(*partition, &anomaly.id) {
            continue;
        }
        let origin = Origin { partition: *partition, offset: offset as i64 };
        for e in suppressor.offer(anomaly, origin, now) {
            emitted += incidents.absorb(e, now).len();
        }
    }
    for e in suppressor.drain() {
        emitted += incidents.absorb(e, now).len();
    }
    emitted + incidents.drain().len()
}

fn router_path(c: &mut Criterion) {
    let ids = SchemaIds::BUILT_IN;
    let records = records(&ids);
    let mut group = c.benchmark_group("router_path");
    group.throughput(Throughput::Elements(ANOMALIES as u64));
    group.sample_size(20);
    for (name, dedup_ids) in [("dedup_65536", 65_536), ("dedup_off", 0)] {
        group.bench_function(name, |b| {
            b.iter_batched(|| (), |()| route(&records, &ids, dedup_ids), BatchSize::SmallInput);
        });
    }
    group.finish();
}

criterion_group!(benches, router_path);
criterion_main!(benches);
