//! The pure producer path without I/O: frame → [`Parsed`] → flow state →
//! [`PacketFeatures`] ([`FeatureExtractor`]) → per-source [`PacketBatch`]es ([`Pipeline`]), with the counters
//! of what was read, parsed and skipped. Benchmarks and other crates use it without Kafka or libpcap.

use std::collections::BTreeMap;
use std::net::IpAddr;

use netanom_schemas::packet_time::{Admission, PacketClock, SkewConfig};
use netanom_schemas::pseudonym::Pseudonymizer;
use netanom_schemas::{Direction, PacketBatch, PacketFeatures};

use crate::batch::{BatchConfig, BatchStats, Batcher};
use crate::flow::{FlowConfig, FlowInfo, FlowStats, FlowTable};
use crate::frame::Frame;
use crate::parse::{Parsed, Skip, parse};

/// Turns frames into packet features: parsing, the address pseudonyms when configured, and the flow table.
#[derive(Debug)]
pub struct FeatureExtractor {
    flows: FlowTable,
    pseudonyms: Option<Pseudonymizer>,
}

impl FeatureExtractor {
    /// A new extractor with an empty flow table.
    pub fn new(flow: &FlowConfig) -> Self {
        Self { flows: FlowTable::new(flow), pseudonyms: None }
    }

    /// Parses a frame and replaces its addresses by their pseudonyms when a pseudonymizer is set: nothing
    /// after this point (flow table, batches, records) sees a captured address.
    fn parse(&mut self, frame: &Frame<'_>) -> Result<Parsed, Skip> {
        let mut p = parse(frame.link_type, frame.data, frame.wire_len)?;
        if let Some(pseudonyms) = &mut self.pseudonyms {
            p.source = pseudonyms.pseudonym(p.source);
            p.destination = pseudonyms.pseudonym(p.destination);
        }
        Ok(p)
    }

    /// The features of one frame and its source address, or why it cannot be used.
    pub fn extract(&mut self, frame: &Frame<'_>) -> Result<(IpAddr, PacketFeatures), Skip> {
        let p = self.parse(frame)?;
        let wire_len = frame.wire_len.max(frame.data.len() as u32);
        let flow = self.flows.observe(&p, frame.ts_ns, wire_len);
        Ok(features(frame, &p, wire_len, flow))
    }

    /// The features of a frame outside the packet-time skew: parsed, but kept out of the flow table (its time
    /// must not expire or age any flow), so its flow state is that of a flow's first packet.
    pub fn extract_alone(&mut self, frame: &Frame<'_>) -> Result<(IpAddr, PacketFeatures), Skip> {
        let p = self.parse(frame)?;
        let wire_len = frame.wire_len.max(frame.data.len() as u32);
        let flow = FlowInfo { duration_ns: 0, packets: 1, bytes: u64::from(wire_len), direction: Direction::Forward };
        Ok(features(frame, &p, wire_len, flow))
    }

    /// Flow table counters.
    pub fn flow_stats(&self) -> FlowStats {
        self.flows.stats()
    }
}

fn features(frame: &Frame<'_>, p: &Parsed, wire_len: u32, flow: FlowInfo) -> (IpAddr, PacketFeatures) {
    (
        p.source,
        PacketFeatures {
            ts_ns: frame.ts_ns,
            network: p.network,
            destination: p.destination,
            src_port: p.src_port,
            dst_port: p.dst_port,
            ip_proto: p.ip_proto,
            wire_len,
            cap_len: frame.data.len() as u32,
            payload_len: p.payload_len,
            tcp_flags: p.tcp_flags,
            ttl: p.ttl,
            vlan: p.vlan,
            icmp_type: p.icmp_type,
            icmp_code: p.icmp_code,
            flow_duration_ns: flow.duration_ns,
            flow_packets: flow.packets,
            flow_bytes: flow.bytes,
            direction: flow.direction,
            payload_entropy: p.payload_entropy,
        },
    )
}

/// Frame counters of a [`Pipeline`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineCounts {
    /// Frames pushed.
    pub read: u64,
    /// Frames turned into features (and handed to the batcher).
    pub parsed: u64,
    /// Of the parsed frames, those outside the packet-time skew, published alone (see [`Pipeline`]).
    pub time_skewed: u64,
    /// Frames skipped, by reason ([`Skip::as_str`]); reasons with no skip are absent.
    pub skipped: BTreeMap<&'static str, u64>,
}

