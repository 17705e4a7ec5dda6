//! Packet-to-alert latency of the whole pipeline, as a user feels it: a capture replayed by the producer's
//! pacing at a set packet rate (`producer.speed` = `realtime`, the capture being generated at that rate), through
//! `netanom run`'s roles on the embedded broker, and a consumer of the alerts topic (`read_committed`, so an
//! alert written in a transaction counts only once its transaction committed) stamping each alert with the
//! system time it received it. An alert's latency is that time minus the system time at which its
//! `detected_at` packet (the packet that crossed a rule's threshold, the last packet of a scored batch, the
//! end of a closed window) was released by the pacing ([`netanom_producer::pace::PaceAnchor`]). The same
//! consumer reads the anomalies topic, timing each anomaly from its detecting packet the same way: the
//! detectors' share of the latency.
//!
//! Only first revisions count: an incident's later revisions repeat an alert already delivered. The router
//! holds an alert by design twice: a (host, kind) group is emitted `alert_router.suppression.flush_after`
//! (default 5 s) after its first anomaly so that repeats collapse into it, and an incident's first revision
//! `alert_router.incidents.hold` (default 5 s) after it opened so that kinds firing together are reported
//! together. [`Variant::configure`] sets the first to 1 ms (it must be > 0) and the second to 0, so the figure
//! is the pipeline's own latency, to which a deployment adds its holds.
//!
//! [`scenario`] is the traffic (benign sessions at the rate, scanners spread over the run); [`measure`] runs one
//! [`Variant`]; the benchmark binary (`benches/pipeline_latency.rs`) alternates the variants over one capture.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use netanom_producer::synth::{Attack, AttackKind, Scenario};
use netanom_schemas::{Alert, Anomaly};
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Override};
use crate::run::{RunOutcome, run_pipeline_announcing};

/// The traffic of a latency run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Packets per second of packet time (benign sessions make up the rate; the scanners add a little).
    pub packets_per_sec: f64,
    /// Length of the capture.
    pub duration: Duration,
    /// Port scanners, each a distinct attacker, started at even intervals from 2 s to the last second.
    pub scanners: u32,
    /// RNG seed of the capture.
    pub seed: u64,
}

/// Benign sessions of the synthetic scenario carry about this many packets each.
const PACKETS_PER_SESSION: f64 = 12.0;

/// Ports each scanner probes, at [`SCAN_RATE`]: past the fan-out rule's threshold (24 ports in 10 s) within
/// ~50 ms of its start.
const SCAN_PORTS: u16 = 100;
const SCAN_RATE: f64 = 500.0;

/// The traffic of `load`: benign sessions of 500 clients at the packet rate, and `load.scanners` port scanners
/// from distinct addresses (198.18.0.0/15, the benchmarking range) against the scenario's servers.
pub fn scenario(load: &Load) -> Scenario {
    let secs = load.duration.as_secs_f64();
    let spread = (secs - 3.0).max(0.0);
    let attacks = (0..load.scanners)
        .map(|i| {
            let at = 2.0 + spread * f64::from(i) / f64::from(load.scanners.max(1));
            let [_, _, a, b] = (i + 1).to_be_bytes();
            Attack {
                start: Duration::from_secs_f64(at),
                rate_pps: SCAN_RATE,
                kind: AttackKind::PortScan {
                    attacker: std::net::Ipv4Addr::new(198, 18, a, b),
                    target: netanom_producer::synth::SERVERS[i as usize % 4],
                    first_port: 1,
                    last_port: SCAN_PORTS,
                },
            }
        })
        .collect();
    Scenario {
        seed: load.seed,
        duration: load.duration,
        benign_hosts: 500,
        sessions_per_sec: (load.packets_per_sec / PACKETS_PER_SESSION).max(1.0),
        attacks,
        ..Scenario::default()
    }
}

/// One configuration measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    /// `kafka.exactly_once`: the detectors and the router write in Kafka transactions.
    pub exactly_once: bool,
    /// One webhook destination that accepts connections and never answers (a black hole on loopback).
    pub dead_webhook: bool,
}

