#!/usr/bin/env bash
# Throughput of trivial tasks through Cortex on Slurm, next to a bare loop of `sbatch --wrap true`
# on the same dev cluster in the same run (issue 20's benchmark; not a test).
#
#   scripts/bench-slurm.sh
#
# Starts a private cluster with scripts/slurm-dev.sh in a temporary directory, submits
# BENCH_SLURM_TASKS (200) bare jobs and times them until none is left in squeue, then runs the
# same number of tasks of a Slurm worker type through cortex-coordinator and cortex-slurm
# (poll_interval_seconds BENCH_SLURM_POLL, 0.5) in a temporary home and times them until all are
# completed. Prints both and Cortex's share of the bare loop's throughput (target: >= 90 %).
# Binaries: CORTEX_BIN_DIR, default target/release if built there, else target/debug.
# Its directories are made by mktemp (under $TMPDIR); everything it starts is stopped and they
# are removed on exit.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
n=${BENCH_SLURM_TASKS:-200}
poll=${BENCH_SLURM_POLL:-0.5}
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

t0=$(now)
for i in $(seq "$n"); do "$bin/cortex" --home "$home" task add --type bench-slurm --description "b$i" -- true >/dev/null; done
t1=$(now)
until [ "$("$bin/cortex" --home "$home" task list --all --status completed 2>/dev/null | grep -c '^task-' || true)" = "$n" ]; do
    sleep 0.2
done
t2=$(now)
cortex_add=$(echo "$t1 - $t0" | bc -l)
cortex_total=$(echo "$t2 - $t0" | bc -l)

printf 'bare sbatch --wrap: %d jobs submitted in %.2f s, all gone from squeue after %.2f s (%.2f jobs/s)\n' \
    "$n" "$bare_submit" "$bare_total" "$(echo "$n / $bare_total" | bc -l)"
printf 'cortex on slurm:    %d tasks added in %.2f s, all completed after %.2f s (%.2f tasks/s)\n' \
    "$n" "$cortex_add" "$cortex_total" "$(echo "$n / $cortex_total" | bc -l)"
printf 'cortex / bare throughput: %.0f %% (target >= 90 %%)\n' "$(echo "100 * $bare_total / $cortex_total" | bc -l)"
