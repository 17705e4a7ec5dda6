//! Secrets never reach output: canary values in Kafka security properties (TOML and environment) and webhook
//! signing keys must not appear in `Debug` of any configuration struct, in `netanom config --check`, or in the
//! logs of a `netanom run` at trace level.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use netanom::config::{Config, load};

const CANARY: &str = "CANARY-7f3a9c";
/// The start of base64(`CANARY-7f3a9c-…`): webhook signing keys must be `whsec_` + base64.
const B64_CANARY: &str = "Q0FOQVJZLTdmM2E5Yy";

/// A configuration with a distinct canary in every secret it can hold.
const TOML: &str = r#"
[kafka.properties]
"sasl.mechanism" = "SCRAM-SHA-512"
"sasl.username" = "netanom"
"sasl.password" = "CANARY-7f3a9c-sasl"
"ssl.key.password" = "CANARY-7f3a9c-keypw"
"ssl.keystore.password" = "CANARY-7f3a9c-keystore"
"sasl.oauthbearer.client.secret" = "CANARY-7f3a9c-oidc"
"sasl.oauthbearer.client.id" = "netanom-client"
"ssl.key.pem" = "CANARY-7f3a9c-pem"

[producer]
pcap = "PCAP"

[alert_router]
webhook_secret = "whsec_Q0FOQVJZLTdmM2E5Yy13ZWJob29r"
"#;

fn write_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("netanom.toml");
    let pcap = dir.join("tiny.pcap");
    netanom_producer::synth::write_pcap(&netanom_producer::synth::Scenario::benign(1, Duration::from_secs(2)), &pcap)
        .unwrap();
    std::fs::write(&path, TOML.replace("PCAP", &pcap.display().to_string())).unwrap();
    path
}

fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains(CANARY) && !text.contains(B64_CANARY), "{what} leaks a secret:\n{text}");
}

#[test]
fn debug_and_serialisation_of_every_config_struct_mask_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = load(Some(&write_config(dir.path())), Vec::new(), &[]).unwrap();
    cfg.alert_router.webhooks.push(
        toml::from_str(
            r#"url = "http://127.0.0.1:9/hook"
secret = "whsec_Q0FOQVJZLTdmM2E5Yy1ob29r""#,
        )
        .unwrap(),
    );
    // The values are really there (the clients get them).
    assert_eq!(cfg.kafka.properties["sasl.password"], "CANARY-7f3a9c-sasl");
    let check = |cfg: &Config| {
        assert_clean("Config Debug", &format!("{cfg:?} {cfg:#?}"));
        assert_clean("Kafka Debug", &format!("{:?}", cfg.kafka));
        assert_clean("ProducerConfig Debug", &format!("{:?}", cfg.producer));
        assert_clean("DetectorConfig Debug", &format!("{:?}", cfg.detector));
        assert_clean("RouterConfig Debug", &format!("{:?}", cfg.alert_router));
        assert_clean("webhooks Debug", &format!("{:?}", cfg.alert_router.webhooks));
        assert_clean("config TOML", &toml::to_string_pretty(cfg).unwrap());
    };
    check(&cfg);
    // After the shared section is copied into every role (what the services receive).
    netanom::roles::apply_shared(&mut cfg, "localhost:9092");
    assert_eq!(cfg.detector.kafka_properties["sasl.oauthbearer.client.secret"], "CANARY-7f3a9c-oidc");
    check(&cfg);
    let shown = format!("{:?}", cfg.detector);
    assert!(shown.contains("SCRAM-SHA-512") && shown.contains("\"sasl.password\": \"***\""), "{shown}");
}

/// The hand-written Debug impls list every field: a field added later without being added to Debug fails here.
#[test]
fn debug_impls_show_every_serialised_field() {
    fn fields<T: serde::Serialize>(v: &T) -> Vec<String> {
        match toml::Value::try_from(v).unwrap() {
            toml::Value::Table(t) => t.keys().cloned().collect(),
            _ => unreachable!(),
        }
    }
    let cfg = Config::default();
    for (name, keys, debug) in [
        ("producer", fields(&cfg.producer), format!("{:?}", cfg.producer)),
        ("detector", fields(&cfg.detector), format!("{:?}", cfg.detector)),
        ("alert_router", fields(&cfg.alert_router), format!("{:?}", cfg.alert_router)),
        ("kafka", fields(&cfg.kafka), format!("{:?}", cfg.kafka)),
    ] {
        for k in keys {
            assert!(debug.contains(&format!("{k}: ")), "{name} Debug misses field {k}: {debug}");
        }
    }
}

#[test]
fn properties_from_the_environment_are_dotted_strings() {
    let env = vec![
        ("NETANOM_KAFKA__PROPERTIES__SASL_PASSWORD".to_string(), "1234".to_string()),
        ("NETANOM_KAFKA__PROPERTIES__SECURITY_PROTOCOL".to_string(), "SASL_SSL".to_string()),
        ("NETANOM_KAFKA__PROPERTIES__SASL.OAUTHBEARER.CLIENT.SECRET".to_string(), "s3cret".to_string()),
        ("NETANOM_KAFKA__PROPERTIES__SSL_KEY_PASSWORD".to_string(), "true".to_string()),
        ("NETANOM_DETECTOR__RATE__THRESHOLD_PER_SEC".to_string(), "300".to_string()),
    ];
    let cfg = load(None, env, &[]).unwrap();
    let p = &cfg.kafka.properties;
    assert_eq!(p["sasl.password"], "1234", "a numeric password stays a string");
    assert_eq!(p["security.protocol"], "SASL_SSL", "the value keeps its case");
    assert_eq!(p["sasl.oauthbearer.client.secret"], "s3cret");
    assert_eq!(p["ssl.key.password"], "true", "a boolean-looking value stays a string");
    assert_eq!(p.len(), 4);
    assert_eq!(cfg.detector.rate.threshold_per_sec, 300.0, "other keys are still parsed");
}