impl Variant {
    /// The variant's name in the benchmark's output.
    pub fn name(&self) -> String {
        format!("exactly_once={}, webhook={}", self.exactly_once, if self.dead_webhook { "black hole" } else { "none" })
    }

    /// The configuration keys of the variant over `pcap`, paced in real time, the hold of first revisions at 0,
    /// `webhook` the black hole's URL when the variant has one.
    pub fn configure(&self, pcap: &Path, webhook: Option<&str>) -> Vec<Override> {
        let s = |v: &str| toml::Value::String(v.to_string());
        let mut o = vec![
            ("producer.pcap".to_string(), s(&pcap.display().to_string())),
            ("producer.speed".to_string(), s("realtime")),
            ("producer.progress".to_string(), toml::Value::Boolean(false)),
            ("alert_router.stdout".to_string(), toml::Value::Boolean(false)),
            ("alert_router.suppression.flush_after".to_string(), s("1ms")),
            ("alert_router.incidents.hold".to_string(), s("0s")),
            ("kafka.exactly_once".to_string(), toml::Value::Boolean(self.exactly_once)),
        ];
        if let (true, Some(url)) = (self.dead_webhook, webhook) {
            let mut t = toml::Table::new();
            t.insert("url".into(), s(url));
            t.insert("allow_private".into(), toml::Value::Boolean(true));
            o.push(("alert_router.webhooks".to_string(), toml::Value::Array(vec![toml::Value::Table(t)])));
        }
        o
    }
}

/// Nearest-rank percentiles of a set of durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    /// Samples.
    pub count: usize,
    /// Smallest.
    pub min: Duration,
    /// Median (nearest rank).
    pub p50: Duration,
    /// 99th percentile (nearest rank).
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

impl Percentiles {
    /// The percentiles of `samples` (sorted in place); `None` when empty.
    pub fn of(samples: &mut [Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let rank = |p: f64| {
            // Nearest rank: the smallest sample with at least p of the samples at or below it.
            let r = (p * samples.len() as f64).ceil() as usize;
            samples[r.clamp(1, samples.len()) - 1]
        };
        Some(Self {
            count: samples.len(),
            min: samples[0],
            p50: rank(0.5),
            p99: rank(0.99),
            max: samples[samples.len() - 1],
        })
    }
}

/// What one run measured.
#[derive(Debug)]
pub struct Measurement {
    /// Latencies of the first revisions received.
    pub first_revisions: Option<Percentiles>,
    /// Latencies of the first anomaly of each host received on the anomalies topic, each from its detecting
    /// packet (`Anomaly::detected_at_ns`, which an alert's `detected_at` is): the detectors' share of the first
    /// revisions'.
    pub to_anomalies: Option<Percentiles>,
    /// Alerts received on the alerts topic (every revision).
    pub alerts_received: u64,
    /// First revisions and anomalies received before their detecting packet was released (a clock step): not
    /// counted in the percentiles.
    pub negative: u64,
    /// The roles' reports.
    pub outcome: RunOutcome,
}

/// The system time at which a paced replay released the packet stamped `ts_ns` (speed 1).
fn released_at(anchor: &netanom_producer::pace::PaceAnchor, ts_ns: i64) -> Option<SystemTime> {
    let offset = ts_ns.checked_sub(anchor.ts_ns)?;
    if offset >= 0 {
        anchor.released.checked_add(Duration::from_nanos(offset as u64))
    } else {
        anchor.released.checked_sub(Duration::from_nanos(offset.unsigned_abs()))
    }
}

/// One record a watcher received: its topic, when, and its payload.
struct Received {
    topic: String,
    at: SystemTime,
    payload: Vec<u8>,
}

/// Reads every partition of `topics` on `brokers` from the start (`read_committed`) until `stop`, returning each
/// record with the system time it was received.
fn watch(brokers: &str, topics: &[String], partitions: i32, stop: &AtomicBool) -> anyhow::Result<Vec<Received>> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "netanom-latency-watch")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        // The embedded broker answers an empty fetch only after the whole wait.
        .set("fetch.wait.max.ms", "5")
        .create()
        .context("cannot create the watching consumer")?;
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .with_context(|| format!("cannot assign topic {topic}"))?;
        }
    }
    consumer.assign(&tpl).context("cannot assign the watched topics")?;
    let mut received = Vec::new();
    while !stop.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(5)) {
            Some(Ok(m)) => received.push(Received {
                topic: m.topic().to_string(),
                at: SystemTime::now(),
                payload: m.payload().unwrap_or_default().to_vec(),
            }),
            Some(Err(e)) => tracing::debug!(error = %e, "watching consumer"),
            None => {}
        }
    }
    Ok(received)
}

