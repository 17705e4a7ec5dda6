//! Producer path throughput on 1M synthetic packets: (a) parse → features → batch → encode without Kafka, from
//! memory; (b) the full `run` (file read included) into an in-process MockCluster. Prints packets/s of one timed
//! pass of each before criterion's own measurement. Then the file read alone, netanom's reader against
//! libpcap's on the same file. `NETANOM_BENCH_PACKETS` overrides the count.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use netanom_handles::RoleHandles;
use netanom_producer::file::CaptureFile;
use netanom_producer::synth::{self, SynthPacket};
use netanom_producer::{BatchConfig, FlowConfig, Frame, Pipeline, ProducerConfig, run};
use netanom_schemas::{PacketBatch, SchemaIds};
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

fn packet_count() -> usize {
    std::env::var("NETANOM_BENCH_PACKETS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

/// (a): returns encoded bytes so nothing is optimised away.
fn pure_path(packets: &[SynthPacket]) -> u64 {
    let mut pipeline = Pipeline::new(&FlowConfig::default(), &BatchConfig::default());
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut bytes = 0u64;
    let mut emit = |b: &PacketBatch| {
        buf.clear();
        b.encode_into(&SchemaIds::BUILT_IN, &mut buf);
        bytes += buf.len() as u64;
    };
    for p in packets {
        let frame = Frame { ts_ns: p.ts_ns, link_type: 1, wire_len: p.data.len() as u32, data: &p.data };
        let _ = pipeline.push(&frame, &mut emit);
    }
    pipeline.finish(&mut emit);
    bytes
}

fn full_path(rt: &tokio::runtime::Runtime, path: &std::path::Path, n: usize) -> Duration {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let topic = format!("bench-{}", rand::random::<u32>());
    cluster.create_topic(&topic, 6, 1).expect("topic");
    let config = ProducerConfig {
        pcap: Some(path.to_path_buf()),
        brokers: cluster.bootstrap_servers(),
        topic,
        ..ProducerConfig::default()
    };
    let start = Instant::now();
    let report = rt.block_on(run(config, CancellationToken::new(), RoleHandles::default())).expect("run");
    let elapsed = start.elapsed();
    assert_eq!(report.packets_published as usize, n);
    elapsed
}

/// Reads every frame with netanom's reader; returns the captured bytes.
fn read_netanom(path: &std::path::Path) -> u64 {
    let mut file = CaptureFile::open(path, None).expect("open");
    let mut bytes = 0u64;
    while let Some(frame) = file.next_frame().expect("read") {
        bytes += black_box(frame.data).len() as u64;
    }
    bytes
}

/// Reads every frame with libpcap (what the producer used before); returns the captured bytes.
fn read_libpcap(path: &std::path::Path) -> u64 {
    let mut capture = pcap::Capture::from_file_with_precision(path, pcap::Precision::Nano).expect("open");
    let mut bytes = 0u64;
    while let Ok(packet) = capture.next_packet() {
        bytes += black_box(packet.data).len() as u64;
    }
    bytes
}

fn bench(c: &mut Criterion) {
    let n = packet_count();
    let t = Instant::now();
    let packets = synth::mixed_packets(1, n);
    eprintln!("generated {n} packets in {:.2?}", t.elapsed());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.pcap");
    synth::write_packets_pcap(&packets, &path).expect("write pcap");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");

    let t = Instant::now();
    black_box(pure_path(&packets));
    let a = t.elapsed();
    eprintln!("(a) parse+features+batch+encode: {:.0} packets/s ({a:.2?})", n as f64 / a.as_secs_f64());
    let b = full_path(&rt, &path, n);
    eprintln!("(b) full path file -> MockCluster: {:.0} packets/s ({b:.2?})", n as f64 / b.as_secs_f64());

    let mut group = c.benchmark_group("producer_path");
    group.sample_size(10).throughput(Throughput::Elements(n as u64));
    group.bench_function("pure_pipeline_encode", |bench| bench.iter(|| black_box(pure_path(&packets))));
    group.bench_function("full_path_mock_cluster", |bench| {
        bench.iter_custom(|iters| (0..iters).map(|_| full_path(&rt, &path, n)).sum())
    });
    group.finish();

    assert_eq!(read_netanom(&path), read_libpcap(&path), "both readers see the same bytes");
    let mut group = c.benchmark_group("file_read");
    group.sample_size(10).throughput(Throughput::Elements(n as u64));
    group.bench_function("netanom", |bench| bench.iter(|| black_box(read_netanom(&path))));
    group.bench_function("libpcap", |bench| bench.iter(|| black_box(read_libpcap(&path))));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
