//! Reports: one view model, rendered through minijinja templates (`reports/` in the repository, built in, and
//! overridable per file with a templates folder). HTML is escaped by minijinja; Markdown by our own formatter, so a
//! template cannot forget to escape a configuration's name.

pub mod chart;
pub mod compare;
mod csv;
pub mod digest;
pub mod ir;
pub mod mermaid;

use std::path::{Path, PathBuf};

use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, Value};
use serde::Serialize;

use crate::analyze::{StepResult, TokenFigures};
use crate::measure::precision::Interval;
use crate::measure::series::SecondSummary;
use crate::plan;
use crate::results::{ConfigurationResult, Results, Verdict};
use crate::units;
use chart::{ChartSpec, RightAxis, SeriesData};
use mermaid::{Plot, XyChart};

/// The built-in templates, compiled in so the binary works from any folder.
const BUILT_IN: [(&str, &str); 11] = [
    ("chart.svg.j2", include_str!("../../../reports/chart.svg.j2")),
    ("confluence.storage.xml.j2", include_str!("../../../reports/confluence.storage.xml.j2")),
    ("compare.md.j2", include_str!("../../../reports/compare.md.j2")),
    ("compare.junit.xml.j2", include_str!("../../../reports/compare.junit.xml.j2")),
    ("llm.j2", include_str!("../../../reports/llm.j2")),
    ("report.html.j2", include_str!("../../../reports/report.html.j2")),
    ("report.md.j2", include_str!("../../../reports/report.md.j2")),
    ("report.pr.md.j2", include_str!("../../../reports/report.pr.md.j2")),
    ("summary.txt.j2", include_str!("../../../reports/summary.txt.j2")),
    ("wiki-index.md.j2", include_str!("../../../reports/wiki-index.md.j2")),
    ("wiki-trend.md.j2", include_str!("../../../reports/wiki-trend.md.j2")),
];

/// What every template sees. Documented in `reports/README.md`.
#[derive(Serialize)]
pub struct ReportView<'a> {
    pub results: &'a Results,
    /// What step loads count, for column headers: "users" or "offered requests/s".
    pub load_label: &'static str,
    pub configurations: Vec<ConfigurationView<'a>>,
    /// Cost per hour against throughput for every configuration, the recommendation highlighted.
    pub overview_chart: Option<RenderedChart>,
    /// The same comparison as Mermaid blocks (MaxInvocations and cost per inference by configuration), for
    /// Markdown that must stand without image files.
    pub overview_mermaid: Vec<String>,
}

/// A chart rendered by `chart.svg.j2`: embedded by the HTML report, saved as `file` for the Markdown one.
#[derive(Serialize)]
pub struct RenderedChart {
    pub title: String,
    /// Where `write_all` saves the SVG, relative to the reports.
    pub file: String,
    pub svg: String,
    /// The chart as a Mermaid block's contents, for charts against load (Markdown for PRs and wikis).
    pub mermaid: Option<String>,
    /// What the chart draws, as a table (the HTML report puts it under the chart for screen readers).
    pub table: chart::DataTable,
}

#[derive(Serialize)]
pub struct ConfigurationView<'a> {
    pub result: &'a ConfigurationResult,
    pub verdict: Option<&'a Verdict>,
    pub recommended: bool,
    pub plateau_step: Option<&'a StepResult>,
    pub charts: Vec<RenderedChart>,
}

/// Why a report cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot load template `{name}`: {source:#}")]
    Load { name: String, source: minijinja::Error },
    #[error("cannot render `{name}`: {source:#}")]
    Render { name: String, source: minijinja::Error },
    #[error("a template needs a file name: {}", path.display())]
    Unnamed { path: PathBuf },
    #[error("cannot read template {}: {source}", path.display())]
    ReadTemplate { path: PathBuf, source: std::io::Error },
    #[error("template {} has a syntax error: {source:#}", path.display())]
    Syntax { path: PathBuf, source: minijinja::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot serialize the results: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("cannot write the steps as CSV: {0}")]
    Csv(#[from] ::csv::Error),
}

