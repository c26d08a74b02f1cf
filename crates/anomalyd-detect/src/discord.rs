//! Window discords: how far a series' current window lies from everything the series did
//! recently. It is one of the inputs the anomaly likelihood can be fed
//! (`[threshold.likelihood] input = "discord"`, window mode).
//!
//! For the window `x_t` (the last `w` values of one key), the discord distance is
//!
//! ```text
//! d_t = min { ‖x_t − x_j‖₂ : t − w − memory < j ≤ t − w }
//! ```
//!
//! the Euclidean distance to the nearest of the key's earlier windows that do not overlap
//! it, among the last `memory` of them. It is `0.0` until the key has such a window. This
//! is the *left matrix profile* of the series (C.-C. M. Yeh et al., "Matrix Profile I",
//! ICDM 2016; its incremental form STAMPI; Y. Zhu et al., "Matrix Profile II", ICDM 2016):
//! a subsequence far from every earlier one is a discord. Two choices differ from the
//! matrix profile papers. The windows are **not z-normalised**, because a level or an
//! amplitude never seen before is what operators want to hear about. The search looks
//! back over a bounded `memory`, not the whole series.
//!
//! With a `segment` of `s > 1`, each window is first reduced to the means of its
//! consecutive runs of `s` values (the piecewise aggregate approximation of E. Keogh,
//! K. Chakrabarti, M. Pazzani, S. Mehrotra, "Dimensionality reduction for fast similarity
//! search in large time series databases", KAIS 3 (2001) 263–286; a last, shorter run is
//! averaged over its own values), and the distances are taken between the reduced
//! windows. Windows still overlap when they are fewer than `w` records apart. A long
//! window seen through its segment means compares shapes over a longer span without
//! weighing each noisy value: on NAB, window 32 in segments of 2 scores about 1.6 points
//! above window 16 as it is (docs/nab-research.md).
//!
//! Why it is offered next to the autoencoder's score: a model trained once on a series'
//! first records keeps flagging a new regime for as long as it lasts, while a memory of
//! the key's own windows knows the new regime after one pass. On NAB, the same likelihood
//! fed this distance scores about 6 points higher than fed any autoencoder's
//! reconstruction error (docs/quality.md).
//!
//! An alert raised on a discord is explained by the distance's terms
//! ([`Discord::update_explained`]): each window position's part of the squared distance to
//! the nearest earlier window, a segment's part split evenly over its values.
//!
//! Cost per key: `(memory + w)·⌈w/s⌉` `f32`s of state (129 KB with memory 2000 and
//! w = 16, s = 1; 130 KB with w = 32, s = 2) and `memory·⌈w/s⌉` multiply-adds per record.

/// How a key's discord is taken: over its last `memory` windows, each reduced to the
/// means of its runs of `segment` values. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiscordParams {
    pub memory: usize,
    pub segment: usize,
}

/// One key's memory of its recent windows. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Discord {
    /// Windows searched: the newest `memory` windows that do not overlap the current one.
    memory: usize,
    /// Values averaged into one element of a remembered window (1: none).
    segment: usize,
    /// Window length `w`, learnt from the first window.
    len: usize,
    /// A ring of the last `memory + w` windows, reduced: window number `n` (counted from
    /// the first) is at slot `n % (memory + w)`, `⌈w/segment⌉` values a slot.
    slots: Vec<f32>,
    /// Windows remembered so far.
    seen: u64,
}

impl Discord {
    /// A key's empty memory: the discord searches the last `memory` windows, each reduced
    /// to the means of its runs of `segment` values (`0` acts as `1`).
    #[must_use]
    pub fn new(memory: usize, segment: usize) -> Self {
        Self {
            memory: memory.max(1),
            segment: segment.max(1),
            len: 0,
            slots: Vec::new(),
            seen: 0,
        }
    }

    /// The discord distance of `window` (see the [module docs](self)), which then joins
    /// the memory. A window of another length than the first resets the memory. An empty
    /// window, or one with a non-finite value, is not remembered and gives NaN (which the
    /// likelihood takes as no information).
    pub fn update(&mut self, window: &[f32]) -> f64 {
        self.update_explained(window, None)
    }

