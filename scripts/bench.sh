#!/usr/bin/env bash
# Benchmark of Cortex's task path on a release build, in temporary homes (not a test).
#
#   scripts/bench.sh [--no-build]
#
# Prints:
#   1. enqueue -> process-start latency p50/p99 (from just before `cortex task add` to the task's
#      own first instruction), tasks one at a time on an idle system;
#   2. throughput of N `true` tasks with 1, 2 and 8 slots (all queued first, then the coordinator
#      starts; timed until the last one is archived);
#   3. `cortex task add` cost at 0, 10,000 and 100,000 queued tasks, with the coordinator stopped
#      (the add path alone) and running paused (folding every add into the big queue);
#   4. idle CPU and RSS of each daemon over a window.
# Where `pueue`/`pueued` are on the PATH the same workloads (latency, throughput, add cost up to
# 2,000 queued) run against pueue in the same run and the ratios are printed.
#
# Environment: BENCH_LATENCY_SAMPLES (200), BENCH_TASKS (1000), BENCH_PUEUE_TASKS (200),
# BENCH_ADD_SAMPLES (200),
# BENCH_IDLE_SECONDS (30), BENCH_QUEUED ("0 10000 100000"), BENCH_DIR (where the temporary homes
# go; default $TMPDIR or /tmp — compare a disk with /dev/shm to see the filesystem's share),
# BENCH_SETTLE_SECONDS (65 on ext4, else 0: a pause before the latency and each throughput
# section. ext4 without a journal skips every inode deleted in the last 60 s, longer while its
# inode table block is dirty, on each file creation, so without it a section would pay for the
# files the previous one deleted; set 0 to measure the sections back to back).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/target/release"
lat_n="${BENCH_LATENCY_SAMPLES:-200}"
tp_n="${BENCH_TASKS:-1000}"
# pueue runs fewer: its rate is set by its 300 ms tick, not the queue's length, and 1,000 tasks
# take it minutes per slot count.
pueue_tp_n="${BENCH_PUEUE_TASKS:-200}"
add_n="${BENCH_ADD_SAMPLES:-200}"
idle_s="${BENCH_IDLE_SECONDS:-30}"
queued_sizes="${BENCH_QUEUED:-0 10000 100000}"

if [[ "${1:-}" != "--no-build" ]]; then
    (cd "$root" && cargo build --release --bins --quiet)
fi
for b in cortex cortex-worker cortex-coordinator; do
    [[ -x "$bin/$b" ]] || { echo "bench.sh: $bin/$b missing; build with cargo build --release" >&2; exit 1; }
done
command -v jq >/dev/null || { echo "bench.sh: jq is required" >&2; exit 1; }

work="$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/cortex-bench.XXXXXX")"
fs_type="$(df -T "$work" | awk 'NR==2 {print $2}')"
if [[ "$fs_type" == ext4 ]]; then settle_s="${BENCH_SETTLE_SECONDS:-65}"; else settle_s="${BENCH_SETTLE_SECONDS:-0}"; fi
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

now_us() { local t="$EPOCHREALTIME"; echo "${t/./}"; }
# Sleeps without forking (read with a timeout on a pipe that never has data).
exec {nap_fd}<> <(:)
nap() { read -r -t "$1" -u "$nap_fd" _ || true; }
cortex() { "$bin/cortex" --home "$home" "$@"; }

# percentile P (0-100) of numbers on stdin
pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END {if (NR==0) {print "n/a"; exit} i=int((p/100)*NR+0.999); if (i<1) i=1; if (i>NR) i=NR; print a[i]}'; }
ms() { awk '{printf "%.2f", $1/1000}'; }

new_home() { # new_home NAME SLOTS
    home="$work/$1"
    "$bin/cortex" --home "$home" init >/dev/null
    # Appended, as the maintenance runbook does ([scheduler] is the file's last table; the default
    # file ships the key commented out, so a substitution would silently leave the default of 4).
    echo "max_concurrent_dispatches = $2" >>"$home/cortex.toml"
    "$bin/cortex" --home "$home" config check >/dev/null
    echo '{"total": 1000000000000, "used": 0, "available": 1000000000000}' >"$home/coordination/token-budget.json"
}

