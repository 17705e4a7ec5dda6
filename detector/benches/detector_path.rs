//! The detector's hot path without Kafka: Avro decode → rate/fanout windows → victim aggregation → isolation
//! forest scoring, over ~1M generated packets in producer-like batches; plus the EIF scoring speed of the crate's
//! scorer and of the flat copy the detector uses (`detector::flat`).
//!
//! `cargo bench -p netanom-detector --bench detector_path`

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use netanom_detector::features::{FeatureScratch, FeatureVector, batch_features, model_input};
use netanom_detector::fixtures::{T0, benign_batch, scan_batch, spoofed_flood, syn_flood};
use netanom_detector::forest::{TrainOptions, train};
use netanom_detector::profile::{ProfileCollector, ProfileModel};
use netanom_detector::{DetectorConfig, Engine, Models, TrainedForest};
use netanom_schemas::{PacketBatch, SchemaIds};

fn workload() -> (Vec<Vec<u8>>, u64) {
    let ids = SchemaIds::BUILT_IN;
    let mut batches: Vec<PacketBatch> = Vec::new();
    let mut packets = 0u64;
    let mut i = 0u64;
    while packets < 1_000_000 {
        let b = if i % 500 == 499 { scan_batch(i) } else { benign_batch(i) };
        packets += b.packets.len() as u64;
        batches.push(b);
        i += 1;
    }
    for b in syn_flood("10.9.9.9".parse::<IpAddr>().unwrap(), "10.0.0.80".parse().unwrap(), T0, 20_000, 5_000) {
        packets += b.packets.len() as u64;
        batches.push(b);
    }
    for b in spoofed_flood("10.0.0.5".parse().unwrap(), T0, 20_000, 5_000_000_000, 1) {
        packets += b.packets.len() as u64;
        batches.push(b);
    }
    (batches.iter().map(|b| b.encode(&ids)).collect(), packets)
}

fn model(trees: usize) -> TrainedForest {
    let mut s = FeatureScratch::default();
    let data: Vec<FeatureVector> = (0..2_000u64)
        .map(benign_batch)
        .filter(|b| b.packets.len() >= 8)
        .take(512)
        .map(|b| batch_features(&b.packets, &mut s))
        .collect();
    let mut config = DetectorConfig::default().forest;
    config.trees = trees;
    train(&data, &TrainOptions::from(&config)).unwrap()
}

/// The host-profile model of the same benign traffic, so that the bench measures scoring, not the warm-up.
fn profile_model() -> ProfileModel {
    let config = DetectorConfig::default();
    let p = &config.profile;
    let mut collector = ProfileCollector::new(p, config.state.host_capacity(), p.warmup_profiles);
    (0..4_000u64).for_each(|i| collector.push(&benign_batch(i)));
    netanom_detector::profile::train(&collector.finish(), &netanom_detector::profile::TrainOptions::from(p)).unwrap()
}

fn detector_path(c: &mut Criterion) {
    let (payloads, packets) = workload();
    let ids = SchemaIds::BUILT_IN;
    let mut group = c.benchmark_group("detector_path");
    group.sample_size(10);
    group.throughput(Throughput::Elements(packets));
    // The default configuration, then the same with 100 trees, without the forest, without the host
    // profiles, and with retraining on (every 24 h: the workload spans ~8 h of packet time, so this measures
    // the reservoir and the guard on the hot path; a training runs on a background thread, once a period),
    // to show where the time goes.
    let variants: [(&str, Option<usize>, bool, bool); 5] = [
        ("default_50_trees", Some(50), true, false),
        ("forest_100_trees", Some(100), true, false),
        ("rules_only", None, true, false),
        ("default_without_profiles", Some(50), false, false),
        ("default_retraining_on", Some(50), true, true),
    ];
    for (name, trees, profiles, retrain) in variants {
        let mut config = DetectorConfig::default();
        config.profile.enabled = profiles;
        config.forest.retrain_every = retrain.then_some(std::time::Duration::from_secs(24 * 3600));
        config.forest.enabled = trees.is_some();
        config.forest.trees = trees.unwrap_or(100);
        group.bench_function(format!("{name}_{packets}_packets"), |b| {
            b.iter_batched(
                || {
                    let models = Models {
                        forest: Some(model(config.forest.trees)),
                        profiles: Some(profile_model()),
                        supervised: None,
                        autoencoder: None,
                    };
                    Engine::new(&config, models)
                },
                |mut engine| {
                    let mut out = Vec::new();
                    for (k, p) in payloads.iter().enumerate() {
                        let batch = PacketBatch::decode(p, &ids).unwrap();
                        engine.process_batch(&batch, 0, &mut out);
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

    let m = model(50);
    let mut s = FeatureScratch::default();
    let vectors: Vec<FeatureVector> =
        (10_000..20_000u64).map(|i| batch_features(&benign_batch(i).packets, &mut s)).collect();
    let mut group = c.benchmark_group("eif_score");
    group.sample_size(10);
    group.throughput(Throughput::Elements(vectors.len() as u64));
    // The crate's own scorer (the reference) against the flat copy the detector uses, in the same run.
    let inputs: Vec<FeatureVector> = vectors.iter().map(model_input).collect();
    group
        .bench_function("crate_score_50_trees", |b| b.iter(|| inputs.iter().map(|v| m.forest().score(v)).sum::<f64>()));
    group.bench_function("flat_score_50_trees", |b| b.iter(|| vectors.iter().map(|v| m.score(v)).sum::<f64>()));
    group.finish();

    // The warm-up trainings a detector runs inline, once each, before it scores: they stall its loop.
    let config = DetectorConfig::default();
    let mut s = FeatureScratch::default();
    let warmup: Vec<FeatureVector> = (0..2_000u64)
        .map(benign_batch)
        .filter(|b| b.packets.len() >= 8)
        .take(config.forest.warmup_samples)
        .map(|b| batch_features(&b.packets, &mut s))
        .collect();
    let p = &config.profile;
    let mut collector = ProfileCollector::new(p, config.state.host_capacity(), p.warmup_profiles);
    (0..4_000u64).for_each(|i| collector.push(&benign_batch(i)));
    let profiles = collector.finish();
    let mut group = c.benchmark_group("warmup_training");
    group.sample_size(10);
    let forest_opts = TrainOptions::from(&config.forest);
    group.bench_function(format!("forest_{}_vectors", warmup.len()), |b| {
        b.iter(|| train(&warmup, &forest_opts).unwrap().threshold())
    });
    let profile_opts = netanom_detector::profile::TrainOptions::from(p);
    group.bench_function(format!("profile_{}_profiles", profiles.len()), |b| {
        b.iter(|| netanom_detector::profile::train(&profiles, &profile_opts).unwrap().threshold())
    });
    group.finish();
}

criterion_group!(benches, detector_path);
criterion_main!(benches);
