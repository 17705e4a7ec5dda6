//! What a user meets on the command line, through the real binary: configuration errors all reported at once
//! with where each was set, the commented template of `netanom config`, the unsigned-webhook warning, empty
//! variables as unset, plain (uncoloured) logs off a terminal, a truncated capture that still gets its summary
//! and alerts, and a benign-only synthetic capture evaluated without a made-up recall.

use std::path::Path;
use std::process::{Command, Output};

fn netanom(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_netanom"));
    cmd.args(args).env_remove("NETANOM_CONFIG").env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("netanom runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

#[test]
fn every_shape_error_is_reported_at_once_with_its_file_line_or_variable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[detector.rate]\nthresold = 3\nwindow_packets = \"many\"\ncooldown = \"10 parsecs\"\n\n[producer]\n\
         snaplenn = 5\n\n[[alert_router.webhooks]]\nurl = \"http://127.0.0.1:9/x\"\ntimeout = \"soon\"\n",
    )
    .unwrap();
    let out = netanom(
        &["config", "--check", "--config", path(&file)],
        &[("NETANOM_LOG__LEVELS", "info"), ("NETANOM_TELEMETRY__METRICS_INTERVAL", "often")],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let f = path(&file);
    for want in [
        format!("{f}:2: key `detector.rate.thresold`: unknown field"),
        format!("{f}:3: key `detector.rate.window_packets`: invalid type"),
        format!("{f}:4: key `detector.rate.cooldown`:"),
        format!("{f}:7: key `producer.snaplenn`: unknown field"),
        format!("{f}:11: key `alert_router.webhooks[0].timeout`:"),
        "NETANOM_LOG__LEVELS: key `log.levels`: unknown field".to_string(),
        "NETANOM_TELEMETRY__METRICS_INTERVAL: key `telemetry.metrics_interval`:".to_string(),
        "7 configuration error(s)".to_string(),
    ] {
        assert!(err.contains(&want), "`{want}` missing from:\n{err}");
    }
}

#[test]
fn every_syntax_error_of_a_file_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(&file, "[log]\nlevel = \"info\nformat = text\n[topics\n").unwrap();
    let out = netanom(&["config", "--check", "--config", path(&file)], &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("not valid TOML")).collect();
    assert!(lines.len() >= 2, "{err}");
    assert!(lines.iter().all(|l| l.starts_with(&format!("error: {}:", path(&file)))), "{err}");
}

