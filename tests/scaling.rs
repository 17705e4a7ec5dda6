//! Scaling by partition, against a tansu broker process: the detector group grows 1 → 3 → 2 while traffic flows,
//! and the alerts equal those of one detector over the same input; and single-role services answer `/readyz`
//! 503 until their consumer group assigned them partitions, 200 after.
//!
//! The scenario (built in code) is benign traffic plus attackers whose detection needs state accumulated across
//! a rebalance: six slow port scans (2.6 new ports/s: the 24-port threshold of a 10 s fan-out window is reached
//! only ~9 s into each window), a slow host sweep (7 hosts/s against 64) and a slow spoofed-source flood
//! (~54 new sources/s against 500 per window, summed over the detectors through the destinations topic). A
//! detector that starts cold on a moved host misses the window in progress, which shows up as a lower alert
//! `count`; `detector.state.rebuild_records` restores it (see `detector/src/ownership.rs`).
//!
//! The isolation forest runs with a model file (`netanom train` on a benign capture), so every detector scores
//! with the same model as the single-detector reference instead of training on its own share of the traffic.
//! The host-profile detector is off: it closes a quiet host's window when the detector's packet clock (the
//! latest packet of any of its partitions) passes the window's end, so which packets a window holds depends on
//! how a detector's partitions interleave (fetch order, a partition being rebuilt behind the others), not only
//! on the host's own records; with it on, one of two runs differed on one profile window of a scanner. The
//! sliding 60 s sweep counts are off too (thresholds at `max_targets`): they remember a minute of a host, more
//! than the 300 records rebuilt here cover, so the scaled group reported the ping sweep once where one detector
//! reported it twice (a second report 60 s after the first).
//! Suppression windows, `flush_after`, the incident window and its hold (1 h) outlast the run, so the router
//! emits every alert (one incident per host) when it stops, and an alert's `count` is exactly the number of
//! anomalies of its host: a duplicated or lost anomaly changes it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{AlertKey, Broker, Offsets, Service, alert_keys, counter, free_port, http_get, read_alerts, wait_for};
use netanom_producer::synth::{Attack, AttackKind, SERVERS, Scenario, write_pcap};

/// Partitions of the packets and destinations topics.
const PARTITIONS: i32 = 6;
/// Packet time of the attacks, and of the capture: benign traffic goes on for three more windows, so every
/// window of an attacker or its targets is closed by later traffic in both runs (`netanom run` also scores the
/// host-profile windows still open when its input ends, services keep them open until traffic closes them).
const ATTACK_S: u64 = 80;
const DURATION_S: u64 = ATTACK_S + 30;
/// The producer's replay speed: 55 s of wall time.
const SPEED: &str = "2";
/// Records read again per moved partition: about 25 s of this scenario's traffic on one packets partition
/// (covering the 10 s windows with room to spare), fewer than a partition holds by the second rebalance.
const REBUILD_RECORDS: u64 = 300;
/// tansu holds a group join for half the session timeout: 6 s keeps a rebalance to ~3 s (45 s by default).
const KAFKA_PROPERTIES: &str = r#"
[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
"auto.commit.interval.ms" = "500"
"#;

fn scenario() -> Scenario {
    let mut attacks: Vec<Attack> = (0..6u8)
        .map(|i| Attack {
            start: Duration::from_millis(u64::from(i) * 370),
            rate_pps: 2.6,
            kind: AttackKind::PortScan {
                attacker: Ipv4Addr::new(198, 51, 100, 11 + i),
                target: SERVERS[usize::from(i) % 3],
                first_port: 1000,
                last_port: 1000 + (2.6 * ATTACK_S as f64) as u16,
            },
        })
        .collect();
    attacks.push(Attack {
        start: Duration::ZERO,
        rate_pps: 7.0,
        kind: AttackKind::HostSweep {
            attacker: Ipv4Addr::new(198, 51, 100, 77),
            first: Ipv4Addr::new(10, 0, 4, 1),
            hosts: 7 * ATTACK_S as u32,
        },
    });
    attacks.push(Attack {
        start: Duration::ZERO,
        rate_pps: 108.0,
        kind: AttackKind::SpoofedSynFlood { victim: SERVERS[3], port: 443, sources: 54 * ATTACK_S as u32 },
    });
    Scenario {
        seed: 11,
        duration: Duration::from_secs(DURATION_S),
        benign_hosts: 20,
        sessions_per_sec: 20.0,
        attacks,
        ..Scenario::default()
    }
}

/// The JSON log lines of a service (`NETANOM_LOG__FORMAT=json`) whose message is `message`.
fn events(service: &Service, message: &str) -> Vec<serde_json::Value> {
    service
        .output()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == message)
        .collect()
}

