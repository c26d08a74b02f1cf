//! Command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "anomalyd",
    version,
    about = "Streaming anomaly detection with autoencoders"
)]
pub struct Cli {
    /// Configuration file (TOML); layered over the embedded defaults, under ANOMALYD__* env.
    #[arg(long, short, global = true, env = "ANOMALYD_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: consume, score, produce, until SIGTERM.
    Run,
    /// Print the effective configuration (secrets masked) and check it.
    CheckConfig,
    /// Score a file (or stdin) offline with the same decode/model/threshold path; writes one
    /// JSON line per record.
    Score(ScoreArgs),
    /// Train a model on a file and save it as a versioned bundle (point `model.store_dir`
    /// at the folder to serve it).
    Train(TrainArgs),
    /// Train on part of each input, score it, and report detection quality against labels
    /// (AUROC, AUPRC, best F1, NAB score); optionally plot each series.
    Eval(EvalArgs),
    /// List, inspect and revert the versioned models in the store.
    Models(ModelsArgs),
}

#[derive(Debug, clap::Args)]
pub struct ModelsArgs {
    /// The model store; default: model.store_dir from the configuration.
    #[arg(long, global = true)]
    pub store: Option<PathBuf>,
    #[command(subcommand)]
    pub action: ModelsAction,
}

#[derive(Debug, Subcommand)]
pub enum ModelsAction {
    /// One line per version; `*` marks the current (serving) one.
    List,
    /// A version's metadata as JSON.
    Show { version: u64 },
    /// Make VERSION current; running daemons switch to it within about a second.
    Revert { version: u64 },
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Training records (CSV with a header, or JSON lines).
    #[arg(long, short)]
    pub input: PathBuf,
    /// Model store folder; the bundle is written as its next version.
    #[arg(long)]
    pub model_out: PathBuf,
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    pub format: InputFormat,
}

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Series to evaluate (repeat for a corpus); each gets its own model.
    #[arg(long, short, required = true)]
    pub input: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    pub format: InputFormat,
    /// Train on this file instead of a prefix of each input (then all of the input is
    /// evaluated).
    #[arg(long)]
    pub train: Option<PathBuf>,
    /// Train on this fraction of each input's first records (evaluated: the rest).
    #[arg(long, default_value_t = 0.15)]
    pub train_fraction: f64,
    /// Train on this many first records (overrides --train-fraction).
    #[arg(long)]
    pub train_records: Option<usize>,
    /// NAB label windows (combined_windows.json); inputs are NAB `timestamp,value` CSVs,
    /// matched by their last two path components (category/file.csv).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Per-record labels from this column or field (1/true/anomaly/outlier = anomaly).
    #[arg(long)]
    pub label_column: Option<String>,
    /// Score externally produced per-record scores with the NAB scorer instead of
    /// training a model: a CSV with the header `series,timestamp,score`, `series` being
    /// an input's NAB key (e.g. realKnownCause/nyc_taxi.csv). Records without a score
    /// score 0. Used for the daemon's own output (scripts/nab-stream.sh) and other
    /// detectors' scores (scripts/quality.sh).
    #[arg(long, requires = "labels", conflicts_with_all = ["train", "plot", "label_column"])]
    pub scores: Option<PathBuf>,
    /// Folder for one PNG plot per input.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Write the results as JSON.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    /// Input file, or `-` for stdin.
    #[arg(long, short, default_value = "-")]
    pub input: PathBuf,
    /// Output file; stdout when absent.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Input format; `auto` picks csv for *.csv and jsonl otherwise.
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    pub format: InputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    Auto,
    Jsonl,
    Csv,
}
