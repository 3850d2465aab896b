//! Publishing a run to a git-backed wiki (GitHub and GitLab wikis are git repositories): the run's report as a page
//! of its own with its charts, an index of every run newest first, and a trend page per job, committed and pushed
//! (docs/publishing.md).
//!
//! The wiki keeps, beside each run's page, the few figures the index and trend pages are made from (the run's
//! digest, `plateau-files/<run>/run.json`); both pages are rebuilt from all of them at every publish, so publishing is
//! idempotent, two publishes that race are merged by rebuilding, and a page edited by hand is simply rebuilt.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::git::{GitError, Repository};
use crate::report::digest::{ConfigurationDigest, RunDigest, slug, stamp};
use crate::report::mermaid::{Plot, XyChart};
use crate::report::{self, ReportError};
use crate::results::Results;

/// Where plateau keeps a run's files in the wiki, beside the pages.
const FILES: &str = "plateau-files";
/// The index of every run.
const INDEX_PAGE: &str = "plateau-runs";
/// Runs a trend page draws: the most a chart's categories read well at.
const TREND_RUNS: usize = 30;
/// Attempts to push when another publish got there first.
const PUSH_ATTEMPTS: usize = 3;

/// What the wiki keeps of a run: its digest and the name of its page.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunRecord {
    #[serde(flatten)]
    digest: RunDigest,
    /// The run's page, relative to plateau's folder in the wiki, without `.md` (wikis link pages without it).
    page: String,
}

impl RunRecord {
    fn of(results: &Results) -> RunRecord {
        let digest = RunDigest::of(results);
        let page = format!("plateau-{}-{}", slug(&digest.job), stamp(&digest.started_at));
        RunRecord { digest, page }
    }
}

/// The job's trend page, without `.md`.
fn trend_page(job: &str) -> String {
    format!("plateau-trend-{}", slug(job))
}

/// Where to publish.
pub struct WikiTarget {
    /// The wiki's git URL or path.
    pub repository: String,
    pub branch: Option<String>,
    /// A folder inside the wiki for plateau's pages; the root when empty.
    pub folder: PathBuf,
    pub templates: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read the wiki's record {}: {source}", path.display())]
    Record { path: PathBuf, source: serde_json::Error },
    #[error("cannot create a working folder: {0}")]
    Workdir(std::io::Error),
    #[error("the wiki changed under every one of {PUSH_ATTEMPTS} attempts to push; publish again")]
    Contended,
    #[error(
        "{folder:?} must be a relative folder inside the wiki without `..` (a page outside it could overwrite anything)"
    )]
    Folder { folder: PathBuf },
}

/// What a publish did.
#[derive(Debug)]
pub enum Published {
    /// Committed and pushed: the run's page, relative to the wiki's root, without extension.
    Pushed { page: String, commit: String },
    /// The wiki already had this run exactly as it would be written.
    Unchanged { page: String },
}

/// Publishes `results` (its charts come from the results again, not from the folder) to the wiki.
pub fn to_wiki(results: &Results, target: &WikiTarget) -> Result<Published, PublishError> {
    if target.folder.is_absolute() || target.folder.components().any(|part| part.as_os_str() == "..") {
        return Err(PublishError::Folder { folder: target.folder.clone() });
    }
    let workdir = tempfile::tempdir().map_err(PublishError::Workdir)?;
    let record = RunRecord::of(results);
    let page = target.folder.join(&record.page).to_string_lossy().into_owned();
    for _ in 0..PUSH_ATTEMPTS {
        let clone = workdir.path().join("wiki");
        if clone.exists() {
            std::fs::remove_dir_all(&clone).map_err(PublishError::Workdir)?;
        }
        let repository = Repository::clone(&target.repository, target.branch.as_deref(), &clone)?;
        let root = repository.folder().join(&target.folder);
        write_pages(results, &record, &root, target.templates.as_deref())?;
        repository.output(&["add", "--all", "--", "."])?;
        if repository.output(&["status", "--porcelain"])?.is_empty() {
            return Ok(Published::Unchanged { page });
        }
        let message = format!("plateau: {} run of {}", record.digest.job, record.digest.started_at);
        commit(&repository, &message)?;
        // An unborn branch (an empty wiki) has no upstream yet: name it, as `git push` would need.
        let branch = repository.output(&["symbolic-ref", "--short", "HEAD"])?;
        match repository.output(&["push", "--quiet", "origin", &format!("HEAD:refs/heads/{branch}")]) {
            Ok(_) => {
                let commit = repository.output(&["rev-parse", "HEAD"])?;
                return Ok(Published::Pushed { page, commit });
            }
            // Someone else pushed first: clone again and rebuild the pages over theirs.
            Err(GitError::Failed { message, .. })
                if message.contains("rejected") || message.contains("fetch first") => {}
            Err(error) => return Err(error.into()),
        }
    }
    Err(PublishError::Contended)
}

/// Commits with the user's identity when git has one, else as plateau (a CI runner usually has none).
fn commit(repository: &Repository, message: &str) -> Result<(), GitError> {
    let has_identity = repository.output(&["config", "user.email"]).is_ok();
    let mut arguments = Vec::new();
    if !has_identity {
        arguments.extend(["-c", "user.name=plateau", "-c", "user.email=plateau@localhost"]);
    }
    arguments.extend(["commit", "--quiet", "--no-verify", "-m", message]);
    repository.output(&arguments).map(|_| ())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), PublishError> {
    let created = path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(path, bytes));
    created.map_err(|source| PublishError::Write { path: path.to_path_buf(), source })
}

