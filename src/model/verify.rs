//! Checks a model bundle before it may serve. A bundle from the model topic or the store is
//! untrusted input: it is fully loaded and checked here (metadata, file digests, shapes,
//! finite weights and threshold, feature names and order, scaler size, and a smoke score of
//! a few rows around the scaler's centre), and only a bundle that passes becomes current.
//! A rejected one is counted (`anomalyd_models_rejected_total{reason}`) and logged; the
//! scorer keeps serving what it has.

use std::path::Path;

use tch::Device;

use super::{Detector, ModelMeta};
use crate::config::ModelKind;

/// Reasons a bundle is rejected: the bounded label of `anomalyd_models_rejected_total`.
pub const REASONS: [&str; 9] = [
    "unreadable",
    "digest",
    "features",
    "shape",
    "weights",
    "not_finite",
    "smoke",
    "conflict",
    "replay",
];

/// Why a bundle may not serve.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejected {
    pub reason: &'static str,
    pub detail: String,
}

impl Rejected {
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Rejected {
            reason,
            detail: detail.into(),
        }
    }
}

/// A threshold above this many times the median calibration score is no calibration: a
/// model with it would never alert.
const MAX_THRESHOLD_RATIO: f64 = 1e6;

/// Checks the metadata alone, before anything is built from it: the features (names and
/// order) are the configured ones, the scaler fits them, the layer sizes can be built, and
/// the threshold is a finite, plausible calibration.
pub fn check_meta(meta: &ModelMeta, features: &[String]) -> Result<(), Rejected> {
    if meta.features != features {
        return Err(Rejected::new(
            "features",
            format!(
                "trained on {:?}, the input gives {:?}",
                meta.features, features
            ),
        ));
    }
    let dim = features.len();
    if meta.scaler.center.len() != dim || meta.scaler.scale.len() != dim {
        return Err(Rejected::new(
            "shape",
            format!(
                "scaler of {} / {} values for {dim} features",
                meta.scaler.center.len(),
                meta.scaler.scale.len()
            ),
        ));
    }
    if meta
        .scaler
        .center
        .iter()
        .chain(&meta.scaler.scale)
        .any(|v| !v.is_finite())
        || meta.scaler.scale.iter().any(|&s| s <= 0.0)
    {
        return Err(Rejected::new(
            "not_finite",
            "scaler values not finite (or a scale <= 0)",
        ));
    }
    let spec = &meta.spec;
    let mlp = !matches!(spec.kind, ModelKind::Pca | ModelKind::Torchscript);
    if mlp && (spec.hidden.is_empty() || spec.hidden.iter().any(|h| !(1..=1 << 16).contains(h))) {
        return Err(Rejected::new(
            "shape",
            format!("layer sizes {:?}", spec.hidden),
        ));
    }
    if spec.kind == ModelKind::Pca && (spec.pca.components < 1 || spec.pca.components > dim) {
        return Err(Rejected::new(
            "shape",
            format!("{} components for {dim} features", spec.pca.components),
        ));
    }
    let threshold = f64::from(meta.threshold.current());
    let center = f64::from(meta.center);
    if !threshold.is_finite() || !center.is_finite() {
        return Err(Rejected::new(
            "not_finite",
            format!("threshold {threshold}, centre {center}"),
        ));
    }
    if threshold > MAX_THRESHOLD_RATIO * center.abs().max(1e-6) {
        return Err(Rejected::new(
            "not_finite",
            format!("threshold {threshold} is no calibration (median score {center})"),
        ));
    }
    Ok(())
}

/// Builds the detector of `meta` and loads `weights` into it, turning any error or panic
/// of the network's construction into a rejection.
pub fn load(
    meta: ModelMeta,
    weights: &Path,
    script: Option<&Path>,
    device: Device,
) -> Result<Detector, Rejected> {
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut det = Detector::from_meta(meta, device, script)?;
        det.var_store_mut().load(weights)?;
        Ok::<_, super::ModelError>(det)
    }));
    match built {
        Ok(Ok(det)) => Ok(det),
        Ok(Err(e)) => Err(Rejected::new("weights", e.to_string())),
        Err(_) => Err(Rejected::new("weights", "building the network panicked")),
    }
}

/// Checks a loaded detector: every weight finite, and finite scores for a few rows around
/// the scaler's centre (the centre, and one and two scales to either side).
pub fn check_detector(det: &Detector) -> Result<(), Rejected> {
    for (name, t) in det.var_store().variables() {
        let finite = t.isfinite().all().int64_value(&[]) == 1;
        if !finite {
            return Err(Rejected::new(
                "not_finite",
                format!("weights {name} hold NaN or infinity"),
            ));
        }
    }
    let s = &det.meta.scaler;
    let mut rows = Vec::with_capacity(5 * s.center.len());
    for k in [0.0f32, 1.0, -1.0, 2.0, -2.0] {
        rows.extend(s.center.iter().zip(&s.scale).map(|(c, sc)| c + k * sc));
    }
    let scores = det
        .score(&rows)
        .map_err(|e| Rejected::new("smoke", e.to_string()))?
        .scores;
    if scores.len() != 5 || scores.iter().any(|v| !v.is_finite()) {
        return Err(Rejected::new(
            "smoke",
            format!("scores of rows around the scaler's centre: {scores:?}"),
        ));
    }
    Ok(())
}
