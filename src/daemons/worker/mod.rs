//! The worker daemon: the only component that starts task processes. It watches
//! `worker-specs/active/`; for each `starting` spec it launches the command through the exec
//! shim (own process group, stdin /dev/null, stdout/stderr to
//! `agents/logs/workers/<dispatch_id>.out|.err`, `CORTEX_*` environment), records the spec
//! `running` (pid, pgid, process start ticks) and only then lets the command run. It learns of
//! exits from SIGCHLD (`waitpid(WNOHANG)`), stops dispatches on timeout or on a `.cancel` request
//! (TERM to the group, `[worker] grace_seconds`, then KILL, driven by loop deadlines), and ends
//! each dispatch by writing its final state and moving the spec to `completed/` or `failed/`
//! (what it writes, and when: `records`). This module is the loop: launching, watching,
//! stopping.
//!
//! After a restart it re-adopts dispatches whose shim still runs (PID plus `/proc` start time),
//! reads the exit status that shims of dispatches that ended meanwhile left in the exit journal,
//! and marks the rest `lost`. A `starting` spec is launched again: its previous shim, if any, got
//! no go-ahead and ran nothing. So each dispatch's command runs at most once, and ends exactly
//! once.
//!
//! The worker owns every task process of its home, record or no record. A live dispatch whose
//! spec left `active/` other than as a zombie (removed or moved by hand), and at start-up any task process of the home that
//! no `running` spec accounts for (found in `/proc` by its environment, `domain::task::processes`), is
//! stopped (TERM to the group, the grace, KILL) and ends `lost` with that reason, its spec
//! created anew in `failed/` when it is gone. A `starting` dispatch of a task that still has a
//! live process here waits until that process is gone: a task never runs twice at once, whatever
//! an operator removes or puts back.

pub(crate) mod executor;
pub(crate) mod exits;
pub(crate) mod procs;
mod records;
pub mod shim;

use crate::base::clock::{Timestamp, format_ts};
use crate::base::error::{Error, Result};
use crate::domain::task::dispatch_record::{self, cancel_request_path, spec_path};
use crate::domain::task::dispatches;
use crate::domain::task::model::{DispatchRecord, DispatchState, SignalledEnd};
use crate::domain::task::processes;
use crate::domain::task::worker_types::{WorkerTypes, workdir};
use crate::store::Store;
use crate::store::config::Config;
use crate::store::events::{EventKind, Severity};
use crate::store::home::{Home, SpecBucket};
use crate::{base::wake::Wake, daemons::daemon::DaemonContext};
use executor::{Executor, LaunchPlan, LocalExecutor, Reaped};
use nix::sys::signal::Signal;
use records::{End, final_state};
use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Timeout,
    Cancel,
    /// Its `running` state could not be recorded (a full disk): the command was not let run.
    NotStarted,
    /// Its record vanished while it ran (removed from `worker-specs/active/` by hand), or it was
    /// found running with no record at start-up: a process nobody would watch, stopped before
    /// the coordinator may run the task again.
    Unrecorded,
}

#[derive(Debug)]
struct Stop {
    reason: StopReason,
    kill_at: Instant,
    killed: bool,
}

/// A dispatch whose process runs (or ran) under this worker.
#[derive(Debug)]
struct Live {
    task_id: String,
    pid: i32,
    pgid: i32,
    start_ticks: u64,
    started: Instant,
    deadline: Option<Instant>,
    stop: Option<Stop>,
    /// Not our child (found running after a restart): watched through a pidfd.
    adopted: bool,
    /// The dispatch's record as last known here, written again (in its final bucket) when the
    /// spec vanished while the process ran.
    record: DispatchRecord,
    /// Its spec is in no bucket: its end creates the record rather than updating it.
    unrecorded: bool,
}

