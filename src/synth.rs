//! `netanom synth`: writes a seeded capture (pcap or pcapng) of the producer's synthetic traffic, either the
//! labelled attack scenario (with its `host,role` labels) or a given number of mixed packets for benchmarks.
//! The traffic itself is [`netanom_producer::synth`]; this module owns the command's flags and output.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use netanom_producer::synth;

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
    /// Attacks of the labelled scenario: `all`, `none` (benign traffic only) or a comma-separated list of
    /// syn-flood, port-scan, spoofed-syn-flood, host-sweep, brute-force, dns-tunnel, slow-exfiltration, beaconing,
    /// slow-brute-force, icmp-tunnel, udp-flood, icmp-flood, icmp-error-flood, jittered-beaconing,
    /// bulk-exfiltration.
    /// The order given does not matter.
    #[arg(long, conflicts_with = "packets", default_value_t = synth::AttackList::default())]
    pub attacks: synth::AttackList,
}

/// Runs `netanom synth`.
pub fn command(args: &SynthArgs) -> anyhow::Result<()> {
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
