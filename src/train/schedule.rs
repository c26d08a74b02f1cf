//! When to retrain: the scorer hands each judged batch to the [`Retrainer`], which keeps the
//! window of recent normal records, decides when a trigger fires (records, interval, or an
//! alert rate past the budget), sends the trainer stage its job (`train::trainer::run`, a
//! stage of its own that the app spawns and supervises like the others), and turns the
//! outcome into a model to serve. The scorer itself only scores.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::TrainMetrics;
use super::gate::HoldoutStats;
use super::normal_window::NormalWindow;
use super::trainer::{Job, Outcome, TrainerLink, TrainerSettings};
use crate::model::{Detector, ModelError};

/// Retraining state: the normal window, the triggers, the backoff, and the channels to the
/// trainer stage.
pub struct Retrainer {
    settings: TrainerSettings,
    metrics: TrainMetrics,
    window: NormalWindow,
    jobs: Sender<Job>,
    outcomes: Receiver<Outcome>,
    in_flight: bool,
    /// The trainer stage is gone (its channel closed).
    stage_ended: bool,
    last_run: Instant,
    since_run: u64,
    recent: VecDeque<bool>,
    recent_alerts: usize,
    /// Consecutive failed runs (panicked, failed, not saved), and no new run before
    /// `not_before`: a failing trainer is retried with exponential backoff.
    failures: u32,
    not_before: Instant,
}

impl Retrainer {
    /// Retraining that follows `settings.policy`, with the trainer stage at the other end
    /// of `link` ([`trainer::link`]; the stage runs [`trainer::run`]).
    pub fn new(settings: TrainerSettings, link: TrainerLink, metrics: TrainMetrics) -> Self {
        let policy = settings.policy;
        Retrainer {
            window: NormalWindow::new(settings.fit.features.len(), policy.window, policy.margin),
            settings,
            metrics,
            jobs: link.jobs,
            outcomes: link.outcomes,
            in_flight: false,
            stage_ended: false,
            last_run: Instant::now(),
            since_run: 0,
            recent: VecDeque::new(),
            recent_alerts: 0,
            failures: 0,
            not_before: Instant::now(),
        }
    }

    /// A run failed: back off before the next one (10 s, doubling, at most 10 min).
    fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
        let backoff = Duration::from_secs(10 << self.failures.min(6)).min(Duration::from_secs(600));
        self.not_before = Instant::now() + backoff;
    }

    /// The trainer stage has ended (shutdown, or its failure, which the app's supervisor
    /// reports and which stops the daemon): no more runs.
    fn stage_ended(&mut self) {
        if !self.stage_ended {
            tracing::info!("the trainer stage has ended: no more retraining");
        }
        self.stage_ended = true;
        self.in_flight = false;
    }

    /// Whether a run is under way.
    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Takes in a judged batch of `records` records: its scored records' (features, input
    /// offset, anomaly), in order.
    pub fn observe<'a>(
        &mut self,
        judged: impl Iterator<Item = (&'a [f32], i64, bool)>,
        records: u64,
    ) {
        for (features, offset, anomaly) in judged {
            self.window.observe(features, offset, anomaly);
            self.recent.push_back(anomaly);
            self.recent_alerts += usize::from(anomaly);
            if self.recent.len() as u64 > self.settings.policy.drift_records.max(1) {
                self.recent_alerts -= usize::from(self.recent.pop_front().unwrap_or(false));
            }
        }
        self.since_run += records;
        self.metrics.window_records.set(self.window.len() as i64);
        self.metrics.recent_alert_rate.set(self.alert_rate());
    }

    fn alert_rate(&self) -> f64 {
        self.recent_alerts as f64 / self.recent.len().max(1) as f64
    }

    /// Which trigger fires now, if any.
    pub fn due(&self) -> Option<&'static str> {
        if self.in_flight
            || self.stage_ended
            || self.window.len() < self.settings.policy.min_records
            || Instant::now() < self.not_before
        {
            return None;
        }
        let p = &self.settings.policy;
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

    /// Sends the trainer a job: the window's snapshot, split into training and held-out
    /// records, with the serving model's stats on the held-out ones.
    pub fn start(&mut self, serving: &Detector, trigger: &str) -> Result<(), ModelError> {
        let (rows, span) = self.window.snapshot();
        let dim = serving.dim();
        let n = rows.len() / dim;
        let held = ((n as f64 * self.settings.policy.holdout).ceil() as usize)
            .clamp(1, n.saturating_sub(2).max(1));
        let (train, holdout) = rows.split_at((n - held) * dim);
        let serving_stats = HoldoutStats::of(&serving.score(holdout)?.scores, serving.threshold());
        let version = self.settings.fit.next_version(serving.version())?;
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
            Err(_) => self.stage_ended(),
        }
        self.last_run = Instant::now();
        self.since_run = 0;
        Ok(())
    }

    /// Takes the trainer's outcome when it has finished: counts it, backs off after a
    /// failure or a panicked run, and returns a promoted model for the scorer to serve.
    pub fn poll(&mut self) -> Option<Detector> {
        let outcome = match self.outcomes.try_recv() {
            Ok(o) => o,
            Err(crossbeam_channel::TryRecvError::Empty) => return None,
            Err(crossbeam_channel::TryRecvError::Disconnected) => {
                self.stage_ended();
                return None;
            }
        };
        self.in_flight = false;
        // A handle to the counters (cheap), as `self` is borrowed mutably below.
        let m = self.metrics.clone();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        m.last_run.set(now);
        match outcome {
            Outcome::Promoted { detector, seconds } => {
                self.failures = 0;
                m.duration.observe(seconds);
                m.runs.with_label_values(&["promoted"]).inc();
                tracing::info!(version = detector.version(), "promoted the retrained model");
                Some(*detector)
            }
            Outcome::Rejected {
                reason,
                version,
                seconds,
            } => {
                m.duration.observe(seconds);
                let result = if matches!(reason, "training_failed" | "save_failed") {
                    self.failed();
                    "failed"
                } else {
                    self.failures = 0;
                    "rejected"
                };
                m.runs.with_label_values(&[result]).inc();
                m.promotion_rejections.with_label_values(&[reason]).inc();
                tracing::warn!(version, reason, "retrained candidate rejected");
                None
            }
            Outcome::Panicked { version, message } => {
                self.failed();
                m.restarts.inc();
                m.runs.with_label_values(&["failed"]).inc();
                tracing::error!(
                    version,
                    message,
                    failures = self.failures,
                    "the trainer panicked; it goes on with the next run, after a backoff"
                );
                None
            }
        }
    }
}
