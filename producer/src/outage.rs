//! Riding out a Kafka outage (`[producer.outage]`). Owns the producer's memory budget for records waiting for
//! Kafka and what happens to a record when that budget is spent: dropped with exact counts, or appended to a
//! bounded spool file and published, in order, once the broker is back.
//!
//! A capture that can wait for Kafka (a file read as fast as possible) simply waits while librdkafka's queue is
//! full, and this module only sizes that queue. A capture that cannot wait — a live interface, whose kernel
//! buffer overflows while the reader is blocked, or a paced replay — never blocks on Kafka: its records wait in
//! librdkafka's queue for as long as the broker is away (no delivery timeout), and once the queue holds the
//! budget, each further record is dropped (`on_full = "drop"`) or spooled (`on_full = "spool"`). While the
//! spool holds records, new ones go behind them, so every source's records reach Kafka in capture order; the
//! spool is drained whenever librdkafka's queue has room, and what is still in it at shutdown stays in the file
//! and is published first by the next run.
//!
//! Spool file: a sequence of records, each `u32 length` (of what follows, little-endian), `u32 packets`,
//! `i64 timestamp_ms`, `u16 key length`, the key, the payload (an encoded `PacketBatch`, Confluent framing
//! included). A record cut short by a crash is dropped when the file is opened (and counted). Trace headers are
//! not spooled.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use rdkafka::message::OwnedHeaders;

use crate::metrics::Metrics;
use crate::publish::{PublishError, Publisher, Sent};

/// Bytes of a spool record before its key: length, packets, timestamp, key length.
const RECORD_HEADER: usize = 4 + 4 + 8 + 2;
/// Largest record the spool accepts (a producer batch is far smaller).
const MAX_RECORD: u64 = 64 << 20;
/// Smallest plausible packet-batch record, used to derive librdkafka's message-count limit from the budget.
const MIN_RECORD_BYTES: u64 = 256;

/// What happens to a record of a capture that cannot wait once the queue holds the memory budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFull {
    /// Dropped and counted (`netanom.producer.outage.dropped`).
    #[default]
    Drop,
    /// Appended to the spool file (`spool_path`), published when the broker is back; dropped and counted when
    /// the spool is full.
    Spool,
}

/// `[producer.outage]`: the memory budget of records waiting for Kafka, and what a live capture does with
/// records beyond it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutageConfig {
    /// Memory for records waiting for Kafka, in MiB: librdkafka's `queue.buffering.max.kbytes` (and a message
    /// count of one per 256 bytes). Default 256, a quarter of the producer's 1 GiB container limit.
    pub queue_budget_mib: u64,
    /// What a capture that cannot wait (live, or a paced replay) does with a record once the queue is full:
    /// `drop` (default) or `spool`.
    pub on_full: OnFull,
    /// The spool file (required with `on_full = "spool"`); created if missing. Records left in it by an earlier
    /// run are published first.
    pub spool_path: Option<PathBuf>,
    /// Largest spool file, in MiB; records beyond it are dropped and counted. Default 1024.
    pub spool_max_mib: u64,
}

impl Default for OutageConfig {
    fn default() -> Self {
        Self { queue_budget_mib: 256, on_full: OnFull::Drop, spool_path: None, spool_max_mib: 1024 }
    }
}

impl OutageConfig {
    /// Every problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut e = Vec::new();
        if !(1..=65_536).contains(&self.queue_budget_mib) {
            e.push(format!("producer.outage.queue_budget_mib must be in 1..=65536, got {}", self.queue_budget_mib));
        }
        match (self.on_full, &self.spool_path) {
            (OnFull::Spool, None) => {
                e.push("producer.outage.spool_path must be set when producer.outage.on_full is \"spool\"".into())
            }
            (OnFull::Spool, Some(p)) if p.as_os_str().is_empty() => {
                e.push("producer.outage.spool_path must not be empty".into())
            }
            (OnFull::Drop, Some(p)) => e.push(format!(
                "producer.outage.spool_path ({}) is set but producer.outage.on_full is \"drop\": set on_full = \
                 \"spool\" or remove spool_path",
                p.display()
            )),
            _ => {}
        }
        if self.spool_max_mib == 0 {
            e.push("producer.outage.spool_max_mib must be > 0, got 0".into());
        }
        e
    }

    /// librdkafka's queue limits for the budget.
    pub fn queue_properties(&self) -> [(&'static str, String); 2] {
        let bytes = self.queue_budget_mib.saturating_mul(1 << 20);
        let messages = (bytes / MIN_RECORD_BYTES).clamp(1_000, 10_000_000);
        [
            ("queue.buffering.max.kbytes", (bytes / 1024).to_string()),
            ("queue.buffering.max.messages", messages.to_string()),
        ]
    }
}

