#!/usr/bin/env bash
# Restores the Cortex home from a backup archive, verifying it completely first.
#
# Usage: restore-from-backup.sh (--latest | --file ARCHIVE | --list) [options]
#   --latest            restore the newest backup in <home>/backups/
#   --file ARCHIVE      restore this archive (relative paths: current directory, then the home)
#   --list              list the backups, newest first
#   --dry-run           verify and show what would change; change nothing
#   --verify-only       only verify the archive (gzip, tar, manifest, checksums, paths)
#   --only config       restore only configuration (cortex.toml, config/, coordination/config/, router)
#   --only coordination restore only coordination/
#   --stop              stop running daemons first and start them again afterwards
#   --yes               do not ask for confirmation on a terminal
#   --home DIR          the Cortex home (default: CORTEX_HOME, COMMIT_RELAY_HOME, ...)
#   -h, --help          this help
#
# Before anything changes the current state is saved to <home>/backups/pre-restore/, and a
# restore that fails or is interrupted leaves the current state as it was. Daemons that are
# running make it refuse unless --stop is given (or stop them with `cortex stop`).
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }

. "$script_dir/lib/find-cortex.sh"

global=()
args=()
mode=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --latest|--list) mode="$1"; args+=("$1"); shift ;;
        --file)
            [[ $# -ge 2 ]] || { echo "restore-from-backup.sh: --file needs an archive path" >&2; exit 2; }
            mode="--file"; args+=(--file "$2"); shift 2 ;;
        --file=*) mode="--file"; args+=("$1"); shift ;;
        --only)
            [[ $# -ge 2 ]] || { echo "restore-from-backup.sh: --only needs config or coordination" >&2; exit 2; }
            args+=(--only "$2"); shift 2 ;;
        --only=*|--dry-run|--verify-only|--stop|--yes|-y) args+=("$1"); shift ;;
        --home)
            [[ $# -ge 2 ]] || { echo "restore-from-backup.sh: --home needs a directory" >&2; exit 2; }
            global+=(--home "$2"); shift 2 ;;
        --json) global+=(--json); shift ;;
        *) echo "restore-from-backup.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
if [[ -z "$mode" ]]; then
    echo "restore-from-backup.sh: say which backup: --latest, --file ARCHIVE or --list" >&2
    usage >&2
    exit 2
fi

cortex="$(find_cortex)"
if [[ ${#global[@]} -eq 0 && -z "${CORTEX_HOME:-}" && -z "${COMMIT_RELAY_HOME:-}" ]] &&
   [[ -f "$script_dir/../cortex.toml" || -d "$script_dir/../coordination" ]]; then
    global=(--home "$(cd "$script_dir/.." && pwd)")
fi
exec "$cortex" "${global[@]}" restore "${args[@]}"
