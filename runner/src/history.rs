//! The history of runs: every finished run recorded in an embedded SQLite database (docs/history.md), so
//! `plateau history JOB` can show a job's trend and `plateau compare --against-history` can judge a run against
//! the usual figures of a branch rather than against one run that may have been lucky.
//!
//! A run is stored twice over: its digest (the few figures the trend shows, one row per configuration) to query, and
//! its whole results document (gzipped, about 12 KB) so a comparison has every step and interval it needs.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use crate::report::digest::{ConfigurationDigest, RunDigest};
use crate::results::{Results, RunStatus};

/// The schema this plateau writes; a database from a newer plateau is refused rather than misread.
const SCHEMA_VERSION: i64 = 1;
/// How long a writer waits for another (several runs may end at once).
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    job TEXT NOT NULL,
    started_at TEXT NOT NULL,
    job_sha256 TEXT NOT NULL,
    commit_sha TEXT,
    branch TEXT,
    dirty INTEGER NOT NULL,
    partial INTEGER NOT NULL,
    recommendation TEXT,
    initial_instance_count INTEGER,
    inconclusive INTEGER NOT NULL,
    results_gz BLOB NOT NULL,
    recorded_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    UNIQUE (job, started_at, job_sha256)
);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job, branch, started_at);
CREATE TABLE IF NOT EXISTS configurations (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    verdict TEXT,
    max_invocations REAL,
    lower_bound INTEGER NOT NULL,
    p99_ms REAL,
    cost_per_million_usd REAL,
    PRIMARY KEY (run_id, name)
);
";

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot open the history {}: {source}", path.display())]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("cannot create the history's folder {}: {source}", path.display())]
    Folder { path: PathBuf, source: std::io::Error },
    #[error(
        "the history {} was written by a newer plateau (schema {found}, this one reads {SCHEMA_VERSION}); \
         upgrade plateau or name another file with --history",
        path.display()
    )]
    Newer { path: PathBuf, found: i64 },
    #[error("the history {}: {source}", path.display())]
    Query { path: PathBuf, source: rusqlite::Error },
    #[error("the history {} holds a run that cannot be read ({what}): {detail}", path.display())]
    Corrupt { path: PathBuf, what: String, detail: String },
}

/// Where the history is kept when neither `--history` nor `PLATEAU_HISTORY` says: the user's data folder
/// (`$XDG_DATA_HOME/plateau`, else `~/.local/share/plateau`), so every run on a machine lands in one place.
pub fn default_path() -> Option<PathBuf> {
    let data =
        std::env::var_os("XDG_DATA_HOME").filter(|folder| !folder.is_empty()).map(PathBuf::from).or_else(|| {
            std::env::var_os("HOME").filter(|home| !home.is_empty()).map(|home| Path::new(&home).join(".local/share"))
        })?;
    Some(data.join("plateau").join("history.sqlite3"))
}

/// A run as the history lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredRun {
    pub id: i64,
    #[serde(flatten)]
    pub digest: RunDigest,
}

/// Whether recording added a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Added {
        id: i64,
    },
    /// The same run (job, start and job file) was recorded before.
    AlreadyThere {
        id: i64,
    },
}

pub struct History {
    connection: Connection,
    path: PathBuf,
}

