//! The reference endpoint's service as computation, for command targets: `workers` threads each compute a
//! request's service time in their own CPU time, so the server's capacity depends on the CPU it gets, as a real
//! model server's does. A neighbour taking CPU (`neighbour.rs`) then lowers capacity, which the virtual clock
//! cannot show. What the server really did is measured where it can be known: the requests completed while every
//! worker had work, over the time every worker had work.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// A request's service: compute for `cpu`, then say so.
struct Job {
    cpu: Duration,
    done: oneshot::Sender<()>,
}

/// `workers` threads computing service times handed to them in order.
pub struct CpuWorkers {
    jobs: mpsc::Sender<Job>,
    saturation: Mutex<Saturation>,
    workers: u32,
}

/// Time during which requests in the server (queued or in service) were at least as many as its workers, and the
/// requests completed during it: their ratio is the rate the server serves at with every worker busy, whatever
/// took CPU from it.
struct Saturation {
    in_server: u32,
    since: Instant,
    saturated: Duration,
    completed: u64,
}

/// The calling thread's CPU time (user and system).
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given and nothing else.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "Linux always has a per-thread CPU clock");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Computes until this thread has used `cpu` of CPU time. The work between clock reads is small (about a
/// microsecond) so a service ends within a few microseconds of its time, and opaque to the optimiser.
fn compute_for(cpu: Duration) {
    let until = thread_cpu_time() + cpu;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    while thread_cpu_time() < until {
        for _ in 0..256 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
        }
        std::hint::black_box(state);
    }
}

impl CpuWorkers {
    pub fn start(workers: u32) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..workers {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new().name(format!("reference-worker-{index}")).spawn(move || {
                loop {
                    // The lock is held only while waiting for the next job; the channel closes with the server.
                    let Ok(job) = receiver.lock().expect("worker queue lock").recv() else { return };
                    compute_for(job.cpu);
                    let _ = job.done.send(());
                }
            })?;
        }
        let saturation = Saturation { in_server: 0, since: Instant::now(), saturated: Duration::ZERO, completed: 0 };
        Ok(Self { jobs: sender, saturation: Mutex::new(saturation), workers })
    }

    /// Counts a request in from its arrival, before it queues: the server is saturated while its requests are at
    /// least its workers.
    pub fn arrive(&self) -> InServer<'_> {
        self.change(Change::Arrived);
        InServer { workers: self, completed: false }
    }

    /// Serves one request: `cpu` of computation on the next free worker.
    pub async fn compute(&self, in_server: &mut InServer<'_>, cpu: Duration) {
        let (done, finished) = oneshot::channel();
        let queued = self.jobs.send(Job { cpu, done });
        if queued.is_ok() && finished.await.is_ok() {
            in_server.completed = true;
            self.change(Change::Completed);
        }
    }

    fn change(&self, change: Change) {
        let now = Instant::now();
        let mut guard = self.saturation.lock().expect("saturation lock");
        let saturation = &mut *guard;
        if saturation.in_server >= self.workers {
            saturation.saturated += now.saturating_duration_since(saturation.since);
            if change == Change::Completed {
                saturation.completed += 1;
            }
        }
        saturation.since = now;
        match change {
            Change::Arrived => saturation.in_server += 1,
            Change::Completed | Change::Left => saturation.in_server -= 1,
        }
    }

    /// Requests per second served while every worker had work, or `None` before the server was ever saturated.
    pub fn saturated_rps(&self) -> Option<f64> {
        let saturation = self.saturation.lock().expect("saturation lock");
        let seconds = saturation.saturated.as_secs_f64();
        (saturation.completed > 0 && seconds > 0.0).then(|| saturation.completed as f64 / seconds)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Arrived,
    Completed,
    /// A request that left without being served (its client went away).
    Left,
}

/// A request in the server, from arrival to completion; one dropped unserved is counted out.
pub struct InServer<'a> {
    workers: &'a CpuWorkers,
    completed: bool,
}

impl Drop for InServer<'_> {
    fn drop(&mut self) {
        if !self.completed {
            self.workers.change(Change::Left);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computing_takes_the_cpu_time_asked_for() {
        let started = thread_cpu_time();
        compute_for(Duration::from_millis(20));
        let used = thread_cpu_time() - started;
        assert!(used >= Duration::from_millis(20) && used < Duration::from_millis(21), "used {used:?}");
    }

    #[tokio::test]
    async fn one_worker_kept_busy_serves_at_one_over_its_service_time() {
        let workers = Arc::new(CpuWorkers::start(1).unwrap());
        let requests: Vec<_> = (0..40)
            .map(|_| {
                let workers = Arc::clone(&workers);
                tokio::spawn(async move {
                    let mut in_server = workers.arrive();
                    workers.compute(&mut in_server, Duration::from_millis(2)).await;
                })
            })
            .collect();
        for request in requests {
            request.await.unwrap();
        }
        // 2 ms a request on one thread: 500/s, less what the machine took from it.
        let rps = workers.saturated_rps().unwrap();
        assert!((350.0..=505.0).contains(&rps), "{rps} requests/s");
        let saturation = workers.saturation.lock().unwrap();
        assert_eq!((saturation.in_server, saturation.completed), (0, 40));
    }
}
