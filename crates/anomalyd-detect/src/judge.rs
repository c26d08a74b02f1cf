//! The one decision path: a batch of scores (with the rows and keys they came from) in,
//! verdicts out. The daemon's scorer, `anomalyd score` and `anomalyd eval` all judge
//! through [`Judge::judge`]; they differ only in how they configure it (`eval` gives the
//! likelihood a per-series warm-up through [`crate::likelihood::LikelihoodParams`]).
//!
//! A record is an anomaly when its score exceeds the threshold ([`Threshold::judge`]), or,
//! with the anomaly likelihood configured, when its key's likelihood reaches
//! [`ALERT_LEVEL`]. Both keep state in stream order, so a batch is judged record by record.

use crate::likelihood::{ALERT_LEVEL, Keyed};
use crate::threshold::Threshold;

/// A model's score scale: what a score means relative to the model's calibration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreScale {
    /// The typical training score (the model's `center`).
    pub center: f32,
    /// The threshold the model was calibrated with (not the adapting one).
    pub calibrated_threshold: f32,
}

impl ScoreScale {
    /// `(score - center) / (threshold - center)`, or `None` when the span is 0 (every
    /// calibration score equal) or not finite.
    fn calibrated(&self, score: f32, threshold: f32) -> Option<f64> {
        let center = f64::from(self.center);
        let span = f64::from(threshold) - center;
        (span.abs() > f64::from(f32::EPSILON) && span.is_finite())
            .then(|| (f64::from(score) - center) / span)
    }

    /// `(score - center) / (threshold - center)`: 0 for a typical record, 1 at the
    /// threshold (0 when the span is 0).
    pub fn normalize(&self, score: f32, threshold: f32) -> f32 {
        self.calibrated(score, threshold).map_or(0.0, |v| v as f32)
    }

    /// What a key's anomaly likelihood is fed: the score in the model's calibrated units,
    /// `(score - center) / (calibrated threshold - center)`. The likelihood is invariant
    /// to such a map within one model, and across models it keeps a key's history
    /// comparable: when a retrained model with another score scale takes over, the history
    /// of the old model's scores still describes normal. With a zero span (every
    /// calibration score equal) it is the offset score, so a change still shows.
    pub fn likelihood_input(&self, score: f32) -> f64 {
        self.calibrated(score, self.calibrated_threshold)
            .unwrap_or_else(|| f64::from(score) - f64::from(self.center))
    }
}

/// A feature's share of a record's score (its reconstruction error, or its window's
/// discord distance).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contribution {
    pub feature: usize,
    pub share: f32,
}

/// The `k` features with the largest share of `errors`, largest first.
pub fn top_contributions(errors: &[f32], k: usize) -> Vec<Contribution> {
    let total: f32 = errors.iter().sum();
    let mut all: Vec<Contribution> = errors
        .iter()
        .enumerate()
        .map(|(feature, &e)| Contribution {
            feature,
            share: if total > 0.0 { e / total } else { 0.0 },
        })
        .collect();
    all.sort_unstable_by(|a, b| b.share.total_cmp(&a.share));
    all.truncate(k);
    all
}

/// The verdicts on a batch, one entry per record (`likelihood` and `discord` are empty
/// when not configured).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdicts {
    /// The threshold each record was compared with (SPOT thresholds move).
    pub thresholds: Vec<f32>,
    pub anomalies: Vec<bool>,
    /// 0 for a typical score, 1 at the threshold; NaN for an unscored record.
    pub normalized: Vec<f32>,
    /// Each record's anomaly likelihood; NaN for an unscored record.
    pub likelihood: Vec<f64>,
    /// The window discord distance that fed each record's likelihood.
    pub discord: Vec<f64>,
    /// For each anomaly (by index), its top contributing features.
    pub explanations: Vec<(usize, Vec<Contribution>)>,
    /// Records without a finite score: not judged, and never fed to a threshold or
    /// likelihood (the daemon dead-letters them).
    pub unscored: usize,
}

/// The decision state of a stream: the serving model's threshold as it adapts, and the
/// per-key anomaly likelihoods when configured.
#[derive(Debug)]
pub struct Judge {
    threshold: Threshold,
    likelihood: Option<Keyed>,
    top_features: usize,
    value_feature: Option<usize>,
}

impl Judge {
    /// `value_feature`: the feature that holds each record's newest raw value (window
    /// mode without differences), for the likelihood's range check. `top_features`: how
    /// many contributing features explain an anomaly.
    pub fn new(
        threshold: Threshold,
        likelihood: Option<Keyed>,
        top_features: usize,
        value_feature: Option<usize>,
    ) -> Self {
        Judge {
            threshold,
            likelihood,
            top_features,
            value_feature,
        }
    }

    /// A new model's threshold takes over; the likelihoods keep their history.
    pub fn set_threshold(&mut self, threshold: Threshold) {
        self.threshold = threshold;
    }

    pub fn threshold(&self) -> &Threshold {
        &self.threshold
    }

    pub fn likelihood(&self) -> Option<&Keyed> {
        self.likelihood.as_ref()
    }

    /// Likelihood keys forgotten (to stay within `max_keys`) since the last call.
    pub fn take_evictions(&mut self) -> u64 {
        self.likelihood.as_mut().map_or(0, Keyed::take_evictions)
    }

    /// Continues from restored likelihood state.
    pub fn set_likelihood(&mut self, keyed: Keyed) {
        self.likelihood = Some(keyed);
    }

