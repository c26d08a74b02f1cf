//! The source stage: polls the input topic in the consumer group, decodes each record
//! (window mode: appends it to its key's window), and hands the good ones to the batcher and
//! the undecodable ones to the sink for the dead-letter topic. It owns the consumer, so it
//! also stores completed offsets for commit, and on shutdown it waits for the stages after
//! it to drain before the final commit.
//!
//! It never blocks on the stages after it: when they are full (a channel, or more than
//! `pipeline.max_in_flight` records consumed but not yet delivered), it waits without
//! polling for a moment, then pauses its partitions and keeps polling, so the consumer stays
//! in its group (heartbeats, rebalances) and a shutdown is noticed at once, however slow the
//! scorer or the broker is.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use tokio_util::sync::CancellationToken;

use super::decode::{DecodeError, DecodeErrorCode, Decoder};
use super::kafka::{Consumer_, store_positions};
use super::offsets::OffsetTracker;
use super::shaper::Shaper;
use super::sink::DeadJob;
use super::{Meta, Record, Timestamp};
use crate::config::InputSpec;
use crate::error::PipelineError;
use crate::telemetry::{StateBytes, counter, counter_vec, int_gauge, int_gauge_vec};

/// How long one poll waits; bounds how quickly the source notices shutdown.
const POLL: Duration = Duration::from_millis(100);
/// How long one poll (or wait) lasts while the stages after the source are full.
const POLL_PAUSED: Duration = Duration::from_millis(10);
/// How long the stages after the source may stay full before its partitions are paused.
const PAUSE_AFTER: Duration = Duration::from_secs(1);
/// How often completed offsets are stored for the next commit.
const STORE_EVERY: Duration = Duration::from_millis(50);

/// The source stage's metrics; the consumer's callbacks ([`super::kafka::SourceContext`])
/// update the partition gauges.
#[derive(Clone)]
pub struct SourceMetrics {
    pub consumed: IntCounter,
    pub decode_errors: IntCounterVec,
    pub offsets_stored: IntCounter,
    pub pending: IntGauge,
    pub paused: IntGauge,
    pub window_keys: IntGauge,
    pub window_evictions: IntCounter,
    pub window_state: StateBytes,
    pub consumer_lag: IntGaugeVec,
    pub assigned_partitions: IntGauge,
}

impl SourceMetrics {
    pub fn register(r: &Registry, window_state: StateBytes) -> Self {
        let codes: Vec<&str> = DecodeErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        SourceMetrics {
            consumed: counter(
                r,
                "anomalyd_records_consumed_total",
                "Records read from the input topic.",
            ),
            decode_errors: counter_vec(
                r,
                "anomalyd_decode_errors_total",
                "Records that could not be decoded, by reason code.",
                "code",
                &codes,
            ),
            offsets_stored: counter(
                r,
                "anomalyd_offset_commits_total",
                "Offset positions stored for commit.",
            ),
            pending: int_gauge(
                r,
                "anomalyd_pending_records",
                "Records consumed whose outputs are not all delivered yet.",
            ),
            paused: int_gauge(
                r,
                "anomalyd_source_paused",
                "1 while consumption is paused because the stages after it are full \
                 (pipeline.max_in_flight or a full channel); the group membership is kept.",
            ),
            window_keys: int_gauge(r, "anomalyd_window_keys", "Keys with window state."),
            window_evictions: counter(
                r,
                "anomalyd_window_evictions_total",
                "Keys evicted from window state to stay within input.window.max_keys.",
            ),
            window_state,
            consumer_lag: int_gauge_vec(
                r,
                "anomalyd_consumer_lag_records",
                "Records in the input topic not yet committed, per assigned partition \
                 (librdkafka statistics).",
                "partition",
                &[],
            ),
            assigned_partitions: int_gauge(
                r,
                "anomalyd_assigned_partitions",
                "Input partitions assigned to this replica by the consumer group.",
            ),
        }
    }
}

pub struct Source {
    pub consumer: Consumer_,
    pub tracker: Arc<OffsetTracker>,
    pub metrics: SourceMetrics,
    pub input: InputSpec,
    pub topic: String,
    /// `false` for the trainer role: undecodable records are only counted (the scorers
    /// dead-letter them) and their offsets acknowledged.
    pub dead_letters: bool,
    pub commit_interval: Duration,
    pub drain_timeout: Duration,
    /// Records consumed but not yet delivered, at most (the source pauses beyond it). It
    /// bounds the records a crash replays (see README, "Delivery guarantees").
    pub max_in_flight: usize,
    /// Fatal producer errors: the pipeline stops.
    pub failures: Receiver<String>,
    /// Closed when the sink has finished (every output delivered or dead-lettered).
    pub sink_done: Receiver<()>,
}

