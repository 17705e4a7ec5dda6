//! Webhook delivery: POSTs an alert to each configured URL as JSON in that webhook's [`AlertFormat`], signed per
//! the Standard Webhooks specification (<https://www.standardwebhooks.com/>), with a per-request timeout, retries with exponential backoff and full
//! jitter, and bounded concurrency. Owns the HTTP client and the signing keys; it decides nothing about what is
//! sent (that is `route`) and never logs a secret.
//!
//! Outbound safety ([`crate::outbound`]): a URL naming a loopback, private, link-local, cloud-metadata or other
//! restricted address is refused at start, and every connection resolves its host through a checking resolver
//! and goes to the address checked, unless the webhook sets `allow_private = true`; redirects are not followed.
//! URLs in logs, errors and dead-letter reasons have their user name, password and query masked ([`redact_url`]).
//!
//! Headers: `webhook-id` (the alert id, the same on every attempt so receivers can deduplicate),
//! `webhook-timestamp` (unix seconds of the attempt) and `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `"{id}.{timestamp}.{body}"`, keyed with the base64-decoded part of a `whsec_...` secret.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use netanom_schemas::redact::Secret;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::breaker::Breaker;
use crate::format::AlertFormat;
use crate::position::StartFrom;

/// Prefix of a Standard Webhooks signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// One webhook endpoint (`[[alert_router.webhooks]]`).
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Name of this destination: its consumer group on the alerts topic is `<group_id>.deliver.<name>` and the
    /// dead-letter header `netanom-dlq-destination` names it. Letters, digits, `.`, `_` and `-`; unique among the
    /// destinations. Default `webhook-<index>` (its position in the list, from 0): set a name so that reordering
    /// the list keeps each webhook's position on the alerts topic.
    pub name: String,
    /// `http://` or `https://` URL to POST alerts to (https needs the `rustls-tls` feature).
    pub url: String,
    /// Standard Webhooks signing secret, `whsec_<base64 key>`; without one, requests are not signed.
    pub secret: Option<Secret>,
    /// Timeout of one request, connection included. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Body format: `netanom` (the alert JSON), `ecs` or `ocsf` (see [`crate::format`]). Default `netanom`.
    pub format: AlertFormat,
    /// Let this webhook reach loopback, private, shared (CGNAT), link-local, cloud-metadata, multicast and other
    /// restricted addresses (a receiver on the same host or in the cluster network). Default false: such a URL is
    /// refused at start, and a host name resolving to such an address is refused at connect time.
    pub allow_private: bool,
    /// Alerts per minute above which this webhook gets the further alerts of the minute summarised in digests
    /// (one message naming up to 1000 alerts, sent at most every 10 s; see `digest`). Default 0: off.
    pub digest_above: u32,
    /// Where this webhook starts on the alerts topic the first time (before its consumer group committed a
    /// position): `earliest` (default: every alert the topic still holds) or `latest` (only new alerts).
    pub start_from: StartFrom,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            url: String::new(),
            secret: None,
            timeout: Duration::from_secs(5),
            format: AlertFormat::Netanom,
            allow_private: false,
            digest_above: 0,
            start_from: StartFrom::Earliest,
        }
    }
}

/// Masks the URL's credentials and query (see [`redact_url_or_raw`]).
impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &redact_url_or_raw(&self.url))
            .field("secret", &self.secret)
            .field("timeout", &self.timeout)
            .field("format", &self.format)
            .field("allow_private", &self.allow_private)
            .field("digest_above", &self.digest_above)
            .field("start_from", &self.start_from)
            .finish()
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
    /// Attempts per (alert, destination), the first included, before an alert that keeps failing in a way a
    /// retry may fix (timeout, connection error, 408, 429, 5xx) is parked on the dead-letter topic. Default 0:
    /// retried until delivered, so a destination that is down catches up when it returns.
    pub max_attempts: u32,
    /// Consecutive failed attempts of one destination that open its circuit breaker (see `breaker`); 0 never
    /// opens it. Default 5.
    pub breaker_failures: u32,
    /// How long an open circuit breaker makes no attempt before one probe goes out. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_attempts: 0,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}