#[test]
fn the_printed_configuration_lists_optional_keys_commented_and_loads_back() {
    let out = netanom(&["config"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    for key in [
        "# listen = ",
        "# otlp_endpoint = ",
        "# registry_url = ",
        "# pcap = ",
        "# interface = ",
        "# filter = ",
        "# alerts_out = ",
        "# webhook_secret = ",
        "# [[alert_router.webhooks]]",
        "# [alert_router.syslog]",
        "# hostname = ",
        "# retrain_every = ",
    ] {
        assert!(shown.contains(key), "{key} missing from:\n{shown}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("netanom.toml");
    std::fs::write(&file, &shown).unwrap();
    let back = netanom(&["config", "--check", "--role", "detector", "--config", path(&file)], &[]);
    assert!(back.status.success(), "{}", text(&back.stderr));
    let defaults = netanom(&["config", "--check", "--role", "detector"], &[]);
    assert_eq!(text(&back.stdout), text(&defaults.stdout), "the file is the defaults");
}

#[test]
fn a_webhook_without_a_secret_is_warned_about_and_empty_variables_are_unset() {
    let hooks = ("NETANOM_ALERT_ROUTER__WEBHOOKS", "[{ url = \"http://127.0.0.1:9/x\", allow_private = true }]");
    let out = netanom(
        &["config", "--check", "--role", "alert-router"],
        &[hooks, ("NETANOM_ALERT_ROUTER__WEBHOOK_SECRET", "")],
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: alert_router.webhooks[0] (http://127.0.0.1:9/x) has no secret")
            && err.contains("not be signed"),
        "{err}"
    );
    let signed = netanom(
        &["config", "--check", "--role", "alert-router"],
        &[hooks, ("NETANOM_ALERT_ROUTER__WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")],
    );
    assert!(signed.status.success() && !text(&signed.stderr).contains("warning"), "{}", text(&signed.stderr));
    // Empty values are no values: no error for an empty duration, URL or address; the defaults stay.
    let empty = netanom(
        &["config", "--check", "--role", "alert-router"],
        &[
            ("NETANOM_TELEMETRY__OTLP_ENDPOINT", ""),
            ("NETANOM_TELEMETRY__LISTEN", ""),
            ("NETANOM_DETECTOR__RATE__COOLDOWN", ""),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
        ],
    );
    assert!(empty.status.success(), "{}", text(&empty.stderr));
    assert_eq!(text(&empty.stdout), text(&netanom(&["config", "--check", "--role", "alert-router"], &[]).stdout));
}

#[test]
fn a_truncated_capture_still_gets_its_summary_and_alerts_and_logs_are_plain_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, alerts) = (dir.path().join("cut.pcap"), dir.path().join("alerts.jsonl"));
    let synth = netanom(&["synth", "--out", path(&pcap)], &[]);
    assert!(synth.status.success(), "{}", text(&synth.stderr));
    let mut bytes = std::fs::read(&pcap).unwrap();
    bytes.truncate(bytes.len() - 30);
    std::fs::write(&pcap, bytes).unwrap();
    let out = netanom(
        &["run", "--quiet", "--pcap", path(&pcap), "--alerts-out", path(&alerts), "--log-level", "info"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "")],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("== netanom run summary ==") && stdout.contains("INPUT ENDED EARLY"), "{stdout}");
    assert!(stdout.contains("(no packets/s figure for a run under 1 s"), "a sub-second run has no rate: {stdout}");
    let n = std::fs::read_to_string(&alerts).unwrap().lines().count();
    assert!(n >= 3, "the attacks before the cut are alerted: {n} alerts\n{stdout}");
    assert!(stderr.contains("input ended early"), "the log says it: {stderr}");
    assert!(!out.stderr.contains(&0x1b), "ANSI escape codes in a piped stderr:\n{stderr}");
}

#[test]
fn a_benign_only_synthetic_capture_evaluates_to_no_attackers() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, labels) = (dir.path().join("benign.pcap"), dir.path().join("labels.csv"));
    let synth = netanom(&["synth", "--out", path(&pcap), "--labels", path(&labels), "--attacks", "none"], &[]);
    assert!(synth.status.success(), "{}", text(&synth.stderr));
    let csv = std::fs::read_to_string(&labels).unwrap();
    assert!(!csv.contains(",attacker") && csv.contains(",benign"), "{csv}");
    let eval = netanom(&["eval", "--pcap", path(&pcap), "--labels", path(&labels)], &[]);
    let shown = text(&eval.stdout);
    assert!(eval.status.success(), "{}", text(&eval.stderr));
    assert!(shown.contains("no attackers in the labels") && !shown.contains("recall 1.000"), "{shown}");
}

