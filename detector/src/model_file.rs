//! Telling model files apart. Every model file netanom writes is one JSON object whose `format` tag names the
//! model's kind and the version of its layout (`netanom-eif-v1`: an isolation forest, layout 1) and whose
//! `features` list names the features it was trained on, in order. A loader checks the tag before it reads the
//! rest, so a file of another kind is refused by name rather than by the first field it happens to lack.

use serde::Deserialize;

/// The kinds of model file the detector loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// The isolation forest of `netanom train` and `forest.save_path` (with the host-profile model inside).
    IsolationForest,
    /// The random forest of `netanom train --supervised`.
    Supervised,
}

impl ModelKind {
    const ALL: [ModelKind; 2] = [ModelKind::IsolationForest, ModelKind::Supervised];

    /// The format tag this build writes and reads for the kind.
    pub const fn format(self) -> &'static str {
        match self {
            ModelKind::IsolationForest => "netanom-eif-v1",
            ModelKind::Supervised => "netanom-rf-v1",
        }
    }

    /// The kind, with its article, as messages name it.
    fn described(self) -> &'static str {
        match self {
            ModelKind::IsolationForest => "an isolation-forest model",
            ModelKind::Supervised => "a supervised model",
        }
    }
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
    let Ok(Tag { format: tag }) = serde_json::from_slice::<Tag>(bytes) else { return Ok(()) };
    let Some(tag) = tag else {
        return Err(format!("has no format tag: not a netanom model file, expected {}", expected.described()));
    };
    if tag == expected.format() {
        return Ok(());
    }
    Err(match ModelKind::ALL.iter().find(|k| k.format() == tag) {
        Some(k) => format!("is {} (format {tag}), expected {}", k.described(), expected.described()),
        None => format!("has format {tag:?}, expected {} (format {})", expected.described(), expected.format()),
    })
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
        let other = check_kind(br#"{"format": "netanom-eif-v0"}"#, ModelKind::IsolationForest).unwrap_err();
        assert_eq!(other, r#"has format "netanom-eif-v0", expected an isolation-forest model (format netanom-eif-v1)"#);
        assert!(check_kind(b"{}", ModelKind::Supervised).unwrap_err().starts_with("has no format tag"));
        assert_eq!(check_kind(b"\xff\x00not json", ModelKind::Supervised), Ok(()), "left to the full parse");
    }
}
