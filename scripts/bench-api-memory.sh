# bench-api-memory.sh: the `--memory` mode of scripts/bench-api.sh (sourced by it, with
# CORTEX, CORTEX_API, HOME_DIR, PORT and TASKS set and the home initialised).
#
# Writes TASKS queued tasks straight into task-queue.json in the writers' layout (one task per
# line; descriptions of 20 to 300 characters, every seventh longer than the 200 a row keeps; three
# worker types; one in ten a pending retry) and DISPATCHES ended dispatch records (default 2000,
# one in four failed), starts cortex-api alone and prints its VmRSS and VmHWM (the peak) after
# each step of a dashboard session: the overview endpoints, then the tasks table (first page,
# pages after an id, filters, text searches), then the same after the snapshot is replaced as a
# compaction replaces it.

DISPATCHES="${DISPATCHES:-2000}"
COORD="$HOME_DIR/coordination"

awk -v n="$TASKS" 'BEGIN {
    pad = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor ";
    while (length(pad) < 400) pad = pad pad;
    types[0] = "scan-worker"; types[1] = "analysis-worker"; types[2] = "build-worker";
    retry = 0;
    for (i = 0; i < n; i++) if (i % 10 == 1) retry++;
    # The header as the writers write it: the counts first, so /status reads them in O(1).
    printf "{\n  \"counts\": {\"cancelled\":0,\"completed\":0,\"failed\":0,\"in_progress\":0,\"pending_retry\":%d,\"queued\":%d,\"total\":%d,\"waiting\":{\"delay\":%d}},", retry, n - retry, n, n - retry;
    printf "\n  \"intake_offset\": 0,\n  \"journal_generation\": 1,\n  \"updated_at\": null,\n  \"tasks\": [";
    for (i = 0; i < n; i++) {
        len = (i % 7 == 0) ? 300 : 20 + (i * 37) % 120;
        desc = substr(sprintf("benchmark task %d: %s", i, pad), 1, len);
        state = (i % 10 == 1) ? "\"status\":\"pending_retry\",\"next_retry_at\":\"2099-01-01T00:00:00.000000Z\"" \
                              : "\"status\":\"queued\",\"waiting_reason\":\"delay\"";
        printf "%s\n    {\"task_id\":\"task-bench-%08d\",\"description\":\"%s\",\"priority\":\"medium\",\"worker_type\":\"%s\",\"command\":[\"true\"],%s,\"created_at\":\"2026-01-01T00:00:%02d.%06dZ\",\"created_by\":\"bench\",\"attempts\":0,\"max_attempts\":3,\"budget\":10,\"not_before\":\"2099-01-01T00:00:00.000000Z\",\"dispatches\":[]}", (i ? "," : ""), i, desc, types[i % 3], state, int(i / 1000000) % 60, i % 1000000;
    }
    printf "\n  ]\n}\n";
}' >"$COORD/task-queue.json"

