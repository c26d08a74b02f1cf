//! Anomaly likelihood: a streaming post-processor that turns one series' raw anomaly
//! scores into an output in `[0, 1]` that reads the same on every series.
//!
//! This is a scale-free port of Numenta's anomaly likelihood: nupic's
//! `AnomalyLikelihood`, as NAB's `numenta` detector uses it. It is described in
//! S. Ahmad, A. Lavin, S. Purdy, Z. Agha, "Unsupervised real-time anomaly detection for
//! streaming data", Neurocomputing 262 (2017) 134–147 (doi:10.1016/j.neucom.2017.04.070).
//! The Python reference is `tests/fixtures/likelihood/postprocess.py`, and the unit tests
//! check this port against its outputs (`vectors.json` there) to 1e-9.
//!
//! # Algorithm
//!
//! One [`Likelihood`] per series. For record `t = 0, 1, 2, …` with raw score `s_t` and
//! optionally the raw value `v_t`, with `P` = [`LikelihoodParams::warmup`] and the
//! learning skip `L = ⌊P/2⌋`:
//!
//! 0. **Input.** `s_t` is the model's score, or, with [`LikelihoodParams::discord`] set,
//!    the discord distance of the record's window ([`crate::discord`];
//!    [`Likelihood::update_record`]). Everything below is the same for both.
//!
//! 1. **Short-term mean.** `a_t` is the mean of the last `min(t+1, average)` raw scores.
//! 2. **Warm-up.** For `t < P` the output is `0.0`. Steps 3–6 are skipped.
//! 3. **Gaussian re-estimate.** This happens when `t == P` or `t % reestimate == 0`. The
//!    fit is the *population* mean `μ` and standard deviation `σ` of the stored history
//!    `H = {a_j : max(L, t − history) ≤ j ≤ t − 1}`: at most `history` smoothed scores,
//!    none from before record `L`. It is kept until the next re-estimate. An empty `H`
//!    gives "no estimate".
//! 4. **Two-sided tail.** With no estimate, `q = 0.5`. If `σ > 0`, then
//!    `q = 0.5·erfc(|a_t − μ| / σ / 1.4142)`. The constant is 1.4142, as in nupic, not
//!    `√2`. If `σ = 0`, then `q = 1` when `a_t == μ` and `q = 0` otherwise.
//! 5. **Red-run filter.** A record is *red* when its unfiltered `q ≤ red`. If record `t`
//!    is red and so was one of the `refractory` records before it (`t − t_red ≤
//!    refractory`, with `t_red` the last red record), then `q' = yellow`; otherwise
//!    `q' = q`. With `refractory = 1` this is nupic's filter: a run of red
//!    records reports only its first record as red. A longer `refractory` also folds reds
//!    a few quiet records apart into one alert: an episode ends after `refractory`
//!    records without a red. `0` turns the filter off.
//! 6. **Log scale.** `out = ln(1.0000000001 − (1 − q')) / ln(1 − 0.9999999999)`. This is
//!    `0` for `q' = 1`, about `0.5` for `q' = 1e-5`, about `0.3` for `q' = 1e-3` and `1`
//!    for `q' = 0`. So [`ALERT_LEVEL`] `= 0.5` is "`q = red`" with the default `red`.
//! 7. **Value-range ("spatial") check**, if [`LikelihoodParams::spatial_tolerance`] is
//!    set and a value is given. When `t ≥ P`, the range `[vmin, vmax]` of all *earlier*
//!    values has `vmax ≠ vmin`, and `v_t` lies more than `tol·(vmax − vmin)` outside it,
//!    the output is `1.0`. Every value, warm-up included, then widens the range.
//!
//! # Differences from nupic
//!
//! - There is **no floor** on the mean (nupic: 0.03) or on the variance (nupic: 0.0003),
//!   and no "flat metric" check. Those assume scores in `[0, 1]`, and anomalyd's raw
//!   scores are not.
//! - The output is **`0.0` during warm-up**. nupic reports likelihood 0.5 there (0.0301
//!   after the log scale).
//! - The value-range check is Numenta's NAB "spatial anomaly" detector, which lives in
//!   NAB's `numenta` detector rather than in nupic's likelihood.
//!
//! # Differences from the Python reference
//!
//! On the test vectors the outputs agree with the reference to 7e-15, apart from the
//! clamp below. The other differences apply only to input that the reference does not
//! handle, or change results by rounding only:
//!
//! - The output is clamped to `[0, 1]`. The reference gives `−4.3e-12` for `q' = 1`,
//!   which is `ln(1.0000000001)/ln(1 − 0.9999999999)`; this port gives `0.0`.
//! - `a_t` is summed from the ring of the last `average` scores at every record. The
//!   reference keeps a running sum. That is `average` additions (10 by default) instead
//!   of two, but a huge score leaves no cancellation error behind once it has left the
//!   window.
//! - **Non-finite input is "no information".** A NaN or infinite score changes no
//!   score state: not the record count, the short-term ring, the history or the filter's
//!   previous `q`. Its output is `0.0`, or `1.0` if its value fails the value-range
//!   check. A NaN or infinite value counts as no value. A fit whose `μ` or `σ` is not
//!   finite (scores near `f64::MAX`) counts as "no estimate".
//! - `average` and `reestimate` of `0` act as `1`.
//!
//! # Cost
//!
//! Each update costs O(`average`). Every `reestimate` records there is also an
//! O(`history`) re-estimate: two passes over the history, which comes to about 170
//! additions per record amortised with the defaults. The state per series is two ring
//! buffers, of `average` and of `history` `f64`s (about 69 KiB with the defaults), and a
//! few scalars. Running sums of `a` and `a²` would make the re-estimate O(1). But
//! `E[a²] − μ²` cancels catastrophically when `σ ≪ |μ|`, and a constant series could then
//! get a small non-zero `σ` instead of exactly `0`. Fed discords, the series also keeps
//! its window memory, which dominates both the state and the cost (see
//! [`crate::discord`]).

