//! Scale-out against the real broker: one trainer and two scorers as separate processes,
//! sharing the input topic through one consumer group and the models through the model
//! topic.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Daemon, Topics, committed, create_topics, produce, read_all, synthetic, unique};

const PARTITIONS: i32 = 4;

/// The gate is wide open here: this test is about distributing what the trainer promotes
/// (the gate itself is tested in src/train/gate.rs and tests/kafka_pipeline.rs).
fn config(t: &Topics, role: &str, store: &Path, model_topic: &str) -> String {
    format!(
        "{}[input]\nfeatures = [\"f0\", \"f1\", \"f2\", \"f3\", \"f4\", \"f5\", \"f6\", \"f7\"]\n\
         [model]\nwarmup_records = 500\nepochs = 20\nmin_steps = 0\nthreads = 1\nactivation = \"tanh\"\n\
         store_dir = \"{}\"\n\
         [retrain]\ninterval = \"0s\"\nevery_records = 1500\nmin_records = 500\nwindow = 3000\n\
         tolerance = 1.0\nmax_threshold_ratio = 100.0\n\
         [cluster]\nrole = \"{role}\"\nmodel_topic = \"{model_topic}\"\n",
        t.kafka_toml(),
        store.display()
    )
}

/// Records `from..to`, record i on partition i mod PARTITIONS.
fn records(from: usize, to: usize) -> Vec<(i32, Option<String>, Vec<u8>)> {
    (from..to)
        .map(|i| ((i % PARTITIONS as usize) as i32, None, synthetic(i)))
        .collect()
}

/// Waits until `ok` holds, or panics with `what` after `timeout`.
fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metric(d: &Daemon, name: &str) -> f64 {
    d.metric(name).unwrap_or(0.0)
}