now_s="$(date -u +%s)"
awk -v n="$DISPATCHES" -v now="$now_s" -v dir="$COORD/worker-specs" 'BEGIN {
    for (i = 0; i < n; i++) {
        t = now - (i * 7) % 7200;
        ts = strftime("%Y-%m-%dT%H:%M:%S.000000Z", t, 1);
        failed = (i % 4 == 0);
        bucket = failed ? "failed" : "completed";
        state = failed ? "\"status\":\"failed\",\"exit_code\":2,\"error\":\"exit status 2\"" \
                       : "\"status\":\"completed\",\"exit_code\":0,\"duration_s\":1.5";
        f = sprintf("%s/%s/d-bench-%06d.json", dir, bucket, i);
        printf "{\"dispatch_id\":\"d-bench-%06d\",\"task_id\":\"task-bench-%08d\",\"worker_type\":\"scan-worker\",%s,\"ended_at\":\"%s\",\"dispatched_at\":\"%s\",\"attempt\":1,\"command\":[\"true\"],\"budget_reserved\":10,\"timeout_seconds\":60.0,\"stdout_path\":\"agents/logs/workers/d-bench-%06d.out\",\"stderr_path\":\"agents/logs/workers/d-bench-%06d.err\"}\n", i, i, state, ts, ts, i, i > f;
        close(f);
    }
}'
chmod 600 "$COORD"/worker-specs/*/d-bench-*.json 2>/dev/null || true

"$CORTEX_API" --home "$HOME_DIR" >"$HOME_DIR/api.out" 2>&1 &
API_PID=$!
for _ in $(seq 1 400); do
    if curl -s -f "http://127.0.0.1:$PORT/status" >/dev/null 2>&1; then break; fi
    sleep 0.05
done
curl -s -f "http://127.0.0.1:$PORT/status" >/dev/null || { echo "bench-api.sh: cortex-api did not start" >&2; exit 1; }

BASE="http://127.0.0.1:$PORT"
kib() { awk -v k="$1" '$1 == k ":" {print $2}' "/proc/$API_PID/status"; }
report() { # report LABEL [SECONDS]
    local rss hwm
    rss="$(kib VmRSS)"
    hwm="$(kib VmHWM)"
    printf '%-44s RSS %6.1f MiB  peak %6.1f MiB  %s\n' "$1" "$(awk -v k="$rss" 'BEGIN {print k / 1024}')" \
        "$(awk -v k="$hwm" 'BEGIN {print k / 1024}')" "${2:+${2} s}"
}
get() { # get PATH -> the body on stdout; the time in $took
    local out
    out="$(curl -s -w '\n%{time_total}' "$BASE$1")" || { echo "bench-api.sh: GET $1 failed" >&2; exit 1; }
    took="${out##*$'\n'}"
    body="${out%$'\n'*}"
}
after_of() { sed -n 's/.*"next_after_id":"\([^"]*\)".*/\1/p' <<<"$body"; }

echo "cortex-api alone, $TASKS queued tasks ($(du -h "$COORD/task-queue.json" | cut -f1) snapshot), $DISPATCHES dispatch records"
report "started"
for path in /status /health /overview /daemons "/overview/history?minutes=60" "/events?limit=50" /breakers /zombies; do
    get "$path"
    report "GET $path" "$took"
done
curl -s -f -H 'Accept: text/html' "$BASE/" >/dev/null
report "GET / (the page)"
for _ in 1 2 3; do get /overview; done
report "GET /overview x3 more" "$took"
get /metrics
report "GET /metrics" "$took"

get "/tasks?limit=50"
report "GET /tasks (first page)" "$took"
get "/tasks?limit=50"
report "GET /tasks (first page again)" "$took"
for _ in 1 2 3 4 5; do
    get "/tasks?limit=50&after_id=$(after_of)"
done
report "GET /tasks, 5 pages after an id" "$took"
get "/tasks?limit=50&status=pending_retry"
report "GET /tasks?status=pending_retry" "$took"
get "/tasks?limit=50&worker_type=build-worker"
report "GET /tasks?worker_type=build-worker" "$took"
get "/tasks?limit=50&q=task%2099999"
report "GET /tasks?q=task 99999 (few matches)" "$took"
get "/tasks?limit=50&q=no-such-text"
report "GET /tasks?q=no-such-text (scans all)" "$took"
get "/tasks?limit=50&q=LOREM"
report "GET /tasks?q=LOREM (case-insensitive)" "$took"

# A compaction replaces the snapshot (same content, new file): the next page reads it again.
cp "$COORD/task-queue.json" "$COORD/.task-queue.json.bench"
mv "$COORD/.task-queue.json.bench" "$COORD/task-queue.json"
get "/tasks?limit=50"
report "GET /tasks after the snapshot was replaced" "$took"
get "/tasks?limit=50&q=no-such-text"
report "GET /tasks?q=no-such-text" "$took"
get /overview
report "GET /overview" "$took"
