//! Size-or-linger batching: a batch is handed to the scorer when it holds `max_records`, or
//! when its first record has waited `linger`. When the input channel closes (shutdown), the
//! partial batch is flushed and the stage ends, which closes the scorer's input in turn.

use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::{Batch, Record};
use crate::config::BatchPolicy;
use crate::telemetry::histogram;

/// The batcher's one metric: `anomalyd_batch_linger_seconds`.
pub fn register_linger(r: &prometheus::Registry) -> prometheus::Histogram {
    histogram(
        r,
        "anomalyd_batch_linger_seconds",
        "Age of a batch's first record when the batch is handed to the scorer.",
        prometheus::exponential_buckets(0.0005, 2.0, 14).expect("buckets"),
    )
}

pub fn run(
    records: Receiver<Record>,
    batches: Sender<Batch>,
    policy: BatchPolicy,
    dim: usize,
    linger: &prometheus::Histogram,
) {
    let new_batch = || Batch::with_capacity(policy.max_records, dim);
    let mut batch = new_batch();
    // Wait as long as needed for a batch's first record.
    while let Ok(first) = records.recv() {
        let started = Instant::now();
        let deadline = started + policy.linger;
        batch.push(first);
        let mut open = true;
        while batch.len() < policy.max_records {
            match records.recv_deadline(deadline) {
                Ok(r) => batch.push(r),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        linger.observe(started.elapsed().as_secs_f64());
        if batches
            .send(std::mem::replace(&mut batch, new_batch()))
            .is_err()
            || !open
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Meta, Timestamp};
    use std::time::Duration;

    fn rec(offset: i64) -> Record {
        Record {
            meta: Meta {
                partition: 0,
                offset,
                key: None,
                timestamp: Timestamp::None,
            },
            features: vec![offset as f32],
        }
    }

    fn policy(max_records: usize, linger_ms: u64) -> BatchPolicy {
        BatchPolicy {
            channel_capacity: 16,
            max_in_flight: 1 << 20,
            max_records,
            linger: Duration::from_millis(linger_ms),
            drain_timeout: Duration::from_secs(1),
        }
    }

    fn linger() -> prometheus::Histogram {
        register_linger(&prometheus::Registry::new())
    }

    #[test]
    fn flushes_on_size_and_on_close() {
        let (tx, rx) = crossbeam_channel::bounded(16);
        let (btx, brx) = crossbeam_channel::bounded(16);
        for o in 0..7 {
            tx.send(rec(o)).expect("send");
        }
        drop(tx);
        run(rx, btx, policy(3, 60_000), 1, &linger());
        let sizes: Vec<usize> = brx.iter().map(|b| b.len()).collect();
        assert_eq!(
            sizes,
            vec![3, 3, 1],
            "the partial batch is flushed at close"
        );
    }

    #[test]
    fn flushes_on_linger() {
        let (tx, rx) = crossbeam_channel::bounded(16);
        let (btx, brx) = crossbeam_channel::bounded(16);
        let h = std::thread::spawn(move || run(rx, btx, policy(100, 10), 1, &linger()));
        tx.send(rec(0)).expect("send");
        tx.send(rec(1)).expect("send");
        // With a linger of 10 ms and room for 100, only the deadline can flush this batch
        // while the channel stays open.
        let b = brx
            .recv_timeout(Duration::from_secs(10))
            .expect("linger flush");
        assert_eq!(b.features, vec![0.0, 1.0]);
        drop(tx);
        h.join().expect("batcher");
    }
}