#[test]
fn two_scorers_split_the_input_and_follow_the_trainers_promotions_and_reverts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Topics::fresh("cluster", PARTITIONS);
    let model_topic = unique("cluster.models");
    create_topics(&[&model_topic], 1);

    let mut trainer = Daemon::start(
        dir.path(),
        &config(&t, "trainer", &dir.path().join("trainer"), &model_topic),
    );
    let mut scorers = [
        Daemon::start(
            dir.path(),
            &config(&t, "scorer", &dir.path().join("scorer1"), &model_topic),
        ),
        Daemon::start(
            dir.path(),
            &config(&t, "scorer", &dir.path().join("scorer2"), &model_topic),
        ),
    ];
    std::thread::sleep(Duration::from_secs(1));
    for s in &scorers {
        assert_eq!(
            metric(s, "anomalyd_records_scored_total"),
            0.0,
            "a scorer without a model does not consume"
        );
    }

    // Phase 1: the trainer trains v1 on the first 500 records and publishes it; the scorers
    // receive it, join the group and split the partitions.
    let per_partition = |n: usize| (n / PARTITIONS as usize) as i64;
    produce(&t.input, &records(0, 1000));
    for s in &mut scorers {
        s.wait_metric("anomalyd_model_version", Duration::from_secs(120), |v| {
            v >= 1.0
        });
    }
    wait_until(
        "both scorers to hold partitions",
        Duration::from_secs(60),
        || {
            let a: Vec<f64> = scorers
                .iter()
                .map(|s| metric(s, "anomalyd_assigned_partitions"))
                .collect();
            a.iter().all(|&n| n >= 1.0) && a.iter().sum::<f64>() == f64::from(PARTITIONS)
        },
    );
    wait_until("phase 1 committed", Duration::from_secs(60), || {
        committed(&t.group, &t.input, PARTITIONS)
            .iter()
            .all(|&c| c == per_partition(1000))
    });

    // Phase 2: 2000 more records (at least 1500 after the warm-up) trigger a retraining
    // run; the trainer promotes v2 and publishes it; both scorers switch.
    produce(&t.input, &records(1000, 3000));
    trainer.wait_metric("anomalyd_model_version", Duration::from_secs(180), |v| {
        v >= 2.0
    });
    for s in &mut scorers {
        s.wait_metric("anomalyd_model_version", Duration::from_secs(60), |v| {
            v >= 2.0
        });
    }
    wait_until("phase 2 committed", Duration::from_secs(60), || {
        committed(&t.group, &t.input, PARTITIONS)
            .iter()
            .all(|&c| c == per_partition(3000))
    });

    // Phase 3, with a stable assignment: each record scored exactly once, by v2 or a later
    // promotion, and both scorers take part.
    let before: Vec<f64> = scorers
        .iter()
        .map(|s| metric(s, "anomalyd_records_scored_total"))
        .collect();
    produce(&t.input, &records(3000, 4000));
    wait_until("phase 3 committed", Duration::from_secs(60), || {
        committed(&t.group, &t.input, PARTITIONS)
            .iter()
            .all(|&c| c == per_partition(4000))
    });
    let during: Vec<f64> = scorers
        .iter()
        .zip(&before)
        .map(|(s, b)| metric(s, "anomalyd_records_scored_total") - b)
        .collect();
    println!("phase 3 scored per scorer: {during:?}");
    assert!(during.iter().all(|&n| n > 0.0), "both scorers scored");
    assert_eq!(
        during.iter().sum::<f64>(),
        1000.0,
        "phase 3 scored exactly once"
    );

    // A revert on the trainer's store reaches every scorer through the model topic.
    common::revert(&dir.path().join("trainer"), 1);
    trainer.wait_metric("anomalyd_model_version", Duration::from_secs(30), |v| {
        v == 1.0
    });
    for s in &mut scorers {
        s.wait_metric("anomalyd_model_version", Duration::from_secs(30), |v| {
            v == 1.0
        });
    }

    let published = metric(&trainer, "anomalyd_models_published_total");
    let (status, trainer_logs) = trainer.terminate(Duration::from_secs(30));
    assert!(status.success(), "{trainer_logs}");
    assert!(
        published >= 3.0,
        "trainer published v1, v2 and the revert: {published}"
    );

    // A scorer joining later, with an empty store, starts from the topic's latest model.
    let mut late = Daemon::start(
        dir.path(),
        &config(&t, "scorer", &dir.path().join("scorer3"), &model_topic),
    );
    late.wait_metric("anomalyd_model_version", Duration::from_secs(60), |v| {
        v == 1.0
    });
    let (status, logs) = late.terminate(Duration::from_secs(30));
    assert!(status.success(), "{logs}");
    for s in scorers {
        let (status, logs) = s.terminate(Duration::from_secs(30));
        assert!(status.success(), "{logs}");
        assert!(
            logs.contains("received a model from the model topic"),
            "{logs}"
        );
    }

    // Every input record scored at least once (phase 1 may replay across the initial
    // rebalance); phases 2 and 3 exactly once; phase 3 by v2 or later; the trainer produced
    // nothing.
    let mut seen: BTreeMap<(i32, i64), Vec<u64>> = BTreeMap::new();
    for m in read_all(&t.scores, 1) {
        let v = m.json();
        let key = (
            v["partition"].as_i64().expect("partition") as i32,
            v["offset"].as_i64().expect("offset"),
        );
        let version = v["model_version"].as_u64().expect("model_version");
        seen.entry(key).or_default().push(version);
    }
    for p in 0..PARTITIONS {
        for o in 0..per_partition(4000) {
            let versions = seen
                .get(&(p, o))
                .unwrap_or_else(|| panic!("record {p}/{o} was never scored"));
            if o >= per_partition(1000) {
                assert_eq!(versions.len(), 1, "record {p}/{o} scored {versions:?}");
            }
            if o >= per_partition(3000) {
                assert!(
                    versions[0] >= 2,
                    "record {p}/{o} scored by v{}",
                    versions[0]
                );
            }
        }
    }
    assert_eq!(
        seen.len(),
        4000,
        "nothing but the input's records was scored"
    );
}

/// A bundle message for the model topic from a store version's files (`edit` may change
/// the metadata and weights first), as the trainer's publisher sends it.
fn bundle_message(
    version_dir: &Path,
    version: u64,
    edit: &dyn Fn(&mut serde_json::Value, &mut Vec<u8>),
) -> Vec<u8> {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(version_dir.join("model.json")).expect("meta"))
            .expect("json");
    let mut weights = std::fs::read(version_dir.join("weights.safetensors")).expect("weights");
    meta["version"] = version.into();
    edit(&mut meta, &mut weights);
    serde_json::to_vec(&serde_json::json!({
        "format": "anomalyd.bundle.v1",
        "version": version,
        "files": {
            "model.json": b64(&serde_json::to_vec(&meta).expect("json")),
            "weights.safetensors": b64(&weights),
        }
    }))
    .expect("json")
}

