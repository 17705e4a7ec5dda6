//! A minimal Avro binary codec for netanom's own records, following the schemas in `avro/` field by field.
//!
//! Decoding is defensive: every length is checked against the bytes that remain before anything is allocated,
//! so a hostile payload cannot make the decoder allocate more than a small multiple of its own size, and every
//! error names the record, the byte offset and what was wrong.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::frame::{self, FrameError, SchemaIds};
use crate::records::{
    Anomaly, AnomalyKind, Contribution, DestinationStats, Direction, Network, PacketBatch, PacketFeatures,
};

/// Smallest possible encoding of one `PacketFeatures` item (every varint one byte, 4-byte address): a decoder
/// uses it to reject array counts that the remaining bytes cannot hold.
const MIN_PACKET_BYTES: usize = 23;

// ---------------------------------------------------------------------------------------------- writing

fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

fn put_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => put_bytes(out, &a.octets()),
        IpAddr::V6(a) => put_bytes(out, &a.octets()),
    }
}

fn put_double(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_opt_float(out: &mut Vec<u8>, v: Option<f32>) {
    match v {
        None => put_long(out, 0),
        Some(x) => {
            put_long(out, 1);
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
}

fn put_opt_long(out: &mut Vec<u8>, v: Option<i64>) {
    match v {
        None => put_long(out, 0),
        Some(x) => {
            put_long(out, 1);
            put_long(out, x);
        }
    }
}

fn put_opt_str(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        None => put_long(out, 0),
        Some(s) => {
            put_long(out, 1);
            put_bytes(out, s.as_bytes());
        }
    }
}

fn put_opt_double(out: &mut Vec<u8>, v: Option<f64>) {
    match v {
        None => put_long(out, 0),
        Some(x) => {
            put_long(out, 1);
            put_double(out, x);
        }
    }
}

// ---------------------------------------------------------------------------------------------- reading

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    record: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], record: &'static str) -> Self {
        Self { buf, pos: 0, record }
    }

    fn err(&self, what: impl Into<String>) -> FrameError {
        FrameError::Body { record: self.record, offset: self.pos, what: what.into() }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// A zigzag varint. Most fields of a packet record are small numbers of one byte: those take the inlined
    /// fast path; longer ones (and every error) the out-of-line loop.
    #[inline]
    fn long(&mut self, field: &str) -> Result<i64, FrameError> {
        if let Some(&b) = self.buf.get(self.pos)
            && b & 0x80 == 0
        {
            self.pos += 1;
            return Ok(i64::from(b >> 1) ^ -i64::from(b & 1));
        }
        self.long_multi_byte(field)
    }

    #[inline(never)]
    fn long_multi_byte(&mut self, field: &str) -> Result<i64, FrameError> {
        let mut z: u64 = 0;
        for shift in (0..70).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.err(format!("{field}: truncated varint")));
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(self.err(format!("{field}: varint overflows 64 bits")));
            }
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err(self.err(format!("{field}: varint longer than 10 bytes")))
    }

    fn int_in<T: TryFrom<i64>>(&mut self, field: &str) -> Result<T, FrameError> {
        let v = self.long(field)?;
        T::try_from(v).map_err(|_| self.err(format!("{field}: value {v} out of range")))
    }

    fn bytes(&mut self, field: &str) -> Result<&'a [u8], FrameError> {
        let len = self.long(field)?;
        if len < 0 || len as u64 > self.remaining() as u64 {
            return Err(self.err(format!("{field}: length {len} but {} bytes remain", self.remaining())));
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(&self.buf[start..self.pos])
    }

    fn string(&mut self, field: &str) -> Result<String, FrameError> {
        let b = self.bytes(field)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(self.err(format!("{field}: not UTF-8"))),
        }
    }

    fn ip(&mut self, field: &str) -> Result<IpAddr, FrameError> {
        let b = self.bytes(field)?;
        match b.len() {
            4 => Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
            16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(b);
                Ok(IpAddr::V6(Ipv6Addr::from(a)))
            }
            n => Err(self.err(format!("{field}: address of {n} bytes, expected 4 or 16"))),
        }
    }

    /// An Avro boolean: one byte, 0 or 1.
    fn boolean(&mut self, field: &str) -> Result<bool, FrameError> {
        match self.buf.get(self.pos) {
            Some(&b) if b <= 1 => {
                self.pos += 1;
                Ok(b == 1)
            }
            Some(b) => Err(self.err(format!("{field}: boolean byte {b}, expected 0 or 1"))),
            None => Err(self.err(format!("{field}: truncated"))),
        }
    }

    fn double(&mut self, field: &str) -> Result<f64, FrameError> {
        if self.remaining() < 8 {
            return Err(self.err(format!("{field}: truncated double")));
        }
        let mut a = [0u8; 8];
        a.copy_from_slice(&self.buf[self.pos..self.pos + 8]);
        self.pos += 8;
        Ok(f64::from_le_bytes(a))
    }

    fn float(&mut self, field: &str) -> Result<f32, FrameError> {
        if self.remaining() < 4 {
            return Err(self.err(format!("{field}: truncated float")));
        }
        let mut a = [0u8; 4];
        a.copy_from_slice(&self.buf[self.pos..self.pos + 4]);
        self.pos += 4;
        Ok(f32::from_le_bytes(a))
    }

    fn union_branch(&mut self, field: &str) -> Result<bool, FrameError> {
        match self.long(field)? {
            0 => Ok(false),
            1 => Ok(true),
            i => Err(self.err(format!("{field}: union branch {i}, expected 0 (null) or 1"))),
        }
    }

    fn opt<T>(
        &mut self,
        field: &str,
        f: impl FnOnce(&mut Self, &str) -> Result<T, FrameError>,
    ) -> Result<Option<T>, FrameError> {
        if self.union_branch(field)? { f(self, field).map(Some) } else { Ok(None) }
    }

    fn enum_index(&mut self, field: &str, symbols: usize) -> Result<usize, FrameError> {
        let i = self.long(field)?;
        if i < 0 || i as usize >= symbols {
            return Err(self.err(format!("{field}: enum index {i} outside 0..{symbols}")));
        }
        Ok(i as usize)
    }

    /// Reads an array of items whose smallest encoding is `min_item` bytes, calling `item` for each.
    fn array(
        &mut self,
        field: &str,
        min_item: usize,
        mut item: impl FnMut(&mut Self) -> Result<(), FrameError>,
    ) -> Result<(), FrameError> {
        loop {
            let mut count = self.long(field)?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                count = count.checked_neg().ok_or_else(|| self.err(format!("{field}: bad block count")))?;
                let _block_bytes = self.long(field)?;
            }
            if (count as u64).saturating_mul(min_item as u64) > self.remaining() as u64 {
                return Err(self.err(format!(
                    "{field}: block of {count} items cannot fit in the {} bytes that remain",
                    self.remaining()
                )));
            }
            for _ in 0..count {
                item(self)?;
            }
        }
    }

    fn finish<T>(self, value: T) -> Result<T, FrameError> {
        if self.pos != self.buf.len() {
            return Err(self.err(format!("{} trailing bytes", self.buf.len() - self.pos)));
        }
        Ok(value)
    }
}

