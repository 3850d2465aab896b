#!/usr/bin/env bash
# Coverage-guided fuzzing of plateau's five fuzz targets with libFuzzer (cargo-fuzz), for longer than CI's budget
# (tests/fuzz.rs replays what this finds). Prints, per target, the inputs tried, the corpus and any crash.
#
#   benches/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 300 s each, every target
#   KEEP=1 benches/fuzz.sh ...                             also keeps what added coverage in fuzz/corpus/
#
# Targets: job_file (parser and include merge), results_file (loader, reports, compare), http_response (the wire
# client's HTTP/1.1 parser), token_stream (the SSE parser and OpenAI chunk reader), plugin_module (the plugin host, with modules wasm-smith makes). Built without a
# sanitizer: the code under test is safe Rust, where a bug is a panic, and AddressSanitizer halves the speed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-300}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(job_file results_file http_response token_stream plugin_module)

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --version 0.13.2 --locked
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
cd fuzz
cargo +nightly fuzz build -O --sanitizer none

# What each target starts from besides what libFuzzer found (fuzz/corpus/<target>.tar.gz): the handwritten seeds
# in fuzz/seeds/<target>, and for job files every scenario and golden file (tests/fuzz.rs reads the same).
seeds() {
  ls seeds/"$1"/*
  if [ "$1" = job_file ]; then ls ../scenarios/*.toml ../tests/golden/*.toml; fi
}

printf '%-14s %10s %9s %8s %8s  %s\n' target seconds inputs "per s" corpus outcome
status=0
for target in "${targets[@]}"; do
  found=$(mktemp -d)
  work=$(mktemp -d)
  log=$(mktemp)
  [ -f corpus/"$target".tar.gz ] && tar -xzf corpus/"$target".tar.gz -C "$found"
  cp "$found"/. "$work"/ -r
  for seed in $(seeds "$target"); do cp "$seed" "$work"/; done
  outcome=clean
  dictionary=()
  [ -f dict/"$target".dict ] && dictionary=(-dict=dict/"$target".dict)
  cargo +nightly fuzz run -O --sanitizer none "$target" "$work" -- \
    -max_total_time="$seconds" "${dictionary[@]}" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    >"$log" 2>&1 || { outcome="CRASH: see $log and fuzz/artifacts/$target"; status=1; }
  inputs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  printf '%-14s %10s %9s %8s %8s  %s\n' "$target" "$seconds" "${inputs:-?}" \
    "$(( ${inputs:-0} / seconds ))" "$(ls "$work" | wc -l)" "$outcome"
  if [ "${KEEP:-0}" = 1 ] && [ "$outcome" = clean ]; then
    # Only what adds coverage to what was found before, and never a copy of a seed kept in the repository.
    cargo +nightly fuzz run -O --sanitizer none "$target" "$found" "$work" -- -merge=1 >/dev/null 2>&1
    for seed in $(seeds "$target"); do rm -f "$found"/"$(sha1sum "$seed" | cut -d' ' -f1)"; done
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - -C "$found" . | gzip -n -9 \
      >corpus/"$target".tar.gz
  fi
  rm -rf "$work" "$found"
done
exit $status