impl RetryConfig {
    /// The wait before retry number `retry_number` (0 = before the second attempt): the receiver's
    /// `Retry-After` when it sent one, else the jittered backoff; never more than `max_backoff`.
    pub fn delay(&self, retry_number: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(d) => d.min(self.max_backoff),
            None => backoff_delay(self, retry_number, &mut rand::thread_rng()),
        }
    }

    /// True when `attempts` attempts used up the policy (never when `max_attempts` is 0).
    pub fn exhausted(&self, attempts: u32) -> bool {
        self.max_attempts > 0 && attempts >= self.max_attempts
    }
}

/// The wait a `Retry-After` header value asks for at `now`: delay-seconds or an HTTP-date (RFC 9110 10.2.3;
/// a date in the past is no wait). `None` when it is neither.
pub fn parse_retry_after(value: &str, now: time::OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    Some(Duration::try_from(date - now).unwrap_or(Duration::ZERO))
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
    /// Bad URL, or one naming a restricted address without `allow_private`.
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

/// Masks the user name, password and query string of `url` for logs, errors and dead-letter reasons (query
/// strings often carry tokens).
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if !u.username().is_empty() {
                let _ = u.set_username("***");
            }
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

/// Like [`redact_url`], but shows a URL that does not parse (so a typo can be seen) with everything between
/// `://` and the last `@` masked, where credentials would be.
pub fn redact_url_or_raw(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(_) => redact_url(url),
        Err(_) => match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s + 3 => format!("{}***{}", &url[..s + 3], &url[at..]),
            _ => url.to_string(),
        },
    }
}

/// The destination name of the webhook at `index` of the configuration: its `name`, else `webhook-<index>`.
pub fn destination_name(hook: &WebhookConfig, index: usize) -> String {
    if hook.name.is_empty() { format!("webhook-{index}") } else { hook.name.clone() }
}

#[derive(Debug)]
struct Hook {
    /// The client of this webhook: its resolver applies the webhook's `allow_private`.
    client: reqwest::Client,
    url: reqwest::Url,
    shown: String,
    key: Option<Vec<u8>>,
    timeout: Duration,
    format: AlertFormat,
    /// The webhook's circuit breaker.
    breaker: Breaker,
}

/// Sends alerts to every configured webhook. Cheap to clone-share via `Arc`.
#[derive(Debug)]
pub struct WebhookSender {
    hooks: Vec<Hook>,
    retry: RetryConfig,
    permits: Arc<Semaphore>,
}

/// What the retry loop does with an attempt's result.
enum Attempt {
    Ok,
    /// Failed in a way a retry may fix; the receiver's `Retry-After`, if it sent one.
    Retry(String, Option<Duration>),
    /// Refused: retrying cannot help.
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
            if let Err(refused) = crate::outbound::check_url(&url, h.allow_private) {
                return Err(WebhookError::Url { index, url: shown, reason: format!("{refused}; {ALLOW_HINT}") });
            }
            let key = h
                .secret
                .as_ref()
                .map(decode_secret)
                .transpose()
                .map_err(|source| WebhookError::Secret { index, source })?;
            let client = crate::outbound::client_builder(h.allow_private)
                .user_agent(concat!("netanom-alert-router/", env!("CARGO_PKG_VERSION")))
                .build()?;
            let breaker = Breaker::new(&destination_name(h, index), retry.breaker_failures, retry.breaker_cooldown);
            prepared.push(Hook { client, url, shown, key, timeout: h.timeout, format: h.format, breaker });
        }
        Ok(Self { hooks: prepared, retry, permits: Arc::new(Semaphore::new(max_concurrency.max(1))) })
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

    /// The redacted URL of each webhook, in configuration order.
    pub fn urls(&self) -> impl Iterator<Item = &str> + '_ {
        self.hooks.iter().map(|h| h.shown.as_str())
    }

    /// The body format of each webhook, in configuration order.
    pub fn formats(&self) -> impl Iterator<Item = AlertFormat> + '_ {
        self.hooks.iter().map(|h| h.format)
    }

    async fn deliver_one(&self, hook: &Hook, id: &str, body: &[u8]) -> Delivery {
        let mut attempts = 0;
        let reason = loop {
            attempts += 1;
            hook.breaker.admit().await;
            let result = {
                // The semaphore is never closed; if it were, sending unthrottled beats losing the alert.
                let _permit = self.permits.acquire().await.ok();
                self.attempt(hook, id, body).await
            };
            hook.breaker.record(!matches!(result, Attempt::Retry(..)));
            match result {
                Attempt::Ok => {
                    return Delivery { url: hook.shown.clone(), outcome: Outcome::Delivered { attempts } };
                }
                Attempt::GiveUp(reason) => break reason,
                Attempt::Retry(reason, _) if self.retry.exhausted(attempts) => break reason,
                Attempt::Retry(reason, retry_after) => {
                    let delay = self.retry.delay(attempts - 1, retry_after);
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
        let mut request = hook
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
                } else if matches!(status.as_u16(), 429 | 503) {
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, time::OffsetDateTime::now_utc()));
                    Attempt::Retry(format!("HTTP {status}"), retry_after)
                } else if status.as_u16() == 408 || status.is_server_error() {
                    Attempt::Retry(format!("HTTP {status}"), None)
                } else {
                    Attempt::GiveUp(format!("HTTP {status}"))
                }
            }
            // reqwest's messages carry the URL, credentials and all: dropped (the caller names the webhook by its
            // redacted URL).
            Err(e) if e.is_builder() => Attempt::GiveUp(format!("invalid request: {}", e.without_url())),
            Err(e) if e.is_timeout() => Attempt::Retry(format!("timed out after {:?}", hook.timeout), None),
            Err(e) if is_refused(&e) => Attempt::GiveUp(format!("connect error: {}", error_chain(&e.without_url()))),
            Err(e) if e.is_connect() => {
                Attempt::Retry(format!("connect error: {}", error_chain(&e.without_url())), None)
            }
            Err(e) => Attempt::Retry(format!("transport error: {}", error_chain(&e.without_url())), None),
        }
    }
}

