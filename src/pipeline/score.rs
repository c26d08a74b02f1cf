//! The scorer: owns the model (one thread, never shared), trains the first model on the
//! warm-up records when none is saved, then scores every batch. The same [`Scorer`] serves
//! the daemon's scorer thread and `anomalyd score`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::VecDeque;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tch::Device;

use super::{Batch, Scored};
use crate::config::{ModelSpec, RetrainPolicy, ThresholdSpec};
use crate::model::judge::Judge;
use crate::model::likelihood::Keyed;
use crate::model::threshold::Threshold;
use crate::model::{Detector, ModelError, store};
use crate::telemetry::Metrics;
use crate::train::gate::HoldoutStats;
use crate::train::normal_window::NormalWindow;
use crate::train::trainer::{self, Job, Outcome, TrainerSettings};

/// What the scorer needs to train and explain.
#[derive(Debug, Clone)]
pub struct ScorerSettings {
    pub features: Vec<String>,
    pub model: ModelSpec,
    pub threshold: ThresholdSpec,
    pub top_features: usize,
    pub device: Device,
    pub store_dir: Option<PathBuf>,
    pub keep: usize,
    /// Continuous retraining (the daemon); `None` offline and for the scorer role.
    pub retrain: Option<RetrainPolicy>,
    /// The feature that holds each record's newest raw value (window mode without
    /// differences), for the likelihood's range check.
    pub value_feature: Option<usize>,
    /// Receives the version of every model the scorer starts serving (the trainer role
    /// publishes them to the model topic).
    pub publish: Option<Sender<u64>>,
}

/// Retraining state kept by the scorer: the normal window, the triggers, and the channels
/// to the trainer thread.
struct Retrainer {
    policy: RetrainPolicy,
    window: NormalWindow,
    jobs: Sender<Job>,
    outcomes: Receiver<Outcome>,
    in_flight: bool,
    last_run: Instant,
    since_run: u64,
    recent: VecDeque<bool>,
    recent_alerts: usize,
    /// Consecutive failed runs (panicked, failed, not saved), and no new run before
    /// `not_before`: a failing trainer is retried with exponential backoff.
    failures: u32,
    not_before: Instant,
}

/// The trainer thread's end of the channels.
type TrainerChannels = (Sender<Job>, Receiver<Outcome>);

impl Retrainer {
    /// Starts the trainer thread.
    fn start_thread(
        s: &ScorerSettings,
        policy: RetrainPolicy,
    ) -> Result<TrainerChannels, ModelError> {
        let (jobs, job_rx) = crossbeam_channel::bounded(1);
        let (out_tx, outcomes) = crossbeam_channel::bounded(1);
        let trainer = TrainerSettings {
            features: s.features.clone(),
            model: s.model.clone(),
            threshold: s.threshold,
            policy,
            device: s.device,
            store_dir: s.store_dir.clone(),
            keep: s.keep,
        };
        std::thread::Builder::new()
            .name("anomalyd-train".into())
            .spawn(move || trainer::run(trainer, job_rx, out_tx))
            .map_err(|source| ModelError::Io {
                path: PathBuf::from("<trainer thread>"),
                source,
            })?;
        Ok((jobs, outcomes))
    }

    fn spawn(s: &ScorerSettings, policy: RetrainPolicy) -> Result<Self, ModelError> {
        let (jobs, outcomes) = Self::start_thread(s, policy)?;
        Ok(Retrainer {
            policy,
            window: NormalWindow::new(s.features.len(), policy.window, policy.margin),
            jobs,
            outcomes,
            in_flight: false,
            last_run: Instant::now(),
            since_run: 0,
            recent: VecDeque::new(),
            recent_alerts: 0,
            failures: 0,
            not_before: Instant::now(),
        })
    }

