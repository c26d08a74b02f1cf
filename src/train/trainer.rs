//! The trainer thread: fits a candidate on a snapshot of the normal window, runs the
//! promotion gate against the serving model's held-out stats, saves a promoted candidate
//! to the store, and hands the outcome back to the scorer. One job at a time: the scorer
//! sends a job only when the previous outcome has come back, so runs never overlap.

use std::path::PathBuf;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use tch::Device;
use tokio_util::sync::CancellationToken;

use super::TrainMetrics;
use super::gate::{self, HoldoutStats};
use crate::config::{ModelSpec, RetrainPolicy, ThresholdSpec};
use crate::model::{Detector, Lineage, ModelError, store};

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
    /// The job panicked: the trainer thread carries on with the next job.
    Panicked { version: u64, message: String },
}

/// What fitting a model needs, for the first model and every retraining run alike: the
/// input's features, the model and threshold to fit, the device, and the store that keeps
/// the newest `keep` versions.
#[derive(Debug, Clone)]
pub struct FitSettings {
    pub features: Vec<String>,
    pub model: ModelSpec,
    pub threshold: ThresholdSpec,
    pub device: Device,
    pub store_dir: Option<PathBuf>,
    pub keep: usize,
}

impl FitSettings {
    /// Fits a model on `rows` (row-major) as `version`; [`ModelError::Cancelled`] once
    /// `stop()` is true.
    pub fn fit(
        &self,
        rows: &[f32],
        version: u64,
        stop: &dyn Fn() -> bool,
    ) -> Result<Detector, ModelError> {
        Detector::train_until(
            rows,
            self.features.clone(),
            &self.model,
            self.threshold,
            version,
            self.device,
            stop,
        )
    }

    /// Saves `det` in the store, then prunes the store to the newest `keep` versions (a
    /// failed prune is only logged). Without a store, nothing is saved.
    pub fn save(&self, det: &Detector) -> Result<Option<PathBuf>, ModelError> {
        let Some(dir) = &self.store_dir else {
            return Ok(None);
        };
        let path = store::save(dir, det)?;
        match store::prune(dir, self.keep) {
            Ok(pruned) if !pruned.is_empty() => tracing::info!(?pruned, "pruned the model store"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning the model store failed"),
        }
        Ok(Some(path))
    }

    /// The number the next trained model gets: one past the newest in the store and `at_least`.
    pub fn next_version(&self, at_least: u64) -> Result<u64, ModelError> {
        let newest = match &self.store_dir {
            Some(dir) => store::versions(dir)?.last().copied().unwrap_or(0),
            None => 0,
        };
        Ok(newest.max(at_least) + 1)
    }
}

/// The trainer thread's settings: how to fit, and the retraining policy (its gate).
#[derive(Debug, Clone)]
pub struct TrainerSettings {
    pub fit: FitSettings,
    pub policy: RetrainPolicy,
}

/// Trains the first model on the warm-up records (no gate: nothing serves yet), saves it in
/// the store and returns it. Not saving is not fatal: the model serves from memory and a
/// restart trains again (a restart cannot fix a read-only store; failing would only loop).
pub fn first_model(
    fit: &FitSettings,
    rows: &[f32],
    m: &TrainMetrics,
) -> Result<Detector, ModelError> {
    let version = fit.next_version(0)?;
    let started = Instant::now();
    let det = fit.fit(rows, version, &|| false).inspect_err(|_| {
        m.runs.with_label_values(&["failed"]).inc();
    })?;
    m.runs.with_label_values(&["promoted"]).inc();
    m.duration.observe(started.elapsed().as_secs_f64());
    tracing::info!(
        version,
        kind = det.meta.spec.kind.as_str(),
        records = det.meta.training.records,
        loss = det.meta.training.final_loss,
        threshold = det.threshold(),
        seconds = det.meta.training.duration_seconds,
        "trained the first model on the warm-up records"
    );
    match fit.save(&det) {
        Ok(Some(path)) => tracing::info!(path = %path.display(), "saved model"),
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, version,
            "cannot save the first model: serving it from memory only"),
    }
    Ok(det)
}

