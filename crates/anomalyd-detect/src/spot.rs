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
//! threshold (the paper's quantile formula)
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
//! Pareto distribution", Technometrics 35(2)) as used in the paper, substitute
//! `x = γ/σ`; the stationarity conditions reduce to the one-dimensional equation
//! `u(x)·v(x) = 1` with
//!
//! ```text
//! u(x) = (1/N)·Σ 1/(1 + x·Y_i),     v(x) = 1 + (1/N)·Σ ln(1 + x·Y_i),
//! ```
//!
//! and a root `x*` gives `γ = v(x*) − 1`, `σ = γ/x*`. The domain is `x > −1/Y_max`, and
//! for `x > 0` the bound `u(x)·v(x) ≤ (1 + ln(1 + x·Y_max))/(x·Y_min)` puts every
//! positive root below the point `x_hi` where that bound drops under 1. [`fit_gpd`]
//! scans `(−1/Y_max, 0)` and `(0, x_hi]` on geometric grids that are dense near the
//! ends, refines every sign change by regula falsi (Illinois variant), and returns
//! the candidate with the highest likelihood; the exponential case (`γ = 0`, `σ = Ȳ`,
//! the root `x = 0`) is always a candidate. (The authors' reference implementation
//! searches the positive side only from `2(Ȳ − Y_min)/(Ȳ·Y_min)`; with small `Y_min`
//! that lower end lies far above the root, e.g. for GPD data with `γ = 0.2, σ = 1` the
//! root is near 0.2 while the lower end is about `2/Y_min ≈ 10⁴`, and the fit falls
//! back to `γ ≈ 0`. The full interval is searched here.)
//!
//! # Streaming
//!
//! [`Spot::step`] implements the paper's SPOT algorithm: a record above `z_q` is an
//! anomaly and is *not* learned; a record in `(t, z_q]` is a new peak, so the GPD is
//! refitted and `z_q` updated; anything else is normal and only increments `n`.
//! Not learning anomalies truncates the learned tail at `z_q`, which biases `z_q`
//! downwards over long runs; [`SpotConfig::learn_from_anomalies`] (off by default)
//! removes that bias by feeding anomalies to the fit as right-censored exceedances.
//! [`Dspot`] (the paper's DSPOT) runs SPOT on `X_i − M_i`, where `M_i` is the mean of the
//! last `d` non-anomalous records, so a slow drift in the level does not raise alarms.
//!
//! # Bounded memory
//!
//! The paper keeps every peak. Here at most [`SpotConfig::max_peaks`] of the most recent
//! excesses are kept and used to fit `(γ, σ)`, while `n` and `N_t` keep counting all
//! records and all peaks, so `N_t/n` stays the long-run exceedance rate of `t`. A refit
//! costs `O(max_peaks)` times one to two hundred evaluations of `u` and `v`, and
//! happens only on peaks (about `1 − init_level` of records): with the default cap and
//! `init_level = 0.98`, an optimised build took 3–15 µs per record on average (more
//! as the peak set fills up) on a 2-core development VM.
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

/// `v > 0` (false for NaN).
fn positive(v: f64) -> bool {
    v > 0.0
}

/// `0 < v < ∞` (false for NaN).
fn positive_finite(v: f64) -> bool {
    v > 0.0 && v.is_finite()
}

/// GPD log-likelihood of `excesses` at `(γ, σ)`; `−∞` outside the support.
pub fn gpd_log_likelihood(excesses: &[f64], gamma: f64, sigma: f64) -> f64 {
    gpd_log_likelihood_censored(excesses, &[], gamma, sigma)
}

