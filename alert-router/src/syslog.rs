//! CEF over syslog, for SIEMs that take neither JSON nor webhooks: wraps the ArcSight Common Event Format line of
//! an alert ([`crate::cef`]) in a syslog message ([`syslog_line`], RFC 5424 or the classic BSD format of
//! RFC 3164) and sends it over UDP or TCP ([`SyslogSender`]). Owns the syslog configuration and the one TCP
//! connection; it decides nothing about what happens to an alert it could not send (`route` dead-letters it).
//!
//! Transport: UDP sends one message per datagram (RFC 5426). TCP keeps one connection open (reconnecting once
//! per message when it broke) and frames messages by octet counting, `<length> <message>` (RFC 6587 §3.4.1),
//! the default because it is unambiguous whatever a message holds, or with a trailing LF
//! (`tcp_framing = "newline"`, RFC 6587 §3.4.2) for receivers of the classic format that only know that.

use std::time::Duration;

use netanom_schemas::Alert;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Mutex;

use crate::cef::cef;
use crate::format::{PRODUCT, Severity};
use crate::position::StartFrom;

/// The name of the syslog destination (its consumer group is `<group_id>.deliver.syslog`).
pub const DESTINATION_NAME: &str = "syslog";

/// Transport of syslog messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// One datagram per message (RFC 5426). The default.
    #[default]
    Udp,
    /// One long-lived connection, framed per `tcp_framing` (RFC 6587).
    Tcp,
}

/// Syslog message format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogFormat {
    /// `<PRI>1 TIMESTAMP HOST netanom - - - CEF:...` (RFC 5424). The default.
    #[default]
    Rfc5424,
    /// The classic BSD format, `<PRI>Mmm dd hh:mm:ss HOST netanom: CEF:...` (RFC 3164).
    Rfc3164,
}

/// Framing of messages on a TCP connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpFraming {
    /// `<length in bytes> <message>` (RFC 6587 §3.4.1). The default.
    #[default]
    OctetCounting,
    /// `<message>\n` (RFC 6587 §3.4.2).
    Newline,
}

/// CEF over syslog output (`[alert_router.syslog]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogConfig {
    /// Send alerts to the syslog receiver. Default true (the table being present means "on").
    pub enabled: bool,
    /// Receiver, `host:port` (a name is resolved on every connection or datagram). Required.
    pub address: String,
    /// `udp` or `tcp`. Default `udp`.
    pub transport: Transport,
    /// `rfc5424` or `rfc3164` (classic BSD). Default `rfc5424`.
    pub format: SyslogFormat,
    /// TCP only: `octet_counting` or `newline`. Default `octet_counting`.
    pub tcp_framing: TcpFraming,
    /// Syslog facility, 0–23. Default 16 (local0).
    pub facility: u8,
    /// HOSTNAME field of the messages. Default: this machine's host name (`-` if unknown).
    pub hostname: Option<String>,
    /// Timeout of connecting and of writing one message. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Where the syslog destination starts on the alerts topic the first time: `earliest` (default) or `latest`.
    pub start_from: StartFrom,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            address: String::new(),
            transport: Transport::Udp,
            format: SyslogFormat::Rfc5424,
            tcp_framing: TcpFraming::OctetCounting,
            facility: 16,
            hostname: None,
            timeout: Duration::from_secs(5),
            start_from: StartFrom::Earliest,
        }
    }
}

impl SyslogConfig {
    /// Problems of this table as (key below `alert_router.syslog`, message) pairs.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match self.address.rsplit_once(':') {
            _ if self.address.trim().is_empty() => out.push(("address", "must be set (host:port), got \"\"".into())),
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => out.push(("address", format!("must be host:port with a port in 1..=65535, got {:?}", self.address))),
        }
        if self.facility > 23 {
            out.push(("facility", format!("must be in 0..=23, got {}", self.facility)));
        }
        if let Some(h) = &self.hostname
            && (h.is_empty() || h.len() > 255 || !h.bytes().all(|b| b.is_ascii_graphic()))
        {
            out.push(("hostname", format!("must be 1-255 printable ASCII characters without spaces, got {h:?}")));
        }
        if self.timeout.is_zero() {
            out.push(("timeout", "must be > 0, got 0s".into()));
        }
        out
    }
}