/// Writes this run's page, charts and record under `root`, then rebuilds the index and the job's trend page from
/// every record there.
fn write_pages(
    results: &Results,
    record: &RunRecord,
    root: &Path,
    templates: Option<&Path>,
) -> Result<(), PublishError> {
    let env = report::environment(templates);
    let files = format!("{FILES}/{}", record.page);
    let mut view = report::view(results, &env)?;
    for chart in super::charts_mut(&mut view) {
        chart.file = format!("{files}/{}", chart.file);
        write(&root.join(&chart.file), chart.svg.as_bytes())?;
    }
    write(&root.join(format!("{}.md", record.page)), report::render(&env, "report.md.j2", &view)?.as_bytes())?;
    let record_json = serde_json::to_vec_pretty(record).expect("a record serializes");
    write(&root.join(&files).join("run.json"), &record_json)?;

    let mut records = read_records(&root.join(FILES))?;
    records
        .sort_by(|a, b| (b.digest.started_at.cmp(&a.digest.started_at)).then_with(|| a.digest.job.cmp(&b.digest.job)));
    let index = IndexView { runs: &records, trend_pages: trend_pages(&records) };
    write(&root.join(format!("{INDEX_PAGE}.md")), report::render(&env, "wiki-index.md.j2", &index)?.as_bytes())?;
    let mut job_runs: Vec<&RunRecord> =
        records.iter().filter(|run| run.digest.job == record.digest.job).take(TREND_RUNS).collect();
    job_runs.reverse();
    let charts = trend_charts(&job_runs.iter().map(|run| &run.digest).collect::<Vec<_>>());
    let trend = TrendView { job: &record.digest.job, index_page: INDEX_PAGE, charts, runs: job_runs };
    let trend_page = format!("{}.md", trend_page(&record.digest.job));
    write(&root.join(trend_page), report::render(&env, "wiki-trend.md.j2", &trend)?.as_bytes())?;
    Ok(())
}

/// Every run's record under `files`.
fn read_records(files: &Path) -> Result<Vec<RunRecord>, PublishError> {
    let mut records = Vec::new();
    let Ok(entries) = std::fs::read_dir(files) else { return Ok(records) };
    for entry in entries.flatten() {
        let path = entry.path().join("run.json");
        let Ok(text) = std::fs::read(&path) else { continue };
        records.push(serde_json::from_slice(&text).map_err(|source| PublishError::Record { path, source })?);
    }
    Ok(records)
}

#[derive(Serialize)]
struct IndexView<'a> {
    /// Newest first.
    runs: &'a [RunRecord],
    /// Each job's trend page, by job name.
    trend_pages: Vec<(String, String)>,
}

fn trend_pages(records: &[RunRecord]) -> Vec<(String, String)> {
    let mut jobs: Vec<&str> = records.iter().map(|run| run.digest.job.as_str()).collect();
    jobs.sort_unstable();
    jobs.dedup();
    jobs.into_iter().map(|job| (job.to_string(), trend_page(job))).collect()
}

#[derive(Serialize)]
struct TrendView<'a> {
    job: &'a str,
    index_page: &'a str,
    /// Oldest first, as the charts read.
    runs: Vec<&'a RunRecord>,
    charts: Vec<String>,
}

/// One figure of a configuration's digest.
type Pick = fn(&ConfigurationDigest) -> Option<f64>;

/// MaxInvocations, p99 and cost per 1M inferences over the runs, one line per configuration that every run measured
/// (a line needs a value at each run), at most as many as the palette tells apart.
fn trend_charts(runs: &[&RunDigest]) -> Vec<String> {
    let Some(last) = runs.last() else { return Vec::new() };
    let figure = |run: &RunDigest, name: &str, pick: Pick| {
        run.configurations.iter().find(|configuration| configuration.name == name).and_then(pick)
    };
    let metrics: [(&str, &str, Pick); 3] = [
        ("MaxInvocations over runs", "invocations per minute", |c| c.max_invocations),
        ("p99 over runs", "latency (ms)", |c| c.p99_ms),
        ("CostPerInference over runs", "USD per 1M inferences", |c| c.cost_per_million_usd),
    ];
    let categories: Vec<String> = runs.iter().map(|run| run.label()).collect();
    metrics
        .into_iter()
        .filter_map(|(title, y_label, pick)| {
            let plots: Vec<Plot> = last
                .configurations
                .iter()
                .filter_map(|configuration| {
                    let values =
                        runs.iter().map(|run| figure(run, &configuration.name, pick)).collect::<Option<Vec<f64>>>()?;
                    Some(Plot::Line { name: configuration.name.clone(), values })
                })
                .take(crate::report::chart::PALETTE.len())
                .collect();
            (!plots.is_empty()).then(|| {
                XyChart {
                    title: title.into(),
                    x_label: "run".into(),
                    categories: categories.clone(),
                    y_label: y_label.into(),
                    plots,
                }
                .render()
            })
        })
        .collect()
}
