//! The sink stage: the one place that produces outputs. It writes one score message per
//! record to the scores topic, one alert per anomaly to the alerts topic, and one dead letter
//! per record that cannot be scored: undecodable (sent by the source), scored to a
//! non-finite value, or whose output the broker refused (handed back by the producer's
//! delivery callback). Each batch's offsets are acknowledged only once every message for it
//! is done, so no record is committed without its outputs, and no record can stop its
//! partition: what the broker refuses for that record alone (too large, invalid) ends on the
//! dead-letter topic, and a dead letter the broker refuses for itself as well is counted,
//! logged and acknowledged. Any other failure (the broker away, an error it does not name)
//! is tried again with a backoff until it succeeds: waiting fixes those, and nothing is lost.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, never, select};
use prometheus::{IntCounter, IntCounterVec, Registry};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;

use super::Scored;
use super::kafka::{Disposition, Output, Pending, Producer, Refused, disposition};
use super::offsets::OffsetTracker;
use super::output::{DeadLetter, encode, score_message};
use crate::error::PipelineError;
use crate::telemetry::{counter, counter_vec};

/// A record for the dead-letter topic, from the source (undecodable).
#[derive(Debug)]
pub struct DeadJob {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub reason: &'static str,
    pub detail: String,
}

/// The longest record key a dead letter carries as its Kafka key; a longer one (which may
/// be why the outputs were refused) is left out (the payload prefix still shows it).
const DLQ_KEY_MAX: usize = 1024;
/// The longest wait between two attempts at a message the broker did not take.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// `reason` label values of `anomalyd_dead_letters_total`: records dead-lettered for
/// something other than their decoding (those are `anomalyd_decode_errors_total`).
pub const DEAD_LETTER_REASONS: [&str; 3] =
    ["output_too_large", "output_rejected", "non_finite_score"];

/// The sink's metrics; the producer's delivery callback
/// ([`super::kafka::DeliveryContext`]) counts deliveries and failures.
#[derive(Clone)]
pub struct SinkMetrics {
    pub produced: IntCounterVec,
    pub producer_errors: IntCounter,
    pub dead_letters: IntCounterVec,
    pub dropped: IntCounterVec,
}

impl SinkMetrics {
    pub fn register(r: &Registry) -> Self {
        SinkMetrics {
            produced: counter_vec(
                r,
                "anomalyd_messages_produced_total",
                "Messages delivered to the output topics, by output.",
                "output",
                &Output::ALL.map(Output::as_str),
            ),
            producer_errors: counter(
                r,
                "anomalyd_producer_errors_total",
                "Messages the producer failed to deliver.",
            ),
            dead_letters: counter_vec(
                r,
                "anomalyd_dead_letters_total",
                "Decoded records sent to the dead-letter topic instead of a score, by reason \
                 (undecodable records are anomalyd_decode_errors_total).",
                "reason",
                &DEAD_LETTER_REASONS,
            ),
            dropped: counter_vec(
                r,
                "anomalyd_records_dropped_total",
                "Records whose dead letter the broker refused as well: logged with partition and \
                 offset, then acknowledged so that they cannot stop their partition.",
                "reason",
                &["dlq_refused"],
            ),
        }
    }
}

pub struct Sink {
    pub producer: Arc<Producer>,
    pub scores_topic: String,
    pub alerts_topic: String,
    pub dlq_topic: String,
    pub feature_names: Vec<String>,
    pub tracker: Arc<OffsetTracker>,
    pub metrics: SinkMetrics,
    /// The trainer role produces nothing: each batch's offsets are acknowledged here as
    /// soon as it is scored (the retraining window has seen it).
    pub discard: bool,
    pub drain_timeout: Duration,
    pub cancel: CancellationToken,
}

/// A refused message waiting for its next attempt.
struct Retry {
    due: Instant,
    refused: Refused,
}

/// The sink's running state: messages to try again, and attempts so far per message.
#[derive(Default)]
struct Retries {
    queue: VecDeque<Retry>,
    attempts: HashMap<(Output, i32, i64), u32>,
}

impl Retries {
    fn next_due(&self) -> Option<Instant> {
        self.queue.iter().map(|r| r.due).min()
    }

    fn take_due(&mut self) -> Vec<Refused> {
        let now = Instant::now();
        let (due, wait): (Vec<Retry>, Vec<Retry>) =
            self.queue.drain(..).partition(|r| r.due <= now);
        self.queue = wait.into();
        if self.queue.is_empty() && due.is_empty() {
            // Nothing is waiting to be tried again: forget the counts (a message that fails
            // once more starts its backoff afresh), so the map cannot grow without bound.
            self.attempts.clear();
        }
        due.into_iter().map(|r| r.refused).collect()
    }
}

