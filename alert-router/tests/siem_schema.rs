//! Validates the OCSF Detection Finding events the router writes against the JSON Schema of class 2004 that the
//! PyPI package `ocsf-json-schema` generates from its packaged OCSF schema, using `check-jsonschema`, and checks
//! that they carry every attribute the packaged OCSF schema marks *recommended* for the class (and for
//! `finding_info` and its `analytic`; profile attributes aside, as the events declare no profile) except the few
//! that do not apply to a network sensor, each named with its reason. Both packages are pinned in `.ci/requirements.txt` and installed into `.venv` by `bash .ci/setup`;
//! without them these tests fail (they do not skip).

use std::path::{Path, PathBuf};
use std::process::Command;

use netanom_alert_router::AlertFormat;
use netanom_alert_router::format::{OCSF_VERSION, render};
use netanom_schemas::{Alert, AnomalyKind, Contribution};
use serde_json::Value;

/// Processing time of the rendered events.
const PROCESSED: time::OffsetDateTime = time::macros::datetime!(2024-06-10 06:14:41 UTC);

fn venv_tool(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `bash .ci/setup` in the repository root (it installs the pinned validators into .venv)",
        path.display()
    );
    path
}

fn alert(kind: &str, host: &str, target: Option<&str>, score: f64) -> Alert {
    Alert {
        id: format!("{kind}/{host}/1718000000000000000"),
        host: host.into(),
        kind: *AnomalyKind::ALL.iter().find(|k| k.to_string() == kind).unwrap(),
        score,
        threshold: 10.0,
        first_seen: time::macros::datetime!(2024-06-10 06:13:20 UTC),
        last_seen: time::macros::datetime!(2024-06-10 06:13:41.5 UTC),
        detected_at: Some(time::macros::datetime!(2024-06-10 06:13:41.5 UTC)),
        count: 7,
        reason: format!("{kind}: score {score} | over \"threshold\"\n10"),
        target: target.map(Into::into),
        sample: format!("{host}:4242 > 10.9.9.9:80 TCP [S] len 60"),
        features: vec![Contribution { name: "pps".into(), value: score, baseline: None }],
        model_version: "rules-v1".into(),
        revision: 1,
        final_revision: true,
        kinds: Vec::new(),
        totals: Default::default(),
    }
}