/// Which charts Markdown can draw as Mermaid: those against load, whose steps are categories (seconds over a run are
/// too many).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Axis {
    Load,
    Other,
}

fn render_chart(
    env: &Environment<'_>,
    file_stem: String,
    (axis, spec): (Axis, ChartSpec),
) -> Result<RenderedChart, ReportError> {
    let mermaid = (axis == Axis::Load).then(|| XyChart::from_spec(&spec)).flatten().map(|chart| chart.render());
    let chart = chart::build(spec);
    let svg = render(env, "chart.svg.j2", &minijinja::context! { chart => &chart })?;
    Ok(RenderedChart { title: chart.title, file: format!("charts/{file_stem}.svg"), svg, mermaid, table: chart.table })
}

pub fn view<'a>(results: &'a Results, env: &Environment<'_>) -> Result<ReportView<'a>, ReportError> {
    let recommended =
        results.recommendation.as_ref().and_then(|recommendation| recommendation.configuration.as_deref());
    let mut configurations = Vec::new();
    for (index, result) in results.configurations.iter().enumerate() {
        let charts = configuration_charts(result, results)
            .into_iter()
            .map(|(kind, chart)| {
                render_chart(env, format!("{}-{kind}", plan::run_file_stem(index, &result.name, None)), chart)
            })
            .collect::<Result<_, _>>()?;
        configurations.push(ConfigurationView {
            result,
            verdict: results.recommendation.as_ref().and_then(|recommendation| {
                recommendation.ranking.iter().find(|verdict| verdict.configuration == result.name)
            }),
            recommended: recommended == Some(result.name.as_str()),
            plateau_step: plateau_step(result),
            charts,
        });
    }
    let overview_chart = overview_chart(results, recommended)
        .map(|spec| render_chart(env, "overview".to_string(), (Axis::Other, spec)))
        .transpose()?;
    Ok(ReportView {
        results,
        load_label: results.job.load_unit.label(),
        configurations,
        overview_chart,
        overview_mermaid: overview_mermaid(results),
    })
}

fn plateau_step(result: &ConfigurationResult) -> Option<&StepResult> {
    let plateau = result.plateau.as_ref()?;
    result.steps.iter().filter(|step| step.complete).nth(plateau.step)
}

