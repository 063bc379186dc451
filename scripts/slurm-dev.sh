#!/usr/bin/env bash
# A real single-node Slurm cluster on loopback, for developers and the tests of the Slurm executor.
#
#   scripts/slurm-dev.sh start  [DIR]   # write DIR/slurm.conf, start slurmctld and slurmd, wait until
#                                       # the controller answers and the node is idle; prints the
#                                       # SLURM_CONF=... line to export
#   scripts/slurm-dev.sh stop   [DIR]   # cancel this cluster's jobs, stop its daemons and job steps
#                                       # (TERM, grace, KILL); nothing else; idempotent
#   scripts/slurm-dev.sh status [DIR]   # what of this cluster runs
#   scripts/slurm-dev.sh stop-controller [DIR]  # slurmctld alone (Slurm "down" for clients; jobs
#                                       # keep running); `start DIR` brings it back with its state
#
# DIR: the cluster's directory (its slurm.conf, state, spool, PID and log files). Default:
# $CORTEX_HOME/run/slurm-dev when CORTEX_HOME is set; else `start` makes a fresh directory under
# $TMPDIR (or /tmp) and `stop`/`status` need it named. Several clusters run side by side: each has
# its own directory and its own free ports, and this script only ever signals the processes whose
# PID files are in that directory (and the job steps its slurmd started, found by its socket paths).
#
# Needs Debian's slurmctld, slurmd and slurm-client (.ci/tools.sh installs them) and root (the
# daemons run as SlurmUser=root). No munge: AuthType=auth/none, CredType=cred/none — only for a
# private loopback cluster. Environment: SLURM_DEV_START_TIMEOUT (seconds, 30), SLURM_DEV_GRACE
# (seconds between TERM and KILL, 5), SLURM_DEV_CPUS (the node's CPUs, default nproc),
# SLURM_DEV_MIN_JOB_AGE (seconds Slurm keeps an ended job listed, 300). Besides the default
# partition `debug`, `urgent` on the same node: its jobs preempt (cancel) those of `debug`
# (PREEMPTED), for tests of preemption.
set -euo pipefail

cmd="${1:-}"
dir="${2:-}"
start_timeout="${SLURM_DEV_START_TIMEOUT:-30}"
grace="${SLURM_DEV_GRACE:-5}"

die() { echo "slurm-dev: $*" >&2; exit 1; }

resolve_dir() {
    if [[ -z "$dir" && -n "${CORTEX_HOME:-}" ]]; then
        dir="$CORTEX_HOME/run/slurm-dev"
    fi
    if [[ -z "$dir" ]]; then
        [[ "$cmd" == start ]] || die "name the cluster's directory: scripts/slurm-dev.sh $cmd DIR (start printed it)"
        dir="$(mktemp -d --suffix=.cortex-slurm)"  # under $TMPDIR, else /tmp
    fi
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
}

# A TCP port nobody on this host uses (no socket in any state in /proc/net/tcp, tcp6), taken from
# 20000-32767, below the kernel's ephemeral range (32768-60999), so no outgoing connection takes it.
port_in_use() {
    local hex
    hex="$(printf '%04X' "$1")"
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v p=":$hex" '$2 ~ p"$" {found=1} END {exit !found}'
}
free_port() {
    local p tries=0
    while (( tries < 200 )); do
        p=$(( 20000 + RANDOM % 12768 ))
        if ! port_in_use "$p" && [[ "$p" != "${1:-}" ]]; then echo "$p"; return; fi
        tries=$(( tries + 1 ))
    done
    die "no free TCP port found in 20000-32767"
}

# The PID in a daemon's PID file if that process still runs one of this cluster's daemons
# (its command line names the binary, its environment this directory's slurm.conf).
live_pid() {
    local file="$1" bin="$2" pid
    [[ -r "$file" ]] || return 1
    pid="$(tr -dc '0-9' <"$file")"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | head -1 | grep -q "$bin\$" || return 1
    tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qx "SLURM_CONF=$dir/slurm.conf" || return 1
    echo "$pid"
}

