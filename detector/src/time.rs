//! Packet time: durations as the signed nanoseconds that packet timestamps use.

use std::time::Duration;

/// Nanoseconds of a duration, saturating at `i64::MAX`.
pub fn ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A duration as configuration keys write it (`10s`, `1h 30m`).
pub fn human(d: Duration) -> String {
    humantime_serde::re::humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_saturates_and_human_matches_the_config_syntax() {
        assert_eq!(ns(Duration::from_millis(1500)), 1_500_000_000);
        assert_eq!(ns(Duration::MAX), i64::MAX);
        assert_eq!(human(Duration::from_secs(600)), "10m");
    }
}
