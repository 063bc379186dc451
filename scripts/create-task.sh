#!/usr/bin/env bash
# Queue a task — the runbooks' form of `cortex task add`:
#   scripts/create-task.sh --description TEXT --priority low|medium|high|critical \
#       [--type WORKER_TYPE] [--repo REPO] [--budget N] [--timeout 15m] [--after TASK_ID] \
#       [--delay 10m] [--max-attempts N] [--json] [-- COMMAND ARGS...]
# Prints the new task_id. The home is found as cortex finds it (--home, CORTEX_HOME,
# COMMIT_RELAY_HOME, the current directory, ~/.cortex). The cortex binary: $CORTEX_BIN, else
# `cortex` on the PATH, else this checkout's target/release or target/debug build.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

find_cortex() {
    if [[ -n "${CORTEX_BIN:-}" ]]; then
        printf '%s\n' "$CORTEX_BIN"
        return
    fi
    if command -v cortex >/dev/null 2>&1; then
        command -v cortex
        return
    fi
    local b
    for b in "$here/../target/release/cortex" "$here/../target/debug/cortex"; do
        if [[ -x "$b" ]]; then
            printf '%s\n' "$b"
            return
        fi
    done
    echo "create-task.sh: cannot find the cortex binary (set CORTEX_BIN or put cortex on the PATH)" >&2
    exit 127
}

case "${1:-}" in
    -h|--help)
        sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
esac

cortex="$(find_cortex)"
exec "$cortex" task add "$@"
