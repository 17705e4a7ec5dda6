//! `[producer.pseudonymize]`: where the key of the address pseudonyms comes from (a file, or the value itself,
//! normally from the environment) and how it is loaded. With a key, every address the producer reads is replaced
//! by its pseudonym ([`netanom_schemas::pseudonym`]) before anything else sees it, so no captured address reaches
//! Kafka, the detector, the alert router or a log. The key is never printed: the value prints as `***` in
//! `Debug` and in `netanom config --check`, and errors name the file, never the content.

use std::path::{Path, PathBuf};

use netanom_schemas::pseudonym::{IpKey, KeyError, Pseudonymizer};
use serde::{Deserialize, Serialize};

/// `[producer.pseudonymize]`. At most one of `key` and `key_file`; neither: addresses are published as captured.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PseudonymizeConfig {
    /// The key itself, 64 hexadecimal digits (`openssl rand -hex 32`); best set from the environment
    /// (`NETANOM_PRODUCER__PSEUDONYMIZE__KEY`) or a Kubernetes Secret. Prints as `***`.
    pub key: Option<SecretText>,
    /// A file holding the key (64 hexadecimal digits; surrounding whitespace is ignored), e.g. a mounted Secret.
    pub key_file: Option<PathBuf>,
}

/// A secret string: prints and serialises as `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretText(String);

impl SecretText {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Serialises as `***`: printing a configuration never reveals the key.
impl Serialize for SecretText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(netanom_schemas::redact::MASK)
    }
}

/// Why the key could not be loaded. Never carries the key or any part of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PseudonymizeError {
    /// Both `key` and `key_file` are set.
    #[error("producer.pseudonymize: set key or key_file, not both")]
    Both,
    /// The key file could not be read.
    #[error("producer.pseudonymize.key_file {path}: cannot read it: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// The key (from `key`, or the file `key_file`) is malformed.
    #[error("producer.pseudonymize.{origin} {problem}")]
    Key {
        /// `key`, or `key_file (PATH)`.
        origin: String,
        /// What is wrong with it.
        problem: KeyError,
    },
}

impl PseudonymizeConfig {
    /// True when a key is configured.
    pub fn is_enabled(&self) -> bool {
        self.key.is_some() || self.key_file.is_some()
    }

    /// The key, read and checked; `None` when pseudonymization is off.
    pub fn load_key(&self) -> Result<Option<IpKey>, PseudonymizeError> {
        match (&self.key, &self.key_file) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(PseudonymizeError::Both),
            (Some(SecretText(text)), None) => {
                IpKey::parse(text).map(Some).map_err(|problem| PseudonymizeError::Key { origin: "key".into(), problem })
            }
            (None, Some(path)) => read_key_file(path).map(Some),
        }
    }

    /// The pseudonymizer of the configured key; `None` when pseudonymization is off.
    pub fn pseudonymizer(&self) -> Result<Option<Pseudonymizer>, PseudonymizeError> {
        Ok(self.load_key()?.map(|key| Pseudonymizer::new(&key)))
    }
}

/// Reads a key file (at most 4 KiB are read: a key is 64 characters).
pub fn read_key_file(path: &Path) -> Result<IpKey, PseudonymizeError> {
    use std::io::Read as _;
    let read = |e: std::io::Error| PseudonymizeError::Read { path: path.to_path_buf(), message: e.to_string() };
    let mut text = String::new();
    std::fs::File::open(path).map_err(read)?.take(4096).read_to_string(&mut text).map_err(read)?;
    IpKey::parse(&text)
        .map_err(|problem| PseudonymizeError::Key { origin: format!("key_file ({})", path.display()), problem })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdeffedcba98765432101032547698badcfeefcdab8967452301";

    #[test]
    fn key_from_the_value_or_a_file_and_never_printed() {
        assert_eq!(PseudonymizeConfig::default().load_key(), Ok(None));
        let inline = PseudonymizeConfig { key: Some(SecretText::new(KEY)), key_file: None };
        let expected = IpKey::parse(KEY).unwrap();
        assert_eq!(inline.load_key(), Ok(Some(expected.clone())));
        let shown = format!("{inline:?}") + &toml::to_string(&inline).unwrap();
        assert!(!shown.contains("0123") && shown.contains("***"), "{shown}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ip.key");
        std::fs::write(&path, format!("{KEY}\n")).unwrap();
        let file = PseudonymizeConfig { key: None, key_file: Some(path.clone()) };
        assert_eq!(file.load_key(), Ok(Some(expected)));

        std::fs::write(&path, "not a key at all").unwrap();
        let err = file.load_key().unwrap_err().to_string();
        assert!(err.contains("ip.key") && err.contains("64 hexadecimal") && !err.contains("not a key"), "{err}");
        let missing = PseudonymizeConfig { key: None, key_file: Some(dir.path().join("none")) };
        assert!(matches!(missing.load_key(), Err(PseudonymizeError::Read { .. })));
        let both = PseudonymizeConfig { key: Some(SecretText::new(KEY)), key_file: Some(path) };
        assert_eq!(both.load_key(), Err(PseudonymizeError::Both));
        let bad = PseudonymizeConfig { key: Some(SecretText::new("secret-but-short")), key_file: None };
        let err = bad.load_key().unwrap_err().to_string();
        assert!(!err.contains("secret-but-short") && err.starts_with("producer.pseudonymize.key "), "{err}");
    }
}
