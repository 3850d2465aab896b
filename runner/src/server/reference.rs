//! The built-in reference endpoint: an HTTP/1.1 model server of known capacity. `workers` requests are served at
//! once, each for a service time drawn from a stated distribution, the rest wait FIFO, so its capacity is
//! `workers / mean service time`. Noise modes make it behave as real servers do, with a known effect: periodic
//! stalls of every worker (a garbage collector) take their share of time away, and drift scales service times
//! as the minutes pass.
//!
//! Service runs on a virtual clock: a queued request starts when its worker's previous request was due to end, not
//! when the tokio timer (up to ~1 ms late) woke it. Timer lateness therefore adds to latency but never takes away
//! capacity, and the realized capacity is `workers / mean drawn service time`. The sleep itself uses a timer thread
//! accurate to tens of microseconds, so latency too stays close to the model.
//!
//! Served on its own as a command target (`plateau serve-reference --work cpu`), service can instead be computation
//! (`cpu_work.rs`), so that what takes CPU from the server, such as a neighbour (`neighbour.rs`), takes capacity.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use rand_distr::{Distribution as _, Exp, LogNormal};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::cpu_work::CpuWorkers;
use super::neighbour::{Neighbour, NeighbourProcess};
use crate::measure::{ResourceSample, ResourceSource};
use crate::spec::{ReferenceModel, ServiceTime};

/// What the reference endpoint actually did, to compare measured figures with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Realized {
    pub served: u64,
    pub nominal_capacity_rps: f64,
    /// The mean of the service times drawn (drift included).
    pub mean_service_ms: f64,
    /// What the server could serve with every worker busy: workers / the mean drawn service time, less the share
    /// of time stalls took; for computed service, the requests completed while every worker had work over that
    /// time (whatever took CPU from it).
    pub realized_capacity_rps: f64,
    /// How late, on average, the timer woke a request after its service was due to end (0 for computed service).
    pub mean_timer_lateness_ms: f64,
}

struct Stats {
    served: AtomicU64,
    service_us_total: AtomicU64,
    lateness_us_total: AtomicU64,
}

/// What a service time is spent on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Work {
    /// Waiting on the virtual clock: capacity is the model's whatever the machine does.
    Clock,
    /// Computing on `workers` threads: capacity is what the CPU the server gets allows (no stalls), less what a
    /// neighbour started beside the server takes.
    Cpu { neighbour: Option<Neighbour> },
}

struct ServiceModel {
    model: ReferenceModel,
    /// Stalls and drift are timed from here: the job's start when plateau runs the endpoint, so a slow drift of the
    /// machine reaches every configuration that runs later, as it would on a real one.
    origin: Instant,
    workers: Workers,
    rng: Mutex<StdRng>,
    draw: Draw,
    stats: Stats,
}

/// The workers, as `Work` says.
enum Workers {
    Clock {
        permits: Semaphore,
        /// When each worker is next free, on the virtual clock.
        free_at: Mutex<BinaryHeap<Reverse<Instant>>>,
    },
    Cpu(CpuWorkers),
}

/// How one service time is drawn, with its distribution's parameters worked out once.
enum Draw {
    Fixed,
    Lognormal(LogNormal<f64>),
    /// In milliseconds: rate 1 / mean.
    Exponential(Exp<f64>),
    /// Fast requests take `fast_ms` on average, a share `slow_share` of them `slow_ms`; each mode is scaled by
    /// `jitter` (mean 1). Two exact service times would let closed-loop users lock into a pattern that depends on
    /// how the run started, which real servers do not do.
    Bimodal {
        fast_ms: f64,
        slow_ms: f64,
        slow_share: f64,
        jitter: LogNormal<f64>,
    },
}

/// The coefficient of variation of each bimodal mode around its own mean.
const BIMODAL_MODE_CV: f64 = 0.2;

/// A lognormal distribution of mean `mean` and coefficient of variation `cv`.
fn lognormal(mean: f64, cv: f64) -> LogNormal<f64> {
    // sigma^2 = ln(1 + cv^2), mu = ln(mean) - sigma^2 / 2.
    let sigma_squared = (1.0 + cv * cv).ln();
    LogNormal::new(mean.ln() - sigma_squared / 2.0, sigma_squared.sqrt()).expect("validated parameters")
}