/// Junk, truncated, wrong-shape, NaN, inflated-threshold, reordered-feature and conflicting
/// bundles published on the model topic while two scorers serve v1: both keep serving v1
/// and scoring, count every rejection, and a scorer restarted with the bad bundle last on
/// the topic still serves v1.
#[test]
fn bad_bundles_on_the_model_topic_never_stop_two_scorers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Topics::fresh("badmodels", PARTITIONS);
    let model_topic = unique("badmodels.models");
    create_topics(&[&model_topic], 1);
    // v1, trained offline and published as the trainer would.
    let trained = dir.path().join("trained");
    let input = dir.path().join("train.jsonl");
    let lines: String = (0..600)
        .map(|i| String::from_utf8(synthetic(i)).expect("utf8") + "\n")
        .collect();
    std::fs::write(&input, lines).expect("write");
    let cfg_path = dir.path().join("train.toml");
    std::fs::write(&cfg_path, config(&t, "all", &trained, &model_topic)).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_anomalyd"))
        .args(["train", "--config"])
        .arg(&cfg_path)
        .arg("--input")
        .arg(&input)
        .arg("--model-out")
        .arg(&trained)
        .output()
        .expect("anomalyd train");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v1 = trained.join("v000001");
    let key = Some(t.group.clone());
    produce(
        &model_topic,
        &[(0, key.clone(), bundle_message(&v1, 1, &|_, _| {}))],
    );

    let mut scorers = [
        Daemon::start(
            dir.path(),
            &config(&t, "scorer", &dir.path().join("s1"), &model_topic),
        ),
        Daemon::start(
            dir.path(),
            &config(&t, "scorer", &dir.path().join("s2"), &model_topic),
        ),
    ];
    produce(&t.input, &records(0, 400));
    for s in &mut scorers {
        s.wait_metric("anomalyd_model_version", Duration::from_secs(60), |v| {
            v == 1.0
        });
    }
    wait_until("the first records scored", Duration::from_secs(60), || {
        committed(&t.group, &t.input, PARTITIONS)
            .iter()
            .sum::<i64>()
            == 400
    });

    let nan_last = |_: &mut serde_json::Value, w: &mut Vec<u8>| {
        let n = w.len();
        w[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    };
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("unreadable", b"{\"format\": \"anomalyd.bundle.v1\", \"version\": 2, \"files\": {\"model.json\": \"bm90IGpzb24=\", \"weights.safetensors\": \"AAAA\"}}".to_vec()),
        ("digest", bundle_message(&v1, 3, &|_, w| w.truncate(w.len() / 2))),
        ("weights", bundle_message(&v1, 4, &|m, w| {
            *w = b"\xff\xff\xff\xff\xff\xff\xff\x7fjunk".to_vec();
            m["files"] = serde_json::json!({});
        })),
        ("shape", bundle_message(&v1, 5, &|m, _| m["spec"]["hidden"] = serde_json::json!([]))),
        ("not_finite", bundle_message(&v1, 6, &|m, w| {
            nan_last(m, w);
            m["files"] = serde_json::json!({});
        })),
        ("not_finite", bundle_message(&v1, 7, &|m, _| {
            m["threshold"] = serde_json::json!({"kind": "fixed", "value": 1e38});
        })),
        ("features", bundle_message(&v1, 8, &|m, _| {
            m["features"].as_array_mut().expect("names").reverse();
        })),
        ("conflict", bundle_message(&v1, 1, &|m, w| {
            let n = w.len();
            w[n - 4..].copy_from_slice(&0.5f32.to_le_bytes());
            m["files"] = serde_json::json!({});
        })),
    ];
    let before: Vec<f64> = scorers
        .iter()
        .map(|s| metric(s, "anomalyd_models_rejected_total"))
        .collect();
    for (_, msg) in &bad {
        produce(&model_topic, &[(0, key.clone(), msg.clone())]);
    }
    for (s, b) in scorers.iter_mut().zip(&before) {
        let want = b + bad.len() as f64;
        s.wait_metric(
            "anomalyd_models_rejected_total",
            Duration::from_secs(60),
            |v| v >= want,
        );
        let text = s.scrape().expect("metrics");
        for (reason, _) in &bad {
            let line = format!("anomalyd_models_rejected_total{{reason=\"{reason}\"}}");
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&line) && !l.ends_with(" 0")),
                "no rejection counted for {reason}"
            );
        }
        assert_eq!(metric(s, "anomalyd_model_version"), 1.0, "still serving v1");
        assert!(s.is_running(), "{}", s.logs());
    }
    // Still scoring.
    produce(&t.input, &records(400, 800));
    wait_until("more records scored", Duration::from_secs(60), || {
        committed(&t.group, &t.input, PARTITIONS)
            .iter()
            .sum::<i64>()
            == 800
    });
    // A restart reads the topic again (a bad bundle is the latest): v1 still serves.
    let [first, second] = scorers;
    let (status, logs) = first.terminate(Duration::from_secs(60));
    assert!(status.success(), "{logs}");
    let mut again = Daemon::start(
        dir.path(),
        &config(&t, "scorer", &dir.path().join("s1"), &model_topic),
    );
    again.wait_metric("anomalyd_model_version", Duration::from_secs(60), |v| {
        v == 1.0
    });
    assert_eq!(again.http_status("/readyz"), Some(200));
    for d in [again, second] {
        let (status, logs) = d.terminate(Duration::from_secs(60));
        assert!(status.success(), "{logs}");
    }
    let scores = read_all(&t.scores, 1);
    assert!(scores.iter().all(|m| m.json()["model_version"] == 1));
}
