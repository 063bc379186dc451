#!/usr/bin/env bash
# Runs the metrics daemon in the foreground; see scripts/daemons/run-daemon.sh.
exec "$(dirname "${BASH_SOURCE[0]}")/daemons/run-daemon.sh" metrics "$@"
