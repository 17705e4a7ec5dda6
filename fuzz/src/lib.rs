//! Entry points of netanom's fuzz targets, one per decoder of untrusted bytes, and their seed inputs built from
//! real shapes. The libFuzzer targets in `fuzz_targets/` call these functions; the workspace test
//! `tests/fuzz_regressions.rs` includes the same files and replays the seeds and every input kept in
//! `fuzz/regressions/<target>/` through them on stable Rust. Each function panics only when an invariant of
//! the decoder breaks (a decoder itself must never panic on any input).
//!
//! Without the default `full` feature only the wire decoders (`netanom-schemas`) build: a quick start on a
//! busy machine (`cargo +nightly fuzz run packet_batch --no-default-features`).

#[path = "schemas.rs"]
pub mod schemas;
pub use schemas::{anomaly, confluent_frame, destination_stats, packet_batch};

#[cfg(feature = "full")]
#[path = "full.rs"]
pub mod full;
#[cfg(feature = "full")]
pub use full::*;
