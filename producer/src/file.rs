//! Capture files (pcap and pcapng) read without libpcap's per-packet `fread`s: the `pcap-parser` crate parses
//! records in place in a 1 MiB buffer that is refilled with large reads, so a frame is borrowed straight from
//! that buffer. On the 1 M-packet bench capture libpcap's two `fread` calls per packet (header, then data, each
//! taking the stream lock and copying) were about a fifth of the capture thread's CPU.
//!
//! Beyond libpcap, a pcapng file may mix interfaces of different link types: every frame carries its own.
//! BPF filters are still libpcap's: compiled per link type with `pcap_compile` and run with
//! `pcap_offline_filter`. One difference from libpcap's own file reading: on a frame cut short by the snap
//! length, the filter's `len` (and so `greater` and `less`) is the captured length, not the wire length
//! (`pcap::BpfProgram::filter` passes only the bytes, and this workspace forbids `unsafe`).
//!
//! Every record is accounted for: a frame is returned, or counted in [`CaptureFile::skipped`] with its reason
//! (rejected by the filter, a corrupt or oversize pcapng block, a packet of an undeclared interface). A pcapng
//! block gives its own length, so a corrupt one is skipped and reading resumes at the next; a pcap record does
//! not delimit itself, so a corrupt length there ends the file with an error.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use pcap_parser::pcapng::{Block, InterfaceDescriptionBlock, OptionCode};
use pcap_parser::traits::{PcapNGPacketBlock, PcapReaderIterator};
use pcap_parser::{PcapBlockOwned, PcapError};

use crate::frame::Frame;
use crate::parse::Skip;

/// Initial size of the read buffer; it grows (to [`MAX_RECORD`]) only for a record that does not fit.
const BUFFER: usize = 1 << 20;

/// Largest record (pcap frame or pcapng block) the reader buffers: bounds what a hostile length field can make
/// it allocate. A larger pcapng block is skipped unbuffered ([`Skip::OversizeRecord`]); a larger pcap record
/// is an error ([`FileError::TooLarge`]).
pub const MAX_RECORD: usize = 16 << 20;

/// What is wrong with a capture file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be opened or read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file is empty.
    #[error("the file is empty")]
    Empty,
    /// Neither a pcap nor a pcapng header.
    #[error("not a pcap or pcapng file (unrecognised header)")]
    NotCapture,
    /// The file ends inside a record.
    #[error("the file ends in the middle of a record (truncated capture?)")]
    Truncated,
    /// A record announces more bytes than the reader accepts.
    #[error("a record is larger than {MAX_RECORD} bytes (corrupt length field?)")]
    TooLarge,
    /// A record could not be parsed.
    #[error("malformed record at byte {offset}")]
    Malformed {
        /// Offset of the record in the file.
        offset: u64,
    },
    /// A pcapng file without an Interface Description Block before its end.
    #[error("the pcapng file declares no interface")]
    NoInterface,
    /// An Interface Description Block declares a timestamp resolution that does not fit 64 bits.
    #[error("interface {interface} declares an invalid timestamp resolution (if_tsresol {tsresol:#x})")]
    Resolution {
        /// The interface id.
        interface: usize,
        /// The raw `if_tsresol` option.
        tsresol: u8,
    },
}

/// Where a frame lies in the reader's buffer, found while the parser borrows it.
struct Located {
    ts_ns: i64,
    link_type: u32,
    wire_len: u32,
    addr: usize,
    len: usize,
}

impl Located {
    /// The frame's bytes in `buffer`, the reader's data that the parser borrowed when it located the frame.
    fn find<'a>(&self, buffer: &'a [u8], offset: u64) -> Result<&'a [u8], FileError> {
        let start = self.addr.wrapping_sub(buffer.as_ptr() as usize);
        buffer.get(start..start.saturating_add(self.len)).ok_or(FileError::Malformed { offset })
    }
}

/// One pcapng interface: how to read its packets' link layer and timestamps.
#[derive(Debug, Clone, Copy)]
struct Interface {
    link_type: u32,
    snaplen: u32,
    /// Timestamp units per second.
    units_per_sec: u64,
    /// Seconds added to every timestamp (`if_tsoffset`).
    offset_sec: i64,
}

enum Format {
    Pcap { link_type: u32, units_per_sec: u64 },
    PcapNg { interfaces: Vec<Interface>, big_endian: bool },
}

/// A pcap or pcapng file, read record by record.
pub struct CaptureFile {
    reader: Box<dyn PcapReaderIterator + Send>,
    format: Format,
    /// Bytes of the frame last returned, consumed at the next call (the frame borrows them until then).
    pending: usize,
    /// Bytes consumed so far: the file offset of the next record.
    offset: u64,
    capacity: usize,
    filter: Option<Filter>,
    /// Records skipped so far, by reason (indexed by `Skip as usize`).
    skipped: [u64; Skip::ALL.len()],
    /// Bytes of an oversize pcapng block still to be skipped.
    skipping: u64,
}

