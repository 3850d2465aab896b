//! Exit codes, one place for all of them (docs/decisions.md, "Outputs and exit codes").

/// What a plateau command ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done, with a recommendation.
    Success = 0,
    /// A job file, results file or argument is invalid.
    InvalidInput = 1,
    /// The run failed or ended partial (interrupted, a target gone, a configuration that could not run).
    RunFailed = 2,
    /// The run completed, but no configuration meets the requirements.
    NoConfigurationMeetsRequirements = 3,
    /// `compare` found a regression by the `--fail-on` rules.
    Regression = 4,
    /// The run finished, but the recommendation is inconclusive: the best candidate's plateau was not confirmed,
    /// or its margin over the runner-up is within the figures' intervals.
    Inconclusive = 5,
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit as u8)
    }
}
