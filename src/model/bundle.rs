//! The on-disk format of a bundle's `model.json`: its own versioned types, converted from
//! and to the in-memory [`ModelMeta`] (whose `spec` is the configuration's [`ModelSpec`]).
//! A change to the configuration's types therefore cannot silently change what is stored:
//! the conversions below stop compiling first, and a format change is made here, with a
//! new `format` number and the migration from the old one.
//!
//! Format 1 is what every bundle has been so far; bundles written before the `format`
//! field existed are format 1, and the fields added along the way (`min_steps`, `scaler`,
//! `vae.score`, `vae.min_std`) take the values those bundles were trained with.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::detector::{Lineage, ModelMeta, TrainingStats};
use super::scaler::Scaler;
use super::threshold::Threshold;
use crate::config::{
    Activation, ConcreteParams, ContractiveParams, DenoisingParams, ModelKind, ModelSpec, Noise,
    PcaParams, ScalerKind, SparseParams, TorchScriptParams, VaeParams, VaeScore,
};

/// The format this version writes.
pub const FORMAT: u32 = 1;

/// `model.json` bytes for `meta`.
pub fn encode(meta: &ModelMeta) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec_pretty(&MetaV1::from(meta))
}

/// The metadata in `model.json` bytes, of any format this version reads.
pub fn decode(bytes: &[u8]) -> Result<ModelMeta, serde_json::Error> {
    let meta: MetaV1 = serde_json::from_slice(bytes)?;
    if meta.format != FORMAT {
        return Err(serde::de::Error::custom(format!(
            "bundle format {} is not one this anomalyd reads (it reads {FORMAT})",
            meta.format
        )));
    }
    Ok(meta.into())
}

