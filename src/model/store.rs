//! Versioned model bundles on disk: `<store_dir>/v000001/{weights.safetensors,model.json}`.
//! A bundle is written to a temporary folder and renamed into place, so a crash never
//! leaves a half-written version behind.

use std::path::{Path, PathBuf};

use tch::Device;

use super::{Detector, ModelError, ModelMeta};

const WEIGHTS: &str = "weights.safetensors";
const META: &str = "model.json";
/// A TorchScript model's module, copied into its bundle.
const MODULE: &str = "module.pt";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub fn version_dir(store: &Path, version: u64) -> PathBuf {
    store.join(format!("v{version:06}"))
}

/// Versions present in the store, ascending.
pub fn versions(store: &Path) -> Result<Vec<u64>, ModelError> {
    let entries = match std::fs::read_dir(store) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(store)(e)),
    };
    let mut out: Vec<u64> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.strip_prefix('v')?.parse().ok())
        .filter(|&v| version_dir(store, v).join(META).is_file())
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// Writes the detector as its version's bundle.
pub fn save(store: &Path, det: &Detector) -> Result<PathBuf, ModelError> {
    std::fs::create_dir_all(store).map_err(io(store))?;
    let dest = version_dir(store, det.version());
    let tmp = store.join(format!(".tmp-v{:06}-{}", det.version(), std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    det.var_store().save(tmp.join(WEIGHTS))?;
    if let Some(src) = det.script_path() {
        std::fs::copy(src, tmp.join(MODULE)).map_err(io(src))?;
    }
    let meta = serde_json::to_vec_pretty(&det.meta).map_err(|source| ModelError::Meta {
        path: tmp.join(META),
        source,
    })?;
    std::fs::write(tmp.join(META), meta).map_err(io(&tmp))?;
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
    Ok(dest)
}

/// Loads one version's bundle onto `device`.
pub fn load(store: &Path, version: u64, device: Device) -> Result<Detector, ModelError> {
    let dir = version_dir(store, version);
    let meta_path = dir.join(META);
    let text = std::fs::read(&meta_path).map_err(io(&meta_path))?;
    let meta: ModelMeta = serde_json::from_slice(&text).map_err(|source| ModelError::Meta {
        path: meta_path.clone(),
        source,
    })?;
    let module = dir.join(MODULE);
    let script = module.is_file().then_some(module.as_path());
    let mut det = Detector::from_meta(meta, device, script)?;
    det.var_store_mut().load(dir.join(WEIGHTS))?;
    Ok(det)
}

/// The newest version in the store, if any.
pub fn load_latest(store: &Path, device: Device) -> Result<Option<Detector>, ModelError> {
    match versions(store)?.last() {
        Some(&v) => load(store, v, device).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::detector::tests::{normal_rows, trained};

    #[test]
    fn save_load_gives_identical_scores_and_versions_ascend() {
        let dir = tempfile::tempdir().expect("tempdir");
        let det = trained();
        let rows = normal_rows(100, 777);
        let before = det.score(&rows).expect("score");
        save(dir.path(), &det).expect("save");
        assert_eq!(versions(dir.path()).expect("versions"), vec![1]);
        let loaded = load_latest(dir.path(), Device::Cpu)
            .expect("load")
            .expect("a model");
        assert_eq!(loaded.meta, det.meta);
        assert_eq!(loaded.score(&rows).expect("score"), before);
        assert!(dir.path().join("v000001/weights.safetensors").is_file());
    }

    #[test]
    fn empty_store_has_no_model() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(
            load_latest(&dir.path().join("absent"), Device::Cpu)
                .expect("ok")
                .is_none()
        );
    }
}
