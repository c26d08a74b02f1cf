//! PNG plot of an evaluated series: the values with the labelled anomaly windows shaded,
//! and the score against the threshold with the alerts marked.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

/// DejaVu Sans from Debian's fonts-dejavu-core; without it the plot has no text.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn font_available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        std::fs::read(FONT).is_ok_and(|bytes| {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        })
    })
}

pub struct PlotData<'a> {
    pub title: &'a str,
    pub values: &'a [f32],
    pub scores: &'a [f32],
    pub thresholds: &'a [f32],
    pub anomalies: &'a [bool],
    /// Labelled anomaly windows as inclusive index ranges.
    pub windows: &'a [(usize, usize)],
    /// Records before this index trained the model.
    pub train_rows: usize,
}

fn range(v: impl Iterator<Item = f32>) -> (f32, f32) {
    let (lo, hi) = v
        .filter(|x| x.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
    if lo > hi {
        (0.0, 1.0)
    } else if hi - lo < 1e-9 {
        (lo - 1.0, hi + 1.0)
    } else {
        let pad = (hi - lo) * 0.05;
        (lo - pad, hi + pad)
    }
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

pub fn write_png(path: &Path, d: &PlotData) -> PlotResult {
    let text = font_available();
    let root = BitMapBackend::new(path, (1400, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(350);
    let n = d.values.len().max(1) as f64;

    let (lo, hi) = range(d.values.iter().copied());
    let mut builder = ChartBuilder::on(&top);
    builder
        .margin(10)
        .x_label_area_size(if text { 25 } else { 0 })
        .y_label_area_size(if text { 60 } else { 0 });
    if text {
        builder.caption(d.title, ("sans-serif", 20));
    }
    let mut chart = builder.build_cartesian_2d(0f64..n, lo as f64..hi as f64)?;
    let mut mesh = chart.configure_mesh();
    mesh.disable_mesh();
    if !text {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw()?;
    for &(s, e) in d.windows {
        chart.draw_series(std::iter::once(Rectangle::new(
            [(s as f64, lo as f64), (e as f64 + 1.0, hi as f64)],
            RGBColor(255, 200, 200).filled(),
        )))?;
    }
    chart.draw_series(std::iter::once(Rectangle::new(
        [(0.0, lo as f64), (d.train_rows as f64, hi as f64)],
        RGBColor(225, 225, 240).filled(),
    )))?;
    chart.draw_series(LineSeries::new(
        d.values
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as f64, v as f64)),
        &BLUE,
    ))?;

    let (slo, shi) = range(d.scores.iter().chain(d.thresholds).copied());
    let mut builder = ChartBuilder::on(&bottom);
    builder
        .margin(10)
        .x_label_area_size(if text { 25 } else { 0 })
        .y_label_area_size(if text { 60 } else { 0 });
    let mut chart = builder.build_cartesian_2d(0f64..n, slo as f64..shi as f64)?;
    let mut mesh = chart.configure_mesh();
    mesh.disable_mesh();
    if !text {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw()?;
    chart.draw_series(LineSeries::new(
        d.scores
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as f64, v as f64)),
        &BLACK,
    ))?;
    chart.draw_series(LineSeries::new(
        d.thresholds
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as f64, v as f64)),
        &RED,
    ))?;
    chart.draw_series(
        d.anomalies
            .iter()
            .enumerate()
            .filter(|(_, a)| **a)
            .map(|(i, _)| Circle::new((i as f64, d.scores[i] as f64), 3, RED.filled())),
    )?;
    root.present()?;
    Ok(())
}
