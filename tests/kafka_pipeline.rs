//! End-to-end tests of `anomalyd run` against the real Kafka-protocol broker started by
//! scripts/test.sh.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Daemon, Topics, nab_rows, nab_windows, produce, read_all, synthetic};

const NAB_CONFIG: &str = r#"
[input]
mode = "window"
features = ["value"]
key_field = "series"
timestamp_field = "timestamp"
[input.window]
size = 32
[model]
warmup_records = 1500
threads = 1
"#;

fn nab_messages() -> Vec<(i32, Option<String>, Vec<u8>)> {
    nab_rows()
        .into_iter()
        .map(|(ts, v)| {
            let payload =
                serde_json::json!({"series": "art_daily_jumpsup", "timestamp": ts, "value": v});
            (
                0,
                Some("art_daily_jumpsup".to_string()),
                payload.to_string().into_bytes(),
            )
        })
        .collect()
}

#[test]
fn nab_series_every_record_scored_once_and_the_labelled_window_alerts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Topics::fresh("e2e", 1);
    let messages = nab_messages();
    let n = messages.len();
    produce(&t.input, &messages);

    let mut daemon = Daemon::start(dir.path(), &format!("{}{NAB_CONFIG}", t.kafka_toml()));
    daemon.wait_metric(
        "anomalyd_records_scored_total",
        Duration::from_secs(180),
        |v| v >= n as f64,
    );
    // Scraped during the run: every produced record was counted as consumed.
    let consumed = daemon
        .metric("anomalyd_records_consumed_total")
        .expect("metric");
    assert_eq!(consumed, n as f64, "records counted = records produced");
    daemon.wait_metric(
        "anomalyd_messages_produced_total",
        Duration::from_secs(60),
        |v| v >= n as f64,
    );
    let (status, logs) = daemon.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "SIGTERM exits 0, got {status}; logs:\n{logs}"
    );

    let scores = read_all(&t.scores, 1);
    assert_eq!(scores.len(), n, "exactly one score per input record");
    let offsets: BTreeSet<i64> = scores
        .iter()
        .map(|m| m.json()["offset"].as_i64().expect("offset"))
        .collect();
    assert_eq!(
        offsets,
        (0..n as i64).collect::<BTreeSet<_>>(),
        "offsets match the input"
    );
    for m in scores.iter().take(3) {
        let v = m.json();
        for field in [
            "key",
            "partition",
            "offset",
            "timestamp",
            "score",
            "threshold",
            "is_anomaly",
            "model_version",
        ] {
            assert!(v.get(field).is_some(), "score message lacks {field}: {v}");
        }
        assert_eq!(v["key"], "art_daily_jumpsup");
        assert_eq!(m.key.as_deref(), Some("art_daily_jumpsup"));
    }

    let alerts: Vec<serde_json::Value> = read_all(&t.alerts, 1).iter().map(|m| m.json()).collect();
    let windows = nab_windows();
    let in_window = alerts
        .iter()
        .filter(|a| {
            let ts = a["timestamp"].as_str().expect("timestamp");
            windows
                .iter()
                .any(|(s, e)| ts >= s.as_str() && ts <= e.as_str())
        })
        .count();
    assert!(
        in_window >= 1,
        "no alert in the labelled window {windows:?}; alerts: {}",
        alerts.len()
    );
    let flagged = scores
        .iter()
        .filter(|m| m.json()["is_anomaly"] == true)
        .count();
    assert_eq!(flagged, alerts.len(), "one alert per anomalous score");
    assert!(
        alerts[0]["top_features"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    );
    println!(
        "{n} scored, {} alerts, {in_window} inside the labelled window",
        alerts.len()
    );
}

const FIELDS_CONFIG: &str = r#"
[input]
features = ["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7"]
[model]
warmup_records = 1000
epochs = 20
min_steps = 0
threads = 1
"#;

