//! Secured and compressed Kafka, for real: the daemon consumes, scores, produces and commits
//! through TLS and SASL/SCRAM (a private broker behind a TLS listener with a throwaway CA,
//! scripts/test-broker.sh); wrong credentials and an untrusted certificate are reported with
//! the setting to check while the daemon waits, not ready; compressed input is scored.

mod common;

use std::time::{Duration, Instant};

use common::broker::TestBroker;
use common::{Daemon, Kafka, Topics, synthetic};

const FEATURES: &str = "[input]\nfeatures = [\"f0\", \"f1\", \"f2\", \"f3\", \"f4\", \"f5\", \"f6\", \"f7\"]\n\
     [model]\nwarmup_records = 200\nepochs = 5\nmin_steps = 0\nthreads = 1\n";

fn records(n: usize, partitions: i32) -> Vec<(i32, Option<String>, Vec<u8>)> {
    (0..n)
        .map(|i| ((i % partitions as usize) as i32, None, synthetic(i)))
        .collect()
}

fn committed_total(kafka: &Kafka, t: &Topics, partitions: i32) -> i64 {
    kafka
        .committed(&t.group, &t.input, partitions)
        .iter()
        .map(|&o| o.max(0))
        .sum()
}

fn wait_committed(kafka: &Kafka, t: &Topics, partitions: i32, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed_total(kafka, t, partitions) < n {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {n} commits"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// TLS + SASL/SCRAM end to end, with the password read from a file as the Kubernetes
/// manifests do.
#[test]
fn scores_and_commits_through_tls_and_sasl_scram() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::start(true, &["anomalyd:s3cr3t-pw:scram256"]);
    let ca = broker.ca().display().to_string();
    let password_file = dir.path().join("sasl.password");
    std::fs::write(&password_file, "s3cr3t-pw\n").expect("write password");
    let kafka = broker.kafka(&[
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanism", "SCRAM-SHA-256"),
        ("sasl.username", "anomalyd"),
        ("sasl.password", "s3cr3t-pw"),
        ("ssl.ca.location", &ca),
    ]);
    let t = Topics::fresh_on(&kafka, "secure", 2);
    kafka.produce(&t.input, &records(600, 2));
    let config = format!(
        "{}[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\
         \"sasl.mechanism\" = \"SCRAM-SHA-256\"\n\"sasl.username\" = \"anomalyd\"\n\
         \"sasl.password\" = \"file:{}\"\n\"ssl.ca.location\" = {ca:?}\n{FEATURES}",
        t.kafka_toml_on(&broker.brokers()),
        password_file.display()
    );
    let mut daemon = Daemon::start(dir.path(), &config);
    daemon.wait_metric(
        "anomalyd_records_scored_total",
        Duration::from_secs(120),
        |v| v >= 600.0,
    );
    wait_committed(&kafka, &t, 2, 600);
    assert_eq!(daemon.http_status("/readyz"), Some(200));
    let (status, logs) = daemon.terminate(Duration::from_secs(60));
    assert!(status.success(), "{logs}");
    assert!(
        !logs.contains("s3cr3t-pw"),
        "the password never reaches the logs"
    );
    let scores = kafka.read_all(&t.scores, 1);
    assert_eq!(scores.len(), 600, "one score per record");
}

/// A wrong password: the daemon stays up and not ready, and says which settings to check.
#[test]
fn wrong_password_names_the_setting_and_waits_not_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::start(false, &["anomalyd:right-pw:scram512"]);
    let t = Topics::names("badpw");
    let config = format!(
        "{}[kafka.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\
         \"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"anomalyd\"\n\
         \"sasl.password\" = \"wrong-pw\"\n{FEATURES}",
        t.kafka_toml_on(&broker.brokers())
    );
    let mut daemon = Daemon::start(dir.path(), &config);
    daemon.wait_log("sasl.password", Duration::from_secs(60));
    assert_eq!(daemon.http_status("/readyz"), Some(503));
    assert_eq!(daemon.metric("anomalyd_kafka_up"), Some(0.0));
    std::thread::sleep(Duration::from_secs(2));
    assert!(daemon.is_running(), "not fatal:\n{}", daemon.logs());
    let (status, logs) = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{logs}");
    assert!(
        !logs.contains("wrong-pw"),
        "the password never reaches the logs"
    );
}

/// A TLS listener whose certificate the daemon does not trust (no ssl.ca.location for the
/// throwaway CA): named, not fatal.
#[test]
fn untrusted_certificate_names_the_setting_and_waits_not_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::start(true, &[]);
    let t = Topics::names("untrusted");
    let config = format!(
        "{}[kafka.properties]\n\"security.protocol\" = \"SSL\"\n{FEATURES}",
        t.kafka_toml_on(&broker.brokers())
    );
    let mut daemon = Daemon::start(dir.path(), &config);
    daemon.wait_log("ssl.ca.location", Duration::from_secs(60));
    assert_eq!(daemon.http_status("/readyz"), Some(503));
    assert_eq!(daemon.metric("anomalyd_kafka_up"), Some(0.0));
    assert!(daemon.is_running(), "not fatal:\n{}", daemon.logs());
    let (status, logs) = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{logs}");
}

/// Input compressed by its producers with zstd, lz4 and gzip is scored. (Snappy is built
/// into librdkafka too, but Tansu 0.6.0 cannot serve snappy batches: its fetch fails with
/// `UnexpectedType("Snappy")`.)
#[test]
fn compressed_input_is_scored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kafka = Kafka::local();
    let t = Topics::fresh("compressed", 1);
    let all = records(600, 1);
    for (i, codec) in ["zstd", "lz4", "gzip"].iter().enumerate() {
        common::produce_on(
            &kafka,
            &t.input,
            &all[i * 200..(i + 1) * 200],
            &[("compression.type", codec)],
        );
    }
    let config = format!("{}{FEATURES}", t.kafka_toml());
    let mut daemon = Daemon::start(dir.path(), &config);
    daemon.wait_metric(
        "anomalyd_records_scored_total",
        Duration::from_secs(120),
        |v| v >= 600.0,
    );
    wait_committed(&kafka, &t, 1, 600);
    let (status, logs) = daemon.terminate(Duration::from_secs(60));
    assert!(status.success(), "{logs}");
    assert_eq!(kafka.read_all(&t.scores, 1).len(), 600);
}