    /// [`Self::update`], and with `terms`, what the distance is made of: for each position
    /// of `window`, its part of the squared distance to the nearest earlier window (a
    /// segment's part split evenly over its values). They sum to the squared distance.
    /// `terms` is left empty when there is no earlier window to compare with.
    pub fn update_explained(&mut self, window: &[f32], mut terms: Option<&mut Vec<f32>>) -> f64 {
        if let Some(t) = terms.as_deref_mut() {
            t.clear();
        }
        if window.is_empty() || window.iter().any(|v| !v.is_finite()) {
            return f64::NAN;
        }
        let len = window.len();
        if len != self.len {
            self.len = len;
            self.slots.clear();
            self.seen = 0;
        }
        // The ring holds `memory + w` windows: the slot the new window takes (that of window
        // `seen − memory − w`) is one the search below never reads, so the reduced window
        // is written there first and compared in place.
        let dim = len.div_ceil(self.segment);
        let capacity = (self.memory + len) as u64;
        let at = (self.seen % capacity) as usize * dim;
        if at == self.slots.len() {
            self.slots.resize(at + dim, 0.0);
        }
        let current = &mut self.slots[at..at + dim];
        for (c, run) in current.iter_mut().zip(window.chunks(self.segment)) {
            *c = run.iter().sum::<f32>() / run.len() as f32;
        }
        let stored = self.seen.min(capacity - 1);
        // Window numbers `seen − stored .. seen − (w − 1)`: the newest `w − 1` overlap this
        // one (trivial matches). In slot order that is at most two runs of the ring.
        let (first, end) = (
            self.seen - stored,
            (self.seen + 1).saturating_sub(len as u64),
        );
        let (current, filled) = (&self.slots[at..at + dim], self.slots.len() / dim);
        let (mut best, mut nearest) = (f32::INFINITY, 0);
        if first < end {
            let (a, b) = ((first % capacity) as usize, (end % capacity) as usize);
            let runs = if a < b {
                [a..b, 0..0]
            } else {
                [a..filled, 0..b]
            };
            for run in runs {
                let slots = self.slots[run.start * dim..run.end * dim].chunks_exact(dim);
                for (k, slot) in slots.enumerate() {
                    let d = squared_distance(current, slot);
                    if d < best {
                        (best, nearest) = (d, run.start + k);
                    }
                }
            }
        }
        if let Some(t) = terms
            && best.is_finite()
        {
            let slot = &self.slots[nearest * dim..(nearest + 1) * dim];
            t.extend((0..len).map(|j| {
                let e = j / self.segment;
                let run = self.segment.min(len - e * self.segment);
                (current[e] - slot[e]) * (current[e] - slot[e]) / run as f32
            }));
        }
        self.seen += 1;
        if best.is_finite() {
            f64::from(best).sqrt()
        } else {
            0.0
        }
    }
}

