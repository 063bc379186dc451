#!/usr/bin/env bash
# Writes a verified backup archive of the Cortex home (coordination/, cortex.toml, config/,
# agents/prompts/) to <home>/backups/cortex-backup-YYYYmmdd-HHMMSS.tar.gz and applies retention
# ([backup] keep). Made for cron, e.g.:
#   0 2 * * * $COMMIT_RELAY_HOME/scripts/backup.sh >> $COMMIT_RELAY_HOME/backups/backup.log 2>&1
# Silent progress without a terminal; exits non-zero with the reason on any failure.
# Options are those of `cortex backup`: --dest DIR, --keep N, --label L, --json.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

. "$script_dir/lib/find-cortex.sh"

help_if_asked 8 "$@"

cortex="$(find_cortex)"
set_home_args "$script_dir"

echo "[$(date -u +%Y-%m-%dT%H:%M:%SZ)] backup starting"
if "$cortex" "${home_args[@]}" backup "$@"; then
    echo "[$(date -u +%Y-%m-%dT%H:%M:%SZ)] backup finished"
else
    rc=$?
    echo "[$(date -u +%Y-%m-%dT%H:%M:%SZ)] backup FAILED (exit $rc)" >&2
    exit "$rc"
fi
