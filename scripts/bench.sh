#!/usr/bin/env bash
# Benchmark of Cortex's task path on a release build, in temporary homes (not a test).
#
#   scripts/bench.sh [--no-build] [--slurm] [SECTION...]
#
# SECTIONs (default: all, in this order; or BENCH_SECTIONS="fleet xargs" etc.):
#   latency     1. enqueue -> process-start latency p50/p99 (from just before `cortex task add` to
#                  the task's own first instruction), tasks one at a time on an idle system;
#   throughput  2. throughput of N `true` tasks with 1, 2 and 8 slots (all queued first, then the
#                  coordinator starts; timed until the last one is archived);
#   add         3. `cortex task add` cost at 0, 10,000 and 100,000 queued tasks, with the
#                  coordinator stopped (the add path alone) and running paused (folding every add
#                  into the big queue); then `cortex task list --limit 50` and `--status
#                  in_progress` (matching none) on that queue, median of 5;
#   idle        4. idle CPU and RSS of each daemon over a window;
#   pueue       5. where `pueue`/`pueued` are on the PATH the same workloads (latency, throughput,
#                  add cost up to 2,000 queued) against pueue, and the ratios;
#   fleet       6. the whole fleet (`cortex start`, every daemon) against coordinator+worker only:
#                  N `true` tasks, 8 slots, queued while paused (once every daemon has settled
#                  after its start-up), then resumed, timed until the last one is archived;
#                  BENCH_FLEET_ROUNDS (3) rounds of both forms, alternating which goes first;
#                  the median tasks/s of both and their ratio; per daemon CPU ms per task (the
#                  rounds' mean of utime+stime from /proc/<pid>/stat before the resume and after
#                  the run) and RSS; the supporting daemons' and the whole fleet's CPU per task, each beside
#                  its target;
#   backlog     7. the fleet run of section 6 behind 0, 10,000 and 100,000 queued tasks that are
#                  not yet due (`--delay` far in the future, written straight into the queue
#                  file, then written once by the coordinator alone in its own format), for the
#                  whole fleet and for coordinator+worker only: each form's homes are started
#                  side by side and their N adds interleaved in blocks of BENCH_ADD_BLOCK, so
#                  the machine's load meets every backlog alike; add time mean / p50 / p90, CPU
#                  ms per add of the add processes and of each daemon; then each home's
#                  throughput run, in BENCH_FLEET_ROUNDS rounds (N more adds before each
#                  round after the first; the homes' order reversed each round), their
#                  medians compared; ratios against the first size, and every daemon's RSS at
#                  the largest;
#   ready       7b. the fleet run of section 6 with BENCH_READY_TASKS (1000) tasks behind 0 and
#                  100,000 (BENCH_READY: "0 100000") tasks that can run now (queued, low
#                  priority, written straight into the queue file, so the timed tasks, medium,
#                  go first); timed from the resume to the last timed task archived, the
#                  scheduler paused then (the backlog is not run); tasks/s and the ratio, the
#                  coordinator's CPU ms per task and RSS, every daemon's RSS (CPU per task
#                  archived in the window: the slots the last timed tasks leave run backlog
#                  tasks until the pause);
#   after       7c. the same as 7b behind 0 and 100,000 (BENCH_AFTER: "0 100000") tasks
#                  waiting for a prerequisite (`--after`) that is not yet due, so none of them
#                  can run: the coordinator holds them blocked on it;
#   xargs       8. `xargs -P 8` running `true` N times (the physical limit of 8 slots), and the
#                  8-slot ratios against it of the sections run before it;
#   history     9. a long history: BENCH_HISTORY ("1000 1000000") archived tasks written straight
#                  into the archive's format (one compact line each; 70 % completed, 20 % failed,
#                  10 % cancelled), sealed every [archive] segment_bytes as the coordinator does
#                  (the rest stays in the active file); then, each the median of 5: `cortex task
#                  show` of the oldest task, `cortex task list --all --status failed --limit 50`,
#                  `GET /status`; and the CPU of the coordinator, integration and metrics daemons
#                  over BENCH_HISTORY_TASKS (100) tasks that each wait for an archived
#                  prerequisite (`--after` the oldest completed task); each beside the same at the
#                  first size (target: ratio <= ~1.5).
#   slurm      10. (only when asked: `--slurm` or the section's name; needs Slurm installed, see
#                  `. .ci/tools.sh`) Cortex on a private dev cluster (scripts/slurm-dev.sh) next to
#                  bare `sbatch --wrap` on it in the same run: submission -> job start latency and
#                  the throughput of BENCH_SLURM_TASKS (200) trivial tasks; scripts/bench-slurm.sh
#                  does it (its header lists its settings). Targets: >= 90 % of the bare loop's
#                  throughput, at most +50 ms of latency.
#
# Environment: BENCH_LATENCY_SAMPLES (200), BENCH_TASKS (1000; the fleet, backlog and xargs
# sections use BENCH_FLEET_TASKS, 500), BENCH_PUEUE_TASKS (200), BENCH_ADD_SAMPLES (200),
# BENCH_IDLE_SECONDS (30), BENCH_QUEUED ("0 10000 100000"), BENCH_BACKLOG ("0 10000 100000"),
# BENCH_ADD_BLOCK (10: adds made into one backlog's home before the next one's, section 7),
# BENCH_READY ("0 100000"), BENCH_READY_TASKS (1000),
# BENCH_TAIL_SECONDS (2: after the last task is archived, the CPU window stays open this long so
# work a daemon does after the fact is counted), BENCH_DIR (where the temporary homes
# go; default $TMPDIR or /tmp — compare a disk with /dev/shm to see the filesystem's share),
# BENCH_SETTLE_SECONDS (65 on ext4, else 0: a pause before the latency section, each throughput,
# fleet and backlog run, and xargs. ext4 without a journal skips every inode deleted in the last
# 60 s, longer while its inode table block is dirty, on each file creation, so without it a
# section would pay for the files the previous one deleted; set 0 to measure the sections back to
# back),
# BENCH_PERF_DIR (if set, each fleet and backlog run records `perf record --call-graph dwarf` of
# the daemons in BENCH_PERF_DAEMONS, "coordinator integration heartbeat auto-fix", over its
# timed window into DIR/<run>-<daemon>.data at BENCH_PERF_FREQ (999) Hz; perf slows what it
# watches: not for the figures).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# BENCH_BIN_DIR: binaries to measure instead of target/release (with --no-build).
bin="${BENCH_BIN_DIR:-$root/target/release}"
lat_n="${BENCH_LATENCY_SAMPLES:-200}"
tp_n="${BENCH_TASKS:-1000}"
# pueue runs fewer: its rate is set by its 300 ms tick, not the queue's length, and 1,000 tasks
# take it minutes per slot count.
pueue_tp_n="${BENCH_PUEUE_TASKS:-200}"
add_n="${BENCH_ADD_SAMPLES:-200}"
idle_s="${BENCH_IDLE_SECONDS:-30}"
queued_sizes="${BENCH_QUEUED:-0 10000 100000}"

