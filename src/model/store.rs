//! Versioned model bundles on disk: `<store_dir>/v000001/{weights.safetensors,model.json}`.
//! A bundle is written to a temporary folder, each file and the folder synced to disk, and
//! renamed into place (the store folder synced too), so neither a crash nor a power loss
//! leaves a half-written version behind. `CURRENT` names the version to serve (the newest
//! saved one, or the one `anomalyd models revert` chose); only the newest `keep` versions
//! and the current one are kept. `model.json` carries the SHA-256 of the other files, and
//! a version is loaded only through the checks of [`super::verify`].

use std::io::Write as _;
use std::path::{Path, PathBuf};

use tch::Device;

use super::likelihood::{Keyed, LikelihoodParams};
use super::verify::{self, Rejected};
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

/// Each key's anomaly likelihood as the store holds it (saved when the daemon last
/// stopped), so keys do not start a new warm-up. `None` (logged) without a saved state, or
/// with one saved under other `[threshold.likelihood]` settings: the keys start afresh.
pub fn restore_likelihood(
    store: &Path,
    params: LikelihoodParams,
    max_keys: usize,
) -> Option<Keyed> {
    let path = store.join(LIKELIHOOD_STATE);
    match read_likelihood(store) {
        Ok(None) => None,
        Ok(Some(bytes)) => match Keyed::from_snapshot(&bytes, params, max_keys) {
            Ok(keyed) => {
                tracing::info!(keys = keyed.keys(), path = %path.display(),
                    "restored the anomaly likelihood state");
                Some(keyed)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e,
                    "not restoring the anomaly likelihood state: every key warms up again");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e,
                "cannot read the anomaly likelihood state: every key warms up again");
            None
        }
    }
}

/// Saves each key's anomaly likelihood in the store, for [`restore_likelihood`] after a
/// restart.
pub fn persist_likelihood(store: &Path, keyed: &Keyed) -> Result<(), ModelError> {
    let started = std::time::Instant::now();
    let bytes = keyed.snapshot()?;
    let path = save_likelihood(store, &bytes)?;
    tracing::info!(keys = keyed.keys(), bytes = bytes.len(), path = %path.display(),
        seconds = started.elapsed().as_secs_f64(), "saved the anomaly likelihood state");
    Ok(())
}