/// A spool I/O problem, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("spool file {}: {source}", path.display())]
pub struct SpoolError {
    /// The spool file.
    pub path: PathBuf,
    /// What failed.
    pub source: io::Error,
}

/// One spooled record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledRecord {
    /// The record key (the source address).
    pub key: String,
    /// The record timestamp.
    pub timestamp_ms: i64,
    /// Packets in the batch.
    pub packets: u32,
    /// The encoded batch.
    pub payload: Vec<u8>,
}

/// A bounded first-in first-out file of records. See the module documentation for the layout.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    file: File,
    /// Where the next record is read.
    read_at: u64,
    /// Where the next record is written (the end of the complete records).
    write_at: u64,
    max_bytes: u64,
    pending_records: u64,
    pending_packets: u64,
}

impl Spool {
    /// Opens (or creates) the spool at `path`; records already in it are pending. A record cut short at the end
    /// is cut off; returns the spool and the bytes cut.
    pub fn open(path: &Path, max_bytes: u64) -> Result<(Self, u64), SpoolError> {
        let err = |source| SpoolError { path: path.to_path_buf(), source };
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(err)?;
        let len = file.metadata().map_err(err)?.len();
        let (mut at, mut records, mut packets) = (0u64, 0u64, 0u64);
        let mut header = [0u8; RECORD_HEADER];
        while at < len {
            file.seek(SeekFrom::Start(at)).map_err(err)?;
            if len - at < RECORD_HEADER as u64 || file.read_exact(&mut header).is_err() {
                break;
            }
            let rest = u64::from(u32::from_le_bytes([header[0], header[1], header[2], header[3]]));
            if rest < (RECORD_HEADER - 4) as u64 || rest > MAX_RECORD || at + 4 + rest > len {
                break;
            }
            records += 1;
            packets += u64::from(u32::from_le_bytes([header[4], header[5], header[6], header[7]]));
            at += 4 + rest;
        }
        let cut = len - at;
        if cut > 0 {
            file.set_len(at).map_err(err)?;
        }
        let spool = Self {
            path: path.to_path_buf(),
            file,
            read_at: 0,
            write_at: at,
            max_bytes,
            pending_records: records,
            pending_packets: packets,
        };
        Ok((spool, cut))
    }

    /// Records not yet published.
    pub fn pending_records(&self) -> u64 {
        self.pending_records
    }

    /// Packets in the records not yet published.
    pub fn pending_packets(&self) -> u64 {
        self.pending_packets
    }

    /// Bytes of the file (published records included until the spool empties and is reset).
    pub fn file_bytes(&self) -> u64 {
        self.write_at
    }

    /// Appends a record. `Ok(false)`: the file would exceed its limit, nothing was written.
    pub fn push(&mut self, key: &str, timestamp_ms: i64, packets: u32, payload: &[u8]) -> Result<bool, SpoolError> {
        let key = &key.as_bytes()[..key.len().min(usize::from(u16::MAX))];
        let rest = (RECORD_HEADER - 4 + key.len() + payload.len()) as u64;
        if rest > MAX_RECORD || self.write_at + 4 + rest > self.max_bytes {
            return Ok(false);
        }
        let mut buf = Vec::with_capacity(4 + rest as usize);
        buf.extend_from_slice(&(rest as u32).to_le_bytes());
        buf.extend_from_slice(&packets.to_le_bytes());
        buf.extend_from_slice(&timestamp_ms.to_le_bytes());
        buf.extend_from_slice(&(key.len() as u16).to_le_bytes());
        buf.extend_from_slice(key);
        buf.extend_from_slice(payload);
        let err = |source| SpoolError { path: self.path.clone(), source };
        self.file.seek(SeekFrom::Start(self.write_at)).map_err(err)?;
        if let Err(source) = self.file.write_all(&buf) {
            // Leave no partial record behind.
            let _ = self.file.set_len(self.write_at);
            return Err(err(source));
        }
        self.write_at += buf.len() as u64;
        self.pending_records += 1;
        self.pending_packets += u64::from(packets);
        Ok(true)
    }

