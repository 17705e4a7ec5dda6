//! Webhook delivery: POSTs an alert to each configured URL as JSON in that webhook's [`AlertFormat`], signed per
//! the Standard Webhooks specification (<https://www.standardwebhooks.com/>), with a per-request timeout, retries with exponential backoff and full
//! jitter, and bounded concurrency. Owns the HTTP client and the signing keys; it decides nothing about what is
//! sent (that is `route`) and never logs a secret.
//!
//! Headers: `webhook-id` (the alert id, the same on every attempt so receivers can deduplicate),
//! `webhook-timestamp` (unix seconds of the attempt) and `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `"{id}.{timestamp}.{body}"`, keyed with the base64-decoded part of a `whsec_...` secret.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::format::AlertFormat;

/// Prefix of a Standard Webhooks signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A secret string that prints as `***` in `Debug` and `Display`. Use [`Secret::expose`] to read it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Serialises as `***`: printing a configuration never reveals the key.
impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// One webhook endpoint (`[[alert_router.webhooks]]`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL to POST alerts to (https needs the `rustls-tls` feature).
    pub url: String,
    /// Standard Webhooks signing secret, `whsec_<base64 key>`; without one, requests are not signed.
    pub secret: Option<Secret>,
    /// Timeout of one request, connection included. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Body format: `netanom` (the alert JSON), `ecs` or `ocsf` (see [`crate::format`]). Default `netanom`.
    pub format: AlertFormat,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self { url: String::new(), secret: None, timeout: Duration::from_secs(5), format: AlertFormat::Netanom }
    }
}

/// Retry policy of webhook deliveries (`[alert_router.retry]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Backoff cap before the first retry; doubles per retry. Default 200 ms.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Upper bound of any backoff. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Attempts per (alert, webhook), the first included. Default 5.
    pub max_attempts: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { initial_backoff: Duration::from_millis(200), max_backoff: Duration::from_secs(10), max_attempts: 5 }
    }
}

/// Why a signing secret is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Missing `whsec_` prefix.
    #[error("does not start with \"whsec_\"")]
    Prefix,
    /// The key part is not base64.
    #[error("key after \"whsec_\" is not valid base64")]
    Base64,
    /// The key is empty.
    #[error("key after \"whsec_\" is empty")]
    Empty,
}

/// Decodes a `whsec_<base64>` secret into its HMAC key.
pub fn decode_secret(secret: &Secret) -> Result<Vec<u8>, SecretError> {
    let b64 = secret.expose().strip_prefix(SECRET_PREFIX).ok_or(SecretError::Prefix)?;
    let key = BASE64.decode(b64).map_err(|_| SecretError::Base64)?;
    if key.is_empty() {
        return Err(SecretError::Empty);
    }
    Ok(key)
}

/// The `webhook-signature` value `v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// Checks a `webhook-signature` header (space-separated list of `v1,<sig>`) in constant time per candidate.
/// For receivers and tests.
pub fn verify(key: &[u8], id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    header.split(' ').filter_map(|s| s.strip_prefix("v1,")).any(|sig| {
        let Ok(sig) = BASE64.decode(sig) else { return false };
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(&sig).is_ok()
    })
}

/// Full-jitter backoff before retry number `retry` (0 = before the second attempt): uniform in
/// `[0, min(max_backoff, initial_backoff * 2^retry)]`.
pub fn backoff_delay(retry: &RetryConfig, retry_number: u32, rng: &mut impl Rng) -> Duration {
    let factor = 1u32.checked_shl(retry_number.min(31)).unwrap_or(u32::MAX);
    let cap = retry.initial_backoff.saturating_mul(factor).min(retry.max_backoff);
    let cap_ns = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.gen_range(0..=cap_ns))
}

/// Result of delivering one alert to one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx response.
    Delivered {
        /// Attempts used.
        attempts: u32,
    },
    /// Gave up.
    Failed {
        /// Attempts used.
        attempts: u32,
        /// The last error.
        reason: String,
    },
}

/// Outcome of one (alert, webhook) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The webhook URL, without query string or password.
    pub url: String,
    /// What happened.
    pub outcome: Outcome,
}

