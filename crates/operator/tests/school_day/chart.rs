//! The picture of a day: one row per class, learning on at the left and off at the right; in
//! each panel the replicas needed (grey), planned (blue) and Ready (green) over time, with
//! `start - warmup` (orange) and the start (red) marked, so a person sees at a glance whether
//! capacity arrived before each bell.

use chrono::{DateTime, Utc};
use plotters::prelude::*;

use crate::measure::{DeploySample, Milestones, StatusSample};

/// One panel's data.
pub struct Panel<'a> {
    pub title: String,
    pub milestones: Option<Milestones>,
    pub deploys: &'a [DeploySample],
    pub statuses: &'a [StatusSample],
}

const ORANGE: RGBColor = RGBColor(230, 140, 0);
const GREEN_LINE: RGBColor = RGBColor(0, 150, 60);
const GREY: RGBColor = RGBColor(150, 150, 150);

/// A step function as the points of its line.
fn steps(points: impl Iterator<Item = (f64, f64)>, until: f64) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (x, y) in points {
        if let Some(&(_, last)) = out.last() {
            out.push((x, last));
        }
        out.push((x, y));
    }
    if let Some(&(_, last)) = out.last() {
        out.push((until, last));
    }
    out
}

/// Draws `rows` (each a pair of panels) into an SVG at `path`; times are seconds after `zero`.
pub fn draw(
    path: &std::path::Path,
    zero: DateTime<Utc>,
    until: DateTime<Utc>,
    caption: &str,
    rows: &[[Panel<'_>; 2]],
) -> Result<(), Box<dyn std::error::Error>> {
    let secs = |t: DateTime<Utc>| (t - zero).num_milliseconds() as f64 / 1000.0;
    let end = secs(until);
    let height = 40 + 110 * rows.len() as u32;
    let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, body) = root.split_vertically(40);
    top.draw(&Text::new(
        caption.to_owned(),
        (10, 12),
        ("sans-serif", 16).into_font(),
    ))?;
    let areas = body.split_evenly((rows.len(), 2));
    for (area, panel) in areas.iter().zip(rows.iter().flatten()) {
        let ymax = panel
            .deploys
            .iter()
            .map(|d| d.replicas.max(d.ready))
            .chain(panel.statuses.iter().map(|s| s.planned.max(s.needed)))
            .max()
            .unwrap_or(1)
            .max(1) as f64
            + 1.0;
        let (x0, x1) = match panel.milestones {
            Some(m) => (
                (secs(m.scale_up) - 60.0).max(0.0),
                (secs(m.drain_from) + 60.0).min(end),
            ),
            None => (0.0, end),
        };
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 12))
            .margin(4)
            .x_label_area_size(16)
            .y_label_area_size(26)
            .build_cartesian_2d(x0..x1.max(x0 + 1.0), 0.0..ymax)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(6)
            .y_labels(4)
            .label_style(("sans-serif", 9))
            .x_label_formatter(&|x| format!("{x:.0}s"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()?;
        if let Some(m) = panel.milestones {
            for (t, color) in [(m.ready_by, ORANGE), (m.start, RED)] {
                let x = secs(t);
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(x, 0.0), (x, ymax)],
                    color.stroke_width(1),
                )))?;
            }
        }
        let status = |f: fn(&StatusSample) -> u32| {
            steps(
                panel.statuses.iter().map(|s| (secs(s.t), f64::from(f(s)))),
                x1,
            )
        };
        chart.draw_series(LineSeries::new(status(|s| s.needed), GREY.stroke_width(3)))?;
        chart.draw_series(LineSeries::new(status(|s| s.planned), BLUE.stroke_width(1)))?;
        chart.draw_series(LineSeries::new(
            steps(
                panel
                    .deploys
                    .iter()
                    .map(|d| (secs(d.t), f64::from(d.ready))),
                x1,
            ),
            GREEN_LINE.stroke_width(2),
        ))?;
    }
    root.present()?;
    Ok(())
}
