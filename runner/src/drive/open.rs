//! The open model: a scheduler hands arrivals, each due at its intended time, to workers that own one session each,
//! whatever the server does; an arrival with no free worker under `max_in_flight` is dropped and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng as _;
use rand::rngs::StdRng;
use rand_distr::{Distribution as _, Exp};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::measure::Recorder;
use crate::plan::Segment;
use crate::precise_timer;
use crate::spec::{Arrivals, TrafficOptions};
use crate::target::{Session, Target};

/// How far ahead of its due time the scheduler hands an arrival to a worker, which then waits for it on the
/// precise timer ...
const DISPATCH_AHEAD: Duration = Duration::from_millis(2);
/// ... so the scheduler wakes at most once per tick, however high the rate: a round's arrivals are made before
/// the dispatch lock is taken, and handed out under it in one go.
const SCHEDULER_TICK: Duration = Duration::from_millis(1);

/// The open model's scheduler. Each arrival is due at an intended time. While fewer than `max_in_flight` requests
/// are out, it goes to a worker (each worker owns one session, and takes the next arrival as soon as it is free);
/// otherwise it is dropped and counted.
pub(super) struct OpenArrivals {
    /// The rate to offer (an f64's bits), set by the control loop as the steps go.
    pub(super) rate_per_s: Arc<AtomicU64>,
    pub(super) options: TrafficOptions,
    pub(super) seed: u64,
    /// Which arrivals of the seeded schedule are this process's: every shard draws them all and keeps its own.
    pub(super) segment: Segment,
    pub(super) started_at: Instant,
}

/// What the scheduler and its workers share.
struct OpenShared {
    recorder: Arc<Recorder>,
    dispatch: std::sync::Mutex<Dispatch>,
}

/// Who takes the next arrival. Held only for a few pushes and pops, never across an await.
#[derive(Default)]
struct Dispatch {
    /// Free workers, each with its next request prepared.
    idle: Vec<usize>,
    /// Arrivals handed out ahead of their due time that found no free worker: the first worker to come free
    /// before one is due takes it. One still here when it falls due had all `max_in_flight` workers busy at its
    /// time, and is dropped.
    pending: std::collections::VecDeque<Instant>,
}

impl Dispatch {
    /// Drops the pending arrivals that fell due with no worker free; returns how many.
    fn expire(&mut self, now: Instant) -> u64 {
        let expired = self.pending.iter().take_while(|due| **due < now).count();
        self.pending.drain(..expired);
        expired as u64
    }
}

impl OpenArrivals {
    pub(super) async fn run<T: Target>(self, target: Arc<T>, recorder: Arc<Recorder>, run: CancellationToken) {
        let shared = Arc::new(OpenShared { recorder, dispatch: std::sync::Mutex::new(Dispatch::default()) });
        let cap = self.options.max_in_flight as usize;
        // Each worker's own queue of due times; it never holds more than one.
        let mut workers: Vec<mpsc::UnboundedSender<Instant>> = Vec::new();
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut due = self.started_at;
        // Arrivals of the whole schedule drawn so far.
        let mut arrival: u64 = 0;
        let mut round: Vec<Instant> = Vec::new();
        let mut next_round = self.started_at;
        let cancelled = run.cancelled();
        tokio::pin!(cancelled);
        // Until the control loop ends the run.
        loop {
            // At least a tick between rounds; a slow rate sleeps until its next arrival is near.
            let wake = due.checked_sub(DISPATCH_AHEAD).unwrap_or(due).max(next_round);
            tokio::select! {
                _ = &mut cancelled => return,
                _ = precise_timer::sleep_until(wake) => {}
            }
            let now = Instant::now();
            next_round = now + SCHEDULER_TICK;
            let horizon = now + DISPATCH_AHEAD;
            round.clear();
            while due <= horizon {
                let rate_per_s = f64::from_bits(self.rate_per_s.load(Ordering::Relaxed));
                if rate_per_s <= 0.0 {
                    // Nothing to offer (the run is ending): look again next round.
                    due = next_round;
                    break;
                }
                if self.segment.keeps(arrival) {
                    round.push(due);
                }
                arrival += 1;
                let gap_s = match self.options.arrivals {
                    Arrivals::Uniform => 1.0 / rate_per_s,
                    Arrivals::Poisson => Exp::new(rate_per_s).map_or(1.0 / rate_per_s, |exp| exp.sample(&mut rng)),
                };
                due += Duration::from_secs_f64(gap_s);
            }
            let dropped = {
                let mut dispatch = shared.dispatch.lock().expect("dispatch lock");
                let mut dropped = dispatch.expire(now);
                for &arrival in &round {
                    match dispatch.idle.pop() {
                        Some(worker) => {
                            let _ = workers[worker].send(arrival);
                        }
                        // Every worker is busy: a new one while fewer than `max_in_flight` exist.
                        None if workers.len() < cap => {
                            let (sender, arrivals) = mpsc::unbounded_channel();
                            let _ = sender.send(arrival);
                            let worker = open_worker(
                                target.session(),
                                workers.len(),
                                arrivals,
                                Arc::clone(&shared),
                                run.clone(),
                            );
                            tokio::spawn(worker);
                            workers.push(sender);
                        }
                        None if arrival < now => dropped += 1,
                        None => dispatch.pending.push_back(arrival),
                    }
                }
                dropped
            };
            if dropped > 0 {
                shared.recorder.add_dropped(0, dropped);
            }
        }
    }
}

