#!/usr/bin/env python3
"""The load engine against its peers, measured side by side in one run (docs/decisions.md, "The hot path": several rounds, medians).

1. Throughput: nginx (1 worker, small JSON body) on 127.0.0.1, 64 connections, DURATION_S seconds each, for wrk,
   oha, plateau's closed model (64 virtual users) and plateau's open model (a constant rate far above capacity,
   64 in flight). Prints each round and plateau's median ratio to wrk and to oha.
2. Plugin in the loop: the closed model with the tabular payload plugin generating every request, against a fixed
   body of the same size; the ratio, and the plugin's cost per request when generating alone.
3. Latency accuracy: a server with a fixed 5 ms service time (plateau serve-reference, 1024 workers, so nothing
   queues), 16 connections: wrk's p50 and p99 against plateau's.
4. With --long: a 10-minute closed-model run at full speed, plateau's resident memory at minute 1 and minute 10.

Installs nginx and wrk (Debian) and oha (crates.io) when they are missing.
Usage: benches/engine.py [--long] [--plugin-only]
"""
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLATEAU = ROOT / "target" / "release" / "plateau"
ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION_S = int(os.environ.get("DURATION_S", "10"))
CONNECTIONS = 64
NGINX_PORT = 18080
DELAY_PORT = 18081
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


def run(command, **kwargs):
    return subprocess.run(command, check=True, capture_output=True, text=True, **kwargs).stdout


def tool(name, install):
    found = shutil.which(name) or next((str(p) for p in [ROOT / "target" / "bench-tools" / "bin" / name] if p.exists()), None)
    if found:
        return found
    print(f"installing {name} ...", file=sys.stderr)
    install()
    return shutil.which(name) or str(ROOT / "target" / "bench-tools" / "bin" / name)


def apt(package):
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def start_nginx(folder):
    config = folder / "nginx.conf"
    config.write_text(f"""
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {folder}; proxy_temp_path {folder}; fastcgi_temp_path {folder};
  uwsgi_temp_path {folder}; scgi_temp_path {folder};
  server {{
    listen 127.0.0.1:{NGINX_PORT};
    location / {{ default_type application/json; return 200 '{{"predictions":[0.5]}}'; }}
  }}
}}
""")
    subprocess.run([NGINX, "-c", str(config), "-p", str(folder)], check=True)
    time.sleep(0.5)


def plateau_job(folder, name, url, traffic, payload='body = ""'):
    job = folder / f"{name}.toml"
    job.write_text(f"""
version = 1
[job]
name = "{name}"
[target]
kind = "http"
url = "{url}"
method = "GET"
[payload]
{payload}
{traffic}
[[configurations]]
name = "peer"
instance_type = "local"
price_per_hour_usd = 1
""")
    out = folder / f"{name}-out"
    shutil.rmtree(out, ignore_errors=True)
    run([str(PLATEAU), "run", str(job), "--out", str(out)])
    step = json.loads((out / "results.json").read_text())["configurations"][0]["steps"][0]
    return step


def closed(users, duration_s):
    return f"[traffic.stairs]\nusers_per_step = {users}\nstep_duration = \"{duration_s}s\"\nsteps = 1"


def requests_per_second(text):
    return float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))


def wrk_latency_ms(text, percentile):
    value, unit = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def throughput(folder):
    url = f"http://127.0.0.1:{NGINX_PORT}/"
    rounds = []
    for index in range(ROUNDS):
        result = {
            "wrk": requests_per_second(run([WRK, "-t1", f"-c{CONNECTIONS}", f"-d{DURATION_S}s", url])),
            "oha": requests_per_second(run([OHA, "--no-tui", "-c", str(CONNECTIONS), "-z", f"{DURATION_S}s", url])),
            "plateau closed": plateau_job(folder, "closed", url, closed(CONNECTIONS, DURATION_S))["throughput_rps"],
            "plateau open": plateau_job(
                folder, "open", url,
                f"[traffic]\nmax_in_flight = {CONNECTIONS}\n[traffic.constant_rate]\nrate_per_s = 1000000\nduration = \"{DURATION_S}s\"",
            )["throughput_rps"],
        }
        rounds.append(result)
        print(f"round {index + 1}: " + ", ".join(f"{name} {rps:,.0f} req/s" for name, rps in result.items()))
    medians = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}
    print(f"\nmedians over {ROUNDS} rounds of {DURATION_S} s, {CONNECTIONS} connections, nginx with 1 worker:")
    for name, rps in medians.items():
        print(f"  {name:15} {rps:>12,.0f} req/s")
    for model in ["plateau closed", "plateau open"]:
        print(f"  {model}: {medians[model] / medians['wrk']:.2f}x wrk (goal >= 0.9), "
              f"{medians[model] / medians['oha']:.2f}x oha (goal >= 1.0)")


