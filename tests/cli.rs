//! The binary without Kafka: configuration errors, check-config, and offline scoring.

mod common;

use std::process::{Command, Output};

fn anomalyd(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anomalyd"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run anomalyd")
}

fn write_config(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("c.toml");
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `anomalyd score` of the NAB fixture with `config`: the run, and its score lines.
fn score_nab_fixture(dir: &std::path::Path, config: &str) -> (Output, Vec<serde_json::Value>) {
    let cfg = write_config(dir, config);
    let input = common::fixture("nab/art_daily_jumpsup.csv");
    let out_path = dir.join("scores.jsonl");
    let out = anomalyd(
        &[
            "score",
            "--config",
            &cfg,
            "--input",
            input.to_str().expect("path"),
            "--output",
            out_path.to_str().expect("path"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = std::fs::read_to_string(&out_path)
        .expect("output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    (out, lines)
}

/// `anomalyd eval --config CFG ARGS... --report DIR/report.json`, which must succeed: the
/// run, and its report.
fn eval(dir: &std::path::Path, cfg: &str, args: &[&str]) -> (Output, serde_json::Value) {
    let report = dir.join("report.json");
    let report_arg = report.to_str().expect("path");
    let argv: Vec<&str> = ["eval", "--config", cfg]
        .into_iter()
        .chain(args.iter().copied())
        .chain(["--report", report_arg])
        .collect();
    let out = anomalyd(&argv, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
    (out, r)
}

/// Whether a score line's timestamp lies in the fixture's labelled anomaly window.
fn in_labelled_window(line: &serde_json::Value) -> bool {
    let ts = line["timestamp"].as_str().expect("ts");
    common::nab_windows()
        .iter()
        .any(|(s, e)| ts >= s.as_str() && ts <= e.as_str())
}

#[test]
fn invalid_config_stops_startup_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("[model]\nwarmup_records = 0\n", "model.warmup_records"),
        ("[kafka]\nbrokerz = \"x\"\n", "brokerz"),
        ("[threshold]\nquantile = 1.5\n", "threshold.quantile"),
        ("[model]\ndevice = \"tpu\"\n", "model.device"),
        (
            "[input]\nmode = \"window\"\nfeatures = [\"a\", \"b\"]\n",
            "input.features",
        ),
        ("[http]\nlisten = \"nowhere\"\n", "http.listen"),
        ("[cluster]\nrole = \"scorer\"\n", "model.store_dir"),
        (
            "[cluster]\nrole = \"trainer\"\nmodel_topic = \" \"\n[model]\nstore_dir = \"m\"\n",
            "cluster.model_topic",
        ),
        ("[cluster]\nrole = \"boss\"\n", "cluster.role"),
        (
            "[model]\nwarmup_records = 200\n[threshold]\nkind = \"spot\"\n",
            "threshold.init_level",
        ),
        (
            "[threshold]\nkind = \"likelihood\"\n[threshold.likelihood]\nred = 2.0\n",
            "threshold.likelihood.red",
        ),
    ];
    for (text, key) in cases {
        let cfg = write_config(dir.path(), text);
        let out = anomalyd(&["run", "--config", &cfg], &[]);
        assert_eq!(out.status.code(), Some(2), "{text}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(key),
            "{text}: message should name {key}: {}",
            stderr(&out)
        );
    }
    let out = anomalyd(&["run"], &[("ANOMALYD__THRESHOLD__QUANTILE", "7")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("threshold.quantile"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_config_prints_effective_config_with_secrets_masked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        "[kafka]\nproperties = { \"sasl.password\" = \"hunter2\", \"security.protocol\" = \"SASL_SSL\" }\n",
    );
    let out = anomalyd(
        &["check-config", "--config", &cfg],
        &[("ANOMALYD__KAFKA__BROKERS", "kafka-0:9092,kafka-1:9092")],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("kafka-0:9092,kafka-1:9092"),
        "env override applies: {text}"
    );
    assert!(text.contains("SASL_SSL"));
    assert!(!text.contains("hunter2"), "secret leaked: {text}");
    assert!(text.contains("*****"));
    assert!(
        text.contains("# resolved: model.kind = vae, alerts decided by: quantile 0.995"),
        "fields mode resolves `auto` to the quantile threshold: {text}"
    );
}

#[test]
fn check_config_shows_what_auto_resolves_to_in_window_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        "[input]\nmode = \"window\"\nfeatures = [\"latency\"]\nkey_field = \"host\"\n",
    );
    let out = anomalyd(&["check-config", "--config", &cfg], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains(
            "alerts decided by: likelihood fed window discords (memory 2000, segment 2, \
             refractory 100)"
        ),
        "{text}"
    );
}

#[test]
fn offline_score_of_the_nab_fixture() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, lines) = score_nab_fixture(
        dir.path(),
        "[input]\nmode = \"window\"\nfeatures = [\"value\"]\ntimestamp_field = \"timestamp\"\n\
         [model]\nwarmup_records = 1500\nthreads = 1\n",
    );
    let rows = common::nab_rows();
    assert_eq!(lines.len(), rows.len(), "one score per record");
    for (i, v) in lines.iter().enumerate() {
        assert_eq!(v["offset"], i as i64);
        assert_eq!(v["partition"], 0);
        assert_eq!(v["timestamp"], rows[i].0.as_str());
    }
    let in_window = lines
        .iter()
        .filter(|v| v["is_anomaly"] == true && in_labelled_window(v))
        .count();
    assert!(in_window >= 1, "an anomaly inside the labelled window");
    assert!(stderr(&out).contains("4032 scored"), "{}", stderr(&out));
}

#[test]
fn offline_scores_are_reproducible_for_a_seed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        "[input]\nmode = \"window\"\nfeatures = [\"value\"]\n[model]\nwarmup_records = 800\nepochs = 10\nmin_steps = 0\nthreads = 1\n",
    );
    let input = common::fixture("nab/art_daily_jumpsup.csv");
    let run = || {
        anomalyd(
            &[
                "score",
                "--config",
                &cfg,
                "--input",
                input.to_str().expect("p"),
            ],
            &[],
        )
    };
    let (a, b) = (run(), run());
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(!a.stdout.is_empty());
    assert!(
        a.stdout == b.stdout,
        "same input, config and seed give the same scores"
    );
}

