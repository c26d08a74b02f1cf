//! SPOT and DSPOT: streaming thresholds from extreme value theory.
//!
//! From A. Siffer, P.-A. Fouque, A. Termier, C. Largouët, "Anomaly Detection in Streams
//! with Extreme Value Theory", KDD 2017 (doi:10.1145/3097983.3098144).
//!
//! # Idea
//!
//! By the Pickands–Balkema–de Haan theorem, for a high enough level `t` the excesses
//! `Y = X − t` of the records that exceed it follow (approximately) a generalised Pareto
//! distribution (GPD)
//!
//! ```text
//! P(X − t > y | X > t) = (1 + γ·y/σ)^(−1/γ)     (γ ≠ 0),     e^(−y/σ)  (γ = 0)
//! ```
//!
//! whatever the distribution of `X` (within mild conditions). With `n` records of which
//! `N_t` exceed `t`, `P(X > t) ≈ N_t / n`, and solving `P(X > z_q) = q` gives the
//! threshold (paper, eq. 1)
//!
//! ```text
//! z_q = t + (σ/γ)·((q·n/N_t)^(−γ) − 1)        (γ ≠ 0)
//! z_q = t − σ·ln(q·n/N_t)                      (γ = 0)
//! ```
//!
//! so the threshold is extrapolated from the tail instead of read off an empirical
//! quantile, and can sit beyond every value seen in calibration.
//!
//! # What `q` means operationally
//!
//! `q` is the probability that a *normal* record exceeds `z_q`: the per-record false
//! alarm rate. The expected number of false alerts in a period is `q` times the number
//! of records in it, e.g. `q = 1e-4` at one record per minute (1440 per day) gives about
//! `1440 · 1e-4 ≈ 0.14` false alerts per day, one every week or so. Choose `q` from the
//! alert budget, not from the anomaly rate. `q` must be below the calibration
//! exceedance rate `N_t/n ≈ 1 − init_level` (e.g. `q < 0.02` for `init_level = 0.98`),
//! otherwise `z_q` would fall below `t`.
//!
//! # Fitting the GPD (Grimshaw's trick)
//!
//! The GPD log-likelihood of the excesses `Y_1..Y_N` is
//!
//! ```text
//! ℓ(γ, σ) = −N·ln σ − (1 + 1/γ)·Σ ln(1 + γ·Y_i/σ)
//! ```
//!
//! Following Grimshaw (1993, "Computing maximum likelihood estimates for the generalized
//! Pareto distribution", Technometrics 35(2)) and the paper's section 3.2, substitute
//! `x = γ/σ`; the stationarity conditions reduce to the one-dimensional equation
//! `u(x)·v(x) = 1` with
//!
//! ```text
//! u(x) = (1/N)·Σ 1/(1 + x·Y_i),     v(x) = 1 + (1/N)·Σ ln(1 + x·Y_i),
//! ```
//!
//! and a root `x*` gives `γ = v(x*) − 1`, `σ = γ/x*`. The domain is `x > −1/Y_max`, and
//! Grimshaw bounds the roots by `x < 2(Ȳ − Y_min)/Y_min²`. [`fit_gpd`] scans
//! `(−1/Y_max, 0)` and `(0, 2(Ȳ − Y_min)/Y_min²]` on geometric grids that are dense near
//! the ends, refines every sign change by bisection, and returns the candidate with the
//! highest likelihood; the exponential case (`γ = 0`, `σ = Ȳ`, the root `x = 0`) is
//! always a candidate. (The paper's reference code searches the positive side only from
//! `2(Ȳ − Y_min)/(Ȳ·Y_min)`, which misses the root when `Y_min` is small, e.g. for GPD
//! data with `γ = 0.2`; the full interval is searched here.)
//!
//! # Streaming
//!
//! [`Spot::step`] implements the paper's Algorithm 1: a record above `z_q` is an
//! anomaly and is *not* learned; a record in `(t, z_q]` is a new peak, so the GPD is
//! refitted and `z_q` updated; anything else is normal and only increments `n`.
//! [`Dspot`] (Algorithm 3) runs SPOT on `X_i − M_i`, where `M_i` is the mean of the
//! last `d` non-anomalous records, so a slow drift in the level does not raise alarms.
//!
//! # Bounded memory
//!
//! The paper keeps every peak. Here at most [`SpotConfig::max_peaks`] of the most recent
//! excesses are kept and used to fit `(γ, σ)`, while `n` and `N_t` keep counting all
//! records and all peaks, so `N_t/n` stays the long-run exceedance rate of `t`. A refit
//! costs `O(max_peaks)` times a few hundred evaluations of `u` and `v`, and happens
//! only on peaks (about `1 − init_level` of records).
//!
//! Only upper-tail anomalies are detected; run a second detector on `−x` for the lower
//! tail.

use std::collections::VecDeque;

/// Default cap on the peaks kept for the GPD fit.
pub const DEFAULT_MAX_PEAKS: usize = 2_000;
/// Default minimum number of calibration peaks for a usable fit.
pub const DEFAULT_MIN_PEAKS: usize = 10;