/// Wraps `msg` in a syslog message with priority `facility * 8 + severity` stamped `now`.
pub fn syslog_line(
    format: SyslogFormat,
    facility: u8,
    severity: u8,
    hostname: &str,
    now: time::OffsetDateTime,
    msg: &str,
) -> String {
    let pri = u16::from(facility.min(23)) * 8 + u16::from(severity.min(7));
    let now = now.to_offset(time::UtcOffset::UTC);
    match format {
        SyslogFormat::Rfc5424 => {
            // RFC 5424 TIMESTAMP: at most six fraction digits.
            let ts = now
                .format(time::macros::format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
                ))
                .unwrap_or_else(|_| "-".into());
            format!("<{pri}>1 {ts} {hostname} {PRODUCT} - - - {msg}")
        }
        SyslogFormat::Rfc3164 => {
            let ts = now
                .format(time::macros::format_description!(
                    "[month repr:short] [day padding:space] [hour]:[minute]:[second]"
                ))
                .unwrap_or_default();
            format!("<{pri}>{ts} {hostname} {PRODUCT}: {msg}")
        }
    }
}

/// This machine's host name, or `-`.
fn local_hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "-".into())
}

/// Why a syslog message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    /// The address did not resolve.
    #[error("resolving {address}: {reason}")]
    Resolve {
        /// `host:port`.
        address: String,
        /// What went wrong.
        reason: String,
    },
    /// Connecting, sending or writing failed.
    #[error("{transport} {address}: {what}: {reason}")]
    Io {
        /// `udp` or `tcp`.
        transport: &'static str,
        /// `host:port`.
        address: String,
        /// What was being done.
        what: &'static str,
        /// The error.
        reason: String,
    },
}

/// Sends CEF alerts to one syslog receiver. Share it via `Arc`; TCP writes are serialized on one connection.
#[derive(Debug)]
pub struct SyslogSender {
    config: SyslogConfig,
    hostname: String,
    tcp: Mutex<Option<TcpStream>>,
}

impl SyslogSender {
    /// A sender for `config` (nothing is connected until the first message).
    pub fn new(config: SyslogConfig) -> Self {
        let hostname = config.hostname.clone().unwrap_or_else(local_hostname);
        Self { config, hostname, tcp: Mutex::new(None) }
    }

    /// `udp://host:port` or `tcp://host:port`, for logs and dead-letter reasons.
    pub fn target(&self) -> String {
        format!("{}://{}", self.transport_name(), self.config.address)
    }

    fn transport_name(&self) -> &'static str {
        match self.config.transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }

    /// The syslog message of `alert`, stamped now.
    pub fn message(&self, alert: &Alert) -> String {
        syslog_line(
            self.config.format,
            self.config.facility,
            Severity::of(alert).syslog(),
            &self.hostname,
            time::OffsetDateTime::now_utc(),
            &cef(alert),
        )
    }

    /// Sends `alert` as one CEF syslog message.
    pub async fn send(&self, alert: &Alert) -> Result<(), SyslogError> {
        let message = self.message(alert);
        match self.config.transport {
            Transport::Udp => self.send_udp(message.as_bytes()).await,
            Transport::Tcp => {
                let framed = match self.config.tcp_framing {
                    TcpFraming::OctetCounting => format!("{} {message}", message.len()),
                    TcpFraming::Newline => format!("{message}\n"),
                };
                self.send_tcp(framed.as_bytes()).await
            }
        }
    }

    fn io(&self, what: &'static str, e: impl std::fmt::Display) -> SyslogError {
        SyslogError::Io {
            transport: self.transport_name(),
            address: self.config.address.clone(),
            what,
            reason: e.to_string(),
        }
    }

    async fn resolve(&self) -> Result<std::net::SocketAddr, SyslogError> {
        let resolve = |reason: String| SyslogError::Resolve { address: self.config.address.clone(), reason };
        let mut addrs = tokio::time::timeout(self.config.timeout, tokio::net::lookup_host(&self.config.address))
            .await
            .map_err(|_| resolve(format!("timed out after {:?}", self.config.timeout)))?
            .map_err(|e| resolve(e.to_string()))?;
        addrs.next().ok_or_else(|| resolve("no address".into()))
    }

    async fn send_udp(&self, datagram: &[u8]) -> Result<(), SyslogError> {
        let addr = self.resolve().await?;
        let local = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let socket = UdpSocket::bind(local).await.map_err(|e| self.io("binding a socket", e))?;
        let sent = tokio::time::timeout(self.config.timeout, socket.send_to(datagram, addr))
            .await
            .map_err(|_| self.io("sending", format!("timed out after {:?}", self.config.timeout)))?
            .map_err(|e| self.io("sending", e))?;
        if sent != datagram.len() {
            return Err(self.io("sending", format!("sent {sent} of {} bytes", datagram.len())));
        }
        Ok(())
    }

    async fn send_tcp(&self, bytes: &[u8]) -> Result<(), SyslogError> {
        let mut conn = self.tcp.lock().await;
        // A kept connection may have been closed by the receiver: one fresh connection is tried after a failure.
        let mut last_error = None;
        for _ in 0..2 {
            if conn.as_ref().is_some_and(|c| !still_open(c)) {
                tracing::debug!(target = %self.target(), "syslog connection closed by the receiver; reconnecting");
                *conn = None;
            }
            if conn.is_none() {
                let addr = self.resolve().await?;
                let stream = tokio::time::timeout(self.config.timeout, TcpStream::connect(addr))
                    .await
                    .map_err(|_| self.io("connecting", format!("timed out after {:?}", self.config.timeout)))?
                    .map_err(|e| self.io("connecting", e))?;
                *conn = Some(stream);
            }
            let Some(stream) = conn.as_mut() else { continue };
            let written = tokio::time::timeout(self.config.timeout, async {
                stream.write_all(bytes).await?;
                stream.flush().await
            })
            .await;
            match written {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last_error = Some(self.io("writing", e)),
                Err(_) => last_error = Some(self.io("writing", format!("timed out after {:?}", self.config.timeout))),
            }
            *conn = None;
        }
        Err(last_error.unwrap_or_else(|| self.io("writing", "no connection")))
    }
}

