//! The flags of `netanom train`: the source (captures or a topic range, exactly one), the output, and the
//! settings of each kind of training. Which combinations clap accepts is tested here.

use std::path::PathBuf;

use crate::topic_range::Position;

/// `netanom train`: learns from captures (`--pcap`) or from a range of a packets topic (`--from`, with
/// `--brokers`, `--topic`, `--to` as for `netanom replay`); exactly one of the two sources.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).multiple(false).args(["pcap", "from"])))]
pub struct TrainArgs {
    /// Captures (pcap or pcapng) to train on: normal traffic for the isolation forest; labelled traffic with
    /// --supervised. Repeatable, or several after one flag.
    #[arg(long, num_args = 1..)]
    pub pcap: Vec<PathBuf>,
    /// Train the isolation model on a range of a packets topic instead of captures: start of the range in every
    /// partition, an offset (`0`) or an RFC 3339 time (`2024-05-01T12:00:00Z`). The records are read and
    /// ordered as `netanom replay` orders them.
    #[arg(long, conflicts_with = "supervised")]
    pub from: Option<Position>,
    /// With --from: end of the range, exclusive: an offset or an RFC 3339 time; default the end of each partition.
    #[arg(long, requires = "from", conflicts_with = "pcap")]
    pub to: Option<Position>,
    /// With --from: Kafka bootstrap servers (key `kafka.brokers`).
    #[arg(long, requires = "from", conflicts_with = "pcap")]
    pub brokers: Option<String>,
    /// With --from: the packets topic (default: `topics.packets`).
    #[arg(long, requires = "from", conflicts_with = "pcap")]
    pub topic: Option<String>,
    /// With --from: most records held in memory for ordering.
    #[arg(long, default_value_t = 5_000_000, requires = "from", conflicts_with = "pcap")]
    pub max_records: usize,
    /// Where to write the isolation-forest model (JSON), loaded by `--model` (key `forest.model_path`); with
    /// --supervised, the supervised model, loaded by `--supervised-model` (key `supervised.model_path`); with
    /// --autoencoder, the autoencoder model, loaded by `--autoencoder-model` (key `autoencoder.model_path`).
    #[arg(long)]
    pub out: PathBuf,
    /// Where to write the host-profile model (JSON), loaded by `--profile-model` (key `profile.model_path`).
    /// Default: beside --out, its name with `.profiles.json` for the extension (`model.json` gives
    /// `model.profiles.json`). Not written when `detector.profile.enabled` is false.
    #[arg(long, conflicts_with_all = ["supervised", "autoencoder"])]
    pub profile_out: Option<PathBuf>,
    /// Training seed of the forest and the host-profile model (default: `detector.forest.seed` for the forest,
    /// `detector.profile.seed` for the host-profile model, `detector.autoencoder.seed` with --autoencoder).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Use the first this many batch vectors (default: `detector.forest.warmup_samples`, as the detector does;
    /// `detector.autoencoder.warmup_samples` with --autoencoder).
    #[arg(long, conflicts_with = "supervised")]
    pub samples: Option<usize>,
    /// Train the supervised random forest on labelled traffic instead of the isolation forest: seeded
    /// stratified train/test split, k-fold cross-validation over trees, max depth and feature share, and
    /// accuracy, precision, recall, F1 and the confusion matrix on the test set.
    #[arg(long, requires = "labels")]
    pub supervised: bool,
    /// Train the autoencoder ensemble (KitNET: one small autoencoder per subset of correlated features, an
    /// output autoencoder over their errors) on normal traffic instead of the isolation forest, with the
    /// `[detector.autoencoder]` settings.
    #[arg(long, conflicts_with = "supervised")]
    pub autoencoder: bool,
    /// With --supervised: labels, `host,role` CSV (as `netanom synth --labels` writes) or a `labels.csv`
    /// catalogue whose `file` column each capture path ends with.
    #[arg(long, requires = "supervised")]
    pub labels: Option<PathBuf>,
    /// With --supervised: test on these captures (held out whole) instead of a split of the training captures.
    #[arg(long, num_args = 1.., requires = "supervised")]
    pub test_pcap: Vec<PathBuf>,
    /// With --supervised: share of each class held out for the test set when no --test-pcap is given.
    #[arg(long, default_value_t = 0.3, requires = "supervised")]
    pub test_fraction: f64,
    /// With --supervised: cross-validation folds (fewer if a class has fewer training vectors).
    #[arg(long, default_value_t = 5, requires = "supervised")]
    pub folds: usize,
    /// With --supervised: smallest batch (packets) trained on; the detector scores no smaller batch.
    #[arg(long, default_value_t = 8, requires = "supervised")]
    pub min_packets: usize,
    /// With --supervised: print one JSON object instead of text.
    #[arg(long, requires = "supervised")]
    pub json: bool,
}