impl CaptureFile {
    /// Opens `path` and reads its header (and, for pcapng, the blocks before the first packet), compiling
    /// `filter` for the link types seen so far. Other link types of a pcapng file get their filter compiled
    /// when their interface is declared.
    pub fn open(path: &Path, filter: Option<&str>) -> Result<Self, Failure> {
        Self::from_reader(File::open(path).map_err(FileError::Io)?, filter)
    }

    /// [`CaptureFile::open`] on any byte stream.
    pub fn from_reader<R: Read + Send + 'static>(input: R, filter: Option<&str>) -> Result<Self, Failure> {
        let reader = pcap_parser::create_reader(BUFFER, input).map_err(|e| match e {
            PcapError::Eof => FileError::Empty,
            PcapError::ReadError => FileError::Io(read_failed()),
            PcapError::Incomplete(_) | PcapError::UnexpectedEof => FileError::Truncated,
            _ => FileError::NotCapture,
        })?;
        let mut file = Self {
            reader,
            format: Format::PcapNg { interfaces: Vec::new(), big_endian: false },
            pending: 0,
            offset: 0,
            capacity: BUFFER,
            filter: filter.map(Filter::new),
            skipped: [0; Skip::ALL.len()],
            skipping: 0,
        };
        // Read up to the first packet: the pcap header, or pcapng's section header and interface descriptions.
        while file.first_link_type().is_none() {
            match file.advance()? {
                Step::Header => {}
                // Unreachable in practice (a packet before any interface is skipped as `UnknownInterface`); if
                // one came, it is left for `next_frame`.
                Step::Frame(_) => file.pending = 0,
                Step::End => return Err(FileError::NoInterface.into()),
            }
        }
        if let (Some(link_type), Some(filter)) = (file.first_link_type(), &mut file.filter) {
            filter.program(link_type)?;
        }
        Ok(file)
    }

    /// Link type of the file (pcap) or of its first interface (pcapng); `None` before any interface.
    pub fn first_link_type(&self) -> Option<u32> {
        match &self.format {
            Format::Pcap { link_type, .. } => Some(*link_type),
            Format::PcapNg { interfaces, .. } => interfaces.first().map(|i| i.link_type),
        }
    }

    /// Records read but not returned as frames, by reason (only reasons with a count). With the frames
    /// returned, they make up every packet record of the file read so far.
    pub fn skipped(&self) -> impl Iterator<Item = (Skip, u64)> + '_ {
        Skip::ALL.iter().map(|s| (*s, self.skipped[*s as usize])).filter(|(_, n)| *n > 0)
    }

    /// Bytes of the file up to the end of the record last read.
    pub fn position(&self) -> u64 {
        self.offset + self.pending as u64
    }

    /// The next frame that passes the filter; `None` at the end of the file.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, Failure> {
        let located = loop {
            let located = match self.advance()? {
                Step::End => return Ok(None),
                Step::Header => continue,
                Step::Frame(located) => located,
            };
            match &mut self.filter {
                Some(filter) => {
                    let data = located.find(self.reader.data(), self.offset)?;
                    if filter.matches(located.link_type, data)? {
                        break located;
                    }
                    self.count(Skip::Filtered);
                }
                None => break located,
            }
        };
        let data = located.find(self.reader.data(), self.offset)?;
        Ok(Some(Frame { ts_ns: located.ts_ns, link_type: located.link_type, wire_len: located.wire_len, data }))
    }

    /// Consumes the previous record and parses the next one, refilling (and if needed growing) the buffer;
    /// records that are skipped are counted and passed over.
    fn advance(&mut self) -> Result<Step, FileError> {
        self.consume(self.pending);
        self.pending = 0;
        loop {
            if self.skipping > 0 {
                self.skip_oversize()?;
                continue;
            }
            // The parser's error borrows the buffer: classify it first.
            let parsed = match self.reader.next() {
                Ok((size, block)) => Ok((size, Self::interpret(&mut self.format, block, self.offset)?)),
                Err(PcapError::Eof) => return Ok(Step::End),
                Err(PcapError::ReadError) => return Err(read_failed().into()),
                Err(PcapError::Incomplete(_)) => Err(Refused::NeedMore),
                Err(PcapError::BufferTooSmall) => Err(Refused::TooSmall),
                Err(PcapError::UnexpectedEof) => Err(Refused::Truncated),
                Err(_) => Err(Refused::Malformed),
            };
            let (size, step) = match parsed {
                Ok(parsed) => parsed,
                // pcap-parser asks for more bytes when a length inside a block points past the block's end:
                // with the whole block in the buffer, that block is corrupt.
                Err(Refused::NeedMore | Refused::TooSmall | Refused::Truncated) if self.whole_block().is_some() => {
                    (self.whole_block().unwrap_or_default(), Record::Skipped(Skip::CorruptRecord))
                }
                Err(Refused::NeedMore) => {
                    self.refill()?;
                    continue;
                }
                Err(Refused::TooSmall) => {
                    if self.capacity >= MAX_RECORD {
                        // Only a pcapng block can be passed over without buffering it: its length is reliable
                        // enough to try (the next block's header is checked in turn).
                        let len = self.block_len().ok_or(FileError::TooLarge)?;
                        self.skipping = u64::from(len);
                        self.count(Skip::OversizeRecord);
                        continue;
                    }
                    self.grow()?;
                    self.refill()?;
                    continue;
                }
                // A block that is all there but whose two lengths differ cannot be delimited.
                Err(Refused::Truncated) => {
                    let whole = self.block_len().is_some_and(|len| self.reader.data().len() >= len as usize);
                    return Err(if whole {
                        FileError::Malformed { offset: self.offset }
                    } else {
                        FileError::Truncated
                    });
                }
                Err(Refused::Malformed) => match self.resync()? {
                    Some(len) => (len, Record::Skipped(Skip::CorruptRecord)),
                    None => {
                        self.refill()?;
                        continue;
                    }
                },
            };
            return Ok(match step {
                Record::Frame(located) => {
                    self.pending = size;
                    Step::Frame(located)
                }
                Record::Skipped(reason) => {
                    self.consume(size);
                    self.count(reason);
                    continue;
                }
                Record::Header => {
                    self.consume(size);
                    Step::Header
                }
            });
        }
    }

    fn consume(&mut self, size: usize) {
        self.reader.consume_noshift(size);
        self.offset = self.offset.saturating_add(size as u64);
    }

    fn count(&mut self, reason: Skip) {
        let n = &mut self.skipped[reason as usize];
        *n = n.saturating_add(1);
    }

    /// The length of the pcapng block at the read position, from its header; `None` for a pcap file or a
    /// length no block can have (below 12 bytes or not a multiple of 4).
    fn block_len(&self) -> Option<u32> {
        let Format::PcapNg { big_endian, .. } = self.format else { return None };
        let data = self.reader.data();
        let block_type = u32::from_le_bytes(data.get(..4)?.try_into().ok()?);
        if block_type == SECTION_HEADER {
            // A section header defines the byte order its own length is read in: a corrupt one cannot be trusted.
            return None;
        }
        let len = read_u32(data.get(4..8)?, big_endian);
        (len >= 12 && len % 4 == 0).then_some(len)
    }

    /// The length of the pcapng block at the read position when all of it is in the buffer and its trailing
    /// length matches.
    fn whole_block(&self) -> Option<usize> {
        let Format::PcapNg { big_endian, .. } = self.format else { return None };
        let len = self.block_len()? as usize;
        let trailer = self.reader.data().get(len - 4..len)?;
        (read_u32(trailer, big_endian) as usize == len).then_some(len)
    }

    /// After pcap-parser refused the record at the read position: its length if it is a pcapng block whose
    /// length is consistent (the trailing copy matches), so that it can be skipped; `None` when more of the file
    /// must be read to see the block's end; an error when the record cannot be delimited.
    fn resync(&self) -> Result<Option<usize>, FileError> {
        let malformed = FileError::Malformed { offset: self.offset };
        let Format::PcapNg { big_endian, .. } = self.format else { return Err(malformed) };
        let len = self.block_len().ok_or(malformed)? as usize;
        let data = self.reader.data();
        let Some(block) = data.get(..len) else {
            return if self.reader.reader_exhausted() { Err(FileError::Truncated) } else { Ok(None) };
        };
        match block.get(len - 4..).map(|t| read_u32(t, big_endian)) {
            Some(trailer) if trailer as usize == len => Ok(Some(len)),
            _ => Err(FileError::Malformed { offset: self.offset }),
        }
    }

    /// Passes over the next part of an oversize block, reading it through the buffer.
    fn skip_oversize(&mut self) -> Result<(), FileError> {
        let available = self.reader.data().len() as u64;
        let n = available.min(self.skipping);
        self.consume(n as usize);
        self.skipping -= n;
        if self.skipping > 0 {
            if self.reader.reader_exhausted() {
                return Err(FileError::Truncated);
            }
            self.reader.refill().map_err(|_| read_failed())?;
        }
        Ok(())
    }

    /// Reads more of the file after the unread part; grows the buffer if that part fills it.
    fn refill(&mut self) -> Result<(), FileError> {
        let before = self.reader.data().len();
        self.reader.refill().map_err(|_| read_failed())?;
        if self.reader.data().len() == before && !self.reader.reader_exhausted() {
            self.grow()?;
        }
        Ok(())
    }

    /// Doubles the buffer, up to [`MAX_RECORD`].
    fn grow(&mut self) -> Result<(), FileError> {
        if self.capacity >= MAX_RECORD {
            return Err(FileError::TooLarge);
        }
        self.capacity = self.capacity.saturating_mul(2).min(MAX_RECORD);
        if self.reader.grow(self.capacity) { Ok(()) } else { Err(FileError::TooLarge) }
    }

    /// What a record means: a frame (located in the buffer) or a header that updates `format`.
    fn interpret(format: &mut Format, block: PcapBlockOwned<'_>, offset: u64) -> Result<Record, FileError> {
        match block {
            PcapBlockOwned::LegacyHeader(header) => {
                let units_per_sec = if header.is_nanosecond_precision() { 1_000_000_000 } else { 1_000_000 };
                *format = Format::Pcap { link_type: link_type_of(header.network.0), units_per_sec };
                Ok(Record::Header)
            }
            PcapBlockOwned::Legacy(frame) => {
                let Format::Pcap { link_type, units_per_sec } = *format else {
                    return Err(FileError::Malformed { offset });
                };
                let units =
                    u64::from(frame.ts_sec).saturating_mul(units_per_sec).saturating_add(u64::from(frame.ts_usec));
                Ok(Record::Frame(Located {
                    ts_ns: timestamp_ns(units, units_per_sec, 0),
                    link_type,
                    wire_len: frame.origlen,
                    addr: frame.data.as_ptr() as usize,
                    len: frame.data.len(),
                }))
            }
            PcapBlockOwned::NG(block) => {
                let Format::PcapNg { interfaces, big_endian } = format else {
                    return Err(FileError::Malformed { offset });
                };
                match block {
                    Block::SectionHeader(shb) => {
                        interfaces.clear();
                        *big_endian = shb.big_endian();
                        Ok(Record::Header)
                    }
                    Block::InterfaceDescription(idb) => {
                        let interface = interfaces.len();
                        let units_per_sec = units_per_sec(idb.if_tsresol)
                            .ok_or(FileError::Resolution { interface, tsresol: idb.if_tsresol })?;
                        interfaces.push(Interface {
                            link_type: link_type_of(idb.linktype.0),
                            snaplen: idb.snaplen,
                            units_per_sec,
                            offset_sec: ts_offset(&idb, *big_endian),
                        });
                        Ok(Record::Header)
                    }
                    Block::EnhancedPacket(epb) => {
                        // An interface must be declared before its packets: a packet naming another one cannot be
                        // timed or decoded, and is skipped.
                        let Some(interface) = interfaces.get(epb.if_id as usize) else {
                            return Ok(Record::Skipped(Skip::UnknownInterface));
                        };
                        let data = epb.packet_data();
                        let raw = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                        Ok(Record::Frame(Located {
                            ts_ns: timestamp_ns(raw, interface.units_per_sec, interface.offset_sec),
                            link_type: interface.link_type,
                            wire_len: epb.origlen,
                            addr: data.as_ptr() as usize,
                            len: data.len(),
                        }))
                    }
                    Block::SimplePacket(spb) => {
                        // No timestamp and no interface id: the packet belongs to the first interface, and its
                        // captured length is the original length cut at that interface's snap length.
                        let Some(interface) = interfaces.first() else {
                            return Ok(Record::Skipped(Skip::UnknownInterface));
                        };
                        let mut data = spb.packet_data();
                        if interface.snaplen > 0 && data.len() > interface.snaplen as usize {
                            data = &data[..interface.snaplen as usize];
                        }
                        Ok(Record::Frame(Located {
                            ts_ns: 0,
                            link_type: interface.link_type,
                            wire_len: spb.origlen,
                            addr: data.as_ptr() as usize,
                            len: data.len(),
                        }))
                    }
                    // Statistics, name resolution, decryption secrets, custom blocks: nothing to analyse.
                    _ => Ok(Record::Header),
                }
            }
        }
    }
}

