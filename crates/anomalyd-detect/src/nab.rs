//! Numenta Anomaly Benchmark (NAB) scoring.
//!
//! NAB scores a streaming detector on labelled *anomaly windows* rather than on single
//! points, rewards early detection, and weighs misses against false alarms with an
//! application profile. This module implements the rules of NAB v1.1 as published in
//! Lavin & Ahmad, "Evaluating Real-time Anomaly Detection Algorithms – the Numenta
//! Anomaly Benchmark" (IEEE ICMLA 2015, arXiv:1510.03336), Ahmad et al., "Unsupervised
//! real-time anomaly detection for streaming data" (Neurocomputing 262, 2017), and the
//! reference code in `numenta/NAB` (`nab/sweeper.py`, `nab/scorer.py`,
//! `nab/optimizer.py`, `nab/runner.py::normalize`). It is an independent
//! re-implementation of those rules; no NAB code is included.
//!
//! # The rules
//!
//! For one data file of `n` records:
//!
//! * **Probationary period.** The first `p = min(⌊0.15·n⌋, 0.15·5000 = 750)` records
//!   are a warm-up: detections there are ignored, and records there are not counted in
//!   any tally ([`probationary_length`]).
//! * **Windows.** Window `k` covers records `s_k ..= e_k` (width `w_k = e_k − s_k + 1`).
//!   Windows are disjoint and sorted.
//! * **Scaled sigmoid.** `σ(y) = 2 / (1 + e^{5y}) − 1`, and `σ(y) = −1` for `y > 3`
//!   ([`scaled_sigmoid`]). `σ(−1) ≈ 0.98661`, `σ(0) = 0`, `σ(1) ≈ −0.98661`.
//! * **Weight of a detection at record `i`.**
//!   - inside window `k`: `y = −(e_k − i + 1) / w_k ∈ [−1, 0)`, weight
//!     `A_TP · σ(y) / σ(−1)`. A detection on the first record of a window earns exactly
//!     `A_TP`; later ones earn less, down to about `2.5·A_TP / w_k` on the last record.
//!   - after window `k` (the most recent window that has ended), outside any window:
//!     `y = (i − e_k) / (w_k − 1)`, weight `A_FP · σ(y) ∈ [−A_FP, 0)`. A false alarm
//!     just after a window costs almost nothing, one a window-width later costs
//!     `0.987·A_FP`, and beyond three window-widths the full `A_FP`.
//!   - before the first window: weight `−A_FP`.
//! * **File score at threshold θ** (a record is a detection when `score >= θ`):
//!
//!   ```text
//!   S(θ) = Σ_{windows k with a scored record} max(−A_FN, max_{detected i ∈ k} weight(i))
//!        + Σ_{detected i outside all windows}   weight(i)
//!   ```
//!
//!   In-window weights decrease along the window, so the `max` is the weight of the
//!   *first* detection: only the earliest detection in a window counts, later ones
//!   neither add nor cost. A window with no detection costs `A_FN`. True negatives
//!   score 0, so `A_TN` has no effect (NAB's profiles carry it, and so does
//!   [`Profile`]).
//! * **Corpus.** The corpus score is the sum of the file scores at one threshold. The
//!   threshold is chosen per profile to maximise the corpus score over every distinct
//!   anomaly score in the corpus (NAB's sweep optimiser; ties go to the highest
//!   threshold). The result is normalised as
//!
//!   ```text
//!   NAB = 100 · (S − S_null) / (S_perfect − S_null)
//!   ```
//!
//!   with `S_null = −A_FN · (number of windows that have a scored record)`, the score of
//!   a detector that never fires, and `S_perfect = A_TP · (number of windows)`, the
//!   score of one detection on the first record of every window.
//!
//! The published corpus has 116 windows, all after the probationary periods, so
//! `S_null = −116` (standard, low-FP) or `−232` (low-FN) and `S_perfect = 116`; e.g.
//! ARTime's raw standard score 57.66 in `config/thresholds.json` normalises to
//! `100 · (57.66 + 116) / 232 = 74.85`, its value in `results/final_results.json`.
//!
//! # Where this differs from the reference code
//!
//! * `numenta/NAB` divides by `w_k − 1` for false positives after a window, which
//!   raises `ZeroDivisionError` for a one-record window. Here the divisor is
//!   `max(w_k − 1, 1)`. (No NAB window has width 1.)
//! * NAB starts its sweep at the sentinel threshold 1.1 (scores are expected in
//!   `[0, 1]`); here the "detect nothing" threshold is `+∞`, so any finite score range
//!   works. When the best corpus score is the null score the reported threshold is
//!   `f64::INFINITY` where NAB reports 1.1.
//! * Windows are mapped to records by the *first* record with the window's start and
//!   end timestamps, exactly as the reference does with `list.index`; NAB's data files
//!   contain a few duplicated timestamps and one out-of-order record, none of them at a
//!   window bound. Window bounds must match a record's timestamp exactly (NAB's
//!   `CorpusLabel` raises an error otherwise) and windows must not share records.
//! * Record counts (`tp`, `fp`, `fn_`, `tn`) follow NAB and count *records*, not
//!   windows; window-level counts are reported alongside.
//! * NaN scores are rejected ([`NabError::NanScore`]); NAB would sort them
//!   arbitrarily.
//!
//! # Validation against the published benchmark
//!
//! The unit tests below use only synthetic data. Checked once by hand against
//! `/work/shared/data/NAB` (58 files, 365 558 records, 116 windows; not a test, since
//! tests must not read that directory):
//!
//! * The null detector (constant score 0.5) scores raw −116 (standard), −116
//!   (reward_low_FP_rate) and −232 (reward_low_FN_rate), exactly the `null` entries of
//!   `config/thresholds.json`, and normalises to 0.0 as in `results/final_results.json`.
//!   A detection on the first record of every window scores 100.0 in all profiles.
//! * Raw → normalised: with `S_null` as above and `S_perfect = 116`, the raw scores in
//!   `config/thresholds.json` give the `results/final_results.json` values (to 1e-6)
//!   for all three profiles of ARTime, contextOSE, earthgeckoSkyline, expose, null,
//!   numenta, numentaTM, randomCutForest, relativeEntropy and skyline (see the
//!   `normalisation_reproduces_published_board_values` test). The rows of htmjava,
//!   knncad, random, twitterADVec and windowedGaussian do not match their board
//!   values (stale entries; the README says the random board value is a mean over
//!   seeds).
//! * Differential check: for three synthetic detectors on the full corpus (scores
//!   rounded to 3 decimals, as NAB writes them), [`corpus_score`] gave the same
//!   optimal threshold and record counts as a line-by-line transcription of NAB's
//!   `Sweeper` and sweep optimiser, and raw and normalised scores within 1.5e-14, in
//!   all three profiles.
//! * Not reproduced: the board values of real detectors, whose per-record result
//!   files are not in the shared data.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Fraction of each file that is a probationary (warm-up) period.
pub const PROBATION_PERCENT: f64 = 0.15;

