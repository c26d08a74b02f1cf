//! Top-level errors. Each has a stable `code()` for logs and metrics labels.

use crate::config::ConfigError;
use crate::model::ModelError;

/// The message a panic carried (`panic!` with a string or a format), or "".
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("producing output failed: {0}")]
    Produce(String),
    #[error("model: {0}")]
    Model(#[from] ModelError),
    #[error("stage {0} panicked: {1}")]
    Panicked(&'static str, String),
}

impl PipelineError {
    pub fn code(&self) -> &'static str {
        match self {
            PipelineError::Kafka(_) => "kafka",
            PipelineError::Produce(_) => "produce",
            PipelineError::Model(_) => "model",
            PipelineError::Panicked(..) => "panic",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("http server on {addr}: {source}")]
    Http {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("stages did not stop within the drain deadline of {0:?}")]
    DrainTimeout(std::time::Duration),
    #[error("input/output: {0}")]
    Io(#[from] std::io::Error),
}

impl AppError {
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Config(_) => "config",
            AppError::Pipeline(e) => e.code(),
            AppError::Http { .. } => "http",
            AppError::DrainTimeout(_) => "drain_timeout",
            AppError::Io(_) => "io",
        }
    }
}