/// Why a SPOT/DSPOT model could not be built or restored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpotError {
    /// No calibration records (or none left after the DSPOT window).
    #[error("calibration data is empty")]
    EmptyCalibration,
    /// A calibration record is NaN or infinite.
    #[error("calibration record {index} is not finite")]
    NonFinite {
        /// Index of the offending record.
        index: usize,
    },
    /// `risk_q` must be in `(0, 1)`.
    #[error("risk q = {0} is not in (0, 1)")]
    InvalidRisk(f64),
    /// `init_level` must be in `(0, 1)`.
    #[error("initial level {0} is not in (0, 1)")]
    InvalidLevel(f64),
    /// Peak limits must satisfy `1 <= min_peaks <= max_peaks`.
    #[error("peak limits min {min} / max {max} are invalid")]
    InvalidPeakLimits {
        /// Configured minimum.
        min: usize,
        /// Configured maximum.
        max: usize,
    },
    /// DSPOT depth must be at least 1.
    #[error("DSPOT depth must be at least 1")]
    InvalidDepth,
    /// Too few calibration records exceed the initial threshold.
    #[error("{found} calibration peaks above the initial threshold, need {required}")]
    TooFewPeaks {
        /// Peaks found.
        found: usize,
        /// Peaks required.
        required: usize,
    },
    /// `q` is not below the exceedance rate of the initial threshold, so `z_q <= t`.
    #[error("risk q = {q} is not below the initial exceedance rate {rate}; lower q or init_level")]
    RiskAboveExceedanceRate {
        /// Configured risk.
        q: f64,
        /// `N_t / n` in calibration.
        rate: f64,
    },
    /// The excesses passed to [`fit_gpd`] are empty, non-positive or not finite.
    #[error("GPD excesses must be finite and positive")]
    InvalidExcesses,
    /// A persisted state is inconsistent.
    #[error("invalid persisted SPOT state: {0}")]
    InvalidState(&'static str),
}

/// A maximum-likelihood generalised Pareto fit.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GpdFit {
    /// Shape `γ` (tail index): `> 0` heavy tail, `0` exponential, `< 0` bounded.
    pub gamma: f64,
    /// Scale `σ > 0`.
    pub sigma: f64,
    /// Log-likelihood at `(γ, σ)`.
    pub log_likelihood: f64,
}

/// GPD log-likelihood of `excesses` at `(γ, σ)`; `−∞` outside the support.
pub fn gpd_log_likelihood(excesses: &[f64], gamma: f64, sigma: f64) -> f64 {
    if !(sigma > 0.0) || !sigma.is_finite() || !gamma.is_finite() {
        return f64::NEG_INFINITY;
    }
    let n = excesses.len() as f64;
    if gamma == 0.0 {
        return -n * sigma.ln() - excesses.iter().sum::<f64>() / sigma;
    }
    let ratio = gamma / sigma;
    let mut log_sum = 0.0;
    for &y in excesses {
        let s = 1.0 + ratio * y;
        if !(s > 0.0) {
            return f64::NEG_INFINITY;
        }
        log_sum += s.ln();
    }
    -n * sigma.ln() - (1.0 + 1.0 / gamma) * log_sum
}

/// `u(x)·v(x) − 1` (see the module docs); its non-zero roots are the GPD MLE candidates.
fn grimshaw_w(excesses: &[f64], x: f64) -> f64 {
    let (mut inv, mut log) = (0.0, 0.0);
    for &y in excesses {
        let s = 1.0 + x * y;
        inv += 1.0 / s;
        log += s.ln();
    }
    let n = excesses.len() as f64;
    (inv / n) * (1.0 + log / n) - 1.0
}

/// Roots of `f` on the sorted `grid`: every sign change between neighbours, refined by
/// bisection to a relative width of about 1e-12.
fn roots_on_grid(grid: &[f64], f: impl Fn(f64) -> f64) -> Vec<f64> {
    let mut roots = Vec::new();
    let values: Vec<f64> = grid.iter().map(|&x| f(x)).collect();
    for k in 1..grid.len() {
        let (mut lo, mut hi) = (grid[k - 1], grid[k]);
        let (mut f_lo, f_hi) = (values[k - 1], values[k]);
        if !f_lo.is_finite() || !f_hi.is_finite() {
            continue;
        }
        if f_lo == 0.0 {
            roots.push(lo);
            continue;
        }
        if f_lo.signum() == f_hi.signum() {
            continue;
        }
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if !(hi - lo > 1e-12 * mid.abs()) || mid == lo || mid == hi {
                break;
            }
            let f_mid = f(mid);
            if f_mid == 0.0 {
                lo = mid;
                hi = mid;
                break;
            }
            if f_mid.signum() == f_lo.signum() {
                lo = mid;
                f_lo = f_mid;
            } else {
                hi = mid;
            }
        }
        roots.push(0.5 * (lo + hi));
    }
    roots
}

/// Geometric fractions `lo_frac ..= hi_frac`, `count` of them.
fn geometric(lo: f64, hi: f64, count: usize) -> impl Iterator<Item = f64> {
    let ratio = (hi / lo).powf(1.0 / (count.max(2) - 1) as f64);
    (0..count).map(move |k| lo * ratio.powi(k as i32))
}

