//! The Kafka and data side of `scripts/bench.sh`: generates records, runs an in-process
//! fast broker (librdkafka's mock cluster), and the reference loops that anomalyd is
//! measured against (a consumer that does nothing, an echo loop), a watcher that measures
//! every pipeline's rate the same way (from its output topic's high watermarks), and the
//! latency probe. Each command prints one JSON line of results on stdout.
//!
//! `cargo run --release --example perf -- --help`

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes `records` JSON lines of `features` values (the records every run uses).
    Gen {
        #[arg(long)]
        records: usize,
        #[arg(long)]
        features: usize,
        #[arg(long)]
        out: PathBuf,
        /// Distinct keys (`host`) cycled through.
        #[arg(long, default_value_t = 100)]
        keys: usize,
    },
    /// An in-process mock cluster reachable over TCP; prints its bootstrap servers, then
    /// serves until stdin closes.
    Mock {
        #[arg(long, default_value_t = 1)]
        brokers: i32,
        /// name:partitions, repeated.
        #[arg(long = "topic")]
        topics: Vec<String>,
    },
    /// Produces the generated records to a topic as fast as the producer takes them.
    Produce {
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// A consumer-group member that only counts (the raw consume rate).
    Consume {
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        group: String,
        #[arg(long)]
        records: u64,
        /// Give up (and report what was read) after this long.
        #[arg(long, default_value = "600")]
        timeout_s: u64,
    },
    /// Consume, produce the same bytes to `out`, commit every second: the ceiling for any
    /// pipeline with one output per input.
    Echo {
        #[arg(long)]
        brokers: String,
        #[arg(long = "in")]
        input: String,
        #[arg(long)]
        out: String,
        #[arg(long)]
        group: String,
        /// Stop after this many records (0: run until killed).
        #[arg(long, default_value_t = 0)]
        records: u64,
    },
    /// Polls a topic's high watermarks until it holds `records` records; the rate is
    /// measured from the first output record to the last.
    Watch {
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        records: i64,
        #[arg(long, default_value = "600")]
        timeout_s: u64,
    },
    /// Produces at a steady rate with the send time (microseconds) in the `ts` field, reads
    /// `out` and reports produce -> arrival latency from the `field` that carries it back.
    Latency {
        #[arg(long)]
        brokers: String,
        #[arg(long = "in")]
        input: String,
        #[arg(long)]
        out: String,
        #[arg(long)]
        rate: u64,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Records sent before this many seconds are not counted.
        #[arg(long, default_value_t = 5)]
        warmup: u64,
        /// The output field that carries the input's `ts` back (`timestamp` for anomalyd's
        /// score messages, `ts` for the echo loop).
        #[arg(long)]
        field: String,
        #[arg(long, default_value_t = 32)]
        features: usize,
    },
    /// The scoring kernel on one thread (scaling, forward pass, per-row score) of the
    /// store's current model at each batch size, and training rows/s of the same network.
    Kernel {
        #[arg(long)]
        store: PathBuf,
        #[arg(long, value_delimiter = ',', default_value = "64,1024,4096")]
        batches: Vec<usize>,
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Rows and epochs of the training measurement (0 rows: skipped).
        #[arg(long, default_value_t = 16384)]
        train_rows: usize,
        #[arg(long, default_value_t = 2)]
        epochs: usize,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Gen {
            records,
            features,
            out,
            keys,
        } => gen_file(records, features, keys, &out),
        Command::Mock { brokers, topics } => mock(brokers, &topics),
        Command::Produce {
            brokers,
            topic,
            file,
        } => produce(&brokers, &topic, &file),
        Command::Consume {
            brokers,
            topic,
            group,
            records,
            timeout_s,
        } => consume(
            &brokers,
            &topic,
            &group,
            records,
            Duration::from_secs(timeout_s),
        ),
        Command::Echo {
            brokers,
            input,
            out,
            group,
            records,
        } => echo(&brokers, &input, &out, &group, records),
        Command::Watch {
            brokers,
            topic,
            records,
            timeout_s,
        } => watch(&brokers, &topic, records, Duration::from_secs(timeout_s)),
        Command::Latency {
            brokers,
            input,
            out,
            rate,
            seconds,
            warmup,
            field,
            features,
        } => latency(
            &brokers, &input, &out, rate, seconds, warmup, &field, features,
        ),
        Command::Kernel {
            store,
            batches,
            seconds,
            train_rows,
            epochs,
        } => kernel(&store, &batches, seconds, train_rows, epochs),
    }
}

/// One record: `host` (the key), `ts` and `f00..` values, the shape of the criterion bench's.
fn record(i: usize, features: usize, keys: usize, ts: u64, buf: &mut String) {
    use std::fmt::Write as _;
    buf.clear();
    let _ = write!(buf, "{{\"host\":\"node-{}\",\"ts\":{ts}", i % keys.max(1));
    for j in 0..features {
        let v = ((i * 31 + j * 7) % 1000) as f64 / 10.0 + (i as f64 * 0.01 + j as f64).sin();
        let _ = write!(buf, ",\"f{j:03}\":{v:.4}");
    }
    buf.push('}');
}

