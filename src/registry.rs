//! Confluent Schema Registry client: registers netanom's three Avro schemas (the `.avsc` files embedded in
//! `netanom_schemas::avsc`) under TopicNameStrategy subjects (`<topic>-value`) and returns the ids the registry
//! assigned. Owns only that HTTP exchange, done once at startup; the schemas crate stays free of I/O, and the
//! roles never talk to the registry themselves (they receive the ids in their configuration).
//!
//! The registry is an outbound destination like a webhook and is held to the same policy
//! (docs/security.md, "Outbound safety"): a URL naming a loopback, private or other special-purpose address is
//! refused when the configuration is checked ([`check_url`]) unless `schemas.registry_allow_private` is set, and
//! a host name is checked on every connection by the alert router's checking resolver, with redirects and
//! proxies off. Credentials and query strings in the URL are masked in every error.

use std::time::Duration;

use netanom_alert_router::outbound;
use netanom_alert_router::webhook::redact_url_or_raw;
use netanom_schemas::{SchemaIds, avsc};

/// Content type of the registry's REST API.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
/// Longest wait for one registration request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most characters of a registry's error body quoted in an error.
const MAX_BODY: usize = 300;

/// Why a schema could not be registered. Every variant names the registry URL and the subject.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The HTTP client could not be built.
    #[error("schema registry {url}: cannot create the HTTP client: {message}")]
    Client {
        /// Registry base URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The request failed (connection refused, timeout, malformed URL…).
    #[error("schema registry {url}: cannot register subject {subject}: {message}")]
    Request {
        /// Registry base URL.
        url: String,
        /// Subject, e.g. `netanom.packets-value`.
        subject: String,
        /// The client's error chain.
        message: String,
    },
    /// The registry answered with an error status.
    #[error("schema registry {url} refused subject {subject}: HTTP {status}: {body}")]
    Refused {
        /// Registry base URL.
        url: String,
        /// Subject.
        subject: String,
        /// HTTP status code.
        status: u16,
        /// Start of the response body (the registry's `message`).
        body: String,
    },
    /// The answer was not `{"id": N}`.
    #[error("schema registry {url}: subject {subject}: unexpected response {body:?}: {message}")]
    Response {
        /// Registry base URL.
        url: String,
        /// Subject.
        subject: String,
        /// Start of the response body.
        body: String,
        /// The parser's message.
        message: String,
    },
}

/// The registration body: `{"schema": "<the .avsc as a string>"}`.
#[derive(serde::Serialize)]
struct RegisterRequest<'a> {
    schema: &'a str,
}

/// The registration answer: `{"id": N}`.
#[derive(serde::Deserialize)]
struct RegisterResponse {
    id: u32,
}

/// Why a registry URL is refused when the configuration is checked. The URL is shown masked.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// Not an `http://` or `https://` URL with a host.
    #[error("schemas.registry_url must be an http:// or https:// URL with a host, got {url:?}")]
    Malformed {
        /// The URL, masked.
        url: String,
    },
    /// Its host is a restricted address and `schemas.registry_allow_private` is not set.
    #[error(
        "schemas.registry_url {url} is refused: {refused} (set schemas.registry_allow_private = true if the \
         registry really is there)"
    )]
    Restricted {
        /// The URL, masked.
        url: String,
        /// The policy's reason.
        refused: netanom_schemas::outbound::Refused,
    },
}

/// Checks a registry URL when the configuration is loaded: an `http(s)://` URL with a host, and a host that is no
/// restricted address unless `allow_private`. A host name passes here; it is checked on every connection.
pub fn check_url(url: &str, allow_private: bool) -> Result<(), UrlError> {
    let malformed = || UrlError::Malformed { url: redact_url_or_raw(url) };
    let parsed = reqwest::Url::parse(url).map_err(|_| malformed())?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(malformed());
    }
    outbound::check_url(&parsed, allow_private)
        .map_err(|refused| UrlError::Restricted { url: redact_url_or_raw(url), refused })
}

/// The topics of the three record types, whose value subjects the schemas are registered under.
#[derive(Debug, Clone, Copy)]
pub struct RecordTopics<'a> {
    /// Topic of `PacketBatch` records.
    pub packets: &'a str,
    /// Topic of `Anomaly` records.
    pub anomalies: &'a str,
    /// Topic of `DestinationStats` records.
    pub destinations: &'a str,
}

