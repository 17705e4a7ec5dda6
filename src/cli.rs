//! Command-line flags. Every flag that configures a role is turned into a dotted key of the configuration
//! (see [`crate::config`]), so flags, environment variables and the TOML file are one namespace.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Override, Roles};

/// Real-time network anomaly detection over Kafka.
#[derive(Debug, Parser)]
#[command(name = "netanom", version, about, long_about = None)]
pub struct Cli {
    /// TOML configuration file (also `NETANOM_CONFIG`).
    #[arg(long, global = true, env = "NETANOM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `netanom_detector=debug` (key `log.level`).
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// Log format: `text` or `json` (key `log.format`).
    #[arg(long, global = true)]
    pub log_format: Option<String>,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The roles and tools.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Producer, detector and alert router in one process, on an embedded Kafka broker unless --brokers is given.
    Run(RunArgs),
    /// Capture packets and publish their features to the packets topic.
    Producer(ProducerArgs),
    /// Consume packet features and publish anomalies (one member of a consumer group).
    Detector(DetectorArgs),
    /// Consume anomalies, suppress repeats, deliver alerts to the alerts topic and webhooks.
    AlertRouter(RouterArgs),
    /// Write a seeded, labelled capture of benign traffic with a SYN flood, a port scan, a spoofed-source flood
    /// and a host sweep, or the attacks chosen with --attacks (for demos, tests and benchmarks).
    Synth(SynthArgs),
    /// Run the pipeline over a labelled capture and print host-level precision, recall, F1, accuracy, ROC-AUC
    /// and time to detect.
    Eval(EvalArgs),
    /// Run the pipeline over a capture and write a self-contained HTML report (inline SVG charts and tables).
    Report(ReportArgs),
    /// Re-run detection over a range of a historical packets topic (fresh consumer group, nothing committed) and
    /// write the anomalies to a file, stdout or a topic; `--diff` compares two models.
    Replay(crate::replay::ReplayArgs),
    /// Train an isolation model from captures (--pcap) or a range of a packets topic (--from, read as `replay`
    /// reads it), seeded and reproducible, and save it for `forest.model_path` or `replay --model`; with
    /// --supervised, a random forest on labelled captures for `supervised.model_path`, printing cross-validated
    /// and held-out accuracy, precision, recall and F1.
    Train(crate::replay::TrainArgs),
    /// Print the default configuration as TOML, or check a configuration.
    Config {
        /// Check the layered configuration (file, environment) and print it instead of the defaults.
        #[arg(long)]
        check: bool,
        /// With --check: validate only this role's sections (`producer`, `detector`, `alert-router`); default all.
        #[arg(long, requires = "check")]
        role: Option<String>,
    },
}

/// Where packets come from.
#[derive(Debug, Args)]
pub struct InputArgs {
    /// Read packets from a pcap or pcapng file.
    #[arg(long, conflicts_with = "interface")]
    pub pcap: Option<PathBuf>,
    /// Capture live from this interface.
    #[arg(long)]
    pub interface: Option<String>,
    /// BPF filter for the capture, e.g. `tcp or udp`.
    #[arg(long)]
    pub filter: Option<String>,
    /// File replay speed: `max`, `realtime` or a factor such as `10`.
    #[arg(long)]
    pub speed: Option<String>,
}

/// Flags shared by every role that talks to Kafka.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// Kafka bootstrap servers (key `kafka.brokers`).
    #[arg(long)]
    pub brokers: Option<String>,
}

/// Model files for the detector (keys `detector.forest.model_path`, `detector.supervised.model_path`).
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Start from this model file (written by `netanom train` or `forest.save_path`: the isolation forest and,
    /// when present, the host-profile model) instead of training on the warm-up sample (key
    /// `detector.forest.model_path`).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Run the supervised detector with this model file, written by `netanom train --supervised` (key
    /// `detector.supervised.model_path`).
    #[arg(long)]
    pub supervised_model: Option<PathBuf>,
}

/// `netanom detector`.
#[derive(Debug, Args)]
pub struct DetectorArgs {
    #[command(flatten)]
    /// Kafka.
    pub service: ServiceArgs,
    #[command(flatten)]
    /// Model.
    pub model: ModelArgs,
}

/// `netanom producer`.
#[derive(Debug, Args)]
pub struct ProducerArgs {
    #[command(flatten)]
    /// Input.
    pub input: InputArgs,
    #[command(flatten)]
    /// Kafka.
    pub service: ServiceArgs,
}

/// `netanom alert-router`.
#[derive(Debug, Args)]
pub struct RouterArgs {
    #[command(flatten)]
    /// Kafka.
    pub service: ServiceArgs,
    /// Also write every alert as a JSON line to this file.
    #[arg(long)]
    pub alerts_out: Option<PathBuf>,
    /// Deliver alerts to this webhook URL (repeatable; signing keys go in the config file or environment).
    #[arg(long = "webhook")]
    pub webhooks: Vec<String>,
}

/// `netanom synth`.
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output capture (`.pcapng` writes pcapng, anything else pcap).
    #[arg(long)]
    pub out: PathBuf,
    /// RNG seed: the same seed writes the same bytes.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Also write the labels as CSV: `host,role` with role attacker, victim or benign.
    #[arg(long, conflicts_with = "packets")]
    pub labels: Option<PathBuf>,
    /// Instead of the labelled scenario, write exactly this many packets of mixed benign and attack traffic
    /// (the benchmark capture, e.g. 1000000).
    #[arg(long)]
    pub packets: Option<usize>,
    /// Attacks of the labelled scenario: `all` or a comma-separated list of syn-flood, port-scan,
    /// spoofed-syn-flood, host-sweep, brute-force, dns-tunnel, slow-exfiltration, beaconing. The order given does
    /// not matter.
    #[arg(long, conflicts_with = "packets", default_value_t = netanom_producer::synth::AttackList::default())]
    pub attacks: netanom_producer::synth::AttackList,
}

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
    #[command(flatten)]
    /// Model.
    pub model: ModelArgs,
}

