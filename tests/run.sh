#!/usr/bin/env bash
# Runs every test plateau has, on a fresh machine: installs what the tests need, then the test suite.
# .ci/run calls this on a clean clone with CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

# The AWS SDK's credential chain must never reach for the instance-metadata address (DESIGN.md).
export AWS_EC2_METADATA_DISABLED=true

# Debian's Chromium, for the HTML report test.
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
# playwright-core drives that Chromium; it downloads no browser of its own.
(cd tests/browser && npm ci --no-audit --no-fund --silent)

cargo test --release --workspace --locked
