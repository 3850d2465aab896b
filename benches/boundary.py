#!/usr/bin/env python3
"""The latency goal's boundary against queues whose latency curve is known exactly (issue 17's SLO-boundary bar).

Two queues on the reference endpoint, one worker with exponential service times of 10 ms (100 requests/s):
- M/M/1, Poisson arrivals: the response time is exponential with rate (100/s - rate), so p90 = ln(10) / (100 - rate);
  a 92 ms goal is met up to 74.97/s.
- D/M/1, evenly spaced arrivals: the response time of a GI/M/1 queue is exponential with rate 100/s x (1 - s), s the
  root of s = exp(-100/s x (1 - s) / rate) below 1; a 120 ms goal is met up to about 90/s (a utilization of 90%).

Each seed runs search mode with a p90 goal, its boundary steps running on (up to MAX_STEP, two minutes by default)
until their percentile's interval clears the goal. Printed per seed: the boundary found, its error against the
analytic one, the 95% interval and whether it covers it, the bisection's loads and how long each step ran. Then, per
queue, how many seeds landed within 5% and how many intervals covered the analytic boundary.
Bar: within 5% in every seed, the interval covering it in (nearly) every seed.

A queue's percentile is noisy by nature: a 24 s step's p90 varies by about 18% at 75% utilization (6% of load), so
the 5% bar needs minutes per step near the boundary; the end-to-end test keeps CI's budget and asserts coverage.

Usage: benches/boundary.py   (after cargo build --release; SEEDS=5, MAX_STEP=120s, PLATEAU=binary)
"""
import json
import math
import os
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLATEAU = Path(os.environ.get("PLATEAU", ROOT / "target" / "release" / "plateau"))
SEEDS = int(os.environ.get("SEEDS", "5"))
MAX_STEP = os.environ.get("MAX_STEP", "120s")
MU = 100.0


def dm1_boundary(goal_s):
    # Sojourn rate r = MU (1 - s) = ln(10) / goal; s = exp(-r / rate) gives rate = -r / ln(s).
    rate = math.log(10) / goal_s
    s = 1.0 - rate / MU
    return -rate / math.log(s)


QUEUES = [
    ("M/M/1", "poisson", 92, MU - math.log(10) / 0.092),
    ("D/M/1", "uniform", 120, dm1_boundary(0.120)),
]

JOB = """version = 1
[job]
name = "boundary"
seed = {seed}
[target]
kind = "reference"
[payload]
body = "{{}}"
[traffic]
arrivals = "{arrivals}"
max_step_duration = "{max_step}"
precision_percent = 25
[traffic.search]
start_rate_per_s = 10
step_duration = "12s"
steps = 3
[requirements]
latency_ms = {goal_ms}
percentile = "p90"
objective = "throughput"
[[configurations]]
name = "q"
instance_type = "ref.q"
price_per_hour_usd = 1
reference = {{ workers = 1, service_time_ms = 10, distribution = "exponential" }}
"""


def main():
    folder = Path(tempfile.mkdtemp(prefix="plateau-boundary-"))
    runs = []
    started = time.monotonic()
    for name, arrivals, goal_ms, analytic in QUEUES:
        for seed in range(1, SEEDS + 1):
            job = folder / f"{arrivals}-{seed}.toml"
            job.write_text(JOB.format(seed=seed, arrivals=arrivals, max_step=MAX_STEP, goal_ms=goal_ms))
            out = folder / f"{arrivals}-{seed}"
            # Light loads (about 100 requests/s each): the seeds of both queues run at once.
            process = subprocess.Popen([PLATEAU, "run", job, "--out", out], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            runs.append((name, analytic, seed, out, process))
    counts = {}
    for name, analytic, seed, out, process in runs:
        process.wait()
        configuration = json.loads((out / "results.json").read_text())["configurations"][0]
        metrics = configuration["metrics"]
        boundary = metrics["load_at_slo"]
        interval = metrics.get("max_invocations_at_slo_interval") or {"low": math.nan, "high": math.nan}
        low, high = interval["low"] / 60, interval["high"] / 60
        error = boundary / analytic - 1
        within, covered = abs(error) <= 0.05, low <= analytic <= high
        steps = [f"{step['load']:.1f}/s {step['steady_seconds']}s" for step in configuration["boundary_steps"]]
        print(f"{name} seed {seed}: boundary {boundary:6.2f}/s (analytic {analytic:.2f}/s, {error:+.1%}), "
              f"interval {low:.2f} to {high:.2f} ({'covers' if covered else 'misses'}); "
              f"{configuration['elapsed_s']} s; bisected {', '.join(steps)}")
        total = counts.setdefault(name, [0, 0, 0])
        total[0] += within
        total[1] += covered
        total[2] += 1
    for name, (within, covered, seeds) in counts.items():
        print(f"{name}: within 5% in {within} of {seeds} seeds; interval covers the analytic boundary in {covered} "
              f"of {seeds}")
    print(f"wall time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
