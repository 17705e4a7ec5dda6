//! netanom's wire contract, and nothing else: the Avro schemas (the `.avsc` files in `avro/` are the source of
//! truth and are embedded here), the records they describe, their binary codecs with Confluent framing, the
//! alert JSON, and the names of the topics — plus the outbound-address policy ([`outbound`]) that every client of
//! a configured URL applies, the keyed address pseudonyms ([`pseudonym`]) of the producer and `netanom reveal`, and the packet-time contract ([`packet_time`]: the timestamps a record may carry
//! relative to its stream, and saturating window arithmetic). This crate does no I/O and depends on neither tokio nor rdkafka.
//!
//! The hot-path records ([`PacketBatch`], [`Anomaly`], [`DestinationStats`]) are encoded by a small hand-written
//! Avro binary codec ([`avro`]) that is checked against `apache-avro` by property tests: the generic codec costs
//! microseconds per record and the producer path must stay under one microsecond per packet.

pub mod alert;
pub mod avro;
pub mod bytes;
pub mod frame;
pub mod outbound;
pub mod packet_time;
pub mod pseudonym;
pub mod records;
pub mod redact;
pub mod topics;

pub use alert::{Alert, IncidentKind, IncidentTotals, format_rfc3339, format_rfc3339_ns, time_from_ns};
pub use frame::{FrameError, SchemaIds};
pub use records::{
    Analytic, Anomaly, AnomalyKind, Contribution, DestinationStats, Direction, Network, PacketBatch, PacketFeatures,
};

/// The `.avsc` source of each schema, embedded at build time.
pub mod avsc {
    /// `avro/packet_batch.v1.avsc`.
    pub const PACKET_BATCH_V1: &str = include_str!("../avro/packet_batch.v1.avsc");
    /// `avro/anomaly.v1.avsc`.
    pub const ANOMALY_V1: &str = include_str!("../avro/anomaly.v1.avsc");
    /// `avro/destination_stats.v1.avsc`.
    pub const DESTINATION_STATS_V1: &str = include_str!("../avro/destination_stats.v1.avsc");
    /// `avro/alert.v1.avsc`.
    pub const ALERT_V1: &str = include_str!("../avro/alert.v1.avsc");
}