/// `netanom report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The capture (pcap or pcapng).
    #[arg(long)]
    pub pcap: PathBuf,
    /// Optional labels (same formats as `netanom eval`); attackers are marked in the tables.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// The HTML file to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// `netanom run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    /// Input.
    pub input: InputArgs,
    #[command(flatten)]
    /// Kafka.
    pub service: ServiceArgs,
    /// Write every alert as a JSON line to this file.
    #[arg(long)]
    pub alerts_out: Option<PathBuf>,
    /// Deliver alerts to this webhook URL (repeatable).
    #[arg(long = "webhook")]
    pub webhooks: Vec<String>,
    /// Do not print alerts on stdout (the summary is still printed).
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    /// Model.
    pub model: ModelArgs,
}

fn s(v: impl Into<String>) -> toml::Value {
    toml::Value::String(v.into())
}

impl Command {
    /// The roles whose configuration sections this command uses.
    pub fn roles(&self) -> Result<Roles, String> {
        let only = |producer, detector, alert_router| Roles { producer, detector, alert_router };
        Ok(match self {
            Command::Run(_) | Command::Eval(_) | Command::Report(_) => Roles::ALL,
            Command::Producer(_) => only(true, false, false),
            Command::Detector(_) | Command::Replay(_) | Command::Train(_) => only(false, true, false),
            Command::AlertRouter(_) => only(false, false, true),
            Command::Synth(_) | Command::Config { check: false, .. } => Roles::NONE,
            Command::Config { role: None, .. } => Roles::ALL,
            Command::Config { role: Some(r), .. } => match r.as_str() {
                "producer" => only(true, false, false),
                "detector" => only(false, true, false),
                "alert-router" => only(false, false, true),
                other => return Err(format!("--role must be producer, detector or alert-router, got {other:?}")),
            },
        })
    }
}

impl Cli {
    /// The configuration keys set by flags.
    pub fn overrides(&self) -> Vec<Override> {
        let mut o = Vec::new();
        if let Some(l) = &self.log_level {
            o.push(("log.level".into(), s(l)));
        }
        if let Some(f) = &self.log_format {
            o.push(("log.format".into(), s(f)));
        }
        let input = |o: &mut Vec<Override>, i: &InputArgs| {
            if let Some(p) = &i.pcap {
                o.push(("producer.pcap".into(), s(p.display().to_string())));
            }
            if let Some(iface) = &i.interface {
                o.push(("producer.interface".into(), s(iface)));
            }
            if let Some(f) = &i.filter {
                o.push(("producer.filter".into(), s(f)));
            }
            if let Some(sp) = &i.speed {
                o.push(("producer.speed".into(), s(sp)));
            }
        };
        let service = |o: &mut Vec<Override>, a: &ServiceArgs| {
            if let Some(b) = &a.brokers {
                o.push(("kafka.brokers".into(), s(b)));
            }
        };
        // A whole capture through the pipeline as fast as possible, alerts only in the result.
        let offline = |o: &mut Vec<Override>, pcap: &PathBuf| {
            o.push(("producer.pcap".into(), s(pcap.display().to_string())));
            o.push(("producer.speed".into(), s("max")));
            o.push(("alert_router.stdout".into(), toml::Value::Boolean(false)));
        };
        let model = |o: &mut Vec<Override>, m: &ModelArgs| {
            if let Some(p) = &m.model {
                o.push(("detector.forest.model_path".into(), s(p.display().to_string())));
            }
            if let Some(p) = &m.supervised_model {
                o.push(("detector.supervised.model_path".into(), s(p.display().to_string())));
            }
        };
        let router = |o: &mut Vec<Override>, out: &Option<PathBuf>, hooks: &[String]| {
            if let Some(p) = out {
                o.push(("alert_router.alerts_out".into(), s(p.display().to_string())));
            }
            if !hooks.is_empty() {
                let list = hooks
                    .iter()
                    .map(|u| {
                        let mut t = toml::Table::new();
                        t.insert("url".into(), s(u));
                        toml::Value::Table(t)
                    })
                    .collect();
                o.push(("alert_router.webhooks".into(), toml::Value::Array(list)));
            }
        };
        match &self.command {
            Command::Run(r) => {
                input(&mut o, &r.input);
                service(&mut o, &r.service);
                router(&mut o, &r.alerts_out, &r.webhooks);
                model(&mut o, &r.model);
                o.push(("alert_router.stdout".into(), toml::Value::Boolean(!r.quiet)));
            }
            Command::Producer(p) => {
                input(&mut o, &p.input);
                service(&mut o, &p.service);
            }
            Command::Detector(d) => {
                service(&mut o, &d.service);
                model(&mut o, &d.model);
            }
            Command::AlertRouter(r) => {
                service(&mut o, &r.service);
                router(&mut o, &r.alerts_out, &r.webhooks);
            }
            Command::Eval(EvalArgs { pcap, model: m, .. }) => {
                model(&mut o, m);
                offline(&mut o, pcap);
            }
            Command::Report(ReportArgs { pcap, .. }) => offline(&mut o, pcap),
            Command::Replay(crate::replay::ReplayArgs { brokers, .. })
            | Command::Train(crate::replay::TrainArgs { brokers, .. }) => {
                if let Some(b) = brokers {
                    o.push(("kafka.brokers".into(), s(b)));
                }
            }
            Command::Config { .. } | Command::Synth(_) => {}
        }
        o
    }
}