start_daemon() { # start_daemon NAME: starts it, waits until ready, sets started_pid
    local name="$1" mark="$home/run/$1.state.json"
    rm -f "$mark"
    "$bin/cortex-$name" --home "$home" </dev/null >/dev/null 2>>"$work/$name.stderr" &
    started_pid=$!
    pids+=("$started_pid")
    local i
    for ((i = 0; i < 1000; i++)); do
        if [[ -s "$mark" ]] && [[ "$(jq -r '.ready_at // empty' "$mark" 2>/dev/null)" != "" ]]; then
            return 0
        fi
        nap 0.01
    done
    echo "bench.sh: $name did not become ready (see $work/$name.stderr)" >&2
    return 1
}

stop_all() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}

archived() { [[ -f "$home/coordination/task-archive.jsonl" ]] && wc -l <"$home/coordination/task-archive.jsonl" || echo 0; }

echo "Cortex task benchmark — $(date -u +%FT%TZ), $(nproc) CPU(s), load $(cut -d' ' -f1-3 /proc/loadavg), release build"
echo "homes under $work ($fs_type); ${settle_s} s pause before the latency and each throughput section"
echo

settle() { ((settle_s > 0)) && sleep "$settle_s" || true; }

# 1. Latency ---------------------------------------------------------------------------------
settle
new_home latency 8
start_daemon worker
start_daemon coordinator
declare -A t0s t1s
addcost=()
shopt -s nullglob
for ((i = 0; i < lat_n; i++)); do
    t0="$(now_us)"
    id="$(cortex task add --description "latency $i" -- date +%s%6N)"
    t1="$(now_us)"
    t0s[$id]="$t0"
    t1s[$id]="$t1"
    addcost+=($((t1 - t0)))
    # Wait for this task's output before the next add (one task at a time).
    while :; do
        outs=("$home"/agents/logs/workers/*.out)
        done_n=0
        for f in "${outs[@]}"; do [[ -s "$f" ]] && done_n=$((done_n + 1)); done
        ((done_n > i)) && break
        nap 0.001
    done
done
for ((k = 0; k < 500; k++)); do (($(archived) >= lat_n)) && break; nap 0.01; done
lat_file="$work/latency.txt"
enq_file="$work/enqueued.txt"
: >"$lat_file"
: >"$enq_file"
while IFS=$'\t' read -r id d; do
    start="$(tr -d '\n' <"$home/agents/logs/workers/$d.out")"
    echo $((start - ${t0s[$id]})) >>"$lat_file"
    echo $((start - ${t1s[$id]})) >>"$enq_file"
done < <(jq -r '[.task_id, .dispatches[0]] | @tsv' "$home/coordination/task-archive.jsonl")
lat_p50="$(pct 50 <"$lat_file" | ms)"
lat_p99="$(pct 99 <"$lat_file" | ms)"
enq_p50="$(pct 50 <"$enq_file" | ms)"
enq_p99="$(pct 99 <"$enq_file" | ms)"
add_p50="$(printf '%s\n' "${addcost[@]}" | pct 50 | ms)"
echo "1. enqueue -> process start ($lat_n tasks, one at a time)"
echo "   from the moment \`cortex task add\` returned (task durably queued): p50 ${enq_p50} ms   p99 ${enq_p99} ms"
echo "   from just before \`cortex task add\` ran (incl. that process):     p50 ${lat_p50} ms   p99 ${lat_p99} ms"
echo "   (the cortex task add call itself: p50 ${add_p50} ms)"
stop_all

# 2. Throughput ------------------------------------------------------------------------------
echo
echo "2. throughput of $tp_n \`true\` tasks (queued first, then the coordinator starts)"
declare -A tps
for slots in 1 2 8; do
    settle
    new_home "tp$slots" "$slots"
    for ((i = 0; i < tp_n; i++)); do cortex task add --description "t $i" -- true >/dev/null; done
    start_daemon worker
    t0="$(now_us)"
    start_daemon coordinator
    while (($(archived) < tp_n)); do nap 0.02; done
    t1="$(now_us)"
    secs="$(awk -v d=$((t1 - t0)) 'BEGIN {printf "%.2f", d/1e6}')"
    rate="$(awk -v d=$((t1 - t0)) -v n="$tp_n" 'BEGIN {printf "%.0f", n/(d/1e6)}')"
    tps[$slots]="$rate"
    bad="$(jq -s '[.[] | select(.status != "completed")] | length' "$home/coordination/task-archive.jsonl")"
    echo "   $slots slot(s): ${secs} s, ${rate} tasks/s (not completed: $bad)"
    stop_all
done

# 3. Add cost vs queue size ------------------------------------------------------------------
gen_queue() { # gen_queue N -> writes a task-queue.json with N queued tasks
    awk -v n="$1" 'BEGIN {
        printf "{\"tasks\": [";
        for (i = 0; i < n; i++) {
            if (i) printf ",";
            printf "{\"task_id\":\"task-bench-%08d\",\"description\":\"queued %d\",\"priority\":\"low\",\"worker_type\":\"analysis-worker\",\"command\":[\"true\"],\"status\":\"queued\",\"created_at\":\"2026-01-01T00:00:00.000000Z\",\"created_by\":\"bench\",\"attempts\":0,\"max_attempts\":3,\"budget\":10,\"dispatches\":[]}", i, i;
        }
        printf "], \"updated_at\": null, \"intake_offset\": 0}\n";
    }' >"$home/coordination/task-queue.json"
}
paused='{"state": "paused", "paused": true, "paused_at": "2026-01-01T00:00:00Z", "resumed_at": null, "paused_by": "bench", "reason": "bench", "updated_at": null}'
add_cost() { # add_cost -> mean and p50 of ADD_N adds, microseconds
    local costs=() t0 t1 i
    for ((i = 0; i < add_n; i++)); do
        t0="$(now_us)"
        cortex task add --description "added $i" --priority high -- true >/dev/null
        t1="$(now_us)"
        costs+=($((t1 - t0)))
    done
    local mean p50
    mean="$(printf '%s\n' "${costs[@]}" | awk '{s+=$1} END {printf "%.2f", s/NR/1000}')"
    p50="$(printf '%s\n' "${costs[@]}" | pct 50 | ms)"
    echo "$mean $p50"
}
echo
echo "3. cortex task add cost ($add_n adds each; mean / p50 in ms)"
declare -A addc
for n in $queued_sizes; do
    new_home "add$n" 8
    gen_queue "$n"
    read -r mean p50 < <(add_cost)
    addc[$n]="$mean"
    line="   $(printf '%7d' "$n") queued: coordinator stopped ${mean} / ${p50}"
    new_home "addc$n" 8
    gen_queue "$n"
    echo "$paused" >"$home/coordination/scheduler-state.json"
    start_daemon coordinator
    read -r mean2 p502 < <(add_cost)
    stop_all
    echo "$line   coordinator running (paused, folding) ${mean2} / ${p502}"
done
set -- $queued_sizes
first="$1"
for n in $queued_sizes; do last="$n"; done
echo "   ratio at $last vs $first queued (coordinator stopped): $(awk -v a="${addc[$last]}" -v b="${addc[$first]}" 'BEGIN {printf "%.2f", a/b}')x"

# 4. Idle daemons ----------------------------------------------------------------------------
echo
echo "4. idle daemons over ${idle_s} s (CPU %, RSS MiB)"
new_home idle 8
declare -A dpid
for d in worker pm heartbeat metrics coordinator integration failure-pattern auto-fix api; do
    [[ -x "$bin/cortex-$d" ]] || continue
    if [[ "$d" == api ]]; then export CORTEX_API_BIND="127.0.0.1:0"; fi
    if start_daemon "$d" 2>/dev/null; then dpid[$d]="$started_pid"; else echo "   $d: did not start"; fi
done
unset CORTEX_API_BIND
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A t_start
for d in "${!dpid[@]}"; do t_start[$d]="$(ticks "${dpid[$d]}")"; done
sleep "$idle_s"
hz="$(getconf CLK_TCK)"
for d in worker pm heartbeat metrics coordinator integration failure-pattern auto-fix api; do
    [[ -n "${dpid[$d]:-}" ]] || continue
    p="${dpid[$d]}"
    cpu="$(awk -v a="${t_start[$d]}" -v b="$(ticks "$p")" -v hz="$hz" -v s="$idle_s" 'BEGIN {printf "%.3f", (b-a)/hz/s*100}')"
    rss="$(awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$p/status")"
    printf '   %-16s CPU %6s %%   RSS %6s MiB\n' "$d" "$cpu" "$rss"
done
stop_all

# 5. pueue, when installed -------------------------------------------------------------------
if command -v pueue >/dev/null && command -v pueued >/dev/null; then
    echo
    echo "5. pueue $(pueue --version 2>/dev/null | awk '{print $2}') on the same workloads"
    pq="$work/pueue"
    mkdir -p "$pq/run" "$pq/data"
    cat >"$pq/pueue.yml" <<EOF
shared:
  pueue_directory: $pq/data
  runtime_directory: $pq/run
  use_unix_socket: true
  unix_socket_path: $pq/run/pueue.socket
EOF
    pueue_() { pueue -c "$pq/pueue.yml" "$@"; }
    pueued -c "$pq/pueue.yml" -d >/dev/null 2>&1
    for ((k = 0; k < 500; k++)); do pueue_ status >/dev/null 2>&1 && break; sleep 0.01; done
    pueue_ parallel 8 >/dev/null
    : >"$work/pueue-lat.txt"
    for ((i = 0; i < lat_n && i < 50; i++)); do
        t0="$(now_us)"
        id="$(pueue_ add --print-task-id -- date +%s%6N)"
        pueue_ wait "$id" >/dev/null 2>&1 || true
        start="$(pueue_ log --json "$id" | jq -r ".\"$id\".output" | tr -d '\n')"
        echo $((start - t0)) >>"$work/pueue-lat.txt"
    done
    p_p50="$(pct 50 <"$work/pueue-lat.txt" | ms)"
    p_p99="$(pct 99 <"$work/pueue-lat.txt" | ms)"
    echo "   latency p50 ${p_p50} ms p99 ${p_p99} ms   (cortex/pueue p50 ratio $(awk -v a="$lat_p50" -v b="$p_p50" 'BEGIN {printf "%.3f", a/b}'))"
    for slots in 1 2 8; do
        pueue_ reset --force >/dev/null 2>&1 || true
        pueue_ parallel "$slots" >/dev/null
        pueue_ pause >/dev/null
        for ((i = 0; i < pueue_tp_n; i++)); do pueue_ add -- true >/dev/null; done
        t0="$(now_us)"
        pueue_ start >/dev/null
        pueue_ wait >/dev/null 2>&1 || true
        t1="$(now_us)"
        rate="$(awk -v d=$((t1 - t0)) -v n="$pueue_tp_n" 'BEGIN {printf "%.1f", n/(d/1e6)}')"
        echo "   $slots slot(s), $pueue_tp_n tasks: ${rate} tasks/s   (cortex/pueue $(awk -v a="${tps[$slots]}" -v b="$rate" 'BEGIN {printf "%.1f", a/b}')x)"
    done
    for n in 0 2000; do
        pueue_ reset --force >/dev/null 2>&1 || true
        pueue_ pause >/dev/null
        for ((i = 0; i < n; i++)); do pueue_ add -- true >/dev/null; done
        t0="$(now_us)"
        for ((i = 0; i < 50; i++)); do pueue_ add -- true >/dev/null; done
        t1="$(now_us)"
        echo "   add cost at $n queued: $(awk -v d=$((t1 - t0)) 'BEGIN {printf "%.2f", d/50/1000}') ms"
    done
    pueue_ shutdown >/dev/null 2>&1 || true
    # pueued writes its state on the way out: wait for it to be gone before the cleanup.
    for ((k = 0; k < 500; k++)); do [[ -e "$pq/run/pueue.pid" ]] || break; nap 0.01; done
else
    echo
    echo "5. pueue is not on the PATH: no comparison run."
fi