/// Partitions a detector holds now: those of its last assignment, `None` while a rebalance is in progress (its
/// last rebalance event is a revocation) or before its first assignment.
fn settled_partitions(service: &Service) -> Option<u64> {
    let mut last = None;
    for line in service.output().lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        match v["fields"]["message"].as_str() {
            Some("partitions assigned") => last = v["fields"]["partitions"].as_u64(),
            Some("partitions revoked") => last = None,
            _ => {}
        }
    }
    last
}

/// Waits until every detector of `members` holds a non-empty assignment and together they hold every partition
/// of both input topics.
fn wait_settled(members: &[&Service], what: &str) {
    let settled = wait_for(Duration::from_secs(60), || {
        let held: Option<Vec<u64>> = members.iter().map(|d| settled_partitions(d)).collect();
        held.filter(|h| h.iter().all(|n| *n > 0) && h.iter().sum::<u64>() == 2 * PARTITIONS as u64)
    });
    assert!(
        settled.is_some(),
        "the group did not settle at {what} within 60 s:\n{}",
        members.iter().map(|d| format!("--- {}\n{}", d.name, d.output())).collect::<String>()
    );
}

fn write_config(path: &Path, brokers: Option<&str>, model: &Path, alerts_out: &Path) {
    // Without brokers: `netanom run` on its embedded broker, with one detector.
    let kafka = match brokers {
        Some(b) => format!("[kafka]\nbrokers = \"{b}\"\n{KAFKA_PROPERTIES}"),
        None => "[kafka]\nrun_detectors = 1\n".to_string(),
    };
    std::fs::write(
        path,
        format!(
            r#"{kafka}
[detector.state]
rebuild_records = {REBUILD_RECORDS}

[detector.forest]
model_path = "{model}"

[detector.profile]
enabled = false

[detector.fanout]
slow_host_threshold = 4096
icmp_host_threshold = 4096

[alert_router]
alerts_out = "{out}"

[alert_router.suppression]
window = "1h"
flush_after = "1h"

[alert_router.incidents]
window = "1h"
hold = "1h"
"#,
            model = model.display(),
            out = alerts_out.display(),
        ),
    )
    .unwrap();
}

