//! Layered configuration: the embedded `config/default.toml`, an optional file, then
//! `ANOMALYD__SECTION__KEY` environment variables. The raw layer ([`raw`]) is validated into
//! [`Settings`], the checked types the stages accept.

pub mod raw;
mod validate;

use std::path::Path;

use config::{Config, Environment, File, FileFormat};

pub use raw::{
    Activation, ConcreteParams, ContractiveParams, DenoisingParams, DeviceChoice, InputMode,
    LogFormat, ModelKind, Noise, OffsetReset, PcaParams, RawConfig, Role, ScalerKind, SparseParams,
    TorchScriptParams, VaeParams, VaeScore,
};
pub use validate::{
    BatchPolicy, ClusterSettings, InputShape, InputSpec, KafkaSettings, ModelRuntime, ModelSpec,
    RetrainPolicy, Settings, StateBudget, ThresholdSpec,
};

/// The defaults, embedded so the binary runs without any file.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Environment variable prefix; `__` separates nesting levels.
pub const ENV_PREFIX: &str = "ANOMALYD";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("configuration key `kafka.properties.{key}`: {reason}")]
    Property { key: String, reason: String },
}

impl ConfigError {
    pub fn invalid(key: &'static str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key,
            reason: reason.into(),
        }
    }
}

/// Reads the layers into the raw form (what `check-config` prints).
pub fn load_raw(file: Option<&Path>) -> Result<RawConfig, ConfigError> {
    let mut builder = Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
    if let Some(path) = file {
        builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
    }
    builder = builder.add_source(
        Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .list_separator(",")
            .with_list_parse_key("input.features")
            .with_list_parse_key("model.hidden")
            .try_parsing(true),
    );
    Ok(builder.build()?.try_deserialize()?)
}

/// Reads and validates the configuration.
pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
    Settings::validate(load_raw(file)?)
}

/// A librdkafka property value: `file:/path` is replaced by the file's contents (trailing
/// newline trimmed), so secrets can come from mounted files; other values pass unchanged.
pub fn property_value(key: &str, value: &str) -> Result<String, ConfigError> {
    match value.strip_prefix("file:") {
        Some(path) => std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|e| ConfigError::Property {
                key: key.to_string(),
                reason: format!("cannot read {path}: {e}"),
            }),
        None => Ok(value.to_string()),
    }
}

/// Substrings of librdkafka property names whose values are secrets.
const SECRET_MARKERS: [&str; 3] = ["password", "secret", "key"];

pub fn is_secret(property: &str) -> bool {
    let p = property.to_ascii_lowercase();
    SECRET_MARKERS.iter().any(|m| p.contains(m))
}

