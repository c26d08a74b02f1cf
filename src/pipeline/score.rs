//! The scorer: owns the model (one thread, never shared), and scores and judges every
//! batch. Until a model serves it holds the warm-up batches back and has the first model
//! trained on them ([`trainer::first_model`]); retraining is the [`Retrainer`]'s
//! (`train::schedule`, with the trainer stage), which it hands each judged batch and whose
//! promotions it serves;
//! a new current version in the store (a revert, a model received) comes from the store's
//! [`Watcher`]. The same [`Scorer`] serves the daemon's scorer thread and `anomalyd score`.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use prometheus::{Gauge, Histogram, IntCounter, IntCounterVec, IntGauge, Registry};

use super::{Batch, Scored};
use crate::config::ThresholdSpec;
use crate::model::judge::Judge;
use crate::model::likelihood::Keyed;
use crate::model::store::{self, Change, Watcher};
use crate::model::threshold::Threshold;
use crate::model::{Detector, ModelError};
use crate::telemetry::{StateBytes, counter, counter_vec, gauge, histogram, int_gauge};
use crate::train::TrainMetrics;
use crate::train::schedule::Retrainer;
use crate::train::trainer::{self, FitSettings};

/// What the scorer needs to train, judge and explain.
#[derive(Debug, Clone)]
pub struct ScorerSettings {
    /// How a model is fitted and where it is stored: the first model and retrained ones.
    pub fit: FitSettings,
    pub top_features: usize,
    /// The feature that holds each record's newest raw value (window mode without
    /// differences), for the likelihood's range check.
    pub value_feature: Option<usize>,
    /// Receives the version of every model the scorer starts serving (the trainer role
    /// publishes them to the model topic).
    pub publish: Option<Sender<u64>>,
}

/// The scorer's metrics. Training's ([`TrainMetrics`]) are the warm-up's and the
/// [`Retrainer`]'s.
#[derive(Clone)]
pub struct ScorerMetrics {
    pub scored: IntCounter,
    pub anomalies: IntCounter,
    pub batch_size: Histogram,
    pub duration: Histogram,
    pub duration_training: Histogram,
    pub score: Histogram,
    pub normalized: Histogram,
    pub threshold: Gauge,
    pub model_version: IntGauge,
    pub model_ready: IntGauge,
    pub model_created: Gauge,
    pub training_loss: Gauge,
    pub likelihood_keys: IntGauge,
    pub likelihood_evictions: IntCounter,
    pub likelihood_state: StateBytes,
    pub alert_top_feature: IntCounterVec,
    /// Shared with the model topic's follower (role scorer): bundles that never served.
    pub models_rejected: IntCounterVec,
}

impl ScorerMetrics {
    pub fn register(r: &Registry, likelihood_state: StateBytes) -> Self {
        let durations = || prometheus::exponential_buckets(0.000_05, 2.5, 12).expect("buckets");
        ScorerMetrics {
            scored: counter(r, "anomalyd_records_scored_total", "Records scored."),
            anomalies: counter(
                r,
                "anomalyd_anomalies_total",
                "Records scored above the threshold.",
            ),
            batch_size: histogram(
                r,
                "anomalyd_batch_size_records",
                "Records per scored batch.",
                prometheus::exponential_buckets(1.0, 4.0, 9).expect("buckets"),
            ),
            duration: histogram(
                r,
                "anomalyd_scoring_duration_seconds",
                "Time to score one batch.",
                durations(),
            ),
            duration_training: histogram(
                r,
                "anomalyd_scoring_duration_during_training_seconds",
                "Time to score one batch while a retraining run is in flight.",
                durations(),
            ),
            score: histogram(
                r,
                "anomalyd_score",
                "Anomaly scores (reconstruction error of standardised features).",
                prometheus::exponential_buckets(0.001, 2.0, 20).expect("buckets"),
            ),
            normalized: histogram(
                r,
                "anomalyd_normalized_score",
                "Scores divided by the threshold (1 = at the threshold).",
                vec![
                    0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0,
                ],
            ),
            threshold: gauge(r, "anomalyd_threshold", "The serving model's threshold."),
            model_version: int_gauge(
                r,
                "anomalyd_model_version",
                "Version of the serving model (0 before the first model).",
            ),
            model_ready: int_gauge(
                r,
                "anomalyd_model_ready",
                "1 once a model is serving, 0 during warm-up.",
            ),
            model_created: gauge(
                r,
                "anomalyd_model_created_timestamp_seconds",
                "Unix time the serving model was trained.",
            ),
            training_loss: gauge(
                r,
                "anomalyd_training_loss",
                "Final training loss of the serving model.",
            ),
            likelihood_keys: int_gauge(
                r,
                "anomalyd_likelihood_keys",
                "Keys with anomaly-likelihood state (threshold.kind = likelihood).",
            ),
            likelihood_evictions: counter(
                r,
                "anomalyd_likelihood_evictions_total",
                "Keys whose likelihood state was forgotten to stay within \
                 threshold.likelihood.max_keys (each warms up again when it returns).",
            ),
            likelihood_state,
            alert_top_feature: counter_vec(
                r,
                "anomalyd_alert_top_feature_total",
                "Alerts by the feature with the largest share of their error (bounded by \
                 the configured features).",
                "feature",
                &[],
            ),
            models_rejected: counter_vec(
                r,
                "anomalyd_models_rejected_total",
                "Model bundles (from the model topic or the store) that failed their checks and \
                 never served, by reason.",
                "reason",
                &crate::model::verify::REASONS,
            ),
        }
    }

