//! `anomalyd score`: the daemon's decode -> model -> threshold path over a file or stdin,
//! writing one JSON score line per record (anomalies carry `top_features`). Records that
//! cannot be decoded are reported on stderr with their reason and skipped.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::sync::Arc;

use crate::cli::{InputFormat, ScoreArgs};
use crate::config::{ConfigError, InputShape, Settings};
use crate::error::{AppError, PipelineError};
use crate::model::{ModelError, device};
use crate::pipeline::decode::{DecodeError, Decoded, Decoder};
use crate::pipeline::output::{encode, score_message};
use crate::pipeline::score::{Scorer, ScorerSettings};
use crate::pipeline::window::Shaper;
use crate::pipeline::{Batch, Meta, Record, Scored, Timestamp};
use crate::telemetry::Metrics;

#[derive(Debug, Default)]
struct Summary {
    records: u64,
    scored: u64,
    anomalies: u64,
    undecodable: u64,
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

/// Column positions of the configured fields in a CSV header.
struct CsvColumns {
    values: Vec<usize>,
    key: Option<usize>,
    timestamp: Option<usize>,
}

fn csv_columns(settings: &Settings, header: &csv::StringRecord) -> Result<CsvColumns, ConfigError> {
    let find = |name: &str| header.iter().position(|h| h.trim() == name);
    let names: Vec<String> = match &settings.input.shape {
        InputShape::Fields { names } => names.clone(),
        InputShape::Window { field, .. } => vec![field.clone()],
        InputShape::Array { .. } => {
            return Err(ConfigError::invalid(
                "input.array_field",
                "array fields need JSON input, not CSV",
            ));
        }
    };
    let values = names
        .iter()
        .map(|n| {
            find(n).ok_or_else(|| {
                ConfigError::invalid("input.features", format!("CSV has no column `{n}`"))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(CsvColumns {
        values,
        key: settings.input.key_field.as_deref().and_then(find),
        timestamp: settings.input.timestamp_field.as_deref().and_then(find),
    })
}

fn decode_csv(
    decoder: &Decoder,
    cols: &CsvColumns,
    row: &csv::StringRecord,
) -> Result<Decoded, DecodeError> {
    let values = cols
        .values
        .iter()
        .enumerate()
        .map(|(i, &c)| decoder.parse_text_value(i, row.get(c).unwrap_or("")))
        .collect::<Result<_, _>>()?;
    Ok(Decoded {
        key: cols.key.and_then(|c| row.get(c)).map(Into::into),
        timestamp: cols
            .timestamp
            .and_then(|c| row.get(c))
            .map_or(Timestamp::None, |t| Timestamp::Text(t.into())),
        values,
    })
}

pub fn run(settings: &Settings, args: &ScoreArgs) -> Result<(), AppError> {
    let device = device::select(settings.runtime.device).map_err(PipelineError::from)?;
    device::set_threads(settings.runtime.threads);
    let metrics = Arc::new(Metrics::new());
    let features = settings.input.feature_names();
    let mut scorer = Scorer::new(
        ScorerSettings {
            features: features.clone(),
            model: settings.model.clone(),
            threshold: settings.threshold,
            top_features: settings.top_features,
            device,
            store_dir: settings.runtime.store_dir.clone(),
        },
        metrics,
    )
    .map_err(PipelineError::from)?;

    let stdin = args.input.as_os_str() == "-";
    let reader: Box<dyn BufRead> = if stdin {
        Box::new(BufReader::new(io::stdin().lock()))
    } else {
        Box::new(BufReader::new(File::open(&args.input)?))
    };
    let csv = match args.format {
        InputFormat::Csv => true,
        InputFormat::Jsonl => false,
        InputFormat::Auto => args.input.extension().is_some_and(|e| e == "csv"),
    };
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

    let decoder = Decoder::new(&settings.input);
    let mut shaper = Shaper::new(&settings.input);
    let max = settings.batch.max_records;
    let dim = settings.input.dim();
    let mut batch = Batch::with_capacity(max, dim);
    let mut handle = |index: u64,
                      decoded: Result<Decoded, DecodeError>,
                      writer: &mut Writer<_>|
     -> Result<(), AppError> {
        writer.summary.records += 1;
        match decoded {
            Ok(d) => {
                let features = shaper.shape(d.key.as_deref(), d.values);
                batch.push(Record {
                    meta: Meta {
                        partition: 0,
                        offset: index as i64,
                        key: d.key,
                        timestamp: d.timestamp,
                    },
                    features,
                });
                if batch.len() >= max {
                    let full = std::mem::replace(&mut batch, Batch::with_capacity(max, dim));
                    writer.write(scorer.push(full).map_err(PipelineError::from)?)?;
                }
            }
            Err(e) => {
                writer.summary.undecodable += 1;
                eprintln!("record {index}: {e}");
            }
        }
        Ok(())
    };

    if csv {
        let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
        let header = rdr.headers().map_err(io::Error::other)?.clone();
        let cols = csv_columns(settings, &header)?;
        for (index, row) in rdr.records().enumerate() {
            let row = row.map_err(io::Error::other)?;
            handle(index as u64, decode_csv(&decoder, &cols, &row), &mut writer)?;
        }
    } else {
        let mut index = 0u64;
        for line in reader.lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            handle(index, decoder.decode(line.as_bytes()), &mut writer)?;
            index += 1;
        }
    }
    let last = std::mem::take(&mut batch);
    let mut rest = if last.is_empty() {
        Vec::new()
    } else {
        scorer.push(last).map_err(to_app)?
    };
    rest.extend(scorer.finish().map_err(to_app)?);
    writer.write(rest)?;
    writer.out.flush()?;
    let s = &writer.summary;
    let threshold = scorer.detector().map(|d| d.threshold());
    eprintln!(
        "anomalyd score: {} records, {} scored, {} anomalies, {} undecodable, threshold {:?}",
        s.records, s.scored, s.anomalies, s.undecodable, threshold
    );
    Ok(())
}

fn to_app(e: ModelError) -> AppError {
    PipelineError::from(e).into()
}