fn configuration_charts(result: &ConfigurationResult, results: &Results) -> Vec<(&'static str, (Axis, ChartSpec))> {
    let steps: Vec<&StepResult> = result.steps.iter().filter(|step| step.complete).collect();
    if steps.is_empty() {
        return Vec::new();
    }
    let plateau = result.plateau.as_ref().map(|plateau| plateau.step);
    let load_label = results.job.load_unit.label();
    // At the load the figures were measured at: the plateau step's, or a sliding window's for phases.
    let markers: Vec<(f64, String)> =
        result.metrics.as_ref().map(|metrics| (metrics.load_at_plateau, "plateau".to_string())).into_iter().collect();
    let against_load = |title: &str, y_label: &str, series: Vec<SeriesData>, guides: Vec<(f64, String)>| {
        let spec = ChartSpec {
            title: title.into(),
            x_label: load_label.into(),
            y_label: y_label.into(),
            series,
            right_axis: None,
            markers: markers.clone(),
            guides,
        };
        (Axis::Load, spec)
    };
    // Invalid steps are drawn hollow and grey, out of the line; every step carries its 95% interval.
    let greyed: Vec<usize> =
        steps.iter().enumerate().filter(|(_, step)| step.invalid.is_some()).map(|(index, _)| index).collect();
    let not_used = |step: &StepResult| {
        step.invalid.map(|invalid| format!(" (not used: {})", invalid.describe())).unwrap_or_default()
    };
    let mut throughput_series = vec![SeriesData {
        highlighted: plateau.into_iter().collect(),
        labels: steps
            .iter()
            .map(|step| {
                format!("{} {load_label}: {:.0} invocations/min{}", step.load, step.invocations_per_min, not_used(step))
            })
            .collect(),
        intervals: steps
            .iter()
            .map(|step| {
                step.throughput_interval_rps
                    .map(|interval| (units::per_minute(interval.low), units::per_minute(interval.high)))
            })
            .collect(),
        greyed: greyed.clone(),
        ..SeriesData::line(
            "invocations per minute",
            steps.iter().map(|step| (step.load, step.invocations_per_min)).collect(),
        )
    }];
    if let Some(fit) = &result.scalability {
        let (low, high) = (steps[0].load, steps[steps.len() - 1].load);
        let curve = (0..=40)
            .map(|i| low + (high - low) * f64::from(i) / 40.0)
            .map(|users| (users, units::per_minute(fit.throughput_rps(users))));
        let name = format!("USL fit (R² {:.3})", fit.r_squared);
        throughput_series.push(SeriesData { dots: false, ..SeriesData::line(name, curve.collect()) });
    }
    let throughput = against_load("Throughput against load", "invocations per minute", throughput_series, Vec::new());
    let percentile_series = |name: &str, percentile: f64| SeriesData {
        labels: steps
            .iter()
            .map(|step| {
                format!("{} {load_label}: {name} {:.1} ms{}", step.load, step.latency.at(percentile), not_used(step))
            })
            .collect(),
        intervals: steps
            .iter()
            .map(|step| {
                step.latency_intervals
                    .map(|intervals| intervals.at(percentile))
                    .map(|interval| (interval.low, interval.high))
            })
            .collect(),
        greyed: greyed.clone(),
        ..SeriesData::line(name, steps.iter().map(|step| (step.load, step.latency.at(percentile))).collect())
    };
    let goal = results
        .job
        .requirements
        .slo
        .map(|slo| (slo.latency_ms, format!("goal: {} ≤ {} ms", slo.percentile, slo.latency_ms)));
    let latency = against_load(
        "ModelLatency against load",
        "latency (ms)",
        vec![percentile_series("p50", 50.0), percentile_series("p90", 90.0), percentile_series("p99", 99.0)],
        goal.into_iter().collect(),
    );
    let over_time = |title: &str, y_label: &str, series: Vec<SeriesData>, right_axis: Option<RightAxis>| {
        let spec = ChartSpec {
            title: title.into(),
            x_label: "seconds since start".into(),
            y_label: y_label.into(),
            series,
            right_axis,
            markers: Vec::new(),
            guides: Vec::new(),
        };
        (Axis::Other, spec)
    };
    // One timeline per test run: a configuration with trials draws each trial's seconds, each from its own start.
    let trial_runs: Vec<&ConfigurationResult> =
        results.trial_runs.iter().filter(|run| run.name == result.name && result.trials.is_some()).collect();
    let timelines: Vec<(String, &[SecondSummary])> = if trial_runs.is_empty() {
        vec![(String::new(), result.seconds.as_slice())]
    } else {
        trial_runs
            .iter()
            .map(|run| (format!(", trial {}", run.trial.unwrap_or_default()), run.seconds.as_slice()))
            .collect()
    };
    let per_second = |seconds: &[SecondSummary], pick: fn(&SecondSummary) -> f64| {
        seconds.iter().map(|second| (second.second as f64, pick(second))).collect()
    };
    let throughput_lines: Vec<SeriesData> = timelines
        .iter()
        .map(|(trial, seconds)| {
            SeriesData::line(format!("requests/s{trial}"), per_second(seconds, |second| second.completed as f64))
        })
        .collect();
    // Load on a scale of its own: 2-12 users beside 100-800 requests/s would lie flat on one axis.
    let load = RightAxis {
        label: load_label.into(),
        series: vec![SeriesData::line(load_label, per_second(timelines[0].1, |second| second.load))],
    };
    let throughput_over_time = over_time("Throughput and load over time", "requests/s", throughput_lines, Some(load));
    let latency_lines: Vec<SeriesData> = timelines
        .iter()
        .flat_map(|(trial, seconds)| {
            // With trials, p99 alone: two lines a trial would not be read.
            let p50 = trial.is_empty().then(|| SeriesData::line("p50", per_second(seconds, |second| second.p50_ms)));
            p50.into_iter()
                .chain([SeriesData::line(format!("p99{trial}"), per_second(seconds, |second| second.p99_ms))])
        })
        .collect();
    let latency_over_time = over_time("Latency over time", "latency (ms)", latency_lines, None);
    let mut charts = vec![
        ("throughput", throughput),
        ("latency", latency),
        ("throughput-over-time", throughput_over_time),
        ("latency-over-time", latency_over_time),
    ];
    let resource_series = |name: &str, pick: fn(&SecondSummary) -> Option<f64>| {
        let values: Vec<(f64, f64)> =
            timelines[0].1.iter().filter_map(|second| Some((second.second as f64, pick(second)?))).collect();
        (!values.is_empty()).then(|| SeriesData::line(name, values))
    };
    let resources: Vec<SeriesData> = [
        resource_series("CPU (%)", |second| second.resources.cpu_percent),
        resource_series("memory (%)", |second| second.resources.memory_percent),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !resources.is_empty() {
        charts.push((
            "resources-over-time",
            over_time("Resource use over time", "% of what the server may use", resources, None),
        ));
    }
    charts.extend(token_charts(&steps, plateau, &markers, results));
    charts
}

/// A figure and its 95% interval, where it has one.
type WithInterval = (f64, Option<Interval>);

/// A language model's figures against load: output tokens/s and goodput, and TTFT, ITL and TPOT, from the steps
/// that have them; none for other targets.
fn token_charts(
    steps: &[&StepResult],
    plateau: Option<usize>,
    markers: &[(f64, String)],
    results: &Results,
) -> Vec<(&'static str, (Axis, ChartSpec))> {
    let with_tokens: Vec<(&StepResult, &TokenFigures)> =
        steps.iter().filter_map(|step| Some((*step, step.tokens.as_ref()?))).collect();
    if with_tokens.is_empty() {
        return Vec::new();
    }
    let load_label = results.job.load_unit.label();
    let plateau_load = plateau.and_then(|index| steps.get(index)).map(|step| step.load);
    let series = |name: &str, unit: &str, pick: &dyn Fn(&TokenFigures) -> Option<WithInterval>| {
        let points: Vec<(f64, f64, Option<Interval>, bool)> = with_tokens
            .iter()
            .filter_map(|(step, tokens)| {
                let (value, interval) = pick(tokens)?;
                Some((step.load, value, interval, step.invalid.is_some()))
            })
            .collect();
        (!points.is_empty()).then(|| SeriesData {
            labels: points
                .iter()
                .map(|(load, value, ..)| format!("{load} {load_label}: {name} {value:.1} {unit}"))
                .collect(),
            intervals: points
                .iter()
                .map(|(_, _, interval, _)| interval.map(|interval| (interval.low, interval.high)))
                .collect(),
            greyed: points.iter().enumerate().filter(|(_, point)| point.3).map(|(index, _)| index).collect(),
            highlighted: points.iter().position(|point| Some(point.0) == plateau_load).into_iter().collect(),
            ..SeriesData::line(name, points.iter().map(|(load, value, ..)| (*load, *value)).collect())
        })
    };
    let spec =
        |title: &str, y_label: &str, left: Vec<Option<SeriesData>>, right: Option<RightAxis>, guides| ChartSpec {
            title: title.into(),
            x_label: load_label.into(),
            y_label: y_label.into(),
            series: left.into_iter().flatten().collect(),
            right_axis: right.filter(|axis| !axis.series.is_empty()),
            markers: markers.to_vec(),
            guides,
        };
    let requirements = &results.job.requirements;
    let percentile = requirements.percentile.value();
    // Goodput in responses a second, on a scale of its own beside thousands of tokens a second.
    let goodput = RightAxis {
        label: "good responses/s".into(),
        series: series("goodput (/s)", "/s", &|tokens| Some((tokens.goodput_per_s, tokens.goodput_interval_per_s)))
            .into_iter()
            .collect(),
    };
    let throughput = spec(
        "Output tokens/s and goodput against load",
        "output tokens/s",
        vec![series("output tokens/s", "/s", &|tokens| {
            Some((tokens.output_tokens_per_s, tokens.output_tokens_per_s_interval))
        })],
        Some(goodput),
        Vec::new(),
    );
    let ttft_at = |tokens: &TokenFigures, percentile: f64| {
        Some((tokens.ttft?.at(percentile), tokens.ttft_intervals.map(|intervals| intervals.at(percentile))))
    };
    // Gaps between tokens are tens of milliseconds beside TTFTs of hundreds: a scale of their own.
    let between_tokens = RightAxis {
        label: "between tokens (ms)".into(),
        series: [
            series("ITL p50", "ms", &|tokens| Some((tokens.itl?.p50_ms, None))),
            series("TPOT p50", "ms", &|tokens| Some((tokens.tpot?.p50_ms, None))),
        ]
        .into_iter()
        .flatten()
        .collect(),
    };
    let ttft_goal = requirements
        .ttft_ms
        .map(|limit_ms| (limit_ms, format!("goal: {} TTFT ≤ {limit_ms} ms", requirements.percentile)));
    let ttft_name = format!("TTFT {}", requirements.percentile);
    let latency = spec(
        "Time to first token and between tokens against load",
        "time to first token (ms)",
        vec![
            series("TTFT p50", "ms", &|tokens| ttft_at(tokens, 50.0)),
            (percentile != 50.0).then(|| series(&ttft_name, "ms", &|tokens| ttft_at(tokens, percentile))).flatten(),
        ],
        Some(between_tokens),
        ttft_goal.into_iter().collect(),
    );
    vec![("tokens", (Axis::Load, throughput)), ("token-latency", (Axis::Load, latency))]
}

fn overview_chart(results: &Results, recommended: Option<&str>) -> Option<ChartSpec> {
    let measured: Vec<(&ConfigurationResult, f64, f64)> = results
        .configurations
        .iter()
        .filter_map(|result| {
            let metrics = result.metrics.as_ref()?;
            let cost_per_hour_usd = result.price_per_hour_usd * f64::from(result.instance_count);
            Some((result, metrics.max_invocations_at_slo.unwrap_or(metrics.max_invocations), cost_per_hour_usd))
        })
        .collect();
    if measured.is_empty() {
        return None;
    }
    Some(ChartSpec {
        title: "Cost against throughput".into(),
        x_label: "invocations per minute (at the goal, if set)".into(),
        y_label: "cost per hour (USD)".into(),
        series: vec![SeriesData {
            joined: false,
            highlighted: measured
                .iter()
                .enumerate()
                .filter(|(_, (result, _, _))| Some(result.name.as_str()) == recommended)
                .map(|(index, _)| index)
                .collect(),
            labels: measured
                .iter()
                .map(|(result, per_min, cost)| format!("{}: {per_min:.0}/min, ${cost:.3}/h", result.name))
                .collect(),
            annotations: measured.iter().map(|(result, _, _)| result.name.clone()).collect(),
            ..SeriesData::line("configurations", measured.iter().map(|(_, per_min, cost)| (*per_min, *cost)).collect())
        }],
        right_axis: None,
        markers: Vec::new(),
        guides: Vec::new(),
    })
}

/// MaxInvocations and cost per inference by configuration, as Mermaid bar charts: what the cost-against-throughput
/// scatter shows, in a form xychart can draw. Bounds are drawn at the bound; the tables say which they are.
fn overview_mermaid(results: &Results) -> Vec<String> {
    let measured: Vec<(&str, &crate::analyze::Metrics)> = results
        .configurations
        .iter()
        .filter(|result| result.eliminated.is_none())
        .filter_map(|result| Some((result.name.as_str(), result.metrics.as_ref()?)))
        .collect();
    if measured.is_empty() {
        return Vec::new();
    }
    let bars = |title: &str, y_label: &str, bars: Vec<(String, f64)>| {
        XyChart {
            title: title.into(),
            x_label: "configuration".into(),
            categories: bars.iter().map(|(name, _)| name.clone()).collect(),
            y_label: y_label.into(),
            plots: vec![Plot::Bar { name: y_label.into(), values: bars.iter().map(|(_, value)| *value).collect() }],
        }
        .render()
    };
    let mut charts = vec![bars(
        "MaxInvocations by configuration",
        "invocations per minute",
        measured.iter().map(|(name, metrics)| (name.to_string(), metrics.max_invocations)).collect(),
    )];
    // Only configurations with a cost (none met the goal: no cost per inference) take part.
    let costed: Vec<(String, f64)> = measured
        .iter()
        .filter_map(|(name, metrics)| Some((name.to_string(), metrics.cost_per_inference_usd? * 1e6)))
        .collect();
    if !costed.is_empty() {
        charts.push(bars("CostPerInference by configuration", "USD per 1M inferences", costed));
    }
    charts
}

// ---------------------------------------------------------------------------------------------------------------
// Templates.

const MARKDOWN: &str = "markdown";
const TERMINAL: &str = "terminal";

/// Escapes text for a Markdown paragraph or table cell: punctuation that Markdown or a table would read, raw HTML,
/// and line breaks.
pub fn escape_markdown(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            '\n' | '\r' => escaped.push(' '),
            control if control.is_control() => {}
            '\\' | '`' | '*' | '_' | '{' | '}' | '[' | ']' | '(' | ')' | '#' | '+' | '!' | '|' | '~' => {
                escaped.push('\\');
                escaped.push(character);
            }
            other => escaped.push(other),
        }
    }
    escaped
}

