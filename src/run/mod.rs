//! `netanom run`: producer, detector and alert router in this process, on the embedded broker
//! ([`embedded_broker`]) unless `kafka.brokers` is set. [`run_pipeline`] is the whole pipeline over one input;
//! the offline tools reach it through [`crate::offline`].
//!
//! `netanom run` on a capture file is a bounded job: the producer reads the file to its end and flushes; then
//! the detector is told to drain (consume up to the end of its input topics as they stand, flush, return);
//! then the alert router drains the anomalies topic and flushes every open suppression group. On a live
//! interface the first Ctrl-C stops the capture and drains the rest the same way; a second Ctrl-C stops
//! everything at once (producers are still flushed).

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use netanom_handles::{ReadyFlag, RoleHandles, Teardown};

use crate::config::Config;
use crate::roles::{ReadyFlags, prepare};
use crate::summary;

pub mod embedded_broker;

use embedded_broker::EmbeddedBroker;

/// What a bounded run of all three roles did.
#[derive(Debug)]
pub struct RunOutcome {
    /// The producer's report.
    pub producer: netanom_producer::ProducerReport,
    /// The detector's report.
    pub detector: netanom_detector::DetectorReport,
    /// The alert router's report.
    pub router: netanom_alert_router::RouterReport,
    /// Wall time from start to the router's return.
    pub elapsed: Duration,
}

/// The runtime handles of one run: its stop signals (`stop` ends the input, `hard` everything at once) and
/// what its roles are handed.
#[derive(Debug, Clone)]
struct Handles {
    stop: CancellationToken,
    hard: CancellationToken,
    ready: ReadyFlags,
    teardown: Teardown,
    /// Where the detectors publish their model (read by the scoring API).
    model_feed: netanom_detector::ModelFeed,
}

impl Handles {
    fn new(
        stop: CancellationToken,
        hard: CancellationToken,
        ready: ReadyFlags,
        model_feed: netanom_detector::ModelFeed,
    ) -> Self {
        Self { stop, hard, ready, teardown: Teardown::default(), model_feed }
    }

    /// The handles of one role, with its ready flag and, for a role that drains, its drain signal.
    fn role(&self, ready: &ReadyFlag, drain: Option<&CancellationToken>) -> RoleHandles {
        RoleHandles {
            drain: drain.cloned(),
            ready: ready.clone(),
            teardown: self.teardown.clone(),
            ..RoleHandles::default()
        }
    }

    /// Waits, off the reactor, until the roles' clients handed to the teardown are gone.
    async fn wait_for_teardown(&self) {
        let teardown = self.teardown.clone();
        let _ = tokio::task::spawn_blocking(move || teardown.wait()).await;
    }
}

/// Runs `netanom run` and prints its summary. The roles set their flags of `ready`; the detectors publish their
/// model to `model_feed`; the producer reads `capture` when given (else opens its input).
pub async fn command(
    cfg: Config,
    capture: Option<netanom_producer::OpenedCapture>,
    stop: CancellationToken,
    hard: CancellationToken,
    ready: &ReadyFlags,
    model_feed: netanom_detector::ModelFeed,
) -> anyhow::Result<()> {
    let handles = Handles::new(stop, hard, ready.clone(), model_feed);
    let (outcome, broker) = run_keeping_broker(cfg, capture, &handles, None).await;
    match broker {
        // The process ends next: the clients still being dropped in the background (up to ~150 ms of joins) and
        // their in-process broker are left to the exit.
        Some(broker) => broker.leave_to_exit(),
        // A real cluster: consumers leave their groups cleanly before the process exits.
        None => handles.wait_for_teardown().await,
    }
    let o = outcome?;
    println!();
    println!("== netanom run summary ==");
    println!("{}", summary::producer(&o.producer));
    println!("{}", summary::detector(&o.detector));
    println!("{}", summary::router(&o.router));
    println!("{}", summary::duration(o.elapsed, o.producer.packets_read));
    Ok(())
}

