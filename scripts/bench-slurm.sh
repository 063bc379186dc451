#!/usr/bin/env bash
# Cortex on Slurm next to bare `sbatch --wrap` on the same dev cluster in the same run (issue 20's
# benchmark; not a test). Run by `scripts/bench.sh --slurm` (its `slurm` section), or alone:
#
#   scripts/bench-slurm.sh
#
# Starts a private cluster with scripts/slurm-dev.sh in a temporary directory, then:
#  1. latency: BENCH_SLURM_LATENCY_SAMPLES (10) jobs one at a time on the idle cluster, from just
#     before `sbatch --wrap` (bare) or `cortex task add` (Cortex) to the job's own first
#     instruction (`date +%s.%N` into a file), and to the job accepted (sbatch returned: for
#     Cortex, cortex-slurm's log line); p50 and max of each, and Cortex's p50 minus the bare p50
#     (target: at most +50 ms). The first is Slurm's launch (seconds, uneven: its scheduling
#     passes) plus Cortex's share; the second is Cortex's share alone;
#  2. throughput: BENCH_SLURM_TASKS (200) bare jobs timed until none is left in squeue, then the
#     same number of tasks of a Slurm worker type through cortex-coordinator and cortex-slurm
#     (poll_interval_seconds BENCH_SLURM_POLL, 2.0: the shipped default) timed until all are
#     completed; Cortex's share of the bare loop's throughput (target: >= 90 %).
# Binaries: CORTEX_BIN_DIR, default target/release if built there, else target/debug.
# Its directories are made by mktemp (under $TMPDIR); everything it starts is stopped and they
# are removed on exit.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
n=${BENCH_SLURM_TASKS:-200}
poll=${BENCH_SLURM_POLL:-2.0}
lat_n=${BENCH_SLURM_LATENCY_SAMPLES:-10}
bin=${CORTEX_BIN_DIR:-}
if [ -z "$bin" ]; then
    if [ -x "$root/target/release/cortex-slurm" ]; then bin=$root/target/release; else bin=$root/target/debug; fi
fi
for b in cortex cortex-coordinator cortex-slurm; do
    [ -x "$bin/$b" ] || { echo "bench-slurm: $bin/$b is missing (cargo build)" >&2; exit 1; }
done

cluster=$(mktemp -d --suffix=.bs)
home=$(mktemp -d --suffix=.bench-slurm-home)
chmod 700 "$home"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    "$root/scripts/slurm-dev.sh" stop "$cluster" >/dev/null 2>&1 || true
    rm -rf "$cluster" "$home"
}
trap cleanup EXIT

"$root/scripts/slurm-dev.sh" start "$cluster" >/dev/null
export SLURM_CONF=$cluster/slurm.conf
now() { date +%s.%N; }

# p50 (nearest rank) and max, in ms, of the numbers (seconds) on stdin.
p50_max() { sort -n | awk '{a[NR]=$1} END {i=int(NR/2+0.5); if (i<1) i=1; printf "%.0f %.0f\n", a[i]*1000, a[NR]*1000}'; }
wait_file() { until [ -s "$1" ]; do sleep 0.01; done; }

# 1a. Latency, bare: one job at a time, from just before sbatch to the job's first instruction.
for i in $(seq "$lat_n"); do
    f=$cluster/lat-bare-$i
    t0=$(now)
    sbatch --parsable --job-name="lat-$i" --output=/dev/null --wrap "date +%s.%N >$f" >/dev/null
    echo "$(now) - $t0" | bc -l >>"$cluster/acc-bare"
    wait_file "$f"
    echo "$(cat "$f") - $t0" | bc -l >>"$cluster/lat-bare"
    while [ "$(squeue --noheader --name="lat-$i" | wc -l)" != 0 ]; do sleep 0.05; done
done

names=$(seq -s, -f 'bare-%g' "$n")
t0=$(now)
for i in $(seq "$n"); do sbatch --parsable --job-name="bare-$i" --output=/dev/null --wrap true >/dev/null; done
t1=$(now)
while [ "$(squeue --noheader --name="$names" | wc -l)" != 0 ]; do sleep 0.2; done
t2=$(now)
bare_submit=$(echo "$t1 - $t0" | bc -l)
bare_total=$(echo "$t2 - $t0" | bc -l)

