//! `anomalyd eval`: trains a model per input file (or takes externally produced scores)
//! and reports detection quality (AUROC, AUPRC, F1 at the model's threshold, the NAB
//! score), through the daemon's own decode, window, model and decision code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use anomalyd_detect::metrics::{auprc, auroc, best_f1};
use anomalyd_detect::nab::{self, LabelWindows, NabTimestamp, Profile};

use super::eval_plot::{PlotData, write_png};
use super::files::{load, model_err, other, select_device};
use crate::cli::EvalArgs;
use crate::config::{Settings, ThresholdSpec};
use crate::error::AppError;
use crate::model::judge::{Judge, Verdicts};
use crate::model::likelihood::{Keyed, LikelihoodParams};
use crate::model::{Detector, ModelError};

/// Scores a series' rows with `det` and judges them in order, through the daemon's own
/// decision path ([`Judge`]) configured as the daemon would be, except that the
/// likelihood's warm-up is at most the training prefix (`first_eval` records): `eval`
/// knows a series from its first record. Returns the scores and the verdicts.
pub fn judge_series(
    det: &Detector,
    settings: &Settings,
    rows: &[f32],
    first_eval: usize,
) -> Result<(Vec<f32>, Verdicts), ModelError> {
    let dim = det.dim();
    let (mut scores, mut errors) = (Vec::new(), Vec::new());
    for chunk in rows.chunks(65_536 * dim) {
        let out = det.score(chunk)?;
        scores.extend(out.scores);
        errors.extend(out.feature_errors);
    }
    let likelihood = match settings.threshold {
        ThresholdSpec::Likelihood {
            params, max_keys, ..
        } => {
            let warmup = if first_eval > 0 {
                params.warmup.min(first_eval)
            } else {
                params.warmup
            };
            Some(Keyed::new(LikelihoodParams { warmup, ..params }, max_keys))
        }
        _ => None,
    };
    let mut judge = Judge::new(
        det.meta.threshold.clone(),
        likelihood,
        settings.top_features,
        settings.input.value_feature(),
    );
    let verdicts = judge.judge(det.scale(), &scores, &errors, rows, |_| None);
    Ok((scores, verdicts))
}

#[derive(Debug, Serialize)]
pub struct FileReport {
    pub file: String,
    pub rows: usize,
    pub train_rows: usize,
    pub eval_rows: usize,
    pub labelled_anomalies: usize,
    pub alerts: usize,
    pub auroc: Option<f64>,
    pub auprc: Option<f64>,
    pub best_f1: Option<f64>,
    /// Precision, recall and F1 of the alerts at the model's own threshold.
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
}