impl Sink {
    /// Runs until the scorer's and the source's channels close, then waits (up to the drain
    /// deadline) for every message to be delivered or dead-lettered. `_done` is dropped on
    /// return, which tells the source that it may make its final commit.
    pub fn run(
        self,
        scored: Receiver<Scored>,
        dead: Receiver<DeadJob>,
        refused: Receiver<Refused>,
        _done: crossbeam_channel::Sender<()>,
    ) -> Result<(), PipelineError> {
        let mut buf = Vec::with_capacity(512);
        let mut retries = Retries::default();
        let (mut scored, mut dead) = (scored, dead);
        let mut open = 2;
        while open > 0 {
            let wait = retries.next_due().map_or(Duration::from_millis(200), |d| {
                d.saturating_duration_since(Instant::now())
            });
            select! {
                recv(scored) -> m => match m {
                    Ok(batch) => self.write(batch, &mut buf, &mut retries)?,
                    Err(_) => { scored = never(); open -= 1; }
                },
                recv(dead) -> m => match m {
                    Ok(job) => self.dead_letter(job, &mut buf, &mut retries)?,
                    Err(_) => { dead = never(); open -= 1; }
                },
                recv(refused) -> m => if let Ok(r) = m {
                    self.handle(r, &mut buf, &mut retries)?;
                },
                default(wait) => {}
            }
            self.retry_due(&mut retries)?;
        }
        // Drain: the producer delivers what it holds; refusals are still dead-lettered.
        let deadline = Instant::now() + self.drain_timeout;
        while Instant::now() < deadline {
            if self.producer.in_flight_count() == 0
                && retries.queue.is_empty()
                && refused.is_empty()
            {
                break;
            }
            if let Ok(r) = refused.recv_timeout(Duration::from_millis(20)) {
                self.handle(r, &mut buf, &mut retries)?;
            }
            self.retry_due(&mut retries)?;
        }
        Ok(())
    }

    fn write(
        &self,
        batch: Scored,
        buf: &mut Vec<u8>,
        retries: &mut Retries,
    ) -> Result<(), PipelineError> {
        if self.discard {
            self.tracker
                .ack(batch.metas.iter().map(|m| (m.partition, m.offset)));
            return Ok(());
        }
        let offsets: Vec<(i32, i64)> = batch
            .metas
            .iter()
            .map(|m| (m.partition, m.offset))
            .collect();
        let pending = Pending::new(batch.metas.len() + batch.explanations.len(), offsets);
        let mut unscorable = 0u64;
        for i in 0..batch.metas.len() {
            let meta = &batch.metas[i];
            let key = meta.key.as_deref().map(str::as_bytes);
            if !batch.is_scored(i) {
                // The model gave no usable score: the record goes to the dead-letter topic
                // (its features are what the input held: they decoded as finite numbers).
                unscorable += 1;
                let detail = format!(
                    "the model scored the record {} (model version {})",
                    batch.scores[i], batch.model_version
                );
                let mut features = Vec::new();
                let row = batch.features_of(i);
                let _ = serde_json::to_writer(&mut features, &row);
                let dl = DeadLetter::new(
                    (meta.partition, meta.offset),
                    "non_finite_score",
                    &detail,
                    &features,
                );
                encode(&dl, buf);
                self.produce(
                    Output::Dlq,
                    key,
                    buf,
                    &pending,
                    (meta.partition, meta.offset),
                    retries,
                )?;
                continue;
            }
            encode(&score_message(&batch, i, None, &self.feature_names), buf);
            self.produce(
                Output::Scores,
                key,
                buf,
                &pending,
                (meta.partition, meta.offset),
                retries,
            )?;
            if let Some(why) = batch.explanation(i) {
                let msg = score_message(&batch, i, Some(why), &self.feature_names);
                encode(&msg, buf);
                self.produce(
                    Output::Alerts,
                    key,
                    buf,
                    &pending,
                    (meta.partition, meta.offset),
                    retries,
                )?;
            }
        }
        if unscorable > 0 {
            self.metrics
                .dead_letters
                .with_label_values(&["non_finite_score"])
                .inc_by(unscorable);
        }
        Ok(())
    }

    fn dead_letter(
        &self,
        job: DeadJob,
        buf: &mut Vec<u8>,
        retries: &mut Retries,
    ) -> Result<(), PipelineError> {
        let record = (job.partition, job.offset);
        encode(
            &DeadLetter::new(record, job.reason, &job.detail, &job.payload),
            buf,
        );
        let pending = Pending::new(1, vec![record]);
        let key = job.key.as_deref().filter(|k| k.len() <= DLQ_KEY_MAX);
        self.produce(Output::Dlq, key, buf, &pending, record, retries)
    }