/// Terminals interpret control characters; a name must not be able to move the cursor or change colours.
fn strip_control(text: &str) -> String {
    text.chars().filter(|character| !character.is_control() || *character == '\n').collect()
}

fn formatter(out: &mut minijinja::Output, state: &State, value: &Value) -> Result<(), Error> {
    let custom = match state.auto_escape() {
        AutoEscape::Custom(name) if !value.is_safe() => name,
        // XML (SVG, JUnit) cannot hold most control characters even escaped, and HTML shows them as garbage.
        AutoEscape::Html if !value.is_safe() && value.as_str().is_some_and(|text| text.contains(char::is_control)) => {
            let shown = Value::from(strip_control(value.as_str().unwrap_or_default()));
            return minijinja::escape_formatter(out, state, &shown);
        }
        _ => return minijinja::escape_formatter(out, state, value),
    };
    let text = display(value);
    let text = if custom == MARKDOWN { escape_markdown(&text) } else { strip_control(&text) };
    out.write_str(&text).map_err(|_| Error::new(ErrorKind::WriteFailure, "cannot write the report"))
}

fn auto_escape(name: &str) -> AutoEscape {
    let name = name.strip_suffix(".j2").unwrap_or(name);
    match name.rsplit('.').next() {
        Some("md") => AutoEscape::Custom(MARKDOWN),
        Some("txt") => AutoEscape::Custom(TERMINAL),
        Some("svg") => AutoEscape::Html,
        _ => minijinja::default_auto_escape_callback(name),
    }
}