    /// A run failed: back off before the next one (10 s, doubling, at most 10 min).
    fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
        let backoff = Duration::from_secs(10 << self.failures.min(6)).min(Duration::from_secs(600));
        self.not_before = Instant::now() + backoff;
    }

    /// Starts a new trainer thread after the old one ended (the window is kept).
    fn restart(&mut self, s: &ScorerSettings, metrics: &Metrics) {
        metrics.trainer_restarts.inc();
        self.in_flight = false;
        self.failed();
        match Self::start_thread(s, self.policy) {
            Ok((jobs, outcomes)) => {
                self.jobs = jobs;
                self.outcomes = outcomes;
                tracing::warn!(
                    failures = self.failures,
                    "the trainer thread ended: restarted it"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot restart the trainer thread; retrying later")
            }
        }
    }

    fn observe(&mut self, scored: &Scored, metrics: &Metrics) {
        for (i, meta) in scored.metas.iter().enumerate() {
            if !scored.is_scored(i) {
                continue; // never trained on
            }
            let anomaly = scored.anomalies[i];
            self.window
                .observe(scored.features_of(i), meta.offset, anomaly);
            self.recent.push_back(anomaly);
            self.recent_alerts += usize::from(anomaly);
            if self.recent.len() as u64 > self.policy.drift_records.max(1) {
                self.recent_alerts -= usize::from(self.recent.pop_front().unwrap_or(false));
            }
        }
        self.since_run += scored.metas.len() as u64;
        metrics.training_window.set(self.window.len() as i64);
        metrics.recent_alert_rate.set(self.alert_rate());
    }

    fn alert_rate(&self) -> f64 {
        self.recent_alerts as f64 / self.recent.len().max(1) as f64
    }

    /// Which trigger fires now, if any.
    fn due(&self) -> Option<&'static str> {
        if self.in_flight
            || self.window.len() < self.policy.min_records
            || Instant::now() < self.not_before
        {
            return None;
        }
        let p = &self.policy;
        if p.every_records.is_some_and(|n| self.since_run >= n) {
            return Some("records");
        }
        if p.interval.is_some_and(|d| self.last_run.elapsed() >= d) {
            return Some("interval");
        }
        let full = self.recent.len() as u64 >= p.drift_records.max(1);
        if full && self.since_run >= p.drift_records && self.alert_rate() > p.alert_budget {
            return Some("drift");
        }
        None
    }

    fn start(
        &mut self,
        serving: &Detector,
        s: &ScorerSettings,
        trigger: &str,
    ) -> Result<(), ModelError> {
        let (rows, span) = self.window.snapshot();
        let dim = serving.dim();
        let n = rows.len() / dim;
        let held =
            ((n as f64 * self.policy.holdout).ceil() as usize).clamp(1, n.saturating_sub(2).max(1));
        let (train, holdout) = rows.split_at((n - held) * dim);
        let serving_stats = HoldoutStats::of(&serving.score(holdout)?.scores, serving.threshold());
        let version = match &s.store_dir {
            Some(dir) => {
                store::versions(dir)?
                    .last()
                    .copied()
                    .unwrap_or(0)
                    .max(serving.version())
                    + 1
            }
            None => serving.version() + 1,
        };
        tracing::info!(
            trigger,
            version,
            records = n - held,
            holdout = held,
            "retraining"
        );
        let job = Job {
            train: train.to_vec(),
            holdout: holdout.to_vec(),
            serving: serving_stats,
            parent: serving.version(),
            version,
            window: span,
        };
        match self.jobs.send(job) {
            Ok(()) => self.in_flight = true,
            // The thread is gone: the next poll restarts it.
            Err(_) => self.failed(),
        }
        self.last_run = Instant::now();
        self.since_run = 0;
        Ok(())
    }
}

pub struct Scorer {
    settings: ScorerSettings,
    retrainer: Option<Retrainer>,
    detector: Option<Detector>,
    /// The decision state: the serving model's threshold as it adapts (SPOT), and the
    /// per-key anomaly likelihoods (`threshold.kind = "likelihood"`), in stream order.
    judge: Judge,
    warmup: Vec<Batch>,
    warmup_len: usize,
    metrics: Arc<Metrics>,
    /// Store versions that failed their checks (never tried again).
    rejected: std::collections::HashSet<u64>,
}

