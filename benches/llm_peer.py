#!/usr/bin/env python3
"""plateau against NVIDIA AIPerf (PyPI), side by side in one run, on language-model endpoints (docs/llm.md).

1. Agreement: plateau's reference LLM endpoint (`plateau serve-reference-llm`, a continuous-batching engine),
   one stream at a time, streamed chat completions of a fixed output length, measured by AIPerf and by plateau one
   after the other: TTFT p50 and inter-token latency p50 from each, and their ratio (goal: within 5%). AIPerf's
   inter-token latency is per response, (end-to-end - TTFT) / (tokens - 1): plateau's TPOT; plateau's ITL (every
   gap) is printed beside it. One stream at a time, because with several a request's TTFT depends on where in the
   engine's running iteration it arrives, and that depends on how soon each client sends its next request after a
   response ends (plateau at once, AIPerf some milliseconds later): at 4 streams plateau measured 45 ms and AIPerf
   37 ms on the same server, both right for their own arrivals. Prompts differ between the tools (AIPerf writes
   its own), so the engine has no prefill cost here.
2. Generator speed: a fast streaming server (nginx answering every request with the same short SSE stream of
   eight chunks, no model time), at 64 concurrent requests: the request rate AIPerf sustains and plateau's (goal:
   at least 2x AIPerf's).
3. Parsing cost: plateau against that server with `api = "openai"` (every event parsed, tokens timed) and without
   (the same bytes, only counted): the ratio of request rates (goal: at least 0.9). Run alone (PARSING_ONLY=1), nginx
   gets a CPU of its own and plateau the rest, rounds alternate which goes first, and the median ratio is printed
   with a distribution-free 95% interval, beside the ratio of CPU time a request.

AIPerf needs a tokenizer to write prompts; it cannot reach a model hub here, so the script makes a word-level one
with the `tokenizers` package AIPerf installs, and asks AIPerf to take token counts from the server's usage.
Installs AIPerf into benches/.llm-peers (about 1.2 GB) and nginx (Debian) when they are missing.
Usage: benches/llm_peer.py        (ROUNDS, DURATION_S and CONCURRENCY in the environment change the defaults;
       PARSING_ONLY=1 runs part 3 alone, without AIPerf)
"""
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLATEAU = ROOT / "target" / "release" / "plateau"
VENV = Path(os.environ.get("LLM_PEERS_VENV", ROOT / "benches" / ".llm-peers"))
ROUNDS = int(os.environ.get("ROUNDS", "2"))
DURATION_S = int(os.environ.get("DURATION_S", "20"))
CONCURRENCY = int(os.environ.get("CONCURRENCY", "1"))
LLM_PORT, NGINX_PORT = 18090, 18091
OUTPUT_TOKENS = 16
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["PLATEAU_HISTORY"] = "off"


def run(command, **kwargs):
    return subprocess.run(command, check=True, capture_output=True, text=True, **kwargs).stdout


def ensure_tools():
    if not PLATEAU.exists():
        run(["cargo", "build", "--release"], cwd=ROOT)
    if not (VENV / "bin" / "aiperf").exists():
        run([sys.executable, "-m", "venv", str(VENV)])
        run([str(VENV / "bin" / "pip"), "install", "--quiet", "aiperf==0.13.0"])
    if not shutil.which("nginx"):
        run(["apt-get", "install", "-y", "-qq", "nginx-light"])


def tokenizer(folder: Path) -> Path:
    """A word-level tokenizer of a few hundred English words, saved as a Hugging Face tokenizer folder."""
    script = r"""
import sys
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
words = ("the a of to and in is it that for on with as was be by this are at from or an have not but which one all "
         "were when we there can more if no out so what up about into them than then some time could these two may "
         "first water been call who its now find long down day did get come made part over new sound take only "
         "little work know place year live me back give most very after thing our just name good sentence man "
         "think say great where help through much before line right too mean old any same tell boy follow came "
         "want show also around form three small set put end does another well large must big even such because "
         "turn here why ask went men read need land different home us move try kind hand picture again change off "
         "play spell air away animal house point page letter mother answer found study still learn should world").split()
vocab = {"[UNK]": 0, "<s>": 1, "</s>": 2}
for word in words:
    vocab.setdefault(word, len(vocab))
model = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
model.pre_tokenizer = pre_tokenizers.Whitespace()
PreTrainedTokenizerFast(tokenizer_object=model, unk_token="[UNK]", bos_token="<s>", eos_token="</s>").save_pretrained(sys.argv[1])
"""
    run([str(VENV / "bin" / "python"), "-c", script, str(folder)])
    return folder


