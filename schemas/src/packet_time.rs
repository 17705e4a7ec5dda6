//! The packet-time contract: which timestamps a record may carry relative to the recent packet time of its
//! stream (a capture, a Kafka partition), and the saturating arithmetic every window over packet time uses.
//!
//! A [`PacketClock`] follows one stream. A record whose packets lie within [`SkewConfig::max_behind`] before and
//! [`SkewConfig::max_ahead`] after the clock is accepted and moves the clock to its latest packet; any other
//! record is rejected and moves nothing. When [`SkewConfig::resync_records`] rejected records in a row agree with
//! each other (each within the skew of the previous ones), time really jumped — a quiet gap longer than
//! `max_ahead`, another capture replayed into the same stream, a corrected sensor clock — and the clock
//! re-anchors at them: the last of those records is accepted, the ones before it stay rejected. The first record
//! of a stream anchors its clock.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// Nanoseconds of a duration, saturating at `i64::MAX`.
pub fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// `later - earlier` in nanoseconds, saturating at the ends of the range.
pub fn elapsed_ns(later: i64, earlier: i64) -> i64 {
    later.saturating_sub(earlier)
}

/// The start of the `window_ns`-long window (aligned on multiples of it) holding `ts_ns`, saturating at
/// `i64::MIN`.
pub fn window_start_ns(ts_ns: i64, window_ns: i64) -> i64 {
    ts_ns.saturating_sub(ts_ns.rem_euclid(window_ns.max(1)))
}

/// The skew rule (`[detector.time]`, `[producer.time]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SkewConfig {
    /// Most a record's latest packet may be ahead of its stream's recent packet time. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub max_ahead: Duration,
    /// Most a record's earliest packet may be behind its stream's recent packet time. Default 10 min.
    #[serde(with = "humantime_serde")]
    pub max_behind: Duration,
    /// Rejected records in a row, agreeing with each other, after which the stream's clock re-anchors at them
    /// (the last of them is accepted). 1..=1000000. Default 3.
    pub resync_records: u32,
}

impl Default for SkewConfig {
    fn default() -> Self {
        Self { max_ahead: Duration::from_secs(300), max_behind: Duration::from_secs(600), resync_records: 3 }
    }
}

impl SkewConfig {
    /// Every problem of the settings, as (key, problem), e.g. `("max_ahead", "must be > 0")`.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut errors = Vec::new();
        if self.max_ahead.is_zero() {
            errors.push(("max_ahead", "must be > 0".to_string()));
        }
        if self.max_behind.is_zero() {
            errors.push(("max_behind", "must be > 0".to_string()));
        }
        if !(1..=1_000_000).contains(&self.resync_records) {
            errors.push(("resync_records", format!("must be in 1..=1000000, got {}", self.resync_records)));
        }
        errors
    }
}

impl SkewConfig {
    /// Whether a record whose packets span `earliest_ns..=latest_ns` lies within the skew around `now_ns` (a
    /// reference clock such as the wall clock of a live capture).
    pub fn check(&self, now_ns: i64, earliest_ns: i64, latest_ns: i64) -> Result<(), TimeRejection> {
        within(now_ns, earliest_ns, latest_ns, duration_ns(self.max_ahead), duration_ns(self.max_behind))
    }
}

/// Which way a rejected record was off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skew {
    /// Its latest packet is too far after the clock.
    Ahead,
    /// Its earliest packet is too far before the clock.
    Behind,
}

/// Why a record was rejected: the dead-letter reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRejection {
    /// Which way it was off.
    pub skew: Skew,
    /// The offending packet time, ns since the epoch.
    pub packet_ns: i64,
    /// The stream's packet clock, ns since the epoch.
    pub clock_ns: i64,
    /// The limit exceeded, ns.
    pub limit_ns: i64,
}

impl fmt::Display for TimeRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (way, by, key) = match self.skew {
            Skew::Ahead => ("ahead of", elapsed_ns(self.packet_ns, self.clock_ns), "max_ahead"),
            Skew::Behind => ("behind", elapsed_ns(self.clock_ns, self.packet_ns), "max_behind"),
        };
        write!(
            f,
            "packet time {} is {} s {way} the stream's packet time {} (time.{key} {} s)",
            crate::format_rfc3339_ns(self.packet_ns),
            by / 1_000_000_000,
            crate::format_rfc3339_ns(self.clock_ns),
            self.limit_ns / 1_000_000_000
        )
    }
}