# A one-row, eight-feature tabular request: what the plugin generates, and a fixed body of the same size.
TABULAR_PLUGIN = f"""plugin = "{ROOT / 'payload-plugins' / 'build' / 'tabular.wasm'}"
[payload.config]
features = 8
decimals = 3"""
TABULAR_FIXED = "body = '{\"instances\":[[0.497,-1.210,0.334,1.871,-0.052,0.912,-0.671,1.304]]}'"
# The smallest plugin: what the host itself costs per request, whatever the plugin does.
MINIMAL_PLUGIN = "plugin = \"" + str(ROOT / "payload-plugins" / "build" / "minimal-rust.wasm") + "\""
MINIMAL_FIXED = "body = '{\"inputs\": [12345, 678]}'"


def plugin_in_the_loop(folder):
    """The engine with a payload plugin generating every request, against the same engine sending a fixed body of
    the same size: the plugin's cost shows as the ratio. Two plugins: the minimal one (the host's own overhead)
    and the tabular example (a realistic generator)."""
    url = f"http://127.0.0.1:{NGINX_PORT}/"
    cases = {"minimal": (MINIMAL_FIXED, MINIMAL_PLUGIN), "tabular, 8 features": (TABULAR_FIXED, TABULAR_PLUGIN)}
    for label, (fixed, plugin) in cases.items():
        rounds = []
        for index in range(ROUNDS):
            result = {
                "fixed body": plateau_job(folder, "fixed", url, closed(CONNECTIONS, DURATION_S), fixed)["throughput_rps"],
                "plugin": plateau_job(folder, "plugin", url, closed(CONNECTIONS, DURATION_S), plugin)["throughput_rps"],
            }
            rounds.append(result)
            print(f"{label} round {index + 1}: " + ", ".join(f"{name} {rps:,.0f} req/s" for name, rps in result.items()))
        medians = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}
        stats = run([str(PLATEAU), "payload", "preview", str(folder / "plugin.toml"), "-n", "200000", "--stats"])
        print(f"\nplugin in the loop ({label}), closed model, {CONNECTIONS} users, medians of {ROUNDS} rounds:")
        print(f"  fixed body {medians['fixed body']:,.0f} req/s, plugin {medians['plugin']:,.0f} req/s: "
              f"{medians['plugin'] / medians['fixed body']:.2f}x (goal >= 0.9)")
        print(f"  plugin cost, generating alone: {stats.strip().splitlines()[-1]}\n")


def latency_accuracy(folder):
    server = subprocess.Popen([str(PLATEAU), "serve-reference", "--workers", "1024", "--service-ms", "5",
                               "--port", str(DELAY_PORT)], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        url = f"http://127.0.0.1:{DELAY_PORT}/invocations"
        print(f"\nlatency against a fixed 5 ms server, 16 connections, {DURATION_S} s, {ROUNDS} rounds:")
        for index in range(ROUNDS):
            text = run([WRK, "-t1", "-c16", f"-d{DURATION_S}s", "--latency", url])
            step = plateau_job(folder, "delay", url, closed(16, DURATION_S))["latency"]
            wrk_p50, wrk_p99 = wrk_latency_ms(text, 50), wrk_latency_ms(text, 99)
            print(f"  round {index + 1}: wrk p50 {wrk_p50:.2f} ms p99 {wrk_p99:.2f} ms; plateau p50 {step['p50_ms']:.2f} ms "
                  f"p99 {step['p99_ms']:.2f} ms; differences {step['p50_ms'] - wrk_p50:+.2f} / {step['p99_ms'] - wrk_p99:+.2f} ms "
                  f"(goal within 0.3 ms)")
    finally:
        server.terminate()
        server.wait()


def resident_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def long_run(folder):
    job = folder / "long.toml"
    job.write_text(f"""
version = 1
[job]
name = "long"
[target]
kind = "http"
url = "http://127.0.0.1:{NGINX_PORT}/"
method = "GET"
[payload]
body = ""
{closed(CONNECTIONS, 600)}
[[configurations]]
name = "peer"
instance_type = "local"
price_per_hour_usd = 1
""")
    process = subprocess.Popen([str(PLATEAU), "run", str(job), "--out", str(folder / "long-out")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(60)
    minute_1 = resident_mib(process.pid)
    time.sleep(535)
    minute_10 = resident_mib(process.pid)
    process.wait()
    print(f"\n10-minute run at full speed: resident memory {minute_1:.1f} MiB at minute 1, {minute_10:.1f} MiB at "
          f"minute 10 ({minute_10 / minute_1:.2f}x)")


if __name__ == "__main__":
    NGINX = tool("nginx", lambda: apt("nginx-light"))
    WRK = tool("wrk", lambda: apt("wrk"))
    OHA = tool("oha", lambda: subprocess.run(["cargo", "install", "--locked", "oha", "--root",
                                             str(ROOT / "target" / "bench-tools")], check=True))
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    subprocess.run([str(ROOT / "payload-plugins" / "build.sh")], check=True)
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        start_nginx(folder)
        try:
            everything = "--plugin-only" not in sys.argv
            if everything:
                throughput(folder)
            plugin_in_the_loop(folder)
            if everything:
                latency_accuracy(folder)
            if everything and "--long" in sys.argv:
                long_run(folder)
        finally:
            subprocess.run([NGINX, "-c", str(folder / "nginx.conf"), "-p", str(folder), "-s", "stop"], check=False)
