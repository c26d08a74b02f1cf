//! anomalyd's statistical decision rules, kept apart from the network and the stream: they
//! never link libtorch or librdkafka, so their tests build and run in seconds
//! (`cargo test -p anomalyd-detect`).
//!
//! - [`judge`]: the one decision path from a batch of scores to verdicts (threshold or
//!   likelihood, normalised score, explanation), used by the daemon, `score` and `eval`.
//! - [`threshold`]: the alert threshold of a model (a training-score quantile, or
//!   SPOT/DSPOT from [`spot`]) and the [`threshold::ThresholdSpec`] that chooses it.
//! - [`likelihood`]: Numenta's anomaly likelihood per key, optionally fed the window
//!   discord distance of [`discord`].
//! - [`scaler`]: the per-feature standard and robust scalers.
//! - [`metrics`]: AUROC, average precision and best F1 over scores and labels.
//! - [`nab`]: the Numenta Anomaly Benchmark's windows, profiles and scorer.
//! - [`window`]: per-key sliding windows of one metric (window mode's vectors).

pub mod discord;
pub mod judge;
pub mod likelihood;
pub mod metrics;
pub mod nab;
pub mod scaler;
pub mod spot;
pub mod threshold;
pub mod window;
