//! Every metric anomalyd exports, registered once in an owned registry. Stages update them
//! per batch; label values are static codes, never record data.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::pipeline::decode::DecodeErrorCode;

/// Output kinds, the bounded label of `anomalyd_messages_produced_total`.
pub const OUTPUTS: [&str; 3] = ["scores", "alerts", "dlq"];

pub struct Metrics {
    registry: Registry,
    pub records_consumed: IntCounter,
    pub records_scored: IntCounter,
    pub decode_errors: IntCounterVec,
    pub messages_produced: IntCounterVec,
    pub producer_errors: IntCounter,
    pub anomalies: IntCounter,
    pub batch_size: Histogram,
    pub scoring_duration: Histogram,
    pub score: Histogram,
    pub normalized_score: Histogram,
    pub threshold: Gauge,
    pub model_version: IntGauge,
    pub model_ready: IntGauge,
    pub training_duration: Histogram,
    pub training_loss: Gauge,
    pub offsets_committed: IntCounter,
    pub pending_records: IntGauge,
    pub window_keys: IntGauge,
    pub window_evictions: IntCounter,
    pub likelihood_keys: IntGauge,
    pub likelihood_evictions: IntCounter,
    pub consumer_lag: IntGaugeVec,
    pub batch_linger: Histogram,
    pub model_created: Gauge,
    pub training_runs: IntCounterVec,
    pub alert_top_feature: IntCounterVec,
    pub promotion_rejections: IntCounterVec,
    pub scoring_duration_training: Histogram,
    pub training_window: IntGauge,
    pub recent_alert_rate: Gauge,
    pub last_training: Gauge,
    pub assigned_partitions: IntGauge,
    pub role: IntGaugeVec,
    pub models_published: IntCounterVec,
    pub models_received: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub records_dropped: IntCounterVec,
    pub kafka_up: IntGauge,
    pub missing_topics: IntGauge,
    pub source_paused: IntGauge,
    pub models_rejected: IntCounterVec,
    pub trainer_restarts: IntCounter,
    pub state_bytes: IntGaugeVec,
    pub state_budget: IntGauge,
    /// What one key's state costs (window, likelihood), set at start: the stages multiply
    /// their key counts by it for `state_bytes`.
    pub state_key_bytes: [std::sync::atomic::AtomicUsize; 2],
}

/// `reason` label values of `anomalyd_dead_letters_total`: records dead-lettered for
/// something other than their decoding (those are `anomalyd_decode_errors_total`).
pub const DEAD_LETTER_REASONS: [&str; 3] =
    ["output_too_large", "output_rejected", "non_finite_score"];

/// `result` label values of `anomalyd_training_runs_total`.
pub const TRAINING_RESULTS: [&str; 3] = ["promoted", "rejected", "failed"];

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn int_gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