impl ServiceModel {
    fn new(model: ReferenceModel, work: Work, seed: u64, origin: Instant) -> std::io::Result<Self> {
        let mean_ms = model.service_time_ms;
        let draw = match model.service_time {
            ServiceTime::Fixed => Draw::Fixed,
            ServiceTime::Lognormal { cv } => Draw::Lognormal(lognormal(mean_ms, cv)),
            ServiceTime::Exponential => Draw::Exponential(Exp::new(1.0 / mean_ms).expect("a positive mean")),
            ServiceTime::Bimodal { slow_share, slow_factor } => {
                let fast_ms = mean_ms / (1.0 - slow_share + slow_share * slow_factor);
                Draw::Bimodal {
                    fast_ms,
                    slow_ms: fast_ms * slow_factor,
                    slow_share,
                    jitter: lognormal(1.0, BIMODAL_MODE_CV),
                }
            }
        };
        let now = Instant::now();
        let workers = match work {
            Work::Clock => Workers::Clock {
                permits: Semaphore::new(model.workers as usize),
                free_at: Mutex::new((0..model.workers).map(|_| Reverse(now)).collect()),
            },
            Work::Cpu { .. } => Workers::Cpu(CpuWorkers::start(model.workers)?),
        };
        Ok(Self {
            model,
            origin,
            workers,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            draw,
            stats: Stats {
                served: AtomicU64::new(0),
                service_us_total: AtomicU64::new(0),
                lateness_us_total: AtomicU64::new(0),
            },
        })
    }

    /// A service time for a request starting at `start`: drawn from the distribution, scaled by the drift.
    fn draw_service(&self, start: Instant) -> Duration {
        let mean_ms = self.model.service_time_ms;
        let drawn_ms = match &self.draw {
            Draw::Fixed => mean_ms,
            Draw::Lognormal(lognormal) => lognormal.sample(&mut *self.rng.lock().expect("rng lock")),
            Draw::Exponential(exponential) => exponential.sample(&mut *self.rng.lock().expect("rng lock")),
            Draw::Bimodal { fast_ms, slow_ms, slow_share, jitter } => {
                let mut rng = self.rng.lock().expect("rng lock");
                let mode_ms = if rng.random::<f64>() < *slow_share { *slow_ms } else { *fast_ms };
                mode_ms * jitter.sample(&mut *rng)
            }
        };
        Duration::from_secs_f64(drawn_ms / self.capacity_factor(start) / 1000.0)
    }

    /// Capacity at `at` as a share of nominal: drift moves it linearly, never below a tenth.
    fn capacity_factor(&self, at: Instant) -> f64 {
        let minutes = at.saturating_duration_since(self.origin).as_secs_f64() / 60.0;
        (1.0 + self.model.drift_percent_per_min / 100.0 * minutes).max(0.1)
    }

    /// When a request that may start at `start` and needs `service` ends: a start inside a stall waits for its end,
    /// and every stall that begins while it is served holds it for the pause.
    fn due(&self, start: Instant, service: Duration) -> Instant {
        let Some(stalls) = self.model.stalls else {
            return start + service;
        };
        let every = Duration::from_secs_f64(stalls.every_ms / 1000.0);
        let pause = Duration::from_secs_f64(stalls.pause_ms / 1000.0);
        let since = start.saturating_duration_since(self.origin);
        // Stall k (k >= 1) is [origin + k * every, origin + k * every + pause).
        let mut stall = (since.as_secs_f64() / every.as_secs_f64()).floor() as u32;
        let stall_start = |k: u32| self.origin + every * k;
        let start = if stall >= 1 && start < stall_start(stall) + pause { stall_start(stall) + pause } else { start };
        let mut due = start + service;
        stall += 1;
        while stall_start(stall) < due {
            due += pause;
            stall += 1;
        }
        due
    }

    /// Queues FIFO for a worker, then holds it for one service time.
    async fn serve(&self) -> Duration {
        let arrival = Instant::now();
        let (service, lateness) = match &self.workers {
            Workers::Clock { permits, free_at } => {
                let _permit = permits.acquire().await.expect("the semaphore is never closed");
                let (service, due) = {
                    let mut free_at = free_at.lock().expect("worker lock");
                    let Reverse(worker_free) = free_at.pop().expect("one entry per worker");
                    let start = arrival.max(worker_free);
                    let service = self.draw_service(start);
                    let due = self.due(start, service);
                    free_at.push(Reverse(due));
                    (service, due)
                };
                crate::precise_timer::sleep_until(due).await;
                (service, Instant::now().saturating_duration_since(due))
            }
            Workers::Cpu(workers) => {
                let mut in_server = workers.arrive();
                let service = self.draw_service(arrival);
                workers.compute(&mut in_server, service).await;
                (service, Duration::ZERO)
            }
        };
        self.stats.served.fetch_add(1, Ordering::Relaxed);
        self.stats.service_us_total.fetch_add(service.as_micros() as u64, Ordering::Relaxed);
        self.stats.lateness_us_total.fetch_add(lateness.as_micros() as u64, Ordering::Relaxed);
        service
    }