/// Runs producer, detector and alert router in this process (on an embedded broker unless `kafka.brokers` is
/// set) until the producer's input ends and the other two have drained; returns their reports. Prints nothing.
pub async fn run_pipeline(cfg: Config, stop: CancellationToken, hard: CancellationToken) -> anyhow::Result<RunOutcome> {
    run_pipeline_announcing(cfg, stop, hard, None).await
}

/// [`run_pipeline`], sending the bootstrap servers of the broker the run uses to `announce` before any role
/// starts (the embedded broker once it is up, or `kafka.brokers`): for a client that watches the run's topics
/// while it runs, as the latency benchmark (`latency` module) reads the alerts topic.
pub async fn run_pipeline_announcing(
    cfg: Config,
    stop: CancellationToken,
    hard: CancellationToken,
    announce: Option<tokio::sync::oneshot::Sender<String>>,
) -> anyhow::Result<RunOutcome> {
    // No scoring API reads the model of this run.
    let handles = Handles::new(stop, hard, ReadyFlags::default(), netanom_detector::ModelFeed::default());
    let (outcome, broker) = run_keeping_broker(cfg, None, &handles, announce).await;
    // The roles drop their Kafka clients in the background: they must be gone before their broker is.
    handles.wait_for_teardown().await;
    if let Some(broker) = broker {
        broker.stop();
    }
    outcome
}

/// [`run_pipeline`] without its teardown (announcing its broker to `announce`): returns the embedded broker (if any) while the roles' clients may
/// still be being dropped in the background (on `handles.teardown`).
async fn run_keeping_broker(
    cfg: Config,
    capture: Option<netanom_producer::OpenedCapture>,
    handles: &Handles,
    announce: Option<tokio::sync::oneshot::Sender<String>>,
) -> (anyhow::Result<RunOutcome>, Option<EmbeddedBroker>) {
    let started = Instant::now();
    let broker = if cfg.kafka.brokers.is_empty() {
        match EmbeddedBroker::start(&cfg) {
            Ok(b) => Some(b),
            Err(e) => return (Err(e), None),
        }
    } else {
        None
    };
    let brokers = broker.as_ref().map_or_else(|| cfg.kafka.brokers.clone(), EmbeddedBroker::bootstrap_servers);
    if let Some(announce) = announce {
        // The watcher may have gone; the run does not depend on it.
        let _ = announce.send(brokers.clone());
    }
    let outcome = run_roles(cfg, capture, &brokers, broker.is_some(), handles, started).await;
    (outcome, broker)
}

