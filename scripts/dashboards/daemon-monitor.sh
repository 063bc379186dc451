#!/usr/bin/env bash
# Daemon monitor: status and control of Cortex's daemons (the daemon management runbook's tool).
#
#   daemon-monitor.sh [--status]        one line per daemon: RUNNING (PID, uptime, memory, CPU),
#                                       STALE, STOPPED or FAILED; scheduler and task counts
#   daemon-monitor.sh --start NAME      start one daemon and wait until it is ready
#   daemon-monitor.sh --stop NAME       stop one daemon (SIGTERM, timeout, SIGKILL); pm leaves it stopped
#   daemon-monitor.sh --restart NAME    stop, start, wait until it is stable
#   daemon-monitor.sh --start-all       start every enabled daemon
#   daemon-monitor.sh --stop-all        stop every daemon
#
# Several flags may be given; they run in order. Home: $CORTEX_HOME, else $COMMIT_RELAY_HOME,
# else this checkout. Binaries: $CORTEX_BIN_DIR, else target/release, else `cortex` on PATH.
# Exit status: non-zero if any action failed (for --status: if an enabled daemon is not running).
set -uo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/../lib/cortex.sh"

usage() {
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

need_name() {
    if [[ -z "${2:-}" || "${2:-}" == --* ]]; then
        echo "ERROR: $1 needs a daemon name" >&2
        usage >&2
        exit 2
    fi
}

c() { "$cortex" --home "$home" "$@"; }

(( $# == 0 )) && set -- --status
rc=0
while (( $# > 0 )); do
    case "$1" in
        --status) c status || rc=1; shift ;;
        --start) need_name "$@"; c start "$2" || rc=1; shift 2 ;;
        --stop) need_name "$@"; c stop "$2" || rc=1; shift 2 ;;
        --restart) need_name "$@"; c restart "$2" || rc=1; shift 2 ;;
        --start-all) c start || rc=1; shift ;;
        --stop-all) c stop || rc=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "ERROR: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
exit "$rc"
