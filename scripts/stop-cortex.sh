#!/usr/bin/env bash
# Stops Cortex's daemons (all, or those named) in reverse start order: SIGTERM, a timeout, then
# SIGKILL. Only this home's daemons are touched. Extra arguments go to `cortex stop`:
#
#   ./scripts/stop-cortex.sh                    # graceful stop of everything
#   ./scripts/stop-cortex.sh --force            # emergency stop (instead of `pkill -9 -f cortex`)
#   ./scripts/stop-cortex.sh worker --kill-tasks --timeout 30
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib/cortex.sh"
exec "$cortex" --home "$home" stop "$@"