impl TrainArgs {
    /// Where the host-profile model goes: `--profile-out`, else `--out` with `.profiles.json` for its extension.
    pub fn profile_out(&self) -> PathBuf {
        self.profile_out.clone().unwrap_or_else(|| {
            let stem = self.out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            self.out.with_file_name(format!("{stem}.profiles.json"))
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        args: TrainArgs,
    }

    fn parse(line: &str) -> Result<TrainArgs, String> {
        Cmd::try_parse_from(std::iter::once("train").chain(line.split_whitespace()))
            .map(|c| c.args)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn captures_or_a_topic_range_exactly_one() {
        let a = parse("--pcap a.pcap b.pcapng --pcap c.pcap --out m.json").unwrap();
        assert_eq!(a.pcap.len(), 3);
        assert_eq!((a.from, a.supervised, a.max_records), (None, false, 5_000_000));
        let a = parse("--from 2024-01-01T00:00:00Z --to 10 --brokers b:9092 --out m.json").unwrap();
        assert_eq!((a.from, a.to), (Some(Position::Time(1_704_067_200_000)), Some(Position::Offset(10))));
        assert!(a.pcap.is_empty());
        assert_eq!(a.profile_out(), PathBuf::from("m.profiles.json"));
        let a = parse("--pcap a.pcap --out dir/forest --profile-out p.json").unwrap();
        assert_eq!(a.profile_out(), PathBuf::from("p.json"));
        assert_eq!(
            parse("--pcap a.pcap --out dir/forest").unwrap().profile_out(),
            PathBuf::from("dir/forest.profiles.json")
        );
        for wrong in [
            "--out m.json",
            "--pcap a.pcap --from 0 --out m.json",
            "--pcap a.pcap --to 10 --out m.json",
            "--pcap a.pcap --brokers b:9092 --out m.json",
            "--from -3 --out m.json",
            "--pcap a.pcap",
        ] {
            assert!(parse(wrong).is_err(), "{wrong} was accepted");
        }
    }

    #[test]
    fn autoencoder_training_takes_captures_or_a_range() {
        let a = parse("--autoencoder --pcap a.pcap --samples 100 --seed 3 --out ae.json").unwrap();
        assert!(a.autoencoder && !a.supervised);
        assert_eq!((a.samples, a.seed), (Some(100), Some(3)));
        assert!(parse("--autoencoder --from 0 --out ae.json").unwrap().autoencoder);
    }

    #[test]
    fn supervised_training_needs_labels_and_captures() {
        let a = parse("--supervised --labels l.csv --pcap a.pcap --test-pcap t.pcap --folds 3 --out m.json").unwrap();
        assert!(a.supervised);
        assert_eq!((a.folds, a.min_packets, a.test_fraction), (3, 8, 0.3));
        assert_eq!(a.test_pcap, vec![PathBuf::from("t.pcap")]);
        for wrong in [
            "--supervised --pcap a.pcap --out m.json",
            "--labels l.csv --pcap a.pcap --out m.json",
            "--supervised --labels l.csv --from 0 --out m.json",
            "--test-pcap t.pcap --pcap a.pcap --out m.json",
            "--supervised --labels l.csv --pcap a.pcap --samples 10 --out m.json",
            "--supervised --labels l.csv --pcap a.pcap --profile-out p.json --out m.json",
            "--autoencoder --supervised --labels l.csv --pcap a.pcap --out m.json",
            "--autoencoder --pcap a.pcap --profile-out p.json --out m.json",
        ] {
            assert!(parse(wrong).is_err(), "{wrong} was accepted");
        }
    }
}
