//! Telling model files apart. Every model file netanom writes holds one model of one kind, as one JSON object
//! whose `format` tag names the kind and the version of its layout (`netanom-eif-v1`: an isolation forest,
//! layout 1) and whose `features` list names the features it was trained on, in order. A loader checks the tag
//! before it reads the rest, so a file of another kind is refused by name rather than by the first field it
//! happens to lack, and then checks the feature list against this build's feature table
//! ([`crate::features`]), so a model trained on other features is refused with the differences named.
//! Every kind is written by [`save`] and read by [`load`], through its [`ModelFile`] implementation.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a model file could not be read or written as a model of its kind.
#[derive(Debug, thiserror::Error)]
#[error("{}", match problem {
    Problem::Io(e) => format!("model file {}: {e}", path.display()),
    Problem::Format(what) => format!("model file {}: {what}", path.display()),
    Problem::Kind(what) | Problem::Features(what) => format!("{} {what}", path.display()),
})]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: Problem,
}

/// What is wrong with a model file.
#[derive(Debug)]
pub enum Problem {
    /// Reading or writing it failed.
    Io(std::io::Error),
    /// It is of another kind or another format version ([`check_kind`]).
    Kind(String),
    /// It was trained on other features than this build's ([`check_features`]).
    Features(String),
    /// It is not a valid model of its kind.
    Format(String),
}

/// The kinds of model file the detector loads, one file each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumIter)]
pub enum ModelKind {
    /// The isolation forest of `netanom train --out` and `forest.save_path` (key `forest.model_path`).
    IsolationForest,
    /// The k-means host-profile model of `netanom train --profile-out` (key `profile.model_path`).
    Profiles,
    /// The random forest of `netanom train --supervised` (key `supervised.model_path`).
    Supervised,
    /// The autoencoder ensemble of `netanom train --autoencoder` (key `autoencoder.model_path`).
    Autoencoder,
}

impl ModelKind {
    /// The format tag this build writes and reads for the kind.
    pub const fn format(self) -> &'static str {
        match self {
            ModelKind::IsolationForest => "netanom-eif-v1",
            ModelKind::Profiles => "netanom-profile-kmeans-v1",
            ModelKind::Supervised => "netanom-rf-v1",
            ModelKind::Autoencoder => "netanom-kitnet-v1",
        }
    }

    /// The kind as a run's summary names it.
    pub const fn name(self) -> &'static str {
        match self {
            ModelKind::IsolationForest => "isolation forest",
            ModelKind::Profiles => "host profiles",
            ModelKind::Supervised => "supervised forest",
            ModelKind::Autoencoder => "autoencoder ensemble",
        }
    }

    /// The kind, with its article, as messages name it.
    pub const fn described(self) -> &'static str {
        match self {
            ModelKind::IsolationForest => "an isolation-forest model",
            ModelKind::Profiles => "a host-profile (k-means) model",
            ModelKind::Supervised => "a supervised model",
            ModelKind::Autoencoder => "an autoencoder (KitNET) model",
        }
    }
}

/// A model that lives in a file of its own kind.
pub trait ModelFile: Serialize + DeserializeOwned {
    /// Its kind, and so its format tag.
    const KIND: ModelKind;
    /// This build's feature table for the kind, which the file's feature list must equal.
    const FEATURE_NAMES: &'static [&'static str];
    /// The feature list the file records.
    fn features(&self) -> &[String];
    /// Checks the values of a model just read (lengths, ranges, references between parts) and completes what
    /// is derived rather than stored (its version, its scoring form), so that scoring can neither panic nor
    /// loop on a damaged or hostile file. Says what is wrong otherwise.
    fn checked(self) -> Result<Self, String>;
}

/// Writes `model` as JSON to `path`.
pub fn save<M: ModelFile>(path: &Path, model: &M) -> Result<(), FileError> {
    let fail = |problem| FileError { path: path.to_path_buf(), problem };
    let file = std::fs::File::create(path).map_err(|e| fail(Problem::Io(e)))?;
    let mut w = BufWriter::new(file);
    serde_json::to_writer(&mut w, model).map_err(|e| fail(Problem::Format(e.to_string())))?;
    w.flush().map_err(|e| fail(Problem::Io(e)))
}

/// Reads a model file written by [`save`]: its kind ([`check_kind`]), its JSON, its feature list
/// ([`check_features`]) and its values ([`ModelFile::checked`]).
pub fn load<M: ModelFile>(path: &Path) -> Result<M, FileError> {
    let fail = |problem| FileError { path: path.to_path_buf(), problem };
    let text = std::fs::read(path).map_err(|e| fail(Problem::Io(e)))?;
    check_kind(&text, M::KIND).map_err(|what| fail(Problem::Kind(what)))?;
    let model: M = serde_json::from_slice(&text).map_err(|e| fail(Problem::Format(e.to_string())))?;
    check_features(model.features(), M::FEATURE_NAMES).map_err(|what| fail(Problem::Features(what)))?;
    model.checked().map_err(|what| fail(Problem::Format(what)))
}

#[derive(Deserialize)]
struct Tag {
    format: Option<String>,
}

