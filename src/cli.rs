//! The command line and dispatch: the flags of every command, the configuration keys they set (every flag that
//! configures a role becomes a dotted key of the configuration, see [`crate::config`], so flags, environment
//! variables and the TOML file are one namespace), the Ctrl-C/SIGTERM handling, and which module runs each
//! command. The offline tools own their flags ([`crate::synth::SynthArgs`], [`crate::eval::EvalArgs`],
//! [`crate::report::ReportArgs`], [`crate::replay::ReplayArgs`], [`crate::train::TrainArgs`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use netanom_handles::Grace;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Override, Roles};
use crate::eval::EvalArgs;
use crate::replay::ReplayArgs;
use crate::report::ReportArgs;
use crate::roles::{ReadyFlags, Role};
use crate::synth::SynthArgs;
use crate::train::TrainArgs;

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
    Replay(ReplayArgs),
    /// Train the isolation forest and the host-profile model from captures (--pcap) or a range of a packets
    /// topic (--from, read as `replay` reads it), seeded and reproducible, each saved to its own file (--out for
    /// `--model`, --profile-out for `--profile-model`); with --supervised, a random forest on labelled captures
    /// for `--supervised-model`, printing cross-validated and held-out accuracy, precision, recall and F1; with
    /// --autoencoder, the autoencoder ensemble (KitNET) for `--autoencoder-model`.
    Train(TrainArgs),
    /// Tools for the dead-letter topic: `replay` re-delivers the alerts the router's destinations parked there.
    Dlq(crate::dlq::DlqArgs),
    /// Print alerts (JSON lines, from a file or stdin) with the original addresses in place of the pseudonyms the
    /// producer published (`[producer.pseudonymize]`), using the key from --key-file or the configuration.
    Reveal(crate::reveal::RevealArgs),
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

/// Model files for the detector, one per model kind (keys `detector.forest.model_path`,
/// `detector.profile.model_path`, `detector.supervised.model_path`, `detector.autoencoder.model_path`).
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Start from this isolation-forest model file (written by `netanom train --out` or `forest.save_path`)
    /// instead of training on the warm-up sample (key `detector.forest.model_path`).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Start from this host-profile model file (written by `netanom train --profile-out`) instead of training on
    /// the first warm-up profiles (key `detector.profile.model_path`).
    #[arg(long)]
    pub profile_model: Option<PathBuf>,
    /// Run the supervised detector with this model file, written by `netanom train --supervised` (key
    /// `detector.supervised.model_path`).
    #[arg(long)]
    pub supervised_model: Option<PathBuf>,
    /// Run the autoencoder detector with this model file, written by `netanom train --autoencoder` (keys
    /// `detector.autoencoder.model_path`, and `detector.autoencoder.enabled` set to true).
    #[arg(long)]
    pub autoencoder_model: Option<PathBuf>,
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

/// Where alerts go besides the alerts topic.
#[derive(Debug, Args)]
pub struct AlertOutputArgs {
    /// Also write every alert as a JSON line to this file (key `alert_router.alerts_out`).
    #[arg(long)]
    pub alerts_out: Option<PathBuf>,
    /// Deliver alerts to this webhook URL (repeatable; signing keys go in the config file or environment).
    #[arg(long = "webhook")]
    pub webhooks: Vec<String>,
}

/// `netanom alert-router`.
#[derive(Debug, Args)]
pub struct RouterArgs {
    #[command(flatten)]
    /// Kafka.
    pub service: ServiceArgs,
    #[command(flatten)]
    /// Outputs.
    pub output: AlertOutputArgs,
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
    #[command(flatten)]
    /// Outputs.
    pub output: AlertOutputArgs,
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

/// Sets `key` to the string `value` when the flag was given.
fn set(o: &mut Vec<Override>, key: &str, value: Option<&str>) {
    if let Some(v) = value {
        o.push((key.to_string(), s(v)));
    }
}

fn path_text(p: &std::path::Path) -> String {
    p.display().to_string()
}

impl Command {
    /// The role this command runs (for `service.name`, readiness and telemetry), or `None` for the tools
    /// (`synth`, `config`, …) that get plain logging and no telemetry.
    pub fn role(&self) -> Option<&'static str> {
        match self {
            Command::Run(_) => Some("run"),
            Command::Producer(_) => Some(Role::Producer.name()),
            Command::Detector(_) => Some(Role::Detector.name()),
            Command::AlertRouter(_) => Some(Role::AlertRouter.name()),
            _ => None,
        }
    }

