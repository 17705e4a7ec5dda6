//! Topic names and their contract. Every topic name can be changed in the configuration; these are the defaults.

/// Packet batches (Avro `PacketBatch`), keyed by source IP as text.
pub const PACKETS: &str = "netanom.packets";
/// Per-destination partial aggregates (Avro `DestinationStats`), keyed by destination IP as text.
pub const DESTINATIONS: &str = "netanom.destinations";
/// Detector findings (Avro `Anomaly`), keyed by host IP as text.
pub const ANOMALIES: &str = "netanom.anomalies";
/// Alerts (JSON, see [`crate::Alert`]), keyed by host IP as text. SIEMs subscribe here.
pub const ALERTS: &str = "netanom.alerts";
/// Records that could not be processed, with the reason in the `netanom-dlq-reason` header.
pub const DEAD_LETTER: &str = "netanom.dead-letter";

/// Header carrying the reason a record was dead-lettered.
pub const DLQ_REASON_HEADER: &str = "netanom-dlq-reason";
/// Header carrying `topic/partition/offset` of the record that was dead-lettered.
pub const DLQ_ORIGIN_HEADER: &str = "netanom-dlq-origin";
