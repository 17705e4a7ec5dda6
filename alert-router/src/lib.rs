//! netanom alert router: consumes anomalies (Avro, `netanom.anomalies`), collapses repeats of one (host, kind)
//! ([`suppress`]), groups them per host across kinds into incidents reported in revisions ([`incident`]), each
//! kind's evidence times merged window by window ([`times`]),
//! publishes each alert (one revision of an incident) on the alerts topic, appends it to an optional JSON-lines
//! file and stdout, and only then stores the offsets of the anomalies it accounts for ([`offsets`]); the pipeline
//! is [`route`]. The alerts topic is the durable log the destinations deliver from, each at its own pace with its
//! own consumer group ([`destination`]): every configured webhook, signed per Standard Webhooks ([`webhook`])
//! behind the outbound-safety checks ([`outbound`]), and the syslog receiver as CEF ([`cef`], [`syslog`]), each
//! behind its circuit breaker ([`breaker`]). Each JSON output (the alerts topic, each webhook, the alerts-out
//! file) has its own [`AlertFormat`]: netanom's alert JSON (the default and the topic contract), Elastic Common
//! Schema, or an OCSF Detection Finding ([`format`](mod@format)). Undecodable anomalies, and alerts a destination
//! refused, go to the dead-letter topic (always as netanom alert JSON). Its configuration is [`config`], what a
//! run did and why it stopped [`report`].

pub mod breaker;
pub mod budget;
pub mod cef;
pub mod config;
pub mod consumer;
pub mod dedup;
pub mod destination;
pub mod digest;
pub mod dlq;
pub mod format;
pub mod incident;
pub mod metrics;
pub mod offsets;
pub mod outbound;
pub mod position;
pub mod report;
pub mod route;
pub mod suppress;
pub mod syslog;
pub mod times;
pub mod webhook;

pub use config::{ConfigError, RouterConfig};
pub use format::AlertFormat;
pub use incident::IncidentConfig;
pub use netanom_schemas::redact::Secret;
pub use position::StartFrom;
pub use report::{RouterError, RouterReport};
pub use route::run;
pub use suppress::SuppressionConfig;
pub use syslog::{SyslogConfig, SyslogFormat, TcpFraming, Transport};
pub use webhook::{RetryConfig, WebhookConfig};
