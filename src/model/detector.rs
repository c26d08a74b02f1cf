//! Training and scoring with one autoencoder, its scaler and its threshold.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use super::ModelError;
use super::network::Network;
use super::scaler::Scaler;
use super::threshold::{Threshold, quantile};
use crate::config::{ModelKind, ModelSpec, ThresholdSpec};
use crate::model::judge::ScoreScale;

/// What a model bundle records besides its weights, in memory (stored through
/// [`super::bundle`], the versioned on-disk format).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMeta {
    pub version: u64,
    pub spec: ModelSpec,
    pub features: Vec<String>,
    pub scaler: Scaler,
    /// The threshold as calibrated on the training scores (SPOT state included).
    pub threshold: Threshold,
    /// Median calibration score: `normalized_score` is 0 there and 1 at the threshold.
    pub center: f32,
    /// Concrete autoencoder: the input features its selector nodes picked.
    pub selected_features: Option<Vec<String>>,
    pub training: TrainingStats,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The lifecycle: the model this one replaced, and why it was promoted.
    pub lineage: Lineage,
    /// SHA-256 (hex) of each of the bundle's other files, by name: a bundle whose files do
    /// not match is rejected. Empty for bundles written before it existed.
    pub files: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    pub parent: Option<u64>,
    /// `warmup`, `train` (CLI), or the promotion gate's verdict for a retrained model.
    pub promotion: String,
    /// The training window: first and last input offsets (retraining only).
    pub window: Option<(i64, i64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingStats {
    pub records: usize,
    pub epochs: usize,
    pub final_loss: f64,
    pub duration_seconds: f64,
    pub device: String,
}

/// Per-record scores and per-feature explanation terms (row-major, `scores.len() * dim`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreOutput {
    pub scores: Vec<f32>,
    pub feature_errors: Vec<f32>,
}