    /// The roles whose configuration sections this command uses.
    pub fn roles(&self) -> Result<Roles, String> {
        let only = |producer, detector, alert_router| Roles { producer, detector, alert_router };
        Ok(match self {
            Command::Run(_) | Command::Eval(_) | Command::Report(_) => Roles::ALL,
            Command::Producer(_) => only(true, false, false),
            Command::Detector(_) | Command::Replay(_) | Command::Train(_) => only(false, true, false),
            Command::AlertRouter(_) | Command::Dlq(_) => only(false, false, true),
            Command::Synth(_) | Command::Reveal(_) | Command::Config { check: false, .. } => Roles::NONE,
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
        set(&mut o, "log.level", self.log_level.as_deref());
        set(&mut o, "log.format", self.log_format.as_deref());
        let input = |o: &mut Vec<Override>, i: &InputArgs| {
            set(o, "producer.pcap", i.pcap.as_deref().map(path_text).as_deref());
            set(o, "producer.interface", i.interface.as_deref());
            set(o, "producer.filter", i.filter.as_deref());
            set(o, "producer.speed", i.speed.as_deref());
        };
        let service = |o: &mut Vec<Override>, a: &ServiceArgs| set(o, "kafka.brokers", a.brokers.as_deref());
        // A whole capture through the pipeline as fast as possible, alerts only in the result.
        let offline = |o: &mut Vec<Override>, pcap: &PathBuf| {
            o.push(("producer.pcap".into(), s(pcap.display().to_string())));
            o.push(("producer.speed".into(), s("max")));
            o.push(("alert_router.stdout".into(), toml::Value::Boolean(false)));
        };
        let model = |o: &mut Vec<Override>, m: Option<&PathBuf>| {
            set(o, "detector.forest.model_path", m.map(PathBuf::as_path).map(path_text).as_deref());
        };
        let profiles = |o: &mut Vec<Override>, m: Option<&PathBuf>| {
            set(o, "detector.profile.model_path", m.map(PathBuf::as_path).map(path_text).as_deref());
        };
        let supervised = |o: &mut Vec<Override>, m: Option<&PathBuf>| {
            set(o, "detector.supervised.model_path", m.map(PathBuf::as_path).map(path_text).as_deref());
        };
        let autoencoder = |o: &mut Vec<Override>, m: Option<&PathBuf>| {
            if let Some(m) = m {
                set(o, "detector.autoencoder.model_path", Some(path_text(m).as_str()));
                o.push(("detector.autoencoder.enabled".into(), toml::Value::Boolean(true)));
            }
        };
        let router = |o: &mut Vec<Override>, AlertOutputArgs { alerts_out, webhooks: hooks }: &AlertOutputArgs| {
            set(o, "alert_router.alerts_out", alerts_out.as_deref().map(path_text).as_deref());
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
                router(&mut o, &r.output);
                model(&mut o, r.model.model.as_ref());
                profiles(&mut o, r.model.profile_model.as_ref());
                supervised(&mut o, r.model.supervised_model.as_ref());
                autoencoder(&mut o, r.model.autoencoder_model.as_ref());
                o.push(("alert_router.stdout".into(), toml::Value::Boolean(!r.quiet)));
            }
            Command::Producer(p) => {
                input(&mut o, &p.input);
                service(&mut o, &p.service);
            }
            Command::Detector(d) => {
                service(&mut o, &d.service);
                model(&mut o, d.model.model.as_ref());
                profiles(&mut o, d.model.profile_model.as_ref());
                supervised(&mut o, d.model.supervised_model.as_ref());
                autoencoder(&mut o, d.model.autoencoder_model.as_ref());
            }
            Command::AlertRouter(r) => {
                service(&mut o, &r.service);
                router(&mut o, &r.output);
            }
            Command::Eval(EvalArgs { pcap, model: m, profile_model, autoencoder_model, .. }) => {
                model(&mut o, m.as_ref());
                profiles(&mut o, profile_model.as_ref());
                autoencoder(&mut o, autoencoder_model.as_ref());
                offline(&mut o, pcap);
            }
            Command::Report(ReportArgs { pcap, .. }) => offline(&mut o, pcap),
            Command::Replay(ReplayArgs { brokers, .. })
            | Command::Train(TrainArgs { brokers, .. })
            | Command::Dlq(crate::dlq::DlqArgs { action: crate::dlq::DlqAction::Replay { brokers, .. } }) => {
                set(&mut o, "kafka.brokers", brokers.as_deref());
            }
            Command::Config { .. } | Command::Synth(_) | Command::Reveal(_) => {}
        }
        o
    }
}

/// Runs the command (with the configuration loaded and validated for it) until it ends or a signal stops it;
/// the roles it runs set their flags of `ready`, and a detector it runs publishes its model to `model_feed`. A
/// producer it runs reads `capture` when given (a live interface opened before the runtime started, see
/// [`open_capture`]).
pub async fn dispatch(
    command: Command,
    cfg: Config,
    capture: Option<netanom_producer::OpenedCapture>,
    ready: ReadyFlags,
    model_feed: netanom_detector::ModelFeed,
) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let hard = CancellationToken::new();
    on_signals(stop.clone(), hard.clone());
    let role = |role: Role, cfg: Config, capture: Option<netanom_producer::OpenedCapture>| {
        let grace = Grace::new(cfg.lifecycle.shutdown_grace);
        let (stop, hard, ready, model_feed) = (stop.clone(), hard.clone(), ready.clone(), model_feed.clone());
        async move {
            let work = crate::roles::command(role, cfg, capture, stop.clone(), &grace, &ready, model_feed);
            within_grace(work, &stop, &hard, &grace).await
        }
    };
    match command {
        Command::Run(_) => crate::run::command(cfg, capture, stop, hard, &ready, model_feed).await,
        Command::Producer(_) => role(Role::Producer, cfg, capture).await,
        Command::Detector(_) => role(Role::Detector, cfg, None).await,
        Command::AlertRouter(_) => role(Role::AlertRouter, cfg, None).await,
        Command::Synth(args) => crate::synth::command(&args),
        Command::Eval(args) => crate::eval::command(&args, cfg, stop, hard).await,
        Command::Report(args) => crate::report::command(&args, cfg, stop, hard).await,
        Command::Replay(args) => crate::replay::command(args, cfg).await,
        Command::Train(args) => crate::train::command(args, cfg).await,
        Command::Config { .. } => Ok(()),
        Command::Reveal(args) => crate::reveal::command(&args, &cfg),
        Command::Dlq(args) => crate::dlq::command(args, cfg).await,
    }
}

