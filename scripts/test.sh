#!/usr/bin/env bash
# Runs the whole test suite: unit tests and the integration tests that start the real binaries
# in temporary homes. External tools the tests use (promtool, jq, curl, Slurm) are put on PATH
# first.
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/tools.sh
exec cargo test --all-targets "$@"