impl History {
    /// Opens the history at `path`, creating it (and its folder) when it does not exist yet.
    pub fn open(path: &Path) -> Result<History, HistoryError> {
        if let Some(folder) = path.parent().filter(|folder| !folder.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).map_err(|source| HistoryError::Folder { path: folder.into(), source })?;
        }
        let open = |source| HistoryError::Open { path: path.into(), source };
        let connection = Connection::open(path).map_err(open)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(open)?;
        let history = History { connection, path: path.to_path_buf() };
        let found: i64 = history.connection.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(open)?;
        if found > SCHEMA_VERSION {
            return Err(HistoryError::Newer { path: path.into(), found });
        }
        history.connection.execute_batch(SCHEMA).map_err(open)?;
        history.connection.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(open)?;
        history.connection.pragma_update(None, "foreign_keys", true).map_err(open)?;
        Ok(history)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn query_error(&self) -> impl Fn(rusqlite::Error) -> HistoryError + '_ {
        |source| HistoryError::Query { path: self.path.clone(), source }
    }

    /// Records a run: its digest and its whole results. Recording the same run again changes nothing.
    pub fn record(&mut self, results: &Results) -> Result<Recorded, HistoryError> {
        let digest = RunDigest::of(results);
        let revision = digest.revision.as_ref();
        let path = self.path.clone();
        let error = move |source| HistoryError::Query { path: path.clone(), source };
        let transaction = self.connection.transaction().map_err(&error)?;
        let existing: Option<i64> = transaction
            .query_row(
                "SELECT id FROM runs WHERE job = ?1 AND started_at = ?2 AND job_sha256 = ?3",
                params![digest.job, digest.started_at, results.manifest.job_sha256],
                |row| row.get(0),
            )
            .optional()
            .map_err(&error)?;
        if let Some(id) = existing {
            return Ok(Recorded::AlreadyThere { id });
        }
        transaction
            .execute(
                "INSERT INTO runs (job, started_at, job_sha256, commit_sha, branch, dirty, partial, recommendation,
                                   initial_instance_count, inconclusive, results_gz)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    digest.job,
                    digest.started_at,
                    results.manifest.job_sha256,
                    revision.map(|revision| &revision.commit),
                    revision.and_then(|revision| revision.branch.as_ref()),
                    revision.is_some_and(|revision| revision.dirty),
                    digest.partial,
                    digest.recommendation,
                    digest.initial_instance_count,
                    digest.inconclusive,
                    compress(results),
                ],
            )
            .map_err(&error)?;
        let id = transaction.last_insert_rowid();
        for (position, configuration) in digest.configurations.iter().enumerate() {
            transaction
                .execute(
                    "INSERT INTO configurations (run_id, position, name, status, verdict, max_invocations, lower_bound,
                                                 p99_ms, cost_per_million_usd)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        id,
                        position as i64,
                        configuration.name,
                        status_text(configuration.status),
                        configuration.verdict,
                        configuration.max_invocations,
                        configuration.lower_bound,
                        configuration.p99_ms,
                        configuration.cost_per_million_usd,
                    ],
                )
                .map_err(&error)?;
        }
        transaction.commit().map_err(&error)?;
        Ok(Recorded::Added { id })
    }

    /// The jobs recorded: name, runs and the newest run's start, by name.
    pub fn jobs(&self) -> Result<Vec<(String, i64, String)>, HistoryError> {
        let mut statement = self
            .connection
            .prepare("SELECT job, COUNT(*), MAX(started_at) FROM runs GROUP BY job ORDER BY job")
            .map_err(self.query_error())?;
        let rows =
            statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?))).map_err(self.query_error())?;
        rows.collect::<Result<_, _>>().map_err(self.query_error())
    }

    /// The newest `last` runs of `job` (of `branch`, when given; complete runs only when `complete`), newest first.
    pub fn runs(
        &self,
        job: &str,
        branch: Option<&str>,
        complete: bool,
        last: usize,
    ) -> Result<Vec<StoredRun>, HistoryError> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT id, started_at, commit_sha, branch, dirty, partial, recommendation, initial_instance_count,
                        inconclusive
                 FROM runs
                 WHERE job = ?1 AND (?2 IS NULL OR branch = ?2) AND (?3 = 0 OR partial = 0)
                 ORDER BY started_at DESC, id DESC
                 LIMIT ?4",
            )
            .map_err(self.query_error())?;
        let rows = statement
            .query_map(params![job, branch, complete, last as i64], |row| {
                let commit: Option<String> = row.get(2)?;
                let revision = commit.map(|commit| -> rusqlite::Result<_> {
                    Ok(crate::git::Revision { commit, branch: row.get(3)?, dirty: row.get(4)? })
                });
                Ok(StoredRun {
                    id: row.get(0)?,
                    digest: RunDigest {
                        job: job.to_string(),
                        started_at: row.get(1)?,
                        revision: revision.transpose()?,
                        partial: row.get(5)?,
                        recommendation: row.get(6)?,
                        initial_instance_count: row.get(7)?,
                        inconclusive: row.get(8)?,
                        configurations: Vec::new(),
                    },
                })
            })
            .map_err(self.query_error())?;
        let mut runs: Vec<StoredRun> = rows.collect::<Result<_, _>>().map_err(self.query_error())?;
        let mut statement = self
            .connection
            .prepare(
                "SELECT name, status, verdict, max_invocations, lower_bound, p99_ms, cost_per_million_usd
                 FROM configurations WHERE run_id = ?1 ORDER BY position",
            )
            .map_err(self.query_error())?;
        for run in &mut runs {
            let rows = statement
                .query_map([run.id], |row| {
                    let status: String = row.get(1)?;
                    Ok((
                        status,
                        ConfigurationDigest {
                            name: row.get(0)?,
                            status: RunStatus::Complete,
                            verdict: row.get(2)?,
                            max_invocations: row.get(3)?,
                            lower_bound: row.get(4)?,
                            p99_ms: row.get(5)?,
                            cost_per_million_usd: row.get(6)?,
                        },
                    ))
                })
                .map_err(self.query_error())?;
            for row in rows {
                let (status, mut configuration) = row.map_err(self.query_error())?;
                configuration.status = parse_status(&status).ok_or_else(|| HistoryError::Corrupt {
                    path: self.path.clone(),
                    what: format!("run {}", run.id),
                    detail: format!("unknown status {status:?}"),
                })?;
                run.digest.configurations.push(configuration);
            }
        }
        Ok(runs)
    }

    /// A recorded run's whole results.
    pub fn results(&self, id: i64) -> Result<Results, HistoryError> {
        let compressed: Vec<u8> = self
            .connection
            .query_row("SELECT results_gz FROM runs WHERE id = ?1", [id], |row| row.get(0))
            .map_err(self.query_error())?;
        let corrupt =
            |detail: String| HistoryError::Corrupt { path: self.path.clone(), what: format!("run {id}"), detail };
        let mut text = String::new();
        flate2::read::GzDecoder::new(compressed.as_slice())
            .read_to_string(&mut text)
            .map_err(|error| corrupt(error.to_string()))?;
        Results::from_json(Path::new(&format!("run {id}")), &text).map_err(|error| corrupt(error.to_string()))
    }
}

