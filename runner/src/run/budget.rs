//! `[limits] max_cost_usd` while a run goes: what its test runs' instances have cost so far, and the stop when that
//! reaches the budget. A test run is billed from the moment its server is asked for (for a provisioned endpoint,
//! before CreateModel) until it is stopped (the endpoint deleted), at its price per hour times its instances.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the spending is checked against the budget.
const CHECK_EVERY: Duration = Duration::from_millis(200);

pub(crate) struct Spending {
    max_cost_usd: f64,
    /// What finished test runs cost.
    settled_usd: Mutex<f64>,
    /// Test runs being billed now: their index, since when, and their price per hour.
    billing: Mutex<Vec<(usize, Instant, f64)>>,
}

impl Spending {
    pub(super) fn new(max_cost_usd: f64) -> Self {
        Self { max_cost_usd, settled_usd: Mutex::new(0.0), billing: Mutex::new(Vec::new()) }
    }

    pub(super) fn max_cost_usd(&self) -> f64 {
        self.max_cost_usd
    }

    /// Test run `index` is billed from now at `usd_per_hour`.
    pub(super) fn start(&self, index: usize, usd_per_hour: f64) {
        lock(&self.billing).push((index, Instant::now(), usd_per_hour));
    }

    /// Test run `index` is billed no more.
    pub(super) fn end(&self, index: usize) {
        let mut billing = lock(&self.billing);
        if let Some(position) = billing.iter().position(|(run, _, _)| *run == index) {
            let (_, since, usd_per_hour) = billing.remove(position);
            *lock(&self.settled_usd) += cost_usd(since, usd_per_hour);
        }
    }

    pub(super) fn spent_usd(&self) -> f64 {
        let running: f64 =
            lock(&self.billing).iter().map(|(_, since, usd_per_hour)| cost_usd(*since, *usd_per_hour)).sum();
        *lock(&self.settled_usd) + running
    }

    /// Resolves once the spending reaches the budget.
    pub(super) async fn reached(&self) {
        while self.spent_usd() < self.max_cost_usd {
            tokio::time::sleep(CHECK_EVERY).await;
        }
    }
}

fn cost_usd(since: Instant, usd_per_hour: f64) -> f64 {
    usd_per_hour * since.elapsed().as_secs_f64() / 3600.0
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spending_counts_running_and_finished_test_runs_at_their_rates() {
        // 3,600,000 USD an hour is 1 USD a millisecond: elapsed time shows at once.
        let spending = Spending::new(1.0e9);
        spending.start(0, 3.6e6);
        spending.start(1, 0.0);
        std::thread::sleep(Duration::from_millis(20));
        spending.end(0);
        let settled = spending.spent_usd();
        assert!((20.0..200.0).contains(&settled), "{settled}");
        std::thread::sleep(Duration::from_millis(20));
        // Run 0 is no longer billed, and run 1 costs nothing.
        assert_eq!(spending.spent_usd(), settled);
    }
}
