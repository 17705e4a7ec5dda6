//! Packet sources: pcap/pcapng files ([`crate::file`]) and live interfaces through libpcap (`pcap` crate), with
//! an optional BPF filter, and pacing of file replays by packet timestamps ([`Speed`], [`crate::pace`]). It yields borrowed
//! [`Frame`]s (no copy, no allocation per packet) and knows nothing of what the bytes mean.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use netanom_schemas::packet_time::SkewConfig;
use pcap::{Active, Capture};

use crate::file::{CaptureFile, Failure, FileError};
use crate::frame::Frame;
use crate::pace::{Pacer, SystemClock};
use crate::parse::Skip;

/// How fast a file is replayed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Speed {
    /// As fast as possible (no sleeping).
    #[default]
    Max,
    /// At the pace of the packet timestamps.
    Realtime,
    /// At `FACTOR` times the pace of the packet timestamps (2 = twice as fast).
    Factor(f64),
}

impl Speed {
    fn factor(self) -> Option<f64> {
        match self {
            Speed::Max => None,
            Speed::Realtime => Some(1.0),
            Speed::Factor(f) => Some(f),
        }
    }
}

impl FromStr for Speed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "max" => Ok(Speed::Max),
            "realtime" => Ok(Speed::Realtime),
            other => match other.parse::<f64>() {
                Ok(f) if f.is_finite() && f > 0.0 => Ok(Speed::Factor(f)),
                _ => Err(format!("speed must be `max`, `realtime` or a positive factor, got `{other}`")),
            },
        }
    }
}

impl fmt::Display for Speed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Speed::Max => f.write_str("max"),
            Speed::Realtime => f.write_str("realtime"),
            Speed::Factor(x) => write!(f, "{x}"),
        }
    }
}

impl serde::Serialize for Speed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Speed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(f64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
            Raw::Number(n) => n.to_string().parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A capture that could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be opened as pcap or pcapng.
    #[error("cannot open capture file {path}: {source}")]
    OpenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: FileError,
    },
    /// The interface could not be opened for capture.
    #[error("cannot open interface {interface}: {source}")]
    OpenInterface {
        /// The interface.
        interface: String,
        /// libpcap's error.
        source: pcap::Error,
    },
    /// The BPF filter did not compile.
    #[error("invalid BPF filter `{filter}` for {target}: {source}")]
    Filter {
        /// The filter expression.
        filter: String,
        /// File or interface.
        target: String,
        /// libpcap's error.
        source: pcap::Error,
    },
    /// Reading a file failed (corrupt or truncated file).
    #[error("cannot read capture file {path} after {packets} packets: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Packets read before the failure.
        packets: u64,
        /// What is wrong with it.
        source: FileError,
    },
    /// Reading a live capture failed (interface gone).
    #[error("cannot read from {target} after {packets} packets: {source}")]
    Read {
        /// File or interface.
        target: String,
        /// Packets read before the failure.
        packets: u64,
        /// libpcap's error.
        source: pcap::Error,
    },
}

/// What [`PacketSource::next`] returned.
#[derive(Debug)]
pub enum Next<'a> {
    /// A frame.
    Frame(Frame<'a>),
    /// A live capture had nothing within its read timeout (a chance to flush and check for shutdown).
    Idle,
    /// End of the file, or the stop condition was met while pacing.
    End,
}

enum Handle {
    File { file: Box<CaptureFile>, path: PathBuf, filter: Option<String> },
    Live(Capture<Active>),
}

/// A packet source: a file or a live interface.
pub struct PacketSource {
    handle: Handle,
    target: String,
    link_type: u32,
    pace: Option<Pacer>,
    packets: u64,
    file_len: Option<u64>,
}

impl fmt::Debug for PacketSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketSource").field("target", &self.target).field("link_type", &self.link_type).finish()
    }
}

/// Pause after a live read found nothing: bounds the idle CPU use and the added latency (2 ms).
const LIVE_IDLE_SLEEP: Duration = Duration::from_millis(2);

/// Read timeout of live captures, so shutdown is honoured even on a quiet interface.
const LIVE_TIMEOUT_MS: i32 = 100;

impl PacketSource {
    /// Opens a pcap or pcapng file, replayed at `speed`.
    pub fn open_file(path: &Path, filter: Option<&str>, speed: Speed) -> Result<Self, CaptureError> {
        let target = path.display().to_string();
        let file = CaptureFile::open(path, filter).map_err(|failure| match failure {
            Failure::File(source) => CaptureError::OpenFile { path: path.to_path_buf(), source },
            Failure::Filter(source) => {
                CaptureError::Filter { filter: filter.unwrap_or_default().to_string(), target: target.clone(), source }
            }
        })?;
        let link_type = file.first_link_type().unwrap_or_default();
        Ok(Self {
            handle: Handle::File { file: Box::new(file), path: path.to_path_buf(), filter: filter.map(str::to_string) },
            target,
            link_type,
            pace: speed.factor().map(|f| Pacer::new(f, &SkewConfig::default(), SystemClock)),
            packets: 0,
            file_len: std::fs::metadata(path).ok().map(|m| m.len()),
        })
    }

