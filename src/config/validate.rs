//! Raw configuration -> checked settings. Every error names the key it is about.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;
use super::raw::{
    Activation, ConcreteParams, ContractiveParams, DenoisingParams, DeviceChoice, InputMode,
    LikelihoodInput, LogFormat, ModelKind, OffsetReset, PcaParams, RawConfig, Role, ScalerKind,
    SparseParams, ThresholdKind, TorchScriptParams, VaeParams,
};
use crate::model::discord::DiscordParams;
use crate::model::likelihood::LikelihoodParams;
pub use anomalyd_detect::threshold::ThresholdSpec;

#[derive(Debug, Clone)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub input: InputSpec,
    pub batch: BatchPolicy,
    pub model: ModelSpec,
    pub runtime: ModelRuntime,
    pub threshold: ThresholdSpec,
    pub retrain: RetrainPolicy,
    pub cluster: ClusterSettings,
    pub state: StateBudget,
    pub top_features: usize,
    pub http_listen: SocketAddr,
    pub log_format: LogFormat,
}

/// The memory budget for per-key state, and what one key costs in it (upper bounds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StateBudget {
    pub memory: u64,
    /// Window state of a key (window mode), else 0.
    pub window_key_bytes: usize,
    /// Anomaly-likelihood state of a key (`threshold.kind = "likelihood"`), else 0.
    pub likelihood_key_bytes: usize,
}

impl StateBudget {
    /// Keys whose state fits the budget.
    pub fn keys(&self) -> usize {
        let per_key = (self.window_key_bytes + self.likelihood_key_bytes).max(1) as u64;
        (self.memory / per_key) as usize
    }
}

#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub group_id: String,
    pub input_topic: String,
    pub scores_topic: String,
    pub alerts_topic: String,
    pub dlq_topic: String,
    pub auto_offset_reset: OffsetReset,
    pub session_timeout: Duration,
    pub commit_interval: Duration,
    pub statistics_interval: Duration,
    /// Static group membership (`group.instance.id`): a restarted replica with the same id
    /// gets its partitions back without a rebalance.
    pub group_instance_id: Option<String>,
    pub properties: BTreeMap<String, String>,
}

/// How a record becomes a feature vector.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub shape: InputShape,
    pub key_field: Option<String>,
    pub timestamp_field: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum InputShape {
    /// Named numeric fields, in this order.
    Fields { names: Vec<String> },
    /// One numeric array field; `names` label its positions.
    Array { field: String, names: Vec<String> },
    /// Per key, a sliding window over one numeric field.
    Window {
        field: String,
        size: usize,
        differences: bool,
        max_keys: usize,
    },
}

impl InputSpec {
    /// Names of the model's input features, in vector order.
    pub fn feature_names(&self) -> Vec<String> {
        match &self.shape {
            InputShape::Fields { names } | InputShape::Array { names, .. } => names.clone(),
            InputShape::Window {
                field,
                size,
                differences,
                ..
            } => (0..*size)
                .rev()
                .map(|lag| {
                    let d = if *differences { "diff " } else { "" };
                    if lag == 0 {
                        format!("{d}{field}[t]")
                    } else {
                        format!("{d}{field}[t-{lag}]")
                    }
                })
                .collect(),
        }
    }

    /// The feature holding a record's newest raw value: window mode without differences.
    pub fn value_feature(&self) -> Option<usize> {
        match &self.shape {
            InputShape::Window {
                size,
                differences: false,
                ..
            } => Some(size - 1),
            _ => None,
        }
    }

    pub fn dim(&self) -> usize {
        match &self.shape {
            InputShape::Fields { names } | InputShape::Array { names, .. } => names.len(),
            InputShape::Window { size, .. } => *size,
        }
    }
}

