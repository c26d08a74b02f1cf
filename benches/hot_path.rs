//! The hot path, per record: decode a 32-feature JSON record, score a batch with the
//! autoencoder, encode the score messages, and the likelihood update when it decides. Run: `cargo bench --bench hot_path`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use anomalyd::config::{InputShape, InputSpec, ModelSpec, ThresholdSpec};
use anomalyd::model::Detector;
use anomalyd::model::discord::DiscordParams;
use anomalyd::model::likelihood::{Keyed, LikelihoodParams};
use anomalyd::pipeline::decode::Decoder;
use anomalyd::pipeline::output::{encode, score_message};
use anomalyd::pipeline::{Meta, Scored, Timestamp};

const DIM: usize = 32;
const BATCH: usize = 4096;

fn names() -> Vec<String> {
    (0..DIM).map(|i| format!("metric_{i:02}")).collect()
}

fn record(i: usize) -> Vec<u8> {
    let mut s = format!(
        "{{\"host\":\"node-{}\",\"ts\":{},",
        i % 100,
        1_700_000_000_000u64 + i as u64
    );
    for (j, n) in names().iter().enumerate() {
        s.push_str(&format!(
            "\"{n}\":{:.4},",
            ((i * 31 + j * 7) % 1000) as f64 / 10.0
        ));
    }
    s.push_str("\"note\":\"ignored\"}");
    s.into_bytes()
}

fn rows(n: usize) -> Vec<f32> {
    (0..n * DIM)
        .map(|k| ((k / DIM) as f32 * 0.01).sin() * ((k % DIM) as f32 + 1.0))
        .collect()
}

fn bench(c: &mut Criterion) {
    let spec = InputSpec {
        shape: InputShape::Fields { names: names() },
        key_field: Some("host".into()),
        timestamp_field: Some("ts".into()),
    };
    let decoder = Decoder::new(&spec);
    let records: Vec<Vec<u8>> = (0..1024).map(record).collect();

    let mut g = c.benchmark_group("hot_path");
    g.throughput(Throughput::Elements(records.len() as u64));
    g.bench_function("decode_json_32_features", |b| {
        b.iter(|| {
            for r in &records {
                black_box(decoder.decode(black_box(r)).expect("valid"));
            }
        })
    });

    tch::set_num_threads(1);
    let mut raw = anomalyd::config::load_raw(None).expect("defaults");
    raw.input.features = names();
    raw.model.hidden = vec![64, 8];
    raw.model.epochs = 2;
    let model: ModelSpec = anomalyd::config::Settings::validate(raw)
        .expect("valid")
        .model;
    let det = Detector::train(
        &rows(2048),
        names(),
        &model,
        ThresholdSpec::Quantile { quantile: 0.99 },
        1,
        tch::Device::Cpu,
    )
    .expect("train");
    let batch = rows(BATCH);
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("score_batch_4096x32_1_thread", |b| {
        b.iter(|| black_box(det.score(black_box(&batch)).expect("score")))
    });

    let out = det.score(&batch).expect("score");
    let scored = Scored {
        metas: (0..BATCH)
            .map(|i| Meta {
                partition: 0,
                offset: i as i64,
                key: Some(format!("node-{}", i % 100).into()),
                timestamp: Timestamp::Number(1.7e12 + i as f64),
            })
            .collect(),
        thresholds: vec![det.threshold(); BATCH],
        anomalies: out.scores.iter().map(|&s| s > det.threshold()).collect(),
        normalized: out
            .scores
            .iter()
            .map(|&s| det.scale().normalize(s, det.threshold()))
            .collect(),
        scores: out.scores,
        likelihood: Vec::new(),
        discord: Vec::new(),
        model_version: 1,
        explanations: Vec::new(),
        features: batch.clone(),
    };
    let feature_names = names();
    let mut buf = Vec::with_capacity(512);
    g.bench_function("encode_score_messages", |b| {
        b.iter(|| {
            for i in 0..BATCH {
                encode(&score_message(&scored, i, None, &feature_names), &mut buf);
                black_box(&buf);
            }
        })
    });

    // threshold.kind = "likelihood": one update per record, 100 keys interleaved, past the
    // warm-up (the re-estimate every 100 records is included in the average). Fed the
    // score, and fed the discord of a 16-value window, or of a 32-value one in segments of
    // 2 (memory 2000, full).
    let keys: Vec<String> = (0..100).map(|k| format!("node-{k}")).collect();
    let series: Vec<f32> = (0..5032)
        .map(|i| (i as f32 * 0.37).sin() + (i % 11) as f32 * 0.1)
        .collect();
    let discord = |segment| {
        Some(DiscordParams {
            memory: 2000,
            segment,
        })
    };
    for (name, discord, w) in [
        ("likelihood_update_100_keys", None, 16),
        ("likelihood_discord_w16_m2000_100_keys", discord(1), 16),
        ("likelihood_discord_w32_s2_m2000_100_keys", discord(2), 32),
    ] {
        let window = |i: usize| {
            let j = i % 5000;
            &series[j..j + w]
        };
        let params = LikelihoodParams {
            discord,
            ..LikelihoodParams::default()
        };
        let mut keyed = Keyed::new(params, 1000);
        let mut i = 0usize;
        let update = |keyed: &mut Keyed, i: usize| {
            let score = 0.1 + (i % 7) as f64 * 0.01;
            keyed.update(Some(&keys[i % 100]), score, window(i / 100), Some(1.0))
        };
        for _ in 0..100 * 2100 {
            update(&mut keyed, i);
            i += 1;
        }
        g.throughput(Throughput::Elements(BATCH as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    black_box(update(&mut keyed, i));
                    i += 1;
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