/// How to allow a refused destination, for messages.
const ALLOW_HINT: &str = "set allow_private = true for this webhook to allow it";

/// True when the outbound check refused the connection: retrying cannot help until the configuration changes.
fn is_refused(e: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        if let Some(crate::outbound::ResolveError::Refused(_)) = inner.downcast_ref::<crate::outbound::ResolveError>() {
            return true;
        }
        source = inner.source();
    }
    false
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
            name: "x".into(),
            url: "http://x".into(),
            secret: Some(s),
            timeout: Duration::from_secs(1),
            format: AlertFormat::Ecs,
            allow_private: false,
            digest_above: 0,
            start_from: StartFrom::Earliest,
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
        assert_eq!(redact_url("https://u:pw@h.example/p?token=abc"), "https://***:***@h.example/p?***");
        assert_eq!(redact_url("https://tok@h.example/"), "https://***@h.example/");
        assert_eq!(redact_url("http://127.0.0.1:8080/hook"), "http://127.0.0.1:8080/hook");
        assert_eq!(redact_url_or_raw("http://u:pw@[bad/x"), "http://***@[bad/x");
        assert_eq!(redact_url_or_raw("not a url"), "not a url");
        let hook = WebhookConfig { url: "https://u:pw@h.example/p?token=abc".into(), ..WebhookConfig::default() };
        let shown = format!("{hook:?}");
        assert!(!shown.contains("pw") && !shown.contains("abc") && shown.contains("h.example"), "{shown}");
    }

    #[tokio::test]
    async fn connection_refused_is_retried_then_reported() {
        // Bind and drop a listener to get a port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let retry = RetryConfig {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            max_attempts: 3,
            ..RetryConfig::default()
        };
        let hooks = [WebhookConfig {
            url: format!("http://127.0.0.1:{port}/"),
            allow_private: true,
            ..WebhookConfig::default()
        }];
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

    /// A webhook request carries the W3C `traceparent` of the alert being delivered, so the receiver's trace
    /// continues the packet's.
    #[tokio::test]
    async fn a_webhook_request_carries_the_alerts_traceparent() {
        use opentelemetry::context::FutureExt as _;
        use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let log = log.clone();
            async move {
                let tp = headers.get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or("none").to_string();
                log.lock().unwrap().push(tp);
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let hooks = [WebhookConfig {
            url: format!("http://127.0.0.1:{port}/"),
            allow_private: true,
            ..WebhookConfig::default()
        }];
        let sender = WebhookSender::new(&hooks, one_attempt(), 2).unwrap();
        let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let span = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        let sc = SpanContext::new(trace, span, TraceFlags::SAMPLED, true, TraceState::default());
        let cx = opentelemetry::Context::new().with_remote_span_context(sc);
        let out = sender.deliver("id", b"{}").with_context(cx).await;
        assert!(matches!(out[0].outcome, Outcome::Delivered { .. }), "{out:?}");
        // Without a trace context, no header.
        sender.deliver("id2", b"{}").await;
        assert_eq!(
            *seen.lock().unwrap(),
            vec!["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(), "none".to_string()]
        );
    }

    /// A receiver on 127.0.0.1 counting requests per path; `/moved` redirects to `/target`.
    async fn receiver() -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(uri.path().to_string());
                if uri.path() == "/moved" {
                    (axum::http::StatusCode::TEMPORARY_REDIRECT, [("location", "/target")]).into_response()
                } else {
                    axum::http::StatusCode::OK.into_response()
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (port, seen)
    }
    use axum::response::IntoResponse as _;

    fn one_attempt() -> RetryConfig {
        RetryConfig {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            max_attempts: 3,
            ..RetryConfig::default()
        }
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_an_http_date() {
        let now = time::macros::datetime!(2015-10-21 07:28:00 UTC);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now), Some(Duration::ZERO), "in the past");
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        let retry = RetryConfig { max_backoff: Duration::from_secs(10), ..RetryConfig::default() };
        assert_eq!(retry.delay(0, Some(Duration::from_secs(3600))), Duration::from_secs(10), "capped");
        assert_eq!(retry.delay(0, Some(Duration::from_secs(2))), Duration::from_secs(2));
    }

    /// A 429 with `Retry-After: 1` makes the next attempt wait a second, though the backoff would be 1 ms; a
    /// 503 asking for an hour waits `max_backoff` only; a 408 is retried; another 4xx is not.
    #[tokio::test]
    async fn retry_after_is_honoured_and_capped() {
        let calls = Arc::new(std::sync::Mutex::new(Vec::<(String, std::time::Instant)>::new()));
        let log = calls.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let log = log.clone();
            async move {
                let path = uri.path().to_string();
                let n = {
                    let mut l = log.lock().unwrap();
                    l.push((path.clone(), std::time::Instant::now()));
                    l.iter().filter(|(p, _)| *p == path).count()
                };
                match (path.as_str(), n) {
                    ("/slow", 1) => (axum::http::StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response(),
                    ("/hour", 1) => {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "3600")]).into_response()
                    }
                    ("/timeout", 1) => axum::http::StatusCode::REQUEST_TIMEOUT.into_response(),
                    ("/gone", _) => axum::http::StatusCode::GONE.into_response(),
                    _ => axum::http::StatusCode::OK.into_response(),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let retry = RetryConfig {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(300),
            ..RetryConfig::default()
        };
        let hook = |path: &str| WebhookConfig {
            url: format!("http://127.0.0.1:{port}{path}"),
            allow_private: true,
            ..WebhookConfig::default()
        };
        let retry_long = RetryConfig { max_backoff: Duration::from_secs(5), ..retry.clone() };
        let out = WebhookSender::new(&[hook("/slow")], retry_long, 1).unwrap().deliver("id", b"{}").await;
        assert_eq!(out[0].outcome, Outcome::Delivered { attempts: 2 });
        let out = WebhookSender::new(&[hook("/hour"), hook("/timeout"), hook("/gone")], retry, 4)
            .unwrap()
            .deliver("id", b"{}")
            .await;
        assert_eq!(out[0].outcome, Outcome::Delivered { attempts: 2 });
        assert_eq!(out[1].outcome, Outcome::Delivered { attempts: 2 }, "408 is retried");
        assert!(matches!(&out[2].outcome, Outcome::Failed { attempts: 1, reason } if reason.contains("410")));
        let calls = calls.lock().unwrap();
        let gap = |path: &str| {
            let t: Vec<_> = calls.iter().filter(|(p, _)| p == path).map(|(_, t)| *t).collect();
            t[1] - t[0]
        };
        assert!(gap("/slow") >= Duration::from_millis(950), "Retry-After: 1 waited {:?}", gap("/slow"));
        let hour = gap("/hour");
        assert!(hour >= Duration::from_millis(290) && hour < Duration::from_secs(3), "capped wait {hour:?}");
    }

    /// After `breaker_failures` consecutive failures the breaker opens: no request reaches the receiver for the
    /// cool-down, then one probe does.
    #[tokio::test]
    async fn the_breaker_stops_attempts_for_the_cooldown() {
        let calls = Arc::new(std::sync::Mutex::new(Vec::<std::time::Instant>::new()));
        let log = calls.clone();
        let app = axum::Router::new().fallback(move || {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(std::time::Instant::now());
                axum::http::StatusCode::INTERNAL_SERVER_ERROR
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let retry = RetryConfig {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            max_attempts: 5,
            breaker_failures: 3,
            breaker_cooldown: Duration::from_millis(700),
        };
        let hook = WebhookConfig {
            name: "down".into(),
            url: format!("http://127.0.0.1:{port}/"),
            allow_private: true,
            ..WebhookConfig::default()
        };
        let sender = WebhookSender::new(&[hook], retry, 1).unwrap();
        let out = sender.deliver("id", b"{}").await;
        assert!(matches!(out[0].outcome, Outcome::Failed { attempts: 5, .. }), "{:?}", out[0].outcome);
        let calls = calls.lock().unwrap();
        assert_eq!(calls.len(), 5);
        // Attempts 1-3 fail fast; the breaker opens; attempt 4 is the probe after the cool-down, which fails and
        // opens it again before attempt 5.
        assert!(calls[2] - calls[0] < Duration::from_millis(500), "{:?}", calls[2] - calls[0]);
        assert!(calls[3] - calls[2] >= Duration::from_millis(650), "{:?}", calls[3] - calls[2]);
        assert!(calls[4] - calls[3] >= Duration::from_millis(650), "{:?}", calls[4] - calls[3]);
        assert_eq!(sender.hooks[0].breaker.state(), crate::breaker::BreakerState::Open);
    }

    #[test]
    fn urls_naming_internal_addresses_are_refused_at_start_unless_allowed() {
        for url in [
            "http://127.0.0.1:9/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://u:pw@10.0.0.1/?token=abc",
        ] {
            let hook = WebhookConfig { url: url.into(), ..WebhookConfig::default() };
            let e = WebhookSender::new(std::slice::from_ref(&hook), RetryConfig::default(), 1).unwrap_err().to_string();
            assert!(e.contains("allow_private = true"), "{url}: {e}");
            assert!(!e.contains("pw") && !e.contains("abc"), "credentials in {e}");
            let allowed = WebhookConfig { allow_private: true, ..hook };
            WebhookSender::new(&[allowed], RetryConfig::default(), 1).unwrap();
        }
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_at_connect_unless_allowed() {
        let (port, seen) = receiver().await;
        let url = format!("http://user:pw@localhost:{port}/hook?token=abc");
        let strict =
            WebhookSender::new(&[WebhookConfig { url: url.clone(), ..WebhookConfig::default() }], one_attempt(), 1)
                .unwrap();
        let out = strict.deliver("id", b"{}").await;
        match &out[0].outcome {
            Outcome::Failed { attempts, reason } => {
                assert_eq!(*attempts, 1, "a refusal is not retried");
                assert!(reason.contains("loopback") && reason.contains("allow_private"), "{reason}");
                assert!(!reason.contains("pw") && !reason.contains("abc"), "credentials in {reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(out[0].url, format!("http://***:***@localhost:{port}/hook?***"));
        assert!(seen.lock().unwrap().is_empty(), "the receiver was reached");

        let open = WebhookSender::new(
            &[WebhookConfig { url, allow_private: true, ..WebhookConfig::default() }],
            one_attempt(),
            1,
        )
        .unwrap();
        assert!(matches!(open.deliver("id", b"{}").await[0].outcome, Outcome::Delivered { attempts: 1 }));
        assert_eq!(*seen.lock().unwrap(), ["/hook"]);
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (port, seen) = receiver().await;
        let hook = WebhookConfig {
            url: format!("http://127.0.0.1:{port}/moved"),
            allow_private: true,
            ..WebhookConfig::default()
        };
        let out = WebhookSender::new(&[hook], one_attempt(), 1).unwrap().deliver("id", b"{}").await;
        match &out[0].outcome {
            Outcome::Failed { attempts: 1, reason } => assert!(reason.contains("307"), "{reason}"),
            other => panic!("expected a failed delivery, got {other:?}"),
        }
        assert_eq!(*seen.lock().unwrap(), ["/moved"], "the redirect target was requested");
    }
}
