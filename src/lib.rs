//! The `netanom` umbrella binary as a library: configuration layering, the command line, and the orchestration
//! of `netanom run` (all three roles in one process on an embedded broker). The roles themselves live in the
//! `netanom-producer`, `netanom-detector` and `netanom-alert-router` crates; this crate only wires them.

pub mod cli;
pub mod config;
pub mod eval;
pub mod evaluate;
pub mod labels;
pub mod registry;
pub mod replay;
pub mod report;
pub mod run;
pub mod summary;
pub mod supervised;
pub mod telemetry;
pub mod traffic;

/// An error and its causes on one line, for the command line: `outer: cause: root cause`. Most of the
/// workspace's errors already end their message with their source's (`cannot open {path}: {source}`), so a
/// cause whose message the line already ends with is not repeated.
pub fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if line.is_empty() {
            line = message;
        } else if !line.ends_with(&message) {
            line.push_str(": ");
            line.push_str(&message);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open capture file x.pcap: {source}")]
    struct Repeats {
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open capture file x.pcap")]
    struct Defers {
        source: std::io::Error,
    }

    #[test]
    fn error_line_names_every_cause_once() {
        let repeats =
            anyhow::Error::new(Repeats { source: std::io::Error::other("not a capture") }).context("producer failed");
        assert_eq!(error_line(&repeats), "producer failed: cannot open capture file x.pcap: not a capture");
        let defers =
            anyhow::Error::new(Defers { source: std::io::Error::other("not a capture") }).context("producer failed");
        assert_eq!(error_line(&defers), "producer failed: cannot open capture file x.pcap: not a capture");
        assert_eq!(error_line(&anyhow::anyhow!("plain")), "plain");
    }
}
