//! The scorer: owns the model (one thread, never shared), trains the first model on the
//! warm-up records when none is saved, then scores and judges every batch. Retraining is
//! the [`Retrainer`]'s (`train::schedule`): the scorer hands it each judged batch and
//! serves what it promotes. The same [`Scorer`] serves
//! the daemon's scorer thread and `anomalyd score`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tch::Device;

use super::{Batch, Scored};
use crate::config::{ModelSpec, RetrainPolicy, ThresholdSpec};
use crate::model::judge::Judge;
use crate::model::likelihood::Keyed;
use crate::model::threshold::Threshold;
use crate::model::{Detector, ModelError, store};
use crate::telemetry::Metrics;
use crate::train::schedule::Retrainer;
use crate::train::trainer::TrainerSettings;

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

impl ScorerSettings {
    /// What the trainer thread needs of these settings.
    fn trainer(&self, policy: RetrainPolicy) -> TrainerSettings {
        TrainerSettings {
            features: self.features.clone(),
            model: self.model.clone(),
            threshold: self.threshold,
            policy,
            device: self.device,
            store_dir: self.store_dir.clone(),
            keep: self.keep,
        }
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
            Some(policy) => Some(Retrainer::spawn(settings.trainer(policy))?),
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

    /// Continues each key's anomaly likelihood from the state the store holds
    /// ([`store::restore_likelihood`]).
    pub fn restore_likelihood(&mut self) {
        if let (
            Some(dir),
            ThresholdSpec::Likelihood {
                params, max_keys, ..
            },
        ) = (&self.settings.store_dir, self.settings.threshold)
            && let Some(keyed) = store::restore_likelihood(dir, params, max_keys)
        {
            self.judge.set_likelihood(keyed);
        }
    }

    /// Saves each key's anomaly likelihood in the store ([`store::persist_likelihood`]).
    /// Does nothing without a store or a likelihood.
    pub fn save_likelihood(&self) -> Result<(), ModelError> {
        match (&self.settings.store_dir, self.judge.likelihood()) {
            (Some(dir), Some(keyed)) => store::persist_likelihood(dir, keyed),
            _ => Ok(()),
        }
    }

    /// Installs a promoted candidate when the trainer has finished ([`Retrainer::poll`]).
    /// Called between batches.
    pub fn poll_trainer(&mut self) {
        let promoted = match self.retrainer.as_mut() {
            Some(r) => r.poll(&self.metrics),
            None => None,
        };
        if let Some(det) = promoted {
            self.install(det);
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
                if r.in_flight() {
                    self.metrics
                        .scoring_duration_training
                        .observe(started.elapsed().as_secs_f64());
                }
                let judged = (0..scored.metas.len())
                    .filter(|&i| scored.is_scored(i)) // never trained on
                    .map(|i| {
                        (
                            scored.features_of(i),
                            scored.metas[i].offset,
                            scored.anomalies[i],
                        )
                    });
                r.observe(judged, scored.metas.len() as u64, &self.metrics);
                if let Some(trigger) = r.due() {
                    r.start(det, trigger)?;
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
        let calibrated = alerts_after_switch(&|d, s| d.scale().likelihood_input(s));
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
