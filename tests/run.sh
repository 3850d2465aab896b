#!/usr/bin/env bash
# Runs every test plateau has, on a fresh machine: installs what the tests need, then the test suite.
# .ci/run calls this on a clean clone with CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

# The AWS SDK's credential chain must never reach for the instance-metadata address (docs/decisions.md, "AWS in tests").
export AWS_EC2_METADATA_DISABLED=true

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
# own build, whose linking and last crates leave a core idle; both finish before any test runs, as tests measure.
payload-plugins/build.sh &
plugins=$!
cargo test --release --workspace --locked --no-run
wait "$plugins"

cargo test --release --workspace --locked