impl Scorer {
    /// Starts from the newest saved model when the store has one that fits the input.
    pub fn new(settings: ScorerSettings, metrics: Arc<Metrics>) -> Result<Self, ModelError> {
        // The current version if it passes its checks, else the newest one that does; with
        // none, the first model is trained from the warm-up records.
        let detector = match &settings.store_dir {
            Some(dir) => {
                let (det, rejected) =
                    store::load_serving(dir, &settings.features, settings.device)?;
                for (version, why) in &rejected {
                    metrics
                        .models_rejected
                        .with_label_values(&[why.reason])
                        .inc();
                    tracing::warn!(version, reason = why.reason, detail = %why.detail,
                        store = %dir.display(), "saved model rejected: not serving it");
                }
                if let (Some(det), false) = (&det, rejected.is_empty()) {
                    tracing::warn!(
                        version = det.version(),
                        "fell back to the newest valid model"
                    );
                }
                det
            }
            None => None,
        };
        if let Some(det) = &detector {
            tracing::info!(version = det.version(), "loaded saved model");
        }
        let retrainer = match settings.retrain {
            Some(policy) => Some(Retrainer::spawn(&settings, policy)?),
            None => None,
        };
        let likelihood = match settings.threshold {
            ThresholdSpec::Likelihood {
                params, max_keys, ..
            } => Some(Keyed::new(params, max_keys)),
            _ => None,
        };
        let judge = Judge::new(
            Threshold::Fixed { value: f32::NAN },
            likelihood,
            settings.top_features,
            settings.value_feature,
        );
        let mut s = Scorer {
            retrainer,
            settings,
            detector: None,
            judge,
            warmup: Vec::new(),
            warmup_len: 0,
            metrics,
            rejected: Default::default(),
        };
        if let Some(det) = detector {
            s.install(det);
        }
        Ok(s)
    }

    pub fn detector(&self) -> Option<&Detector> {
        self.detector.as_ref()
    }

    /// Continues each key's anomaly likelihood from the state the store holds (saved when
    /// the daemon last stopped), so keys do not start a new warm-up. Without a store, a
    /// saved state, or with one saved under other `[threshold.likelihood]` settings, the
    /// keys start afresh (logged).
    pub fn restore_likelihood(&mut self) {
        let (
            Some(dir),
            ThresholdSpec::Likelihood {
                params, max_keys, ..
            },
        ) = (&self.settings.store_dir, self.settings.threshold)
        else {
            return;
        };
        let path = dir.join(store::LIKELIHOOD_STATE);
        match store::read_likelihood(dir) {
            Ok(None) => {}
            Ok(Some(bytes)) => match Keyed::from_snapshot(&bytes, params, max_keys) {
                Ok(keyed) => {
                    tracing::info!(keys = keyed.keys(), path = %path.display(),
                        "restored the anomaly likelihood state");
                    self.judge.set_likelihood(keyed);
                }
                Err(e) => tracing::warn!(path = %path.display(), error = %e,
                    "not restoring the anomaly likelihood state: every key warms up again"),
            },
            Err(e) => tracing::warn!(error = %e,
                "cannot read the anomaly likelihood state: every key warms up again"),
        }
    }

    /// Saves each key's anomaly likelihood in the store, for [`Self::restore_likelihood`]
    /// after a restart. Does nothing without a store or a likelihood.
    pub fn save_likelihood(&self) -> Result<(), ModelError> {
        let (Some(dir), Some(keyed)) = (&self.settings.store_dir, self.judge.likelihood()) else {
            return Ok(());
        };
        let started = Instant::now();
        let bytes = keyed.snapshot()?;
        let path = store::save_likelihood(dir, &bytes)?;
        tracing::info!(keys = keyed.keys(), bytes = bytes.len(), path = %path.display(),
            seconds = started.elapsed().as_secs_f64(), "saved the anomaly likelihood state");
        Ok(())
    }