/// False when the receiver closed `stream` (a read would return end of file or fail). A write to such a
/// connection could "succeed" into the void, so it is checked before each message.
fn still_open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 64];
    match stream.try_read(&mut probe) {
        Ok(0) => false,
        // Receivers do not talk back; whatever they sent is ignored.
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::PRODUCT_VERSION;
    use netanom_schemas::Contribution;

    fn alert() -> Alert {
        Alert {
            id: "rate/10.0.0.1/1718000000000000000".into(),
            host: "10.0.0.1".into(),
            kind: netanom_schemas::AnomalyKind::Rate,
            score: 30.0,
            threshold: 10.0,
            first_seen: time::macros::datetime!(2024-06-10 06:13:20 UTC),
            last_seen: time::macros::datetime!(2024-06-10 06:13:41.5 UTC),
            detected_at: Some(time::macros::datetime!(2024-06-10 06:13:41.5 UTC)),
            count: 3,
            reason: "a=b | c\\d\nnext".into(),
            target: Some("10.9.9.9".into()),
            sample: "10.0.0.1:4242 > 10.9.9.9:80 TCP [S] len 60".into(),
            features: vec![Contribution { name: "pps".into(), value: 30.0, baseline: None }],
            model_version: "rules=v1".into(),
            revision: 1,
            final_revision: true,
            kinds: Vec::new(),
            totals: Default::default(),
        }
    }

    /// Splits a CEF line on the unescaped `|` of its header and unescapes the header fields; the extension (the
    /// eighth field) is returned as is.
    fn split_header(line: &str) -> Vec<String> {
        let mut fields = vec![String::new()];
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            let in_header = fields.len() < 8;
            match c {
                '\\' if in_header => fields.last_mut().unwrap().push(chars.next().unwrap()),
                '|' if in_header => fields.push(String::new()),
                c => fields.last_mut().unwrap().push(c),
            }
        }
        fields
    }

    #[test]
    fn cef_line_has_header_and_parsable_extension() {
        let a = alert();
        let line = cef(&a);
        assert!(!line.contains('\n'));
        let fields = split_header(&line);
        assert_eq!(
            &fields[..7],
            ["CEF:0", "netanom", "netanom", PRODUCT_VERSION, "rate", "netanom rate anomaly: 10.0.0.1", "8"]
        );
        let ext = parse_extension(&fields[7]);
        assert_eq!(ext["src"], "10.0.0.1");
        assert_eq!(ext["dst"], "10.9.9.9");
        assert_eq!(ext["cnt"], "3");
        assert_eq!(ext["start"], "1718000000000");
        assert_eq!(ext["end"], "1718000021500");
        assert_eq!(ext["msg"], a.reason);
        assert_eq!(ext["cs1Label"], "model");
        assert_eq!(ext["cs1"], "rules=v1");
        assert_eq!(ext["cs3"], a.id);
        assert_eq!(ext["externalId"], crate::cef::external_id(&a.delivery_id()));
        let victim = Alert { kind: netanom_schemas::AnomalyKind::Victim, host: "db.internal".into(), ..a };
        let ext = parse_extension(&split_header(&cef(&victim))[7]);
        assert_eq!(ext["dhost"], "db.internal");
        assert!(!ext.contains_key("src") && !ext.contains_key("dst"));
    }

    /// Parses `k=v k=v` where values may contain unescaped spaces and escaped `=`, per the CEF rules.
    pub(crate) fn parse_extension(ext: &str) -> std::collections::BTreeMap<String, String> {
        // Tokens: split on unescaped '='; the key is the last word before it.
        let mut pairs = Vec::new();
        let mut current = String::new();
        let mut chars = ext.chars().peekable();
        let mut key: Option<String> = None;
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => current.push('\n'),
                    Some('r') => current.push('\r'),
                    Some(o) => current.push(o),
                    None => {}
                },
                '=' => {
                    let (value, next_key) = match current.rfind(' ') {
                        Some(i) if key.is_some() => (current[..i].to_string(), current[i + 1..].to_string()),
                        _ => (String::new(), current.clone()),
                    };
                    if let Some(k) = key.take() {
                        pairs.push((k, value));
                    }
                    key = Some(next_key);
                    current.clear();
                }
                c => current.push(c),
            }
        }
        if let Some(k) = key {
            pairs.push((k, current));
        }
        pairs.into_iter().collect()
    }

    #[test]
    fn syslog_framing_rfc5424_and_bsd() {
        let now = time::macros::datetime!(2024-06-10 06:13:41.123456789 UTC);
        assert_eq!(
            syslog_line(SyslogFormat::Rfc5424, 16, 3, "sensor-1", now, "CEF:0|x"),
            "<131>1 2024-06-10T06:13:41.123456Z sensor-1 netanom - - - CEF:0|x"
        );
        let early = time::macros::datetime!(2024-06-05 06:13:41 UTC);
        assert_eq!(
            syslog_line(SyslogFormat::Rfc3164, 4, 2, "sensor-1", early, "CEF:0|x"),
            "<34>Jun  5 06:13:41 sensor-1 netanom: CEF:0|x"
        );
    }

    #[test]
    fn config_problems_name_their_keys() {
        let ok = SyslogConfig { address: "siem.example:514".into(), ..SyslogConfig::default() };
        assert!(ok.problems().is_empty(), "{:?}", ok.problems());
        assert!(SyslogConfig { address: "[::1]:6514".into(), ..ok.clone() }.problems().is_empty());
        let bad = SyslogConfig {
            address: "siem.example".into(),
            facility: 24,
            hostname: Some("two words".into()),
            timeout: Duration::ZERO,
            ..SyslogConfig::default()
        };
        let keys: Vec<&str> = bad.problems().iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["address", "facility", "hostname", "timeout"]);
        assert_eq!(SyslogConfig { address: "h:0".into(), ..ok }.problems()[0].0, "address");
    }

    fn sender(address: String, transport: Transport, format: SyslogFormat, framing: TcpFraming) -> SyslogSender {
        SyslogSender::new(SyslogConfig {
            address,
            transport,
            format,
            tcp_framing: framing,
            hostname: Some("sensor-1".into()),
            timeout: Duration::from_secs(5),
            ..SyslogConfig::default()
        })
    }

    /// Checks one RFC 5424 message carrying the CEF line of `a`.
    fn check_rfc5424(message: &str, a: &Alert) {
        let parts: Vec<&str> = message.splitn(8, ' ').collect();
        assert_eq!(parts.len(), 8, "{message}");
        // rate at 3x the threshold: high → syslog error (3), facility local0 (16).
        assert_eq!(parts[0], "<131>1");
        assert!(
            time::OffsetDateTime::parse(parts[1], &time::format_description::well_known::Rfc3339).is_ok(),
            "timestamp {}",
            parts[1]
        );
        assert_eq!(&parts[2..7], ["sensor-1", "netanom", "-", "-", "-"]);
        let fields = split_header(parts[7]);
        assert_eq!(fields[0], "CEF:0");
        assert_eq!(fields[4], a.kind.to_string());
        let ext = parse_extension(&fields[7]);
        assert_eq!(ext["msg"], a.reason);
        assert_eq!(ext["cs3"], a.id);
    }

    #[tokio::test]
    async fn udp_receiver_gets_one_rfc5424_cef_datagram_per_alert() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let s = sender(
            socket.local_addr().unwrap().to_string(),
            Transport::Udp,
            SyslogFormat::Rfc5424,
            TcpFraming::OctetCounting,
        );
        let a = alert();
        let b = Alert { id: "rate/10.0.0.1/2".into(), reason: "second".into(), ..alert() };
        s.send(&a).await.unwrap();
        s.send(&b).await.unwrap();
        let mut buf = vec![0u8; 65_536];
        for want in [&a, &b] {
            let (n, _) =
                tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf)).await.unwrap().unwrap();
            check_rfc5424(std::str::from_utf8(&buf[..n]).unwrap(), want);
        }
    }

    /// Reads one octet-counted frame (`<len> <msg>`) from `r`.
    async fn read_frame(r: &mut (impl tokio::io::AsyncBufRead + Unpin)) -> String {
        use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _};
        let mut len = Vec::new();
        r.read_until(b' ', &mut len).await.unwrap();
        let len: usize = std::str::from_utf8(&len[..len.len() - 1]).unwrap().parse().unwrap();
        let mut msg = vec![0u8; len];
        r.read_exact(&mut msg).await.unwrap();
        String::from_utf8(msg).unwrap()
    }

    #[tokio::test]
    async fn tcp_listener_gets_octet_counted_frames_and_the_sender_reconnects() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = sender(
            listener.local_addr().unwrap().to_string(),
            Transport::Tcp,
            SyslogFormat::Rfc5424,
            TcpFraming::OctetCounting,
        );
        let a = alert();
        let b = Alert { id: "rate/10.0.0.1/2".into(), reason: "two\nlines = 2".into(), ..alert() };
        s.send(&a).await.unwrap();
        s.send(&b).await.unwrap();
        let (conn, _) = listener.accept().await.unwrap();
        let mut reader = tokio::io::BufReader::new(conn);
        check_rfc5424(&read_frame(&mut reader).await, &a);
        check_rfc5424(&read_frame(&mut reader).await, &b);
        // The receiver closes the connection: the next message goes over a new one, not into the void.
        drop(reader);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let c = Alert { id: "rate/10.0.0.1/3".into(), ..alert() };
        s.send(&c).await.unwrap();
        let (conn, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await.unwrap().unwrap();
        check_rfc5424(&read_frame(&mut tokio::io::BufReader::new(conn)).await, &c);
    }

    #[tokio::test]
    async fn tcp_newline_framing_carries_bsd_messages() {
        use tokio::io::AsyncBufReadExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = sender(
            listener.local_addr().unwrap().to_string(),
            Transport::Tcp,
            SyslogFormat::Rfc3164,
            TcpFraming::Newline,
        );
        let a = alert();
        s.send(&a).await.unwrap();
        let (conn, _) = listener.accept().await.unwrap();
        let mut line = String::new();
        tokio::io::BufReader::new(conn).read_line(&mut line).await.unwrap();
        let line = line.strip_suffix('\n').unwrap();
        // `<131>Mmm dd hh:mm:ss sensor-1 netanom: CEF:...`
        let (head, cef_line) = line.split_once(" netanom: ").unwrap();
        assert!(head.starts_with("<131>") && head.ends_with(" sensor-1"), "{head}");
        assert_eq!(head.len(), "<131>Jun  5 06:13:41 sensor-1".len(), "{head}");
        assert_eq!(parse_extension(&split_header(cef_line)[7])["msg"], a.reason);
    }

    #[tokio::test]
    async fn unreachable_tcp_receiver_is_an_error_naming_it() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let s = sender(format!("127.0.0.1:{port}"), Transport::Tcp, SyslogFormat::Rfc5424, TcpFraming::OctetCounting);
        let e = s.send(&alert()).await.unwrap_err().to_string();
        assert!(e.starts_with(&format!("tcp 127.0.0.1:{port}: connecting")), "{e}");
    }
}
