//! A CPU-hog neighbour for the reference endpoint run as a command target: a process of its own that keeps every
//! CPU the server may use busy for a share of each period, as another tenant's batch job would. The server computes
//! its service times (`cpu_work.rs`), so while the neighbour runs, each CPU is shared between the two and capacity
//! falls: with one worker per CPU and a fair scheduler, to about `1 - busy_percent / 200` of what it was.
//!
//! The neighbour is not the server's child: it would count in the server's CPU utilization, which plateau reads
//! from the server's process tree. `plateau neighbour` started by the server starts a copy of itself and exits,
//! so the copy is adopted elsewhere, in the server's process group still (a command target is stopped by its
//! group). It watches the server and ends with it, and the server kills it when it stops.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How much CPU the neighbour takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    /// The share of each period every CPU is kept busy, above 0 and at most 100.
    pub busy_percent: f64,
    pub period: Duration,
}

/// A started neighbour, killed when dropped.
pub struct NeighbourProcess {
    pid: i32,
}

impl Neighbour {
    /// Starts the neighbour beside this process, on the CPUs this process may use (it inherits the affinity a
    /// command target's `cpus` set).
    pub fn start(&self) -> std::io::Result<NeighbourProcess> {
        let output = Command::new(std::env::current_exe()?)
            .arg("neighbour")
            .arg(format!("--busy-percent={}", self.busy_percent))
            .arg(format!("--period-ms={}", self.period.as_millis()))
            .arg(format!("--server-pid={}", std::process::id()))
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()?;
        let printed = String::from_utf8_lossy(&output.stdout);
        let pid = printed.lines().next().and_then(|line| line.strip_prefix("neighbour ")?.parse().ok());
        match pid {
            Some(pid) if output.status.success() => Ok(NeighbourProcess { pid }),
            _ => Err(std::io::Error::other(format!("the neighbour did not start ({})", output.status))),
        }
    }
}

impl Drop for NeighbourProcess {
    fn drop(&mut self) {
        // SAFETY: kill only sends a signal; the pid is the neighbour's, which watches this process and so cannot
        // have ended and been reused while this process lives, except by someone else's kill.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
    }
}

/// `plateau neighbour`: run by the server, starts a detached copy of itself and prints its pid; the copy hogs the
/// CPUs until the server is gone.
pub fn run(neighbour: Neighbour, server_pid: i32) -> std::io::Result<()> {
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } == server_pid {
        // Not waited for: this process ends at once, and the copy is adopted.
        #[allow(clippy::zombie_processes)]
        let copy = Command::new(std::env::current_exe()?)
            .args(std::env::args_os().skip(1))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        println!("neighbour {}", copy.id());
        return Ok(());
    }
    let cpus = std::thread::available_parallelism().map_or(1, |cpus| cpus.get());
    let epoch = Instant::now();
    let hogs: Vec<_> = (0..cpus).map(|_| std::thread::spawn(move || hog(neighbour, epoch, server_pid))).collect();
    for hog in hogs {
        let _ = hog.join();
    }
    Ok(())
}

/// Busy for `busy_percent` of each period from `epoch` (every thread in step, as one batch job's would be), idle
/// for the rest, until the server is gone.
fn hog(neighbour: Neighbour, epoch: Instant, server_pid: i32) {
    let busy = neighbour.period.mul_f64(neighbour.busy_percent / 100.0);
    let mut state = 1u64;
    for period in 0u32.. {
        // SAFETY: signal 0 only checks that the process exists.
        if unsafe { libc::kill(server_pid, 0) } != 0 {
            return;
        }
        let start = epoch + neighbour.period * period;
        while Instant::now() < start + busy {
            for _ in 0..256 {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            }
            std::hint::black_box(state);
        }
        std::thread::sleep((start + neighbour.period).saturating_duration_since(Instant::now()));
    }
}