#[test]
fn offline_score_reports_undecodable_lines_and_scores_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        "[model]\nwarmup_records = 50\nepochs = 5\nmin_steps = 0\nthreads = 1\n",
    );
    let mut input = String::new();
    for i in 0..100 {
        if i == 10 {
            input.push_str("{\"cpu\": 1}\n");
        } else {
            input.push_str(&format!("{{\"cpu\": {}, \"mem\": {}}}\n", i % 7, i % 5));
        }
    }
    let path = dir.path().join("in.jsonl");
    std::fs::write(&path, input).expect("write");
    let out = anomalyd(
        &[
            "score",
            "--config",
            &cfg,
            "--input",
            path.to_str().expect("p"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let offsets: Vec<i64> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["offset"]
                .as_i64()
                .expect("o")
        })
        .collect();
    assert_eq!(offsets.len(), 99);
    assert!(!offsets.contains(&10));
    assert!(
        stderr(&out).contains("record 10: missing_field"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn eval_reports_quality_nab_score_and_plot_and_train_saves_a_bundle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        "[input]\nmode = \"window\"\nfeatures = [\"value\"]\ntimestamp_field = \"timestamp\"\n\
         [model]\nepochs = 20\nmin_steps = 0\nthreads = 1\n",
    );
    let input = common::fixture("nab/art_daily_jumpsup.csv");
    let labels = common::fixture("nab/labels.json");
    let plots = dir.path().join("plots");
    let (out, r) = eval(
        dir.path(),
        &cfg,
        &[
            "--input",
            input.to_str().expect("p"),
            "--labels",
            labels.to_str().expect("p"),
            "--plot",
            plots.to_str().expect("p"),
        ],
    );
    let f = &r["files"][0];
    assert_eq!(f["rows"], 4032);
    assert_eq!(f["train_rows"], 605, "15% of the series trains the model");
    let auroc = f["auroc"].as_f64().expect("auroc");
    assert!(auroc > 0.5, "better than chance on the jump: {auroc}");
    for profile in ["standard", "reward_low_fp", "reward_low_fn"] {
        let s = r["nab"][profile].as_f64().expect("nab score");
        assert!(s > 0.0 && s <= 100.0, "{profile}: {s}");
    }
    let png = std::fs::read(plots.join("art_daily_jumpsup.png")).expect("plot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(String::from_utf8_lossy(&out.stdout).contains("NAB score over 1 file(s): standard"));

    let store = dir.path().join("models");
    let out = anomalyd(
        &[
            "train",
            "--config",
            &cfg,
            "--input",
            input.to_str().expect("p"),
            "--model-out",
            store.to_str().expect("p"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(store.join("v000001/model.json").is_file());
    assert!(store.join("v000001/weights.safetensors").is_file());
}

/// Fed the model's scores, and fed window discords (as they are, and in segments of 2 with
/// a refractory of 100 records). The discord runs have the value-range check off, so their
/// alerts on the jump come from the discords alone, and the discords explain them.
#[test]
fn likelihood_threshold_alerts_once_per_anomaly_after_each_keys_warmup() {
    for input in [
        "input = \"score\"\n",
        "input = \"discord\"\nspatial_tolerance = 0.0\n",
        "input = \"discord\"\nspatial_tolerance = 0.0\nsegment = 2\nrefractory = 100\n",
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, lines) = score_nab_fixture(
            dir.path(),
            &format!(
                "[input]\nmode = \"window\"\nfeatures = [\"value\"]\ntimestamp_field = \"timestamp\"\n\
                 [input.window]\nsize = 16\n\
                 [model]\nwarmup_records = 600\nepochs = 20\nmin_steps = 0\nthreads = 1\n\
                 [threshold]\nkind = \"likelihood\"\n[threshold.likelihood]\nwarmup = 600\n{input}"
            ),
        );
        assert_eq!(lines.len(), 4032);
        let likelihood: Vec<f64> = lines
            .iter()
            .map(|v| v["likelihood"].as_f64().expect("likelihood field"))
            .collect();
        assert!(likelihood.iter().all(|l| (0.0..=1.0).contains(l)));
        assert!(
            likelihood[..600].iter().all(|&l| l == 0.0),
            "silent during the key's warm-up"
        );
        let alerts: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i]["is_anomaly"] == true)
            .collect();
        for &i in &alerts {
            assert!(likelihood[i] >= 0.5, "alert {i} decided by the likelihood");
        }
        let in_window = alerts
            .iter()
            .filter(|&&i| in_labelled_window(&lines[i]))
            .count();
        println!("{input:?}: alerts at {alerts:?}, {in_window} inside the labelled window");
        for &i in &alerts {
            println!(
                "  {i}: {} {}",
                lines[i]["discord"], lines[i]["top_features"]
            );
        }
        // Fed discords, each record's message carries the distance that fed its likelihood.
        let discord: Vec<Option<f64>> = lines.iter().map(|v| v["discord"].as_f64()).collect();
        if input.contains("discord") {
            assert!(discord.iter().all(|d| d.is_some_and(|d| d >= 0.0)));
            assert!(discord[1000..].iter().any(|d| d.is_some_and(|d| d > 0.0)));
        } else {
            assert!(discord.iter().all(Option::is_none), "no discord field");
        }
        assert!(in_window >= 1, "{input:?}: the labelled jump alerts");
        assert!(
            alerts.len() <= 20,
            "{input:?}: a run of unlikely scores alerts once, not per record: {alerts:?}"
        );
        if input.contains("refractory = 100") {
            assert!(
                alerts.windows(2).all(|p| p[1] - p[0] > 100),
                "one alert per episode: {alerts:?}"
            );
            // Explained by the discord, not the model: each segment's part of the distance
            // is split evenly over its two values, so the top two are a segment's pair.
            for &i in &alerts {
                let top = lines[i]["top_features"].as_array().expect("explained");
                let share = |k: usize| top[k]["share"].as_f64().expect("share");
                assert_eq!(share(0), share(1), "alert {i}: {top:?}");
            }
        }
    }
}

/// `anomalyd eval` feeds the likelihood the discords too: with the value-range check off,
/// the fixture's jump is found from them alone (fed nothing, every output would be 0 and
/// the NAB score at most the null detector's 0).
#[test]
fn eval_with_the_discord_input_finds_the_jump() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        "[input]\nmode = \"window\"\nfeatures = [\"value\"]\ntimestamp_field = \"timestamp\"\n\
         [input.window]\nsize = 16\n[model]\nepochs = 5\nmin_steps = 0\nthreads = 1\n\
         [threshold]\nkind = \"likelihood\"\n\
         [threshold.likelihood]\ninput = \"discord\"\nspatial_tolerance = 0.0\n",
    );
    let input = common::fixture("nab/art_daily_jumpsup.csv");
    let labels = common::fixture("nab/labels.json");
    let (_, r) = eval(
        dir.path(),
        &cfg,
        &[
            "--input",
            input.to_str().expect("p"),
            "--labels",
            labels.to_str().expect("p"),
        ],
    );
    let standard = r["nab"]["standard"].as_f64().expect("nab score");
    assert!(standard > 90.0, "NAB standard {standard}");
}

