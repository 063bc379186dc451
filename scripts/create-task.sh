#!/usr/bin/env bash
# Queue a task — the runbooks' form of `cortex task add`:
#   scripts/create-task.sh --description TEXT --priority low|medium|high|critical \
#       [--type WORKER_TYPE] [--repo REPO] [--budget N] [--timeout 15m] [--after TASK_ID] \
#       [--delay 10m] [--max-attempts N] [--json] [-- COMMAND ARGS...]
# Prints the new task_id. The home is found as cortex finds it (--home, CORTEX_HOME,
# COMMIT_RELAY_HOME, the current directory, ~/.cortex). The cortex binary: $CORTEX_BIN, else
# `cortex` on the PATH, else this checkout's target/release or target/debug build.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$script_dir/lib/find-cortex.sh"

help_if_asked 9 "$@"

cortex="$(find_cortex)"
exec "$cortex" task add "$@"