/// A file the model could not be trained on (e.g. too few distinct scores for SPOT).
#[derive(Debug, Serialize)]
pub struct Skipped {
    pub file: String,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct NabReport {
    /// Files in the NAB corpus score (skipped files are not).
    pub files: usize,
    pub standard: f64,
    pub reward_low_fp: f64,
    pub reward_low_fn: f64,
}

#[derive(Debug, Serialize)]
pub struct EvalReport {
    pub model: String,
    pub threshold: String,
    pub files: Vec<FileReport>,
    pub skipped: Vec<Skipped>,
    pub mean_auroc: Option<f64>,
    pub mean_auprc: Option<f64>,
    pub mean_best_f1: Option<f64>,
    pub nab: Option<NabReport>,
}

fn mean(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let xs: Vec<f64> = v.flatten().collect();
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// The label-windows key of a NAB file: its last two path components
/// (`category/file.csv`), else the one key naming the same file.
fn nab_key(path: &Path, windows: &LabelWindows) -> String {
    let parts: Vec<String> = path
        .iter()
        .rev()
        .take(2)
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let key = parts.iter().rev().cloned().collect::<Vec<_>>().join("/");
    if windows.0.contains_key(&key) {
        return key;
    }
    let suffix = format!("/{}", parts.first().map(String::as_str).unwrap_or_default());
    windows
        .0
        .keys()
        .find(|k| k.ends_with(&suffix))
        .cloned()
        .unwrap_or(key)
}

pub fn eval(settings: &Settings, args: &EvalArgs) -> Result<(), AppError> {
    let windows = match &args.labels {
        Some(p) => Some(LabelWindows::read(p).map_err(|e| other(format!("{}: {e}", p.display())))?),
        None => None,
    };
    if let (Some(scores), Some(windows)) = (&args.scores, &windows) {
        return eval_scores(args, scores, windows);
    }
    let device = select_device(settings)?;
    let train_file = match &args.train {
        Some(p) => Some(load(settings, p, args.format, None)?),
        None => None,
    };
    if let Some(dir) = &args.plot {
        std::fs::create_dir_all(dir)?;
    }
    let bar = ProgressBar::new(args.input.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let mut corpus = Vec::new();
    for path in &args.input {
        bar.set_message(
            path.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let data = load(settings, path, args.format, args.label_column.as_deref())?;
        let n = data.len();
        let dim = settings.input.dim();
        let (train_rows, first_eval) = match &train_file {
            Some(t) => (t.vectors.clone(), 0),
            None => {
                let k = args
                    .train_records
                    .unwrap_or((args.train_fraction * n as f64).ceil() as usize)
                    .clamp(2.min(n), n);
                (data.vectors[..k * dim].to_vec(), k)
            }
        };
        let det = match Detector::train(
            &train_rows,
            settings.input.feature_names(),
            &settings.model,
            settings.threshold,
            1,
            device,
        ) {
            Ok(det) => det,
            Err(e) => {
                // One unusable file does not void the corpus: it is reported and skipped.
                let reason = e.to_string();
                bar.suspend(|| eprintln!("{}: skipped: {reason}", path.display()));
                skipped.push(Skipped {
                    file: path.display().to_string(),
                    reason,
                });
                bar.inc(1);
                continue;
            }
        };
        let (scores, verdicts) =
            judge_series(&det, settings, &data.vectors, first_eval).map_err(model_err)?;
        let Verdicts {
            thresholds,
            anomalies,
            normalized,
            likelihood,
            ..
        } = verdicts;
        // With the likelihood, it decides the alerts and is the score NAB sees; else the
        // normalised score is.
        let nab_scores = if likelihood.is_empty() {
            normalized.iter().map(|&v| f64::from(v)).collect()
        } else {
            likelihood
        };

        // Labels: a column, or NAB windows by timestamp.
        let mut index_windows = Vec::new();
        let mut labels: Vec<Option<bool>> = data.labels.clone();
        if let Some(w) = &windows {
            let key = nab_key(path, w);
            let table =
                nab::DataFile::read(path).map_err(|e| other(format!("{}: {e}", path.display())))?;
            if table.timestamps.len() != n {
                return Err(other(format!(
                    "{}: {} rows but {} decodable records",
                    path.display(),
                    table.timestamps.len(),
                    n
                )));
            }
            let series = w
                .series(&key, &table, nab_scores)
                .map_err(|e| other(format!("{key}: {e}")))?;
            index_windows = series.windows().to_vec();
            labels = (0..n)
                .map(|i| Some(index_windows.iter().any(|&(s, e)| i >= s && i <= e)))
                .collect();
            corpus.push(series);
        }

        let eval_idx: Vec<usize> = (first_eval..n).filter(|&i| labels[i].is_some()).collect();
        let ys: Vec<bool> = eval_idx.iter().map(|&i| labels[i] == Some(true)).collect();
        let ss: Vec<f64> = eval_idx.iter().map(|&i| scores[i] as f64).collect();
        let metric =
            |r: Result<Option<f64>, anomalyd_detect::metrics::MetricsError>| r.ok().flatten();
        let (tp, fp, fn_) = eval_idx
            .iter()
            .fold((0usize, 0usize, 0usize), |(tp, fp, fn_), &i| {
                match (anomalies[i], labels[i] == Some(true)) {
                    (true, true) => (tp + 1, fp, fn_),
                    (true, false) => (tp, fp + 1, fn_),
                    (false, true) => (tp, fp, fn_ + 1),
                    (false, false) => (tp, fp, fn_),
                }
            });
        let precision = (tp + fp > 0).then(|| tp as f64 / (tp + fp) as f64);
        let recall = (tp + fn_ > 0).then(|| tp as f64 / (tp + fn_) as f64);
        let f1 = match (precision, recall) {
            (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
            (Some(_), Some(_)) => Some(0.0),
            _ => None,
        };
        let report = FileReport {
            file: path.display().to_string(),
            rows: n,
            train_rows: train_rows.len() / dim.max(1),
            eval_rows: eval_idx.len(),
            labelled_anomalies: ys.iter().filter(|&&y| y).count(),
            alerts: eval_idx.iter().filter(|&&i| anomalies[i]).count(),
            auroc: metric(auroc(&ss, &ys)),
            auprc: metric(auprc(&ss, &ys)),
            best_f1: best_f1(&ss, &ys).ok().flatten().map(|b| b.f1),
            precision,
            recall,
            f1,
        };
        if let Some(dir) = &args.plot {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "series".into());
            let out: PathBuf = dir.join(format!("{stem}.png"));
            if index_windows.is_empty() {
                index_windows = runs(&labels);
            }
            write_png(
                &out,
                &PlotData {
                    title: &format!("{} ({})", stem, settings.model.kind.as_str()),
                    values: &data.values,
                    scores: &scores,
                    thresholds: &thresholds,
                    anomalies: &anomalies,
                    windows: &index_windows,
                    train_rows: first_eval,
                },
            )
            .map_err(|e| other(format!("plot {}: {e}", out.display())))?;
        }
        files.push(report);
        bar.inc(1);
    }
    bar.finish_and_clear();

    let nab = if corpus.is_empty() {
        None
    } else {
        Some(nab_report(&corpus)?)
    };
    let report = EvalReport {
        model: settings.model.kind.as_str().to_string(),
        threshold: format!("{:?}", settings.threshold),
        mean_auroc: mean(files.iter().map(|f| f.auroc)),
        mean_auprc: mean(files.iter().map(|f| f.auprc)),
        mean_best_f1: mean(files.iter().map(|f| f.best_f1)),
        files,
        skipped,
        nab,
    };
    print_report(&report);
    if let Some(p) = &args.report {
        std::fs::write(
            p,
            serde_json::to_vec_pretty(&report).map_err(std::io::Error::other)?,
        )?;
    }
    if report.files.is_empty() && !report.skipped.is_empty() {
        return Err(other(format!(
            "no input could be evaluated ({} skipped)",
            report.skipped.len()
        )));
    }
    Ok(())
}

/// One externally scored record: a row of `eval --scores`'s CSV.
#[derive(Debug, serde::Deserialize)]
struct ScoreRow {
    series: String,
    timestamp: String,
    score: f64,
}

/// Per-record scores from a `series,timestamp,score` CSV, by NAB key and timestamp.
fn read_scores(path: &Path) -> Result<HashMap<String, HashMap<NabTimestamp, f64>>, AppError> {
    let at = |e: &dyn std::fmt::Display| other(format!("{}: {e}", path.display()));
    let mut out: HashMap<String, HashMap<NabTimestamp, f64>> = HashMap::new();
    for row in csv::Reader::from_path(path)
        .map_err(|e| at(&e))?
        .deserialize()
    {
        let row: ScoreRow = row.map_err(|e| at(&e))?;
        let ts = row.timestamp.parse().map_err(|e| at(&e))?;
        out.entry(row.series).or_default().insert(ts, row.score);
    }
    Ok(out)
}

/// `eval --scores`: NAB scores of externally produced per-record scores, matched to each
/// input's records by NAB key and timestamp.
fn eval_scores(args: &EvalArgs, path: &Path, windows: &LabelWindows) -> Result<(), AppError> {
    let mut scores = read_scores(path)?;
    let mut corpus = Vec::with_capacity(args.input.len());
    let (mut rows, mut unscored) = (0usize, 0usize);
    for input in &args.input {
        let key = nab_key(input, windows);
        let table =
            nab::DataFile::read(input).map_err(|e| other(format!("{}: {e}", input.display())))?;
        let given = scores.remove(&key).unwrap_or_default();
        let series_scores: Vec<f64> = table
            .timestamps
            .iter()
            .map(|t| given.get(t).copied())
            .inspect(|s| unscored += usize::from(s.is_none()))
            .map(|s| s.unwrap_or(0.0))
            .collect();
        rows += series_scores.len();
        corpus.push(
            windows
                .series(&key, &table, series_scores)
                .map_err(|e| other(format!("{key}: {e}")))?,
        );
    }
    let nab = nab_report(&corpus)?;
    println!(
        "{} series, {rows} records, {unscored} without a score (scored 0); \
         scores of series not among the inputs: {}",
        nab.files,
        scores.len()
    );
    print_nab(&nab);
    if let Some(p) = &args.report {
        std::fs::write(
            p,
            // The shape of `eval`'s report, NAB part only.
            serde_json::to_vec_pretty(&serde_json::json!({ "nab": nab }))
                .map_err(std::io::Error::other)?,
        )?;
    }
    Ok(())
}

/// The corpus' NAB score under the three standard profiles.
fn nab_report(corpus: &[nab::Series]) -> Result<NabReport, AppError> {
    let score = |p: Profile| {
        nab::corpus_score(corpus, &p)
            .map(|r| r.normalized_score)
            .map_err(|e| other(e.to_string()))
    };
    Ok(NabReport {
        files: corpus.len(),
        standard: score(Profile::standard())?,
        reward_low_fp: score(Profile::reward_low_fp())?,
        reward_low_fn: score(Profile::reward_low_fn())?,
    })
}

/// Runs of consecutive anomalous labels as inclusive index ranges.
fn runs(labels: &[Option<bool>]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, l) in labels.iter().enumerate() {
        if *l == Some(true) {
            match out.last_mut() {
                Some(r) if r.1 + 1 == i => r.1 = i,
                _ => out.push((i, i)),
            }
        }
    }
    out
}

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.3}"))
}

fn print_report(r: &EvalReport) {
    println!("model {} threshold {}", r.model, r.threshold);
    println!(
        "{:<48} {:>7} {:>6} {:>7} {:>6} {:>6} {:>7} {:>6}",
        "file", "rows", "alerts", "auroc", "auprc", "bestF1", "prec", "recall"
    );
    for f in &r.files {
        let name = Path::new(&f.file)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        println!(
            "{:<48} {:>7} {:>6} {:>7} {:>6} {:>6} {:>7} {:>6}",
            name,
            f.rows,
            f.alerts,
            fmt(f.auroc),
            fmt(f.auprc),
            fmt(f.best_f1),
            fmt(f.precision),
            fmt(f.recall)
        );
    }
    println!(
        "mean: auroc {} auprc {} best F1 {}",
        fmt(r.mean_auroc),
        fmt(r.mean_auprc),
        fmt(r.mean_best_f1)
    );
    for f in &r.skipped {
        println!("skipped {}: {}", f.file, f.reason);
    }
    if let Some(n) = &r.nab {
        print_nab(n);
    }
}

fn print_nab(n: &NabReport) {
    println!(
        "NAB score over {} file(s): standard {:.1}, reward_low_fp {:.1}, reward_low_fn {:.1}",
        n.files, n.standard, n.reward_low_fp, n.reward_low_fn
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Activation, InputMode, ModelKind};
    use crate::model::store;
    use crate::pipeline::score::{self, Scorer, ScorerMetrics, ScorerSettings};
    use crate::pipeline::{Batch, Meta, Scored, Timestamp};
    use crate::train::trainer::FitSettings;

    /// One series through the daemon's scorer (fed batches over a channel, with the model
    /// from its store, as the daemon runs it; no Kafka) and through `eval`'s path: the
    /// verdicts are identical, record for record. Window mode with its default decision
    /// (the likelihood fed window discords), a warm-up shorter than the training prefix
    /// (where `eval`'s per-series warm-up is the configured one).
    #[test]
    fn eval_and_the_daemon_scorer_reach_identical_verdicts() {
        let mut raw = crate::config::load_raw(None).expect("defaults");
        raw.input.mode = InputMode::Window;
        raw.input.features = vec!["value".into()];
        raw.input.window.size = 8;
        raw.input.window.differences = false;
        raw.model.kind = ModelKind::Dense;
        raw.model.hidden = vec![16, 3];
        raw.model.activation = Activation::Tanh;
        raw.model.epochs = 20;
        raw.model.min_steps = 0;
        raw.model.seed = 7;
        raw.threshold.likelihood.warmup = 100;
        let settings = Settings::validate(raw).expect("valid");
        assert!(matches!(
            settings.threshold,
            ThresholdSpec::Likelihood { .. }
        ));
        // A periodic series in windows of 8, with a burst at record 900.
        let series: Vec<f32> = (0..1_207)
            .map(|i| (i as f32 * 0.3).sin() + if (900..903).contains(&i) { 4.0 } else { 0.0 })
            .collect();
        let rows: Vec<f32> = series.windows(8).flatten().copied().collect();
        let n = rows.len() / 8;
        let first_eval = 400;
        tch::set_num_threads(1);
        let det = Detector::train(
            &rows[..first_eval * 8],
            settings.input.feature_names(),
            &settings.model,
            settings.threshold,
            1,
            tch::Device::Cpu,
        )
        .expect("trains");
        let store_dir = tempfile::tempdir().expect("tempdir");
        store::save(store_dir.path(), &det).expect("saves");

        let (scores, eval) = judge_series(&det, &settings, &rows, first_eval).expect("judged");

        let (metrics, train_metrics) = ScorerMetrics::unregistered();
        let mut scorer = Scorer::new(
            ScorerSettings {
                fit: FitSettings {
                    features: settings.input.feature_names(),
                    model: settings.model.clone(),
                    threshold: settings.threshold,
                    device: tch::Device::Cpu,
                    store_dir: Some(store_dir.path().to_owned()),
                    keep: 3,
                },
                top_features: settings.top_features,
                value_feature: settings.input.value_feature(),
                publish: None,
            },
            None,
            metrics,
            train_metrics,
        )
        .expect("scorer");
        let (batches, batches_rx) = crossbeam_channel::bounded(4);
        let (scored_tx, scored) = crossbeam_channel::unbounded::<Scored>();
        let thread = std::thread::spawn(move || score::run(&mut scorer, batches_rx, scored_tx));
        for (b, chunk) in rows.chunks(97 * 8).enumerate() {
            let metas = (0..chunk.len() / 8)
                .map(|i| Meta {
                    partition: 0,
                    offset: (b * 97 + i) as i64,
                    key: None,
                    timestamp: Timestamp::None,
                })
                .collect();
            let batch = Batch {
                metas,
                features: chunk.to_vec(),
            };
            batches.send(batch).expect("scorer running");
        }
        drop(batches);
        thread.join().expect("no panic").expect("scored");
        let daemon: Vec<Scored> = scored.iter().collect();
        let all = |f: fn(&Scored) -> Vec<f32>| daemon.iter().flat_map(f).collect::<Vec<_>>();

        assert_eq!(all(|s| s.scores.clone()), scores);
        let alerts_of = |a: &[bool]| (0..a.len()).filter(|&i| a[i]).collect::<Vec<_>>();
        let daemon_anomalies: Vec<bool> = daemon.iter().flat_map(|s| s.anomalies.clone()).collect();
        assert_eq!(alerts_of(&daemon_anomalies), alerts_of(&eval.anomalies));
        assert_eq!(daemon_anomalies.len(), eval.anomalies.len());
        assert_eq!(all(|s| s.thresholds.clone()), eval.thresholds);
        assert_eq!(all(|s| s.normalized.clone()), eval.normalized);
        let eval_likelihood: Vec<f32> = eval.likelihood.iter().map(|&l| l as f32).collect();
        assert_eq!(all(|s| s.likelihood.clone()), eval_likelihood);
        assert_eq!(eval.likelihood.len(), n);
        let eval_discord: Vec<f32> = eval.discord.iter().map(|&d| d as f32).collect();
        assert_eq!(all(|s| s.discord.clone()), eval_discord);
        // Not vacuous: the burst is found, and explained the same way.
        let alerts: Vec<usize> = (0..n).filter(|&i| eval.anomalies[i]).collect();
        assert!(
            alerts.iter().any(|i| (893..903).contains(i)),
            "alerts at {alerts:?}"
        );
        let daemon_explanations: Vec<_> = daemon
            .iter()
            .scan(0, |base, s| {
                let out: Vec<_> = s
                    .explanations
                    .iter()
                    .map(|(i, why)| (*base + i, why.clone()))
                    .collect();
                *base += s.metas.len();
                Some(out)
            })
            .flatten()
            .collect();
        assert_eq!(daemon_explanations, eval.explanations);
    }
}
