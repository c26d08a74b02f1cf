//! `anomalyd train` and `anomalyd eval`: the same decode, window and model code as the
//! daemon, over files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::metrics::{auprc, auroc, best_f1};
use super::nab::{self, LabelWindows, NabTimestamp, Profile};
use super::plot::{PlotData, write_png};
use crate::cli::{EvalArgs, InputFormat, TrainArgs};
use crate::config::{Settings, ThresholdSpec};
use crate::error::{AppError, PipelineError};
use crate::input;
use crate::model::likelihood::{ALERT_LEVEL, Likelihood, LikelihoodParams};
use crate::model::{Detector, ModelError, device, store};
use crate::pipeline::Timestamp;
use crate::pipeline::window::Shaper;

fn model_err(e: ModelError) -> AppError {
    PipelineError::from(e).into()
}

fn other(msg: String) -> AppError {
    AppError::Io(std::io::Error::other(msg))
}

/// A file's decodable records as model vectors, in order.
struct Loaded {
    vectors: Vec<f32>,
    labels: Vec<Option<bool>>,
    /// The first input value of each record (plots).
    values: Vec<f32>,
    timestamps: Vec<Timestamp>,
    undecodable: usize,
}

impl Loaded {
    fn len(&self) -> usize {
        self.values.len()
    }
}

fn load(
    settings: &Settings,
    path: &Path,
    format: InputFormat,
    label: Option<&str>,
) -> Result<Loaded, AppError> {
    let mut shaper = Shaper::new(&settings.input);
    let mut out = Loaded {
        vectors: Vec::new(),
        labels: Vec::new(),
        values: Vec::new(),
        timestamps: Vec::new(),
        undecodable: 0,
    };
    input::read(settings, path, format, label, |row| {
        match row.decoded {
            Ok(d) => {
                out.values
                    .push(d.values.first().copied().unwrap_or_default());
                out.vectors.extend(shaper.shape(d.key.as_deref(), d.values));
                out.labels.push(row.label);
                out.timestamps.push(d.timestamp);
            }
            Err(_) => out.undecodable += 1,
        }
        Ok(())
    })?;
    Ok(out)
}

fn select_device(settings: &Settings) -> Result<tch::Device, AppError> {
    let d = device::select(settings.runtime.device).map_err(model_err)?;
    device::set_threads(settings.runtime.threads);
    Ok(d)
}

pub fn train(settings: &Settings, args: &TrainArgs) -> Result<(), AppError> {
    let device = select_device(settings)?;
    let data = load(settings, &args.input, args.format, None)?;
    let version = store::versions(&args.model_out)
        .map_err(model_err)?
        .last()
        .map_or(1, |v| v + 1);
    let det = Detector::train(
        &data.vectors,
        settings.input.feature_names(),
        &settings.model,
        settings.threshold,
        version,
        device,
    )
    .map_err(model_err)?;
    let mut det = det;
    det.meta.lineage.promotion = "train".into();
    let path = store::save(&args.model_out, &det).map_err(model_err)?;
    eprintln!(
        "trained {} v{} on {} records ({} undecodable) in {:.1}s: loss {:.5}, threshold {:.5}; saved {}",
        det.meta.spec.kind.as_str(),
        version,
        data.len(),
        data.undecodable,
        det.meta.training.duration_seconds,
        det.meta.training.final_loss,
        det.threshold(),
        path.display()
    );
    if let Some(sel) = &det.meta.selected_features {
        eprintln!("selected features: {}", sel.join(", "));
    }
    Ok(())
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
        let mut scores = Vec::with_capacity(n);
        for chunk in data.vectors.chunks(65_536 * dim) {
            scores.extend(det.score(chunk).map_err(model_err)?.scores);
        }
        let mut threshold = det.meta.threshold.clone();
        let (mut thresholds, mut anomalies, mut normalized) = (Vec::new(), Vec::new(), Vec::new());
        for &s in &scores {
            let (t, a) = threshold.judge(s);
            thresholds.push(t);
            anomalies.push(a);
            normalized.push(det.normalize(s, t) as f64);
        }
        // With the likelihood, it decides the alerts and is the score NAB sees. Its warm-up
        // is at most the training prefix (a series is known from its first row here).
        let nab_scores = match settings.threshold {
            ThresholdSpec::Likelihood { params, .. } => {
                let warmup = if first_eval > 0 {
                    params.warmup.min(first_eval)
                } else {
                    params.warmup
                };
                let mut l = Likelihood::new(LikelihoodParams { warmup, ..params });
                let value = settings.input.value_feature();
                let out: Vec<f64> = scores
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| {
                        let row = &data.vectors[i * dim..(i + 1) * dim];
                        l.update_record(
                            det.likelihood_input(s),
                            row,
                            value.map(|f| f64::from(row[f])),
                        )
                    })
                    .collect();
                for (a, &o) in anomalies.iter_mut().zip(&out) {
                    *a = o >= ALERT_LEVEL;
                }
                out
            }
            _ => normalized.clone(),
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
        let metric = |r: Result<Option<f64>, super::metrics::MetricsError>| r.ok().flatten();
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