    /// Installs a promoted candidate, or counts a rejection, when the trainer has finished.
    /// Called between batches.
    pub fn poll_trainer(&mut self) {
        let Some(r) = self.retrainer.as_mut() else {
            return;
        };
        let outcome = match r.outcomes.try_recv() {
            Ok(o) => o,
            Err(crossbeam_channel::TryRecvError::Empty) => return,
            Err(crossbeam_channel::TryRecvError::Disconnected) => {
                // The trainer thread ended (it never should): start it again, with backoff.
                r.restart(&self.settings, &self.metrics);
                return;
            }
        };
        r.in_flight = false;
        let m = &self.metrics;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        m.last_training.set(now);
        match outcome {
            Outcome::Promoted { detector, seconds } => {
                r.failures = 0;
                m.training_duration.observe(seconds);
                m.training_runs.with_label_values(&["promoted"]).inc();
                tracing::info!(version = detector.version(), "promoted the retrained model");
                self.install(*detector);
            }
            Outcome::Rejected {
                reason,
                version,
                seconds,
            } => {
                m.training_duration.observe(seconds);
                let result = if matches!(reason, "training_failed" | "save_failed") {
                    r.failed();
                    "failed"
                } else {
                    r.failures = 0;
                    "rejected"
                };
                m.training_runs.with_label_values(&[result]).inc();
                m.promotion_rejections.with_label_values(&[reason]).inc();
                tracing::warn!(version, reason, "retrained candidate rejected");
            }
            Outcome::Panicked { version, message } => {
                r.failed();
                m.trainer_restarts.inc();
                m.training_runs.with_label_values(&["failed"]).inc();
                tracing::error!(
                    version,
                    message,
                    failures = r.failures,
                    "the trainer panicked; it goes on with the next run, after a backoff"
                );
            }
        }
    }

    /// Between-batch housekeeping when the input is idle: trainer outcomes, reverts.
    pub fn tick(&mut self) -> Result<(), ModelError> {
        self.poll_trainer();
        self.follow_store()
    }