fleet_n="${BENCH_FLEET_TASKS:-500}"
fleet_rounds="${BENCH_FLEET_ROUNDS:-3}"
backlog_sizes="${BENCH_BACKLOG:-0 10000 100000}"
add_block="${BENCH_ADD_BLOCK:-10}"
ready_sizes="${BENCH_READY:-0 100000}"
ready_n="${BENCH_READY_TASKS:-1000}"
after_sizes="${BENCH_AFTER:-0 100000}"
tail_s="${BENCH_TAIL_SECONDS:-2}"
perf_dir="${BENCH_PERF_DIR:-}"
perf_daemons="${BENCH_PERF_DAEMONS:-coordinator integration heartbeat auto-fix}"
perf_freq="${BENCH_PERF_FREQ:-999}"
all_sections="latency throughput add idle pueue fleet backlog ready after xargs history"
# Run only when asked for (it needs Slurm's binaries and minutes of a cluster's time).
optional_sections="slurm"
# In start order, as `cortex start` starts them.
all_daemons="worker pm heartbeat metrics coordinator integration failure-pattern auto-fix api"
supporting_daemons="auto-fix heartbeat integration metrics failure-pattern pm api"

build=1
if [[ "${1:-}" == "--no-build" ]]; then build=0; shift; fi
if [[ "${1:-}" == "--slurm" ]]; then shift; set -- slurm "$@"; fi
sections="${*:-${BENCH_SECTIONS:-$all_sections}}"
for s in $sections; do
    [[ " $all_sections $optional_sections " == *" $s "* ]] ||
        { echo "bench.sh: unknown section '$s' (sections: $all_sections $optional_sections)" >&2; exit 2; }
done
want() { [[ " $sections " == *" $1 "* ]]; }

if ((build)); then
    (cd "$root" && cargo build --release --bins --quiet)
fi
needed="cortex cortex-worker cortex-coordinator"
if want fleet || want backlog || want ready; then for d in $all_daemons; do needed+=" cortex-$d"; done; fi
if want history; then needed+=" cortex-api cortex-metrics cortex-integration"; fi
if want slurm; then needed+=" cortex-slurm"; fi
for b in $needed; do
    [[ -x "$bin/$b" ]] || { echo "bench.sh: $bin/$b missing; build with cargo build --release" >&2; exit 1; }
done
if [[ -n "$perf_dir" ]]; then
    command -v perf >/dev/null || { echo "bench.sh: BENCH_PERF_DIR is set but perf is not on the PATH" >&2; exit 1; }
    mkdir -p "$perf_dir"
fi
command -v jq >/dev/null || { echo "bench.sh: jq is required" >&2; exit 1; }

work="$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/cortex-bench.XXXXXX")"
fs_type="$(df -T "$work" | awk 'NR==2 {print $2}')"
if [[ "$fs_type" == ext4 ]]; then settle_s="${BENCH_SETTLE_SECONDS:-65}"; else settle_s="${BENCH_SETTLE_SECONDS:-0}"; fi
pids=()
fleet_homes=() # homes whose daemons `cortex start` started (detached: stopped with `cortex stop`)
cleanup() {
    local p h
    for h in "${fleet_homes[@]}"; do "$bin/cortex" --home "$h" stop >/dev/null 2>&1 || true; done
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

# CPU ticks (utime + stime) of a process so far, and its clock's ticks per second.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# CPU ticks (cutime + cstime) of the children a process has waited for.
child_ticks() { awk '{print $16 + $17}' "/proc/$1/stat"; }
hz="$(getconf CLK_TCK)"
rss_mib() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# Every archived line: the sealed segments (past [archive] segment_bytes), then the active file.
archive_lines() { { cat "$home"/coordination/task-archive/seg-*.jsonl "$home/coordination/task-archive.jsonl" 2>/dev/null || true; }; }
archived() { archive_lines | wc -l; }

echo "Cortex task benchmark — $(date -u +%FT%TZ), $(nproc) CPU(s), load $(cut -d' ' -f1-3 /proc/loadavg), binaries in $bin"
echo "homes under $work ($fs_type); ${settle_s} s pause before the latency section and each throughput, fleet, backlog and xargs run"
echo

# ratio_note LABEL A B DECIMALS [SUFFIX] -> "(LABEL A/B)", or nothing when A was not measured in
# this run (its section was not selected).
ratio_note() {
    [[ -n "$2" ]] || return 0
    printf '(%s %s%s)' "$1" "$(awk -v a="$2" -v b="$3" -v d="$4" 'BEGIN {printf "%." d "f", a/b}')" "${5:-}"
}
declare -A tps # 8-slot and other throughputs of this run, for the ratios of later sections

settle() { ((settle_s > 0)) && sleep "$settle_s" || true; }

# 1. Latency ---------------------------------------------------------------------------------
if want latency; then
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
    done < <(archive_lines | jq -r '[.task_id, .dispatches[0]] | @tsv')
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
fi

# 2. Throughput ------------------------------------------------------------------------------
if want throughput; then
    echo
    echo "2. throughput of $tp_n \`true\` tasks (queued first, then the coordinator starts)"
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
        bad="$(archive_lines | jq -s '[.[] | select(.status != "completed")] | length')"
        echo "   $slots slot(s): ${secs} s, ${rate} tasks/s (not completed: $bad)"
        stop_all
    done
fi

# 3. Add cost vs queue size ------------------------------------------------------------------
# med_ms CMD...: the median wall time of 5 runs, milliseconds.
med_ms() {
    local i t0 t1 out=()
    for ((i = 0; i < 5; i++)); do
        t0="$(now_us)"
        "$@" >/dev/null
        t1="$(now_us)"
        out+=($((t1 - t0)))
    done
    printf '%s\n' "${out[@]}" | pct 50 | ms
}
gen_tasks() { # gen_tasks N ID_PREFIX DESCRIPTION PRIORITY EXTRA_FIELDS -> writes a task-queue.json
    # with N queued tasks: ids <ID_PREFIX>-%08d, descriptions "<DESCRIPTION> i", EXTRA_FIELDS (JSON
    # members, each with a trailing comma, or empty) before the dispatches.
    awk -v n="$1" -v id="$2" -v desc="$3" -v prio="$4" -v extra="$5" 'BEGIN {
        printf "{\"tasks\": [";
        for (i = 0; i < n; i++) {
            if (i) printf ",";
            printf "{\"task_id\":\"%s-%08d\",\"description\":\"%s %d\",\"priority\":\"%s\",\"worker_type\":\"analysis-worker\",\"command\":[\"true\"],\"status\":\"queued\",\"created_at\":\"2026-01-01T00:00:00.000000Z\",\"created_by\":\"bench\",\"attempts\":0,\"max_attempts\":3,\"budget\":10,%s\"dispatches\":[]}", id, i, desc, i, prio, extra;
        }
        printf "], \"updated_at\": null, \"intake_offset\": 0}\n";
    }' >"$home/coordination/task-queue.json"
}
gen_queue() { gen_tasks "$1" task-bench queued low ""; } # gen_queue N -> N queued tasks
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
if want add; then
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
        # Reading it back: the queue as the coordinator left it (its layout, a journal).
        l_page="$(med_ms cortex task list --limit 50)"
        l_none="$(med_ms cortex task list --status in_progress)"
        echo "   $(printf '%7d' "$n") queued: task list --limit 50 ${l_page} ms, --status in_progress (none) ${l_none} ms (median of 5)"
    done
    set -- $queued_sizes
    first="$1"
    for n in $queued_sizes; do last="$n"; done
    echo "   ratio at $last vs $first queued (coordinator stopped): $(awk -v a="${addc[$last]}" -v b="${addc[$first]}" 'BEGIN {printf "%.2f", a/b}')x"
