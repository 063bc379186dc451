#!/usr/bin/env bash
# Append an event to the home's event log (coordination/dashboard-events.jsonl), as the
# emergency recovery runbook does — a thin wrapper over `cortex event emit`:
#   scripts/emit-event.sh --type TYPE [--severity info|warning|error|critical] [--message TEXT] \
#       [--data JSON_OBJECT] [--source NAME] [--json]
#   scripts/emit-event.sh TYPE [DATA_JSON [SOURCE]]          (the older positional form)
# Prints the new event's id. The home is found as cortex finds it (--home, CORTEX_HOME,
# COMMIT_RELAY_HOME, the current directory, ~/.cortex); a copy of this script kept in
# <home>/scripts/ uses that home when neither variable is set (cron). The cortex binary:
# $CORTEX_BIN, else `cortex` on the PATH, else this checkout's build.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$script_dir/lib/find-cortex.sh"

help_if_asked 10 "$@"
case "${1:-}" in
    "")
        echo "emit-event.sh: needs --type TYPE (see --help)" >&2
        exit 2
        ;;
esac

cortex="$(find_cortex)"
set_home_args "$script_dir"
exec "$cortex" "${home_args[@]}" event emit "$@"
