#!/usr/bin/env bash
# Live system view (the emergency recovery runbook's dashboard): every few seconds, the
# daemons, the scheduler, running dispatches, task counts and the latest events, redrawn in
# place on a terminal (appended, separated by a rule, when the output is not a terminal).
#
#   system-live.sh [--interval SECONDS] [--events N] [--once]
#
# --interval  seconds between refreshes (default 5)
# --events    how many recent events to show (default 10)
# --once      draw one frame and exit (exit status of `cortex status`: 0 when every daemon runs)
#
# Stop it with Ctrl-C (or `kill`). Home: $CORTEX_HOME, else $COMMIT_RELAY_HOME, else this
# checkout. Binaries: $CORTEX_BIN_DIR, else target/release, else `cortex` on PATH.
set -uo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/../lib/cortex.sh"

usage() {
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

interval=5
events=10
once=0
while (( $# > 0 )); do
    case "$1" in
        --interval)
            [[ "${2:-}" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "ERROR: --interval needs a number of seconds" >&2; exit 2; }
            interval="$2"; shift 2 ;;
        --events)
            [[ "${2:-}" =~ ^[0-9]+$ ]] || { echo "ERROR: --events needs a count" >&2; exit 2; }
            events="$2"; shift 2 ;;
        --once) once=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "ERROR: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

sleeper=""
trap '[[ -n "$sleeper" ]] && kill "$sleeper" 2>/dev/null; exit 0' INT TERM

frame() {
    echo "Cortex live view — $home — $(date '+%Y-%m-%d %H:%M:%S')"
    echo
    c status
    local rc=$?
    echo
    c scheduler status
    echo
    echo "Running dispatches:"
    c dispatches --status running
    echo
    echo "Recent events:"
    c event list --limit "$events"
    return "$rc"
}

if (( once )); then
    frame
    exit $?
fi
while :; do
    if [[ -t 1 ]]; then
        # Draw the whole frame first, then replace the screen with it (no flicker).
        out="$(frame 2>&1)"
        printf '\033[H\033[2J%s\n' "$out"
    else
        frame 2>&1
        echo "----"
    fi
    sleep "$interval" &
    sleeper=$!
    wait "$sleeper"
    sleeper=""
done
