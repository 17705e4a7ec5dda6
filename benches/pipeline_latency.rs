//! Packet-to-alert latency of `netanom run` at a paced packet rate ([`netanom::latency`] says what is measured):
//! writes the synthetic capture once, then alternates the variants over it (exactly-once output off and on, no
//! webhook and one black-holed webhook) for `--rounds` rounds, printing one line per run.
//!
//! `cargo bench --bench pipeline_latency -- [--rate 100000] [--seconds 20] [--scanners 300] [--rounds 2]
//! [--batch-interval 1s]` (the last sets `producer.batch.max_interval`).

use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use anyhow::Context;
use netanom::config::{self, Roles};
use netanom::latency::{Load, Percentiles, Variant, measure, scenario};

/// The command line: `--name value` pairs over the defaults (cargo's own `--bench` flag is ignored).
fn load_and_rounds() -> anyhow::Result<(Load, u32, Option<String>)> {
    let mut load = Load { packets_per_sec: 100_000.0, duration: Duration::from_secs(20), scanners: 300, seed: 7 };
    let mut rounds = 2;
    let mut batch_interval = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--bench" {
            continue;
        }
        let value = args.next().with_context(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| anyhow::anyhow!("{flag} {value:?}: {e}");
        match flag.as_str() {
            "--rate" => load.packets_per_sec = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => load.duration = Duration::from_secs(value.parse().map_err(|e| bad(&e))?),
            "--scanners" => load.scanners = value.parse().map_err(|e| bad(&e))?,
            "--rounds" => rounds = value.parse().map_err(|e| bad(&e))?,
            "--batch-interval" => batch_interval = Some(value),
            other => {
                anyhow::bail!(
                    "unknown flag {other}: expected --rate, --seconds, --scanners, --rounds or --batch-interval"
                )
            }
        }
    }
    Ok((load, rounds, batch_interval))
}

/// A webhook that accepts connections and never answers: the connections stay open until the process ends.
fn black_hole() -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind the black-hole webhook")?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    Ok(url)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (load, rounds, batch_interval) = load_and_rounds()?;
    let dir = tempfile::tempdir()?;
    let pcap = dir.path().join("latency.pcap");
    let summary = netanom_producer::synth::write_pcap(&scenario(&load), &pcap).context("cannot write the capture")?;
    let span = (summary.last_ts_ns - summary.first_ts_ns) as f64 / 1e9;
    println!(
        "capture: {} packets over {span:.1} s ({:.0} packets/s), {} scanners",
        summary.packets,
        summary.packets as f64 / span.max(1e-9),
        load.scanners
    );
    let hook = black_hole()?;
    let variants = [
        Variant { exactly_once: false, dead_webhook: false },
        Variant { exactly_once: true, dead_webhook: false },
        Variant { exactly_once: false, dead_webhook: true },
        Variant { exactly_once: true, dead_webhook: true },
    ];
    for round in 1..=rounds {
        for v in variants {
            let mut keys = v.configure(&pcap, Some(&hook));
            if let Some(i) = &batch_interval {
                keys.push(("producer.batch.max_interval".to_string(), toml::Value::String(i.clone())));
            }
            let cfg =
                config::load(None, std::iter::empty(), &keys).map_err(|e| anyhow::anyhow!("configuration: {e:?}"))?;
            cfg.validate(Roles::ALL).map_err(|e| anyhow::anyhow!("configuration: {e:?}"))?;
            let m = measure(cfg).await.with_context(|| format!("run {}", v.name()))?;
            let o = &m.outcome;
            let figures = |what: &str, p: Option<Percentiles>| {
                p.map_or_else(
                    || format!("no {what}"),
                    |p| format!("{} {what}: p50 {}, p99 {}, max {}", p.count, ms(p.p50), ms(p.p99), ms(p.max)),
                )
            };
            println!(
                "round {round}, {}: {}; {} alerts on the topic; to the anomalies topic, {}; {} packets in {:.1} s",
                v.name(),
                figures("first revisions", m.first_revisions),
                m.alerts_received,
                figures("anomalies", m.to_anomalies),
                o.producer.packets_read,
                o.elapsed.as_secs_f64()
            );
            if m.negative > 0 {
                println!("  {} first revisions received before their packet was released (clock step)", m.negative);
            }
            std::io::stdout().flush()?;
        }
    }
    Ok(())
}