/// For `netanom run` and `netanom producer` on a live interface: opens it and drops the process's privileges
/// ([`netanom_producer::open_capture`]). Call it before any other thread starts, so that no thread keeps a
/// capability; `None` for every other command and for file input.
pub fn open_capture(command: &Command, cfg: &Config) -> Result<Option<netanom_producer::OpenedCapture>, String> {
    let live = matches!(command, Command::Run(_) | Command::Producer(_)) && cfg.producer.interface.is_some();
    if !live {
        return Ok(None);
    }
    netanom_producer::open_capture(&cfg.producer).map(Some).map_err(|e| crate::error_line(&anyhow::Error::new(e)))
}

/// How long after the end of the grace a role that has not returned is left before the process gives up on it
/// (the role's own steps end with the grace; this covers its last log lines).
const GRACE_MARGIN: Duration = Duration::from_secs(1);

/// Runs `work` (a role) to its end; once `stop` fires (the first signal), starts `grace` and gives up on `work`
/// at the second signal (`hard`) or when the grace and [`GRACE_MARGIN`] have passed, with an error saying so.
async fn within_grace(
    work: impl Future<Output = anyhow::Result<()>>,
    stop: &CancellationToken,
    hard: &CancellationToken,
    grace: &Grace,
) -> anyhow::Result<()> {
    tokio::pin!(work);
    tokio::select! {
        r = &mut work => return r,
        () = stop.cancelled() => {}
    }
    grace.start();
    tracing::info!(grace = ?grace.length(), "shutdown requested: stopping within the grace (a second signal exits at once)");
    tokio::select! {
        r = &mut work => r,
        () = hard.cancelled() => {
            anyhow::bail!("a second signal: exiting at once, without the last flush and offset commit")
        }
        () = tokio::time::sleep(grace.length() + GRACE_MARGIN) => anyhow::bail!(
            "the shutdown grace (lifecycle.shutdown_grace = {:?}) ran out before the role stopped; exiting without \
             waiting for it",
            grace.length()
        ),
    }
}

/// Cancels `token` on the first Ctrl-C or SIGTERM and `hard` on the second.
fn on_signals(token: CancellationToken, hard: CancellationToken) {
    tokio::spawn(async move {
        for t in [token, hard] {
            #[cfg(unix)]
            {
                let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return,
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            t.cancel();
        }
    });
}
