//! Chart geometry for the templates: scales, "nice" ticks and SVG coordinates computed here, drawing left to the
//! template, so users can restyle every chart without touching code.

use serde::Serialize;

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 300.0;
const MARGIN_LEFT: f64 = 64.0;
const MARGIN_RIGHT: f64 = 16.0;
const MARGIN_TOP: f64 = 28.0;
const MARGIN_BOTTOM: f64 = 64.0;

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
    pub series: Vec<Series>,
    /// Vertical lines at an x value, such as the plateau.
    pub markers: Vec<Line>,
    /// Horizontal lines at a y value, such as the latency goal.
    pub guides: Vec<Line>,
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
    pub annotation: Option<String>,
    pub highlight: bool,
    /// The 95% interval as an error bar: its top and bottom in SVG coordinates.
    pub bar: Option<(f64, f64)>,
    /// A point no figure is taken from (an invalid step): drawn hollow and grey, left out of the line.
    pub greyed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub position: f64,
    pub label: String,
    pub color: String,
}

/// Data for one series, in data units.
pub struct SeriesData {
    pub name: String,
    pub values: Vec<(f64, f64)>,
    /// Draw a line through the points (false: a scatter).
    pub joined: bool,
    /// Draw a dot at each point (false: a smooth curve, such as a fitted model).
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
    pub markers: Vec<(f64, String)>,
    pub guides: Vec<(f64, String)>,
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

pub fn build(spec: ChartSpec) -> Chart {
    let all = spec.series.iter().flat_map(|series| series.values.iter());
    let (mut x_max, mut y_max) = (f64::MIN, f64::MIN);
    let mut x_min = f64::MAX;
    for &(x, y) in all {
        x_min = x_min.min(x);
        x_max = x_max.max(x);
        y_max = y_max.max(y);
    }
    for (_, high) in spec.series.iter().flat_map(|series| series.intervals.iter().flatten()) {
        y_max = y_max.max(*high);
    }
    for (position, _) in &spec.markers {
        x_max = x_max.max(*position);
    }
    for (position, _) in &spec.guides {
        y_max = y_max.max(*position);
    }
    if x_min > x_max {
        (x_min, x_max, y_max) = (0.0, 1.0, 1.0);
    }
    // Throughput and latency charts read best from zero.
    let x_ticks_data = nice_ticks(x_min.min(0.0), x_max.max(x_min + 1e-9), 6);
    let y_ticks_data = nice_ticks(0.0, y_max.max(1e-9), 5);
    let (x_low, x_high) = (x_ticks_data[0], *x_ticks_data.last().expect("ticks are never empty"));
    let (y_low, y_high) = (y_ticks_data[0], *y_ticks_data.last().expect("ticks are never empty"));
    let plot = Rect { left: MARGIN_LEFT, top: MARGIN_TOP, right: WIDTH - MARGIN_RIGHT, bottom: HEIGHT - MARGIN_BOTTOM };
    let to_x = |x: f64| plot.left + (x - x_low) / (x_high - x_low) * (plot.right - plot.left);
    let to_y = |y: f64| plot.bottom - (y - y_low) / (y_high - y_low) * (plot.bottom - plot.top);
    let round = |value: f64| (value * 10.0).round() / 10.0;

    let series = spec
        .series
        .into_iter()
        .enumerate()
        .map(|(index, data)| {
            let points: Vec<Point> = data
                .values
                .iter()
                .enumerate()
                .map(|(point_index, &(x, y))| Point {
                    x: round(to_x(x)),
                    y: round(to_y(y)),
                    title: data
                        .labels
                        .get(point_index)
                        .cloned()
                        .unwrap_or_else(|| format!("{}, {}", format_tick(x), format_tick(y))),
                    annotation: data.annotations.get(point_index).cloned(),
                    highlight: data.highlighted.contains(&point_index),
                    bar: data
                        .intervals
                        .get(point_index)
                        .copied()
                        .flatten()
                        .map(|(low, high)| (round(to_y(high)), round(to_y(low.max(y_low))))),
                    greyed: data.greyed.contains(&point_index),
                })
                .collect();
            let polyline = if data.joined {
                let used = points.iter().filter(|point| !point.greyed);
                used.map(|point| format!("{},{}", point.x, point.y)).collect::<Vec<_>>().join(" ")
            } else {
                String::new()
            };
            Series {
                name: data.name,
                color: PALETTE[index % PALETTE.len()].to_string(),
                polyline,
                dots: data.dots,
                points,
            }
        })
        .collect();

    Chart {
        title: spec.title,
        x_label: spec.x_label,
        y_label: spec.y_label,
        width: WIDTH,
        height: HEIGHT,
        x_ticks: x_ticks_data
            .iter()
            .map(|&value| Tick { position: round(to_x(value)), label: format_tick(value) })
            .collect(),
        y_ticks: y_ticks_data
            .iter()
            .map(|&value| Tick { position: round(to_y(value)), label: format_tick(value) })
            .collect(),
        series,
        markers: spec
            .markers
            .into_iter()
            .map(|(x, label)| Line { position: round(to_x(x)), label, color: "#555".to_string() })
            .collect(),
        guides: spec
            .guides
            .into_iter()
            .map(|(y, label)| Line { position: round(to_y(y)), label, color: "#b00".to_string() })
            .collect(),
        plot,
    }
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
}