# The slurmstepd processes of this cluster: those holding a Unix socket under its spool directory.
step_pids() {
    local inodes pid fd link
    inodes="$(awk -v d="$dir/spool/" 'index($8, d) == 1 {print $7}' /proc/net/unix 2>/dev/null | sort -u)"
    [[ -n "$inodes" ]] || return 0
    for pid in /proc/[0-9]*; do
        pid="${pid#/proc/}"
        grep -q slurmstepd "/proc/$pid/comm" 2>/dev/null || continue
        for fd in /proc/"$pid"/fd/*; do
            link="$(readlink "$fd" 2>/dev/null)" || continue
            if [[ "$link" == socket:* ]] && grep -qx "${link//[^0-9]/}" <<<"$inodes"; then
                echo "$pid"
                break
            fi
        done
    done
}

# Whether a process (or, given -PGID, a process group) runs; a zombie has ended, only its parent
# has not collected it yet.
running() {
    local stat
    if [[ "$1" == -* ]]; then kill -0 -- "$1" 2>/dev/null; return; fi
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [[ "${stat:0:1}" != Z ]]
}

# The process groups of this cluster's batch scripts still running (a step killed before its job
# leaves them): a batch script runs as `<shell> $dir/spool/jobNNNNN/slurm_script`, leading its group.
job_groups() {
    local pid stat
    for pid in /proc/[0-9]*; do
        pid="${pid#/proc/}"
        tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "^$dir/spool/job[0-9]*/slurm_script\$" || continue
        stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || continue
        stat="${stat##*) }"
        read -r _ _ pgid _ <<<"$stat"
        [[ "$pgid" == "$pid" ]] && echo "$pid"
    done
}

stop_pids() {
    (( $# > 0 )) || return 0
    local pids=("$@") deadline p alive
    kill -TERM -- "${pids[@]}" 2>/dev/null || true
    deadline=$(( SECONDS + grace ))
    while (( SECONDS < deadline )); do
        alive=0
        for p in "${pids[@]}"; do running "$p" && alive=1; done
        (( alive )) || return 0
        sleep 0.1
    done
    kill -KILL -- "${pids[@]}" 2>/dev/null || true
}

write_conf() {
    local ctld_port slurmd_port cpus
    ctld_port="$(free_port)"
    slurmd_port="$(free_port "$ctld_port")"
    cpus="${SLURM_DEV_CPUS:-$(nproc)}"
    mkdir -p "$dir/state" "$dir/spool" "$dir/log"
    cat >"$dir/slurm.conf" <<EOF
# Written by scripts/slurm-dev.sh: a single-node development cluster on loopback.
ClusterName=cortexdev
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/none
CredType=cred/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
MinJobAge=${SLURM_DEV_MIN_JOB_AGE:-300}
PreemptType=preempt/partition_prio
PreemptMode=CANCEL
ReturnToService=2
NodeName=localhost CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=urgent Nodes=localhost MaxTime=INFINITE State=UP PriorityTier=2
EOF
}

node_state() {
    SLURM_CONF="$dir/slurm.conf" sinfo -h -N -n localhost -o '%T' 2>/dev/null | head -1
}

controller_up() {
    SLURM_CONF="$dir/slurm.conf" scontrol ping 2>/dev/null | grep -q 'is UP'
}

start() {
    resolve_dir
    local ctld_running='' slurmd_running=''
    live_pid "$dir/slurmctld.pid" slurmctld >/dev/null && ctld_running=1
    live_pid "$dir/slurmd.pid" slurmd >/dev/null && slurmd_running=1
    if [[ -n "$ctld_running" && -n "$slurmd_running" ]]; then
        die "a cluster already runs in $dir (scripts/slurm-dev.sh status $dir)"
    fi
    for bin in slurmctld slurmd sbatch squeue scontrol scancel sinfo; do
        command -v "$bin" >/dev/null || die "$bin is not installed (. .ci/tools.sh installs Debian's slurmctld slurmd slurm-client)"
    done
    # A directory of an earlier run keeps its ports and its state (jobs survive a restart).
    local clear=()
    if [[ ! -f "$dir/slurm.conf" ]]; then
        write_conf
        clear=(-c)
    fi
    export SLURM_CONF="$dir/slurm.conf"
    # Only what is not running (after `stop-controller`, the controller alone comes back).
    if [[ -z "$ctld_running" ]]; then
        slurmctld "${clear[@]}" -f "$SLURM_CONF" || die "slurmctld did not start: see $dir/log/slurmctld.log"
    fi
    if [[ -z "$slurmd_running" ]]; then
        slurmd -f "$SLURM_CONF" || die "slurmd did not start: see $dir/log/slurmd.log"
    fi
    local deadline=$(( SECONDS + start_timeout )) state=
    while (( SECONDS < deadline )); do
        if controller_up; then
            state="$(node_state)"
            case "$state" in
                idle|mixed|allocated) break ;;
            esac
        fi
        sleep 0.2
    done
    case "$state" in
        idle|mixed|allocated) ;;
        *) die "the cluster in $dir is not ready after ${start_timeout}s (node: ${state:-no answer}); see $dir/log/" ;;
    esac
    echo "slurm-dev: cluster up in $dir (node localhost $state)" >&2
    echo "SLURM_CONF=$dir/slurm.conf"
}