/// Runs check-jsonschema with `schema` over `files`; (success, output).
fn check(schema: &Path, files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(venv_tool("check-jsonschema"))
        .arg("--schemafile")
        .arg(schema)
        .args(files)
        .output()
        .expect("running check-jsonschema");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn alerts() -> [Alert; 5] {
    [
        alert("rate", "10.0.0.1", None, 30.0),
        alert("fanout", "10.0.0.2", Some("10.9.9.9"), 50.0),
        alert("victim", "10.0.0.9", Some("10.0.0.9"), 900.0),
        alert("isolation", "2001:db8::7", None, 0.5),
        alert("rate", "not-an-address", None, 11.0),
    ]
}

/// The packaged OCSF schema (the whole schema export: classes, objects, dictionary) of `version`.
fn packaged_ocsf(version: &str) -> Value {
    let out = Command::new(venv_tool("python"))
        .arg("-c")
        .arg("import ocsf_json_schema, os; print(os.path.dirname(ocsf_json_schema.__file__))")
        .output()
        .unwrap();
    assert!(out.status.success(), "ocsf-json-schema is not installed: run `bash .ci/setup`");
    let dir = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let path = dir.join("ocsf").join(format!("{version}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// Names of the attributes `attributes` (an OCSF attribute table) marks `recommended`, leaving out those of
/// profiles (`security_control`, `host`, …), which the events do not declare.
fn recommended(attributes: &Value) -> Vec<String> {
    let mut names: Vec<String> = attributes
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, a)| a["requirement"] == "recommended" && a.get("profile").is_none_or(Value::is_null))
        .map(|(name, _)| name.clone())
        .collect();
    names.sort();
    names
}

/// Recommended Detection Finding attributes the events leave out, with the reason.
const NOT_APPLICABLE: &[(&str, &str)] = &[
    ("resources", "cloud resources: a packet sensor sees none"),
    ("status_code", "no vendor status code: the status is always New"),
    ("status_detail", "no vendor status detail: the status is always New"),
];

#[test]
fn ocsf_events_carry_every_recommended_attribute_that_applies() {
    for version in [OCSF_VERSION, "1.1.0"] {
        let schema = packaged_ocsf(version);
        let class = &schema["classes"]["detection_finding"]["attributes"];
        let class_recommended = recommended(class);
        for must in ["confidence_id", "observables", "evidences", "message", "status_id"] {
            // observables became recommended in 1.3.
            if must != "observables" || version != "1.1.0" {
                assert!(class_recommended.iter().any(|r| r == must), "OCSF {version}: {must} is not recommended");
            }
        }
        let info_recommended = recommended(&schema["objects"]["finding_info"]["attributes"]);
        assert_eq!(info_recommended, ["analytic"], "OCSF {version}");
        let analytic_recommended = recommended(&schema["objects"]["analytic"]["attributes"]);
        for a in alerts() {
            let e = render(&a, AlertFormat::Ocsf, PROCESSED);
            for name in &class_recommended {
                let skipped = NOT_APPLICABLE.iter().any(|(n, _)| n == name);
                assert_ne!(e.get(name).is_some(), skipped, "OCSF {version} {}: {name} (present = skipped)", a.kind);
            }
            let analytic = &e["finding_info"]["analytic"];
            assert!(analytic.is_object(), "OCSF {version}: no finding_info.analytic in {e:#}");
            for name in &analytic_recommended {
                assert!(analytic.get(name).is_some(), "OCSF {version}: no finding_info.analytic.{name}");
            }
            let type_id = analytic["type_id"].to_string();
            assert!(
                schema["objects"]["analytic"]["attributes"]["type_id"]["enum"].get(&type_id).is_some(),
                "analytic.type_id {type_id} is not in the OCSF {version} enum"
            );
            let confidence = e["confidence_id"].to_string();
            assert!(["1", "2", "3"].contains(&confidence.as_str()), "confidence_id {confidence}");
            assert!(class["confidence_id"]["enum"].get(&confidence).is_some());
            for o in e["observables"].as_array().unwrap() {
                // The observable names an attribute of this event that holds its value.
                let path: Vec<&str> = o["name"].as_str().unwrap().split('.').collect();
                let mut node = &e[path[0]][0];
                for p in &path[1..] {
                    node = &node[*p];
                }
                assert_eq!(node, &o["value"], "{o} in {e:#}");
                let expected = if a.host.parse::<std::net::IpAddr>().is_ok() { 2 } else { 1 };
                assert_eq!(o["type_id"], expected, "{o}");
            }
        }
    }
}

#[test]
fn ocsf_events_validate_against_the_detection_finding_schema() {
    let dir = tempfile::tempdir().unwrap();
    let python = venv_tool("python");
    let alerts = alerts();
    let mut files = Vec::new();
    for (i, a) in alerts.iter().enumerate() {
        let path = dir.path().join(format!("event-{i}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&render(a, AlertFormat::Ocsf, PROCESSED)).unwrap()).unwrap();
        files.push(path);
    }
    // Negative control: the validator must reject what OCSF forbids.
    let mut bad = render(&alerts[0], AlertFormat::Ocsf, PROCESSED);
    bad["severity_id"] = serde_json::json!(42);
    bad["not_an_ocsf_attribute"] = serde_json::json!(true);
    bad.as_object_mut().unwrap().remove("finding_info");
    let bad_path = dir.path().join("bad.json");
    std::fs::write(&bad_path, serde_json::to_vec(&bad).unwrap()).unwrap();

    // The version the events declare, and the oldest the module documentation promises.
    for version in [OCSF_VERSION, "1.1.0"] {
        let schema = dir.path().join(format!("detection_finding-{version}.json"));
        let script = "import json, sys\n\
                      from ocsf_json_schema import get_ocsf_schema, OcsfJsonSchemaEmbedded\n\
                      s = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=sys.argv[1]))\n\
                      json.dump(s.get_class_schema('detection_finding'), open(sys.argv[2], 'w'))\n";
        let out = Command::new(&python).arg("-c").arg(script).arg(version).arg(&schema).output().unwrap();
        assert!(
            out.status.success(),
            "generating the OCSF {version} schema failed (run `bash .ci/setup` to install ocsf-json-schema): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let generated: serde_json::Value = serde_json::from_slice(&std::fs::read(&schema).unwrap()).unwrap();
        assert_eq!(generated["properties"]["class_uid"]["const"], 2004, "{version}: not the Detection Finding schema");

        let (ok, text) = check(&schema, &files);
        assert!(ok, "OCSF {version} rejected the rendered events:\n{text}");
        let (ok, text) = check(&schema, std::slice::from_ref(&bad_path));
        assert!(!ok, "OCSF {version} accepted an invalid event:\n{text}");
        for expected in ["severity_id", "not_an_ocsf_attribute", "finding_info"] {
            assert!(text.contains(expected), "OCSF {version}: no complaint about {expected}:\n{text}");
        }
    }
}