/// `{{ value | fixed(2) }}`: a number with that many decimals, "n/a" for none.
fn fixed(value: Value, decimals: Option<usize>) -> String {
    match f64::try_from(value) {
        Ok(number) if number.is_finite() => format!("{number:.*}", decimals.unwrap_or(1)),
        _ => "n/a".to_string(),
    }
}

/// `{{ value | significant(3) }}`: a number with that many significant digits, for small costs.
fn significant(value: Value, digits: Option<usize>) -> String {
    let Ok(number) = f64::try_from(value) else {
        return "n/a".to_string();
    };
    if number == 0.0 || !number.is_finite() {
        return format!("{number}");
    }
    let digits = digits.unwrap_or(3) as i32;
    let decimals = (digits - 1 - number.abs().log10().floor() as i32).max(0) as usize;
    format!("{number:.decimals$}")
}

/// `{{ value | load }}`: a step's load, whole users as "6", fractional loads (phases' mean users, offered rates)
/// with one decimal.
fn load(value: Value) -> String {
    match f64::try_from(value) {
        Ok(number) if number.fract() == 0.0 => format!("{number:.0}"),
        Ok(number) => format!("{number:.1}"),
        Err(_) => "n/a".to_string(),
    }
}

/// `{{ value | estimate(interval, bound, decimals, scale) }}`: a figure with its 95% interval as "12000 ± 41", or
/// as a bound ("≥ 10920") when `bound` names one: a figure plateau cannot stand behind is never printed bare. `scale`
/// converts both (60 turns requests per second into per minute).
fn estimate(
    value: Value,
    interval: Option<Value>,
    bound: Option<String>,
    decimals: Option<usize>,
    scale: Option<f64>,
) -> String {
    let Ok(number) = f64::try_from(value) else {
        return "n/a".to_string();
    };
    let (decimals, scale) = (decimals.unwrap_or(0), scale.unwrap_or(1.0));
    let number = number * scale;
    if let Some(bound) = bound.filter(|bound| !bound.is_empty()) {
        return format!("{bound} {number:.decimals$}");
    }
    let end = |name: &str| {
        interval.as_ref().and_then(|interval| interval.get_attr(name).ok()).and_then(|end| f64::try_from(end).ok())
    };
    match (end("low"), end("high")) {
        (Some(low), Some(high)) => {
            // The larger side: intervals of percentiles and of costs are not symmetric.
            let half = (number - low * scale).max(high * scale - number).max(0.0);
            format!("{number:.decimals$} ± {half:.decimals$}")
        }
        _ => format!("{number:.decimals$}"),
    }
}

