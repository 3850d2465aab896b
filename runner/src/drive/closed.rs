//! The closed model: virtual users, each owning one session and sending its next request when the last one
//! returns (after any think time); and the probe that measures how late the runtime wakes them.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::measure::{ErrorClass, Outcome, Recorder};
use crate::target::{Session, Target};

/// How often the closed model's probe checks that the runtime wakes tasks on time.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);

/// Measures how late the runtime wakes a sleeping task: when the closed model's users are delayed by a busy
/// load generator, this is delayed too.
pub(super) async fn lag_probe(recorder: Arc<Recorder>, run: CancellationToken) {
    let mut due = tokio::time::Instant::now() + PROBE_INTERVAL;
    loop {
        tokio::select! {
            _ = run.cancelled() => return,
            _ = tokio::time::sleep_until(due) => {}
        }
        let lag = tokio::time::Instant::now().saturating_duration_since(due);
        recorder.generator_lag(0, lag.as_micros() as u64);
        due = tokio::time::Instant::now() + PROBE_INTERVAL;
    }
}

/// The running virtual users; user `i` exists while the schedule asks for more than `i` users.
pub(super) struct VirtualUsers<T: Target> {
    target: Arc<T>,
    recorder: Arc<Recorder>,
    run: CancellationToken,
    active: Vec<(CancellationToken, JoinHandle<()>)>,
    think_time: Duration,
}

impl<T: Target> VirtualUsers<T> {
    pub(super) fn new(target: Arc<T>, recorder: Arc<Recorder>, run: CancellationToken, think_time: Duration) -> Self {
        Self { target, recorder, run, active: Vec::new(), think_time }
    }

    pub(super) fn set(&mut self, count: u32) {
        let count = count as usize;
        while self.active.len() < count {
            let token = self.run.child_token();
            let shard = self.recorder.shard_for(self.active.len());
            let user =
                virtual_user(self.target.session(), Arc::clone(&self.recorder), shard, self.think_time, token.clone());
            let task = tokio::spawn(user);
            self.active.push((token, task));
        }
        while self.active.len() > count {
            let (token, _) = self.active.pop().expect("more users than asked for");
            token.cancel();
        }
    }

    pub(super) async fn stop(self) {
        self.run.cancel();
        for (_, task) in self.active {
            let _ = task.await;
        }
    }
}

async fn virtual_user<S: Session>(
    mut session: S,
    recorder: Arc<Recorder>,
    shard: usize,
    think_time: Duration,
    token: CancellationToken,
) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(10);
    let mut backoff = FIRST_BACKOFF;
    // Waited on by reference: registering a new waiter with the token on every request costs a lock.
    let cancelled = token.cancelled();
    tokio::pin!(cancelled);
    loop {
        if let Err(error) = session.prepare() {
            recorder.fail(error.to_string());
            return;
        }
        recorder.started(shard);
        let outcome = tokio::select! {
            biased;
            _ = &mut cancelled => return,
            outcome = session.call() => outcome,
        };
        recorder.finished(shard, outcome, session.gaps_us());
        // A refused connection returns at once: back off so a dead target is not hammered in a tight loop.
        if outcome == (Outcome::Failure { class: ErrorClass::Connect }) {
            tokio::select! {
                _ = &mut cancelled => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        } else {
            backoff = FIRST_BACKOFF;
            if !think_time.is_zero() {
                tokio::select! {
                    _ = &mut cancelled => return,
                    _ = tokio::time::sleep(think_time) => {}
                }
            }
        }
    }
}