fi

# 4. Idle daemons ----------------------------------------------------------------------------
if want idle; then
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
    declare -A t_start
    for d in "${!dpid[@]}"; do t_start[$d]="$(ticks "${dpid[$d]}")"; done
    sleep "$idle_s"
    for d in worker pm heartbeat metrics coordinator integration failure-pattern auto-fix api; do
        [[ -n "${dpid[$d]:-}" ]] || continue
        p="${dpid[$d]}"
        cpu="$(awk -v a="${t_start[$d]}" -v b="$(ticks "$p")" -v hz="$hz" -v s="$idle_s" 'BEGIN {printf "%.3f", (b-a)/hz/s*100}')"
        rss="$(awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$p/status")"
        printf '   %-16s CPU %6s %%   RSS %6s MiB\n' "$d" "$cpu" "$rss"
    done
    stop_all
fi

# 5. pueue, when installed -------------------------------------------------------------------
if want pueue; then
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
        echo "   latency p50 ${p_p50} ms p99 ${p_p99} ms   $(ratio_note "cortex/pueue p50 ratio" "${lat_p50:-}" "$p_p50" 3)"
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
            echo "   $slots slot(s), $pueue_tp_n tasks: ${rate} tasks/s   $(ratio_note "cortex/pueue" "${tps[$slots]:-}" "$rate" 1 x)"
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
fi

# 6-8. The fleet at full speed -----------------------------------------------------------------
# gen_backlog N -> N queued tasks not due for years
gen_backlog() { gen_tasks "$1" task-backlog "not yet due" medium '"waiting_reason":"delay","not_before":"2099-01-01T00:00:00.000000Z",'; }
# gen_ready N -> N queued tasks that can run now, of a lower priority than the timed ones
gen_ready() { gen_tasks "$1" task-ready "ready" low ""; }
# gen_after N -> a prerequisite not yet due and N queued tasks waiting for it (`--after`)
gen_after() {
    gen_tasks "$1" task-after "blocked" low '"waiting_reason":"after","after":"task-gate-00000000",'
    local gate='{"task_id":"task-gate-00000000","description":"gate","priority":"low","worker_type":"analysis-worker","command":["true"],"status":"queued","created_at":"2026-01-01T00:00:00.000000Z","created_by":"bench","attempts":0,"max_attempts":3,"budget":10,"waiting_reason":"delay","not_before":"2099-01-01T00:00:00.000000Z","dispatches":[]}'
    ((${1} > 0)) && gate+=","
    sed -i "s/^{\"tasks\": \[/{\"tasks\": [$gate/" "$home/coordination/task-queue.json"
}
# What fleet_run runs: run_n tasks (default fleet_n), the backlog written by run_gen (default
# gen_backlog); with run_pause_at_end the scheduler is paused once the last timed task is
# archived (a backlog that can run is not run in the CPU window's tail); with run_keep the fleet
# is left running after the run (for another round of adds and a run).
run_n=""
run_gen=gen_backlog
run_pause_at_end=0
run_keep=0
# timed_archived: archived tasks that are not the generated backlog's
timed_archived() { archive_lines | grep -vc '"created_by":"bench"' || true; }