/// Writes the detector as its version's bundle and makes it the current version.
pub fn save(store: &Path, det: &Detector) -> Result<PathBuf, ModelError> {
    std::fs::create_dir_all(store).map_err(io(store))?;
    let dest = version_dir(store, det.version());
    let tmp = store.join(format!(".tmp-v{:06}-{}", det.version(), std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let weights = tmp.join(WEIGHTS);
    det.var_store().save(&weights)?;
    std::fs::File::open(&weights)
        .and_then(|f| f.sync_all())
        .map_err(io(&weights))?;
    let mut meta = det.meta.clone();
    meta.files.insert(WEIGHTS.into(), file_digest(&weights)?);
    if let Some(src) = det.script_path() {
        let bytes = std::fs::read(src).map_err(io(src))?;
        write_synced(&tmp.join(MODULE), &bytes)?;
        meta.files.insert(MODULE.into(), super::sha256_hex(&bytes));
    }
    let text = super::bundle::encode(&meta).map_err(|source| ModelError::Meta {
        path: tmp.join(META),
        source,
    })?;
    write_synced(&tmp.join(META), &text)?;
    publish_dir(store, &tmp, &dest)?;
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

/// Writes the file `name` in `store` atomically and durably (atomic-write-file: a temporary
/// file, synced, renamed over the old one, and the folder synced), so a crash or a power
/// loss leaves either the previous file or the new one, whole.
fn write_atomic(store: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, ModelError> {
    let dest = store.join(name);
    let mut file = atomic_write_file::AtomicWriteFile::open(&dest).map_err(io(&dest))?;
    file.write_all(bytes).map_err(io(&dest))?;
    file.commit().map_err(io(&dest))?;
    Ok(dest)
}

/// Writes `bytes` to `path` and syncs it to disk.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let mut f = std::fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Syncs a folder, so the names in it (a rename into it) survive a power loss.
fn sync_dir(dir: &Path) -> Result<(), ModelError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Renames the finished temporary folder `tmp` into place as `dest`, durably.
fn publish_dir(store: &Path, tmp: &Path, dest: &Path) -> Result<(), ModelError> {
    sync_dir(tmp)?;
    let _ = std::fs::remove_dir_all(dest);
    std::fs::rename(tmp, dest).map_err(io(dest))?;
    sync_dir(store)
}

/// Hex SHA-256 of a file.
fn file_digest(path: &Path) -> Result<String, ModelError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    Ok(super::sha256_hex(&bytes))
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
    super::bundle::decode(&text).map_err(|source| ModelError::Meta {
        path: meta_path.clone(),
        source,
    })
}

/// Loads one version's bundle onto `device`, unchecked (the CLI's `models` commands; what
/// serves goes through [`load_checked`]).
pub fn load(store: &Path, version: u64, device: Device) -> Result<Detector, ModelError> {
    let dir = version_dir(store, version);
    let meta = read_meta(store, version)?;
    let module = dir.join(MODULE);
    let script = module.is_file().then_some(module.as_path());
    let mut det = Detector::from_meta(meta, device, script)?;
    det.var_store_mut().load(dir.join(WEIGHTS))?;
    Ok(det)
}

/// Loads the bundle in `dir` and checks it (see [`verify`]) for the configured `features`.
pub fn check_dir(dir: &Path, features: &[String], device: Device) -> Result<Detector, Rejected> {
    let meta_path = dir.join(META);
    let text = std::fs::read(&meta_path)
        .map_err(|e| Rejected::new("unreadable", format!("{}: {e}", meta_path.display())))?;
    let meta = super::bundle::decode(&text)
        .map_err(|e| Rejected::new("unreadable", format!("{}: {e}", meta_path.display())))?;
    verify::check_meta(&meta, features)?;
    for (name, want) in &meta.files {
        if ![WEIGHTS, MODULE].contains(&name.as_str()) {
            return Err(Rejected::new("digest", format!("unexpected file {name:?}")));
        }
        let got =
            file_digest(&dir.join(name)).map_err(|e| Rejected::new("unreadable", e.to_string()))?;
        if &got != want {
            return Err(Rejected::new(
                "digest",
                format!("{name} has SHA-256 {got}, model.json says {want}"),
            ));
        }
    }
    let module = dir.join(MODULE);
    let script = module.is_file().then_some(module.as_path());
    let det = verify::load(meta, &dir.join(WEIGHTS), script, device)?;
    verify::check_detector(&det)?;
    Ok(det)
}

/// Loads one version and checks it.
pub fn load_checked(
    store: &Path,
    version: u64,
    features: &[String],
    device: Device,
) -> Result<Detector, Rejected> {
    let det = check_dir(&version_dir(store, version), features, device)?;
    if det.version() != version {
        return Err(Rejected::new(
            "unreadable",
            format!("v{version}'s model.json says version {}", det.version()),
        ));
    }
    Ok(det)
}

/// What [`load_serving`] found: the model to serve, and the versions it rejected.
pub type Serving = (Option<Detector>, Vec<(u64, Rejected)>);

/// The model to serve at start: the current version if it passes the checks, else the
/// newest version that does (the current one is then moved there, with a warning). The
/// rejected versions come back with their reasons, for the log and the metrics.
pub fn load_serving(
    store: &Path,
    features: &[String],
    device: Device,
) -> Result<Serving, ModelError> {
    let mut order = versions(store)?;
    order.reverse();
    if let Some(cur) = current(store)? {
        order.retain(|&v| v != cur);
        order.insert(0, cur);
    }
    let mut rejected = Vec::new();
    for v in order {
        match load_checked(store, v, features, device) {
            Ok(det) => {
                if !rejected.is_empty() {
                    set_current(store, v)?;
                }
                return Ok((Some(det), rejected));
            }
            Err(r) => rejected.push((v, r)),
        }
    }
    Ok((None, rejected))
}

/// A change of the store's current version, as [`Watcher::poll`] finds it.
pub enum Change {
    /// The current version passed its checks: serve it.
    Serve(Box<Detector>),
    /// The current version failed its checks: keep serving; it is not tried again.
    Rejected(u64, Rejected),
}

/// Watches the store's `CURRENT` for the scorer that serves from it: a revert
/// (`anomalyd models revert`), or a model a scorer received from the model topic. A version
/// is served only once it passes its checks; one that fails them is reported once and never
/// tried again, so nothing in the store can stop a scorer that serves a model.
pub struct Watcher {
    dir: PathBuf,
    features: Vec<String>,
    device: Device,
    rejected: std::collections::HashSet<u64>,
}

impl Watcher {
    pub fn new(dir: PathBuf, features: Vec<String>, device: Device) -> Self {
        Watcher {
            dir,
            features,
            device,
            rejected: Default::default(),
        }
    }

    /// The store's current version when it is not `serving` and not rejected before. A
    /// store that cannot be read is logged and changes nothing.
    pub fn poll(&mut self, serving: u64) -> Option<Change> {
        let wanted = match current(&self.dir) {
            Ok(Some(v)) if v != serving && !self.rejected.contains(&v) => v,
            Ok(_) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the model store; serving v{serving}");
                return None;
            }
        };
        Some(
            match load_checked(&self.dir, wanted, &self.features, self.device) {
                Ok(det) => Change::Serve(Box::new(det)),
                Err(why) => {
                    self.rejected.insert(wanted);
                    Change::Rejected(wanted, why)
                }
            },
        )
    }
}

/// One version's bundle as a self-contained message (what the trainer publishes on the
/// model topic): its files, base64-encoded, by name.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bundle {
    pub format: String,
    pub version: u64,
    pub files: std::collections::BTreeMap<String, String>,
    /// When it was published (ms since the epoch): a scorer applies only bundles newer
    /// than the last one it applied, so a replayed message never rolls back. 0: unknown
    /// (bundles published before it existed), always applied.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub serial: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The serial of the last bundle from the model topic that this store applied.
const APPLIED: &str = "APPLIED";

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
        serial: 0,
    })
}

