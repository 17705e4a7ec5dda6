//! One capture through netanom, the one path every offline tool takes: [`batches`] reads it through the
//! producer's own parsing, flow table and batching (what `netanom train` learns from: exactly the batches the
//! detector would score), and [`alerts`] runs it through the whole pipeline of `netanom run` on an embedded
//! broker and collects the alerts (what `netanom eval` and `netanom report` judge and draw). The tools own
//! what they do with the result.

use std::path::{Path, PathBuf};

use anyhow::Context;
use netanom_producer::capture::Next;
use netanom_producer::{CaptureError, PacketSource, Pipeline, ProducerConfig, Speed};
use netanom_schemas::{Alert, PacketBatch};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::run::{RunOutcome, run_pipeline};

/// Reads `pcap` as fast as possible through the producer's pipeline (parse, flows, batching; the `[producer]`
/// settings, its BPF filter included) and hands every batch to `emit` in the order the batches close, the
/// last ones at the end of the capture, with the time of the capture's first frame (ns since the epoch).
pub fn batches(
    pcap: &Path,
    producer: &ProducerConfig,
    mut emit: impl FnMut(&PacketBatch, i64),
) -> Result<(), CaptureError> {
    let mut source = PacketSource::open_file(pcap, producer.filter.as_deref(), Speed::Max)?;
    let mut pipeline = Pipeline::new(&producer.flow, &producer.batch);
    let mut first_ns: Option<i64> = None;
    loop {
        match source.next(&|| false)? {
            Next::Frame(f) => {
                let first = *first_ns.get_or_insert(f.ts_ns);
                let _ = pipeline.push(&f, &mut |b| emit(b, first));
            }
            Next::Idle => {}
            Next::End => break,
        }
    }
    let first = first_ns.unwrap_or(0);
    pipeline.finish(&mut |b| emit(b, first));
    Ok(())
}

/// Runs the pipeline over `pcap` (configured by `cfg`, on the embedded broker unless `kafka.brokers` is set)
/// and returns its reports and every alert it raised, in the order the alert router wrote them.
pub async fn alerts(
    mut cfg: Config,
    pcap: &Path,
    stop: CancellationToken,
    hard: CancellationToken,
) -> anyhow::Result<(RunOutcome, Vec<Alert>)> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory for the alerts")?;
    let out: PathBuf = dir.path().join("alerts.jsonl");
    cfg.producer.pcap = Some(pcap.to_path_buf());
    cfg.producer.interface = None;
    cfg.alert_router.alerts_out = Some(out.clone());
    cfg.alert_router.alerts_out_format = Default::default();
    cfg.alert_router.stdout = false;
    let outcome = run_pipeline(cfg, stop, hard).await?;
    let text = match std::fs::read_to_string(&out) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read the alerts in {}", out.display())),
    };
    let alerts = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("alert line {} is not an alert", i + 1)))
        .collect::<anyhow::Result<Vec<Alert>>>()?;
    Ok((outcome, alerts))
}
