//! Running the roles: one role against a real cluster, or `netanom run` with all three in this process.
//!
//! `netanom run` on a capture file is a bounded job: the producer reads the file to its end and flushes; then
//! the detector is told to drain (consume up to the end of its input topics as they stand, flush, return);
//! then the alert router drains the anomalies topic and flushes every open suppression group. On a live
//! interface the first Ctrl-C stops the capture and drains the rest the same way; a second Ctrl-C stops
//! everything at once (producers are still flushed).

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

use crate::cli::Command;
use crate::config::{Config, Log};
use crate::summary;

/// Sets up `tracing` on stderr (stdout carries alerts and the summary).
pub fn init_logging(log: &Log) {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if log.format == "json" { builder.json().try_init() } else { builder.try_init() };
}

/// Copies the shared `[kafka]`, `[topics]` and `[schemas]` sections into each role's configuration (the roles'
/// own sections cannot set these: they are one setting each, here).
pub fn apply_shared(cfg: &mut Config, brokers: &str) {
    let props = cfg.kafka.properties.clone();
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
    d.packets_topic = t.packets.clone();
    d.destinations_topic = t.destinations.clone();
    d.anomalies_topic = t.anomalies.clone();
    d.dead_letter_topic = t.dead_letter.clone();
    let r = &mut cfg.alert_router;
    r.brokers = brokers.to_string();
    r.kafka_properties = props;
    r.anomalies_topic = t.anomalies;
    r.alerts_topic = t.alerts;
    r.dead_letter_topic = t.dead_letter;
}

