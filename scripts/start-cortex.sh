#!/usr/bin/env bash
# Starts Cortex: builds the release binaries if they are missing, initialises the home (creating
# only what is missing), starts every enabled daemon detached, then prints their status and the
# API address.
#
#   ./scripts/start-cortex.sh            # home: $CORTEX_HOME, else $COMMIT_RELAY_HOME, else this checkout
#   CORTEX_BIN_DIR=/opt/cortex/bin ./scripts/start-cortex.sh   # use installed binaries, build nothing
#
# Exit status: that of `cortex start` (non-zero when a daemon did not become ready).
set -euo pipefail

checkout="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
home="${CORTEX_HOME:-${COMMIT_RELAY_HOME:-$checkout}}"
bin_dir="${CORTEX_BIN_DIR:-$checkout/target/release}"
binaries=(cortex cortex-worker cortex-pm cortex-heartbeat cortex-metrics cortex-coordinator
          cortex-integration cortex-failure-pattern cortex-auto-fix cortex-api cortex-exec-shim)

missing=()
for b in "${binaries[@]}"; do
    [[ -x "$bin_dir/$b" ]] || missing+=("$b")
done
if (( ${#missing[@]} > 0 )); then
    if [[ -n "${CORTEX_BIN_DIR:-}" ]]; then
        echo "ERROR: $bin_dir lacks ${missing[*]}" >&2
        exit 1
    fi
    echo "Building release binaries (cargo build --release) in $checkout ..."
    (cd "$checkout" && cargo build --release)
fi

cortex=("$bin_dir/cortex" --home "$home")
"${cortex[@]}" init >/dev/null
echo "Starting Cortex daemons in $home"
rc=0
"${cortex[@]}" start || rc=$?
echo
status="$("${cortex[@]}" status || true)"
echo "$status"
echo
echo "API address: $(sed -n 's/^API: //p' <<<"$status")"
exit "$rc"