/// What [`PacketClock::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Within the skew: the clock moved to the record's latest packet (if later).
    Accepted,
    /// The record completed a run of agreeing rejected records: the clock re-anchored at it. `backwards` when
    /// the new clock is earlier than the old one.
    Resynced {
        /// The clock moved back.
        backwards: bool,
    },
    /// Outside the skew: nothing moved.
    Rejected(TimeRejection),
}

/// The packet clock of one stream. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct PacketClock {
    now_ns: Option<i64>,
    /// Rejected records in a row that agree with each other: (latest packet, how many).
    run: Option<(i64, u32)>,
}

impl PacketClock {
    /// The clock: the latest accepted packet time (`None` before the first record).
    pub fn now_ns(&self) -> Option<i64> {
        self.now_ns
    }

    /// Decides on a record whose packets span `earliest_ns..=latest_ns`, moving the clock if it is accepted.
    pub fn admit(&mut self, rule: &SkewConfig, earliest_ns: i64, latest_ns: i64) -> Admission {
        let (ahead, behind) = (duration_ns(rule.max_ahead), duration_ns(rule.max_behind));
        let Some(now) = self.now_ns else {
            self.now_ns = Some(latest_ns);
            return Admission::Accepted;
        };
        let Err(rejection) = within(now, earliest_ns, latest_ns, ahead, behind) else {
            self.now_ns = Some(now.max(latest_ns));
            self.run = None;
            return Admission::Accepted;
        };
        let run = match self.run {
            Some((at, n)) if within(at, earliest_ns, latest_ns, ahead, behind).is_ok() => (at.max(latest_ns), n + 1),
            _ => (latest_ns, 1),
        };
        if run.1 >= rule.resync_records {
            self.now_ns = Some(run.0);
            self.run = None;
            return Admission::Resynced { backwards: run.0 < now };
        }
        self.run = Some(run);
        Admission::Rejected(rejection)
    }
}

