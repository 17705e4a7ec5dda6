//! Confluent wire framing: magic byte 0, the schema id as 4 bytes big-endian, then the Avro binary body.

/// The schema id of each record type. Without a schema registry, netanom uses [`SchemaIds::BUILT_IN`]; with one,
/// the ids the registry assigned (see docs/operations.md, "Schemas and the schema registry").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaIds {
    /// Id of `netanom.v1.PacketBatch`.
    pub packet_batch: u32,
    /// Id of `netanom.v1.Anomaly`.
    pub anomaly: u32,
    /// Id of `netanom.v1.DestinationStats`.
    pub destination_stats: u32,
}

impl SchemaIds {
    /// The built-in table, used when no registry is configured.
    pub const BUILT_IN: SchemaIds = SchemaIds { packet_batch: 1, anomaly: 2, destination_stats: 3 };
}

impl Default for SchemaIds {
    fn default() -> Self {
        Self::BUILT_IN
    }
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than the 5-byte header.
    #[error("payload of {0} bytes is shorter than the 5-byte Confluent header")]
    TooShort(usize),
    /// First byte is not 0.
    #[error("magic byte is {0:#04x}, expected 0x00 (not Confluent-framed Avro)")]
    BadMagic(u8),
    /// The schema id is not the one this topic carries.
    #[error("schema id {found} is not {expected}, the id of {record}")]
    WrongSchema {
        /// Id in the payload.
        found: u32,
        /// Id expected.
        expected: u32,
        /// Record name expected.
        record: &'static str,
    },
    /// The Avro body is malformed.
    #[error("malformed {record} body at byte {offset}: {what}")]
    Body {
        /// Record being decoded.
        record: &'static str,
        /// Offset within the body.
        offset: usize,
        /// What was wrong.
        what: String,
    },
}

/// Writes the 5-byte header for `schema_id` into `out`.
pub fn write_header(out: &mut Vec<u8>, schema_id: u32) {
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
}

/// Splits a framed payload into its schema id and body.
pub fn split(payload: &[u8]) -> Result<(u32, &[u8]), FrameError> {
    if payload.len() < 5 {
        return Err(FrameError::TooShort(payload.len()));
    }
    if payload[0] != 0 {
        return Err(FrameError::BadMagic(payload[0]));
    }
    let id = u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]);
    Ok((id, &payload[5..]))
}

/// Splits a framed payload and checks that it carries `expected` (the id of `record`).
pub fn split_expect<'a>(payload: &'a [u8], expected: u32, record: &'static str) -> Result<&'a [u8], FrameError> {
    let (found, body) = split(payload)?;
    if found != expected {
        return Err(FrameError::WrongSchema { found, expected, record });
    }
    Ok(body)
}
