//! One role against a real Kafka cluster (`netanom producer | detector | alert-router`), and the preparation
//! every role's configuration gets before it starts, whoever runs it (these commands, `netanom run`,
//! `netanom replay`): schema ids from the registry when one is configured, then the shared `[kafka]`,
//! `[topics]` and `[schemas]` sections copied into each role's own section.

use anyhow::Context;
use netanom_handles::{Grace, ReadyFlag, RoleHandles};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::summary;

/// A role that runs on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `netanom producer`.
    Producer,
    /// `netanom detector`.
    Detector,
    /// `netanom alert-router`.
    AlertRouter,
}

impl Role {
    /// The role's command name (also its `service.name` suffix).
    pub fn name(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Detector => "detector",
            Role::AlertRouter => "alert-router",
        }
    }
}

/// The ready flags of the roles a process runs (one shared by every detector of `netanom run`), read by its
/// `/readyz`.
#[derive(Debug, Clone, Default)]
pub struct ReadyFlags {
    /// The producer's.
    pub producer: ReadyFlag,
    /// The detectors'.
    pub detector: ReadyFlag,
    /// The alert router's.
    pub alert_router: ReadyFlag,
}

impl ReadyFlags {
    /// The flags (named) the probes of the role named `role` watch: its own, or for `run` all three.
    pub fn of(&self, role: &str) -> Vec<(&'static str, ReadyFlag)> {
        let (p, d, r) = (
            ("producer", self.producer.clone()),
            ("detector", self.detector.clone()),
            ("alert-router", self.alert_router.clone()),
        );
        match role {
            "producer" => vec![p],
            "detector" => vec![d],
            "alert-router" => vec![r],
            _ => vec![p, d, r],
        }
    }
}

/// Runs `role` against `kafka.brokers` until its input ends or `stop`, then prints its summary. The role sets
/// its flag of `ready` and takes the timeouts of its last flush and commit from `grace` once `stop` fires.
/// A detector publishes its model to `model_feed`; a producer reads `capture` when given (else opens its input).
pub async fn command(
    role: Role,
    mut cfg: Config,
    capture: Option<netanom_producer::OpenedCapture>,
    stop: CancellationToken,
    grace: &Grace,
    ready: &ReadyFlags,
    model_feed: netanom_detector::ModelFeed,
) -> anyhow::Result<()> {
    let brokers = need_brokers(&cfg, role.name())?;
    prepare(&mut cfg, &brokers).await?;
    let handles =
        |ready: &ReadyFlag| RoleHandles { ready: ready.clone(), grace: grace.clone(), ..RoleHandles::default() };
    let line = match role {
        Role::Producer => summary::producer(
            &netanom_producer::run_with_capture(cfg.producer, capture, stop, handles(&ready.producer))
                .await
                .context("producer failed")?,
        ),
        Role::Detector => summary::detector(
            &netanom_detector::run(
                cfg.detector,
                netanom_detector::Handles { model_feed, share: None },
                stop,
                handles(&ready.detector),
            )
            .await
            .context("detector failed")?,
        ),
        Role::AlertRouter => summary::router(
            &netanom_alert_router::run(cfg.alert_router, stop, handles(&ready.alert_router))
                .await
                .context("alert router failed")?,
        ),
    };
    println!("{line}");
    Ok(())
}

/// `kafka.brokers`, which `netanom <command>` requires.
pub fn need_brokers(cfg: &Config, command: &str) -> anyhow::Result<String> {
    if cfg.kafka.brokers.is_empty() {
        anyhow::bail!("netanom {command} needs Kafka: pass --brokers or set kafka.brokers (NETANOM_KAFKA__BROKERS)");
    }
    Ok(cfg.kafka.brokers.clone())
}

/// Copies the shared `[kafka]`, `[topics]` and `[schemas]` sections into each role's configuration (the roles'
/// own sections cannot set these: they are one setting each, here).
pub fn apply_shared(cfg: &mut Config, brokers: &str) {
    let props = cfg.kafka.properties.clone();
    let exactly_once = cfg.kafka.exactly_once;
    let t = cfg.topics.clone();
    let ids = cfg.schemas.ids;
    cfg.producer.schema_ids = ids;
    cfg.detector.schema_ids = ids;
    cfg.alert_router.schema_ids = ids;
    let p = &mut cfg.producer;
    p.brokers = brokers.to_string();
    p.kafka_properties = props.clone();
    p.topic = t.packets.clone();
    let d = &mut cfg.detector;
    d.brokers = brokers.to_string();
    d.kafka_properties = props.clone();
    d.exactly_once = exactly_once;
    d.packets_topic = t.packets.clone();
    d.destinations_topic = t.destinations.clone();
    d.anomalies_topic = t.anomalies.clone();
    d.dead_letter_topic = t.dead_letter.clone();
    d.models_topic = t.models.clone();
    let r = &mut cfg.alert_router;
    r.brokers = brokers.to_string();
    r.kafka_properties = props;
    r.exactly_once = exactly_once;
    r.anomalies_topic = t.anomalies;
    r.alerts_topic = t.alerts;
    r.dead_letter_topic = t.dead_letter;
}

/// When `schemas.registry_url` is set, registers the schemas there and replaces `schemas.ids` with the ids the
/// registry assigned; otherwise leaves the configured ids. An unreachable or refusing registry is an error naming
/// the URL and the subject.
pub async fn resolve_schemas(cfg: &mut Config) -> anyhow::Result<()> {
    if let Some(url) = &cfg.schemas.registry_url {
        let t = &cfg.topics;
        let topics = crate::registry::RecordTopics {
            packets: &t.packets,
            anomalies: &t.anomalies,
            destinations: &t.destinations,
        };
        cfg.schemas.ids = crate::registry::register_all(url, cfg.schemas.registry_allow_private, &topics).await?;
    }
    Ok(())
}

/// Prepares every role's configuration before any role starts: the schema ids (from the registry when one is
/// configured), then the shared sections ([`apply_shared`]).
pub async fn prepare(cfg: &mut Config, brokers: &str) -> anyhow::Result<()> {
    resolve_schemas(cfg).await?;
    apply_shared(cfg, brokers);
    Ok(())
}
