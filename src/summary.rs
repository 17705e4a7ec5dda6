//! Human-readable summaries of what each role did, printed when a role or `netanom run` finishes.

use std::fmt::Write as _;
use std::time::Duration;

use netanom_alert_router::RouterReport;
use netanom_detector::DetectorReport;
use netanom_producer::ProducerReport;

/// `packets: read N, parsed N, published N in N batches (N bytes); skipped N (reason N, …)`.
pub fn producer(r: &ProducerReport) -> String {
    let mut s = format!(
        "packets: read {}, parsed {}, published {} in {} batches ({} bytes); skipped {}",
        r.packets_read,
        r.packets_parsed,
        r.packets_published,
        r.batches_published,
        r.bytes_published,
        r.skipped_total()
    );
    let reasons: Vec<String> = r.skipped.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k} {n}")).collect();
    if !reasons.is_empty() {
        let _ = write!(s, " ({})", reasons.join(", "));
    }
    if r.packets_time_skewed > 0 {
        let _ = write!(s, "; outside the packet-time skew {}", r.packets_time_skewed);
    }
    if r.kernel_dropped > 0 {
        let _ = write!(s, "; dropped by the kernel {}", r.kernel_dropped);
    }
    let o = &r.outage;
    if o.dropped_packets > 0 {
        let _ = write!(s, "; dropped while Kafka was away {} ({} batches)", o.dropped_packets, o.dropped_records);
    }
    if o.spooled_records > 0 || o.resumed_records > 0 {
        let _ = write!(s, "; spooled {} batches, {} from an earlier run", o.spooled_records, o.resumed_records);
    }
    if o.spool_left_records > 0 {
        let _ = write!(s, "; LEFT IN THE SPOOL {} packets ({} batches)", o.spool_left_packets, o.spool_left_records);
    }
    if let Some(e) = &r.input_error {
        let _ = write!(s, "; INPUT ENDED EARLY: {e}");
    }
    let _ = write!(
        s,
        "; flows evicted {} idle, {} for space; capture {:.3} s",
        r.flows_evicted_idle,
        r.flows_evicted_full,
        r.duration.as_secs_f64()
    );
    s
}

/// `detection: N packets in N batches; anomalies N (rate N, …); hosts N tracked, N evicted; dead-lettered N
/// (with the packets of those outside the packet-time skew, when any); models isolation forest eif-… (netanom-eif-v1), …`: every model in force with its version and file format.
pub fn detector(r: &DetectorReport) -> String {
    let total: u64 = r.anomalies.values().sum();
    let kinds: Vec<String> = r.anomalies.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let models = if r.models.is_empty() {
        "none (warm-up not reached)".to_string()
    } else {
        r.models.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    };
    let skewed = match r.packets_time_rejected {
        0 => String::new(),
        n => format!(" ({n} packets outside the packet-time skew)"),
    };
    format!(
        "detection: {} packets in {} batches; anomalies {total} ({}); hosts {} tracked, {} evicted; dead-lettered {}{skewed}; models {}",
        r.packets,
        r.batches,
        kinds.join(", "),
        r.hosts_tracked,
        r.hosts_evicted,
        r.dead_lettered,
        models
    )
}

/// `alerts: N from N anomalies; webhooks N delivered, N failed; dead-lettered …`.
pub fn router(r: &RouterReport) -> String {
    format!(
        "alerts: {} from {} anomalies; webhooks {} delivered, {} failed; syslog {} delivered, {} failed; dead-lettered {} anomalies, {} alerts; {} groups emitted early",
        r.alerts_emitted,
        r.anomalies_consumed,
        r.webhook_delivered,
        r.webhook_failed,
        r.syslog_delivered,
        r.syslog_failed,
        r.dead_lettered_anomalies,
        r.dead_lettered_alerts,
        r.groups_evicted
    )
}

/// Shortest run whose end-to-end packets/s is printed: below it, start-up and drain dominate the figure.
pub const RATE_MIN_DURATION: Duration = Duration::from_secs(1);
/// Fewest packets for which the end-to-end packets/s is printed.
pub const RATE_MIN_PACKETS: u64 = 1_000;

/// `duration: N s, N packets/s end to end`; the rate only for a run of at least [`RATE_MIN_DURATION`] and
/// [`RATE_MIN_PACKETS`], since a shorter one measures start-up rather than throughput.
pub fn duration(elapsed: Duration, packets: u64) -> String {
    let secs = elapsed.as_secs_f64();
    if elapsed >= RATE_MIN_DURATION && packets >= RATE_MIN_PACKETS {
        format!("duration: {secs:.3} s, {:.0} packets/s end to end", packets as f64 / secs)
    } else {
        format!("duration: {secs:.3} s (no packets/s figure for a run under 1 s or 1,000 packets)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detection_line_names_every_model_in_force_with_its_format() {
        use netanom_detector::{DetectorReport, ModelInForce, ModelKind};
        let mut r = DetectorReport::default();
        assert!(detector(&r).ends_with("; models none (warm-up not reached)"), "{}", detector(&r));
        r.models =
            [(ModelKind::IsolationForest, "eif-1"), (ModelKind::Profiles, "km-2"), (ModelKind::Supervised, "rf-3")]
                .into_iter()
                .map(|(kind, v)| ModelInForce { kind, version: v.into() })
                .collect();
        assert!(
            detector(&r).ends_with(
                "; models isolation forest eif-1 (netanom-eif-v1), host profiles km-2 (netanom-profile-kmeans-v1), \
                 supervised forest rf-3 (netanom-rf-v1)"
            ),
            "{}",
            detector(&r)
        );
    }

    #[test]
    fn packets_per_second_only_for_runs_long_and_large_enough() {
        assert_eq!(duration(Duration::from_secs(2), 10_000), "duration: 2.000 s, 5000 packets/s end to end");
        for (elapsed, packets) in
            [(Duration::from_millis(400), 50_000), (Duration::from_secs(5), 12), (Duration::ZERO, 0)]
        {
            let line = duration(elapsed, packets);
            assert!(!line.contains("packets/s end to end") && line.contains("no packets/s figure"), "{line}");
        }
    }
}
