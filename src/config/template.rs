//! The configuration file `netanom config` prints: every key with its default, and every key that has no default
//! (an optional setting, a map of extra properties, a list of webhooks, the syslog output) commented out under its
//! table with an example value and what it means. The text parses back to the defaults; uncommenting any of the
//! examples gives a file that loads.

use std::fmt::Write as _;

/// A key without a default: its table, the key, an example value (TOML) and what setting it does.
struct Optional {
    table: &'static str,
    key: &'static str,
    example: &'static str,
    meaning: &'static str,
}

const fn opt(table: &'static str, key: &'static str, example: &'static str, meaning: &'static str) -> Optional {
    Optional { table, key, example, meaning }
}

/// Every key that has no default, in the order of the tables.
const OPTIONAL: &[Optional] = &[
    opt(
        "kafka.properties",
        "\"security.protocol\"",
        "\"SASL_SSL\"",
        "extra librdkafka properties for every client (TLS, SASL, OAUTHBEARER); secrets print as ***",
    ),
    opt(
        "schemas",
        "registry_url",
        "\"http://schema-registry:8081\"",
        "Confluent Schema Registry: register the schemas at start and use its ids instead of [schemas.ids]",
    ),
    opt(
        "telemetry",
        "listen",
        "\"0.0.0.0:9100\"",
        "HTTP server with /healthz, /readyz, /metrics (and the scoring API for detector and run); unset: none",
    ),
    opt(
        "telemetry",
        "otlp_endpoint",
        "\"http://otel-collector:4317\"",
        "OTLP/gRPC endpoint for traces and metrics; unset: OTEL_EXPORTER_OTLP_ENDPOINT; empty: no export",
    ),
    opt(
        "telemetry",
        "service_name",
        "\"netanom-detector\"",
        "service.name of the exported telemetry; unset: OTEL_SERVICE_NAME, else netanom-<role>",
    ),
    opt(
        "producer",
        "pcap",
        "\"capture.pcap\"",
        "capture file to read (pcap or pcapng); exactly one of pcap, interface",
    ),
    opt("producer", "interface", "\"eth0\"", "network interface to capture from live; exactly one of pcap, interface"),
    opt("producer", "filter", "\"tcp or udp\"", "BPF filter (tcpdump syntax); unset: every packet"),
    opt(
        "producer.capture",
        "user",
        "\"nobody\"",
        "after opening the live interface, switch to this unprivileged user (needs root at start); capabilities are \
         cleared either way",
    ),
    opt(
        "producer.capture",
        "group",
        "\"nogroup\"",
        "the one group kept after the switch; unset: the user's primary group",
    ),
    opt(
        "producer.pseudonymize",
        "key_file",
        "\"/run/secrets/netanom-ip-key\"",
        "publish keyed prefix-preserving pseudonyms (ipcrypt-pfx) instead of captured addresses; the file holds 64 \
         hex digits (or set key, e.g. NETANOM_PRODUCER__PSEUDONYMIZE__KEY; prints as ***)",
    ),
    opt(
        "producer.flow",
        "max_flows",
        "262144",
        "flows tracked at most; unset: what memory_budget_mib fits (458752 at 128); must fit it",
    ),
    opt(
        "producer.outage",
        "spool_path",
        "\"outage.spool\"",
        "with on_full = \"spool\": where a live capture keeps the batches Kafka cannot take yet (bounded by \
         spool_max_mib)",
    ),
    opt(
        "detector",
        "transactional_id",
        "\"netanom-detector-0\"",
        "transactional.id with kafka.exactly_once; unset: <group_id>-<group.instance.id or host name>",
    ),
    opt(
        "detector.forest",
        "model_path",
        "\"forest.json\"",
        "load this isolation-forest model instead of training at warm-up",
    ),
    opt(
        "detector.forest",
        "save_path",
        "\"forest.json\"",
        "write the trained model (and each retrained generation) here",
    ),
    opt("detector.forest", "retrain_every", "\"6h\"", "retrain the forest every this much packet time; unset: never"),
    opt(
        "detector.autoencoder",
        "model_path",
        "\"kitnet.json\"",
        "load this model of `netanom train --autoencoder` instead of training at warm-up (with enabled = true)",
    ),
    opt("detector.autoencoder", "save_path", "\"kitnet.json\"", "write the model trained at warm-up here"),
    opt(
        "detector.supervised",
        "model_path",
        "\"rf.json\"",
        "model of `netanom train --supervised`; the supervised detector runs only when set",
    ),
    opt("detector.supervised", "threshold", "0.8", "P(attack) at which a batch is an anomaly; unset: the model's own"),
    opt(
        "detector.api",
        "token",
        "\"Zk8vQm2xR7pL4tWn9cYb\"",
        "bearer token the scoring API requires (Authorization: Bearer ...); prints as ***; unset: no token needed",
    ),
    opt(
        "alert_router",
        "webhook_secret",
        "\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"",
        "Standard Webhooks signing secret for webhooks without their own; unset: such webhooks are unsigned",
    ),
    opt("alert_router", "alerts_out", "\"alerts.jsonl\"", "append every alert as one JSON line to this file"),
    opt(
        "alert_router.suppression",
        "max_groups",
        "25000",
        "open (host, kind) windows at most; unset: what 3/8 of alert_router.memory_budget_mib fits; must fit it",
    ),
    opt(
        "alert_router.incidents",
        "max_incidents",
        "15000",
        "open incidents at most; unset: what 3/8 of alert_router.memory_budget_mib fits; must fit it",
    ),
];