impl Live {
    /// A dispatch this worker started (its child).
    fn launched(
        rec: &DispatchRecord,
        l: &executor::Launched,
        started: Instant,
        deadline: Option<Instant>,
        stop: Option<Stop>,
    ) -> Live {
        Live {
            task_id: rec.task_id.clone(),
            pid: l.pid,
            pgid: l.pgid,
            start_ticks: l.start_ticks,
            started,
            deadline,
            stop,
            adopted: false,
            record: rec.clone(),
            unrecorded: false,
        }
    }

    /// A running dispatch found on disk (not started by this worker): watched through a pidfd,
    /// its start time and deadline taken from the spec.
    fn adopted(rec: &DispatchRecord, started_at: Timestamp, pid: i32, pgid: i32, start_ticks: u64) -> Live {
        let started = Instant::now().checked_sub(duration_since(started_at)).unwrap_or_else(Instant::now);
        Live {
            task_id: rec.task_id.clone(),
            pid,
            pgid,
            start_ticks,
            started,
            deadline: Some(started + Duration::from_secs_f64(rec.timeout_seconds.max(0.0))),
            stop: None,
            adopted: true,
            record: rec.clone(),
            unrecorded: false,
        }
    }

    /// A task process of this home found running at start-up that no spec accounts for: watched
    /// through a pidfd and stopped. Its record is rebuilt from what its environment and command
    /// line say.
    fn orphan(home: &Home, p: &processes::TaskProcess) -> Live {
        let record = records::orphan_record(home, p);
        Live {
            task_id: record.task_id.clone(),
            pid: p.pid,
            pgid: p.pgid,
            start_ticks: p.start_ticks,
            started: Instant::now(),
            deadline: None,
            stop: None,
            adopted: true,
            record,
            unrecorded: false,
        }
    }
}

/// How a dispatch's leader process was seen to end.
#[derive(Debug, Clone, Copy)]
enum Gone {
    /// Reaped by us (our child).
    Reaped(Reaped),
    /// No longer running (not our child, or never started).
    Vanished,
}

/// Stray members of a finished dispatch's process group, killed at `kill_at`.
#[derive(Debug)]
struct Straggler {
    pgid: i32,
    kill_at: Instant,
}

pub struct Worker<E: Executor> {
    store: Store,
    home: Home,
    config: Config,
    executor: E,
    waker: Sender<Wake>,
    live: HashMap<String, Live>,
    by_pid: HashMap<i32, String>,
    stragglers: Vec<Straggler>,
    grace: Duration,
    /// Ended dispatches whose final state could not be written yet (a full disk): the state and
    /// tokens as seen at the end, written again each step and at least every second.
    unrecorded_ends: HashMap<String, (DispatchState, Option<u64>)>,
    /// Exit reports the shims appended, read as dispatches end.
    exits: exits::ExitJournal,
    /// The records of dispatches whose end is to be written, as known here: when the spec is in
    /// no bucket any more (removed by hand while the process ran), the end creates it in its
    /// final bucket, so the coordinator learns the true end rather than finding nothing.
    records: HashMap<String, DispatchRecord>,
    /// `starting` dispatches not launched because another dispatch of their task still has a
    /// live process here (logged once each).
    held_back: std::collections::HashSet<String>,
    /// Slurm dispatches in `active/` (`cortex-slurm`'s): never launched here, their specs not
    /// read again while they stay.
    slurm: std::collections::HashSet<String>,
}

fn duration_since(started_at: Timestamp) -> Duration {
    (crate::base::clock::now() - started_at).to_std().unwrap_or(Duration::ZERO)
}

impl<E: Executor> Worker<E> {
    pub fn new(store: Store, config: Config, executor: E, waker: Sender<Wake>) -> Worker<E> {
        let grace = Duration::from_secs_f64(config.worker.grace_seconds.max(0.0));
        Worker {
            exits: exits::ExitJournal::new(store.home()).with_lock_timeout(store.lock_timeout()),
            home: store.home().clone(),
            store,
            config,
            executor,
            waker,
            live: HashMap::new(),
            by_pid: HashMap::new(),
            stragglers: Vec::new(),
            grace,
            unrecorded_ends: HashMap::new(),
            records: HashMap::new(),
            held_back: Default::default(),
            slurm: Default::default(),
        }
    }

