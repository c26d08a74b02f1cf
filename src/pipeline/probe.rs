//! The broker probe: asks the cluster for its topics every few seconds, on a client of its
//! own with the daemon's connection settings. It decides readiness: the daemon starts
//! consuming only once the broker answers and every topic it reads or writes exists, and
//! reports not-ready (`/readyz`, `anomalyd_kafka_up`) whenever the broker cannot be reached,
//! refuses the credentials, or a topic is missing. librdkafka reconnects by itself; nothing
//! here is fatal, since waiting (or fixing the broker) is what helps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use tokio_util::sync::CancellationToken;

use super::kafka::{base_config, hint, log_client_error};
use crate::config::KafkaSettings;
use crate::error::{AppError, PipelineError};
use crate::telemetry::int_gauge;

/// How often the broker is asked while it answers, and while it does not.
const EVERY_OK: Duration = Duration::from_secs(2);
const EVERY_FAILING: Duration = Duration::from_millis(500);
/// How long one metadata request may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Records the last client-level error, so a failed probe can say which setting to check.
#[derive(Default)]
pub struct ProbeContext {
    last_error: Mutex<Option<String>>,
}

impl ClientContext for ProbeContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error("probe", &error, reason);
        let text = match hint(error.rdkafka_error_code(), reason) {
            Some(h) => format!("{reason} ({h})"),
            None => reason.to_string(),
        };
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(text);
        }
    }
}

impl ConsumerContext for ProbeContext {}

/// Why the daemon is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unready {
    /// The broker did not answer: why, with the setting to check when known.
    Unreachable(String),
    /// The broker answered, but does not have these topics.
    MissingTopics(Vec<String>),
}

impl std::fmt::Display for Unready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unready::Unreachable(why) => write!(f, "cannot reach the broker: {why}"),
            Unready::MissingTopics(t) => write!(
                f,
                "the broker has no topic {} (create it; the daemon waits)",
                t.join(", ")
            ),
        }
    }
}

/// The probe's metrics: whether the broker answers, and the topics it lacks.
pub struct ProbeMetrics {
    pub up: prometheus::IntGauge,
    pub missing_topics: prometheus::IntGauge,
}

impl ProbeMetrics {
    pub fn register(r: &prometheus::Registry) -> Self {
        ProbeMetrics {
            up: int_gauge(
                r,
                "anomalyd_kafka_up",
                "1 while the broker answers metadata requests, 0 while it cannot be reached \
                 or refuses the connection (see the logs for the setting to check).",
            ),
            missing_topics: int_gauge(
                r,
                "anomalyd_kafka_missing_topics",
                "Configured topics (input and outputs) the broker does not have.",
            ),
        }
    }
}

pub struct Probe {
    client: BaseConsumer<ProbeContext>,
    brokers: String,
    /// The topics the daemon reads and writes, with the setting that names each.
    topics: Vec<(String, &'static str)>,
    metrics: ProbeMetrics,
    /// Whether the last check passed.
    pub ok: Arc<AtomicBool>,
}

impl Probe {
    pub fn new(
        k: &KafkaSettings,
        topics: Vec<(String, &'static str)>,
        metrics: ProbeMetrics,
    ) -> Result<Self, AppError> {
        let client =
            BaseConsumer::from_config_and_context(&base_config(k)?, ProbeContext::default())
                .map_err(PipelineError::from)?;
        Ok(Probe {
            client,
            brokers: k.brokers.clone(),
            topics,
            metrics,
            ok: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Asks the broker once; updates the metrics and `ok`.
    pub fn check(&self) -> Result<(), Unready> {
        let result = self.ask();
        let up = !matches!(result, Err(Unready::Unreachable(_)));
        self.metrics.up.set(i64::from(up));
        let missing = match &result {
            Err(Unready::MissingTopics(t)) => t.len() as i64,
            _ => 0,
        };
        if up {
            self.metrics.missing_topics.set(missing);
        }
        self.ok.store(result.is_ok(), Ordering::Release);
        result
    }

    fn ask(&self) -> Result<(), Unready> {
        // All topics (no topic named), so that asking never creates one on a broker that
        // auto-creates the topics clients ask for.
        let metadata = self.client.fetch_metadata(None, TIMEOUT).map_err(|e| {
            // Error events (authentication or TLS refused) reach the context only when the
            // client is polled.
            let _ = self.client.poll(Duration::from_millis(200));
            let last = self
                .client
                .context()
                .last_error
                .lock()
                .ok()
                .and_then(|mut l| l.take());
            Unready::Unreachable(match last {
                Some(why) => format!("{e}; {why} (kafka.brokers = {})", self.brokers),
                None => format!("{e} (kafka.brokers = {})", self.brokers),
            })
        })?;
        let missing: Vec<String> = self
            .topics
            .iter()
            .filter(|(t, _)| {
                !metadata
                    .topics()
                    .iter()
                    .any(|m| m.name() == t && m.error().is_none() && !m.partitions().is_empty())
            })
            .map(|(t, key)| format!("{t:?} ({key})"))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Unready::MissingTopics(missing))
        }
    }

    /// Checks until the broker answers and has every topic (logging why not, every ten
    /// seconds), or until `cancel`. Returns whether it got there.
    pub fn wait_ready(&self, cancel: &CancellationToken) -> bool {
        let mut last_log: Option<Instant> = None;
        loop {
            match self.check() {
                Ok(()) => return true,
                Err(why) => {
                    if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        tracing::warn!(reason = %why, "not ready: waiting for the broker");
                        last_log = Some(Instant::now());
                    }
                }
            }
            if wait(cancel, EVERY_FAILING) {
                return false;
            }
        }
    }

    /// Keeps checking until `cancel`, logging each change between ready and not.
    pub fn run(self, cancel: CancellationToken) {
        let mut was_ok = self.ok.load(Ordering::Acquire);
        loop {
            let result = self.check();
            match (&result, was_ok) {
                (Ok(()), false) => tracing::info!("the broker answers again: ready"),
                (Err(why), true) => {
                    tracing::warn!(reason = %why, "not ready: the broker cannot serve the daemon")
                }
                _ => {}
            }
            was_ok = result.is_ok();
            if wait(&cancel, if was_ok { EVERY_OK } else { EVERY_FAILING }) {
                return;
            }
        }
    }
}

/// Sleeps `d`, or less when `cancel` fires; returns whether it fired.
fn wait(cancel: &CancellationToken, d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if cancel.is_cancelled() {
            return true;
        }
        std::thread::sleep(
            Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())),
        );
    }
    cancel.is_cancelled()
}