    fn realized(&self) -> Realized {
        let served = self.stats.served.load(Ordering::Relaxed);
        let per_request_ms = |total: &AtomicU64| {
            if served == 0 { 0.0 } else { total.load(Ordering::Relaxed) as f64 / served as f64 / 1000.0 }
        };
        let mean_service_ms = per_request_ms(&self.stats.service_us_total);
        let realized_capacity_rps = match &self.workers {
            Workers::Clock { .. } if mean_service_ms > 0.0 => {
                f64::from(self.model.workers) * 1000.0 / mean_service_ms * self.model.available_share()
            }
            Workers::Clock { .. } => 0.0,
            // Computed service is slowed by whatever shares the CPU: only its rate with every worker busy says.
            Workers::Cpu(workers) => workers.saturated_rps().unwrap_or(0.0),
        };
        Realized {
            served,
            nominal_capacity_rps: self.model.capacity_rps(),
            mean_service_ms,
            realized_capacity_rps,
            mean_timer_lateness_ms: per_request_ms(&self.stats.lateness_us_total),
        }
    }
}

/// A running reference endpoint; dropping it (or `stop`) closes its listener.
pub struct ReferenceServer {
    pub address: SocketAddr,
    service: Arc<ServiceModel>,
    shutdown: CancellationToken,
    /// Stopped with the server.
    _neighbour: Option<NeighbourProcess>,
}

impl ReferenceServer {
    /// Binds `address` (port 0 picks a free one) and serves until stopped; stalls and drift count from `origin`.
    pub async fn start(
        model: ReferenceModel,
        work: Work,
        seed: u64,
        address: SocketAddr,
        origin: Instant,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let service = Arc::new(ServiceModel::new(model, work, seed, origin)?);
        let neighbour = match work {
            Work::Cpu { neighbour: Some(neighbour) } => Some(neighbour.start()?),
            _ => None,
        };
        let shutdown = CancellationToken::new();
        let serving = Arc::clone(&service);
        tokio::spawn(super::accept_loop(listener, shutdown.clone(), move |request| {
            respond(Arc::clone(&serving), request)
        }));
        Ok(Self { address, service, shutdown, _neighbour: neighbour })
    }

    pub fn url(&self) -> String {
        format!("http://{}/invocations", self.address)
    }

    pub fn realized(&self) -> Realized {
        self.service.realized()
    }

    /// The share of busy workers, the reference endpoint's stand-in for CPU utilization.
    pub fn busy_workers(&self) -> BusyWorkers {
        BusyWorkers {
            service: Arc::clone(&self.service),
            last_at: Instant::now(),
            last_service_us: self.service.stats.service_us_total.load(Ordering::Relaxed),
        }
    }

    pub async fn run_until_stopped(&self) {
        self.shutdown.cancelled().await;
    }
}

impl Drop for ReferenceServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Answers one request: health checks at once, the rest after a service time.
async fn respond(
    service: Arc<ServiceModel>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    // Health checks, as SageMaker containers answer them: no model time.
    if request.uri().path() == "/ping" {
        return Ok(Response::new(Full::new(Bytes::from_static(b"{\"status\":\"healthy\"}"))));
    }
    // Read the whole request as a model server would before inferring.
    let request_bytes = request.into_body().collect().await?.to_bytes().len();
    let service_time = service.serve().await;
    let body = format!(
        "{{\"predictions\":[0.5],\"service_ms\":{:.3},\"request_bytes\":{request_bytes}}}",
        service_time.as_secs_f64() * 1000.0
    );
    let response =
        Response::builder().header(hyper::header::CONTENT_TYPE, "application/json").body(Full::new(Bytes::from(body)));
    Ok(response.expect("static response parts are valid"))
}

/// Samples the busy-worker share of a reference endpoint, labelled simulated in reports.
pub struct BusyWorkers {
    service: Arc<ServiceModel>,
    last_at: Instant,
    last_service_us: u64,
}

