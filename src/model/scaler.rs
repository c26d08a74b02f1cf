//! Standard scaler: per feature (x - mean) / std, fitted on the training records.

use serde::{Deserialize, Serialize};

/// Features with a smaller spread than this are treated as constant (std 1).
const MIN_STD: f64 = 1e-6;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StandardScaler {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl StandardScaler {
    /// Fits on row-major `rows` of width `dim`; accumulates in f64.
    pub fn fit(rows: &[f32], dim: usize) -> Self {
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
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(s, m)| {
                let var = (s / n - m * m).max(0.0);
                let sd = var.sqrt();
                if sd < MIN_STD { 1.0 } else { sd as f32 }
            })
            .collect();
        StandardScaler {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std,
        }
    }

    pub fn dim(&self) -> usize {
        self.mean.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_mean_and_std_and_guards_constants() {
        let s = StandardScaler::fit(&[1.0, 5.0, 3.0, 5.0], 2);
        assert_eq!(s.mean, vec![2.0, 5.0]);
        assert_eq!(s.std, vec![1.0, 1.0]);
        let s = StandardScaler::fit(&[0.0, 0.0, 4.0, 0.0], 2);
        assert_eq!(s.std[0], 2.0);
        assert_eq!(s.std[1], 1.0, "a constant feature keeps std 1");
    }
}
