//! `netanom train --autoencoder`: the autoencoder ensemble (KitNET) from normal traffic, in captures or a
//! range of a packets topic, read exactly as for the isolation forest ([`super::isolation`]): one vector per
//! batch of at least `detector.autoencoder.min_packets` packets, the first `--samples` (default
//! `detector.autoencoder.warmup_samples`), trained with the `[detector.autoencoder]` settings and seed. The
//! model, its training and its file belong to the detector's [`netanom_detector::autoencoder`].

use netanom_detector::autoencoder::{AutoencoderError, train};

use super::args::TrainArgs;
use super::isolation::{captures_training_set, topic_training_set};
use crate::config::Config;

/// Runs `netanom train --autoencoder` (CPU-bound: call it off the async reactor).
pub fn run(args: &TrainArgs, cfg: &Config) -> anyhow::Result<()> {
    let ae = &cfg.detector.autoencoder;
    let max = args.samples.unwrap_or(ae.warmup_samples);
    // The isolation training set's reader, taking the autoencoder's batches and no host profiles.
    let mut read = cfg.clone();
    read.detector.forest.min_packets = ae.min_packets;
    read.detector.profile.enabled = false;
    let set = match args.from {
        Some(from) => topic_training_set(args, from, &read, max)?,
        None => captures_training_set(&args.pcap, &read, max)?,
    };
    let model = train(&set.vectors, &ae.train_options(args.seed.unwrap_or(ae.seed))).map_err(|e| match e {
        AutoencoderError::TooFewSamples { .. } => anyhow::anyhow!(
            "{e}: the captures hold {} batches of at least {} packets (detector.autoencoder.min_packets)",
            set.vectors.len(),
            ae.min_packets
        ),
        e => e.into(),
    })?;
    model.save(&args.out)?;
    let subsets: Vec<String> = model
        .subsets()
        .iter()
        .map(|s| {
            format!(
                "[{}]",
                s.iter().map(|&f| netanom_detector::features::FEATURE_NAMES[f]).collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    println!(
        "trained {} on {} batch vectors: {} autoencoders over {} (threshold {:.4}, training max {:.4}), wrote {} \
         (--autoencoder-model)",
        model.version(),
        set.vectors.len(),
        subsets.len(),
        subsets.join(" "),
        model.threshold(),
        model.training_max(),
        args.out.display()
    );
    Ok(())
}
