//! Charts as Mermaid `xychart-beta` blocks, which GitHub and GitLab draw in a pull-request comment or a wiki page
//! from the Markdown itself: no image file to upload or commit, nothing broken when the page moves.
//!
//! xychart places values evenly by category and draws no legend, so a chart here takes the steps' loads as its
//! categories (the valid steps only: an invalid step has no figure to draw), names each line's colour in its title,
//! and sets the palette so the colours are the ones named.

use super::chart::{ChartSpec, PALETTE, nice_ticks};

/// The colour names of `PALETTE`, in its order, for titles that say which line is which.
const COLOUR_NAMES: [&str; 6] = ["blue", "red", "green", "purple", "orange", "cyan"];

/// More categories than this do not read as a chart in a comment's width.
const MAX_CATEGORIES: usize = 40;

#[derive(Debug, Clone, PartialEq)]
pub enum Plot {
    Line { name: String, values: Vec<f64> },
    Bar { name: String, values: Vec<f64> },
}

impl Plot {
    fn name(&self) -> &str {
        match self {
            Plot::Line { name, .. } | Plot::Bar { name, .. } => name,
        }
    }

    fn values(&self) -> &[f64] {
        match self {
            Plot::Line { values, .. } | Plot::Bar { values, .. } => values,
        }
    }
}

/// One xychart: a value per category in every plot.
#[derive(Debug, Clone, PartialEq)]
pub struct XyChart {
    pub title: String,
    pub x_label: String,
    pub categories: Vec<String>,
    pub y_label: String,
    pub plots: Vec<Plot>,
}

impl XyChart {
    /// The chart of a chart against load: the first series' valid points give the categories, and a further series
    /// is drawn when it has a value at each (a fitted curve sampled elsewhere is left out). None when nothing valid is
    /// left to draw, there are too many steps to read, or the chart has a second scale (xychart has one).
    pub fn from_spec(spec: &ChartSpec) -> Option<XyChart> {
        if spec.right_axis.is_some() {
            return None;
        }
        let first = spec.series.first().filter(|series| series.joined && series.dots)?;
        let valid = |index: &usize| !first.greyed.contains(index);
        let loads: Vec<f64> =
            first.values.iter().enumerate().filter(|(index, _)| valid(index)).map(|(_, (x, _))| *x).collect();
        if loads.is_empty() || loads.len() > MAX_CATEGORIES {
            return None;
        }
        let plots = spec
            .series
            .iter()
            .filter(|series| series.joined && series.dots)
            .filter_map(|series| {
                let values = loads
                    .iter()
                    .map(|load| {
                        series
                            .values
                            .iter()
                            .enumerate()
                            .find(|(index, (x, _))| x == load && !series.greyed.contains(index))
                            .map(|(_, (_, y))| *y)
                    })
                    .collect::<Option<Vec<f64>>>()?;
                Some(Plot::Line { name: series.name.clone(), values })
            })
            .collect();
        Some(XyChart {
            title: spec.title.clone(),
            x_label: spec.x_label.clone(),
            categories: loads.iter().map(|load| compact(*load)).collect(),
            y_label: spec.y_label.clone(),
            plots,
        })
    }

    /// The fenced block's contents (without the fence): an init directive for the palette, then the chart.
    pub fn render(&self) -> String {
        let highest = self.plots.iter().flat_map(|plot| plot.values()).fold(0.0_f64, |high, value| high.max(*value));
        let top = *nice_ticks(0.0, highest.max(1e-9), 5).last().expect("ticks are never empty");
        let palette = PALETTE[..self.plots.len().clamp(1, PALETTE.len())].join(", ");
        let title = if self.plots.len() > 1 {
            let named: Vec<String> = self
                .plots
                .iter()
                .zip(COLOUR_NAMES.iter().cycle())
                .map(|(plot, colour)| format!("{} {colour}", plot.name()))
                .collect();
            format!("{} ({})", self.title, named.join(", "))
        } else {
            self.title.clone()
        };
        let mut text = format!(
            "%%{{init: {{\"themeVariables\": {{\"xyChart\": {{\"plotColorPalette\": \"{palette}\"}}}}}}}}%%\n\
             xychart-beta\n    title \"{}\"\n    x-axis \"{}\" [{}]\n    y-axis \"{}\" 0 --> {}\n",
            quoted(&title),
            quoted(&self.x_label),
            self.categories.iter().map(|category| format!("\"{}\"", quoted(category))).collect::<Vec<_>>().join(", "),
            quoted(&self.y_label),
            compact(top),
        );
        for plot in &self.plots {
            let kind = match plot {
                Plot::Line { .. } => "line",
                Plot::Bar { .. } => "bar",
            };
            let values: Vec<String> = plot.values().iter().map(|value| compact(*value)).collect();
            text.push_str(&format!("    {kind} [{}]\n", values.join(", ")));
        }
        text
    }
}