#[test]
fn eval_skips_a_file_it_cannot_train_on_and_reports_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        "[input]\nmode = \"window\"\nfeatures = [\"value\"]\ntimestamp_field = \"timestamp\"\n\
         [model]\nepochs = 5\nmin_steps = 0\nthreads = 1\n[threshold]\nkind = \"spot\"\n",
    );
    // A flat series: every training score is the same, so SPOT finds no tail to fit.
    let flat = dir.path().join("flat.csv");
    let mut text = String::from("timestamp;value\n");
    for i in 0..1000 {
        text.push_str(&format!(
            "2020-01-01 00:{:02}:{:02};5.0\n",
            i / 60 % 60,
            i % 60
        ));
    }
    std::fs::write(&flat, text).expect("write");
    let input = common::fixture("nab/art_daily_jumpsup.csv");
    let (out, r) = eval(
        dir.path(),
        &cfg,
        &[
            "--input",
            flat.to_str().expect("p"),
            "--input",
            input.to_str().expect("p"),
        ],
    );
    assert_eq!(r["files"].as_array().expect("files").len(), 1);
    assert_eq!(r["files"][0]["rows"], 4032);
    let skipped = &r["skipped"][0];
    assert!(
        skipped["file"]
            .as_str()
            .expect("file")
            .ends_with("flat.csv"),
        "{skipped}"
    );
    assert!(!skipped["reason"].as_str().expect("reason").is_empty());
    assert!(
        stderr(&out).contains("flat.csv: skipped"),
        "{}",
        stderr(&out)
    );
}

