//! Fuzz entry points of the decoders that need the rest of the workspace: link-layer frames, capture files,
//! the scoring API's body, model files and configuration files; plus [`run`] (any target by name) and the seed
//! inputs of every target, built from real shapes.

use std::io::Read;
use std::sync::OnceLock;

use netanom_detector::DetectorConfig;
use netanom_detector::api::ANALYZE_PATH;
use netanom_producer::file::CaptureFile;
use netanom_producer::parse::linktype;
use netanom_producer::{BatchConfig, FlowConfig, Frame, Pipeline};
use netanom_schemas::{PacketBatch, SchemaIds};

use crate::schemas::{self, anomaly, confluent_frame, destination_stats, packet_batch, round_trip};

/// Every target, by name (the directory names under `fuzz/regressions/` and the binaries in `fuzz_targets/`).
pub const TARGETS: [&str; 10] = [
    "frame",
    "capture_file",
    "packet_batch",
    "anomaly",
    "destination_stats",
    "confluent_frame",
    "api_body",
    "forest_model",
    "supervised_model",
    "config",
];

/// Runs `target` on `data`.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "frame" => frame(data),
        "capture_file" => capture_file(data),
        "packet_batch" => packet_batch(data),
        "anomaly" => anomaly(data),
        "destination_stats" => destination_stats(data),
        "confluent_frame" => confluent_frame(data),
        "api_body" => api_body(data),
        "forest_model" => forest_model(data),
        "supervised_model" => supervised_model(data),
        "config" => config(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// Link types a frame input can name with its first byte.
const LINK_TYPES: [u32; 11] = [
    linktype::ETHERNET,
    linktype::RAW,
    linktype::LINUX_SLL,
    linktype::LINUX_SLL2,
    linktype::NULL,
    linktype::LOOP,
    linktype::IPV4,
    linktype::IPV6,
    linktype::RAW_BSD,
    linktype::RAW_OPENBSD,
    147,
];

/// Link-layer frame → packet features → batches: byte 0 picks the link type (low 4 bits) and how many bytes
/// the capture cut (high 4 bits × 64); the rest is the frame, pushed twice (the second sees flow state).
/// Checks that every frame is parsed or skipped and that each closed batch survives an Avro round trip.
pub fn frame(data: &[u8]) {
    let Some((&head, bytes)) = data.split_first() else { return };
    let link_type = LINK_TYPES[usize::from(head & 0x0F) % LINK_TYPES.len()];
    let wire_len = (bytes.len() as u32).saturating_add(u32::from(head >> 4) * 64);
    let mut pipeline = Pipeline::new(&FlowConfig::default(), &BatchConfig::default());
    let mut emit = |b: &PacketBatch| round_trip(b);
    for ts_ns in [1_700_000_000_000_000_000, 1_700_000_000_001_000_000] {
        let _ = pipeline.push(&Frame { ts_ns, link_type, wire_len, data: bytes }, &mut emit);
    }
    pipeline.finish(&mut emit);
    let c = pipeline.counts();
    assert_eq!(c.read, 2);
    assert_eq!(c.read, c.parsed + c.skipped.values().sum::<u64>(), "{c:?}");
}

/// A reader that returns at most `chunk` bytes per `read`, so that the capture reader refills constantly.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// A whole pcap or pcapng file: byte 0 sets the size of each read (1 to 256 × 97 bytes: refills at every
/// boundary) and, when its low 2 bits are 0, a `tcp` BPF filter; the rest is the file. Every frame is pushed
/// through the pipeline. Checks that frames and skipped records fit in the file, and that the reader's
/// position never passes its end.
pub fn capture_file(data: &[u8]) {
    let Some((&head, file)) = data.split_first() else { return };
    let chunk = (usize::from(head) + 1) * 97;
    let filter = (head & 3 == 0).then_some("tcp");
    let owned = file.to_vec();
    let reader = OwnedChunked { data: owned, pos: 0, chunk };
    let Ok(mut capture) = CaptureFile::from_reader(reader, filter) else { return };
    let mut pipeline = Pipeline::new(&FlowConfig::default(), &BatchConfig::default());
    let mut emit = |_: &PacketBatch| {};
    let mut frames = 0u64;
    while let Ok(Some(frame)) = capture.next_frame() {
        frames += 1;
        assert!(frame.data.len() <= file.len());
        let _ = pipeline.push(&frame, &mut emit);
        assert!(capture_position_ok(&capture, file.len()));
    }
    pipeline.finish(&mut emit);
    assert!(capture_position_ok(&capture, file.len()));
    let skipped: u64 = capture.skipped().map(|(_, n)| n).sum();
    // Every record takes at least 12 bytes of the file (a pcapng block; a pcap record takes 16).
    assert!((frames + skipped) * 12 <= file.len() as u64, "{frames} frames, {skipped} skipped in {}", file.len());
    assert_eq!(pipeline.counts().read, frames);
}

fn capture_position_ok(capture: &CaptureFile, len: usize) -> bool {
    capture.position() <= len as u64
}

/// [`Chunked`] over owned bytes (the capture reader needs a `'static` source).
struct OwnedChunked {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
}

impl Read for OwnedChunked {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rest = &self.data[self.pos..];
        let mut c = Chunked { data: rest, chunk: self.chunk };
        let n = c.read(buf)?;
        self.pos += n;
        Ok(n)
    }
}

