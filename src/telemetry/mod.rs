//! Logs (tracing) and metrics (an owned Prometheus registry).

mod metrics;
pub use metrics::{DEAD_LETTER_REASONS, OUTPUTS, TRAINING_RESULTS};

pub use metrics::Metrics;

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
