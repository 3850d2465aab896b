//! Reports and comparisons from a fixed results file (a real quickstart run, kept in tests/fixtures): snapshots
//! of every format, escaping of hostile names, the HTML report in headless Chromium, and `plateau compare`.
//! Set UPDATE_SNAPSHOTS=1 to rewrite the snapshots after an intended change, then review the diff.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::{repository, text};

fn fixture() -> PathBuf {
    repository().join("tests/fixtures/quickstart-results.json")
}

fn plateau(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plateau")).args(args).output().unwrap()
}

fn render(results: &Path, out: &Path) {
    let output = plateau(&["report", results.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}

fn assert_snapshot(name: &str, actual: &str) {
    let path = repository().join("tests/snapshots").join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let first_difference = expected.lines().zip(actual.lines()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "{name} differs from its snapshot at line {} (rerun with UPDATE_SNAPSHOTS=1 if intended):\n- {}\n+ {}",
            first_difference + 1,
            expected.lines().nth(first_difference).unwrap_or(""),
            actual.lines().nth(first_difference).unwrap_or("")
        );
    }
}

#[test]
fn reports_match_their_snapshots() {
    let out = tempfile::tempdir().unwrap();
    render(&fixture(), out.path());
    for file in ["report.md", "report.pr.md", "report.html", "charts/03-medium-throughput.svg"] {
        let rendered = std::fs::read_to_string(out.path().join(file)).unwrap();
        assert_snapshot(&file.replace('/', "-"), &rendered);
    }
    let summary = plateau(&["report", fixture().to_str().unwrap(), "--format", "summary"]);
    assert_eq!(summary.status.code(), Some(0), "{}", text(&summary));
    assert_snapshot("summary.txt", &String::from_utf8(summary.stdout).unwrap());
    let markdown = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    for chart in markdown.lines().filter_map(|line| {
        line.strip_prefix("![").and_then(|rest| rest.split_once("](")).map(|(_, file)| file.trim_end_matches(')'))
    }) {
        assert!(out.path().join(chart).is_file(), "the Markdown links {chart}, which was not written");
    }
}

/// The fixture with one configuration (and every mention of it) renamed.
fn with_renamed_configuration(folder: &Path, old: &str, new: &str, job_name: &str) -> PathBuf {
    let mut results: Value = serde_json::from_str(&std::fs::read_to_string(fixture()).unwrap()).unwrap();
    results["job"]["name"] = Value::from(job_name);
    let renamed =
        serde_json::to_string(&results).unwrap().replace(&format!("\"{old}\""), &serde_json::to_string(new).unwrap());
    let path = folder.join("results.json");
    std::fs::write(&path, renamed).unwrap();
    path
}

#[test]
fn hostile_names_are_escaped_in_html_markdown_and_charts() {
    let hostile = "a|b <img src=x onerror=alert(1)>";
    let folder = tempfile::tempdir().unwrap();
    let results = with_renamed_configuration(folder.path(), "medium", hostile, "job | <script>alert(2)</script>");
    let out = folder.path().join("out");
    render(&results, &out);

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(!html.contains("<img src=x") && !html.contains("<script>alert"), "raw markup reached the HTML");
    assert!(html.contains("a|b &lt;img src=x onerror=alert(1)&gt;"));
    assert!(html.contains("<strong>Recommendation: a|b &lt;img"), "the recommendation names it, escaped");

    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(!markdown.contains("<img") && !markdown.contains("<script"), "raw HTML reached the Markdown");
    let row = markdown.lines().find(|line| line.starts_with("| a\\|b")).expect("the hostile configuration's table row");
    let header = markdown.lines().find(|line| line.starts_with("| Configuration |")).unwrap();
    let unescaped_pipes =
        |line: &str| line.match_indices('|').filter(|(index, _)| !line[..*index].ends_with('\\')).count();
    assert_eq!(unescaped_pipes(row), unescaped_pipes(header), "the name must not add table cells: {row}");
    assert!(markdown.contains("# plateau report: job \\| &lt;script&gt;alert\\(2\\)&lt;/script&gt;"));

    let overview = std::fs::read_to_string(out.join("charts/overview.svg")).unwrap();
    assert!(overview.contains("a|b &lt;img") && !overview.contains("<img"));
}

/// The browser-test folder, when Chromium and the npm packages are installed; under CI=true their absence fails.
fn browser_tests(test: &str) -> Option<PathBuf> {
    let browser_tests = repository().join("tests/browser");
    let ready =
        ["playwright-core", "mermaid"].iter().all(|package| browser_tests.join("node_modules").join(package).is_dir())
            && Path::new("/usr/bin/chromium").exists();
    if !ready {
        let message = "Chromium, playwright-core or mermaid is missing: run ./tests/run.sh, which installs them";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("SKIPPED {test}: {message}");
        return None;
    }
    Some(browser_tests)
}

/// Every Mermaid block of a Markdown file, drawn by Mermaid in Chromium: (blocks, each chart's JSON).
fn draw_mermaid(browser_tests: &Path, markdown: &Path) -> (usize, Vec<Value>) {
    let output = Command::new("node").arg(browser_tests.join("check-mermaid.mjs")).arg(markdown).output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let drawn: Value = serde_json::from_slice(&output.stdout).unwrap();
    (drawn["blocks"].as_u64().unwrap() as usize, drawn["charts"].as_array().unwrap().clone())
}

#[test]
fn the_html_report_loads_in_headless_chromium_without_errors() {
    let Some(browser_tests) = browser_tests("the_html_report_loads_in_headless_chromium_without_errors") else {
        return;
    };
    let out = repository().join("target/test-output/report");
    std::fs::create_dir_all(&out).unwrap();
    render(&fixture(), &out);
    let screenshot = out.join("report.png");
    let output = Command::new("node")
        .arg(browser_tests.join("check-report.mjs"))
        .arg(out.join("report.html"))
        .arg(&screenshot)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let page: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(page["consoleErrors"], Value::Array(vec![]), "console errors");
    assert_eq!(page["externalRequests"], Value::Array(vec![]), "the report must need no network");
    assert_eq!(page["title"], "plateau report: quickstart");
    assert!(page["recommendation"].as_str().unwrap().starts_with("Recommendation: medium with InitialInstanceCount 2"));
    let charts = page["charts"].as_array().unwrap();
    assert_eq!(charts.len(), 1 + 5 * 4, "an overview and five charts for each of four configurations");
    for chart in charts {
        assert_eq!(chart["visible"], true, "{chart}");
        assert!(chart["points"].as_u64().unwrap() > 0, "every chart shows data: {chart}");
    }
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000, "a real screenshot at {}", screenshot.display());
}