// ---------------------------------------------------------------------------------------------- PacketBatch

impl PacketBatch {
    /// Appends this batch, Confluent-framed with `ids.packet_batch`, to `out`.
    pub fn encode_into(&self, ids: &SchemaIds, out: &mut Vec<u8>) {
        frame::write_header(out, ids.packet_batch);
        put_ip(out, self.source);
        put_long(out, self.sequence as i64);
        if !self.packets.is_empty() {
            put_long(out, self.packets.len() as i64);
            for p in &self.packets {
                encode_packet(out, p);
            }
        }
        put_long(out, 0);
    }

    /// Encodes into a new buffer.
    pub fn encode(&self, ids: &SchemaIds) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.packets.len() * 40);
        self.encode_into(ids, &mut out);
        out
    }

    /// Decodes a framed payload.
    pub fn decode(payload: &[u8], ids: &SchemaIds) -> Result<Self, FrameError> {
        let body = frame::split_expect(payload, ids.packet_batch, "PacketBatch")?;
        let mut r = Reader::new(body, "PacketBatch");
        let source = r.ip("source")?;
        let sequence = r.long("sequence")? as u64;
        let mut packets = Vec::new();
        r.array("packets", MIN_PACKET_BYTES, |r| {
            packets.push(decode_packet(r)?);
            Ok(())
        })?;
        r.finish(PacketBatch { source, sequence, packets })
    }
}

fn encode_packet(out: &mut Vec<u8>, p: &PacketFeatures) {
    put_long(out, p.ts_ns);
    put_long(
        out,
        match p.network {
            Network::Ipv4 => 0,
            Network::Ipv6 => 1,
            Network::Arp => 2,
        },
    );
    put_ip(out, p.destination);
    put_long(out, i64::from(p.src_port));
    put_long(out, i64::from(p.dst_port));
    put_long(out, i64::from(p.ip_proto));
    put_long(out, i64::from(p.wire_len));
    put_long(out, i64::from(p.cap_len));
    put_long(out, i64::from(p.payload_len));
    put_long(out, i64::from(p.tcp_flags));
    put_long(out, i64::from(p.ttl));
    put_opt_long(out, p.vlan.map(i64::from));
    put_opt_long(out, p.icmp_type.map(i64::from));
    put_opt_long(out, p.icmp_code.map(i64::from));
    put_long(out, p.flow_duration_ns);
    put_long(out, p.flow_packets as i64);
    put_long(out, p.flow_bytes as i64);
    put_long(
        out,
        match p.direction {
            Direction::Forward => 0,
            Direction::Reverse => 1,
        },
    );
    put_opt_float(out, p.payload_entropy);
}

