#!/usr/bin/env bash
# Runs the heartbeat (monitor) daemon in the foreground; see run-daemon.sh.
exec "$(dirname "${BASH_SOURCE[0]}")/run-daemon.sh" heartbeat "$@"