/// What [`CaptureFile::advance`] found.
enum Step {
    /// A record that is not a frame (file or section header, interface description, statistics, …).
    Header,
    Frame(Located),
    End,
}

/// Why pcap-parser did not return the next record.
enum Refused {
    /// More bytes are needed.
    NeedMore,
    /// More bytes are needed than the buffer holds.
    TooSmall,
    /// More bytes are needed and the file has none.
    Truncated,
    /// The record is not valid.
    Malformed,
}

/// What one record is.
enum Record {
    /// Not a frame: file or section header, interface description, statistics, …
    Header,
    Frame(Located),
    /// A packet record that cannot be returned, and why.
    Skipped(Skip),
}

/// Block type of a pcapng Section Header Block (the same in both byte orders).
const SECTION_HEADER: u32 = 0x0A0D_0D0A;

fn read_u32(bytes: &[u8], big_endian: bool) -> u32 {
    let mut b = [0u8; 4];
    for (d, s) in b.iter_mut().zip(bytes) {
        *d = *s;
    }
    if big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }
}

/// Timestamp units per second for a pcapng `if_tsresol`: 10^n, or 2^n when the high bit is set (e.g. 0x8A is
/// 2^-10 s); `None` when that does not fit 64 bits. (pcap-parser's `build_ts_resolution` compares the raw value,
/// high bit included, to 63, and so refuses every binary resolution.)
fn units_per_sec(tsresol: u8) -> Option<u64> {
    let exponent = u32::from(tsresol & 0x7F);
    if tsresol & 0x80 == 0 { 10u64.checked_pow(exponent) } else { 1u64.checked_shl(exponent) }
}