/// This replica's part in a deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSettings {
    pub role: Role,
    /// Where the trainer publishes promoted models and scorers read them (roles `scorer`
    /// and `trainer` only).
    pub model_topic: String,
    /// The key of this deployment's models in the topic: the scorers' consumer group id.
    pub model_key: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrainPolicy {
    pub interval: Option<Duration>,
    pub every_records: Option<u64>,
    pub window: usize,
    pub margin: usize,
    pub min_records: usize,
    pub holdout: f64,
    pub tolerance: f64,
    pub max_threshold_ratio: f64,
    pub alert_budget: f64,
    pub drift_records: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    pub channel_capacity: usize,
    /// Records consumed but not yet delivered, at most: the source pauses beyond it.
    pub max_in_flight: usize,
    pub max_records: usize,
    pub linger: Duration,
    pub drain_timeout: Duration,
}

/// The model's settings. Stored in bundles through `model::bundle`'s own format types.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub kind: ModelKind,
    pub hidden: Vec<i64>,
    pub activation: Activation,
    pub warmup_records: usize,
    pub epochs: usize,
    /// At least this many minibatch steps: small training sets get more epochs.
    pub min_steps: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: i64,
    pub scaler: ScalerKind,
    pub sparse: SparseParams,
    pub denoising: DenoisingParams,
    pub contractive: ContractiveParams,
    pub vae: VaeParams,
    pub concrete: ConcreteParams,
    pub pca: PcaParams,
    pub torchscript: TorchScriptParams,
}

impl ModelSpec {
    /// Epochs over `records` training records: `epochs`, or more when that many would
    /// take fewer than `min_steps` minibatch steps.
    pub fn epochs_for(&self, records: usize) -> usize {
        let per_epoch = records.div_ceil(self.batch_size.max(1)).max(1);
        self.epochs.max(self.min_steps.div_ceil(per_epoch))
    }

    /// The code (latent) size: the last hidden layer.
    pub fn bottleneck(&self) -> i64 {
        self.hidden.last().copied().unwrap_or(1)
    }
}

/// Where and how models run and are kept (not part of a model's identity).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRuntime {
    pub device: DeviceChoice,
    pub threads: usize,
    pub store_dir: Option<PathBuf>,
    /// Versions kept in the store (the current one always is).
    pub keep: usize,
}

fn in_unit(key: &'static str, v: f64) -> Result<f64, ConfigError> {
    if v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err(ConfigError::invalid(
            key,
            format!("must be in (0, 1), got {v}"),
        ))
    }
}

fn non_negative(key: &'static str, v: f64) -> Result<f64, ConfigError> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(ConfigError::invalid(
            key,
            format!("must be a finite number >= 0, got {v}"),
        ))
    }
}

/// `k` when set, else `auto`; must lie in 1..=max.
fn count(key: &'static str, k: usize, auto: i64, max: i64) -> Result<usize, ConfigError> {
    let k = if k == 0 { auto.max(1) } else { k as i64 };
    if k < 1 || k > max {
        return Err(ConfigError::invalid(
            key,
            format!("must be in 1..={max}, got {k}"),
        ));
    }
    Ok(k as usize)
}

/// Encoder sizes for `hidden = []`: a wider first layer, then a bottleneck of a quarter of
/// the inputs (at least 1).
pub fn auto_hidden(dim: i64) -> Vec<i64> {
    let bottleneck = ((dim + 3) / 4).max(1);
    let first = (2 * dim).clamp(8, 128);
    vec![first, bottleneck]
}

fn non_empty(key: &'static str, v: &str) -> Result<String, ConfigError> {
    if v.trim().is_empty() {
        Err(ConfigError::invalid(key, "must not be empty"))
    } else {
        Ok(v.to_string())
    }
}

fn optional(v: &str) -> Option<String> {
    (!v.trim().is_empty()).then(|| v.to_string())
}

fn positive(key: &'static str, v: usize) -> Result<usize, ConfigError> {
    if v == 0 {
        Err(ConfigError::invalid(key, "must be at least 1"))
    } else {
        Ok(v)
    }
}