/// Maximum-likelihood GPD fit of positive `excesses` by Grimshaw's method.
///
/// # Errors
/// [`SpotError::InvalidExcesses`] if `excesses` is empty or has a value that is not
/// finite and positive.
pub fn fit_gpd(excesses: &[f64]) -> Result<GpdFit, SpotError> {
    if excesses.is_empty() || excesses.iter().any(|&y| !(y > 0.0) || !y.is_finite()) {
        return Err(SpotError::InvalidExcesses);
    }
    let n = excesses.len() as f64;
    let (mut y_min, mut y_max, mut y_sum) = (f64::INFINITY, 0.0_f64, 0.0);
    for &y in excesses {
        y_min = y_min.min(y);
        y_max = y_max.max(y);
        y_sum += y;
    }
    let y_mean = y_sum / n;

    // γ = 0 (the root x = 0): exponential with σ = Ȳ.
    let mut best = GpdFit {
        gamma: 0.0,
        sigma: y_mean,
        log_likelihood: gpd_log_likelihood(excesses, 0.0, y_mean),
    };

    let w = |x: f64| grimshaw_w(excesses, x);
    // Near x = 0, w(x) ≈ x²·(E[Y²]/2 − Ȳ²) is lost in rounding below |x·Ȳ| ≈ 1e-6,
    // and a root there is indistinguishable from the exponential fit; so the grids
    // stop at |x| = NEAR_ZERO / Ȳ.
    const NEAR_ZERO: f64 = 1e-6;
    let x_small = NEAR_ZERO / y_mean;
    // Left interval (−1/Y_max, 0), dense near both ends.
    let a = -1.0 / y_max;
    let mut left: Vec<f64> = Vec::new();
    for f in geometric(1e-10, 0.5, 32) {
        left.push(a * (1.0 - f));
    }
    let f_small = (x_small / -a).min(0.5);
    for f in geometric(f_small, 0.5, 32) {
        left.push(a * f);
    }
    left.sort_by(f64::total_cmp);
    left.dedup();
    let mut candidates = roots_on_grid(&left, w);
    // Right interval (0, 2(Ȳ − Y_min)/Y_min²]: Grimshaw's upper bound for a positive
    // root. The grid is geometric, about ten points per decade.
    let c = 2.0 * (y_mean - y_min) / (y_min * y_min);
    if c.is_finite() && c > x_small {
        let decades = (c / x_small).log10();
        let count = ((decades * 10.0).ceil() as usize).clamp(16, 400);
        let right: Vec<f64> = geometric(x_small, c, count).collect();
        candidates.extend(roots_on_grid(&right, w));
    }

    for x in candidates {
        if x == 0.0 {
            continue;
        }
        let (mut log_sum, mut ok) = (0.0, true);
        for &y in excesses {
            let s = 1.0 + x * y;
            if !(s > 0.0) {
                ok = false;
                break;
            }
            log_sum += s.ln();
        }
        if !ok {
            continue;
        }
        let gamma = log_sum / n; // v(x) − 1
        let sigma = gamma / x;
        let ll = gpd_log_likelihood(excesses, gamma, sigma);
        if ll > best.log_likelihood {
            best = GpdFit {
                gamma,
                sigma,
                log_likelihood: ll,
            };
        }
    }
    Ok(best)
}

/// `z_q` from the paper's eq. 1, using `expm1` so that `γ → 0` is continuous.
fn quantile_threshold(t: f64, fit_gamma: f64, fit_sigma: f64, q: f64, n: u64, n_peaks: u64) -> f64 {
    let r = q * n as f64 / n_peaks as f64;
    if fit_gamma == 0.0 {
        t - fit_sigma * r.ln()
    } else {
        t + fit_sigma * (-fit_gamma * r.ln()).exp_m1() / fit_gamma
    }
}

/// Empirical quantile with linear interpolation between order statistics (NumPy's
/// default) of finite, non-empty `values`.
fn empirical_quantile(values: &[f64], level: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let pos = level * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// SPOT settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpotConfig {
    /// `q`: per-record probability that a normal record exceeds the threshold (see
    /// the module docs). Must be in `(0, 1 − init_level)`.
    pub risk_q: f64,
    /// Level of the empirical quantile used as the initial threshold `t` (the paper
    /// uses 0.98).
    pub init_level: f64,
    /// Most recent peaks kept for the GPD fit.
    pub max_peaks: usize,
    /// Calibration peaks required for the initial fit.
    pub min_peaks: usize,
}

impl SpotConfig {
    /// `risk_q` and `init_level` with the default peak limits.
    pub fn new(risk_q: f64, init_level: f64) -> Self {
        Self {
            risk_q,
            init_level,
            max_peaks: DEFAULT_MAX_PEAKS,
            min_peaks: DEFAULT_MIN_PEAKS,
        }
    }

    fn validate(&self) -> Result<(), SpotError> {
        if !(self.risk_q > 0.0 && self.risk_q < 1.0) {
            return Err(SpotError::InvalidRisk(self.risk_q));
        }
        if !(self.init_level > 0.0 && self.init_level < 1.0) {
            return Err(SpotError::InvalidLevel(self.init_level));
        }
        if self.min_peaks == 0 || self.min_peaks > self.max_peaks {
            return Err(SpotError::InvalidPeakLimits {
                min: self.min_peaks,
                max: self.max_peaks,
            });
        }
        Ok(())
    }
}