/// The interface's `if_tsoffset` (seconds) in the section's byte order (pcap-parser reads it little-endian
/// whatever the section's order).
fn ts_offset(idb: &InterfaceDescriptionBlock<'_>, big_endian: bool) -> i64 {
    idb.options
        .iter()
        .filter(|o| o.code == OptionCode::IfTsoffset)
        .find_map(|o| o.value().get(..8)?.try_into().ok())
        .map_or(0, |b: [u8; 8]| if big_endian { i64::from_be_bytes(b) } else { i64::from_le_bytes(b) })
}

/// pcap-parser reports a failed `read` without the `io::Error`.
fn read_failed() -> std::io::Error {
    std::io::Error::other("read failed")
}

/// The link type in a pcap header or pcapng interface description; the upper bits of a pcap header's field
/// carry the FCS length (libpcap's `LT_LINKTYPE`).
fn link_type_of(raw: i32) -> u32 {
    (raw as u32) & 0x03FF_FFFF
}

/// A timestamp of `units` (at `units_per_sec`) since `offset_sec`, in ns since the epoch, saturating.
fn timestamp_ns(units: u64, units_per_sec: u64, offset_sec: i64) -> i64 {
    let secs = units / units_per_sec;
    let frac = units % units_per_sec;
    // Decimal resolutions up to 1 ns (all but exotic files) scale by a whole factor; others need 128 bits.
    let frac_ns = if units_per_sec <= 1_000_000_000 && 1_000_000_000 % units_per_sec == 0 {
        (frac * (1_000_000_000 / units_per_sec)) as i64
    } else {
        (u128::from(frac) * 1_000_000_000 / u128::from(units_per_sec)) as i64
    };
    i64::try_from(secs)
        .unwrap_or(i64::MAX)
        .saturating_add(offset_sec)
        .saturating_mul(1_000_000_000)
        .saturating_add(frac_ns)
}

