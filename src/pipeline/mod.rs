//! The streaming pipeline, one stage a file:
//!
//! ```text
//! source (rdkafka poll, decode, window) --Record--> batch --Batch--> score --Scored--> sink
//!    |  undecodable -> DLQ                                                   |  scores, alerts
//!    +------ offsets: registered when consumed, acked when outputs are delivered ------+
//! ```
//! Stages are plain threads joined by bounded crossbeam channels; closing a channel drains
//! the stages after it.

pub mod batch;
pub mod cluster;
pub mod decode;
pub mod kafka;
pub mod offsets;
pub mod output;
pub mod probe;
pub mod score;
pub mod shaper;
pub mod sink;
pub mod source;

use serde::Serialize;

/// Where a record came from, and what the outputs carry of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Box<str>>,
    pub timestamp: Timestamp,
}

/// A record's timestamp as the outputs report it: the configured field as given, else the
/// Kafka message timestamp in milliseconds, else none.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Timestamp {
    Number(f64),
    Text(Box<str>),
    None,
}

impl Timestamp {
    pub fn is_none(&self) -> bool {
        matches!(self, Timestamp::None)
    }
}

/// A decoded record with its feature vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub meta: Meta,
    pub features: Vec<f32>,
}

/// Records to score together; `features` is row-major, `len() * dim` values.
#[derive(Debug, Default)]
pub struct Batch {
    pub metas: Vec<Meta>,
    pub features: Vec<f32>,
}

impl Batch {
    pub fn with_capacity(records: usize, dim: usize) -> Self {
        Batch {
            metas: Vec::with_capacity(records),
            features: Vec::with_capacity(records * dim),
        }
    }

    pub fn push(&mut self, record: Record) {
        self.features.extend_from_slice(&record.features);
        self.metas.push(record.meta);
    }

    pub fn len(&self) -> usize {
        self.metas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }
}

pub use crate::model::judge::Contribution;

/// A scored batch, ready to be written out.
#[derive(Debug)]
pub struct Scored {
    pub metas: Vec<Meta>,
    pub scores: Vec<f32>,
    /// The threshold each record was compared with (SPOT thresholds move).
    pub thresholds: Vec<f32>,
    pub anomalies: Vec<bool>,
    /// 0 for a typical score, 1 at the threshold.
    pub normalized: Vec<f32>,
    /// The anomaly likelihood of each record (`threshold.kind = "likelihood"`), else empty.
    pub likelihood: Vec<f32>,
    /// The discord distance that fed each record's likelihood (`input = "discord"`), else
    /// empty.
    pub discord: Vec<f32>,
    pub model_version: u64,
    /// For each record flagged as an anomaly (by index), its top contributing features.
    pub explanations: Vec<(usize, Vec<Contribution>)>,
    /// The records' feature vectors, row-major (moved from the batch, not copied).
    pub features: Vec<f32>,
}

impl Scored {
    pub fn is_anomaly(&self, i: usize) -> bool {
        self.anomalies[i]
    }

    /// Whether record `i` got a usable score. One that did not (the model overflowed on
    /// it) is dead-lettered instead of scored, and never judged or trained on.
    pub fn is_scored(&self, i: usize) -> bool {
        self.scores[i].is_finite()
    }

    /// The feature vector of record `i`.
    pub fn features_of(&self, i: usize) -> &[f32] {
        let dim = self.features.len() / self.metas.len().max(1);
        &self.features[i * dim..(i + 1) * dim]
    }

    /// The top contributing features of record `i`, when it is an anomaly.
    pub fn explanation(&self, i: usize) -> Option<&[Contribution]> {
        self.explanations
            .binary_search_by_key(&i, |(j, _)| *j)
            .ok()
            .map(|k| self.explanations[k].1.as_slice())
    }
}
