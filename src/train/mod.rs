//! `netanom train`: learns models offline and saves each to a file of its own kind for the detector. By
//! default, the isolation model (`--out`) and the host-profile model (`--profile-out`) from normal traffic, in
//! captures or a range of a packets topic ([`isolation`]); with `--autoencoder`, the autoencoder ensemble from
//! the same vectors ([`autoencoder`]); with `--supervised`, the random forest from labelled captures
//! ([`random_forest`]; not to be confused with the detector's own `supervised` module, which scores with that
//! model). The flags are [`args`].

use anyhow::Context;

use crate::config::Config;

pub mod args;
pub mod autoencoder;
pub mod isolation;
pub mod random_forest;

pub use args::TrainArgs;

/// Runs `netanom train` on a blocking thread (training is CPU-bound).
pub async fn command(args: TrainArgs, cfg: Config) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || {
        if args.supervised {
            random_forest::run(&args, &cfg)
        } else if args.autoencoder {
            autoencoder::run(&args, &cfg)
        } else {
            isolation::run(&args, &cfg)
        }
    })
    .await
    .context("training worker panicked")?
}
