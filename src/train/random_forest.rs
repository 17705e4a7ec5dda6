//! `netanom train --supervised`: turns labelled captures into labelled batch vectors, trains the supervised
//! random forest and prints its cross-validated and held-out figures. Owns labelling the batches of captures
//! for training (read through [`crate::offline::batches`]); the model, the split, the cross-validation and the
//! metrics belong to the detector's [`netanom_detector::supervised`].
//!
//! Each capture goes through the producer's own parsing, flow table and batching (`[producer]` settings), so
//! the vectors are exactly what the detector scores: one per packet batch (one source host, at most
//! `producer.batch.max_interval`) of at least `--min-packets` packets. A batch is an attack when its source is
//! a labelled attacker and it ends at or after the labelled attack start
//! ([`crate::labels::Labels::attack_from_s`]); every other batch, victims' included, is benign: a victim
//! answering a flood is not attacking, and an alert of kind `supervised` says "this host attacks".
//!
//! Captures whose catalogue row makes every source an attacker (reflected and spoofed-source floods) are left
//! out: their "attackers" are DNS, NTP or other servers answering forged requests, or forged addresses, so
//! labelling them attack teaches the forest that busy servers attack (it then flags the DNS servers of benign
//! captures). The victim detector covers those floods.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use netanom_detector::features::{FeatureScratch, FeatureVector, batch_features};
use netanom_detector::supervised::model::ClassCounts;
use netanom_detector::supervised::train::{CvResult, Outcome};
use netanom_detector::supervised::{Confusion, Settings, SupervisedModel, train};
use netanom_schemas::PacketBatch;
use serde_json::json;

use super::args::TrainArgs;
use crate::config::Config;

/// Most batch vectors read from all captures together (about 120 bytes each).
const MAX_VECTORS: usize = 1_000_000;

/// The labelled vectors of one capture.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledCapture {
    /// The capture.
    pub path: PathBuf,
    /// One vector per batch of at least the minimum size.
    pub vectors: Vec<FeatureVector>,
    /// Whether each vector is attack traffic.
    pub labels: Vec<bool>,
    /// The source host of each vector.
    pub hosts: Vec<IpAddr>,
    /// Labelled attackers that sent at least one attack batch.
    pub attackers_seen: BTreeSet<String>,
    /// Labelled attackers (IP addresses) of the capture.
    pub attackers_labelled: usize,
    /// Why the capture contributed no vector on purpose (every source labelled an attacker).
    pub skipped: Option<&'static str>,
}

/// Reads `pcap` through the producer's pipeline and labels each batch of at least `min_packets` packets with
/// the labels of `labels` (either format of [`crate::labels`]). At most `room` vectors are kept.
pub fn labelled_capture(
    pcap: &Path,
    labels: &Path,
    producer: &netanom_producer::ProducerConfig,
    min_packets: usize,
    room: usize,
) -> anyhow::Result<LabelledCapture> {
    let l = crate::labels::load(labels, pcap)?;
    let mut scratch = FeatureScratch::default();
    let mut out = LabelledCapture {
        path: pcap.to_path_buf(),
        vectors: Vec::new(),
        labels: Vec::new(),
        hosts: Vec::new(),
        attackers_seen: BTreeSet::new(),
        attackers_labelled: l.attackers.iter().filter(|a| a.parse::<IpAddr>().is_ok()).count(),
        skipped: None,
    };
    if l.all_sources_attack {
        out.skipped = Some("every source is labelled an attacker (reflected or spoofed flood)");
        return Ok(out);
    }
    let mut full = false;
    let emit = |b: &PacketBatch, first: i64| {
        if b.packets.len() < min_packets {
            return;
        }
        if out.vectors.len() >= room {
            full = true;
            return;
        }
        let host = b.source.to_string();
        let end = b.packets.iter().map(|p| p.ts_ns).max().unwrap_or(i64::MIN);
        let started = l.attack_from_s.is_none_or(|s| end as f64 >= first as f64 + s * 1e9);
        let attack = started && l.attackers.contains(&host);
        if attack {
            out.attackers_seen.insert(host);
        }
        out.vectors.push(batch_features(&b.packets, &mut scratch));
        out.labels.push(attack);
        out.hosts.push(b.source);
    };
    crate::offline::batches(pcap, producer, emit).with_context(|| format!("reading {}", pcap.display()))?;
    if full {
        anyhow::bail!("more than {MAX_VECTORS} batch vectors in the captures: train on fewer or smaller captures");
    }
    Ok(out)
}