/// The whole pure path: features plus batching.
///
/// # Packet time
///
/// Every frame's time is checked by the skew rule (`[producer.time]`, [`netanom_schemas::packet_time`]): against
/// the capture's own packet clock for a file, against the wall clock for a live capture ([`Pipeline::push_live`]).
/// A frame outside it is counted ([`PipelineCounts::time_skewed`]) and published as a batch of its own without
/// touching the flow table or the open batches, so it expires no flow and closes no batch; the detector, which
/// applies the same rule per partition, dead-letters it with the reason.
#[derive(Debug)]
pub struct Pipeline {
    extractor: FeatureExtractor,
    batcher: Batcher,
    time: SkewConfig,
    clock: PacketClock,
    read: u64,
    parsed: u64,
    time_skewed: u64,
    skipped: [u64; Skip::ALL.len()],
}

impl Pipeline {
    /// A new pipeline, with the default skew rule.
    pub fn new(flow: &FlowConfig, batch: &BatchConfig) -> Self {
        Self {
            extractor: FeatureExtractor::new(flow),
            batcher: Batcher::new(batch),
            time: SkewConfig::default(),
            clock: PacketClock::default(),
            read: 0,
            parsed: 0,
            time_skewed: 0,
            skipped: [0; Skip::ALL.len()],
        }
    }

    /// The pipeline with the skew rule `time`.
    pub fn with_time(mut self, time: &SkewConfig) -> Self {
        self.time = time.clone();
        self
    }

    /// The pipeline publishing pseudonyms instead of addresses (`None`: the captured addresses).
    pub fn with_pseudonyms(mut self, pseudonyms: Option<Pseudonymizer>) -> Self {
        self.extractor.pseudonyms = pseudonyms;
        self
    }

    /// Processes one frame of a file; batches it closes are lent to `emit`.
    pub fn push(&mut self, frame: &Frame<'_>, emit: &mut impl FnMut(&PacketBatch)) -> Result<(), Skip> {
        let on_time = !matches!(self.clock.admit(&self.time, frame.ts_ns, frame.ts_ns), Admission::Rejected(_));
        self.push_checked(frame, on_time, emit)
    }

    /// Processes one frame of a live capture read at wall time `now_ns`; batches it closes are lent to `emit`.
    pub fn push_live(
        &mut self,
        frame: &Frame<'_>,
        now_ns: i64,
        emit: &mut impl FnMut(&PacketBatch),
    ) -> Result<(), Skip> {
        let on_time = self.time.check(now_ns, frame.ts_ns, frame.ts_ns).is_ok();
        self.push_checked(frame, on_time, emit)
    }

    fn push_checked(
        &mut self,
        frame: &Frame<'_>,
        on_time: bool,
        emit: &mut impl FnMut(&PacketBatch),
    ) -> Result<(), Skip> {
        self.read += 1;
        let extracted = if on_time { self.extractor.extract(frame) } else { self.extractor.extract_alone(frame) };
        match extracted {
            Ok((source, features)) => {
                self.parsed += 1;
                if on_time {
                    self.batcher.push(source, features, emit);
                } else {
                    self.time_skewed += 1;
                    self.batcher.emit_alone(source, features, emit);
                }
                Ok(())
            }
            Err(skip) => {
                self.skipped[skip as usize] += 1;
                Err(skip)
            }
        }
    }

    /// Closes batches due at `now_ns` (packet time); for idle live captures.
    pub fn tick(&mut self, now_ns: i64, emit: &mut impl FnMut(&PacketBatch)) {
        self.batcher.expire(now_ns, emit);
    }

    /// Closes every open batch (end of input, shutdown).
    pub fn finish(&mut self, emit: &mut impl FnMut(&PacketBatch)) {
        self.batcher.flush_all(emit);
    }

    /// Frame counters.
    pub fn counts(&self) -> PipelineCounts {
        let skipped = Skip::ALL
            .iter()
            .filter(|s| self.skipped[**s as usize] > 0)
            .map(|s| (s.as_str(), self.skipped[*s as usize]))
            .collect();
        PipelineCounts { read: self.read, parsed: self.parsed, time_skewed: self.time_skewed, skipped }
    }

    /// Flow table counters.
    pub fn flow_stats(&self) -> FlowStats {
        self.extractor.flow_stats()
    }

    /// Batcher counters.
    pub fn batch_stats(&self) -> BatchStats {
        self.batcher.stats()
    }
}