    /// Switches to the store's current version when it is not the one serving (a revert, or
    /// a model a scorer received), once it passes its checks. A version that fails them is
    /// counted and logged once, and the serving model stays: nothing in the store can stop a
    /// scorer that serves a model.
    pub fn follow_store(&mut self) -> Result<(), ModelError> {
        let (Some(dir), Some(det)) = (&self.settings.store_dir, &self.detector) else {
            return Ok(());
        };
        let serving = det.version();
        let wanted = match store::current(dir) {
            Ok(Some(v)) if v != serving && !self.rejected.contains(&v) => v,
            Ok(_) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the model store; serving v{serving}");
                return Ok(());
            }
        };
        match store::load_checked(dir, wanted, &self.settings.features, self.settings.device) {
            Ok(next) => {
                tracing::info!(
                    from = serving,
                    to = wanted,
                    "switching to the store's current model"
                );
                self.install(next);
            }
            Err(why) => {
                self.rejected.insert(wanted);
                self.metrics
                    .models_rejected
                    .with_label_values(&[why.reason])
                    .inc();
                tracing::error!(version = wanted, reason = why.reason, detail = %why.detail,
                    serving, "the store's current model failed its checks; still serving v{serving}");
            }
        }
        Ok(())
    }

    fn install(&mut self, det: Detector) {
        self.metrics.model_version.set(det.version() as i64);
        self.metrics.threshold.set(det.threshold() as f64);
        self.metrics.training_loss.set(det.meta.training.final_loss);
        if let Ok(t) = humantime::parse_rfc3339(&det.meta.created_at) {
            let secs = t
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.metrics.model_created.set(secs);
        }
        self.metrics.model_ready.set(1);
        if let Some(publish) = &self.settings.publish {
            let _ = publish.send(det.version());
        }
        self.judge.set_threshold(det.meta.threshold.clone());
        self.detector = Some(det);
    }

    /// Scores a batch, or holds it back during warm-up. Returns the batches now scored, in
    /// arrival order.
    pub fn push(&mut self, batch: Batch) -> Result<Vec<Scored>, ModelError> {
        self.poll_trainer();
        if let Some(det) = &self.detector {
            let started = Instant::now();
            let scored = score_batch(det, &mut self.judge, &self.settings, &self.metrics, batch)?;
            self.metrics
                .threshold
                .set(self.judge.threshold().current() as f64);
            if let Some(r) = self.retrainer.as_mut() {
                if r.in_flight {
                    self.metrics
                        .scoring_duration_training
                        .observe(started.elapsed().as_secs_f64());
                }
                r.observe(&scored, &self.metrics);
                if let Some(trigger) = r.due() {
                    r.start(det, &self.settings, trigger)?;
                }
            }
            return Ok(vec![scored]);
        }
        self.warmup_len += batch.len();
        self.warmup.push(batch);
        if self.warmup_len < self.settings.model.warmup_records {
            return Ok(Vec::new());
        }
        self.train_on_warmup()
    }

    /// Trains on whatever warm-up records there are (end of an offline input) and scores
    /// them. Does nothing once a model is serving.
    pub fn finish(&mut self) -> Result<Vec<Scored>, ModelError> {
        if self.detector.is_some() || self.warmup_len == 0 {
            return Ok(Vec::new());
        }
        self.train_on_warmup()
    }

    fn train_on_warmup(&mut self) -> Result<Vec<Scored>, ModelError> {
        // Exactly the first `warmup_records` records train (fewer at the end of an offline
        // input); all of the held-back batches are then scored.
        let dim = self.settings.features.len();
        let rows: Vec<f32> = self
            .warmup
            .iter()
            .flat_map(|b| b.features.iter().copied())
            .take(self.settings.model.warmup_records * dim)
            .collect();
        let version = match &self.settings.store_dir {
            Some(dir) => store::versions(dir)?.last().map_or(1, |v| v + 1),
            None => 1,
        };
        let started = Instant::now();
        let det = Detector::train(
            &rows,
            self.settings.features.clone(),
            &self.settings.model,
            self.settings.threshold,
            version,
            self.settings.device,
        )
        .inspect_err(|_| {
            self.metrics
                .training_runs
                .with_label_values(&["failed"])
                .inc();
        })?;
        self.metrics
            .training_runs
            .with_label_values(&["promoted"])
            .inc();
        self.metrics
            .training_duration
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(
            version,
            kind = det.meta.spec.kind.as_str(),
            records = det.meta.training.records,
            loss = det.meta.training.final_loss,
            threshold = det.threshold(),
            seconds = det.meta.training.duration_seconds,
            "trained the first model on the warm-up records"
        );
        if let Some(dir) = &self.settings.store_dir {
            // Not fatal: the model serves from memory, and a restart trains again (a
            // restart cannot fix a read-only store; crashing would only loop).
            match store::save(dir, &det) {
                Ok(path) => {
                    let pruned = store::prune(dir, self.settings.keep).unwrap_or_default();
                    tracing::info!(path = %path.display(), ?pruned, "saved model");
                }
                Err(e) => tracing::error!(error = %e, version = det.version(),
                    "cannot save the first model: serving it from memory only"),
            }
        }
        self.warmup_len = 0;
        self.install(det);
        let Some(det) = self.detector.as_ref() else {
            return Ok(Vec::new());
        };
        std::mem::take(&mut self.warmup)
            .into_iter()
            .map(|b| score_batch(det, &mut self.judge, &self.settings, &self.metrics, b))
            .collect()
    }
}

/// Scores a batch and judges each record, in order ([`Judge::judge`]).
fn score_batch(
    det: &Detector,
    judge: &mut Judge,
    settings: &ScorerSettings,
    metrics: &Metrics,
    batch: Batch,
) -> Result<Scored, ModelError> {
    let started = Instant::now();
    let out = det.score(&batch.features)?;
    let n = out.scores.len();
    let v = judge.judge(
        det.scale(),
        &out.scores,
        &out.feature_errors,
        &batch.features,
        |i| batch.metas[i].key.as_deref(),
    );
    let score_hist = metrics.score.local();
    let norm_hist = metrics.normalized_score.local();
    for (&s, &norm) in out.scores.iter().zip(&v.normalized) {
        if s.is_finite() {
            score_hist.observe(s as f64);
            norm_hist.observe(norm as f64);
        }
    }
    score_hist.flush();
    norm_hist.flush();
    if let Some(k) = judge.likelihood() {
        metrics.likelihood_keys.set(k.keys() as i64);
        metrics.set_state_keys(1, k.keys());
    }
    metrics.likelihood_evictions.inc_by(judge.take_evictions());
    metrics
        .scoring_duration
        .observe(started.elapsed().as_secs_f64());
    metrics.batch_size.observe(n as f64);
    metrics.records_scored.inc_by((n - v.unscored) as u64);
    metrics.anomalies.inc_by(v.explanations.len() as u64);
    let mut top_counts = vec![0u64; det.dim()];
    for (_, why) in &v.explanations {
        if let Some(c) = why.first() {
            top_counts[c.feature] += 1;
        }
    }
    for (f, &c) in top_counts.iter().enumerate() {
        if c > 0 {
            metrics
                .alert_top_feature
                .with_label_values(&[settings.features[f].as_str()])
                .inc_by(c);
        }
    }
    Ok(Scored {
        metas: batch.metas,
        scores: out.scores,
        thresholds: v.thresholds,
        anomalies: v.anomalies,
        normalized: v.normalized,
        likelihood: v.likelihood.iter().map(|&l| l as f32).collect(),
        discord: v.discord.iter().map(|&d| d as f32).collect(),
        model_version: det.version(),
        explanations: v.explanations,
        features: batch.features,
    })
}

