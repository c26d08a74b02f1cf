//! The fault suite (issue 12) against the real broker: crashes, broker outages, rebalances
//! with records in flight, poison records and refused outputs. Each test asserts that no
//! record is lost: every input offset ends with a finite score or a dead letter, and the
//! group's committed positions reach the end of every partition.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::broker::TestBroker;
use common::{Daemon, Kafka, Topics, synthetic, unique};

/// Messages `from..to` of the synthetic stream, spread over `partitions` by index.
fn spread(from: usize, to: usize, partitions: i32) -> Vec<(i32, Option<String>, Vec<u8>)> {
    (from..to)
        .map(|i| ((i % partitions as usize) as i32, None, synthetic(i)))
        .collect()
}

fn model_toml(store: &std::path::Path, extra: &str) -> String {
    format!(
        "[input]\nfeatures = [\"f0\", \"f1\", \"f2\", \"f3\", \"f4\", \"f5\", \"f6\", \"f7\"]\n\
         [model]\nwarmup_records = 300\nepochs = 5\nmin_steps = 0\nthreads = 1\nstore_dir = {:?}\n{extra}",
        store.display()
    )
}

/// Polls until the group has committed `total` records over the topic's partitions.
fn wait_committed(kafka: &Kafka, t: &Topics, partitions: i32, total: i64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let c: i64 = common::try_committed(kafka, &t.group, &t.input, partitions)
            .unwrap_or_default()
            .iter()
            .map(|&o| o.max(0))
            .sum();
        if c >= total {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out: {c} of {total} records committed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every (partition, offset) in the scores and dead-letter topics, with how often it
/// appears; every score is finite.
fn outputs(kafka: &Kafka, t: &Topics) -> (BTreeMap<(i64, i64), usize>, usize) {
    let mut seen = BTreeMap::new();
    let mut total = 0;
    for m in kafka.read_all(&t.scores, 1) {
        let v = m.json();
        let score = v["score"].as_f64();
        assert!(
            score.is_some_and(f64::is_finite),
            "a score message without a finite score: {v}"
        );
        *seen
            .entry((
                v["partition"].as_i64().expect("p"),
                v["offset"].as_i64().expect("o"),
            ))
            .or_insert(0) += 1;
        total += 1;
    }
    for m in kafka.read_all(&t.dlq, 1) {
        let v = m.json();
        *seen
            .entry((
                v["partition"].as_i64().expect("p"),
                v["offset"].as_i64().expect("o"),
            ))
            .or_insert(0) += 1;
        total += 1;
    }
    (seen, total)
}

fn assert_every_offset(seen: &BTreeMap<(i64, i64), usize>, partitions: i32, per_partition: &[i64]) {
    for p in 0..partitions {
        for o in 0..per_partition[p as usize] {
            assert!(
                seen.contains_key(&(p as i64, o)),
                "record {p}/{o} has neither a score nor a dead letter"
            );
        }
    }
}

/// A small deterministic generator for the kill moments (seed printed, to reproduce).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Ten SIGKILLs at random moments over 4 partitions and 100k records: every offset is
/// scored, offsets were committed before each kill, and the duplicates stay within the
/// documented bound (README "Delivery guarantees": a crash replays at most about
/// 1.5 x pipeline.max_in_flight records; asserted here as 2 x per kill).
#[test]
fn ten_sigkills_lose_nothing_and_duplicates_stay_within_the_bound() {
    const N: usize = 100_000;
    const PARTITIONS: i32 = 4;
    const MAX_IN_FLIGHT: usize = 1_000;
    const KILLS: usize = 10;
    let dir = tempfile::tempdir().expect("tempdir");
    let kafka = Kafka::local();
    let t = Topics::fresh("kill10", PARTITIONS);
    // Tansu 0.6 pauses 3 s in each static JoinGroup and SyncGroup: a session timeout
    // shorter than both together makes the member miss its own first heartbeat.
    let config = format!(
        "{}group_instance_id = {:?}\n{}[pipeline]\nmax_in_flight = {MAX_IN_FLIGHT}\n\
         max_records = 200\nchannel_capacity = 1000\n",
        t.kafka_toml()
            .replace("session_timeout = \"6s\"", "session_timeout = \"20s\""),
        unique("member"),
        model_toml(&dir.path().join("models"), "")
    );
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64);
    println!("kill moments seed {seed}");
    let mut rng = Lcg(seed);
    let mut committed_before = 0i64;
    // The whole stream first: every kill lands mid-stream, with a backlog behind it (more
    // records are added when the daemon gets near the end before the last kill).
    kafka.produce(&t.input, &spread(0, N, PARTITIONS));
    let mut produced = N;
    for kill in 0..KILLS {
        if committed_before as usize + 10_000 > produced {
            kafka.produce(&t.input, &spread(produced, produced + 20_000, PARTITIONS));
            produced += 20_000;
        }
        let mut daemon = Daemon::start(dir.path(), &config);
        // Let it make progress (rejoin, load the model, score, commit), then kill it at a
        // random moment.
        daemon.wait_metric(
            "anomalyd_records_scored_total",
            Duration::from_secs(120),
            |v| v > 0.0,
        );
        let committed_now = || -> i64 {
            common::try_committed(&kafka, &t.group, &t.input, PARTITIONS)
                .unwrap_or_default()
                .iter()
                .map(|&o| o.max(0))
                .sum()
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while committed_now() <= committed_before {
            assert!(
                Instant::now() < deadline,
                "kill {kill}: no offset committed since the last kill ({committed_before})"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(rng.next() % 300));
        let committed = committed_now();
        daemon.kill();
        println!("kill {kill}: {committed} committed before it");
        committed_before = committed;
    }
    let mut daemon = Daemon::start(dir.path(), &config);
    wait_committed(
        &kafka,
        &t,
        PARTITIONS,
        produced as i64,
        Duration::from_secs(300),
    );
    daemon.wait_metric("anomalyd_pending_records", Duration::from_secs(30), |v| {
        v == 0.0
    });
    let (status, logs) = daemon.terminate(Duration::from_secs(60));
    assert!(status.success(), "{logs}");
    assert!(
        logs.contains("loaded saved model"),
        "a restart warm-starts from the store"
    );

    let (seen, total) = outputs(&kafka, &t);
    assert_every_offset(&seen, PARTITIONS, &[(produced / 4) as i64; 4]);
    let duplicates = total - seen.len();
    let bound = KILLS * 2 * MAX_IN_FLIGHT;
    println!(
        "{produced} records, {KILLS} kills: {total} outputs, {duplicates} duplicates \
         (bound {bound})"
    );
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates over {KILLS} kills exceed {bound}"
    );
}

/// The broker goes away for several seconds, twice, mid-stream: the daemon stays up, reports
/// not-ready while the broker is away, resumes by itself, and loses nothing. The outage is
/// made by stopping the broker's listener (a proxy in front of it) rather than the broker:
/// Tansu 0.6 restarted under a consumer group's commits sometimes comes back with its
/// storage task dead and resets every connection (docs/reliability.md), which would test
/// Tansu, not the daemon. A real stop and start is `broker_down_at_start_is_waited_for`.
///
/// The group session (20 s) outlasts each outage, as a production session should outlast a
/// broker's brief absence: the member keeps its partitions. With the tests' usual 6 s the
/// client's session times out during the 5 s cut, it rejoins as a new member, and Tansu
/// 0.6.0's coordinator then sometimes hands it an empty assignment for good, apparently
/// because the old member is still listed (seen in CI: "partitions assigned []" after the
/// rejoin, nothing consumed for two minutes; docs/reliability.md) -- a broker bug a real
/// Kafka does not have.
#[test]
fn broker_unreachable_twice_mid_stream_is_waited_out() {
    const N: usize = 30_000;
    const PARTITIONS: i32 = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::start_proxied();
    let kafka = broker.kafka(&[]);
    let t = Topics::fresh_on(&kafka, "outage", PARTITIONS);
    kafka.produce(&t.input, &spread(0, N, PARTITIONS));
    let config = format!(
        "{}{}",
        t.kafka_toml_session(&broker.brokers(), "20s"),
        model_toml(&dir.path().join("models"), "")
    );
    let mut daemon = Daemon::start(dir.path(), &config);
    for (round, until) in [(1, 5_000.0), (2, 15_000.0)] {
        daemon.wait_metric(
            "anomalyd_records_scored_total",
            Duration::from_secs(120),
            |v| v >= until,
        );
        let stopped = Instant::now();
        broker.cut();
        daemon.wait_metric("anomalyd_kafka_up", Duration::from_secs(20), |v| v == 0.0);
        assert_eq!(
            daemon.http_status("/readyz"),
            Some(503),
            "not ready while down"
        );
        assert_eq!(
            daemon.http_status("/healthz"),
            Some(200),
            "alive while down"
        );
        std::thread::sleep(Duration::from_secs(5).saturating_sub(stopped.elapsed()));
        assert!(
            daemon.is_running(),
            "round {round}: the daemon exited:\n{}",
            daemon.logs()
        );
        broker.mend();
        let back = Instant::now();
        daemon.wait_metric("anomalyd_kafka_up", Duration::from_secs(90), |v| v == 1.0);
        println!(
            "round {round}: broker down {:?}, daemon ready again {:?} after the restart",
            back - stopped,
            back.elapsed()
        );
        assert_eq!(daemon.http_status("/readyz"), Some(200));
    }
    wait_committed(&kafka, &t, PARTITIONS, N as i64, Duration::from_secs(300));
    let (status, logs) = daemon.terminate(Duration::from_secs(60));
    assert!(status.success(), "{logs}");
    let (seen, _) = outputs(&kafka, &t);
    assert_every_offset(&seen, PARTITIONS, &[(N / 4) as i64; 4]);
}

/// A broker that is down when the daemon starts: it waits, not ready, and starts consuming
/// once the broker is up.
#[test]
fn broker_down_at_start_is_waited_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::start(false, &[]);
    let kafka = broker.kafka(&[]);
    let t = Topics::fresh_on(&kafka, "late", 1);
    kafka.produce(&t.input, &spread(0, 1_000, 1));
    broker.down();
    let config = format!(
        "{}{}",
        t.kafka_toml_on(&broker.brokers()),
        model_toml(&dir.path().join("models"), "")
    );
    let mut daemon = Daemon::start(dir.path(), &config);
    daemon.wait_log("not ready: waiting for the broker", Duration::from_secs(30));
    assert_eq!(daemon.http_status("/readyz"), Some(503));
    assert_eq!(daemon.metric("anomalyd_kafka_up"), Some(0.0));
    std::thread::sleep(Duration::from_secs(3));
    assert!(daemon.is_running(), "{}", daemon.logs());
    broker.up();
    wait_committed(&kafka, &t, 1, 1_000, Duration::from_secs(120));
    assert_eq!(daemon.http_status("/readyz"), Some(200));
    let (status, logs) = daemon.terminate(Duration::from_secs(60));
    assert!(status.success(), "{logs}");
}

/// A second daemon joins while the first has records in flight, the first stops, a third
/// joins: every record is scored.
#[test]
fn rebalances_with_records_in_flight_lose_nothing() {
    const N: usize = 30_000;
    const PARTITIONS: i32 = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let kafka = Kafka::local();
    let t = Topics::fresh("rebalance", PARTITIONS);
    let store = dir.path().join("models");
    let config = format!("{}{}", t.kafka_toml(), model_toml(&store, ""));
    // The model is trained and saved first, so every member serves the same one.
    kafka.produce(&t.input, &spread(0, 2_000, PARTITIONS));
    let mut a = Daemon::start(dir.path(), &config);
    a.wait_metric(
        "anomalyd_records_scored_total",
        Duration::from_secs(120),
        |v| v >= 2_000.0,
    );
    kafka.produce(&t.input, &spread(2_000, N, PARTITIONS));
    let mut b = Daemon::start(dir.path(), &config);
    b.wait_metric(
        "anomalyd_assigned_partitions",
        Duration::from_secs(60),
        |v| v > 0.0,
    );
    let (status, logs) = a.terminate(Duration::from_secs(60));
    assert!(status.success(), "{logs}");
    let mut c = Daemon::start(dir.path(), &config);
    c.wait_metric(
        "anomalyd_assigned_partitions",
        Duration::from_secs(60),
        |v| v > 0.0,
    );
    wait_committed(&kafka, &t, PARTITIONS, N as i64, Duration::from_secs(300));
    for d in [b, c] {
        let (status, logs) = d.terminate(Duration::from_secs(60));
        assert!(status.success(), "{logs}");
    }
    let (seen, _) = outputs(&kafka, &t);
    assert_every_offset(&seen, PARTITIONS, &[(N / 4) as i64; 4]);
}

/// One poison record of each kind among good ones: each is scored with a finite score or
/// dead-lettered with its reason, the partition reaches its end, the daemon stays healthy.
#[test]
fn malformed_corpus_is_scored_or_dead_lettered_and_the_partition_advances() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kafka = Kafka::local();
    let t = Topics::fresh("corpus", 1);
    let deep = format!(
        "{{\"cpu\": 1, \"mem\": 2, \"x\": {}{}}}",
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    let deep_value = format!(
        "{{\"cpu\": {}{}, \"mem\": 2}}",
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    let large = format!(
        "{{\"cpu\": 1, \"mem\": 2, \"note\": \"{}\"}}",
        "x".repeat(900_000)
    );
    let wide = {
        let mut m: BTreeMap<String, f64> =
            (0..10_000).map(|i| (format!("k{i}"), i as f64)).collect();
        m.insert("cpu".into(), 0.5);
        m.insert("mem".into(), 2.0);
        serde_json::to_string(&m).expect("json")
    };
    let huge_key = format!(
        "{{\"cpu\": 0.1, \"mem\": 1.2, \"host\": \"{}\"}}",
        "h".repeat(1_100_000)
    );
    let binary: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let long_number = format!("{{\"cpu\": 0.{}1, \"mem\": 1}}", "0".repeat(10_000));
    // (payload, acceptable outcomes: "scored" or dead-letter reasons)
    let corpus: Vec<(Vec<u8>, &[&str])> = vec![
        (b"{\"cpu\": 1.0, \"mem\"".to_vec(), &["invalid_json"]),
        (b"{\"cpu\": 1, \"mem\": \xff}".to_vec(), &["invalid_json"]),
        (
            b"{\"cpu\": 1, \"mem\": 2, \"host\": \"\xc3\x28\"}".to_vec(),
            &["invalid_json"],
        ),
        (
            b"\xEF\xBB\xBF{\"cpu\": 0.2, \"mem\": 1.4}".to_vec(),
            &["scored"],
        ),
        (Vec::new(), &["invalid_json"]),
        (b"   \n".to_vec(), &["invalid_json"]),
        (b"{\"cpu\": NaN, \"mem\": 2}".to_vec(), &["invalid_json"]),
        (
            b"{\"cpu\": Infinity, \"mem\": 2}".to_vec(),
            &["invalid_json"],
        ),
        (b"{\"cpu\": 1e309, \"mem\": 2}".to_vec(), &["out_of_range"]),
        (b"{\"cpu\": 3.5e38, \"mem\": 2}".to_vec(), &["out_of_range"]),
        (b"{\"cpu\": -1e39, \"mem\": 2}".to_vec(), &["out_of_range"]),
        (
            b"{\"cpu\": 3e38, \"mem\": 2}".to_vec(),
            &["scored", "non_finite_score"],
        ),
        (
            b"{\"cpu\": 18446744073709551615, \"mem\": 2}".to_vec(),
            &["scored", "non_finite_score"],
        ),
        (
            b"{\"cpu\": \"1.5\", \"mem\": 2}".to_vec(),
            &["not_a_number"],
        ),
        (b"{\"cpu\": true, \"mem\": 2}".to_vec(), &["not_a_number"]),
        (b"{\"cpu\": null, \"mem\": 2}".to_vec(), &["not_a_number"]),
        (
            b"{\"cpu\": {\"v\": 1}, \"mem\": 2}".to_vec(),
            &["not_a_number"],
        ),
        (b"{\"cpu\": [1], \"mem\": 2}".to_vec(), &["not_a_number"]),
        (b"{\"cpu\": 1}".to_vec(), &["missing_field"]),
        (b"{}".to_vec(), &["missing_field"]),
        // Valid JSON: the deep part is skipped without recursion (serde_json's ignore).
        (deep.into_bytes(), &["scored"]),
        (deep_value.into_bytes(), &["not_a_number"]),
        (large.into_bytes(), &["scored"]),
        (wide.into_bytes(), &["scored"]),
        (
            b"{\"cpu\": 0.3, \"cpu\": 0.4, \"mem\": 1.5}".to_vec(),
            &["scored"],
        ),
        (b"[0.1, 1.2]".to_vec(), &["invalid_json"]),
        (b"42".to_vec(), &["invalid_json"]),
        (
            b"{\"cpu\": 0.1, \"mem\": 1.2} trailing".to_vec(),
            &["invalid_json"],
        ),
        (
            b"{\"cpu\": 0.1, \"mem\": 1.2, \"host\": {\"a\": 1}}".to_vec(),
            &["invalid_key"],
        ),
        (
            b"{\"cpu\": 0.1, \"mem\": 1.2, \"ts\": true}".to_vec(),
            &["invalid_timestamp"],
        ),
        (b"{\"c\\u0070u\": -0.0, \"mem\": 1E0}".to_vec(), &["scored"]),
        (long_number.into_bytes(), &["scored"]),
        (huge_key.into_bytes(), &["output_too_large"]),
        (binary, &["invalid_json"]),
    ];
    assert!(corpus.len() >= 25);
    let mut messages = Vec::new();
    let mut expected: BTreeMap<i64, &[&str]> = BTreeMap::new();
    let mut tombstones = BTreeSet::new();
    let good = |i: usize| {
        let x = (i as f64 * 0.1).sin();
        serde_json::json!({"cpu": x, "mem": 2.0 * x + 1.0, "host": "h1", "ts": i})
            .to_string()
            .into_bytes()
    };
    for i in 0..400 {
        messages.push((0, None, good(i))); // the warm-up
    }
    for (payload, outcomes) in corpus {
        for j in 0..3 {
            messages.push((0, None, good(1_000 + j)));
        }
        expected.insert(messages.len() as i64, outcomes);
        messages.push((0, Some("k".to_string()), payload));
    }
    // A tombstone (null value) is produced apart: the helper sends payloads only.
    let producer_extra = [("message.max.bytes", "10000000")];
    common::produce_on(&kafka, &t.input, &messages, &producer_extra);
    tombstones.insert(messages.len() as i64);
    produce_tombstone(&kafka, &t.input);
    let total = messages.len() as i64 + 1;

    let config = format!(
        "{}[input]\nfeatures = [\"cpu\", \"mem\"]\nkey_field = \"host\"\ntimestamp_field = \"ts\"\n\
         [model]\nwarmup_records = 300\nepochs = 5\nmin_steps = 0\nthreads = 1\n",
        t.kafka_toml()
    );
    let mut daemon = Daemon::start(dir.path(), &config);
    wait_committed(&kafka, &t, 1, total, Duration::from_secs(180));
    assert_eq!(daemon.http_status("/healthz"), Some(200));
    assert_eq!(daemon.http_status("/readyz"), Some(200));
    assert!(daemon.is_running());
    let (status, logs) = daemon.terminate(Duration::from_secs(60));
    assert!(status.success(), "{logs}");

    let mut outcome: BTreeMap<i64, String> = BTreeMap::new();
    for m in kafka.read_all(&t.scores, 1) {
        let v = m.json();
        assert!(v["score"].as_f64().is_some_and(f64::is_finite), "{v}");
        outcome.insert(v["offset"].as_i64().expect("o"), "scored".into());
    }
    for m in kafka.read_all(&t.dlq, 1) {
        let v = m.json();
        assert!(m.payload.len() < 1_000_000, "a dead letter is bounded");
        assert!(v["payload_sha256"].as_str().is_some_and(|s| s.len() == 64));
        let o = v["offset"].as_i64().expect("o");
        let reason = v["reason"].as_str().expect("reason").to_string();
        // A record whose score and alert were both refused has two dead letters.
        if let Some(before) = outcome.insert(o, reason.clone()) {
            assert_eq!(before, reason, "offset {o} both scored and dead-lettered");
        }
    }
    for o in 0..total {
        let got = outcome
            .get(&o)
            .unwrap_or_else(|| panic!("record {o} has neither a score nor a dead letter"));
        if let Some(ok) = expected.get(&o) {
            assert!(
                ok.contains(&got.as_str()),
                "record {o}: {got}, expected one of {ok:?}"
            );
        } else if tombstones.contains(&o) {
            assert_eq!(got, "invalid_json", "the tombstone");
        } else {
            assert_eq!(got, "scored", "good record {o}");
        }
    }
}

fn produce_tombstone(kafka: &Kafka, topic: &str) {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> =
        kafka.config().create().expect("producer");
    producer
        .send(BaseRecord::<str, [u8]>::to(topic).partition(0).key("k"))
        .map_err(|(e, _)| e)
        .expect("send tombstone");
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// The dead-letter topic is missing at start: the daemon waits not-ready and names it;
/// once it exists, outputs the broker refuses (over message.max.bytes) are dead-lettered,
/// and dead letters it refuses too are counted and acknowledged: the partition advances.
#[test]
fn missing_dlq_topic_is_named_and_refused_outputs_never_stop_the_partition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kafka = Kafka::local();
    let t = Topics::names("refused");
    kafka.create_topics(&[&t.input], 1);
    kafka.create_topics(&[&t.scores, &t.alerts], 1);
    let mut messages = Vec::new();
    let mut big = BTreeSet::new();
    for i in 0..1_000usize {
        let x = (i as f64 * 0.1).sin();
        // Every 50th record has a 2,800-byte key: its score message and its dead letter
        // are both over the 3,000-byte message.max.bytes configured below.
        let host = if i % 50 == 49 {
            big.insert(i as i64);
            "h".repeat(2_800)
        } else {
            "h1".into()
        };
        let p = serde_json::json!({"cpu": x, "mem": 2.0 * x + 1.0, "host": host});
        messages.push((0, None, p.to_string().into_bytes()));
    }
    kafka.produce(&t.input, &messages);
    let config = format!(
        "{}[kafka.properties]\n\"message.max.bytes\" = \"3000\"\n\
         [input]\nfeatures = [\"cpu\", \"mem\"]\nkey_field = \"host\"\n\
         [model]\nwarmup_records = 200\nepochs = 5\nmin_steps = 0\nthreads = 1\n",
        t.kafka_toml()
    );
    let mut daemon = Daemon::start(dir.path(), &config);
    daemon.wait_log("kafka.dlq_topic", Duration::from_secs(30));
    assert_eq!(daemon.http_status("/readyz"), Some(503));
    assert_eq!(daemon.metric("anomalyd_kafka_missing_topics"), Some(1.0));
    assert_eq!(daemon.metric("anomalyd_records_consumed_total"), Some(0.0));
    kafka.create_topics(&[&t.dlq], 1);
    wait_committed(
        &kafka,
        &t,
        1,
        messages.len() as i64,
        Duration::from_secs(120),
    );
    assert_eq!(daemon.http_status("/readyz"), Some(200));
    let dropped = daemon.wait_metric(
        "anomalyd_records_dropped_total",
        Duration::from_secs(10),
        |v| v >= big.len() as f64,
    );
    assert_eq!(dropped, big.len() as f64);
    let (status, logs) = daemon.terminate(Duration::from_secs(60));
    assert!(status.success(), "{logs}");
    assert!(logs.contains("the dead letter was refused too"), "{logs}");
    let scored: BTreeSet<i64> = kafka
        .read_all(&t.scores, 1)
        .iter()
        .map(|m| m.json()["offset"].as_i64().expect("o"))
        .collect();
    let want: BTreeSet<i64> = (0..messages.len() as i64)
        .filter(|o| !big.contains(o))
        .collect();
    assert_eq!(scored, want, "every other record scored");
}

/// SIGTERM is honoured while the daemon waits for a broker, and while it drains towards a
/// broker that went away; a second SIGTERM then exits at once (130), without waiting for
/// the drain deadline.
#[test]
fn sigterm_is_honoured_at_any_time_and_a_second_one_exits_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::start(false, &[]);
    let kafka = broker.kafka(&[]);
    let t = Topics::fresh_on(&kafka, "sigterm", 1);
    kafka.produce(&t.input, &spread(0, 2_000, 1));
    let config = format!(
        "{}{}[pipeline]\ndrain_timeout = \"60s\"\n",
        t.kafka_toml_on(&broker.brokers()),
        model_toml(&dir.path().join("models"), "")
    );
    // Waiting for the broker: one SIGTERM stops it, cleanly.
    broker.down();
    let mut waiting = Daemon::start(dir.path(), &config);
    waiting.wait_log("not ready: waiting for the broker", Duration::from_secs(30));
    let asked = Instant::now();
    let (status, logs) = waiting.terminate(Duration::from_secs(10));
    assert!(status.success(), "{logs}");
    println!(
        "waiting for the broker: exited {:?} after SIGTERM",
        asked.elapsed()
    );

    // Draining while the first model trains for minutes: the first SIGTERM starts a drain
    // that could last the 60 s deadline; the second ends it at once.
    broker.up();
    let slow = config.replace("epochs = 5", "epochs = 200000");
    assert_ne!(slow, config);
    let mut draining = Daemon::start(dir.path(), &slow);
    draining.wait_metric(
        "anomalyd_records_consumed_total",
        Duration::from_secs(60),
        |v| v >= 300.0,
    );
    std::thread::sleep(Duration::from_millis(500));
    draining.signal_term();
    draining.wait_log(
        "draining (a second one exits at once)",
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        draining.is_running(),
        "still draining after the first SIGTERM"
    );
    let asked = Instant::now();
    let (status, logs) = draining.terminate(Duration::from_secs(5));
    println!(
        "second SIGTERM: exited {:?} later with {status}",
        asked.elapsed()
    );
    // Exit code 130; or, when libtorch is mid-computation on the training thread as the
    // process exits, its teardown may end the process by a signal instead. Either way it
    // is gone at once, never after the 60 s drain.
    assert!(
        status.code() == Some(130) || status.code().is_none(),
        "{status}: {logs}"
    );
    assert!(logs.contains("second signal: exiting now"), "{logs}");
    // Nothing is lost: what was not committed is read again by the next run.
    let mut again = Daemon::start(dir.path(), &config);
    wait_committed(&kafka, &t, 1, 2_000, Duration::from_secs(120));
    again.wait_metric("anomalyd_pending_records", Duration::from_secs(30), |v| {
        v == 0.0
    });
    let (status, logs) = again.terminate(Duration::from_secs(60));
    assert!(status.success(), "{logs}");
    let (seen, _) = outputs(&kafka, &t);
    assert_every_offset(&seen, 1, &[2_000]);
}
