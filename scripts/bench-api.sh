#!/usr/bin/env bash
# bench-api.sh: load benchmark of the HTTP API with wrk (Debian package `wrk`).
#
# Builds the release binaries (unless CORTEX_BIN_DIR points at built ones), makes a throw-away
# home holding TASKS tasks (default 10000), starts cortex-api on a free port, and measures with
# CONNECTIONS concurrent clients (default 100) for DURATION seconds (default 10) each:
#   1. GET /status
#   2. GET /scheduler/status
#   3. POST /scheduler/pause and /scheduler/resume, alternating (half of them change state:
#      locked read-modify-write, fsync, event append)
#   4. POST /scheduler/pause only (after the first, "already paused": one read, no lock)
#   5. as 3 with a single client (the latency of one transition without queueing)
# and prints the latency percentiles. Targets (issue 5): p99 <= 5 ms for pause/resume and
# <= 10 ms for /status with 10,000 tasks under 100 concurrent clients.
#
# --memory (no wrk needed; TASKS default 100000): cortex-api's resident size (VmRSS, and VmHWM,
# the peak) behind TASKS queued tasks, printed after start, after each overview endpoint the
# dashboard reads, and through a tasks-table session (first page, pages after an id, filters by
# status and type, text searches), with each /tasks call's time; then the snapshot is replaced
# (as a compaction does) and the first page is timed again. Target (issue 19): RSS <= 64 MiB.
#
# Usage: scripts/bench-api.sh [--memory] [--tasks N] [--connections N] [--duration SECS] [--threads N]
set -euo pipefail

TASKS=""
MEMORY=0
CONNECTIONS=100
DURATION=10
THREADS=2
while [ $# -gt 0 ]; do
    case "$1" in
        --tasks) TASKS="$2"; shift 2 ;;
        --memory) MEMORY=1; shift ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "bench-api.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [ -z "$TASKS" ]; then
    if [ "$MEMORY" = 1 ]; then TASKS=100000; else TASKS=10000; fi
fi
tools="wrk jq curl"
[ "$MEMORY" = 1 ] && tools="curl"
for tool in $tools; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "bench-api.sh: $tool is not installed (Debian: apt-get install -y $tool)" >&2
        exit 2
    fi
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${CORTEX_BIN_DIR:-}" ]; then
    (cd "$ROOT" && cargo build --release --quiet --bin cortex --bin cortex-api)
    CORTEX_BIN_DIR="$ROOT/target/release"
fi
CORTEX="$CORTEX_BIN_DIR/cortex"
CORTEX_API="$CORTEX_BIN_DIR/cortex-api"

HOME_DIR="$(mktemp -d "${TMPDIR:-/tmp}/cortex-bench-api.XXXXXX")"
API_PID=""
cleanup() {
    if [ -n "$API_PID" ] && kill -0 "$API_PID" 2>/dev/null; then
        kill -TERM "$API_PID"
        wait "$API_PID" 2>/dev/null || true
    fi
    [ -n "${KEEP_HOME:-}" ] || rm -rf "$HOME_DIR"
}
trap cleanup EXIT

"$CORTEX" --home "$HOME_DIR" init >/dev/null
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
    || shuf -i 20000-60000 -n 1)"
sed -i "s/^bind = .*/bind = \"127.0.0.1:$PORT\"/" "$HOME_DIR/cortex.toml"
if [ "$MEMORY" = 1 ]; then
    # shellcheck source=scripts/bench-api-memory.sh
    . "$ROOT/scripts/bench-api-memory.sh"
    exit 0
fi

# The queue: TASKS tasks, mostly queued, some pending_retry and in progress.
jq -n --argjson n "$TASKS" '{
  tasks: [range($n) as $i | {
    task_id: "bench-\($i)", description: "benchmark task \($i)", priority: "medium",
    worker_type: "scan-worker", command: ["true"], created_at: "2026-01-01T00:00:00.000000Z",
    created_by: "bench", attempts: 0, max_attempts: 3, budget: 100, dispatches: []
  } + (if $i % 10 == 1 then {status: "pending_retry", next_retry_at: "2026-01-01T00:05:00.000000Z"}
       else {status: "queued"} end)],
  updated_at: null
}' > "$HOME_DIR/coordination/task-queue.json"
"$CORTEX" --home "$HOME_DIR" validate >/dev/null

"$CORTEX_API" --home "$HOME_DIR" &
API_PID=$!
for _ in $(seq 1 200); do
    if curl -s -f "http://127.0.0.1:$PORT/status" >/dev/null; then break; fi
    sleep 0.05
done
curl -s -f "http://127.0.0.1:$PORT/status" >/dev/null || { echo "bench-api.sh: cortex-api did not start" >&2; exit 1; }
echo "cortex-api on 127.0.0.1:$PORT, $(curl -s "http://127.0.0.1:$PORT/status" | jq .tasks_total) tasks," \
     "$CONNECTIONS connections, $THREADS wrk threads, ${DURATION}s per run, $(nproc) CPUs"

ALTERNATE="$HOME_DIR/alternate.lua"
cat > "$ALTERNATE" <<'LUA'
local n = 0
request = function()
  n = n + 1
  if n % 2 == 0 then
    return wrk.format("POST", "/scheduler/pause")
  end
  return wrk.format("POST", "/scheduler/resume")
end
LUA
PAUSE_ONLY="$HOME_DIR/pause.lua"
cat > "$PAUSE_ONLY" <<'LUA'
wrk.method = "POST"
LUA

run() {
    local name="$1" path="$2" script="${3:-}" conns="${4:-$CONNECTIONS}" threads="${5:-$THREADS}"
    local args=(-t"$threads" -c"$conns" -d"${DURATION}s" --latency)
    [ -n "$script" ] && args+=(-s "$script")
    local out
    out="$(wrk "${args[@]}" "http://127.0.0.1:$PORT$path")"
    local p50 p90 p99 rps errors
    p50="$(awk '$1 == "50%" {print $2}' <<<"$out")"
    p90="$(awk '$1 == "90%" {print $2}' <<<"$out")"
    p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
    rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
    errors="$(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr -s ' ' | paste -sd ';' - || true)"
    printf '%-28s p50 %-9s p90 %-9s p99 %-9s %10s req/s %s\n' "$name" "$p50" "$p90" "$p99" "$rps" "$errors"
}

run "GET /status" "/status"
run "GET /scheduler/status" "/scheduler/status"
run "POST pause/resume (alt.)" "/scheduler/pause" "$ALTERNATE"
run "POST pause (idempotent)" "/scheduler/pause" "$PAUSE_ONLY"
# One client: the cost of one real transition (lock, write, fsync file and directory, event).
run "POST pause/resume, 1 client" "/scheduler/pause" "$ALTERNATE" 1 1
echo "events recorded: $(grep -c '"type":"scheduler_' "$HOME_DIR/coordination/dashboard-events.jsonl")"
