//! `netanom dlq`: tools for the dead-letter topic. `netanom dlq replay [--destination NAME]` re-delivers the
//! alerts the router's destinations parked there ([`netanom_alert_router::dlq`]), with the configured
//! `[alert_router]` destinations, retry policy and topics, and prints what it did. Each run resumes where the
//! previous one stopped (a consumer group per destination); `--max-attempts` bounds how often an alert is tried.

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
        /// Delivery rounds after which an alert stays parked (the destination's own counts as one; each replay
        /// that is refused again adds one, in the record's `netanom-dlq-attempts` header).
        #[arg(long, default_value_t = netanom_alert_router::dlq::DEFAULT_MAX_ATTEMPTS,
              value_parser = clap::value_parser!(u32).range(1..))]
        max_attempts: u32,
        /// Kafka bootstrap servers (key `kafka.brokers`).
        #[arg(long)]
        brokers: Option<String>,
    },
}

/// Runs `netanom dlq`.
pub async fn command(args: DlqArgs, mut cfg: Config) -> anyhow::Result<()> {
    let brokers = crate::roles::need_brokers(&cfg, "dlq replay")?;
    crate::roles::apply_shared(&mut cfg, &brokers);
    match args.action {
        DlqAction::Replay { destination, max_attempts, .. } => {
            let report =
                netanom_alert_router::dlq::replay(&cfg.alert_router, destination.as_deref(), max_attempts).await?;
            println!(
                "dlq replay: {} parked alerts taken, {} delivered, {} refused again (parked again), {} left parked \
                 after {max_attempts} attempts, {} duplicates skipped, {} naming a destination that is not \
                 configured{}",
                report.found,
                report.delivered,
                report.parked_again,
                report.exhausted,
                report.duplicates,
                report.unknown_destination,
                if report.incomplete { "; stopped early: run it again for the rest" } else { "" }
            );
            Ok(())
        }
    }
}
