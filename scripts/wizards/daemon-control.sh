#!/usr/bin/env bash
# Daemon control wizard: a numbered menu over `cortex` for operators who prefer not to type
# commands (the daemon management runbook: "Select option 1: Start all daemons").
#
#   daemon-control.sh            interactive menu (repeats until q)
#   echo 1 | daemon-control.sh   scripted: reads choices (and daemon names) from standard input
#
# Home: $CORTEX_HOME, else $COMMIT_RELAY_HOME, else this checkout. Binaries: $CORTEX_BIN_DIR,
# else target/release, else `cortex` on PATH. Exit status: that of the last action.
set -uo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/../lib/cortex.sh"

daemons=(worker pm heartbeat metrics coordinator integration failure-pattern auto-fix api)

menu() {
    cat <<MENU

Cortex daemon control ($home)
  1) Start all daemons
  2) Stop all daemons
  3) Rolling restart of all daemons
  4) Status
  5) Start one daemon
  6) Stop one daemon
  7) Restart one daemon
  8) Show a daemon's recent log lines
  9) Health check
  q) Quit
MENU
    printf 'Choice: '
}

ask_daemon() {
    printf 'Daemon (%s): ' "${daemons[*]}" >&2
    local name
    read -r name || return 1
    for d in "${daemons[@]}"; do
        if [[ "$d" == "$name" ]]; then
            printf '%s' "$name"
            return 0
        fi
    done
    echo "unknown daemon: $name" >&2
    return 1
}

rc=0
while true; do
    menu
    read -r choice || break
    echo
    case "$choice" in
        1) c start; rc=$? ;;
        2) c stop; rc=$? ;;
        3) c restart --rolling; rc=$? ;;
        4) c status; rc=$? ;;
        5) if name="$(ask_daemon)"; then echo; c start "$name"; rc=$?; else rc=2; fi ;;
        6) if name="$(ask_daemon)"; then echo; c stop "$name"; rc=$?; else rc=2; fi ;;
        7) if name="$(ask_daemon)"; then echo; c restart "$name"; rc=$?; else rc=2; fi ;;
        8) if name="$(ask_daemon)"; then echo; c logs tail "$name"; rc=$?; else rc=2; fi ;;
        9) c health-check; rc=$? ;;
        q|Q|quit|exit) break ;;
        "") continue ;;
        *) echo "unknown choice: $choice"; rc=2 ;;
    esac
done
exit "$rc"