fn read_all(
    pcaps: &[PathBuf],
    labels: &Path,
    producer: &netanom_producer::ProducerConfig,
    min_packets: usize,
    room: &mut usize,
) -> anyhow::Result<Vec<LabelledCapture>> {
    let mut out = Vec::with_capacity(pcaps.len());
    for p in pcaps {
        let c = labelled_capture(p, labels, producer, min_packets, *room)?;
        *room -= c.vectors.len();
        out.push(c);
    }
    Ok(out)
}

fn concat(captures: &[LabelledCapture]) -> (Vec<FeatureVector>, Vec<bool>) {
    let x = captures.iter().flat_map(|c| c.vectors.iter().copied()).collect();
    let y = captures.iter().flat_map(|c| c.labels.iter().copied()).collect();
    (x, y)
}

/// Runs `netanom train --supervised` (CPU-bound: call it off the async reactor).
pub fn run(args: &TrainArgs, cfg: &Config) -> anyhow::Result<()> {
    let labels = args.labels.as_deref().context("--supervised needs --labels FILE")?;
    let settings = Settings {
        seed: args.seed.unwrap_or(cfg.detector.forest.seed),
        test_fraction: args.test_fraction,
        folds: args.folds,
        min_packets: args.min_packets,
        ..Settings::default()
    };
    let mut room = MAX_VECTORS;
    let captures = read_all(&args.pcap, labels, &cfg.producer, args.min_packets, &mut room)?;
    let tests = read_all(&args.test_pcap, labels, &cfg.producer, args.min_packets, &mut room)?;
    let (x, y) = concat(&captures);
    let (hx, hy) = concat(&tests);
    let holdout = (!tests.is_empty()).then_some((hx.as_slice(), hy.as_slice()));
    let outcome = train::train(&x, &y, holdout, &settings)?;
    outcome.model.save(&args.out)?;
    if args.json {
        println!("{}", report_json(args, &settings, &captures, &tests, &outcome));
    } else {
        print!("{}", report_text(args, &settings, &captures, &tests, &outcome));
    }
    Ok(())
}

/// How the model did on one test capture.
struct CaptureTest {
    /// Batch-level confusion matrix at the model's threshold.
    confusion: Confusion,
    /// Hosts with at least one flagged attack batch.
    attackers_flagged: BTreeSet<IpAddr>,
    /// Hosts with at least one flagged benign batch (false alarms at host level).
    benign_flagged: BTreeSet<IpAddr>,
}

fn capture_test(c: &LabelledCapture, model: &SupervisedModel) -> CaptureTest {
    let mut t = CaptureTest {
        confusion: Confusion::default(),
        attackers_flagged: BTreeSet::new(),
        benign_flagged: BTreeSet::new(),
    };
    for ((v, &attack), &host) in c.vectors.iter().zip(&c.labels).zip(&c.hosts) {
        let flagged = model.p_attack(v) >= model.threshold();
        t.confusion.add(attack, flagged);
        if flagged {
            if attack { &mut t.attackers_flagged } else { &mut t.benign_flagged }.insert(host);
        }
    }
    t
}

fn capture_json(c: &LabelledCapture, test: Option<&SupervisedModel>) -> serde_json::Value {
    let n = ClassCounts::of(c.labels.iter().copied());
    let mut v = json!({
        "path": c.path.display().to_string(),
        "vectors": c.vectors.len(),
        "attack": n.attack,
        "benign": n.benign,
        "attackers_labelled": c.attackers_labelled,
        "skipped": c.skipped,
        "attackers_seen": c.attackers_seen,
    });
    if let (Some(model), Some(m)) = (test, v.as_object_mut()) {
        let t = capture_test(c, model);
        m.insert("confusion".into(), json!(t.confusion));
        m.insert("attackers_flagged".into(), json!(t.attackers_flagged));
        m.insert("benign_hosts_flagged".into(), json!(t.benign_flagged));
    }
    v
}

fn figures(c: &Confusion) -> serde_json::Value {
    json!({
        "accuracy": c.accuracy(),
        "precision": c.precision(),
        "recall": c.recall(),
        "f1": c.f1(),
        "confusion": c,
    })
}

fn cv_json(r: &CvResult) -> serde_json::Value {
    json!({
        "trees": r.params.trees,
        "max_depth": r.params.max_depth,
        "feature_fraction": r.params.feature_fraction,
        "accuracy": r.confusion.accuracy(),
        "precision": r.confusion.precision(),
        "recall": r.confusion.recall(),
        "f1": r.confusion.f1(),
    })
}