/// Runs the pipeline configured by `cfg` (which must replay a capture in real time on the embedded broker) while
/// a consumer watches the alerts topic, and returns the latencies of the first revisions.
pub async fn measure(cfg: Config) -> anyhow::Result<Measurement> {
    let real_time = match cfg.producer.speed {
        netanom_producer::Speed::Realtime => true,
        netanom_producer::Speed::Factor(f) => f == 1.0,
        netanom_producer::Speed::Max => false,
    };
    if !real_time {
        anyhow::bail!("the latency measure needs producer.speed = realtime, got {:?}", cfg.producer.speed);
    }
    let topics = [cfg.topics.anomalies.clone(), cfg.topics.alerts.clone()];
    let alerts_topic = cfg.topics.alerts.clone();
    let ids = cfg.schemas.ids;
    let partitions = cfg.kafka.embedded_partitions;
    let (announce, announced) = tokio::sync::oneshot::channel::<String>();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || {
            let brokers = announced.blocking_recv().context("the run ended before its broker started")?;
            watch(&brokers, &topics, partitions, &stop)
        })
    };
    let run = run_pipeline_announcing(cfg, CancellationToken::new(), CancellationToken::new(), Some(announce)).await;
    // Alerts written at the end of the run reach the watcher within a few fetches.
    let linger = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Release);
    };
    let (received, ()) = tokio::join!(watcher, linger);
    let outcome = run?;
    let received = received.context("the watching consumer panicked")??;
    let anchor = outcome.producer.paced_from.context("the producer reported no pacing anchor")?;
    let since = |at: SystemTime, ts_ns: i64| -> anyhow::Result<Option<Duration>> {
        let released = released_at(&anchor, ts_ns).context("a packet time out of range")?;
        Ok(at.duration_since(released).ok())
    };
    let (mut alerts, mut anomalies, mut alerts_received, mut negative) = (Vec::new(), Vec::new(), 0, 0);
    let mut hosts = std::collections::HashSet::new();
    for r in &received {
        let latency = if r.topic == alerts_topic {
            alerts_received += 1;
            let alert: Alert = serde_json::from_slice(&r.payload).context("an alerts-topic record is not an alert")?;
            if alert.revision != 1 {
                continue;
            }
            let detected = alert.detected_at.unwrap_or(alert.first_seen);
            let ts_ns = i64::try_from(detected.unix_timestamp_nanos()).context("detected_at out of range")?;
            let latency = since(r.at, ts_ns)?;
            alerts.extend(latency);
            latency
        } else {
            let anomaly = Anomaly::decode(&r.payload, &ids).context("an anomalies-topic record is not an anomaly")?;
            // The first anomaly of each host, as the first revision is its host's first alert.
            let detected_ns = anomaly.detected_at_ns();
            if !hosts.insert(anomaly.host) {
                continue;
            }
            let latency = since(r.at, detected_ns)?;
            anomalies.extend(latency);
            latency
        };
        if latency.is_none() {
            negative += 1;
        }
    }
    Ok(Measurement {
        first_revisions: Percentiles::of(&mut alerts),
        to_anomalies: Percentiles::of(&mut anomalies),
        alerts_received,
        negative,
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(Percentiles::of(&mut []), None);
        let one = Percentiles::of(&mut ms(&[7])).unwrap();
        assert_eq!((one.min, one.p50, one.p99, one.max), (ms(&[7])[0], ms(&[7])[0], ms(&[7])[0], ms(&[7])[0]));
        // 1..=200 shuffled: the median is the 100th, the 99th percentile the 198th.
        let mut v: Vec<u64> = (1..=200).collect();
        v.reverse();
        v.swap(3, 150);
        let p = Percentiles::of(&mut ms(&v)).unwrap();
        assert_eq!(p.count, 200);
        assert_eq!((p.min, p.p50, p.p99, p.max), (ms(&[1])[0], ms(&[100])[0], ms(&[198])[0], ms(&[200])[0]));
        // 10 samples: p99 is the largest, p50 the 5th.
        let p = Percentiles::of(&mut ms(&[10, 9, 8, 7, 6, 5, 4, 3, 2, 1])).unwrap();
        assert_eq!((p.p50, p.p99), (ms(&[5])[0], ms(&[10])[0]));
    }

    #[test]
    fn release_times_follow_the_anchor() {
        let anchor = netanom_producer::pace::PaceAnchor {
            ts_ns: 5_000_000_000,
            released: SystemTime::UNIX_EPOCH + Duration::from_secs(100),
        };
        assert_eq!(released_at(&anchor, 5_250_000_000), Some(SystemTime::UNIX_EPOCH + Duration::from_millis(100_250)));
        assert_eq!(released_at(&anchor, 4_000_000_000), Some(SystemTime::UNIX_EPOCH + Duration::from_secs(99)));
        assert_eq!(released_at(&anchor, i64::MIN), None);
    }

    /// The whole measure on a small load, without judging the timings: every scanner is alerted and timed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_run_times_every_scanner() {
        let load = Load { packets_per_sec: 2_000.0, duration: Duration::from_secs(4), scanners: 5, seed: 3 };
        let dir = tempfile::tempdir().unwrap();
        let pcap = dir.path().join("small.pcap");
        netanom_producer::synth::write_pcap(&scenario(&load), &pcap).unwrap();
        let variant = Variant { exactly_once: false, dead_webhook: false };
        let cfg = crate::config::load(None, std::iter::empty(), &variant.configure(&pcap, None)).unwrap();
        let m = measure(cfg).await.unwrap();
        let alerts = m.first_revisions.expect("first revisions");
        let anomalies = m.to_anomalies.expect("anomalies");
        assert!(alerts.count >= 5, "{alerts:?}");
        assert!(anomalies.count >= alerts.count, "{anomalies:?} {alerts:?}");
        assert!(m.alerts_received >= alerts.count as u64);
        assert_eq!(m.negative, 0);
        assert!(alerts.min <= alerts.p50 && alerts.p50 <= alerts.p99 && alerts.p99 <= alerts.max);
        assert!(m.outcome.producer.paced_from.is_some());
        // A replay at full speed has no pacing to measure from.
        let mut fast = crate::config::load(None, std::iter::empty(), &variant.configure(&pcap, None)).unwrap();
        fast.producer.speed = netanom_producer::Speed::Max;
        assert!(measure(fast).await.unwrap_err().to_string().contains("producer.speed"));
    }

    #[test]
    fn the_scenario_spreads_distinct_scanners_over_the_run() {
        let load = Load { packets_per_sec: 1000.0, duration: Duration::from_secs(10), scanners: 300, seed: 1 };
        let s = scenario(&load);
        assert_eq!(s.attacks.len(), 300);
        let attackers: std::collections::HashSet<_> = s
            .attacks
            .iter()
            .map(|a| match a.kind {
                AttackKind::PortScan { attacker, .. } => attacker,
                _ => unreachable!("only scans"),
            })
            .collect();
        assert_eq!(attackers.len(), 300);
        assert!(s.attacks.iter().all(|a| a.start >= Duration::from_secs(2) && a.start < load.duration));
    }
}
