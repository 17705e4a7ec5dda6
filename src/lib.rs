//! The `netanom` umbrella binary as a library: the command line, configuration layering, telemetry, the
//! orchestration of `netanom run` (all three roles in one process on an embedded broker) and the offline tools.
//! The roles themselves live in the `netanom-producer`, `netanom-detector` and `netanom-alert-router` crates;
//! this crate only wires them.
//!
//! | module | owns |
//! | --- | --- |
//! | [`cli`] | flags of every command, the configuration keys they set, signals, dispatch |
//! | [`config`] | the configuration: sections, layering (defaults, file, environment, flags), validation |
//! | [`telemetry`] | logging (the one place it is set up), OpenTelemetry export, `/healthz` `/readyz` `/metrics` |
//! | [`process_metrics`] | the process's CPU time and resident memory as metrics |
//! | [`roles`] | one role against a real cluster; preparing every role's configuration |
//! | [`run`] | `netanom run`: the whole pipeline in one process; [`run::embedded_broker`] |
//! | [`offline`] | one capture through netanom: the producer's batches, or the whole pipeline's alerts |
//! | [`synth`], [`eval`], [`report`], [`replay`], [`train`] | the offline tools, one module each |
//! | [`topic_range`] | reading a range of a packets topic in replay order (replay, train) |
//! | [`latency`] | packet-to-alert latency of the whole pipeline at a paced packet rate (the benchmark's measure) |
//! | [`labels`], [`traffic`] | ground truth and per-host traffic of a capture (eval, report) |
//! | [`registry`] | the Confluent Schema Registry client |
//! | [`summary`] | the roles' one-line summaries |

pub mod cli;
pub mod config;
pub mod dlq;
pub mod eval;
pub mod labels;
pub mod latency;
pub mod offline;
pub mod process_metrics;
pub mod registry;
pub mod replay;
pub mod report;
pub mod reveal;
pub mod roles;
pub mod run;
pub mod summary;
pub mod synth;
pub mod telemetry;
#[cfg(test)]
mod test_alerts;
pub mod topic_range;
pub mod traffic;
pub mod train;

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
