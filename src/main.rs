use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use anomalyd::cli::{Cli, Command};
use anomalyd::config;
use anomalyd::model::device;
use anomalyd::telemetry;

/// Exit code for an invalid configuration (a runtime failure exits 1).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    // Before anything asks libtorch about CUDA (see model::device).
    let _ = device::load_cuda();
    let cli = Cli::parse();
    let path = cli.config.as_deref();

    if let Command::CheckConfig = cli.command {
        return match config::load_raw(path).and_then(|raw| {
            let text = config::render_masked(&raw);
            config::Settings::validate(raw).map(|s| {
                format!(
                    "{text}\n# resolved: model.kind = {}, alerts decided by: {}\n",
                    s.model.kind.as_str(),
                    s.threshold.summary()
                )
            })
        }) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("anomalyd: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        };
    }

    let settings = match config::load(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("anomalyd: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    telemetry::init_tracing(settings.log_format);

    let result = match cli.command {
        Command::Score(args) => anomalyd::commands::score::run(&settings, &args),
        Command::Train(args) => anomalyd::commands::train::train(&settings, &args),
        Command::Eval(args) => anomalyd::commands::eval::eval(&settings, &args),
        Command::Models(args) => anomalyd::commands::models::run(&settings, &args),
        Command::Run => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("anomalyd: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(anomalyd::app::run(settings, CancellationToken::new()))
        }
        Command::CheckConfig => unreachable!("handled above"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(code = e.code(), "{e}");
            eprintln!("anomalyd: {e}");
            ExitCode::FAILURE
        }
    }
}
