//! Topic names and their contract. Every topic name can be changed in the configuration; these are the defaults.

/// Packet batches (Avro `PacketBatch`), keyed by source IP as text.
pub const PACKETS: &str = "netanom.packets";
/// Per-destination partial aggregates (Avro `DestinationStats`), keyed by destination IP as text.
pub const DESTINATIONS: &str = "netanom.destinations";
/// Detector findings (Avro `Anomaly`), keyed by host IP as text.
pub const ANOMALIES: &str = "netanom.anomalies";
/// Alerts (JSON, see [`crate::Alert`], or the ECS or OCSF document of one), keyed by host IP as text, each
/// record naming its format in [`FORMAT_HEADER`] and [`SCHEMA_VERSION_HEADER`]. SIEMs subscribe here.
pub const ALERTS: &str = "netanom.alerts";
/// Records that could not be processed, with the reason in the `netanom-dlq-reason` header.
pub const DEAD_LETTER: &str = "netanom.dead-letter";

/// The isolation forest's shared warm-up and model in force (JSON), compacted: `sample-<partition>` keys carry
/// each packets-topic partition's warm-up vectors, the `forest` key the recipe of the model every detector
/// trains and scores with.
pub const MODELS: &str = "netanom.models";

/// Header carrying the reason a record was dead-lettered.
pub const DLQ_REASON_HEADER: &str = "netanom-dlq-reason";
/// Header carrying `topic/partition/offset` of the record that was dead-lettered.
pub const DLQ_ORIGIN_HEADER: &str = "netanom-dlq-origin";
/// Header of a parked alert naming the destination (a webhook's name, or `syslog`) that refused it; the
/// alerts the router's destinations park are the records that carry it.
pub const DLQ_DESTINATION_HEADER: &str = "netanom-dlq-destination";
/// Header of a parked alert counting the delivery rounds that failed for it: the destination's own (1), then each
/// `netanom dlq replay` that was refused again. A record without it counts as 1.
pub const DLQ_ATTEMPTS_HEADER: &str = "netanom-dlq-attempts";
/// Header of an alert parked again by `netanom dlq replay`, naming that replay (a random id), so that the replay
/// stops where its own records begin instead of taking them again.
pub const DLQ_REPLAY_HEADER: &str = "netanom-dlq-replay";

/// Header of alerts-topic records naming the document format: `netanom` (the [`crate::Alert`] JSON), `ecs` or
/// `ocsf`.
pub const FORMAT_HEADER: &str = "netanom-format";
/// Header of alerts-topic records carrying the version of the format's schema: `1` for the netanom alert JSON
/// (`avro/alert.v1.avsc`), the ECS version (e.g. `8.11.0`) or the OCSF version (e.g. `1.3.0`).
pub const SCHEMA_VERSION_HEADER: &str = "netanom-schema-version";
/// Header of alerts-topic records whose format is not `netanom`: the native [`crate::Alert`] JSON, from which the
/// router's destinations render their own formats.
pub const NATIVE_ALERT_HEADER: &str = "netanom-alert";
