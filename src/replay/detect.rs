//! One detection pass of `netanom replay`: the detector's Kafka-free [`Engine`] over the records of a range in
//! the replay order, with the destination aggregation done in this process.

use netanom_detector::{DetectorConfig, Engine, Models, TrainedForest};
use netanom_schemas::{Anomaly, SchemaIds};

use crate::topic_range::{ReplayRecord, replay_order};

/// What a detection pass over the records found.
#[derive(Debug, Clone, Default)]
pub struct Detection {
    /// Anomalies in the order the engine emitted them.
    pub anomalies: Vec<Anomaly>,
    /// Packet batches processed.
    pub batches: u64,
    /// Records that could not be decoded (skipped).
    pub poison: u64,
    /// Packet batches outside the packet-time skew of their partition (`[detector.time]`; skipped).
    pub out_of_time: u64,
    /// Version of the isolation model used (loaded or trained), if any.
    pub model_version: Option<String>,
}

/// Runs the detector's engine over `records` in (timestamp, partition, offset) order, applying the destination
/// deltas in-process after every `config.chunk_records` records (see [`super`]).
pub fn detect(
    records: &[ReplayRecord],
    ids: &SchemaIds,
    config: &DetectorConfig,
    model: Option<TrainedForest>,
) -> Detection {
    detect_with(records, ids, config, Engine::new(config, Models { forest: model, ..Models::default() }))
}

/// [`detect`] with an engine built by the caller (e.g. with the supervised detector).
pub fn detect_with(
    records: &[ReplayRecord],
    ids: &SchemaIds,
    config: &DetectorConfig,
    mut engine: Engine,
) -> Detection {
    let order = replay_order(records);
    let mut d = Detection::default();
    for chunk in order.chunks(config.chunk_records.max(1)) {
        for r in chunk {
            if let Some(b) = r.batch(ids, &mut d.poison) {
                d.batches += 1;
                if engine.process_batch(&b, r.partition, &mut d.anomalies).is_some() {
                    d.out_of_time += 1;
                }
            }
        }
        for delta in engine.end_chunk() {
            engine.process_destination_stats(&delta, 0, &mut d.anomalies);
        }
    }
    // The end of the range ends the host-profile windows still open, as the end of a capture does.
    engine.flush_profiles(&mut d.anomalies);
    for delta in engine.flush_destination_stats() {
        engine.process_destination_stats(&delta, 0, &mut d.anomalies);
    }
    d.model_version = engine.model().map(|m| m.version().to_string());
    d
}
