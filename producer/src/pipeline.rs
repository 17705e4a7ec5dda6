//! The pure producer path without I/O: frame → [`Parsed`](crate::parse::Parsed) → flow state →
//! [`PacketFeatures`] ([`FeatureExtractor`]) → per-source [`PacketBatch`]es ([`Pipeline`]), with the counters
//! of what was read, parsed and skipped. Benchmarks and other crates use it without Kafka or libpcap.

use std::collections::BTreeMap;
use std::net::IpAddr;

use netanom_schemas::{PacketBatch, PacketFeatures};

use crate::batch::{BatchConfig, BatchStats, Batcher};
use crate::flow::{FlowConfig, FlowStats, FlowTable};
use crate::frame::Frame;
use crate::parse::{Skip, parse};

/// Turns frames into packet features: parsing plus the flow table.
#[derive(Debug)]
pub struct FeatureExtractor {
    flows: FlowTable,
}

impl FeatureExtractor {
    /// A new extractor with an empty flow table.
    pub fn new(flow: &FlowConfig) -> Self {
        Self { flows: FlowTable::new(flow) }
    }

    /// The features of one frame and its source address, or why it cannot be used.
    pub fn extract(&mut self, frame: &Frame<'_>) -> Result<(IpAddr, PacketFeatures), Skip> {
        let p = parse(frame.link_type, frame.data, frame.wire_len)?;
        let wire_len = frame.wire_len.max(frame.data.len() as u32);
        let flow = self.flows.observe(&p, frame.ts_ns, wire_len);
        Ok((
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
            },
        ))
    }

    /// Flow table counters.
    pub fn flow_stats(&self) -> FlowStats {
        self.flows.stats()
    }
}

/// Frame counters of a [`Pipeline`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineCounts {
    /// Frames pushed.
    pub read: u64,
    /// Frames turned into features (and handed to the batcher).
    pub parsed: u64,
    /// Frames skipped, by reason ([`Skip::as_str`]); reasons with no skip are absent.
    pub skipped: BTreeMap<&'static str, u64>,
}

/// The whole pure path: features plus batching.
#[derive(Debug)]
pub struct Pipeline {
    extractor: FeatureExtractor,
    batcher: Batcher,
    read: u64,
    parsed: u64,
    skipped: [u64; Skip::ALL.len()],
}

impl Pipeline {
    /// A new pipeline.
    pub fn new(flow: &FlowConfig, batch: &BatchConfig) -> Self {
        Self {
            extractor: FeatureExtractor::new(flow),
            batcher: Batcher::new(batch),
            read: 0,
            parsed: 0,
            skipped: [0; Skip::ALL.len()],
        }
    }

    /// Processes one frame; batches it closes are lent to `emit`.
    pub fn push(&mut self, frame: &Frame<'_>, emit: &mut impl FnMut(&PacketBatch)) -> Result<(), Skip> {
        self.read += 1;
        match self.extractor.extract(frame) {
            Ok((source, features)) => {
                self.parsed += 1;
                self.batcher.push(source, features, emit);
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
        PipelineCounts { read: self.read, parsed: self.parsed, skipped }
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