impl Settings {
    pub fn validate(raw: RawConfig) -> Result<Settings, ConfigError> {
        let k = raw.kafka;
        let mut kafka = KafkaSettings {
            brokers: non_empty("kafka.brokers", &k.brokers)?,
            group_id: non_empty("kafka.group_id", &k.group_id)?,
            input_topic: non_empty("kafka.input_topic", &k.input_topic)?,
            scores_topic: non_empty("kafka.scores_topic", &k.scores_topic)?,
            alerts_topic: non_empty("kafka.alerts_topic", &k.alerts_topic)?,
            dlq_topic: non_empty("kafka.dlq_topic", &k.dlq_topic)?,
            auto_offset_reset: k.auto_offset_reset,
            session_timeout: k.session_timeout,
            commit_interval: k.commit_interval,
            statistics_interval: k.statistics_interval,
            group_instance_id: optional(&k.group_instance_id),
            properties: k.properties,
        };
        if kafka.session_timeout < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "kafka.session_timeout",
                "must be at least 1s",
            ));
        }
        if kafka.statistics_interval < Duration::from_millis(100) {
            return Err(ConfigError::invalid(
                "kafka.statistics_interval",
                "must be at least 100ms",
            ));
        }
        if kafka.commit_interval.is_zero() {
            return Err(ConfigError::invalid(
                "kafka.commit_interval",
                "must be above 0",
            ));
        }

        let i = raw.input;
        if i.features.is_empty() {
            return Err(ConfigError::invalid(
                "input.features",
                "needs at least one field",
            ));
        }
        if let Some(bad) = i.features.iter().find(|f| f.trim().is_empty()) {
            return Err(ConfigError::invalid(
                "input.features",
                format!("empty field name {bad:?}"),
            ));
        }
        let array_field = optional(&i.array_field);
        let shape = match (i.mode, array_field) {
            (InputMode::Fields, None) => InputShape::Fields { names: i.features },
            (InputMode::Fields, Some(field)) => InputShape::Array {
                field,
                names: i.features,
            },
            (InputMode::Window, Some(_)) => {
                return Err(ConfigError::invalid(
                    "input.array_field",
                    "is not used in window mode; leave it empty",
                ));
            }
            (InputMode::Window, None) => {
                let [field] = <[String; 1]>::try_from(i.features).map_err(|f| {
                    ConfigError::invalid(
                        "input.features",
                        format!("window mode takes exactly one field, got {}", f.len()),
                    )
                })?;
                if i.window.size < 2 {
                    return Err(ConfigError::invalid(
                        "input.window.size",
                        "must be at least 2",
                    ));
                }
                InputShape::Window {
                    field,
                    size: i.window.size,
                    differences: i.window.differences,
                    max_keys: positive("input.window.max_keys", i.window.max_keys)?,
                }
            }
        };
        let input = InputSpec {
            shape,
            key_field: optional(&i.key_field),
            timestamp_field: optional(&i.timestamp_field),
        };

        let p = raw.pipeline;
        let batch = BatchPolicy {
            channel_capacity: positive("pipeline.channel_capacity", p.channel_capacity)?,
            max_in_flight: positive("pipeline.max_in_flight", p.max_in_flight)?,
            max_records: positive("pipeline.max_records", p.max_records)?,
            linger: p.linger,
            drain_timeout: p.drain_timeout,
        };

        let m = raw.model;
        let dim = input.dim() as i64;
        let hidden = if m.hidden.is_empty() {
            auto_hidden(dim)
        } else {
            m.hidden
        };
        if hidden.iter().any(|&h| h < 1) {
            return Err(ConfigError::invalid(
                "model.hidden",
                "layer sizes must be >= 1",
            ));
        }
        if hidden.last().is_some_and(|&b| b >= dim) {
            return Err(ConfigError::invalid(
                "model.hidden",
                format!(
                    "the bottleneck ({}) must be smaller than the {dim} input features \
                     (an undercomplete autoencoder); [] picks sizes automatically",
                    hidden.last().copied().unwrap_or_default()
                ),
            ));
        }
        if !(m.learning_rate.is_finite() && m.learning_rate > 0.0) {
            return Err(ConfigError::invalid(
                "model.learning_rate",
                "must be a positive number",
            ));
        }
        let bottleneck = hidden.last().copied().unwrap_or(1);
        let quarter = (dim + 3) / 4;
        let sparse = SparseParams {
            k: count("model.sparse.k", m.sparse.k, bottleneck / 2, bottleneck)?,
            lambda: non_negative("model.sparse.lambda", m.sparse.lambda)?,
            rho: in_unit("model.sparse.rho", m.sparse.rho)?,
        };
        let denoising = DenoisingParams {
            noise: m.denoising.noise,
            sigma: non_negative("model.denoising.sigma", m.denoising.sigma)?,
            fraction: in_unit("model.denoising.fraction", m.denoising.fraction)?,
        };
        let contractive = ContractiveParams {
            lambda: non_negative("model.contractive.lambda", m.contractive.lambda)?,
        };
        let vae = VaeParams {
            samples: positive("model.vae.samples", m.vae.samples)?,
            beta: non_negative("model.vae.beta", m.vae.beta)?,
            score: m.vae.score,
            min_std: match m.vae.min_std {
                v if v.is_finite() && v > 0.0 => v,
                _ => {
                    return Err(ConfigError::invalid(
                        "model.vae.min_std",
                        "must be a positive number",
                    ));
                }
            },
        };
        let c = m.concrete;
        if !(c.end_temperature > 0.0 && c.end_temperature <= c.start_temperature) {
            return Err(ConfigError::invalid(
                "model.concrete.end_temperature",
                "must be > 0 and <= model.concrete.start_temperature",
            ));
        }
        let concrete = ConcreteParams {
            k: count("model.concrete.k", c.k, quarter, (dim - 1).max(1))?,
            ..c
        };
        let pca = PcaParams {
            components: count(
                "model.pca.components",
                m.pca.components,
                quarter,
                (dim - 1).max(1),
            )?,
        };
        if m.kind == ModelKind::Torchscript {
            let path = &m.torchscript.path;
            if path.trim().is_empty() {
                return Err(ConfigError::invalid(
                    "model.torchscript.path",
                    "is required when model.kind = \"torchscript\"",
                ));
            }
            if !std::path::Path::new(path).is_file() {
                return Err(ConfigError::invalid(
                    "model.torchscript.path",
                    format!("{path:?} is not a file"),
                ));
            }
        }
        let model = ModelSpec {
            kind: m.kind,
            hidden,
            activation: m.activation,
            warmup_records: positive("model.warmup_records", m.warmup_records)?,
            epochs: positive("model.epochs", m.epochs)?,
            min_steps: m.min_steps,
            batch_size: positive("model.batch_size", m.batch_size)?,
            learning_rate: m.learning_rate,
            seed: m.seed,
            scaler: m.scaler,
            sparse,
            denoising,
            contractive,
            vae,
            concrete,
            pca,
            torchscript: m.torchscript,
        };
        // The scorer holds the warm-up records back until it has trained on them; were
        // fewer allowed in flight, the source would pause before the warm-up could end.
        if batch.max_in_flight < model.warmup_records + batch.max_records {
            return Err(ConfigError::invalid(
                "pipeline.max_in_flight",
                format!(
                    "must be at least model.warmup_records + pipeline.max_records = {} \
                     (the warm-up records stay in flight until the first model is trained)",
                    model.warmup_records + batch.max_records
                ),
            ));
        }

        let runtime = ModelRuntime {
            device: m.device,
            threads: m.threads,
            store_dir: optional(&m.store_dir).map(PathBuf::from),
            keep: positive("model.keep", m.keep)?,
        };

        let t = raw.threshold;
        let window_mode = matches!(input.shape, InputShape::Window { .. });
        // `auto` resolves to what docs/quality.md measured best for the input mode: on
        // univariate series (window mode) the likelihood fed window discords, on records
        // of fields the model's score against a quantile threshold.
        let fed_discords = match t.likelihood.input {
            LikelihoodInput::Auto => window_mode,
            LikelihoodInput::Discord => true,
            LikelihoodInput::Score => false,
        };
        let threshold = match (t.kind, window_mode) {
            (ThresholdKind::Quantile, _) | (ThresholdKind::Auto, false) => {
                ThresholdSpec::Quantile {
                    quantile: in_unit("threshold.quantile", t.quantile)?,
                }
            }
            (ThresholdKind::Spot, _) => ThresholdSpec::Spot {
                risk: in_unit("threshold.risk", t.risk)?,
                init_level: in_unit("threshold.init_level", t.init_level)?,
            },
            (ThresholdKind::Likelihood, _) | (ThresholdKind::Auto, true) => {
                let l = &t.likelihood;
                let tol = non_negative(
                    "threshold.likelihood.spatial_tolerance",
                    l.spatial_tolerance,
                )?;
                ThresholdSpec::Likelihood {
                    quantile: in_unit("threshold.quantile", t.quantile)?,
                    params: LikelihoodParams {
                        warmup: l.warmup,
                        average: positive("threshold.likelihood.average", l.average)?,
                        history: positive("threshold.likelihood.history", l.history)?,
                        reestimate: positive("threshold.likelihood.reestimate", l.reestimate)?,
                        red: in_unit("threshold.likelihood.red", l.red)?,
                        yellow: LikelihoodParams::default().yellow.max(l.red),
                        refractory: l.refractory,
                        // The range check needs the raw value: window mode without
                        // differences only.
                        spatial_tolerance: match &input.shape {
                            InputShape::Window {
                                differences: false, ..
                            } if tol > 0.0 => Some(tol),
                            _ => None,
                        },
                        discord: match (fed_discords, &input.shape) {
                            (false, _) => None,
                            (true, InputShape::Window { size, .. }) => {
                                let segment = positive("threshold.likelihood.segment", l.segment)?;
                                if segment > *size {
                                    return Err(ConfigError::invalid(
                                        "threshold.likelihood.segment",
                                        format!(
                                            "{segment} is longer than the window \
                                             (input.window.size = {size})"
                                        ),
                                    ));
                                }
                                Some(DiscordParams {
                                    memory: positive("threshold.likelihood.memory", l.memory)?,
                                    segment,
                                })
                            }
                            (true, _) => {
                                return Err(ConfigError::invalid(
                                    "threshold.likelihood.input",
                                    "\"discord\" compares a key's windows: it needs \
                                     input.mode = \"window\"",
                                ));
                            }
                        },
                    },
                    max_keys: positive("threshold.likelihood.max_keys", l.max_keys)?,
                }
            }
            (ThresholdKind::Dspot, _) => ThresholdSpec::Dspot {
                risk: in_unit("threshold.risk", t.risk)?,
                init_level: in_unit("threshold.init_level", t.init_level)?,
                depth: positive("threshold.depth", t.depth)?,
            },
        };

        if let ThresholdSpec::Spot { init_level, .. } | ThresholdSpec::Dspot { init_level, .. } =
            threshold
        {
            // SPOT fits its tail on the calibration scores above the init_level quantile.
            let peaks = (model.warmup_records as f64 * (1.0 - init_level)).floor() as usize;
            let need = crate::model::spot::DEFAULT_MIN_PEAKS;
            if peaks < need {
                return Err(ConfigError::invalid(
                    "threshold.init_level",
                    format!(
                        "SPOT needs at least {need} calibration scores above the init_level \
                         quantile; model.warmup_records = {} gives {peaks}: lower init_level \
                         or raise model.warmup_records",
                        model.warmup_records
                    ),
                ));
            }
        }

        let r = raw.retrain;
        if r.max_threshold_ratio < 1.0 {
            return Err(ConfigError::invalid(
                "retrain.max_threshold_ratio",
                "must be >= 1",
            ));
        }
        let retrain = RetrainPolicy {
            interval: (!r.interval.is_zero()).then_some(r.interval),
            every_records: (r.every_records > 0).then_some(r.every_records),
            window: positive("retrain.window", r.window)?,
            margin: r.margin,
            min_records: positive("retrain.min_records", r.min_records)?,
            holdout: in_unit("retrain.holdout", r.holdout)?,
            tolerance: non_negative("retrain.tolerance", r.tolerance)?,
            max_threshold_ratio: r.max_threshold_ratio,
            alert_budget: in_unit("retrain.alert_budget", r.alert_budget)?,
            drift_records: r.drift_records,
        };
        if retrain.min_records > retrain.window {
            return Err(ConfigError::invalid(
                "retrain.min_records",
                "must be <= retrain.window",
            ));
        }

        let role = raw.cluster.role;
        let model_key = kafka.group_id.clone();
        if role != Role::All {
            if runtime.store_dir.is_none() {
                return Err(ConfigError::invalid(
                    "model.store_dir",
                    format!(
                        "is required when cluster.role = \"{}\" (the trainer keeps its \
                         versions there, a scorer caches the models it receives)",
                        role.as_str()
                    ),
                ));
            }
            if raw.cluster.model_topic.trim().is_empty() {
                return Err(ConfigError::invalid(
                    "cluster.model_topic",
                    format!("is required when cluster.role = \"{}\"", role.as_str()),
                ));
            }
        }
        if role == Role::Trainer {
            // The trainer reads every partition: its own group, next to the scorers'.
            kafka.group_id = format!("{}.trainer", kafka.group_id);
        }
        let cluster = ClusterSettings {
            role,
            model_topic: raw.cluster.model_topic.trim().to_string(),
            model_key,
        };

        let http_listen = raw.http.listen.parse().map_err(|e| {
            ConfigError::invalid(
                "http.listen",
                format!("{:?} is not host:port ({e})", raw.http.listen),
            )
        })?;

        // Per-key state within [state] memory: a key costs its window and its likelihood;
        // both are capped at the keys that fit (least recently seen evicted beyond).
        let memory = raw
            .state
            .memory
            .parse::<bytesize::ByteSize>()
            .map_err(|e| {
                ConfigError::invalid(
                    "state.memory",
                    format!("{:?} is not a size like \"512MiB\" ({e})", raw.state.memory),
                )
            })?
            .as_u64();
        let window = match &input.shape {
            InputShape::Window { size, .. } => *size,
            _ => input.dim(),
        };
        let state = StateBudget {
            memory,
            window_key_bytes: match &input.shape {
                InputShape::Window {
                    size, differences, ..
                } => crate::model::window::Windower::key_bytes(*size, *differences),
                _ => 0,
            },
            likelihood_key_bytes: match &threshold {
                ThresholdSpec::Likelihood { params, .. } => params.key_bytes(window),
                _ => 0,
            },
        };
        let fit = state.keys();
        if state.window_key_bytes + state.likelihood_key_bytes > 0 && fit == 0 {
            return Err(ConfigError::invalid(
                "state.memory",
                format!(
                    "{} holds no key: one key's state takes {} bytes",
                    raw.state.memory,
                    state.window_key_bytes + state.likelihood_key_bytes
                ),
            ));
        }
        let mut input = input;
        if let InputShape::Window { max_keys, .. } = &mut input.shape {
            *max_keys = (*max_keys).min(fit);
        }
        let mut threshold = threshold;
        if let ThresholdSpec::Likelihood { max_keys, .. } = &mut threshold {
            *max_keys = (*max_keys).min(fit);
        }

        Ok(Settings {
            kafka,
            input,
            batch,
            model,
            runtime,
            threshold,
            retrain,
            cluster,
            state,
            top_features: raw.alerts.top_features,
            http_listen,
            log_format: raw.log.format,
        })
    }
}