/// Reading a capture file failed: the file, or the BPF filter for one of its link types.
#[derive(Debug)]
pub enum Failure {
    /// The file itself.
    File(FileError),
    /// The BPF filter does not compile for the file's link type (or, in a pcapng file, for the link type of an
    /// interface declared after the first packet).
    Filter(pcap::Error),
}

impl From<FileError> for Failure {
    fn from(e: FileError) -> Self {
        Failure::File(e)
    }
}

impl From<pcap::Error> for Failure {
    fn from(e: pcap::Error) -> Self {
        Failure::Filter(e)
    }
}

/// A BPF filter, compiled once per link type.
struct Filter {
    expression: String,
    programs: Vec<(u32, pcap::BpfProgram)>,
}

impl Filter {
    fn new(expression: &str) -> Self {
        Self { expression: expression.to_string(), programs: Vec::new() }
    }

    fn program(&mut self, link_type: u32) -> Result<&pcap::BpfProgram, pcap::Error> {
        let index = match self.programs.iter().position(|(lt, _)| *lt == link_type) {
            Some(i) => i,
            None => {
                let dead = pcap::Capture::dead_with_precision(
                    pcap::Linktype(dlt_of(link_type) as i32),
                    pcap::Precision::Nano,
                )?;
                let program = dead.compile(&self.expression, true)?;
                self.programs.push((link_type, program));
                self.programs.len() - 1
            }
        };
        Ok(&self.programs[index].1)
    }

    fn matches(&mut self, link_type: u32, data: &[u8]) -> Result<bool, pcap::Error> {
        Ok(self.program(link_type)?.filter(data))
    }
}