/// NAB caps the probationary period at `PROBATION_PERCENT * 5000` = 750 records.
const PROBATION_CAP_ROWS: f64 = 5000.0;

/// Errors from loading NAB data and labels or from scoring.
#[derive(Debug, thiserror::Error)]
pub enum NabError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The labels file is not the expected JSON shape.
    #[error("labels JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A data CSV line is malformed (`line` is 1-based, the header is line 1).
    #[error("data CSV line {line}: {reason}")]
    Csv {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A timestamp is not `YYYY-MM-DD HH:MM:SS[.ffffff]`.
    #[error("bad timestamp {text:?}: {reason}")]
    Timestamp {
        /// The offending text.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The labels file has no entry for a data file.
    #[error("no label windows for {0:?}")]
    MissingLabels(String),
    /// A window bound is not the timestamp of any record.
    #[error("window bound {0} is not a record timestamp")]
    BoundNotFound(NabTimestamp),
    /// Window `index` is empty, out of range, unsorted or overlaps the previous one.
    #[error("window {index} {window:?} is invalid for {records} records: {reason}")]
    InvalidWindow {
        /// Index of the window in its series.
        index: usize,
        /// The window as record indices.
        window: (usize, usize),
        /// Records in the series.
        records: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A score is NaN and cannot be thresholded.
    #[error("series {series:?}: score at record {index} is NaN")]
    NanScore {
        /// Series name.
        series: String,
        /// Record index.
        index: usize,
    },
    /// Timestamps and scores describe different numbers of records.
    #[error("{timestamps} timestamps but {scores} scores")]
    LengthMismatch {
        /// Number of timestamps.
        timestamps: usize,
        /// Number of scores.
        scores: usize,
    },
    /// The corpus has no windows (or zero weights), so `S_perfect = S_null` and the
    /// score cannot be normalised.
    #[error("cannot normalise: perfect score {perfect} equals null score {null}")]
    Degenerate {
        /// `S_perfect`.
        perfect: f64,
        /// `S_null`.
        null: f64,
    },
}

/// An application profile: the cost matrix weights `A_TP`, `A_FP`, `A_FN`, `A_TN`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    /// `A_TP`: reward for a detection at the very start of a window.
    pub tp: f64,
    /// `A_FP`: largest cost of a false positive.
    pub fp: f64,
    /// `A_FN`: cost of a window with no detection.
    pub fn_: f64,
    /// `A_TN`: carried for completeness; true negatives score 0 in NAB.
    pub tn: f64,
}

impl Profile {
    /// NAB's `standard` profile (`config/profiles.json`: tp 1.0, fp 0.11, fn 1.0, tn 1.0).
    pub const fn standard() -> Self {
        Self {
            tp: 1.0,
            fp: 0.11,
            fn_: 1.0,
            tn: 1.0,
        }
    }

    /// NAB's `reward_low_FP_rate` profile (`config/profiles.json`: fp 0.22, others 1.0).
    pub const fn reward_low_fp() -> Self {
        Self {
            tp: 1.0,
            fp: 0.22,
            fn_: 1.0,
            tn: 1.0,
        }
    }

    /// NAB's `reward_low_FN_rate` profile (`config/profiles.json`: fn 2.0, fp 0.11,
    /// tp 1.0, tn 1.0).
    pub const fn reward_low_fn() -> Self {
        Self {
            tp: 1.0,
            fp: 0.11,
            fn_: 2.0,
            tn: 1.0,
        }
    }
}

/// A NAB timestamp (`YYYY-MM-DD HH:MM:SS[.ffffff]`, no time zone), as microseconds
/// since 1970-01-01 00:00:00 in the same (unspecified) zone. Parsing normalises the
/// optional fraction, so the data files' `2014-02-19 10:50:00` equals the label files'
/// `2014-02-19 10:50:00.000000`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct NabTimestamp(pub i64);

type Format = Vec<time::format_description::BorrowedFormatItem<'static>>;

/// `YYYY-MM-DD HH:MM:SS`, and the same with a fraction of 1 to 9 digits (finer than
/// microseconds is refused when parsing).
static TIMESTAMP_FORMATS: std::sync::LazyLock<(Format, Format)> = std::sync::LazyLock::new(|| {
    let parse = |text| {
        time::format_description::parse_borrowed::<1>(text).expect("a valid format description")
    };
    (
        parse("[year]-[month]-[day] [hour]:[minute]:[second]"),
        parse("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:1+]"),
    )
});

impl FromStr for NabTimestamp {
    type Err = NabError;

    fn from_str(text: &str) -> Result<Self, NabError> {
        let err = |reason: String| NabError::Timestamp {
            text: text.to_owned(),
            reason,
        };
        // ISO 8601's `T` between date and time reads like NAB's space.
        let trimmed = text.trim();
        let normalised = match trimmed.as_bytes().get(10) {
            Some(b'T') => format!("{} {}", &trimmed[..10], &trimmed[11..]),
            _ => trimmed.to_owned(),
        };
        let (whole, fraction) = &*TIMESTAMP_FORMATS;
        let format = if normalised.len() > 19 {
            fraction
        } else {
            whole
        };
        let at =
            time::PrimitiveDateTime::parse(&normalised, format).map_err(|e| err(e.to_string()))?;
        if at.nanosecond() % 1000 != 0 {
            return Err(err("finer than microseconds".into()));
        }
        let micros = at.assume_utc().unix_timestamp_nanos() / 1000;
        i64::try_from(micros)
            .map(Self)
            .map_err(|_| err("out of range".into()))
    }
}

impl fmt::Display for NabTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1000)
            .map_err(|_| fmt::Error)?;
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.microsecond()
        )
    }
}

