//! Raw configuration -> checked settings. Every error names the key it is about.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;
use super::raw::{
    Activation, DeviceChoice, InputMode, LogFormat, ModelKind, OffsetReset, RawConfig,
};

#[derive(Debug, Clone)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub input: InputSpec,
    pub batch: BatchPolicy,
    pub model: ModelSpec,
    pub runtime: ModelRuntime,
    pub threshold: ThresholdSpec,
    pub top_features: usize,
    pub http_listen: SocketAddr,
    pub log_format: LogFormat,
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

    pub fn dim(&self) -> usize {
        match &self.shape {
            InputShape::Fields { names } | InputShape::Array { names, .. } => names.len(),
            InputShape::Window { size, .. } => *size,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    pub channel_capacity: usize,
    pub max_records: usize,
    pub linger: Duration,
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ModelSpec {
    pub kind: ModelKind,
    pub hidden: Vec<i64>,
    pub activation: Activation,
    pub warmup_records: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: i64,
}

/// Where and how models run and are kept (not part of a model's identity).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRuntime {
    pub device: DeviceChoice,
    pub threads: usize,
    pub store_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdSpec {
    Quantile(f64),
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
        let kafka = KafkaSettings {
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
        let model = ModelSpec {
            kind: m.kind,
            hidden,
            activation: m.activation,
            warmup_records: positive("model.warmup_records", m.warmup_records)?,
            epochs: positive("model.epochs", m.epochs)?,
            batch_size: positive("model.batch_size", m.batch_size)?,
            learning_rate: m.learning_rate,
            seed: m.seed,
        };
        let runtime = ModelRuntime {
            device: m.device,
            threads: m.threads,
            store_dir: optional(&m.store_dir).map(PathBuf::from),
        };

        let q = raw.threshold.quantile;
        if !(q > 0.0 && q < 1.0) {
            return Err(ConfigError::invalid(
                "threshold.quantile",
                format!("must be in (0, 1), got {q}"),
            ));
        }
        let threshold = ThresholdSpec::Quantile(q);

        let http_listen = raw.http.listen.parse().map_err(|e| {
            ConfigError::invalid(
                "http.listen",
                format!("{:?} is not host:port ({e})", raw.http.listen),
            )
        })?;

        Ok(Settings {
            kafka,
            input,
            batch,
            model,
            runtime,
            threshold,
            top_features: raw.alerts.top_features,
            http_listen,
            log_format: raw.log.format,
        })
    }
}
