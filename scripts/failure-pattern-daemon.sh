#!/usr/bin/env bash
# Runs the failure-pattern daemon in the foreground; see scripts/daemons/run-daemon.sh.
exec "$(dirname "${BASH_SOURCE[0]}")/daemons/run-daemon.sh" failure-pattern "$@"
