//! Result rows of the recall runner and the baselines script, and their outputs: CSV, JSON
//! Lines, a Markdown summary and a recall-vs-QPS chart (SVG and PNG) of each algorithm's Pareto
//! frontier.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

/// One measured configuration. The CSV columns are these fields, in this order; the Python
/// baselines script writes the same schema.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub dataset: String,
    pub algorithm: String,
    pub params: String,
    pub k: usize,
    pub recall: f64,
    pub recall_1_at_k: f64,
    pub qps: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub build_s: f64,
    pub index_bytes: u64,
    pub rss_delta_bytes: Option<i64>,
    pub threads: usize,
    pub mode: String,
    pub cpu: String,
    pub isa: String,
    pub queries: usize,
    pub runs: usize,
    /// Filtered runs (`recall --filter-selectivity`): the fraction of points the filter passes
    /// (1 for the unfiltered reference run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_selectivity: Option<f64>,
    /// Filtered runs: `keyword`, `range`, or `none` for the unfiltered reference run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_kind: Option<String>,
    /// Gyre's index kind: `flat` or `graph` (none for the exact oracle and older rows).
    #[serde(default)]
    pub index: Option<String>,
    /// Graph runs: the search effort.
    #[serde(default)]
    pub ef: Option<usize>,
    /// Graph runs: bytes a graph search keeps in memory per vector (neighbour lists, the
    /// codes' records, ids); the rerank copies are read for the final candidates only.
    #[serde(default)]
    pub resident_bytes_per_vector: Option<f64>,
}

pub fn write_csv(path: &Path, rows: &[Row]) -> Result<(), String> {
    let mut w = csv::Writer::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for r in rows {
        w.serialize(r)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    w.flush().map_err(|e| format!("{}: {e}", path.display()))
}

pub fn read_csv(path: &Path) -> Result<Vec<Row>, String> {
    let mut r = csv::Reader::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    r.deserialize()
        .collect::<Result<Vec<Row>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))
}

pub fn write_jsonl(path: &Path, rows: &[Row]) -> Result<(), String> {
    let text: String = rows
        .iter()
        .map(|r| serde_json::to_string(r).expect("rows serialise") + "\n")
        .collect();
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.3}"))
}

pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::new();
    if let Some(first) = rows.first() {
        s += &format!(
            "# Recall vs QPS: {} (k = {}, {} queries)\n\nCPU: {}\n\n",
            first.dataset, first.k, first.queries, first.cpu
        );
    }
    s += "| algorithm | params | threads | mode | recall | recall@1@k | QPS | p50 ms | p99 ms | build s | index MB |\n";
    s += "|---|---|---|---|---|---|---|---|---|---|---|\n";
    for r in rows {
        s += &format!(
            "| {} | {} | {} | {} | {:.4} | {:.4} | {:.0} | {} | {} | {:.2} | {:.1} |\n",
            r.algorithm,
            r.params,
            r.threads,
            r.mode,
            r.recall,
            r.recall_1_at_k,
            r.qps,
            opt(r.p50_ms),
            opt(r.p99_ms),
            r.build_s,
            r.index_bytes as f64 / 1e6
        );
    }
    s
}

/// The points of `pts` (recall, qps) not dominated by another (higher recall and higher QPS),
/// by increasing recall.
fn pareto(mut pts: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    pts.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.total_cmp(&a.1)));
    let mut out: Vec<(f64, f64)> = Vec::new();
    for p in pts {
        if out.last().is_none_or(|l| p.1 > l.1) {
            out.push(p);
        }
    }
    out.reverse();
    out
}

/// Draws the recall-vs-QPS chart into `stem.svg` and `stem.png`. Returns the files written, or
/// none and a note when no font is available.
pub fn chart(stem: &Path, rows: &[Row]) -> Result<(Vec<PathBuf>, Option<String>), String> {
    // Text is laid out with a TrueType font for both backends.
    if load_font().is_none() {
        return Ok((
            Vec::new(),
            Some("charts skipped: no TrueType font found (install fonts-dejavu-core); CSV, JSON Lines and Markdown are complete".into()),
        ));
    }
    let svg = stem.with_extension("svg");
    draw(SVGBackend::new(&svg, (1000, 700)).into_drawing_area(), rows)
        .map_err(|e| format!("{}: {e}", svg.display()))?;
    let png = stem.with_extension("png");
    draw(
        BitMapBackend::new(&png, (1000, 700)).into_drawing_area(),
        rows,
    )
    .map_err(|e| format!("{}: {e}", png.display()))?;
    Ok((vec![svg, png], None))
}

/// Registers a system sans-serif font for bitmap text, once.
fn load_font() -> Option<()> {
    static LOADED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *LOADED.get_or_init(|| {
        let candidates = [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/Library/Fonts/Arial.ttf",
        ];
        candidates.iter().any(|p| {
            std::fs::read(p).ok().is_some_and(|bytes| {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
        })
    });
    ok.then_some(())
}

fn draw<DB: DrawingBackend>(
    area: DrawingArea<DB, plotters::coord::Shift>,
    rows: &[Row],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let err = |e: &dyn std::fmt::Display| e.to_string();
    area.fill(&WHITE).map_err(|e| err(&e))?;
    let mut groups: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.qps > 0.0) {
        groups
            .entry(format!("{} ({}, {}t)", r.algorithm, r.mode, r.threads))
            .or_default()
            .push((r.recall, r.qps));
    }
    let (qmin, qmax) = rows
        .iter()
        .filter(|r| r.qps > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), r| {
            (lo.min(r.qps), hi.max(r.qps))
        });
    let (qmin, qmax) = if qmin.is_finite() {
        (qmin / 1.5, qmax * 1.5)
    } else {
        (1.0, 10.0)
    };
    let rmin = rows
        .iter()
        .map(|r| r.recall)
        .fold(1.0f64, f64::min)
        .clamp(0.0, 0.95)
        - 0.02;
    let title = rows.first().map_or("recall vs QPS".into(), |r| {
        format!("{}: recall@{} vs queries/s", r.dataset, r.k)
    });
    let mut chart = ChartBuilder::on(&area)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(rmin.max(0.0)..1.005f64, (qmin..qmax).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(format!("recall@{}", rows.first().map_or(10, |r| r.k)))
        .y_desc("queries per second (log)")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (label, pts)) in groups.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let front = pareto(pts.clone());
        chart
            .draw_series(LineSeries::new(front, color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerLeft)
        .draw()
        .map_err(|e| err(&e))?;
    area.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pareto_keeps_only_undominated_points() {
        let f = pareto(vec![
            (0.5, 100.0),
            (0.9, 50.0),
            (0.8, 40.0),
            (0.95, 10.0),
            (0.6, 120.0),
        ]);
        assert_eq!(f, vec![(0.6, 120.0), (0.9, 50.0), (0.95, 10.0)]);
    }
}