/// `{{ seconds | duration }}`: "1m 05s".
fn duration(value: Value) -> String {
    match u64::try_from(value) {
        Ok(seconds) if seconds >= 60 => format!("{}m {:02}s", seconds / 60, seconds % 60),
        Ok(seconds) => format!("{seconds}s"),
        Err(_) => "n/a".to_string(),
    }
}

/// `{{ value | ljust(12) }}` and `{{ value | rjust(8) }}`: pad to a column width, for terminal tables.
fn ljust(value: Value, width: usize) -> String {
    format!("{:<width$}", display(&value))
}

fn rjust(value: Value, width: usize) -> String {
    format!("{:>width$}", display(&value))
}

/// `{{ text | wrap(100, 2) }}`: wrapped to `width` columns, indented by `indent` spaces and the lines after the first by
/// two more, so a wrapped note reads as one under the row it belongs to.
fn wrap(value: Value, width: usize, indent: usize) -> String {
    let (first, rest) = (" ".repeat(indent), " ".repeat(indent + 2));
    textwrap::fill(&display(&value), textwrap::Options::new(width).initial_indent(&first).subsequent_indent(&rest))
}

fn display(value: &Value) -> String {
    if value.is_none() { "n/a".to_string() } else { value.to_string() }
}

/// Loads templates from `overrides` first (a user's folder), then the built-in ones.
pub fn environment(overrides: Option<&Path>) -> Environment<'static> {
    let mut env = Environment::new();
    let overrides = overrides.map(Path::to_path_buf);
    env.set_loader(move |name| {
        if let Some(folder) = &overrides {
            let path = folder.join(name);
            if path.is_file() {
                return std::fs::read_to_string(&path).map(Some).map_err(|error| {
                    Error::new(ErrorKind::InvalidOperation, format!("cannot read template {}: {error}", path.display()))
                });
            }
        }
        Ok(BUILT_IN.iter().find(|(built_in, _)| *built_in == name).map(|(_, text)| text.to_string()))
    });
    env.set_auto_escape_callback(auto_escape);
    env.set_formatter(formatter);
    env.add_filter("fixed", fixed);
    env.add_filter("significant", significant);
    env.add_filter("duration", duration);
    env.add_filter("estimate", estimate);
    env.add_filter("load", load);
    env.add_filter("ljust", ljust);
    env.add_filter("rjust", rjust);
    env.add_filter("wrap", wrap);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env
}

