//! At-least-once offset tracking. The source registers each offset it consumes; an offset is
//! acknowledged once every output for it (score, alert, dead letter) is delivered. Per
//! partition, the committable position is the lowest unacknowledged offset, so a crash
//! replays only records whose outputs were not all delivered.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

#[derive(Debug, Default)]
struct Partition {
    /// Registered offsets in consumption order, with whether they are acknowledged.
    inflight: VecDeque<(i64, bool)>,
    /// One past the highest offset registered.
    next: i64,
    /// The position last handed out by `committable`.
    handed_out: i64,
}

impl Partition {
    fn position(&self) -> i64 {
        self.inflight.front().map_or(self.next, |&(o, _)| o)
    }
}

#[derive(Debug, Default)]
pub struct OffsetTracker {
    parts: Mutex<HashMap<i32, Partition>>,
}

impl OffsetTracker {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Partition>> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // breaks the invariants below, so a poisoned lock is still usable.
        self.parts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A record was consumed. Offsets arrive in increasing order per partition.
    pub fn register(&self, partition: i32, offset: i64) {
        let mut parts = self.lock();
        let p = parts.entry(partition).or_insert_with(|| Partition {
            handed_out: offset,
            ..Partition::default()
        });
        if offset < p.next {
            // A rewind (seek or reassignment): start the partition afresh.
            *p = Partition {
                handed_out: offset,
                ..Partition::default()
            };
        }
        p.inflight.push_back((offset, false));
        p.next = offset + 1;
    }

    /// All outputs of these records were delivered.
    pub fn ack(&self, done: impl IntoIterator<Item = (i32, i64)>) {
        let mut parts = self.lock();
        for (partition, offset) in done {
            let Some(p) = parts.get_mut(&partition) else {
                continue; // revoked meanwhile
            };
            if let Ok(i) = p.inflight.binary_search_by_key(&offset, |&(o, _)| o) {
                p.inflight[i].1 = true;
            }
            while p.inflight.front().is_some_and(|&(_, acked)| acked) {
                p.inflight.pop_front();
            }
        }
    }

    /// Positions (next offset to read) that advanced since the last call.
    pub fn committable(&self) -> Vec<(i32, i64)> {
        let mut parts = self.lock();
        let mut out = Vec::new();
        for (&partition, p) in parts.iter_mut() {
            let pos = p.position();
            if pos > p.handed_out {
                p.handed_out = pos;
                out.push((partition, pos));
            }
        }
        out.sort_unstable();
        out
    }

    /// Records consumed but not yet fully delivered.
    pub fn pending(&self) -> usize {
        self.lock().values().map(|p| p.inflight.len()).sum()
    }

    /// Forgets partitions (revoked from this consumer).
    pub fn forget(&self, partitions: &[i32]) {
        let mut parts = self.lock();
        for p in partitions {
            parts.remove(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_up_to_lowest_unacked() {
        let t = OffsetTracker::new();
        for o in 10..15 {
            t.register(0, o);
        }
        t.register(1, 3);
        assert_eq!(t.committable(), vec![]);
        t.ack([(0, 11), (0, 12)]);
        assert_eq!(t.committable(), vec![], "10 is still pending");
        t.ack([(0, 10)]);
        assert_eq!(t.committable(), vec![(0, 13)]);
        assert_eq!(t.committable(), vec![], "only advances are reported");
        t.ack([(0, 13), (0, 14), (1, 3)]);
        assert_eq!(t.committable(), vec![(0, 15), (1, 4)]);
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn acks_for_forgotten_partitions_are_ignored() {
        let t = OffsetTracker::new();
        t.register(2, 0);
        t.forget(&[2]);
        t.ack([(2, 0)]);
        assert_eq!(t.committable(), vec![]);
        t.register(2, 5);
        t.ack([(2, 5)]);
        assert_eq!(t.committable(), vec![(2, 6)]);
    }

    #[test]
    fn rewind_starts_partition_afresh() {
        let t = OffsetTracker::new();
        t.register(0, 7);
        t.register(0, 8);
        t.register(0, 3);
        t.ack([(0, 3)]);
        assert_eq!(t.committable(), vec![(0, 4)]);
    }
}
