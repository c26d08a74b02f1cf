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
//! Why it is offered next to the autoencoder's score: a model trained once on a series'
//! first records keeps flagging a new regime for as long as it lasts, while a memory of
//! the key's own windows knows the new regime after one pass. On NAB, the same likelihood
//! fed this distance scores about 6 points higher than fed any autoencoder's
//! reconstruction error (docs/quality.md).
//!
//! Cost per key: `(memory + w − 1)·w` `f32`s of state (129 KB with memory 2000 and w = 16) and
//! `memory·w` multiply-adds per record.

use std::collections::VecDeque;

/// One key's memory of its recent windows. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Discord {
    /// Windows searched: the newest `memory` windows that do not overlap the current one.
    memory: usize,
    /// Window length `w`, learnt from the first window.
    dim: usize,
    /// The last `memory + w - 1` windows, oldest first, concatenated.
    windows: VecDeque<f32>,
}

impl Discord {
    #[must_use]
    pub fn new(memory: usize) -> Self {
        Self {
            memory: memory.max(1),
            dim: 0,
            windows: VecDeque::new(),
        }
    }

    /// The discord distance of `window` (see the [module docs](self)), which then joins
    /// the memory. A window of another length than the first resets the memory. An empty
    /// window, or one with a non-finite value, is not remembered and gives NaN (which the
    /// likelihood takes as no information).
    pub fn update(&mut self, window: &[f32]) -> f64 {
        if window.is_empty() || window.iter().any(|v| !v.is_finite()) {
            return f64::NAN;
        }
        let dim = window.len();
        if dim != self.dim {
            self.dim = dim;
            self.windows.clear();
        }
        let stored = self.windows.len() / dim.max(1);
        // The newest `dim - 1` windows overlap this one (trivial matches).
        let eligible = stored.saturating_sub(dim - 1);
        let distance = if eligible == 0 {
            0.0
        } else {
            let (front, back) = self.windows.as_slices();
            let mut best = f64::INFINITY;
            for j in 0..eligible {
                let start = j * dim;
                let d: f64 = (0..dim)
                    .map(|k| {
                        let i = start + k;
                        let v = if i < front.len() {
                            front[i]
                        } else {
                            back[i - front.len()]
                        };
                        let e = f64::from(window[k]) - f64::from(v);
                        e * e
                    })
                    .sum();
                best = best.min(d);
            }
            best.sqrt()
        };
        self.windows.extend(window.iter().copied());
        if stored + 1 > self.memory + dim - 1 {
            self.windows.drain(..dim);
        }
        distance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, computed directly from the whole series.
    fn brute_force(series: &[Vec<f32>], t: usize, memory: usize) -> f64 {
        let w = series[t].len();
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
            let mut d = Discord::new(memory);
            for t in 0..series.len() {
                let got = d.update(&series[t]);
                let want = brute_force(&series, t, memory);
                assert!(
                    (got - want).abs() < 1e-6,
                    "w {w} memory {memory} t {t}: {got} vs {want}"
                );
            }
            let kept = (memory + w - 1).min(series.len());
            assert_eq!(d.windows.len(), kept * w, "memory is bounded");
        }
    }

    #[test]
    fn a_pattern_seen_before_is_near_and_a_new_one_far() {
        // A square wave of period 20, then a new level from record 200 on.
        let values: Vec<f32> = (0..260)
            .map(|i| if i >= 200 { 9.0 } else { ((i / 10) % 2) as f32 })
            .collect();
        let series = windows(&values, 8);
        let mut d = Discord::new(500);
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
    fn a_non_finite_window_is_no_information() {
        let mut d = Discord::new(10);
        assert_eq!(d.update(&[1.0, 2.0]), 0.0);
        assert!(d.update(&[f32::NAN, 2.0]).is_nan());
        assert!(d.update(&[]).is_nan());
        assert_eq!(d.windows.len(), 2, "not remembered");
    }
}