# median: the median of the numbers on stdin, one per line, rounded to a whole number
median() { sort -n | awk '{a[NR]=$1} END {printf "%.0f", (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
declare -A last_cpu last_rss

# met VALUE OP TARGET -> "met" or "NOT met" (OP: ge or le)
met() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {ok = (op == "ge") ? (v >= t) : (v <= t); print ok ? "met" : "NOT met"}'; }

# fleet_setup KEY BACKLOG [DAEMON...]: a home with 8 slots and BACKLOG tasks not yet due, the
# daemons named (default: every enabled one) started with `cortex start` while the scheduler is
# paused, settled; remembered under KEY (fl_home, fl_pids) for fleet_adds and fleet_go. A
# generated backlog is a generation-0 queue (no journal header, as an old home's): the
# coordinator is started on it alone first, and its first cycle writes it in its own format, so
# the fleet starts on the queue as a running home has it. (A generation-0 queue is rewritten
# once, at the coordinator's start; every follower then reads it again once — integration on the
# change, metrics at its next snapshot, up to a minute later — which would land in the timed
# windows.)
declare -A fl_home fl_pids run_cpu run_rss fpid
fleet_setup() {
    local key="$1" backlog="$2" d p i
    shift 2
    settle
    new_home "$key" 8
    fleet_homes+=("$home")
    cortex scheduler pause --reason bench >/dev/null
    if ((backlog > 0)); then
        "$run_gen" "$backlog"
        cortex start coordinator >/dev/null 2>>"$work/$key.start.stderr"
        for ((i = 0; i < 6000; i++)); do
            head -c 512 "$home/coordination/task-queue.json" | grep -q '"journal_generation": *[1-9]' && break
            nap 0.01
        done
        cortex stop >/dev/null 2>&1 || true
    fi
    CORTEX_API_BIND="127.0.0.1:0" cortex start "$@" >/dev/null 2>>"$work/$key.start.stderr"
    fl_home[$key]="$home"
    # (`cortex status` exits non-zero when daemons of the home are not running: the minimal form.)
    fl_pids[$key]="$({ cortex status --json 2>/dev/null || true; } | jq -r '.daemons[] | select(.pid != null) | "\(.name)=\(.pid)"' | tr '\n' ' ')"
    fleet_use "$key"
    # The fleet settles first (each daemon's start-up: reading the backlog): the adds are timed
    # against daemons at rest, as an operator's adds meet them, not against their start-up.
    settle_fleet
}
# fleet_use KEY: home and fpid of the fleet KEY.
fleet_use() {
    local kv
    home="${fl_home[$1]}"
    fpid=()
    for kv in ${fl_pids[$1]}; do fpid[${kv%%=*}]="${kv#*=}"; done
}
# settle_fleet: waits (at most 60 s) until no daemon of fpid used CPU over half a second.
settle_fleet() {
    local k d sum last=-1
    for ((k = 0; k < 120; k++)); do
        sum=0
        for d in "${!fpid[@]}"; do sum=$((sum + $(ticks "${fpid[$d]}"))); done
        ((sum == last)) && return 0
        last="$sum"
        nap 0.5
    done
    echo "   (the fleet did not settle within 60 s; timing anyway)"
}
# children_cpu: sets children_us to the CPU (user + system, microseconds) of this shell's
# waited-for children so far (not a command substitution: that would report its own subshell's).
children_cpu() {
    local user sys
    times >"$work/times"
    { read -r _ _; read -r user sys; } <"$work/times"
    children_us="$(awk -v u="$user" -v s="$sys" 'function us(t) {split(t, a, "m"); sub("s", "", a[2]); return (a[1] * 60 + a[2]) * 1e6}
        BEGIN {printf "%.0f", us(u) + us(s)}')"
}
# fleet_adds KEY N: N `cortex task add`, one after another, into the fleet KEY; each add's
# wall time (microseconds) appended to $work/KEY.adds, their CPU (the add processes') added to
# add_cpu_us[KEY].
declare -A add_cpu_us
fleet_adds() {
    local key="$1" n="$2" i t0 t1 c0
    fleet_use "$key"
    children_cpu
    c0="$children_us"
    for ((i = 0; i < n; i++)); do
        t0="$EPOCHREALTIME"
        cortex task add --description "f $i" -- true >/dev/null
        t1="$EPOCHREALTIME"
        echo $((${t1/./} - ${t0/./})) >>"$work/$key.adds"
    done
    children_cpu
    add_cpu_us[$key]=$((${add_cpu_us[$key]:-0} + children_us - c0))
}
# fleet_folded KEY: waits (at most 60 s) until the coordinator of KEY has folded every add (the
# intake is consumed and removed).
fleet_folded() {
    local i
    fleet_use "$1"
    for ((i = 0; i < 6000; i++)); do [[ -s "$home/coordination/task-intake.jsonl" ]] || return 0; nap 0.01; done
    echo "   ($1: the intake was not folded within 60 s)"
}
# add_stats KEY -> "mean p50 p90" of the adds of KEY, ms
add_stats() {
    sort -n "$work/$1.adds" | awk '{a[NR]=$1; s+=$1}
        function q(p,  i) {i=int(p*NR+0.999); if (i<1) i=1; if (i>NR) i=NR; return a[i]/1000}
        END {printf "%.2f %.2f %.2f\n", s/NR/1000, q(0.5), q(0.9)}'
}
# fleet_ticks KEY -> "daemon=ticks ..." of the fleet KEY now
fleet_ticks() {
    local d
    fleet_use "$1"
    for d in "${!fpid[@]}"; do printf '%s=%s ' "$d" "$(ticks "${fpid[$d]}")"; done
}
# add_cpu KEY BEFORE AFTER N -> sets addcpu[daemon] (CPU ms per add of each daemon between the two
# fleet_ticks) and addcpu[add] (the add processes' own)
declare -A addcpu
add_cpu() {
    local kv d
    declare -A b
    addcpu=()
    for kv in $2; do b[${kv%%=*}]="${kv#*=}"; done
    for kv in $3; do
        d="${kv%%=*}"
        addcpu[$d]="$(awk -v a="${b[$d]}" -v c="${kv#*=}" -v hz="$hz" -v n="$4" 'BEGIN {printf "%.3f", (c-a)/hz*1000/n}')"
    done
    addcpu[add]="$(awk -v u="${add_cpu_us[$1]:-0}" -v n="$4" 'BEGIN {printf "%.3f", u/1000/n}')"
}
# fleet_go KEY: once every add is folded, the scheduler resumes and the run is timed until the
# last of fleet_n tasks (run_n) added since the last run is archived; the fleet is stopped after
# (unless run_keep). The CPU window is from just
# before the resume to tail_s after the last archive. Sets run_rate (tasks/s), run_secs, run_bad
# (tasks not completed), and per daemon run_cpu[d] (CPU ms per task) and run_rss[d] (MiB at the
# end of the run), run_children (CPU ms per task of the processes the worker reaped).
fleet_go() {
    local key="$1" t0 t1 d n="${run_n:-$fleet_n}" timed_before archived_before
    fleet_folded "$key"
    fleet_use "$key"
    timed_before="$(timed_archived)"
    archived_before="$(archived)"
    declare -A before
    for d in "${!fpid[@]}"; do before[$d]="$(ticks "${fpid[$d]}")"; done
    local children_before=""
    [[ -n "${fpid[worker]:-}" ]] && children_before="$(child_ticks "${fpid[worker]}")"
    local perf_pids=()
    if [[ -n "$perf_dir" ]]; then
        for d in $perf_daemons; do
            [[ -n "${fpid[$d]:-}" ]] || continue
            perf record --call-graph dwarf,16384 -F "$perf_freq" -p "${fpid[$d]}" -o "$perf_dir/$key-$d.data" \
                >/dev/null 2>>"$perf_dir/$key-$d.stderr" &
            perf_pids+=($!)
        done
        nap 1 # perf attaches
    fi
    t0="$(now_us)"
    cortex scheduler resume >/dev/null
    while (($(timed_archived) - timed_before < n)); do nap 0.02; done
    t1="$(now_us)"
    ((run_pause_at_end)) && cortex scheduler pause --reason bench >/dev/null
    nap "$tail_s"
    local p
    for p in "${perf_pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    for p in "${perf_pids[@]}"; do wait "$p" 2>/dev/null || true; done
    # With a backlog that can run, the slots the last timed tasks leave go to backlog tasks until
    # the pause: the CPU is per task archived in the window, those included.
    run_done="$n"
    ((run_pause_at_end)) && run_done=$(($(archived) - archived_before))
    run_cpu=()
    run_rss=()
    for d in "${!fpid[@]}"; do
        run_cpu[$d]="$(awk -v a="${before[$d]}" -v b="$(ticks "${fpid[$d]}")" -v hz="$hz" -v n="$run_done" \
            'BEGIN {printf "%.3f", (b-a)/hz*1000/n}')"
        run_rss[$d]="$(rss_mib "${fpid[$d]}")"
    done
    run_children=""
    if [[ -n "$children_before" ]]; then
        run_children="$(awk -v a="$children_before" -v b="$(child_ticks "${fpid[worker]}")" -v hz="$hz" \
            -v n="$run_done" 'BEGIN {printf "%.3f", (b-a)/hz*1000/n}')"
    fi
    run_secs="$(awk -v d=$((t1 - t0)) 'BEGIN {printf "%.2f", d/1e6}')"
    run_rate="$(awk -v d=$((t1 - t0)) -v n="$n" 'BEGIN {printf "%.0f", n/(d/1e6)}')"
    run_bad="$(archive_lines | grep -v '"created_by":"bench"' | jq -s '[.[] | select(.status != "completed")] | length')"
    ((run_keep)) || cortex stop >/dev/null 2>&1 || true
}
# fleet_run KEY BACKLOG [DAEMON...]: fleet_setup, fleet_n adds (run_add_mean / run_add_p50 /
# run_add_p90, ms), fleet_go.
fleet_run() {
    local key="$1"
    fleet_setup "$@"
    fleet_adds "$key" "${run_n:-$fleet_n}"
    read -r run_add_mean run_add_p50 run_add_p90 < <(add_stats "$key")
    fleet_go "$key"
}
# cpu_sum DAEMON... -> the sum of run_cpu over those that ran
cpu_sum() {
    local d s=0
    for d in "$@"; do [[ -n "${run_cpu[$d]:-}" ]] && s="$(awk -v a="$s" -v b="${run_cpu[$d]}" 'BEGIN {printf "%.3f", a+b}')"; done
    echo "$s"
}
print_daemons() { # the per-daemon table of the last fleet_run
    local d
    for d in $all_daemons; do
        [[ -n "${run_cpu[$d]:-}" ]] || continue
        printf '   %-16s CPU %8s ms/task   RSS %6s MiB\n' "$d" "${run_cpu[$d]}" "${run_rss[$d]}"
    done
    if [[ -n "$run_children" ]]; then
        printf '   %-16s CPU %8s ms/task   (what the worker reaped: exec shims and tasks; in no sum)\n' \
            "worker children" "$run_children"
    fi
}

if want fleet; then
    echo
    echo "6. whole fleet vs coordinator+worker only: $fleet_n \`true\` tasks, 8 slots, queued while paused, then resumed;"
    echo "   $fleet_rounds rounds, the two forms one after the other, each round in the other order than the last"
    echo "   (a change in the machine's load meets both forms alike); rates compared by their medians, CPU the"
    echo "   rounds' mean, RSS at the end of the last round"
    declare -A f_rates f_cpu f_rss
    for ((r = 1; r <= fleet_rounds; r++)); do
        forms="cw all"
        ((r % 2)) || forms="all cw"
        for f in $forms; do
            if [[ "$f" == cw ]]; then
                fleet_run "fleet-cw-$r" 0 worker coordinator
                label="coordinator+worker"
            else
                fleet_run "fleet-all-$r" 0
                label="whole fleet       "
            fi
            f_rates[$f]+="$run_rate "
            for d in "${!run_cpu[@]}"; do
                f_cpu[$f-$d]="$(awk -v a="${f_cpu[$f-$d]:-0}" -v b="${run_cpu[$d]}" 'BEGIN {printf "%.4f", a+b}')"
                f_rss[$f-$d]="${run_rss[$d]}"
            done
            [[ -n "$run_children" ]] &&
                f_cpu[$f-children]="$(awk -v a="${f_cpu[$f-children]:-0}" -v b="$run_children" 'BEGIN {printf "%.4f", a+b}')"
            echo "   round $r, $label: ${run_secs} s, ${run_rate} tasks/s (not completed: $run_bad); add mean / p50 / p90 ${run_add_mean} / ${run_add_p50} / ${run_add_p90} ms"
        done
    done
    # fleet_form F: sets run_cpu, run_rss and run_children of form F over the rounds, and
    # form_rate (the median of its rates).
    fleet_form() {
        local key d
        run_cpu=()
        run_rss=()
        for key in "${!f_cpu[@]}"; do
            [[ "$key" == "$1-"* ]] || continue
            d="${key#"$1"-}"
            [[ "$d" == children ]] && continue
            run_cpu[$d]="$(awk -v a="${f_cpu[$key]}" -v n="$fleet_rounds" 'BEGIN {printf "%.3f", a/n}')"
            run_rss[$d]="${f_rss[$key]}"
        done
        run_children="$(awk -v a="${f_cpu[$1-children]:-0}" -v n="$fleet_rounds" 'BEGIN {printf "%.3f", a/n}')"
        # shellcheck disable=SC2086 # a list of rates
        form_rate="$(printf '%s\n' ${f_rates[$1]} | median)"
    }
    fleet_form cw
    cw_rate="$form_rate"
    echo "   coordinator+worker: median ${cw_rate} tasks/s (rounds: ${f_rates[cw]% })"
    print_daemons
    fleet_form all
    fleet_rate="$form_rate"
    echo "   whole fleet:        median ${fleet_rate} tasks/s (rounds: ${f_rates[all]% })"
    print_daemons
    tps[fleet]="$fleet_rate"
    tps[cw]="$cw_rate"
    missing=""
    for d in $all_daemons; do [[ -n "${run_cpu[$d]:-}" ]] || missing+=" $d"; done
    [[ -z "$missing" ]] || echo "   (not running in the whole-fleet run:$missing)"
    ratio="$(awk -v a="$fleet_rate" -v b="$cw_rate" 'BEGIN {printf "%.2f", a/b}')"
    support="$(cpu_sum $supporting_daemons)"
    whole="$(cpu_sum $all_daemons)"
    echo "   whole fleet / coordinator+worker throughput (medians): ${ratio}   target >= 0.90: $(met "$ratio" ge 0.90)"
    echo "   supporting daemons ($supporting_daemons): ${support} ms CPU/task   target <= 1: $(met "$support" le 1)"
    echo "   whole fleet: ${whole} ms CPU/task   target <= 5: $(met "$whole" le 5)"
fi

if want backlog; then
    echo
    echo "7. the fleet run of section 6 ($fleet_n tasks) behind queued tasks not yet due: the whole fleet, then coordinator+worker only"
    echo "   Each form's homes (one per backlog) run side by side, paused, settled; their $fleet_n adds each are"
    echo "   interleaved in blocks of $add_block (a change in the machine's load meets every backlog alike). Add"
    echo "   times in ms; CPU ms per add of the add processes and of each daemon, from the first add to the"
    echo "   last one folded and the fleet settled again (daemons under 0.01 left out). Then each home's"
    echo "   throughput run, $fleet_rounds rounds (each after $fleet_n more adds, the homes in the other order than"
    echo "   the last round), the medians compared; each daemon's CPU and RSS from the last round."
    set -- $backlog_sizes
    first="$1"
    for b in $backlog_sizes; do last="$b"; done
    declare -A bl_rate bl_add bl_p50
    for form in fleet minimal; do
        if [[ "$form" == fleet ]]; then form_daemons=""; label="whole fleet"; else form_daemons="worker coordinator"; label="coordinator+worker"; fi
        for b in $backlog_sizes; do
            # shellcheck disable=SC2086 # a list of daemon names
            fleet_setup "bl-$form-$b" "$b" $form_daemons
        done
        declare -A t_before
        for b in $backlog_sizes; do t_before[$b]="$(fleet_ticks "bl-$form-$b")"; done
        round=0
        for ((added = 0; added < fleet_n; added += add_block)); do
            k=$((fleet_n - added < add_block ? fleet_n - added : add_block))
            order="$backlog_sizes"
            # Every other round in the reverse order: no backlog always follows another.
            ((round % 2)) && order="$(echo "$backlog_sizes" | tr ' ' '\n' | tac | tr '\n' ' ')"
            for b in $order; do fleet_adds "bl-$form-$b" "$k"; done
            round=$((round + 1))
        done
        for b in $backlog_sizes; do fleet_folded "bl-$form-$b"; done
        for b in $backlog_sizes; do
            fleet_use "bl-$form-$b"
            settle_fleet
            add_cpu "bl-$form-$b" "${t_before[$b]}" "$(fleet_ticks "bl-$form-$b")" "$fleet_n"
            read -r mean p50 p90 < <(add_stats "bl-$form-$b")
            bl_add[$form-$b]="$mean"
            bl_p50[$form-$b]="$p50"
            line="$(printf '   %-18s %7d not due: add mean %s / p50 %s / p90 %s ms; CPU ms per add: add %s' \
                "$label" "$b" "$mean" "$p50" "$p90" "${addcpu[add]}")"
            for d in $all_daemons; do
                [[ -n "${addcpu[$d]:-}" ]] || continue
                awk -v v="${addcpu[$d]}" 'BEGIN {exit !(v >= 0.01)}' && line+=", $d ${addcpu[$d]}"
            done
            echo "$line"
        done
        # The throughput runs, in rounds: each round's order the reverse of the last one's, a
        # round after the first one on $fleet_n more adds (paused, settled), the median compared.
        declare -A bl_rates
        for ((r = 1; r <= fleet_rounds; r++)); do
            order="$backlog_sizes"
            ((r % 2)) || order="$(echo "$backlog_sizes" | tr ' ' '\n' | tac | tr '\n' ' ')"
            if ((r > 1)); then
                for b in $backlog_sizes; do fleet_adds "bl-$form-$b" "$fleet_n"; done
                for b in $backlog_sizes; do
                    fleet_folded "bl-$form-$b"
                    fleet_use "bl-$form-$b"
                    settle_fleet
                done
            fi
            for b in $order; do
                run_keep=$((r < fleet_rounds)) run_pause_at_end=$((r < fleet_rounds)) fleet_go "bl-$form-$b"
                bl_rates[$form-$b]+="$run_rate "
                max_rss="$(for d in "${!run_rss[@]}"; do echo "${run_rss[$d]}"; done | sort -n | tail -1)"
                # shellcheck disable=SC2086
                printf '   %-18s %7d not due, round %d: %6s tasks/s (not completed: %s)   %s ms CPU/task   largest RSS %s MiB\n' \
                    "$label" "$b" "$r" "$run_rate" "$run_bad" "$(cpu_sum ${form_daemons:-$all_daemons})" "$max_rss"
                if ((r == fleet_rounds)) && [[ "$b" == "$last" ]]; then
                    last_cpu=()
                    last_rss=()
                    for d in "${!run_cpu[@]}"; do last_cpu[$d]="${run_cpu[$d]}"; last_rss[$d]="${run_rss[$d]}"; done
                fi
            done
        done
        for b in $backlog_sizes; do
            # shellcheck disable=SC2086 # a list of rates
            bl_rate[$form-$b]="$(printf '%s\n' ${bl_rates[$form-$b]} | median)"
            printf '   %-18s %7d not due: median %s tasks/s (rounds: %s)\n' "$label" "$b" "${bl_rate[$form-$b]}" "${bl_rates[$form-$b]% }"
        done
        tr="$(awk -v a="${bl_rate[$form-$last]}" -v b="${bl_rate[$form-$first]}" 'BEGIN {printf "%.2f", a/b}')"
        # The add cost is a time (lower is better): the target is the speed of adding, first/last.
        ar="$(awk -v a="${bl_add[$form-$last]}" -v b="${bl_add[$form-$first]}" 'BEGIN {printf "%.2f", b/a}')"
        ar50="$(awk -v a="${bl_p50[$form-$last]}" -v b="${bl_p50[$form-$first]}" 'BEGIN {printf "%.2f", b/a}')"
        echo "   $label, throughput at $last vs $first not due: ${tr}   target >= 0.90: $(met "$tr" ge 0.90)"
        echo "   $label, add rate (1/mean add time) at $last vs $first not due: ${ar} (by the median: ${ar50})   target >= 0.90: $(met "$ar" ge 0.90)"
        if [[ "$form" == fleet ]]; then
            echo "   each daemon of the whole fleet at $last not due (RSS target <= 64 MiB):"
            for d in $all_daemons; do
                [[ -n "${last_rss[$d]:-}" ]] || continue
                printf '   %-16s RSS %6s MiB %-8s CPU %8s ms/task\n' "$d" "${last_rss[$d]}" "$(met "${last_rss[$d]}" le 64)" "${last_cpu[$d]}"
            done
        fi
    done
fi

# behind_held KIND GEN SIZES: the fleet run of section 6 (ready_n tasks, whole fleet) behind each
# size of GEN's backlog (KIND names it), timed from the resume to the last timed task archived,
# the scheduler paused then; throughput, the coordinator's CPU per task and every daemon's RSS.
behind_held() {
    local kind="$1" sizes="$3" b first last tr cr d
    declare -A hd_rate hd_coord
    run_n="$ready_n" run_gen="$2" run_pause_at_end=1
    for b in $sizes; do
        fleet_run "$kind$b" "$b"
        hd_rate[$b]="$run_rate"
        hd_coord[$b]="${run_cpu[coordinator]:-0}"
        max_rss="$(for d in "${!run_rss[@]}"; do echo "${run_rss[$d]}"; done | sort -n | tail -1)"
        printf '   %7d %s: %6s tasks/s (not completed: %s)   coordinator %s ms CPU/task, RSS %s MiB   fleet %s ms CPU/task (%s archived in the window)   largest RSS %s MiB\n' \
            "$b" "$kind" "$run_rate" "$run_bad" "${run_cpu[coordinator]:-}" "${run_rss[coordinator]:-}" "$(cpu_sum $all_daemons)" "$run_done" "$max_rss"
    done
    run_n="" run_gen=gen_backlog run_pause_at_end=0
    set -- $sizes
    first="$1"
    for b in $sizes; do last="$b"; done
    tr="$(awk -v a="${hd_rate[$last]}" -v b="${hd_rate[$first]}" 'BEGIN {printf "%.2f", a/b}')"
    cr="$(awk -v a="${hd_coord[$last]}" -v b="${hd_coord[$first]}" 'BEGIN {printf "%.2f", (b > 0) ? a/b : 0}')"
    echo "   throughput at $last vs $first $kind: ${tr}   target >= 0.90: $(met "$tr" ge 0.90)"
    echo "   coordinator CPU/task at $last vs $first $kind: ${cr}   target <= 1.10: $(met "$cr" le 1.10)"
    echo "   each daemon at $last $kind (RSS target <= 64 MiB):"
    for d in $all_daemons; do
        [[ -n "${run_rss[$d]:-}" ]] || continue
        printf '   %-16s RSS %6s MiB %-8s CPU %8s ms/task\n' "$d" "${run_rss[$d]}" "$(met "${run_rss[$d]}" le 64)" "${run_cpu[$d]}"
    done
}

if want ready; then
    echo
    echo "7b. the fleet run of section 6 ($ready_n tasks, whole fleet) behind queued tasks that can run now (lower priority)"
    behind_held ready gen_ready "$ready_sizes"
fi

if want after; then
    echo
    echo "7c. the fleet run of section 6 ($ready_n tasks, whole fleet) behind queued tasks waiting for a prerequisite not yet due"
    behind_held blocked gen_after "$after_sizes"
fi

if want xargs; then
    echo
    echo "8. xargs -P 8 running \`true\` $fleet_n times (the physical limit of 8 slots)"
    settle
    t0="$(now_us)"
    seq "$fleet_n" | xargs -P 8 -n 1 true
    t1="$(now_us)"
    x_rate="$(awk -v d=$((t1 - t0)) -v n="$fleet_n" 'BEGIN {printf "%.0f", n/(d/1e6)}')"
    echo "   ${x_rate} tasks/s"
    if [[ -n "${tps[fleet]:-}" ]]; then
        r="$(awk -v a="${tps[fleet]}" -v b="$x_rate" 'BEGIN {printf "%.3f", a/b}')"
        echo "   whole fleet (section 6) / xargs: ${r}   stretch target >= 0.50: $(met "$r" ge 0.50)"
        echo "   coordinator+worker (section 6) / xargs: $(awk -v a="${tps[cw]}" -v b="$x_rate" 'BEGIN {printf "%.3f", a/b}')"
    fi
    if [[ -n "${tps[8]:-}" ]]; then
        echo "   8 slots (section 2, $tp_n tasks) / xargs: $(awk -v a="${tps[8]}" -v b="$x_rate" 'BEGIN {printf "%.3f", a/b}')"
    fi
fi

# 9. History ---------------------------------------------------------------------------------
# gen_history N SEGMENT_BYTES: N archived tasks written straight into task-archive.jsonl in its
# format, sealed with `cortex task seal-archive` each time the file passes SEGMENT_BYTES (what
# the coordinator does in its commit); ids sort in the order written, the oldest first.
gen_history() {
    local file="$home/coordination/task-archive.jsonl"
    awk -v n="$1" -v seg="$2" -v file="$file" -v seal="\"$bin/cortex\" --home \"$home\" task seal-archive >/dev/null" '
    BEGIN {
        size = 0
        for (i = 0; i < n; i++) {
            r = i % 10
            st = (r == 0 || r == 3) ? "failed" : (r == 7 ? "cancelled" : "completed")
            code = (st == "failed") ? 1 : 0
            line = sprintf("{\"task_id\":\"task-20260101000000000-%07d\",\"description\":\"history %d\",\"priority\":\"medium\",\"worker_type\":\"shell\",\"command\":[\"true\"],\"status\":\"%s\",\"started_at\":\"2026-01-01T00:00:00Z\",\"completed_at\":\"2026-01-01T00:00:01Z\",\"created_at\":\"2026-01-01T00:00:00Z\",\"created_by\":\"bench\",\"attempts\":1,\"max_attempts\":1,\"budget\":10,\"result\":{\"exit_code\":%d},\"dispatches\":[\"dispatch-%07d\"]}", i, i, st, code, i)
            print line > file
            size += length(line) + 1
            if (size >= seg) { close(file); if (system(seal) != 0) exit 1; size = 0 }
        }
        close(file)
    }'
}
if want history; then
    echo
    echo "9. a long history: archived tasks written in the archive's format, sealed every [archive] segment_bytes"
    hist_sizes="${BENCH_HISTORY:-1000 1000000}"
    hist_n="${BENCH_HISTORY_TASKS:-100}"
    declare -A h_show h_list h_status h_coord h_integ h_metrics
    for n in $hist_sizes; do
        settle
        new_home "history$n" 8
        # A metrics snapshot each second, so the window holds several.
        sed -i '/^\[metrics\]/,/^\[/ s/^interval_seconds = .*/interval_seconds = 1/' "$home/cortex.toml"
        seg_bytes="$(awk '/^\[archive\]/ {a = 1; next} /^\[/ {a = 0} a && $1 == "segment_bytes" {print $3}' "$home/cortex.toml")"
        seg_bytes="${seg_bytes:-16777216}"
        t0="$(now_us)"
        gen_history "$n" "$seg_bytes"
        t1="$(now_us)"
        segs="$( (find "$home/coordination/task-archive" -name 'seg-*.jsonl' 2>/dev/null || true) | wc -l)"
        active_b="$(stat -c %s "$home/coordination/task-archive.jsonl" 2>/dev/null || echo 0)"
        oldest="task-20260101000000000-0000000"
        h_show[$n]="$(med_ms cortex task show "$oldest")"
        h_list[$n]="$(med_ms cortex task list --all --status failed --limit 50)"
        port=$((20000 + RANDOM % 20000))
        export CORTEX_API_BIND="127.0.0.1:$port"
        start_daemon api
        unset CORTEX_API_BIND
        h_status[$n]="$(med_ms curl -sf "http://127.0.0.1:$port/status")"
        start_daemon worker
        start_daemon coordinator
        c_pid="$started_pid"
        start_daemon integration
        i_pid="$started_pid"
        start_daemon metrics
        m_pid="$started_pid"
        c0="$(ticks "$c_pid")" i0="$(ticks "$i_pid")" m0="$(ticks "$m_pid")"
        for ((i = 0; i < hist_n; i++)); do
            cortex task add --description "after $i" --after "task-20260101000000000-0000001" -- true >/dev/null
        done
        # Until the live queue is empty (every one of them archived): not by counting the
        # archive's lines, which would read the whole history each time.
        for ((k = 0; k < 3000; k++)); do
            [[ "$(cortex task list --json | jq '.count')" == 0 ]] && break
            nap 0.02
        done
        nap "$tail_s"
        h_coord[$n]="$(awk -v a="$c0" -v b="$(ticks "$c_pid")" -v hz="$hz" -v k="$hist_n" 'BEGIN {printf "%.2f", (b-a)/hz*1000/k}')"
        h_integ[$n]="$(awk -v a="$i0" -v b="$(ticks "$i_pid")" -v hz="$hz" -v k="$hist_n" 'BEGIN {printf "%.2f", (b-a)/hz*1000/k}')"
        h_metrics[$n]="$(awk -v a="$m0" -v b="$(ticks "$m_pid")" -v hz="$hz" -v k="$hist_n" 'BEGIN {printf "%.2f", (b-a)/hz*1000/k}')"
        gen_s="$(awk -v d=$((t1 - t0)) 'BEGIN {printf "%.1f", d/1e6}')"
        echo "   $n archived (written in ${gen_s} s; $segs sealed segment(s), active file $active_b bytes):"
        echo "     task show (oldest) ${h_show[$n]} ms   list --all --status failed --limit 50 ${h_list[$n]} ms   GET /status ${h_status[$n]} ms"
        echo "     CPU ms per task waiting on an archived prerequisite: coordinator ${h_coord[$n]}   integration ${h_integ[$n]}   metrics ${h_metrics[$n]}"
        stop_all
    done
    first="" last=""
    for n in $hist_sizes; do [[ -n "$first" ]] || first="$n"; last="$n"; done
    if [[ "$first" != "$last" ]]; then
        r() { awk -v a="$1" -v b="$2" 'BEGIN {if (b <= 0) b = 0.01; printf "%.2f", a/b}'; }
        echo "   ratios $last vs $first (target <= ~1.5):"
        for what in show list status coord integ metrics; do
            declare -n arr="h_$what"
            v="$(r "${arr[$last]}" "${arr[$first]}")"
            printf '     %-8s %6s  %s\n' "$what" "$v" "$(met "$v" le 1.5)"
            unset -n arr
        done
    fi
fi

if want slurm; then
    echo "10. Slurm: Cortex on a dev cluster next to bare sbatch --wrap (scripts/bench-slurm.sh)"
    if ! command -v slurmctld >/dev/null || ! command -v sbatch >/dev/null; then
        echo "   skipped: Slurm is not installed (. .ci/tools.sh installs it)"
    else
        CORTEX_BIN_DIR="$bin" TMPDIR="$work" "$root/scripts/bench-slurm.sh" 2>&1 | sed 's/^/   /'
    fi
fi