fn decode_packet(r: &mut Reader<'_>) -> Result<PacketFeatures, FrameError> {
    Ok(PacketFeatures {
        ts_ns: r.long("ts_ns")?,
        network: [Network::Ipv4, Network::Ipv6, Network::Arp][r.enum_index("network", 3)?],
        destination: r.ip("destination")?,
        src_port: r.int_in("src_port")?,
        dst_port: r.int_in("dst_port")?,
        ip_proto: r.int_in("ip_proto")?,
        wire_len: r.int_in("wire_len")?,
        cap_len: r.int_in("cap_len")?,
        payload_len: r.int_in("payload_len")?,
        tcp_flags: r.int_in("tcp_flags")?,
        ttl: r.int_in("ttl")?,
        vlan: r.opt("vlan", |r, f| r.int_in(f))?,
        icmp_type: r.opt("icmp_type", |r, f| r.int_in(f))?,
        icmp_code: r.opt("icmp_code", |r, f| r.int_in(f))?,
        flow_duration_ns: r.long("flow_duration_ns")?,
        flow_packets: r.int_in("flow_packets")?,
        flow_bytes: r.int_in("flow_bytes")?,
        direction: [Direction::Forward, Direction::Reverse][r.enum_index("direction", 2)?],
        payload_entropy: r.opt("payload_entropy", |r, f| r.float(f))?,
    })
}

// ---------------------------------------------------------------------------------------------- Anomaly

impl Anomaly {
    /// Encodes, Confluent-framed with `ids.anomaly`.
    pub fn encode(&self, ids: &SchemaIds) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        frame::write_header(&mut out, ids.anomaly);
        put_bytes(&mut out, self.id.as_bytes());
        put_bytes(&mut out, self.host.as_bytes());
        put_long(&mut out, self.kind.index() as i64);
        put_long(&mut out, self.window_start_ns);
        put_long(&mut out, self.window_end_ns);
        put_double(&mut out, self.score);
        put_double(&mut out, self.threshold);
        put_opt_str(&mut out, self.target.as_deref());
        put_bytes(&mut out, self.reason.as_bytes());
        if !self.features.is_empty() {
            put_long(&mut out, self.features.len() as i64);
            for c in &self.features {
                put_bytes(&mut out, c.name.as_bytes());
                put_double(&mut out, c.value);
                put_opt_double(&mut out, c.baseline);
            }
        }
        put_long(&mut out, 0);
        put_bytes(&mut out, self.sample.as_bytes());
        put_bytes(&mut out, self.model_version.as_bytes());
        put_opt_long(&mut out, self.detected_ns);
        put_opt_str(&mut out, self.window_key.as_deref());
        out.push(u8::from(self.closing));
        out
    }

    /// Decodes a framed payload.
    pub fn decode(payload: &[u8], ids: &SchemaIds) -> Result<Self, FrameError> {
        let body = frame::split_expect(payload, ids.anomaly, "Anomaly")?;
        let mut r = Reader::new(body, "Anomaly");
        let id = r.string("id")?;
        let host = r.string("host")?;
        let kind = AnomalyKind::ALL[r.enum_index("kind", AnomalyKind::ALL.len())?];
        let window_start_ns = r.long("window_start_ns")?;
        let window_end_ns = r.long("window_end_ns")?;
        let score = r.double("score")?;
        let threshold = r.double("threshold")?;
        let target = r.opt("target", |r, f| r.string(f))?;
        let reason = r.string("reason")?;
        let mut features = Vec::new();
        r.array("features", 10, |r| {
            features.push(Contribution {
                name: r.string("features.name")?,
                value: r.double("features.value")?,
                baseline: r.opt("features.baseline", |r, f| r.double(f))?,
            });
            Ok(())
        })?;
        let sample = r.string("sample")?;
        let model_version = r.string("model_version")?;
        // A record written before `detected_ns`, `window_key` and `closing` existed ends here: their defaults
        // apply.
        let (detected_ns, window_key, closing) = if r.remaining() == 0 {
            (None, None, false)
        } else {
            (r.opt("detected_ns", |r, f| r.long(f))?, r.opt("window_key", |r, f| r.string(f))?, r.boolean("closing")?)
        };
        r.finish(Anomaly {
            id,
            host,
            kind,
            window_start_ns,
            window_end_ns,
            score,
            threshold,
            target,
            reason,
            features,
            sample,
            model_version,
            detected_ns,
            window_key,
            closing,
        })
    }
}

