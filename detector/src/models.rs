//! The models a detector starts from, each read from a file of its own kind ([`crate::model_file`]): the
//! isolation forest (`forest.model_path`), the host-profile model (`profile.model_path`) and the supervised
//! random forest (`supervised.model_path`) and the autoencoder ensemble (`autoencoder.model_path`). The file of a detector that is off is not read; a detector whose
//! file is not set trains on its warm-up (isolation, profile, autoencoder) or stays off (supervised).

use std::any::{Any, TypeId};

use crate::autoencoder::{AutoencoderError, KitNet};
use crate::config::DetectorConfig;
use crate::forest::{ForestError, TrainedForest};
use crate::kind::ModelStore;
use crate::model_file::ModelKind;
use crate::profile::{ProfileError, ProfileModel};
use crate::supervised::{SupervisedDetector, SupervisedError};

/// The models an [`crate::Engine`] starts with; `Default` is none (every model trained at warm-up, no
/// supervised detector).
#[derive(Debug, Default)]
pub struct Models {
    /// The isolation forest, instead of the one trained at warm-up.
    pub forest: Option<TrainedForest>,
    /// The host-profile model, instead of the one trained on the first warm-up profiles.
    pub profiles: Option<ProfileModel>,
    /// The supervised detector with its model; `None` leaves it off.
    pub supervised: Option<SupervisedDetector>,
    /// The autoencoder ensemble, instead of the one trained at warm-up.
    pub autoencoder: Option<KitNet>,
}

/// A model in force (loaded, trained at warm-up or retrained): its kind and version. Displays as
/// `isolation forest eif-… (netanom-eif-v1)`: the kind, the model's version and the format of its kind's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInForce {
    /// Its kind.
    pub kind: ModelKind,
    /// Its version (`eif-…`, `km-…`, `rf-…`, `ae-…`).
    pub version: String,
}

impl std::fmt::Display for ModelInForce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({})", self.kind.name(), self.version, self.kind.format())
    }
}

/// Why a model file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The isolation forest.
    #[error(transparent)]
    Forest(#[from] ForestError),
    /// The host-profile model.
    #[error(transparent)]
    Profiles(#[from] ProfileError),
    /// The supervised model.
    #[error(transparent)]
    Supervised(#[from] SupervisedError),
    /// The autoencoder ensemble.
    #[error(transparent)]
    Autoencoder(#[from] AutoencoderError),
}

impl Models {
    /// Reads the model file of every detector of `config` that is on and names one, logging each version.
    pub fn load(config: &DetectorConfig) -> Result<Self, ModelError> {
        let forest = match &config.forest.model_path {
            Some(path) if config.forest.enabled => {
                let m = TrainedForest::load(path)?;
                tracing::info!(model_version = m.version(), threshold = m.threshold(), path = %path.display(),
                    "isolation model loaded");
                Some(m)
            }
            _ => None,
        };
        let profiles = match &config.profile.model_path {
            Some(path) if config.profile.enabled => {
                let m = ProfileModel::load(path)?;
                tracing::info!(model_version = m.version(), k = m.k(), threshold = m.threshold(),
                    path = %path.display(), "profile model loaded");
                Some(m)
            }
            _ => None,
        };
        let autoencoder = match &config.autoencoder.model_path {
            Some(path) if config.autoencoder.enabled => {
                let m = KitNet::load(path)?;
                tracing::info!(model_version = m.version(), subsets = m.subsets().len(), threshold = m.threshold(),
                    path = %path.display(), "autoencoder model loaded");
                Some(m)
            }
            _ => None,
        };
        Ok(Self { forest, profiles, supervised: SupervisedDetector::load(&config.supervised)?, autoencoder })
    }
}

/// Each kind takes its model when the engine builds it ([`crate::kind::Setup::take_model`]).
impl ModelStore for Models {
    fn take(&mut self, kind: TypeId) -> Option<Box<dyn Any>> {
        fn boxed<T: Any>(model: &mut Option<T>) -> Option<Box<dyn Any>> {
            model.take().map(|m| Box::new(m) as Box<dyn Any>)
        }
        if kind == TypeId::of::<TrainedForest>() {
            boxed(&mut self.forest)
        } else if kind == TypeId::of::<ProfileModel>() {
            boxed(&mut self.profiles)
        } else if kind == TypeId::of::<SupervisedDetector>() {
            boxed(&mut self.supervised)
        } else if kind == TypeId::of::<KitNet>() {
            boxed(&mut self.autoencoder)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{FeatureScratch, batch_features};
    use crate::fixtures::benign_batch;

    #[test]
    fn each_model_is_read_from_its_own_file_and_a_swapped_file_is_named() {
        let mut s = FeatureScratch::default();
        let vectors: Vec<_> = (0..300).map(|i| batch_features(&benign_batch(i).packets, &mut s)).collect();
        let opts = crate::forest::TrainOptions::from(&crate::forest::ForestConfig { trees: 5, ..Default::default() });
        let forest = crate::forest::train(&vectors, &opts).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let forest_path = dir.path().join("model.json");
        forest.save(&forest_path).unwrap();

        let mut config = DetectorConfig::default();
        let none = Models::load(&config).unwrap();
        assert!(none.forest.is_none() && none.profiles.is_none() && none.supervised.is_none());
        config.forest.model_path = Some(forest_path.clone());
        let loaded = Models::load(&config).unwrap();
        assert_eq!(loaded.forest.as_ref().map(TrainedForest::version), Some(forest.version()));
        assert!(loaded.profiles.is_none());
        // The forest's file given as the profile model.
        config.profile.model_path = Some(forest_path.clone());
        let e = Models::load(&config).unwrap_err();
        assert!(
            matches!(&e, ModelError::Profiles(ProfileError::File(f)) if matches!(f.problem, crate::model_file::Problem::Kind(_))),
            "{e:?}"
        );
        assert!(e.to_string().contains("is an isolation-forest model"), "{e}");
        // A detector that is off does not read its file.
        config.profile.enabled = false;
        config.forest.enabled = false;
        let off = Models::load(&config).unwrap();
        assert!(off.forest.is_none() && off.profiles.is_none());
    }
}