#[test]
fn malformed_records_go_to_the_dlq_with_their_reason_and_good_ones_are_scored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Topics::fresh("dlq", 1);
    let bad: Vec<(&str, &str)> = vec![
        ("{\"cpu\": 1.0, \"mem\"", "invalid_json"),
        ("{\"cpu\": 1.0}", "missing_field"),
        ("{\"cpu\": \"high\", \"mem\": 2.0}", "not_a_number"),
        ("{\"cpu\": \"NaN\", \"mem\": 2.0}", "not_a_number"),
        ("{\"cpu\": NaN, \"mem\": 2.0}", "invalid_json"),
        ("{\"cpu\": 1e300, \"mem\": 2.0}", "out_of_range"),
        ("[1, 2]", "invalid_json"),
    ];
    let mut messages = Vec::new();
    let mut expected_bad = BTreeMap::new();
    for i in 0..600usize {
        if i % 80 == 40 {
            let (payload, reason) = bad[(i / 80) % bad.len()];
            expected_bad.insert(i as i64, (payload, reason));
            messages.push((0, None, payload.as_bytes().to_vec()));
        } else {
            let x = (i as f64 * 0.1).sin();
            let p = serde_json::json!({"cpu": x, "mem": 2.0 * x + 1.0, "host": "h1"});
            messages.push((0, None, p.to_string().into_bytes()));
        }
    }
    produce(&t.input, &messages);
    let good = messages.len() - expected_bad.len();
    let config = format!(
        "{}[input]\nfeatures = [\"cpu\", \"mem\"]\nkey_field = \"host\"\n[model]\nwarmup_records = 200\nthreads = 1\n",
        t.kafka_toml()
    );
    let mut daemon = Daemon::start(dir.path(), &config);
    daemon.wait_metric(
        "anomalyd_records_scored_total",
        Duration::from_secs(120),
        |v| v >= good as f64,
    );
    let errors = daemon.wait_metric(
        "anomalyd_decode_errors_total",
        Duration::from_secs(30),
        |v| v >= expected_bad.len() as f64,
    );
    assert_eq!(errors, expected_bad.len() as f64);
    daemon.wait_metric(
        "anomalyd_messages_produced_total",
        Duration::from_secs(60),
        |v| v >= messages.len() as f64,
    );
    let (status, logs) = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{logs}");

    let dlq = read_all(&t.dlq, 1);
    assert_eq!(dlq.len(), expected_bad.len());
    for m in &dlq {
        let v = m.json();
        let offset = v["offset"].as_i64().expect("offset");
        let (payload, reason) = expected_bad[&offset];
        assert_eq!(v["reason"], reason, "{v}");
        assert_eq!(v["payload"], payload, "the original bytes are kept");
        assert_eq!(v["partition"], 0);
        assert!(!v["detail"].as_str().unwrap_or_default().is_empty());
    }
    let scores = read_all(&t.scores, 1);
    let offsets: BTreeSet<i64> = scores
        .iter()
        .map(|m| m.json()["offset"].as_i64().expect("o"))
        .collect();
    let want: BTreeSet<i64> = (0..messages.len() as i64)
        .filter(|o| !expected_bad.contains_key(o))
        .collect();
    assert_eq!(
        offsets, want,
        "every good record scored once, none of the bad ones"
    );
    assert_eq!(scores.len(), good);
}