    /// Start-up: re-adopt running dispatches, finish those that ended while no worker ran, and
    /// finish moving specs that already carry a final state.
    pub fn reconcile(&mut self) -> Result<()> {
        self.exits.refresh();
        for rec in dispatches::list_bucket(&self.store, SpecBucket::Active)? {
            let id = rec.dispatch_id.clone();
            match &rec.state {
                // A Slurm dispatch is cortex-slurm's, never the worker's.
                _ if rec.is_slurm() => {}
                DispatchState::Starting => {}
                DispatchState::Running { started_at, pid, pgid, proc_start_ticks } => {
                    let elapsed = duration_since(*started_at);
                    let live = Live::adopted(&rec, *started_at, *pid, *pgid, *proc_start_ticks);
                    self.live.insert(id.clone(), live);
                    if self.executor.alive(*pid, *proc_start_ticks) {
                        tracing::info!("re-adopted dispatch {id} (PID {pid})");
                        procs::notify_exit(*pid, self.waker.clone(), format!("exited {id}"));
                    } else {
                        self.infer_stop(&id, elapsed, rec.timeout_seconds);
                        self.finish(&id, Gone::Vanished);
                    }
                }
                _ => {
                    if let Err(e) = self.move_final(&rec) {
                        tracing::error!("cannot move ended dispatch {id}: {e}");
                    }
                }
            }
        }
        self.stop_orphans();
        // Cancel requests and the tasks' runtime files whose spec is gone; reports of dispatches
        // that ended before (read again after a crash undid an emptying of the journal).
        let active = self.home.worker_specs(SpecBucket::Active);
        let runtime = self.home.dispatch_runtime_dir();
        for dir in [&active, &runtime] {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(id) = name.strip_suffix(".cancel").or_else(|| Home::runtime_file_dispatch(&name))
                    && !spec_path(&self.home, SpecBucket::Active, id).exists()
                {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let live = &self.live;
        self.exits.retain(|id| live.contains_key(id));
        self.compact_exits();
        Ok(())
    }

    /// Start-up: task processes of this home (found in `/proc` by their environment) that no
    /// `running` spec accounts for — their spec was removed or replaced while no worker ran —
    /// are taken in and stopped (TERM to the group, the grace, KILL), their end recorded `lost`
    /// with that reason. Until they are gone no dispatch of their task starts (see
    /// [`Worker::scan_active`]), so a task the coordinator retried meanwhile never runs twice.
    fn stop_orphans(&mut self) {
        let mut found = processes::find(&self.home);
        // The shim first: it leads the dispatch's group.
        found.sort_by_key(|p| (!p.shim, p.pid));
        let mut taken: HashMap<String, i32> = HashMap::new();
        for p in found {
            if let Some(&pgid) = taken.get(&p.dispatch_id) {
                // Another process of a dispatch taken in, outside its group (it left it).
                if p.pgid != pgid && self.executor.signal(p.pgid, Signal::SIGTERM) {
                    self.stragglers.push(Straggler { pgid: p.pgid, kill_at: Instant::now() + self.grace });
                }
                continue;
            }
            if self.live.contains_key(&p.dispatch_id) {
                continue;
            }
            tracing::warn!(
                "found {} running with no record of it in worker-specs/active/; stopping it",
                processes::describe(&p)
            );
            let id = p.dispatch_id.clone();
            taken.insert(id.clone(), p.pgid);
            self.live.insert(id.clone(), Live::orphan(&self.home, &p));
            procs::notify_exit(p.pid, self.waker.clone(), format!("exited {id}"));
            self.stop_unrecorded(&id);
        }
    }

    /// Stops a dispatch whose process runs without a record (see [`StopReason::Unrecorded`]).
    fn stop_unrecorded(&mut self, id: &str) {
        let Some(l) = self.live.get_mut(id) else { return };
        l.unrecorded = true;
        let (task, pid) = (l.task_id.clone(), l.pid);
        let _ = self.store.emit(
            EventKind::DispatchUnrecorded,
            Severity::Warning,
            format!(
                "Dispatch {id} (task {task}, PID {pid}) runs without a record in worker-specs/active/ \
                 (removed or replaced by hand); the worker stops it before its task can run again"
            ),
            serde_json::json!({"dispatch_id": id, "task_id": task, "pid": pid}),
        );
        self.begin_stop(id, StopReason::Unrecorded);
    }

    /// A dispatch found gone at start-up without an exit report had its whole group killed: by the
    /// previous worker stopping it (SIGKILL after the grace also kills the shim, and the worker
    /// died before reaping it), or from outside. A cancel request, or a run past its timeout,
    /// says the previous worker was stopping it, so it ends `cancelled` or `timeout`, not `lost`.
    fn infer_stop(&mut self, id: &str, elapsed: Duration, timeout_seconds: f64) {
        if self.exits.has(id) {
            return;
        }
        let reason = if cancel_request_path(&self.home, id).exists() {
            StopReason::Cancel
        } else if elapsed.as_secs_f64() >= timeout_seconds.max(0.0) {
            StopReason::Timeout
        } else {
            return;
        };
        if let Some(l) = self.live.get_mut(id) {
            tracing::info!("dispatch {id} ended while no worker ran, after its stop began ({reason:?})");
            l.stop = Some(Stop { reason, kill_at: Instant::now(), killed: true });
        }
    }

    /// One pass: reap, notice adopted exits, start new dispatches, act on cancels and deadlines.
    /// The ends seen and the starts made are written in one group commit.
    pub fn step(&mut self) {
        let mut gone: Vec<(String, Gone)> = Vec::new();
        for (pid, how) in self.executor.reap() {
            if let Some(id) = self.by_pid.remove(&pid) {
                gone.push((id, Gone::Reaped(how)));
            }
        }
        gone.extend(
            self.live
                .iter()
                .filter(|(_, l)| l.adopted && !self.executor.alive(l.pid, l.start_ticks))
                .map(|(id, _)| (id.clone(), Gone::Vanished)),
        );
        let mut ends = self.take_ends(gone);
        ends.extend(self.unrecorded_ends.iter().map(|(id, (state, tokens))| (id.clone(), state.clone(), *tokens)));
        let (to_launch, cancels) = match self.scan_active(&ends) {
            Ok(found) => found,
            Err(e) => {
                tracing::error!("cannot scan active dispatches: {e}");
                Default::default()
            }
        };
        let started = self.spawn_all(to_launch);
        self.write_step(ends, started);
        for id in cancels {
            if let Some(l) = self.live.get(&id)
                && l.stop.is_none()
            {
                tracing::info!("cancelling dispatch {id} (task {})", l.task_id);
                self.begin_stop(&id, StopReason::Cancel);
            }
        }
        self.run_timers();
        self.compact_exits();
    }

    /// Specs in `active/` to act on: `starting` ones to launch (in name order) and dispatches
    /// with a cancel request. Dispatches in `ending` (ended, their end not written yet) are not
    /// new. Specs in other states are re-adopted or moved on here. A live dispatch whose spec
    /// left `active/` other than as a zombie is stopped ([`StopReason::Unrecorded`]); a `starting` one
    /// waits while another dispatch of its task has a live process here.
    fn scan_active(&mut self, ending: &[End]) -> Result<(Vec<DispatchRecord>, Vec<String>)> {
        let dir = self.home.worker_specs(SpecBucket::Active);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => Some(e),
            // Removed with everything in it: every live dispatch lost its record.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&dir, "list", e)),
        };
        let ending: std::collections::HashSet<&str> = ending.iter().map(|(id, _, _)| id.as_str()).collect();
        let mut present = std::collections::HashSet::new();
        let mut new_specs = Vec::new();
        let mut cancels = Vec::new();
        for entry in entries.into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if crate::store::atomic::is_temp_name(&name) {
                continue;
            }
            if let Some(id) = name.strip_suffix(".json") {
                if !self.live.contains_key(id)
                    && !self.unrecorded_ends.contains_key(id)
                    && !ending.contains(id)
                    && !self.slurm.contains(id)
                {
                    new_specs.push(entry.path());
                }
                present.insert(id.to_string());
            } else if let Some(id) = name.strip_suffix(".cancel") {
                cancels.push(id.to_string());
            }
        }
        let vanished: Vec<String> = self
            .live
            .iter()
            // One let go without running (its `running` record failed) ran nothing to stop.
            .filter(|(id, l)| {
                !l.unrecorded
                    && !present.contains(*id)
                    && l.stop.as_ref().is_none_or(|s| s.reason != StopReason::NotStarted)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in vanished {
            // Claimed as a zombie by the heartbeat daemon, which stops it; any other way out of
            // `active/` while it runs (removed, moved to an end bucket by hand) leaves a process
            // that the coordinator may run again beside.
            if !spec_path(&self.home, SpecBucket::Zombie, &id).exists() {
                tracing::warn!(
                    "the record of running dispatch {id} was removed from worker-specs/active/; stopping it"
                );
                self.stop_unrecorded(&id);
            }
        }
        self.held_back.retain(|id| present.contains(id));
        self.slurm.retain(|id| present.contains(id));
        new_specs.sort();
        // The tasks with a live process here (only when something is to be started).
        let mut busy_tasks: std::collections::HashSet<String> = if new_specs.is_empty() {
            Default::default()
        } else {
            self.live.values().map(|l| l.task_id.clone()).collect()
        };
        let mut to_launch = Vec::new();
        for rec in dispatch_record::read_specs_logged(&self.store, new_specs) {
            if rec.is_slurm() {
                // cortex-slurm's: not launched here, not read again while its spec stays.
                self.slurm.insert(rec.dispatch_id.clone());
                continue;
            }
            match rec.state {
                DispatchState::Starting => {
                    if cancel_request_path(&self.home, &rec.dispatch_id).exists() {
                        self.end_unstarted(
                            &rec,
                            DispatchState::Cancelled(SignalledEnd {
                                ended_at: crate::base::clock::now(),
                                signal: None,
                                duration_s: Some(0.0),
                            }),
                        );
                    } else if busy_tasks.contains(&rec.task_id) {
                        // Another dispatch of this task still runs here (its record was removed
                        // and the coordinator went on, or an old spec was put back): never two.
                        if self.held_back.insert(rec.dispatch_id.clone()) {
                            tracing::warn!(
                                "not starting dispatch {} yet: another dispatch of task {} still has a live process",
                                rec.dispatch_id,
                                rec.task_id
                            );
                        }
                    } else {
                        busy_tasks.insert(rec.task_id.clone());
                        to_launch.push(rec);
                    }
                }
                DispatchState::Running { .. } => {
                    // Running but not ours: another worker wrote it, or the spec was restored.
                    tracing::warn!("dispatch {} is running but unknown to this worker; re-adopting", rec.dispatch_id);
                    self.reconcile_one(rec);
                }
                _ => {
                    if let Err(e) = self.move_final(&rec) {
                        tracing::error!("cannot move ended dispatch {}: {e}", rec.dispatch_id);
                    }
                }
            }
        }
        Ok((to_launch, cancels))
    }

    fn reconcile_one(&mut self, rec: DispatchRecord) {
        if let DispatchState::Running { started_at, pid, pgid, proc_start_ticks } = &rec.state {
            let id = rec.dispatch_id.clone();
            self.live.insert(id.clone(), Live::adopted(&rec, *started_at, *pid, *pgid, *proc_start_ticks));
            if self.executor.alive(*pid, *proc_start_ticks) {
                procs::notify_exit(*pid, self.waker.clone(), format!("exited {id}"));
            } else {
                self.finish(&id, Gone::Vanished);
            }
        }
    }

    fn plan(&self, rec: &DispatchRecord) -> LaunchPlan {
        let types = WorkerTypes::load(&self.store).ok();
        let wt = types.as_ref().and_then(|t| t.worker_types.get(&rec.worker_type));
        let dir = workdir(&self.home, &self.config.worker.workdir, wt, &rec.task_id);
        let id = &rec.dispatch_id;
        let env = crate::domain::task::processes::task_env(&self.home, rec);
        LaunchPlan {
            command: rec.command.clone(),
            workdir: dir,
            env,
            stdout: self.home.dispatch_stdout(id),
            stderr: self.home.dispatch_stderr(id),
            dispatch_id: id.clone(),
            exit_journal: exits::journal_path(&self.home),
            exit_lock: exits::lock_path(&self.home),
            runtime_dir: self.home.dispatch_runtime_dir(),
        }
    }

    /// Starts the shims of dispatches, each held before its command until its `running` record
    /// is written ([`Worker::write_step`]). A dispatch that cannot be started ends `failed`.
    fn spawn_all(&mut self, recs: Vec<DispatchRecord>) -> Vec<(DispatchRecord, executor::Launched)> {
        let mut started = Vec::new();
        for rec in recs {
            let plan = self.plan(&rec);
            match self.executor.launch(&plan) {
                Ok(l) => started.push((rec, l)),
                Err(e) => {
                    tracing::error!("cannot start dispatch {}: {e}", rec.dispatch_id);
                    self.end_unstarted(
                        &rec,
                        DispatchState::Failed {
                            ended_at: crate::base::clock::now(),
                            exit_code: None,
                            signal: None,
                            duration_s: Some(0.0),
                            error: format!("cannot start: {e}"),
                        },
                    );
                }
            }
        }
        started
    }

    /// Gives each started dispatch whose `running` record was written its go-ahead and watches
    /// it; one whose record failed is let go without running its command.
    fn let_run(
        &mut self,
        started: Vec<(DispatchRecord, executor::Launched)>,
        recorded: Vec<Result<DispatchRecord, dispatch_record::NotWritten>>,
    ) {
        for ((rec, mut launched), result) in started.into_iter().zip(recorded) {
            let id = rec.dispatch_id.clone();
            if let Err(e) = result {
                // Not recorded: the command must not run. Dropping the go pipe makes the shim exit.
                tracing::error!("cannot record dispatch {id} as running ({e}); not starting it");
                drop(launched.go.take());
                let now = Instant::now();
                let stop = Stop { reason: StopReason::NotStarted, kill_at: now, killed: false };
                self.by_pid.insert(launched.pid, id.clone());
                self.live.insert(id.clone(), Live::launched(&rec, &launched, now, None, Some(stop)));
                continue;
            }
            if let Err(e) = self.executor.release(&mut launched) {
                tracing::error!("{e}");
            }
            let now = Instant::now();
            let deadline = Some(now + Duration::from_secs_f64(rec.timeout_seconds.max(0.0)));
            self.by_pid.insert(launched.pid, id.clone());
            self.live.insert(id.clone(), Live::launched(&rec, &launched, now, deadline, None));
            tracing::debug!("started dispatch {id} (task {}) as PID {}", rec.task_id, launched.pid);
        }
    }

    fn begin_stop(&mut self, id: &str, reason: StopReason) {
        let grace = self.grace;
        let Some(l) = self.live.get_mut(id) else { return };
        if l.stop.is_some() {
            return;
        }
        tracing::info!("stopping dispatch {id} (PID group {}): {reason:?}", l.pgid);
        self.executor.signal(l.pgid, Signal::SIGTERM);
        l.stop = Some(Stop { reason, kill_at: Instant::now() + grace, killed: false });
    }

    fn run_timers(&mut self) {
        let now = Instant::now();
        for id in crate::daemons::daemon::due(&self.live, now, |l| l.deadline.filter(|_| l.stop.is_none())) {
            self.begin_stop(&id, StopReason::Timeout);
        }
        for l in self.live.values_mut() {
            if let Some(s) = &mut l.stop
                && !s.killed
                && now >= s.kill_at
            {
                self.executor.signal(l.pgid, Signal::SIGKILL);
                s.killed = true;
            }
        }
        let executor = &self.executor;
        self.stragglers.retain(|s| {
            if now >= s.kill_at {
                executor.signal(s.pgid, Signal::SIGKILL);
                false
            } else {
                true
            }
        });
    }

    /// The next time a timer needs the loop.
    pub fn next_deadline(&self) -> Option<Instant> {
        let live = self.live.values().filter_map(|l| match &l.stop {
            Some(s) if !s.killed => Some(s.kill_at),
            Some(_) => None,
            None => l.deadline,
        });
        let retry = (!self.unrecorded_ends.is_empty()).then(|| Instant::now() + Duration::from_secs(1));
        live.chain(self.stragglers.iter().map(|s| s.kill_at)).chain(retry).min()
    }

    /// Number of dispatches this worker runs.
    pub fn running(&self) -> usize {
        self.live.len()
    }

    /// Ends a dispatch whose leader is gone (see [`Worker::take_ends`]).
    fn finish(&mut self, id: &str, gone: Gone) {
        let ends = self.take_ends(vec![(id.to_string(), gone)]);
        self.write_step(ends, Vec::new());
    }

    /// The ends of dispatches whose leaders are gone, for [`Worker::write_step`]: final state from
    /// the stop reason, the shim's exit report or what was seen; tokens from the usage file;
    /// stray group members stopped.
    fn take_ends(&mut self, gone: Vec<(String, Gone)>) -> Vec<End> {
        if gone.is_empty() {
            return Vec::new();
        }
        // The shims appended their reports before they exited.
        self.exits.refresh();
        let mut ends = Vec::new();
        for (id, how) in gone {
            let Some(l) = self.live.remove(&id) else { continue };
            self.by_pid.remove(&l.pid);
            self.records.insert(id.clone(), l.record.clone());
            let report = self.exits.take(&id);
            let state = final_state(&l, how, report);
            let tokens = crate::domain::task::ops::read_usage_file(&self.home.usage_file(&id));
            tracing::debug!("dispatch {id} (task {}) ended {}", l.task_id, state.status().as_str());
            // Stray members of the group (daemonised grandchildren): TERM now, KILL after the grace.
            if procs::group_exists(l.pgid) {
                let kill_at = match &l.stop {
                    Some(s) => s.kill_at,
                    None => {
                        self.executor.signal(l.pgid, Signal::SIGTERM);
                        Instant::now() + self.grace
                    }
                };
                self.stragglers.push(Straggler { pgid: l.pgid, kill_at });
            }
            ends.push((id, state, tokens));
        }
        ends
    }
}

/// The worker daemon's loop (`cortex-worker`).
pub fn run_loop(ctx: &mut DaemonContext) -> Result<()> {
    procs::become_subreaper();
    ctx.watch(&[ctx.home.worker_specs(SpecBucket::Active)])?;
    let mut worker = Worker::new(ctx.store.clone(), ctx.config.clone(), LocalExecutor::new(), ctx.waker());
    worker.reconcile()?;
    let _ = ctx.store.emit(
        EventKind::WorkerReady,
        Severity::Info,
        format!("Worker ready ({} dispatch(es) re-adopted)", worker.running()),
        serde_json::json!({"adopted": worker.running(), "at": format_ts(crate::base::clock::now())}),
    );
    ctx.mark_ready()?;
    // Tasks keep running after a shutdown; the next worker re-adopts them.
    ctx.run_steps(|| {
        worker.step();
        worker.next_deadline()
    })
}