/// A NAB data file: `timestamp,value` rows in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFile {
    /// Record timestamps, in file order (not necessarily sorted or unique).
    pub timestamps: Vec<NabTimestamp>,
    /// Record values.
    pub values: Vec<f64>,
}

impl DataFile {
    /// Parses a NAB data CSV (the `csv` crate): a `timestamp,value` header, then one
    /// record per line. Blank lines are skipped.
    ///
    /// # Errors
    /// [`NabError::Csv`] or [`NabError::Timestamp`] for a malformed line.
    pub fn parse(text: &str) -> Result<Self, NabError> {
        let csv_err = |line: u64, reason: String| NabError::Csv {
            line: usize::try_from(line).unwrap_or(usize::MAX),
            reason,
        };
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let header = reader
            .headers()
            .map_err(|e| csv_err(1, e.to_string()))?
            .iter()
            .map(|h| h.trim_start_matches('\u{feff}'))
            .collect::<Vec<_>>();
        if header != ["timestamp", "value"] {
            return Err(csv_err(1, "expected header 'timestamp,value'".into()));
        }
        let mut timestamps = Vec::new();
        let mut values = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map_or(0, csv::Position::line);
                csv_err(line, e.to_string())
            })?;
            let line = record.position().map_or(0, csv::Position::line);
            timestamps.push(record[0].parse()?);
            values.push(
                record[1]
                    .parse::<f64>()
                    .map_err(|e| csv_err(line, format!("value {:?}: {e}", &record[1])))?,
            );
        }
        Ok(Self { timestamps, values })
    }

    /// Reads and parses a NAB data CSV.
    ///
    /// # Errors
    /// [`NabError::Io`] if the file cannot be read, else as [`DataFile::parse`].
    pub fn read(path: &Path) -> Result<Self, NabError> {
        let text = std::fs::read_to_string(path).map_err(|source| NabError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }
}

/// NAB label windows (`labels/combined_windows.json`): for each data file key such as
/// `realKnownCause/nyc_taxi.csv`, its windows as inclusive `(start, end)` timestamps.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelWindows(pub BTreeMap<String, Vec<(NabTimestamp, NabTimestamp)>>);

impl LabelWindows {
    /// Parses a `combined_windows.json`-style document:
    /// `{"<dir>/<file>.csv": [["start", "end"], ...], ...}`.
    ///
    /// # Errors
    /// [`NabError::Json`] or [`NabError::Timestamp`].
    pub fn parse(json: &str) -> Result<Self, NabError> {
        let raw: BTreeMap<String, Vec<(String, String)>> = serde_json::from_str(json)?;
        let mut out = BTreeMap::new();
        for (key, windows) in raw {
            let parsed = windows
                .iter()
                .map(|(a, b)| Ok((a.parse()?, b.parse()?)))
                .collect::<Result<Vec<_>, NabError>>()?;
            out.insert(key, parsed);
        }
        Ok(Self(out))
    }

    /// Reads and parses a labels file.
    ///
    /// # Errors
    /// [`NabError::Io`] if the file cannot be read, else as [`LabelWindows::parse`].
    pub fn read(path: &Path) -> Result<Self, NabError> {
        let text = std::fs::read_to_string(path).map_err(|source| NabError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    /// The windows of one data file.
    ///
    /// # Errors
    /// [`NabError::MissingLabels`] if the file has no entry (NAB skips such files).
    pub fn get(&self, key: &str) -> Result<&[(NabTimestamp, NabTimestamp)], NabError> {
        self.0
            .get(key)
            .map(Vec::as_slice)
            .ok_or_else(|| NabError::MissingLabels(key.to_owned()))
    }

    /// Builds the [`Series`] for data file `key` from its records and a detector's
    /// per-record scores.
    ///
    /// # Errors
    /// As [`LabelWindows::get`] and [`Series::from_timestamps`].
    pub fn series(&self, key: &str, data: &DataFile, scores: Vec<f64>) -> Result<Series, NabError> {
        Series::from_timestamps(key, &data.timestamps, self.get(key)?, scores)
    }
}

/// Maps timestamp windows to inclusive record-index ranges, using the first record
/// that carries each bound (as NAB's sweeper does).
///
/// # Errors
/// [`NabError::BoundNotFound`] if a bound is not a record timestamp.
pub fn windows_to_indices(
    timestamps: &[NabTimestamp],
    limits: &[(NabTimestamp, NabTimestamp)],
) -> Result<Vec<(usize, usize)>, NabError> {
    let mut first: HashMap<NabTimestamp, usize> = HashMap::with_capacity(timestamps.len());
    for (i, t) in timestamps.iter().enumerate() {
        first.entry(*t).or_insert(i);
    }
    let find = |t: &NabTimestamp| first.get(t).copied().ok_or(NabError::BoundNotFound(*t));
    limits
        .iter()
        .map(|(a, b)| Ok((find(a)?, find(b)?)))
        .collect()
}

/// Index of the first scored record of an `n_rows` file: `min(⌊0.15·n⌋, 750)`. Records
/// before it are NAB's probationary period.
pub fn probationary_length(n_rows: usize) -> usize {
    let by_percent = (PROBATION_PERCENT * n_rows as f64).floor();
    let cap = PROBATION_PERCENT * PROBATION_CAP_ROWS;
    // NAB scores record i when i >= min(...); ceil makes that an integer bound.
    by_percent.min(cap).ceil() as usize
}

/// NAB's scaled sigmoid `σ(y) = 2 / (1 + e^{5y}) − 1`, with `σ(y) = −1` for `y > 3`.
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y > 3.0 {
        -1.0
    } else {
        // 2·sigmoid(−5y) − 1 with sigmoid(x) = 1 / (1 + e^{−x}), in NAB's operation order.
        2.0 * (1.0 / (1.0 + (5.0 * y).exp())) - 1.0
    }
}

/// One data file's detector scores with its anomaly windows as record indices.
/// Constructed only through the validating [`Series::new`] and
/// [`Series::from_timestamps`].
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    name: String,
    scores: Vec<f64>,
    windows: Vec<(usize, usize)>,
}

