//! `anomalyd train`: trains a model on a file and saves it as the store's next version.

use super::files::{load, model_err, select_device};
use crate::cli::TrainArgs;
use crate::config::Settings;
use crate::error::AppError;
use crate::model::{Detector, store};

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