/// GPD log-likelihood of observed `excesses` plus right-censored observations known
/// only to exceed the values in `censored`:
/// `Σ ln f(y_i) + Σ ln S(c_j)` with `ln S(c) = −(1/γ)·ln(1 + γc/σ)` (`−c/σ` for γ = 0).
/// `−∞` outside the support.
pub fn gpd_log_likelihood_censored(
    excesses: &[f64],
    censored: &[f64],
    gamma: f64,
    sigma: f64,
) -> f64 {
    if !positive_finite(sigma) || !gamma.is_finite() {
        return f64::NEG_INFINITY;
    }
    let n = excesses.len() as f64;
    if gamma == 0.0 {
        let total: f64 = excesses.iter().chain(censored).sum();
        return -n * sigma.ln() - total / sigma;
    }
    let ratio = gamma / sigma;
    let log_sum = |values: &[f64]| -> Option<f64> {
        let mut acc = 0.0;
        for &y in values {
            let s = 1.0 + ratio * y;
            if !positive(s) {
                return None;
            }
            acc += s.ln();
        }
        Some(acc)
    };
    match (log_sum(excesses), log_sum(censored)) {
        (Some(a), Some(b)) => -n * sigma.ln() - (1.0 + 1.0 / gamma) * a - b / gamma,
        _ => f64::NEG_INFINITY,
    }
}

/// Sums over the excesses needed by the Grimshaw equation at `x = γ/σ`.
struct GrimshawSums {
    /// `u(x) = (1/N)·Σ_i 1/(1 + x·y_i)` over observed excesses.
    u: f64,
    /// `γ(x) = (Σ_i ln(1 + x·y_i) + Σ_j ln(1 + x·c_j)) / N`.
    gamma: f64,
    /// `(1/N)·Σ_j (1 − 1/(1 + x·c_j))` over censored excesses.
    censored_term: f64,
}

fn grimshaw_sums(excesses: &[f64], censored: &[f64], x: f64) -> GrimshawSums {
    let n = excesses.len() as f64;
    let (mut inv, mut log) = (0.0, 0.0);
    for &y in excesses {
        let s = 1.0 + x * y;
        inv += 1.0 / s;
        log += s.ln();
    }
    let mut cens = 0.0;
    for &c in censored {
        let s = 1.0 + x * c;
        cens += 1.0 - 1.0 / s;
        log += s.ln();
    }
    GrimshawSums {
        u: inv / n,
        gamma: log / n,
        censored_term: cens / n,
    }
}

/// The stationarity equation of the profile likelihood in `x = γ/σ`:
/// `u(x)·(1 + γ(x)) − 1 − (1/N)·Σ_j (1 − 1/(1 + x·c_j)) = 0`. Without censored values
/// this is Grimshaw's `u(x)·v(x) = 1` (`v = 1 + γ`).
fn grimshaw_w(excesses: &[f64], censored: &[f64], x: f64) -> f64 {
    let s = grimshaw_sums(excesses, censored, x);
    s.u * (1.0 + s.gamma) - 1.0 - s.censored_term
}

/// Roots of `f` on the sorted `grid`: every sign change between neighbours, refined by
/// the Illinois variant of regula falsi (with a bisection fallback).
fn roots_on_grid(grid: &[f64], f: impl Fn(f64) -> f64) -> Vec<f64> {
    let mut roots = Vec::new();
    let values: Vec<f64> = grid.iter().map(|&x| f(x)).collect();
    for k in 1..grid.len() {
        let (a, b) = (grid[k - 1], grid[k]);
        let (fa, fb) = (values[k - 1], values[k]);
        if !fa.is_finite() || !fb.is_finite() {
            continue;
        }
        if fa == 0.0 {
            roots.push(a);
        } else if fa.signum() != fb.signum() && fb != 0.0 {
            roots.push(refine_root(&f, a, b, fa, fb));
        }
    }
    roots
}