#[test]
#[ignore = "intermittent: alerts or anomaly counts differ from one detector's in some runs (issue 13, item 6); run with --ignored"]
fn detectors_scaled_1_3_2_mid_stream_alert_like_one_detector() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let capture = tmp.path().join("scaling.pcap");
    let summary = write_pcap(&scenario(), &capture).expect("the scenario is written");
    let benign = tmp.path().join("benign.pcap");
    write_pcap(&Scenario::benign(3, Duration::from_secs(60)), &benign).expect("the benign capture is written");
    let model = tmp.path().join("model.json");
    let empty = tmp.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let args = ["train", "--pcap", benign.to_str().unwrap(), "--out", model.to_str().unwrap(), "--seed", "7"];
    Service::start("train", &empty, &args).wait_success(Duration::from_secs(120));

    // The reference: one detector (`netanom run`, embedded broker) over the same capture and configuration.
    let reference_out = tmp.path().join("reference.jsonl");
    let reference_config = tmp.path().join("reference.toml");
    write_config(&reference_config, None, &model, &reference_out);
    let run_args =
        ["run", "--quiet", "--pcap", capture.to_str().unwrap(), "--alerts-out", reference_out.to_str().unwrap()];
    let reference_output =
        Service::start_with_env("reference run", &reference_config, &run_args, &[("NETANOM_LOG__FORMAT", "json")])
            .wait_success(Duration::from_secs(120));
    let expected = alert_keys(&read_alerts(&reference_out));
    let alerted: BTreeMap<&str, u64> =
        expected.iter().filter(|k| k.1 != "isolation").map(|k| (k.0.as_str(), k.3)).collect();
    let windows = ATTACK_S / 10;
    for attacker in summary.attackers.iter().map(ToString::to_string).chain([SERVERS[3].to_string()]) {
        let count = alerted.get(attacker.as_str()).copied().unwrap_or_default();
        assert!(
            count + 1 >= windows,
            "{attacker}: {count} windows of {windows} alerted by one detector: {expected:#?}"
        );
    }

    // The scaled run.
    let broker = Broker::start();
    broker.create_pipeline_topics(PARTITIONS as u32, PARTITIONS as u32, 2);
    let alerts_out = tmp.path().join("alerts.jsonl");
    let config = tmp.path().join("netanom.toml");
    write_config(&config, Some(&broker.bootstrap), &model, &alerts_out);
    let router_listen = format!("127.0.0.1:{}", free_port());
    let json = ("NETANOM_LOG__FORMAT", "json");
    let detector = |name: &str| Service::start_with_env(name, &config, &["detector"], &[json]);
    let router = Service::start_with_env(
        "alert-router",
        &config,
        &["alert-router"],
        &[json, ("NETANOM_TELEMETRY__LISTEN", router_listen.as_str())],
    );
    let d1 = detector("detector-1");
    wait_settled(&[&d1], "one detector");
    let mut producer =
        Service::start("producer", &config, &["producer", "--pcap", capture.to_str().unwrap(), "--speed", SPEED]);
    let traffic = Instant::now();
    let flowing = |producer: &mut Service, what: &str| {
        assert!(
            producer.is_running(),
            "the capture ended before {what}: rebalances took too long\n{}",
            producer.output()
        );
    };

    // 1 → 3 about 16 s of packet time in, 3 → 2 about 40 s in.
    std::thread::sleep(Duration::from_secs(8).saturating_sub(traffic.elapsed()));
    let d2 = detector("detector-2");
    let d3 = detector("detector-3");
    wait_settled(&[&d1, &d2, &d3], "three detectors");
    flowing(&mut producer, "the group settled at three detectors");
    std::thread::sleep(Duration::from_secs(20).saturating_sub(traffic.elapsed()));
    let d2_output = d2.stop(Duration::from_secs(30));
    wait_settled(&[&d1, &d3], "two detectors");
    flowing(&mut producer, "the group settled at two detectors");
    let produced = producer.wait_success(Duration::from_secs(120));

    // Every record processed: the group committed every packet batch the producer published, and the
    // destinations' committed offsets stopped moving at or past the high watermarks (tansu's can lag the last
    // records of a partition, so they only bound this check).
    let batches: i64 = produced
        .lines()
        .find_map(|l| l.strip_prefix("packets: read")?.split(" in ").nth(1)?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no batch count in the producer's summary:\n{produced}"));
    let offsets = Offsets::new(&broker.bootstrap, "netanom-detector");
    let mut destinations: (Vec<i64>, Instant) = (Vec::new(), Instant::now());
    let caught_up = wait_for(Duration::from_secs(60), || {
        let packets: i64 = offsets.committed("netanom.packets", PARTITIONS).iter().sum();
        let committed = offsets.committed("netanom.destinations", PARTITIONS);
        let high = offsets.high("netanom.destinations", PARTITIONS);
        if committed != destinations.0 {
            destinations = (committed.clone(), Instant::now());
        }
        let still = destinations.1.elapsed() >= Duration::from_millis(1500);
        (packets == batches && still && committed.iter().zip(&high).all(|(c, h)| c >= h)).then_some(())
    });
    assert!(
        caught_up.is_some(),
        "the detectors did not catch up within 60 s: packets committed {:?} of {batches} batches, destinations \
         committed {:?} (high {:?})\n--- detector-1\n{}\n--- detector-3\n{}",
        offsets.committed("netanom.packets", PARTITIONS),
        offsets.committed("netanom.destinations", PARTITIONS),
        offsets.high("netanom.destinations", PARTITIONS),
        d1.output(),
        d3.output(),
    );
    let outputs = [d1.stop(Duration::from_secs(30)), d2_output, d3.stop(Duration::from_secs(30))];
    let json_lines =
        || outputs.iter().flat_map(|o| o.lines()).filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());

    // Every anomaly the detectors produced consumed by the router, then its alerts.
    let anomalies = json_lines().filter(|v| v["fields"]["message"] == "anomaly").count();
    let router_consumed = || {
        let page = http_get(&router_listen, "/metrics")?.1;
        Some(counter(&page, "netanom_router_anomalies_consumed_total")? as usize)
    };
    let consumed = wait_for(Duration::from_secs(30), || (router_consumed()? == anomalies).then_some(()));
    if consumed.is_none() {
        // Anomaly ids logged by more than one detector (or twice by one): reprocessed records.
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for v in json_lines().filter(|v| v["fields"]["message"] == "anomaly") {
            *seen.entry(v["fields"]["id"].as_str().unwrap_or_default().to_string()).or_default() += 1;
        }
        let repeated: Vec<&String> = seen.iter().filter(|(_, n)| **n > 1).map(|(id, _)| id).collect();
        panic!(
            "the router consumed {:?} anomalies, the detectors logged {anomalies} (ids logged more than once: \
             {repeated:?})\n{}",
            router_consumed(),
            router.output()
        );
    }
    let router_output = router.stop(Duration::from_secs(30));

    // The same alerts as one detector: nothing lost, nothing counted twice, no duplicate after suppression.
    let alerts = read_alerts(&alerts_out);
    let ids: BTreeSet<&str> = alerts.iter().filter_map(|a| a["id"].as_str()).collect();
    assert_eq!(ids.len(), alerts.len(), "duplicate alert ids: {alerts:#?}");
    let got = alert_keys(&alerts);
    if got != expected {
        let missing: Vec<&AlertKey> = expected.iter().filter(|k| !got.contains(k)).collect();
        let extra: Vec<&AlertKey> = got.iter().filter(|k| !expected.contains(k)).collect();
        // The anomalies behind the differing alerts, from each run's detector logs.
        let differing: BTreeSet<(&str, &str)> =
            missing.iter().chain(&extra).map(|k| (k.0.as_str(), k.1.as_str())).collect();
        let anomalies_of = |output: &str| -> String {
            output
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["fields"]["message"] == "anomaly")
                .filter(|v| {
                    differing.contains(&(
                        v["fields"]["host"].as_str().unwrap_or(""),
                        v["fields"]["kind"].as_str().unwrap_or(""),
                    ))
                })
                .map(|v| {
                    format!(
                        "{} {} {} {}\n",
                        v["fields"]["id"], v["fields"]["host"], v["fields"]["score"], v["fields"]["reason"]
                    )
                })
                .collect()
        };
        panic!(
            "alerts differ from one detector's: missing {missing:#?}\nextra {extra:#?}\n--- their anomalies, one detector:\n{}\n\
             --- scaled:\n{}\n--- router\n{router_output}",
            anomalies_of(&reference_output),
            outputs.iter().map(|o| anomalies_of(o)).collect::<String>(),
        );
    }
    // Moved partitions were rebuilt, at least once from records before the committed offset of a partition
    // that held more than `rebuild_records` (a bounded rebuild, not a replay from the start).
    let rebuilt: Vec<(i64, i64)> = json_lines()
        .filter(|v| v["fields"]["message"] == "state of a partition that moved here rebuilt")
        .map(|v| (v["fields"]["from"].as_i64().unwrap_or(-1), v["fields"]["until"].as_i64().unwrap_or(-1)))
        .collect();
    assert!(!rebuilt.is_empty(), "no rebuild logged\n{}", outputs.join("\n---\n"));
    assert!(rebuilt.iter().any(|(from, _)| *from > 0), "every rebuild started at offset 0: {rebuilt:?}");

    eprintln!(
        "scaling test: {} alerts equal to one detector's, {} rebuilds {rebuilt:?}, {:.0} s",
        got.len(),
        rebuilt.len(),
        started.elapsed().as_secs_f64()
    );
}