#[test]
fn running_daemon_follows_a_revert_and_scores_exactly_as_the_reverted_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("models");
    let bin = env!("CARGO_BIN_EXE_anomalyd");
    let base = format!("{FIELDS_CONFIG}store_dir = \"{}\"\n", store.display());
    let cfg = dir.path().join("offline.toml");
    std::fs::write(&cfg, &base).expect("config");
    let lines = |range: std::ops::Range<usize>| -> String {
        range
            .map(|i| String::from_utf8(synthetic(i)).expect("utf8") + "\n")
            .collect()
    };
    // v1 and v2 trained on different stretches of the signal.
    for (name, range) in [("v1.jsonl", 0..1500), ("v2.jsonl", 40_000..41_500)] {
        let path = dir.path().join(name);
        std::fs::write(&path, lines(range)).expect("write");
        let out = std::process::Command::new(bin)
            .args(["train", "--config"])
            .arg(&cfg)
            .arg("--input")
            .arg(&path)
            .arg("--model-out")
            .arg(&store)
            .output()
            .expect("train");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let t = Topics::fresh("revert", 1);
    let mut daemon = Daemon::start(dir.path(), &format!("{}{base}", t.kafka_toml()));
    let first: Vec<_> = (0..300)
        .map(|i| (0, None, synthetic(100_000 + i)))
        .collect();
    produce(&t.input, &first);
    daemon.wait_metric(
        "anomalyd_records_scored_total",
        Duration::from_secs(60),
        |v| v >= 300.0,
    );
    assert_eq!(daemon.metric("anomalyd_model_version"), Some(2.0));

    common::revert(&store, 1);
    daemon.wait_metric("anomalyd_model_version", Duration::from_secs(30), |v| {
        v == 1.0
    });
    let second: Vec<_> = (300..600)
        .map(|i| (0, None, synthetic(100_000 + i)))
        .collect();
    produce(&t.input, &second);
    daemon.wait_metric(
        "anomalyd_records_scored_total",
        Duration::from_secs(60),
        |v| v >= 600.0,
    );
    let (status, logs) = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{logs}");

    // The offline path with the store (now at v1) scores the second half the same way.
    let input = dir.path().join("second.jsonl");
    std::fs::write(&input, lines(100_300..100_600)).expect("write");
    let out = std::process::Command::new(bin)
        .args(["score", "--config"])
        .arg(&cfg)
        .arg("--input")
        .arg(&input)
        .output()
        .expect("score");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offline: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let scores: BTreeMap<i64, serde_json::Value> = read_all(&t.scores, 1)
        .iter()
        .map(|m| {
            let v = m.json();
            (v["offset"].as_i64().expect("offset"), v)
        })
        .collect();
    assert!(
        scores
            .values()
            .filter(|v| v["offset"].as_i64() < Some(300))
            .all(|v| v["model_version"] == 2)
    );
    for (i, off) in offline.iter().enumerate() {
        let live = &scores[&(300 + i as i64)];
        assert_eq!(live["model_version"], 1, "after the revert");
        assert_eq!(
            live["score"], off["score"],
            "record {i}: v1 scores exactly as offline v1"
        );
    }
}