impl Series {
    /// A series from per-record `scores` and inclusive `windows` of record indices.
    ///
    /// # Errors
    /// [`NabError::NanScore`] for a NaN score; [`NabError::InvalidWindow`] unless every
    /// window has `start <= end < scores.len()` and starts after the previous one ends.
    pub fn new(
        name: impl Into<String>,
        scores: Vec<f64>,
        windows: Vec<(usize, usize)>,
    ) -> Result<Self, NabError> {
        let name = name.into();
        if let Some(index) = scores.iter().position(|s| s.is_nan()) {
            return Err(NabError::NanScore {
                series: name,
                index,
            });
        }
        let records = scores.len();
        let mut prev_end: Option<usize> = None;
        for (index, &(start, end)) in windows.iter().enumerate() {
            let invalid = |reason| NabError::InvalidWindow {
                index,
                window: (start, end),
                records,
                reason,
            };
            if start > end {
                return Err(invalid("start after end"));
            }
            if end >= records {
                return Err(invalid("past the last record"));
            }
            if prev_end.is_some_and(|p| start <= p) {
                return Err(invalid("overlaps or precedes the previous window"));
            }
            prev_end = Some(end);
        }
        Ok(Self {
            name,
            scores,
            windows,
        })
    }

    /// A series from record timestamps, timestamp windows and per-record scores.
    ///
    /// # Errors
    /// [`NabError::LengthMismatch`], then as [`windows_to_indices`] and [`Series::new`].
    pub fn from_timestamps(
        name: impl Into<String>,
        timestamps: &[NabTimestamp],
        limits: &[(NabTimestamp, NabTimestamp)],
        scores: Vec<f64>,
    ) -> Result<Self, NabError> {
        if timestamps.len() != scores.len() {
            return Err(NabError::LengthMismatch {
                timestamps: timestamps.len(),
                scores: scores.len(),
            });
        }
        let windows = windows_to_indices(timestamps, limits)?;
        Self::new(name, scores, windows)
    }

    /// The series' name (NAB uses the data file's relative path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Per-record detector scores.
    pub fn scores(&self) -> &[f64] {
        &self.scores
    }

    /// Anomaly windows as inclusive record-index ranges.
    pub fn windows(&self) -> &[(usize, usize)] {
        &self.windows
    }

    /// Index of the first scored record ([`probationary_length`] of the series).
    pub fn first_scored(&self) -> usize {
        probationary_length(self.scores.len())
    }
}

/// A scored (post-probation) record with its NAB weight.
#[derive(Debug, Clone, Copy)]
struct Row {
    score: f64,
    /// Contribution if detected: TP weight in a window, FP weight outside.
    weight: f64,
    /// Window index within the series, if inside one.
    window: Option<usize>,
}

/// The NAB weight of a detection at every scored record (see the module docs).
fn scored_rows(series: &Series, profile: &Profile) -> Vec<Row> {
    let max_tp = scaled_sigmoid(-1.0);
    let first = series.first_scored();
    let n = series.scores.len();
    let mut rows = Vec::with_capacity(n.saturating_sub(first));
    let mut next = 0usize; // next window not yet ended
    let mut prev: Option<(usize, f64)> = None; // (end, width) of the last ended window
    for i in 0..n {
        let current = series
            .windows
            .get(next)
            .filter(|&&(s, e)| s <= i && i <= e)
            .copied();
        let weight = match (current, prev) {
            (Some((s, e)), _) => {
                let width = (e - s + 1) as f64;
                let position = -((e - i + 1) as f64) / width;
                scaled_sigmoid(position) * profile.tp / max_tp
            }
            (None, Some((end, width))) => {
                let position = (i - end) as f64 / (width - 1.0).max(1.0);
                scaled_sigmoid(position) * profile.fp
            }
            (None, None) => -profile.fp,
        };
        if i >= first {
            rows.push(Row {
                score: series.scores[i],
                weight,
                window: current.map(|_| next),
            });
        }
        if let Some((s, e)) = current
            && i == e
        {
            prev = Some((e, (e - s + 1) as f64));
            next += 1;
        }
    }
    rows
}

/// Raw (unnormalised) NAB score and tallies of one series or a corpus at one threshold.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct RawScore {
    /// The NAB score `S(θ)`.
    pub score: f64,
    /// Scored records inside windows with `score >= θ`.
    pub tp: usize,
    /// Scored records outside windows with `score >= θ`.
    pub fp: usize,
    /// Scored records inside windows with `score < θ`.
    pub fn_: usize,
    /// Scored records outside windows with `score < θ`.
    pub tn: usize,
    /// Windows (with a scored record) containing at least one detection.
    pub windows_detected: usize,
    /// Windows (with a scored record) without a detection.
    pub windows_missed: usize,
}