/// `‖a − b‖²` in eight independent lanes, which the compiler turns into SIMD.
fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            let e = x[k] - y[k];
            lanes[k] += e * e;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, computed directly from the whole series of (reduced) windows, for
    /// windows `w` records long.
    fn brute_force(series: &[Vec<f32>], t: usize, memory: usize, w: usize) -> f64 {
        let Some(last) = t.checked_sub(w) else {
            return 0.0;
        };
        let first = (last + 1).saturating_sub(memory);
        (first..=last)
            .map(|j| {
                series[t]
                    .iter()
                    .zip(&series[j])
                    .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .fold(f64::INFINITY, f64::min)
    }

    fn windows(values: &[f32], w: usize) -> Vec<Vec<f32>> {
        (0..values.len())
            .map(|t| {
                (0..w)
                    .map(|k| values[(t + k + 1).saturating_sub(w)])
                    .collect()
            })
            .collect()
    }

    #[test]
    fn equals_the_nearest_non_overlapping_window_within_memory() {
        let values: Vec<f32> = (0..400u32)
            .map(|i| ((i as f32 * 0.37).sin() * 3.0 + (i % 7) as f32).round())
            .collect();
        for (w, memory) in [(4, 1), (4, 25), (8, 100), (16, 1000)] {
            let series = windows(&values, w);
            let mut d = Discord::new(memory, 1);
            for t in 0..series.len() {
                let got = d.update(&series[t]);
                let want = brute_force(&series, t, memory, w);
                assert!(
                    (got - want).abs() < 1e-4 * (1.0 + want),
                    "w {w} memory {memory} t {t}: {got} vs {want}"
                );
            }
            let kept = (memory + w).min(series.len());
            assert_eq!(d.slots.len(), kept * w, "memory is bounded");
        }
    }

    #[test]
    fn a_pattern_seen_before_is_near_and_a_new_one_far() {
        // A square wave of period 20, then a new level from record 200 on.
        let values: Vec<f32> = (0..260)
            .map(|i| if i >= 200 { 9.0 } else { ((i / 10) % 2) as f32 })
            .collect();
        let series = windows(&values, 8);
        let mut d = Discord::new(500, 1);
        let out: Vec<f64> = series.iter().map(|x| d.update(x)).collect();
        // Every window of the wave's second period repeats one of the first.
        assert!(
            out[40..200].iter().all(|&v| v == 0.0),
            "{:?}",
            &out[40..200]
        );
        // The first window reaching the new level is far from all before it.
        assert!(out[200] >= 8.0, "{}", out[200]);
        // Once the new level has held for two windows, it is known.
        assert_eq!(out[216..].iter().copied().fold(0.0, f64::max), 0.0);
    }

    #[test]
    fn segments_compare_the_means_of_runs_and_keep_whole_windows_apart() {
        let values: Vec<f32> = (0..300u32)
            .map(|i| ((i as f32 * 0.21).sin() * 4.0 + (i % 5) as f32).round())
            .collect();
        for (w, segment, memory) in [(8, 2, 40), (12, 4, 100), (10, 3, 7)] {
            let series = windows(&values, w);
            // The definition on the reduced windows (a last, shorter run is averaged on
            // its own), with the overlap still counted in records.
            let reduced: Vec<Vec<f32>> = series
                .iter()
                .map(|x| {
                    x.chunks(segment)
                        .map(|r| r.iter().sum::<f32>() / r.len() as f32)
                        .collect()
                })
                .collect();
            let mut d = Discord::new(memory, segment);
            for (t, window) in series.iter().enumerate() {
                let got = d.update(window);
                let want = brute_force(&reduced, t, memory, w);
                assert!(
                    (got - want).abs() < 1e-4 * (1.0 + want),
                    "w {w} segment {segment} t {t}: {got} vs {want}"
                );
            }
            let kept = (memory + w).min(series.len());
            assert_eq!(d.slots.len(), kept * w.div_ceil(segment));
        }
    }

    #[test]
    fn terms_split_the_squared_distance_over_the_positions() {
        // A square wave of period 20, then one window with a bump at its newest value.
        let mut values: Vec<f32> = (0..200).map(|i| ((i / 10) % 2) as f32).collect();
        values[150] += 5.0;
        for segment in [1, 2, 3] {
            let series = windows(&values, 8);
            let mut d = Discord::new(100, segment);
            let mut terms = vec![1.0];
            assert_eq!(d.update_explained(&series[0], Some(&mut terms)), 0.0);
            assert!(terms.is_empty(), "nothing to compare the first window with");
            for x in &series[1..150] {
                d.update(x);
            }
            let dist = d.update_explained(&series[150], Some(&mut terms));
            assert!(dist > 1.0, "{dist}");
            assert_eq!(terms.len(), 8, "one term per position of the window");
            let total: f32 = terms.iter().sum();
            assert!((f64::from(total) - dist * dist).abs() < 1e-4 * dist * dist);
            // The bump is the newest value: the last position (and its segment's others,
            // evenly) carries the distance.
            let run = (8 - 1) % segment + 1;
            for (j, &t) in terms.iter().enumerate() {
                let expect = if j >= 8 - run {
                    total / run as f32
                } else {
                    0.0
                };
                assert!(
                    (t - expect).abs() < 1e-4,
                    "segment {segment} position {j}: {t}"
                );
            }
        }
    }

    #[test]
    fn a_non_finite_window_is_no_information() {
        let mut d = Discord::new(10, 1);
        assert_eq!(d.update(&[1.0, 2.0]), 0.0);
        assert!(d.update(&[f32::NAN, 2.0]).is_nan());
        assert!(d.update(&[]).is_nan());
        assert_eq!((d.slots.len(), d.seen), (2, 1), "not remembered");
    }
}