    fn topic(&self, output: Output) -> &str {
        match output {
            Output::Scores => &self.scores_topic,
            Output::Alerts => &self.alerts_topic,
            Output::Dlq => &self.dlq_topic,
        }
    }

    /// Hands a message to the producer, waiting while its queue is full. A message refused
    /// at once (too large for `message.max.bytes`) is handled like a failed delivery.
    fn produce(
        &self,
        output: Output,
        key: Option<&[u8]>,
        payload: &[u8],
        pending: &Arc<Pending>,
        record: (i32, i64),
        retries: &mut Retries,
    ) -> Result<(), PipelineError> {
        let topic = self.topic(output);
        let mut msg = BaseRecord::with_opaque_to(topic, pending.clone()).payload(payload);
        if let Some(k) = key {
            msg = msg.key(k);
        }
        let mut cancelled_at: Option<Instant> = None;
        loop {
            match self.producer.send(msg) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), m)) => {
                    // The broker is slow or away; the source pauses meanwhile. At shutdown
                    // give up after the drain deadline (the record stays uncommitted).
                    if self.cancel.is_cancelled() {
                        let since = *cancelled_at.get_or_insert_with(Instant::now);
                        if since.elapsed() >= self.drain_timeout {
                            return Ok(());
                        }
                    }
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    self.metrics.producer_errors.inc();
                    let refused = Refused {
                        output,
                        topic: topic.to_string(),
                        record,
                        key: key.map(<[u8]>::to_vec),
                        payload: payload.to_vec(),
                        disposition: disposition(e.rdkafka_error_code()),
                        error: e.to_string(),
                        pending: pending.clone(),
                    };
                    let mut buf = Vec::new();
                    return self.handle(refused, &mut buf, retries);
                }
            }
        }
    }

    /// Decides what becomes of a refused message, whose slot in its batch is still open.
    fn handle(
        &self,
        r: Refused,
        buf: &mut Vec<u8>,
        retries: &mut Retries,
    ) -> Result<(), PipelineError> {
        let id = (r.output, r.record.0, r.record.1);
        let attempts = retries.attempts.get(&id).copied().unwrap_or(0) + 1;
        let reason = match r.disposition {
            Disposition::Fatal => return Err(PipelineError::Produce(r.error)),
            Disposition::Abandon => {
                r.pending.done_one(None, &self.tracker, &self.metrics);
                return Ok(());
            }
            // Not about this record (the broker away or restarting, an error it does not
            // name): tried again until it goes through, with a backoff, however long that
            // takes. The record stays unacknowledged meanwhile; nothing is given up.
            Disposition::Retry => {
                retries.attempts.insert(id, attempts);
                let backoff = Duration::from_millis(250 << attempts.min(7)).min(RETRY_MAX);
                if attempts <= 3 || attempts.is_power_of_two() {
                    tracing::warn!(
                        output = r.output.as_str(),
                        partition = r.record.0,
                        offset = r.record.1,
                        attempts,
                        error = %r.error,
                        "output not delivered; trying again"
                    );
                }
                retries.queue.push_back(Retry {
                    due: Instant::now() + backoff,
                    refused: r,
                });
                return Ok(());
            }
            Disposition::DeadLetter(reason) => reason,
        };
        retries.attempts.remove(&id);
        if r.output == Output::Dlq {
            // Even the dead letter was refused: never retried forever. The record is
            // acknowledged so its partition moves on; the log names it.
            self.metrics
                .dropped
                .with_label_values(&["dlq_refused"])
                .inc();
            tracing::error!(
                partition = r.record.0,
                offset = r.record.1,
                topic = %r.topic,
                error = %r.error,
                "the dead letter was refused too: record acknowledged without output"
            );
            r.pending.done_one(None, &self.tracker, &self.metrics);
            return Ok(());
        }
        self.metrics.dead_letters.with_label_values(&[reason]).inc();
        let detail = format!(
            "the {} message ({} bytes) was not accepted: {}",
            r.output.as_str(),
            r.payload.len(),
            r.error
        );
        encode(&DeadLetter::new(r.record, reason, &detail, &r.payload), buf);
        let key = r.key.as_deref().filter(|k| k.len() <= DLQ_KEY_MAX);
        let payload = std::mem::take(buf);
        let result = self.produce(Output::Dlq, key, &payload, &r.pending, r.record, retries);
        *buf = payload;
        result
    }

    /// Produces the refused messages whose backoff is over again (their slots in their
    /// batches are still open).
    fn retry_due(&self, retries: &mut Retries) -> Result<(), PipelineError> {
        for r in retries.take_due() {
            let key = r.key.as_deref();
            self.produce(r.output, key, &r.payload, &r.pending, r.record, retries)?;
        }
        Ok(())
    }
}
