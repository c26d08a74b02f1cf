//! The training window: the most recent records judged normal, as a ring buffer with a
//! fixed memory bound. An alert drops the `margin` records before it and skips the
//! `margin` records after it, so the onset and tail of an incident do not teach the model
//! that anomalies are normal.

use std::collections::VecDeque;

#[derive(Debug)]
pub struct NormalWindow {
    dim: usize,
    cap: usize,
    margin: usize,
    rows: VecDeque<f32>,
    offsets: VecDeque<i64>,
    skip: usize,
}

impl NormalWindow {
    pub fn new(dim: usize, cap: usize, margin: usize) -> Self {
        NormalWindow {
            dim,
            cap,
            margin,
            rows: VecDeque::with_capacity(cap * dim),
            offsets: VecDeque::with_capacity(cap),
            skip: 0,
        }
    }

    /// Records one scored record, in stream order.
    pub fn observe(&mut self, features: &[f32], offset: i64, anomaly: bool) {
        if anomaly {
            for _ in 0..self.margin.min(self.offsets.len()) {
                self.offsets.pop_back();
                self.rows.truncate(self.rows.len() - self.dim);
            }
            self.skip = self.margin;
            return;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return;
        }
        if self.offsets.len() == self.cap {
            self.offsets.pop_front();
            self.rows.drain(..self.dim);
        }
        self.offsets.push_back(offset);
        self.rows.extend(features);
    }

    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The window's rows (row-major) and the first and last offsets they came from.
    pub fn snapshot(&self) -> (Vec<f32>, Option<(i64, i64)>) {
        let span = self
            .offsets
            .front()
            .copied()
            .zip(self.offsets.back().copied());
        (self.rows.iter().copied().collect(), span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_alerts_exclude_a_margin_around_them() {
        let mut w = NormalWindow::new(1, 5, 2);
        for o in 0..4 {
            w.observe(&[o as f32], o, false);
        }
        w.observe(&[99.0], 4, true); // drops 2 and 3, skips the next 2
        w.observe(&[5.0], 5, false);
        w.observe(&[6.0], 6, false);
        w.observe(&[7.0], 7, false);
        assert_eq!(w.snapshot(), (vec![0.0, 1.0, 7.0], Some((0, 7))));
        for o in 8..20 {
            w.observe(&[o as f32], o, false);
        }
        assert_eq!(w.len(), 5, "memory stays bounded");
        assert_eq!(w.snapshot().1, Some((15, 19)));
    }
}