#[test]
fn config_check_prints_masked_secrets_from_file_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_netanom"))
        .args(["config", "--check", "--config"])
        .arg(&config)
        .env("NETANOM_KAFKA__PROPERTIES__SASL_OAUTHBEARER_CLIENT_SECRET", "CANARY-7f3a9c-env")
        .env("NETANOM_ALERT_ROUTER__WEBHOOK_SECRET", "whsec_Q0FOQVJZLTdmM2E5Yy1lbnZob29r")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "config --check failed: {stderr}");
    assert_clean("config --check stdout", &stdout);
    assert_clean("config --check stderr", &stderr);
    assert!(stdout.contains(r#""sasl.password" = "***""#), "{stdout}");
    assert!(stdout.contains(r#""sasl.oauthbearer.client.secret" = "***""#), "{stdout}");
    assert!(stdout.contains(r#""sasl.mechanism" = "SCRAM-SHA-512""#), "non-secrets are shown: {stdout}");
}

#[test]
fn run_at_trace_level_never_logs_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    // Every canary, TLS key passwords and the OIDC client secret included (librdkafka receives them; the embedded
    // broker speaks plaintext, so they are not used).
    let config = write_config(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_netanom"))
        .args(["run", "--quiet", "--log-level", "trace", "--config"])
        .arg(&config)
        .env("NETANOM_KAFKA__PROPERTIES__SASL_PASSWORD", "CANARY-7f3a9c-envrun")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "run failed: {stderr}");
    assert!(stderr.contains("TRACE") || stderr.contains("DEBUG"), "nothing was logged at trace level");
    assert_clean("run stdout", &stdout);
    assert_clean("run stderr", &stderr);
}

/// A client configuration error quotes the property and its value (librdkafka and rdkafka both do): the value of
/// a secret property must be masked in the error the service prints.
#[test]
fn kafka_config_errors_do_not_print_secret_values() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let config = dir.path().join("minimal.toml");
    std::fs::write(&config, format!("[producer]\npcap = \"{}\"\n", dir.path().join("tiny.pcap").display())).unwrap();
    for (role, prop) in [("detector", "bogus.secret"), ("producer", "bogus.password"), ("alert-router", "bogus.key")] {
        let out = Command::new(env!("CARGO_BIN_EXE_netanom"))
            .args([role, "--brokers", "127.0.0.1:1", "--log-level", "trace", "--config"])
            .arg(&config)
            .env(format!("NETANOM_KAFKA__PROPERTIES__{}", prop.to_uppercase().replace('.', "_")), "CANARY-7f3a9c-bad")
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{role} accepted an unknown property");
        assert!(stderr.contains(prop), "{role}: the error names the property: {stderr}");
        assert_clean(&format!("{role} stdout"), &stdout);
        assert_clean(&format!("{role} stderr"), &stderr);
    }
}

/// The security settings docs/operations.md documents are accepted by this build of librdkafka (TLS and SCRAM need
/// OpenSSL, OIDC needs libcurl: rdkafka features `ssl` and `curl`). Creating a client validates the
/// configuration without connecting.
#[test]
fn documented_security_properties_are_accepted_by_this_build() {
    let scram = [
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanism", "SCRAM-SHA-512"),
        ("sasl.username", "netanom"),
        ("sasl.password", "pw"),
        ("ssl.ca.location", "probe"),
    ];
    let oidc = [
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanism", "OAUTHBEARER"),
        ("sasl.oauthbearer.method", "oidc"),
        ("sasl.oauthbearer.client.id", "netanom"),
        ("sasl.oauthbearer.client.secret", "s"),
        ("sasl.oauthbearer.token.endpoint.url", "https://idp.example/oauth2/token"),
        ("sasl.oauthbearer.scope", "kafka"),
    ];
    let mtls =
        [("security.protocol", "SSL"), ("ssl.endpoint.identification.algorithm", "https"), ("ssl.key.password", "pw")];
    for (name, props) in [("scram", &scram[..]), ("oidc", &oidc[..]), ("mtls", &mtls[..])] {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", "127.0.0.1:1");
        for (k, v) in props {
            c.set(*k, *v);
        }
        let created: Result<rdkafka::producer::BaseProducer, _> = c.create();
        assert!(created.is_ok(), "{name}: {:?}", created.err());
    }
}

#[test]
fn non_string_property_values_are_taken_as_strings_and_never_quoted_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typed.toml");
    std::fs::write(
        &path,
        "[kafka.properties]\n\"sasl.password\" = 7315093\n\"linger.ms\" = 5\n\"enable.ssl.certificate.verification\" = false\n",
    )
    .unwrap();
    let cfg = load(Some(&path), Vec::new(), &[]).unwrap();
    assert_eq!(cfg.kafka.properties["sasl.password"], "7315093");
    assert_eq!(cfg.kafka.properties["linger.ms"], "5");
    assert_eq!(cfg.kafka.properties["enable.ssl.certificate.verification"], "false");
    assert!(!format!("{cfg:?}").contains("7315093"));
}
