//! `netanom eval`: runs the whole pipeline over a capture ([`crate::offline::alerts`], as `netanom run` does),
//! joins the alerts with the capture's labels ([`crate::labels`]) and its source hosts ([`crate::traffic`])
//! ([`evaluation`]: the joining rules), and prints host-level precision, recall, F1, accuracy, ROC-AUC and time
//! to detect ([`formulas`]: the metric formulas).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

pub mod evaluation;
pub mod formulas;

pub use evaluation::{Evaluation, evaluate};

/// `netanom eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The capture (pcap or pcapng).
    #[arg(long)]
    pub pcap: PathBuf,
    /// Labels: `host,role` CSV (as written by `netanom synth --labels`) or a `labels.csv` catalogue whose `file`
    /// column the capture path ends with.
    #[arg(long)]
    pub labels: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Start from this isolation-forest model file (written by `netanom train --out` or `forest.save_path`)
    /// instead of training on the warm-up sample (key `detector.forest.model_path`).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Start from this host-profile model file (written by `netanom train --profile-out`) instead of training
    /// on the first warm-up profiles (key `detector.profile.model_path`).
    #[arg(long)]
    pub profile_model: Option<PathBuf>,
}

/// `netanom eval`.
pub async fn command(
    args: &EvalArgs,
    cfg: Config,
    stop: CancellationToken,
    hard: CancellationToken,
) -> anyhow::Result<()> {
    let labels = crate::labels::load(&args.labels, &args.pcap)?;
    let traffic = crate::traffic::scan(&args.pcap, &cfg.producer.flow)?;
    let (_, alerts) = crate::offline::alerts(cfg, &args.pcap, stop, hard).await?;
    let e = evaluate(&args.pcap.display().to_string(), &traffic, &labels, &alerts);
    if args.json {
        println!("{}", serde_json::to_string(&e).context("cannot print the evaluation")?);
        return Ok(());
    }
    let opt = |v: Option<f64>, unit: &str| v.map_or("n/a".to_string(), |v| format!("{v:.3}{unit}"));
    println!("capture:    {} ({})", e.capture, e.class);
    println!("hosts:      {} ({} attackers, {} victims labelled)", e.hosts, e.attackers, e.victims);
    println!("alerts:     {:?}", e.alerts);
    println!(
        "attackers alerted {}/{}, victims alerted {}/{}, false-positive hosts {} {:?}",
        e.attackers_alerted,
        e.attackers,
        e.victims_alerted,
        e.victims,
        e.false_positive_hosts.len(),
        e.false_positive_hosts
    );
    println!(
        "TP {} FP {} FN {} TN {}: precision {:.3}, recall {:.3}, F1 {:.3}, accuracy {:.3}, ROC-AUC {}",
        e.true_positives,
        e.false_positives,
        e.false_negatives,
        e.true_negatives,
        e.precision,
        e.recall,
        e.f1,
        e.accuracy,
        opt(e.roc_auc, "")
    );
    for (h, s) in &e.time_to_detect_s {
        println!("time to detect {h}: {s:.3} s of packet time from its first packet");
    }
    println!("median time to detect: {}", opt(e.median_time_to_detect_s, " s"));
    Ok(())
}