stop() {
    resolve_dir
    local ctld slurmd steps
    ctld="$(live_pid "$dir/slurmctld.pid" slurmctld || true)"
    slurmd="$(live_pid "$dir/slurmd.pid" slurmd || true)"
    if [[ -n "$ctld" ]] && controller_up; then
        # Every job of this cluster (only this cluster: SLURM_CONF names it).
        local jobs
        jobs="$(SLURM_CONF="$dir/slurm.conf" squeue -h -o '%i' 2>/dev/null || true)"
        if [[ -n "$jobs" ]]; then
            # shellcheck disable=SC2086
            SLURM_CONF="$dir/slurm.conf" scancel $jobs 2>/dev/null || true
            # Let slurmd end their steps while it still runs (the rest are killed below).
            local deadline=$(( SECONDS + grace ))
            while (( SECONDS < deadline )) && [[ -n "$(step_pids)" ]]; do sleep 0.1; done
        fi
    fi
    # Daemons first (slurmd would start new steps), then the steps they leave.
    local daemons=()
    [[ -n "$ctld" ]] && daemons+=("$ctld")
    [[ -n "$slurmd" ]] && daemons+=("$slurmd")
    stop_pids "${daemons[@]}"
    mapfile -t steps < <(step_pids)
    stop_pids "${steps[@]}"
    local groups
    mapfile -t groups < <(job_groups)
    if (( ${#groups[@]} > 0 )); then
        stop_pids "${groups[@]/#/-}"
    fi
    echo "slurm-dev: stopped the cluster in $dir" >&2
}

# The controller alone (TERM, grace, KILL), jobs and slurmd left running: Slurm "down" as clients
# see it (`Unable to contact slurm controller`); `start DIR` brings it back with its state.
stop_controller() {
    resolve_dir
    local ctld
    ctld="$(live_pid "$dir/slurmctld.pid" slurmctld || true)"
    if [[ -n "$ctld" ]]; then stop_pids "$ctld"; fi
    echo "slurm-dev: stopped the controller of $dir" >&2
}

status() {
    resolve_dir
    local ctld slurmd steps rc=0
    ctld="$(live_pid "$dir/slurmctld.pid" slurmctld || true)"
    slurmd="$(live_pid "$dir/slurmd.pid" slurmd || true)"
    mapfile -t steps < <(step_pids)
    echo "cluster: $dir"
    echo "slurmctld: $(if [[ -n "$ctld" ]]; then echo "running (pid $ctld)"; else echo stopped; fi)"
    echo "slurmd: $(if [[ -n "$slurmd" ]]; then echo "running (pid $slurmd)"; else echo stopped; fi)"
    echo "job steps: ${#steps[@]}"
    if [[ -n "$ctld" ]]; then
        if controller_up; then echo "controller: UP"; else echo "controller: not answering"; rc=1; fi
        echo "node: $(node_state)"
    fi
    [[ -n "$ctld" && -n "$slurmd" ]] || rc=3
    [[ -f "$dir/slurm.conf" ]] && echo "SLURM_CONF=$dir/slurm.conf"
    return "$rc"
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    stop-controller) stop_controller ;;
    status) status ;;
    *) die "usage: scripts/slurm-dev.sh start|stop|stop-controller|status [DIR]" ;;
esac
