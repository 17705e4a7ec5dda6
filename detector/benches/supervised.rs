//! Cost of the supervised detector: P(attack) of one batch vector, and the detector's engine over ~1M
//! packets of producer-like batches with the supervised model on and off (rules only otherwise, so the
//! difference is the supervised detector's). The model is the most expensive of the default grid: 50 trees
//! of depth up to 16.
//!
//! `cargo bench -p netanom-detector --bench supervised`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use netanom_detector::features::{FeatureScratch, FeatureVector, batch_features};
use netanom_detector::fixtures::{benign_batch, scan_batch};
use netanom_detector::supervised::{Grid, Settings, SupervisedDetector, SupervisedModel, train::train};
use netanom_detector::{DetectorConfig, Engine, Models, SupervisedConfig};
use netanom_schemas::PacketBatch;

fn model() -> SupervisedModel {
    let mut s = FeatureScratch::default();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for i in 0..3_000u64 {
        let b = if i % 10 == 0 { scan_batch(i) } else { benign_batch(i) };
        if b.packets.len() >= 8 {
            x.push(batch_features(&b.packets, &mut s));
            y.push(i % 10 == 0);
        }
    }
    let settings = Settings {
        grid: Grid { trees: vec![50], max_depth: vec![16], feature_fraction: vec![1.0] },
        ..Settings::default()
    };
    train(&x, &y, None, &settings).unwrap().model
}

fn supervised(c: &mut Criterion) {
    let m = model();
    let mut s = FeatureScratch::default();
    let vectors: Vec<FeatureVector> =
        (10_000..20_000u64).map(|i| batch_features(&benign_batch(i).packets, &mut s)).collect();
    let mut group = c.benchmark_group("supervised_score");
    group.sample_size(10);
    group.throughput(Throughput::Elements(vectors.len() as u64));
    group.bench_function("p_attack_50_trees", |b| b.iter(|| vectors.iter().map(|v| m.p_attack(v)).sum::<f64>()));
    group.finish();

    let mut batches: Vec<PacketBatch> = Vec::new();
    let mut packets = 0u64;
    let mut i = 0u64;
    while packets < 1_000_000 {
        let b = if i % 500 == 499 { scan_batch(i) } else { benign_batch(i) };
        packets += b.packets.len() as u64;
        batches.push(b);
        i += 1;
    }
    let mut group = c.benchmark_group("engine_supervised");
    group.sample_size(10);
    group.throughput(Throughput::Elements(packets));
    let mut config = DetectorConfig::default();
    config.forest.enabled = false;
    for on in [false, true] {
        let name = if on { "rules_and_supervised" } else { "rules_only" };
        group.bench_function(format!("{name}_{packets}_packets"), |b| {
            b.iter_batched(
                || {
                    let d = on.then(|| SupervisedDetector::new(&SupervisedConfig::default(), m.clone()));
                    Engine::new(&config, Models { supervised: d, ..Models::default() })
                },
                |mut engine| {
                    let mut out = Vec::new();
                    for (k, batch) in batches.iter().enumerate() {
                        engine.process_batch(batch, 0, &mut out);
                        if k % 512 == 511 {
                            for d in engine.end_chunk() {
                                engine.process_destination_stats(&d, 0, &mut out);
                            }
                        }
                    }
                    black_box(out.len())
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, supervised);
criterion_main!(benches);
