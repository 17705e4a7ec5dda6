//! `netanom replay`: re-running detection over a range of a historical packets topic. The range is read by
//! [`crate::topic_range`] (a fresh group id, nothing committed: it never changes the live pipeline's offsets or
//! state); [`detect`] feeds its records in a deterministic order to the detector's Kafka-free
//! [`netanom_detector::Engine`]; [`output`] writes what it found (JSON lines, an Avro anomalies topic, alerts, a
//! diff of two models).
//!
//! # Why a replay is deterministic
//!
//! The range of each partition is fixed before reading (see [`crate::topic_range`]). Every record of the range
//! is read and then ordered by (record timestamp, partition, offset), a total order that depends only on the
//! topic's contents, never on fetch timing. Per-host state depends only on that host's records, which all live in one
//! partition (the key is the source address), so any order that keeps each partition's order gives the same
//! per-host result; the destination (victim) view crosses partitions, so replay runs the destination
//! aggregation in this process over the one global order: after every `detector.chunk_records` records the
//! engine's destination-statistics deltas are applied to its own destination side instead of going through
//! the destinations topic. The isolation model is either loaded (`--model`) or trained with its seed on the
//! first warm-up vectors of that same order, and so is the host-profile model (`--profile-model`, or trained on
//! the first warm-up profiles; the windows still open at the end of the range are scored there); the
//! supervised model, when `detector.supervised.model_path` is set, is loaded as the detector loads it
//! ([`netanom_detector::Models`]). So two replays of the same range with the same model and
//! configuration write byte-identical output. (A live detector group may differ from a replay in victim
//! anomalies near chunk boundaries: it sees the destination deltas as they arrive.)
//!
//! # Output
//!
//! Replay writes anomalies, the detector's output, by default: as JSON lines (`--out`, or stdout) each line is
//! one anomaly object with sorted keys; on `--output-topic` each record is the Avro `Anomaly`, key = host, as the
//! detector writes it (so `netanom alert-router` can consume it). With `--alerts` it writes alerts instead: the
//! anomalies go through the alert router's suppression and incidents ([`output::suppress`]) in the replay's order,
//! and each alert is the alerts topic's JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use netanom_detector::{Engine, Models, TrainedForest};

use crate::config::Config;
use crate::topic_range::{Position, ReadSpec, read_range};

pub mod detect;
pub mod output;

use detect::detect_with;
use output::{OutRecord, anomaly_json, anomaly_record, diff, suppress};

/// `netanom replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Kafka bootstrap servers (key `kafka.brokers`).
    #[arg(long)]
    pub brokers: Option<String>,
    /// The historical packets topic (default: `topics.packets`).
    #[arg(long)]
    pub topic: Option<String>,
    /// Start of the range in every partition: an offset (`0`) or an RFC 3339 time (`2024-05-01T12:00:00Z`).
    #[arg(long)]
    pub from: Position,
    /// End of the range, exclusive: an offset or an RFC 3339 time; default the end of each partition.
    #[arg(long)]
    pub to: Option<Position>,
    /// Isolation model to use (JSON written by `forest.save_path` or `netanom train --out`); default: the
    /// detector's `forest.model_path`, else trained with the configured seed on the first warm-up vectors of the
    /// replay.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Host-profile model to use (JSON written by `netanom train --profile-out`); default: the detector's
    /// `profile.model_path`, else trained on the first warm-up profiles of the replay.
    #[arg(long)]
    pub profile_model: Option<PathBuf>,
    /// Produce the anomalies (Avro, key = host) to this topic.
    #[arg(long, conflicts_with = "out")]
    pub output_topic: Option<String>,
    /// Write the anomalies as JSON lines to this file (default: stdout, unless --output-topic).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also run with this isolation model (the other models as for the first run) and print the anomalies gained and lost, by (host, kind, window start), as
    /// JSON lines on stdout.
    #[arg(long)]
    pub diff: Option<PathBuf>,
    /// Write alerts instead of anomalies: repeats collapsed per (host, kind) by the `[alert_router.suppression]`
    /// settings and grouped per host into incidents by `[alert_router.incidents]`, as the alert router would (JSON, the alerts topic's format, to the file, stdout or
    /// --output-topic).
    #[arg(long)]
    pub alerts: bool,
    /// Most records held in memory for ordering.
    #[arg(long, default_value_t = 5_000_000)]
    pub max_records: usize,
}

