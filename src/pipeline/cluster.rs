//! Scale-out over the model topic. The trainer's [`Publisher`] sends every model it serves
//! (its first, each promotion, a revert) as a [`Bundle`] keyed by the deployment (the
//! scorers' group id); a compacted topic keeps the latest per key. A scorer's [`Follower`]
//! reads the topic into its local store and makes the newest bundle current; the scorer
//! thread switches to it between batches, exactly as it follows a revert.
//!
//! ```text
//!  trainer: score thread --version--> publisher --bundle--> [model topic]
//!  scorer:  [model topic] --> follower --> store_dir (CURRENT) --> score thread
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rdkafka::ClientContext;
use rdkafka::config::{FromClientConfig, FromClientConfigAndContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::{ClusterSettings, KafkaSettings, Role};
use crate::error::{AppError, PipelineError};
use crate::model::store::{self, Bundle};
use crate::telemetry::{counter_vec, int_gauge_vec};

/// Largest bundle message the clients accept (the topic's `max.message.bytes` must allow
/// the bundles a deployment's models make).
const MAX_MESSAGE_BYTES: &str = "67108864";
/// Wait between publication attempts after a failure.
const RETRY: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(200);

/// Remembers the delivery result of the one message in flight.
#[derive(Default)]
pub struct Delivery(Mutex<Option<Result<(), String>>>);

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let outcome = result.as_ref().map(|_| ()).map_err(|(e, _)| e.to_string());
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
    }
}

/// The cluster's metrics: this replica's role, and the model topic's traffic.
#[derive(Clone)]
pub struct ClusterMetrics {
    pub published: prometheus::IntCounterVec,
    pub received: prometheus::IntCounterVec,
    /// The scorer's `anomalyd_models_rejected_total`: a bundle from the topic that fails
    /// its checks never serves either.
    pub models_rejected: prometheus::IntCounterVec,
}

impl ClusterMetrics {
    pub fn register(
        r: &prometheus::Registry,
        role: Role,
        models_rejected: prometheus::IntCounterVec,
    ) -> Self {
        int_gauge_vec(
            r,
            "anomalyd_cluster_role",
            "1 for this replica's cluster role (all, scorer, trainer).",
            "role",
            &[],
        )
        .with_label_values(&[role.as_str()])
        .set(1);
        ClusterMetrics {
            published: counter_vec(
                r,
                "anomalyd_models_published_total",
                "Model bundles the trainer published to the model topic, by result (ok, failed).",
                "result",
                &["ok", "failed"],
            ),
            received: counter_vec(
                r,
                "anomalyd_models_received_total",
                "Model bundles a scorer read from the model topic, by result (applied, invalid).",
                "result",
                &["applied", "invalid"],
            ),
            models_rejected,
        }
    }
}

/// The trainer's side: publishes store versions to the model topic.
pub struct Publisher {
    producer: BaseProducer<Delivery>,
    topic: String,
    key: String,
    store: PathBuf,
    metrics: ClusterMetrics,
}

impl Publisher {
    pub fn new(
        k: &KafkaSettings,
        cluster: &ClusterSettings,
        store: PathBuf,
        metrics: ClusterMetrics,
    ) -> Result<Self, AppError> {
        let mut config = super::kafka::base_config(k)?;
        config
            .set("enable.idempotence", "true")
            .set("message.max.bytes", MAX_MESSAGE_BYTES);
        let producer = BaseProducer::from_config_and_context(&config, Delivery::default())
            .map_err(PipelineError::from)?;
        Ok(Publisher {
            producer,
            topic: cluster.model_topic.clone(),
            key: cluster.model_key.clone(),
            store,
            metrics,
        })
    }

    /// Publishes each version sent (the latest when several queue up) until the sender
    /// closes; a failed publication is retried until it succeeds or a newer one replaces it.
    pub fn run(self, versions: Receiver<u64>) -> Result<(), PipelineError> {
        let mut next = None;
        loop {
            let version = match next.take() {
                Some(v) => v,
                None => match versions.recv() {
                    Ok(v) => v,
                    Err(_) => return Ok(()),
                },
            };
            let version = versions.try_iter().last().unwrap_or(version);
            match self.publish(version) {
                Ok(bytes) => {
                    self.metrics.published.with_label_values(&["ok"]).inc();
                    tracing::info!(version, bytes, topic = %self.topic, key = %self.key, "published the model");
                }
                Err(e) => {
                    self.metrics.published.with_label_values(&["failed"]).inc();
                    tracing::warn!(version, error = %e, topic = %self.topic, "model publication failed; retrying");
                    next = match versions.recv_timeout(RETRY) {
                        Ok(newer) => Some(newer),
                        Err(RecvTimeoutError::Timeout) => Some(version),
                        Err(RecvTimeoutError::Disconnected) => return Ok(()),
                    };
                }
            }
        }
    }

    /// Sends one version's bundle and waits for the broker's acknowledgement.
    fn publish(&self, version: u64) -> Result<usize, String> {
        let mut bundle = store::export(&self.store, version).map_err(|e| e.to_string())?;
        // Each publication is newer than every earlier one: a scorer takes a bundle only
        // with a serial above the last it applied, so a replayed old message is no rollback,
        // while a revert (published anew) is.
        bundle.serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        let payload = serde_json::to_vec(&bundle).map_err(|e| e.to_string())?;
        *self
            .producer
            .context()
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        self.producer
            .send(BaseRecord::to(&self.topic).key(&self.key).payload(&payload))
            .map_err(|(e, _)| e.to_string())?;
        self.producer
            .flush(Duration::from_secs(30))
            .map_err(|e| e.to_string())?;
        let delivered = self
            .producer
            .context()
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match delivered {
            Some(Ok(())) => Ok(payload.len()),
            Some(Err(e)) => Err(e),
            None => Err("no delivery report".into()),
        }
    }
}