/// A root of `f` in the bracket `[a, b]` with `f(a)`, `f(b)` of opposite signs.
fn refine_root(f: &impl Fn(f64) -> f64, mut a: f64, mut b: f64, mut fa: f64, mut fb: f64) -> f64 {
    let mut last_side = 0i8;
    let mut c = 0.5 * (a + b);
    for _ in 0..100 {
        let mut next = (a * fb - b * fa) / (fb - fa);
        if !next.is_finite() || next <= a.min(b) || next >= a.max(b) {
            next = 0.5 * (a + b);
        }
        let converged = (next - c).abs() <= 1e-13 * next.abs();
        c = next;
        let fc = f(c);
        if fc == 0.0 || !fc.is_finite() || converged {
            break;
        }
        if fc.signum() == fb.signum() {
            b = c;
            fb = fc;
            if last_side == -1 {
                fa *= 0.5;
            }
            last_side = -1;
        } else {
            a = c;
            fa = fc;
            if last_side == 1 {
                fb *= 0.5;
            }
            last_side = 1;
        }
    }
    c
}

/// `count` geometrically spaced values from `lo` to `hi` (both positive).
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
    fit_gpd_censored(excesses, &[])
}

/// Maximum-likelihood GPD fit of observed `excesses` and right-censored observations
/// known only to exceed the values in `censored` (used by
/// [`SpotConfig::learn_from_anomalies`]).
///
/// With `x = γ/σ`, maximising over `γ` at fixed `x` gives `γ(x) = (Σ ln(1 + x·y_i) +
/// Σ ln(1 + x·c_j)) / N`, and the remaining one-dimensional condition is
/// `u(x)·(1 + γ(x)) = 1 + (1/N)·Σ_j (1 − 1/(1 + x·c_j))`, which is Grimshaw's
/// `u(x)·v(x) = 1` when nothing is censored. Its roots are searched on `(−1/max, 0)`
/// and on `(0, x_hi]`, where `x_hi` is a point beyond which the equation provably has
/// no root (from `u(x) ≤ 1/(x·Y_min)` and `γ(x) ≤ (1 + ρ)·ln(1 + x·max)`); each root
/// and the exponential case `γ = 0` (with `σ = (Σ y_i + Σ c_j)/N`) are compared by
/// likelihood.
///
/// # Errors
/// [`SpotError::InvalidExcesses`] if `excesses` is empty or any value is not finite
/// and positive.
pub fn fit_gpd_censored(excesses: &[f64], censored: &[f64]) -> Result<GpdFit, SpotError> {
    let valid = |v: &[f64]| v.iter().all(|&y| positive_finite(y));
    if excesses.is_empty() || !valid(excesses) || !valid(censored) {
        return Err(SpotError::InvalidExcesses);
    }
    let n = excesses.len() as f64;
    let (mut y_min, mut y_sum) = (f64::INFINITY, 0.0);
    for &y in excesses {
        y_min = y_min.min(y);
        y_sum += y;
    }
    let y_mean = y_sum / n;
    let all_max = excesses
        .iter()
        .chain(censored)
        .fold(0.0_f64, |m, &v| m.max(v));
    let c_min = censored.iter().fold(f64::INFINITY, |m, &v| m.min(v));
    let c_sum: f64 = censored.iter().sum();

    // γ = 0 (the root x = 0): exponential with σ = total exposure / N.
    let sigma0 = (y_sum + c_sum) / n;
    let mut best = GpdFit {
        gamma: 0.0,
        sigma: sigma0,
        log_likelihood: gpd_log_likelihood_censored(excesses, censored, 0.0, sigma0),
    };

    let w = |x: f64| grimshaw_w(excesses, censored, x);
    // Near x = 0 the equation is O(x²) and lost in rounding below |x·Ȳ| ≈ 1e-6, where a
    // root is indistinguishable from the exponential fit anyway.
    const NEAR_ZERO: f64 = 1e-6;
    let x_small = NEAR_ZERO / y_mean;

    // Left interval (−1/max, 0), dense near both ends.
    let a = -1.0 / all_max;
    let mut left: Vec<f64> = geometric(1e-10, 0.5, 16).map(|f| a * (1.0 - f)).collect();
    let f_small = (x_small / -a).min(0.25);
    left.extend(geometric(f_small, 0.5, 16).map(|f| a * f));
    left.sort_by(f64::total_cmp);
    left.dedup();
    let mut candidates = roots_on_grid(&left, w);

    // Right interval (0, x_hi]. For x > 0: u ≤ 1/(x·Y_min), γ(x) ≤ (1 + ρ)·ln(1 + x·max)
    // and the censored term is ≥ ρ·(1 − 1/(x·C_min)), so the equation's left side minus
    // its right side is below
    //   (1 + (1 + ρ)·ln(1 + x·max)) / (x·Y_min) + ρ/(x·C_min) − 1 − ρ,
    // which decreases in x; where that is negative there is no root.
    let rho = censored.len() as f64 / n;
    let bound = |x: f64| {
        let cens = if censored.is_empty() {
            0.0
        } else {
            rho / (x * c_min)
        };
        (1.0 + (1.0 + rho) * (x * all_max).ln_1p()) / (x * y_min) + cens - 1.0 - rho
    };
    let mut x_hi = 1.0 / y_min;
    for _ in 0..200 {
        if bound(x_hi) < 0.0 {
            break;
        }
        x_hi *= 2.0;
    }
    if x_hi.is_finite() && x_hi > x_small {
        let decades = (x_hi / x_small).log10();
        let count = ((decades * 6.0).ceil() as usize).clamp(12, 240);
        let right: Vec<f64> = geometric(x_small, x_hi, count).collect();
        candidates.extend(roots_on_grid(&right, w));
    }

    for x in candidates {
        if x == 0.0 || !positive(1.0 + x * all_max) {
            continue;
        }
        let gamma = grimshaw_sums(excesses, censored, x).gamma;
        let sigma = gamma / x;
        let ll = gpd_log_likelihood_censored(excesses, censored, gamma, sigma);
        // Require a real gain over the exponential fit, not rounding noise.
        if ll > best.log_likelihood + 1e-10 * (1.0 + best.log_likelihood.abs()) {
            best = GpdFit {
                gamma,
                sigma,
                log_likelihood: ll,
            };
        }
    }
    Ok(best)
}

