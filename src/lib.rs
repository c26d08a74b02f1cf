//! anomalyd: streaming anomaly detection with autoencoders, Kafka in and out.

pub mod app;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod http;
pub mod model;
pub mod pipeline;
pub mod shutdown;
pub mod telemetry;
pub mod train;
