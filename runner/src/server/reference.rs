//! The built-in reference endpoint: an HTTP/1.1 model server of known capacity. `workers` requests are served at
//! once, each for a service time drawn from a stated distribution, the rest wait FIFO, so its capacity is
//! `workers / mean service time`.
//!
//! Service runs on a virtual clock: a queued request starts when its worker's previous request was due to end, not
//! when the tokio timer (up to ~1 ms late) woke it. Timer lateness therefore adds to latency but never takes away
//! capacity, and the realized capacity is `workers / mean drawn service time`. The sleep itself uses a timer thread
//! accurate to tens of microseconds, so latency too stays close to the model.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use rand_distr::{Distribution as _, LogNormal};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::measure::{ResourceSample, ResourceSource};
use crate::spec::{ReferenceModel, ServiceTimeDistribution};

/// What the reference endpoint actually did, to compare measured figures with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Realized {
    pub served: u64,
    pub nominal_capacity_rps: f64,
    pub mean_service_ms: f64,
    pub realized_capacity_rps: f64,
    /// How late, on average, the timer woke a request after its service was due to end.
    pub mean_timer_lateness_ms: f64,
}

struct Stats {
    served: AtomicU64,
    service_us_total: AtomicU64,
    lateness_us_total: AtomicU64,
}

struct ServiceModel {
    model: ReferenceModel,
    permits: Semaphore,
    /// When each worker is next free, on the virtual clock.
    worker_free_at: Mutex<BinaryHeap<Reverse<Instant>>>,
    rng: Mutex<StdRng>,
    lognormal: Option<LogNormal<f64>>,
    stats: Stats,
}

impl ServiceModel {
    fn new(model: ReferenceModel, seed: u64) -> Self {
        let lognormal = (model.distribution == ServiceTimeDistribution::Lognormal).then(|| {
            // Mean m and coefficient of variation cv: sigma^2 = ln(1 + cv^2), mu = ln(m) - sigma^2 / 2.
            let sigma_squared = (1.0 + model.cv * model.cv).ln();
            LogNormal::new(model.service_time_ms.ln() - sigma_squared / 2.0, sigma_squared.sqrt())
                .expect("validated parameters")
        });
        let now = Instant::now();
        Self {
            model,
            permits: Semaphore::new(model.workers as usize),
            worker_free_at: Mutex::new((0..model.workers).map(|_| Reverse(now)).collect()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            lognormal,
            stats: Stats {
                served: AtomicU64::new(0),
                service_us_total: AtomicU64::new(0),
                lateness_us_total: AtomicU64::new(0),
            },
        }
    }

    fn draw_service(&self) -> Duration {
        let service_ms = match &self.lognormal {
            Some(lognormal) => lognormal.sample(&mut *self.rng.lock().expect("rng lock")),
            None => self.model.service_time_ms,
        };
        Duration::from_secs_f64(service_ms / 1000.0)
    }

    /// Queues FIFO for a worker, then holds it for one service time.
    async fn serve(&self) -> Duration {
        let arrival = Instant::now();
        let _permit = self.permits.acquire().await.expect("the semaphore is never closed");
        let service = self.draw_service();
        let due = {
            let mut free_at = self.worker_free_at.lock().expect("worker lock");
            let Reverse(worker_free) = free_at.pop().expect("one entry per worker");
            let due = arrival.max(worker_free) + service;
            free_at.push(Reverse(due));
            due
        };
        crate::precise_timer::sleep_until(due).await;
        let lateness = Instant::now().saturating_duration_since(due);
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
        let realized_capacity_rps =
            if mean_service_ms > 0.0 { f64::from(self.model.workers) * 1000.0 / mean_service_ms } else { 0.0 };
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
}

impl ReferenceServer {
    /// Binds `address` (port 0 picks a free one) and serves until stopped.
    pub async fn start(model: ReferenceModel, seed: u64, address: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let service = Arc::new(ServiceModel::new(model, seed));
        let shutdown = CancellationToken::new();
        tokio::spawn(accept_loop(listener, Arc::clone(&service), shutdown.clone()));
        Ok(Self { address, service, shutdown })
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

async fn accept_loop(listener: TcpListener, service: Arc<ServiceModel>, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Running out of file descriptors is transient: wait a little rather than spin.
                Err(_) => { tokio::time::sleep(Duration::from_millis(10)).await; continue; }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = Arc::clone(&service);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let handler = service_fn(move |request: Request<hyper::body::Incoming>| {
                let service = Arc::clone(&service);
                async move {
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
                    let response = Response::builder()
                        .header(hyper::header::CONTENT_TYPE, "application/json")
                        .body(Full::new(Bytes::from(body)));
                    Ok::<_, hyper::Error>(response.expect("static response parts are valid"))
                }
            });
            let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), handler);
            tokio::select! {
                _ = connection => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
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

    #[tokio::test]
    async fn queued_requests_start_on_the_virtual_clock() {
        let model =
            ReferenceModel { workers: 2, service_time_ms: 10.0, distribution: ServiceTimeDistribution::Fixed, cv: 0.0 };
        let service = Arc::new(ServiceModel::new(model, 1));
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

    #[test]
    fn lognormal_draws_have_the_stated_mean() {
        let model = ReferenceModel {
            workers: 1,
            service_time_ms: 20.0,
            distribution: ServiceTimeDistribution::Lognormal,
            cv: 0.5,
        };
        let service = ServiceModel::new(model, 7);
        let count = 20_000;
        let mean_ms = (0..count).map(|_| service.draw_service().as_secs_f64() * 1000.0).sum::<f64>() / count as f64;
        assert!((mean_ms - 20.0).abs() < 0.4, "mean {mean_ms}");
    }
}