/// Mirrors a configuration enum in the format, variant for variant, with conversions both
/// ways (exhaustive: a new configuration variant does not compile until it is mapped).
macro_rules! format_enum {
    ($name:ident <=> $cfg:ident { $($variant:ident),* $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        enum $name {
            $($variant),*
        }

        impl From<$cfg> for $name {
            fn from(v: $cfg) -> Self {
                match v {
                    $($cfg::$variant => $name::$variant),*
                }
            }
        }

        impl From<$name> for $cfg {
            fn from(v: $name) -> Self {
                match v {
                    $($name::$variant => $cfg::$variant),*
                }
            }
        }
    };
}

format_enum!(KindV1 <=> ModelKind {
    Dense, SparseTopk, SparseL1, SparseKl, Denoising, Contractive, Vae, Concrete, Pca,
    Torchscript,
});
format_enum!(ActivationV1 <=> Activation { Relu, Tanh, Sigmoid, Elu });
format_enum!(NoiseV1 <=> Noise { Gaussian, Masking, SaltPepper });
format_enum!(VaeScoreV1 <=> VaeScore { ReconstructionProbability, Elbo });
format_enum!(ScalerV1 <=> ScalerKind { Standard, Robust });

fn format_before_the_field() -> u32 {
    1
}

fn scaler_before_the_option() -> ScalerV1 {
    ScalerV1::Standard
}

fn vae_score_before_the_option() -> VaeScoreV1 {
    VaeScoreV1::ReconstructionProbability
}

/// Bundles written before `vae.min_std` were trained with e^-4.
fn vae_min_std_before_the_option() -> f64 {
    (-4.0f64).exp()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct MetaV1 {
    #[serde(default = "format_before_the_field")]
    format: u32,
    version: u64,
    spec: SpecV1,
    features: Vec<String>,
    scaler: Scaler,
    threshold: Threshold,
    center: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    selected_features: Option<Vec<String>>,
    training: TrainingStats,
    created_at: String,
    #[serde(default)]
    lineage: Lineage,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    files: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SpecV1 {
    kind: KindV1,
    hidden: Vec<i64>,
    activation: ActivationV1,
    warmup_records: usize,
    epochs: usize,
    /// Bundles written before the option: exactly `epochs` epochs.
    #[serde(default)]
    min_steps: usize,
    batch_size: usize,
    learning_rate: f64,
    seed: i64,
    #[serde(default = "scaler_before_the_option")]
    scaler: ScalerV1,
    sparse: SparseV1,
    denoising: DenoisingV1,
    contractive: ContractiveV1,
    vae: VaeV1,
    concrete: ConcreteV1,
    pca: PcaV1,
    torchscript: TorchScriptV1,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SparseV1 {
    k: usize,
    lambda: f64,
    rho: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DenoisingV1 {
    noise: NoiseV1,
    sigma: f64,
    fraction: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ContractiveV1 {
    lambda: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct VaeV1 {
    samples: usize,
    beta: f64,
    #[serde(default = "vae_score_before_the_option")]
    score: VaeScoreV1,
    #[serde(default = "vae_min_std_before_the_option")]
    min_std: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ConcreteV1 {
    k: usize,
    start_temperature: f64,
    end_temperature: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PcaV1 {
    components: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TorchScriptV1 {
    path: String,
}

impl From<&ModelSpec> for SpecV1 {
    fn from(s: &ModelSpec) -> Self {
        SpecV1 {
            kind: s.kind.into(),
            hidden: s.hidden.clone(),
            activation: s.activation.into(),
            warmup_records: s.warmup_records,
            epochs: s.epochs,
            min_steps: s.min_steps,
            batch_size: s.batch_size,
            learning_rate: s.learning_rate,
            seed: s.seed,
            scaler: s.scaler.into(),
            sparse: SparseV1 {
                k: s.sparse.k,
                lambda: s.sparse.lambda,
                rho: s.sparse.rho,
            },
            denoising: DenoisingV1 {
                noise: s.denoising.noise.into(),
                sigma: s.denoising.sigma,
                fraction: s.denoising.fraction,
            },
            contractive: ContractiveV1 {
                lambda: s.contractive.lambda,
            },
            vae: VaeV1 {
                samples: s.vae.samples,
                beta: s.vae.beta,
                score: s.vae.score.into(),
                min_std: s.vae.min_std,
            },
            concrete: ConcreteV1 {
                k: s.concrete.k,
                start_temperature: s.concrete.start_temperature,
                end_temperature: s.concrete.end_temperature,
            },
            pca: PcaV1 {
                components: s.pca.components,
            },
            torchscript: TorchScriptV1 {
                path: s.torchscript.path.clone(),
            },
        }
    }
}

impl From<SpecV1> for ModelSpec {
    fn from(s: SpecV1) -> Self {
        ModelSpec {
            kind: s.kind.into(),
            hidden: s.hidden,
            activation: s.activation.into(),
            warmup_records: s.warmup_records,
            epochs: s.epochs,
            min_steps: s.min_steps,
            batch_size: s.batch_size,
            learning_rate: s.learning_rate,
            seed: s.seed,
            scaler: s.scaler.into(),
            sparse: SparseParams {
                k: s.sparse.k,
                lambda: s.sparse.lambda,
                rho: s.sparse.rho,
            },
            denoising: DenoisingParams {
                noise: s.denoising.noise.into(),
                sigma: s.denoising.sigma,
                fraction: s.denoising.fraction,
            },
            contractive: ContractiveParams {
                lambda: s.contractive.lambda,
            },
            vae: VaeParams {
                samples: s.vae.samples,
                beta: s.vae.beta,
                score: s.vae.score.into(),
                min_std: s.vae.min_std,
            },
            concrete: ConcreteParams {
                k: s.concrete.k,
                start_temperature: s.concrete.start_temperature,
                end_temperature: s.concrete.end_temperature,
            },
            pca: PcaParams {
                components: s.pca.components,
            },
            torchscript: TorchScriptParams {
                path: s.torchscript.path,
            },
        }
    }
}

impl From<&ModelMeta> for MetaV1 {
    fn from(m: &ModelMeta) -> Self {
        MetaV1 {
            format: FORMAT,
            version: m.version,
            spec: SpecV1::from(&m.spec),
            features: m.features.clone(),
            scaler: m.scaler.clone(),
            threshold: m.threshold.clone(),
            center: m.center,
            selected_features: m.selected_features.clone(),
            training: m.training.clone(),
            created_at: m.created_at.clone(),
            lineage: m.lineage.clone(),
            files: m.files.clone(),
        }
    }
}

impl From<MetaV1> for ModelMeta {
    fn from(m: MetaV1) -> Self {
        ModelMeta {
            version: m.version,
            spec: m.spec.into(),
            features: m.features,
            scaler: m.scaler,
            threshold: m.threshold,
            center: m.center,
            selected_features: m.selected_features,
            training: m.training,
            created_at: m.created_at,
            lineage: m.lineage,
            files: m.files,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use tch::Device;

    use super::*;
    use crate::model::store;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bundles/format1-dense")
    }

    fn jsonl(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .expect("fixture")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }

    /// A bundle written by `main` before the format had its own types (no `format` field)
    /// passes every check a served bundle goes through, and scores and judges the records
    /// it scored when it was written exactly as it did then.
    #[test]
    fn a_bundle_written_before_the_format_field_loads_and_scores_as_it_did() {
        let dir = fixture().join("store");
        let features: Vec<String> = (0..4).map(|j| format!("f{j}")).collect();
        let checked = store::check_dir(&dir.join("v000001"), &features, Device::Cpu);
        assert!(checked.is_ok(), "rejected: {:?}", checked.err());
        let det = store::load(&dir, 1, Device::Cpu).expect("loads");
        assert_eq!(det.meta.spec.kind, ModelKind::Dense);
        assert_eq!(det.meta.spec.hidden, [8, 2]);
        assert_eq!(det.meta.spec.vae.score, VaeScore::Elbo);
        assert_eq!(det.meta.features, features);

        let rows: Vec<f32> = jsonl(&fixture().join("probe.jsonl"))
            .iter()
            .flat_map(|r| {
                features
                    .iter()
                    .map(move |f| r[f].as_f64().expect("number") as f32)
            })
            .collect();
        let then = jsonl(&fixture().join("scores.jsonl"));
        let now = det.score(&rows).expect("scores").scores;
        assert_eq!(now.len(), then.len());
        let threshold = det.threshold();
        for (i, (s, t)) in now.iter().zip(&then).enumerate() {
            let was = t["score"].as_f64().expect("score") as f32;
            assert!(
                (s - was).abs() <= 1e-6 * was.abs().max(1.0),
                "record {i}: scores {s}, scored {was} when written"
            );
            assert_eq!(*s > threshold, t["is_anomaly"] == true, "record {i}");
        }
        assert!(then.iter().any(|t| t["is_anomaly"] == true), "not vacuous");
    }

    /// Decoding then encoding keeps every stored field and value; only `format` is added.
    #[test]
    fn format1_round_trips_through_the_in_memory_types() {
        let path = fixture().join("store/v000001/model.json");
        let bytes = std::fs::read(&path).expect("fixture");
        let meta = decode(&bytes).expect("decodes");
        let again: serde_json::Value =
            serde_json::from_slice(&encode(&meta).expect("encodes")).expect("json");
        let mut stored: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        stored["format"] = serde_json::json!(FORMAT);
        assert_eq!(again, stored);
        assert_eq!(
            decode(&encode(&meta).expect("encodes")).expect("decodes"),
            meta
        );
    }

    #[test]
    fn an_unknown_format_is_refused_with_its_number() {
        let path = fixture().join("store/v000001/model.json");
        let mut stored: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("json");
        stored["format"] = serde_json::json!(2);
        let err = decode(&serde_json::to_vec(&stored).expect("json")).expect_err("refused");
        assert!(err.to_string().contains("bundle format 2"), "{err}");
    }
}