/// The scoring API: `data` as the JSON body of `POST /api/v1/analyze` through the detector's router (no model
/// is loaded, so a valid batch is answered 503 after parsing, and a capture client's packet is judged by the
/// rules: 200). Checks that the answer is 200, a client error or 503, never a 500 (a panic while parsing or
/// judging).
pub fn api_body(data: &[u8]) {
    use tower::ServiceExt as _;
    static API: OnceLock<(tokio::runtime::Runtime, axum::Router)> = OnceLock::new();
    let (runtime, router) = API.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        (runtime, {
            let config = DetectorConfig::default();
            netanom_detector::api::router(&config, netanom_detector::ModelFeed::default())
        })
    });
    let request = axum::http::Request::post(ANALYZE_PATH)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(data.to_vec()))
        .expect("a request");
    let response = runtime.block_on(router.clone().oneshot(request)).expect("the router answers");
    let status = response.status().as_u16();
    assert!(matches!(status, 200 | 400 | 413 | 422 | 503), "status {status}");
}

/// `data` as a file at a temporary path, for loaders that take a path.
fn with_file(data: &[u8], load: impl FnOnce(&std::path::Path)) {
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(file.path(), data).expect("write the temporary file");
    load(file.path());
}

/// An isolation-forest model file (`--model`, `detector.forest.model`).
pub fn forest_model(data: &[u8]) {
    with_file(data, |path| {
        if let Ok(model) = netanom_detector::TrainedForest::load(path) {
            let score = model.score(&[1.0; netanom_detector::features::FEATURES]);
            assert!((0.0..=1.0).contains(&score), "score {score}");
        }
    });
}

/// A supervised model file (`detector.supervised.model`).
pub fn supervised_model(data: &[u8]) {
    with_file(data, |path| {
        if let Ok(model) = netanom_detector::supervised::SupervisedModel::load(path) {
            let p = model.p_attack(&[1.0; netanom_detector::features::FEATURES]);
            assert!((0.0..=1.0).contains(&p), "p_attack {p}");
        }
    });
}

/// A configuration file (`--config`), through the same loader as `netanom` (file, no environment, no flags).
pub fn config(data: &[u8]) {
    with_file(data, |path| {
        let _ = netanom::config::load(Some(path), Vec::new(), &[]);
    });
}