fn compress(results: &Results) -> Vec<u8> {
    let json = serde_json::to_vec(results).expect("results serialize");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&json).expect("writing to memory cannot fail");
    encoder.finish().expect("writing to memory cannot fail")
}

fn status_text(status: RunStatus) -> String {
    serde_json::to_value(status).ok().and_then(|value| value.as_str().map(str::to_string)).unwrap_or_default()
}

fn parse_status(text: &str) -> Option<RunStatus> {
    serde_json::from_value(serde_json::Value::from(text)).ok()
}

/// The baseline `compare --against-history` judges a run against: for each configuration, its median run among
/// `runs` (the run whose MaxInvocations for it is the median, so latency and every interval come from one real
/// run and stay comparable at one load), and the recommendation most of them made. `runs` are newest first; the
/// newest gives the frame (job, configurations' order) and wins ties.
pub fn median_baseline(runs: &[Results]) -> Option<Results> {
    let newest = runs.first()?;
    let mut baseline = newest.clone();
    for configuration in &mut baseline.configurations {
        let mut measured: Vec<(f64, &crate::results::ConfigurationResult)> = runs
            .iter()
            .filter_map(|run| run.configurations.iter().find(|candidate| candidate.name == configuration.name))
            .filter_map(|candidate| Some((candidate.metrics.as_ref()?.max_invocations, candidate)))
            .collect();
        if measured.is_empty() {
            continue;
        }
        // A stable sort keeps the newer of equal figures first; the lower median of an even count.
        measured.sort_by(|a, b| a.0.total_cmp(&b.0));
        *configuration = measured[(measured.len() - 1) / 2].1.clone();
    }
    let mut counts: Vec<(Option<&str>, usize)> = Vec::new();
    for run in runs {
        let made = run.recommendation.as_ref().and_then(|recommendation| recommendation.configuration.as_deref());
        match counts.iter_mut().find(|(configuration, _)| *configuration == made) {
            Some((_, count)) => *count += 1,
            None => counts.push((made, 1)),
        }
    }
    // The first of the most frequent: counts are in newest-first order, and max_by_key keeps the last maximum.
    let most = counts.iter().rev().max_by_key(|(_, count)| *count).and_then(|(configuration, _)| *configuration);
    if let Some(run) = runs.iter().find(|run| {
        run.recommendation.as_ref().and_then(|recommendation| recommendation.configuration.as_deref()) == most
    }) {
        baseline.recommendation = run.recommendation.clone();
    }
    // The trials' own test runs do not describe the median figures: leave them out.
    baseline.trial_runs.clear();
    Some(baseline)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Results {
        let text = include_str!("../../tests/fixtures/quickstart-results.json");
        Results::from_json(Path::new("quickstart-results.json"), text).expect("the fixture reads")
    }

    /// A run whose `medium` measured `max_invocations` and which recommended `recommended`.
    fn run(max_invocations: f64, recommended: &str) -> Results {
        let mut results = fixture();
        let medium = results.configurations.iter_mut().find(|result| result.name == "medium").unwrap();
        medium.metrics.as_mut().unwrap().max_invocations = max_invocations;
        results.recommendation.as_mut().unwrap().configuration = Some(recommended.to_string());
        results
    }

    #[test]
    fn the_baseline_takes_each_configurations_median_run_and_the_usual_recommendation() {
        // Newest first.
        let runs = [run(100.0, "small"), run(300.0, "medium"), run(200.0, "medium"), run(400.0, "small")];
        let baseline = median_baseline(&runs).unwrap();
        let medium = baseline.configurations.iter().find(|result| result.name == "medium").unwrap();
        // 100, 200, 300, 400: the lower median, a whole run's figures.
        assert_eq!(medium.metrics.as_ref().unwrap().max_invocations, 200.0);
        // Two "small", two "medium": the newest of the most frequent.
        assert_eq!(baseline.recommendation.unwrap().configuration.as_deref(), Some("small"));
        let single = median_baseline(&runs[1..2]).unwrap();
        assert_eq!(single.recommendation.unwrap().configuration.as_deref(), Some("medium"));
        assert!(median_baseline(&[]).is_none());
    }

    #[test]
    fn a_run_is_recorded_once_and_read_back_whole() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("nested/history.sqlite3");
        let mut history = History::open(&path).unwrap();
        let results = fixture();
        let Recorded::Added { id } = history.record(&results).unwrap() else { panic!("a new run") };
        assert_eq!(history.record(&results).unwrap(), Recorded::AlreadyThere { id });
        let runs = history.runs(&results.job.name, None, true, 10).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].digest.configurations.len(), results.configurations.len());
        assert_eq!(runs[0].digest.configurations[2].status, RunStatus::Complete);
        let back = history.results(id).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&results).unwrap());
        assert_eq!(history.jobs().unwrap(), [(results.job.name.clone(), 1, results.manifest.started_at.clone())]);
    }
}
