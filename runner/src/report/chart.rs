//! Chart geometry for the templates: scales, "nice" ticks and SVG coordinates computed here, drawing left to the
//! template, so users can restyle every chart without touching code.

use serde::Serialize;

/// The drawing's own size; the HTML report scales it to its column (the SVG keeps its aspect ratio).
const WIDTH: f64 = 480.0;
const HEIGHT: f64 = 300.0;
const MARGIN_LEFT: f64 = 64.0;
/// Room for the last x tick's label, or for a right axis's ticks and label.
const MARGIN_RIGHT: f64 = 16.0;
const MARGIN_RIGHT_AXIS: f64 = 56.0;
const MARGIN_TOP: f64 = 28.0;
const MARGIN_BOTTOM: f64 = 64.0;
const LEGEND_ROW: f64 = 16.0;
/// A generous width of one character of the 12 px labels: text placed by it never runs out of the drawing.
const CHAR_WIDTH: f64 = 7.2;

pub const PALETTE: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];

#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub width: f64,
    pub height: f64,
    pub plot: Rect,
    pub x_ticks: Vec<Tick>,
    pub y_ticks: Vec<Tick>,
    /// The scale on the right, for series of another unit.
    pub right: Option<RightScale>,
    pub series: Vec<Series>,
    /// Vertical lines at an x value, such as the plateau.
    pub markers: Vec<Line>,
    /// Horizontal lines at a y value, such as the latency goal.
    pub guides: Vec<Line>,
    /// One entry per series, laid out in rows under the plot.
    pub legend: Vec<LegendEntry>,
    /// The data the chart draws, as a table for screen readers and for copying.
    pub table: DataTable,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rect {
    pub left: f64,
    pub top: f64,
    pub right: f64,
    pub bottom: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    pub position: f64,
    pub label: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RightScale {
    pub label: String,
    /// The colour of its (first) series, so the reader sees which line it measures.
    pub color: String,
    pub ticks: Vec<Tick>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub name: String,
    pub color: String,
    /// SVG polyline points ("x,y x,y"); empty for scatter series.
    pub polyline: String,
    /// Whether to draw each point as a dot.
    pub dots: bool,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    /// Hover text with the data values.
    pub title: String,
    /// Text drawn beside the point, e.g. a configuration's name on a scatter.
    pub annotation: Option<Label>,
    pub highlight: bool,
    /// The 95% interval as an error bar: its top and bottom in SVG coordinates.
    pub bar: Option<(f64, f64)>,
    /// A point no figure is taken from (an invalid step): drawn hollow and grey, left out of the line.
    pub greyed: bool,
}

/// Text placed beside something, on whichever side keeps it inside the drawing.
#[derive(Debug, Clone, Serialize)]
pub struct Label {
    pub text: String,
    pub x: f64,
    pub y: f64,
    /// SVG `text-anchor`: `start` (text to the right of `x`) or `end`.
    pub anchor: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub position: f64,
    pub label: Label,
    pub color: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LegendEntry {
    pub name: String,
    pub color: String,
    /// The swatch's top left corner; the name starts 14 px to its right.
    pub x: f64,
    pub y: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DataTable {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// Data for one series, in data units.
pub struct SeriesData {
    pub name: String,
    pub values: Vec<(f64, f64)>,
    /// Draw a line through the points (false: a scatter).
    pub joined: bool,
    /// Draw a dot at each point (false: a smooth curve, such as a fitted model, left out of the data table).
    pub dots: bool,
    /// Indexes of points drawn emphasised.
    pub highlighted: Vec<usize>,
    /// Hover labels, one per value; defaults to "x, y".
    pub labels: Vec<String>,
    /// Text drawn beside each point, one per value, or none.
    pub annotations: Vec<String>,
    /// Each value's 95% interval (low, high) in data units, where it has one; empty for none.
    pub intervals: Vec<Option<(f64, f64)>>,
    /// Indexes of points no figure is taken from.
    pub greyed: Vec<usize>,
}

impl SeriesData {
    /// A plain line through `values`.
    pub fn line(name: impl Into<String>, values: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            values,
            joined: true,
            dots: true,
            highlighted: Vec::new(),
            labels: Vec::new(),
            annotations: Vec::new(),
            intervals: Vec::new(),
            greyed: Vec::new(),
        }
    }
}

pub struct ChartSpec {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<SeriesData>,
    /// Series of another unit, on a scale of their own: 2-12 users drawn on a 0-800 requests/s scale lie flat.
    pub right_axis: Option<RightAxis>,
    pub markers: Vec<(f64, String)>,
    pub guides: Vec<(f64, String)>,
}

pub struct RightAxis {
    pub label: String,
    pub series: Vec<SeriesData>,
}

/// Tick values 1, 2 or 5 times a power of ten, covering `low..=high` with about `target` ticks.
pub fn nice_ticks(low: f64, high: f64, target: usize) -> Vec<f64> {
    let span = (high - low).max(f64::EPSILON);
    let raw_step = span / target.max(1) as f64;
    let magnitude = 10f64.powf(raw_step.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|factor| factor * magnitude)
        .find(|step| *step >= raw_step)
        .unwrap_or(10.0 * magnitude);
    let first = (low / step).floor() * step;
    let mut ticks = Vec::new();
    let mut value = first;
    while value <= high + step * 1e-9 {
        ticks.push(value);
        value += step;
    }
    if ticks.last().is_some_and(|last| *last < high) {
        ticks.push(value);
    }
    ticks
}

fn format_tick(value: f64) -> String {
    if value.abs() >= 1000.0 && value.fract() == 0.0 {
        format!("{:.0}k", value / 1000.0).replace(".0k", "k")
    } else if value.fract().abs() < 1e-9 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A value for the data table: whole above 100, else three significant digits or so.
fn format_value(value: f64) -> String {
    match value.abs() {
        magnitude if magnitude >= 100.0 || value.fract() == 0.0 => format!("{value:.0}"),
        magnitude if magnitude >= 10.0 => format!("{value:.1}"),
        magnitude if magnitude >= 0.01 => format!("{value:.2}"),
        _ => format!("{value:.3e}"),
    }
}

fn text_width(text: &str) -> f64 {
    text.chars().count() as f64 * CHAR_WIDTH
}

/// `text` beside `x`, `gap` px to its right, or to its left where it would leave the drawing.
fn beside(text: String, x: f64, y: f64, gap: f64) -> Label {
    if x + gap + text_width(&text) > WIDTH - 2.0 {
        Label { text, x: x - gap, y, anchor: "end" }
    } else {
        Label { text, x: x + gap, y, anchor: "start" }
    }
}

/// The y range and its ticks for `series`, from zero: throughput and latency read best from zero.
fn y_scale<'a>(series: impl Iterator<Item = &'a SeriesData> + Clone, guides: &[(f64, String)]) -> Vec<f64> {
    let values = series.clone().flat_map(|series| series.values.iter().map(|(_, y)| *y));
    let highs = series.flat_map(|series| series.intervals.iter().flatten().map(|(_, high)| *high));
    let y_max = values.chain(highs).chain(guides.iter().map(|(y, _)| *y)).fold(f64::MIN, f64::max);
    nice_ticks(0.0, if y_max > 0.0 { y_max } else { 1.0 }, 5)
}

fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

pub fn build(spec: ChartSpec) -> Chart {
    let table = data_table(&spec);
    let ChartSpec { title, x_label, y_label, series: left_series, right_axis, markers, guides } = spec;
    let (right_label, right_series) = right_axis.map_or((None, Vec::new()), |axis| (Some(axis.label), axis.series));
    let all = || left_series.iter().chain(&right_series);
    let (mut x_min, mut x_max) = all()
        .flat_map(|series| series.values.iter().map(|(x, _)| *x))
        .fold((f64::MAX, f64::MIN), |(low, high), x| (low.min(x), high.max(x)));
    x_max = markers.iter().map(|(x, _)| *x).fold(x_max, f64::max);
    if x_min > x_max {
        (x_min, x_max) = (0.0, 1.0);
    }
    let x_ticks_data = nice_ticks(x_min.min(0.0), x_max.max(x_min + 1e-9), 6);
    let y_ticks_data = y_scale(left_series.iter(), &guides);
    let right_ticks_data = right_label.as_ref().map(|_| y_scale(right_series.iter(), &[]));

    let legend_names: Vec<&str> = all().map(|series| series.name.as_str()).collect();
    let legend_rows = legend_layout(&legend_names, MARGIN_LEFT);
    let height = HEIGHT + LEGEND_ROW * (legend_rows.iter().map(|(_, row)| *row).max().unwrap_or(0) as f64);
    let margin_right = if right_label.is_some() { MARGIN_RIGHT_AXIS } else { MARGIN_RIGHT };
    let plot = Rect { left: MARGIN_LEFT, top: MARGIN_TOP, right: WIDTH - margin_right, bottom: HEIGHT - MARGIN_BOTTOM };
    let (x_low, x_high) = (x_ticks_data[0], *x_ticks_data.last().expect("ticks are never empty"));
    let to_x = |x: f64| plot.left + (x - x_low) / (x_high - x_low) * (plot.right - plot.left);
    let to_y = |ticks: &[f64], y: f64| {
        let (low, high) = (ticks[0], *ticks.last().expect("ticks are never empty"));
        plot.bottom - (y - low) / (high - low) * (plot.bottom - plot.top)
    };
    let ticks = |values: &[f64], position: &dyn Fn(f64) -> f64| -> Vec<Tick> {
        values.iter().map(|&value| Tick { position: round(position(value)), label: format_tick(value) }).collect()
    };

    let place = |data: SeriesData, color: String, scale: &[f64]| {
        let y_low = scale[0];
        let points: Vec<Point> = data
            .values
            .iter()
            .enumerate()
            .map(|(index, &(x_data, y_data))| {
                let (x, y) = (round(to_x(x_data)), round(to_y(scale, y_data)));
                Point {
                    x,
                    y,
                    title: data
                        .labels
                        .get(index)
                        .cloned()
                        .unwrap_or_else(|| format!("{}, {}", format_tick(x_data), format_tick(y_data))),
                    annotation: data.annotations.get(index).map(|text| beside(text.clone(), x, y - 6.0, 8.0)),
                    highlight: data.highlighted.contains(&index),
                    bar: data
                        .intervals
                        .get(index)
                        .copied()
                        .flatten()
                        .map(|(low, high)| (round(to_y(scale, high)), round(to_y(scale, low.max(y_low))))),
                    greyed: data.greyed.contains(&index),
                }
            })
            .collect();
        let polyline = if data.joined {
            let used = points.iter().filter(|point| !point.greyed);
            used.map(|point| format!("{},{}", point.x, point.y)).collect::<Vec<_>>().join(" ")
        } else {
            String::new()
        };
        Series { name: data.name, color, polyline, dots: data.dots, points }
    };
    let color = |index: usize| PALETTE[index % PALETTE.len()].to_string();
    let left_count = left_series.len();
    let mut series: Vec<Series> =
        left_series.into_iter().enumerate().map(|(index, data)| place(data, color(index), &y_ticks_data)).collect();
    let right = right_label.zip(right_ticks_data).map(|(label, scale)| {
        series.extend(
            right_series.into_iter().enumerate().map(|(index, data)| place(data, color(left_count + index), &scale)),
        );
        RightScale { label, color: color(left_count), ticks: ticks(&scale, &|y| to_y(&scale, y)) }
    });
    let legend = legend_rows
        .into_iter()
        .zip(&series)
        .map(|((x, row), series)| LegendEntry {
            name: series.name.clone(),
            color: series.color.clone(),
            x,
            y: HEIGHT - 14.0 + LEGEND_ROW * row as f64,
        })
        .collect();

    Chart {
        title,
        x_label,
        y_label,
        width: WIDTH,
        height,
        x_ticks: ticks(&x_ticks_data, &to_x),
        y_ticks: ticks(&y_ticks_data, &|y| to_y(&y_ticks_data, y)),
        right,
        series,
        markers: markers
            .into_iter()
            .map(|(x, label)| {
                let position = round(to_x(x));
                Line { position, label: beside(label, position, plot.top + 10.0, 4.0), color: "#555".to_string() }
            })
            .collect(),
        guides: guides
            .into_iter()
            .map(|(y, text)| {
                let position = round(to_y(&y_ticks_data, y));
                let label = Label { text, x: plot.right - 4.0, y: position - 4.0, anchor: "end" };
                Line { position, label, color: "#b00".to_string() }
            })
            .collect(),
        legend,
        table,
        plot,
    }
}

/// Where each legend entry goes: (x, row), filling a row up to the drawing's width before starting the next.
fn legend_layout(names: &[&str], left: f64) -> Vec<(f64, usize)> {
    let mut placed = Vec::with_capacity(names.len());
    let (mut x, mut row) = (left, 0);
    for name in names {
        let width = 14.0 + text_width(name) + 16.0;
        if x > left && x + width > WIDTH {
            (x, row) = (left, row + 1);
        }
        placed.push((x, row));
        x += width;
    }
    placed
}

/// The chart's data: for lines, a row per x value with a column per series (its 95% interval beside the value, "not
/// used" on invalid steps); for a scatter, a row per point, named by its annotation. Fitted curves are left out.
fn data_table(spec: &ChartSpec) -> DataTable {
    let right = spec.right_axis.iter().flat_map(|axis| axis.series.iter().map(move |series| (series, Some(axis))));
    let measured: Vec<(&SeriesData, Option<&RightAxis>)> =
        spec.series.iter().map(|series| (series, None)).chain(right).filter(|(series, _)| series.dots).collect();
    let cell = |series: &SeriesData, index: usize| {
        let y = series.values[index].1;
        let interval = series.intervals.get(index).copied().flatten();
        let mut text = match interval {
            Some((low, high)) => format!("{} ({}–{})", format_value(y), format_value(low), format_value(high)),
            None => format_value(y),
        };
        if series.greyed.contains(&index) {
            text.push_str(" (not used)");
        }
        text
    };
    if measured.iter().all(|(series, _)| !series.joined) {
        let name = measured.first().map_or_else(String::new, |(series, _)| series.name.clone());
        let rows = measured
            .iter()
            .flat_map(|(series, _)| {
                (0..series.values.len()).map(move |index| {
                    let label = series.annotations.get(index).cloned().unwrap_or_else(|| series.name.clone());
                    vec![label, format_value(series.values[index].0), cell(series, index)]
                })
            })
            .collect();
        return DataTable { headers: vec![name, spec.x_label.clone(), spec.y_label.clone()], rows };
    }
    let mut xs: Vec<f64> = measured.iter().flat_map(|(series, _)| series.values.iter().map(|(x, _)| *x)).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let headers = std::iter::once(spec.x_label.clone())
        .chain(measured.iter().map(|(series, axis)| match axis {
            Some(axis) if axis.label != series.name => format!("{} ({})", series.name, axis.label),
            _ => series.name.clone(),
        }))
        .collect();
    let rows = xs
        .iter()
        .map(|x| {
            std::iter::once(format_value(*x))
                .chain(measured.iter().map(|(series, _)| {
                    series
                        .values
                        .iter()
                        .position(|(value_x, _)| value_x == x)
                        .map_or_else(String::new, |index| cell(series, index))
                }))
                .collect()
        })
        .collect();
    DataTable { headers, rows }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(nice_ticks(0.0, 9.3, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(nice_ticks(0.0, 430.0, 5), vec![0.0, 100.0, 200.0, 300.0, 400.0, 500.0]);
        assert_eq!(format_tick(2000.0), "2k");
        assert_eq!(format_tick(0.25), "0.25");
    }

    #[test]
    fn points_map_into_the_plot_area() {
        let chart = build(ChartSpec {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![SeriesData { highlighted: vec![1], ..SeriesData::line("s", vec![(0.0, 0.0), (10.0, 100.0)]) }],
            right_axis: None,
            markers: vec![(5.0, "m".into())],
            guides: vec![],
        });
        let points = &chart.series[0].points;
        assert_eq!((points[0].x, points[0].y), (chart.plot.left, chart.plot.bottom));
        assert_eq!((points[1].x, points[1].y), (chart.plot.right, chart.plot.top));
        assert!(points[1].highlight && !points[0].highlight);
        assert_eq!(chart.markers[0].position, (chart.plot.left + chart.plot.right) / 2.0);
    }

    #[test]
    fn intervals_become_error_bars_and_invalid_points_leave_the_line() {
        let chart = build(ChartSpec {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![SeriesData {
                intervals: vec![Some((90.0, 110.0)), None, Some((40.0, 60.0))],
                greyed: vec![1],
                ..SeriesData::line("s", vec![(0.0, 100.0), (5.0, 20.0), (10.0, 50.0)])
            }],
            right_axis: None,
            markers: vec![],
            guides: vec![],
        });
        let series = &chart.series[0];
        let (top, bottom) = series.points[0].bar.unwrap();
        assert!(top < series.points[0].y && bottom > series.points[0].y, "{top} {bottom}");
        assert!(series.points[1].greyed && series.points[1].bar.is_none());
        assert_eq!(series.polyline.split(' ').count(), 2, "the invalid point is not joined: {}", series.polyline);
        // The axis reaches the top of the highest error bar.
        assert!(chart.y_ticks.last().unwrap().label.parse::<f64>().unwrap() >= 110.0);
    }

    #[test]
    fn a_right_axis_gives_its_series_a_scale_of_their_own() {
        let per_second = |scale: f64| (0..10).map(|second| (f64::from(second), scale * f64::from(second))).collect();
        let chart = build(ChartSpec {
            title: "Throughput and load over time".into(),
            x_label: "seconds since start".into(),
            y_label: "requests/s".into(),
            series: vec![SeriesData::line("requests/s", per_second(90.0))],
            right_axis: Some(RightAxis {
                label: "users".into(),
                series: vec![SeriesData::line("users", per_second(1.2))],
            }),
            markers: vec![],
            guides: vec![],
        });
        // 0-10.8 users would lie along the bottom of a 0-810 scale; on its own it reaches the top third.
        let users = &chart.series[1];
        let highest = users.points.iter().map(|point| point.y).fold(f64::MAX, f64::min);
        assert!(highest < chart.plot.top + (chart.plot.bottom - chart.plot.top) / 3.0, "{highest}");
        let right = chart.right.as_ref().unwrap();
        assert_eq!((right.label.as_str(), right.color.as_str()), ("users", users.color.as_str()));
        assert_eq!(right.ticks.last().unwrap().label, "15");
        assert!(chart.plot.right <= WIDTH - MARGIN_RIGHT_AXIS);
        assert_eq!(chart.table.headers, ["seconds since start", "requests/s", "users"]);
        assert_eq!(chart.table.rows[9], ["9", "810", "10.8"]);
    }

    #[test]
    fn labels_stay_inside_the_drawing_and_the_legend_wraps() {
        let chart = build(ChartSpec {
            title: "Cost against throughput".into(),
            x_label: "invocations per minute".into(),
            y_label: "cost per hour (USD)".into(),
            series: vec![SeriesData {
                joined: false,
                annotations: vec!["small".into(), "medium".into()],
                ..SeriesData::line("configuration", vec![(100.0, 1.0), (400.0, 2.0)])
            }],
            right_axis: None,
            markers: vec![(400.0, "plateau".into())],
            guides: vec![],
        });
        let [small, medium] =
            [&chart.series[0].points[0], &chart.series[0].points[1]].map(|point| point.annotation.clone().unwrap());
        assert_eq!(
            (small.anchor, medium.anchor),
            ("start", "end"),
            "the rightmost name is drawn to the left of its point"
        );
        assert_eq!(chart.markers[0].label.anchor, "end");
        assert_eq!(chart.table.rows, [["small", "100", "1"], ["medium", "400", "2"]]);

        let names: Vec<SeriesData> =
            (0..6).map(|trial| SeriesData::line(format!("requests/s, trial {trial}"), vec![(0.0, 1.0)])).collect();
        let chart = build(ChartSpec {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: names,
            right_axis: None,
            markers: vec![],
            guides: vec![],
        });
        let rows = chart.legend.iter().map(|entry| entry.y as i64).collect::<std::collections::BTreeSet<_>>().len();
        assert!(rows >= 3, "six long names take rows of their own: {rows}");
        for entry in &chart.legend {
            assert!(entry.x + 14.0 + text_width(&entry.name) <= chart.width, "{entry:?}");
            assert!(entry.y + 10.0 <= chart.height);
        }
    }
}