use std::collections::VecDeque;

use crate::discord::{Discord, DiscordParams};

/// Output level at which to alert: "`q = red`" with the default `red = 1e-5`, since
/// `out ≈ ln(q')/ln(1e-10)`. Because of the `1e-10` offset, `q' = 1e-5` itself gives
/// `0.4999996`. The red-run filter lets only the first record of a run reach it.
pub const ALERT_LEVEL: f64 = 0.5;

/// `ln(1 − 0.9999999999)` as evaluated in `f64`, the denominator of the log scale
/// (Numenta's constant). `1 − 0.9999999999` is `1.000000082740371e-10` in `f64`, so this is
/// not `ln(1e-10) = −23.025850929940457`.
const LOG_DENOMINATOR: f64 = -23.025_850_847_200_09;

/// nupic's rounded `√2` in the tail probability, kept so the outputs match the reference.
#[allow(clippy::approx_constant)]
const NUPIC_SQRT_2: f64 = 1.4142;

/// Parameters of [`Likelihood`]. The defaults are Numenta's.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LikelihoodParams {
    /// Records before the first output (`P`); the output is `0.0` until then. The first
    /// `⌊P/2⌋` records never enter the history. For NAB: `min(training records, 750)`.
    pub warmup: usize,
    /// Raw scores in the short-term mean (`0` acts as `1`).
    pub average: usize,
    /// Most smoothed scores behind a Gaussian fit.
    pub history: usize,
    /// Records between Gaussian re-estimates, at absolute record indices that are
    /// multiples of it (`0` acts as `1`). The first estimate is at record `warmup`.
    pub reestimate: usize,
    /// Tail probability at or below which a record is red.
    pub red: f64,
    /// Tail probability reported for a red record that follows a red record within
    /// `refractory` records.
    pub yellow: f64,
    /// Value-range check: a value more than `spatial_tolerance·(max − min)` outside the
    /// range of the earlier values gives `1.0`. `None` turns the check off.
    pub spatial_tolerance: Option<f64>,
    /// Records after a red record during which a red record is reported yellow (step 5;
    /// 1 is nupic's filter, 0 none).
    pub refractory: usize,
    /// Feed the series' window discord distance ([`crate::discord`]) instead of the
    /// model's score. `None` feeds the score.
    pub discord: Option<DiscordParams>,
}

impl LikelihoodParams {
    /// An upper bound on one key's state in bytes, for windows of `window` values: the
    /// smoothed-score history and the recent scores (f64 each, counted twice: a growing
    /// deque may hold up to twice its length), the discord memory (`(memory + w) *
    /// ceil(w / segment)` f32, allocated once) when fed discords, the structs, and the key
    /// and LRU entry (128 bytes allowed for a key).
    pub fn key_bytes(&self, window: usize) -> usize {
        let discord = self.discord.map_or(0, |d| {
            let reduced = window.div_ceil(d.segment.max(1));
            4 * (d.memory.max(1) + window) * reduced + std::mem::size_of::<Discord>()
        });
        std::mem::size_of::<Likelihood>()
            + 16 * (self.history + 1 + self.average.max(1) + 1)
            + discord
            + 128
            + 64
    }
}

impl Default for LikelihoodParams {
    fn default() -> Self {
        Self {
            warmup: 750,
            average: 10,
            history: 8640,
            reestimate: 100,
            red: 1e-5,
            yellow: 1e-3,
            spatial_tolerance: Some(0.05),
            refractory: 100,
            discord: None,
        }
    }
}

/// A Gaussian fitted to the smoothed-score history.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
struct Gaussian {
    mean: f64,
    std: f64,
}