/// The `--json` report: one object.
pub fn report_json(
    args: &TrainArgs,
    settings: &Settings,
    captures: &[LabelledCapture],
    tests: &[LabelledCapture],
    o: &Outcome,
) -> serde_json::Value {
    let mut v = figures(&o.test_confusion);
    let extra = json!({
        "model": args.out.display().to_string(),
        "model_version": o.model.version(),
        "seed": settings.seed,
        "min_packets": settings.min_packets,
        "captures": captures.iter().map(|c| capture_json(c, None)).collect::<Vec<_>>(),
        "test_captures": tests.iter().map(|c| capture_json(c, Some(&o.model))).collect::<Vec<_>>(),
        "holdout": if tests.is_empty() { "stratified_split" } else { "test_captures" },
        "test_fraction": tests.is_empty().then_some(settings.test_fraction),
        "train": o.train,
        "test": o.test,
        "folds": o.folds,
        "cv": o.cv.iter().map(cv_json).collect::<Vec<_>>(),
        "chosen": o.chosen,
        "threshold": o.model.threshold(),
    });
    if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    v
}

/// The human report.
pub fn report_text(
    args: &TrainArgs,
    settings: &Settings,
    captures: &[LabelledCapture],
    tests: &[LabelledCapture],
    o: &Outcome,
) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let describe = |s: &mut String, c: &LabelledCapture, test: Option<&SupervisedModel>| {
        let n = ClassCounts::of(c.labels.iter().copied());
        let attackers = match c.skipped {
            None => format!("attackers with attack batches {} of {}", c.attackers_seen.len(), c.attackers_labelled),
            Some(why) => format!("left out: {why}"),
        };
        let flagged = test.map_or(String::new(), |m| {
            let t = capture_test(c, m);
            format!(
                "; flagged {} attack, {} benign batches, {} attacker and {} benign hosts",
                t.confusion.tp,
                t.confusion.fp,
                t.attackers_flagged.len(),
                t.benign_flagged.len()
            )
        });
        let _ = writeln!(
            s,
            "  {}: {} batch vectors ({} attack, {} benign); {attackers}{flagged}",
            c.path.display(),
            c.vectors.len(),
            n.attack,
            n.benign,
        );
    };
    let _ = writeln!(s, "supervised random forest {} (seed {})", o.model.version(), settings.seed);
    let _ = writeln!(s, "training captures (batches of >= {} packets):", settings.min_packets);
    for c in captures {
        describe(&mut s, c, None);
    }
    if tests.is_empty() {
        let _ = writeln!(
            s,
            "split: stratified, {:.0} % of each class held out: train {} attack / {} benign, test {} attack / {} benign",
            settings.test_fraction * 100.0,
            o.train.attack,
            o.train.benign,
            o.test.attack,
            o.test.benign
        );
    } else {
        let _ = writeln!(s, "test captures (held out whole):");
        for c in tests {
            describe(&mut s, c, Some(&o.model));
        }
    }
    let _ = writeln!(s, "{}-fold stratified cross-validation on the training set (out-of-fold, P >= 0.5):", o.folds);
    let _ = writeln!(s, "  trees  max_depth  features  accuracy  precision  recall     f1");
    for r in &o.cv {
        let mark = if r.params == o.chosen { "  <- chosen" } else { "" };
        let _ = writeln!(
            s,
            "  {:>5}  {:>9}  {:>8}  {:>8.3}  {:>9.3}  {:>6.3}  {:>5.3}{mark}",
            r.params.trees,
            r.params.max_depth,
            r.params.feature_fraction,
            r.confusion.accuracy(),
            r.confusion.precision(),
            r.confusion.recall(),
            r.confusion.f1()
        );
    }
    let _ =
        writeln!(s, "threshold: P(attack) >= {:.3} (best out-of-fold F1 of the chosen forest)", o.model.threshold());
    let c = &o.test_confusion;
    let _ = writeln!(
        s,
        "test: accuracy {:.3}  precision {:.3}  recall {:.3}  F1 {:.3}",
        c.accuracy(),
        c.precision(),
        c.recall(),
        c.f1()
    );
    let _ = writeln!(s, "confusion matrix (rows: labelled, columns: predicted):");
    let _ = writeln!(s, "              attack   benign");
    let _ = writeln!(s, "  attack   {:>9} {:>8}", c.tp, c.fn_);
    let _ = writeln!(s, "  benign   {:>9} {:>8}", c.fp, c.tn);
    let _ = writeln!(s, "wrote {} (use it with detector.supervised.model_path)", args.out.display());
    s
}
