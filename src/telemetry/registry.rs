//! The registry, the helpers each stage registers its metrics with, and the text
//! exposition. A metric with a bounded label is exported with every label value from the
//! start (at 0), so dashboards and alert rules see it before the first event.

use prometheus::core::{MetricVec, MetricVecBuilder};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::config::StateBudget;

/// The process's metrics: one registry that every stage registers into at start.
pub struct Telemetry {
    registry: Registry,
}

impl Telemetry {
    /// An empty registry with the process collector (CPU, memory, file descriptors).
    pub fn new() -> Self {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("registered once");
        Telemetry { registry }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

fn register<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: M) -> M {
    r.register(Box::new(m.clone())).expect("registered once");
    m
}

pub fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    register(r, IntCounter::new(name, help).expect("valid metric"))
}

/// Registers a labelled metric, exported for each of `values` from the start.
fn labelled<T: MetricVecBuilder + 'static>(
    r: &Registry,
    vec: MetricVec<T>,
    values: &[&str],
) -> MetricVec<T> {
    let vec = register(r, vec);
    for v in values {
        vec.with_label_values(&[v]);
    }
    vec
}

/// A counter with one label, exported for each of `values` from the start.
pub fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
    labelled(r, vec, values)
}

pub fn int_gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    register(r, IntGauge::new(name, help).expect("valid metric"))
}

/// A gauge with one label, exported for each of `values` from the start.
pub fn int_gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
) -> IntGaugeVec {
    let vec = IntGaugeVec::new(Opts::new(name, help), &[label]).expect("valid metric");
    labelled(r, vec, values)
}

pub fn gauge(r: &Registry, name: &str, help: &str) -> Gauge {
    register(r, Gauge::new(name, help).expect("valid metric"))
}

pub fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    register(
        r,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
            .expect("valid metric"),
    )
}

/// `anomalyd_state_bytes{kind}` for one kind of per-key state: the stage that holds the
/// keys reports how many; the gauge is that times the upper bound of one key's state.
#[derive(Clone)]
pub struct StateBytes {
    gauge: IntGauge,
    per_key: usize,
}

impl StateBytes {
    pub fn set_keys(&self, keys: usize) {
        self.gauge.set((keys * self.per_key) as i64);
    }
}

/// The per-key state budget (`state.memory`) and the bytes held against it, by kind: the
/// source's windows and the scorer's likelihoods.
pub struct StateMetrics {
    pub window: StateBytes,
    pub likelihood: StateBytes,
}

impl StateMetrics {
    pub fn register(r: &Registry, budget: &StateBudget) -> Self {
        let bytes = int_gauge_vec(
            r,
            "anomalyd_state_bytes",
            "Per-key state held, by kind (window, likelihood): keys times the upper bound \
             of one key's state. At most state.memory together.",
            "kind",
            &["window", "likelihood"],
        );
        int_gauge(
            r,
            "anomalyd_state_budget_bytes",
            "state.memory: the budget for per-key state.",
        )
        .set(budget.memory as i64);
        StateMetrics {
            window: StateBytes {
                gauge: bytes.with_label_values(&["window"]),
                per_key: budget.window_key_bytes,
            },
            likelihood: StateBytes {
                gauge: bytes.with_label_values(&["likelihood"]),
                per_key: budget.likelihood_key_bytes,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_every_bounded_label_from_the_start() {
        let t = Telemetry::new();
        let c = counter(t.registry(), "t_records_total", "Records.");
        let v = counter_vec(
            t.registry(),
            "t_errors_total",
            "Errors.",
            "code",
            &["a", "b"],
        );
        c.inc_by(3);
        v.with_label_values(&["a"]).inc();
        let text = t.render();
        assert!(text.contains("t_records_total 3"), "{text}");
        assert!(text.contains("t_errors_total{code=\"a\"} 1"), "{text}");
        assert!(text.contains("t_errors_total{code=\"b\"} 0"), "{text}");
    }

    #[test]
    fn state_bytes_are_keys_times_the_bound_of_one_key() {
        let t = Telemetry::new();
        let budget = StateBudget {
            memory: 1000,
            window_key_bytes: 10,
            likelihood_key_bytes: 7,
        };
        let s = StateMetrics::register(t.registry(), &budget);
        s.window.set_keys(3);
        s.likelihood.set_keys(2);
        let text = t.render();
        assert!(
            text.contains("anomalyd_state_bytes{kind=\"window\"} 30"),
            "{text}"
        );
        assert!(
            text.contains("anomalyd_state_bytes{kind=\"likelihood\"} 14"),
            "{text}"
        );
        assert!(text.contains("anomalyd_state_budget_bytes 1000"), "{text}");
    }
}
