//! Wiring only: builds the clients and channels, spawns each stage on its own thread, and
//! supervises them. The first stage error cancels the rest; SIGTERM drains them.
//!
//! ```text
//!  source ──Record──▶ batch ──Batch──▶ score ──Scored──▶ sink
//!                                        ├─Job◀─▶Outcome── train  (roles all, trainer)
//!                                        └─version──▶ publish   (role trainer)
//!  models (role scorer: model topic → store) ─CURRENT─▶ score
//! ```

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use rdkafka::config::FromClientConfigAndContext;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Role, Settings};
use crate::error::{AppError, PipelineError};
use crate::http::{self, Health};
use crate::model::{device, store};
use crate::pipeline::batch;
use crate::pipeline::cluster::{ClusterMetrics, Follower, Publisher};
use crate::pipeline::kafka::{self, Consumer_, DeliveryContext, Producer, SourceContext};
use crate::pipeline::offsets::OffsetTracker;
use crate::pipeline::probe::{Probe, ProbeMetrics};
use crate::pipeline::score::{self, Scorer, ScorerMetrics, ScorerSettings};
use crate::pipeline::sink::{Sink, SinkMetrics};
use crate::pipeline::source::{Source, SourceMetrics};
use crate::telemetry::{StateMetrics, Telemetry};
use crate::train::TrainMetrics;
use crate::train::schedule::Retrainer;
use crate::train::trainer::{self, FitSettings, TrainerSettings};

type StageExit = (&'static str, Result<(), PipelineError>);

/// The stages' metrics, each registered by its stage's type at start, so that `/metrics`
/// shows every one from the first scrape, before the pipeline runs.
struct StageMetrics {
    source: SourceMetrics,
    linger: prometheus::Histogram,
    scorer: ScorerMetrics,
    train: TrainMetrics,
    sink: SinkMetrics,
    cluster: ClusterMetrics,
}

impl StageMetrics {
    fn register(r: &prometheus::Registry, settings: &Settings) -> Self {
        let state = StateMetrics::register(r, &settings.state);
        let scorer = ScorerMetrics::register(r, state.likelihood);
        StageMetrics {
            source: SourceMetrics::register(r, state.window),
            linger: batch::register_linger(r),
            cluster: ClusterMetrics::register(
                r,
                settings.cluster.role,
                scorer.models_rejected.clone(),
            ),
            scorer,
            train: TrainMetrics::register(r),
            sink: SinkMetrics::register(r),
        }
    }
}

/// Runs `f` on a named thread and reports how it ended (a panic is an error too).
fn spawn_stage<F>(name: &'static str, exits: mpsc::UnboundedSender<StageExit>, f: F)
where
    F: FnOnce() -> Result<(), PipelineError> + Send + 'static,
{
    let spawned = std::thread::Builder::new()
        .name(format!("anomalyd-{name}"))
        .spawn(move || {
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
                    Err(PipelineError::Panicked(
                        name,
                        crate::error::panic_message(&*p),
                    ))
                });
            let _ = exits.send((name, result));
        });
    if let Err(e) = spawned {
        panic!("cannot spawn thread {name}: {e}");
    }
}

/// The topics a replica of `settings`' role reads and writes, each with its setting.
fn required_topics(settings: &Settings) -> Vec<(String, &'static str)> {
    let k = &settings.kafka;
    let mut topics = vec![(k.input_topic.clone(), "kafka.input_topic")];
    if settings.cluster.role != Role::Trainer {
        topics.push((k.scores_topic.clone(), "kafka.scores_topic"));
        topics.push((k.alerts_topic.clone(), "kafka.alerts_topic"));
        topics.push((k.dlq_topic.clone(), "kafka.dlq_topic"));
    }
    if settings.cluster.role != Role::All {
        topics.push((settings.cluster.model_topic.clone(), "cluster.model_topic"));
    }
    topics
}

pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), AppError> {
    let telemetry = Arc::new(Telemetry::new());
    let metrics = StageMetrics::register(telemetry.registry(), &settings);
    let probe = Probe::new(
        &settings.kafka,
        required_topics(&settings),
        ProbeMetrics::register(telemetry.registry()),
    )?;
    let health = Arc::new(Health {
        ready: Default::default(),
        kafka: probe.ok.clone(),
    });
    let role = settings.cluster.role;

    let (listener, addr) =
        http::bind(settings.http_listen)
            .await
            .map_err(|source| AppError::Http {
                addr: settings.http_listen,
                source,
            })?;
    tracing::info!(%addr, role = role.as_str(), "http server listening (/metrics /healthz /readyz)");
    let http_stop = CancellationToken::new();
    let http_task = tokio::spawn(http::serve(
        listener,
        telemetry.clone(),
        health.clone(),
        http_stop.clone(),
    ));
    let signals = tokio::spawn(crate::shutdown::on_signal(shutdown.clone()));
    let (exit_tx, mut exit_rx) = mpsc::unbounded_channel();
    let mut running = 0;
    let mut first_error: Option<PipelineError> = None;

    // Nothing starts until the broker answers and has every topic: not-ready meanwhile,
    // and never a crash (a broker that is down or a topic not yet created is waited out).
    let probe_stop = CancellationToken::new();
    let mut start = {
        let stop = shutdown.clone();
        let (probe, ready) = tokio::task::spawn_blocking(move || {
            let ready = probe.wait_ready(&stop);
            (probe, ready)
        })
        .await
        .map_err(|e| AppError::Io(std::io::Error::other(e)))?;
        if ready {
            tracing::info!(brokers = %settings.kafka.brokers, "the broker answers and has every topic");
        }
        let stop = probe_stop.clone();
        std::thread::Builder::new()
            .name("anomalyd-probe".into())
            .spawn(move || probe.run(stop))?;
        ready
    };

    // A scorer follows the model topic and starts consuming only once it has a model.
    if start && role == Role::Scorer {
        let store = settings.runtime.store_dir.clone().unwrap_or_default();
        let follower = Follower::new(
            &settings.kafka,
            &settings.cluster,
            store.clone(),
            settings.runtime.keep,
            settings.input.feature_names(),
            metrics.cluster.clone(),
        )?;
        let caught_up = follower.caught_up.clone();
        let stop = shutdown.clone();
        spawn_stage("models", exit_tx.clone(), move || follower.run(stop));
        running += 1;
        let mut last_log: Option<Instant> = None;
        let mut checked: Option<u64> = None;
        let features = settings.input.feature_names();
        loop {
            // A version in the store serves only once it passes its checks; a store holding
            // none that does keeps the scorer waiting (not ready) for the model topic.
            let current = if caught_up.load(Ordering::Acquire) {
                store::current(&store).map_err(PipelineError::from)?
            } else {
                None
            };
            if let Some(v) = current.filter(|&v| checked != Some(v)) {
                checked = Some(v);
                let (dir, f) = (store.clone(), features.clone());
                let valid = tokio::task::spawn_blocking(move || {
                    store::load_serving(&dir, &f, tch::Device::Cpu)
                })
                .await
                .map_err(|e| AppError::Io(std::io::Error::other(e)))?
                .map_err(PipelineError::from)?;
                if valid.0.is_some() {
                    break;
                }
                tracing::warn!(version = v, "no model in the store passes its checks");
            }
            if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                tracing::info!(topic = %settings.cluster.model_topic, key = %settings.cluster.model_key, "waiting for the trainer's model");
                last_log = Some(Instant::now());
            }
            tokio::select! {
                _ = shutdown.cancelled() => { start = false; break; }
                Some((name, result)) = exit_rx.recv() => {
                    running -= 1;
                    note_exit(name, result, &mut first_error);
                    shutdown.cancel();
                    start = false;
                    break;
                }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
    if start {
        running += spawn_pipeline(&settings, &metrics, &shutdown, &exit_tx)?;
        health.ready.store(true, Ordering::Relaxed);
    }
    drop(exit_tx);

    // Until shutdown is asked for or a stage ends, wait; then give the stages the drain
    // deadline (plus a margin for the final commit) to finish.
    tokio::select! {
        _ = shutdown.cancelled() => {}
        Some((name, result)) = exit_rx.recv() => {
            running -= 1;
            note_exit(name, result, &mut first_error);
            shutdown.cancel();
        }
    }
    health.ready.store(false, Ordering::Relaxed);
    let deadline = settings.batch.drain_timeout + Duration::from_secs(5);
    let drained = tokio::time::timeout(deadline, async {
        while running > 0 {
            match exit_rx.recv().await {
                Some((name, result)) => {
                    running -= 1;
                    note_exit(name, result, &mut first_error);
                }
                None => break,
            }
        }
    })
    .await;
    probe_stop.cancel();
    http_stop.cancel();
    let _ = http_task.await;
    signals.abort();
    if let Some(e) = first_error {
        return Err(e.into());
    }
    if drained.is_err() {
        return Err(AppError::DrainTimeout(deadline));
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Builds the clients and spawns source, batch, score, sink (and train, and the trainer
/// role's publisher).
/// Returns how many stages it started.
fn spawn_pipeline(
    settings: &Settings,
    metrics: &StageMetrics,
    shutdown: &CancellationToken,
    exit_tx: &mpsc::UnboundedSender<StageExit>,
) -> Result<usize, AppError> {
    let role = settings.cluster.role;
    let k = &settings.kafka;
    let tracker = Arc::new(OffsetTracker::new());
    let (fail_tx, fail_rx) = bounded(16);
    let (refused_tx, refused_rx) = crossbeam_channel::unbounded();
    let producer: Arc<Producer> = Arc::new(
        Producer::from_config_and_context(
            &kafka::producer_config(k)?,
            DeliveryContext::new(
                k,
                tracker.clone(),
                metrics.sink.clone(),
                fail_tx,
                refused_tx,
            ),
        )
        .map_err(PipelineError::from)?,
    );
    let consumer = Consumer_::from_config_and_context(
        &kafka::consumer_config(k)?,
        SourceContext {
            tracker: tracker.clone(),
            topic: k.input_topic.clone(),
            metrics: metrics.source.clone(),
        },
    )
    .map_err(PipelineError::from)?;
    let mut stages = 4;

    let cap = settings.batch.channel_capacity;
    let (rec_tx, rec_rx) = bounded(cap);
    let (batch_tx, batch_rx) = bounded(4);
    let (scored_tx, scored_rx) = bounded(4);
    let (done_tx, done_rx) = bounded::<()>(0);
    let (dead_tx, dead_rx) = bounded(1024);

    let source = Source {
        consumer,
        tracker: tracker.clone(),
        metrics: metrics.source.clone(),
        input: settings.input.clone(),
        topic: k.input_topic.clone(),
        dead_letters: role != Role::Trainer,
        commit_interval: k.commit_interval,
        drain_timeout: settings.batch.drain_timeout,
        max_in_flight: settings.batch.max_in_flight,
        failures: fail_rx,
        sink_done: done_rx,
    };
    let stop = shutdown.clone();
    spawn_stage("source", exit_tx.clone(), move || {
        source.run(rec_tx, dead_tx, stop)
    });

    let policy = settings.batch;
    let dim = settings.input.dim();
    let linger = metrics.linger.clone();
    spawn_stage("batch", exit_tx.clone(), move || {
        batch::run(rec_rx, batch_tx, policy, dim, &linger);
        Ok(())
    });

    let publish = match (role, &settings.runtime.store_dir) {
        (Role::Trainer, Some(store)) => {
            let publisher =
                Publisher::new(k, &settings.cluster, store.clone(), metrics.cluster.clone())?;
            let (tx, rx) = crossbeam_channel::unbounded();
            spawn_stage("publish", exit_tx.clone(), move || publisher.run(rx));
            stages += 1;
            Some(tx)
        }
        _ => None,
    };
    let fit = FitSettings {
        features: settings.input.feature_names(),
        model: settings.model.clone(),
        threshold: settings.threshold,
        device: tch::Device::Cpu,
        store_dir: settings.runtime.store_dir.clone(),
        keep: settings.runtime.keep,
    };
    let runtime = settings.runtime.clone();
    // The trainer stage fits retraining candidates beside the scorer (roles all and
    // trainer; a scorer serves what the trainer publishes and never trains). A run under
    // way when the daemon stops is abandoned.
    let retrainer = (role != Role::Scorer).then(|| {
        let (link, jobs, outcomes) = trainer::link();
        let trainer_settings = TrainerSettings {
            fit: fit.clone(),
            policy: settings.retrain,
        };
        let mut stage_settings = trainer_settings.clone();
        let (stop, choice) = (shutdown.clone(), runtime.device);
        spawn_stage("train", exit_tx.clone(), move || {
            stage_settings.fit.device = device::select(choice)?;
            trainer::run(stage_settings, jobs, outcomes, stop);
            Ok(())
        });
        stages += 1;
        Retrainer::new(trainer_settings, link, metrics.train.clone())
    });
    let mut scorer_settings = ScorerSettings {
        fit,
        top_features: settings.top_features,
        publish,
        value_feature: settings.input.value_feature(),
    };
    let (scorer_metrics, train_metrics) = (metrics.scorer.clone(), metrics.train.clone());
    spawn_stage("score", exit_tx.clone(), move || {
        // The model is loaded, trained on the warm-up records and served on this thread.
        let device = device::select(runtime.device)?;
        let threads = device::set_threads(runtime.threads);
        tracing::info!(?device, threads, "scorer started");
        scorer_settings.fit.device = device;
        let mut scorer = Scorer::new(scorer_settings, retrainer, scorer_metrics, train_metrics)?;
        scorer.restore_likelihood();
        score::run(&mut scorer, batch_rx, scored_tx)?;
        scorer.save_likelihood()?;
        Ok(())
    });

    let sink = Sink {
        producer,
        scores_topic: k.scores_topic.clone(),
        alerts_topic: k.alerts_topic.clone(),
        dlq_topic: k.dlq_topic.clone(),
        feature_names: settings.input.feature_names(),
        tracker,
        metrics: metrics.sink.clone(),
        discard: role == Role::Trainer,
        drain_timeout: settings.batch.drain_timeout,
        cancel: shutdown.clone(),
    };
    spawn_stage("sink", exit_tx.clone(), move || {
        sink.run(scored_rx, dead_rx, refused_rx, done_tx)
    });
    Ok(stages)
}

fn note_exit(name: &str, result: Result<(), PipelineError>, first: &mut Option<PipelineError>) {
    match result {
        Ok(()) => tracing::debug!(stage = name, "stage finished"),
        Err(e) => {
            tracing::error!(stage = name, code = e.code(), error = %e, "stage failed");
            first.get_or_insert(e);
        }
    }
}
