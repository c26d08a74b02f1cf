//! Thresholds calibrated on training scores.

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
}
