//! Shared harness for the integration tests: the real broker that `scripts/test.sh` starts
//! (address in ANOMALYD_TEST_BROKERS, default 127.0.0.1:19092), fresh topics and groups per
//! test, and the daemon binary started on port 0.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

pub mod broker;

pub fn brokers() -> String {
    std::env::var("ANOMALYD_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// A cluster's address and the client properties it needs (SASL, TLS).
#[derive(Debug, Clone)]
pub struct Kafka {
    pub brokers: String,
    pub properties: Vec<(String, String)>,
}

impl Kafka {
    /// The shared test broker that scripts/test.sh starts.
    pub fn local() -> Self {
        Kafka {
            brokers: brokers(),
            properties: Vec::new(),
        }
    }

    pub fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// The `[kafka.properties]` table for the daemon's config.
    pub fn properties_toml(&self) -> String {
        let mut out = String::from("[kafka.properties]\n");
        for (k, v) in &self.properties {
            out.push_str(&format!("{k:?} = {v:?}\n"));
        }
        out
    }
}

/// A name no other test (or earlier run) has used.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos % 1_000_000_000
    )
}

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

pub fn create_topics(names: &[&str], partitions: i32) {
    Kafka::local().create_topics(names, partitions)
}

impl Kafka {
    pub fn create_topics(&self, names: &[&str], partitions: i32) {
        create_topics_on(self, names, partitions)
    }

    pub fn produce(&self, topic: &str, messages: &[(i32, Option<String>, Vec<u8>)]) {
        produce_on(self, topic, messages, &[])
    }

    pub fn read_all(&self, topic: &str, partitions: i32) -> Vec<Consumed> {
        read_all_on(self, topic, partitions)
    }

    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
        committed_on(self, group, topic, partitions)
    }
}

fn create_topics_on(kafka: &Kafka, names: &[&str], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = kafka.config().create().expect("admin client");
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    let results =
        block_on(admin.create_topics(&topics, &AdminOptions::new())).unwrap_or_else(|e| {
            panic!(
                "cannot reach the test broker at {} ({e}); run scripts/test.sh, or \
                 KAFKA_PORT=19092 scripts/broker.sh start",
                kafka.brokers
            )
        });
    for r in results {
        if let Err((topic, code)) = r {
            panic!("creating topic {topic}: {code:?}");
        }
    }
}

/// Produces (partition, key, payload) messages and waits until all are delivered.
pub fn produce(topic: &str, messages: &[(i32, Option<String>, Vec<u8>)]) {
    produce_on(&Kafka::local(), topic, messages, &[])
}

/// Produces with extra producer properties (e.g. `compression.type`).
pub fn produce_on(
    kafka: &Kafka,
    topic: &str,
    messages: &[(i32, Option<String>, Vec<u8>)],
    extra: &[(&str, &str)],
) {
    let mut config = kafka.config();
    config.set("linger.ms", "5");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    let producer: ThreadedProducer<DefaultProducerContext> = config.create().expect("producer");
    for (partition, key, payload) in messages {
        let mut rec = BaseRecord::to(topic).partition(*partition).payload(payload);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        let mut rec = rec;
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
}

#[derive(Debug, Clone)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
}

impl Consumed {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("output is JSON")
    }
}

/// Reads every message now in the topic (up to the high watermarks), without a group.
pub fn read_all(topic: &str, partitions: i32) -> Vec<Consumed> {
    read_all_on(&Kafka::local(), topic, partitions)
}