/// What [`Spot::step`] or [`Dspot::step`] made of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SpotVerdict {
    /// At or below the initial threshold `t`; counted in `n`.
    Normal,
    /// In `(t, z_q]`: not an alert, but a new peak; the GPD was refitted.
    Peak,
    /// Above `z_q`: an alert. The model is left unchanged.
    Anomaly,
    /// NaN or infinite input: ignored, the model is left unchanged.
    Skipped,
}

impl SpotVerdict {
    /// `true` for [`SpotVerdict::Anomaly`].
    pub fn is_anomaly(self) -> bool {
        self == Self::Anomaly
    }
}

/// A SPOT detector: an extreme-value threshold `z_q` on a stationary stream.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "SpotState")]
pub struct Spot {
    config: SpotConfig,
    /// Initial threshold `t`.
    init_threshold: f64,
    /// Most recent excesses `X − t` over `t`, oldest first.
    peaks: VecDeque<f64>,
    /// `n`: records counted (calibration, normals and peaks; not anomalies).
    n: u64,
    /// `N_t`: peaks counted (all of them, including those dropped from `peaks`).
    n_peaks: u64,
    gamma: f64,
    sigma: f64,
    /// `z_q`.
    threshold: f64,
}

/// The serialised form of [`Spot`], checked before it becomes one.
#[derive(serde::Deserialize)]
struct SpotState {
    config: SpotConfig,
    init_threshold: f64,
    peaks: VecDeque<f64>,
    n: u64,
    n_peaks: u64,
    gamma: f64,
    sigma: f64,
    threshold: f64,
}

impl TryFrom<SpotState> for Spot {
    type Error = SpotError;

    fn try_from(s: SpotState) -> Result<Self, SpotError> {
        s.config.validate()?;
        if !s.init_threshold.is_finite() {
            return Err(SpotError::InvalidState("initial threshold is not finite"));
        }
        if s.peaks.is_empty() || s.peaks.len() > s.config.max_peaks {
            return Err(SpotError::InvalidState("peak count outside 1..=max_peaks"));
        }
        if s.peaks.iter().any(|&y| !(y > 0.0) || !y.is_finite()) {
            return Err(SpotError::InvalidState("peaks must be finite and positive"));
        }
        if (s.n_peaks as usize) < s.peaks.len() || s.n < s.n_peaks {
            return Err(SpotError::InvalidState(
                "counts must satisfy peaks <= N_t <= n",
            ));
        }
        if !(s.sigma > 0.0) || !s.sigma.is_finite() || !s.gamma.is_finite() {
            return Err(SpotError::InvalidState("GPD parameters out of range"));
        }
        if s.threshold.is_nan() {
            return Err(SpotError::InvalidState("threshold is NaN"));
        }
        Ok(Self {
            config: s.config,
            init_threshold: s.init_threshold,
            peaks: s.peaks,
            n: s.n,
            n_peaks: s.n_peaks,
            gamma: s.gamma,
            sigma: s.sigma,
            threshold: s.threshold,
        })
    }
}

impl Spot {
    /// Calibrates SPOT on `calibration` with risk `risk_q` and initial level
    /// `init_level` (e.g. 0.98), using the default peak limits.
    ///
    /// # Errors
    /// See [`Spot::fit_with_config`].
    pub fn fit(calibration: &[f64], risk_q: f64, init_level: f64) -> Result<Self, SpotError> {
        Self::fit_with_config(calibration, SpotConfig::new(risk_q, init_level))
    }

    /// Calibrates SPOT (the paper's initialisation step): `t` is the `init_level`
    /// empirical quantile of `calibration`, the excesses over `t` are fitted with a GPD,
    /// and `z_q` follows from eq. 1.
    ///
    /// # Errors
    /// [`SpotError`] for an invalid config, empty or non-finite calibration data, fewer
    /// than `min_peaks` peaks, or `risk_q >= N_t/n`.
    pub fn fit_with_config(calibration: &[f64], config: SpotConfig) -> Result<Self, SpotError> {
        config.validate()?;
        if calibration.is_empty() {
            return Err(SpotError::EmptyCalibration);
        }
        if let Some(index) = calibration.iter().position(|x| !x.is_finite()) {
            return Err(SpotError::NonFinite { index });
        }
        let t = empirical_quantile(calibration, config.init_level);
        let all_peaks: Vec<f64> = calibration
            .iter()
            .filter(|&&x| x > t)
            .map(|&x| x - t)
            .collect();
        if all_peaks.len() < config.min_peaks {
            return Err(SpotError::TooFewPeaks {
                found: all_peaks.len(),
                required: config.min_peaks,
            });
        }
        let n = calibration.len() as u64;
        let n_peaks = all_peaks.len() as u64;
        let rate = n_peaks as f64 / n as f64;
        if config.risk_q >= rate {
            return Err(SpotError::RiskAboveExceedanceRate {
                q: config.risk_q,
                rate,
            });
        }
        let keep_from = all_peaks.len().saturating_sub(config.max_peaks);
        let peaks: VecDeque<f64> = all_peaks[keep_from..].iter().copied().collect();
        let fit = fit_gpd(&all_peaks[keep_from..])?;
        let threshold = quantile_threshold(t, fit.gamma, fit.sigma, config.risk_q, n, n_peaks);
        Ok(Self {
            config,
            init_threshold: t,
            peaks,
            n,
            n_peaks,
            gamma: fit.gamma,
            sigma: fit.sigma,
            threshold,
        })
    }