pub fn render(env: &Environment<'_>, template: &str, view: &impl Serialize) -> Result<String, ReportError> {
    let loaded =
        env.get_template(template).map_err(|source| ReportError::Load { name: template.to_string(), source })?;
    loaded.render(view).map_err(|source| ReportError::Render { name: loaded.name().to_string(), source })
}

/// Where templates come from and which extra ones to render.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    /// A folder whose templates replace the built-in ones of the same name.
    pub templates: Option<PathBuf>,
    /// Further templates to render, each into `out` under its file name less `.j2`.
    pub extra: Vec<PathBuf>,
}

/// Writes `results.json`, `steps.csv`, `report.md`, `report.pr.md`, `report.html`, the charts and any extra templates
/// into `out`; returns the terminal summary.
pub fn write_all(results: &Results, out: &Path, options: &ReportOptions) -> Result<String, ReportError> {
    write_results(results, out)?;
    write_file(&out.join("steps.csv"), &csv::steps_csv(results)?)?;
    let mut env = environment(options.templates.as_deref());
    let mut outputs = vec![
        ("report.md.j2".to_string(), "report.md".to_string()),
        ("report.html.j2".to_string(), "report.html".to_string()),
        ("report.pr.md.j2".to_string(), "report.pr.md".to_string()),
    ];
    for path in &options.extra {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| ReportError::Unnamed { path: path.clone() })?
            .to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| ReportError::ReadTemplate { path: path.clone(), source })?;
        env.add_template_owned(name.clone(), text)
            .map_err(|source| ReportError::Syntax { path: path.clone(), source })?;
        outputs.push((name.clone(), name.strip_suffix(".j2").unwrap_or(&name).to_string()));
    }
    let view = view(results, &env)?;
    let charts_folder = out.join("charts");
    std::fs::create_dir_all(&charts_folder)
        .map_err(|source| ReportError::Write { path: charts_folder.clone(), source })?;
    let all_charts =
        view.overview_chart.iter().chain(view.configurations.iter().flat_map(|configuration| &configuration.charts));
    for chart in all_charts {
        write_file(&out.join(&chart.file), chart.svg.as_bytes())?;
    }
    for (template, file) in outputs {
        write_file(&out.join(file), render(&env, &template, &view)?.as_bytes())?;
    }
    render(&env, "summary.txt.j2", &view)
}

