#!/usr/bin/env bash
# Runs every test plateau has, on a fresh machine: installs what the tests need, then the test suite.
# .ci/run calls this on a clean clone with CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

# The AWS SDK's credential chain must never reach for the instance-metadata address (DESIGN.md).
export AWS_EC2_METADATA_DISABLED=true

cargo test --release --workspace --locked
