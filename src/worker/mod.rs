//! The worker daemon: the only component that starts task processes. It watches
//! `worker-specs/active/`; for each `starting` spec it launches the command through the exec
//! shim (own process group, stdin /dev/null, stdout/stderr to
//! `agents/logs/workers/<dispatch_id>.out|.err`, `CORTEX_*` environment), records the spec
//! `running` (pid, pgid, process start ticks) and only then lets the command run. It learns of
//! exits from SIGCHLD (`waitpid(WNOHANG)`), stops dispatches on timeout or on a `.cancel` request
//! (TERM to the group, `[worker] grace_seconds`, then KILL, driven by loop deadlines), and ends
//! each dispatch by writing its final state and moving the spec to `completed/` or `failed/`.
//!
//! After a restart it re-adopts dispatches whose shim still runs (PID plus `/proc` start time),
//! reads the exit status that shims of dispatches that ended meanwhile left in the exit journal,
//! and marks the rest `lost`. A `starting` spec is launched again: its previous shim, if any, got
//! no go-ahead and ran nothing. So each dispatch's command runs at most once, and ends exactly
//! once.
//!
//! The worker owns every task process of its home, record or no record. A live dispatch whose
//! spec left `active/` other than as a zombie (removed or moved by hand), and at start-up any task process of the home that
//! no `running` spec accounts for (found in `/proc` by its environment, `task_procs`), is
//! stopped (TERM to the group, the grace, KILL) and ends `lost` with that reason, its spec
//! created anew in `failed/` when it is gone. A `starting` dispatch of a task that still has a
//! live process here waits until that process is gone: a task never runs twice at once, whatever
//! an operator removes or puts back.

pub mod executor;
pub mod exits;
pub mod procs;
pub mod shim;
pub mod task_procs;

