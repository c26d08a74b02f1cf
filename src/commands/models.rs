//! `anomalyd models list|show|revert`: the model store from the command line. Reads only
//! metadata; a revert rewrites the store's `CURRENT`, which running daemons follow.

use crate::cli::{ModelsAction, ModelsArgs};
use crate::config::{ConfigError, Settings};
use crate::error::{AppError, PipelineError};
use crate::model::store;

pub fn run(settings: &Settings, args: &ModelsArgs) -> Result<(), AppError> {
    let dir = args
        .store
        .clone()
        .or_else(|| settings.runtime.store_dir.clone())
        .ok_or_else(|| {
            ConfigError::invalid("model.store_dir", "is empty; give --store or set it")
        })?;
    let err = |e| AppError::from(PipelineError::from(e));
    match &args.action {
        ModelsAction::List => {
            let current = store::current(&dir).map_err(err)?;
            println!(
                "{:<2}{:>7}  {:<12} {:>8}  {:>10}  {:<20}  {:>9}",
                "", "version", "kind", "records", "loss", "created", "threshold"
            );
            for v in store::versions(&dir).map_err(err)? {
                let m = store::read_meta(&dir, v).map_err(err)?;
                println!(
                    "{:<2}{:>7}  {:<12} {:>8}  {:>10.5}  {:<20}  {:>9.4}",
                    if Some(v) == current { "*" } else { "" },
                    v,
                    m.spec.kind.as_str(),
                    m.training.records,
                    m.training.final_loss,
                    m.created_at,
                    m.threshold.current()
                );
            }
        }
        ModelsAction::Show { version } => {
            let m = store::read_meta(&dir, *version).map_err(err)?;
            // As stored: the bundle format's model.json.
            let text = crate::model::bundle::encode(&m).map_err(std::io::Error::other)?;
            println!("{}", String::from_utf8_lossy(&text));
        }
        ModelsAction::Revert { version } => {
            let before = store::current(&dir).map_err(err)?;
            store::set_current(&dir, *version).map_err(err)?;
            eprintln!(
                "current model: v{} (was {}); running daemons switch within about a second",
                version,
                before.map_or_else(|| "none".to_string(), |v| format!("v{v}"))
            );
        }
    }
    Ok(())
}