/// What the source hands on: a record to score, or an undecodable one to dead-letter.
enum Item {
    Record(Record),
    Dead(DeadJob),
}

/// Decodes one consumed message into a record (window mode updates the key's window).
fn to_record(
    decoder: &Decoder,
    shaper: &mut Shaper,
    msg: &BorrowedMessage<'_>,
) -> Result<Record, DecodeError> {
    let payload = msg.payload().ok_or_else(|| {
        DecodeError::new(
            DecodeErrorCode::InvalidJson,
            "empty payload (a tombstone or a null value)",
        )
    })?;
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

/// Offsets stored since the last explicit commit, in records.
#[derive(Default)]
struct Stored {
    positions: HashMap<i32, i64>,
    since_commit: u64,
}

impl Source {
    pub fn run(
        self,
        records: Sender<Record>,
        dead: Sender<DeadJob>,
        cancel: CancellationToken,
    ) -> Result<(), PipelineError> {
        self.consumer.subscribe(&[&self.topic])?;
        tracing::info!(topic = %self.topic, "consuming");
        let decoder = Decoder::new(&self.input);
        let mut shaper = Shaper::new(&self.input);
        let mut held: VecDeque<Item> = VecDeque::new();
        let mut paused = false;
        let mut paused_partitions: Vec<i32> = Vec::new();
        let mut full_since: Option<Instant> = None;
        let mut consumed = 0u64;
        let mut stored = Stored::default();
        let mut last_store = Instant::now();
        let mut last_commit = Instant::now();
        let result = 'run: loop {
            if cancel.is_cancelled() {
                break Ok(());
            }
            if let Ok(reason) = self.failures.try_recv() {
                break Err(PipelineError::Produce(reason));
            }
            // Hand on what is decoded, as far as the next stages take it.
            while let Some(item) = held.pop_front() {
                let sent = match item {
                    Item::Record(r) => records.try_send(r).map_err(|e| match e {
                        TrySendError::Full(r) => Some(Item::Record(r)),
                        TrySendError::Disconnected(_) => None,
                    }),
                    Item::Dead(d) => dead.try_send(d).map_err(|e| match e {
                        TrySendError::Full(d) => Some(Item::Dead(d)),
                        TrySendError::Disconnected(_) => None,
                    }),
                };
                match sent {
                    Ok(()) => {}
                    Err(Some(item)) => {
                        held.push_front(item);
                        break;
                    }
                    // A later stage stopped; its error is reported.
                    Err(None) => break 'run Ok(()),
                }
            }
            let full = !held.is_empty() || self.tracker.pending() >= self.max_in_flight;
            // A short stall (a batch being scored) just skips polling: librdkafka keeps the
            // membership alive from its own threads and its prefetched records wait. A stall
            // that lasts (a model training, the broker away) pauses the partitions and polls
            // again, so rebalances are served and max.poll.interval.ms is never exceeded.
            if full {
                let since = *full_since.get_or_insert_with(Instant::now);
                if !paused && since.elapsed() >= PAUSE_AFTER {
                    self.pause(&mut paused_partitions);
                    paused = true;
                    self.metrics.paused.set(1);
                }
            } else {
                full_since = None;
                if paused {
                    self.resume(&mut paused_partitions);
                    paused = false;
                    self.metrics.paused.set(0);
                }
            }
            if full && !paused {
                std::thread::sleep(POLL_PAUSED);
            } else {
                match self.consumer.poll(if full { POLL_PAUSED } else { POLL }) {
                    None => {}
                    Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
                    Some(Ok(msg)) => {
                        if paused {
                            // A partition assigned since the pause: pause it too.
                            self.pause(&mut paused_partitions);
                        }
                        consumed += 1;
                        self.tracker.register(msg.partition(), msg.offset());
                        match to_record(&decoder, &mut shaper, &msg) {
                            Ok(record) => held.push_back(Item::Record(record)),
                            Err(e) => {
                                if let Some(job) = self.dead_letter(&msg, e) {
                                    held.push_back(Item::Dead(job));
                                }
                            }
                        }
                    }
                }
            }
            if last_store.elapsed() >= STORE_EVERY {
                self.flush_metrics(&mut consumed, &mut shaper);
                self.store(&mut stored);
                last_store = Instant::now();
                // Besides librdkafka's commit every kafka.commit_interval, commit as soon as
                // half of max_in_flight records completed: what a crash replays stays
                // bounded in records, not only in time.
                let due = stored.since_commit > 0
                    && (stored.since_commit as usize >= self.max_in_flight / 2
                        || last_commit.elapsed() >= self.commit_interval);
                if due {
                    if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Async) {
                        tracing::debug!(error = %e, "offset commit not sent");
                    }
                    stored.since_commit = 0;
                    last_commit = Instant::now();
                }
            }
        };
        self.flush_metrics(&mut consumed, &mut shaper);
        drop(records);
        drop(dead);
        self.finish(&mut stored);
        result
    }

    /// Pauses (or resumes) every assigned partition: the consumer keeps polling, so it
    /// stays in the group, but fetches nothing new while paused.
    fn pause(&self, paused: &mut Vec<i32>) {
        let Ok(assigned) = self.consumer.assignment() else {
            return;
        };
        if assigned.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.pause(&assigned) {
            tracing::debug!(error = %e, "pause failed");
        }
        for e in assigned.elements() {
            if !paused.contains(&e.partition()) {
                paused.push(e.partition());
            }
        }
    }

    /// Resumes every partition this source paused, assigned now or not: librdkafka keeps a
    /// partition's pause across a rebalance, so one revoked while paused and assigned again
    /// later would otherwise never be fetched.
    fn resume(&self, paused: &mut Vec<i32>) {
        let mut tpl = TopicPartitionList::new();
        for &p in paused.iter() {
            tpl.add_partition(&self.topic, p);
        }
        if let Ok(assigned) = self.consumer.assignment() {
            for e in assigned.elements() {
                if !paused.contains(&e.partition()) {
                    tpl.add_partition(&self.topic, e.partition());
                }
            }
        }
        if tpl.count() > 0
            && let Err(e) = self.consumer.resume(&tpl)
        {
            tracing::debug!(error = %e, "resume failed");
        }
        paused.clear();
    }

    fn flush_metrics(&self, consumed: &mut u64, shaper: &mut Shaper) {
        self.metrics.consumed.inc_by(std::mem::take(consumed));
        self.metrics.pending.set(self.tracker.pending() as i64);
        if let Shaper::Window(w) = shaper {
            self.metrics.window_keys.set(w.keys() as i64);
            self.metrics.window_state.set_keys(w.keys());
            self.metrics.window_evictions.inc_by(w.take_evictions());
        }
    }

    /// The dead-letter job for an undecodable record; `None` for the trainer role, which
    /// only counts it (the scorers dead-letter it).
    fn dead_letter(&self, msg: &BorrowedMessage<'_>, err: DecodeError) -> Option<DeadJob> {
        let code = err.code.as_str();
        self.metrics.decode_errors.with_label_values(&[code]).inc();
        if !self.dead_letters {
            self.tracker.ack([(msg.partition(), msg.offset())]);
            return None;
        }
        tracing::debug!(
            partition = msg.partition(),
            offset = msg.offset(),
            reason = code,
            "dead letter"
        );
        Some(DeadJob {
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().unwrap_or_default().to_vec(),
            reason: code,
            detail: err.detail,
        })
    }

    fn store(&self, stored: &mut Stored) {
        let positions = self.tracker.committable();
        if positions.is_empty() {
            return;
        }
        let n = store_positions(&self.consumer, &self.topic, &positions);
        self.metrics.offsets_stored.inc_by(n as u64);
        for (partition, pos) in positions {
            if let Some(prev) = stored.positions.insert(partition, pos) {
                stored.since_commit += pos.saturating_sub(prev).max(0) as u64;
            }
        }
    }

    /// Waits (up to the drain deadline) for the sink to deliver or dead-letter its last
    /// messages, then commits what is complete and leaves the group.
    fn finish(&self, stored: &mut Stored) {
        let deadline = Instant::now() + self.drain_timeout;
        loop {
            // Keep serving the group (heartbeats, rebalance callbacks) while draining.
            let _ = self.consumer.poll(Duration::ZERO);
            match self.sink_done.recv_timeout(Duration::from_millis(50)) {
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => continue,
                _ => break,
            }
        }
        self.store(stored);
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            // Nothing stored since the last commit.
            Err(e)
                if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::NoOffset) => {}
            Err(e) => tracing::warn!(error = %e, "final offset commit failed"),
        }
        self.metrics.pending.set(self.tracker.pending() as i64);
        tracing::info!(pending = self.tracker.pending(), "source stopped");
    }
}