#[test]
fn the_html_report_fits_phone_laptop_and_wide_screens_in_headless_chromium() {
    let Some(browser_tests) = browser_tests("the_html_report_fits_phone_laptop_and_wide_screens_in_headless_chromium")
    else {
        return;
    };
    let out = repository().join("target/test-output/report-layout");
    std::fs::create_dir_all(&out).unwrap();
    // A long name and a long verdict, as real jobs have: both must wrap, not push the table wider.
    let results = variant(&out, "results.json", |results| {
        let long_name = "ml.g5.12xlarge-tensor-parallel-4-batch-32-int8";
        results["configurations"][3]["name"] = Value::from(long_name);
        let ranking = results["recommendation"]["ranking"].as_array_mut().unwrap();
        let verdict = ranking.iter_mut().find(|verdict| verdict["configuration"] == "large").unwrap();
        verdict["configuration"] = Value::from(long_name);
        verdict["verdict"] = Value::from(format!(
            "fails p99 ≤ 60 ms: 160.3 ms even at the lowest load (step 1), 100.3 ms over; {}",
            "errors: 1204 × HTTP 503 (the model answered ServiceUnavailable: too many requests in flight) ".repeat(2)
        ));
    });
    render(&results, &out);
    let prefix = out.join("report");
    let output = Command::new("node")
        .arg(browser_tests.join("check-layout.mjs"))
        .arg(out.join("report.html"))
        .arg(&prefix)
        .args(["390", "1280", "1920"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let layouts: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    for layout in &layouts {
        let width = layout["width"].as_u64().unwrap();
        let charts = layout["charts"].as_array().unwrap();
        let narrowest = charts.iter().map(|chart| chart["width"].as_f64().unwrap()).fold(f64::MAX, f64::min);
        let smallest_text =
            charts.iter().map(|chart| chart["smallestTextPx"].as_f64().unwrap()).fold(f64::MAX, f64::min);
        eprintln!(
            "{width:>4} px: page {} px wide, {} charts, narrowest {narrowest:.0} px, smallest chart text {smallest_text:.1} px, \
             verdict lines {:?}",
            layout["documentWidth"],
            charts.len(),
            layout["verdicts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|verdict| verdict["lines"].as_u64().unwrap())
                .collect::<Vec<_>>()
        );
        assert_eq!(
            layout["documentWidth"].as_u64().unwrap(),
            layout["viewport"].as_u64().unwrap(),
            "{width} px: the page scrolls sideways"
        );
        assert_eq!(layout["overflowing"], Value::Array(vec![]), "{width} px: elements wider than the viewport");
        let verdicts = layout["verdicts"].as_array().unwrap();
        assert_eq!(verdicts.len(), 4);
        for verdict in verdicts {
            assert_eq!(verdict["visible"], true, "{width} px: a verdict out of sight: {verdict}");
            assert_eq!(verdict["clipped"], false, "{width} px: a verdict cut off: {verdict}");
        }
        let long = verdicts.iter().find(|verdict| verdict["text"].as_str().unwrap().contains("errors:")).unwrap();
        assert!(long["lines"].as_u64().unwrap() >= 2, "{width} px: the long verdict wraps: {long}");
        // Tables of figures never scroll sideways; only a chart's folded data table may, on a phone.
        let scrolling: Vec<&str> = layout["scrolling"]
            .as_array()
            .unwrap()
            .iter()
            .map(|table| table.as_str().unwrap())
            .filter(|table| !table.ends_with("(chart data)"))
            .collect();
        assert!(scrolling.is_empty(), "{width} px: tables scroll sideways: {scrolling:?}");
        assert_eq!(charts.len(), 1 + 5 * 4, "an overview and five charts for each of four configurations");
        for chart in charts {
            assert_eq!(chart["outside"], Value::Array(vec![]), "{width} px: text outside its chart: {chart}");
            assert!(chart["width"].as_f64().unwrap() <= width as f64, "{chart}");
            assert!(
                chart["tableRows"].as_u64().unwrap() > 0 && chart["tableColumns"].as_u64().unwrap() >= 2,
                "{chart}"
            );
        }
        // Charts scale with the page: a phone shows them at its width, a wide screen larger than drawn.
        if width == 390 {
            assert!(narrowest >= 300.0, "charts fill a phone's width: {narrowest}");
            assert!(smallest_text >= 8.0, "chart text stays readable on a phone: {smallest_text} px");
        } else {
            assert!(narrowest >= 420.0, "{width} px: charts of at least 420 px: {narrowest}");
        }
        let screenshot = std::fs::metadata(format!("{}-{width}.png", prefix.display())).unwrap().len();
        assert!(screenshot > 10_000, "a real screenshot at {width} px");
    }
}

/// The fixture with `edit` applied, saved in `folder` as `name`.
fn variant(folder: &Path, name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let mut results: Value = serde_json::from_str(&std::fs::read_to_string(fixture()).unwrap()).unwrap();
    edit(&mut results);
    let path = folder.join(name);
    std::fs::write(&path, serde_json::to_string(&results).unwrap()).unwrap();
    path
}

fn metrics_of<'a>(results: &'a mut Value, configuration: &str) -> &'a mut Value {
    let configurations = results["configurations"].as_array_mut().unwrap();
    &mut configurations.iter_mut().find(|c| c["name"] == configuration).unwrap()["metrics"]
}

fn scale(value: &mut Value, factor: f64) {
    *value = Value::from(value.as_f64().unwrap() * factor);
}

/// Scales a latency percentile (`p99_ms`, ...) of every step of `configuration`, with its interval: the curve moved.
fn scale_latency(results: &mut Value, configuration: &str, key: &str, factor: f64) {
    let configurations = results["configurations"].as_array_mut().unwrap();
    let steps =
        configurations.iter_mut().find(|c| c["name"] == configuration).unwrap()["steps"].as_array_mut().unwrap();
    for step in steps {
        scale(&mut step["latency"][key], factor);
        scale(&mut step["latency_intervals"][key]["low"], factor);
        scale(&mut step["latency_intervals"][key]["high"], factor);
    }
}

fn compare(base: &Path, head: &Path, extra: &[&str]) -> (Option<i32>, String, Value) {
    let mut args = vec!["compare", base.to_str().unwrap(), head.to_str().unwrap()];
    args.extend_from_slice(extra);
    let markdown = plateau(&args);
    let mut json_args = args.clone();
    json_args.extend_from_slice(&["--format", "json"]);
    let json = plateau(&json_args);
    assert_eq!(markdown.status.code(), json.status.code());
    (markdown.status.code(), String::from_utf8(markdown.stdout).unwrap(), serde_json::from_slice(&json.stdout).unwrap())
}

const RULES: [&str; 6] =
    ["--fail-on", "max_invocations < -5%", "--fail-on", "p99 > +10%", "--fail-on", "recommendation changed"];

#[test]
fn compare_reports_an_improvement_and_passes() {
    let folder = tempfile::tempdir().unwrap();
    let head = variant(folder.path(), "head.json", |results| {
        scale(&mut metrics_of(results, "medium")["max_invocations"], 1.2);
        scale_latency(results, "medium", "p99_ms", 0.8);
    });
    let (code, markdown, json) = compare(&fixture(), &head, &RULES);
    assert_eq!(code, Some(0), "{markdown}");
    assert_eq!(json["verdict"], "improvement");
    assert!(markdown.starts_with("## plateau: 🟢 improvement"), "{markdown}");
    assert!(
        markdown.contains("| MaxInvocations \\(/min\\) | 12000 | 14400 | 20.0% | 19.4% to 20.6% | 🟢 better |"),
        "{markdown}"
    );
    assert!(markdown.contains("| ModelLatency p99 \\(ms\\) | 38.37 | 30.69 | -20.0% |"), "{markdown}");
    assert!(
        markdown.contains("Plateau at 6 users (base) and 6 (head); latency compared at 6 users on both."),
        "{markdown}"
    );
    // large's p99 was measured to ±14% in one step: whether it rose by 10% is not decided, and the check says so.
    assert!(
        markdown.contains("- **p99 &gt; \\+10%** on large: inconclusive, need about 2 trials of each run:"),
        "{markdown}"
    );
    assert!(!markdown.contains("All checks passed"), "{markdown}");
    let (code, _, _) = compare(&fixture(), &head, &[&RULES[..], &["--fail-on-inconclusive"]].concat());
    assert_eq!(code, Some(5), "--fail-on-inconclusive turns an undecided rule into exit 5");
}

#[test]
fn compare_fails_a_regression_beyond_noise_with_exit_code_4() {
    let folder = tempfile::tempdir().unwrap();
    let head =
        variant(folder.path(), "head.json", |results| scale(&mut metrics_of(results, "large")["max_invocations"], 0.9));
    let (code, markdown, json) = compare(&fixture(), &head, &RULES);
    assert_eq!(code, Some(4), "{markdown}");
    assert_eq!(json["verdict"], "regression");
    assert_eq!(json["fired"].as_array().unwrap().len(), 1);
    assert_eq!(json["fired"][0]["configuration"], "large");
    assert!(
        markdown.contains(
            "- **max\\_invocations &lt; -5%** on large: MaxInvocations \\(/min\\) went from 47985 to 43186 \\(-10.0%, 95% \
             interval -10.4% to -9.6%\\)"
        ),
        "{markdown}"
    );
    let junit = plateau(&[
        "compare",
        fixture().to_str().unwrap(),
        head.to_str().unwrap(),
        RULES[0],
        RULES[1],
        "--format",
        "junit",
    ]);
    let junit = String::from_utf8(junit.stdout).unwrap();
    assert!(
        junit.contains("failures=\"1\"") && junit.contains("<failure message=\"max_invocations &lt; -5% on large\">"),
        "{junit}"
    );
}

#[test]
fn compare_calls_a_change_inside_the_noise_no_significant_change() {
    let folder = tempfile::tempdir().unwrap();
    let head = variant(folder.path(), "head.json", |results| {
        scale(&mut metrics_of(results, "small")["max_invocations"], 0.98);
        scale_latency(results, "small", "p99_ms", 1.04);
    });
    let (code, markdown, json) = compare(&fixture(), &head, &RULES);
    assert_eq!(code, Some(0), "{markdown}");
    assert_eq!(json["verdict"], "no_significant_change");
    // The interval excludes zero, but 2% is below the 3% that counts.
    assert!(
        markdown.contains("| MaxInvocations \\(/min\\) | 6000 | 5880 | -2.0% | -2.5% to -1.5% | ⚪ within noise |"),
        "{markdown}"
    );
}

#[test]
fn compare_fails_when_the_recommendation_changes() {
    let folder = tempfile::tempdir().unwrap();
    let head = variant(folder.path(), "head.json", |results| {
        results["recommendation"]["configuration"] = Value::from("large");
        results["recommendation"]["initial_instance_count"] = Value::from(1);
    });
    let (code, markdown, json) = compare(&fixture(), &head, &RULES);
    assert_eq!(code, Some(4));
    assert_eq!(json["recommendation_changed"], true);
    assert!(markdown.contains("**The recommendation changed:** medium ×2 → **large ×1**"), "{markdown}");
    let (code, _, _) = compare(&fixture(), &head, &RULES[..4]);
    assert_eq!(code, Some(0), "without the rule, a changed recommendation alone passes");
}

#[test]
fn compare_rejects_a_bad_rule_with_exit_code_1() {
    let output =
        plateau(&["compare", fixture().to_str().unwrap(), fixture().to_str().unwrap(), "--fail-on", "p42 > 5%"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown metric `p42`"));
}

#[test]
fn a_user_template_renders_without_code_changes() {
    let folder = tempfile::tempdir().unwrap();
    let results = with_renamed_configuration(folder.path(), "small", "a|b [link]", "quickstart");
    let out = folder.path().join("out");
    let template = repository().join("reports/examples/confluence.wiki.j2");
    let output = plateau(&[
        "report",
        results.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--template",
        template.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let wiki = std::fs::read_to_string(out.join("confluence.wiki")).unwrap();
    assert!(wiki.starts_with("h1. plateau: quickstart"), "{wiki}");
    assert!(wiki.contains("{tip}*Recommendation: medium* with InitialInstanceCount *2*"), "{wiki}");
    assert!(wiki.contains("\n|a\\|b \\[link]|ref.small|6000|"), "{wiki}");
}

/// The fixture with its configurations copied until there are `count`, each renamed, as a 20-configuration job's
/// results would be.
fn with_configurations(folder: &Path, count: usize) -> PathBuf {
    variant(folder, "many.json", |results| {
        let originals = results["configurations"].as_array().unwrap().clone();
        let copies: Vec<Value> = (0..count)
            .map(|index| {
                let mut copy = originals[index % originals.len()].clone();
                copy["name"] = Value::from(format!("{}-{index:02}", copy["name"].as_str().unwrap()));
                copy
            })
            .collect();
        results["configurations"] = Value::Array(copies);
        results["recommendation"]["configuration"] = Value::from("medium-02");
    })
}

#[test]
fn the_pull_request_markdown_draws_mermaid_charts_and_fits_a_comment_for_twenty_configurations() {
    let folder = tempfile::tempdir().unwrap();
    let results = with_configurations(folder.path(), 20);
    let output = plateau(&["report", results.to_str().unwrap(), "--format", "pr"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let markdown = String::from_utf8(output.stdout).unwrap();
    eprintln!("pull-request Markdown for 20 configurations: {} characters", markdown.chars().count());
    // GitHub refuses a comment body over 65,536 characters.
    assert!(markdown.chars().count() < 65_536, "{} characters", markdown.chars().count());
    assert!(markdown.starts_with("## plateau: quickstart\n\n**Recommended: medium-02 ×2**"), "{}", &markdown[..200]);
    assert!(!markdown.contains("!["), "no image links: a comment has nowhere to load them from");
    assert_eq!(markdown.matches("<details>").count(), 21, "the overview charts and one per configuration, folded");
    let table_rows = markdown.lines().filter(|line| line.starts_with("| ") && !line.starts_with("| Configuration"));
    assert_eq!(table_rows.count(), 20);
    // Two overview charts and two per configuration (throughput and latency against load).
    let path = folder.path().join("pr.md");
    std::fs::write(&path, &markdown).unwrap();
    let Some(browser_tests) = browser_tests("the_pull_request_markdown_draws_mermaid_charts") else {
        return;
    };
    let (blocks, charts) = draw_mermaid(&browser_tests, &path);
    assert_eq!(blocks, 2 + 2 * 20);
    for chart in &charts {
        assert_eq!(chart["ok"], true, "Mermaid could not draw a block: {chart}");
        assert!(chart["lines"].as_u64().unwrap() + chart["bars"].as_u64().unwrap() > 0, "an empty chart: {chart}");
    }
    // The overview's bars: one per configuration.
    assert_eq!(charts[0]["bars"], 20, "{}", charts[0]);
}

#[test]
fn the_wiki_markdown_and_the_comparison_draw_their_charts_with_mermaid() {
    let Some(browser_tests) = browser_tests("the_wiki_markdown_and_the_comparison_draw_their_charts_with_mermaid")
    else {
        return;
    };
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("out");
    render(&fixture(), &out);
    let (blocks, charts) = draw_mermaid(&browser_tests, &out.join("report.md"));
    assert_eq!(blocks, 2 + 2 * 4, "two overview charts and two against load for each of four configurations");
    assert!(charts.iter().all(|chart| chart["ok"] == true), "{charts:?}");
    // The latency chart of the first configuration draws p50, p90 and p99.
    let latency = charts.iter().find(|chart| chart["title"].as_str().is_some_and(|t| t.starts_with("ModelLatency")));
    assert_eq!(latency.expect("a latency chart")["lines"], 3, "{charts:?}");

    let head = variant(folder.path(), "head.json", |results| {
        scale(&mut metrics_of(results, "large")["max_invocations"], 0.9);
    });
    let (_, markdown, _) = compare(&fixture(), &head, &RULES);
    assert!(markdown.contains("<details open><summary>large: 🔴 1 worse</summary>"), "{markdown}");
    assert!(markdown.contains("<details><summary>small: ⚪ within noise</summary>"), "{markdown}");
    let path = folder.path().join("compare.md");
    std::fs::write(&path, &markdown).unwrap();
    let (blocks, charts) = draw_mermaid(&browser_tests, &path);
    assert_eq!(blocks, 2, "MaxInvocations and p99, this run against the base");
    for chart in &charts {
        assert_eq!(
            (chart["ok"].clone(), chart["bars"].clone(), chart["lines"].clone()),
            (Value::from(true), Value::from(4), Value::from(1)),
            "{chart}"
        );
    }
}

#[test]
fn the_terminal_summary_fits_100_columns_and_names_the_errors_causes() {
    let folder = tempfile::tempdir().unwrap();
    let results = variant(folder.path(), "errors.json", |results| {
        let small =
            results["configurations"].as_array_mut().unwrap().iter_mut().find(|c| c["name"] == "small").unwrap();
        small["error_details"] = serde_json::json!([{
            "class": "http_5xx", "code": "HTTP 503", "model_status": null, "count": 1204,
            "example": "upstream connect error or disconnect/reset before headers. reset reason: overflow; the server's queue is full and it sheds load"
        }]);
    });
    let output = plateau(&["report", results.to_str().unwrap(), "--format", "summary"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let summary = String::from_utf8(output.stdout).unwrap();
    for line in summary.lines() {
        assert!(line.chars().count() <= 100, "{} columns: {line}", line.chars().count());
    }
    assert!(summary.contains("\n  errors: 1204 × HTTP 503: upstream connect error"), "{summary}");
    assert!(summary.contains("\n  ref.medium ×1: ★ recommended\n"), "{summary}");
    let many = with_configurations(folder.path(), 20);
    let output = plateau(&["report", many.to_str().unwrap(), "--format", "summary"]);
    let summary = String::from_utf8(output.stdout).unwrap();
    assert!(summary.lines().all(|line| line.chars().count() <= 100), "{summary}");
}

#[test]
fn junit_lists_every_configuration_even_without_rules_and_error_rules_are_in_points() {
    let folder = tempfile::tempdir().unwrap();
    let junit = plateau(&["compare", fixture().to_str().unwrap(), fixture().to_str().unwrap(), "--format", "junit"]);
    let junit = String::from_utf8(junit.stdout).unwrap();
    assert!(junit.starts_with("<?xml"), "{junit}");
    assert!(junit.contains("<testsuites name=\"plateau compare\" tests=\"4\" failures=\"0\">"), "{junit}");
    assert!(junit.contains("<testcase classname=\"plateau.compare.configurations\" name=\"medium\">"), "{junit}");
    // XML-escaped as HTML is: `/` as `&#x2f;`.
    assert!(junit.contains("MaxInvocations (&#x2f;min): 12000 to 12000 (0.0%"), "{junit}");

    let head = variant(folder.path(), "head.json", |results| {
        metrics_of(results, "small")["error_rate_percent"] = Value::from(2.0);
    });
    let (code, markdown, json) = compare(&fixture(), &head, &["--fail-on", "error_rate > +1pp"]);
    assert_eq!(code, Some(4), "{markdown}");
    assert_eq!(json["fired"][0]["configuration"], "small", "{json}");
    assert!(
        markdown.contains("- **error\\_rate &gt; \\+1pp** on small: Errors \\(%\\) went from 0 to 2.00 \\(\\+2.0 pp"),
        "{markdown}"
    );
    let refused =
        plateau(&["compare", fixture().to_str().unwrap(), head.to_str().unwrap(), "--fail-on", "error_rate > +1%"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("write `error_rate > +1pp`"), "{}", text(&refused));
}

fn git(folder: &Path, args: &[&str]) -> String {
    let output = Command::new("git").arg("-C").arg(folder).args(args).output().expect("git is installed");
    assert!(output.status.success(), "git {args:?}: {}", text(&output));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn publish_pushes_a_page_an_index_and_a_trend_to_a_git_wiki_and_never_shows_credentials() {
    let folder = tempfile::tempdir().unwrap();
    let wiki = folder.path().join("wiki.git");
    git(folder.path(), &["-c", "init.defaultBranch=master", "init", "--quiet", "--bare", wiki.to_str().unwrap()]);
    let first = variant(folder.path(), "first.json", |results| {
        results["manifest"]["revision"] = serde_json::json!({"commit": "1111111aaaaaaaa", "branch": "main"});
    });
    let second = variant(folder.path(), "second.json", |results| {
        results["manifest"]["started_at"] = Value::from("2026-12-03T10:00:00Z");
        results["manifest"]["revision"] = serde_json::json!({"commit": "2222222bbbbbbbb", "branch": "main"});
        scale(&mut metrics_of(results, "medium")["max_invocations"], 0.9);
    });
    let publish = |results: &Path| plateau(&["publish", results.to_str().unwrap(), "--repo", wiki.to_str().unwrap()]);
    for (results, page) in
        [(&first, "plateau-quickstart-20261202T122200Z"), (&second, "plateau-quickstart-20261203T100000Z")]
    {
        let output = publish(results);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        assert!(
            String::from_utf8_lossy(&output.stdout).starts_with(&format!("published {page} to ")),
            "{}",
            text(&output)
        );
    }
    let again = publish(&second);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("already published"), "{}", text(&again));

    let clone = folder.path().join("clone");
    git(folder.path(), &["clone", "--quiet", wiki.to_str().unwrap(), clone.to_str().unwrap()]);
    assert_eq!(
        git(&clone, &["rev-list", "--count", "HEAD"]).trim(),
        "2",
        "one commit a run; the same run again made none"
    );
    let index = std::fs::read_to_string(clone.join("plateau-runs.md")).unwrap();
    let rows: Vec<&str> = index.lines().filter(|line| line.starts_with("| 2026")).collect();
    assert_eq!(rows.len(), 2, "{index}");
    assert!(
        rows[0].starts_with("| 2026-12-03 10:00:00 | quickstart | `2222222` main | medium ×2 | 10800 |"),
        "{index}"
    );
    assert!(rows[1].contains("`1111111` main") && rows[1].contains("| 12000 |"), "{index}");
    assert!(rows[0].ends_with("[report](plateau-quickstart-20261203T100000Z) |"), "{index}");
    assert!(index.contains("Trends: [quickstart](plateau-trend-quickstart)."), "{index}");

    let trend = std::fs::read_to_string(clone.join("plateau-trend-quickstart.md")).unwrap();
    assert!(trend.contains("x-axis \"run\" [\"12-02 12:22 1111111\", \"12-03 10:00 2222222\"]"), "{trend}");
    // Lines in the configurations' order: medium is the third.
    assert!(trend.contains("    line [12000, 10800]\n"), "{trend}");

    let page = std::fs::read_to_string(clone.join("plateau-quickstart-20261203T100000Z.md")).unwrap();
    let linked: Vec<&str> = page
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .filter(|link| link.ends_with(".svg"))
        .collect();
    assert_eq!(linked.len(), 1 + 5 * 4, "the overview and five charts a configuration: {linked:?}");
    for link in linked {
        assert!(link.starts_with("plateau-files/plateau-quickstart-20261203T100000Z/charts/"), "{link}");
        assert!(clone.join(link).is_file(), "the page links {link}, which was not pushed");
    }
    if let Some(browser_tests) = browser_tests("publish_pushes_a_page_an_index_and_a_trend_to_a_git_wiki") {
        let (blocks, charts) = draw_mermaid(&browser_tests, &clone.join("plateau-trend-quickstart.md"));
        assert_eq!(blocks, 3, "MaxInvocations, p99 and cost over runs");
        assert!(charts.iter().all(|chart| chart["ok"] == true && chart["lines"].as_u64().unwrap() >= 3), "{charts:?}");
    }

    // A remote that cannot be reached: the error says so, without the token in its URL.
    let secret = "https://plateau-bot:s3cr3t-t0ken@127.0.0.1:9/acme/models.wiki.git";
    let failed = plateau(&["publish", first.to_str().unwrap(), "--repo", secret]);
    assert_eq!(failed.status.code(), Some(2), "{}", text(&failed));
    let shown = text(&failed);
    assert!(
        !shown.contains("s3cr3t-t0ken") && shown.contains("https://***@127.0.0.1:9/acme/models.wiki.git"),
        "{shown}"
    );
    let outside = plateau(&["publish", first.to_str().unwrap(), "--repo", wiki.to_str().unwrap(), "--folder", "../up"]);
    assert_eq!(outside.status.code(), Some(1), "{}", text(&outside));
    let nowhere = plateau(&["publish", first.to_str().unwrap()]);
    assert_eq!(nowhere.status.code(), Some(1), "{}", text(&nowhere));
    assert!(text(&nowhere).contains("publish needs --repo URL"), "{}", text(&nowhere));
}

/// A request as the loopback Confluence saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query, as sent (percent-encoded).
    target: String,
    authorization: String,
    atlassian_token: Option<String>,
    content_type: String,
    body: Vec<u8>,
}

/// What the loopback Confluence holds: pages (id, title, version, body, ancestors) and attachments (page, file name,
/// versions).
#[derive(Default)]
struct Wiki {
    pages: Vec<(String, String, u64, String, Value)>,
    attachments: Vec<(String, String, u64)>,
    seen: Vec<Seen>,
}

fn percent_decode(text: &str) -> String {
    let bytes = text.replace('+', " ").into_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            decoded.push(u8::from_str_radix(std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap(), 16).unwrap());
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).unwrap()
}

/// Reads one HTTP/1.1 request (Content-Length bodies, as reqwest sends JSON and multipart forms).
fn read_request(stream: &mut std::net::TcpStream) -> Option<Seen> {
    use std::io::Read;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
        let read = stream.read(&mut chunk).ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines()
            .find_map(|line| line.split_once(':').filter(|(key, _)| key.eq_ignore_ascii_case(name)))
            .map(|(_, value)| value.trim().to_string())
    };
    assert!(header("transfer-encoding").is_none(), "plateau sends bodies with a length: {head}");
    let length: usize = header("content-length").map_or(0, |length| length.parse().unwrap());
    while buffer.len() < head_end + length {
        let read = stream.read(&mut chunk).ok().filter(|read| *read > 0)?;
        buffer.extend_from_slice(&chunk[..read]);
    }
    let mut request_line = head.lines().next().unwrap().split(' ');
    Some(Seen {
        method: request_line.next().unwrap().to_string(),
        target: request_line.next().unwrap().to_string(),
        authorization: header("authorization").unwrap_or_default(),
        atlassian_token: header("x-atlassian-token"),
        content_type: header("content-type").unwrap_or_default(),
        body: buffer[head_end..head_end + length].to_vec(),
    })
}

/// Confluence's REST API as far as publishing uses it, on 127.0.0.1, signed in with `authorization` only.
fn loopback_confluence(authorization: String) -> (u16, std::sync::Arc<std::sync::Mutex<Wiki>>) {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let wiki = std::sync::Arc::new(std::sync::Mutex::new(Wiki::default()));
    let state = wiki.clone();
    // A thread a connection: a client's pool may open a second connection while its first is idle.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let (mut stream, state, authorization) = (stream.unwrap(), state.clone(), authorization.clone());
            std::thread::spawn(move || {
                while let Some(request) = read_request(&mut stream) {
                    let (status, body) = answer(&mut state.lock().unwrap(), &request, &authorization, port);
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    state.lock().unwrap().seen.push(request);
                    if stream.write_all(reply.as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, wiki)
}

fn answer(wiki: &mut Wiki, request: &Seen, authorization: &str, port: u16) -> (&'static str, String) {
    if request.authorization != authorization {
        return ("401 Unauthorized", r#"{"message":"Basic authentication with passwords is deprecated"}"#.into());
    }
    let base = format!("http://127.0.0.1:{port}/wiki");
    let page_json = |id: &str, version: u64| {
        serde_json::json!({"id": id, "type": "page", "version": {"number": version},
            "_links": {"base": base, "webui": format!("/spaces/ENG/pages/{id}")}})
    };
    let (path, query) = request.target.split_once('?').unwrap_or((&request.target, ""));
    let query: Vec<(String, String)> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (percent_decode(key), percent_decode(value)))
        .collect();
    let parameter = |name: &str| query.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str());
    let parts: Vec<&str> = path.trim_start_matches("/wiki/rest/api/").split('/').collect();
    match (request.method.as_str(), parts.as_slice()) {
        ("GET", ["content"]) => {
            assert_eq!((parameter("spaceKey"), parameter("type")), (Some("ENG"), Some("page")));
            let found: Vec<Value> = wiki
                .pages
                .iter()
                .filter(|page| Some(page.1.as_str()) == parameter("title"))
                .map(|page| page_json(&page.0, page.2))
                .collect();
            ("200 OK", serde_json::json!({"results": found, "_links": {"base": base}}).to_string())
        }
        ("POST", ["content"]) => {
            let content: Value = serde_json::from_slice(&request.body).unwrap();
            assert_eq!((&content["type"], &content["space"]["key"]), (&Value::from("page"), &Value::from("ENG")));
            assert_eq!(content["body"]["storage"]["representation"], "storage");
            let id = (wiki.pages.len() + 1).to_string();
            wiki.pages.push((
                id.clone(),
                content["title"].as_str().unwrap().to_string(),
                1,
                content["body"]["storage"]["value"].as_str().unwrap().to_string(),
                content["ancestors"].clone(),
            ));
            ("200 OK", page_json(&id, 1).to_string())
        }
        ("PUT", ["content", id]) => {
            let content: Value = serde_json::from_slice(&request.body).unwrap();
            let page = wiki.pages.iter_mut().find(|page| page.0 == *id).unwrap();
            if content["version"]["number"].as_u64() != Some(page.2 + 1) {
                return ("409 Conflict", r#"{"message":"Version must be incremented on update"}"#.into());
            }
            page.2 += 1;
            page.3 = content["body"]["storage"]["value"].as_str().unwrap().to_string();
            ("200 OK", page_json(id, page.2).to_string())
        }
        ("GET", ["content", page, "child", "attachment"]) => {
            let found: Vec<Value> = wiki
                .attachments
                .iter()
                .filter(|attachment| attachment.0 == *page && Some(attachment.1.as_str()) == parameter("filename"))
                .map(|attachment| serde_json::json!({"id": format!("att-{}-{}", attachment.0, attachment.1), "title": attachment.1}))
                .collect();
            ("200 OK", serde_json::json!({"results": found}).to_string())
        }
        ("POST", ["content", page, "child", "attachment", rest @ ..]) => {
            if request.atlassian_token.as_deref() != Some("no-check") {
                return ("403 Forbidden", r#"{"message":"XSRF check failed"}"#.into());
            }
            assert!(request.content_type.starts_with("multipart/form-data; boundary="), "{}", request.content_type);
            let body = String::from_utf8_lossy(&request.body);
            let name = body.split("filename=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
            assert!(body.contains("Content-Type: image/svg+xml") && body.contains("<svg "), "an SVG upload: {name}");
            match rest {
                [] => {
                    assert!(!wiki.attachments.iter().any(|a| a.0 == *page && a.1 == name), "{name} attached twice");
                    wiki.attachments.push((page.to_string(), name, 1));
                }
                [id, "data"] => {
                    let attachment =
                        wiki.attachments.iter_mut().find(|a| format!("att-{}-{}", a.0, a.1) == *id).unwrap();
                    assert_eq!(attachment.1, name);
                    attachment.2 += 1;
                }
                _ => return ("404 Not Found", "{}".into()),
            }
            ("200 OK", r#"{"results":[]}"#.into())
        }
        _ => ("404 Not Found", r#"{"message":"No space with key"}"#.into()),
    }
}

#[test]
fn publish_to_confluence_creates_then_versions_one_page_with_its_charts_and_never_shows_the_token() {
    use base64::Engine as _;
    let folder = tempfile::tempdir().unwrap();
    let (user, token) = ("bot@example.com", "ATATT3xFfGF0-s3cr3t-t0ken");
    let authorization =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}")));
    let (port, wiki) = loopback_confluence(authorization);
    let results = variant(folder.path(), "results.json", |results| {
        results["job"]["name"] = Value::from("quickstart <b>&amp;</b>");
    });
    let url = format!("http://127.0.0.1:{port}/wiki");
    let publish = |token: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_plateau"));
        command.args(["publish", results.to_str().unwrap(), "--to", "confluence", "--url", &url, "--space", "ENG"]);
        command.args(["--parent", "4242"]).env("CONFLUENCE_USER", user).env_remove("CONFLUENCE_TOKEN");
        if let Some(token) = token {
            command.env("CONFLUENCE_TOKEN", token);
        }
        command.output().unwrap()
    };

    let created = publish(Some(token));
    assert_eq!(created.status.code(), Some(0), "{}", text(&created));
    let title = "plateau: quickstart <b>&amp;</b> run of 2026-12-02 12:22:00 UTC";
    assert_eq!(
        String::from_utf8_lossy(&created.stdout).trim(),
        format!("published {title:?} to {url}/spaces/ENG/pages/1 (created, 21 charts attached)")
    );
    let again = publish(Some(token));
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("(version 2, 21 charts attached)"), "{}", text(&again));

    let wiki = wiki.lock().unwrap();
    assert_eq!(wiki.pages.len(), 1, "publishing again makes a new version, not a second page");
    let (_, stored_title, version, body, ancestors) = &wiki.pages[0];
    assert_eq!((stored_title.as_str(), *version), (title, 2));
    assert_eq!(ancestors, &serde_json::json!([{"id": "4242"}]));
    assert_eq!(wiki.attachments.len(), 21);
    assert!(wiki.attachments.iter().all(|(_, _, versions)| *versions == 2), "each chart updated in place");
    // Every chart the page shows is attached, and the page is well-formed storage XHTML with the name escaped.
    for (_, name, _) in &wiki.attachments {
        assert!(body.contains(&format!("<ri:attachment ri:filename=\"{name}\"/>")), "{name} is not shown");
    }
    assert!(body.contains("quickstart &lt;b&gt;&amp;amp;&lt;&#x2f;b&gt;") && !body.contains("<b>&amp;</b>"), "{body}");
    assert!(body.contains("Recommendation: medium</strong> with InitialInstanceCount <strong>2"), "{body}");
    let document = format!(
        "<page xmlns:ac=\"http://atlassian.com/content\" xmlns:ri=\"http://atlassian.com/resource/identifier\">{body}</page>"
    );
    let parsed = Command::new("python3")
        .args(["-c", "import sys, xml.dom.minidom; xml.dom.minidom.parseString(sys.stdin.buffer.read())"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(document.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(parsed.status.success(), "not well-formed XML: {}", text(&parsed));
    let uploads = wiki.seen.iter().filter(|seen| seen.method == "POST" && seen.target.contains("/child/attachment"));
    assert_eq!(uploads.count(), 42, "21 charts, attached once and then updated once");
    drop(wiki);

    // A wrong token: refused, with what to check, and the token is never shown.
    let refused = publish(Some("wrong-t0ken-value"));
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let shown = text(&refused);
    assert!(
        shown.contains("401 Unauthorized") && shown.contains("check CONFLUENCE_USER and CONFLUENCE_TOKEN"),
        "{shown}"
    );
    for output in [&created, &again, &refused] {
        assert!(!text(output).contains("s3cr3t") && !text(output).contains("wrong-t0ken"), "{}", text(output));
    }
    let unset = publish(None);
    assert_eq!(unset.status.code(), Some(1), "{}", text(&unset));
    assert!(text(&unset).contains("CONFLUENCE_TOKEN is not set"), "{}", text(&unset));
    let credentials_in_url = Command::new(env!("CARGO_BIN_EXE_plateau"))
        .args(["publish", results.to_str().unwrap(), "--to", "confluence", "--space", "ENG", "--url"])
        .arg(format!("http://bot:{token}@127.0.0.1:{port}/wiki"))
        .env("CONFLUENCE_TOKEN", token)
        .output()
        .unwrap();
    assert_eq!(credentials_in_url.status.code(), Some(1), "{}", text(&credentials_in_url));
    assert!(!text(&credentials_in_url).contains(token), "{}", text(&credentials_in_url));
}

#[test]
fn history_records_runs_shows_a_jobs_trend_and_compares_a_run_with_the_median_of_a_branch() {
    let folder = tempfile::tempdir().unwrap();
    let database = folder.path().join("history.sqlite3");
    let history = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_plateau")).args(args).env("PLATEAU_HISTORY", &database).output().unwrap()
    };
    // Five runs of main a day apart, medium's MaxInvocations 12000 scaled, and one of a feature branch.
    let factors = [0.90, 1.00, 1.10, 0.95, 1.05];
    let mut files: Vec<PathBuf> = factors
        .iter()
        .enumerate()
        .map(|(day, factor)| {
            variant(folder.path(), &format!("main-{day}.json"), |results| {
                results["manifest"]["started_at"] = Value::from(format!("2026-11-2{day}T10:00:00Z"));
                results["manifest"]["revision"] =
                    serde_json::json!({"commit": format!("{day}{day}{day}{day}{day}{day}{day}abc"), "branch": "main"});
                scale(&mut metrics_of(results, "medium")["max_invocations"], *factor);
            })
        })
        .collect();
    files.push(variant(folder.path(), "feature.json", |results| {
        results["manifest"]["started_at"] = Value::from("2026-11-29T10:00:00Z");
        results["manifest"]["revision"] = serde_json::json!({"commit": "fffffffabc", "branch": "feature"});
        scale(&mut metrics_of(results, "medium")["max_invocations"], 0.5);
    }));
    let mut import = vec!["history", "--import"];
    import.extend(files.iter().map(|file| file.to_str().unwrap()));
    let imported = history(&import);
    assert_eq!(imported.status.code(), Some(0), "{}", text(&imported));
    assert_eq!(String::from_utf8_lossy(&imported.stdout).matches("recorded").count(), 6, "{}", text(&imported));
    let again = history(&["history", "--import", files[0].to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("is run 1 already"), "{}", text(&again));

    let jobs = history(&["history"]);
    assert!(
        String::from_utf8_lossy(&jobs.stdout)
            .lines()
            .any(|line| line.starts_with("quickstart") && line.contains(" 6  2026-11-29")),
        "{}",
        text(&jobs)
    );
    let trend = history(&["history", "quickstart", "--branch", "main"]);
    assert_eq!(trend.status.code(), Some(0), "{}", text(&trend));
    let shown = String::from_utf8_lossy(&trend.stdout).to_string();
    let rows: Vec<&str> = shown.lines().filter(|line| line.starts_with("2026-")).collect();
    assert_eq!(rows.len(), 5, "main's runs only: {shown}");
    assert!(
        rows[0].starts_with("2026-11-20 10:00 0000000 main")
            && rows[0].contains("medium ×2")
            && rows[0].contains(" 10800 "),
        "oldest first: {shown}"
    );
    assert!(shown.lines().all(|line| line.chars().count() <= 100), "{shown}");
    assert!(
        shown.starts_with("quickstart: 5 runs, oldest first; figures of each run's recommended configuration\n"),
        "{shown}"
    );
    assert!(
        shown.contains("\nmedian of 5 complete runs: MaxInvocations 12000, p99 (ms) 38.4, USD per 1M 0.208\n"),
        "{shown}"
    );
    let json: Value =
        serde_json::from_slice(&history(&["history", "quickstart", "--format", "json", "--last", "2"]).stdout).unwrap();
    let starts: Vec<&str> = json.as_array().unwrap().iter().map(|run| run["started_at"].as_str().unwrap()).collect();
    assert_eq!(starts, ["2026-11-24T10:00:00Z", "2026-11-29T10:00:00Z"], "the newest two, oldest first");

    // The median of main's last three runs (1.10, 0.95, 1.05 of 12000): 12600, from the run that measured it.
    let head = variant(folder.path(), "head.json", |results| {
        results["manifest"]["started_at"] = Value::from("2026-11-30T10:00:00Z");
        scale(&mut metrics_of(results, "medium")["max_invocations"], 0.8);
    });
    let head = head.to_str().unwrap();
    let against = |extra: &[&str]| {
        let mut args = vec!["compare", head, "--against-history", "--branch", "main", "--last", "3"];
        args.extend(extra);
        history(&args)
    };
    let json = against(&["--format", "json"]);
    assert_eq!(json.status.code(), Some(0), "{}", text(&json));
    let comparison: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(comparison["history"]["runs"], 3);
    assert_eq!(
        (comparison["history"]["from"].as_str(), comparison["history"]["to"].as_str()),
        (Some("2026-11-22T10:00:00Z"), Some("2026-11-24T10:00:00Z"))
    );
    let medium = comparison["configurations"].as_array().unwrap().iter().find(|c| c["name"] == "medium").unwrap();
    let max = medium["deltas"].as_array().unwrap().iter().find(|d| d["metric"] == "max_invocations").unwrap();
    assert!((max["base"].as_f64().unwrap() - 12600.0).abs() < 1e-6, "{max}");
    let gate = against(&["--fail-on", "max_invocations < -5%"]);
    assert_eq!(gate.status.code(), Some(4), "-27% against the median fails the gate: {}", text(&gate));
    assert!(
        String::from_utf8_lossy(&gate.stdout)
            .contains("Against the history: the median of the last 3 complete runs of main"),
        "{}",
        text(&gate)
    );

    let nothing = history(&["compare", head, "--against-history", "--branch", "release"]);
    assert_eq!(nothing.status.code(), Some(1), "{}", text(&nothing));
    assert!(text(&nothing).contains("no complete run of job \"quickstart\" on branch release"), "{}", text(&nothing));
    let both = history(&["compare", head, head, "--against-history"]);
    assert_eq!(both.status.code(), Some(1), "{}", text(&both));
    // A history written by a newer plateau is refused, not misread.
    let newer = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('PRAGMA user_version = 99'); c.commit()",
        ])
        .arg(&database)
        .output()
        .unwrap();
    assert!(newer.status.success(), "{}", text(&newer));
    let refused = history(&["history", "quickstart"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(text(&refused).contains("written by a newer plateau (schema 99"), "{}", text(&refused));
}