fn write_file(path: &Path, text: &[u8]) -> Result<(), ReportError> {
    std::fs::write(path, text).map_err(|source| ReportError::Write { path: path.to_path_buf(), source })
}

/// Writes `results.json` atomically and durably: a reader, or a run resumed after a crash or power loss, sees the
/// old file or the new one, never half of one; a write that fails (a full disk) leaves no temporary file behind.
pub fn write_results(results: &Results, out: &Path) -> Result<(), ReportError> {
    let path = out.join("results.json");
    let partial_path = out.join("results.json.tmp");
    let bytes = serde_json::to_vec_pretty(results)?;
    let written = (|| {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&partial_path)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&partial_path, &path)?;
        // The rename is durable once the folder's entry is.
        std::fs::File::open(out)?.sync_all()
    })();
    written.map_err(|source| {
        let _ = std::fs::remove_file(&partial_path);
        ReportError::Write { path, source }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_escaping_neutralises_tables_and_html() {
        assert_eq!(escape_markdown("a|b <img src=x onerror=alert(1)>"), "a\\|b &lt;img src=x onerror=alert\\(1\\)&gt;");
        assert_eq!(escape_markdown("line\nbreak_*x*"), "line break\\_\\*x\\*");
    }

    #[test]
    fn loads_print_whole_users_without_decimals() {
        assert_eq!(load(Value::from(6.0)), "6");
        assert_eq!(load(Value::from(12.5)), "12.5");
    }

    #[test]
    fn significant_digits_suit_tiny_costs() {
        assert_eq!(significant(Value::from(0.000_002_314_9), Some(3)), "0.00000231");
        assert_eq!(significant(Value::from(12.345), Some(3)), "12.3");
        assert_eq!(fixed(Value::from(()), Some(1)), "n/a");
    }

    #[test]
    fn user_templates_override_built_in_ones_by_name() {
        let folder = std::env::temp_dir().join(format!("plateau-templates-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("summary.txt.j2"), "custom {{ name }}").unwrap();
        let env = environment(Some(&folder));
        let rendered =
            env.get_template("summary.txt.j2").unwrap().render(minijinja::context! { name => "x\u{1b}[31m" }).unwrap();
        assert_eq!(rendered, "custom x[31m");
        assert!(env.get_template("report.md.j2").is_ok());
        std::fs::remove_dir_all(folder).unwrap();
    }
}
