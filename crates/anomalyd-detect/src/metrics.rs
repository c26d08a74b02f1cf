//! Detection quality metrics over per-record anomaly scores and binary labels.
//!
//! All functions take `scores` (higher = more anomalous) and `labels` (`true` = anomaly)
//! of equal length, and treat the score as a ranking: only the order of the scores
//! matters, and records with equal scores are always handled as a group (a threshold can
//! never separate them).
//!
//! - [`auroc`]: area under the ROC curve, computed exactly as the Mann–Whitney U
//!   statistic with average ranks for ties (Hanley & McNeil 1982, "The meaning and use
//!   of the area under a receiver operating characteristic (ROC) curve", Radiology
//!   143(1)). Equal to scikit-learn's `roc_auc_score`.
//! - [`auprc`]: area under the precision–recall curve as *average precision*, with the
//!   step-wise (non-interpolated) definition of scikit-learn's
//!   `average_precision_score`: `AP = Σ_n (R_n − R_{n−1}) · P_n` over the distinct score
//!   thresholds in decreasing order.
//! - [`best_f1`]: the largest F1 over all distinct score thresholds, predicting an anomaly
//!   when `score >= threshold`.
//!
//! Scores may be infinite (they still order), but NaN is rejected because it has no
//! place in a ranking.

use std::cmp::Ordering;

/// Why a metric could not be computed from its inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// `scores` and `labels` must describe the same records.
    #[error("{scores} scores but {labels} labels")]
    LengthMismatch {
        /// Number of scores given.
        scores: usize,
        /// Number of labels given.
        labels: usize,
    },
    /// A score was NaN, which cannot be ranked.
    #[error("score at index {index} is NaN")]
    NanScore {
        /// Index of the first NaN score.
        index: usize,
    },
}

/// The F1-optimal operating point found by [`best_f1`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BestF1 {
    /// `2·P·R / (P + R)` at `threshold` (0 when nothing true is detected).
    pub f1: f64,
    /// Predict "anomaly" when `score >= threshold`; one of the input scores.
    pub threshold: f64,
    /// `TP / (TP + FP)` at `threshold`.
    pub precision: f64,
    /// `TP / (TP + FN)` at `threshold`.
    pub recall: f64,
}

/// Cumulative confusion counts after admitting one more group of tied scores, in
/// decreasing score order.
#[derive(Debug, Clone, Copy)]
struct ThresholdStep {
    /// The tied score of this group; the operating point is `score >= threshold`.
    threshold: f64,
    /// True positives with `score >= threshold`.
    tp: usize,
    /// False positives with `score >= threshold`.
    fp: usize,
}

fn check(scores: &[f64], labels: &[bool]) -> Result<(), MetricsError> {
    if scores.len() != labels.len() {
        return Err(MetricsError::LengthMismatch {
            scores: scores.len(),
            labels: labels.len(),
        });
    }
    if let Some(index) = scores.iter().position(|s| s.is_nan()) {
        return Err(MetricsError::NanScore { index });
    }
    Ok(())
}

/// Record indices sorted by score, highest first. Inputs are NaN-free (checked), so
/// `total_cmp` is the numeric order apart from `-0.0 < +0.0`, which [`f64::eq`]-based
/// grouping below undoes.
fn order_desc(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx
}