impl RawScore {
    fn add(&mut self, other: &RawScore) {
        self.score += other.score;
        self.tp += other.tp;
        self.fp += other.fp;
        self.fn_ += other.fn_;
        self.tn += other.tn;
        self.windows_detected += other.windows_detected;
        self.windows_missed += other.windows_missed;
    }
}

/// Scores one series at `threshold` (a record is a detection when `score >= threshold`).
pub fn score_series(series: &Series, threshold: f64, profile: &Profile) -> RawScore {
    let mut best: Vec<Option<f64>> = vec![None; series.windows.len()];
    let mut detected = vec![false; series.windows.len()];
    let mut out = RawScore::default();
    let mut fp_sum = 0.0;
    for row in scored_rows(series, profile) {
        let hit = row.score >= threshold;
        match row.window {
            Some(k) => {
                let slot = best[k].get_or_insert(-profile.fn_);
                if hit {
                    out.tp += 1;
                    detected[k] = true;
                    *slot = slot.max(row.weight);
                } else {
                    out.fn_ += 1;
                }
            }
            None if hit => {
                out.fp += 1;
                fp_sum += row.weight;
            }
            None => out.tn += 1,
        }
    }
    for (k, value) in best.iter().enumerate() {
        if value.is_some() {
            if detected[k] {
                out.windows_detected += 1;
            } else {
                out.windows_missed += 1;
            }
        }
    }
    out.score = fp_sum + best.iter().flatten().sum::<f64>();
    out
}

/// A corpus-level NAB result for one profile.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NabResult {
    /// `100 · (S − S_null) / (S_perfect − S_null)`: 100 is perfect, 0 is the null
    /// detector, and a noisy detector can go far below 0.
    pub normalized_score: f64,
    /// The threshold used (`score >= threshold` detects); `+∞` when detecting nothing is
    /// best (serialises as JSON `null`).
    pub threshold: f64,
    /// `S`, the corpus score at `threshold`.
    pub raw_score: f64,
    /// `S_null = −A_FN · (windows with a scored record)`.
    pub null_score: f64,
    /// `S_perfect = A_TP · (all windows)`.
    pub perfect_score: f64,
    /// Scored records inside windows detected.
    pub tp: usize,
    /// Scored records outside windows detected.
    pub fp: usize,
    /// Scored records inside windows not detected.
    pub fn_: usize,
    /// Scored records outside windows not detected.
    pub tn: usize,
    /// Windows with at least one detection.
    pub windows_detected: usize,
    /// Windows (with a scored record) without a detection.
    pub windows_missed: usize,
}

/// `100 · (raw − null) / (perfect − null)`.
///
/// # Errors
/// [`NabError::Degenerate`] when `perfect == null`.
pub fn normalize(raw: f64, null: f64, perfect: f64) -> Result<f64, NabError> {
    let span = perfect - null;
    if span == 0.0 || !span.is_finite() {
        return Err(NabError::Degenerate { perfect, null });
    }
    Ok(100.0 * (raw - null) / span)
}

/// `(S_null, S_perfect)` for a corpus and profile.
fn baselines(corpus: &[Series], profile: &Profile) -> (f64, f64) {
    let mut scorable = 0usize;
    let mut total = 0usize;
    for series in corpus {
        let first = series.first_scored();
        total += series.windows.len();
        scorable += series.windows.iter().filter(|&&(_, e)| e >= first).count();
    }
    (-profile.fn_ * scorable as f64, profile.tp * total as f64)
}

/// Scores a corpus at a fixed threshold (e.g. one chosen on other data) and normalises.
///
/// # Errors
/// [`NabError::Degenerate`] if the corpus has no windows.
pub fn corpus_score_at(
    corpus: &[Series],
    threshold: f64,
    profile: &Profile,
) -> Result<NabResult, NabError> {
    let mut raw = RawScore::default();
    for series in corpus {
        raw.add(&score_series(series, threshold, profile));
    }
    let (null, perfect) = baselines(corpus, profile);
    Ok(NabResult {
        normalized_score: normalize(raw.score, null, perfect)?,
        threshold,
        raw_score: raw.score,
        null_score: null,
        perfect_score: perfect,
        tp: raw.tp,
        fp: raw.fp,
        fn_: raw.fn_,
        tn: raw.tn,
        windows_detected: raw.windows_detected,
        windows_missed: raw.windows_missed,
    })
}