/// What became of a received bundle.
#[derive(Debug, Clone, PartialEq)]
pub enum Imported {
    /// Written (or already there, identical) and made current.
    Current(u64),
    /// Not taken: the store and CURRENT are as they were.
    Rejected(Rejected),
}

/// Takes a received [`Bundle`] into the store: its files are written to a temporary folder
/// and fully checked there ([`check_dir`] for the configured `features`); only a bundle
/// that passes is renamed into place (durably) and made current. A version already in the
/// store must be the same bundle (same weights digest), else it is a different model under
/// the same number and is rejected (`conflict`); the same bundle again is a revert to it.
/// Only the bundle's known file names are accepted, so a message can never write outside
/// its version's folder.
pub fn import(
    store: &Path,
    bundle: &Bundle,
    features: &[String],
    device: Device,
) -> Result<Imported, ModelError> {
    if bundle.format != BUNDLE_FORMAT {
        return Ok(Imported::Rejected(Rejected::new(
            "unreadable",
            format!(
                "format {:?}, this build reads {BUNDLE_FORMAT:?}",
                bundle.format
            ),
        )));
    }
    let applied = std::fs::read_to_string(store.join(APPLIED))
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if bundle.serial > 0 && bundle.serial <= applied {
        if bundle.serial == applied {
            // The very message applied last, read again (a restart re-reads the topic).
            return Ok(Imported::Current(bundle.version));
        }
        return Ok(Imported::Rejected(Rejected::new(
            "replay",
            format!(
                "published at {} ms, before the last bundle applied ({applied} ms)",
                bundle.serial
            ),
        )));
    }
    std::fs::create_dir_all(store).map_err(io(store))?;
    let tmp = store.join(format!(
        ".tmp-v{:06}-{}",
        bundle.version,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let checked = bundle
        .write_files(&tmp)
        .map_err(|e| Rejected::new("unreadable", e.to_string()))
        .and_then(|()| check_dir(&tmp, features, device));
    let det = match checked {
        Ok(det) => det,
        Err(r) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Ok(Imported::Rejected(r));
        }
    };
    let dest = version_dir(store, bundle.version);
    if versions(store)?.contains(&bundle.version) {
        let _ = std::fs::remove_dir_all(&tmp);
        let on_disk = read_meta(store, bundle.version)
            .ok()
            .and_then(|m| m.files.get(WEIGHTS).cloned());
        let received = det.meta.files.get(WEIGHTS);
        if on_disk.as_ref() != received || received.is_none() {
            return Ok(Imported::Rejected(Rejected::new(
                "conflict",
                format!(
                    "v{} in the store has weights {}, the bundle {}",
                    bundle.version,
                    on_disk.as_deref().unwrap_or("(no digest)"),
                    received.map_or("(no digest)", String::as_str)
                ),
            )));
        }
    } else {
        publish_dir(store, &tmp, &dest)?;
    }
    set_current(store, bundle.version)?;
    if bundle.serial > 0 {
        write_atomic(store, APPLIED, format!("{}\n", bundle.serial).as_bytes())?;
    }
    Ok(Imported::Current(bundle.version))
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
        let meta = super::bundle::decode(&text).map_err(|source| ModelError::Meta {
            path: meta_path.clone(),
            source,
        })?;
        if meta.version != self.version {
            return Err(self.invalid(format!("its model.json says version {}", meta.version)));
        }
        Ok(())
    }
}