pub struct Detector {
    vs: nn::VarStore,
    net: Network,
    mean: Tensor,
    inv_std: Tensor,
    /// The TorchScript module file, for saving it with the bundle.
    script: Option<PathBuf>,
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
    /// A model for `meta` (weights random until trained or loaded). `script` is the
    /// TorchScript module for that kind.
    fn build(meta: ModelMeta, device: Device, script: Option<&Path>) -> Result<Self, ModelError> {
        let dim = meta.features.len() as i64;
        let vs = nn::VarStore::new(device);
        let net = Network::build(&vs.root(), dim, &meta.spec, script)?;
        let mean = Tensor::from_slice(&meta.scaler.center).to_device(device);
        let inv_std = Tensor::from_slice(&meta.scaler.scale)
            .reciprocal()
            .to_device(device);
        Ok(Detector {
            vs,
            net,
            mean,
            inv_std,
            script: script.map(Path::to_path_buf),
            meta,
        })
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

    /// The threshold as calibrated (SPOT thresholds move on in the scorer).
    pub fn threshold(&self) -> f32 {
        self.meta.threshold.current()
    }

    pub fn script_path(&self) -> Option<&Path> {
        self.script.as_deref()
    }

    fn scaled(&self, rows: &[f32]) -> Tensor {
        let dim = self.dim() as i64;
        let n = rows.len() as i64 / dim;
        let x = Tensor::from_slice(rows)
            .view([n, dim])
            .to_device(self.device());
        (x - &self.mean) * &self.inv_std
    }

    /// Trains a new model on row-major `rows` and calibrates its threshold on their scores.
    pub fn train(
        rows: &[f32],
        features: Vec<String>,
        spec: &ModelSpec,
        threshold: ThresholdSpec,
        version: u64,
        device: Device,
    ) -> Result<Self, ModelError> {
        Self::train_until(rows, features, spec, threshold, version, device, &|| false)
    }

    /// [`Detector::train`], abandoned with [`ModelError::Cancelled`] at the first epoch
    /// that starts once `stop()` is true (a shutdown need not wait for a whole run).
    pub fn train_until(
        rows: &[f32],
        features: Vec<String>,
        spec: &ModelSpec,
        threshold: ThresholdSpec,
        version: u64,
        device: Device,
        stop: &dyn Fn() -> bool,
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
        let meta = ModelMeta {
            version,
            spec: spec.clone(),
            features,
            scaler: Scaler::fit(spec.scaler, rows, dim),
            threshold: Threshold::Fixed { value: f32::NAN },
            center: 0.0,
            selected_features: None,
            training: TrainingStats {
                records: n,
                epochs: spec.epochs_for(n),
                final_loss: f64::NAN,
                duration_seconds: 0.0,
                device: format!("{device:?}"),
            },
            created_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            lineage: Lineage::default(),
            files: Default::default(),
        };
        let script =
            (spec.kind == ModelKind::Torchscript).then(|| PathBuf::from(&spec.torchscript.path));
        // libtorch's generator is process-global: hold the lock while seeding and drawing
        // from it, so a seed gives the same model whatever else trains concurrently.
        let _rng = TRAIN_RNG.lock().unwrap_or_else(|p| p.into_inner());
        tch::manual_seed(spec.seed);
        let mut det = Detector::build(meta, device, script.as_deref())?;
        let xs = det.scaled(rows);
        det.meta.training.final_loss = if det.net.trainable() {
            det.fit(&xs, spec, stop)?
        } else {
            det.net.fit_pca(&xs);
            det.score_scaled(&xs)?
                .scores
                .iter()
                .map(|&s| s as f64)
                .sum::<f64>()
                / n as f64
        };
        if let Some(c) = det.net.as_concrete() {
            let names = &det.meta.features;
            det.meta.selected_features = Some(
                c.selected()?
                    .into_iter()
                    .map(|i| names.get(i as usize).cloned().unwrap_or_default())
                    .collect(),
            );
        }
        let scores = det.score_scaled(&xs)?.scores;
        det.meta.center = quantile(&scores, 0.5);
        det.meta.threshold = Threshold::calibrate(threshold, &scores)
            .map_err(|e| ModelError::Threshold(e.to_string()))?;
        det.meta.training.duration_seconds = started.elapsed().as_secs_f64();
        Ok(det)
    }

    /// Minibatch Adam over shuffled epochs; returns the last epoch's mean loss.
    fn fit(
        &mut self,
        xs: &Tensor,
        spec: &ModelSpec,
        stop: &dyn Fn() -> bool,
    ) -> Result<f64, ModelError> {
        let n = xs.size()[0];
        let device = self.device();
        let bounds = (xs.amin(0, true), xs.amax(0, true));
        let mut opt = nn::Adam::default().build(&self.vs, spec.learning_rate)?;
        let bs = (spec.batch_size as i64).min(n);
        let epochs = self.meta.training.epochs;
        let mut last = f64::NAN;
        for epoch in 0..epochs {
            if stop() {
                return Err(ModelError::Cancelled);
            }
            self.net.anneal(spec, epoch, epochs);
            let perm = Tensor::randperm(n, (Kind::Int64, device));
            let (mut total, mut steps, mut start) = (0.0, 0, 0);
            while start < n {
                let len = bs.min(n - start);
                let xb = xs.index_select(0, &perm.narrow(0, start, len));
                let loss = self.net.loss(&xb, spec, &bounds);
                opt.backward_step(&loss);
                total += loss.double_value(&[]);
                steps += 1;
                start += len;
            }
            last = total / steps as f64;
        }
        Ok(last)
    }

    fn score_scaled(&self, x: &Tensor) -> Result<ScoreOutput, ModelError> {
        tch::no_grad(|| {
            let (terms, explain) = self.net.terms(x)?;
            let scores = terms.mean_dim(1, false, Kind::Float);
            Ok(ScoreOutput {
                scores: to_vec(&scores)?,
                feature_errors: to_vec(&explain)?,
            })
        })
    }

    /// Scores row-major `rows`: the mean over features of the per-feature score terms
    /// (squared reconstruction error of the standardised features, or the VAE's negative
    /// log-likelihood), with the per-feature terms that explain each score.
    pub fn score(&self, rows: &[f32]) -> Result<ScoreOutput, ModelError> {
        if rows.is_empty() {
            return Ok(ScoreOutput {
                scores: Vec::new(),
                feature_errors: Vec::new(),
            });
        }
        self.score_scaled(&self.scaled(rows))
    }

    /// The model's score scale ([`ScoreScale`]): its center and calibrated threshold.
    pub fn scale(&self) -> ScoreScale {
        ScoreScale {
            center: self.meta.center,
            calibrated_threshold: self.threshold(),
        }
    }

    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// A model for saved metadata whose weights the caller loads into [`Self::var_store_mut`].
    pub fn from_meta(
        meta: ModelMeta,
        device: Device,
        script: Option<&Path>,
    ) -> Result<Self, ModelError> {
        Detector::build(meta, device, script)
    }

    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{Activation, ModelKind};

    /// The validated model settings for `kind` on 8 features (the embedded defaults with
    /// small, fast training).
    pub fn spec_for(kind: ModelKind) -> ModelSpec {
        let mut raw = crate::config::load_raw(None).expect("defaults");
        raw.input.features = features();
        raw.model.kind = kind;
        raw.model.hidden = vec![16, 3];
        raw.model.activation = Activation::Tanh;
        raw.model.epochs = 60;
        raw.model.min_steps = 0;
        raw.model.batch_size = 64;
        raw.model.learning_rate = 0.005;
        raw.model.seed = 7;
        raw.model.vae.samples = 8;
        raw.model.torchscript.path = ae8_fixture().display().to_string();
        crate::config::Settings::validate(raw).expect("valid").model
    }

    pub fn spec() -> ModelSpec {
        spec_for(ModelKind::Dense)
    }

    pub fn ae8_fixture() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torchscript/ae8.pt")
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

    pub fn train_kind(kind: ModelKind) -> Detector {
        train_spec(&spec_for(kind))
    }

    fn train_spec(spec: &ModelSpec) -> Detector {
        tch::set_num_threads(1);
        Detector::train(
            &normal_rows(500, 0),
            features(),
            spec,
            ThresholdSpec::Quantile { quantile: 0.99 },
            1,
            Device::Cpu,
        )
        .expect("trains")
    }

    pub fn trained() -> Detector {
        train_kind(ModelKind::Dense)
    }

    /// The generic check every variant passes: anomalies injected into held-out data
    /// (single features shifted by 3 standard deviations... of the raw data scale) score
    /// above the threshold far more often than held-out normal points, and a save -> load
    /// round trip gives identical scores.
    fn check_variant(spec: ModelSpec) {
        let kind = spec.kind;
        let det = train_spec(&spec);
        let t = det.threshold();
        assert!(t.is_finite(), "{kind:?}: threshold {t}");
        let normal = det.score(&normal_rows(300, 10_000)).expect("score").scores;
        let mut anomalous = normal_rows(300, 20_000);
        for (i, row) in anomalous.chunks_exact_mut(8).enumerate() {
            row[i % 8] += 3.0;
        }
        let out = det.score(&anomalous).expect("score");
        let rate = |s: &[f32]| s.iter().filter(|&&x| x > t).count() as f64 / s.len() as f64;
        let (normal_rate, anomaly_rate) = (rate(&normal), rate(&out.scores));
        println!("{kind:?}: anomalies flagged {anomaly_rate:.3}, normal flagged {normal_rate:.3}");
        assert!(
            anomaly_rate >= 0.8,
            "{kind:?}: anomalies flagged {anomaly_rate}"
        );
        assert!(normal_rate <= 0.1, "{kind:?}: normal flagged {normal_rate}");

        let dir = tempfile::tempdir().expect("tempdir");
        crate::model::store::save(dir.path(), &det).expect("save");
        // Loaded through the checks that guard serving: every kind passes them.
        let loaded =
            crate::model::store::load_checked(dir.path(), 1, &det.meta.features, Device::Cpu)
                .unwrap_or_else(|r| panic!("{kind:?}: rejected: {r}"));
        let mut meta = loaded.meta.clone();
        assert!(meta.files.contains_key("weights.safetensors"));
        meta.files.clear();
        assert_eq!(meta, det.meta, "{kind:?}: metadata round trip");
        assert_eq!(
            loaded.score(&anomalous).expect("score"),
            out,
            "{kind:?}: save -> load gives identical scores"
        );
    }

    macro_rules! variant_tests {
        ($($name:ident => $spec:expr),* $(,)?) => {
            $(#[test] fn $name() { check_variant($spec); })*
        };
    }

    /// `kind` with the robust scaler (and, for the VAE, the negative-ELBO score).
    fn robust(kind: ModelKind) -> ModelSpec {
        let mut spec = spec_for(kind);
        spec.scaler = crate::config::ScalerKind::Robust;
        spec.vae.score = crate::config::VaeScore::Elbo;
        spec
    }

    variant_tests! {
        variant_dense => spec_for(ModelKind::Dense),
        variant_sparse_topk => spec_for(ModelKind::SparseTopk),
        variant_sparse_l1 => spec_for(ModelKind::SparseL1),
        variant_sparse_kl => spec_for(ModelKind::SparseKl),
        variant_denoising => spec_for(ModelKind::Denoising),
        variant_contractive => spec_for(ModelKind::Contractive),
        variant_vae => spec_for(ModelKind::Vae),
        variant_concrete => spec_for(ModelKind::Concrete),
        variant_pca => spec_for(ModelKind::Pca),
        variant_torchscript => spec_for(ModelKind::Torchscript),
        variant_dense_robust => robust(ModelKind::Dense),
        variant_vae_elbo_robust => robust(ModelKind::Vae),
        variant_pca_robust => robust(ModelKind::Pca),
    }

    #[test]
    fn vae_elbo_adds_the_kl_term_and_keeps_the_explanation() {
        let mut spec = spec_for(ModelKind::Vae);
        spec.vae.score = crate::config::VaeScore::Elbo;
        spec.vae.beta = 2.0;
        let elbo = train_spec(&spec);
        let mut meta = elbo.meta.clone();
        meta.spec.vae.score = crate::config::VaeScore::ReconstructionProbability;
        let mut recprob = Detector::from_meta(meta, Device::Cpu, None).expect("build");
        recprob
            .var_store_mut()
            .copy(elbo.var_store())
            .expect("same weights");
        let rows = normal_rows(50, 30_000);
        let score = |d: &Detector| d.score(&rows).expect("score");
        let (a, b) = (score(&elbo), score(&recprob));
        assert_eq!(a.feature_errors, b.feature_errors, "explanations unchanged");
        // beta * KL / d with KL > 0: a trained posterior is never exactly the prior.
        for (e, r) in a.scores.iter().zip(&b.scores) {
            assert!(e > r, "elbo {e} <= reconstruction probability {r}");
        }
        // The difference is beta * KL / d, KL computed here from the encoder's outputs.
        let Network::Vae(v) = &elbo.net else {
            panic!("a VAE")
        };
        let (mu, logvar) = v.encode(&elbo.scaled(&rows));
        let (mu, logvar) = (to_vec(&mu).expect("mu"), to_vec(&logvar).expect("logvar"));
        let latent = mu.len() / a.scores.len();
        for (i, (e, r)) in a.scores.iter().zip(&b.scores).enumerate() {
            let kl: f32 = (i * latent..(i + 1) * latent)
                .map(|j| -0.5 * (1.0 + logvar[j] - mu[j] * mu[j] - logvar[j].exp()))
                .sum();
            let expected = 2.0 * kl / 8.0;
            assert!(
                (e - r - expected).abs() < 1e-4 * expected.max(1.0),
                "{e} - {r} != {expected}"
            );
        }
    }

    /// A feature constant in training must not get a vanishing decoder variance: a later
    /// deviation in it would then score without bound and drown every other feature.
    #[test]
    fn vae_decoder_variance_is_floored_at_min_std() {
        let constant_last = |rows: Vec<f32>| -> Vec<f32> {
            rows.chunks(8)
                .flat_map(|r| r[..7].iter().copied().chain([0.0]))
                .collect()
        };
        let train = constant_last(normal_rows(500, 0));
        let mut probe = constant_last(normal_rows(1, 600));
        probe[7] = 1.0; // scale 1: a constant feature keeps unit scale
        let last_term = |min_std: f64| {
            let mut spec = spec_for(ModelKind::Vae);
            spec.epochs = 400;
            spec.vae.min_std = min_std;
            tch::set_num_threads(1);
            let det = Detector::train(
                &train,
                features(),
                &spec,
                ThresholdSpec::Quantile { quantile: 0.99 },
                1,
                Device::Cpu,
            )
            .expect("train");
            det.score(&probe).expect("score").feature_errors[7]
        };
        // resid / 2 = (x - mu)^2 / (2 sigma^2): at most (1 + 0.1)^2 / (2 * 0.1^2) with the
        // floor (the mean of a constant feature within 0.1 of it).
        let floored = last_term(0.1);
        assert!(floored <= 60.5, "floored term {floored}");
        let unfloored = last_term((-4.0f64).exp());
        assert!(
            unfloored > 4.0 * floored,
            "without the floor the variance collapses: {unfloored} vs {floored}"
        );
    }

    #[test]
    fn concrete_reports_its_selected_features() {
        let det = train_kind(ModelKind::Concrete);
        let selected = det
            .meta
            .selected_features
            .clone()
            .expect("selected features");
        assert_eq!(selected.len(), det.meta.spec.concrete.k);
        assert!(
            selected.iter().all(|f| features().contains(f)),
            "{selected:?}"
        );
    }

    #[test]
    fn torchscript_fixture_reproduces_pytorch_outputs() {
        let check: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(ae8_fixture().with_file_name("ae8_check.json"))
                .expect("check file"),
        )
        .expect("json");
        let rows = |k: &str| -> Vec<f32> {
            check[k]
                .as_array()
                .expect("rows")
                .iter()
                .flat_map(|r| {
                    r.as_array()
                        .expect("row")
                        .iter()
                        .map(|v| v.as_f64().expect("f") as f32)
                })
                .collect()
        };
        let (input, expected) = (rows("inputs"), rows("outputs"));
        let m = tch::CModule::load(ae8_fixture()).expect("loads");
        let x = Tensor::from_slice(&input).view([-1, 8]);
        let y = m.forward_ts(&[x]).expect("forward");
        let got = Vec::<f32>::try_from(&y.view(-1)).expect("vec");
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() < 1e-5, "tch {g} vs PyTorch {e}");
        }
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
            ThresholdSpec::Quantile { quantile: 0.9 },
            1,
            Device::Cpu,
        );
        assert!(matches!(err, Err(ModelError::Training { .. })));
    }
}