"$bin/cortex" --home "$home" init >/dev/null
sed -i "s/^enabled = false/enabled = true/; s/^poll_interval_seconds = 2.0/poll_interval_seconds = $poll/; s/^max_jobs = 100/max_jobs = $n/" \
    "$home/cortex.toml"
python3 - "$home/coordination/config/worker-types.json" <<'PY'
import json, sys
path = sys.argv[1]
types = json.load(open(path))
types["worker_types"]["bench-slurm"] = {"default_budget": 1, "default_duration": 10, "command": ["true"], "executor": "slurm"}
json.dump(types, open(path, "w"), indent=2)
PY
"$bin/cortex-coordinator" --home "$home" >/dev/null 2>&1 & pids+=($!)
"$bin/cortex-slurm" --home "$home" >/dev/null 2>&1 & pids+=($!)
until [ -s "$home/run/slurm.state.json" ] && grep -q ready_at "$home/run/slurm.state.json"; do sleep 0.1; done

# 1b. Latency through Cortex: the same, from just before `cortex task add`.
for i in $(seq "$lat_n"); do
    f=$home/lat-cortex-$i
    t0=$(now)
    "$bin/cortex" --home "$home" task add --type bench-slurm --description "lat$i" -- sh -c "date +%s.%N >$f" >/dev/null
    wait_file "$f"
    echo "$(cat "$f") - $t0" | bc -l >>"$cluster/lat-cortex"
    # When sbatch returned the job id to cortex-slurm: its log line, the i-th of its kind.
    line=$(grep 'submitted as Slurm job' "$home/agents/logs/system/slurm-daemon.log" | sed -n "${i}p")
    echo "$(date -d "${line%% *}" +%s.%N) - $t0" | bc -l >>"$cluster/acc-cortex"
    until [ "$("$bin/cortex" --home "$home" task list --all --status completed 2>/dev/null | grep -c '^task-' || true)" = "$i" ]; do
        sleep 0.05
    done
done

t0=$(now)
for i in $(seq "$n"); do "$bin/cortex" --home "$home" task add --type bench-slurm --description "b$i" -- true >/dev/null; done
t1=$(now)
until [ "$("$bin/cortex" --home "$home" task list --all --status completed 2>/dev/null | grep -c '^task-' || true)" = "$((n + lat_n))" ]; do
    sleep 0.2
done
t2=$(now)
cortex_add=$(echo "$t1 - $t0" | bc -l)
cortex_total=$(echo "$t2 - $t0" | bc -l)

read -r bare_p50 bare_max < <(p50_max <"$cluster/lat-bare")
read -r cortex_p50 cortex_max < <(p50_max <"$cluster/lat-cortex")
read -r bare_acc _ < <(p50_max <"$cluster/acc-bare")
read -r cortex_acc cortex_acc_max < <(p50_max <"$cluster/acc-cortex")
printf 'latency to the job accepted (sbatch returned), %d samples: bare p50 %d ms, cortex p50 %d ms (max %d): %+d ms (target <= +50 ms)\n' \
    "$lat_n" "$bare_acc" "$cortex_acc" "$cortex_acc_max" "$((cortex_acc - bare_acc))"
printf 'latency to the job'"'"'s first instruction, %d samples: bare sbatch p50 %d ms (max %d), cortex p50 %d ms (max %d): %+d ms (target <= +50 ms)\n' \
    "$lat_n" "$bare_p50" "$bare_max" "$cortex_p50" "$cortex_max" "$((cortex_p50 - bare_p50))"
printf 'bare sbatch --wrap: %d jobs submitted in %.2f s, all gone from squeue after %.2f s (%.2f jobs/s)\n' \
    "$n" "$bare_submit" "$bare_total" "$(echo "$n / $bare_total" | bc -l)"
printf 'cortex on slurm:    %d tasks added in %.2f s, all completed after %.2f s (%.2f tasks/s)\n' \
    "$n" "$cortex_add" "$cortex_total" "$(echo "$n / $cortex_total" | bc -l)"
printf 'cortex / bare throughput: %.0f %% (target >= 90 %%)\n' "$(echo "100 * $bare_total / $cortex_total" | bc -l)"