def wait_for(url: str):
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"nothing answered at {url}")


def aiperf(url: str, tokenizer_dir: Path, folder: Path, concurrency: int, streaming: bool = True) -> dict:
    """One AIPerf profile of DURATION_S seconds; its aggregate metrics by tag."""
    out = folder / f"aiperf-{time.monotonic_ns()}"
    command = [
        str(VENV / "bin" / "aiperf"), "profile", "--model-names", "reference", "--url", url,
        "--endpoint-type", "chat", "--tokenizer", str(tokenizer_dir), "--concurrency", str(concurrency),
        "--benchmark-duration", str(DURATION_S), "--warmup-request-count", str(concurrency),
        "--prompt-input-tokens-mean", "100", "--prompt-input-tokens-stddev", "0",
        "--prompt-output-tokens-mean", str(OUTPUT_TOKENS), "--prompt-output-tokens-stddev", "0",
        "--use-server-token-count", "--output-artifact-dir", str(out), "--ui-type", "none", "--no-auto-plot",
    ]
    if streaming:
        command.append("--streaming")
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=folder)
    exported = next(out.rglob("profile_export_aiperf.json"))
    data = json.loads(exported.read_text())
    metrics = data.get("records", data)
    return {key: value for key, value in metrics.items() if isinstance(value, dict)}


def median_interval(values: list) -> tuple:
    """A distribution-free 95% interval for the median: the order statistics a binomial(n, 1/2) count puts it
    between (for 20 values, the 6th and the 15th smallest); the whole range when there are too few values."""
    ordered, n = sorted(values), len(values)
    below = 0
    for k in range(n // 2):
        # P(fewer than k + 1 of n values fall below the median) <= 2.5%: the (k + 1)th smallest is a lower bound.
        if sum(math.comb(n, i) for i in range(k + 1)) / 2**n > 0.025:
            break
        below = k + 1
    return (ordered[below - 1], ordered[n - below]) if below else (ordered[0], ordered[-1])


def pinned(cpus):
    """Runs a child on `cpus` only (all when none)."""
    return None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))


def plateau(url: str, folder: Path, users: int, api: bool, cpus=None) -> dict:
    """One step of `users` for DURATION_S seconds against `url`, on `cpus`: the step's figures."""
    body = json.dumps({
        "model": "reference", "max_tokens": OUTPUT_TOKENS, "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "x" * 400}],
    })
    job = folder / f"plateau-{time.monotonic_ns()}.toml"
    job.write_text(
        f'version = 1\n[job]\nname = "llm-peer"\n[target]\nkind = "http"\nurl = "{url}"\ntimeout = "60s"\n'
        + ('api = "openai"\n' if api else "")
        + f"[payload]\ncontent_type = \"application/json\"\nbody = '{body}'\n"
        + f'[traffic]\nmax_step_duration = "{DURATION_S}s"\n[traffic.stairs]\nusers_per_step = {users}\n'
        + f'step_duration = "{DURATION_S}s"\nsteps = 1\n'
        + '[[configurations]]\nname = "llm"\ninstance_type = "x"\nprice_per_hour_usd = 1\n'
    )
    out = folder / job.stem
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        [str(PLATEAU), "run", str(job), "--out", str(out)], capture_output=True, text=True, preexec_fn=pinned(cpus)
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode not in (0, 5):
        raise SystemExit(f"plateau failed ({result.returncode}): {result.stderr}")
    step = json.loads((out / "results.json").read_text())["configurations"][0]["steps"][0]
    # The CPU plateau spent on the whole run (start-up and the step's ramp too) per request of the step: the
    # parsing cost without the machine's swings in speed, which move both runs' rates.
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {**step, "cpu_us_per_request": cpu_s * 1e6 / (step["throughput_rps"] * DURATION_S)}


