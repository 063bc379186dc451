#!/usr/bin/env bash
# Runs one Cortex daemon in the foreground (the runbook's "direct start"):
#
#   ./scripts/daemons/run-daemon.sh worker &          # or ./scripts/worker-daemon.sh &
#   DEBUG=1 ./scripts/worker-daemon.sh                # debug-level logging
#
# It writes its PID file (run/NAME.pid, locked while it runs) and logs to
# agents/logs/system/NAME-daemon.log itself. Prefer `cortex start NAME`, which detaches it and
# waits until it is ready. Home: $CORTEX_HOME, else $COMMIT_RELAY_HOME, else this checkout.
# Binaries: $CORTEX_BIN_DIR, else target/release, else on PATH.
set -euo pipefail

name="${1:?usage: run-daemon.sh NAME (worker, pm, heartbeat, metrics, coordinator, integration, failure-pattern, auto-fix, api)}"
checkout="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
home="${CORTEX_HOME:-${COMMIT_RELAY_HOME:-$checkout}}"
bin_dir="${CORTEX_BIN_DIR:-$checkout/target/release}"
bin="$bin_dir/cortex-$name"
if [[ ! -x "$bin" ]]; then
    bin="$(command -v "cortex-$name" || true)"
    [[ -n "$bin" ]] || { echo "ERROR: no cortex-$name in $bin_dir or on PATH (cargo build --release)" >&2; exit 1; }
fi
if [[ -n "${DEBUG:-}" && "${DEBUG}" != 0 ]]; then
    export CORTEX_LOG=debug
fi
exec "$bin" --home "$home"
