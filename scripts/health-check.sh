#!/usr/bin/env bash
# Health check for cron (the emergency recovery runbook's "continuous monitoring"):
#   */5 * * * * $COMMIT_RELAY_HOME/scripts/health-check.sh >> /tmp/health.log 2>&1
#   scripts/health-check.sh [--fix] [--json]
# A thin wrapper over `cortex health-check`: prints a timestamped verdict and the daemons that
# are not running; --fix restarts dead or hung daemons (not those stopped with `cortex stop`,
# nor those pm gave up on). Exit status: 0 healthy, 1 degraded, 2 down, 127 no cortex binary.
# The home: --home DIR, CORTEX_HOME, COMMIT_RELAY_HOME, else the home this script is kept in
# (<home>/scripts/), else as cortex finds it. The binary: $CORTEX_BIN, else `cortex` on the
# PATH, else this checkout's build.
set -uo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$script_dir/lib/find-cortex.sh"

help_if_asked 11 "$@"

cortex="$(find_cortex)" || exit 127
set_home_args "$script_dir"

echo "[$(date -u +%Y-%m-%dT%H:%M:%SZ)] health check"
"$cortex" "${home_args[@]}" health-check "$@"
exit $?