/// The effective configuration as TOML with secret values replaced by `*****`.
pub fn render_masked(raw: &RawConfig) -> String {
    let mut shown = raw.clone();
    for (k, v) in shown.kafka.properties.iter_mut() {
        if is_secret(k) {
            *v = "*****".into();
        }
    }
    toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::discord::DiscordParams;

    #[test]
    fn embedded_defaults_validate() {
        let s = Settings::validate(load_raw(None).expect("defaults load")).expect("valid");
        assert_eq!(s.kafka.input_topic, "metrics");
        assert_eq!(s.input.feature_names(), vec!["cpu", "mem"]);
    }

    #[test]
    fn likelihood_defaults_in_the_toml_are_the_modules() {
        let mut raw = load_raw(None).expect("defaults load");
        raw.input.mode = InputMode::Window;
        raw.input.features = vec!["value".into()];
        raw.threshold.kind = raw::ThresholdKind::Likelihood;
        raw.threshold.likelihood.input = raw::LikelihoodInput::Score;
        let s = Settings::validate(raw).expect("valid");
        let ThresholdSpec::Likelihood { params, .. } = s.threshold else {
            panic!("{:?}", s.threshold);
        };
        assert_eq!(
            params,
            crate::model::likelihood::LikelihoodParams::default()
        );
    }

    #[test]
    fn min_steps_gives_a_small_training_set_more_epochs() {
        let mut spec = Settings::validate(load_raw(None).expect("defaults"))
            .expect("valid")
            .model;
        assert_eq!(
            (spec.epochs, spec.batch_size, spec.min_steps),
            (60, 128, 1000)
        );
        assert_eq!(spec.epochs_for(460), 250, "4 batches an epoch: 250 epochs");
        assert_eq!(
            spec.epochs_for(1000),
            125,
            "the warm-up: 8 batches an epoch"
        );
        assert_eq!(
            spec.epochs_for(100_000),
            60,
            "782 batches an epoch: epochs suffice"
        );
        spec.min_steps = 0;
        assert_eq!(spec.epochs_for(460), 60, "min_steps 0: epochs as set");
    }

    /// A user who names only the input gets docs/quality.md's best for its mode.
    #[test]
    fn auto_threshold_is_the_measured_best_per_input_mode() {
        let mut raw = load_raw(None).expect("defaults load");
        raw.input.mode = InputMode::Window;
        raw.input.features = vec!["value".into()];
        let s = Settings::validate(raw.clone()).expect("valid");
        let ThresholdSpec::Likelihood { params, .. } = s.threshold else {
            panic!("window mode: {:?}", s.threshold);
        };
        assert_eq!(
            params.discord,
            Some(DiscordParams {
                memory: 2000,
                segment: 2
            })
        );
        assert_eq!(params.refractory, 100);
        let InputShape::Window { size, .. } = s.input.shape else {
            panic!("{:?}", s.input.shape);
        };
        assert_eq!(size, 32);

        raw.threshold.likelihood.input = raw::LikelihoodInput::Score;
        let s = Settings::validate(raw.clone()).expect("valid");
        let ThresholdSpec::Likelihood { params, .. } = s.threshold else {
            panic!("{:?}", s.threshold);
        };
        assert_eq!(params.discord, None, "an explicit input is kept");

        let fields = Settings::validate(load_raw(None).expect("defaults load")).expect("valid");
        assert!(
            matches!(fields.threshold, ThresholdSpec::Quantile { .. }),
            "fields mode: {:?}",
            fields.threshold
        );
    }

    #[test]
    fn secrets_are_masked() {
        let mut raw = load_raw(None).expect("defaults load");
        raw.kafka
            .properties
            .insert("sasl.password".into(), "hunter2".into());
        raw.kafka
            .properties
            .insert("security.protocol".into(), "SASL_SSL".into());
        let text = render_masked(&raw);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("*****"));
        assert!(text.contains("SASL_SSL"));
    }

    #[test]
    fn property_values_can_come_from_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret\n").expect("write");
        let v = property_value("sasl.password", &format!("file:{}", path.display()));
        assert_eq!(v.expect("read"), "s3cret");
        assert_eq!(property_value("x", "plain").expect("plain"), "plain");
        let err = property_value("sasl.password", "file:/nonexistent/pw").expect_err("missing");
        assert!(
            err.to_string().contains("kafka.properties.sasl.password"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[kafka]\nbrokerz = \"x\"\n").expect("write");
        let err = load(Some(&path)).expect_err("unknown key").to_string();
        assert!(err.contains("brokerz"), "{err}");
    }

    #[test]
    fn invalid_value_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[threshold]\nquantile = 1.5\n").expect("write");
        let err = load(Some(&path)).expect_err("bad quantile").to_string();
        assert!(err.contains("threshold.quantile"), "{err}");
    }

    #[test]
    fn scaler_and_vae_score_are_read_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[model]\nscaler = \"robust\"\n[model.vae]\nscore = \"elbo\"\n",
        )
        .expect("write");
        let s = load(Some(&path)).expect("valid");
        assert_eq!(s.model.scaler, ScalerKind::Robust);
        assert_eq!(s.model.vae.score, VaeScore::Elbo);
        std::fs::write(&path, "[model]\nscaler = \"minmax\"\n").expect("write");
        let err = load(Some(&path)).expect_err("unknown scaler").to_string();
        assert!(err.contains("scaler") && err.contains("minmax"), "{err}");
    }

    #[test]
    fn discord_input_is_read_and_needs_window_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        let lik = "[threshold]\nkind = \"likelihood\"\n\
                   [threshold.likelihood]\ninput = \"discord\"\nmemory = 500\n";
        let window = "[input]\nmode = \"window\"\nfeatures = [\"value\"]\n";
        std::fs::write(&path, format!("{window}{lik}")).expect("write");
        let s = load(Some(&path)).expect("valid");
        let ThresholdSpec::Likelihood { params, .. } = s.threshold else {
            panic!("{:?}", s.threshold);
        };
        assert_eq!(
            params.discord,
            Some(DiscordParams {
                memory: 500,
                segment: 2
            })
        );
        assert_eq!(params.refractory, 100, "one alert per episode by default");

        std::fs::write(&path, lik).expect("write");
        let err = load(Some(&path)).expect_err("fields mode").to_string();
        assert!(err.contains("threshold.likelihood.input"), "{err}");
        std::fs::write(&path, format!("{window}{lik}").replace("500", "0")).expect("write");
        let err = load(Some(&path)).expect_err("no memory").to_string();
        assert!(err.contains("threshold.likelihood.memory"), "{err}");
        for segment in ["0", "33"] {
            let text = format!("{window}{lik}segment = {segment}\n");
            std::fs::write(&path, text).expect("write");
            let err = load(Some(&path)).expect_err("bad segment").to_string(); // window 32
            assert!(
                err.contains("threshold.likelihood.segment"),
                "{segment}: {err}"
            );
        }
        std::fs::write(
            &path,
            format!("{window}{lik}segment = 4\nrefractory = 100\n"),
        )
        .expect("write");
        let ThresholdSpec::Likelihood { params, .. } = load(Some(&path)).expect("valid").threshold
        else {
            panic!("likelihood");
        };
        assert_eq!(params.discord.map(|d| d.segment), Some(4));
        assert_eq!(params.refractory, 100);
    }

    /// `[state] memory` caps the keys of window and likelihood state at what fits, and a
    /// stream of ever-new keys never holds more than that: the least recently seen go.
    #[test]
    fn state_memory_bounds_the_keys_of_every_kind() {
        use crate::model::likelihood::Keyed;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.toml");
        std::fs::write(
            &path,
            "[input]\nmode = \"window\"\nfeatures = [\"v\"]\n[input.window]\nsize = 8\n\
             [model]\nwarmup_records = 10\n[pipeline]\nmax_in_flight = 5000\n\
             [threshold]\nkind = \"likelihood\"\n[threshold.likelihood]\nwarmup = 20\n\
             history = 50\ninput = \"discord\"\nmemory = 30\n[state]\nmemory = \"1MiB\"\n",
        )
        .expect("write");
        let s = load(Some(&path)).expect("valid");
        let per_key = s.state.window_key_bytes + s.state.likelihood_key_bytes;
        let fit = (1024 * 1024 / per_key) as usize;
        assert!(fit > 10 && fit < 10_000, "{fit} keys of {per_key} bytes");
        let InputShape::Window {
            size,
            differences,
            max_keys,
            ..
        } = s.input.shape
        else {
            panic!("window mode")
        };
        assert_eq!(max_keys, fit);
        let ThresholdSpec::Likelihood {
            params,
            max_keys: likelihood_keys,
            ..
        } = s.threshold
        else {
            panic!("likelihood")
        };
        assert_eq!(likelihood_keys, fit);
        // Ten times as many keys as fit, each with a full history and discord memory.
        let mut keyed = Keyed::new(params, likelihood_keys);
        let mut w = crate::model::window::Windower::new(size, differences, max_keys);
        for k in 0..10 * fit {
            let key = format!("key-{k}");
            for i in 0..60 {
                let v = w.push(Some(&key), (i % 7) as f32);
                keyed.update(Some(&key), 0.0, &v, Some(f64::from(v[7])));
            }
        }
        assert_eq!(keyed.keys(), fit);
        assert_eq!(keyed.take_evictions(), (9 * fit) as u64);
        assert_eq!(w.keys(), fit);
        // The state kept per key stays within the bound the budget is counted in.
        let snapshot = keyed.snapshot().expect("snapshot");
        assert!(
            snapshot.len() / fit <= s.state.likelihood_key_bytes,
            "{} bytes a key serialised, {} budgeted",
            snapshot.len() / fit,
            s.state.likelihood_key_bytes
        );
        let err = std::fs::write(&path, "[state]\nmemory = \"lots\"\n")
            .map_err(|e| e.to_string())
            .and_then(|()| load(Some(&path)).map(|_| ()).map_err(|e| e.to_string()))
            .expect_err("a bad size");
        assert!(err.contains("state.memory"), "{err}");
    }
}
