#!/usr/bin/env bash
# Runs every test plateau has, on a fresh machine: installs what the tests need, then the test suite.
# .ci/run calls this on a clean clone with CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

# The AWS SDK's credential chain must never reach for the instance-metadata address (docs/decisions.md, "AWS in tests").
export AWS_EC2_METADATA_DISABLED=true

# llama-cpp-python's OpenAI-compatible server: the real generative server tests/generative.rs runs, on a tiny model
# that tests/llm/tiny_model.py writes with gguf. PyPI ships it as source and llama.cpp compiles at install: here
# only the two libraries the package loads, at -O0, under 3 minutes on 2 cores instead of 5 (the model is tiny: its
# speed is not what the test measures; docs/decisions.md). It builds first, at a lower priority, beside the
# downloads below and plateau's own build; pip keeps the wheel it built in its cache for the next run.
llm=
if ! .venv-llm/bin/python -c 'import llama_cpp.server, gguf' 2>/dev/null; then
  python3 -m venv .venv-llm
  CMAKE_BUILD_PARALLEL_LEVEL=2 \
    CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_LLAMAFILE=OFF -DGGML_CPU_REPACK=OFF -DCMAKE_C_FLAGS_RELEASE=-O0 -DCMAKE_CXX_FLAGS_RELEASE=-O0" \
    nice -n 10 .venv-llm/bin/pip install --quiet --disable-pip-version-check -C 'build.targets=llama;llama-common' \
    'llama-cpp-python[server]==0.3.36' 'gguf==0.19.0' &
  llm=$!
fi

# Debian packages: Chromium for the HTML report and Mermaid tests; clang and lld to build the C example plugin.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core)
command -v clang-14 >/dev/null 2>&1 || missing+=(clang-14 lld-14)
# git: plateau publish pushes to a wiki through it, and its test publishes to a local bare repository.
command -v git >/dev/null 2>&1 || missing+=(git)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# playwright-core drives that Chromium (it downloads no browser of its own); mermaid draws the Markdown's charts there.
(cd tests/browser && npm ci --no-audit --no-fund --silent)

# moto's server mode, the AWS API emulator the AWS tests start (docs/decisions.md, "AWS in tests"); jsonschema, the
# independent validator the schema test checks scenarios with; PyYAML, which reads action.yml there.
if [ ! -x .venv/bin/moto_server ] || ! .venv/bin/python -c 'import jsonschema, yaml' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check 'moto[server]==5.2.5' 'jsonschema>=4.18' 'pyyaml>=6'
fi

# The example payload plugins, built from source (the tests call this again; it is incremental), beside plateau's
# own build, whose linking and last crates leave a core idle; all finish before any test runs, as tests measure.
payload-plugins/build.sh &
plugins=$!
cargo test --release --workspace --locked --no-run
wait "$plugins"
if [ -n "$llm" ]; then wait "$llm"; fi

cargo test --release --workspace --locked