    /// Metrics registered nowhere (`anomalyd score`, tests).
    pub fn unregistered() -> (Self, TrainMetrics) {
        let r = Registry::new();
        let budget = crate::config::StateBudget {
            memory: 0,
            window_key_bytes: 0,
            likelihood_key_bytes: 0,
        };
        let state = crate::telemetry::StateMetrics::register(&r, &budget);
        (
            Self::register(&r, state.likelihood),
            TrainMetrics::register(&r),
        )
    }
}

pub struct Scorer {
    settings: ScorerSettings,
    retrainer: Option<Retrainer>,
    watcher: Option<Watcher>,
    detector: Option<Detector>,
    /// The decision state: the serving model's threshold as it adapts (SPOT), and the
    /// per-key anomaly likelihoods (`threshold.kind = "likelihood"`), in stream order.
    judge: Judge,
    /// The batches held back until the first model serves, and their records.
    warmup: Vec<Batch>,
    warmup_len: usize,
    metrics: ScorerMetrics,
    train_metrics: TrainMetrics,
}

impl Scorer {
    /// Starts from the newest saved model when the store has one that fits the input.
    /// `retrainer`: continuous retraining (the daemon's roles `all` and `trainer`), `None`
    /// offline and for the scorer role.
    pub fn new(
        settings: ScorerSettings,
        retrainer: Option<Retrainer>,
        metrics: ScorerMetrics,
        train_metrics: TrainMetrics,
    ) -> Result<Self, ModelError> {
        let fit = &settings.fit;
        // The current version if it passes its checks, else the newest one that does; with
        // none, the first model is trained from the warm-up records.
        let detector = match &fit.store_dir {
            Some(dir) => {
                let (det, rejected) = store::load_serving(dir, &fit.features, fit.device)?;
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
        let watcher = fit
            .store_dir
            .clone()
            .map(|dir| Watcher::new(dir, fit.features.clone(), fit.device));
        let likelihood = match settings.fit.threshold {
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
            watcher,
            settings,
            detector: None,
            judge,
            warmup: Vec::new(),
            warmup_len: 0,
            metrics,
            train_metrics,
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
        ) = (&self.settings.fit.store_dir, self.settings.fit.threshold)
            && let Some(keyed) = store::restore_likelihood(dir, params, max_keys)
        {
            self.judge.set_likelihood(keyed);
        }
    }

    /// Saves each key's anomaly likelihood in the store ([`store::persist_likelihood`]).
    /// Does nothing without a store or a likelihood.
    pub fn save_likelihood(&self) -> Result<(), ModelError> {
        match (&self.settings.fit.store_dir, self.judge.likelihood()) {
            (Some(dir), Some(keyed)) => store::persist_likelihood(dir, keyed),
            _ => Ok(()),
        }
    }

    /// Installs a promoted candidate when the trainer has finished ([`Retrainer::poll`]).
    /// Called between batches.
    pub fn poll_trainer(&mut self) {
        if let Some(det) = self.retrainer.as_mut().and_then(Retrainer::poll) {
            self.install(det);
        }
    }

    /// Between-batch housekeeping when the input is idle: trainer outcomes, and the
    /// store's current version.
    pub fn tick(&mut self) {
        self.poll_trainer();
        self.follow_store();
    }

    /// Switches to the store's current version when it is not the one serving and passes
    /// its checks ([`Watcher`]); one that fails them is counted and logged, and the serving
    /// model stays.
    pub fn follow_store(&mut self) {
        let (Some(watcher), Some(det)) = (self.watcher.as_mut(), &self.detector) else {
            return;
        };
        let serving = det.version();
        match watcher.poll(serving) {
            None => {}
            Some(Change::Serve(next)) => {
                tracing::info!(
                    from = serving,
                    to = next.version(),
                    "switching to the store's current model"
                );
                self.install(*next);
            }
            Some(Change::Rejected(version, why)) => {
                self.metrics
                    .models_rejected
                    .with_label_values(&[why.reason])
                    .inc();
                tracing::error!(version, reason = why.reason, detail = %why.detail,
                    serving, "the store's current model failed its checks; still serving v{serving}");
            }
        }
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
                        .duration_training
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
                r.observe(judged, scored.metas.len() as u64);
                if let Some(trigger) = r.due() {
                    r.start(det, trigger)?;
                }
            }
            return Ok(vec![scored]);
        }
        self.warmup_len += batch.len();
        self.warmup.push(batch);
        if self.warmup_len < self.settings.fit.model.warmup_records {
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

    /// Has the first model trained on the held-back records (exactly the first
    /// `warmup_records`; fewer at the end of an offline input), then scores every
    /// held-back batch.
    fn train_on_warmup(&mut self) -> Result<Vec<Scored>, ModelError> {
        let fit = &self.settings.fit;
        let rows: Vec<f32> = self
            .warmup
            .iter()
            .flat_map(|b| b.features.iter().copied())
            .take(fit.model.warmup_records * fit.features.len())
            .collect();
        let det = trainer::first_model(fit, &rows, &self.train_metrics)?;
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
    metrics: &ScorerMetrics,
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
    let norm_hist = metrics.normalized.local();
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
        metrics.likelihood_state.set_keys(k.keys());
    }
    metrics.likelihood_evictions.inc_by(judge.take_evictions());
    metrics.duration.observe(started.elapsed().as_secs_f64());
    metrics.batch_size.observe(n as f64);
    metrics.scored.inc_by((n - v.unscored) as u64);
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
                .with_label_values(&[settings.fit.features[f].as_str()])
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
            scorer.tick();
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