    /// Opens a live interface (immediate mode, non-blocking reads).
    pub fn open_live(
        interface: &str,
        filter: Option<&str>,
        snaplen: u32,
        promiscuous: bool,
    ) -> Result<Self, CaptureError> {
        let err = |source| CaptureError::OpenInterface { interface: interface.to_string(), source };
        let mut cap = Capture::from_device(interface)
            .map_err(err)?
            .promisc(promiscuous)
            .snaplen(i32::try_from(snaplen).unwrap_or(i32::MAX))
            .immediate_mode(true)
            .timeout(LIVE_TIMEOUT_MS)
            .buffer_size(32 << 20)
            .open()
            .and_then(|c| c.setnonblock())
            .map_err(err)?;
        if let Some(filter) = filter {
            cap.filter(filter, true).map_err(|source| CaptureError::Filter {
                filter: filter.to_string(),
                target: interface.to_string(),
                source,
            })?;
        }
        let link_type = cap.get_datalink().0 as u32;
        Ok(Self {
            handle: Handle::Live(cap),
            target: interface.to_string(),
            link_type,
            pace: None,
            packets: 0,
            file_len: None,
        })
    }

    /// Paces with the packet-time skew rule `time` ([`crate::pace`]; the default rule otherwise).
    pub fn with_time(mut self, time: &SkewConfig) -> Self {
        if let Some(p) = &mut self.pace {
            p.set_time(time);
        }
        self
    }

    /// The capture's link type.
    pub fn link_type(&self) -> u32 {
        self.link_type
    }

    /// The file path or interface name.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Size of the file in bytes, for progress reporting; `None` for a live capture.
    pub fn file_len(&self) -> Option<u64> {
        self.file_len
    }

    /// Bytes of the file read so far (the records before the next one), for progress reporting; 0 for a live
    /// capture.
    pub fn position(&self) -> u64 {
        match &self.handle {
            Handle::File { file, .. } => file.position(),
            Handle::Live(_) => 0,
        }
    }

    /// Records of a file read but not returned as frames (rejected by the filter, corrupt, oversize, of an
    /// undeclared interface), by reason; nothing for a live capture, whose filter runs in the kernel.
    pub fn skipped(&self) -> Vec<(Skip, u64)> {
        match &self.handle {
            Handle::File { file, .. } => file.skipped().collect(),
            Handle::Live(_) => Vec::new(),
        }
    }

    /// Where the pacing of a paced file replay is anchored (see [`crate::pace::PaceAnchor`]); `None` for a
    /// replay at full speed, a live capture, or before the first frame.
    pub fn pace_anchor(&self) -> Option<crate::pace::PaceAnchor> {
        self.pace.as_ref().and_then(crate::pace::Pacer::anchor)
    }

    /// True for a live capture.
    pub fn is_live(&self) -> bool {
        matches!(self.handle, Handle::Live(_))
    }

    /// Packets received and dropped by the kernel/interface so far (live captures only).
    pub fn kernel_drops(&mut self) -> Option<u64> {
        match &mut self.handle {
            Handle::Live(c) => c.stats().ok().map(|s| u64::from(s.dropped) + u64::from(s.if_dropped)),
            Handle::File { .. } => None,
        }
    }

    /// The next frame. When pacing, sleeps until the frame is due, returning [`Next::End`] early if `stop`
    /// becomes true.
    pub fn next(&mut self, stop: &dyn Fn() -> bool) -> Result<Next<'_>, CaptureError> {
        let frame = match &mut self.handle {
            Handle::File { file, path, filter } => match file.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(Next::End),
                Err(Failure::File(source)) => {
                    return Err(CaptureError::ReadFile { path: path.clone(), packets: self.packets, source });
                }
                Err(Failure::Filter(source)) => {
                    return Err(CaptureError::Filter {
                        filter: filter.clone().unwrap_or_default(),
                        target: self.target.clone(),
                        source,
                    });
                }
            },
            Handle::Live(c) => match c.next_packet() {
                Ok(packet) => {
                    // time_t / suseconds_t are not i64 on every platform.
                    #[allow(clippy::unnecessary_cast)]
                    let ts_ns = (packet.header.ts.tv_sec as i64)
                        .saturating_mul(1_000_000_000)
                        .saturating_add((packet.header.ts.tv_usec as i64).saturating_mul(1000));
                    Frame { ts_ns, link_type: self.link_type, wire_len: packet.header.len, data: packet.data }
                }
                Err(pcap::Error::NoMorePackets) => return Ok(Next::End),
                Err(pcap::Error::TimeoutExpired) => {
                    // Live captures are non-blocking: libpcap's TPACKET_V3 read loops inside its own poll while
                    // no packet arrives, so a blocking read would never return to check `stop` on a quiet
                    // interface.
                    std::thread::sleep(LIVE_IDLE_SLEEP);
                    return Ok(Next::Idle);
                }
                Err(source) => {
                    return Err(CaptureError::Read { target: self.target.clone(), packets: self.packets, source });
                }
            },
        };
        self.packets += 1;
        if let Some(pacer) = &mut self.pace
            && !pacer.wait(frame.ts_ns, stop)
        {
            return Ok(Next::End);
        }
        Ok(Next::Frame(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_parses_and_displays() {
        assert_eq!("max".parse::<Speed>().unwrap(), Speed::Max);
        assert_eq!("realtime".parse::<Speed>().unwrap(), Speed::Realtime);
        assert_eq!("2.5".parse::<Speed>().unwrap(), Speed::Factor(2.5));
        assert!("0".parse::<Speed>().is_err());
        assert!("fast".parse::<Speed>().unwrap_err().contains("fast"));
        assert_eq!(Speed::Factor(4.0).to_string(), "4");
    }

    #[test]
    fn missing_file_error_names_the_path() {
        let err = PacketSource::open_file(Path::new("/nonexistent/dir/x.pcap"), None, Speed::Max).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/dir/x.pcap"), "{err}");
    }

    #[test]
    fn garbage_file_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.pcap");
        std::fs::write(&path, b"this is not a capture file at all, not even close").unwrap();
        let err = PacketSource::open_file(&path, None, Speed::Max).unwrap_err();
        assert!(err.to_string().contains("garbage.pcap"), "{err}");
    }
}
