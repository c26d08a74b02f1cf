//! Training and scoring with one autoencoder, its scaler and its threshold.

use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Reduction, Tensor};

use super::scaler::StandardScaler;
use super::threshold::quantile;
use super::{DenseAutoencoder, ModelError};
use crate::config::{ModelSpec, ThresholdSpec};

/// What a model bundle records besides its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub version: u64,
    pub spec: ModelSpec,
    pub features: Vec<String>,
    pub scaler: StandardScaler,
    pub threshold_quantile: f64,
    pub threshold: f32,
    pub training: TrainingStats,
    /// RFC 3339, UTC.
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingStats {
    pub records: usize,
    pub epochs: usize,
    pub final_loss: f64,
    pub duration_seconds: f64,
    pub device: String,
}

/// Per-record scores and per-feature squared errors (row-major, `scores.len() * dim`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreOutput {
    pub scores: Vec<f32>,
    pub feature_errors: Vec<f32>,
}

pub struct Detector {
    vs: nn::VarStore,
    ae: DenseAutoencoder,
    mean: Tensor,
    inv_std: Tensor,
    pub meta: ModelMeta,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("meta", &self.meta)
            .finish()
    }
}

static TRAIN_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn to_vec(t: &Tensor) -> Result<Vec<f32>, ModelError> {
    let flat = t
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous()
        .view(-1);
    Ok(Vec::<f32>::try_from(&flat)?)
}

