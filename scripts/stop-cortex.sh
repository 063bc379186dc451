#!/usr/bin/env bash
# Stops Cortex's daemons (all, or those named) in reverse start order: SIGTERM, a timeout, then
# SIGKILL. Only this home's daemons are touched. Extra arguments go to `cortex stop`:
#
#   ./scripts/stop-cortex.sh                    # graceful stop of everything
#   ./scripts/stop-cortex.sh --force            # emergency stop (instead of `pkill -9 -f cortex`)
#   ./scripts/stop-cortex.sh worker --kill-tasks --timeout 30
set -euo pipefail

checkout="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
home="${CORTEX_HOME:-${COMMIT_RELAY_HOME:-$checkout}}"
bin_dir="${CORTEX_BIN_DIR:-$checkout/target/release}"
cortex="$bin_dir/cortex"
if [[ ! -x "$cortex" ]]; then
    cortex="$(command -v cortex || true)"
    [[ -n "$cortex" ]] || { echo "ERROR: no cortex binary in $bin_dir or on PATH" >&2; exit 1; }
fi
exec "$cortex" --home "$home" stop "$@"