    /// Judges `scores` in order. `feature_errors` and `rows` are row-major with `dim`
    /// values per record (the per-feature score terms, and the feature vectors); `key`
    /// gives record `i`'s key (`None`: the one unkeyed series).
    pub fn judge<'k>(
        &mut self,
        scale: ScoreScale,
        scores: &[f32],
        feature_errors: &[f32],
        rows: &[f32],
        key: impl Fn(usize) -> Option<&'k str>,
    ) -> Verdicts {
        let n = scores.len();
        let dim = rows.len() / n.max(1);
        let mut v = Verdicts {
            thresholds: Vec::with_capacity(n),
            anomalies: Vec::with_capacity(n),
            normalized: Vec::with_capacity(n),
            ..Verdicts::default()
        };
        let fed_discords = self
            .likelihood
            .as_ref()
            .is_some_and(|k| k.discord().is_some());
        for (i, &s) in scores.iter().enumerate() {
            if !s.is_finite() {
                v.unscored += 1;
                v.thresholds.push(self.threshold.current());
                v.anomalies.push(false);
                v.normalized.push(f32::NAN);
                if self.likelihood.is_some() {
                    v.likelihood.push(f64::NAN);
                    if fed_discords {
                        v.discord.push(f64::NAN);
                    }
                }
                continue;
            }
            let (t, mut anomaly) = self.threshold.judge(s);
            let row = &rows[i * dim..(i + 1) * dim];
            if let Some(k) = self.likelihood.as_mut() {
                let value = self.value_feature.map(|f| f64::from(row[f]));
                let l = k.update(key(i), scale.likelihood_input(s), row, value);
                anomaly = l >= ALERT_LEVEL;
                v.likelihood.push(l);
                if let Some(d) = k.discord() {
                    v.discord.push(d);
                }
            }
            v.thresholds.push(t);
            v.anomalies.push(anomaly);
            v.normalized.push(scale.normalize(s, t));
            if anomaly {
                // Fed discords, the likelihood explains its alert by the window positions
                // that differ most from the key's nearest earlier window; else the
                // model's per-feature terms.
                let terms = self
                    .likelihood
                    .as_ref()
                    .and_then(Keyed::discord_terms)
                    .filter(|t| t.len() == dim)
                    .or_else(|| feature_errors.get(i * dim..(i + 1) * dim))
                    .unwrap_or_default();
                v.explanations
                    .push((i, top_contributions(terms, self.top_features)));
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::likelihood::LikelihoodParams;

    const SCALE: ScoreScale = ScoreScale {
        center: 1.0,
        calibrated_threshold: 3.0,
    };

    #[test]
    fn contributions_are_shares_largest_first() {
        let c = top_contributions(&[1.0, 6.0, 3.0], 2);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].feature, 1);
        assert!((c[0].share - 0.6).abs() < 1e-6);
        assert_eq!(c[1].feature, 2);
    }

    #[test]
    fn the_threshold_decides_and_explains_by_the_largest_terms() {
        let mut judge = Judge::new(Threshold::Fixed { value: 3.0 }, None, 1, None);
        let scores = [1.0, 5.0, f32::NAN, 3.0];
        let errors = [1.0, 1.0, 0.0, 4.0, 0.0, 0.0, 1.0, 1.0];
        let rows = [0.0; 8];
        let v = judge.judge(SCALE, &scores, &errors, &rows, |_| None);
        assert_eq!(v.anomalies, [false, true, false, false]);
        assert_eq!(v.thresholds, [3.0; 4]);
        assert_eq!(v.normalized[..2], [0.0, 2.0]);
        assert!(v.normalized[2].is_nan());
        assert_eq!(v.normalized[3], 1.0);
        assert_eq!(v.unscored, 1);
        assert_eq!(v.explanations.len(), 1);
        assert_eq!(v.explanations[0].0, 1);
        assert_eq!(v.explanations[0].1[0].feature, 1);
        assert!(v.likelihood.is_empty());
    }

    #[test]
    fn the_likelihood_decides_per_key_when_configured() {
        let params = LikelihoodParams {
            warmup: 50,
            ..LikelihoodParams::default()
        };
        let keyed = Keyed::new(params, 10);
        // A threshold that would flag everything: the likelihood overrides it.
        let mut judge = Judge::new(Threshold::Fixed { value: -1.0 }, Some(keyed), 1, None);
        let n = 400;
        let mut scores: Vec<f32> = (0..n).map(|i| 1.0 + 0.01 * ((i * 7) % 13) as f32).collect();
        scores[350] = 50.0;
        let rows = vec![0.0; n];
        let keys = ["a", "b"];
        // Two interleaved keys: each sees half of the records.
        let v = judge.judge(SCALE, &scores, &rows, &rows, |i| Some(keys[i % 2]));
        assert_eq!(v.likelihood.len(), n);
        assert!(v.discord.is_empty());
        assert_eq!(judge.likelihood().map(Keyed::keys), Some(2));
        let alerts: Vec<usize> = (0..n).filter(|&i| v.anomalies[i]).collect();
        // The refractory period (100 records) reports only the first red record of a run.
        assert_eq!(alerts, [350], "likelihoods {:?}", &v.likelihood[340..360]);
        assert!(v.likelihood[350] >= ALERT_LEVEL);
        assert!(v.thresholds.iter().all(|&t| t == -1.0));
    }
}
