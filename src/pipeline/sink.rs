//! The sink stage: writes one score message per record to the scores topic and one alert
//! per anomaly to the alerts topic. Each batch's offsets are acknowledged (by the producer's
//! delivery callback) only once all of its messages are delivered.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use rdkafka::error::KafkaError;
use rdkafka::producer::BaseRecord;
use rdkafka::types::RDKafkaErrorCode;

use super::Scored;
use super::kafka::{Pending, Producer};
use super::offsets::OffsetTracker;
use super::output::{encode, score_message};
use crate::error::PipelineError;

pub struct Sink {
    pub producer: Arc<Producer>,
    pub scores_topic: String,
    pub alerts_topic: String,
    pub feature_names: Vec<String>,
    /// The trainer role produces nothing: each batch's offsets are acknowledged here as
    /// soon as it is scored (the retraining window has seen it).
    pub discard: Option<Arc<OffsetTracker>>,
}

/// Enqueues a message, waiting while the producer's queue is full.
pub fn send(
    producer: &Producer,
    mut record: BaseRecord<'_, [u8], [u8], Arc<Pending>>,
) -> Result<(), PipelineError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(PipelineError::Produce(e.to_string())),
        }
    }
}

impl Sink {
    /// Runs until the scorer's channel closes. `_done` is dropped on return, which tells the
    /// source that every output has been handed to the producer.
    pub fn run(
        self,
        scored: Receiver<Scored>,
        _done: crossbeam_channel::Sender<()>,
    ) -> Result<(), PipelineError> {
        let mut buf = Vec::with_capacity(512);
        for batch in scored {
            if let Some(tracker) = &self.discard {
                tracker.ack(batch.metas.iter().map(|m| (m.partition, m.offset)));
                continue;
            }
            let offsets: Vec<(i32, i64)> = batch
                .metas
                .iter()
                .map(|m| (m.partition, m.offset))
                .collect();
            let pending = Pending::new(batch.metas.len() + batch.explanations.len(), offsets);
            for i in 0..batch.metas.len() {
                let key = batch.metas[i].key.as_deref().map(str::as_bytes);
                encode(
                    &score_message(&batch, i, None, &self.feature_names),
                    &mut buf,
                );
                self.produce(&self.scores_topic, key, &buf, &pending)?;
                if let Some(why) = batch.explanation(i) {
                    let msg = score_message(&batch, i, Some(why), &self.feature_names);
                    encode(&msg, &mut buf);
                    self.produce(&self.alerts_topic, key, &buf, &pending)?;
                }
            }
        }
        Ok(())
    }

    fn produce(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        pending: &Arc<Pending>,
    ) -> Result<(), PipelineError> {
        let mut record = BaseRecord::with_opaque_to(topic, pending.clone()).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        send(&self.producer, record)
    }
}
