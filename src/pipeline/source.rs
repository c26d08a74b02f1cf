//! The source stage: polls the input topic in the consumer group, decodes each record
//! (window mode: appends it to its key's window), sends the good ones on to the batcher
//! and the undecodable ones to the dead-letter topic. It owns the consumer, so it also
//! stores completed offsets for commit, and on shutdown it waits for the stages after it
//! to drain before the final commit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::BaseRecord;
use tokio_util::sync::CancellationToken;

use super::decode::{DecodeError, DecodeErrorCode, Decoder};
use super::kafka::{Consumer_, Pending, Producer, store_positions};
use super::offsets::OffsetTracker;
use super::output::{DeadLetter, encode};
use super::window::Shaper;
use super::{Meta, Record, Timestamp};
use crate::config::InputSpec;
use crate::error::PipelineError;
use crate::telemetry::Metrics;

/// How long one poll waits; bounds how quickly the source notices shutdown.
const POLL: Duration = Duration::from_millis(100);

pub struct Source {
    pub consumer: Consumer_,
    pub producer: Arc<Producer>,
    pub tracker: Arc<OffsetTracker>,
    pub metrics: Arc<Metrics>,
    pub input: InputSpec,
    pub topic: String,
    pub dlq_topic: String,
    /// `false` for the trainer role: undecodable records are only counted (the scorers
    /// dead-letter them) and their offsets acknowledged.
    pub dead_letters: bool,
    pub commit_interval: Duration,
    pub drain_timeout: Duration,
    /// Delivery failures reported by the producer: fatal.
    pub failures: Receiver<String>,
    /// Closed when the sink has finished (all outputs handed to the producer).
    pub sink_done: Receiver<()>,
}

/// Decodes one consumed message into a record (window mode updates the key's window).
fn to_record(
    decoder: &Decoder,
    shaper: &mut Shaper,
    msg: &BorrowedMessage<'_>,
) -> Result<Record, DecodeError> {
    let payload = msg
        .payload()
        .ok_or_else(|| DecodeError::new(DecodeErrorCode::InvalidJson, "empty payload"))?;
    let d = decoder.decode(payload)?;
    let timestamp = match (d.timestamp, msg.timestamp().to_millis()) {
        (Timestamp::None, Some(ms)) => Timestamp::Number(ms as f64),
        (t, _) => t,
    };
    let features = shaper.shape(d.key.as_deref(), d.values);
    Ok(Record {
        meta: Meta {
            partition: msg.partition(),
            offset: msg.offset(),
            key: d.key,
            timestamp,
        },
        features,
    })
}

impl Source {
    pub fn run(
        self,
        records: Sender<Record>,
        cancel: CancellationToken,
    ) -> Result<(), PipelineError> {
        self.consumer.subscribe(&[&self.topic])?;
        tracing::info!(topic = %self.topic, "consuming");
        let decoder = Decoder::new(&self.input);
        let mut shaper = Shaper::new(&self.input);
        let mut dlq_buf = Vec::new();
        let mut consumed = 0u64;
        let mut last_store = Instant::now();
        let result = loop {
            if cancel.is_cancelled() {
                break Ok(());
            }
            if let Ok(reason) = self.failures.try_recv() {
                break Err(PipelineError::Produce(reason));
            }
            match self.consumer.poll(POLL) {
                None => {}
                Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
                Some(Ok(msg)) => {
                    consumed += 1;
                    self.tracker.register(msg.partition(), msg.offset());
                    match to_record(&decoder, &mut shaper, &msg) {
                        Ok(record) => {
                            if records.send(record).is_err() {
                                break Ok(()); // a later stage stopped; its error is reported
                            }
                        }
                        Err(e) => {
                            if let Err(e) = self.dead_letter(&msg, &e, &mut dlq_buf) {
                                break Err(e);
                            }
                        }
                    }
                }
            }
            if last_store.elapsed() >= self.commit_interval.min(Duration::from_millis(200)) {
                self.flush_metrics(&mut consumed, &shaper);
                self.store();
                last_store = Instant::now();
            }
        };
        self.flush_metrics(&mut consumed, &shaper);
        drop(records);
        self.finish();
        result
    }

    fn flush_metrics(&self, consumed: &mut u64, shaper: &Shaper) {
        self.metrics
            .records_consumed
            .inc_by(std::mem::take(consumed));
        self.metrics
            .pending_records
            .set(self.tracker.pending() as i64);
        if let Shaper::Window(w) = shaper {
            self.metrics.window_keys.set(w.keys() as i64);
            let seen = self.metrics.window_evictions.get();
            self.metrics
                .window_evictions
                .inc_by(w.evictions().saturating_sub(seen));
        }
    }

    fn dead_letter(
        &self,
        msg: &BorrowedMessage<'_>,
        err: &DecodeError,
        buf: &mut Vec<u8>,
    ) -> Result<(), PipelineError> {
        let code = err.code.as_str();
        self.metrics.decode_errors.with_label_values(&[code]).inc();
        if !self.dead_letters {
            self.tracker.ack([(msg.partition(), msg.offset())]);
            return Ok(());
        }
        tracing::debug!(
            partition = msg.partition(),
            offset = msg.offset(),
            reason = code,
            "dead letter"
        );
        let dl = DeadLetter::new(
            (msg.partition(), msg.offset()),
            code,
            &err.detail,
            msg.payload().unwrap_or_default(),
        );
        encode(&dl, buf);
        let pending = Pending::new(1, vec![(msg.partition(), msg.offset())]);
        let mut record = BaseRecord::with_opaque_to(&self.dlq_topic, pending).payload(&buf[..]);
        if let Some(key) = msg.key() {
            record = record.key(key);
        }
        super::sink::send(&self.producer, record)
    }

    fn store(&self) {
        let positions = self.tracker.committable();
        if !positions.is_empty() {
            let n = store_positions(&self.consumer, &self.topic, &positions);
            self.metrics.offsets_committed.inc_by(n as u64);
        }
    }

    /// Waits (up to the drain deadline) for the sink to hand over its last batch and the
    /// producer to deliver everything, then commits what is complete and leaves the group.
    fn finish(&self) {
        let deadline = Instant::now() + self.drain_timeout;
        loop {
            // Keep serving the group (heartbeats, rebalance callbacks) while draining.
            let _ = self.consumer.poll(Duration::ZERO);
            match self.sink_done.recv_timeout(Duration::from_millis(50)) {
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => continue,
                _ => break,
            }
        }
        use rdkafka::producer::Producer as _;
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(e) = self.producer.flush(left.max(Duration::from_millis(100))) {
            tracing::warn!(error = %e, "producer did not deliver everything before the deadline");
        }
        self.store();
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            // Nothing stored since the last commit.
            Err(e)
                if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::NoOffset) => {}
            Err(e) => tracing::warn!(error = %e, "final offset commit failed"),
        }
        self.metrics
            .pending_records
            .set(self.tracker.pending() as i64);
        tracing::info!(pending = self.tracker.pending(), "source stopped");
    }
}
