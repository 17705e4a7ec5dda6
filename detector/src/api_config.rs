//! The scoring API's settings, `[detector.api]`: who may call it, how long a body may take, how many requests
//! wait, and how many capture clients' sources it remembers for how long.

use std::time::Duration;

use netanom_schemas::redact::Secret;
use serde::{Deserialize, Serialize};

use crate::time::human;
use crate::validation::{ConfigError, Problems};

/// The scoring API's settings (`[detector.api]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Bearer token every request must carry (`Authorization: Bearer <token>`); best set from the environment
    /// (`NETANOM_DETECTOR__API__TOKEN`) or a Kubernetes Secret. Prints as `***`. Default: none, the API is open.
    pub token: Option<Secret>,
    /// Longest time from the request's arrival to the end of its body; a slower client gets 408. At most
    /// 300 s. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Requests that may wait for a scoring slot while `api::MAX_CONCURRENT` (2) are scored; more get 503 with
    /// `Retry-After`. At most 100000. Default 64.
    pub queue: usize,
    /// Most sources of capture clients' packets remembered at once, each with its per-host state and its last
    /// packets (at most `sources::RECENT_PACKETS`): about 20 KiB per busy source, so the default bounds them to
    /// about 80 MiB. When a new source does not fit, the least recently heard eighth is forgotten (counted in
    /// `netanom.api.sources.forgotten{reason="capacity"}`). 1..=1000000. Default 4096.
    pub max_sources: usize,
    /// A source not heard from for this long (wall-clock time) is forgotten with its context (counted in
    /// `netanom.api.sources.forgotten{reason="idle"}`); its next packet starts afresh. In (0, 24h]. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub source_idle: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            token: None,
            request_timeout: Duration::from_secs(10),
            queue: 64,
            max_sources: 4096,
            source_idle: Duration::from_secs(300),
        }
    }
}

impl ApiConfig {
    /// Every problem of `[detector.api]`.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut p = Problems::new("api");
        if let Some(t) = &self.token {
            p.check(t.expose().len() >= 16, "token", || "must be at least 16 characters".into());
            p.check(t.expose().bytes().all(|b| b.is_ascii_graphic()), "token", || {
                "must be printable ASCII without spaces (it travels in an HTTP header)".into()
            });
        }
        p.check(
            !self.request_timeout.is_zero() && self.request_timeout <= Duration::from_secs(300),
            "request_timeout",
            || format!("must be in (0, 300s], got {}", human(self.request_timeout)),
        );
        p.check(self.queue <= 100_000, "queue", || format!("must be at most 100000, got {}", self.queue));
        p.check((1..=1_000_000).contains(&self.max_sources), "max_sources", || {
            format!("must be in 1..=1000000, got {}", self.max_sources)
        });
        p.check(!self.source_idle.is_zero() && self.source_idle <= Duration::from_secs(86_400), "source_idle", || {
            format!("must be in (0, 24h], got {}", human(self.source_idle))
        });
        p.into_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "s3cret-token-0123456789";

    #[test]
    fn the_token_is_masked_and_validated() {
        let mut c = ApiConfig { token: Some(Secret::new(TOKEN)), ..ApiConfig::default() };
        assert!(!format!("{c:?}").contains(TOKEN));
        assert!(serde_json::to_string(&c).unwrap().contains(r#""token":"***""#));
        assert!(c.validate().is_empty());
        c.token = Some(Secret::new("short token"));
        c.request_timeout = Duration::ZERO;
        c.queue = 1_000_000;
        c.max_sources = 0;
        c.source_idle = Duration::ZERO;
        let keys: Vec<String> = c.validate().into_iter().map(|e| e.key).collect();
        assert_eq!(
            keys,
            [
                "detector.api.token",
                "detector.api.token",
                "detector.api.request_timeout",
                "detector.api.queue",
                "detector.api.max_sources",
                "detector.api.source_idle"
            ]
        );
    }
}
