//! anomalyd: streaming anomaly detection with autoencoders, Kafka in and out.

pub mod app;
pub mod cli;
pub mod config;
pub mod error;
pub mod eval;
pub mod http;
pub mod input;
pub mod model;
pub mod models;
pub mod offline;
pub mod pipeline;
pub mod shutdown;
pub mod telemetry;
pub mod train;
