//! Continuous retraining: a bounded window of recent records judged normal
//! ([`normal_window::NormalWindow`]), a trainer thread that fits candidates without blocking the
//! scorer ([`trainer`]), and the promotion gate that decides whether a candidate may serve
//! ([`gate`]).

pub mod gate;
pub mod normal_window;
pub mod schedule;
pub mod trainer;