    /// The oldest pending record, not removed ([`Spool::pop`] removes it once it is handed to Kafka).
    pub fn front(&mut self) -> Result<Option<SpooledRecord>, SpoolError> {
        if self.pending_records == 0 {
            return Ok(None);
        }
        let err = |source| SpoolError { path: self.path.clone(), source };
        self.file.seek(SeekFrom::Start(self.read_at)).map_err(err)?;
        let mut header = [0u8; RECORD_HEADER];
        self.file.read_exact(&mut header).map_err(err)?;
        let rest = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let packets = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&header[8..16]);
        let key_len = usize::from(u16::from_le_bytes([header[16], header[17]]));
        let body_len = rest.saturating_sub(RECORD_HEADER - 4);
        if key_len > body_len {
            return Err(err(io::Error::new(io::ErrorKind::InvalidData, "a record's key is longer than the record")));
        }
        let mut body = vec![0u8; body_len];
        self.file.read_exact(&mut body).map_err(err)?;
        let payload = body.split_off(key_len);
        Ok(Some(SpooledRecord {
            key: String::from_utf8_lossy(&body).into_owned(),
            timestamp_ms: i64::from_le_bytes(ts),
            packets,
            payload,
        }))
    }

    /// Removes the oldest pending record (after [`Spool::front`] returned it); an emptied spool is reset to an
    /// empty file.
    pub fn pop(&mut self, record: &SpooledRecord) -> Result<(), SpoolError> {
        let len = (RECORD_HEADER + record.key.len() + record.payload.len()) as u64;
        self.read_at += len;
        self.pending_records = self.pending_records.saturating_sub(1);
        self.pending_packets = self.pending_packets.saturating_sub(u64::from(record.packets));
        if self.pending_records == 0 {
            self.file.set_len(0).map_err(|source| SpoolError { path: self.path.clone(), source })?;
            self.read_at = 0;
            self.write_at = 0;
        }
        Ok(())
    }

    /// Leaves only the pending records in the file (for the next run), and syncs it.
    pub fn close(mut self) -> Result<(), SpoolError> {
        let err = |source| SpoolError { path: self.path.clone(), source };
        if self.read_at > 0 {
            let mut rest = Vec::new();
            self.file.seek(SeekFrom::Start(self.read_at)).map_err(err)?;
            (&mut self.file).take(self.write_at - self.read_at).read_to_end(&mut rest).map_err(err)?;
            let tmp = self.path.with_extension("compacting");
            std::fs::write(&tmp, &rest).map_err(err)?;
            std::fs::rename(&tmp, &self.path).map_err(err)?;
            return Ok(());
        }
        self.file.sync_all().map_err(err)
    }
}

/// What the outage handling did in one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutageReport {
    /// Records dropped because the queue (and the spool, if any) was full or the spool failed.
    pub dropped_records: u64,
    /// Packets in them.
    pub dropped_packets: u64,
    /// Records written to the spool.
    pub spooled_records: u64,
    /// Records left in the spool file at the end, for the next run (their packets are not published yet).
    pub spool_left_records: u64,
    /// Packets in them.
    pub spool_left_packets: u64,
    /// Records published from a spool left by an earlier run.
    pub resumed_records: u64,
    /// Packets in them.
    pub resumed_packets: u64,
}

/// Where the records of a capture that cannot wait go when librdkafka's queue is full. See the module
/// documentation.
#[derive(Debug)]
pub struct Overflow {
    spool: Option<Spool>,
    metrics: Metrics,
    report: OutageReport,
    /// Records still pending from an earlier run, published before anything else.
    resumable: u64,
    /// A spool that failed is not used again in this run (its records stay in the file).
    spool_failed: bool,
}