fn gen_file(records: usize, features: usize, keys: usize, out: &Path) -> Result<()> {
    let mut w = BufWriter::new(std::fs::File::create(out)?);
    let mut buf = String::new();
    for i in 0..records {
        record(i, features, keys, 1_700_000_000_000 + i as u64, &mut buf);
        w.write_all(buf.as_bytes())?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    println!(
        "{}",
        json!({ "records": records, "features": features, "keys": keys })
    );
    Ok(())
}

fn mock(brokers: i32, topics: &[String]) -> Result<()> {
    let cluster = MockCluster::new(brokers)?;
    for t in topics {
        let (name, parts) = t.split_once(':').context("--topic name:partitions")?;
        cluster.create_topic(name, parts.parse()?, 1)?;
    }
    println!("{}", json!({ "bootstrap": cluster.bootstrap_servers() }));
    std::io::stdout().flush()?;
    // Serve until the parent closes stdin (or kills us).
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink)? > 0 {}
    Ok(())
}

fn producer(brokers: &str) -> Result<BaseProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()?)
}

fn send(p: &BaseProducer, topic: &str, key: &[u8], payload: &[u8]) -> Result<()> {
    let mut rec = BaseRecord::to(topic).key(key).payload(payload);
    loop {
        match p.send(rec) {
            Ok(()) => return Ok(()),
            Err((e, r))
                if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
            {
                p.poll(Duration::from_millis(5));
                rec = r;
            }
            Err((e, _)) => bail!("produce: {e}"),
        }
    }
}

fn key_of(line: &str) -> &str {
    line.split('"').nth(3).unwrap_or("")
}

fn produce(brokers: &str, topic: &str, file: &Path) -> Result<()> {
    let text = std::fs::read_to_string(file)?;
    let p = producer(brokers)?;
    let start = Instant::now();
    let mut n = 0u64;
    for line in text.lines() {
        send(&p, topic, key_of(line).as_bytes(), line.as_bytes())?;
        n += 1;
        if n.is_multiple_of(1000) {
            p.poll(Duration::ZERO);
        }
    }
    p.flush(Duration::from_secs(120))?;
    let s = start.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({ "records": n, "seconds": s, "rate": n as f64 / s })
    );
    Ok(())
}

fn group_consumer(brokers: &str, group: &str) -> Result<BaseConsumer> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    Ok(cfg.create()?)
}

fn consume(brokers: &str, topic: &str, group: &str, records: u64, timeout: Duration) -> Result<()> {
    let c = group_consumer(brokers, group)?;
    c.subscribe(&[topic])?;
    let start = Instant::now();
    let mut n = 0u64;
    let mut first = None;
    let mut last_commit = Instant::now();
    while n < records && start.elapsed() < timeout {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => {
                first.get_or_insert_with(Instant::now);
                n += 1;
            }
            Some(Err(e)) => eprintln!("consume: {e}"),
            None => {}
        }
        if last_commit.elapsed() >= Duration::from_secs(1) && n > 0 {
            c.commit_consumer_state(CommitMode::Async)?;
            last_commit = Instant::now();
        }
    }
    let s = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    println!(
        "{}",
        json!({ "records": n, "seconds": s, "rate": n.saturating_sub(1) as f64 / s,
                "since_start": start.elapsed().as_secs_f64() })
    );
    Ok(())
}

fn echo(brokers: &str, input: &str, out: &str, group: &str, records: u64) -> Result<()> {
    let c = group_consumer(brokers, group)?;
    c.subscribe(&[input])?;
    let p = producer(brokers)?;
    let mut n = 0u64;
    let mut last_commit = Instant::now();
    while records == 0 || n < records {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                send(&p, out, m.key().unwrap_or(&[]), m.payload().unwrap_or(&[]))?;
                n += 1;
            }
            Some(Err(e)) => eprintln!("consume: {e}"),
            None => {}
        }
        p.poll(Duration::ZERO);
        if last_commit.elapsed() >= Duration::from_secs(1) && n > 0 {
            c.commit_consumer_state(CommitMode::Async)?;
            last_commit = Instant::now();
        }
    }
    p.flush(Duration::from_secs(60))?;
    c.commit_consumer_state(CommitMode::Sync)?;
    println!("{}", json!({ "records": n }));
    Ok(())
}

fn high_watermarks(c: &BaseConsumer, topic: &str) -> Result<i64> {
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let Some(t) = md.topics().first() else {
        return Ok(0);
    };
    let mut sum = 0;
    for p in t.partitions() {
        sum += c
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))?
            .1;
    }
    Ok(sum)
}

