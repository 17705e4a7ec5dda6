//! Which configuration values are secrets and how they are printed: librdkafka properties whose name says
//! password, secret, key, token or credential (plus `sasl.oauthbearer.config`, which may carry a client
//! secret) print as `***` in `Debug` output and in serialised configuration (`netanom config --check`), and so
//! does a [`Secret`] (a bearer token, a signing key). Owns no I/O and never decides what a client receives:
//! clients are always given the real values.

use std::collections::BTreeMap;

/// What a secret value prints as.
pub const MASK: &str = "***";

/// A secret configuration value (a bearer token, a webhook signing key): read from configuration like a string,
/// but prints as `***` in `Debug` and `Display` and serialises as `***`, so logs and a printed configuration
/// never reveal it. [`Secret::expose`] reads it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASK)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({MASK})")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(MASK)
    }
}

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
    fn a_secret_prints_and_serialises_masked_and_reads_back() {
        let s: Secret = serde_json::from_str(r#""canary-8""#).unwrap();
        assert_eq!(s.expose(), "canary-8");
        assert_eq!((format!("{s}"), format!("{s:?}")), (MASK.to_string(), format!("Secret({MASK})")));
        assert_eq!(serde_json::to_string(&Some(s)).unwrap(), format!("\"{MASK}\""));
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