/// The corpus score for `profile` at the threshold that maximises it (NAB's optimise
/// step followed by its score and normalise steps).
///
/// Every distinct score in the corpus (and "detect nothing") is a candidate threshold.
/// Candidates are visited from the highest score down while the per-window best weights
/// and the false-positive sum are updated incrementally, so the sweep costs
/// `O(N log N)` for `N` scored records. Ties in the corpus score go to the highest
/// threshold, as in NAB's stable sort. The reported numbers are then recomputed at the
/// chosen threshold by [`corpus_score_at`].
///
/// # Errors
/// [`NabError::Degenerate`] if the corpus has no windows.
pub fn corpus_score(corpus: &[Series], profile: &Profile) -> Result<NabResult, NabError> {
    // Flatten all scored rows with corpus-wide window ids.
    let mut rows: Vec<(f64, f64, Option<usize>)> = Vec::new();
    let mut window_base = 0usize;
    let mut window_value: Vec<f64> = Vec::new();
    for series in corpus {
        let rows_here = scored_rows(series, profile);
        window_value.extend(std::iter::repeat_n(f64::NAN, series.windows.len()));
        for row in rows_here {
            let window = row.window.map(|k| window_base + k);
            if let Some(w) = window {
                window_value[w] = -profile.fn_;
            }
            rows.push((row.score, row.weight, window));
        }
        window_base += series.windows.len();
    }
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));

    // Nothing detected: every scorable window is a miss.
    let null_total: f64 = window_value.iter().filter(|v| !v.is_nan()).sum();
    let mut window_sum = null_total;
    let mut fp_sum = 0.0;
    let mut best_threshold = f64::INFINITY;
    let mut best_score = null_total;
    let mut i = 0;
    while i < rows.len() {
        let threshold = rows[i].0;
        while i < rows.len() && rows[i].0 == threshold {
            let (_, weight, window) = rows[i];
            match window {
                Some(w) => {
                    if weight > window_value[w] {
                        window_sum += weight - window_value[w];
                        window_value[w] = weight;
                    }
                }
                None => fp_sum += weight,
            }
            i += 1;
        }
        let total = fp_sum + window_sum;
        if total > best_score {
            best_score = total;
            best_threshold = threshold;
        }
    }
    corpus_score_at(corpus, best_threshold, profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPS: f64 = 1e-12;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    /// Series of `n` records, scores 0 except `hits` = 1.0.
    fn series(n: usize, windows: Vec<(usize, usize)>, hits: &[usize]) -> Series {
        let mut scores = vec![0.0; n];
        for &h in hits {
            scores[h] = 1.0;
        }
        Series::new("t", scores, windows).expect("valid series")
    }

    #[test]
    fn scaled_sigmoid_reference_values() {
        // Values quoted in NAB's sweeper.py docstring.
        assert!((scaled_sigmoid(-1.0) - 0.98661).abs() < 1e-5);
        assert!((scaled_sigmoid(-0.5) - 0.84828).abs() < 1e-5);
        assert!(scaled_sigmoid(0.0).abs() < EPS);
        assert!((scaled_sigmoid(1.0) + 0.98661).abs() < 1e-5);
        assert_eq!(scaled_sigmoid(3.0001), -1.0);
        assert!(scaled_sigmoid(3.0) > -1.0);
    }

    #[test]
    fn probation_matches_reference_formula() {
        assert_eq!(probationary_length(0), 0);
        assert_eq!(probationary_length(10), 1); // floor(1.5)
        assert_eq!(probationary_length(100), 15);
        assert_eq!(probationary_length(4032), 604); // floor(604.8), a 14-day 5-min file
        assert_eq!(probationary_length(5000), 750);
        assert_eq!(probationary_length(22_695), 750); // capped
    }

    #[test]
    fn profiles_match_profiles_json() {
        let s = Profile::standard();
        assert_eq!((s.tp, s.fp, s.fn_, s.tn), (1.0, 0.11, 1.0, 1.0));
        let p = Profile::reward_low_fp();
        assert_eq!((p.tp, p.fp, p.fn_, p.tn), (1.0, 0.22, 1.0, 1.0));
        let n = Profile::reward_low_fn();
        assert_eq!((n.tp, n.fp, n.fn_, n.tn), (1.0, 0.11, 2.0, 1.0));
    }

    /// n = 100 → probation 15. One window 40..=49 (width 10).
    #[test]
    fn hand_computed_single_window() {
        let std = Profile::standard();
        let max_tp = scaled_sigmoid(-1.0);

        // Detection on the first window record: exactly A_TP.
        let r = score_series(&series(100, vec![(40, 49)], &[40]), 0.5, &std);
        assert!(close(r.score, 1.0));
        assert_eq!((r.tp, r.fp, r.fn_, r.tn), (1, 0, 9, 75));
        assert_eq!((r.windows_detected, r.windows_missed), (1, 0));

        // Detection at record 45: y = -(49 - 45 + 1)/10 = -0.5.
        let r = score_series(&series(100, vec![(40, 49)], &[45]), 0.5, &std);
        assert!(close(r.score, scaled_sigmoid(-0.5) / max_tp));

        // Only the first detection counts: 45 and 47 score like 45 alone.
        let r = score_series(&series(100, vec![(40, 49)], &[45, 47]), 0.5, &std);
        assert!(close(r.score, scaled_sigmoid(-0.5) / max_tp));
        assert_eq!(r.tp, 2);

        // Miss: −A_FN.
        let r = score_series(&series(100, vec![(40, 49)], &[]), 0.5, &std);
        assert!(close(r.score, -1.0));
        assert_eq!((r.windows_detected, r.windows_missed), (0, 1));

        // FP before any window (record 20) costs the full A_FP on top of the miss.
        let r = score_series(&series(100, vec![(40, 49)], &[20]), 0.5, &std);
        assert!(close(r.score, -1.0 - 0.11));
        assert_eq!((r.tp, r.fp), (0, 1));

        // FP after the window at record 58: y = (58 − 49)/(10 − 1) = 1.
        let r = score_series(&series(100, vec![(40, 49)], &[40, 58]), 0.5, &std);
        assert!(close(r.score, 1.0 + 0.11 * scaled_sigmoid(1.0)));

        // FP far after the window (y > 3): −A_FP.
        let r = score_series(&series(100, vec![(40, 49)], &[40, 90]), 0.5, &std);
        assert!(close(r.score, 1.0 - 0.11));

        // Detections in the probationary period (records 0..15) are ignored.
        let r = score_series(&series(100, vec![(40, 49)], &[3, 14, 40]), 0.5, &std);
        assert!(close(r.score, 1.0));
        assert_eq!(r.fp, 0);
        assert_eq!(r.tp + r.fp + r.fn_ + r.tn, 85);
    }

    #[test]
    fn profiles_change_costs() {
        let s = series(100, vec![(40, 49)], &[20]);
        assert!(close(
            score_series(&s, 0.5, &Profile::reward_low_fp()).score,
            -1.22
        ));
        assert!(close(
            score_series(&s, 0.5, &Profile::reward_low_fn()).score,
            -2.11
        ));
    }

    #[test]
    fn window_inside_probation_is_not_scored_but_counts_as_perfect() {
        // n = 100, probation 15, window 5..=10 entirely inside it.
        let s = series(100, vec![(5, 10), (40, 49)], &[40]);
        let r = score_series(&s, 0.5, &Profile::standard());
        assert!(close(r.score, 1.0));
        assert_eq!((r.windows_detected, r.windows_missed), (1, 0));
        let res = corpus_score_at(&[s], 0.5, &Profile::standard()).expect("windows");
        assert!(close(res.null_score, -1.0));
        assert!(close(res.perfect_score, 2.0)); // NAB counts every labelled window
        assert!(close(res.normalized_score, 100.0 * 2.0 / 3.0));
    }

    #[test]
    fn window_straddling_probation_keeps_its_geometry() {
        // n = 100, probation 15, window 10..=19 (width 10). A detection at 15 is the
        // first scorable one; y = −(19 − 15 + 1)/10 = −0.5.
        let s = series(100, vec![(10, 19)], &[12, 15]);
        let r = score_series(&s, 0.5, &Profile::standard());
        assert!(close(r.score, scaled_sigmoid(-0.5) / scaled_sigmoid(-1.0)));
    }

    #[test]
    fn false_positive_uses_most_recent_window() {
        // Windows 20..=29 (w 10) and 50..=53 (w 4); FP at 60 is after the second:
        // y = (60 − 53)/3.
        let s = series(100, vec![(20, 29), (50, 53)], &[20, 50, 60]);
        let r = score_series(&s, 0.5, &Profile::standard());
        let want = 2.0 + 0.11 * scaled_sigmoid(7.0 / 3.0);
        assert!(close(r.score, want));
        // FP between the windows at 35 is relative to the first: y = 6/9.
        let s = series(100, vec![(20, 29), (50, 53)], &[20, 35, 50]);
        let r = score_series(&s, 0.5, &Profile::standard());
        assert!(close(r.score, 2.0 + 0.11 * scaled_sigmoid(6.0 / 9.0)));
    }

    #[test]
    fn single_record_window_does_not_divide_by_zero() {
        let s = series(100, vec![(40, 40)], &[40, 42]);
        let r = score_series(&s, 0.5, &Profile::standard());
        // TP y = −1 → 1.0; FP y = 2/max(0,1) = 2.
        assert!(close(r.score, 1.0 + 0.11 * scaled_sigmoid(2.0)));
    }

    /// A small synthetic corpus: four files, five windows.
    fn corpus(mut make_scores: impl FnMut(usize, &[(usize, usize)]) -> Vec<f64>) -> Vec<Series> {
        let specs: Vec<(usize, Vec<(usize, usize)>)> = vec![
            (200, vec![(60, 79), (150, 169)]),
            (1000, vec![(500, 599)]),
            (6000, vec![(3000, 3299), (5000, 5299)]),
            (300, vec![]),
        ];
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (n, w))| {
                let scores = make_scores(n, &w);
                Series::new(format!("f{i}"), scores, w).expect("valid")
            })
            .collect()
    }

    #[test]
    fn null_detector_normalises_to_zero() {
        let c = corpus(|n, _| vec![0.5; n]);
        for profile in [
            Profile::standard(),
            Profile::reward_low_fp(),
            Profile::reward_low_fn(),
        ] {
            let r = corpus_score(&c, &profile).expect("windows");
            assert!(r.normalized_score.abs() < EPS, "{r:?}");
            assert_eq!(r.threshold, f64::INFINITY);
            assert!(close(r.raw_score, -5.0 * profile.fn_));
            assert_eq!(
                (r.tp, r.fp, r.windows_detected, r.windows_missed),
                (0, 0, 0, 5)
            );
        }
    }

    #[test]
    fn perfect_detector_scores_100() {
        let c = corpus(|n, w| {
            let mut s = vec![0.0; n];
            for &(start, _) in w {
                s[start] = 1.0;
            }
            s
        });
        for profile in [
            Profile::standard(),
            Profile::reward_low_fp(),
            Profile::reward_low_fn(),
        ] {
            let r = corpus_score(&c, &profile).expect("windows");
            assert!(close(r.normalized_score, 100.0), "{r:?}");
            assert_eq!(r.threshold, 1.0);
            assert_eq!(
                (r.tp, r.fp, r.windows_detected, r.windows_missed),
                (5, 0, 5, 0)
            );
        }
    }

    /// The sweep must pick the threshold that maximises the corpus score, identical to
    /// scoring every candidate from scratch.
    #[test]
    fn sweep_matches_exhaustive_search() {
        let mut st = 11u64;
        let mut next = move || {
            st = st.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = st;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        for _ in 0..20 {
            let c = corpus(|n, w| {
                (0..n)
                    .map(|i| {
                        let in_w = w.iter().any(|&(s, e)| s <= i && i <= e);
                        let base = (next() % 50) as f64 / 100.0; // ties on purpose
                        if in_w { base + 0.3 } else { base }
                    })
                    .collect()
            });
            for profile in [Profile::standard(), Profile::reward_low_fn()] {
                let got = corpus_score(&c, &profile).expect("windows");
                let mut candidates: Vec<f64> = c.iter().flat_map(|s| s.scores().to_vec()).collect();
                candidates.push(f64::INFINITY);
                candidates.sort_by(|a, b| b.total_cmp(a));
                candidates.dedup();
                let mut best = (f64::NEG_INFINITY, f64::NAN);
                for t in candidates {
                    let r = corpus_score_at(&c, t, &profile).expect("windows");
                    if r.raw_score > best.0 + 1e-9 {
                        best = (r.raw_score, t);
                    }
                }
                assert!(
                    close(got.raw_score, best.0),
                    "{} vs {}",
                    got.raw_score,
                    best.0
                );
                assert_eq!(got.threshold, best.1);
            }
        }
    }

    #[test]
    fn timestamps_parse_and_compare() {
        let a: NabTimestamp = "2014-02-19 10:50:00".parse().expect("valid");
        let b: NabTimestamp = "2014-02-19 10:50:00.000000".parse().expect("valid");
        assert_eq!(a, b);
        assert_eq!(b.to_string(), "2014-02-19 10:50:00.000000");
        let c: NabTimestamp = "2014-02-19T10:55:00.5".parse().expect("valid");
        assert_eq!(c.0 - a.0, 300_500_000);
        let epoch: NabTimestamp = "1970-01-01 00:00:00".parse().expect("valid");
        assert_eq!(epoch.0, 0);
        let leap: NabTimestamp = "2016-02-29 23:59:59".parse().expect("valid");
        assert_eq!(leap.to_string(), "2016-02-29 23:59:59.000000");
        assert_eq!(
            "1969-12-31 23:59:59"
                .parse::<NabTimestamp>()
                .expect("valid")
                .0,
            -1_000_000
        );
        for bad in [
            "2015-02-29 00:00:00",
            "2014-13-01 00:00:00",
            "2014-01-01 24:00:00",
            "2014-01-01",
            "2014/01/01 00:00:00",
            "2014-01-01 00:00:00.1234567",
            "2014-01-01 00:00:00x",
        ] {
            assert!(bad.parse::<NabTimestamp>().is_err(), "{bad}");
        }
    }

    const CSV: &str = "timestamp,value\n\
        2014-04-01 00:00:00,1.5\n\
        2014-04-01 00:05:00,2\n\
        2014-04-01 00:10:00,3.25\n\
        2014-04-01 00:10:00,3.5\n\
        2014-04-01 00:15:00,-4e1\n";

    const LABELS: &str = r#"{
        "dir/a.csv": [["2014-04-01 00:05:00.000000", "2014-04-01 00:10:00.000000"]],
        "dir/empty.csv": []
    }"#;

    #[test]
    fn loads_csv_and_labels_into_series() {
        let data = DataFile::parse(CSV).expect("valid csv");
        assert_eq!(data.values, vec![1.5, 2.0, 3.25, 3.5, -40.0]);
        let labels = LabelWindows::parse(LABELS).expect("valid json");
        assert!(labels.get("dir/empty.csv").expect("present").is_empty());
        // The duplicated 00:10:00 maps to its first record, as NAB's list.index does.
        let s = labels
            .series("dir/a.csv", &data, vec![0.0; 5])
            .expect("valid");
        assert_eq!(s.windows(), &[(1, 2)]);
        assert_eq!(s.name(), "dir/a.csv");
        assert!(matches!(
            labels.get("dir/missing.csv"),
            Err(NabError::MissingLabels(_))
        ));
        assert!(matches!(
            labels.series("dir/a.csv", &data, vec![0.0; 4]),
            Err(NabError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn rejects_bad_inputs() {
        assert!(matches!(
            DataFile::parse("time,value\n"),
            Err(NabError::Csv { line: 1, .. })
        ));
        assert!(matches!(
            DataFile::parse("timestamp,value\n2014-04-01 00:00:00,abc\n"),
            Err(NabError::Csv { line: 2, .. })
        ));
        assert!(LabelWindows::parse("[1,2]").is_err());
        let data = DataFile::parse(CSV).expect("valid");
        let off = vec![(
            "2014-04-01 00:06:00".parse().expect("valid"),
            "2014-04-01 00:10:00".parse().expect("valid"),
        )];
        assert!(matches!(
            windows_to_indices(&data.timestamps, &off),
            Err(NabError::BoundNotFound(_))
        ));
        assert!(matches!(
            Series::new("x", vec![0.0, f64::NAN], vec![]),
            Err(NabError::NanScore { index: 1, .. })
        ));
        for w in [
            vec![(3, 2)],
            vec![(0, 5)],
            vec![(0, 2), (2, 3)],
            vec![(3, 4), (0, 1)],
        ] {
            assert!(matches!(
                Series::new("x", vec![0.0; 5], w),
                Err(NabError::InvalidWindow { .. })
            ));
        }
        let empty = vec![Series::new("x", vec![0.0; 5], vec![]).expect("valid")];
        assert!(matches!(
            corpus_score(&empty, &Profile::standard()),
            Err(NabError::Degenerate { .. })
        ));
    }

    /// The published normalisation, checked on numbers from NAB's
    /// `config/thresholds.json` (raw) and `results/final_results.json` (normalised).
    #[test]
    fn normalisation_reproduces_published_board_values() {
        // ARTime, standard: raw 57.66075157860638, null −116, perfect 116 → 74.85377…
        let v = normalize(57.660_751_578_606_38, -116.0, 116.0).expect("span");
        assert!((v - 74.853_772_232_157_92).abs() < 1e-9);
        // ARTime, reward_low_FN_rate: null −232 → 80.36228…
        let v = normalize(47.660_751_578_606_38, -232.0, 116.0).expect("span");
        assert!((v - 80.362_284_936_381_14).abs() < 1e-9);
        // numenta, reward_low_FP_rate: 30.431072517124093 → 63.11684…
        let v = normalize(30.431_072_517_124_093, -116.0, 116.0).expect("span");
        assert!((v - 63.116_841_602_198_28).abs() < 1e-9);
    }

    #[test]
    fn result_serialises() {
        let c = corpus(|n, _| vec![0.5; n]);
        let r = corpus_score(&c, &Profile::standard()).expect("windows");
        let json = serde_json::to_string(&r).expect("serialise");
        assert!(json.contains("\"threshold\":null"));
    }
}
