#!/usr/bin/env bash
# The long chaos soak on a release build: a full Cortex runs CORTEX_CHAOS_TASKS tasks (default
# 1,000) while a random daemon is SIGKILLed every 0.5 s, the scheduler is paused and resumed at
# random moments and `cortex backup` runs; then every property of tests/faults/chaos.rs is checked and
# the figures are printed (the line starting with "chaos:").
#
#   scripts/chaos.sh [--debug]          # --debug: use the debug build (no release compile)
#
# Environment: CORTEX_CHAOS_TASKS (1000). Exit status 0 only when there were no violations.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=(--release)
if [[ "${1:-}" == "--debug" ]]; then
    profile=()
fi
export CORTEX_CHAOS_LONG=1
cargo test "${profile[@]}" --test faults -- --exact chaos::chaos_soak --nocapture
