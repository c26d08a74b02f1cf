//! Kafka clients: configuration, the producer's delivery context (acknowledges offsets once
//! every output of a batch is delivered) and the consumer's rebalance context.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crossbeam_channel::Sender;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};

use super::offsets::OffsetTracker;
use crate::config::{ConfigError, KafkaSettings, OffsetReset, property_value};
use crate::telemetry::Metrics;

pub type Producer = ThreadedProducer<DeliveryContext>;
pub type Consumer_ = BaseConsumer<SourceContext>;

pub(crate) fn base_config(k: &KafkaSettings) -> Result<ClientConfig, ConfigError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers);
    for (key, value) in &k.properties {
        c.set(key, property_value(key, value)?);
    }
    Ok(c)
}

pub fn consumer_config(k: &KafkaSettings) -> Result<ClientConfig, ConfigError> {
    let mut c = base_config(k)?;
    c.set("group.id", &k.group_id)
        .set("enable.auto.commit", "true")
        .set(
            "auto.commit.interval.ms",
            k.commit_interval.as_millis().to_string(),
        )
        // Offsets are stored only once the outputs for them are delivered (at-least-once).
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.offset.reset",
            match k.auto_offset_reset {
                OffsetReset::Earliest => "earliest",
                OffsetReset::Latest => "latest",
            },
        )
        .set(
            "session.timeout.ms",
            k.session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (k.session_timeout.as_millis() / 10).max(100).to_string(),
        )
        .set(
            "statistics.interval.ms",
            k.statistics_interval.as_millis().to_string(),
        );
    Ok(c)
}

pub fn producer_config(k: &KafkaSettings) -> Result<ClientConfig, ConfigError> {
    let mut c = base_config(k)?;
    c.set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000");
    Ok(c)
}

/// Which output topic a delivered message went to.
#[derive(Debug, Clone, Copy)]
pub enum Output {
    Scores = 0,
    Alerts = 1,
    Dlq = 2,
}

/// The outputs of one batch still awaiting delivery, and the offsets they complete.
#[derive(Debug)]
pub struct Pending {
    remaining: AtomicUsize,
    failed: AtomicBool,
    offsets: Vec<(i32, i64)>,
    delivered: [AtomicU64; 3],
}

impl Pending {
    pub fn new(messages: usize, offsets: Vec<(i32, i64)>) -> Arc<Self> {
        Arc::new(Pending {
            remaining: AtomicUsize::new(messages),
            failed: AtomicBool::new(false),
            offsets,
            delivered: Default::default(),
        })
    }
}

pub struct DeliveryContext {
    tracker: Arc<OffsetTracker>,
    metrics: Arc<Metrics>,
    topics: [String; 3],
    failures: Sender<String>,
}

impl DeliveryContext {
    pub fn new(
        k: &KafkaSettings,
        tracker: Arc<OffsetTracker>,
        metrics: Arc<Metrics>,
        failures: Sender<String>,
    ) -> Self {
        DeliveryContext {
            tracker,
            metrics,
            topics: [
                k.scores_topic.clone(),
                k.alerts_topic.clone(),
                k.dlq_topic.clone(),
            ],
            failures,
        }
    }
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Arc<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Arc<Pending>) {
        match result {
            Ok(msg) => {
                if let Some(i) = self.topics.iter().position(|t| t == msg.topic()) {
                    pending.delivered[i].fetch_add(1, Ordering::Relaxed);
                }
            }
            Err((err, msg)) => {
                self.metrics.producer_errors.inc();
                pending.failed.store(true, Ordering::Relaxed);
                let _ = self
                    .failures
                    .try_send(format!("delivery to {} failed: {err}", msg.topic()));
            }
        }
        if pending.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            for (i, name) in crate::telemetry::OUTPUTS.iter().enumerate() {
                let n = pending.delivered[i].load(Ordering::Relaxed);
                if n > 0 {
                    self.metrics
                        .messages_produced
                        .with_label_values(&[name])
                        .inc_by(n);
                }
            }
            // A batch with any failed output is never acknowledged: its offsets stay
            // uncommitted and the records are replayed after the restart.
            if !pending.failed.load(Ordering::Relaxed) {
                self.tracker.ack(pending.offsets.iter().copied());
            }
        }
    }
}

/// Consumer callbacks: on revocation, store what is complete (librdkafka commits it before
/// handing the partitions over) and forget the partitions.
pub struct SourceContext {
    pub tracker: Arc<OffsetTracker>,
    pub topic: String,
    pub metrics: Arc<Metrics>,
}

impl ClientContext for SourceContext {
    /// librdkafka statistics (every `statistics.interval.ms`): per-partition consumer lag.
    fn stats(&self, stats: Statistics) {
        let Some(topic) = stats.topics.get(&self.topic) else {
            return;
        };
        for (&p, part) in &topic.partitions {
            if p >= 0 && part.consumer_lag >= 0 {
                self.metrics
                    .consumer_lag
                    .with_label_values(&[&p.to_string()])
                    .set(part.consumer_lag);
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            store_positions(consumer, &self.topic, &self.tracker.committable());
            let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(partitions = ?parts, "partitions revoked");
            self.tracker.forget(&parts);
            self.metrics.consumer_lag.reset();
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(partitions = ?parts, "partitions assigned");
            self.tracker.forget(&parts);
        }
        let assigned = consumer.assignment().map_or(0, |a| a.count());
        self.metrics.assigned_partitions.set(assigned as i64);
    }
}

/// Stores positions for the next commit. Partitions no longer assigned are skipped.
pub fn store_positions(consumer: &Consumer_, topic: &str, positions: &[(i32, i64)]) -> usize {
    let mut stored = 0;
    for &(partition, pos) in positions {
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(topic, partition, Offset::Offset(pos))
            .is_ok()
        {
            match consumer.store_offsets(&tpl) {
                Ok(()) => stored += 1,
                Err(e) => tracing::debug!(partition, error = %e, "offset not stored"),
            }
        }
    }
    stored
}
