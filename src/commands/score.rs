//! `anomalyd score`: the daemon's decode -> model -> threshold path over a file or stdin,
//! writing one JSON score line per record (anomalies carry `top_features`). Records that
//! cannot be decoded are reported on stderr with their reason and skipped.

use std::fs::File;
use std::io::{self, BufWriter, Write};

use super::files;
use crate::cli::ScoreArgs;
use crate::config::Settings;
use crate::error::{AppError, PipelineError};
use crate::model::{ModelError, device};
use crate::pipeline::output::{encode, score_message};
use crate::pipeline::score::{Scorer, ScorerMetrics, ScorerSettings};
use crate::pipeline::shaper::Shaper;
use crate::pipeline::{Batch, Meta, Record, Scored};
use crate::train::trainer::FitSettings;

#[derive(Debug, Default)]
struct Summary {
    records: u64,
    scored: u64,
    anomalies: u64,
    undecodable: u64,
    unscorable: u64,
}

struct Writer<W: Write> {
    out: W,
    buf: Vec<u8>,
    names: Vec<String>,
    summary: Summary,
}

impl<W: Write> Writer<W> {
    fn write(&mut self, batches: Vec<Scored>) -> io::Result<()> {
        for b in batches {
            for i in 0..b.metas.len() {
                if !b.is_scored(i) {
                    // As the daemon dead-letters it: no score line with a non-finite score.
                    self.summary.unscorable += 1;
                    eprintln!(
                        "record {}: non_finite_score: the model scored it {}",
                        b.metas[i].offset, b.scores[i]
                    );
                    continue;
                }
                let msg = score_message(&b, i, b.explanation(i), &self.names);
                encode(&msg, &mut self.buf);
                self.buf.push(b'\n');
                self.out.write_all(&self.buf)?;
                self.summary.scored += 1;
                self.summary.anomalies += u64::from(b.is_anomaly(i));
            }
        }
        Ok(())
    }
}

pub fn run(settings: &Settings, args: &ScoreArgs) -> Result<(), AppError> {
    let device = device::select(settings.runtime.device).map_err(PipelineError::from)?;
    device::set_threads(settings.runtime.threads);
    let (metrics, train_metrics) = ScorerMetrics::unregistered();
    let features = settings.input.feature_names();
    let mut scorer = Scorer::new(
        ScorerSettings {
            fit: FitSettings {
                features: features.clone(),
                model: settings.model.clone(),
                threshold: settings.threshold,
                device,
                store_dir: settings.runtime.store_dir.clone(),
                keep: settings.runtime.keep,
            },
            top_features: settings.top_features,
            publish: None,
            value_feature: settings.input.value_feature(),
        },
        None,
        metrics,
        train_metrics,
    )
    .map_err(PipelineError::from)?;

    let out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(BufWriter::new(File::create(p)?)),
        None => Box::new(BufWriter::new(io::stdout().lock())),
    };
    let mut writer = Writer {
        out,
        buf: Vec::with_capacity(512),
        names: features,
        summary: Summary::default(),
    };

    let mut shaper = Shaper::new(&settings.input);
    let max = settings.batch.max_records;
    let dim = settings.input.dim();
    let mut batch = Batch::with_capacity(max, dim);
    let started = std::time::Instant::now();
    files::read(settings, &args.input, args.format, None, |row| {
        writer.summary.records += 1;
        match row.decoded {
            Ok(d) => {
                let features = shaper.shape(d.key.as_deref(), d.values);
                batch.push(Record {
                    meta: Meta {
                        partition: 0,
                        offset: row.index as i64,
                        key: d.key,
                        timestamp: d.timestamp,
                    },
                    features,
                });
                if batch.len() >= max {
                    let full = std::mem::replace(&mut batch, Batch::with_capacity(max, dim));
                    writer.write(scorer.push(full).map_err(to_app)?)?;
                }
            }
            Err(e) => {
                writer.summary.undecodable += 1;
                eprintln!("record {}: {e}", row.index);
            }
        }
        Ok(())
    })?;
    let last = std::mem::take(&mut batch);
    let mut rest = if last.is_empty() {
        Vec::new()
    } else {
        scorer.push(last).map_err(to_app)?
    };
    rest.extend(scorer.finish().map_err(to_app)?);
    writer.write(rest)?;
    writer.out.flush()?;
    let seconds = started.elapsed().as_secs_f64();
    let s = &writer.summary;
    let threshold = scorer.detector().map(|d| d.threshold());
    eprintln!(
        "anomalyd score: {} records, {} scored, {} anomalies, {} undecodable, {} unscorable, \
         threshold {:?}; {seconds:.3} s reading, scoring and writing \
         ({:.0} records/s)",
        s.records,
        s.scored,
        s.anomalies,
        s.undecodable,
        s.unscorable,
        threshold,
        s.records as f64 / seconds.max(f64::EPSILON)
    );
    Ok(())
}

fn to_app(e: ModelError) -> AppError {
    PipelineError::from(e).into()
}