/// libpcap's `DLT_*` for a `LINKTYPE_*`: they differ only for raw IP among the link types netanom parses.
fn dlt_of(link_type: u32) -> u32 {
    match link_type {
        crate::parse::linktype::RAW if cfg!(target_os = "openbsd") => crate::parse::linktype::RAW_OPENBSD,
        crate::parse::linktype::RAW => crate::parse::linktype::RAW_BSD,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::Duration;

    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
    use pcap_file::pcapng::blocks::section_header::SectionHeaderBlock;
    use pcap_file::pcapng::blocks::simple_packet::SimplePacketBlock;
    use pcap_file::{DataLink, Endianness, TsResolution};
    use proptest::prelude::*;

    use super::*;

    /// An Ethernet frame carrying IPv4 to 10.0.0.2 with `proto`, padded to `len` bytes.
    fn ether(proto: u8, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len.max(34)];
        f[12] = 0x08;
        f[14] = 0x45;
        f[23] = proto;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f
    }

    /// The same IPv4 packet without the Ethernet header (raw IP).
    fn raw_ip(proto: u8, len: usize) -> Vec<u8> {
        ether(proto, len + 14).split_off(14)
    }

    fn pcap_bytes(resolution: TsResolution, endianness: Endianness, packets: &[(Duration, u32, Vec<u8>)]) -> Vec<u8> {
        let header = PcapHeader { ts_resolution: resolution, endianness, snaplen: 65535, ..Default::default() };
        let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
        for (ts, wire, data) in packets {
            w.write_packet(&PcapPacket::new(*ts, *wire, data)).unwrap();
        }
        w.into_writer()
    }

    /// A frame as the tests compare them: timestamp (ns), link type, wire length, bytes.
    type Owned = (i64, u32, u32, Vec<u8>);

    fn read_all(bytes: Vec<u8>, filter: Option<&str>) -> Result<Vec<Owned>, Failure> {
        let mut file = CaptureFile::from_reader(std::io::Cursor::new(bytes), filter)?;
        let mut frames = Vec::new();
        while let Some(f) = file.next_frame()? {
            frames.push((f.ts_ns, f.link_type, f.wire_len, f.data.to_vec()));
        }
        Ok(frames)
    }

    fn file_error(result: Result<impl std::fmt::Debug, Failure>) -> FileError {
        match result {
            Err(Failure::File(e)) => e,
            other => panic!("expected a file error, got {other:?}"),
        }
    }

    #[test]
    fn pcap_in_both_resolutions_and_byte_orders() {
        let packets = vec![
            (Duration::new(1_700_000_000, 123_456_000), 60, ether(6, 60)),
            (Duration::new(1_700_000_001, 999_999_000), 1514, ether(17, 100)),
        ];
        for resolution in [TsResolution::MicroSecond, TsResolution::NanoSecond] {
            for endianness in [Endianness::Little, Endianness::Big] {
                let frames = read_all(pcap_bytes(resolution, endianness, &packets), None).unwrap();
                assert_eq!(frames.len(), 2, "{resolution:?} {endianness:?}");
                assert_eq!(frames[0], (1_700_000_000_123_456_000, 1, 60, ether(6, 60)));
                assert_eq!(frames[1], (1_700_000_001_999_999_000, 1, 1514, ether(17, 100)));
            }
        }
    }

    /// The reader against libpcap's, on a file several times the buffer size whose records straddle every
    /// refill boundary, with and without a filter.
    #[test]
    fn reads_what_libpcap_reads() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let packets: Vec<_> = (0..3000u32)
            .map(|i| {
                let len = 34 + (next() % 4000) as usize;
                let proto = if i % 3 == 0 { 17 } else { 6 };
                (Duration::new(1_600_000_000 + u64::from(i), i * 1000), len as u32 + 10, ether(proto, len))
            })
            .collect();
        let bytes = pcap_bytes(TsResolution::NanoSecond, Endianness::Little, &packets);
        assert!(bytes.len() > 4 * BUFFER);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.pcap");
        std::fs::write(&path, &bytes).unwrap();
        for filter in [None, Some("udp")] {
            let mut libpcap = pcap::Capture::from_file_with_precision(&path, pcap::Precision::Nano).unwrap();
            if let Some(f) = filter {
                libpcap.filter(f, true).unwrap();
            }
            let mut expected = Vec::new();
            while let Ok(p) = libpcap.next_packet() {
                let ts = p.header.ts.tv_sec * 1_000_000_000 + p.header.ts.tv_usec;
                expected.push((ts, 1, p.header.len, p.data.to_vec()));
            }
            let ours = read_all(bytes.clone(), filter).unwrap();
            assert_eq!(ours.len(), expected.len(), "filter {filter:?}");
            assert!(ours == expected, "filter {filter:?}: frames differ from libpcap's");
        }
    }

    fn idb(linktype: DataLink, tsresol: Option<u8>, tsoffset: u64) -> InterfaceDescriptionBlock<'static> {
        let mut options = Vec::new();
        if let Some(r) = tsresol {
            options.push(InterfaceDescriptionOption::IfTsResol(r));
        }
        if tsoffset != 0 {
            options.push(InterfaceDescriptionOption::IfTsOffset(tsoffset));
        }
        InterfaceDescriptionBlock { linktype, snaplen: 0, options }
    }

    fn epb(interface_id: u32, raw_ts: u64, data: Vec<u8>) -> EnhancedPacketBlock<'static> {
        // pcap-file writes the Duration's nanoseconds as the raw timestamp, whatever the interface's resolution.
        let original_len = data.len() as u32;
        EnhancedPacketBlock {
            interface_id,
            timestamp: Duration::from_nanos(raw_ts),
            original_len,
            data: Cow::Owned(data),
            options: vec![],
        }
    }

    /// A pcapng capture with two sections: Ethernet in microseconds and raw IP in nanoseconds with a 10 s
    /// offset, then (big-endian, interfaces redeclared) raw IP alone, with a simple packet block.
    fn pcapng_bytes() -> Vec<u8> {
        let mut w = PcapNgWriter::new(Vec::new()).unwrap();
        w.write_pcapng_block(idb(DataLink::ETHERNET, None, 0)).unwrap();
        w.write_pcapng_block(idb(DataLink::RAW, Some(9), 10)).unwrap();
        w.write_pcapng_block(epb(0, 1_700_000_000_000_001, ether(6, 60))).unwrap();
        w.write_pcapng_block(epb(1, 1_700_000_000_000_000_002, raw_ip(17, 40))).unwrap();
        let mut bytes = w.into_inner();
        let shb = SectionHeaderBlock { endianness: Endianness::Big, ..Default::default() };
        let mut w = PcapNgWriter::with_section_header(Vec::new(), shb).unwrap();
        w.write_pcapng_block(idb(DataLink::RAW, Some(3), 0)).unwrap();
        w.write_pcapng_block(epb(0, 1_700_000_000_005, raw_ip(6, 40))).unwrap();
        w.write_pcapng_block(SimplePacketBlock { original_len: 40, data: Cow::Owned(raw_ip(1, 40)) }).unwrap();
        bytes.extend(w.into_inner());
        bytes
    }

    #[test]
    fn pcapng_interfaces_resolutions_offsets_and_sections() {
        let bytes = pcapng_bytes();
        let len = bytes.len() as u64;
        let frames = read_all(bytes.clone(), None).unwrap();
        let mut file = CaptureFile::from_reader(std::io::Cursor::new(bytes), None).unwrap();
        while file.next_frame().unwrap().is_some() {}
        assert_eq!(file.position(), len, "the position ends at the file's length");
        let summary: Vec<_> = frames.iter().map(|(ts, lt, wire, data)| (*ts, *lt, *wire, data.len())).collect();
        assert_eq!(
            summary,
            vec![
                (1_700_000_000_000_001_000, 1, 60, 60),
                (1_700_000_010_000_000_002, 101, 40, 40),
                (1_700_000_000_005_000_000, 101, 40, 40),
                (0, 101, 40, 40),
            ]
        );
        assert_eq!(frames[3].3, raw_ip(1, 40));
    }

    #[test]
    fn filters_compile_per_link_type() {
        let frames = read_all(pcapng_bytes(), Some("tcp")).unwrap();
        let kinds: Vec<_> = frames.iter().map(|(_, lt, _, _)| *lt).collect();
        assert_eq!(kinds, vec![1, 101], "the TCP frame of each link type");
        let bad = CaptureFile::from_reader(std::io::Cursor::new(pcapng_bytes()), Some("tcp port"));
        assert!(matches!(bad, Err(Failure::Filter(_))), "a filter that does not compile fails at open");
    }

    #[test]
    fn timestamps_in_any_resolution() {
        assert_eq!(timestamp_ns(1_500_000, 1_000_000, 0), 1_500_000_000);
        assert_eq!(timestamp_ns(1_500, 1_000, 10), 11_500_000_000);
        assert_eq!(timestamp_ns(3, 1 << 1, 0), 1_500_000_000, "binary resolution (if_tsresol 0x81)");
        assert_eq!(timestamp_ns(7, 1 << 30, 0), 6, "finer than 1 ns: rounded down");
        assert_eq!(timestamp_ns(15, 10_000_000_000, 0), 1, "10^10 per second");
        assert_eq!(timestamp_ns(u64::MAX, 1, i64::MAX), i64::MAX, "saturates");
    }

    #[test]
    fn bad_files_name_what_is_wrong() {
        assert!(matches!(file_error(read_all(Vec::new(), None)), FileError::Empty));
        assert!(matches!(file_error(read_all(b"not a capture at all, no".to_vec(), None)), FileError::NotCapture));
        let packets = vec![(Duration::from_secs(1), 60, ether(6, 60)), (Duration::from_secs(2), 60, ether(6, 60))];
        let mut cut = pcap_bytes(TsResolution::MicroSecond, Endianness::Little, &packets);
        cut.truncate(cut.len() - 10);
        let mut file = CaptureFile::from_reader(std::io::Cursor::new(cut), None).unwrap();
        assert!(file.next_frame().unwrap().is_some(), "the whole first frame is read");
        assert!(matches!(file.next_frame(), Err(Failure::File(FileError::Truncated))));

        let mut w = PcapNgWriter::new(Vec::new()).unwrap();
        w.write_pcapng_block(idb(DataLink::ETHERNET, None, 0)).unwrap();
        let at = w.get_ref().len();
        w.write_pcapng_block(epb(0, 1, ether(6, 60))).unwrap();
        // pcap-file refuses to write an undeclared interface id: patch it into the block (type, length, id).
        let mut bytes = w.into_inner();
        bytes[at + 8..at + 12].copy_from_slice(&3u32.to_le_bytes());
        let mut file = CaptureFile::from_reader(std::io::Cursor::new(bytes), None).unwrap();
        assert!(file.next_frame().unwrap().is_none(), "a packet of an undeclared interface is skipped");
        assert_eq!(file.skipped().collect::<Vec<_>>(), vec![(Skip::UnknownInterface, 1)]);

        let no_interface = PcapNgWriter::new(Vec::new()).unwrap().into_inner();
        assert!(matches!(file_error(read_all(no_interface, None)), FileError::NoInterface));
    }

    /// A pcapng interface with a binary timestamp resolution (`if_tsresol` 0x8A: 2^-10 s) in a big-endian
    /// section with an `if_tsoffset`, written byte by byte.
    #[test]
    fn binary_timestamp_resolution_and_big_endian_offset() {
        let block = |kind: u32, body: &[u8]| {
            let len = 12 + body.len() as u32;
            let mut b = kind.to_be_bytes().to_vec();
            b.extend_from_slice(&len.to_be_bytes());
            b.extend_from_slice(body);
            b.extend_from_slice(&len.to_be_bytes());
            b
        };
        // Section header: byte-order magic, version 1.0, section length unknown.
        let mut shb = 0x1A2B_3C4Du32.to_be_bytes().to_vec();
        shb.extend_from_slice(&[0, 1, 0, 0]);
        shb.extend_from_slice(&u64::MAX.to_be_bytes());
        // Interface: raw IP, snaplen 0, if_tsresol 0x8A, if_tsoffset 100 s, end of options.
        let mut idb = vec![0, 101, 0, 0, 0, 0, 0, 0];
        idb.extend_from_slice(&[0, 9, 0, 1, 0x8A, 0, 0, 0]);
        idb.extend_from_slice(&[0, 14, 0, 8]);
        idb.extend_from_slice(&100i64.to_be_bytes());
        idb.extend_from_slice(&[0, 0, 0, 0]);
        // One packet at 3 s + 512/1024 s.
        let packet = raw_ip(6, 40);
        let units: u64 = 3 * 1024 + 512;
        let mut epb = 0u32.to_be_bytes().to_vec();
        epb.extend_from_slice(&((units >> 32) as u32).to_be_bytes());
        epb.extend_from_slice(&(units as u32).to_be_bytes());
        epb.extend_from_slice(&40u32.to_be_bytes());
        epb.extend_from_slice(&40u32.to_be_bytes());
        epb.extend_from_slice(&packet);
        let mut bytes = block(0x0A0D_0D0A, &shb);
        bytes.extend(block(1, &idb));
        bytes.extend(block(6, &epb));
        let frames = read_all(bytes, None).unwrap();
        assert_eq!(frames, vec![(103_500_000_000, 101, 40, packet)]);
        assert_eq!(units_per_sec(0x8A), Some(1024));
        assert_eq!(units_per_sec(0xBF), Some(1 << 63));
        assert_eq!(units_per_sec(0xC0), None, "2^64 does not fit");
        assert_eq!(units_per_sec(19), Some(10_000_000_000_000_000_000));
        assert_eq!(units_per_sec(20), None, "10^20 does not fit");
    }

    #[test]
    fn a_hostile_length_is_refused_with_bounded_memory() {
        let mut bytes = pcap_bytes(TsResolution::MicroSecond, Endianness::Little, &[]);
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&60u32.to_le_bytes());
        bytes.extend(std::iter::repeat_n(0u8, 64));
        assert!(matches!(file_error(read_all(bytes, None)), FileError::TooLarge | FileError::Truncated));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Any bytes after a valid header, or any cut of a valid file, give frames and then an error or the
        /// end: never a panic, never a frame that was not in the file.
        #[test]
        fn arbitrary_input_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..2048), cut in 0usize..400) {
            for base in [pcap_bytes(TsResolution::MicroSecond, Endianness::Little, &[]), pcapng_bytes()] {
                let mut bytes = base.clone();
                bytes.extend_from_slice(&tail);
                let _ = read_all(bytes, None);
                let mut prefix = base;
                prefix.truncate(cut);
                let _ = read_all(prefix, Some("tcp"));
            }
        }
    }
}