/// `z_q` from the paper's quantile formula, using `expm1` so that `γ → 0` is continuous.
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
    /// Most recent exceedances of `t` kept for the GPD fit.
    pub max_peaks: usize,
    /// Calibration peaks required for the initial fit.
    pub min_peaks: usize,
    /// `false` (the paper, and the default): an anomaly leaves the model unchanged.
    ///
    /// Then the peaks learned while streaming are *truncated* at `z_q` (everything
    /// above it is dropped), the fitted tail comes out too light, `z_q` drifts down and
    /// the false alarm rate creeps above `q` on long runs. Measured on Exp(1) noise
    /// with `q = 1e-3`, `init_level = 0.98`, 5 000 calibration records (SPOT, and DSPOT
    /// under a linear drift, four seeds): 1.2–2.2·q over the next 2.5·10⁴ records,
    /// 2.4–4·q over the next 1.95·10⁵. Recalibrate periodically in this mode.
    ///
    /// `true`: an anomaly also counts in `n` and `N_t` and enters the fit as a
    /// right-censored exceedance at `z_q − t` (only the fact that it exceeded `z_q`
    /// is used, not its size; see [`fit_gpd_censored`]). This removes the truncation
    /// bias on normal data (same experiment: 0.6–1.2·q over 2.5·10⁴ records,
    /// 0.96–1.04·q over 1.95·10⁵), at the price of letting a burst of real anomalies
    /// raise `z_q` somewhat (a censored point weighs less than a peak of that size).
    #[serde(default)]
    pub learn_from_anomalies: bool,
}