/// When `schemas.registry_url` is set, registers the schemas there and replaces `schemas.ids` with the ids the
/// registry assigned; otherwise leaves the configured ids. An unreachable or refusing registry is an error naming
/// the URL and the subject.
pub async fn resolve_schemas(cfg: &mut Config) -> anyhow::Result<()> {
    if let Some(url) = &cfg.schemas.registry_url {
        cfg.schemas.ids = crate::registry::register_all(url, &cfg.topics).await?;
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

fn need_brokers(cfg: &Config, role: &str) -> anyhow::Result<String> {
    if cfg.kafka.brokers.is_empty() {
        anyhow::bail!("netanom {role} needs Kafka: pass --brokers or set kafka.brokers (NETANOM_KAFKA__BROKERS)");
    }
    Ok(cfg.kafka.brokers.clone())
}

/// Runs the command; a detector it runs publishes its model to `model_feed`.
pub async fn dispatch(
    command: Command,
    mut cfg: Config,
    model_feed: netanom_detector::ModelFeed,
) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let hard = CancellationToken::new();
    on_signals(stop.clone(), hard.clone());
    match command {
        Command::Run(_) => run_all(cfg, model_feed, stop, hard).await,
        Command::Producer(_) => {
            let b = need_brokers(&cfg, "producer")?;
            prepare(&mut cfg, &b).await?;
            let report = netanom_producer::run(cfg.producer, stop, None).await.context("producer failed")?;
            println!("{}", summary::producer(&report));
            Ok(())
        }
        Command::Detector(_) => {
            let b = need_brokers(&cfg, "detector")?;
            prepare(&mut cfg, &b).await?;
            let handles = netanom_detector::Handles { model_feed, share: None };
            let report = netanom_detector::run(cfg.detector, handles, stop, None).await.context("detector failed")?;
            println!("{}", summary::detector(&report));
            Ok(())
        }
        Command::AlertRouter(_) => {
            let b = need_brokers(&cfg, "alert-router")?;
            prepare(&mut cfg, &b).await?;
            let report =
                netanom_alert_router::run(cfg.alert_router, stop, None).await.context("alert router failed")?;
            println!("{}", summary::router(&report));
            Ok(())
        }
        Command::Synth(args) => synth(&args),
        Command::Eval(args) => crate::evaluate::command(&args, cfg, stop, hard).await,
        Command::Report(args) => crate::report::command(&args, cfg, stop, hard).await,
        Command::Replay(args) => {
            resolve_schemas(&mut cfg).await?;
            crate::replay::run_replay(args, cfg).await
        }
        Command::Train(args) => crate::replay::run_train(args, cfg).await,
        Command::Config { .. } => Ok(()),
    }
}

fn synth(args: &crate::cli::SynthArgs) -> anyhow::Result<()> {
    use netanom_producer::synth;
    let pcapng = args.out.extension().is_some_and(|e| e.eq_ignore_ascii_case("pcapng"));
    if let Some(n) = args.packets {
        let packets = synth::mixed_packets(args.seed, n);
        if pcapng {
            synth::write_packets_pcapng(&packets, &args.out)
        } else {
            synth::write_packets_pcap(&packets, &args.out)
        }
        .with_context(|| format!("cannot write {}", args.out.display()))?;
        println!("wrote {} packets to {}", packets.len(), args.out.display());
        return Ok(());
    }
    let scenario = synth::Scenario::with_attacks(args.seed, &args.attacks);
    let summary =
        if pcapng { synth::write_pcapng(&scenario, &args.out) } else { synth::write_pcap(&scenario, &args.out) }
            .with_context(|| format!("cannot write {}", args.out.display()))?;
    let list = |v: &[std::net::IpAddr]| v.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    println!("wrote {} packets to {}", summary.packets, args.out.display());
    println!("attackers: {}", list(&summary.attackers));
    println!("victims:   {} ({} spoofed sources)", list(&summary.victims), summary.spoofed_sources);
    if let Some(path) = &args.labels {
        let mut csv = String::from("host,role\n");
        for (role, hosts) in
            [("attacker", &summary.attackers), ("victim", &summary.victims), ("benign", &summary.benign)]
        {
            for h in hosts.iter() {
                csv.push_str(&format!("{h},{role}\n"));
            }
        }
        std::fs::write(path, csv).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The embedded broker of `netanom run`, with every topic created.
fn embedded(cfg: &Config) -> anyhow::Result<MockCluster<'static, rdkafka::producer::DefaultProducerContext>> {
    let cluster = MockCluster::new(1).context("cannot start the embedded Kafka broker")?;
    let t = &cfg.topics;
    let bootstrap = cluster.bootstrap_servers();
    with_broker_wakeups(&bootstrap, || {
        for topic in [&t.packets, &t.destinations, &t.anomalies, &t.alerts, &t.dead_letter] {
            cluster
                .create_topic(topic, cfg.kafka.embedded_partitions, 1)
                .with_context(|| format!("cannot create topic {topic} on the embedded broker"))?;
        }
        Ok(cluster)
    })
}

/// How long a control operation of the embedded broker may take before its thread is woken.
const BROKER_WAKEUP_AFTER: Duration = Duration::from_millis(20);

/// Runs `setup` (control operations of the embedded broker, such as `create_topic`), waking the broker's thread
/// with a TCP connection to its listener whenever `setup` has run `BROKER_WAKEUP_AFTER` without returning.
///
/// librdkafka 2.12's mock cluster can lose the wake-up of an operation queued right after the previous one was
/// answered: its thread serves the queue, answers, and only then drains its wake-up pipe, swallowing the byte
/// the next operation wrote in between; it then sleeps out its poll timeout, 1 s, with the operation queued
/// (seen with `strace`: 1 s stalls in two runs out of three on the loaded 2-core VM, up to 2.3 s per run for five
/// topics). A connection to the listener is an event its poll loop wakes for, and every pass of that loop
/// serves the queue. The connection is closed at once; the broker logs it at debug level only.
fn with_broker_wakeups<T>(bootstrap: &str, setup: impl FnOnce() -> T) -> T {
    let done = std::sync::atomic::AtomicBool::new(false);
    let address: Option<std::net::SocketAddr> = bootstrap.split(',').next().and_then(|a| a.parse().ok());
    std::thread::scope(|scope| {
        let waker = scope.spawn(|| {
            let Some(address) = address else { return };
            loop {
                std::thread::park_timeout(BROKER_WAKEUP_AFTER);
                if done.load(std::sync::atomic::Ordering::Acquire) {
                    return;
                }
                let _ = std::net::TcpStream::connect_timeout(&address, BROKER_WAKEUP_AFTER);
            }
        });
        let result = setup();
        done.store(true, std::sync::atomic::Ordering::Release);
        waker.thread().unpark();
        result
    })
}

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

async fn run_all(
    cfg: Config,
    model_feed: netanom_detector::ModelFeed,
    stop: CancellationToken,
    hard: CancellationToken,
) -> anyhow::Result<()> {
    let (outcome, cluster) = run_keeping_broker(cfg, model_feed, stop, hard).await;
    match cluster {
        // The process ends next, with every output flushed and every offset committed: the clients still being
        // dropped in the background (up to ~150 ms of joins) and their in-process broker are left to the exit.
        // Stopping the broker before the clients are gone would make them log that it vanished.
        Some(cluster) => std::mem::forget(cluster),
        // A real cluster: consumers leave their groups cleanly before the process exits.
        None => {
            let _ = tokio::task::spawn_blocking(netanom_schemas::teardown::wait).await;
        }
    }
    let o = outcome?;
    println!();
    println!("== netanom run summary ==");
    println!("{}", summary::producer(&o.producer));
    println!("{}", summary::detector(&o.detector));
    println!("{}", summary::router(&o.router));
    let secs = o.elapsed.as_secs_f64().max(1e-9);
    println!("duration: {secs:.3} s, {:.0} packets/s end to end", o.producer.packets_read as f64 / secs);
    Ok(())
}

/// The embedded broker of a run, if it used one.
type Embedded = Option<MockCluster<'static, rdkafka::producer::DefaultProducerContext>>;

/// Runs producer, detector and alert router in this process (on an embedded broker unless `kafka.brokers` is
/// set) until the producer's input ends and the other two have drained; returns their reports. Prints nothing.
pub async fn run_pipeline(cfg: Config, stop: CancellationToken, hard: CancellationToken) -> anyhow::Result<RunOutcome> {
    // No scoring API reads the model of this run.
    let (outcome, cluster) = run_keeping_broker(cfg, netanom_detector::ModelFeed::default(), stop, hard).await;
    // The roles drop their Kafka clients in the background: they must be gone before their broker is.
    let _ = tokio::task::spawn_blocking(netanom_schemas::teardown::wait).await;
    if let Some(cluster) = cluster {
        // Stopping the broker is a control operation too (the cluster is not `Send`: stopped here).
        let bootstrap = cluster.bootstrap_servers();
        with_broker_wakeups(&bootstrap, || drop(cluster));
    }
    outcome
}

/// [`run_pipeline`] without its teardown: returns the embedded broker (if any) while the roles' clients may
/// still be being dropped in the background ([`netanom_schemas::teardown`]).
async fn run_keeping_broker(
    cfg: Config,
    model_feed: netanom_detector::ModelFeed,
    stop: CancellationToken,
    hard: CancellationToken,
) -> (anyhow::Result<RunOutcome>, Embedded) {
    let started = Instant::now();
    let cluster = if cfg.kafka.brokers.is_empty() {
        match embedded(&cfg) {
            Ok(c) => Some(c),
            Err(e) => return (Err(e), None),
        }
    } else {
        None
    };
    let brokers = cluster.as_ref().map_or_else(|| cfg.kafka.brokers.clone(), |c| c.bootstrap_servers());
    let outcome = run_roles(cfg, &brokers, cluster.is_some(), model_feed, stop, hard, started).await;
    (outcome, cluster)
}

/// The body of [`run_pipeline`] once the broker is known (`embedded`: the in-process one).
async fn run_roles(
    mut cfg: Config,
    brokers: &str,
    embedded: bool,
    model_feed: netanom_detector::ModelFeed,
    stop: CancellationToken,
    hard: CancellationToken,
    started: Instant,
) -> anyhow::Result<RunOutcome> {
    prepare(&mut cfg, brokers).await?;
    // The embedded broker lives in this process: compressing records for it only costs CPU.
    if embedded {
        cfg.producer.compression = "none".to_string();
        // An idempotent producer asks for its producer id once a broker connection is up, and when none is up
        // yet it retries every 500 ms: 0.5–1 s lost at the start of most runs (librdkafka debug `eos`). The
        // in-process broker loses no request, so there is nothing for idempotence to deduplicate. An explicit
        // `enable.idempotence` in `[kafka.properties]` still wins.
        cfg.producer.kafka_properties.entry("enable.idempotence".to_string()).or_insert_with(|| "false".to_string());
        // librdkafka's mock broker answers a fetch that finds no records only after the whole fetch wait, even
        // when records arrive meanwhile: a consumer that caught up would see the next records up to 500 ms late.
        let cap = Duration::from_millis(10);
        cfg.detector.fetch_wait = cfg.detector.fetch_wait.min(cap);
        cfg.alert_router.fetch_wait = cfg.alert_router.fetch_wait.min(cap);
    }
    // One process owns every partition: no group membership to negotiate.
    cfg.detector.static_assignment = true;
    cfg.alert_router.static_assignment = true;

    let detector_drain = CancellationToken::new();
    let router_drain = CancellationToken::new();
    let mut detector = tokio::spawn(detectors(&cfg, model_feed, hard.clone(), detector_drain.clone()));
    let mut router =
        tokio::spawn(netanom_alert_router::run(cfg.alert_router.clone(), hard.clone(), Some(router_drain.clone())));
    let mut producer = tokio::spawn(netanom_producer::run(cfg.producer.clone(), stop.clone(), None));

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
    if detected.packets < produced.packets_published {
        anyhow::bail!(
            "the detector examined {} of the {} packets published: the broker dropped records before they were \
             consumed (the embedded broker keeps 5 MiB per partition; raise kafka.embedded_partitions)",
            detected.packets,
            produced.packets_published
        );
    }
    Ok(RunOutcome { producer: produced, detector: detected, router: routed, elapsed })
}

/// Runs `kafka.run_detectors` detectors, each owning its share of the partitions, until all have drained;
/// returns their reports added up.
fn detectors(
    cfg: &Config,
    model_feed: netanom_detector::ModelFeed,
    hard: CancellationToken,
    drain: CancellationToken,
) -> impl std::future::Future<Output = Result<netanom_detector::DetectorReport, netanom_detector::DetectorError>> + use<>
{
    let count = match cfg.kafka.run_detectors {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()).min(4),
        n => n,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for share in netanom_detector::Share::split(count as u32) {
        let handles = netanom_detector::Handles { model_feed: model_feed.clone(), share: (count > 1).then_some(share) };
        tasks.spawn(netanom_detector::run(cfg.detector.clone(), handles, hard.clone(), Some(drain.clone())));
    }
    async move {
        // In completion order, so the first failure returns at once (the caller then stops the others).
        let mut reports = Vec::new();
        while let Some(r) = tasks.join_next().await {
            reports.push(r.map_err(|e| netanom_detector::DetectorError::Worker(e.to_string()))??);
        }
        let mut total = netanom_detector::DetectorReport::default();
        let mut versions: Vec<String> = Vec::new();
        for r in reports {
            total.records += r.records;
            total.batches += r.batches;
            total.packets += r.packets;
            total.destination_stats_consumed += r.destination_stats_consumed;
            total.destination_stats_produced += r.destination_stats_produced;
            for (k, n) in r.anomalies {
                *total.anomalies.entry(k).or_default() += n;
            }
            total.dead_lettered += r.dead_lettered;
            total.hosts_tracked += r.hosts_tracked;
            total.hosts_evicted += r.hosts_evicted;
            versions.extend(r.model_version.filter(|v| !versions.contains(v)));
        }
        total.model_version = (!versions.is_empty()).then(|| versions.join(", "));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A setup that cannot finish until something connects to the broker's listener finishes: the waker
    /// connects once the setup has run `BROKER_WAKEUP_AFTER`.
    #[test]
    fn a_stalled_broker_setup_gets_a_wakeup_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let connected = with_broker_wakeups(&address, || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if listener.accept().is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            false
        });
        assert!(connected, "no connection reached the listener while the setup was stalled");
    }

    #[test]
    fn embedded_broker_has_every_topic_with_the_configured_partitions() {
        let mut cfg = Config::default();
        cfg.kafka.embedded_partitions = 3;
        let cluster = embedded(&cfg).unwrap();
        let consumer: rdkafka::consumer::BaseConsumer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", cluster.bootstrap_servers()).create().unwrap();
        let metadata = rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, Duration::from_secs(10)).unwrap();
        let t = &cfg.topics;
        for topic in [&t.packets, &t.destinations, &t.anomalies, &t.alerts, &t.dead_letter] {
            let found = metadata.topics().iter().find(|m| m.name() == topic.as_str());
            assert_eq!(found.map(|m| m.partitions().len()), Some(3), "{topic}");
        }
    }
}
