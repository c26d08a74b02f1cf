//! The autoencoder, its scaler and threshold, and model persistence.
//!
//! A [`Detector`] is everything needed to score: the network, the feature scaler, the
//! calibrated threshold and the metadata that describes them. It lives on one thread (the
//! scorer): tch tensors are `Send` but not `Sync`.

pub mod bundle;
pub(crate) mod detector;
pub mod device;
pub mod network;
pub mod store;
pub mod verify;

// The decision rules live in the libtorch-free `anomalyd-detect` crate.
pub use anomalyd_detect::{discord, judge, likelihood, scaler, spot, threshold, window};

pub use detector::{Detector, Lineage, ModelMeta, ScoreOutput, TrainingStats};

/// Hex SHA-256 of `bytes`: the digests of bundle files, and of dead-lettered payloads.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("model store {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("model metadata {path}: {source}")]
    Meta {
        path: std::path::PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot train on {records} records of {dim} features: {reason}")]
    Training {
        records: usize,
        dim: usize,
        reason: &'static str,
    },
    #[error("saved model does not fit the configuration: {0}")]
    Mismatch(String),
    #[error("threshold calibration: {0}")]
    Threshold(String),
    #[error("training stopped: the daemon is shutting down")]
    Cancelled,
    #[error("encoding the likelihood state: {0}")]
    LikelihoodState(#[from] postcard::Error),
}