#[test]
fn retrains_while_scoring_promotes_and_a_restart_serves_the_promoted_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("models");
    let t = Topics::fresh("retrain", 1);
    let config = format!(
        "{}{}activation = \"tanh\"\nstore_dir = \"{}\"\n\
         [retrain]\nevery_records = 2000\nmin_records = 1000\nwindow = 3000\n\
         tolerance = 0.05\nmax_threshold_ratio = 3.0\n",
        t.kafka_toml(),
        FIELDS_CONFIG.replace("epochs = 20", "epochs = 40"),
        store.display()
    );
    let n = 8_000usize;
    let messages: Vec<_> = (0..n).map(|i| (0, None, synthetic(i))).collect();
    produce(&t.input, &messages);
    let mut daemon = Daemon::start(dir.path(), &config);
    daemon.wait_metric(
        "anomalyd_records_scored_total",
        Duration::from_secs(120),
        |v| v >= n as f64,
    );
    // Warm-up plus at least one retraining run that finished, promoted or not.
    daemon.wait_metric(
        "anomalyd_training_runs_total",
        Duration::from_secs(120),
        |v| v >= 2.0,
    );
    let version = daemon.wait_metric("anomalyd_model_version", Duration::from_secs(60), |v| {
        v >= 2.0
    });
    let text = daemon.scrape().expect("metrics");
    println!(
        "model version {version}; {}",
        text.lines()
            .filter(|l| l.starts_with("anomalyd_training_runs_total")
                || l.starts_with("anomalyd_promotion_rejections_total"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    assert!(
        common::metric_value(&text, "anomalyd_training_window_records").is_some_and(|w| w > 0.0)
    );
    let (status, logs) = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{logs}");
    assert!(
        logs.contains("retraining finished"),
        "a retraining run happened"
    );
    for l in logs.lines().filter(|l| l.contains("retraining finished")) {
        println!("{l}");
    }

    let scores = read_all(&t.scores, 1);
    let offsets: BTreeSet<i64> = scores
        .iter()
        .map(|m| m.json()["offset"].as_i64().expect("o"))
        .collect();
    assert_eq!(offsets.len(), n, "every record scored while retraining");
    assert_eq!(scores.len(), n, "no record scored twice by a swap");

    // Restart: the promoted (current) version serves again.
    let restarted = Daemon::start(dir.path(), &config);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while restarted.metric("anomalyd_model_version").unwrap_or(0.0) == 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no model after restart"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        restarted.metric("anomalyd_model_version"),
        Some(version),
        "same version after restart"
    );
    let (status, logs) = restarted.terminate(Duration::from_secs(30));
    assert!(status.success(), "{logs}");
}

/// Two sine series in window mode, judged by the anomaly likelihood; a store keeps the
/// model and, on a graceful stop, each key's likelihood state.
fn likelihood_config(store: &std::path::Path) -> String {
    format!(
        r#"
[input]
mode = "window"
features = ["value"]
key_field = "series"
[input.window]
size = 16
[model]
warmup_records = 400
epochs = 20
min_steps = 0
threads = 1
store_dir = "{}"
[threshold]
kind = "likelihood"
[threshold.likelihood]
warmup = 300
"#,
        store.display()
    )
}

/// Record `i` of series `key`: a sine with a little deterministic noise, or `value`.
fn series_record(key: &str, i: usize, value: Option<f64>) -> (i32, Option<String>, Vec<u8>) {
    let v = value.unwrap_or_else(|| (i as f64 * 0.2).sin() + ((i * 7919) % 13) as f64 * 0.002);
    let payload = serde_json::json!({"series": key, "value": v});
    (0, Some(key.to_string()), payload.to_string().into_bytes())
}

#[test]
fn likelihood_state_survives_a_graceful_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("models");
    let config = likelihood_config(&store);
    let t = Topics::fresh("likelihood", 1);
    // One run of the daemon: `records` produced, all scored and their outputs delivered,
    // then SIGTERM. Returns the logs.
    let run = |records: &[(i32, Option<String>, Vec<u8>)]| {
        produce(&t.input, records);
        let mut daemon = Daemon::start(dir.path(), &format!("{}{config}", t.kafka_toml()));
        let n = records.len() as f64;
        for metric in [
            "anomalyd_records_scored_total",
            "anomalyd_messages_produced_total",
        ] {
            daemon.wait_metric(metric, Duration::from_secs(180), |v| v >= n);
        }
        let (status, logs) = daemon.terminate(Duration::from_secs(30));
        assert!(
            status.success(),
            "SIGTERM exits 0, got {status}; logs:\n{logs}"
        );
        logs
    };
    // Phase 1: 600 records per key, past the likelihood's 300-record warm-up.
    let first: Vec<_> = (0..600)
        .flat_map(|i| [series_record("a", i, None), series_record("b", i, None)])
        .collect();
    let logs = run(&first);
    assert!(
        store.join("likelihood.state").is_file(),
        "no likelihood state saved; logs:\n{logs}"
    );

    // Phase 2, after a restart: 20 more normal records per key, then a value far outside
    // key "a"'s range. A key that started afresh would be silent for its first 300
    // records (the warm-up); a restored one alerts at once.
    let mut second: Vec<_> = (600..620)
        .flat_map(|i| [series_record("a", i, None), series_record("b", i, None)])
        .collect();
    second.push(series_record("a", 620, Some(50.0)));
    let spike_offset = (first.len() + second.len() - 1) as i64;
    let logs = run(&second);
    let alerts: Vec<serde_json::Value> = read_all(&t.alerts, 1).iter().map(|m| m.json()).collect();
    let spike = alerts
        .iter()
        .find(|a| a["offset"].as_i64() == Some(spike_offset))
        .unwrap_or_else(|| panic!("no alert for the spike at offset {spike_offset}: {alerts:?}"));
    assert_eq!(spike["key"], "a");
    assert!(
        spike["likelihood"].as_f64().is_some_and(|l| l >= 0.5),
        "{spike}"
    );
    assert!(
        logs.contains("restored the anomaly likelihood state") && logs.contains("\"keys\":2"),
        "logs:\n{logs}"
    );
}