impl Overflow {
    /// For `config`: opens the spool (publishing first what an earlier run left in it).
    pub fn new(config: &OutageConfig, metrics: Metrics) -> Result<Self, SpoolError> {
        let spool = match (config.on_full, &config.spool_path) {
            (OnFull::Spool, Some(path)) => {
                let (spool, cut) = Spool::open(path, config.spool_max_mib.saturating_mul(1 << 20))?;
                if cut > 0 {
                    tracing::warn!(spool = %path.display(), bytes = cut, "spool: a record cut short by a crash was dropped");
                }
                if spool.pending_records() > 0 {
                    tracing::info!(
                        spool = %path.display(),
                        records = spool.pending_records(),
                        packets = spool.pending_packets(),
                        "spool: publishing the records an earlier run left, before new ones"
                    );
                }
                Some(spool)
            }
            _ => None,
        };
        let resumable = spool.as_ref().map_or(0, Spool::pending_records);
        let overflow = Self { spool, metrics, report: OutageReport::default(), resumable, spool_failed: false };
        overflow.gauge();
        Ok(overflow)
    }

    fn gauge(&self) {
        let (bytes, records) = self.spool.as_ref().map_or((0, 0), |s| (s.file_bytes(), s.pending_records()));
        self.metrics.spool_bytes.record(bytes, &[]);
        self.metrics.spool_records.record(records, &[]);
    }

    fn drop_record(&mut self, packets: u32, reason: &'static str) {
        if self.report.dropped_records == 0 {
            tracing::warn!(reason, "Kafka is not taking records fast enough: dropping packet batches (counted)");
        }
        self.report.dropped_records += 1;
        self.report.dropped_packets += u64::from(packets);
        self.metrics.outage_dropped.add(u64::from(packets), &[KeyValue::new("reason", reason)]);
    }

    fn spool_error(&mut self, e: &SpoolError) {
        tracing::error!(error = %e, "spool failed: records that do not fit the queue are dropped from now on");
        self.spool_failed = true;
    }

    /// Hands a record to Kafka without blocking: behind the spooled records if there are any, else to
    /// librdkafka's queue, and when that is full to the spool or the floor.
    pub fn send(
        &mut self,
        publisher: &Publisher,
        key: &str,
        payload: &[u8],
        timestamp_ms: i64,
        packets: u32,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), PublishError> {
        self.pump(publisher)?;
        let queued_behind = self.spool.as_ref().is_some_and(|s| s.pending_records() > 0);
        if !queued_behind && publisher.try_send(key, payload, timestamp_ms, packets as usize, headers)? == Sent::Queued
        {
            return Ok(());
        }
        if self.spool_failed {
            self.drop_record(packets, "spool_error");
            return Ok(());
        }
        let Some(spool) = self.spool.as_mut() else {
            self.drop_record(packets, "queue_full");
            return Ok(());
        };
        match spool.push(key, timestamp_ms, packets, payload) {
            Ok(true) => {
                self.report.spooled_records += 1;
                self.gauge();
            }
            Ok(false) => self.drop_record(packets, "spool_full"),
            Err(e) => {
                self.spool_error(&e);
                self.drop_record(packets, "spool_error");
            }
        }
        Ok(())
    }

    /// Moves spooled records to librdkafka's queue while it has room.
    pub fn pump(&mut self, publisher: &Publisher) -> Result<(), PublishError> {
        if self.spool_failed {
            return Ok(());
        }
        let Some(spool) = self.spool.as_mut() else { return Ok(()) };
        if spool.pending_records() == 0 {
            return Ok(());
        }
        let mut moved = false;
        let failed = loop {
            let record = match spool.front() {
                Ok(Some(r)) => r,
                Ok(None) => break None,
                Err(e) => break Some(e),
            };
            match publisher.try_send(
                &record.key,
                &record.payload,
                record.timestamp_ms,
                record.packets as usize,
                None,
            )? {
                Sent::Full => break None,
                Sent::Queued => {}
            }
            if let Err(e) = spool.pop(&record) {
                break Some(e);
            }
            moved = true;
            if self.resumable > 0 {
                self.resumable -= 1;
                self.report.resumed_records += 1;
                self.report.resumed_packets += u64::from(record.packets);
            }
        };
        if let Some(e) = failed {
            self.spool_error(&e);
        }
        if moved {
            self.gauge();
        }
        Ok(())
    }