impl Gaussian {
    /// Population mean and standard deviation, two-pass. `None` when `history` is empty
    /// or the fit is not finite.
    fn fit(history: &VecDeque<f64>) -> Option<Self> {
        if history.is_empty() {
            return None;
        }
        let n = history.len() as f64;
        let mean = history.iter().sum::<f64>() / n;
        let variance = history.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / n;
        let std = variance.max(0.0).sqrt();
        (mean.is_finite() && std.is_finite()).then_some(Self { mean, std })
    }

    /// Two-sided tail probability of `a`.
    fn tail(&self, a: f64) -> f64 {
        if self.std > 0.0 {
            let z = (a - self.mean).abs() / self.std;
            0.5 * libm::erfc(z / NUPIC_SQRT_2)
        } else if a == self.mean {
            1.0
        } else {
            0.0
        }
    }
}

/// The anomaly likelihood state of one series. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Likelihood {
    params: LikelihoodParams,
    /// Records from this one on enter the history (`⌊warmup/2⌋`).
    learning: u64,
    /// Records seen so far, not counting those with a non-finite score.
    records: u64,
    /// The last `average` raw scores.
    recent: VecDeque<f64>,
    /// Smoothed scores of records `max(learning, records − history) .. records − 1`.
    history: VecDeque<f64>,
    /// The current Gaussian; `None` before the first estimate or from an empty history.
    fit: Option<Gaussian>,
    /// The last red record (unfiltered `q ≤ red`), for the red-run filter.
    last_red: Option<u64>,
    /// `(min, max)` of the values seen so far, if the value-range check is on.
    range: Option<(f64, f64)>,
    /// The series' recent windows, when the likelihood is fed their discord distance.
    discord: Option<Discord>,
}

impl Likelihood {
    /// A fresh series: no records seen yet, so the first `params.warmup` outputs are
    /// `0.0`.
    #[must_use]
    pub fn new(params: LikelihoodParams) -> Self {
        Self {
            params,
            learning: (params.warmup / 2) as u64,
            records: 0,
            recent: VecDeque::with_capacity(params.average.max(1) + 1),
            history: VecDeque::new(),
            fit: None,
            last_red: None,
            range: None,
            discord: params.discord.map(|d| Discord::new(d.memory, d.segment)),
        }
    }

    /// [`Self::update`] for a record: with [`LikelihoodParams::discord`] set, the score fed
    /// is the discord distance of the record's `window` (its feature vector), and `score`
    /// is not used.
    pub fn update_record(&mut self, score: f64, window: &[f32], value: Option<f64>) -> f64 {
        self.update_record_explained(score, window, value, None).0
    }

    /// [`Self::update_record`], and, fed discords, the distance's terms per position of
    /// `window` in `terms` ([`Discord::update_explained`]; left empty otherwise). Returns
    /// the output and what the likelihood was fed (the score, or the discord distance).
    pub fn update_record_explained(
        &mut self,
        score: f64,
        window: &[f32],
        value: Option<f64>,
        terms: Option<&mut Vec<f32>>,
    ) -> (f64, f64) {
        let input = match &mut self.discord {
            Some(d) => d.update_explained(window, terms),
            None => {
                if let Some(t) = terms {
                    t.clear();
                }
                score
            }
        };
        (self.update(input, value), input)
    }

    /// Takes the next record's raw score, and its raw value for the value-range check,
    /// and returns the output in `[0, 1]`. It is `0.0` during warm-up and reaches
    /// [`ALERT_LEVEL`] on the first record of a red run. A non-finite score is "no
    /// information": the score state stays as it is, and the output is `0.0` unless the
    /// value fails the range check.
    pub fn update(&mut self, score: f64, value: Option<f64>) -> f64 {
        let value = value.filter(|v| v.is_finite());
        let mut out = if score.is_finite() {
            self.score_output(score)
        } else {
            0.0
        };
        if self.outside_range(value) {
            out = 1.0;
        }
        if score.is_finite() {
            self.records += 1;
        }
        out
    }

    /// Steps 1–6 for a finite score: the smoothed score's log-scaled, filtered tail
    /// probability, and the history update. It does not advance `records`.
    fn score_output(&mut self, score: f64) -> f64 {
        let t = self.records;
        let p = &self.params;
        self.recent.push_back(score);
        if self.recent.len() > p.average.max(1) {
            self.recent.pop_front();
        }
        let smoothed = self.recent.iter().sum::<f64>() / self.recent.len() as f64;

        let mut out = 0.0;
        let warmup = p.warmup as u64;
        if t >= warmup {
            if t == warmup || t.is_multiple_of(p.reestimate.max(1) as u64) {
                self.fit = Gaussian::fit(&self.history);
            }
            let tail = self.fit.map_or(0.5, |g| g.tail(smoothed));
            let mut filtered = tail;
            if tail <= p.red {
                let refractory = p.refractory as u64;
                if refractory > 0 && self.last_red.is_some_and(|r| t - r <= refractory) {
                    filtered = p.yellow;
                }
                self.last_red = Some(t);
            }
            let likelihood = 1.0 - filtered;
            out = ((1.000_000_000_1 - likelihood).ln() / LOG_DENOMINATOR).clamp(0.0, 1.0);
        }

        if t >= self.learning {
            self.history.push_back(smoothed);
            if self.history.len() > p.history {
                self.history.pop_front();
            }
        }
        out
    }