/// One [`ThresholdStep`] per distinct score, from the highest score down.
fn threshold_steps(scores: &[f64], labels: &[bool]) -> Vec<ThresholdStep> {
    let order = order_desc(scores);
    let mut steps: Vec<ThresholdStep> = Vec::new();
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = 0;
    while i < order.len() {
        let threshold = scores[order[i]];
        while i < order.len() && scores[order[i]] == threshold {
            if labels[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        steps.push(ThresholdStep { threshold, tp, fp });
    }
    steps
}

/// Area under the ROC curve.
///
/// Computed as the Mann–Whitney statistic: rank all scores ascending, giving every
/// member of a group of ties the average of the ranks the group spans; with `R₊` the
/// rank sum of the `n₊` anomalies and `n₋` normals,
///
/// ```text
/// AUROC = (R₊ − n₊(n₊+1)/2) / (n₊ · n₋)
/// ```
///
/// which is the probability that a random anomaly outscores a random normal record,
/// counting ties as ½ (Hanley & McNeil 1982). Matches scikit-learn's `roc_auc_score`,
/// whose trapezoidal ROC area equals this exactly.
///
/// Returns `Ok(None)` when only one class is present (the ROC curve is undefined).
///
/// # Errors
/// [`MetricsError`] if the lengths differ or a score is NaN.
pub fn auroc(scores: &[f64], labels: &[bool]) -> Result<Option<f64>, MetricsError> {
    check(scores, labels)?;
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Ok(None);
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of (1-based, tie-averaged) ranks of the positives.
    let mut rank_sum_pos = 0.0_f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        let mut pos_in_group = 0usize;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            if labels[order[j]] {
                pos_in_group += 1;
            }
            j += 1;
        }
        // The group occupies ranks i+1 ..= j; their average is (i + 1 + j) / 2.
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum_pos += avg_rank * pos_in_group as f64;
        i = j;
    }
    let n_pos_f = n_pos as f64;
    let u = rank_sum_pos - n_pos_f * (n_pos_f + 1.0) / 2.0;
    Ok(Some(u / (n_pos_f * n_neg as f64)))
}

/// Average precision, the step-wise area under the precision–recall curve.
///
/// With the distinct scores taken as thresholds in decreasing order, and `P_n`, `R_n`
/// the precision and recall of the rule `score >= threshold_n`,
///
/// ```text
/// AP = Σ_n (R_n − R_{n−1}) · P_n,   R_0 = 0
/// ```
///
/// This is scikit-learn's `average_precision_score` (no interpolation; tied scores
/// enter together, so a tie between an anomaly and a normal record is counted at their
/// joint precision). A detector that ranks every anomaly first scores 1; a random
/// ranking scores about the anomaly prevalence.
///
/// Returns `Ok(None)` when there are no anomalies (recall is undefined). With no
/// normal records every precision is 1 and so is the result.
///
/// # Errors
/// [`MetricsError`] if the lengths differ or a score is NaN.
pub fn auprc(scores: &[f64], labels: &[bool]) -> Result<Option<f64>, MetricsError> {
    check(scores, labels)?;
    let n_pos = labels.iter().filter(|&&l| l).count();
    if n_pos == 0 {
        return Ok(None);
    }
    let total = n_pos as f64;
    let mut ap = 0.0;
    let mut prev_tp = 0usize;
    for step in threshold_steps(scores, labels) {
        if step.tp > prev_tp {
            let precision = step.tp as f64 / (step.tp + step.fp) as f64;
            ap += (step.tp - prev_tp) as f64 / total * precision;
            prev_tp = step.tp;
        }
    }
    Ok(Some(ap))
}