/// `eval --scores`: externally produced scores go through the same NAB scorer: a detector
/// that fires once at the start of the labelled window is near perfect, one that never
/// fires is the null detector (0), and a record without a score counts as 0.
#[test]
fn eval_scores_external_per_record_scores_with_the_nab_scorer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = common::nab_rows();
    let (start, _) = common::nab_windows()[0].clone();
    let nab = |name: &str, score: &dyn Fn(&str) -> Option<f64>| {
        let path = dir.path().join(format!("{name}.csv"));
        let mut text = String::from("series,timestamp,score\n");
        for (ts, _) in &rows {
            if let Some(s) = score(ts) {
                text += &format!("artificialWithAnomaly/art_daily_jumpsup.csv,{ts},{s}\n");
            }
        }
        std::fs::write(&path, text).expect("write");
        let report = dir.path().join(format!("{name}.json"));
        let out = anomalyd(
            &[
                "eval",
                "--input",
                &common::fixture("nab/art_daily_jumpsup.csv")
                    .display()
                    .to_string(),
                "--labels",
                &common::fixture("nab/labels.json").display().to_string(),
                "--scores",
                &path.display().to_string(),
                "--report",
                &report.display().to_string(),
            ],
            &[],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
        (v["nab"]["standard"].as_f64().expect("standard"), out)
    };
    let (hit, _) = nab("hit", &|ts| Some(if ts == start { 1.0 } else { 0.0 }));
    assert!(hit > 95.0, "one alert at the window's start: {hit}");
    let (silent, _) = nab("silent", &|_| Some(0.0));
    assert!(
        silent.abs() < 1e-9,
        "never firing is the null detector: {silent}"
    );
    let (partial, out) = nab("partial", &|ts| (ts == start).then_some(1.0));
    assert!((partial - hit).abs() < 1e-9, "unscored records count as 0");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{} without a score", rows.len() - 1)),
        "{text}"
    );
}
