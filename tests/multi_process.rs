//! The three services as separate processes on a real broker process: a tansu broker, `netanom producer`, two
//! `netanom detector` processes in one consumer group and `netanom alert-router`, over a capture generated in
//! code (benign TCP, UDP and DNS; a SYN flood; a port scan; a spoofed-source flood; a host sweep). The alerts must
//! name every attacker and the victim of the spoofed flood and no benign host, and the webhook receiver must
//! verify every signature.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Broker, Service, WebhookReceiver, read_alerts, wait_for};
use netanom_producer::synth::{Scenario, write_pcap};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[test]
fn services_as_processes_alert_on_every_attacker_and_no_benign_host() {
    let tmp = tempfile::tempdir().unwrap();
    let capture = tmp.path().join("scenario.pcap");
    let summary = write_pcap(&Scenario::default(), &capture).expect("the scenario is written");

    let broker = Broker::start();
    broker.create_pipeline_topics(4, 4, 2);
    let hook = WebhookReceiver::start(SECRET);
    let alerts_out = tmp.path().join("alerts.jsonl");
    let config = tmp.path().join("netanom.toml");
    broker.write_config(
        &config,
        "",
        &alerts_out,
        &format!("\n[[alert_router.webhooks]]\nurl = \"{}\"\nsecret = \"{SECRET}\"\nallow_private = true\n", hook.url),
    );

    let detectors =
        [Service::start("detector-1", &config, &["detector"]), Service::start("detector-2", &config, &["detector"])];
    let router = Service::start("alert-router", &config, &["alert-router"]);
    let producer = Service::start("producer", &config, &["producer", "--pcap", capture.to_str().unwrap()]);
    producer.wait_success(Duration::from_secs(120));

    let mut expected: BTreeSet<String> = summary.attackers.iter().map(ToString::to_string).collect();
    expected.extend(summary.victims.iter().map(ToString::to_string));
    // The SYN flood's and the port scan's targets are victims too, but only the spoofed flood's victim is
    // visible from the destination side; require every attacker and the spoofed-flood victim.
    let spoofed_victim = summary.victims.last().expect("a victim").to_string();
    let required: BTreeSet<String> =
        summary.attackers.iter().map(ToString::to_string).chain([spoofed_victim.clone()]).collect();
    let found = wait_for(Duration::from_secs(180), || {
        let hosts: BTreeSet<String> =
            read_alerts(&alerts_out).iter().filter_map(|a| a["host"].as_str().map(String::from)).collect();
        required.is_subset(&hosts).then_some(hosts)
    });
    let describe = || {
        format!(
            "alerts: {:#?}\n--- detector-1\n{}\n--- detector-2\n{}\n--- router\n{}",
            read_alerts(&alerts_out),
            detectors[0].output(),
            detectors[1].output(),
            router.output()
        )
    };
    let Some(_) = found else {
        panic!("not every attacker was alerted within 180 s; wanted {required:?}\n{}", describe())
    };
    // Give late alerts (false positives included) time to arrive, then judge the full set.
    std::thread::sleep(Duration::from_secs(3));
    let alerts = read_alerts(&alerts_out);
    let benign: BTreeSet<String> = summary.benign.iter().map(ToString::to_string).collect();
    for a in &alerts {
        let host = a["host"].as_str().unwrap_or_default();
        assert!(!benign.contains(host) || expected.contains(host), "benign host {host} alerted: {a:#}\n{}", describe());
    }
    let victim_alert = alerts.iter().find(|a| a["host"] == spoofed_victim.as_str()).expect("victim alerted");
    let kinds = common::by_kind(std::slice::from_ref(victim_alert));
    assert!(kinds.iter().any(|k| k["kind"] == "victim"), "{victim_alert:#}");

    // Every alert reached the webhook with a valid signature, and nothing unsigned was accepted.
    let delivered = wait_for(Duration::from_secs(30), || {
        let got = hook.accepted.lock().unwrap().len();
        (got >= alerts.len()).then_some(got)
    });
    assert!(delivered.is_some(), "webhook got {} of {} alerts", hook.accepted.lock().unwrap().len(), alerts.len());
    assert_eq!(*hook.rejected.lock().unwrap(), 0, "a webhook signature did not verify");
    let hook_ids: BTreeSet<String> =
        hook.accepted.lock().unwrap().iter().filter_map(|d| d.body["id"].as_str().map(String::from)).collect();
    for a in &alerts {
        assert!(hook_ids.contains(a["id"].as_str().unwrap()), "alert {} never reached the webhook", a["id"]);
    }

    // The services stop cleanly on SIGTERM.
    router.stop(Duration::from_secs(30));
    for d in detectors {
        d.stop(Duration::from_secs(30));
    }
}
