//! The feature scaler: per feature (x - center) / scale, fitted on the training records.
//! `standard` centres on the mean and scales by the standard deviation; `robust` centres
//! on the median and scales by the interquartile range (divided by 1.349, so it equals
//! the std on Gaussian data). Outliers among the training records pull the mean and
//! inflate the std, which shrinks exactly the deviations a detector has to see; the
//! median and IQR barely move.

use serde::{Deserialize, Serialize};

use crate::threshold::quantile;

/// How the features are centred and scaled before the network sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScalerKind {
    /// (x - mean) / standard deviation.
    #[default]
    Standard,
    /// (x - median) / (IQR / 1.349): the training data's outliers barely move it.
    Robust,
}

/// Features with a smaller spread than this are treated as constant (scale 1).
const MIN_STD: f64 = 1e-6;
/// IQR / std of a normal distribution: 2 * 0.6744897...
const IQR_PER_STD: f64 = 1.348_979_500_392_163_5;

/// Bundles keep the field names `mean` and `std` of the standard scaler, so every
/// version reads every other version's bundles; for `robust` they hold the median and
/// the scaled IQR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaler {
    #[serde(rename = "mean")]
    pub center: Vec<f32>,
    #[serde(rename = "std")]
    pub scale: Vec<f32>,
}

impl Scaler {
    /// Fits on row-major `rows` of width `dim`.
    pub fn fit(kind: ScalerKind, rows: &[f32], dim: usize) -> Self {
        let standard = Self::fit_standard(rows, dim);
        match kind {
            ScalerKind::Standard => standard,
            ScalerKind::Robust => Self::fit_robust(rows, dim, standard),
        }
    }

    /// Mean and std, accumulated in f64.
    fn fit_standard(rows: &[f32], dim: usize) -> Self {
        let n = (rows.len() / dim.max(1)).max(1) as f64;
        let mut sum = vec![0f64; dim];
        let mut sq = vec![0f64; dim];
        for row in rows.chunks_exact(dim) {
            for (j, &v) in row.iter().enumerate() {
                sum[j] += v as f64;
                sq[j] += (v as f64) * (v as f64);
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let scale = sq
            .iter()
            .zip(&mean)
            .map(|(s, m)| {
                let sd = (s / n - m * m).max(0.0).sqrt();
                if sd < MIN_STD { 1.0 } else { sd as f32 }
            })
            .collect();
        Scaler {
            center: mean.iter().map(|&m| m as f32).collect(),
            scale,
        }
    }

    /// Median and IQR / 1.349. A feature whose IQR is 0 (mostly one value, such as a
    /// rare flag) keeps the std as its scale, so its rare values stay finite.
    fn fit_robust(rows: &[f32], dim: usize, standard: Scaler) -> Self {
        let mut column = Vec::with_capacity(rows.len() / dim.max(1));
        let mut out = standard;
        for j in 0..dim {
            column.clear();
            column.extend(rows.iter().skip(j).step_by(dim).copied());
            let iqr = (quantile(&column, 0.75) - quantile(&column, 0.25)) as f64 / IQR_PER_STD;
            out.center[j] = quantile(&column, 0.5);
            if iqr >= MIN_STD {
                out.scale[j] = iqr as f32;
            }
        }
        out
    }

    pub fn dim(&self) -> usize {
        self.center.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_fits_mean_and_std_and_guards_constants() {
        let s = Scaler::fit(ScalerKind::Standard, &[1.0, 5.0, 3.0, 5.0], 2);
        assert_eq!(s.center, vec![2.0, 5.0]);
        assert_eq!(s.scale, vec![1.0, 1.0]);
        let s = Scaler::fit(ScalerKind::Standard, &[0.0, 0.0, 4.0, 0.0], 2);
        assert_eq!(s.scale[0], 2.0);
        assert_eq!(s.scale[1], 1.0, "a constant feature keeps std 1");
    }

    #[test]
    fn robust_ignores_an_outlier_that_moves_the_standard_scaler() {
        // Column 0: 1..=9 and one outlier at 1000. Column 1: a flag set once (IQR 0).
        // Column 2: constant.
        let mut rows = Vec::new();
        for i in 1..=9 {
            rows.extend([i as f32, 0.0, 7.0]);
        }
        rows.extend([1000.0, 1.0, 7.0]);
        let std = Scaler::fit(ScalerKind::Standard, &rows, 3);
        let rob = Scaler::fit(ScalerKind::Robust, &rows, 3);
        // numpy: median 5.5, percentiles 25/75 (linear) 3.25 and 7.75.
        assert_eq!(rob.center[0], 5.5);
        assert!((rob.scale[0] - (4.5 / IQR_PER_STD) as f32).abs() < 1e-6);
        assert!(std.center[0] > 100.0 && std.scale[0] > 290.0);
        // The outlier sits about 300 robust units out, but only 3 standard ones.
        let z = |s: &Scaler| (1000.0 - s.center[0]) / s.scale[0];
        assert!(z(&rob) > 290.0 && z(&std) < 3.1, "{} {}", z(&rob), z(&std));
        assert_eq!(rob.center[1], 0.0);
        assert_eq!(rob.scale[1], std.scale[1], "IQR 0 falls back to the std");
        assert!((rob.scale[1] - 0.3).abs() < 1e-6);
        assert_eq!(
            (rob.center[2], rob.scale[2]),
            (7.0, 1.0),
            "constant keeps scale 1"
        );
    }
}