/// Checks that `bytes`, the content of a model file, is a model of kind `expected` in this build's layout.
/// Otherwise says what the file is, as the rest of a sentence starting with its path: `is a supervised model
/// (format netanom-rf-v1), expected an isolation-forest model`. Content that is not a JSON object passes: the
/// loader's full parse then says where it breaks.
pub fn check_kind(bytes: &[u8], expected: ModelKind) -> Result<(), String> {
    use strum::IntoEnumIterator;
    let Ok(Tag { format: tag }) = serde_json::from_slice::<Tag>(bytes) else { return Ok(()) };
    let Some(tag) = tag else {
        return Err(format!("has no format tag: not a netanom model file, expected {}", expected.described()));
    };
    if tag == expected.format() {
        return Ok(());
    }
    Err(match ModelKind::iter().find(|k| k.format() == tag) {
        Some(k) => format!("is {} (format {tag}), expected {}", k.described(), expected.described()),
        None => format!("has format {tag:?}, expected {} (format {})", expected.described(), expected.format()),
    })
}

/// Checks the feature list of a model file against this build's feature table `build`. Otherwise names the
/// differences, as the rest of a sentence starting with the file's path: `was trained on other features than
/// this build: not in this build [x]; missing from the file [y]`, or, when only the order differs, the first
/// position where it does.
pub fn check_features(file: &[String], build: &[&str]) -> Result<(), String> {
    if file.iter().map(String::as_str).eq(build.iter().copied()) {
        return Ok(());
    }
    let unknown: Vec<&str> = file.iter().map(String::as_str).filter(|f| !build.contains(f)).collect();
    let missing: Vec<&str> = build.iter().copied().filter(|b| !file.iter().any(|f| f == b)).collect();
    let mut parts = Vec::new();
    if !unknown.is_empty() {
        parts.push(format!("not in this build {unknown:?}"));
    }
    if !missing.is_empty() {
        parts.push(format!("missing from the file {missing:?}"));
    }
    if parts.is_empty() {
        // Same names, other order or repeats: the first position that differs.
        let (i, (f, b)) = file
            .iter()
            .map(String::as_str)
            .map(Some)
            .chain(std::iter::repeat(None))
            .zip(build.iter().copied().map(Some).chain(std::iter::repeat(None)))
            .enumerate()
            .find(|(_, (f, b))| f != b)
            .unwrap_or((0, (None, None)));
        let name = |n: Option<&str>| n.map_or_else(|| "nothing".to_string(), |n| format!("{n:?}"));
        parts.push(format!("feature {i} is {} in the file, {} in this build", name(f), name(b)));
    }
    Err(format!("was trained on other features than this build: {}", parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_another_kind_is_named() {
        let rf = br#"{"format": "netanom-rf-v1", "features": [], "trees": []}"#;
        assert_eq!(
            check_kind(rf, ModelKind::IsolationForest).unwrap_err(),
            "is a supervised model (format netanom-rf-v1), expected an isolation-forest model"
        );
        assert_eq!(check_kind(rf, ModelKind::Supervised), Ok(()));
        let eif = br#"{"format": "netanom-eif-v1"}"#;
        assert_eq!(
            check_kind(eif, ModelKind::Supervised).unwrap_err(),
            "is an isolation-forest model (format netanom-eif-v1), expected a supervised model"
        );
        let km = br#"{"format": "netanom-profile-kmeans-v1"}"#;
        assert_eq!(
            check_kind(km, ModelKind::IsolationForest).unwrap_err(),
            "is a host-profile (k-means) model (format netanom-profile-kmeans-v1), expected an isolation-forest model"
        );
        assert_eq!(
            check_kind(eif, ModelKind::Profiles).unwrap_err(),
            "is an isolation-forest model (format netanom-eif-v1), expected a host-profile (k-means) model"
        );
        assert_eq!(
            check_kind(br#"{"format": "netanom-kitnet-v1"}"#, ModelKind::Supervised).unwrap_err(),
            "is an autoencoder (KitNET) model (format netanom-kitnet-v1), expected a supervised model"
        );
        let other = check_kind(br#"{"format": "netanom-eif-v0"}"#, ModelKind::IsolationForest).unwrap_err();
        assert_eq!(other, r#"has format "netanom-eif-v0", expected an isolation-forest model (format netanom-eif-v1)"#);
        assert!(check_kind(b"{}", ModelKind::Supervised).unwrap_err().starts_with("has no format tag"));
        assert_eq!(check_kind(b"\xff\x00not json", ModelKind::Supervised), Ok(()), "left to the full parse");
    }

    #[test]
    fn a_feature_list_of_another_build_is_refused_with_the_differences() {
        let build = ["a", "b", "c"];
        let file = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(check_features(&file(&["a", "b", "c"]), &build), Ok(()));
        assert_eq!(
            check_features(&file(&["a", "x", "c"]), &build).unwrap_err(),
            r#"was trained on other features than this build: not in this build ["x"]; missing from the file ["b"]"#
        );
        assert_eq!(
            check_features(&file(&["a", "b"]), &build).unwrap_err(),
            r#"was trained on other features than this build: missing from the file ["c"]"#
        );
        assert_eq!(
            check_features(&file(&["a", "c", "b"]), &build).unwrap_err(),
            r#"was trained on other features than this build: feature 1 is "c" in the file, "b" in this build"#
        );
        assert_eq!(
            check_features(&file(&["a", "b", "c", "c"]), &build).unwrap_err(),
            r#"was trained on other features than this build: feature 3 is "c" in the file, nothing in this build"#
        );
    }
}
