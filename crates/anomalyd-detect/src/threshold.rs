//! Thresholds calibrated on training scores: a fixed quantile, or SPOT/DSPOT extreme-value
//! thresholds that keep adapting to the scores they see (see [`crate::spot`]).

use serde::{Deserialize, Serialize};

use crate::likelihood::LikelihoodParams;
use crate::spot::{Dspot, Spot, SpotConfig, SpotError};

/// How a threshold is chosen: resolved from the configuration, saved in the model bundle.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ThresholdSpec {
    Quantile {
        quantile: f64,
    },
    Spot {
        risk: f64,
        init_level: f64,
    },
    Dspot {
        risk: f64,
        init_level: f64,
        depth: usize,
    },
    /// Per key, the anomaly likelihood of the score stream decides (see
    /// [`crate::likelihood`]); the `quantile` threshold only scales `normalized`.
    Likelihood {
        quantile: f64,
        params: LikelihoodParams,
        max_keys: usize,
    },
}

impl ThresholdSpec {
    /// What decides alerts, in a line (`check-config` shows what `auto` resolved to).
    pub fn summary(&self) -> String {
        match self {
            ThresholdSpec::Quantile { quantile } => format!("quantile {quantile}"),
            ThresholdSpec::Spot { risk, .. } => format!("spot, risk {risk}"),
            ThresholdSpec::Dspot { risk, depth, .. } => {
                format!("dspot, risk {risk}, depth {depth}")
            }
            ThresholdSpec::Likelihood { params, .. } => match params.discord {
                Some(d) => format!(
                    "likelihood fed window discords (memory {}, segment {}, refractory {})",
                    d.memory, d.segment, params.refractory
                ),
                None => format!(
                    "likelihood fed the model's score (refractory {})",
                    params.refractory
                ),
            },
        }
    }
}

/// The q-quantile of `scores` with linear interpolation between order statistics
/// (NumPy's default method). Returns NaN for no scores.
pub fn quantile(scores: &[f32], q: f64) -> f32 {
    if scores.is_empty() {
        return f32::NAN;
    }
    let mut s: Vec<f32> = scores.to_vec();
    s.sort_unstable_by(f32::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = (pos - lo as f64) as f32;
    s[lo] + (s[hi] - s[lo]) * frac
}

/// SPOT settings: anomalies are fed back as censored exceedances, which keeps the
/// false-alarm rate at `risk` on long streams (the paper's variant drifts to 2-4x `risk`
/// over 10^5 records; measured in `spot`'s tests).
fn spot_config(risk: f64, init_level: f64) -> SpotConfig {
    SpotConfig {
        learn_from_anomalies: true,
        ..SpotConfig::new(risk, init_level)
    }
}

/// A threshold and its state; serialised into the model bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Threshold {
    Fixed { value: f32 },
    Spot { spot: Box<Spot> },
    Dspot { dspot: Box<Dspot> },
}

impl Threshold {
    /// Fits the threshold on calibration scores.
    pub fn calibrate(spec: ThresholdSpec, scores: &[f32]) -> Result<Self, SpotError> {
        let calib: Vec<f64> = scores.iter().map(|&s| s as f64).collect();
        Ok(match spec {
            ThresholdSpec::Quantile { quantile: q }
            | ThresholdSpec::Likelihood { quantile: q, .. } => Threshold::Fixed {
                value: quantile(scores, q),
            },
            ThresholdSpec::Spot { risk, init_level } => Threshold::Spot {
                spot: Box::new(Spot::fit_with_config(
                    &calib,
                    spot_config(risk, init_level),
                )?),
            },
            ThresholdSpec::Dspot {
                risk,
                init_level,
                depth,
            } => Threshold::Dspot {
                dspot: Box::new(Dspot::fit_with_config(
                    &calib,
                    depth,
                    spot_config(risk, init_level),
                )?),
            },
        })
    }

    /// The threshold a record would be compared with now.
    pub fn current(&self) -> f32 {
        match self {
            Threshold::Fixed { value } => *value,
            Threshold::Spot { spot } => spot.threshold() as f32,
            Threshold::Dspot { dspot } => dspot.threshold() as f32,
        }
    }

    /// Judges one score, in stream order: returns the threshold it was compared with and
    /// whether it is an anomaly. SPOT thresholds then adapt to the score.
    pub fn judge(&mut self, score: f32) -> (f32, bool) {
        let t = self.current();
        match self {
            Threshold::Fixed { value } => (*value, score > *value),
            Threshold::Spot { spot } => (t, spot.step(score as f64).is_anomaly()),
            Threshold::Dspot { dspot } => (t, dspot.step(score as f64).is_anomaly()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_like_numpy() {
        let v: Vec<f32> = (1..=5).map(|x| x as f32).collect();
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 5.0);
        assert!((quantile(&v, 0.9) - 4.6).abs() < 1e-6);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn fixed_threshold_judges_against_the_quantile() {
        let scores: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let mut t = Threshold::calibrate(ThresholdSpec::Quantile { quantile: 0.9 }, &scores)
            .expect("calibrates");
        assert!((t.current() - 89.1).abs() < 1e-4);
        assert_eq!(t.judge(95.0), (t.current(), true));
        assert!(!t.judge(10.0).1);
    }

    #[test]
    fn spot_threshold_lies_in_the_tail_and_round_trips() {
        // Deterministic exponential-ish calibration scores.
        let scores: Vec<f32> = (1..5000).map(|i| -((i as f32 / 5000.0).ln())).collect();
        let mut t = Threshold::calibrate(
            ThresholdSpec::Spot {
                risk: 1e-3,
                init_level: 0.95,
            },
            &scores,
        )
        .expect("calibrates");
        let z = t.current();
        assert!(
            z > quantile(&scores, 0.99),
            "threshold {z} beyond the 99th percentile"
        );
        let json = serde_json::to_string(&t).expect("serialises");
        let back: Threshold = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, t);
        assert!(t.judge(z * 3.0).1, "a far outlier is an anomaly");
    }
}