/// How often the scorer looks for a new current version in the store.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// The scorer thread: batches in, scored batches out, until the input closes.
pub fn run(
    scorer: &mut Scorer,
    batches: Receiver<Batch>,
    scored: Sender<Scored>,
) -> Result<(), ModelError> {
    let mut last_follow = Instant::now();
    loop {
        let batch = match batches.recv_timeout(FOLLOW_EVERY) {
            Ok(b) => Some(b),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        if last_follow.elapsed() >= FOLLOW_EVERY {
            scorer.tick()?;
            last_follow = Instant::now();
        }
        for out in batch
            .map(|b| scorer.push(b))
            .transpose()?
            .unwrap_or_default()
        {
            if scored.send(out).is_err() {
                return Ok(()); // the sink stopped; its own error is reported
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key's likelihood keeps judging well when a model with another score scale takes
    /// over (as after a retraining promotion): it is fed calibrated scores, not raw ones.
    #[test]
    fn likelihood_survives_a_switch_to_a_model_with_another_score_scale() {
        use crate::config::ModelKind;
        use crate::model::detector::tests::{normal_rows, train_kind};
        use crate::model::likelihood::{ALERT_LEVEL, LikelihoodParams};
        let (mut a, mut b) = (train_kind(ModelKind::Dense), train_kind(ModelKind::Pca));
        // `b` the one with the larger scores: a drop in scale is the milder direction.
        if b.meta.center < a.meta.center {
            std::mem::swap(&mut a, &mut b);
        }
        let sa = a.score(&normal_rows(1500, 40_000)).expect("score").scores;
        // After the switch: normal records, with an anomaly (records 700..705) among them.
        let mut rows = normal_rows(1500, 41_500);
        for row in rows.chunks_exact_mut(8).skip(700).take(5) {
            row[3] += 3.0;
        }
        let sb = b.score(&rows).expect("score").scores;
        let median = |s: &[f32]| crate::model::threshold::quantile(s, 0.5);
        let ratio = median(&sb) / median(&sa);
        assert!(ratio > 3.0, "scales too alike: {ratio}");
        // The stream scored by `a`, then by `b`: the records that alert after the switch.
        let alerts_after_switch = |input: &dyn Fn(&Detector, f32) -> f64| {
            let mut keyed = Keyed::new(LikelihoodParams::default(), 10);
            for &s in &sa {
                keyed.update(Some("k"), input(&a, s), &[], None);
            }
            let out = sb
                .iter()
                .map(|&s| keyed.update(Some("k"), input(&b, s), &[], None));
            out.enumerate()
                .filter(|&(_, l)| l >= ALERT_LEVEL)
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        };
        let calibrated = alerts_after_switch(&|d, s| d.likelihood_input(s));
        assert!(
            !calibrated.is_empty() && calibrated.iter().all(|i| (700..715).contains(i)),
            "calibrated input: alerts at {calibrated:?}, expected only the anomaly"
        );
        // Raw scores: false alerts at the switch (and while the history catches up).
        let raw = alerts_after_switch(&|_, s| f64::from(s));
        assert!(
            raw.first().is_some_and(|&i| i < 10),
            "raw input: alerts at {raw:?}"
        );
    }
}
