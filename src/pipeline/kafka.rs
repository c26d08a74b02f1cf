//! Kafka clients: configuration, the producer's delivery context (acknowledges offsets once
//! every output of a batch is delivered) and the consumer's rebalance context.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crossbeam_channel::Sender;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::offsets::OffsetTracker;
use super::sink::SinkMetrics;
use super::source::SourceMetrics;
use crate::config::{ConfigError, KafkaSettings, OffsetReset, property_value};

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
    if let Some(id) = &k.group_instance_id {
        c.set("group.instance.id", id);
    }
    Ok(c)
}

pub fn producer_config(k: &KafkaSettings) -> Result<ClientConfig, ConfigError> {
    let mut c = base_config(k)?;
    c.set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        // A message is retried until the broker takes it, however long the broker is away:
        // no output is given up because of an outage (the source stops consuming while the
        // producer's queue is full). Per-message refusals still fail at once.
        .set("message.timeout.ms", "0");
    // A value from kafka.properties wins.
    for (key, value) in &k.properties {
        c.set(key, property_value(key, value)?);
    }
    Ok(c)
}

/// Which output topic a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Output {
    Scores = 0,
    Alerts = 1,
    Dlq = 2,
}

impl Output {
    pub const ALL: [Output; 3] = [Output::Scores, Output::Alerts, Output::Dlq];

    /// The `output` label of `anomalyd_messages_produced_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Output::Scores => "scores",
            Output::Alerts => "alerts",
            Output::Dlq => "dlq",
        }
    }
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

    /// One more message (a dead letter or a retry standing in for a refused output) must
    /// be delivered before the batch is complete. Called before the refused one is done.
    pub fn add_one(&self) {
        self.remaining.fetch_add(1, Ordering::AcqRel);
    }

    /// One of the batch's messages is done (delivered to `output`, or given up). The last
    /// one acknowledges the batch's offsets, unless a fatal producer error hit it.
    pub fn done_one(&self, output: Option<Output>, tracker: &OffsetTracker, metrics: &SinkMetrics) {
        if let Some(o) = output {
            self.delivered[o as usize].fetch_add(1, Ordering::Relaxed);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        for o in Output::ALL {
            let n = self.delivered[o as usize].load(Ordering::Relaxed);
            if n > 0 {
                metrics.produced.with_label_values(&[o.as_str()]).inc_by(n);
            }
        }
        // A batch hit by a fatal producer error is never acknowledged: its offsets stay
        // uncommitted and the records are replayed after the restart.
        if !self.failed.load(Ordering::Relaxed) {
            tracker.ack(self.offsets.iter().copied());
        }
    }
}

/// What to do with a message the producer could not deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The producer instance is unusable (idempotence state lost): stop, restart, replay.
    Fatal,
    /// Refused for its own content (too large, invalid): dead-letter the record.
    DeadLetter(&'static str),
    /// Not about this record (timed out, topic missing, leader unavailable, an error the
    /// broker does not name): produce it again after a backoff, until it goes through.
    Retry,
    /// Purged while the producer shuts down: leave it unacknowledged (replayed on restart).
    Abandon,
}

/// Classifies a delivery error.
pub fn disposition(code: Option<RDKafkaErrorCode>) -> Disposition {
    use RDKafkaErrorCode as E;
    match code {
        Some(E::Fatal | E::OutOfOrderSequenceNumber | E::InvalidProducerEpoch) => {
            Disposition::Fatal
        }
        Some(E::MessageSizeTooLarge | E::InvalidMessageSize | E::MessageBatchTooLarge) => {
            Disposition::DeadLetter("output_too_large")
        }
        Some(
            E::InvalidMessage
            | E::InvalidRecord
            | E::InvalidTimestamp
            | E::InvalidRequiredAcks
            | E::BadMessage
            | E::InvalidArgument,
        ) => Disposition::DeadLetter("output_rejected"),
        Some(E::PurgeQueue | E::PurgeInflight) => Disposition::Abandon,
        _ => Disposition::Retry,
    }
}

/// A message the producer refused or could not deliver, handed back to the sink.
#[derive(Debug)]
pub struct Refused {
    pub output: Output,
    pub topic: String,
    /// The input record the message was for.
    pub record: (i32, i64),
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub error: String,
    pub disposition: Disposition,
    pub pending: Arc<Pending>,
}

/// The input record an output message belongs to: every output (score, alert, dead
/// letter) carries the record's `partition` and `offset`. Read only for a refused message.
fn record_of(payload: &[u8]) -> Option<(i32, i64)> {
    #[derive(serde::Deserialize)]
    struct Coordinates {
        partition: i32,
        offset: i64,
    }
    serde_json::from_slice::<Coordinates>(payload)
        .ok()
        .map(|c| (c.partition, c.offset))
}

