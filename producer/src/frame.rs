//! [`Frame`]: one captured frame as every packet source yields it, borrowed from the source's buffer.

/// One captured frame, borrowed from the capture's buffer.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Capture timestamp, ns since the Unix epoch.
    pub ts_ns: i64,
    /// tcpdump.org `LINKTYPE_*` of the frame (see [`crate::parse::linktype`]).
    pub link_type: u32,
    /// Length on the wire.
    pub wire_len: u32,
    /// Captured bytes (possibly fewer than `wire_len`).
    pub data: &'a [u8],
}