/// Sections that do not exist unless configured, printed whole and commented at the end.
const SECTIONS: &str = "\
# Webhooks every alert is POSTed to (none by default); one [[alert_router.webhooks]] table each. Each delivers
# from the alerts topic with its own consumer group, <group_id>.deliver.<name>.
# [[alert_router.webhooks]]
# name = \"siem\"  # letters, digits, . _ -; unique; unset: webhook-<index>
# url = \"https://siem.example.com/hooks/netanom\"
# secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"  # unset: alert_router.webhook_secret, else unsigned
# timeout = \"5s\"
# format = \"netanom\"  # netanom, ecs or ocsf
# allow_private = false  # true: may reach loopback and private addresses
# digest_above = 0  # alerts per minute beyond which further alerts go in digests (one message naming many); 0: off
# start_from = \"earliest\"  # first start: earliest (every alert the topic holds) or latest (only new ones)

# CEF over syslog (off unless this table is present).
# [alert_router.syslog]
# enabled = true
# address = \"syslog.example.com:514\"  # required: host:port
# transport = \"udp\"  # udp or tcp
# format = \"rfc5424\"  # rfc5424 or rfc3164
# tcp_framing = \"octet_counting\"  # octet_counting or newline
# facility = 16  # 0-23 (16: local0)
# hostname = \"sensor-1\"  # unset: this machine's host name
# timeout = \"5s\"
# start_from = \"earliest\"  # first start: earliest or latest
";

/// The file for `defaults`, the default configuration serialised as TOML (`toml::to_string_pretty`).
pub fn render(defaults: &str) -> String {
    let mut lines: Vec<String> = defaults.lines().map(str::to_string).collect();
    // The webhook list is shown as the commented example at the end instead of `webhooks = []`.
    if let Some(i) = lines.iter().position(|l| l == "webhooks = []") {
        lines[i] = "# webhooks: see [[alert_router.webhooks]] at the end".into();
    }
    let mut tables: Vec<&str> = OPTIONAL.iter().map(|o| o.table).collect();
    tables.dedup();
    for table in tables {
        let mut block = Vec::new();
        for o in OPTIONAL.iter().filter(|o| o.table == table) {
            block.push(format!("# {}", o.meaning));
            block.push(format!("# {} = {}", o.key, o.example));
        }
        let header = format!("[{table}]");
        match lines.iter().position(|l| *l == header) {
            Some(h) => {
                let end = lines[h + 1..]
                    .iter()
                    .position(|l| l.is_empty() || l.starts_with('['))
                    .map_or(lines.len(), |n| h + 1 + n);
                lines.splice(end..end, block);
            }
            None => {
                // A table whose keys all lack defaults gets its header before its first sub-table.
                let sub = format!("[{table}.");
                let at = lines.iter().position(|l| l.starts_with(&sub)).unwrap_or(lines.len());
                block.insert(0, header);
                block.push(String::new());
                lines.splice(at..at, block);
            }
        }
    }
    let mut out = String::new();
    for l in &lines {
        let _ = writeln!(out, "{l}");
    }
    out.push('\n');
    out.push_str(SECTIONS);
    out
}