/// `/readyz` of a single-role service, polled from its start: 503 first, then 200 for good once its consumer has
/// been assigned partitions (the log says so).
fn readiness_flips_on_assignment(service: &Service, listen: &str) {
    let mut seen: Vec<u16> = Vec::new();
    let ready = wait_for(Duration::from_secs(60), || {
        if let Some((status, _)) = http_get(listen, "/readyz")
            && seen.last() != Some(&status)
        {
            seen.push(status);
        }
        (seen.last() == Some(&200)).then_some(())
    });
    assert!(ready.is_some(), "{}: /readyz never answered 200 ({seen:?})\n{}", service.name, service.output());
    assert_eq!(seen, [503, 200], "{}: /readyz answers in order", service.name);
    let assigned =
        wait_for(Duration::from_secs(5), || (!events(service, "partitions assigned").is_empty()).then_some(()));
    assert!(assigned.is_some(), "{}: ready without an assignment\n{}", service.name, service.output());
    assert_eq!(http_get(listen, "/healthz").map(|r| r.0), Some(200), "{}: /healthz", service.name);
}

#[test]
fn single_role_services_answer_readyz_503_until_assigned_then_200() {
    let broker = Broker::start();
    for (topic, partitions) in
        [("netanom.packets", 2), ("netanom.destinations", 2), ("netanom.anomalies", 2), ("netanom.dead-letter", 1)]
    {
        broker.create_topic(topic, partitions);
    }
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), format!("[kafka]\nbrokers = \"{}\"\n{KAFKA_PROPERTIES}", broker.bootstrap)).unwrap();
    let listens = [format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port())];
    let services: Vec<Service> = ["detector", "alert-router"]
        .iter()
        .zip(&listens)
        .map(|(role, listen)| {
            Service::start_with_env(
                role,
                config.path(),
                &[role],
                &[("NETANOM_LOG__FORMAT", "json"), ("NETANOM_TELEMETRY__LISTEN", listen.as_str())],
            )
        })
        .collect();
    // Poll both from their start, each on its own thread so neither waits for the other's join.
    std::thread::scope(|s| {
        for (service, listen) in services.iter().zip(&listens) {
            s.spawn(move || readiness_flips_on_assignment(service, listen));
        }
    });
    for service in services {
        service.stop(Duration::from_secs(30));
    }
}
