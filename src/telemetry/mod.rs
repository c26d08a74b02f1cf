//! Logs (tracing) and the metrics registry. Each stage defines, registers and updates its
//! own metrics (a small struct beside the stage: `SourceMetrics`, `ScorerMetrics`,
//! `TrainMetrics`...); this module holds only the registry and its text exposition, the
//! helpers that register one metric, and the per-key state gauges that two stages share.
//! It imports nothing from the stages.

mod registry;

pub use registry::{
    StateBytes, StateMetrics, Telemetry, counter, counter_vec, gauge, histogram, int_gauge,
    int_gauge_vec,
};

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global tracing subscriber: `RUST_LOG` filter (default `info`), logs on
/// stderr as text or JSON lines.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
