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
    /// Run the autoencoder detector with this model file, written by `netanom train --autoencoder` (keys
    /// `detector.autoencoder.model_path`, and `detector.autoencoder.enabled` set to true).
    #[arg(long)]
    pub autoencoder_model: Option<PathBuf>,
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
    print!("{}", text(&e));
    Ok(())
}

/// The evaluation as `netanom eval` prints it. Labels without any attacker have nothing to find: recall and F1
/// are not defined, and the confusion line says so instead of reporting them.
pub fn text(e: &Evaluation) -> String {
    use std::fmt::Write as _;
    let opt = |v: Option<f64>, unit: &str| v.map_or("n/a".to_string(), |v| format!("{v:.3}{unit}"));
    let mut s = String::new();
    let _ = writeln!(s, "capture:    {} ({})", e.capture, e.class);
    let _ = writeln!(s, "hosts:      {} ({} attackers, {} victims labelled)", e.hosts, e.attackers, e.victims);
    let _ = writeln!(s, "alerts:     {:?}", e.alerts);
    let _ = writeln!(
        s,
        "attackers alerted {}/{}, victims alerted {}/{}, false-positive hosts {} {:?}",
        e.attackers_alerted,
        e.attackers,
        e.victims_alerted,
        e.victims,
        e.false_positive_hosts.len(),
        e.false_positive_hosts
    );
    let _ = write!(
        s,
        "TP {} FP {} FN {} TN {}: precision {:.3}, ",
        e.true_positives, e.false_positives, e.false_negatives, e.true_negatives, e.precision
    );
    match (e.recall, e.f1) {
        (Some(r), Some(f1)) => {
            let _ = write!(s, "recall {r:.3}, F1 {f1:.3}");
        }
        _ => s.push_str("no attackers in the labels (recall and F1 not defined)"),
    }
    let _ = writeln!(s, ", accuracy {:.3}, ROC-AUC {}", e.accuracy, opt(e.roc_auc, ""));
    for (h, t) in &e.time_to_detect_s {
        let _ = writeln!(s, "time to detect {h}: {t:.3} s of packet time from its first packet");
    }
    let _ = writeln!(s, "median time to detect: {}", opt(e.median_time_to_detect_s, " s"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_without_attackers_are_said_so_instead_of_a_perfect_recall() {
        let traffic = crate::traffic::Traffic::default();
        let quiet = evaluate("benign.pcap", &traffic, &crate::labels::Labels::default(), &[]);
        let t = text(&quiet);
        assert!(t.contains("no attackers in the labels"), "{t}");
        assert!(!t.contains("recall 1.000") && !t.contains("F1 1.000"), "{t}");
        let found = Evaluation { recall: Some(0.5), f1: Some(0.667), ..quiet };
        assert!(text(&found).contains("recall 0.500, F1 0.667, accuracy"), "{}", text(&found));
    }
}