    /// At the end of a run: drains the spool into Kafka until `deadline`, then leaves what is still in it in
    /// the file for the next run.
    pub fn finish(mut self, publisher: &Publisher, deadline: Instant) -> OutageReport {
        while self.spool.as_ref().is_some_and(|s| s.pending_records() > 0)
            && !self.spool_failed
            && Instant::now() < deadline
        {
            if let Err(e) = self.pump(publisher) {
                tracing::error!(error = %e, "spool: cannot hand records to Kafka; they stay in the spool");
                break;
            }
            publisher.poll(Duration::from_millis(20));
        }
        if let Some(spool) = self.spool.take() {
            self.report.spool_left_records = spool.pending_records();
            self.report.spool_left_packets = spool.pending_packets();
            if spool.pending_records() > 0 {
                tracing::warn!(
                    records = spool.pending_records(),
                    packets = spool.pending_packets(),
                    "spool: records left for the next run"
                );
            }
            if let Err(e) = spool.close() {
                tracing::error!(error = %e, "spool: cannot compact the file; its records may be published twice");
            }
        }
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn records_come_out_in_order_and_survive_a_restart() {
        let dir = temp();
        let path = dir.path().join("spool");
        let (mut s, cut) = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!(cut, 0);
        for i in 0..5u32 {
            assert!(s.push(&format!("10.0.0.{i}"), i64::from(i), i + 1, &vec![i as u8; 100 + i as usize]).unwrap());
        }
        assert_eq!((s.pending_records(), s.pending_packets()), (5, 15));
        let first = s.front().unwrap().unwrap();
        assert_eq!(
            (first.key.as_str(), first.timestamp_ms, first.packets, first.payload.len()),
            ("10.0.0.0", 0, 1, 100)
        );
        s.pop(&first).unwrap();
        let second = s.front().unwrap().unwrap();
        s.pop(&second).unwrap();
        s.close().unwrap();
        let (mut s, cut) = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!((cut, s.pending_records(), s.pending_packets()), (0, 3, 12));
        let mut keys = Vec::new();
        while let Some(r) = s.front().unwrap() {
            keys.push(r.key.clone());
            assert_eq!(r.payload, vec![r.timestamp_ms as u8; 100 + r.timestamp_ms as usize]);
            s.pop(&r).unwrap();
        }
        assert_eq!(keys, ["10.0.0.2", "10.0.0.3", "10.0.0.4"]);
        assert_eq!((s.file_bytes(), std::fs::metadata(&path).unwrap().len()), (0, 0), "an empty spool is reset");
    }

    #[test]
    fn the_spool_is_bounded_and_a_torn_tail_is_cut() {
        let dir = temp();
        let path = dir.path().join("spool");
        let (mut s, _) = Spool::open(&path, 1000).unwrap();
        let mut accepted = 0;
        while s.push("k", 1, 1, &[0u8; 100]).unwrap() {
            accepted += 1;
        }
        assert_eq!(accepted, 1000 / (RECORD_HEADER + 1 + 100));
        assert!(s.file_bytes() <= 1000);
        s.close().unwrap();
        // A crash in the middle of a write leaves part of a record.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (s, cut) = Spool::open(&path, 1000).unwrap();
        assert_eq!((cut, s.pending_records()), (6, accepted as u64));
    }

    #[test]
    fn config_is_validated_all_at_once() {
        let cfg = OutageConfig { queue_budget_mib: 0, on_full: OnFull::Spool, spool_path: None, spool_max_mib: 0 };
        let e = cfg.validate().join("\n");
        for key in ["queue_budget_mib", "spool_path must be set", "spool_max_mib"] {
            assert!(e.contains(key), "{key}: {e}");
        }
        let stray = OutageConfig { spool_path: Some("s".into()), ..OutageConfig::default() };
        assert!(stray.validate()[0].contains("on_full is \"drop\""), "{:?}", stray.validate());
        assert!(OutageConfig::default().validate().is_empty());
        let [(k, v), (m, n)] = OutageConfig::default().queue_properties();
        assert_eq!(
            (k, v.as_str(), m, n.as_str()),
            ("queue.buffering.max.kbytes", "262144", "queue.buffering.max.messages", "1048576")
        );
    }
}