fn read_all_on(kafka: &Kafka, topic: &str, partitions: i32) -> Vec<Consumed> {
    let consumer: BaseConsumer = kafka
        .config()
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    let mut high = HashMap::new();
    for p in 0..partitions {
        let (_, h) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        high.insert(p, h);
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut pos: HashMap<i32, i64> = (0..partitions).map(|p| (p, 0)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while pos.iter().any(|(p, &o)| o < high[p]) {
        assert!(Instant::now() < deadline, "timed out reading {topic}");
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("consume");
            pos.insert(m.partition(), m.offset() + 1);
            out.push(Consumed {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                payload: m.payload().unwrap_or_default().to_vec(),
            });
        }
    }
    out
}

/// Topics and group of one test.
pub struct Topics {
    pub input: String,
    pub scores: String,
    pub alerts: String,
    pub dlq: String,
    pub group: String,
}

impl Topics {
    pub fn fresh(test: &str, partitions: i32) -> Self {
        Self::fresh_on(&Kafka::local(), test, partitions)
    }

    /// Fresh names on `kafka`; the input topic with `partitions`, the outputs with one.
    pub fn fresh_on(kafka: &Kafka, test: &str, partitions: i32) -> Self {
        let t = Self::names(test);
        kafka.create_topics(&[&t.input], partitions);
        kafka.create_topics(&[&t.scores, &t.alerts, &t.dlq], 1);
        t
    }

    /// Fresh names; no topic is created.
    pub fn names(test: &str) -> Self {
        Topics {
            input: unique(&format!("{test}.in")),
            scores: unique(&format!("{test}.scores")),
            alerts: unique(&format!("{test}.alerts")),
            dlq: unique(&format!("{test}.dlq")),
            group: unique(&format!("{test}.group")),
        }
    }

    /// The [kafka] section of a config file for these topics.
    pub fn kafka_toml(&self) -> String {
        self.kafka_toml_on(&brokers())
    }

    /// The [kafka] section for these topics on the cluster at `brokers`, with a short group
    /// session (6 s) so that a stopped member's partitions move on quickly.
    pub fn kafka_toml_on(&self, brokers: &str) -> String {
        self.kafka_toml_session(brokers, "6s")
    }

    /// The [kafka] section for these topics on the cluster at `brokers`, with the group
    /// session timeout `session`.
    pub fn kafka_toml_session(&self, brokers: &str, session: &str) -> String {
        format!(
            "[kafka]\nbrokers = \"{}\"\ngroup_id = \"{}\"\ninput_topic = \"{}\"\n\
             scores_topic = \"{}\"\nalerts_topic = \"{}\"\ndlq_topic = \"{}\"\n\
             session_timeout = \"{session}\"\ncommit_interval = \"200ms\"\n",
            brokers, self.group, self.input, self.scores, self.alerts, self.dlq
        )
    }
}

/// The daemon under test, with its stderr (JSON logs) collected.
pub struct Daemon {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    pub metrics_url: String,
}

impl Daemon {
    /// Starts `anomalyd run` with `config` (the test's TOML; http and log settings are added).
    pub fn start(dir: &Path, config: &str) -> Daemon {
        let path = dir.join(format!("{}.toml", unique("config")));
        let full =
            format!("{config}\n[http]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n");
        std::fs::write(&path, full).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_anomalyd"))
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start anomalyd");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && let Some(a) = v.get("addr").and_then(|a| a.as_str())
                {
                    let _ = addr_tx.send(a.to_string());
                }
                sink.lock().expect("logs").push(line);
            }
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "daemon did not report its http address; logs:\n{}",
                    logs.lock().expect("logs").join("\n")
                )
            });
        Daemon {
            child,
            logs,
            metrics_url: format!("http://{addr}/metrics"),
        }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }

    /// The HTTP status of GET `path` (e.g. "/readyz"), if the daemon answers.
    pub fn http_status(&self, path: &str) -> Option<u16> {
        let url = self.metrics_url.replace("/metrics", path);
        match ureq::get(&url).call() {
            Ok(r) => Some(r.status().as_u16()),
            Err(ureq::Error::StatusCode(code)) => Some(code),
            Err(_) => None,
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Polls until the logs contain `text`, or panics with them after `timeout`.
    pub fn wait_log(&mut self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.logs().contains(text) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {text:?} in the logs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn scrape(&self) -> Option<String> {
        let mut resp = ureq::get(&self.metrics_url).call().ok()?;
        resp.body_mut().read_to_string().ok()
    }

    /// A metric's value in the exposition (sum over its label sets), if present.
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric_value(&self.scrape()?, name)
    }

    /// Polls until `name` satisfies `ok`, or panics with the logs after `timeout`.
    pub fn wait_metric(&mut self, name: &str, timeout: Duration, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.metric(name).filter(|v| ok(*v)) {
                return v;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "daemon exited ({status}) while waiting for {name}; logs:\n{}",
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {name} (last {:?}); logs:\n{}",
                self.metric(name),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// Sends SIGTERM and returns at once.
    pub fn signal_term(&self) {
        self.signal("-TERM");
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(mut self, timeout: Duration) -> (ExitStatus, String) {
        self.signal("-TERM");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                std::thread::sleep(Duration::from_millis(100)); // let the log reader finish
                return (status, self.logs());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "daemon did not exit within {timeout:?} of SIGTERM; logs:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no drain, no final commit.
    pub fn kill(mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sums a metric's samples in a Prometheus text exposition.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let metric = series.split('{').next().unwrap_or_default();
        if metric == name {
            let v: f64 = value.parse().ok()?;
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// The NAB fixture as (timestamp, value) rows.
pub fn nab_rows() -> Vec<(String, f64)> {
    let text = std::fs::read_to_string(fixture("nab/art_daily_jumpsup.csv")).expect("fixture");
    text.lines()
        .skip(1)
        .map(|l| {
            let (t, v) = l.split_once(',').expect("row");
            (t.to_string(), v.parse().expect("value"))
        })
        .collect()
}

/// The fixture's labelled anomaly windows, as (start, end) timestamps "YYYY-MM-DD HH:MM:SS".
pub fn nab_windows() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(fixture("nab/labels.json")).expect("labels");
    let v: serde_json::Value = serde_json::from_str(&text).expect("labels json");
    v["artificialWithAnomaly/art_daily_jumpsup.csv"]
        .as_array()
        .expect("windows")
        .iter()
        .map(|w| {
            let s = |i: usize| w[i].as_str().expect("ts")[..19].to_string();
            (s(0), s(1))
        })
        .collect()
}

/// The consumer group's committed positions for `topic`, by partition (-1 when none).
pub fn committed(group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    committed_on(&Kafka::local(), group, topic, partitions)
}

fn committed_on(kafka: &Kafka, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    try_committed(kafka, group, topic, partitions).expect("committed offsets")
}

/// The group's committed positions, or `None` when the broker does not answer in time
/// (just restarted, say).
pub fn try_committed(kafka: &Kafka, group: &str, topic: &str, partitions: i32) -> Option<Vec<i64>> {
    let consumer: BaseConsumer = kafka
        .config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .ok()?;
    Some(
        (0..partitions)
            .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            })
            .collect(),
    )
}

/// Synthetic multivariate records: 8 correlated features.
pub fn synthetic(i: usize) -> Vec<u8> {
    let t = i as f64 * 0.01;
    let base = t.sin();
    let fields: BTreeMap<String, f64> = (0..8)
        .map(|j| {
            (
                format!("f{j}"),
                base * (j as f64 + 1.0) + ((i * 7 + j * 13) % 10) as f64 * 0.01,
            )
        })
        .collect();
    serde_json::to_vec(&fields).expect("json")
}

/// `anomalyd models revert VERSION --store STORE`, which must succeed.
pub fn revert(store: &Path, version: u64) {
    let out = Command::new(env!("CARGO_BIN_EXE_anomalyd"))
        .args(["models", "revert", &version.to_string(), "--store"])
        .arg(store)
        .output()
        .expect("revert");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
