//! `netanom dlq`: tools for the dead-letter topic. `netanom dlq replay [--destination NAME]` re-delivers the
//! alerts the router's destinations parked there ([`netanom_alert_router::dlq`]), with the configured
//! `[alert_router]` destinations, retry policy and topics, and prints what it did.

use clap::{Args, Subcommand};

use crate::config::Config;

/// `netanom dlq`.
#[derive(Debug, Args)]
pub struct DlqArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: DlqAction,
}

/// The dead-letter tools.
#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// Re-deliver the alerts a destination parked on the dead-letter topic (all destinations by default); an
    /// alert refused again is parked again.
    Replay {
        /// Only the alerts parked by this destination (a webhook's `name`, or `syslog`).
        #[arg(long)]
        destination: Option<String>,
        /// Kafka bootstrap servers (key `kafka.brokers`).
        #[arg(long)]
        brokers: Option<String>,
    },
}

/// Runs `netanom dlq`.
pub async fn command(args: DlqArgs, cfg: Config) -> anyhow::Result<()> {
    match args.action {
        DlqAction::Replay { destination, .. } => {
            let report = netanom_alert_router::dlq::replay(&cfg.alert_router, destination.as_deref()).await?;
            println!(
                "dlq replay: {} parked alerts found, {} delivered, {} refused again (parked again), {} naming a \
                 destination that is not configured",
                report.found, report.delivered, report.parked_again, report.unknown_destination
            );
            Ok(())
        }
    }
}
