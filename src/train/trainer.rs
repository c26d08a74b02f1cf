//! The trainer thread: fits a candidate on a snapshot of the normal window, runs the
//! promotion gate against the serving model's held-out stats, saves a promoted candidate
//! to the store, and hands the outcome back to the scorer. One job at a time: the scorer
//! sends a job only when the previous outcome has come back, so runs never overlap.

use std::path::PathBuf;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use tch::Device;

use super::gate::{self, HoldoutStats};
use crate::config::{ModelSpec, RetrainPolicy, ThresholdSpec};
use crate::model::{Detector, Lineage, store};

pub struct Job {
    /// Training rows, then held-out rows (row-major).
    pub train: Vec<f32>,
    pub holdout: Vec<f32>,
    pub serving: HoldoutStats,
    pub parent: u64,
    pub version: u64,
    pub window: Option<(i64, i64)>,
}

pub enum Outcome {
    Promoted {
        detector: Box<Detector>,
        seconds: f64,
    },
    Rejected {
        reason: &'static str,
        version: u64,
        seconds: f64,
    },
}

pub struct TrainerSettings {
    pub features: Vec<String>,
    pub model: ModelSpec,
    pub threshold: ThresholdSpec,
    pub policy: RetrainPolicy,
    pub device: Device,
    pub store_dir: Option<PathBuf>,
    pub keep: usize,
}

/// Runs one job to its outcome.
pub fn run_job(s: &TrainerSettings, job: Job) -> Outcome {
    let started = Instant::now();
    let reject = |reason, started: Instant| Outcome::Rejected {
        reason,
        version: job.version,
        seconds: started.elapsed().as_secs_f64(),
    };
    let mut det = match Detector::train(
        &job.train,
        s.features.clone(),
        &s.model,
        s.threshold,
        job.version,
        s.device,
    ) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "retraining failed");
            return reject("training_failed", started);
        }
    };
    let scores = match det.score(&job.holdout) {
        Ok(o) => o.scores,
        Err(e) => {
            tracing::warn!(error = %e, "scoring the holdout failed");
            return reject("training_failed", started);
        }
    };
    let candidate = HoldoutStats::of(&scores, det.threshold());
    let verdict = gate::decide(&s.policy, job.serving, candidate);
    tracing::info!(
        version = job.version,
        parent = job.parent,
        records = job.train.len() / s.features.len().max(1),
        serving_false_alarms = job.serving.false_alarm_rate,
        candidate_false_alarms = candidate.false_alarm_rate,
        serving_threshold = job.serving.threshold,
        candidate_threshold = candidate.threshold,
        verdict = verdict.err().unwrap_or("promoted"),
        "retraining finished"
    );
    if let Err(reason) = verdict {
        return reject(reason, started);
    }
    det.meta.lineage = Lineage {
        parent: Some(job.parent),
        promotion: format!(
            "promoted: holdout false alarms {:.4} (serving {:.4}), threshold {:.4} (serving {:.4})",
            candidate.false_alarm_rate,
            job.serving.false_alarm_rate,
            candidate.threshold,
            job.serving.threshold
        ),
        window: job.window,
    };
    if let Some(dir) = &s.store_dir {
        let saved = store::save(dir, &det).and_then(|_| store::prune(dir, s.keep));
        if let Err(e) = saved {
            tracing::warn!(error = %e, "saving the promoted model failed");
        }
    }
    Outcome::Promoted {
        detector: Box::new(det),
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// The thread body: jobs in, outcomes out, until the scorer hangs up.
pub fn run(settings: TrainerSettings, jobs: Receiver<Job>, outcomes: Sender<Outcome>) {
    for job in jobs {
        if outcomes.send(run_job(&settings, job)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelKind;
    use crate::model::detector::tests::{features, normal_rows, spec_for, train_kind};
    use crate::model::threshold::Threshold;
    use crate::train::window::NormalWindow;

    /// Streams `rows` through the serving model into a normal window, as the scorer does.
    fn window_of(serving: &Detector, rows: &[f32], margin: usize) -> NormalWindow {
        let scores = serving.score(rows).expect("score").scores;
        let mut threshold: Threshold = serving.meta.threshold.clone();
        let mut w = NormalWindow::new(8, 10_000, margin);
        for (i, &s) in scores.iter().enumerate() {
            let (_, anomaly) = threshold.judge(s);
            w.observe(&rows[i * 8..(i + 1) * 8], i as i64, anomaly);
        }
        w
    }

    fn job(serving: &Detector, w: &NormalWindow) -> Job {
        let (rows, span) = w.snapshot();
        let n = rows.len() / 8;
        let held = n / 5;
        let (train, holdout) = rows.split_at((n - held) * 8);
        Job {
            train: train.to_vec(),
            holdout: holdout.to_vec(),
            serving: HoldoutStats::of(
                &serving.score(holdout).expect("s").scores,
                serving.threshold(),
            ),
            parent: 1,
            version: 2,
            window: span,
        }
    }

    fn settings() -> TrainerSettings {
        TrainerSettings {
            features: features(),
            model: spec_for(ModelKind::Dense),
            threshold: ThresholdSpec::Quantile { quantile: 0.99 },
            policy: crate::config::load(None).expect("defaults").retrain,
            device: Device::Cpu,
            store_dir: None,
            keep: 10,
        }
    }

    #[test]
    fn a_poisoned_window_barely_moves_the_threshold_or_is_rejected() {
        let serving = train_kind(ModelKind::Dense);
        let clean = normal_rows(3000, 50_000);
        let mut poisoned = clean.clone();
        for (i, row) in poisoned.chunks_exact_mut(8).enumerate() {
            if i % 20 == 7 {
                row[i % 8] += 3.0; // 5% anomalies
            }
        }
        let s = settings();
        let threshold_of = |o: Outcome| match o {
            Outcome::Promoted { detector, .. } => Some(detector.threshold()),
            Outcome::Rejected { reason, .. } => {
                println!("rejected: {reason}");
                None
            }
        };
        let t_clean = threshold_of(run_job(&s, job(&serving, &window_of(&serving, &clean, 2))))
            .expect("a clean window is promoted");
        match threshold_of(run_job(
            &s,
            job(&serving, &window_of(&serving, &poisoned, 2)),
        )) {
            None => {}
            Some(t) => {
                let moved = (t - t_clean).abs() / t_clean;
                println!("threshold clean {t_clean}, poisoned {t}: moved {moved:.3}");
                assert!(
                    moved < 0.10,
                    "the poisoned window moved the threshold by {moved}"
                );
            }
        }
    }

    #[test]
    fn without_the_normal_filter_poisoning_would_show() {
        // The control for the test above: the same anomalies fed straight into training
        // inflate the threshold, so the filter is what protects it.
        let serving = train_kind(ModelKind::Dense);
        let mut poisoned = normal_rows(3000, 50_000);
        for (i, row) in poisoned.chunks_exact_mut(8).enumerate() {
            if i % 20 == 7 {
                row[i % 8] += 3.0;
            }
        }
        let clean = normal_rows(3000, 50_000);
        let spec = spec_for(ModelKind::Dense);
        let q = ThresholdSpec::Quantile { quantile: 0.99 };
        let t_clean = Detector::train(&clean, features(), &spec, q, 2, Device::Cpu)
            .expect("t")
            .threshold();
        let t_raw = Detector::train(&poisoned, features(), &spec, q, 2, Device::Cpu)
            .expect("t")
            .threshold();
        println!("threshold clean {t_clean}, unfiltered poisoned {t_raw}");
        assert!((t_raw - t_clean).abs() / t_clean >= 0.10);
        let _ = serving;
    }
}
