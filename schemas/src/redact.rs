//! Which configuration values are secrets and how they are printed: librdkafka properties whose name says
//! password, secret, key, token or credential (plus `sasl.oauthbearer.config`, which may carry a client
//! secret) print as `***` in `Debug` output and in serialised configuration (`netanom config --check`).
//! Owns no I/O and never decides what a client receives: clients are always given the real values.

use std::collections::BTreeMap;

/// What a secret value prints as.
pub const MASK: &str = "***";

/// True for librdkafka property names whose values must never be printed, e.g. `sasl.password`,
/// `ssl.key.password`, `ssl.keystore.password`, `sasl.oauthbearer.client.secret`, `ssl.key.pem`.
pub fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "key", "token", "credential"].iter().any(|w| k.contains(w)) || k == "sasl.oauthbearer.config"
}

/// The properties with every secret value replaced by [`MASK`], for `Debug` output.
pub fn masked(props: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    props.iter().map(|(k, v)| (k.as_str(), if is_secret_property(k) { MASK } else { v.as_str() })).collect()
}

/// `#[serde(serialize_with = "netanom_schemas::redact::serialize_properties")]`: serialises the map with
/// every secret value replaced by [`MASK`], so a printed configuration never reveals it.
pub fn serialize_properties<S: serde::Serializer>(props: &BTreeMap<String, String>, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&masked(props), s)
}

/// The description and value of a client configuration error (librdkafka reports the property's value, and
/// may quote it in the description) with the value masked when the property is secret.
pub fn config_error(description: String, key: &str, value: String) -> (String, String) {
    if !is_secret_property(key) {
        return (description, value);
    }
    let description = if value.is_empty() { description } else { description.replace(&value, MASK) };
    (description, MASK.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_properties_are_masked_and_others_kept() {
        let props: BTreeMap<String, String> = [
            ("sasl.password", "canary-1"),
            ("ssl.key.password", "canary-2"),
            ("ssl.keystore.password", "canary-3"),
            ("sasl.oauthbearer.client.secret", "canary-4"),
            ("ssl.key.pem", "canary-5"),
            ("sasl.oauthbearer.config", "canary-6"),
            ("SASL.PASSWORD", "canary-7"),
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let m = masked(&props);
        let shown = format!("{m:?}") + &serde_json::to_string(&m).unwrap();
        assert!(!shown.contains("canary"), "{shown}");
        assert_eq!(m["security.protocol"], "SASL_SSL");
        assert_eq!(m["sasl.mechanism"], "SCRAM-SHA-512");
        assert_eq!(m["sasl.password"], MASK);
        let mut out = Vec::new();
        serialize_properties(&props, &mut serde_json::Serializer::new(&mut out)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("canary") && text.contains("SASL_SSL"), "{text}");
    }

    #[test]
    fn config_errors_of_secret_properties_lose_the_value() {
        let (d, v) =
            config_error("Invalid value \"canary\" for sasl.password".into(), "sasl.password", "canary".into());
        assert!(!d.contains("canary") && v == MASK, "{d} {v}");
        let (d, v) = config_error("Invalid value \"PLAIN2\"".into(), "sasl.mechanism", "PLAIN2".into());
        assert_eq!((d.as_str(), v.as_str()), ("Invalid value \"PLAIN2\"", "PLAIN2"));
    }
}