/// Seed inputs for every target, built from real shapes: synthetic captures (pcap and pcapng), encoded records,
/// a scoring request, trained models and the deployment configuration. Returns (target, input) pairs.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let packets = netanom_producer::synth::mixed_packets(7, 40);
    for (i, p) in packets.iter().enumerate().take(24) {
        out.push(("frame", [&[0u8][..], &p.data].concat()));
        // The same packet as raw IP and behind a Linux cooked header.
        let ip = p.data.get(14..).unwrap_or_default();
        out.push(("frame", [&[1u8][..], ip].concat()));
        let mut sll = vec![2u8, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0];
        sll.extend_from_slice(p.data.get(12..).unwrap_or_default());
        if i % 4 == 0 {
            out.push(("frame", sll));
        }
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    for name in ["a.pcap", "a.pcapng"] {
        let path = dir.path().join(name);
        if name.ends_with("ng") {
            netanom_producer::synth::write_packets_pcapng(&packets[..20], &path).expect("write a capture");
        } else {
            netanom_producer::synth::write_packets_pcap(&packets[..20], &path).expect("write a capture");
        }
        let bytes = std::fs::read(&path).expect("read it back");
        out.push(("capture_file", [&[255u8][..], &bytes].concat()));
        out.push(("capture_file", [&[4u8][..], &bytes].concat()));
        out.push(("capture_file", [&[0u8][..], &bytes].concat()));
    }
    out.extend(schemas::seeds());
    let ids = SchemaIds::BUILT_IN;
    for i in [0, 3] {
        let batch = netanom_detector::fixtures::benign_batch(i);
        let bytes = batch.encode(&ids);
        out.push(("packet_batch", bytes[5..].to_vec()));
        out.push(("confluent_frame", bytes));
    }
    out.push((
        "api_body",
        br#"{"source": "198.51.100.99", "packets": [{"ts_ns": 1700000030001000000, "destination": "10.0.1.3",
            "src_port": 40001, "dst_port": 1, "ip_proto": 6, "wire_len": 54, "payload_len": 0, "tcp_flags": 2,
            "ttl": 64, "flow_packets": 1, "direction": "forward"}]}"#
            .to_vec(),
    ));
    out.push((
        "api_body",
        br#"{"ts_ns": 1, "destination": "::1", "ip_proto": 17, "wire_len": 60, "payload_len": 18, "ttl": 1,
            "vlan": 7, "icmp_type": null, "flow_packets": 3, "flow_bytes": 180, "direction": "reverse"}"#
            .to_vec(),
    ));
    let (forest, supervised) = models();
    out.push(("forest_model", forest));
    out.push(("supervised_model", supervised));
    out.push(("config", include_bytes!("../../deploy/compose/netanom.toml").to_vec()));
    out.push(("config", include_bytes!("../../deploy/k8s/base/netanom.toml").to_vec()));
    out
}

/// A small isolation forest and a small supervised model, saved as their loaders read them.
fn models() -> (Vec<u8>, Vec<u8>) {
    use netanom_detector::features::{FeatureScratch, batch_features};
    use netanom_detector::fixtures::{benign_batch, scan_batch};
    use netanom_detector::forest::{TrainOptions, train};
    use netanom_detector::supervised::{Grid, Settings, train as supervised};
    let mut scratch = FeatureScratch::default();
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..200 {
        let b = benign_batch(i);
        if b.packets.len() >= 8 {
            x.push(batch_features(&b.packets, &mut scratch));
            y.push(false);
        }
    }
    let opts = TrainOptions {
        trees: 4,
        sample_size: 32,
        extension_level: 1,
        seed: 1,
        threshold_quantile: 0.99,
        threshold_margin: 0.0,
        threshold_floor: 0.5,
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("forest.json");
    train(&x, &opts).expect("train a forest").save(&path).expect("save it");
    let forest = std::fs::read(&path).expect("read it back");
    for i in 0..12 {
        x.push(batch_features(&scan_batch(i).packets, &mut scratch));
        y.push(true);
    }
    let settings = Settings {
        grid: Grid { trees: vec![3], max_depth: vec![4], feature_fraction: vec![1.0] },
        folds: 3,
        ..Settings::default()
    };
    let model = supervised::train(&x, &y, None, &settings).expect("train a supervised model").model;
    let path = dir.path().join("supervised.json");
    model.save(&path).expect("save it");
    (forest, std::fs::read(&path).expect("read it back"))
}