/// The TopicNameStrategy subject of the values of `topic`.
pub fn subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// Registers the three record schemas under the value subjects of their topics (packets → `PacketBatch`,
/// anomalies → `Anomaly`, destinations → `DestinationStats`) and returns the ids the registry assigned.
/// Registering a schema the subject already has returns its existing id, so every role may call this.
/// The client goes through the outbound policy: `allow_private` lifts it for this registry only.
pub async fn register_all(
    url: &str,
    allow_private: bool,
    topics: &RecordTopics<'_>,
) -> Result<SchemaIds, RegistryError> {
    let client = outbound::client_builder(allow_private)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| RegistryError::Client { url: redact_url_or_raw(url), message: chain(&e) })?;
    let packet_batch = register(&client, url, &subject(topics.packets), avsc::PACKET_BATCH_V1).await?;
    let anomaly = register(&client, url, &subject(topics.anomalies), avsc::ANOMALY_V1).await?;
    let destination_stats = register(&client, url, &subject(topics.destinations), avsc::DESTINATION_STATS_V1).await?;
    let ids = SchemaIds { packet_batch, anomaly, destination_stats };
    tracing::info!(registry = %redact_url_or_raw(url), ?ids, "schemas registered");
    Ok(ids)
}

/// `POST {url}/subjects/{subject}/versions` with `schema`; returns the id.
pub async fn register(client: &reqwest::Client, url: &str, subject: &str, schema: &str) -> Result<u32, RegistryError> {
    let endpoint = format!("{}/subjects/{subject}/versions", url.trim_end_matches('/'));
    let shown = redact_url_or_raw(url);
    let request =
        |message: String| RegistryError::Request { url: shown.clone(), subject: subject.to_string(), message };
    let body = serde_json::to_vec(&RegisterRequest { schema }).map_err(|e| request(e.to_string()))?;
    let response = client
        .post(&endpoint)
        .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
        .header(reqwest::header::ACCEPT, CONTENT_TYPE)
        .body(body)
        .send()
        .await
        .map_err(|e| request(chain(&e)))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| request(chain(&e)))?;
    let start: String = text.chars().take(MAX_BODY).collect();
    if !status.is_success() {
        return Err(RegistryError::Refused {
            url: shown,
            subject: subject.to_string(),
            status: status.as_u16(),
            body: start,
        });
    }
    let parsed: RegisterResponse = serde_json::from_str(&text).map_err(|e| RegistryError::Response {
        url: shown.clone(),
        subject: subject.to_string(),
        body: start,
        message: e.to_string(),
    })?;
    Ok(parsed.id)
}

/// An error and its sources on one line (reqwest's top-level message alone says little: "error sending request").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_urls_are_held_to_the_outbound_policy() {
        for url in [
            "http://127.0.0.1:8081",
            "http://2130706433:8081/",
            "http://[::ffff:10.0.0.5]:8081",
            "http://169.254.169.254/",
            "https://user:pw@192.168.1.9/?token=t",
        ] {
            let e = check_url(url, false).unwrap_err().to_string();
            assert!(e.contains("is refused") && e.contains("registry_allow_private"), "{url}: {e}");
            assert!(!e.contains("pw") && !e.contains("token=t"), "{url}: credentials shown: {e}");
            check_url(url, true).unwrap();
        }
        for url in ["http://schema-registry:8081", "https://registry.example/api", "http://93.184.215.14/"] {
            check_url(url, false).unwrap();
        }
        for url in ["registry:8081", "ftp://registry/", "http://", "https://user:secret@"] {
            let e = check_url(url, true).unwrap_err().to_string();
            assert!(e.contains("must be an http:// or https:// URL") && !e.contains("secret"), "{url}: {e}");
        }
    }

    #[test]
    fn subjects_follow_the_topic_name_strategy() {
        assert_eq!(subject("netanom.packets"), "netanom.packets-value");
    }

    #[test]
    fn the_request_body_carries_the_schema_as_a_string() {
        let body = serde_json::to_value(RegisterRequest { schema: avsc::ANOMALY_V1 }).unwrap();
        let schema = body["schema"].as_str().unwrap();
        assert_eq!(schema, avsc::ANOMALY_V1);
        let parsed: serde_json::Value = serde_json::from_str(schema).unwrap();
        assert_eq!(parsed["name"], "Anomaly", "{parsed}");
    }
}