/// The default `netanom run` on the README's demo trains the group's isolation forest from the whole stream
/// (the detectors' shared warm-up on the models topic): the summary names a model, not "warm-up not reached",
/// a second run trains the same version, and the forest's alerts name attackers only.
#[test]
fn the_demo_run_trains_one_forest_reproducibly_and_it_alerts_on_attackers_only() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, labels) = (dir.path().join("demo.pcap"), dir.path().join("labels.csv"));
    let synth = netanom(&["synth", "--out", path(&pcap), "--labels", path(&labels)], &[]);
    assert!(synth.status.success(), "{}", text(&synth.stderr));
    let attackers: Vec<String> = std::fs::read_to_string(&labels)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_suffix(",attacker").map(str::to_string))
        .collect();
    assert!(!attackers.is_empty());
    let run = |n: usize| {
        let alerts = dir.path().join(format!("alerts-{n}.jsonl"));
        let out = netanom(
            &["run", "--quiet", "--pcap", path(&pcap), "--alerts-out", path(&alerts)],
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "")],
        );
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let version = stdout
            .split_whitespace()
            .find(|w| w.starts_with("eif-"))
            .unwrap_or_else(|| panic!("no isolation forest in force:\n{stdout}"))
            .to_string();
        let isolated: Vec<String> = std::fs::read_to_string(&alerts)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            // One incident per host across kinds: those where the forest is one of them.
            .filter(|a| a["kinds"].as_array().is_some_and(|k| k.iter().any(|k| k["kind"] == "isolation")))
            .map(|a| a["host"].as_str().unwrap_or_default().to_string())
            .collect();
        (version, isolated)
    };
    let (version, isolated) = run(1);
    assert!(!isolated.is_empty(), "the forest contributes alerts on the demo");
    assert!(
        isolated.iter().all(|h| attackers.contains(h)),
        "isolation alerts on {isolated:?}, attackers {attackers:?}"
    );
    let (again, _) = run(2);
    assert_eq!(again, version, "the same capture and seed train the same forest");
}

/// `kafka.exactly_once = true` on the embedded broker: the detectors write in Kafka transactions (the log says
/// so) and the alerts of the demo capture are those of an at-least-once run, by host, kind, first seen and count.
#[test]
fn an_exactly_once_run_gives_the_alerts_of_an_at_least_once_run() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("demo.pcap");
    let synth = netanom(&["synth", "--out", path(&pcap)], &[]);
    assert!(synth.status.success(), "{}", text(&synth.stderr));
    let run = |exactly_once: &str| {
        let alerts = dir.path().join(format!("alerts-{exactly_once}.jsonl"));
        let out = netanom(
            &["run", "--quiet", "--pcap", path(&pcap), "--alerts-out", path(&alerts), "--log-level", "info"],
            &[("NETANOM_KAFKA__EXACTLY_ONCE", exactly_once), ("OTEL_EXPORTER_OTLP_ENDPOINT", "")],
        );
        assert!(out.status.success(), "exactly_once = {exactly_once}: {}", text(&out.stderr));
        // By host, kind, the times (first seen, detected at, last seen) and count; a victim's times are those of
        // its window's closing update, exactly.
        let mut keys: Vec<(String, String, String, String, String, u64)> = std::fs::read_to_string(&alerts)
            .unwrap()
            .lines()
            .map(|l| {
                let a: serde_json::Value = serde_json::from_str(l).unwrap();
                let s = |k: &str| a[k].as_str().unwrap_or_default().to_string();
                let count = a["count"].as_u64().unwrap_or_default();
                (s("host"), s("kind"), s("first_seen"), s("detected_at"), s("last_seen"), count)
            })
            .collect();
        keys.sort();
        (keys, text(&out.stderr).contains("exactly-once output: transactions initialised"))
    };
    let (at_least_once, transactions_off) = run("false");
    let (exactly_once, transactions_on) = run("true");
    assert!(!transactions_off && transactions_on, "the transactional path is taken only when switched on");
    assert!(at_least_once.len() >= 3, "{at_least_once:?}");
    assert_eq!(exactly_once, at_least_once);
    // A transactional id for every client is refused, naming the setting to use instead.
    let shared = netanom(&["config", "--check"], &[("NETANOM_KAFKA__PROPERTIES__TRANSACTIONAL_ID", "x")]);
    assert_eq!(shared.status.code(), Some(2), "{}", text(&shared.stderr));
    assert!(
        text(&shared.stderr).contains("kafka.properties must not set transactional.id"),
        "{}",
        text(&shared.stderr)
    );
}