impl ResourceSource for BusyWorkers {
    fn label(&self) -> &'static str {
        "simulated (busy-worker share of the reference endpoint)"
    }

    fn sample(&mut self) -> ResourceSample {
        let now = Instant::now();
        let service_us = self.service.stats.service_us_total.load(Ordering::Relaxed);
        let capacity_us = now.duration_since(self.last_at).as_micros() as f64 * f64::from(self.service.model.workers);
        let busy_percent =
            if capacity_us > 0.0 { (service_us - self.last_service_us) as f64 / capacity_us * 100.0 } else { 0.0 };
        self.last_at = now;
        self.last_service_us = service_us;
        ResourceSample { cpu_percent: Some(busy_percent.min(100.0)), ..ResourceSample::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Stalls;

    #[tokio::test]
    async fn queued_requests_start_on_the_virtual_clock() {
        let model = ReferenceModel::steady(2, 10.0, ServiceTime::Fixed);
        let service = Arc::new(ServiceModel::new(model, Work::Clock, 1, Instant::now()).unwrap());
        let started = Instant::now();
        let requests: Vec<_> = (0..20)
            .map(|_| {
                tokio::spawn({
                    let service = Arc::clone(&service);
                    async move { service.serve().await }
                })
            })
            .collect();
        for request in requests {
            request.await.unwrap();
        }
        // 20 requests on 2 workers of 10 ms: 100 ms of virtual time; timer lateness must not accumulate.
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        assert!((100.0..104.0).contains(&elapsed_ms), "took {elapsed_ms} ms");
        let realized = service.realized();
        assert_eq!(realized.served, 20);
        assert!((realized.realized_capacity_rps - 200.0).abs() < 0.01);
    }

    fn draws_ms(service_time: ServiceTime) -> Vec<f64> {
        let service =
            ServiceModel::new(ReferenceModel::steady(1, 20.0, service_time), Work::Clock, 7, Instant::now()).unwrap();
        (0..20_000).map(|_| service.draw_service(service.origin).as_secs_f64() * 1000.0).collect()
    }

    #[test]
    fn lognormal_bimodal_and_exponential_draws_have_the_stated_mean_and_shape() {
        let mean = |draws: &[f64]| draws.iter().sum::<f64>() / draws.len() as f64;
        let mut lognormal = draws_ms(ServiceTime::Lognormal { cv: 0.5 });
        lognormal.sort_by(f64::total_cmp);
        assert!((mean(&lognormal) - 20.0).abs() < 0.4, "mean {}", mean(&lognormal));
        let median_ms = 20.0 / 1.25f64.sqrt();
        assert!((lognormal[10_000] / median_ms - 1.0).abs() < 0.02, "median {}", lognormal[10_000]);
        // Bimodal: fast requests take 20 / (0.9 + 0.6) = 13.3 ms on average, a tenth of them six times that.
        let bimodal = draws_ms(ServiceTime::Bimodal { slow_share: 0.1, slow_factor: 6.0 });
        assert!((mean(&bimodal) - 20.0).abs() < 0.4, "mean {}", mean(&bimodal));
        let slow = bimodal.iter().filter(|ms| **ms > 40.0).count() as f64 / bimodal.len() as f64;
        assert!((slow - 0.1).abs() < 0.01, "slow share {slow}");
        let fast: Vec<f64> = bimodal.iter().copied().filter(|ms| *ms <= 40.0).collect();
        assert!((mean(&fast) - 13.333).abs() < 0.2, "fast mode {}", mean(&fast));
        // Exponential: the 99th percentile is the mean x ln(100).
        let mut exponential = draws_ms(ServiceTime::Exponential);
        exponential.sort_by(f64::total_cmp);
        assert!((mean(&exponential) - 20.0).abs() < 0.6, "mean {}", mean(&exponential));
        let p99 = exponential[exponential.len() * 99 / 100];
        assert!((p99 / (20.0 * 100f64.ln()) - 1.0).abs() < 0.05, "p99 {p99}");
    }

    #[test]
    fn a_stall_holds_requests_in_service_and_delays_those_arriving_in_it() {
        let model = ReferenceModel {
            stalls: Some(Stalls { every_ms: 100.0, pause_ms: 20.0 }),
            ..ReferenceModel::steady(2, 10.0, ServiceTime::Fixed)
        };
        let service = ServiceModel::new(model, Work::Clock, 1, Instant::now()).unwrap();
        let at = |ms: u64| service.origin + Duration::from_millis(ms);
        let service_time = Duration::from_millis(10);
        assert_eq!(service.due(at(50), service_time), at(60), "no stall before the first period");
        assert_eq!(service.due(at(95), service_time), at(125), "held by the stall at 100 ms");
        assert_eq!(service.due(at(105), service_time), at(130), "waits for the stall's end at 120 ms");
        assert_eq!(service.due(at(195), Duration::from_millis(110)), at(345), "held by two stalls");
        // Capacity is what the stalls leave: 2 workers x 100/s x 80%.
        assert!((model.capacity_rps() - 160.0).abs() < 1e-9);
    }

    #[test]
    fn drift_scales_capacity_by_the_minute() {
        let model =
            ReferenceModel { drift_percent_per_min: -10.0, ..ReferenceModel::steady(1, 20.0, ServiceTime::Fixed) };
        let service = ServiceModel::new(model, Work::Clock, 1, Instant::now()).unwrap();
        let after = |s: u64| service.origin + Duration::from_secs(s);
        assert!((service.capacity_factor(after(120)) - 0.8).abs() < 1e-9);
        assert!((service.draw_service(after(120)).as_secs_f64() * 1000.0 - 25.0).abs() < 1e-6);
        assert!((service.capacity_factor(after(3600)) - 0.1).abs() < 1e-9, "never below a tenth");
    }
}