use crate::clock::{format_ts, now_string, parse_ts};
use crate::config::Config;
use crate::daemon::{DaemonContext, Wake};
use crate::error::{Error, Result};
use crate::files::DISPATCH_SCHEMA;
use crate::home::{Home, SpecBucket};
use crate::store::atomic::Published;
use crate::store::events::{EventKind, Severity};
use crate::store::{LockName, Store};
use crate::task::dispatches::{self, cancel_request_path, spec_path};
use crate::task::model::{DispatchRecord, DispatchState};
use crate::task::worker_types::{WorkerTypes, workdir};
use executor::{Executor, LaunchPlan, LocalExecutor, Reaped};
use nix::sys::signal::Signal;
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
    fn adopted(rec: &DispatchRecord, started_at: &str, pid: i32, pgid: i32, start_ticks: u64) -> Live {
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
    fn orphan(home: &Home, p: &task_procs::TaskProcess) -> Live {
        let now = now_string();
        let record = DispatchRecord {
            dispatch_id: p.dispatch_id.clone(),
            task_id: if p.task_id.is_empty() { "unknown".into() } else { p.task_id.clone() },
            worker_type: "unknown".into(),
            state: DispatchState::Running {
                started_at: now.clone(),
                pid: p.pid,
                pgid: p.pgid,
                proc_start_ticks: p.start_ticks,
            },
            dispatched_at: now,
            attempt: p.attempt.unwrap_or(1).max(1),
            command: p.command.clone(),
            budget_reserved: 0,
            timeout_seconds: 0.0,
            stdout_path: home.dispatch_stdout(&p.dispatch_id).display().to_string(),
            stderr_path: home.dispatch_stderr(&p.dispatch_id).display().to_string(),
            heartbeat: None,
            tokens_used: None,
        };
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
}

/// An ended dispatch whose end is to be written: its final state and the tokens it reported.
type End = (String, DispatchState, Option<u64>);

/// A change to one dispatch's spec, applied under the `worker-specs` lock.
type SpecChange = Box<dyn FnOnce(&mut DispatchRecord) -> Result<()>>;

fn duration_since(started_at: &str) -> Duration {
    parse_ts(started_at).and_then(|t| (chrono::Utc::now() - t).to_std().ok()).unwrap_or(Duration::ZERO)
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
        }
    }

    /// Start-up: re-adopt running dispatches, finish those that ended while no worker ran, and
    /// finish moving specs that already carry a final state.
    pub fn reconcile(&mut self) -> Result<()> {
        self.exits.refresh();
        for rec in dispatches::list_bucket(&self.store, SpecBucket::Active)? {
            let id = rec.dispatch_id.clone();
            match &rec.state {
                DispatchState::Starting => {}
                DispatchState::Running { started_at, pid, pgid, proc_start_ticks } => {
                    let elapsed = duration_since(started_at);
                    let live = Live::adopted(&rec, started_at, *pid, *pgid, *proc_start_ticks);
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
        let mut found = task_procs::find(&self.home);
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
                task_procs::describe(&p)
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
                if !self.live.contains_key(id) && !self.unrecorded_ends.contains_key(id) && !ending.contains(id) {
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
        new_specs.sort();
        // The tasks with a live process here (only when something is to be started).
        let mut busy_tasks: std::collections::HashSet<String> = if new_specs.is_empty() {
            Default::default()
        } else {
            self.live.values().map(|l| l.task_id.clone()).collect()
        };
        let mut to_launch = Vec::new();
        for path in new_specs {
            let rec = match dispatches::read_spec(&self.store, &path) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!("skipping unreadable spec {}: {e}", path.display());
                    continue;
                }
            };
            match rec.state {
                DispatchState::Starting => {
                    if cancel_request_path(&self.home, &rec.dispatch_id).exists() {
                        self.end_unstarted(
                            &rec,
                            DispatchState::Cancelled { ended_at: now_string(), signal: None, duration_s: Some(0.0) },
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
            self.live.insert(id.clone(), Live::adopted(&rec, started_at, *pid, *pgid, *proc_start_ticks));
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
        let env = vec![
            ("CORTEX_HOME".to_string(), self.home.root().display().to_string()),
            ("CORTEX_TASK_ID".to_string(), rec.task_id.clone()),
            ("CORTEX_DISPATCH_ID".to_string(), id.clone()),
            ("CORTEX_ATTEMPT".to_string(), rec.attempt.to_string()),
            ("CORTEX_HEARTBEAT_FILE".to_string(), self.home.heartbeat_file(id).display().to_string()),
            ("CORTEX_USAGE_FILE".to_string(), self.home.usage_file(id).display().to_string()),
        ];
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
                            ended_at: now_string(),
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

    /// One group commit of a step's spec changes, under one hold of the `worker-specs` lock:
    /// the final states (and reported tokens) of ended dispatches and the `running` records of
    /// started ones are fsynced together and renamed into place; each started dispatch then gets
    /// its go-ahead (a dispatch whose record failed never runs its command), and the ended
    /// specs move to their buckets. The directories are fsynced last, in parallel, after the
    /// lock is released: a crash of the machine before that can only bring a dispatch back as
    /// `starting` (its command died with the machine, and the next worker launches it) or an
    /// end back as `running` (read again as `lost`).
    ///
    /// An end that cannot be written (a full disk) is kept and written again on later steps:
    /// the worker alone knows how the process ended (its exit, the signal it reaped), which
    /// re-reading the spec once space is back would turn into `lost`.
    fn write_step(&mut self, ends: Vec<End>, started: Vec<(DispatchRecord, executor::Launched)>) {
        if ends.is_empty() && started.is_empty() {
            return;
        }
        let started_at = now_string();
        let mut changes: Vec<(String, SpecChange)> = ends.iter().map(end_change).collect();
        changes.extend(started.iter().map(|(rec, l)| running_change(rec, l, &started_at)));
        let mut dirs = Vec::new();
        let mut results = match self.store.lock_named(LockName::WorkerSpecs) {
            Ok(guard) => {
                let (mut results, published, created) = self.update_specs_locked(changes);
                let start_results = results.split_off(ends.len());
                self.let_run(started, start_results);
                let (anew, recorded): (Vec<&DispatchRecord>, Vec<&DispatchRecord>) =
                    results.iter().filter_map(|r| r.as_ref().ok()).partition(|r| created.contains(&r.dispatch_id));
                for rec in anew {
                    tracing::warn!(
                        "dispatch {} ended with its spec gone from worker-specs/; its end is recorded anew in {}/",
                        rec.dispatch_id,
                        final_bucket(rec).dir_name()
                    );
                }
                if let Some(p) = published {
                    dirs.extend(p.into_dirs());
                }
                let moved = self.move_final_locked(&recorded, &mut dirs);
                drop(guard);
                // A spec that did not move keeps its final state in `active/`; the next scan
                // moves it.
                if let Err(e) = moved {
                    tracing::error!("cannot move ended dispatches: {e}");
                }
                results
            }
            Err(e) => {
                let msg = e.to_string();
                self.let_run(
                    started,
                    changes.iter().skip(ends.len()).map(|_| Err(Error::other(msg.clone()))).collect(),
                );
                ends.iter().map(|_| Err(Error::other(msg.clone()))).collect()
            }
        };
        if let Err(e) = crate::store::atomic::fsync_dirs(&dirs) {
            tracing::error!("cannot make the dispatch records durable: {e}");
        }
        for ((id, state, tokens), result) in ends.into_iter().zip(results.drain(..)) {
            match result {
                Ok(_) => {}
                // The heartbeat daemon claimed it as a zombie (moved it out of active/): its record stands.
                Err(Error::Refused(e)) => tracing::info!("not recording the end of dispatch {id}: {e}"),
                Err(e) => {
                    if !self.unrecorded_ends.contains_key(&id) {
                        tracing::error!("cannot record the end of dispatch {id} (will retry): {e}");
                    }
                    self.unrecorded_ends.insert(id, (state, tokens));
                    continue;
                }
            }
            self.unrecorded_ends.remove(&id);
            self.records.remove(&id);
            // The heartbeat and usage files were read; they are done with.
            for file in [self.home.heartbeat_file(&id), self.home.usage_file(&id)] {
                if file.exists() {
                    let _ = std::fs::remove_file(file);
                }
            }
        }
    }

    /// Empties the exit journal once every report in it is consumed and every end is written
    /// (at the end of a step or of the start-up reconciliation: within a step, ends taken from
    /// the journal may not be written yet, and only the journal holds their exit status).
    fn compact_exits(&mut self) {
        self.exits.compact(!self.unrecorded_ends.is_empty());
    }

    /// Gives each started dispatch whose `running` record was written its go-ahead and watches
    /// it; one whose record failed is let go without running its command.
    fn let_run(&mut self, started: Vec<(DispatchRecord, executor::Launched)>, recorded: Vec<Result<DispatchRecord>>) {
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

    /// Read-modify-writes of several active specs, for a caller holding the `worker-specs` lock,
    /// staged and published in one group commit. One result per change, in order; the records
    /// are visible when this returns, their directory's fsync left to the caller (None when
    /// nothing was written).
    ///
    /// A change of a dispatch whose spec is in no bucket (removed by hand) is applied to the
    /// record known here ([`Worker::records`]) and creates the spec in its final bucket; the
    /// ids of those are returned (they have nothing to move).
    fn update_specs_locked(
        &self,
        changes: Vec<(String, SpecChange)>,
    ) -> (Vec<Result<DispatchRecord>>, Option<Published>, std::collections::HashSet<String>) {
        let mut batch = crate::store::atomic::ReplaceBatch::new();
        let mut out: Vec<Result<DispatchRecord>> = Vec::with_capacity(changes.len());
        let mut created = std::collections::HashSet::new();
        for (id, change) in changes {
            let mut path = spec_path(&self.home, SpecBucket::Active, &id);
            let staged = dispatches::read_spec(&self.store, &path)
                .and_then(|r| match (r, self.records.get(&id)) {
                    (Some(rec), _) => Ok(rec),
                    (None, Some(known)) if !spec_anywhere(&self.home, &id) => {
                        created.insert(id.clone());
                        Ok(known.clone())
                    }
                    _ => Err(Error::refused(format!("dispatch {id} has no active spec"))),
                })
                .and_then(|mut rec| {
                    change(&mut rec)?;
                    if created.contains(&id) {
                        let bucket = final_bucket(&rec);
                        crate::store::atomic::create_dir_all(&self.home.worker_specs(bucket))?;
                        path = spec_path(&self.home, bucket, &id);
                    }
                    let v = serde_json::to_value(&rec)
                        .map_err(|e| Error::other(format!("cannot encode dispatch {id}: {e}")))?;
                    let bytes = crate::store::encode_checked(&path, &v, Some(DISPATCH_SCHEMA))?;
                    batch.stage(&path, &bytes)?;
                    Ok(rec)
                });
            out.push(staged);
        }
        if batch.is_empty() {
            return (out, None, created);
        }
        let published = batch.publish();
        if let Some(e) = published.error() {
            let msg = e.to_string();
            for r in out.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(Error::other(msg.clone()));
            }
        }
        (out, Some(published), created)
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
        let timed_out: Vec<String> = self
            .live
            .iter()
            .filter(|(_, l)| l.stop.is_none() && l.deadline.is_some_and(|d| now >= d))
            .map(|(id, _)| id.clone())
            .collect();
        for id in timed_out {
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
            let tokens = crate::task::ops::read_usage_file(&self.home.usage_file(&id));
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

/// The change that writes an ended dispatch's final state (and the tokens it reported).
fn end_change((id, state, tokens): &End) -> (String, SpecChange) {
    let (state, tokens) = (state.clone(), *tokens);
    let change: SpecChange = Box::new(move |r: &mut DispatchRecord| {
        r.state = state;
        if tokens.is_some() {
            r.tokens_used = tokens;
        }
        Ok(())
    });
    (id.clone(), change)
}

/// The change that records a started dispatch `running` (refused unless it is `starting`).
fn running_change(rec: &DispatchRecord, l: &executor::Launched, started_at: &str) -> (String, SpecChange) {
    let state = DispatchState::Running {
        started_at: started_at.to_string(),
        pid: l.pid,
        pgid: l.pgid,
        proc_start_ticks: l.start_ticks,
    };
    let change: SpecChange = Box::new(move |r: &mut DispatchRecord| {
        if r.status() != crate::task::model::DispatchStatus::Starting {
            return Err(Error::refused(format!("dispatch {} is {}, not starting", r.dispatch_id, r.status().as_str())));
        }
        r.state = state;
        Ok(())
    });
    (rec.dispatch_id.clone(), change)
}

/// Why a dispatch whose process ran without a record ended `lost`.
pub const UNRECORDED_REASON: &str = "its process ran without a record in worker-specs/active/ (the spec was removed or \
replaced while it ran); the worker stopped its process group (TERM, grace, KILL) so that its task cannot run twice";

/// Whether a spec of the dispatch is in some bucket (`active/`, an end bucket, `zombie/`,
/// quarantine).
fn spec_anywhere(home: &Home, id: &str) -> bool {
    SpecBucket::ALL.iter().any(|&b| spec_path(home, b, id).exists())
}

/// The bucket a spec with this final state moves to.
fn final_bucket(rec: &DispatchRecord) -> SpecBucket {
    match rec.status() {
        crate::task::model::DispatchStatus::Completed => SpecBucket::Completed,
        crate::task::model::DispatchStatus::Zombie => SpecBucket::Zombie,
        _ => SpecBucket::Failed,
    }
}

/// How a dispatch ended: from the stop reason, the shim's exit report or what was seen.
fn final_state(l: &Live, gone: Gone, report: Option<exits::ExitReport>) -> DispatchState {
    let ended_at = now_string();
    let duration = Some(l.started.elapsed().as_secs_f64());
    let seen_signal = match gone {
        Gone::Reaped(Reaped::Signaled(s)) => Some(s),
        _ => None,
    };
    let signal = report.as_ref().and_then(|r| r.signal).or(seen_signal);
    match (l.stop.as_ref().map(|s| s.reason), &report, gone) {
        (Some(StopReason::Cancel), _, _) => DispatchState::Cancelled { ended_at, signal, duration_s: duration },
        (Some(StopReason::Timeout), _, _) => DispatchState::Timeout { ended_at, signal, duration_s: duration },
        (Some(StopReason::Unrecorded), _, _) => DispatchState::Lost { ended_at, reason: UNRECORDED_REASON.into() },
        // A failed attempt (retried by policy), not a cancel: nobody asked for it to stop.
        (Some(StopReason::NotStarted), _, _) => DispatchState::Failed {
            ended_at,
            exit_code: None,
            signal,
            duration_s: Some(0.0),
            error: "the worker could not record the dispatch as running (see its log); the command was not started"
                .into(),
        },
        (None, Some(r), _) => match (r.exit_code, r.signal, &r.error) {
            (Some(0), _, None) => {
                DispatchState::Completed { ended_at, exit_code: 0, duration_s: l.started.elapsed().as_secs_f64() }
            }
            (code, sig, err) => DispatchState::Failed {
                ended_at,
                exit_code: code,
                signal: sig,
                duration_s: duration,
                error: err.clone().unwrap_or_else(|| match (code, sig) {
                    (Some(c), _) => format!("exited with code {c}"),
                    (None, Some(s)) => format!("killed by signal {s}{}", signal_label(s)),
                    _ => "ended without an exit status".into(),
                }),
            },
        },
        (None, None, Gone::Reaped(how)) => DispatchState::Failed {
            ended_at,
            exit_code: match how {
                Reaped::Exited(c) => Some(c),
                Reaped::Signaled(_) => None,
            },
            signal: seen_signal,
            duration_s: duration,
            error: format!(
                "the task's exec shim (PID {}) ended ({}) without recording the command's exit; \
                     its process group was stopped",
                l.pid,
                match how {
                    Reaped::Exited(c) => format!("exit {c}"),
                    Reaped::Signaled(s) => format!("signal {s}{}", signal_label(s)),
                }
            ),
        },
        (None, None, Gone::Vanished) => DispatchState::Lost {
            ended_at,
            reason: format!("process {} ended while no worker watched it and left no exit status", l.pid),
        },
    }
}

impl<E: Executor> Worker<E> {
    /// Ends a dispatch that never ran its command.
    fn end_unstarted(&mut self, rec: &DispatchRecord, state: DispatchState) {
        // Written like any end (kept and retried if it cannot be written; meanwhile the scan
        // does not launch it).
        self.records.insert(rec.dispatch_id.clone(), rec.clone());
        self.write_step(vec![(rec.dispatch_id.clone(), state, None)], Vec::new());
    }

    /// Moves a spec with a final state from `active/` to `completed/` or `failed/` and removes
    /// its cancel request.
    fn move_final(&self, rec: &DispatchRecord) -> Result<()> {
        let guard = self.store.lock_named(LockName::WorkerSpecs)?;
        let mut dirs = Vec::new();
        let moved = self.move_final_locked(&[rec], &mut dirs);
        drop(guard);
        moved.and(crate::store::atomic::fsync_dirs(&dirs))
    }

    /// [`Worker::move_final`] of several specs, for a caller holding the `worker-specs` lock.
    /// Adds the directories of the moves made to `dirs`, which the caller fsyncs (once for the
    /// whole step, after releasing the lock).
    fn move_final_locked(&self, recs: &[&DispatchRecord], dirs: &mut Vec<std::path::PathBuf>) -> Result<()> {
        let mut moves = Vec::with_capacity(recs.len());
        for rec in recs {
            let bucket = final_bucket(rec);
            crate::store::atomic::create_dir_all(&self.home.worker_specs(bucket))?;
            let id = &rec.dispatch_id;
            moves.push((spec_path(&self.home, SpecBucket::Active, id), spec_path(&self.home, bucket, id)));
        }
        let mut first_error = None;
        let (results, moved) = crate::store::atomic::rename_many(&moves);
        dirs.extend(moved);
        for (rec, result) in recs.iter().zip(results) {
            match result {
                Ok(()) => {
                    let cancel = cancel_request_path(&self.home, &rec.dispatch_id);
                    if cancel.exists() {
                        let _ = std::fs::remove_file(cancel);
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn signal_label(sig: i32) -> String {
    Signal::try_from(sig).map(|s| format!(" ({})", s.as_str())).unwrap_or_default()
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
        serde_json::json!({"adopted": worker.running(), "at": format_ts(chrono::Utc::now())}),
    );
    ctx.mark_ready()?;
    loop {
        worker.step();
        if let Wake::Shutdown(_) = ctx.wait(worker.next_deadline()) {
            // Tasks keep running; the next worker re-adopts them.
            return Ok(());
        }
        if ctx.drain_pending().iter().any(|w| matches!(w, Wake::Shutdown(_))) {
            return Ok(());
        }
    }
}
