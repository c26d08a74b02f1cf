//! Versioned model bundles on disk: `<store_dir>/v000001/{weights.safetensors,model.json}`.
//! A bundle is written to a temporary folder and renamed into place, so a crash never
//! leaves a half-written version behind. `CURRENT` names the version to serve (the newest
//! saved one, or the one `anomalyd models revert` chose); only the newest `keep` versions
//! and the current one are kept.

use std::path::{Path, PathBuf};

use tch::Device;

use super::{Detector, ModelError, ModelMeta};

const WEIGHTS: &str = "weights.safetensors";
const META: &str = "model.json";
/// A TorchScript model's module, copied into its bundle.
const MODULE: &str = "module.pt";
/// The serving version's number.
const CURRENT: &str = "CURRENT";
/// The scorer's per-key anomaly likelihood state, written when the daemon stops.
pub const LIKELIHOOD_STATE: &str = "likelihood.state";

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

/// Writes `bytes` as the store's likelihood state (atomically).
pub fn save_likelihood(store: &Path, bytes: &[u8]) -> Result<PathBuf, ModelError> {
    std::fs::create_dir_all(store).map_err(io(store))?;
    write_atomic(store, LIKELIHOOD_STATE, bytes)
}

/// The saved likelihood state, if the store has one.
pub fn read_likelihood(store: &Path) -> Result<Option<Vec<u8>>, ModelError> {
    let path = store.join(LIKELIHOOD_STATE);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Writes the detector as its version's bundle and makes it the current version.
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
    set_current(store, det.version())?;
    Ok(dest)
}

/// Makes `version` the one to serve (a running daemon switches to it between batches).
pub fn set_current(store: &Path, version: u64) -> Result<(), ModelError> {
    if !version_dir(store, version).join(META).is_file() {
        return Err(ModelError::Mismatch(format!(
            "no model version {version} in {}",
            store.display()
        )));
    }
    write_atomic(store, CURRENT, format!("{version}\n").as_bytes()).map(|_| ())
}

