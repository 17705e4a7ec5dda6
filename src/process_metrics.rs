//! The process's own resource use as OpenTelemetry metrics with their semantic-convention names:
//! `process.cpu.time` (counter, seconds, by `cpu.mode` `user`/`system`) and `process.memory.usage` (gauge,
//! bytes of resident memory), read from `/proc/self` at each collection (a Prometheus scrape of `/metrics`, an
//! OTLP export). Where `/proc` is missing or unreadable nothing is observed. It only reads; it knows nothing
//! of exporters.

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

/// CPU seconds spent in user and in system mode, from `/proc/self/stat` (fields 14 and 15, in clock ticks).
pub fn cpu_seconds(stat: &str, ticks_per_second: u64) -> Option<(f64, f64)> {
    // The command name (field 2) is in parentheses and may contain spaces or parentheses: split after the last.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace();
    // `after_name` starts at field 3 (state): utime is field 14, the 12th from here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let tps = ticks_per_second.max(1) as f64;
    Some((utime as f64 / tps, stime as f64 / tps))
}

/// Resident memory in bytes, from the `VmRSS:` line of `/proc/self/status` (in kB).
pub fn resident_bytes(status: &str) -> Option<i64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: i64 = line.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim().parse().ok()?;
    kb.checked_mul(1024)
}

/// Registers both instruments on `meter`; their callbacks run at every collection.
pub fn register(meter: &Meter) {
    let ticks = rustix::param::clock_ticks_per_second();
    meter
        .f64_observable_counter("process.cpu.time")
        .with_unit("s")
        .with_description("CPU time of the process, by mode")
        .with_callback(move |o| {
            if let Some((user, system)) =
                std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| cpu_seconds(&s, ticks))
            {
                o.observe(user, &[KeyValue::new("cpu.mode", "user")]);
                o.observe(system, &[KeyValue::new("cpu.mode", "system")]);
            }
        })
        .build();
    meter
        .i64_observable_gauge("process.memory.usage")
        .with_unit("By")
        .with_description("Resident memory of the process")
        .with_callback(|o| {
            if let Some(rss) = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| resident_bytes(&s)) {
                o.observe(rss, &[]);
            }
        })
        .build();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_fields_are_found_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (net (anom) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 100 1000 200";
        assert_eq!(cpu_seconds(stat, 100), Some((2.5, 0.75)));
        assert_eq!(cpu_seconds("4242 (x) S 1 2", 100), None, "too few fields");
        assert_eq!(cpu_seconds("no parenthesis", 100), None);
    }

    #[test]
    fn resident_memory_is_read_in_bytes() {
        let status = "Name:\tnetanom\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t9\n";
        assert_eq!(resident_bytes(status), Some(5 * 1024 * 1024));
        assert_eq!(resident_bytes("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_reads_plausible_values() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let (user, system) = cpu_seconds(&stat, rustix::param::clock_ticks_per_second()).unwrap();
        assert!(user >= 0.0 && system >= 0.0 && user + system < 1e6, "{user} {system}");
        let rss = resident_bytes(&std::fs::read_to_string("/proc/self/status").unwrap()).unwrap();
        assert!((1 << 20..1 << 40).contains(&rss), "{rss} bytes resident");
    }
}