/// Runs one job to its outcome; `None` when `stop()` ended it (the daemon is shutting down:
/// the candidate is abandoned, and nobody waits for an outcome).
pub fn run_job(s: &TrainerSettings, job: Job, stop: &dyn Fn() -> bool) -> Option<Outcome> {
    let started = Instant::now();
    let reject = |reason, started: Instant| {
        Some(Outcome::Rejected {
            reason,
            version: job.version,
            seconds: started.elapsed().as_secs_f64(),
        })
    };
    let mut det = match s.fit.fit(&job.train, job.version, stop) {
        Ok(d) => d,
        Err(ModelError::Cancelled) => return None,
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
        records = job.train.len() / s.fit.features.len().max(1),
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
    // A model that is not in the store is not promoted: the store's CURRENT is what
    // serves, after a restart too.
    if let Err(e) = s.fit.save(&det) {
        tracing::error!(version = job.version, error = %e, "saving the candidate failed: not promoted");
        return reject("save_failed", started);
    }
    Some(Outcome::Promoted {
        detector: Box::new(det),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The scorer's end of the trainer stage's channels (held by its
/// [`super::schedule::Retrainer`]).
#[derive(Debug)]
pub struct TrainerLink {
    pub jobs: Sender<Job>,
    pub outcomes: Receiver<Outcome>,
}

/// The channels between the scorer and the trainer stage: the scorer's [`TrainerLink`], and
/// the stage's job receiver and outcome sender. One job at a time.
pub fn link() -> (TrainerLink, Receiver<Job>, Sender<Outcome>) {
    let (jobs, job_rx) = crossbeam_channel::bounded(1);
    let (out_tx, outcomes) = crossbeam_channel::bounded(1);
    (TrainerLink { jobs, outcomes }, job_rx, out_tx)
}

/// The trainer stage: jobs in, outcomes out, until the scorer hangs up or `stop` is
/// cancelled (a run under way is then abandoned at its next epoch).
pub fn run(
    settings: TrainerSettings,
    jobs: Receiver<Job>,
    outcomes: Sender<Outcome>,
    stop: CancellationToken,
) {
    serve(jobs, outcomes, |job| {
        run_job(&settings, job, &|| stop.is_cancelled())
    });
}

/// Runs each job through `work`, supervised: a job that panics is reported as
/// [`Outcome::Panicked`] and the stage goes on with the next one, so the scorer is never
/// left waiting for an outcome that cannot come. A job stopped by shutdown (`None`) ends
/// the stage.
fn serve(
    jobs: Receiver<Job>,
    outcomes: Sender<Outcome>,
    mut work: impl FnMut(Job) -> Option<Outcome>,
) {
    for job in jobs {
        let version = job.version;
        let outcome = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(job))) {
            Ok(Some(outcome)) => outcome,
            Ok(None) => return,
            Err(p) => Outcome::Panicked {
                version,
                message: crate::error::panic_message(&*p),
            },
        };
        if outcomes.send(outcome).is_err() {
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
    use crate::train::normal_window::NormalWindow;

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
            fit: FitSettings {
                features: features(),
                model: spec_for(ModelKind::Dense),
                threshold: ThresholdSpec::Quantile { quantile: 0.99 },
                device: Device::Cpu,
                store_dir: None,
                keep: 10,
            },
            policy: crate::config::load(None).expect("defaults").retrain,
        }
    }

    /// A job run with no shutdown.
    fn run_to_end(s: &TrainerSettings, job: Job) -> Outcome {
        run_job(s, job, &|| false).expect("nothing stops it")
    }

    /// A shutdown abandons the run under way: no candidate, no outcome, the stage ends.
    #[test]
    fn a_shutdown_abandons_the_run_and_ends_the_stage() {
        let serving = train_kind(ModelKind::Dense);
        let w = window_of(&serving, &normal_rows(1200, 0), 2);
        let stop = CancellationToken::new();
        stop.cancel();
        let (TrainerLink { jobs, outcomes }, job_rx, out_tx) = link();
        jobs.send(job(&serving, &w)).expect("send");
        // Hung up too, so that the stage ends after this job whatever happens to it.
        drop(jobs);
        run(settings(), job_rx, out_tx, stop);
        assert!(
            outcomes.try_recv().is_err(),
            "an abandoned run sends no outcome"
        );
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
            Outcome::Panicked { message, .. } => panic!("trainer panicked: {message}"),
        };
        let t_clean = threshold_of(run_to_end(
            &s,
            job(&serving, &window_of(&serving, &clean, 2)),
        ))
        .expect("a clean window is promoted");
        match threshold_of(run_to_end(
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

    fn empty_job(version: u64) -> Job {
        Job {
            train: Vec::new(),
            holdout: Vec::new(),
            serving: HoldoutStats {
                false_alarm_rate: 0.0,
                threshold: 1.0,
            },
            parent: 0,
            version,
            window: None,
        }
    }

    /// A job that panics is reported and the trainer carries on with the next one.
    #[test]
    fn a_panicking_job_is_reported_and_the_trainer_goes_on() {
        let (job_tx, job_rx) = crossbeam_channel::bounded(2);
        let (out_tx, out_rx) = crossbeam_channel::bounded(2);
        let h = std::thread::spawn(move || {
            serve(job_rx, out_tx, |j| {
                if j.version == 7 {
                    panic!("boom in job 7");
                }
                Some(Outcome::Rejected {
                    reason: "worse_on_holdout",
                    version: j.version,
                    seconds: 0.0,
                })
            })
        });
        job_tx.send(empty_job(7)).expect("send");
        match out_rx.recv().expect("outcome") {
            Outcome::Panicked { version, message } => {
                assert_eq!(version, 7);
                assert!(message.contains("boom"), "{message}");
            }
            _ => panic!("expected Panicked"),
        }
        job_tx
            .send(empty_job(8))
            .expect("the trainer still takes jobs");
        assert!(matches!(
            out_rx.recv().expect("outcome"),
            Outcome::Rejected { version: 8, .. }
        ));
        drop(job_tx);
        h.join().expect("the thread ends when the scorer hangs up");
    }

    /// A candidate that cannot be saved (the store is not writable) is not promoted.
    #[test]
    fn a_candidate_that_cannot_be_saved_is_not_promoted() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A file where the store's folder should be: no write can succeed, even as root.
        let blocker = dir.path().join("not-a-folder");
        std::fs::write(&blocker, b"x").expect("write");
        let serving = train_kind(ModelKind::Dense);
        let rows = normal_rows(1200, 0);
        let (train, holdout) = rows.split_at(1000 * 8);
        let mut settings = settings();
        // A gate that promotes anything: only the save can stop it.
        settings.policy.tolerance = 1.0;
        settings.policy.max_threshold_ratio = 1e9;
        settings.fit.store_dir = Some(blocker.join("store"));
        let job = Job {
            train: train.to_vec(),
            holdout: holdout.to_vec(),
            serving: HoldoutStats::of(
                &serving.score(holdout).expect("score").scores,
                serving.threshold(),
            ),
            parent: 1,
            version: 2,
            window: None,
        };
        match run_to_end(&settings, job) {
            Outcome::Rejected { reason, .. } => assert_eq!(reason, "save_failed"),
            Outcome::Promoted { .. } => panic!("promoted a model that is not in the store"),
            Outcome::Panicked { message, .. } => panic!("panicked: {message}"),
        }
    }
}