/// Text for a Mermaid string: its quote, markup and line breaks cannot end the string, the block or the fence, and
/// Mermaid's entity syntax (`#...;`) cannot be spelled. Letters of any script stay.
fn quoted(text: &str) -> String {
    text.chars()
        .map(|character| match character {
            '"' | '`' => '\'',
            '<' => '‹',
            '>' => '›',
            '#' | ';' | '{' | '}' | '\\' => ' ',
            control if control.is_control() => ' ',
            other => other,
        })
        .collect()
}

/// A number as short as it reads: whole numbers bare, others to three significant digits.
fn compact(value: f64) -> String {
    if !value.is_finite() {
        return "0".to_string();
    }
    if value.fract() == 0.0 || value.abs() >= 100.0 {
        return format!("{value:.0}");
    }
    let decimals = (2 - value.abs().log10().floor() as i32).clamp(0, 9) as usize;
    let text = format!("{value:.decimals$}");
    if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::chart::SeriesData;

    fn spec(series: Vec<SeriesData>) -> ChartSpec {
        ChartSpec {
            title: "ModelLatency against load".into(),
            x_label: "users".into(),
            y_label: "latency (ms)".into(),
            series,
            right_axis: None,
            markers: Vec::new(),
            guides: Vec::new(),
        }
    }

    #[test]
    fn categories_are_the_valid_steps_and_every_line_has_a_value_at_each() {
        let p50 =
            SeriesData { greyed: vec![1], ..SeriesData::line("p50", vec![(2.0, 10.5), (4.0, 99.0), (6.0, 12.26)]) };
        let p99 =
            SeriesData { greyed: vec![1], ..SeriesData::line("p99", vec![(2.0, 20.0), (4.0, 300.0), (6.0, 41.0)]) };
        let fit = SeriesData { dots: false, ..SeriesData::line("USL fit", vec![(2.0, 1.0), (3.0, 2.0)]) };
        let chart = XyChart::from_spec(&spec(vec![p50, p99, fit])).unwrap();
        assert_eq!(chart.categories, ["2", "6"]);
        assert_eq!(chart.plots.len(), 2, "the fitted curve has no value at the steps' loads: {chart:?}");
        let text = chart.render();
        assert!(text.contains("title \"ModelLatency against load (p50 blue, p99 red)\""), "{text}");
        assert!(text.contains("x-axis \"users\" [\"2\", \"6\"]"), "{text}");
        assert!(text.contains("y-axis \"latency (ms)\" 0 --> 50"), "{text}");
        assert!(text.contains("    line [10.5, 12.3]\n") && text.contains("    line [20, 41]\n"), "{text}");
        assert!(text.starts_with(
            "%%{init: {\"themeVariables\": {\"xyChart\": {\"plotColorPalette\": \"#1f77b4, #d62728\"}}}}%%\n"
        ));
    }

    #[test]
    fn names_cannot_end_the_string_the_block_or_the_fence() {
        let chart = XyChart {
            title: "a\"b```c<script>#35;\nd".into(),
            x_label: "x".into(),
            categories: vec!["\"".into()],
            y_label: "y".into(),
            plots: vec![Plot::Bar { name: "s".into(), values: vec![1.0] }],
        };
        let text = chart.render();
        assert!(text.contains("title \"a'b'''c‹script› 35  d\""), "{text}");
        assert!(!text.contains("```") && !text.contains('<') && text.contains("[\"'\"]"), "{text}");
    }
}