/// The body of [`run_pipeline`] once the broker is known (`embedded`: the in-process one).
async fn run_roles(
    mut cfg: Config,
    capture: Option<netanom_producer::OpenedCapture>,
    brokers: &str,
    embedded: bool,
    handles: &Handles,
    started: Instant,
) -> anyhow::Result<RunOutcome> {
    let (stop, hard, ready) = (&handles.stop, &handles.hard, &handles.ready);
    prepare(&mut cfg, brokers).await?;
    if embedded {
        EmbeddedBroker::adapt(&mut cfg);
    }
    // One process owns every partition: no group membership to negotiate.
    cfg.detector.static_assignment = true;
    cfg.alert_router.static_assignment = true;

    let detector_drain = CancellationToken::new();
    let router_drain = CancellationToken::new();
    let mut detector = tokio::spawn(detectors(
        &cfg,
        hard.clone(),
        handles.role(&ready.detector, Some(&detector_drain)),
        handles.model_feed.clone(),
    ));
    let router_handles = handles.role(&ready.alert_router, Some(&router_drain));
    let mut router = tokio::spawn(netanom_alert_router::run(cfg.alert_router.clone(), hard.clone(), router_handles));
    let producer_handles = handles.role(&ready.producer, None);
    let mut producer =
        tokio::spawn(netanom_producer::run_with_capture(cfg.producer.clone(), capture, stop.clone(), producer_handles));

    // The producer ends at the end of the file (or on Ctrl-C); a role that fails stops the others.
    let produced = tokio::select! {
        p = &mut producer => p,
        d = &mut detector => { hard.cancel(); anyhow::bail!("detector stopped early: {}", outcome(d)) }
        r = &mut router => { hard.cancel(); anyhow::bail!("alert router stopped early: {}", outcome(r)) }
    };
    let produced = match produced.context("producer task panicked")? {
        Ok(r) => r,
        Err(e) => {
            hard.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), async { (detector.await, router.await) }).await;
            return Err(e).context("producer failed");
        }
    };
    detector_drain.cancel();
    let detected = tokio::select! {
        d = &mut detector => d.context("detector task panicked")?.context("detector failed")?,
        r = &mut router => { hard.cancel(); anyhow::bail!("alert router stopped early: {}", outcome(r)) }
    };
    router_drain.cancel();
    let routed = router.await.context("alert router task panicked")?.context("alert router failed")?;
    let elapsed = started.elapsed();
    // Every packet published was examined, or dead-lettered by a detector as outside its partition's packet-time
    // skew (`[detector.time]`); any other shortfall is records the broker no longer held.
    if detected.packets.saturating_add(detected.packets_time_rejected) < produced.packets_published {
        anyhow::bail!(
            "the detector examined {} of the {} packets published ({} outside the packet-time skew): the broker \
             dropped records before they were consumed (the embedded broker keeps 5 MiB per partition; raise \
             kafka.embedded_partitions)",
            detected.packets,
            produced.packets_published,
            detected.packets_time_rejected
        );
    }
    Ok(RunOutcome { producer: produced, detector: detected, router: routed, elapsed })
}

/// Runs `kafka.run_detectors` detectors, each owning its share of the partitions, until all have drained;
/// returns their reports added up. Every detector gets `handles` (one drain signal, one ready flag) and publishes
/// its model to `model_feed`.
fn detectors(
    cfg: &Config,
    hard: CancellationToken,
    handles: RoleHandles,
    model_feed: netanom_detector::ModelFeed,
) -> impl std::future::Future<Output = Result<netanom_detector::DetectorReport, netanom_detector::DetectorError>> + use<>
{
    let count = match cfg.kafka.run_detectors {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()).min(4),
        n => n,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for share in netanom_detector::Share::split(count as u32) {
        let own = netanom_detector::Handles { model_feed: model_feed.clone(), share: (count > 1).then_some(share) };
        tasks.spawn(netanom_detector::run(cfg.detector.clone(), own, hard.clone(), handles.clone()));
    }
    async move {
        // In completion order, so the first failure returns at once (the caller then stops the others).
        let mut reports = Vec::new();
        while let Some(r) = tasks.join_next().await {
            reports.push(r.map_err(|e| netanom_detector::DetectorError::Worker(e.to_string()))??);
        }
        let mut total = netanom_detector::DetectorReport::default();
        for r in reports {
            total.records += r.records;
            total.batches += r.batches;
            total.packets += r.packets;
            total.packets_time_rejected += r.packets_time_rejected;
            total.destination_stats_consumed += r.destination_stats_consumed;
            total.destination_stats_produced += r.destination_stats_produced;
            for (k, n) in r.anomalies {
                *total.anomalies.entry(k).or_default() += n;
            }
            total.dead_lettered += r.dead_lettered;
            total.hosts_tracked += r.hosts_tracked;
            total.hosts_evicted += r.hosts_evicted;
            for m in r.models {
                if !total.models.contains(&m) {
                    total.models.push(m);
                }
            }
        }
        Ok(total)
    }
}

fn outcome<T, E: std::fmt::Display>(r: Result<Result<T, E>, tokio::task::JoinError>) -> String {
    match r {
        Ok(Ok(_)) => "it returned before its input was complete".into(),
        Ok(Err(e)) => e.to_string(),
        Err(e) => format!("task failed: {e}"),
    }
}
