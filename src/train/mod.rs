//! Training: fitting and saving a model (the first one, on the warm-up records, and each
//! retrained one: [`trainer`]), the trainer stage that fits candidates without blocking the
//! scorer ([`trainer::run`]), when to retrain ([`schedule`]), the bounded window of recent
//! records judged normal ([`normal_window::NormalWindow`]), and the promotion gate that
//! decides whether a candidate may serve ([`gate`]).

pub mod gate;
pub mod normal_window;
pub mod schedule;
pub mod trainer;

use prometheus::{Gauge, Histogram, IntCounter, IntCounterVec, IntGauge, Registry};

use crate::telemetry::{counter, counter_vec, gauge, histogram, int_gauge};

/// `result` label values of `anomalyd_training_runs_total`.
pub const TRAINING_RESULTS: [&str; 3] = ["promoted", "rejected", "failed"];

/// Training's metrics: the first model's run and every retraining run.
#[derive(Clone)]
pub struct TrainMetrics {
    pub duration: Histogram,
    pub runs: IntCounterVec,
    pub promotion_rejections: IntCounterVec,
    pub window_records: IntGauge,
    pub recent_alert_rate: Gauge,
    pub last_run: Gauge,
    pub restarts: IntCounter,
}

impl TrainMetrics {
    pub fn register(r: &Registry) -> Self {
        TrainMetrics {
            duration: histogram(
                r,
                "anomalyd_training_duration_seconds",
                "Time to train a model.",
                prometheus::exponential_buckets(0.1, 2.0, 12).expect("buckets"),
            ),
            runs: counter_vec(
                r,
                "anomalyd_training_runs_total",
                "Model training runs, by result (promoted, rejected, failed).",
                "result",
                &TRAINING_RESULTS,
            ),
            promotion_rejections: counter_vec(
                r,
                "anomalyd_promotion_rejections_total",
                "Retrained candidates the promotion gate rejected, by reason.",
                "reason",
                &gate::REASONS,
            ),
            window_records: int_gauge(
                r,
                "anomalyd_training_window_records",
                "Normal records in the retraining window.",
            ),
            recent_alert_rate: gauge(
                r,
                "anomalyd_recent_alert_rate",
                "Share of the last retrain.drift_records records alerted (the drift statistic).",
            ),
            last_run: gauge(
                r,
                "anomalyd_last_training_timestamp_seconds",
                "Unix time the last training run finished.",
            ),
            restarts: counter(
                r,
                "anomalyd_trainer_restarts_total",
                "Retraining runs that panicked; the trainer stage goes on with the next run, \
                 after a backoff.",
            ),
        }
    }
}