    /// Step 7: whether `value` lies outside the tolerance-widened range of the earlier
    /// values (never during warm-up), then widens the range with it.
    fn outside_range(&mut self, value: Option<f64>) -> bool {
        let (Some(tolerance), Some(v)) = (self.params.spatial_tolerance, value) else {
            return false;
        };
        let mut outside = false;
        if let Some((min, max)) = self.range {
            if self.records >= self.params.warmup as u64 && max != min {
                let tol = (max - min) * tolerance;
                outside = v > max + tol || v < min - tol;
            }
            self.range = Some((min.min(v), max.max(v)));
        } else {
            self.range = Some((v, v));
        }
        outside
    }
}

/// One [`Likelihood`] per key (a series in window mode); beyond `max_keys` the least
/// recently seen key is forgotten (it starts a new warm-up when it comes back).
#[derive(Debug)]
pub struct Keyed {
    params: LikelihoodParams,
    by_key: lru::LruCache<Box<str>, Likelihood>,
    /// Keys forgotten to stay within `max_keys`.
    evictions: u64,
    /// The last update's discord terms ([`Self::discord_terms`]).
    terms: Vec<f32>,
    /// What the last update fed its key's likelihood ([`Self::discord`]).
    input: f64,
}

impl Keyed {
    pub fn new(params: LikelihoodParams, max_keys: usize) -> Self {
        let cap =
            std::num::NonZeroUsize::new(max_keys.max(1)).unwrap_or(std::num::NonZeroUsize::MIN);
        Keyed {
            params,
            by_key: lru::LruCache::new(cap),
            evictions: 0,
            terms: Vec::new(),
            input: f64::NAN,
        }
    }

    /// Feeds `key`'s next record ([`Likelihood::update_record`]: its score, or its
    /// window's discord distance; its raw value for the range check); returns its output.
    pub fn update(
        &mut self,
        key: Option<&str>,
        score: f64,
        window: &[f32],
        value: Option<f64>,
    ) -> f64 {
        let key = key.unwrap_or_default();
        let terms = Some(&mut self.terms);
        let out;
        if let Some(l) = self.by_key.get_mut(key) {
            (out, self.input) = l.update_record_explained(score, window, value, terms);
        } else {
            let mut l = Likelihood::new(self.params);
            (out, self.input) = l.update_record_explained(score, window, value, terms);
            if self.by_key.push(key.into(), l).is_some() {
                self.evictions += 1; // the key is new, so what came back was evicted
            }
        }
        out
    }

    pub fn keys(&self) -> usize {
        self.by_key.len()
    }

    /// Fed discords, what the last update's distance was made of: per position of its
    /// window, its part of the squared distance to the key's nearest earlier window
    /// ([`Discord::update_explained`]). `None` when fed scores, or when the key had no
    /// earlier window to compare with.
    pub fn discord_terms(&self) -> Option<&[f32]> {
        (!self.terms.is_empty()).then_some(self.terms.as_slice())
    }

    /// Fed discords, the last update's discord distance (NaN for a window with a
    /// non-finite value); `None` when fed scores.
    pub fn discord(&self) -> Option<f64> {
        self.params.discord.map(|_| self.input)
    }

    /// Keys forgotten so far to stay within `max_keys`.
    /// Keys forgotten to stay within `max_keys` since the last call (for a counter that
    /// its owner increments by what happened, never sets).
    pub fn take_evictions(&mut self) -> u64 {
        std::mem::take(&mut self.evictions)
    }

    /// Every key's state, least recently seen first, in a compact binary form
    /// ([postcard](https://docs.rs/postcard)) that [`Self::from_snapshot`] reads back.
    pub fn snapshot(&self) -> Result<Vec<u8>, postcard::Error> {
        // Borrowed, not cloned: the states can be large (about 70 KB a key).
        let snapshot = Snapshot {
            format: SNAPSHOT_FORMAT,
            params: self.params,
            keys: self.by_key.iter().rev().map(|(k, l)| (&**k, l)).collect(),
        };
        postcard::to_stdvec(&snapshot)
    }

