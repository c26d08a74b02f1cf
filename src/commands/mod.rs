//! The commands that work on files and the model store rather than on Kafka: `score`,
//! `train`, `eval` and `models`. They share the daemon's decode, window, model and decision
//! code; `files` reads their input files.

pub mod eval;
mod eval_plot;
pub mod files;
pub mod models;
pub mod score;
pub mod train;
