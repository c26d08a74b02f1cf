//! The promotion gate. A candidate trained on the recent normal window is compared with the
//! serving model on held-out recent normal records (the newest part of the window, which
//! the candidate did not train on):
//! - `worse_on_holdout`: its false-alarm rate there exceeds the serving model's by more
//!   than `retrain.tolerance`;
//! - `threshold_inflated`: its threshold exceeds the serving one by more than
//!   `retrain.max_threshold_ratio` (anomalies that slipped into the window stretch the
//!   score distribution, and with it the threshold);
//! - `not_finite`: its threshold or scores are not finite numbers.

use crate::config::RetrainPolicy;

/// How a model fares on the held-out normal records.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HoldoutStats {
    pub false_alarm_rate: f64,
    pub threshold: f64,
}

impl HoldoutStats {
    pub fn of(scores: &[f32], threshold: f32) -> Self {
        // A NaN score counts as an alarm.
        let alarms = scores
            .iter()
            .filter(|&&s| s > threshold || s.is_nan())
            .count();
        HoldoutStats {
            false_alarm_rate: alarms as f64 / scores.len().max(1) as f64,
            threshold: threshold as f64,
        }
    }
}

/// Promotes (`Ok`) or names the reason for rejecting.
pub fn decide(
    policy: &RetrainPolicy,
    serving: HoldoutStats,
    candidate: HoldoutStats,
) -> Result<(), &'static str> {
    if !candidate.threshold.is_finite() {
        return Err("not_finite");
    }
    if candidate.false_alarm_rate > serving.false_alarm_rate + policy.tolerance {
        return Err("worse_on_holdout");
    }
    if serving.threshold > 0.0
        && candidate.threshold > serving.threshold * policy.max_threshold_ratio
    {
        return Err("threshold_inflated");
    }
    Ok(())
}

/// Rejection reasons, the bounded label of `anomalyd_promotion_rejections_total`.
pub const REASONS: [&str; 6] = [
    "worse_on_holdout",
    "threshold_inflated",
    "not_finite",
    "too_few_records",
    "training_failed",
    "save_failed",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetrainPolicy {
        crate::config::load(None).expect("defaults").retrain
    }

    #[test]
    fn verdicts() {
        let p = policy();
        let s = HoldoutStats {
            false_alarm_rate: 0.01,
            threshold: 1.0,
        };
        let ok = HoldoutStats {
            false_alarm_rate: 0.015,
            threshold: 1.2,
        };
        assert_eq!(decide(&p, s, ok), Ok(()));
        let worse = HoldoutStats {
            false_alarm_rate: 0.05,
            threshold: 1.0,
        };
        assert_eq!(decide(&p, s, worse), Err("worse_on_holdout"));
        let inflated = HoldoutStats {
            false_alarm_rate: 0.0,
            threshold: 2.0,
        };
        assert_eq!(decide(&p, s, inflated), Err("threshold_inflated"));
        let nan = HoldoutStats {
            false_alarm_rate: 0.0,
            threshold: f64::NAN,
        };
        assert_eq!(decide(&p, s, nan), Err("not_finite"));
    }
}