    /// The state saved by [`Self::snapshot`], for these parameters: each key continues
    /// exactly where it stopped. `Err` when the bytes are not a snapshot, or were saved
    /// with other parameters (the histories would mean something else); the caller then
    /// starts afresh. Beyond `max_keys` the least recently seen keys are dropped.
    pub fn from_snapshot(
        bytes: &[u8],
        params: LikelihoodParams,
        max_keys: usize,
    ) -> Result<Self, SnapshotError> {
        let snapshot: Snapshot<String, Box<str>, Likelihood> =
            postcard::from_bytes(bytes).map_err(SnapshotError::Decode)?;
        if snapshot.format != SNAPSHOT_FORMAT {
            return Err(SnapshotError::Format(snapshot.format));
        }
        if snapshot.params != params {
            return Err(SnapshotError::Params(Box::new(snapshot.params)));
        }
        let mut keyed = Keyed::new(params, max_keys);
        for (key, state) in snapshot.keys {
            keyed.by_key.put(key, state);
        }
        Ok(keyed)
    }
}

/// Identifies [`Keyed::snapshot`]'s layout; a reader refuses other layouts.
const SNAPSHOT_FORMAT: &str = "anomalyd.likelihood.v3";

/// Written with borrowed fields (`&str`, `&Likelihood`), read into owned ones: the same
/// bytes either way.
#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot<F, K, L> {
    format: F,
    params: LikelihoodParams,
    keys: Vec<(K, L)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a likelihood snapshot: {0}")]
    Decode(postcard::Error),
    #[error("snapshot format {0:?}, expected {SNAPSHOT_FORMAT:?}")]
    Format(String),
    #[error("saved with other [threshold.likelihood] settings: {0:?}")]
    Params(Box<LikelihoodParams>),
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTORS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/likelihood/vectors.json"
    ));

    #[derive(serde::Deserialize)]
    struct Vectors {
        vectors: Vec<Vector>,
    }

    #[derive(serde::Deserialize)]
    struct Vector {
        name: String,
        params: VectorParams,
        scores: Vec<f64>,
        values: Option<Vec<f64>>,
        expected: Vec<f64>,
    }

    /// The reference's parameter names.
    #[derive(serde::Deserialize)]
    struct VectorParams {
        warmup: usize,
        avg: usize,
        hist: usize,
        reest: usize,
        red: f64,
        yellow: f64,
        spatial_tol: Option<f64>,
        #[serde(default = "nupic_refractory")]
        refractory: usize,
    }

    fn nupic_refractory() -> usize {
        1
    }

    /// Output for `q' = yellow` with the default parameters: `ln(1e-3)/ln(1e-10) ≈ 0.3`.
    fn yellow_level() -> f64 {
        (1.000_000_000_1 - (1.0 - 1e-3_f64)).ln() / LOG_DENOMINATOR
    }

    /// splitmix64 (Steele, Lea & Flood 2014) mapped to `[0, 1)`: deterministic noise.
    struct SplitMix(u64);

    impl SplitMix {
        fn next_f64(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// `n` normal scores around 0.1.
    fn normal_scores(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = SplitMix(seed);
        (0..n).map(|_| 0.1 + 0.02 * rng.next_f64()).collect()
    }

    fn params(warmup: usize) -> LikelihoodParams {
        LikelihoodParams {
            warmup,
            ..LikelihoodParams::default()
        }
    }

    #[test]
    fn matches_the_python_reference_vectors() {
        let vectors: Vectors = serde_json::from_str(VECTORS).expect("vectors.json parses");
        assert_eq!(vectors.vectors.len(), 4);
        for v in &vectors.vectors {
            let mut lik = Likelihood::new(LikelihoodParams {
                warmup: v.params.warmup,
                average: v.params.avg,
                history: v.params.hist,
                reestimate: v.params.reest,
                red: v.params.red,
                yellow: v.params.yellow,
                spatial_tolerance: v.params.spatial_tol,
                refractory: v.params.refractory,
                discord: None,
            });
            assert_eq!(v.scores.len(), v.expected.len(), "{}", v.name);
            for (i, (&score, &expected)) in v.scores.iter().zip(&v.expected).enumerate() {
                let value = v.values.as_ref().map(|values| values[i]);
                let out = lik.update(score, value);
                assert!(
                    (out - expected).abs() < 1e-9,
                    "{} record {i}: got {out}, expected {expected}",
                    v.name
                );
                assert!((0.0..=1.0).contains(&out), "{} record {i}: {out}", v.name);
            }
        }
    }

    #[test]
    fn constants_match_numenta() {
        assert_eq!(LOG_DENOMINATOR, (1.0 - 0.999_999_999_9_f64).ln());
        assert!((yellow_level() - 0.3).abs() < 1e-8);
        // out = 0.5 is q' = red = 1e-5 (up to the 1e-10 offset).
        let at_red = (1.000_000_000_1 - (1.0 - 1e-5_f64)).ln() / LOG_DENOMINATOR;
        assert!((at_red - ALERT_LEVEL).abs() < 1e-5);
    }

    #[test]
    fn warm_up_outputs_zero() {
        let mut scores = normal_scores(300, 1);
        scores[40] = 50.0; // a spike inside the warm-up is not reported
        let mut lik = Likelihood::new(params(200));
        let out: Vec<f64> = scores.iter().map(|&s| lik.update(s, None)).collect();
        assert!(out[..200].iter().all(|&o| o == 0.0));
        assert!(out[200..].iter().any(|&o| o > 0.0));

        // No warm-up and so no history: the first record has q = 0.5, i.e. 0.0301.
        let mut lik = Likelihood::new(params(0));
        let first = lik.update(0.1, None);
        assert!((first - 0.030_1).abs() < 1e-4, "{first}");
    }

    #[test]
    fn spike_is_red_once_then_yellow() {
        let mut scores = normal_scores(1000, 2);
        for s in &mut scores[900..905] {
            *s = 5.0;
        }
        let mut lik = Likelihood::new(params(200));
        let out: Vec<f64> = scores.iter().map(|&s| lik.update(s, None)).collect();
        assert!(out[900] >= ALERT_LEVEL, "{}", out[900]);
        assert_eq!(out[900], 1.0);
        // The rest of the run is red but reported as yellow, while the spike is still in
        // the short-term mean.
        for (i, &o) in out.iter().enumerate().take(910).skip(901) {
            assert!((o - yellow_level()).abs() < 1e-12, "record {i}: {o}");
            assert!(o < ALERT_LEVEL);
        }
        let alerts: Vec<usize> = (0..out.len()).filter(|&i| out[i] >= ALERT_LEVEL).collect();
        assert_eq!(alerts, [900]);
    }

    #[test]
    fn refractory_folds_nearby_reds_into_one_alert() {
        // Spikes at 900, 940 and 990, each two records long, with no short-term mean.
        let mut scores = normal_scores(1000, 2);
        for at in [900, 940, 990] {
            scores[at] = 5.0;
            scores[at + 1] = 5.0;
        }
        let alerts = |refractory| {
            let mut lik = Likelihood::new(LikelihoodParams {
                average: 1,
                refractory,
                ..params(200)
            });
            let out: Vec<f64> = scores.iter().map(|&s| lik.update(s, None)).collect();
            (0..out.len())
                .filter(|&i| out[i] >= ALERT_LEVEL)
                .collect::<Vec<usize>>()
        };
        assert_eq!(alerts(0), [900, 901, 940, 941, 990, 991], "no filter");
        assert_eq!(alerts(1), [900, 940, 990], "nupic's: the first of each run");
        // 940 is 39 records after the red at 901: the same episode. 990 is 49 after 941.
        assert_eq!(alerts(40), [900, 990]);
        assert_eq!(alerts(49), [900]);
    }

    #[test]
    fn value_range_check() {
        let scores = normal_scores(400, 3);
        let value = |i: usize| (i as f64 / 10.0).sin(); // range [-1, 1]: width 2, tol 0.1
        let mut lik = Likelihood::new(params(200));
        for (i, &s) in scores.iter().enumerate().take(300) {
            // Values far outside the range during warm-up are never reported.
            let v = match i {
                50 => 10.0,
                51 => -10.0,
                _ => value(i),
            };
            let out = lik.update(s, Some(v));
            if i < 200 {
                assert_eq!(out, 0.0, "record {i}");
            } else {
                assert!(out < ALERT_LEVEL, "record {i}: {out}");
            }
        }
        // The range is now [-10, 10]: width 20, tolerance 1.
        assert!(lik.clone().update(scores[300], Some(10.9)) < ALERT_LEVEL);
        assert_eq!(lik.clone().update(scores[300], Some(11.1)), 1.0);
        assert_eq!(lik.clone().update(scores[300], Some(-11.1)), 1.0);
        // A missing or non-finite value is no value.
        assert!(lik.clone().update(scores[300], None) < ALERT_LEVEL);
        assert!(lik.clone().update(scores[300], Some(f64::INFINITY)) < ALERT_LEVEL);
        assert!(lik.clone().update(scores[300], Some(f64::NAN)) < ALERT_LEVEL);
        // The out-of-range value widens the range: the same value again is inside it.
        assert_eq!(lik.update(scores[300], Some(11.1)), 1.0);
        assert!(lik.update(scores[301], Some(11.1)) < ALERT_LEVEL);

        // Switched off: no 1.0.
        let mut off = Likelihood::new(LikelihoodParams {
            spatial_tolerance: None,
            ..params(200)
        });
        for &s in &scores[..300] {
            off.update(s, Some(0.0));
        }
        assert!(off.update(scores[300], Some(1e6)) < ALERT_LEVEL);
    }

    #[test]
    fn constant_values_give_no_range_alert() {
        let mut lik = Likelihood::new(params(10));
        for &s in &normal_scores(50, 4) {
            lik.update(s, Some(3.0));
        }
        // vmax == vmin: no range to leave.
        assert!(lik.update(0.11, Some(100.0)) < ALERT_LEVEL);
    }

    #[test]
    fn non_finite_scores_are_no_information() {
        let scores = normal_scores(600, 5);
        let mut plain = Likelihood::new(params(200));
        let mut gappy = Likelihood::new(params(200));
        for (i, &s) in scores.iter().enumerate() {
            if i % 7 == 3 {
                for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                    assert_eq!(gappy.update(bad, Some(0.5)), 0.0, "record {i}");
                }
            }
            assert_eq!(plain.update(s, Some(0.5)), gappy.update(s, Some(0.5)));
        }
        // The same red-run state: a spike is red once, then yellow, in both.
        for lik in [&mut plain, &mut gappy] {
            assert_eq!(lik.update(5.0, None), 1.0);
            assert!(lik.update(f64::NAN, None) == 0.0);
            assert!((lik.update(5.0, None) - yellow_level()).abs() < 1e-12);
        }
        // The value of a record without a score still gets the range check.
        assert_eq!(gappy.update(f64::NAN, Some(0.5)), 0.0);
        let mut ranged = Likelihood::new(params(20));
        for (i, &s) in scores[..100].iter().enumerate() {
            ranged.update(s, Some((i % 2) as f64));
        }
        assert_eq!(ranged.update(f64::NAN, Some(5.0)), 1.0);
    }

    #[test]
    fn zero_average_and_reestimate_act_as_one() {
        let scores = normal_scores(300, 6);
        let run = |average, reestimate| {
            let mut lik = Likelihood::new(LikelihoodParams {
                average,
                reestimate,
                ..params(100)
            });
            scores
                .iter()
                .map(|&s| lik.update(s, None))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(0, 0), run(1, 1));
        assert!(run(0, 0).iter().all(|o| o.is_finite()));
    }

    #[test]
    fn empty_history_gives_no_estimate() {
        let mut lik = Likelihood::new(LikelihoodParams {
            history: 0,
            ..params(5)
        });
        let out: Vec<f64> = [0.1, 0.2, 0.1, 0.2, 0.1, 0.2, 9.0]
            .iter()
            .map(|&s| lik.update(s, None))
            .collect();
        let half = (1.000_000_000_1 - 0.5_f64).ln() / LOG_DENOMINATOR;
        assert_eq!(out[..5], [0.0; 5]);
        assert_eq!(out[5..], [half, half]);
    }

    #[test]
    fn keyed_keeps_one_independent_state_per_key_and_forgets_the_oldest() {
        let a = normal_scores(400, 1);
        let b = normal_scores(400, 2);
        let (mut alone_a, mut alone_b) =
            (Likelihood::new(params(100)), Likelihood::new(params(100)));
        let mut keyed = Keyed::new(params(100), 2);
        for i in 0..400 {
            assert_eq!(
                keyed.update(Some("a"), a[i], &[], None),
                alone_a.update(a[i], None)
            );
            assert_eq!(
                keyed.update(Some("b"), b[i], &[], None),
                alone_b.update(b[i], None)
            );
        }
        assert_eq!(keyed.keys(), 2);
        keyed.update(None, 1.0, &[], None);
        assert_eq!(keyed.keys(), 2, "bounded");
        assert_eq!(keyed.take_evictions(), 1);
        assert_eq!(keyed.take_evictions(), 0);
        // "a" was the least recently seen: it starts over with a new warm-up.
        assert_eq!(keyed.update(Some("a"), 1e6, &[], None), 0.0);
    }

    #[test]
    fn a_snapshot_continues_every_key_exactly_and_refuses_other_settings() {
        let (a, b) = (normal_scores(900, 3), normal_scores(900, 4));
        // Fed scores, and fed discords (the windows' memory is part of the state).
        let memory = |memory| DiscordParams { memory, segment: 1 };
        for discord in [
            None,
            Some(memory(50)),
            Some(DiscordParams {
                memory: 50,
                segment: 2,
            }),
        ] {
            let p = LikelihoodParams {
                spatial_tolerance: Some(0.05),
                discord,
                ..params(100)
            };
            let feed = |k: &mut Keyed, i: usize| {
                let value = Some((i as f64 * 0.1).sin());
                let (wa, wb) = (
                    [a[i] as f32, 1.0, 0.5],
                    [b[i] as f32, (i % 7) as f32, (i % 3) as f32],
                );
                (
                    k.update(Some("a"), a[i], &wa, value),
                    k.update(Some("b"), b[i] * 3.0, &wb, value),
                )
            };
            let mut uninterrupted = Keyed::new(p, 10);
            let mut first = Keyed::new(p, 10);
            for i in 0..500 {
                assert_eq!(feed(&mut uninterrupted, i), feed(&mut first, i));
            }
            let bytes = first.snapshot().expect("snapshot");
            let mut restored = Keyed::from_snapshot(&bytes, p, 10).expect("restore");
            assert_eq!(restored.keys(), 2);
            let mut fresh = Keyed::new(p, 10);
            let mut differs = false;
            for i in 500..900 {
                let expected = feed(&mut uninterrupted, i);
                assert_eq!(feed(&mut restored, i), expected, "{discord:?} record {i}");
                differs |= feed(&mut fresh, i) != expected;
            }
            assert!(differs, "a fresh state would have judged differently");
        }
        let p = LikelihoodParams {
            spatial_tolerance: Some(0.05),
            ..params(100)
        };
        let mut first = Keyed::new(p, 10);
        for i in 0..10 {
            first.update(Some("a"), 1.0, &[], None);
            first.update(Some("b"), i as f64, &[], None);
        }
        let bytes = first.snapshot().expect("snapshot");
        // The least recently seen order survives: with room for one key, "b" (the later
        // one) is kept.
        let one = Keyed::from_snapshot(&bytes, p, 1).expect("restore");
        assert_eq!(one.keys(), 1);
        assert!(one.by_key.contains("b"));

        let other = LikelihoodParams { history: 500, ..p };
        let err = Keyed::from_snapshot(&bytes, other, 10).expect_err("other settings");
        assert!(matches!(err, SnapshotError::Params(_)), "{err}");
        let fed_discords = LikelihoodParams {
            discord: Some(memory(50)),
            ..p
        };
        let err = Keyed::from_snapshot(&bytes, fed_discords, 10).expect_err("other input");
        assert!(matches!(err, SnapshotError::Params(_)), "{err}");
        assert!(matches!(
            Keyed::from_snapshot(b"garbage", p, 10),
            Err(SnapshotError::Decode(_))
        ));
    }

    #[test]
    fn keyed_gives_the_discord_terms_of_the_last_update_only_when_fed_discords() {
        let window = |i: usize| [(i % 5) as f32, ((i + 1) % 5) as f32, ((i * 3) % 7) as f32];
        let mut by_score = Keyed::new(params(10), 10);
        let discord = Some(DiscordParams {
            memory: 20,
            segment: 1,
        });
        let mut by_discord = Keyed::new(
            LikelihoodParams {
                discord,
                ..params(10)
            },
            10,
        );
        for i in 0..40 {
            by_score.update(Some("a"), 0.1, &window(i), None);
            assert_eq!(by_score.discord_terms(), None);
            by_discord.update(Some(&format!("k{}", i % 2)), 0.1, &window(i), None);
            let terms = by_discord.discord_terms();
            if i < 6 {
                // Each key's first three windows overlap all before them.
                assert_eq!(terms, None, "record {i}");
            } else {
                assert_eq!(terms.map(<[f32]>::len), Some(3), "record {i}");
            }
        }
    }

    /// Fed discords, a periodic series alerts on a shape it has never shown, inside its
    /// range (so the value-range check cannot see it), and stays quiet before it.
    #[test]
    fn fed_discords_a_new_shape_alerts_and_the_known_ones_do_not() {
        let w = 16;
        // A wave with a little noise that never repeats exactly (a repeat would make the
        // distance exactly 0, itself a change the two-sided tail reports).
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut values: Vec<f64> = (0..2000)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let noise = (state >> 11) as f64 / (1u64 << 53) as f64;
                (i as f64 * std::f64::consts::TAU / 50.0).sin() + 0.02 * noise
            })
            .collect();
        for v in &mut values[1500..1520] {
            *v = 0.0; // a flat stretch where the wave should be
        }
        let mut lik = Likelihood::new(LikelihoodParams {
            discord: Some(DiscordParams {
                memory: 1000,
                segment: 1,
            }),
            ..params(300)
        });
        let out: Vec<f64> = (0..values.len())
            .map(|t| {
                let window: Vec<f32> = (0..w)
                    .map(|k| values[(t + k + 1).saturating_sub(w)] as f32)
                    .collect();
                lik.update_record(f64::NAN, &window, Some(values[t]))
            })
            .collect();
        let alerts: Vec<usize> = (0..out.len()).filter(|&t| out[t] >= ALERT_LEVEL).collect();
        assert!(
            !alerts.is_empty() && alerts.iter().all(|t| (1500..1540).contains(t)),
            "{alerts:?}"
        );
    }
}