fn gauge(r: &Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("registered once");
    h
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let decode_errors = counter_vec(
            &r,
            "anomalyd_decode_errors_total",
            "Records that could not be decoded, by reason code.",
            "code",
        );
        for code in DecodeErrorCode::ALL {
            decode_errors.with_label_values(&[code.as_str()]);
        }
        let messages_produced = counter_vec(
            &r,
            "anomalyd_messages_produced_total",
            "Messages delivered to the output topics, by output.",
            "output",
        );
        for o in OUTPUTS {
            messages_produced.with_label_values(&[o]);
        }
        let training_runs = counter_vec(
            &r,
            "anomalyd_training_runs_total",
            "Model training runs, by result (promoted, rejected, failed).",
            "result",
        );
        for res in TRAINING_RESULTS {
            training_runs.with_label_values(&[res]);
        }
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "anomalyd_consumer_lag_records",
                "Records in the input topic not yet committed, per assigned partition \
                 (librdkafka statistics).",
            ),
            &["partition"],
        )
        .expect("valid metric");
        r.register(Box::new(consumer_lag.clone()))
            .expect("registered once");
        let role = IntGaugeVec::new(
            Opts::new(
                "anomalyd_cluster_role",
                "1 for this replica's cluster role (all, scorer, trainer).",
            ),
            &["role"],
        )
        .expect("valid metric");
        r.register(Box::new(role.clone())).expect("registered once");
        let models_published = counter_vec(
            &r,
            "anomalyd_models_published_total",
            "Model bundles the trainer published to the model topic, by result (ok, failed).",
            "result",
        );
        let models_received = counter_vec(
            &r,
            "anomalyd_models_received_total",
            "Model bundles a scorer read from the model topic, by result (applied, invalid).",
            "result",
        );
        for res in ["ok", "failed"] {
            models_published.with_label_values(&[res]);
        }
        for res in ["applied", "invalid"] {
            models_received.with_label_values(&[res]);
        }
        let dead_letters = counter_vec(
            &r,
            "anomalyd_dead_letters_total",
            "Decoded records sent to the dead-letter topic instead of a score, by reason \
             (undecodable records are anomalyd_decode_errors_total).",
            "reason",
        );
        for reason in DEAD_LETTER_REASONS {
            dead_letters.with_label_values(&[reason]);
        }
        let records_dropped = counter_vec(
            &r,
            "anomalyd_records_dropped_total",
            "Records whose dead letter the broker refused as well: logged with partition and \
             offset, then acknowledged so that they cannot stop their partition.",
            "reason",
        );
        records_dropped.with_label_values(&["dlq_refused"]);
        let state_bytes = IntGaugeVec::new(
            Opts::new(
                "anomalyd_state_bytes",
                "Per-key state held, by kind (window, likelihood): keys times the upper bound \
                 of one key's state. At most state.memory together.",
            ),
            &["kind"],
        )
        .expect("valid metric");
        r.register(Box::new(state_bytes.clone()))
            .expect("registered once");
        for kind in ["window", "likelihood"] {
            state_bytes.with_label_values(&[kind]);
        }
        let models_rejected = counter_vec(
            &r,
            "anomalyd_models_rejected_total",
            "Model bundles (from the model topic or the store) that failed their checks and \
             never served, by reason.",
            "reason",
        );
        for reason in crate::model::verify::REASONS {
            models_rejected.with_label_values(&[reason]);
        }
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("registered once");
        Metrics {
            records_consumed: counter(
                &r,
                "anomalyd_records_consumed_total",
                "Records read from the input topic.",
            ),
            records_scored: counter(&r, "anomalyd_records_scored_total", "Records scored."),
            decode_errors,
            messages_produced,
            producer_errors: counter(
                &r,
                "anomalyd_producer_errors_total",
                "Messages the producer failed to deliver.",
            ),
            anomalies: counter(
                &r,
                "anomalyd_anomalies_total",
                "Records scored above the threshold.",
            ),
            batch_size: histogram(
                &r,
                "anomalyd_batch_size_records",
                "Records per scored batch.",
                prometheus::exponential_buckets(1.0, 4.0, 9).expect("buckets"),
            ),
            scoring_duration: histogram(
                &r,
                "anomalyd_scoring_duration_seconds",
                "Time to score one batch.",
                prometheus::exponential_buckets(0.000_05, 2.5, 12).expect("buckets"),
            ),
            score: histogram(
                &r,
                "anomalyd_score",
                "Anomaly scores (reconstruction error of standardised features).",
                prometheus::exponential_buckets(0.001, 2.0, 20).expect("buckets"),
            ),
            normalized_score: histogram(
                &r,
                "anomalyd_normalized_score",
                "Scores divided by the threshold (1 = at the threshold).",
                vec![
                    0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0,
                ],
            ),
            threshold: gauge(&r, "anomalyd_threshold", "The serving model's threshold."),
            model_version: int_gauge(
                &r,
                "anomalyd_model_version",
                "Version of the serving model (0 before the first model).",
            ),
            model_ready: int_gauge(
                &r,
                "anomalyd_model_ready",
                "1 once a model is serving, 0 during warm-up.",
            ),
            training_duration: histogram(
                &r,
                "anomalyd_training_duration_seconds",
                "Time to train a model.",
                prometheus::exponential_buckets(0.1, 2.0, 12).expect("buckets"),
            ),
            training_loss: gauge(
                &r,
                "anomalyd_training_loss",
                "Final training loss of the serving model.",
            ),
            offsets_committed: counter(
                &r,
                "anomalyd_offset_commits_total",
                "Offset positions stored for commit.",
            ),
            pending_records: int_gauge(
                &r,
                "anomalyd_pending_records",
                "Records consumed whose outputs are not all delivered yet.",
            ),
            window_keys: int_gauge(&r, "anomalyd_window_keys", "Keys with window state."),
            window_evictions: counter(
                &r,
                "anomalyd_window_evictions_total",
                "Keys evicted from window state to stay within input.window.max_keys.",
            ),
            likelihood_keys: int_gauge(
                &r,
                "anomalyd_likelihood_keys",
                "Keys with anomaly-likelihood state (threshold.kind = likelihood).",
            ),
            likelihood_evictions: counter(
                &r,
                "anomalyd_likelihood_evictions_total",
                "Keys whose likelihood state was forgotten to stay within \
                 threshold.likelihood.max_keys (each warms up again when it returns).",
            ),
            consumer_lag,
            batch_linger: histogram(
                &r,
                "anomalyd_batch_linger_seconds",
                "Age of a batch's first record when the batch is handed to the scorer.",
                prometheus::exponential_buckets(0.0005, 2.0, 14).expect("buckets"),
            ),
            model_created: gauge(
                &r,
                "anomalyd_model_created_timestamp_seconds",
                "Unix time the serving model was trained.",
            ),
            training_runs,
            alert_top_feature: counter_vec(
                &r,
                "anomalyd_alert_top_feature_total",
                "Alerts by the feature with the largest share of their error (bounded by \
                 the configured features).",
                "feature",
            ),
            promotion_rejections: {
                let c = counter_vec(
                    &r,
                    "anomalyd_promotion_rejections_total",
                    "Retrained candidates the promotion gate rejected, by reason.",
                    "reason",
                );
                for reason in crate::train::gate::REASONS {
                    c.with_label_values(&[reason]);
                }
                c
            },
            scoring_duration_training: histogram(
                &r,
                "anomalyd_scoring_duration_during_training_seconds",
                "Time to score one batch while a retraining run is in flight.",
                prometheus::exponential_buckets(0.000_05, 2.5, 12).expect("buckets"),
            ),
            training_window: int_gauge(
                &r,
                "anomalyd_training_window_records",
                "Normal records in the retraining window.",
            ),
            recent_alert_rate: gauge(
                &r,
                "anomalyd_recent_alert_rate",
                "Share of the last retrain.drift_records records alerted (the drift statistic).",
            ),
            last_training: gauge(
                &r,
                "anomalyd_last_training_timestamp_seconds",
                "Unix time the last training run finished.",
            ),
            assigned_partitions: int_gauge(
                &r,
                "anomalyd_assigned_partitions",
                "Input partitions assigned to this replica by the consumer group.",
            ),
            role,
            models_published,
            models_received,
            dead_letters,
            records_dropped,
            kafka_up: int_gauge(
                &r,
                "anomalyd_kafka_up",
                "1 while the broker answers metadata requests, 0 while it cannot be reached \
                 or refuses the connection (see the logs for the setting to check).",
            ),
            missing_topics: int_gauge(
                &r,
                "anomalyd_kafka_missing_topics",
                "Configured topics (input and outputs) the broker does not have.",
            ),
            source_paused: int_gauge(
                &r,
                "anomalyd_source_paused",
                "1 while consumption is paused because the stages after it are full \
                 (pipeline.max_in_flight or a full channel); the group membership is kept.",
            ),
            models_rejected,
            state_bytes,
            state_budget: int_gauge(
                &r,
                "anomalyd_state_budget_bytes",
                "state.memory: the budget for per-key state.",
            ),
            state_key_bytes: Default::default(),
            trainer_restarts: counter(
                &r,
                "anomalyd_trainer_restarts_total",
                "Times the retraining thread panicked or exited and was started again.",
            ),
            registry: r,
        }
    }

    /// Sets the state budget and what one key costs in it.
    pub fn set_state_budget(&self, b: &crate::config::StateBudget) {
        use std::sync::atomic::Ordering;
        self.state_budget.set(b.memory as i64);
        self.state_key_bytes[0].store(b.window_key_bytes, Ordering::Relaxed);
        self.state_key_bytes[1].store(b.likelihood_key_bytes, Ordering::Relaxed);
    }

    /// Records how many keys hold window (0) or likelihood (1) state.
    pub fn set_state_keys(&self, kind: usize, keys: usize) {
        use std::sync::atomic::Ordering;
        let bytes = keys * self.state_key_bytes[kind].load(Ordering::Relaxed);
        self.state_bytes
            .with_label_values(&[["window", "likelihood"][kind]])
            .set(bytes as i64);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_bounded_labels() {
        let m = Metrics::new();
        m.records_consumed.inc_by(3);
        m.decode_errors.with_label_values(&["invalid_json"]).inc();
        let text = m.render();
        assert!(text.contains("anomalyd_records_consumed_total 3"), "{text}");
        assert!(text.contains("anomalyd_decode_errors_total{code=\"invalid_json\"} 1"));
        assert!(text.contains("anomalyd_decode_errors_total{code=\"missing_field\"} 0"));
    }
}
