//! `netanom`: parses the command line, sets up logging and hands over to the role that was asked for.

use std::process::ExitCode;

use clap::Parser;
use netanom::cli::{Cli, Command};
use netanom::config;

/// Exit code for a configuration error (every problem is printed first).
const EXIT_CONFIG: u8 = 2;
/// Exit code for a failure while running.
const EXIT_RUNTIME: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = cli.command.roles().map_err(|e| vec![config::ConfigError::Invalid(e)]).and_then(|roles| {
        let cfg = config::load(cli.config.as_deref(), std::env::vars(), &cli.overrides())?;
        cfg.validate(roles).map(|()| (cfg, roles))
    });
    let cfg = match loaded {
        Ok((c, roles)) => {
            for w in c.warnings(roles) {
                eprintln!("warning: {w}");
            }
            c
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!("{} configuration error(s); nothing was started", errors.len());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Command::Config { check, .. } = &cli.command {
        let shown = if *check { toml::to_string_pretty(&cfg) } else { config::Config::template() };
        match shown {
            Ok(t) => {
                print!("{t}");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("error: cannot print the configuration: {e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        }
    }
    // A live interface is opened, and the privileges dropped, while this is the process's only thread: capability
    // sets belong to threads, and every thread started later inherits the cleared ones.
    let capture = match netanom::cli::open_capture(&cli.command, &cfg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    // The detector publishes its model here and the scoring API of the telemetry server reads it.
    let model_feed = netanom_detector::ModelFeed::default();
    // Telemetry (logging, OTLP, the /metrics server) for the roles; plain logging for the other commands.
    let ready = netanom::roles::ReadyFlags::default();
    let telemetry = match cli.command.role() {
        None => {
            netanom::telemetry::init_logging(&cfg.log);
            None
        }
        Some(role) => {
            let mut readiness =
                netanom::telemetry::Readiness::of_roles(ready.of(role)).with_stall_limit(cfg.lifecycle.stall_after);
            if role == "detector" && cfg.detector.forest.enabled && cfg.detector.forest.model_path.is_some() {
                readiness = readiness.needing_model(model_feed.clone());
            }
            let routes = netanom::telemetry::role_routes(role, &cfg.detector, model_feed.clone());
            match runtime.block_on(netanom::telemetry::init(&cfg.telemetry, &cfg.log, role, readiness, routes)) {
                Ok(guard) => Some(guard),
                Err(e) => {
                    eprintln!("error: {}", netanom::error_line(&e));
                    return ExitCode::from(EXIT_RUNTIME);
                }
            }
        }
    };
    let result = runtime.block_on(netanom::cli::dispatch(cli.command, cfg, capture, ready, model_feed));
    // Export the last spans and metrics while the runtime (which drives the exporters) still runs.
    if let Some(guard) = telemetry {
        guard.shutdown();
    }
    // A role stopped by its shutdown grace may leave a blocking Kafka call (a commit to an unreachable broker)
    // behind: do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", netanom::error_line(&e));
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