    /// Processes one record (the paper's Algorithm 1):
    ///
    /// * `x > z_q` → [`SpotVerdict::Anomaly`]; nothing is learned from it.
    /// * `t < x <= z_q` → [`SpotVerdict::Peak`]; `x − t` joins the peaks (the oldest is
    ///   dropped beyond `max_peaks`), `n` and `N_t` grow, the GPD is refitted and `z_q`
    ///   recomputed.
    /// * `x <= t` → [`SpotVerdict::Normal`]; `n` grows, so `z_q` creeps up slightly.
    /// * NaN or infinite → [`SpotVerdict::Skipped`].
    pub fn step(&mut self, x: f64) -> SpotVerdict {
        if !x.is_finite() {
            return SpotVerdict::Skipped;
        }
        if x > self.threshold {
            return SpotVerdict::Anomaly;
        }
        self.n += 1;
        if x > self.init_threshold {
            let excess = x - self.init_threshold;
            self.peaks.push_back(excess);
            while self.peaks.len() > self.config.max_peaks {
                self.peaks.pop_front();
            }
            self.n_peaks += 1;
            // The excesses are finite and positive, so the fit cannot fail; if it ever
            // did, the previous (γ, σ) are kept.
            if let Ok(fit) = fit_gpd(self.peaks.make_contiguous()) {
                self.gamma = fit.gamma;
                self.sigma = fit.sigma;
            }
            self.update_threshold();
            SpotVerdict::Peak
        } else {
            self.update_threshold();
            SpotVerdict::Normal
        }
    }

    fn update_threshold(&mut self) {
        self.threshold = quantile_threshold(
            self.init_threshold,
            self.gamma,
            self.sigma,
            self.config.risk_q,
            self.n,
            self.n_peaks,
        );
    }

    /// The current alert threshold `z_q`: a record above it is an anomaly.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// The initial threshold `t` (the `init_level` quantile of the calibration data).
    pub fn init_threshold(&self) -> f64 {
        self.init_threshold
    }

    /// Fitted GPD shape `γ`.
    pub fn gamma(&self) -> f64 {
        self.gamma
    }

    /// Fitted GPD scale `σ`.
    pub fn sigma(&self) -> f64 {
        self.sigma
    }

    /// The settings.
    pub fn config(&self) -> &SpotConfig {
        &self.config
    }

    /// `n`: records counted so far (anomalies are not counted).
    pub fn observations(&self) -> u64 {
        self.n
    }

    /// `N_t`: peaks counted so far, including those no longer kept.
    pub fn total_peaks(&self) -> u64 {
        self.n_peaks
    }

    /// Peaks currently kept for the fit (at most `max_peaks`).
    pub fn retained_peaks(&self) -> usize {
        self.peaks.len()
    }
}

/// DSPOT: SPOT on the residual `X_i − M_i`, where `M_i` is the mean of the last `d`
/// normal or peak records (the paper's Algorithm 3). Anomalies do not enter the window,
/// so an outlier does not drag the local level.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "DspotState")]
pub struct Dspot {
    spot: Spot,
    depth: usize,
    /// The last `depth` non-anomalous raw records, oldest first.
    window: VecDeque<f64>,
    /// Running sum of `window`, recomputed exactly every `depth` updates.
    #[serde(skip)]
    sum: f64,
    #[serde(skip)]
    since_resum: usize,
}

#[derive(serde::Deserialize)]
struct DspotState {
    spot: Spot,
    depth: usize,
    window: VecDeque<f64>,
}

impl TryFrom<DspotState> for Dspot {
    type Error = SpotError;

    fn try_from(s: DspotState) -> Result<Self, SpotError> {
        if s.depth == 0 {
            return Err(SpotError::InvalidDepth);
        }
        if s.window.len() != s.depth {
            return Err(SpotError::InvalidState("window length differs from depth"));
        }
        if s.window.iter().any(|x| !x.is_finite()) {
            return Err(SpotError::InvalidState("window values must be finite"));
        }
        let sum = s.window.iter().sum();
        Ok(Self {
            spot: s.spot,
            depth: s.depth,
            window: s.window,
            sum,
            since_resum: 0,
        })
    }
}

impl Dspot {
    /// Calibrates DSPOT with window depth `depth`, risk `risk_q` and initial level
    /// `init_level`, using the default peak limits.
    ///
    /// # Errors
    /// See [`Dspot::fit_with_config`].
    pub fn fit(
        calibration: &[f64],
        depth: usize,
        risk_q: f64,
        init_level: f64,
    ) -> Result<Self, SpotError> {
        Self::fit_with_config(calibration, depth, SpotConfig::new(risk_q, init_level))
    }