/// The best F1 over every distinct score used as a threshold (`score >= threshold`
/// predicts an anomaly).
///
/// At each threshold, `P = TP/(TP+FP)`, `R = TP/(TP+FN)` and `F1 = 2PR/(P+R)`, the
/// harmonic mean of precision and recall (van Rijsbergen 1979); F1 is 0 when
/// `TP = 0`. Ties in F1 go to the highest threshold (the fewest alerts). The threshold
/// is chosen on the same data it is reported on, so the result is an optimistic,
/// oracle-threshold figure: use it to compare detectors, not to predict production
/// precision.
///
/// Returns `Ok(None)` when there are no records or no anomalies.
///
/// # Errors
/// [`MetricsError`] if the lengths differ or a score is NaN.
pub fn best_f1(scores: &[f64], labels: &[bool]) -> Result<Option<BestF1>, MetricsError> {
    check(scores, labels)?;
    let n_pos = labels.iter().filter(|&&l| l).count();
    if n_pos == 0 {
        return Ok(None);
    }
    let mut best: Option<BestF1> = None;
    for step in threshold_steps(scores, labels) {
        let precision = step.tp as f64 / (step.tp + step.fp) as f64;
        let recall = step.tp as f64 / n_pos as f64;
        let f1 = if step.tp == 0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        let better = match &best {
            None => true,
            Some(b) => f1.partial_cmp(&b.f1) == Some(Ordering::Greater),
        };
        if better {
            best = Some(BestF1 {
                f1,
                threshold: step.threshold,
                precision,
                recall,
            });
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPS: f64 = 1e-12;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < EPS
    }

    fn get(v: Result<Option<f64>, MetricsError>) -> f64 {
        v.expect("valid input").expect("metric defined")
    }

    /// The example from the brief; scikit-learn 1.x gives roc_auc_score = 0.75 and
    /// average_precision_score = 0.8333…
    #[test]
    fn brief_example_matches_sklearn() {
        let s = [0.1, 0.4, 0.35, 0.8];
        let l = [false, false, true, true];
        assert!(close(get(auroc(&s, &l)), 0.75));
        assert!(close(get(auprc(&s, &l)), 5.0 / 6.0));
        // Thresholds 0.8 → P=1,R=.5,F1=2/3; 0.4 → .5,.5,.5; 0.35 → 2/3,1,0.8; 0.1 → .5,1,2/3.
        let b = best_f1(&s, &l).expect("valid").expect("defined");
        assert!(close(b.f1, 0.8));
        assert_eq!(b.threshold, 0.35);
        assert!(close(b.precision, 2.0 / 3.0));
        assert!(close(b.recall, 1.0));
    }

    /// Ties across classes. By hand (and scikit-learn):
    /// labels [0,1,0,1,1], scores [.2,.6,.6,.9,.1]
    /// AUROC = pairs (pos>neg, ties ½) = (1+.5+1+1+0+0)/6 = 3.5/6;
    /// AP: thresholds .9 → (P=1,R=1/3), .6 → (2/3,2/3), .2 → (1/2,2/3), .1 → (3/5,1)
    /// so AP = 1/3·1 + 1/3·2/3 + 0 + 1/3·3/5 = 0.755…
    #[test]
    fn ties_are_grouped() {
        let s = [0.2, 0.6, 0.6, 0.9, 0.1];
        let l = [false, true, false, true, true];
        assert!(close(get(auroc(&s, &l)), 3.5 / 6.0));
        let ap = 1.0 / 3.0 + (1.0 / 3.0) * (2.0 / 3.0) + (1.0 / 3.0) * 0.6;
        assert!(close(get(auprc(&s, &l)), ap));
        // F1 per threshold: .9 → .5, .6 → 2/3, .2 → 4/7, .1 → .75 (P=.6, R=1).
        let b = best_f1(&s, &l).expect("valid").expect("defined");
        assert!(close(b.f1, 0.75));
        assert_eq!(b.threshold, 0.1);
    }

    /// Constant scores: sklearn gives AUROC 0.5 and AP = prevalence.
    #[test]
    fn all_tied_scores() {
        let s = [0.5; 4];
        let l = [false, true, false, true];
        assert!(close(get(auroc(&s, &l)), 0.5));
        assert!(close(get(auprc(&s, &l)), 0.5));
        let b = best_f1(&s, &l).expect("valid").expect("defined");
        assert!(close(b.f1, 2.0 / 3.0));
        assert_eq!(b.threshold, 0.5);
    }

    #[test]
    fn perfect_and_inverted_rankings() {
        let s = [0.9, 0.8, 0.3, 0.2, 0.1];
        let l = [true, true, false, false, false];
        assert!(close(get(auroc(&s, &l)), 1.0));
        assert!(close(get(auprc(&s, &l)), 1.0));
        let b = best_f1(&s, &l).expect("valid").expect("defined");
        assert!(close(b.f1, 1.0));
        assert_eq!(b.threshold, 0.8);

        let inv = [false, false, true, true, true];
        assert!(close(get(auroc(&s, &inv)), 0.0));
        // Positives at ranks 3,4,5: AP = 1/3·1/3 + 1/3·2/4 + 1/3·3/5.
        let ap = (1.0 / 3.0 + 2.0 / 4.0 + 3.0 / 5.0) / 3.0;
        assert!(close(get(auprc(&s, &inv)), ap));
    }

    #[test]
    fn single_class_is_undefined() {
        let s = [0.1, 0.2, 0.3];
        assert_eq!(auroc(&s, &[false; 3]), Ok(None));
        assert_eq!(auroc(&s, &[true; 3]), Ok(None));
        assert_eq!(auprc(&s, &[false; 3]), Ok(None));
        assert_eq!(best_f1(&s, &[false; 3]), Ok(None));
        // Only anomalies: every precision is 1.
        assert!(close(get(auprc(&s, &[true; 3])), 1.0));
        assert_eq!(auroc(&[], &[]), Ok(None));
        assert_eq!(auprc(&[], &[]), Ok(None));
        assert_eq!(best_f1(&[], &[]), Ok(None));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            auroc(&[0.1], &[true, false]),
            Err(MetricsError::LengthMismatch {
                scores: 1,
                labels: 2
            })
        );
        assert_eq!(
            auprc(&[0.1, f64::NAN], &[true, false]),
            Err(MetricsError::NanScore { index: 1 })
        );
        assert!(best_f1(&[f64::NAN], &[true]).is_err());
    }

    #[test]
    fn infinite_scores_rank_normally() {
        let s = [f64::INFINITY, 1.0, f64::NEG_INFINITY];
        let l = [true, false, false];
        assert!(close(get(auroc(&s, &l)), 1.0));
        let b = best_f1(&s, &l).expect("valid").expect("defined");
        assert_eq!(b.threshold, f64::INFINITY);
    }

    /// `-0.0` and `0.0` are the same score and must form one tie group.
    #[test]
    fn signed_zeros_tie() {
        let s = [-0.0, 0.0];
        let l = [true, false];
        assert!(close(get(auroc(&s, &l)), 0.5));
        assert!(close(get(auprc(&s, &l)), 0.5));
    }

    /// Tiny deterministic PRNG (splitmix64) for the brute-force comparisons.
    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Against O(n²) definitions on random data with many ties: AUROC as the pair
    /// count, AP and F1 by re-thresholding from scratch at every distinct score.
    #[test]
    fn matches_brute_force_definitions() {
        let mut st = 7u64;
        for case in 0..200 {
            let n = 1 + (splitmix(&mut st) % 40) as usize;
            let levels = 1 + splitmix(&mut st) % 6; // few levels → many ties
            let s: Vec<f64> = (0..n)
                .map(|_| (splitmix(&mut st) % levels) as f64 / 4.0)
                .collect();
            let l: Vec<bool> = (0..n)
                .map(|_| splitmix(&mut st).is_multiple_of(3))
                .collect();
            let n_pos = l.iter().filter(|&&x| x).count();
            let n_neg = n - n_pos;

            let got = auroc(&s, &l).expect("valid");
            if n_pos == 0 || n_neg == 0 {
                assert_eq!(got, None);
            } else {
                let mut wins = 0.0;
                for i in 0..n {
                    for j in 0..n {
                        if l[i] && !l[j] {
                            if s[i] > s[j] {
                                wins += 1.0;
                            } else if s[i] == s[j] {
                                wins += 0.5;
                            }
                        }
                    }
                }
                let want = wins / (n_pos * n_neg) as f64;
                assert!(close(got.expect("defined"), want), "case {case}");
            }

            let mut thresholds = s.clone();
            thresholds.sort_by(|a, b| b.total_cmp(a));
            thresholds.dedup();
            let mut ap = 0.0;
            let mut prev_r = 0.0;
            let mut best = -1.0;
            for &t in &thresholds {
                let tp = (0..n).filter(|&i| l[i] && s[i] >= t).count() as f64;
                let pp = (0..n).filter(|&i| s[i] >= t).count() as f64;
                if n_pos > 0 {
                    let r = tp / n_pos as f64;
                    let p = tp / pp;
                    ap += (r - prev_r) * p;
                    prev_r = r;
                    let f1 = if tp == 0.0 {
                        0.0
                    } else {
                        2.0 * p * r / (p + r)
                    };
                    if f1 > best {
                        best = f1;
                    }
                }
            }
            match auprc(&s, &l).expect("valid") {
                None => assert_eq!(n_pos, 0),
                Some(v) => assert!(close(v, ap), "case {case}: {v} vs {ap}"),
            }
            match best_f1(&s, &l).expect("valid") {
                None => assert_eq!(n_pos, 0),
                Some(b) => assert!(close(b.f1, best), "case {case}"),
            }
        }
    }
}