def percentile(metrics: dict, tag: str, name: str = "p50") -> float:
    return float(metrics[tag][name])


def agreement(folder: Path, tokenizer_dir: Path):
    server = subprocess.Popen(
        # 80 ms a token, as a large model on a busy GPU: a client's own overhead (AIPerf's is a few milliseconds)
        # stays a small share of TTFT, as it does against real models.
        [str(PLATEAU), "serve-reference-llm", "--max-batch", "8", "--iteration-ms", "80", "--per-sequence-ms", "1",
         "--port", str(LLM_PORT)],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for(f"http://127.0.0.1:{LLM_PORT}/health")
        url = f"http://127.0.0.1:{LLM_PORT}"
        if CONCURRENCY == 1:
            print("the engine's closed form, one stream: TTFT 81 ms, 81 ms between tokens")
        rows = []
        for round_ in range(ROUNDS):
            own = plateau(url + "/v1/chat/completions", folder, CONCURRENCY, api=True)["tokens"]
            peer = aiperf(url, tokenizer_dir, folder, CONCURRENCY)
            time.sleep(5)
            row = (
                percentile(peer, "time_to_first_token"), own["ttft"]["p50_ms"],
                percentile(peer, "inter_token_latency"), own["tpot"]["p50_ms"], own["itl"]["p50_ms"],
            )
            rows.append(row)
            print(f"round {round_ + 1}: TTFT p50 AIPerf {row[0]:.2f} ms, plateau {row[1]:.2f} ms ({row[1] / row[0]:.3f}x); "
                  f"inter-token p50 AIPerf {row[2]:.2f} ms, plateau TPOT {row[3]:.2f} ms ({row[3] / row[2]:.3f}x), "
                  f"plateau ITL {row[4]:.2f} ms")
        ttft_ratio = statistics.median(row[1] / row[0] for row in rows)
        itl_ratio = statistics.median(row[3] / row[2] for row in rows)
        print(f"agreement at {CONCURRENCY} concurrent streams: TTFT p50 ratio {ttft_ratio:.3f}, "
              f"inter-token p50 ratio {itl_ratio:.3f} (goal: within 0.95 to 1.05)")
    finally:
        server.terminate()
        server.wait()


def nginx(folder: Path, cpus=None) -> subprocess.Popen:
    """nginx answering any request with the same short chat stream: eight text chunks, usage, [DONE]."""
    chunk = '{"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" tok"},"finish_reason":null}]}'
    last = '{"object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"length"}]}'
    usage = '{"choices":[],"usage":{"prompt_tokens":100,"completion_tokens":8,"total_tokens":108}}'
    stream = "".join(f"data: {event}\\n\\n" for event in [chunk] * 8 + [last, usage]) + "data: [DONE]\\n\\n"
    config = folder / "nginx.conf"
    config.write_text(
        f"worker_processes 1;\ndaemon off;\npid {folder}/nginx.pid;\nerror_log stderr;\n"
        f"events {{ worker_connections 4096; }}\nhttp {{ access_log off; keepalive_requests 1000000;\n"
        f"  server {{ listen 127.0.0.1:{NGINX_PORT}; location / {{ default_type text/event-stream;\n"
        f"    return 200 '{stream}'; }}\n    location = /health {{ return 200 'ok'; }} }} }}\n"
    )
    process = subprocess.Popen(["nginx", "-c", str(config)], stderr=subprocess.DEVNULL, preexec_fn=pinned(cpus))
    wait_for(f"http://127.0.0.1:{NGINX_PORT}/health")
    return process


def parsing(folder: Path):
    """Part 3 alone: plateau parsing and not parsing, alternating which goes first. nginx has a CPU of its own and
    plateau the others, so that plateau's rate is what its own CPU allows, parsing or not, rather than what the
    scheduler leaves it beside nginx (unpinned, the ratio swung 0.89x to 0.96x between runs of ten rounds)."""
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus, own_cpus = (cpus[-1:], cpus[:-1]) if len(cpus) > 1 else (None, None)
    server = nginx(folder, server_cpus)
    url = f"http://127.0.0.1:{NGINX_PORT}/v1/chat/completions"
    if own_cpus:
        print(f"nginx on CPU {server_cpus[0]}, plateau on CPU {', '.join(map(str, own_cpus))}")
    try:
        ratios, cpu_ratios = [], []
        for round_ in range(ROUNDS):
            order = (True, False) if round_ % 2 == 0 else (False, True)
            runs = {api: plateau(url, folder, 64, api=api, cpus=own_cpus) for api in order}
            parsed, unparsed = runs[True], runs[False]
            ratios.append(parsed["throughput_rps"] / unparsed["throughput_rps"])
            cpu_ratios.append(unparsed["cpu_us_per_request"] / parsed["cpu_us_per_request"])
            print(f"round {round_ + 1}: parsing {parsed['throughput_rps']:,.0f}/s "
                  f"({parsed['cpu_us_per_request']:.2f} µs of CPU a request), not parsing "
                  f"{unparsed['throughput_rps']:,.0f}/s ({unparsed['cpu_us_per_request']:.2f} µs): {ratios[-1]:.3f}x")
        low, high = median_interval(ratios)
        cpu_low, cpu_high = median_interval(cpu_ratios)
        print(f"parsing cost over {ROUNDS} rounds: {statistics.median(ratios):.3f}x the rate for the same bytes "
              f"unparsed, 95% interval of the median {low:.3f}x to {high:.3f}x (goal: at least 0.9); the CPU a "
              f"request takes unparsed is {statistics.median(cpu_ratios):.3f}x what it takes parsed ({cpu_low:.3f}x "
              f"to {cpu_high:.3f}x)")
    finally:
        server.terminate()
        server.wait()


def speed(folder: Path, tokenizer_dir: Path):
    server = nginx(folder)
    url = f"http://127.0.0.1:{NGINX_PORT}"
    try:
        peer_rates, own_rates, parsed_rates, unparsed_rates = [], [], [], []
        for round_ in range(ROUNDS):
            # Each round alternates which of plateau's two runs goes first, and AIPerf goes last, with a pause after
            # it: its worker processes take a few seconds to leave, and whatever runs then runs slower.
            first, second = (True, False) if round_ % 2 == 0 else (False, True)
            runs = {api: plateau(url + "/v1/chat/completions", folder, 64, api=api) for api in (first, second)}
            parsed, unparsed = runs[True], runs[False]
            peer = aiperf(url, tokenizer_dir, folder, 64)
            peer_rate = float(peer["request_throughput"]["avg"])
            time.sleep(5)
            assert parsed["tokens"]["mean_output_tokens"] == 8.0, parsed["tokens"]
            peer_rates.append(peer_rate)
            parsed_rates.append(parsed["throughput_rps"])
            unparsed_rates.append(unparsed["throughput_rps"])
            print(f"round {round_ + 1}: AIPerf {peer_rate:,.0f} requests/s; plateau parsing {parsed['throughput_rps']:,.0f}/s "
                  f"({parsed['throughput_rps'] / peer_rate:.1f}x AIPerf), not parsing {unparsed['throughput_rps']:,.0f}/s")
        own_rates = parsed_rates
        print(f"generator speed, 64 concurrent streams of 8 chunks: plateau {statistics.median(own_rates):,.0f}/s, "
              f"AIPerf {statistics.median(peer_rates):,.0f}/s: {statistics.median(own_rates) / statistics.median(peer_rates):.1f}x "
              "(goal: at least 2x)")
        print(f"parsing cost, unpinned beside nginx: {statistics.median(parsed_rates) / statistics.median(unparsed_rates):.3f}x "
              "the rate for the same bytes unparsed (a side figure: PARSING_ONLY=1 measures it pinned, over more rounds)")
    finally:
        server.terminate()
        server.wait()


def main():
    ensure_tools()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        if os.environ.get("PARSING_ONLY"):
            parsing(folder)
            return
        tokenizer_dir = tokenizer(folder / "tokenizer")
        agreement(folder, tokenizer_dir)
        speed(folder, tokenizer_dir)


if __name__ == "__main__":
    main()