    /// Calibrates DSPOT: the first `depth` records seed the window; each later
    /// calibration record `X_i` gives a residual `X_i − M_i` and then enters the window;
    /// SPOT is fitted on those residuals.
    ///
    /// # Errors
    /// [`SpotError::InvalidDepth`] for `depth == 0`, [`SpotError::EmptyCalibration`] if
    /// `calibration.len() <= depth`, else as [`Spot::fit_with_config`].
    pub fn fit_with_config(
        calibration: &[f64],
        depth: usize,
        config: SpotConfig,
    ) -> Result<Self, SpotError> {
        if depth == 0 {
            return Err(SpotError::InvalidDepth);
        }
        if calibration.len() <= depth {
            return Err(SpotError::EmptyCalibration);
        }
        if let Some(index) = calibration.iter().position(|x| !x.is_finite()) {
            return Err(SpotError::NonFinite { index });
        }
        let mut window: VecDeque<f64> = calibration[..depth].iter().copied().collect();
        let mut sum: f64 = window.iter().sum();
        let mut residuals = Vec::with_capacity(calibration.len() - depth);
        for &x in &calibration[depth..] {
            residuals.push(x - sum / depth as f64);
            sum += x - window.pop_front().unwrap_or(0.0);
            window.push_back(x);
        }
        let spot = Spot::fit_with_config(&residuals, config)?;
        let sum = window.iter().sum();
        Ok(Self {
            spot,
            depth,
            window,
            sum,
            since_resum: 0,
        })
    }

    /// The local level `M`: mean of the last `depth` non-anomalous records.
    pub fn mean(&self) -> f64 {
        self.sum / self.depth as f64
    }

    /// Processes one record: SPOT's rule on `x − M`; normal records and peaks then
    /// enter the window, anomalies do not.
    pub fn step(&mut self, x: f64) -> SpotVerdict {
        if !x.is_finite() {
            return SpotVerdict::Skipped;
        }
        let verdict = self.spot.step(x - self.mean());
        if matches!(verdict, SpotVerdict::Normal | SpotVerdict::Peak) {
            let dropped = self.window.pop_front().unwrap_or(0.0);
            self.window.push_back(x);
            self.since_resum += 1;
            if self.since_resum >= self.depth {
                self.sum = self.window.iter().sum();
                self.since_resum = 0;
            } else {
                self.sum += x - dropped;
            }
        }
        verdict
    }

    /// The raw-scale alert level for the next record, `M + z_q`.
    pub fn threshold(&self) -> f64 {
        self.mean() + self.spot.threshold()
    }

    /// `z_q` on the residual scale.
    pub fn residual_threshold(&self) -> f64 {
        self.spot.threshold()
    }

