//! The configuration as written: serde structs that mirror `config/default.toml`.
//! Unknown keys are rejected here; value checks happen in [`super::validate`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub kafka: RawKafka,
    pub input: RawInput,
    pub pipeline: RawPipeline,
    pub model: RawModel,
    pub threshold: RawThreshold,
    pub retrain: RawRetrain,
    pub cluster: RawCluster,
    pub state: RawState,
    pub alerts: RawAlerts,
    pub http: RawHttp,
    pub log: RawLog,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// Memory for per-key state (windows, likelihoods, discords), e.g. "512MiB".
    pub memory: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafka {
    pub brokers: String,
    pub group_id: String,
    pub input_topic: String,
    pub scores_topic: String,
    pub alerts_topic: String,
    pub dlq_topic: String,
    pub auto_offset_reset: OffsetReset,
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub statistics_interval: Duration,
    pub group_instance_id: String,
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OffsetReset {
    Earliest,
    Latest,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawInput {
    pub mode: InputMode,
    pub features: Vec<String>,
    pub array_field: String,
    pub key_field: String,
    pub timestamp_field: String,
    pub window: RawWindow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputMode {
    Fields,
    Window,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    pub size: usize,
    pub differences: bool,
    pub max_keys: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    pub channel_capacity: usize,
    pub max_in_flight: usize,
    pub max_records: usize,
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub kind: ModelKind,
    pub hidden: Vec<i64>,
    pub activation: Activation,
    pub warmup_records: usize,
    pub epochs: usize,
    pub min_steps: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: i64,
    pub scaler: ScalerKind,
    pub device: DeviceChoice,
    pub threads: usize,
    pub store_dir: String,
    pub keep: usize,
    pub sparse: SparseParams,
    pub denoising: DenoisingParams,
    pub contractive: ContractiveParams,
    pub vae: VaeParams,
    pub concrete: ConcreteParams,
    pub pca: PcaParams,
    pub torchscript: TorchScriptParams,
}

/// The autoencoder family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Deep undercomplete autoencoder.
    Dense,
    /// k-sparse (Makhzani & Frey 2013): only the k largest-magnitude code units are kept.
    SparseTopk,
    /// L1 penalty on the code activations.
    SparseL1,
    /// KL(rho || rho_hat) penalty on the mean activation of sigmoid code units (Ng 2011).
    SparseKl,
    /// Denoising (Vincent et al. 2008): corrupted inputs in training, clean targets.
    Denoising,
    /// Contractive (Rifai et al. 2011): penalty on the encoder Jacobian's Frobenius norm.
    Contractive,
    /// Variational (Kingma & Welling 2014) scored by reconstruction probability (An & Cho 2015).
    Vae,
    /// Concrete autoencoder (Abid, Balin & Zou 2019): learns to select k input features.
    Concrete,
    /// Linear baseline: top-p principal components.
    Pca,
    /// A user's TorchScript module (standardised x -> reconstruction).
    Torchscript,
}

impl ModelKind {
    pub const ALL: [ModelKind; 10] = [
        ModelKind::Dense,
        ModelKind::SparseTopk,
        ModelKind::SparseL1,
        ModelKind::SparseKl,
        ModelKind::Denoising,
        ModelKind::Contractive,
        ModelKind::Vae,
        ModelKind::Concrete,
        ModelKind::Pca,
        ModelKind::Torchscript,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Dense => "dense",
            ModelKind::SparseTopk => "sparse_topk",
            ModelKind::SparseL1 => "sparse_l1",
            ModelKind::SparseKl => "sparse_kl",
            ModelKind::Denoising => "denoising",
            ModelKind::Contractive => "contractive",
            ModelKind::Vae => "vae",
            ModelKind::Concrete => "concrete",
            ModelKind::Pca => "pca",
            ModelKind::Torchscript => "torchscript",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SparseParams {
    pub k: usize,
    pub lambda: f64,
    pub rho: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Noise {
    Gaussian,
    Masking,
    SaltPepper,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DenoisingParams {
    pub noise: Noise,
    pub sigma: f64,
    pub fraction: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContractiveParams {
    pub lambda: f64,
}

pub use anomalyd_detect::scaler::ScalerKind;

/// What the VAE reports as a record's anomaly score.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VaeScore {
    /// An & Cho (2015): -log p(x|z) averaged over L samples z ~ q(z|x).
    #[default]
    ReconstructionProbability,
    /// The negative ELBO: the reconstruction probability plus KL(q(z|x) || N(0, I)), so
    /// a record whose code is unlikely under the prior scores high too.
    Elbo,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VaeParams {
    pub samples: usize,
    pub beta: f64,
    pub score: VaeScore,
    /// The decoder's smallest standard deviation, in scaled units.
    pub min_std: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConcreteParams {
    pub k: usize,
    pub start_temperature: f64,
    pub end_temperature: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PcaParams {
    pub components: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TorchScriptParams {
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Tanh,
    Sigmoid,
    Elu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawThreshold {
    pub kind: ThresholdKind,
    pub quantile: f64,
    pub risk: f64,
    pub init_level: f64,
    pub depth: usize,
    pub likelihood: RawLikelihood,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLikelihood {
    pub warmup: usize,
    pub average: usize,
    pub history: usize,
    pub reestimate: usize,
    pub red: f64,
    pub refractory: usize,
    pub spatial_tolerance: f64,
    pub max_keys: usize,
    pub input: LikelihoodInput,
    pub memory: usize,
    pub segment: usize,
}

/// What each key's anomaly likelihood is fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LikelihoodInput {
    /// The input mode's measured best: `discord` in window mode, else `score`.
    Auto,
    /// The model's score, in its calibrated units.
    Score,
    /// The key's window discord distance (window mode).
    Discord,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdKind {
    /// The input mode's measured best: `likelihood` in window mode (fed discords, see
    /// [`LikelihoodInput::Auto`]), else `quantile`.
    Auto,
    Quantile,
    Spot,
    Dspot,
    Likelihood,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    pub top_features: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetrain {
    #[serde(with = "humantime_serde")]
    pub interval: std::time::Duration,
    pub every_records: u64,
    pub window: usize,
    pub margin: usize,
    pub min_records: usize,
    pub holdout: f64,
    pub tolerance: f64,
    pub max_threshold_ratio: f64,
    pub alert_budget: f64,
    pub drift_records: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub role: Role,
    pub model_topic: String,
}

/// What one replica does (see `[cluster]` in `config/default.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Consume, score, retrain and keep the store: a single replica.
    All,
    /// Consume the input in the group and score with the models the trainer publishes.
    Scorer,
    /// Consume the whole input, retrain, and publish promoted models; produces no scores.
    Trainer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Scorer => "scorer",
            Role::Trainer => "trainer",
        }
    }
}