fn watch(brokers: &str, topic: &str, records: i64, timeout: Duration) -> Result<()> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let start = Instant::now();
    let base = high_watermarks(&c, topic)?;
    let mut first: Option<(Instant, i64)> = None;
    loop {
        let n = high_watermarks(&c, topic)? - base;
        if n > 0 && first.is_none() {
            first = Some((Instant::now(), n));
        }
        if n >= records {
            let (t0, n0) = first.unwrap_or((start, 0));
            let s = t0.elapsed().as_secs_f64();
            println!(
                "{}",
                json!({ "records": n, "seconds": s, "rate": (n - n0) as f64 / s,
                        "since_start": start.elapsed().as_secs_f64() })
            );
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("{topic} holds {n} of {records} records after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[allow(clippy::too_many_arguments)]
fn latency(
    brokers: &str,
    input: &str,
    out: &str,
    rate: u64,
    seconds: u64,
    warmup: u64,
    field: &str,
    features: usize,
) -> Result<()> {
    // Read the output from its current end, partition by partition (no group to join).
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "perf-latency-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    let md = reader.fetch_metadata(Some(out), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for p in md.topics().first().context("no output topic")?.partitions() {
        let high = reader
            .fetch_watermarks(out, p.id(), Duration::from_secs(10))?
            .1;
        tpl.add_partition_offset(out, p.id(), Offset::Offset(high))?;
    }
    reader.assign(&tpl)?;

    let p = producer(brokers)?;
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let counted_from = now_us() + warmup * 1_000_000;
    let total = rate * seconds;
    let mut buf = String::new();
    let mut lat: Vec<f64> = Vec::new();
    let mut sent_counted = 0u64;
    let mut next = start;
    let mut i = 0u64;
    while i < total {
        let now = Instant::now();
        if now >= next {
            let ts = now_us();
            record(i as usize, features, 100, ts, &mut buf);
            send(&p, input, key_of(&buf).as_bytes(), buf.as_bytes())?;
            if ts >= counted_from {
                sent_counted += 1;
            }
            i += 1;
            next += interval;
        } else {
            p.poll(Duration::ZERO);
            while let Some(m) = reader.poll(Duration::ZERO) {
                arrived(&m?, field, counted_from, &mut lat)?;
            }
            let wait = next - now;
            if wait > Duration::from_micros(200) {
                std::thread::sleep(wait.min(Duration::from_millis(1)));
            }
        }
    }
    p.flush(Duration::from_secs(30))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while (lat.len() as u64) < sent_counted && Instant::now() < deadline {
        if let Some(m) = reader.poll(Duration::from_millis(50)) {
            arrived(&m?, field, counted_from, &mut lat)?;
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let q = |f: f64| {
        lat.get(((lat.len() as f64 - 1.0) * f).round() as usize)
            .copied()
    };
    let achieved = total as f64 / start.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({ "rate": rate, "sent": sent_counted, "received": lat.len(),
                "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": lat.last(),
                "achieved_rate": achieved })
    );
    Ok(())
}

/// Records the latency of an output message whose input was sent after `counted_from`.
fn arrived(m: &impl Message, field: &str, counted_from: u64, lat: &mut Vec<f64>) -> Result<()> {
    let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or(b"null"))?;
    if let Some(ts) = v.get(field).and_then(|t| t.as_f64())
        && ts as u64 >= counted_from
    {
        lat.push((now_us() as f64 - ts) / 1000.0);
    }
    Ok(())
}

fn kernel(store: &Path, batches: &[usize], seconds: f64, rows: usize, epochs: usize) -> Result<()> {
    use anomalyd::model::{Detector, store as model_store};
    tch::set_num_threads(1);
    let version = model_store::current(store)?.context("no current model")?;
    let det = model_store::load(store, version, tch::Device::Cpu)?;
    let dim = det.dim();
    let data = |n: usize| -> Vec<f32> {
        (0..n * dim)
            .map(|k| ((k / dim) as f32 * 0.01).sin() * ((k % dim) as f32 + 1.0))
            .collect()
    };
    let mut score = serde_json::Map::new();
    for &b in batches {
        let x = data(b);
        det.score(&x)?;
        let start = Instant::now();
        let mut n = 0usize;
        while start.elapsed().as_secs_f64() < seconds {
            std::hint::black_box(det.score(&x)?);
            n += b;
        }
        score.insert(
            b.to_string(),
            json!(n as f64 / start.elapsed().as_secs_f64()),
        );
    }
    let mut train = serde_json::Value::Null;
    if rows > 0 {
        let meta = model_store::read_meta(store, version)?;
        let mut spec = meta.spec.clone();
        spec.epochs = epochs;
        spec.min_steps = 0;
        let x = data(rows);
        let start = Instant::now();
        Detector::train(
            &x,
            meta.features.clone(),
            &spec,
            anomalyd::config::ThresholdSpec::Quantile { quantile: 0.99 },
            1,
            tch::Device::Cpu,
        )?;
        train = json!((rows * epochs) as f64 / start.elapsed().as_secs_f64());
    }
    println!(
        "{}",
        json!({ "score_rows_per_s": score, "train_rows_per_s": train, "dim": dim })
    );
    Ok(())
}