impl SpotConfig {
    /// `risk_q` and `init_level` with the default peak limits and the paper's
    /// behaviour on anomalies.
    pub fn new(risk_q: f64, init_level: f64) -> Self {
        Self {
            risk_q,
            init_level,
            max_peaks: DEFAULT_MAX_PEAKS,
            min_peaks: DEFAULT_MIN_PEAKS,
            learn_from_anomalies: false,
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
    /// Above `z_q`: an alert. The model is left unchanged (unless
    /// [`SpotConfig::learn_from_anomalies`]).
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

/// One exceedance of the initial threshold kept for the fit.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
struct Exceedance {
    /// `X − t` for a peak; `z_q − t` at the time for a censored anomaly.
    excess: f64,
    /// `true` when only `X − t > excess` is known (a learned anomaly).
    #[serde(default)]
    censored: bool,
}

/// A SPOT detector: an extreme-value threshold `z_q` on a stationary stream.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "SpotState")]
pub struct Spot {
    config: SpotConfig,
    /// Initial threshold `t`.
    init_threshold: f64,
    /// Most recent exceedances of `t`, oldest first.
    peaks: VecDeque<Exceedance>,
    /// `n`: records counted (calibration, normals and peaks; anomalies only when
    /// learned).
    n: u64,
    /// `N_t`: exceedances of `t` counted (all of them, including those no longer kept).
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
    peaks: VecDeque<Exceedance>,
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
        if s.peaks.len() > s.config.max_peaks || !s.peaks.iter().any(|p| !p.censored) {
            return Err(SpotError::InvalidState(
                "need 1..=max_peaks exceedances, one uncensored",
            ));
        }
        if s.peaks.iter().any(|p| !positive_finite(p.excess)) {
            return Err(SpotError::InvalidState(
                "excesses must be finite and positive",
            ));
        }
        if (s.n_peaks as usize) < s.peaks.len() || s.n < s.n_peaks {
            return Err(SpotError::InvalidState(
                "counts must satisfy kept <= N_t <= n",
            ));
        }
        if !positive_finite(s.sigma) || !s.gamma.is_finite() {
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
    /// `init_level` (e.g. 0.98), using the defaults of [`SpotConfig::new`].
    ///
    /// # Errors
    /// See [`Spot::fit_with_config`].
    pub fn fit(calibration: &[f64], risk_q: f64, init_level: f64) -> Result<Self, SpotError> {
        Self::fit_with_config(calibration, SpotConfig::new(risk_q, init_level))
    }

    /// Calibrates SPOT (the paper's initialisation step): `t` is the `init_level`
    /// empirical quantile of `calibration` (linear interpolation, as NumPy's
    /// `percentile`), the excesses `X − t` of the records above `t` are fitted with a
    /// GPD, and `z_q` follows from the quantile formula. If there are more than
    /// `max_peaks` excesses, the last ones (in calibration order) are kept.
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
        let kept = &all_peaks[all_peaks.len().saturating_sub(config.max_peaks)..];
        let fit = fit_gpd(kept)?;
        let threshold = quantile_threshold(t, fit.gamma, fit.sigma, config.risk_q, n, n_peaks);
        Ok(Self {
            config,
            init_threshold: t,
            peaks: kept
                .iter()
                .map(|&excess| Exceedance {
                    excess,
                    censored: false,
                })
                .collect(),
            n,
            n_peaks,
            gamma: fit.gamma,
            sigma: fit.sigma,
            threshold,
        })
    }

    /// Processes one record (the paper's SPOT algorithm):
    ///
    /// * `x > z_q` → [`SpotVerdict::Anomaly`]; nothing is learned from it (unless
    ///   [`SpotConfig::learn_from_anomalies`], see there).
    /// * `t < x <= z_q` → [`SpotVerdict::Peak`]; `x − t` joins the peaks (the oldest is
    ///   dropped beyond `max_peaks`), `n` and `N_t` grow, the GPD is refitted and `z_q`
    ///   recomputed.
    /// * `x <= t` → [`SpotVerdict::Normal`]; `n` grows, so the estimated exceedance
    ///   rate `N_t/n` of `t` falls and `z_q` moves down slightly.
    /// * NaN or infinite → [`SpotVerdict::Skipped`].
    pub fn step(&mut self, x: f64) -> SpotVerdict {
        if !x.is_finite() {
            return SpotVerdict::Skipped;
        }
        if x > self.threshold {
            let censor_at = self.threshold - self.init_threshold;
            if self.config.learn_from_anomalies && censor_at > 0.0 && censor_at.is_finite() {
                self.learn(censor_at, true);
            }
            return SpotVerdict::Anomaly;
        }
        if x > self.init_threshold {
            self.learn(x - self.init_threshold, false);
            SpotVerdict::Peak
        } else {
            self.n += 1;
            self.update_threshold();
            SpotVerdict::Normal
        }
    }

    /// Adds an exceedance of `t`, refits the GPD and updates `z_q`.
    fn learn(&mut self, excess: f64, censored: bool) {
        self.n += 1;
        self.n_peaks += 1;
        self.peaks.push_back(Exceedance { excess, censored });
        while self.peaks.len() > self.config.max_peaks {
            self.peaks.pop_front();
        }
        let mut observed = Vec::with_capacity(self.peaks.len());
        let mut cens = Vec::new();
        for p in &self.peaks {
            if p.censored {
                cens.push(p.excess);
            } else {
                observed.push(p.excess);
            }
        }
        // Excesses are finite and positive, so the fit only fails if every kept
        // exceedance is censored; then the previous (γ, σ) are kept.
        if let Ok(fit) = fit_gpd_censored(&observed, &cens) {
            self.gamma = fit.gamma;
            self.sigma = fit.sigma;
        }
        self.update_threshold();
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

    /// `n`: records counted so far.
    pub fn observations(&self) -> u64 {
        self.n
    }

    /// `N_t`: exceedances of `t` counted so far, including those no longer kept.
    pub fn total_peaks(&self) -> u64 {
        self.n_peaks
    }

    /// Exceedances currently kept for the fit (at most `max_peaks`).
    pub fn retained_peaks(&self) -> usize {
        self.peaks.len()
    }
}

/// DSPOT: SPOT on the residual `X_i − M_i`, where `M_i` is the mean of the last `d`
/// normal or peak records (the paper's DSPOT algorithm). Anomalies do not enter the window,
/// so an outlier does not drag the local level.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "DspotState")]
pub struct Dspot {
    spot: Spot,
    depth: usize,
    /// The last `depth` non-anomalous raw records, oldest first.
    window: VecDeque<f64>,
    /// Running sum of `window`, recomputed exactly every `depth` updates. Persisted, so
    /// that a restored detector continues bit for bit.
    sum: f64,
    /// Window updates since `sum` was last recomputed.
    since_resum: usize,
}

#[derive(serde::Deserialize)]
struct DspotState {
    spot: Spot,
    depth: usize,
    window: VecDeque<f64>,
    sum: f64,
    since_resum: usize,
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
        let exact: f64 = s.window.iter().sum();
        let scale: f64 = s.window.iter().map(|x| x.abs()).sum();
        if !s.sum.is_finite() || (s.sum - exact).abs() > 1e-9 * (1.0 + scale) {
            return Err(SpotError::InvalidState(
                "window sum does not match the window",
            ));
        }
        Ok(Self {
            spot: s.spot,
            depth: s.depth,
            window: s.window,
            sum: s.sum,
            since_resum: s.since_resum,
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

    /// Paper mode on i.i.d. Exp(1): the alarm rate stays within a factor 3 of q over
    /// 3·10⁴ records (it creeps up because anomalies are not learned).
    #[test]
    fn streaming_false_alarm_rate_paper_mode() {
        let data = exp_samples(2, 35_000);
        let q = 1e-3;
        let mut spot = Spot::fit(&data[..5_000], q, 0.98).expect("fit");
        let alarms = data[5_000..]
            .iter()
            .filter(|&&x| spot.step(x).is_anomaly())
            .count();
        let expected = q * 30_000.0;
        assert!(
            (expected / 3.0..=expected * 3.0).contains(&(alarms as f64)),
            "{alarms} alarms, {expected} expected"
        );
        assert!(spot.threshold() > spot.init_threshold());
    }

    /// With `learn_from_anomalies` the rate stays at q on a long i.i.d. stream, and
    /// z_q converges to the analytic quantile.
    #[test]
    fn learning_anomalies_keeps_rate_at_q() {
        let data = exp_samples(3, 105_000);
        let q = 1e-3;
        let config = SpotConfig {
            learn_from_anomalies: true,
            ..SpotConfig::new(q, 0.98)
        };
        let mut spot = Spot::fit_with_config(&data[..5_000], config).expect("fit");
        let alarms = data[5_000..]
            .iter()
            .filter(|&&x| spot.step(x).is_anomaly())
            .count();
        // 100 expected; Poisson sd 10.
        assert!((70..=130).contains(&alarms), "{alarms} alarms");
        let rel = (spot.threshold() - EXP_Q3).abs() / EXP_Q3;
        assert!(rel < 0.05, "z_q = {}", spot.threshold());
        // Anomalies were counted in n when learned.
        assert_eq!(spot.observations(), 105_000);
    }

    /// The censored-data MLE: the exact maximiser of the censored likelihood (checked
    /// against a fine grid), and consistent when the top of a GPD sample is censored.
    #[test]
    fn censored_fit_is_the_censored_mle() {
        let mut rng = SplitMix(14);
        let (gamma, sigma) = (0.15, 2.0);
        let raw: Vec<f64> = (0..4_000).map(|_| rng.gpd(gamma, sigma)).collect();
        // Censor everything above the 90 % point at that point.
        let cut = sigma / gamma * (0.1_f64.powf(-gamma) - 1.0);
        let observed: Vec<f64> = raw.iter().copied().filter(|&y| y <= cut).collect();
        let censored: Vec<f64> = raw.iter().filter(|&&y| y > cut).map(|_| cut).collect();
        let fit = fit_gpd_censored(&observed, &censored).expect("fit");
        assert!((fit.gamma - gamma).abs() < 0.1, "{fit:?}");
        assert!((fit.sigma - sigma).abs() < 0.2, "{fit:?}");
        // The naive fit on the truncated sample is badly biased, which is the point.
        let naive = fit_gpd(&observed).expect("fit");
        assert!(naive.gamma < gamma - 0.2, "{naive:?}");
        // No grid point beats the fit.
        let mut grid_best = f64::NEG_INFINITY;
        for i in -40..=40 {
            for j in -40..=40 {
                let g = fit.gamma + f64::from(i) * 0.0025;
                let s = fit.sigma * (1.0 + f64::from(j) * 0.0025);
                grid_best = grid_best.max(gpd_log_likelihood_censored(&observed, &censored, g, s));
            }
        }
        assert!(
            grid_best <= fit.log_likelihood + 1e-9,
            "{grid_best} > {fit:?}"
        );
        // Without censored values it is exactly Grimshaw's fit.
        assert_eq!(fit_gpd_censored(&observed, &[]), fit_gpd(&observed));
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
        assert!(spot.threshold() <= z); // n grew, N_t did not: t is exceeded less often.

        assert_eq!(spot.step(f64::NAN), SpotVerdict::Skipped);
        assert_eq!(spot.step(f64::INFINITY), SpotVerdict::Skipped);
    }

    #[test]
    fn dspot_follows_linear_drift() {
        // The level rises by 60 over the series; Exp(1) noise on top.
        let mut rng = SplitMix(9);
        let data: Vec<f64> = (0..30_000).map(|i| 0.002 * i as f64 + rng.exp()).collect();
        let q = 1e-3;
        let (calib, stream) = data.split_at(5_000);
        let expected = q * stream.len() as f64; // 25 false alarms
        for learn in [false, true] {
            let config = SpotConfig {
                learn_from_anomalies: learn,
                ..SpotConfig::new(q, 0.98)
            };
            let mut dspot = Dspot::fit_with_config(calib, 20, config).expect("fit");
            let alarms = stream
                .iter()
                .filter(|&&x| dspot.step(x).is_anomaly())
                .count();
            let ratio = alarms as f64 / expected;
            assert!(
                (0.4..=2.5).contains(&ratio),
                "learn={learn}: {alarms} alarms"
            );
            // A spike on top of the drift is still caught.
            assert!(dspot.step(0.002 * 30_000.0 + 50.0).is_anomaly());
            assert!(dspot.threshold() > dspot.mean());
        }

        // Plain SPOT on the same data drowns in alarms as the level leaves its range.
        let mut spot = Spot::fit(calib, q, 0.98).expect("fit");
        let spot_alarms = stream[..5_000]
            .iter()
            .filter(|&&x| spot.step(x).is_anomaly())
            .count();
        assert!(spot_alarms > 50 * 5, "{spot_alarms}");
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
        for learn in [false, true] {
            let config = SpotConfig {
                max_peaks: 50,
                learn_from_anomalies: learn,
                ..SpotConfig::new(1e-3, 0.98)
            };
            let mut spot = Spot::fit_with_config(&data[..5_000], config).expect("fit");
            assert_eq!(spot.retained_peaks(), 50);
            let mut alarms = 0;
            for &x in &data[5_000..] {
                alarms += usize::from(spot.step(x).is_anomaly());
            }
            assert_eq!(spot.retained_peaks(), 50);
            assert!(
                spot.total_peaks() > 400,
                "learn={learn}: {}",
                spot.total_peaks()
            );
            if learn {
                // A usable threshold from the 50 most recent exceedances.
                let rel = (spot.threshold() - EXP_Q3).abs() / EXP_Q3;
                assert!(rel < 0.3, "z_q = {}", spot.threshold());
                assert!(alarms < 35 * 3, "{alarms}");
            }
        }
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
        // serde_json without its `float_roundtrip` feature may move the last bit of a
        // float on the way back (with it, the round trip is exact and `a == b`), so
        // compare with a tolerance.
        let near = |x: f64, y: f64| (x - y).abs() <= 1e-12 * x.abs().max(1.0);
        assert!(near(a.threshold(), b.threshold()));
        assert_eq!(a.spot().total_peaks(), b.spot().total_peaks());
        for &x in &data[4_500..] {
            assert_eq!(a.step(x), b.step(x));
        }
        assert!(near(a.threshold(), b.threshold()));
        assert!(near(a.mean(), b.mean()));

        // Through `serde_json::Value` (no float text) the state is restored exactly and
        // the restored detector continues bit for bit.
        let value = serde_json::to_value(&a).expect("serialise");
        let mut c: Dspot = serde_json::from_value(value).expect("deserialise");
        assert_eq!(a, c);
        for &x in &data[..1_000] {
            assert_eq!(a.step(x), c.step(x));
        }
        assert_eq!(a, c);

        let spot = Spot::fit(&data, 1e-3, 0.98).expect("fit");
        let back: Spot = serde_json::from_value(serde_json::to_value(&spot).expect("serialise"))
            .expect("deserialise");
        assert_eq!(spot, back);
        let json = serde_json::to_string(&spot).expect("serialise");
        let back: Spot = serde_json::from_str(&json).expect("deserialise");
        assert!(near(spot.threshold(), back.threshold()));
        assert_eq!(spot.retained_peaks(), back.retained_peaks());
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
        // The paper's formula for γ ≠ 0.
        let z = quantile_threshold(1.0, 0.3, 2.0, 1e-3, 1000, 20);
        let want = 1.0 + 2.0 / 0.3 * (0.05_f64.powf(-0.3) - 1.0);
        assert!((z - want).abs() < 1e-12);
    }
}
