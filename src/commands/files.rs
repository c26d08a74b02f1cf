//! Records from files for the offline commands (`score`, `train`, `eval`): JSON lines or
//! CSV with a header, decoded by the same rules as the daemon's Kafka records.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use crate::cli::InputFormat;
use crate::config::{ConfigError, InputShape, Settings};
use crate::error::AppError;
use crate::error::PipelineError;
use crate::model::{ModelError, device};
use crate::pipeline::Timestamp;
use crate::pipeline::decode::{DecodeError, Decoded, Decoder};
use crate::pipeline::shaper::Shaper;

/// One input record: its 0-based index, what it decodes to, and its label when asked for.
#[derive(Debug)]
pub struct Row {
    pub index: u64,
    pub decoded: Result<Decoded, DecodeError>,
    pub label: Option<bool>,
}

/// Column positions of the configured fields in a CSV header.
struct CsvColumns {
    values: Vec<usize>,
    key: Option<usize>,
    timestamp: Option<usize>,
    label: Option<usize>,
}

fn csv_columns(
    settings: &Settings,
    header: &csv::StringRecord,
    label: Option<&str>,
) -> Result<CsvColumns, AppError> {
    let find = |name: &str| header.iter().position(|h| h.trim() == name);
    let names: Vec<String> = match &settings.input.shape {
        InputShape::Fields { names } => names.clone(),
        InputShape::Window { field, .. } => vec![field.clone()],
        InputShape::Array { .. } => {
            return Err(ConfigError::invalid(
                "input.array_field",
                "array fields need JSON input, not CSV",
            )
            .into());
        }
    };
    let values = names
        .iter()
        .map(|n| {
            find(n).ok_or_else(|| {
                let found: Vec<&str> = header.iter().map(str::trim).collect();
                ConfigError::invalid(
                    "input.features",
                    format!("the CSV has no column `{n}` (its columns: {found:?})"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let label = match label {
        Some(l) => Some(find(l).ok_or_else(|| {
            AppError::Io(io::Error::other(format!(
                "the CSV has no label column `{l}`"
            )))
        })?),
        None => None,
    };
    Ok(CsvColumns {
        values,
        key: settings.input.key_field.as_deref().and_then(find),
        timestamp: settings.input.timestamp_field.as_deref().and_then(find),
        label,
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

/// Reads a label: 1/true/yes/anomaly/anomalous/outlier are anomalies; anything else is not.
pub fn parse_label(text: &str) -> bool {
    let t = text.trim().to_ascii_lowercase();
    matches!(
        t.as_str(),
        "1" | "1.0" | "true" | "yes" | "anomaly" | "anomalous" | "outlier"
    )
}

fn json_label(line: &str, field: &str) -> Option<bool> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    Some(match v.get(field)? {
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        serde_json::Value::String(s) => parse_label(s),
        _ => false,
    })
}

/// The delimiter of a CSV file from its header line: whichever of `,` `;` tab `|` occurs
/// most (comma on a tie or none), so semicolon-separated exports (SKAB, Excel in many
/// locales) read as they are.
fn sniff_delimiter(header: &str) -> u8 {
    [b',', b';', b'\t', b'|']
        .into_iter()
        .map(|d| (header.bytes().filter(|&b| b == d).count(), d))
        .fold((0, b','), |best, c| if c.0 > best.0 { c } else { best })
        .1
}

/// Whether `path` is read as CSV.
pub fn is_csv(path: &Path, format: InputFormat) -> bool {
    match format {
        InputFormat::Csv => true,
        InputFormat::Jsonl => false,
        InputFormat::Auto => path.extension().is_some_and(|e| e == "csv"),
    }
}

/// Streams the records of `path` (`-` = stdin) to `each`, in order.
pub fn read(
    settings: &Settings,
    path: &Path,
    format: InputFormat,
    label_column: Option<&str>,
    mut each: impl FnMut(Row) -> Result<(), AppError>,
) -> Result<(), AppError> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(BufReader::new(io::stdin().lock()))
    } else {
        let file = File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Box::new(BufReader::new(file))
    };
    let decoder = Decoder::new(&settings.input);
    if is_csv(path, format) {
        let mut reader = reader;
        let mut first = String::new();
        reader.read_line(&mut first)?;
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(true)
            .delimiter(sniff_delimiter(&first))
            .from_reader(io::Cursor::new(first).chain(reader));
        let header = rdr.headers().map_err(io::Error::other)?.clone();
        let cols = csv_columns(settings, &header, label_column)?;
        for (index, row) in rdr.records().enumerate() {
            let row = row.map_err(io::Error::other)?;
            each(Row {
                index: index as u64,
                decoded: decode_csv(&decoder, &cols, &row),
                label: cols.label.and_then(|c| row.get(c)).map(parse_label),
            })?;
        }
    } else {
        let mut index = 0u64;
        for line in reader.lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            each(Row {
                index,
                decoded: decoder.decode(line.as_bytes()),
                label: label_column.map(|l| json_label(&line, l).unwrap_or(false)),
            })?;
            index += 1;
        }
    }
    Ok(())
}

pub(crate) fn model_err(e: ModelError) -> AppError {
    PipelineError::from(e).into()
}

pub(crate) fn other(msg: String) -> AppError {
    AppError::Io(std::io::Error::other(msg))
}

/// A file's decodable records as model vectors, in order.
pub(crate) struct Loaded {
    pub(crate) vectors: Vec<f32>,
    pub(crate) labels: Vec<Option<bool>>,
    /// The first input value of each record (plots).
    pub(crate) values: Vec<f32>,
    pub(crate) timestamps: Vec<Timestamp>,
    pub(crate) undecodable: usize,
}

impl Loaded {
    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }
}

pub(crate) fn load(
    settings: &Settings,
    path: &Path,
    format: InputFormat,
    label: Option<&str>,
) -> Result<Loaded, AppError> {
    let mut shaper = Shaper::new(&settings.input);
    let mut out = Loaded {
        vectors: Vec::new(),
        labels: Vec::new(),
        values: Vec::new(),
        timestamps: Vec::new(),
        undecodable: 0,
    };
    read(settings, path, format, label, |row| {
        match row.decoded {
            Ok(d) => {
                out.values
                    .push(d.values.first().copied().unwrap_or_default());
                out.vectors.extend(shaper.shape(d.key.as_deref(), d.values));
                out.labels.push(row.label);
                out.timestamps.push(d.timestamp);
            }
            Err(_) => out.undecodable += 1,
        }
        Ok(())
    })?;
    Ok(out)
}

pub(crate) fn select_device(settings: &Settings) -> Result<tch::Device, AppError> {
    let d = device::select(settings.runtime.device).map_err(model_err)?;
    device::set_threads(settings.runtime.threads);
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiter_is_sniffed_from_the_header() {
        assert_eq!(sniff_delimiter("timestamp,value\n"), b',');
        assert_eq!(
            sniff_delimiter("datetime;Accelerometer1RMS;Current\n"),
            b';'
        );
        assert_eq!(sniff_delimiter("a\tb\tc\n"), b'\t');
        assert_eq!(sniff_delimiter("value\n"), b',');
    }

    #[test]
    fn labels() {
        for t in ["1", "true", "anomaly", " Outlier "] {
            assert!(parse_label(t), "{t}");
        }
        for t in ["0", "false", "nominal", "normal", ""] {
            assert!(!parse_label(t), "{t}");
        }
        assert_eq!(json_label(r#"{"y": 1}"#, "y"), Some(true));
        assert_eq!(json_label(r#"{"y": "nominal"}"#, "y"), Some(false));
    }
}