/// The current version (see [`current`]), if the store has any, unchecked.
#[cfg(test)]
pub fn load_current(store: &Path, device: Device) -> Result<Option<Detector>, ModelError> {
    match current(store)? {
        Some(v) => load(store, v, device).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::detector::tests::{features, normal_rows, trained};

    /// The saved metadata is the model's, plus the digests of its files.
    fn assert_same_meta(saved: &ModelMeta, model: &ModelMeta) {
        let mut m = saved.clone();
        assert!(
            m.files.contains_key(WEIGHTS),
            "the weights' digest is recorded"
        );
        m.files.clear();
        assert_eq!(&m, model);
    }

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
        assert_same_meta(&loaded.meta, &det.meta);
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
        assert_same_meta(&back.meta, &v1.meta);
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
    fn metadata_from_before_the_scaler_and_vae_options_still_loads() {
        // A bundle written before these options was trained as they now default to in
        // bundles: standard scaler, reconstruction probability, decoder std floor e^-4,
        // exactly `epochs` epochs.
        let mut meta = trained().meta;
        meta.spec.scaler = crate::config::ScalerKind::Standard;
        meta.spec.vae.score = crate::config::VaeScore::ReconstructionProbability;
        meta.spec.vae.min_std = (-4.0f64).exp();
        meta.spec.min_steps = 0;
        let mut json: serde_json::Value =
            serde_json::from_slice(&super::super::bundle::encode(&meta).expect("encodes"))
                .expect("json");
        assert_eq!(json["format"], 1);
        assert!(
            json.as_object_mut()
                .expect("meta")
                .remove("format")
                .is_some()
        );
        let spec = json["spec"].as_object_mut().expect("spec");
        assert!(spec.remove("scaler").is_some());
        assert!(spec.remove("min_steps").is_some());
        let vae = spec["vae"].as_object_mut().expect("vae");
        assert!(vae.remove("score").is_some());
        assert!(vae.remove("min_std").is_some());
        let old = super::super::bundle::decode(&serde_json::to_vec(&json).expect("json"))
            .expect("an older bundle loads");
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
        let f = features();
        assert_eq!(
            import(to.path(), &back, &f, Device::Cpu).expect("import"),
            Imported::Current(1)
        );
        assert_eq!(current(to.path()).expect("current"), Some(1));
        let loaded = load_current(to.path(), Device::Cpu)
            .expect("load")
            .expect("model");
        assert_same_meta(&loaded.meta, &det.meta);
        assert_eq!(
            loaded.score(&rows).expect("score"),
            det.score(&rows).expect("score")
        );

        let mut evil = back.clone();
        evil.version = 2;
        evil.files.insert("../escape".into(), String::new());
        let err = rejected(import(to.path(), &evil, &f, Device::Cpu));
        assert!(err.detail.contains("unexpected file"), "{err}");
        assert!(!to.path().join("escape").exists());
        let mut wrong = back;
        wrong.version = 3;
        let err = rejected(import(to.path(), &wrong, &f, Device::Cpu));
        assert!(err.detail.contains("says version 1"), "{err}");
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

    fn rejected(r: Result<Imported, ModelError>) -> Rejected {
        match r.expect("import") {
            Imported::Rejected(r) => r,
            other => panic!("accepted: {other:?}"),
        }
    }

    /// Bad bundles of every kind are rejected with their reason, before they are current;
    /// the good one keeps serving.
    #[test]
    fn bad_bundles_never_become_current() {
        use base64::Engine as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let unb64 = |s: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .expect("b64")
        };
        let from = tempfile::tempdir().expect("tempdir");
        let to = tempfile::tempdir().expect("tempdir");
        let f = features();
        let det = trained();
        save(from.path(), &det).expect("save");
        let good = export(from.path(), 1).expect("export");
        assert_eq!(
            import(to.path(), &good, &f, Device::Cpu).expect("import"),
            Imported::Current(1)
        );
        let meta_of = |b: &Bundle| -> serde_json::Value {
            serde_json::from_slice(&unb64(&b.files[META])).expect("meta")
        };
        let with_meta = |b: &Bundle, version: u64, edit: &dyn Fn(&mut serde_json::Value)| {
            let mut m = meta_of(b);
            m["version"] = version.into();
            edit(&mut m);
            let mut out = b.clone();
            out.version = version;
            out.files
                .insert(META.into(), b64(&serde_json::to_vec(&m).expect("json")));
            out
        };
        let weights = unb64(&good.files[WEIGHTS]);
        let with_weights = |version: u64, bytes: &[u8], digest: bool| {
            let mut out = with_meta(&good, version, &|m| {
                if digest {
                    m["files"][WEIGHTS] = crate::model::sha256_hex(bytes).into();
                }
            });
            out.files.insert(WEIGHTS.into(), b64(bytes));
            out
        };
        // NaN weights: the safetensors file with one float overwritten.
        let mut nan = weights.clone();
        let n = nan.len();
        nan[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
        let cases: Vec<(&str, Bundle)> = vec![
            (
                "digest",
                with_weights(2, &weights[..weights.len() / 2], false),
            ),
            (
                "weights",
                with_weights(3, &weights[..weights.len() / 2], true),
            ),
            ("weights", with_weights(4, b"junk", true)),
            ("not_finite", with_weights(5, &nan, true)),
            (
                "shape",
                with_meta(&good, 6, &|m| m["spec"]["hidden"] = serde_json::json!([])),
            ),
            (
                "shape",
                with_meta(&good, 7, &|m| {
                    m["scaler"]["mean"] = serde_json::json!([0.0])
                }),
            ),
            (
                "features",
                with_meta(&good, 8, &|m| {
                    let names = m["features"].as_array_mut().expect("names");
                    names.reverse();
                }),
            ),
            (
                "not_finite",
                with_meta(&good, 9, &|m| {
                    m["threshold"] = serde_json::json!({"kind": "fixed", "value": 1e38});
                }),
            ),
            (
                "weights",
                with_meta(&good, 10, &|m| {
                    m["spec"]["hidden"] = serde_json::json!([5, 3])
                }),
            ),
            ("conflict", with_weights(1, &nan_free_other(&weights), true)),
        ];
        for (reason, bundle) in cases {
            let r = rejected(import(to.path(), &bundle, &f, Device::Cpu));
            assert_eq!(r.reason, reason, "v{}: {r}", bundle.version);
            assert_eq!(current(to.path()).expect("current"), Some(1), "{r}");
            assert_eq!(versions(to.path()).expect("versions"), vec![1], "{r}");
        }
        // The same bundle again is a revert to it, not a conflict.
        assert_eq!(
            import(to.path(), &good, &f, Device::Cpu).expect("import"),
            Imported::Current(1)
        );
    }

    /// Other valid weights for the same model: every float nudged.
    fn nan_free_other(weights: &[u8]) -> Vec<u8> {
        let mut w = weights.to_vec();
        let n = w.len();
        w[n - 4..].copy_from_slice(&0.123f32.to_le_bytes());
        w
    }

    /// A corrupt CURRENT bundle at start: the newest valid version serves, and CURRENT
    /// moves there; with none valid there is nothing to serve (and no error).
    #[test]
    fn a_corrupt_current_bundle_falls_back_to_the_newest_valid_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = features();
        let v1 = trained();
        save(dir.path(), &v1).expect("save v1");
        let mut v2 = trained();
        v2.meta.version = 2;
        save(dir.path(), &v2).expect("save v2");
        std::fs::write(dir.path().join("v000002").join(WEIGHTS), b"truncated").expect("corrupt");
        let (det, rejected) = load_serving(dir.path(), &f, Device::Cpu).expect("load");
        assert_eq!(det.expect("a model").version(), 1);
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].0, 2);
        assert_eq!(rejected[0].1.reason, "digest");
        assert_eq!(current(dir.path()).expect("current"), Some(1));
        std::fs::write(dir.path().join(CURRENT), b"garbage\n").expect("corrupt CURRENT");
        std::fs::write(dir.path().join("v000001").join(META), b"{").expect("corrupt meta");
        let (det, rejected) = load_serving(dir.path(), &f, Device::Cpu).expect("load");
        assert!(
            det.is_none(),
            "no valid version: the daemon trains anew (role all)"
        );
        assert_eq!(rejected.len(), 2);
        assert_eq!(rejected[1].1.reason, "unreadable");
    }

    /// A replayed (older) publication is rejected; a revert published anew is applied.
    #[test]
    fn a_replayed_bundle_is_no_rollback_but_a_republished_revert_is() {
        let from = tempfile::tempdir().expect("tempdir");
        let to = tempfile::tempdir().expect("tempdir");
        let f = features();
        save(from.path(), &trained()).expect("save v1");
        let mut v2 = trained();
        v2.meta.version = 2;
        save(from.path(), &v2).expect("save v2");
        let publish = |version: u64, serial: u64| Bundle {
            serial,
            ..export(from.path(), version).expect("export")
        };
        let take = |b: &Bundle| import(to.path(), b, &f, Device::Cpu).expect("import");
        assert_eq!(take(&publish(1, 1_000)), Imported::Current(1));
        assert_eq!(take(&publish(2, 2_000)), Imported::Current(2));
        // The v1 message published at 1000 again: a replay.
        let r = rejected(import(to.path(), &publish(1, 1_000), &f, Device::Cpu));
        assert_eq!(r.reason, "replay");
        assert_eq!(current(to.path()).expect("current"), Some(2));
        // The last message read again after a restart: nothing changes.
        assert_eq!(take(&publish(2, 2_000)), Imported::Current(2));
        // An explicit revert to v1, published anew.
        assert_eq!(take(&publish(1, 3_000)), Imported::Current(1));
        assert_eq!(current(to.path()).expect("current"), Some(1));
    }
}
