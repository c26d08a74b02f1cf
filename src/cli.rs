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
