//! Digests: when a webhook would receive more than `digest_above` alerts in a minute, the alerts beyond that
//! rate are held and sent as one message summarising them, at most every [`DIGEST_INTERVAL`] (and at once when
//! [`MAX_DIGEST`] are held, or when the router stops). The digest is POSTed and signed like any alert; its body
//! is
//!
//! ```json
//! {"type": "netanom.digest", "count": 2, "first_seen": "…", "last_seen": "…",
//!  "alerts": [{"webhook_id": "<id>#<revision>", "id": "…", "revision": 1, "host": "10.0.0.1", "kind": "rate",
//!              "score": 30.0, "count": 3, "first_seen": "…", "last_seen": "…"}, …]}
//! ```
//!
//! with `webhook-id: digest-<32 hex digits>`, a hash of the `webhook_id`s it carries (the same digest retried or
//! redelivered keeps it; a receiver can also deduplicate each alert by its `webhook_id`). Times are RFC 3339.

use std::collections::VecDeque;
use std::time::Duration;

use netanom_schemas::{Alert, format_rfc3339};
use rdkafka::message::{Message as _, OwnedMessage};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

/// The longest an alert is held for a digest.
pub const DIGEST_INTERVAL: Duration = Duration::from_secs(10);
/// Alerts in one digest at most.
pub const MAX_DIGEST: usize = 1000;
/// The window of the rate `digest_above` is measured over.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// The digest state of one webhook.
#[derive(Debug)]
pub struct Digester {
    above: usize,
    /// When each alert sent on its own in the last minute was handed over.
    sent: VecDeque<Instant>,
    /// Records held for the next digest, and when the first was held.
    held: Vec<OwnedMessage>,
    since: Option<Instant>,
}

impl Digester {
    /// Digests beyond `above` alerts per minute.
    pub fn new(above: usize) -> Self {
        Self { above, sent: VecDeque::new(), held: Vec::new(), since: None }
    }

    /// True when an alert arriving at `now` is over the rate and is to be held; false when it goes on its own
    /// (it is then counted).
    pub fn over(&mut self, now: Instant) -> bool {
        while self.sent.front().is_some_and(|t| now.duration_since(*t) >= RATE_WINDOW) {
            self.sent.pop_front();
        }
        if self.sent.len() < self.above {
            self.sent.push_back(now);
            false
        } else {
            true
        }
    }

    /// Holds record `m` for the next digest.
    pub fn hold(&mut self, m: OwnedMessage, now: Instant) {
        self.since.get_or_insert(now);
        self.held.push(m);
    }

    /// Records held.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// When the held records are to be sent (none held: `None`).
    pub fn due(&self) -> Option<Instant> {
        let since = self.since?;
        Some(if self.held.len() >= MAX_DIGEST { since } else { since + DIGEST_INTERVAL })
    }

    /// Drops the held records of the partitions `revoked` picks; returns how many.
    pub fn forget(&mut self, revoked: impl Fn(i32) -> bool) -> usize {
        let before = self.held.len();
        self.held.retain(|m| !revoked(m.partition()));
        if self.held.is_empty() {
            self.since = None;
        }
        before - self.held.len()
    }

    /// The held records, for a digest.
    pub fn take(&mut self) -> Vec<OwnedMessage> {
        self.since = None;
        std::mem::take(&mut self.held)
    }
}

/// The `webhook-id` and the body of the digest of `alerts` (see the module documentation).
pub fn body(alerts: &[Alert]) -> (String, String) {
    let mut hash = Sha256::new();
    for a in alerts {
        hash.update(a.delivery_id().as_bytes());
        hash.update(b"\n");
    }
    let id = format!("digest-{}", &hex_of(&hash.finalize())[..32]);
    let first = alerts.iter().map(|a| a.first_seen).min();
    let last = alerts.iter().map(|a| a.last_seen).max();
    let items: Vec<_> = alerts
        .iter()
        .map(|a| {
            json!({
                "webhook_id": a.delivery_id(),
                "id": a.id,
                "revision": a.revision,
                "host": a.host,
                "kind": a.kind.to_string(),
                "score": a.score,
                "count": a.count,
                "first_seen": format_rfc3339(a.first_seen),
                "last_seen": format_rfc3339(a.last_seen),
            })
        })
        .collect();
    let doc = json!({
        "type": "netanom.digest",
        "count": alerts.len(),
        "first_seen": first.map(format_rfc3339),
        "last_seen": last.map(format_rfc3339),
        "alerts": items,
    });
    (id, doc.to_string())
}

fn hex_of(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn alerts_beyond_the_rate_are_held_until_the_interval() {
        let mut d = Digester::new(2);
        let t0 = Instant::now();
        assert!(!d.over(t0) && !d.over(t0));
        assert!(d.over(t0), "the third in a minute is held");
        assert_eq!(d.due(), None);
        let m = OwnedMessage::new(None, None, "t".into(), rdkafka::Timestamp::NotAvailable, 0, 0, None);
        d.hold(m, t0);
        assert_eq!(d.due(), Some(t0 + DIGEST_INTERVAL));
        assert_eq!(d.take().len(), 1);
        assert_eq!((d.held(), d.due()), (0, None));
        assert!(!d.over(t0 + RATE_WINDOW), "a minute later the rate has room again");
    }
}