    /// Window depth `d`.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The underlying SPOT model on residuals.
    pub fn spot(&self) -> &Spot {
        &self.spot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64 (Steele, Lea & Flood 2014): a tiny deterministic PRNG.
    struct SplitMix(u64);

    impl SplitMix {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in the open interval (0, 1).
        fn uniform(&mut self) -> f64 {
            ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        /// Exp(1) by inversion.
        fn exp(&mut self) -> f64 {
            -self.uniform().ln()
        }

        /// GPD(γ, σ) by inversion: `σ/γ·(U^(−γ) − 1)`, or `−σ ln U` for γ = 0.
        fn gpd(&mut self, gamma: f64, sigma: f64) -> f64 {
            let u = self.uniform();
            if gamma == 0.0 {
                -sigma * u.ln()
            } else {
                sigma / gamma * (u.powf(-gamma) - 1.0)
            }
        }
    }

    fn exp_samples(seed: u64, n: usize) -> Vec<f64> {
        let mut rng = SplitMix(seed);
        (0..n).map(|_| rng.exp()).collect()
    }

    const EXP_Q3: f64 = 6.907_755_278_982_137; // −ln(1e−3)

    #[test]
    fn exponential_threshold_matches_analytic_quantile() {
        let data = exp_samples(1, 20_000);
        let spot = Spot::fit(&data, 1e-3, 0.98).expect("fit");
        let rel = (spot.threshold() - EXP_Q3).abs() / EXP_Q3;
        assert!(rel < 0.10, "z_q = {} ({rel})", spot.threshold());
        // The tail of Exp(1) is exactly exponential: γ̂ ≈ 0, σ̂ ≈ 1.
        assert!(spot.gamma().abs() < 0.1, "gamma {}", spot.gamma());
        assert!((spot.sigma() - 1.0).abs() < 0.15, "sigma {}", spot.sigma());
    }

    #[test]
    fn streaming_keeps_threshold_and_false_alarm_rate() {
        let data = exp_samples(2, 50_000);
        let q = 5e-3;
        let mut spot = Spot::fit(&data[..10_000], q, 0.98).expect("fit");
        let alarms = data[10_000..]
            .iter()
            .filter(|&&x| spot.step(x).is_anomaly())
            .count();
        // 40 000 normal records at q = 5e-3: about 200 false alarms expected.
        assert!((120..=300).contains(&alarms), "{alarms} alarms");
        let analytic = -(q.ln());
        let rel = (spot.threshold() - analytic).abs() / analytic;
        assert!(rel < 0.10, "z_q = {} vs {analytic}", spot.threshold());
    }

    #[test]
    fn gpd_fit_recovers_shape() {
        for (seed, gamma) in [(3u64, 0.2), (4, 0.0), (5, -0.2), (6, 0.5)] {
            let mut rng = SplitMix(seed);
            let y: Vec<f64> = (0..5_000).map(|_| rng.gpd(gamma, 1.0)).collect();
            let fit = fit_gpd(&y).expect("fit");
            assert!(
                (fit.gamma - gamma).abs() < 0.07,
                "γ = {gamma}: fitted {fit:?}"
            );
            assert!((fit.sigma - 1.0).abs() < 0.1, "γ = {gamma}: fitted {fit:?}");
            // The MLE is a (local) maximum: nudging the parameters lowers ℓ.
            for (dg, ds) in [(0.01, 0.0), (-0.01, 0.0), (0.0, 0.01), (0.0, -0.01)] {
                let ll = gpd_log_likelihood(&y, fit.gamma + dg, fit.sigma + ds);
                assert!(ll <= fit.log_likelihood, "γ = {gamma}: not a maximum");
            }
        }
    }

    #[test]
    fn spot_on_pareto_tail_recovers_gamma_and_quantile() {
        let (gamma, sigma) = (0.2, 1.0);
        let mut rng = SplitMix(7);
        let data: Vec<f64> = (0..20_000).map(|_| rng.gpd(gamma, sigma)).collect();
        let config = SpotConfig {
            max_peaks: 10_000,
            ..SpotConfig::new(1e-3, 0.9)
        };
        let spot = Spot::fit_with_config(&data, config).expect("fit");
        // Excesses of a GPD over t are GPD with the same γ (and σ + γt).
        assert!((spot.gamma() - gamma).abs() < 0.1, "γ̂ = {}", spot.gamma());
        let analytic = sigma / gamma * (1e-3_f64.powf(-gamma) - 1.0); // 14.905
        let rel = (spot.threshold() - analytic).abs() / analytic;
        assert!(rel < 0.15, "z_q = {} vs {analytic}", spot.threshold());
    }

    #[test]
    fn flags_large_outlier_without_learning_it() {
        let data = exp_samples(8, 5_000);
        let mut spot = Spot::fit(&data, 1e-3, 0.98).expect("fit");
        let before = spot.clone();
        assert_eq!(spot.step(1_000.0), SpotVerdict::Anomaly);
        assert_eq!(spot, before);

        let t = spot.init_threshold();
        let mid = t + 0.5 * (spot.threshold() - t);
        assert_eq!(spot.step(mid), SpotVerdict::Peak);
        assert_eq!(spot.total_peaks(), before.total_peaks() + 1);
        assert_eq!(spot.observations(), before.observations() + 1);

        let z = spot.threshold();
        assert_eq!(spot.step(0.0), SpotVerdict::Normal);
        assert_eq!(spot.total_peaks(), before.total_peaks() + 1);
        assert!(spot.threshold() >= z); // n grew, N_t did not: q·n/N_t rises.

        assert_eq!(spot.step(f64::NAN), SpotVerdict::Skipped);
        assert_eq!(spot.step(f64::INFINITY), SpotVerdict::Skipped);
    }

    #[test]
    fn dspot_follows_linear_drift() {
        // Level rises by 60 over the series; Exp(1) noise on top.
        let mut rng = SplitMix(9);
        let data: Vec<f64> = (0..30_000).map(|i| 0.002 * i as f64 + rng.exp()).collect();
        let q = 1e-3;
        let (calib, stream) = data.split_at(5_000);
        let mut dspot = Dspot::fit(calib, 20, q, 0.98).expect("fit");
        let alarms = stream
            .iter()
            .filter(|&&x| dspot.step(x).is_anomaly())
            .count();
        // 25 000 records at q = 1e-3: about 25 false alarms expected.
        let rate = alarms as f64 / stream.len() as f64;
        assert!(rate < 3.0 * q && alarms > 0, "{alarms} alarms");

        // Plain SPOT on the same data alarms on most of the drifted stream.
        let mut spot = Spot::fit(calib, q, 0.98).expect("fit");
        let spot_alarms = stream
            .iter()
            .filter(|&&x| spot.step(x).is_anomaly())
            .count();
        assert!(spot_alarms > stream.len() / 2, "{spot_alarms}");

        // And DSPOT still catches a spike on top of the drift.
        assert!(dspot.step(0.002 * 30_000.0 + 50.0).is_anomaly());
        assert!(dspot.threshold() > dspot.mean());
    }

    #[test]
    fn dspot_window_ignores_anomalies() {
        let data = exp_samples(10, 3_000);
        let mut dspot = Dspot::fit(&data, 10, 1e-3, 0.98).expect("fit");
        let mean = dspot.mean();
        assert_eq!(dspot.step(1e6), SpotVerdict::Anomaly);
        assert_eq!(dspot.mean(), mean);
        assert_eq!(dspot.depth(), 10);
        assert_eq!(dspot.residual_threshold(), dspot.spot().threshold());
    }

    #[test]
    fn peak_memory_is_bounded() {
        let data = exp_samples(11, 40_000);
        let config = SpotConfig {
            max_peaks: 50,
            ..SpotConfig::new(1e-3, 0.98)
        };
        let mut spot = Spot::fit_with_config(&data[..5_000], config).expect("fit");
        assert_eq!(spot.retained_peaks(), 50);
        for &x in &data[5_000..] {
            spot.step(x);
        }
        assert_eq!(spot.retained_peaks(), 50);
        assert!(spot.total_peaks() > 500);
        // Still a sensible threshold from the 50 most recent peaks.
        assert!((spot.threshold() - EXP_Q3).abs() / EXP_Q3 < 0.3);
    }

    #[test]
    fn state_round_trips_through_json() {
        let data = exp_samples(12, 8_000);
        let mut a = Dspot::fit(&data[..4_000], 16, 1e-3, 0.98).expect("fit");
        for &x in &data[4_000..4_500] {
            a.step(x);
        }
        let json = serde_json::to_string(&a).expect("serialise");
        let mut b: Dspot = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(a.spot(), b.spot());
        for &x in &data[4_500..] {
            assert_eq!(a.step(x), b.step(x));
        }
        assert_eq!(a.threshold().to_bits(), b.threshold().to_bits());

        let spot = Spot::fit(&data, 1e-3, 0.98).expect("fit");
        let json = serde_json::to_string(&spot).expect("serialise");
        let back: Spot = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(spot, back);
        let tampered = json.replace(&format!("\"sigma\":{}", spot.sigma()), "\"sigma\":-1.0");
        assert_ne!(tampered, json);
        assert!(serde_json::from_str::<Spot>(&tampered).is_err());
    }

    #[test]
    fn rejects_bad_configuration() {
        let data = exp_samples(13, 1_000);
        assert_eq!(Spot::fit(&[], 1e-3, 0.98), Err(SpotError::EmptyCalibration));
        assert_eq!(
            Spot::fit(&[1.0, f64::NAN], 1e-3, 0.5),
            Err(SpotError::NonFinite { index: 1 })
        );
        assert_eq!(
            Spot::fit(&data, 0.0, 0.98),
            Err(SpotError::InvalidRisk(0.0))
        );
        assert_eq!(
            Spot::fit(&data, 1.0, 0.98),
            Err(SpotError::InvalidRisk(1.0))
        );
        assert_eq!(
            Spot::fit(&data, 1e-3, 1.0),
            Err(SpotError::InvalidLevel(1.0))
        );
        assert!(matches!(
            Spot::fit(&data, 0.05, 0.98),
            Err(SpotError::RiskAboveExceedanceRate { .. })
        ));
        assert!(matches!(
            Spot::fit(&data[..100], 1e-3, 0.98),
            Err(SpotError::TooFewPeaks { found: 2, .. })
        ));
        assert!(matches!(
            Spot::fit(&[1.0; 500], 1e-3, 0.98),
            Err(SpotError::TooFewPeaks { found: 0, .. })
        ));
        let bad_limits = SpotConfig {
            min_peaks: 20,
            max_peaks: 10,
            ..SpotConfig::new(1e-3, 0.98)
        };
        assert!(matches!(
            Spot::fit_with_config(&data, bad_limits),
            Err(SpotError::InvalidPeakLimits { .. })
        ));
        assert_eq!(
            Dspot::fit(&data, 0, 1e-3, 0.98),
            Err(SpotError::InvalidDepth)
        );
        assert_eq!(
            Dspot::fit(&data[..5], 5, 1e-3, 0.98),
            Err(SpotError::EmptyCalibration)
        );
        assert_eq!(fit_gpd(&[]), Err(SpotError::InvalidExcesses));
        assert_eq!(fit_gpd(&[1.0, 0.0]), Err(SpotError::InvalidExcesses));
    }

    #[test]
    fn fit_handles_degenerate_peaks() {
        // All excesses equal: only the exponential candidate exists.
        let fit = fit_gpd(&[2.0; 20]).expect("fit");
        assert_eq!(fit.gamma, 0.0);
        assert_eq!(fit.sigma, 2.0);
        let one = fit_gpd(&[0.5]).expect("fit");
        assert_eq!((one.gamma, one.sigma), (0.0, 0.5));
    }

    #[test]
    fn threshold_formula_limits() {
        // γ = 0 and tiny γ agree (expm1 form is continuous).
        let a = quantile_threshold(1.0, 0.0, 2.0, 1e-3, 1000, 20);
        let b = quantile_threshold(1.0, 1e-12, 2.0, 1e-3, 1000, 20);
        assert!((a - b).abs() < 1e-9);
        assert!((a - (1.0 - 2.0 * (0.05_f64).ln())).abs() < 1e-12);
        // Paper's eq. 1 for γ ≠ 0.
        let z = quantile_threshold(1.0, 0.3, 2.0, 1e-3, 1000, 20);
        let want = 1.0 + 2.0 / 0.3 * (0.05_f64.powf(-0.3) - 1.0);
        assert!((z - want).abs() < 1e-12);
    }
}