/// Writes the file `name` in `store` through a temporary file and a rename, so a crash
/// leaves the previous file whole.
fn write_atomic(store: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, ModelError> {
    let tmp = store.join(format!(".{name}.{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    let dest = store.join(name);
    std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
    Ok(dest)
}

/// The version to serve: the one `CURRENT` names when it exists, else the newest.
pub fn current(store: &Path) -> Result<Option<u64>, ModelError> {
    let all = versions(store)?;
    let named = std::fs::read_to_string(store.join(CURRENT))
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .filter(|v| all.contains(v));
    Ok(named.or_else(|| all.last().copied()))
}

/// Deletes all but the newest `keep` versions, never the current one.
pub fn prune(store: &Path, keep: usize) -> Result<Vec<u64>, ModelError> {
    let all = versions(store)?;
    let serving = current(store)?;
    let cut = all.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for &v in &all[..cut] {
        if Some(v) != serving {
            std::fs::remove_dir_all(version_dir(store, v)).map_err(io(store))?;
            removed.push(v);
        }
    }
    Ok(removed)
}

/// One version's metadata, without loading its weights.
pub fn read_meta(store: &Path, version: u64) -> Result<ModelMeta, ModelError> {
    let meta_path = version_dir(store, version).join(META);
    let text = std::fs::read(&meta_path).map_err(io(&meta_path))?;
    serde_json::from_slice(&text).map_err(|source| ModelError::Meta {
        path: meta_path.clone(),
        source,
    })
}

/// Loads one version's bundle onto `device`.
pub fn load(store: &Path, version: u64, device: Device) -> Result<Detector, ModelError> {
    let dir = version_dir(store, version);
    let meta = read_meta(store, version)?;
    let module = dir.join(MODULE);
    let script = module.is_file().then_some(module.as_path());
    let mut det = Detector::from_meta(meta, device, script)?;
    det.var_store_mut().load(dir.join(WEIGHTS))?;
    Ok(det)
}

/// One version's bundle as a self-contained message (what the trainer publishes on the
/// model topic): its files, base64-encoded, by name.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bundle {
    pub format: String,
    pub version: u64,
    pub files: std::collections::BTreeMap<String, String>,
}

/// The `format` of a [`Bundle`] this build writes and reads.
pub const BUNDLE_FORMAT: &str = "anomalyd.bundle.v1";

/// Reads one version's files into a [`Bundle`].
pub fn export(store: &Path, version: u64) -> Result<Bundle, ModelError> {
    use base64::Engine as _;
    let dir = version_dir(store, version);
    let mut files = std::collections::BTreeMap::new();
    for name in [META, WEIGHTS, MODULE] {
        let path = dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => {
                files.insert(
                    name.to_string(),
                    base64::engine::general_purpose::STANDARD.encode(bytes),
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && name == MODULE => {}
            Err(e) => return Err(io(&path)(e)),
        }
    }
    Ok(Bundle {
        format: BUNDLE_FORMAT.into(),
        version,
        files,
    })
}

/// Writes a received [`Bundle`] as its version (atomically, like [`save`]) and makes it
/// current. A version already in the store is left as it is. Only the bundle's known file
/// names are accepted, so a message can never write outside its version's folder.
pub fn import(store: &Path, bundle: &Bundle) -> Result<(), ModelError> {
    if bundle.format != BUNDLE_FORMAT {
        return Err(bundle.invalid(format!(
            "format {:?}, this build reads {BUNDLE_FORMAT:?}",
            bundle.format
        )));
    }
    if !versions(store)?.contains(&bundle.version) {
        std::fs::create_dir_all(store).map_err(io(store))?;
        let tmp = store.join(format!(
            ".tmp-v{:06}-{}",
            bundle.version,
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        if let Err(e) = bundle.write_files(&tmp) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let dest = version_dir(store, bundle.version);
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
    }
    set_current(store, bundle.version)
}

impl Bundle {
    fn invalid(&self, why: String) -> ModelError {
        ModelError::Mismatch(format!("model bundle v{}: {why}", self.version))
    }

    /// Decodes the files into `dir` and checks that the metadata names this version.
    fn write_files(&self, dir: &Path) -> Result<(), ModelError> {
        use base64::Engine as _;
        for required in [META, WEIGHTS] {
            if !self.files.contains_key(required) {
                return Err(self.invalid(format!("no {required}")));
            }
        }
        for (name, data) in &self.files {
            if ![META, WEIGHTS, MODULE].contains(&name.as_str()) {
                return Err(self.invalid(format!("unexpected file {name:?}")));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| self.invalid(format!("{name}: {e}")))?;
            std::fs::write(dir.join(name), bytes).map_err(io(dir))?;
        }
        let meta_path = dir.join(META);
        let text = std::fs::read(&meta_path).map_err(io(&meta_path))?;
        let meta: ModelMeta = serde_json::from_slice(&text).map_err(|source| ModelError::Meta {
            path: meta_path.clone(),
            source,
        })?;
        if meta.version != self.version {
            return Err(self.invalid(format!("its model.json says version {}", meta.version)));
        }
        Ok(())
    }
}

/// The current version (see [`current`]), if the store has any.
pub fn load_current(store: &Path, device: Device) -> Result<Option<Detector>, ModelError> {
    match current(store)? {
        Some(v) => load(store, v, device).map(Some),
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
        let loaded = load_current(dir.path(), Device::Cpu)
            .expect("load")
            .expect("a model");
        assert_eq!(loaded.meta, det.meta);
        assert_eq!(loaded.score(&rows).expect("score"), before);
        assert!(dir.path().join("v000001/weights.safetensors").is_file());
    }

    #[test]
    fn revert_restores_the_previous_versions_scores_and_prune_keeps_current() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rows = normal_rows(100, 555);
        let v1 = trained();
        let v1_scores = v1.score(&rows).expect("score");
        save(dir.path(), &v1).expect("save v1");
        let mut v2 = trained();
        v2.meta.version = 2;
        v2.meta.threshold = crate::model::threshold::Threshold::Fixed { value: 1.0 };
        save(dir.path(), &v2).expect("save v2");
        assert_eq!(
            current(dir.path()).expect("current"),
            Some(2),
            "a save promotes"
        );
        set_current(dir.path(), 1).expect("revert");
        let back = load_current(dir.path(), Device::Cpu)
            .expect("load")
            .expect("model");
        assert_eq!(back.version(), 1);
        assert_eq!(back.meta, v1.meta);
        assert_eq!(
            back.score(&rows).expect("score"),
            v1_scores,
            "revert gives v1's scores exactly"
        );
        assert!(set_current(dir.path(), 9).is_err(), "no such version");
        // keep = 1: v2 is the newest, v1 is current; neither goes.
        assert_eq!(prune(dir.path(), 1).expect("prune"), Vec::<u64>::new());
        set_current(dir.path(), 2).expect("forward");
        assert_eq!(prune(dir.path(), 1).expect("prune"), vec![1]);
        assert_eq!(versions(dir.path()).expect("versions"), vec![2]);
    }

    #[test]
    fn metadata_from_before_the_scaler_and_vae_score_options_still_loads() {
        let meta = trained().meta;
        let mut json = serde_json::to_value(&meta).expect("json");
        let spec = json["spec"].as_object_mut().expect("spec");
        assert!(spec.remove("scaler").is_some());
        assert!(
            spec["vae"]
                .as_object_mut()
                .expect("vae")
                .remove("score")
                .is_some()
        );
        let old: ModelMeta = serde_json::from_value(json).expect("an older bundle loads");
        assert_eq!(old.spec.scaler, crate::config::ScalerKind::Standard);
        assert_eq!(
            old.spec.vae.score,
            crate::config::VaeScore::ReconstructionProbability
        );
        assert_eq!(old, meta);
        // The scaler keeps its on-disk field names.
        let scaler = serde_json::to_value(&meta.scaler).expect("json");
        assert!(scaler.get("mean").is_some() && scaler.get("std").is_some());
    }

    #[test]
    fn exported_bundle_imports_as_the_same_version_with_identical_scores() {
        let from = tempfile::tempdir().expect("tempdir");
        let to = tempfile::tempdir().expect("tempdir");
        let det = trained();
        let rows = normal_rows(50, 321);
        save(from.path(), &det).expect("save");
        let bundle = export(from.path(), 1).expect("export");
        let wire = serde_json::to_vec(&bundle).expect("json");
        let back: Bundle = serde_json::from_slice(&wire).expect("parse");
        import(to.path(), &back).expect("import");
        assert_eq!(current(to.path()).expect("current"), Some(1));
        let loaded = load_current(to.path(), Device::Cpu)
            .expect("load")
            .expect("model");
        assert_eq!(loaded.meta, det.meta);
        assert_eq!(
            loaded.score(&rows).expect("score"),
            det.score(&rows).expect("score")
        );

        let mut evil = back.clone();
        evil.version = 2;
        evil.files.insert("../escape".into(), String::new());
        let err = import(to.path(), &evil).expect_err("unknown file name");
        assert!(err.to_string().contains("unexpected file"), "{err}");
        assert!(!to.path().join("escape").exists());
        let mut wrong = back;
        wrong.version = 3;
        let err = import(to.path(), &wrong).expect_err("version mismatch");
        assert!(err.to_string().contains("says version 1"), "{err}");
        assert_eq!(versions(to.path()).expect("versions"), vec![1]);
    }

    #[test]
    fn empty_store_has_no_model() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(
            load_current(&dir.path().join("absent"), Device::Cpu)
                .expect("ok")
                .is_none()
        );
    }
}