// ---------------------------------------------------------------------------------------------- DestinationStats

impl DestinationStats {
    /// Encodes, Confluent-framed with `ids.destination_stats`.
    pub fn encode(&self, ids: &SchemaIds) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.sample_sources.len() * 17);
        frame::write_header(&mut out, ids.destination_stats);
        put_ip(&mut out, self.destination);
        put_long(&mut out, self.window_start_ns);
        put_long(&mut out, self.window_ns);
        put_long(&mut out, self.sources as i64);
        put_long(&mut out, self.packets as i64);
        put_long(&mut out, self.syn_packets as i64);
        if !self.sample_sources.is_empty() {
            put_long(&mut out, self.sample_sources.len() as i64);
            for s in &self.sample_sources {
                put_ip(&mut out, *s);
            }
        }
        put_long(&mut out, 0);
        put_long(&mut out, self.last_ts_ns);
        put_long(&mut out, i64::from(self.origin_partition));
        put_long(&mut out, self.bytes as i64);
        put_opt_long(&mut out, self.first_evidence_ns);
        put_opt_long(&mut out, self.last_evidence_ns);
        put_long(&mut out, self.unlisted_packets as i64);
        if !self.first_packet_ns.is_empty() {
            put_long(&mut out, self.first_packet_ns.len() as i64);
            for t in &self.first_packet_ns {
                put_long(&mut out, *t);
            }
        }
        put_long(&mut out, 0);
        out
    }

    /// Decodes a framed payload.
    pub fn decode(payload: &[u8], ids: &SchemaIds) -> Result<Self, FrameError> {
        let body = frame::split_expect(payload, ids.destination_stats, "DestinationStats")?;
        let mut r = Reader::new(body, "DestinationStats");
        let destination = r.ip("destination")?;
        let window_start_ns = r.long("window_start_ns")?;
        let window_ns = r.long("window_ns")?;
        let sources = r.int_in("sources")?;
        let packets = r.int_in("packets")?;
        let syn_packets = r.int_in("syn_packets")?;
        let mut sample_sources = Vec::new();
        r.array("sample_sources", 5, |r| {
            sample_sources.push(r.ip("sample_sources")?);
            Ok(())
        })?;
        let last_ts_ns = r.long("last_ts_ns")?;
        let origin_partition = r.int_in("origin_partition")?;
        // A record written before `bytes`, the evidence times and `unlisted_packets` existed ends here: their
        // defaults apply.
        let (bytes, first_evidence_ns, last_evidence_ns, unlisted_packets) = if r.remaining() == 0 {
            (0, None, None, 0)
        } else {
            (
                r.int_in("bytes")?,
                r.opt("first_evidence_ns", |r, f| r.long(f))?,
                r.opt("last_evidence_ns", |r, f| r.long(f))?,
                r.int_in("unlisted_packets")?,
            )
        };
        // And one written before `first_packet_ns` here.
        let mut first_packet_ns = Vec::new();
        if r.remaining() > 0 {
            r.array("first_packet_ns", 1, |r| {
                first_packet_ns.push(r.long("first_packet_ns")?);
                Ok(())
            })?;
        }
        r.finish(DestinationStats {
            destination,
            window_start_ns,
            window_ns,
            sources,
            packets,
            syn_packets,
            sample_sources,
            last_ts_ns,
            origin_partition,
            bytes,
            first_evidence_ns,
            last_evidence_ns,
            unlisted_packets,
            first_packet_ns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_across_the_one_byte_boundary() {
        let values = [0, 1, -1, 63, -64, 64, -65, 8191, -8192, 8192, i64::from(i32::MAX), i64::MIN, i64::MAX];
        let mut out = Vec::new();
        for v in values {
            put_long(&mut out, v);
        }
        assert_eq!(out[..5], [0, 2, 1, 126, 127], "zigzag encodings of 0, 1, -1, 63, -64");
        let mut r = Reader::new(&out, "test");
        for v in values {
            assert_eq!(r.long("v").unwrap(), v);
        }
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn bad_varints_name_the_field() {
        for (bytes, what) in [
            (&[][..], "truncated"),
            (&[0x80][..], "truncated"),
            (&[0xff; 11][..], "overflows"),
            (&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02][..], "overflows"),
        ] {
            let e = Reader::new(bytes, "test").long("ts_ns").unwrap_err().to_string();
            assert!(e.contains("ts_ns") && e.contains(what), "{bytes:?}: {e}");
        }
    }
}