/// Whether `earliest..=latest` lies within the skew around `now`.
fn within(now: i64, earliest: i64, latest: i64, ahead: i64, behind: i64) -> Result<(), TimeRejection> {
    if elapsed_ns(now, earliest) > behind {
        return Err(TimeRejection { skew: Skew::Behind, packet_ns: earliest, clock_ns: now, limit_ns: behind });
    }
    if elapsed_ns(latest, now) > ahead {
        return Err(TimeRejection { skew: Skew::Ahead, packet_ns: latest, clock_ns: now, limit_ns: ahead });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;
    const T: i64 = 1_700_000_000 * S;

    fn rule() -> SkewConfig {
        SkewConfig::default()
    }

    #[test]
    fn records_within_the_skew_move_the_clock_and_others_move_nothing() {
        let mut c = PacketClock::default();
        assert_eq!(c.admit(&rule(), T, T + S), Admission::Accepted);
        assert_eq!(c.now_ns(), Some(T + S));
        // Up to 5 min ahead and 10 min behind: accepted; a late record never moves the clock back.
        assert_eq!(c.admit(&rule(), T - 599 * S, T - 598 * S), Admission::Accepted);
        assert_eq!(c.now_ns(), Some(T + S));
        assert_eq!(c.admit(&rule(), T + 300 * S, T + 301 * S), Admission::Accepted);
        assert_eq!(c.now_ns(), Some(T + 301 * S));
        // Ten years ahead, 1970, i64::MIN and i64::MAX: rejected, clock unchanged.
        for (lo, hi, skew) in [
            (T + 10 * 365 * 86_400 * S, T + 10 * 365 * 86_400 * S, Skew::Ahead),
            (S, S, Skew::Behind),
            (i64::MIN, i64::MIN, Skew::Behind),
            (i64::MAX, i64::MAX, Skew::Ahead),
            (T, i64::MAX, Skew::Ahead),
        ] {
            match c.admit(&rule(), lo, hi) {
                Admission::Rejected(r) => assert_eq!(r.skew, skew, "{lo}..{hi}"),
                other => panic!("{lo}..{hi}: {other:?}"),
            }
            assert_eq!(c.now_ns(), Some(T + 301 * S));
            // A good record in between breaks any run.
            assert_eq!(c.admit(&rule(), T + 301 * S, T + 301 * S), Admission::Accepted);
        }
    }

    #[test]
    fn the_reason_names_the_direction_the_distance_and_the_key() {
        let mut c = PacketClock::default();
        c.admit(&rule(), 0, 0);
        let Admission::Rejected(r) = c.admit(&rule(), 3_600 * S, 3_600 * S) else { panic!() };
        assert_eq!(
            r.to_string(),
            "packet time 1970-01-01T01:00:00.000000000Z is 3600 s ahead of the stream's packet time \
             1970-01-01T00:00:00.000000000Z (time.max_ahead 300 s)"
        );
    }

    #[test]
    fn agreeing_rejected_records_re_anchor_the_clock_and_disagreeing_ones_never_do() {
        let mut c = PacketClock::default();
        c.admit(&rule(), T, T);
        // A quiet gap of one hour: the third record after it re-anchors.
        let g = T + 3_600 * S;
        assert!(matches!(c.admit(&rule(), g, g), Admission::Rejected(_)));
        assert!(matches!(c.admit(&rule(), g + S, g + S), Admission::Rejected(_)));
        assert_eq!(c.admit(&rule(), g + 2 * S, g + 2 * S), Admission::Resynced { backwards: false });
        assert_eq!(c.now_ns(), Some(g + 2 * S));
        // Alternating bogus times (far future, 1970) never agree: never re-anchored.
        for i in 0..20 {
            let t = if i % 2 == 0 { i64::MAX - i } else { i };
            assert!(matches!(c.admit(&rule(), t, t), Admission::Rejected(_)));
        }
        // Another capture, years older, replayed into the stream: the clock follows it back.
        let old = T - 5 * 365 * 86_400 * S;
        c.admit(&rule(), old, old);
        c.admit(&rule(), old, old);
        assert_eq!(c.admit(&rule(), old, old), Admission::Resynced { backwards: true });
        assert_eq!(c.admit(&rule(), old + S, old + S), Admission::Accepted);
    }

    #[test]
    fn the_epoch_and_the_ends_of_the_range_are_ordinary_times() {
        let mut c = PacketClock::default();
        assert_eq!(c.admit(&rule(), 0, 0), Admission::Accepted);
        assert_eq!(c.admit(&rule(), 0, 60 * S), Admission::Accepted);
        let mut c = PacketClock::default();
        assert_eq!(c.admit(&rule(), i64::MIN, i64::MIN), Admission::Accepted);
        assert_eq!(c.admit(&rule(), i64::MIN, i64::MIN + S), Admission::Accepted);
        assert!(matches!(c.admit(&rule(), i64::MAX, i64::MAX), Admission::Rejected(_)));
        assert!(rule().check(T, T - 600 * S, T + 300 * S).is_ok());
        assert_eq!(rule().check(T, T - 601 * S, T).map_err(|r| r.skew), Err(Skew::Behind));
        assert_eq!(rule().check(T, T, T + 301 * S).map_err(|r| r.skew), Err(Skew::Ahead));
    }

    #[test]
    fn window_arithmetic_saturates() {
        assert_eq!(window_start_ns(i64::MIN, 10 * S), i64::MIN);
        assert_eq!(window_start_ns(-1, 10 * S), -10 * S);
        assert_eq!(window_start_ns(25 * S, 10 * S), 20 * S);
        assert_eq!(window_start_ns(i64::MAX, 10 * S), i64::MAX - i64::MAX.rem_euclid(10 * S));
        assert_eq!(elapsed_ns(i64::MAX, i64::MIN), i64::MAX);
        assert_eq!(elapsed_ns(i64::MIN, i64::MAX), i64::MIN);
        assert_eq!(duration_ns(Duration::MAX), i64::MAX);
    }

    #[test]
    fn settings_are_validated_with_their_keys() {
        let bad = SkewConfig { max_ahead: Duration::ZERO, max_behind: Duration::ZERO, resync_records: 0 };
        let keys: Vec<&str> = bad.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["max_ahead", "max_behind", "resync_records"]);
        assert!(SkewConfig::default().validate().is_empty());
    }
}