/// Why the webhook client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Bad URL.
    #[error("webhook {index} url {url:?} is invalid: {reason}")]
    Url {
        /// Index in the configuration.
        index: usize,
        /// The URL (redacted).
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// Bad secret.
    #[error("webhook {index} secret: {source}")]
    Secret {
        /// Index in the configuration.
        index: usize,
        /// What is wrong.
        source: SecretError,
    },
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Removes the password and query string of `url` for logs and dead-letter reasons (query strings often carry
/// tokens).
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            if u.query().is_some() {
                u.set_query(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<invalid url>".to_string(),
    }
}

/// Like [`redact_url`], but returns `url` unchanged when it does not parse (so a typo can be shown).
pub fn redact_url_or_raw(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(_) => redact_url(url),
        Err(_) => url.to_string(),
    }
}

#[derive(Debug)]
struct Hook {
    url: reqwest::Url,
    shown: String,
    key: Option<Vec<u8>>,
    timeout: Duration,
    format: AlertFormat,
}

/// Sends alerts to every configured webhook. Cheap to clone-share via `Arc`.
#[derive(Debug)]
pub struct WebhookSender {
    client: reqwest::Client,
    hooks: Vec<Hook>,
    retry: RetryConfig,
    permits: Arc<Semaphore>,
}

/// What the retry loop does with an attempt's result.
enum Attempt {
    Ok,
    Retry(String),
    GiveUp(String),
}

impl WebhookSender {
    /// Builds the client for `hooks`, with `max_concurrency` requests in flight at most over all alerts.
    pub fn new(hooks: &[WebhookConfig], retry: RetryConfig, max_concurrency: usize) -> Result<Self, WebhookError> {
        let mut prepared = Vec::with_capacity(hooks.len());
        for (index, h) in hooks.iter().enumerate() {
            let shown = redact_url(&h.url);
            let url = reqwest::Url::parse(&h.url).map_err(|e| WebhookError::Url {
                index,
                url: shown.clone(),
                reason: e.to_string(),
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(WebhookError::Url { index, url: shown, reason: "scheme is not http(s)".into() });
            }
            let key = h
                .secret
                .as_ref()
                .map(decode_secret)
                .transpose()
                .map_err(|source| WebhookError::Secret { index, source })?;
            prepared.push(Hook { url, shown, key, timeout: h.timeout, format: h.format });
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("netanom-alert-router/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, hooks: prepared, retry, permits: Arc::new(Semaphore::new(max_concurrency.max(1))) })
    }

    /// Number of webhooks.
    pub fn len(&self) -> usize {
        self.hooks.len()
    }

    /// True when no webhook is configured.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// Delivers the same `body` with `webhook-id: id` to every webhook concurrently, whatever their `format`,
    /// retrying per the policy. One [`Delivery`] per webhook, in configuration order.
    pub async fn deliver(&self, id: &str, body: &[u8]) -> Vec<Delivery> {
        self.deliver_with(id, |_| body).await
    }

    /// Like [`WebhookSender::deliver`], with each webhook's body `body(format)` for its configured format.
    pub async fn deliver_with<'a>(&self, id: &str, body: impl Fn(AlertFormat) -> &'a [u8]) -> Vec<Delivery> {
        futures::future::join_all(self.hooks.iter().map(|h| self.deliver_one(h, id, body(h.format)))).await
    }

    /// The body format of each webhook, in configuration order.
    pub fn formats(&self) -> impl Iterator<Item = AlertFormat> + '_ {
        self.hooks.iter().map(|h| h.format)
    }

    async fn deliver_one(&self, hook: &Hook, id: &str, body: &[u8]) -> Delivery {
        let max_attempts = self.retry.max_attempts.max(1);
        let mut attempts = 0;
        let reason = loop {
            attempts += 1;
            let result = {
                // The semaphore is never closed; if it were, sending unthrottled beats losing the alert.
                let _permit = self.permits.acquire().await.ok();
                self.attempt(hook, id, body).await
            };
            match result {
                Attempt::Ok => {
                    return Delivery { url: hook.shown.clone(), outcome: Outcome::Delivered { attempts } };
                }
                Attempt::GiveUp(reason) => break reason,
                Attempt::Retry(reason) if attempts >= max_attempts => break reason,
                Attempt::Retry(reason) => {
                    let delay = backoff_delay(&self.retry, attempts - 1, &mut rand::thread_rng());
                    tracing::debug!(url = %hook.shown, id, attempts, ?delay, %reason, "webhook attempt failed, retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        };
        tracing::warn!(url = %hook.shown, id, attempts, %reason, "webhook delivery failed");
        Delivery { url: hook.shown.clone(), outcome: Outcome::Failed { attempts, reason } }
    }

    async fn attempt(&self, hook: &Hook, id: &str, body: &[u8]) -> Attempt {
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let mut request = self
            .client
            .post(hook.url.clone())
            .timeout(hook.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .body(body.to_vec());
        if let Some(key) = &hook.key {
            request = request.header("webhook-signature", sign(key, id, timestamp, body));
        }
        // W3C trace context of the alert being delivered (none when no tracer provider is installed).
        for (name, value) in crate::metrics::carrier(&opentelemetry::Context::current()).0 {
            request = request.header(name, value);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    Attempt::Ok
                } else if status.as_u16() == 429 || status.is_server_error() {
                    Attempt::Retry(format!("HTTP {status}"))
                } else {
                    Attempt::GiveUp(format!("HTTP {status}"))
                }
            }
            Err(e) if e.is_builder() => Attempt::GiveUp(format!("invalid request: {e}")),
            Err(e) if e.is_timeout() => Attempt::Retry(format!("timed out after {:?}", hook.timeout)),
            Err(e) if e.is_connect() => Attempt::Retry(format!("connect error: {}", error_chain(&e))),
            Err(e) => Attempt::Retry(format!("transport error: {}", error_chain(&e))),
        }
    }
}

/// `e` and its sources, joined by `: `.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn standard_webhooks_test_vector() {
        let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let key = decode_secret(&secret).unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, &format!("v1,bm9wZQ== {sig}")));
        assert!(!verify(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, body, &sig));
        assert!(!verify(&key, "msg_other", 1614265330, body, &sig));
    }

    #[test]
    fn secrets_are_masked_and_validated() {
        let s = Secret::new("whsec_c2VjcmV0");
        assert_eq!(format!("{s}"), "***");
        assert!(!format!("{s:?}").contains("c2VjcmV0"));
        let cfg = WebhookConfig {
            url: "http://x".into(),
            secret: Some(s),
            timeout: Duration::from_secs(1),
            format: AlertFormat::Ecs,
        };
        assert!(!format!("{cfg:?}").contains("c2VjcmV0"));
        assert_eq!(decode_secret(&Secret::new("c2VjcmV0")), Err(SecretError::Prefix));
        assert_eq!(decode_secret(&Secret::new("whsec_!!!")), Err(SecretError::Base64));
        assert_eq!(decode_secret(&Secret::new("whsec_")), Err(SecretError::Empty));
    }

    #[test]
    fn backoff_is_full_jitter_within_exponential_cap() {
        let retry = RetryConfig::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for n in 0..40u32 {
            let cap = Duration::from_millis(200).saturating_mul(1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX));
            let cap = cap.min(Duration::from_secs(10));
            let mut max_seen = Duration::ZERO;
            let mut min_seen = Duration::MAX;
            for _ in 0..500 {
                let d = backoff_delay(&retry, n, &mut rng);
                assert!(d <= cap, "retry {n}: {d:?} > {cap:?}");
                max_seen = max_seen.max(d);
                min_seen = min_seen.min(d);
            }
            // Jitter spreads over the whole range.
            assert!(max_seen > cap.mul_f64(0.9), "retry {n}: max {max_seen:?} of cap {cap:?}");
            assert!(min_seen < cap.mul_f64(0.1), "retry {n}: min {min_seen:?} of cap {cap:?}");
        }
        assert!(backoff_delay(&retry, 100, &mut rng) <= Duration::from_secs(10));
    }

    #[test]
    fn redaction_drops_query_and_password() {
        assert_eq!(redact_url("https://u:pw@h.example/p?token=abc"), "https://u:***@h.example/p?***");
        assert_eq!(redact_url("http://127.0.0.1:8080/hook"), "http://127.0.0.1:8080/hook");
    }

    #[tokio::test]
    async fn connection_refused_is_retried_then_reported() {
        // Bind and drop a listener to get a port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let retry = RetryConfig {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            max_attempts: 3,
        };
        let hooks = [WebhookConfig { url: format!("http://127.0.0.1:{port}/"), ..WebhookConfig::default() }];
        let sender = WebhookSender::new(&hooks, retry, 2).unwrap();
        let out = sender.deliver("id", b"{}").await;
        match &out[0].outcome {
            Outcome::Failed { attempts, reason } => {
                assert_eq!(*attempts, 3);
                assert!(reason.contains("connect"), "{reason}");
            }
            other => panic!("expected failure, got {other:?}"),
        }
    }
}