/// Loads an isolation model, logging its version.
pub fn load_model(path: &Path) -> Result<TrainedForest, netanom_detector::ForestError> {
    let m = TrainedForest::load(path)?;
    tracing::info!(model_version = m.version(), path = %path.display(), "isolation model loaded");
    Ok(m)
}

/// Runs `netanom replay`.
pub async fn command(args: ReplayArgs, mut cfg: Config) -> anyhow::Result<()> {
    crate::roles::resolve_schemas(&mut cfg).await?;
    let spec = ReadSpec::for_command(
        "replay",
        args.brokers.as_deref(),
        args.topic.as_deref(),
        (args.from, args.to),
        args.max_records,
        &cfg,
    )?;
    let brokers = spec.brokers.clone();
    let mut detector = cfg.detector.clone();
    if args.model.is_some() {
        detector.forest.model_path.clone_from(&args.model);
    }
    if args.profile_model.is_some() {
        detector.profile.model_path.clone_from(&args.profile_model);
    }
    let ids = cfg.schemas.ids;
    let diff_path = args.diff.clone();
    let (ranges, base, other) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let (ranges, records) = read_range(&spec)?;
        let base = detect_with(&records, &ids, &detector, Engine::new(&detector, Models::load(&detector)?));
        let other = match diff_path {
            Some(p) => {
                let models = Models { forest: Some(load_model(&p)?), ..Models::load(&detector)? };
                Some(detect_with(&records, &ids, &detector, Engine::new(&detector, models)))
            }
            None => None,
        };
        Ok((ranges, base, other))
    })
    .await
    .context("replay worker panicked")??;
    for r in &ranges {
        tracing::info!(partition = r.partition, start = r.start, end = r.end, records = r.read, "replayed range");
    }
    let records: u64 = ranges.iter().map(|r| r.read).sum();
    eprintln!(
        "replayed {records} records over {} partitions: {} batches, {} undecodable, {} outside the packet-time skew, {} anomalies (model {})",
        ranges.len(),
        base.batches,
        base.poison,
        base.out_of_time,
        base.anomalies.len(),
        base.model_version.as_deref().unwrap_or("none")
    );
    let sink = match (&args.output_topic, &args.out) {
        (Some(topic), _) => Sink::Topic { topic, brokers: &brokers, properties: &cfg.kafka.properties },
        (None, Some(path)) => Sink::File(path),
        // With --diff and no output named, stdout carries the diff only.
        (None, None) if args.diff.is_some() => Sink::Nowhere,
        (None, None) => Sink::Stdout,
    };
    if args.alerts {
        let alerts = suppress(
            &base.anomalies,
            &cfg.alert_router.suppression,
            &cfg.alert_router.incidents,
            cfg.alert_router.memory_budget_mib,
        );
        eprintln!("{} alerts after suppression", alerts.len());
        sink.write(&alerts, output::alert_json, output::alert_record).await?;
    } else {
        sink.write(&base.anomalies, anomaly_json, |a| anomaly_record(a, &ids)).await?;
    }
    if let Some(other) = other {
        let d = diff(&base.anomalies, &other.anomalies);
        print!("{}", d.to_jsonl());
        eprintln!(
            "diff: {} anomalies gained, {} lost with model {}",
            d.gained.len(),
            d.lost.len(),
            other.model_version.as_deref().unwrap_or("none")
        );
    }
    Ok(())
}

/// Where the replay's output goes.
enum Sink<'a> {
    /// Records on a topic.
    Topic {
        /// The topic.
        topic: &'a str,
        /// Bootstrap servers.
        brokers: &'a str,
        /// Extra librdkafka properties.
        properties: &'a BTreeMap<String, String>,
    },
    /// JSON lines in a file.
    File(&'a Path),
    /// JSON lines on stdout.
    Stdout,
    /// Nowhere (stdout carries the diff).
    Nowhere,
}

impl Sink<'_> {
    /// Writes `items`, each as `line` or `record` says.
    async fn write<T>(
        &self,
        items: &[T],
        line: impl Fn(&T) -> String,
        record: impl Fn(&T) -> OutRecord,
    ) -> anyhow::Result<()> {
        match self {
            Sink::Topic { topic, brokers, properties } => {
                output::produce(items, record, brokers, properties, topic).await?;
            }
            Sink::File(path) => output::write_lines_file(items, line, path)?,
            Sink::Stdout => {
                output::write_lines(items, line, &mut std::io::stdout().lock()).context("cannot write to stdout")?;
            }
            Sink::Nowhere => {}
        }
        Ok(())
    }
}
