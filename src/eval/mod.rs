//! Offline evaluation of anomaly detectors.
//!
//! - [`metrics`]: threshold-free and best-threshold detection quality metrics (AUROC,
//!   average precision, best F1) over per-record scores and binary labels.
//! - [`nab`]: the Numenta Anomaly Benchmark scoring rules (windowed, time-weighted,
//!   application profiles, normalised to null = 0 and perfect = 100).

pub mod metrics;
pub mod nab;
mod plot;
pub mod run;