pub struct DeliveryContext {
    tracker: Arc<OffsetTracker>,
    metrics: SinkMetrics,
    topics: [String; 3],
    /// Fatal producer errors: the pipeline stops (a restart replays what is unacknowledged).
    failures: Sender<String>,
    /// Messages refused for their own sake: the sink dead-letters or retries them.
    refused: Sender<Refused>,
}

impl DeliveryContext {
    pub fn new(
        k: &KafkaSettings,
        tracker: Arc<OffsetTracker>,
        metrics: SinkMetrics,
        failures: Sender<String>,
        refused: Sender<Refused>,
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
            refused,
        }
    }

    fn output(&self, topic: &str) -> Option<Output> {
        match self.topics.iter().position(|t| t == topic) {
            Some(0) => Some(Output::Scores),
            Some(1) => Some(Output::Alerts),
            Some(2) => Some(Output::Dlq),
            _ => None,
        }
    }

    /// Acknowledges one message of `pending` as done.
    pub fn done(&self, pending: &Pending, output: Option<Output>) {
        pending.done_one(output, &self.tracker, &self.metrics);
    }
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error("producer", &error, reason);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Arc<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Arc<Pending>) {
        let (err, msg) = match result {
            Ok(msg) => return self.done(&pending, self.output(msg.topic())),
            Err((err, msg)) => (err, msg),
        };
        self.metrics.producer_errors.inc();
        let output = self.output(msg.topic()).unwrap_or(Output::Scores);
        let payload = msg.payload().unwrap_or_default();
        let record = record_of(payload).unwrap_or((msg.partition(), -1));
        let disposition = disposition(err.rdkafka_error_code());
        match disposition {
            Disposition::Fatal => {
                pending.failed.store(true, Ordering::Relaxed);
                let _ = self
                    .failures
                    .try_send(format!("delivery to {} failed: {err}", msg.topic()));
                self.done(&pending, None);
            }
            Disposition::Abandon => {
                pending.failed.store(true, Ordering::Relaxed);
                self.done(&pending, None);
            }
            Disposition::DeadLetter(_) | Disposition::Retry => {
                // The replacement (a retry or the dead letter) completes the batch instead.
                pending.add_one();
                let refused = Refused {
                    output,
                    topic: msg.topic().to_string(),
                    record,
                    key: msg.key().map(<[u8]>::to_vec),
                    payload: payload.to_vec(),
                    error: err.to_string(),
                    disposition,
                    pending: pending.clone(),
                };
                if let Err(e) = self.refused.try_send(refused) {
                    // The sink has stopped: leave the record unacknowledged (replayed).
                    let r = e.into_inner();
                    r.pending.failed.store(true, Ordering::Relaxed);
                    self.done(&r.pending, None);
                }
                self.done(&pending, None);
            }
        }
    }
}

/// Logs a client-level error (the broker unreachable, authentication or TLS refused) with
/// the setting to check. librdkafka retries these itself; the probe reports readiness.
pub fn log_client_error(client: &str, error: &KafkaError, reason: &str) {
    match hint(error.rdkafka_error_code(), reason) {
        Some(hint) => tracing::error!(client, error = %error, reason, hint, "kafka client error"),
        None => tracing::warn!(client, error = %error, reason, "kafka client error"),
    }
}

/// The setting to check for a connection error, when it names one.
pub fn hint(code: Option<RDKafkaErrorCode>, reason: &str) -> Option<&'static str> {
    let r = reason.to_ascii_lowercase();
    match code {
        Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
            Some(
                "SASL authentication failed: check kafka.properties.sasl.username, \
                 sasl.password and sasl.mechanism",
            )
        }
        Some(RDKafkaErrorCode::SSL) | None if r.contains("certificate verify failed") => Some(
            "the broker's TLS certificate is not trusted: check kafka.properties.ssl.ca.location \
             (the CA that signed it) and that kafka.brokers uses the name in the certificate",
        ),
        Some(RDKafkaErrorCode::SSL) => Some(
            "TLS handshake failed: check kafka.properties.security.protocol (SSL or SASL_SSL \
             for a TLS listener) and the kafka.properties.ssl.* settings",
        ),
        _ if r.contains("authentication") || r.contains("sasl") => Some(
            "SASL authentication failed: check kafka.properties.sasl.username, sasl.password, \
             sasl.mechanism and security.protocol",
        ),
        _ if r.contains("ssl") || r.contains("tls") || r.contains("handshake") => {
            Some("TLS failed: check kafka.properties.security.protocol and ssl.* settings")
        }
        _ => None,
    }
}

/// Consumer callbacks: on revocation, store what is complete (librdkafka commits it before
/// handing the partitions over) and forget the partitions.
pub struct SourceContext {
    pub tracker: Arc<OffsetTracker>,
    pub topic: String,
    pub metrics: SourceMetrics,
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error("consumer", &error, reason);
    }

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
