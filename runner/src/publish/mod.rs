//! Publishing a run where teams read results (docs/publishing.md): a git-backed wiki, with an index and a trend page
//! per job (`git_wiki`), or Confluence through its REST API (`confluence`). Both render the run's charts again from
//! the results, so a results.json alone is enough to publish.

pub mod confluence;
pub mod git_wiki;

use crate::report::{RenderedChart, ReportView};

/// Every chart of a report: the overview, then each configuration's.
fn charts_mut<'v>(view: &'v mut ReportView<'_>) -> impl Iterator<Item = &'v mut RenderedChart> {
    view.overview_chart
        .iter_mut()
        .chain(view.configurations.iter_mut().flat_map(|configuration| configuration.charts.iter_mut()))
}