/// An arrival due within this is sent at once: a wake on the precise timer is a round trip through another thread,
/// which costs more than the wait (at rates beyond capacity every arrival a worker takes is due within
/// microseconds), and is itself late by about this much.
const SEND_EARLY_WITHIN: Duration = Duration::from_micros(50);

/// One open-model worker: takes an arrival (handed to it, or the next pending one when it comes free), waits for
/// its due time, sends it, and times it from when it was due, not from when it went out: a server that stalls
/// delays every request scheduled behind the stall, and their latency shows it.
async fn open_worker<S: Session>(
    mut session: S,
    index: usize,
    mut arrivals: mpsc::UnboundedReceiver<Instant>,
    shared: Arc<OpenShared>,
    run: CancellationToken,
) {
    let shard = shared.recorder.shard_for(index);
    // A new worker is born with its first arrival already queued; after that it comes free between requests.
    let mut free = false;
    // Waited on by reference: registering a new waiter with the token on every request costs a lock.
    let cancelled = run.cancelled();
    tokio::pin!(cancelled);
    loop {
        // The next body is made before the worker is free for an arrival, never between its due time and sending.
        if let Err(error) = session.prepare() {
            shared.recorder.fail(error.to_string());
            return;
        }
        let claimed = free.then(|| {
            let mut dispatch = shared.dispatch.lock().expect("dispatch lock");
            let expired = dispatch.expire(Instant::now());
            let next = dispatch.pending.pop_front();
            if next.is_none() {
                dispatch.idle.push(index);
            }
            (next, expired)
        });
        free = true;
        let due = match claimed {
            Some((next, expired)) => {
                if expired > 0 {
                    shared.recorder.add_dropped(shard, expired);
                }
                next
            }
            None => None,
        };
        let due = match due {
            Some(due) => due,
            None => {
                let next = tokio::select! {
                    _ = &mut cancelled => return,
                    next = arrivals.recv() => next,
                };
                let Some(due) = next else { return };
                due
            }
        };
        if due.saturating_duration_since(Instant::now()) > SEND_EARLY_WITHIN {
            precise_timer::sleep_until(due).await;
        }
        let sent_at = Instant::now();
        shared.recorder.generator_lag(shard, sent_at.saturating_duration_since(due).as_micros() as u64);
        shared.recorder.started(shard);
        let outcome = tokio::select! {
            biased;
            _ = &mut cancelled => return,
            outcome = session.call() => outcome,
        };
        // From the due time when it went out late; from when it went out when that was (slightly) early.
        let outcome = outcome.retimed(due.min(sent_at).elapsed().as_micros() as u64);
        shared.recorder.finished(shard, outcome, session.gaps_us());
    }
}
