//! Probes and shutdown when the broker goes away, for each service as its own process on a tansu broker:
//! `netanom producer` (a capture replayed in real time), `netanom detector` and `netanom alert-router`. Once
//! every service has processed records and answers `/readyz` 200, the broker is killed (SIGKILL); each `/readyz`
//! must turn 503 naming Kafka, `/healthz` must stay 200 (the main loops still go round), and SIGTERM must end
//! each process within `lifecycle.shutdown_grace` plus a small margin, its log saying what it could not flush
//! or commit.

mod common;

use std::time::{Duration, Instant};

use common::{Broker, Service, free_port, http_get, read_alerts, wait_for};
use netanom_producer::synth::{Scenario, write_pcap};

/// The shutdown grace the services get here (the default is 20 s; a shorter one keeps the test short).
const GRACE: Duration = Duration::from_secs(6);
/// What a process may take beyond the grace to exit (its last log lines, process teardown).
const EXIT_MARGIN: Duration = Duration::from_secs(3);

struct Probed {
    service: Service,
    addr: String,
}

impl Probed {
    fn start(name: &str, config: &std::path::Path, args: &[&str]) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let service = Service::start_with_env(name, config, args, &[("NETANOM_TELEMETRY__LISTEN", &addr)]);
        Self { service, addr }
    }

    fn probe(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.addr, path)
    }

    fn wait_status(&self, path: &str, status: u16, timeout: Duration) -> Option<(Duration, String)> {
        let started = Instant::now();
        wait_for(timeout, || self.probe(path).filter(|(s, _)| *s == status).map(|(_, body)| (started.elapsed(), body)))
    }
}

#[test]
fn every_service_turns_unready_when_the_broker_dies_and_stops_within_its_grace() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = tmp.path().join("seed.pcap");
    write_pcap(&Scenario::default(), &seed).expect("the seed capture is written");
    let live = tmp.path().join("live.pcap");
    write_pcap(&Scenario { duration: Duration::from_secs(120), ..Scenario::default() }, &live)
        .expect("the live capture is written");

    let broker = Broker::start();
    broker.create_pipeline_topics(2, 2, 1);
    let alerts_out = tmp.path().join("alerts.jsonl");
    let config = tmp.path().join("netanom.toml");
    // Offsets are committed only at shutdown, so each consumer has some to commit when the broker is gone.
    broker.write_config(
        &config,
        r#"properties = { "auto.commit.interval.ms" = "600000" }"#,
        &alerts_out,
        &format!("\n[lifecycle]\nshutdown_grace = \"{}s\"\n\n[producer]\nspeed = \"realtime\"\n", GRACE.as_secs()),
    );

    let detector = Probed::start("detector", &config, &["detector"]);
    let router = Probed::start("alert-router", &config, &["alert-router"]);
    let seeded =
        Service::start("seed producer", &config, &["producer", "--pcap", seed.to_str().unwrap(), "--speed", "max"]);
    seeded.wait_success(Duration::from_secs(120));
    let alerted = wait_for(Duration::from_secs(120), || (!read_alerts(&alerts_out).is_empty()).then_some(()));
    assert!(
        alerted.is_some(),
        "no alert within 120 s\n--- detector\n{}\n--- router\n{}",
        detector.service.output(),
        router.service.output()
    );
    let producer = Probed::start("producer", &config, &["producer", "--pcap", live.to_str().unwrap()]);
    let services = [producer, detector, router];
    for s in &services {
        assert!(
            s.wait_status("/readyz", 200, Duration::from_secs(60)).is_some(),
            "{} never ready: {:?}\n{}",
            s.service.name,
            s.probe("/readyz"),
            s.service.output()
        );
    }

    drop(broker); // SIGKILL
    for s in &services {
        let Some((after, body)) = s.wait_status("/readyz", 503, Duration::from_secs(15)) else {
            panic!(
                "{}: /readyz still {:?} 15 s after the broker died\n{}",
                s.service.name,
                s.probe("/readyz"),
                s.service.output()
            )
        };
        assert!(body.contains("Kafka consumer") || body.contains("Kafka producer"), "{}: {body}", s.service.name);
        eprintln!(
            "{}: /readyz 503 {:.1} s after the broker died: {}",
            s.service.name,
            after.as_secs_f64(),
            body.trim()
        );
        let (status, health) = s.probe("/healthz").expect("/healthz answers");
        assert_eq!(status, 200, "{}: the main loop still goes round without a broker: {health}", s.service.name);
    }

    let started = Instant::now();
    for s in &services {
        s.service.terminate();
    }
    for s in services {
        let name = s.service.name.clone();
        let (status, out) = s.service.wait_exit(GRACE + EXIT_MARGIN + Duration::from_secs(30));
        let took = started.elapsed();
        eprintln!("{name}: exited ({status:?}) {:.1} s after SIGTERM", took.as_secs_f64());
        assert!(
            status.is_some() && took <= GRACE + EXIT_MARGIN,
            "{name} took {took:?} to stop (grace {GRACE:?}):\n{out}"
        );
        // The router commits each anomaly's offset as soon as its alerts are accounted for, so it may have
        // nothing left to commit: then its report is its last word. A detector stores an offset only once the
        // records it produced are acknowledged, so with its outputs unflushed it has no offset to commit and
        // names the unflushed records instead.
        let said = match name.as_str() {
            "producer" => out.contains("records unflushed"),
            "alert-router" => out.contains("not committed") || out.contains("alert router stopped"),
            _ => out.contains("not committed") || out.contains("records unflushed"),
        };
        assert!(said, "{name} did not say what it could not flush or commit:\n{out}");
    }
}