impl Detector {
    /// An untrained network for `meta` (weights random until trained or loaded).
    fn build(meta: ModelMeta, device: Device) -> Self {
        let dim = meta.features.len() as i64;
        let vs = nn::VarStore::new(device);
        let ae = DenseAutoencoder::new(&vs.root(), dim, &meta.spec.hidden, meta.spec.activation);
        let mean = Tensor::from_slice(&meta.scaler.mean).to_device(device);
        let inv_std = Tensor::from_slice(&meta.scaler.std)
            .reciprocal()
            .to_device(device);
        Detector {
            vs,
            ae,
            mean,
            inv_std,
            meta,
        }
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    pub fn dim(&self) -> usize {
        self.meta.features.len()
    }

    pub fn version(&self) -> u64 {
        self.meta.version
    }

    pub fn threshold(&self) -> f32 {
        self.meta.threshold
    }

    fn scaled(&self, rows: &[f32]) -> Tensor {
        let dim = self.dim() as i64;
        let n = rows.len() as i64 / dim;
        let x = Tensor::from_slice(rows)
            .view([n, dim])
            .to_device(self.device());
        (x - &self.mean) * &self.inv_std
    }

    /// Trains a new model on row-major `rows` and calibrates its threshold on them.
    pub fn train(
        rows: &[f32],
        features: Vec<String>,
        spec: &ModelSpec,
        threshold: ThresholdSpec,
        version: u64,
        device: Device,
    ) -> Result<Self, ModelError> {
        let started = Instant::now();
        let dim = features.len();
        let n = rows.len() / dim.max(1);
        if dim == 0 || n < 2 || !rows.len().is_multiple_of(dim) {
            return Err(ModelError::Training {
                records: n,
                dim,
                reason: "need at least 2 complete records",
            });
        }
        let ThresholdSpec::Quantile(q) = threshold;
        let meta = ModelMeta {
            version,
            spec: spec.clone(),
            features,
            scaler: StandardScaler::fit(rows, dim),
            threshold_quantile: q,
            threshold: f32::NAN,
            training: TrainingStats {
                records: n,
                epochs: spec.epochs,
                final_loss: f64::NAN,
                duration_seconds: 0.0,
                device: format!("{device:?}"),
            },
            created_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        };
        // libtorch's generator is process-global: hold the lock while seeding and drawing
        // from it, so a seed gives the same model whatever else trains concurrently.
        let _rng = TRAIN_RNG.lock().unwrap_or_else(|p| p.into_inner());
        tch::manual_seed(spec.seed);
        let mut det = Detector::build(meta, device);
        let xs = det.scaled(rows);
        let mut opt = nn::Adam::default().build(&det.vs, spec.learning_rate)?;
        let bs = spec.batch_size.min(n) as i64;
        let mut last = f64::NAN;
        for _ in 0..spec.epochs {
            let perm = Tensor::randperm(n as i64, (Kind::Int64, device));
            let mut total = 0.0;
            let mut steps = 0;
            let mut start = 0;
            while start < n as i64 {
                let len = bs.min(n as i64 - start);
                let xb = xs.index_select(0, &perm.narrow(0, start, len));
                let loss = det.ae.forward(&xb).mse_loss(&xb, Reduction::Mean);
                opt.backward_step(&loss);
                total += loss.double_value(&[]);
                steps += 1;
                start += len;
            }
            last = total / steps as f64;
        }
        let scores = det.score(rows)?.scores;
        det.meta.threshold = quantile(&scores, q);
        det.meta.training.final_loss = last;
        det.meta.training.duration_seconds = started.elapsed().as_secs_f64();
        Ok(det)
    }

    /// Scores row-major `rows`: the mean squared reconstruction error of the standardised
    /// features, with each feature's squared error for explanations.
    pub fn score(&self, rows: &[f32]) -> Result<ScoreOutput, ModelError> {
        if rows.is_empty() {
            return Ok(ScoreOutput {
                scores: Vec::new(),
                feature_errors: Vec::new(),
            });
        }
        tch::no_grad(|| {
            let x = self.scaled(rows);
            let err = (self.ae.forward(&x) - &x).square();
            let scores = err.mean_dim(1, false, Kind::Float);
            Ok(ScoreOutput {
                scores: to_vec(&scores)?,
                feature_errors: to_vec(&err)?,
            })
        })
    }

    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// A model for saved metadata whose weights the caller loads into [`Self::var_store_mut`].
    pub fn from_meta(meta: ModelMeta, device: Device) -> Self {
        Detector::build(meta, device)
    }

    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{Activation, ModelKind};

    pub fn spec() -> ModelSpec {
        ModelSpec {
            kind: ModelKind::Dense,
            hidden: vec![16, 2],
            activation: Activation::Tanh,
            warmup_records: 500,
            epochs: 60,
            batch_size: 64,
            learning_rate: 0.005,
            seed: 7,
        }
    }

    /// Normal data lies near a 2-D plane inside 8-D space; noise is deterministic.
    pub fn normal_rows(n: usize, offset: usize) -> Vec<f32> {
        let mut rows = Vec::with_capacity(n * 8);
        for i in offset..offset + n {
            let a = (i as f32 * 0.37).sin();
            let b = (i as f32 * 0.11).cos();
            for j in 0..8 {
                let noise = (((i * 31 + j * 17) % 23) as f32 / 23.0 - 0.5) * 0.05;
                rows.push(a * (j as f32 + 1.0) * 0.3 + b * (8.0 - j as f32) * 0.2 + noise);
            }
        }
        rows
    }

    pub fn features() -> Vec<String> {
        (0..8).map(|j| format!("f{j}")).collect()
    }

    pub fn trained() -> Detector {
        tch::set_num_threads(1);
        Detector::train(
            &normal_rows(500, 0),
            features(),
            &spec(),
            ThresholdSpec::Quantile(0.99),
            1,
            Device::Cpu,
        )
        .expect("trains")
    }

    #[test]
    fn anomalies_score_above_threshold_more_often_than_normal_points() {
        let det = trained();
        assert!(det.threshold().is_finite() && det.threshold() > 0.0);
        let normal = det.score(&normal_rows(300, 10_000)).expect("score").scores;
        // Anomalies: break the correlation structure by shifting single features.
        let mut anomalous = normal_rows(300, 20_000);
        for (i, row) in anomalous.chunks_exact_mut(8).enumerate() {
            row[i % 8] += 3.0;
        }
        let out = det.score(&anomalous).expect("score");
        let t = det.threshold();
        let normal_rate = normal.iter().filter(|&&s| s > t).count() as f64 / 300.0;
        let anomaly_rate = out.scores.iter().filter(|&&s| s > t).count() as f64 / 300.0;
        assert!(anomaly_rate > 0.9, "anomalies flagged: {anomaly_rate}");
        assert!(normal_rate < 0.1, "normal flagged: {normal_rate}");
        // The shifted feature carries most of the error.
        let dim = 8;
        let hits = (0..300)
            .filter(|&i| {
                let e = &out.feature_errors[i * dim..(i + 1) * dim];
                let top = e
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(j, _)| j);
                top == Some(i % 8)
            })
            .count();
        // Chance is 1 in 8; the shifted feature should lead in most records.
        assert!(hits > 150, "top feature is the shifted one in {hits}/300");
    }

    #[test]
    fn too_few_records_is_an_error() {
        let err = Detector::train(
            &[1.0; 8],
            features(),
            &spec(),
            ThresholdSpec::Quantile(0.9),
            1,
            Device::Cpu,
        );
        assert!(matches!(err, Err(ModelError::Training { .. })));
    }
}