/// The scorer's side: reads the model topic into the local store.
pub struct Follower {
    consumer: BaseConsumer,
    topic: String,
    key: String,
    store: PathBuf,
    keep: usize,
    /// The configured features: a bundle for others is rejected.
    features: Vec<String>,
    metrics: ClusterMetrics,
    /// Set once everything in the topic at start-up has been read.
    pub caught_up: Arc<AtomicBool>,
}

impl Follower {
    pub fn new(
        k: &KafkaSettings,
        cluster: &ClusterSettings,
        store: PathBuf,
        keep: usize,
        features: Vec<String>,
        metrics: ClusterMetrics,
    ) -> Result<Self, AppError> {
        let mut config = super::kafka::base_config(k)?;
        // Partitions are assigned, not subscribed: every scorer reads the whole topic.
        config
            .set("group.id", format!("{}.models", cluster.model_key))
            .set("enable.auto.commit", "false")
            .set("receive.message.max.bytes", "134217728")
            .set("fetch.max.bytes", MAX_MESSAGE_BYTES)
            .set("max.partition.fetch.bytes", MAX_MESSAGE_BYTES);
        Ok(Follower {
            consumer: BaseConsumer::from_config(&config).map_err(PipelineError::from)?,
            topic: cluster.model_topic.clone(),
            key: cluster.model_key.clone(),
            store,
            keep,
            features,
            metrics,
            caught_up: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The topic's partitions with their high watermarks, or `None` while it does not exist.
    fn partitions(&self) -> Option<HashMap<i32, i64>> {
        let md = self
            .consumer
            .fetch_metadata(Some(&self.topic), Duration::from_secs(5))
            .ok()?;
        let topic = md.topics().iter().find(|t| t.name() == self.topic)?;
        if topic.error().is_some() || topic.partitions().is_empty() {
            return None;
        }
        topic
            .partitions()
            .iter()
            .map(|p| {
                self.consumer
                    .fetch_watermarks(&self.topic, p.id(), Duration::from_secs(5))
                    .ok()
                    .map(|(_, high)| (p.id(), high))
            })
            .collect()
    }

    /// Follows the topic until cancelled. Bundles read while catching up are coalesced (only
    /// the last one is written); afterwards each one is written as it arrives.
    pub fn run(self, cancel: CancellationToken) -> Result<(), PipelineError> {
        let mut backlog: Option<HashMap<i32, i64>> = None;
        let mut latest: Option<Bundle> = None;
        while !cancel.is_cancelled() {
            if backlog.is_none() {
                match self.partitions() {
                    Some(mut highs) => {
                        let mut tpl = TopicPartitionList::new();
                        for &p in highs.keys() {
                            tpl.add_partition_offset(&self.topic, p, Offset::Beginning)?;
                        }
                        self.consumer.assign(&tpl)?;
                        tracing::info!(topic = %self.topic, key = %self.key, "following the model topic");
                        highs.retain(|_, high| *high > 0);
                        backlog = Some(highs);
                    }
                    None => {
                        // Nothing published yet: nothing to catch up on.
                        self.caught_up.store(true, Ordering::Release);
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                }
            }
            if let Some(Ok(msg)) = self.consumer.poll(POLL) {
                if let Some(b) = backlog.as_mut()
                    && b.get(&msg.partition())
                        .is_some_and(|&h| msg.offset() + 1 >= h)
                {
                    b.remove(&msg.partition());
                }
                if msg.key() == Some(self.key.as_bytes()) {
                    match serde_json::from_slice::<Bundle>(msg.payload().unwrap_or_default()) {
                        Ok(bundle) => latest = Some(bundle),
                        Err(e) => self.invalid(&format!("offset {}: {e}", msg.offset())),
                    }
                }
            }
            if backlog.as_ref().is_some_and(HashMap::is_empty) {
                if let Some(bundle) = latest.take() {
                    self.apply(&bundle);
                }
                self.caught_up.store(true, Ordering::Release);
            }
        }
        Ok(())
    }

    /// Checks a received bundle fully (on the CPU, in this thread) and makes it current only
    /// when it passes; a rejected one is counted and logged, and the store keeps serving
    /// what it had.
    fn apply(&self, bundle: &Bundle) {
        match store::import(&self.store, bundle, &self.features, tch::Device::Cpu) {
            Ok(store::Imported::Rejected(r)) => {
                self.metrics
                    .models_rejected
                    .with_label_values(&[r.reason])
                    .inc();
                self.invalid(&format!("model v{} rejected: {r}", bundle.version));
            }
            Ok(store::Imported::Current(_)) => {
                self.metrics.received.with_label_values(&["applied"]).inc();
                tracing::info!(
                    version = bundle.version,
                    "received a model from the model topic"
                );
                if let Err(e) = store::prune(&self.store, self.keep) {
                    tracing::warn!(error = %e, "cannot prune the model store");
                }
            }
            Err(e) => self.invalid(&e.to_string()),
        }
    }

    fn invalid(&self, why: &str) {
        self.metrics.received.with_label_values(&["invalid"]).inc();
        tracing::warn!(topic = %self.topic, error = why, "ignored an invalid model message");
    }
}
