#!/usr/bin/env python3
"""The quickstart's cost in time of precision-driven steps, side by side in one run (issue 15's bar: at most +20%).

Runs scenarios/quickstart.toml as shipped (steps run on until their throughput is within `precision_percent` or
reach `max_step_duration`) and the same job with fixed-length steps (`max_step_duration = step_duration`, what every
step was before), ROUNDS times each, alternating. For each it prints the ramp time the run recorded for itself (the
sum of the configurations' elapsed seconds, from results.json) and the wall time, the recommendation and
InitialInstanceCount, then the median ratio of ramp times.

Usage: benches/quickstart.py   (after cargo build --release; ROUNDS=2 by default)
"""
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLATEAU = ROOT / "target" / "release" / "plateau"
ROUNDS = int(os.environ.get("ROUNDS", "2"))
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


def variant(folder: Path, fixed: bool) -> Path:
    text = (ROOT / "scenarios" / "quickstart.toml").read_text()
    if fixed:
        text = text.replace("[traffic.stairs]", '[traffic]\nmax_step_duration = "5s"\n\n[traffic.stairs]', 1)
        assert 'step_duration = "5s"' in text, "the quickstart's step length changed: update this script"
    path = folder / ("fixed.toml" if fixed else "precision.toml")
    path.write_text(text)
    return path


def run(job: Path, out: Path) -> dict:
    started = time.monotonic()
    subprocess.run([str(PLATEAU), "run", str(job), "--out", str(out)], check=False, capture_output=True)
    wall_s = time.monotonic() - started
    results = json.loads((out / "results.json").read_text())
    recommendation = results["recommendation"] or {}
    return {
        "ramp_s": sum(configuration["elapsed_s"] for configuration in results["configurations"]),
        "wall_s": wall_s,
        "recommendation": f'{recommendation.get("configuration")} x{recommendation.get("initial_instance_count")}',
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        jobs = {"fixed steps": variant(folder, True), "precision steps": variant(folder, False)}
        measured = {name: [] for name in jobs}
        for round_index in range(ROUNDS):
            for name, job in jobs.items():
                result = run(job, folder / f"{name.replace(' ', '-')}-{round_index}")
                measured[name].append(result)
                print(
                    f"round {round_index + 1} {name:16} ramp {result['ramp_s']:4d} s  wall {result['wall_s']:6.1f} s  "
                    f"recommends {result['recommendation']}",
                    flush=True,
                )
        fixed = statistics.median(result["ramp_s"] for result in measured["fixed steps"])
        precise = statistics.median(result["ramp_s"] for result in measured["precision steps"])
        print(f"median ramp: fixed steps {fixed:.0f} s, precision steps {precise:.0f} s: {precise / fixed:.2f}x "
              f"({(precise / fixed - 1) * 100:+.0f}%, bar +20%)")
        recommendations = {result["recommendation"] for results in measured.values() for result in results}
        print(f"recommendations: {', '.join(sorted(recommendations))} (expected medium x2)")


if __name__ == "__main__":
    main()
