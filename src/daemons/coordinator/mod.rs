//! The coordinator daemon: the queue's main writer. Each cycle, under the locks in the protocol
//! order ([`crate::store::LockName`]: `scheduler` → `task-queue` → `token-budget` → `worker-specs`), it folds the intake into
//! the queue, folds ended dispatches (completed/failed/zombie specs) into their tasks (budget
//! settlement, retry policy), dispatches the eligible tasks (priority, then age; `--after`,
//! `--delay`, `next_retry_at`, budget, `[scheduler] max_concurrent_dispatches`) and archives
//! finished ones — with one queue write and one budget write per cycle however many tasks moved.
//! A dispatch is only recorded while the scheduler state read under the `scheduler` lock says
//! running, and the lock is held until the specs are written, so a pause that returned is never
//! followed by a dispatch.
//!
//! A cycle runs in phases: collect (locks, reads, the intake and ended dispatches folded in) →
//! plan ([`plan`]: pure, the dispatch decisions from what was collected and the time) → apply
//! (the plan's dispatches, failures and waiting reasons on the queue and budget) → archive (the
//! finished tasks appended) → commit (one parallel flush, then the renames in their order).
//!
//! It is event-driven: a file watch ([`crate::base::watch`], changes only) on the intake, the
//! queue, the budget, the scheduler state and the `completed/`/`failed/` spec buckets wakes it;
//! the next due time (delay, retry) is its deadline; `[scheduler] tick_interval_seconds` is only
//! a slow safety re-scan.

use crate::base::clock::{Clock, SystemClock, Timestamp};
use crate::base::error::{Error, Result};
use crate::domain::scheduler_state::SchedulerState;
use crate::domain::task::dispatches::{self, spec_path};
use crate::domain::task::journal::{self, JournalPos};
use crate::domain::task::model::{
    DispatchRecord, DispatchState, QueueCounts, Task, TaskQueue, TaskResult, TaskState, TaskStatus, TokenBudget, new_id,
};
use crate::domain::task::queue::{self, Ended, Outcome};
use crate::domain::task::retry::FailureStreaks;
use crate::domain::task::worker_types::{ExecutorKind, TemplateVars, WorkerTypes, expand};
use crate::domain::task::{archive, budget, intake, ops};
use crate::store::Store;
use crate::store::config::Config;
use crate::store::events::{EventKind, Severity};
use crate::store::files::{SCHEDULER_STATE, TASK_QUEUE, TASK_QUEUE_JOURNAL, TOKEN_BUDGET};
use crate::store::home::SpecBucket;
use crate::store::identity::FileIdentity;
use crate::store::lock::LockGuard;
use crate::{base::wake::Wake, daemons::daemon::DaemonContext};
use plan::{BreakerSnapshot, CycleInput, DispatchPlan, GuardedType};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

mod parked;
pub(crate) mod plan;

/// The identity of a file the coordinator reads (see [`FileIdentity`]); None when it cannot be
/// stat'ed. The queue and budget identities are taken under their file's lock right after this
/// coordinator's own atomic replace, to skip parsing its own write again: every other writer
/// replaces those files by rename under the same lock, which always gives a new inode, so they
/// need no racily-clean guard (one would re-parse every write: its stat follows it within
/// microseconds). The schedule gate reads files others write, and applies the guard.
fn file_id(path: &std::path::Path) -> Option<FileIdentity> {
    FileIdentity::stat(path).ok().flatten()
}

/// What one cycle did (for tests and logs).
#[derive(Debug, Default)]
pub struct CycleReport {
    pub folded: usize,
    pub ended: Vec<Ended>,
    pub dispatched: Vec<DispatchRecord>,
    pub archived: usize,
    /// The earliest time a waiting task becomes due.
    pub next_due: Option<Timestamp>,
    pub paused: bool,
}

/// The coordinator's state between cycles.
pub struct Coordinator {
    store: Store,
    config: Config,
    clock: Box<dyn Clock>,
    /// The queue as this coordinator last wrote it (or read it), at `journal`, without the
    /// parked tasks.
    cache: Option<TaskQueue>,
    /// The queue's tasks held apart from `cache` (see [`parked`]): those not due before a known
    /// time, and those that can run now beyond what the plan takes (lent to each cycle's plan
    /// first in dispatch order). Part of the queue, not of a cycle's work.
    parked: parked::Parked,
    /// Where the snapshot and journal were when `cache` was current (`task::journal`).
    journal: JournalPos,
    /// Final statuses of archived tasks that queued tasks wait for (`--after`).
    after_cache: HashMap<String, TaskStatus>,
    /// Dispatches recorded in the queue whose spec is known to be missing (written by no one):
    /// folded as `lost`.
    unrecorded: HashSet<String>,
    /// Set by a cycle that found a dispatch without a spec whose process still runs (not folded
    /// until it is gone): the next cycle comes within [`UNRECORDED_RECHECK`].
    unrecorded_running: bool,
    /// Set for the first cycle: settle budget reservations no running dispatch holds.
    reconcile_budget: bool,
    /// The budget file as we last wrote it.
    budget_id: Option<FileIdentity>,
    /// Tasks as last written and validated (the queue write checks only changed ones).
    validated: crate::domain::task::queue_file::ValidatedTasks,
    /// Finished tasks (id, status, dispatch count) appended to the archive by a cycle whose queue
    /// write then failed (a full disk): the next cycle does not append them again.
    archived_unwritten: HashSet<(String, TaskStatus, usize)>,
    /// Set until a cycle succeeds after start-up: finished tasks still in the queue are looked up
    /// in the archive first (a coordinator killed between its archive append and the queue write
    /// that drops them left them in both; they are not appended again).
    archive_unchecked: bool,
    /// The archive holds lines appended since the last successful flush (a cycle failed after
    /// its append): the next cycle flushes the archive with its queue even when it appends
    /// nothing itself.
    archive_unflushed: bool,
    /// After a failed seal: not before this instant again.
    seal_retry_at: Option<std::time::Instant>,
}

impl Coordinator {
    pub fn new(store: Store, config: Config, clock: Box<dyn Clock>) -> Coordinator {
        Coordinator {
            store,
            config,
            clock,
            cache: None,
            parked: parked::Parked::default(),
            journal: JournalPos::default(),
            after_cache: HashMap::new(),
            unrecorded: HashSet::new(),
            unrecorded_running: false,
            reconcile_budget: true,
            budget_id: None,
            validated: Default::default(),
            archived_unwritten: HashSet::new(),
            // A predecessor killed before its flush may have left archive lines unsynced
            // (their tasks already dropped by its journal commit): the first commit flushes them.
            archive_unflushed: true,
            seal_retry_at: None,
            archive_unchecked: true,
        }
    }

    /// True when every wake-up is a change of the queue or budget file that this coordinator
    /// made itself (its own writes echo back through the watcher): no cycle is needed.
    pub fn only_own_writes(&self, wakes: &[Wake]) -> bool {
        let queue = self.store.path(TASK_QUEUE);
        let journal = self.store.path(TASK_QUEUE_JOURNAL);
        let budget = self.store.path(TOKEN_BUDGET);
        !wakes.is_empty()
            && wakes.iter().all(|w| match w {
                Wake::Changed(p) if *p == queue => self.cache.is_some() && self.journal.snapshot == file_id(&queue),
                // Also after a failed cycle (no cache): its own append cut short and taken back
                // leaves the journal at the length it recorded, and must not wake it again at once
                // (a full disk would make it spin); the failed cycle's backoff deadline retries.
                Wake::Changed(p) if *p == journal => {
                    self.journal.journal.is_some() && self.journal.journal == file_id(&journal)
                }
                Wake::Changed(p) if *p == budget => self.budget_id.is_some() && self.budget_id == file_id(&budget),
                _ => false,
            })
    }

    /// How many tasks the coordinator holds decoded in its working queue (the tasks its cycles
    /// pass over), the tasks held apart (parked, ready) not counted: for tests of what a cycle
    /// costs.
    #[doc(hidden)]
    pub fn working_len(&self) -> usize {
        self.cache.as_ref().map_or(0, |q| q.tasks.len())
    }

    /// Start-up reconciliation: an in-progress task whose dispatch has no spec in any bucket was
    /// recorded by a coordinator that died before writing the spec, or its spec was removed by
    /// hand; it is folded as `lost` (a failed attempt for the retry policy) once no process of it
    /// runs (`domain::task::processes`; the worker stops such a process and records its end). Budget reservations nobody holds are settled in the
    /// first cycle.
    pub fn reconcile_at_start(&mut self) -> Result<()> {
        // Loaded as the cycles hold it (the backlog parked, never decoded whole): the first
        // cycle uses it.
        let q = self.load_queue(self.clock.now())?;
        for t in &q.tasks {
            if let Some(d) = t.current_dispatch()
                && dispatches::find(&self.store, d)?.is_none()
            {
                tracing::warn!("task {}: dispatch {d} has no spec; marking it lost", t.task_id);
                self.unrecorded.insert(d.to_string());
            }
        }
        self.cache = Some(q);
        self.reconcile_budget = true;
        Ok(())
    }

    /// The queue: the one in memory when the snapshot is the one it was read or written with,
    /// brought up to date with the journal lines others appended since (a cancel, a retry); else
    /// loaded again (a compaction by another writer, a snapshot replaced by hand).
    ///
    /// The tasks not due at `now` are parked and the ones ready held (apart), and the parked
    /// ones due by `now` come back: the queue returned holds only what this cycle may move.
    fn load_queue(&mut self, now: Timestamp) -> Result<TaskQueue> {
        let mut q = self.load_whole_or_cached()?;
        self.parked.unpark_due(&mut q.tasks, now)?;
        Ok(q)
    }

    /// True when the snapshot is the one `self.journal` belongs to: the same identity (device,
    /// inode, size, times) and, while that identity is within its timestamp tick (a change in
    /// the same tick could keep it), the same generation in its header.
    fn snapshot_is_current(&self) -> bool {
        journal::snapshot_is_current(&self.store, &self.journal)
    }

    fn load_whole_or_cached(&mut self) -> Result<TaskQueue> {
        if let Some(mut q) = self.cache.take()
            && self.snapshot_is_current()
        {
            if journal::unchanged(&self.store, &self.journal) {
                return Ok(q);
            }
            let parked = &mut self.parked;
            // A line for a parked task (a cancel, a retry) applies to it in the queue.
            let mut failed = None;
            let mut unpark = |q: &mut TaskQueue, id: &str| match parked.take(id) {
                Ok(t) => q.tasks.extend(t),
                Err(e) => failed = Some(e),
            };
            let caught_up = journal::catch_up_touching(&self.store, &mut q, &mut self.journal, &mut unpark)?;
            if let Some(e) = failed {
                return Err(e);
            }
            if caught_up {
                return Ok(q);
            }
        }
        // Loaded one task at a time, the tasks not yet due parked as they are read: the
        // backlog is never held decoded, and the first cycle is not a pass over it.
        let mut loading = parked::Loading::new(self.clock.now(), &mut self.parked);
        let loaded = journal::load_into(&self.store, &mut loading)?;
        let mut q = loaded.queue;
        q.tasks = loading.into_working()?;
        self.journal = loaded.pos;
        crate::base::heap::give_back_freed_memory();
        Ok(q)
    }

    /// The ended records of running dispatches (specs that left `active/`), plus synthesized
    /// `lost` records for dispatches whose spec was never written.
    fn collect_ended(&mut self, q: &TaskQueue) -> Result<Vec<DispatchRecord>> {
        let mut out = Vec::new();
        // Dispatch ids with a live process, looked up once per cycle when needed.
        let mut running: Option<HashSet<String>> = None;
        self.unrecorded_running = false;
        let now = self.clock.now();
        // A zombie's restart is auto-fix's decision (breaker, rate limits, restart backoff); the
        // coordinator folds zombies itself only when auto-fix is disabled.
        let ended_buckets: &[SpecBucket] = if self.config.daemon_enabled(crate::base::daemon_name::Daemon::AutoFix) {
            &[SpecBucket::Completed, SpecBucket::Failed]
        } else {
            &[SpecBucket::Completed, SpecBucket::Failed, SpecBucket::Zombie]
        };
        for t in &q.tasks {
            let Some(d) = t.current_dispatch() else { continue };
            if ended_buckets.len() == 2 && spec_path(self.store.home(), SpecBucket::Zombie, d).exists() {
                continue;
            }
            let mut found = None;
            for &bucket in ended_buckets {
                match dispatches::read_spec(&self.store, &spec_path(self.store.home(), bucket, d)) {
                    Ok(Some(rec)) => {
                        found = Some(rec);
                        break;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        // Quarantined and reported by the read; the dispatch's end is unknown.
                        tracing::error!("dispatch {d}: unreadable spec: {e}");
                        found = Some(lost_record(t, d, now, &format!("its spec was unreadable: {e}")));
                        break;
                    }
                }
            }
            // A spec in no bucket at all (removed by hand before or while it ran): `active/` is
            // looked at first and then every bucket again, so a spec moving on meanwhile
            // (active → an end bucket or `zombie/`) is found.
            if found.is_none()
                && !self.unrecorded.contains(d)
                && !spec_path(self.store.home(), SpecBucket::Active, d).exists()
                && matches!(dispatches::find(&self.store, d), Ok(None))
            {
                tracing::warn!("task {}: dispatch {d} has no spec in any bucket", t.task_id);
                self.unrecorded.insert(d.to_string());
            }
            // A spec whose write reported an error may have been renamed into place all the same
            // (a failed directory fsync, one failed file of a group commit): while it is in
            // `active/` the worker runs it, and it is not lost.
            if found.is_none()
                && self.unrecorded.contains(d)
                && !spec_path(self.store.home(), SpecBucket::Active, d).exists()
            {
                // Nor while a process of it runs (its spec was removed by hand): the worker stops
                // it and records its end; folding it now would let a retry start beside it.
                let running = running.get_or_insert_with(|| {
                    crate::domain::task::processes::find(self.store.home()).into_iter().map(|p| p.dispatch_id).collect()
                });
                if running.contains(d) {
                    tracing::warn!("dispatch {d} has no spec but its process still runs; waiting for it to end");
                    self.unrecorded_running = true;
                    continue;
                }
                found = Some(lost_record(t, d, now, UNRECORDED_LOST_REASON));
            }
            out.extend(found);
        }
        Ok(out)
    }

    /// Final statuses of the `--after` prerequisites of waiting tasks that are not in the queue.
    fn archived_prerequisites(&mut self, q: &TaskQueue) -> Result<()> {
        if !q.tasks.iter().any(|t| t.after.is_some()) {
            return Ok(());
        }
        let in_queue: HashSet<&str> = q.tasks.iter().map(|t| t.task_id.as_str()).collect();
        let wanted: HashSet<String> = q
            .tasks
            .iter()
            .filter(|t| matches!(t.status(), TaskStatus::Queued | TaskStatus::PendingRetry))
            .filter_map(|t| t.after.as_deref())
            .filter(|a| !in_queue.contains(a) && !self.parked.contains(a) && !self.after_cache.contains_key(*a))
            .map(str::to_string)
            .collect();
        if !wanted.is_empty() {
            self.after_cache.extend(archive::statuses(&self.store, &wanted)?);
        }
        Ok(())
    }

    /// Releases the tasks blocked on a prerequisite that has finished in `q` (its end folded, a
    /// cancel caught up), before the breakers are asked and the plan is made, so they are planned
    /// in this cycle as the plan of the whole queue would: held ready when it completed (lent as
    /// slots are free; none decoded at once), else into the working queue (the plan fails them).
    fn release_dependents(&mut self, q: &mut TaskQueue) -> Result<()> {
        let finished: Vec<(String, TaskStatus)> = q
            .tasks
            .iter()
            .filter(|t| t.status().is_terminal() && self.parked.has_dependents(&t.task_id))
            .map(|t| (t.task_id.clone(), t.status()))
            .collect();
        for (id, status) in finished {
            if status == TaskStatus::Completed {
                self.parked.release_ready(&id)?;
            } else {
                self.parked.release(&id, &mut q.tasks)?;
            }
            self.after_cache.insert(id, status);
        }
        Ok(())
    }

    /// One pass: collect (under the locks, in their order) → plan ([`plan::plan`], pure) →
    /// apply the plan to the queue and budget → archive → commit (one flush, then the renames in
    /// their order). Returns what it did.
    pub fn cycle(&mut self) -> Result<CycleReport> {
        let mut c = self.collect()?;
        // Prerequisites that are held apart are in the queue, waiting: the plan sees their status
        // beside the archived ones'.
        let parked_prerequisites: Vec<(String, TaskStatus)> =
            c.q.tasks
                .iter()
                .filter_map(|t| t.after.as_deref())
                .filter_map(|a| Some((a.to_string(), self.parked.status(a)?)))
                .collect();
        let with_parked;
        let prerequisites = if parked_prerequisites.is_empty() {
            &self.after_cache
        } else {
            with_parked = self.after_cache.clone().into_iter().chain(parked_prerequisites).collect();
            &with_parked
        };
        // The ready tasks held apart are lent to the plan first in dispatch order: as many as
        // there are free slots, then twice as many each time the plan says it reached the rest
        // with a slot still free (a task it skipped: budget, breaker, an unknown type). The plan
        // made once they are not reached, or all lent, is the plan of the whole queue.
        let slots = self.config.scheduler.max_concurrent_dispatches as usize;
        let (free, free_slurm) = plan::free_slots(&c.q.tasks, c.types.as_ref(), slots, self.slurm_slots());
        let mut lend = free + free_slurm;
        self.parked.start_lending();
        let mut decided = loop {
            if lend > 0 {
                let skip =
                    parked::Skip { available: c.budget.available, types: c.types.as_ref(), breakers: &c.breakers };
                self.parked.lend_ready(lend, &mut c.q.tasks, &skip)?;
            }
            let decided = plan::plan(&CycleInput {
                tasks: &c.q.tasks,
                budget: &c.budget,
                types: c.types.as_ref(),
                breakers: &c.breakers,
                paused: c.report.paused,
                archived: prerequisites,
                now: c.now,
                slots,
                slurm_slots: self.slurm_slots(),
                held: self.parked.ready_head(c.types.as_ref()),
            });
            if !decided.needs_held {
                break decided;
            }
            lend = lend.max(1) * 2;
        };
        if let Some(due) = self.parked.next_due() {
            decided.next_due = Some(decided.next_due.map_or(due, |d| d.min(due)));
        }
        self.apply(&mut c, decided);
        let archive_file = self.archive(&mut c)?;
        self.commit(c, archive_file)
    }

    /// Collect: takes `scheduler` → `task-queue` → `token-budget`, reads the scheduler state, the
    /// breakers and then the time, the queue with the intake folded in, the ended dispatches and
    /// the budget; folds the ends into their tasks (settlement, retry policy); reads the worker
    /// types and asks the breakers of the guarded types for this cycle's answer.
    fn collect(&mut self) -> Result<Collected> {
        let store = self.store.clone();
        let mut report = CycleReport::default();

        let scheduler_guard = store.lock(SCHEDULER_STATE)?;
        // The breakers before the time: a dispatch that a breaker closed by then lets through is
        // stamped after the breaker's `since`.
        let breaker_gate = BreakerGate::load(&self.store);
        // Read the time under the lock: every dispatch of this cycle is stamped before any pause
        // that waits for the lock.
        let now = self.clock.now();
        report.paused = match store.load::<SchedulerState>() {
            Ok(s) => s.is_paused(),
            Err(e) => {
                tracing::error!("scheduler state unreadable, not dispatching: {e}");
                true
            }
        };
        let queue_guard = store.lock(TASK_QUEUE)?;
        let mut q = self.load_queue(now)?;
        // A queue from before the journal (generation 0: an old home's, one reset or generated
        // by hand) is compacted by its first writer. The first cycle writes it, at start-up, so
        // that whole-queue write, and every follower's reload of it, is not left to the first
        // change an operator makes (a `cortex task add` behind 100,000 tasks waited for it).
        let mut q_dirty = self.journal.generation == 0;
        let mut changed: HashSet<String> = HashSet::new();
        let fold = intake::fold_known(&store, &mut q, &|id| self.parked.contains(id))?;
        if let Some(f) = &fold {
            report.folded = f.added.len();
            changed.extend(f.added.iter().cloned());
            q_dirty = true;
        }
        let ended_records = self.collect_ended(&q)?;
        self.archived_prerequisites(&q)?;

        let budget_guard = store.lock(TOKEN_BUDGET)?;
        let mut budget: TokenBudget = store.load()?;
        let before_budget = budget.clone();
        budget.recompute();
        let (ended, _) = queue::fold_ended(
            &mut q,
            &mut budget,
            &ended_records,
            &self.config.retry,
            self.clock.as_ref(),
            &mut || fastrand::f64(),
        );
        q_dirty |= !ended.is_empty();
        changed.extend(ended.iter().map(|e| e.task_id.clone()));
        self.release_dependents(&mut q)?;
        // Forgotten as unrecorded only once the queue that folds their end is written: a cycle
        // whose write fails (a full disk) must find them again, or a dispatch whose spec was
        // never written stays `in_progress` for good.
        let folded: Vec<String> = ended_records.iter().map(|r| r.dispatch_id.clone()).collect();
        report.ended = ended;
        if self.reconcile_budget {
            self.settle_orphan_reservations(&q, &mut budget, now)?;
        }

        let types = match store.load::<WorkerTypes>() {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!("cannot read worker types, not dispatching: {e}");
                None
            }
        };
        // The breakers are asked only when this cycle can dispatch at all.
        let (free, free_slurm) = plan::free_slots(
            &q.tasks,
            types.as_ref(),
            self.config.scheduler.max_concurrent_dispatches as usize,
            self.slurm_slots(),
        );
        let can_dispatch = !report.paused && types.is_some() && (free > 0 || free_slurm > 0);
        let breakers = if can_dispatch {
            breaker_gate.snapshot(&store, &q.tasks, self.parked.ready_worker_types(), now)
        } else {
            BreakerSnapshot::default()
        };
        Ok(Collected {
            budget_guard,
            queue_guard,
            scheduler_guard,
            now,
            q,
            q_dirty,
            changed,
            removed: Vec::new(),
            fold,
            folded,
            budget,
            before_budget,
            types,
            breakers,
            report,
        })
    }

    /// `[slurm] max_jobs` when Slurm is enabled.
    fn slurm_slots(&self) -> Option<usize> {
        self.config.slurm.enabled.then_some(self.config.slurm.max_jobs as usize)
    }

    /// Applies a plan to the collected queue and budget: each planned dispatch gets a new id,
    /// reserves its tokens, is recorded on its task (`in_progress`) and in the report with the
    /// record its spec will hold; the tasks the plan fails are failed; waiting reasons recorded.
    fn apply(&self, c: &mut Collected, decided: DispatchPlan) {
        for (i, reason) in decided.waiting {
            if c.q.tasks[i].set_waiting_reason(reason) {
                c.changed.insert(c.q.tasks[i].task_id.clone());
                c.q_dirty = true;
            }
        }
        let home_s = self.store.home().root().display().to_string();
        for d in decided.dispatch {
            let dispatch_id = new_id("dsp");
            budget::reserve(&mut c.budget, &dispatch_id, d.reserve, c.now);
            let task = &c.q.tasks[d.task];
            let wt = c.types.as_ref().and_then(|ty| ty.worker_types.get(&task.worker_type));
            let executor = plan::executor_of(c.types.as_ref(), task);
            // The type's sbatch options, the task's own over them.
            let slurm = (executor == ExecutorKind::Slurm).then(|| {
                let base = wt.and_then(|wt| wt.slurm.clone()).unwrap_or_default();
                task.slurm.as_ref().map_or(base.clone(), |own| base.overlaid(own))
            });
            let t = &mut c.q.tasks[d.task];
            c.changed.insert(t.task_id.clone());
            t.attempts += 1;
            t.dispatches.push(dispatch_id.clone());
            t.state = TaskState::InProgress { started_at: c.now, dispatch_id: dispatch_id.clone() };
            let command = match &d.template {
                Some(template) => expand(
                    template,
                    &TemplateVars {
                        task_id: &t.task_id,
                        description: &t.description,
                        worker_type: &t.worker_type,
                        home: &home_s,
                        dispatch_id: &dispatch_id,
                        attempt: t.attempts,
                    },
                ),
                None => t.command.clone(),
            };
            c.report.dispatched.push(DispatchRecord {
                dispatch_id: dispatch_id.clone(),
                task_id: t.task_id.clone(),
                worker_type: t.worker_type.clone(),
                state: DispatchState::Starting,
                dispatched_at: c.now,
                attempt: t.attempts,
                command,
                budget_reserved: d.reserve,
                timeout_seconds: d.timeout_seconds,
                stdout_path: self.store.home().dispatch_stdout(&dispatch_id).display().to_string(),
                stderr_path: self.store.home().dispatch_stderr(&dispatch_id).display().to_string(),
                heartbeat: None,
                tokens_used: None,
                executor,
                slurm,
            });
            c.q_dirty = true;
        }
        for (i, error) in decided.fail {
            let t = &mut c.q.tasks[i];
            c.changed.insert(t.task_id.clone());
            t.state = TaskState::Failed { started_at: None, completed_at: c.now };
            t.result = Some(TaskResult { error: Some(error.clone()), ..TaskResult::default() });
            c.report.ended.push(Ended {
                task_id: t.task_id.clone(),
                dispatch_id: String::new(),
                worker_type: t.worker_type.clone(),
                outcome: Outcome::Failed,
                failed_attempt: false,
                result: t.result.clone().unwrap_or_default(),
                attempts: t.attempts,
                max_attempts: t.max_attempts,
            });
            c.q_dirty = true;
        }
        c.report.next_due = decided.next_due;
    }

    /// Archive: appends the finished tasks to the archive (appended now, flushed by the commit
    /// with the queue that drops them, which is renamed only once both are durable) and drops
    /// them from the queue. Returns the archive file the commit flushes, if any.
    fn archive(&mut self, c: &mut Collected) -> Result<Option<std::fs::File>> {
        let store = &self.store;
        let mut archive_file = None;
        let finished: Vec<&Task> = c.q.tasks.iter().filter(|t| t.status().is_terminal()).collect();
        if !finished.is_empty() {
            let key = |t: &Task| (t.task_id.clone(), t.status(), t.dispatches.len());
            if self.archive_unchecked {
                let ids: HashSet<String> = finished.iter().map(|t| t.task_id.clone()).collect();
                let archived = archive::last_ends(store, &ids)?;
                for t in &finished {
                    if archived.get(&t.task_id) == Some(&archive::ArchivedEnd::of(t)) {
                        tracing::info!("task {} is archived already; dropping it from the queue", t.task_id);
                        self.archived_unwritten.insert(key(t));
                    }
                }
                self.archive_unchecked = false;
            }
            let fresh: Vec<&Task> =
                finished.iter().copied().filter(|t| !self.archived_unwritten.contains(&key(t))).collect();
            let archive_len = archive::len(store);
            archive_file = match archive::append_unsynced(store, &fresh) {
                Ok(f) => f,
                Err(e) => {
                    // Cut by a full disk: the lines before the cut are in the archive; the next
                    // cycle flushes them and appends only the rest.
                    let landed = archive::whole_lines_since(store, archive_len);
                    if !landed.is_empty() {
                        self.archived_unwritten.extend(landed.iter().map(key));
                        self.archive_unflushed = true;
                    }
                    return Err(e);
                }
            };
            self.archived_unwritten.extend(fresh.iter().map(|t| key(t)));
            // Written, not yet durable: until a cycle's flush succeeds, every cycle flushes the
            // archive with its queue (whatever fails in between, these lines are not appended
            // again).
            self.archive_unflushed |= archive_file.is_some();
            let waited: HashSet<&str> = c.q.tasks.iter().filter_map(|t| t.after.as_deref()).collect();
            let mut released = Vec::new();
            for t in &finished {
                // Finished by this cycle's plan (failed: its type, its own prerequisite): the
                // tasks blocked on it are planned by the next cycle, at once.
                let blocked = self.parked.has_dependents(&t.task_id);
                if blocked {
                    self.parked.release(&t.task_id, &mut released)?;
                }
                if blocked || waited.contains(t.task_id.as_str()) {
                    self.after_cache.insert(t.task_id.clone(), t.status());
                }
            }
            if !released.is_empty() {
                c.report.next_due = Some(c.report.next_due.map_or(c.now, |d| d.min(c.now)));
            }
            c.report.archived = finished.len();
            c.removed.extend(finished.iter().map(|t| t.task_id.clone()));
            c.q.tasks.retain(|t| !t.status().is_terminal());
            c.q.tasks.extend(released);
            c.q_dirty = true;
        }
        if archive_file.is_none() && self.archive_unflushed {
            let path = store.path(crate::store::files::TASK_ARCHIVE);
            archive_file = match std::fs::File::open(&path) {
                Ok(f) => Some(f),
                // Gone (an operator moved it away): nothing of ours left to flush.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::io(&path, "open to flush", e)),
            };
            self.archive_unflushed = archive_file.is_some();
        }
        Ok(archive_file)
    }

    /// Commit: the cycle's writes in one flush. The queue, the budget, the archive and every new
    /// spec are fsynced in parallel; then the queue and the budget are renamed (one directory
    /// fsync), and only then the specs, under the `worker-specs` lock, since the worker starts
    /// what it sees and a spec must never be visible before the queue recording its dispatch is
    /// durable. A crash between the two leaves dispatches without a spec (folded `lost`) and
    /// reservations held by no running dispatch (settled at start-up), never a dispatch the queue
    /// does not know. The locks are released last, in the reverse of their order.
    fn commit(&mut self, c: Collected, archive_file: Option<std::fs::File>) -> Result<CycleReport> {
        let store = self.store.clone();
        let Collected {
            budget_guard,
            queue_guard,
            scheduler_guard,
            now,
            mut q,
            q_dirty,
            changed,
            removed,
            fold,
            folded,
            mut budget,
            before_budget,
            mut report,
            ..
        } = c;
        let mut state_batch = crate::store::atomic::ReplaceBatch::new();
        // The budget is staged first: nothing that can fail may come between the journal's
        // append and the flush below but the flush itself, whose failure takes the commit back.
        budget.recompute();
        let budget_changed = budget != before_budget;
        if budget_changed {
            state_batch.stage(&store.path(TOKEN_BUDGET), &store.encode_doc(&budget)?)?;
        }
        // The queue's change: the changed tasks and the removals appended to the journal as one
        // commit (fsynced in the flush below), or, once the journal has grown past its share of
        // the snapshot, a compaction (a new snapshot staged in the batch, the journal emptied
        // after its rename).
        let journal_before = self.journal;
        let mut journal_file = None;
        let mut compacted = false;
        if q_dirty {
            q.updated_at = Some(now);
            let counts = QueueCounts::of(&q.tasks).plus(self.parked.counts());
            let changed_tasks: Vec<&Task> = if changed.is_empty() {
                Vec::new()
            } else {
                q.tasks.iter().filter(|t| changed.contains(&t.task_id)).collect()
            };
            let commit = journal::Commit {
                intake_offset: q.intake_offset,
                updated_at: q.updated_at,
                counts: Some(counts.clone()),
                ..journal::Commit::default()
            };
            let bytes =
                journal::encode_commit(self.journal.generation, self.journal.end, changed_tasks, &removed, commit)?;
            q.counts = Some(counts);
            if journal::needs_compaction(&self.journal, bytes.len() as u64) {
                q.journal_generation = journal::next_generation(self.journal.generation);
                // The snapshot holds the whole queue: the parked tasks' lines follow the working
                // queue's tasks, copied as they are (never decoded).
                let snapshot = crate::domain::task::queue_file::encode_with_lines(
                    &store.path(TASK_QUEUE),
                    &q,
                    Some(&mut self.validated),
                    &mut self.parked.lines(),
                )?;
                state_batch.stage(&store.path(TASK_QUEUE), &snapshot)?;
                compacted = true;
            } else {
                journal_file = Some(journal::append_commit(&store, &mut self.journal, &bytes)?);
                crate::ops::backup::pause_point("queue-journal-appended");
            }
        }
        // Staged and flushed without the `worker-specs` lock (temporaries are nobody else's);
        // the lock is held only for their renames, so the worker is not held up by this flush.
        let mut spec_batch = crate::store::atomic::ReplaceBatch::new();
        let mut staged = Vec::new();
        for rec in &report.dispatched {
            match crate::domain::task::dispatch_record::stage_new(&mut spec_batch, store.home(), rec) {
                Ok(()) => staged.push(rec.dispatch_id.clone()),
                Err(e) => self.spec_not_written(&rec.dispatch_id, &e),
            }
        }
        let archive_path = store.path(crate::store::files::TASK_ARCHIVE);
        let journal_path = store.path(TASK_QUEUE_JOURNAL);
        let mut also: Vec<(&std::fs::File, &std::path::Path)> =
            archive_file.iter().map(|f| (f, archive_path.as_path())).collect();
        also.extend(journal_file.iter().map(|f| (f, journal_path.as_path())));
        let committed =
            crate::store::atomic::ReplaceBatch::sync_together(&mut [&mut state_batch, &mut spec_batch], &also)
                .and_then(|()| state_batch.commit());
        if let Err(e) = committed {
            if journal_file.is_some() {
                // The cycle fails whole: its commit is taken back (the next cycle loads again).
                journal::roll_back(&store, &mut self.journal, journal_before);
            }
            // The queue may show these dispatches (renamed before a failed directory fsync);
            // their specs are not written: fold them `lost` unless a spec turns up.
            for id in &staged {
                self.spec_not_written(id, &e);
            }
            // The archive lines stay `archive_unflushed`: the next cycle flushes them with its
            // queue instead of appending them again, so each task is archived once.
            return Err(e);
        }
        if compacted {
            crate::ops::backup::pause_point("queue-compacted");
            // The new snapshot is durable; the journal's lines are of the previous generation
            // now (ignored by every reader), so emptying it can wait for the next writer if it
            // fails here.
            if let Err(e) = journal::reset(&store) {
                tracing::warn!("cannot empty the queue's journal after a compaction: {e}");
            }
            self.journal = JournalPos::after_compaction(
                file_id(&store.path(TASK_QUEUE)),
                q.journal_generation,
                file_id(&store.path(TASK_QUEUE_JOURNAL)),
            );
            crate::base::heap::give_back_freed_memory();
        }
        if q_dirty {
            self.archived_unwritten.clear();
        }
        if archive_file.is_some() {
            self.archive_unflushed = false;
        }
        for id in &folded {
            self.unrecorded.remove(id);
        }
        if budget_changed {
            self.budget_id = file_id(&store.path(TOKEN_BUDGET));
        }
        if !spec_batch.is_empty() {
            // Renamed under the lock; `active/` fsynced after it is released (the worker, which
            // takes the lock to record starts and ends, does not wait for that flush).
            let published = store
                .lock_named(crate::store::LockName::WorkerSpecs)
                .map(|guard| {
                    let published = spec_batch.publish();
                    drop(guard);
                    published
                })
                .and_then(crate::store::atomic::Published::sync_dirs);
            if let Err(e) = published {
                for id in &staged {
                    self.spec_not_written(id, &e);
                }
            }
        }
        drop(budget_guard);
        // The intake's housekeeping last, off the path from a new task to its start (it needs
        // only the queue written before it; its lock comes before the budget's in the order).
        // The cycle is committed: the housekeeping failing does not fail it (the next fold
        // does it again).
        if let Some(f) = fold
            && let Err(e) = f.finish(&store, &q)
        {
            tracing::warn!("cannot finish the intake's housekeeping: {e}");
        }
        #[cfg(debug_assertions)]
        if q.tasks.len() + self.parked.len() <= 5_000 {
            // What is on disk reads back as what this coordinator holds, parked tasks included
            // (a change not journalled would show here, in every test).
            if let Ok(disk) = journal::load_quiet(&store) {
                let parked = self.parked.tasks();
                let mut held: Vec<&Task> = q.tasks.iter().chain(parked.iter()).collect();
                let mut on_disk: Vec<&Task> = disk.queue.tasks.iter().collect();
                held.sort_by(|a, b| a.task_id.cmp(&b.task_id));
                on_disk.sort_by(|a, b| a.task_id.cmp(&b.task_id));
                debug_assert_eq!(on_disk, held, "the queue on disk differs from the coordinator's");
            }
        }
        let after_cache = &self.after_cache;
        let completed = |a: &str| after_cache.get(a) == Some(&TaskStatus::Completed);
        self.parked.park_from(&mut q.tasks, now, &changed, &completed)?;
        self.cache = Some(q);
        self.seal_archive();
        drop(queue_guard);
        drop(scheduler_guard);
        self.reconcile_budget = false;
        self.archive_unchecked = false;
        if self.unrecorded_running {
            let at = now + chrono::Duration::from_std(UNRECORDED_RECHECK).unwrap_or_default();
            report.next_due = Some(report.next_due.map_or(at, |d: Timestamp| d.min(at)));
        }
        self.after_effects(&report);
        Ok(report)
    }

    /// Seals the archive's active file into a segment with its index once it has passed
    /// `[archive] segment_bytes` (under the `task-queue` lock, after the queue is durable, so the
    /// archive lines of this commit are already flushed). A failed seal (a full disk) is tried
    /// again a minute later, not every cycle: the archive keeps working unsealed meanwhile.
    fn seal_archive(&mut self) {
        if self.seal_retry_at.is_some_and(|at| std::time::Instant::now() < at) {
            return;
        }
        let cfg = &self.config.archive;
        match archive::segment::seal_if_due(&self.store, cfg.segment_bytes, cfg.keep_segments) {
            Ok(None) => {}
            Ok(Some(s)) => {
                self.seal_retry_at = None;
                tracing::info!(
                    "archive sealed into segment {} ({} tasks, {} bytes; {} old segment(s) removed)",
                    s.segment,
                    s.tasks,
                    s.bytes,
                    s.removed.len()
                );
            }
            Err(e) => {
                tracing::warn!("cannot seal the task archive: {e}; trying again in a minute");
                self.seal_retry_at = Some(std::time::Instant::now() + std::time::Duration::from_secs(60));
            }
        }
    }

    /// A dispatch recorded in the queue whose spec could not be written: the next cycles fold it
    /// as `lost` (a failed attempt for the retry policy) unless the spec turns up after all.
    fn spec_not_written(&mut self, dispatch_id: &str, e: &Error) {
        tracing::error!("cannot write the spec of dispatch {dispatch_id}: {e}; it will be marked lost");
        self.unrecorded.insert(dispatch_id.to_string());
    }

    /// Reservations held by no running dispatch (a crash between writes, a hand-edited queue) are
    /// settled to the tokens their dispatch reported, or released.
    fn settle_orphan_reservations(&self, q: &TaskQueue, budget: &mut TokenBudget, now: Timestamp) -> Result<()> {
        let running: HashSet<&str> = q.tasks.iter().filter_map(|t| t.current_dispatch()).collect();
        let orphans: Vec<String> =
            budget.reservations.keys().filter(|d| !running.contains(d.as_str())).cloned().collect();
        for d in orphans {
            let tokens = match dispatches::find(&self.store, &d) {
                Ok(Some((_, rec))) => rec.tokens_used,
                _ => None,
            };
            tracing::info!("settling reservation of dispatch {d}, which no running task holds");
            budget::settle(budget, &d, tokens, now);
        }
        Ok(())
    }

    /// Events and failure notifications, after the locks are released.
    fn after_effects(&self, report: &CycleReport) {
        // The cycle's events in one append (one `write`), ends first: they happened first.
        let mut events: Vec<crate::store::events::Event> =
            report.ended.iter().map(|e| ops::ended_event(&self.store, e)).collect();
        events.extend(report.dispatched.iter().map(|rec| {
            self.store.event(
                EventKind::TaskDispatched,
                Severity::Info,
                format!("Task {} dispatched ({}, attempt {})", rec.task_id, rec.dispatch_id, rec.attempt),
                serde_json::json!({"task_id": rec.task_id, "dispatch_id": rec.dispatch_id,
                    "worker_type": rec.worker_type, "attempt": rec.attempt}),
            )
        }));
        if let Err(e) = crate::store::events::append_many(self.store.home(), &events) {
            tracing::warn!("cannot record {} task event(s): {e}", events.len());
        }
        let counted: Vec<&Ended> = report
            .ended
            .iter()
            .filter(|e| !e.dispatch_id.is_empty() && (e.failed_attempt || e.outcome == Outcome::Completed))
            .collect();
        if counted.is_empty() {
            return;
        }
        let now = self.clock.now();
        let cfg = &self.config.retry;
        let notes = self.store.update_if_changed::<FailureStreaks, _>(|s| {
            let mut notes = Vec::new();
            for e in &counted {
                if let Some(n) = s.record(&e.worker_type, e.failed_attempt, cfg, now) {
                    notes.push((n, (*e).clone()));
                }
            }
            Ok(notes)
        });
        match notes {
            Ok(notes) => {
                for (n, e) in notes {
                    let _ = self.store.emit(
                        EventKind::FailureNotification,
                        Severity::Error,
                        format!(
                            "Worker type {} failed {} times in a row (last: task {}: {})",
                            n.worker_type,
                            n.consecutive_failures,
                            e.task_id,
                            e.result.error.as_deref().unwrap_or("failed")
                        ),
                        serde_json::json!({"worker_type": n.worker_type, "consecutive_failures": n.consecutive_failures,
                            "threshold": cfg.failure_notification_threshold,
                            "throttle_seconds": cfg.failure_notification_throttle_seconds,
                            "task_id": e.task_id, "dispatch_id": e.dispatch_id, "error": e.result.error}),
                    );
                }
            }
            Err(e) => tracing::warn!("cannot update failure streaks: {e}"),
        }
    }
}

/// Why a dispatch recorded in the queue, with no spec in any bucket and no process running, is
/// folded `lost`.
pub const UNRECORDED_LOST_REASON: &str = "no record of the dispatch is in worker-specs/ and no process of it runs: \
its spec was never written (the coordinator stopped in between) or was removed by hand";

/// How soon a cycle looks again at a dispatch without a spec whose process still runs.
pub const UNRECORDED_RECHECK: Duration = Duration::from_secs(1);

fn lost_record(t: &Task, dispatch_id: &str, now: Timestamp, reason: &str) -> DispatchRecord {
    DispatchRecord {
        dispatch_id: dispatch_id.to_string(),
        task_id: t.task_id.clone(),
        worker_type: t.worker_type.clone(),
        state: DispatchState::Lost { ended_at: now, reason: reason.to_string() },
        dispatched_at: t.started_at().unwrap_or(now),
        attempt: t.attempts.max(1),
        command: t.command.clone(),
        budget_reserved: t.budget,
        timeout_seconds: t.timeout_seconds.unwrap_or(0.0),
        stdout_path: String::new(),
        stderr_path: String::new(),
        heartbeat: None,
        tokens_used: None,
        executor: Default::default(),
        slurm: None,
    }
}

/// Watches the files the coordinator reacts to, waking the loop through `ctx.waker()`. Changes
/// only ([`crate::base::watch`]): the other daemons' and operators' reads of these directories
/// (integration validating each ended spec, `jq` over the queue) do not wake it.
fn watch(ctx: &DaemonContext) -> Result<crate::base::watch::Watcher> {
    let tx = ctx.waker();
    let names: HashSet<&'static str> = [
        crate::store::files::TASK_INTAKE.rel,
        TASK_QUEUE.rel,
        TASK_QUEUE_JOURNAL.rel,
        TOKEN_BUDGET.rel,
        SCHEDULER_STATE.rel,
        crate::store::files::SCHEDULES.rel,
        crate::store::files::CIRCUIT_BREAKERS.rel,
    ]
    .into_iter()
    .collect();
    let home = &ctx.home;
    let coordination = home.coordination();
    let dirs = [
        coordination.clone(),
        home.worker_specs(SpecBucket::Completed),
        home.worker_specs(SpecBucket::Failed),
        home.worker_specs(SpecBucket::Zombie),
    ];
    for d in &dirs {
        crate::store::atomic::create_dir_all(d)?;
    }
    let roots = dirs.to_vec();
    crate::base::watch::watch(&dirs, crate::base::watch::Depth::Flat, move |p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let relevant = if roots.contains(&p) {
            // Events were lost: a directory to look at again.
            true
        } else if p.parent() == Some(coordination.as_path()) {
            names.contains(name)
        } else {
            name.ends_with(".json") && !crate::store::atomic::is_temp_name(name)
        };
        !relevant || tx.send(Wake::Changed(p)).is_ok()
    })
}

fn instant_of(at: Timestamp, clock: &dyn Clock) -> Instant {
    let wait = (at - clock.now()).to_std().unwrap_or(Duration::ZERO);
    Instant::now() + wait
}

/// The coordinator daemon's loop (`cortex-coordinator`).
pub fn run_loop(ctx: &mut DaemonContext) -> Result<()> {
    let _watcher = watch(ctx)?;
    let mut c = Coordinator::new(ctx.store.clone(), ctx.config.clone(), Box::new(SystemClock));
    c.reconcile_at_start()?;
    ctx.mark_ready()?;
    let tick = Duration::from_secs(ctx.config.scheduler.tick_interval_seconds.max(1));
    let mut backoff: Option<Duration> = None;
    let mut last_error = String::new();
    let mut schedules = ScheduleGate::default();
    loop {
        let schedule_due = schedules.pass(&ctx.store).map(|d| instant_of(d, &SystemClock));
        let due = match c.cycle() {
            Ok(report) => {
                backoff = None;
                last_error.clear();
                if report.folded + report.dispatched.len() + report.ended.len() > 0 {
                    tracing::debug!(
                        folded = report.folded,
                        dispatched = report.dispatched.len(),
                        ended = report.ended.len(),
                        archived = report.archived,
                        "cycle"
                    );
                }
                report.next_due.map(|d| instant_of(d, &SystemClock))
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::error!("coordinator cycle failed: {msg}");
                if msg != last_error {
                    let _ = ctx.store.emit(
                        EventKind::CoordinatorError,
                        Severity::Error,
                        format!("Coordinator cycle failed: {msg}"),
                        serde_json::json!({"error": msg}),
                    );
                    last_error = msg;
                }
                let b = backoff.map_or(Duration::from_millis(200), |b| (b * 2).min(tick));
                backoff = Some(b);
                Some(Instant::now() + b)
            }
        };
        let safety = Instant::now() + tick;
        let deadline = [due, schedule_due].into_iter().flatten().fold(safety, Instant::min);
        loop {
            let first = ctx.wait(Some(deadline));
            let mut wakes = vec![first];
            wakes.extend(ctx.drain_pending());
            if wakes.iter().any(|w| matches!(w, Wake::Shutdown(_))) {
                return Ok(());
            }
            if !c.only_own_writes(&wakes) {
                break;
            }
        }
    }
}

/// Decides when the schedules need a pass (`fire_schedules`): when a file the pass reads for its
/// decisions changed since the last one (schedules, scheduler state, `cortex.toml`), when the
/// earliest next run is due, or after a failed pass. Otherwise a pass would change nothing and
/// only cost a parse of the whole queue, on every cycle.
#[derive(Default)]
struct ScheduleGate {
    /// The files as the last successful pass saw them.
    seen: Option<[Option<FileIdentity>; 3]>,
    /// The earliest next run the last pass reported.
    next: Option<Timestamp>,
}

impl ScheduleGate {
    fn files(store: &Store) -> [Option<FileIdentity>; 3] {
        [
            file_id(&store.path(crate::store::files::SCHEDULES)),
            file_id(&store.path(SCHEDULER_STATE)),
            file_id(&store.home().config_file()),
        ]
    }

    /// Runs a pass if one is needed; returns when the next schedule is due.
    fn pass(&mut self, store: &Store) -> Option<Timestamp> {
        let files = Self::files(store);
        self.pass_seen(store, files, std::time::SystemTime::now())
    }

    /// [`ScheduleGate::pass`] with the files as stat'ed at `seen_at`.
    fn pass_seen(
        &mut self,
        store: &Store,
        files: [Option<FileIdentity>; 3],
        seen_at: std::time::SystemTime,
    ) -> Option<Timestamp> {
        let due = self.next.is_some_and(|n| n <= SystemClock.now());
        if self.seen.as_ref() == Some(&files) && !due {
            return self.next;
        }
        match fire_schedules(store) {
            Ok(next) => {
                // A file changed within its timestamp tick when it was stat'ed may change again
                // unseen (same size and times): pass again next time rather than trust it.
                self.seen = files.iter().flatten().all(|f| !f.is_racy_at(seen_at)).then_some(files);
                self.next = next;
            }
            Err(()) => {
                self.seen = None;
                self.next = None;
            }
        }
        self.next
    }
}

/// Enqueues the runs of schedules that are due (`schedule::fire_due`) and returns when the next
/// one is. Each run is added with its slot's fixed task id, so a slot re-fired after a crash
/// between the enqueue and the schedule's cursor write finds its task and adds nothing.
fn fire_schedules(store: &Store) -> std::result::Result<Option<Timestamp>, ()> {
    let mut enqueue = |run: crate::domain::schedule::ScheduledRun| -> Result<()> {
        if crate::domain::task::ops::find_task(store, &run.task_id)?.is_some() {
            return Ok(());
        }
        let t = &run.task;
        let new = crate::domain::task::ops::NewTask {
            description: t.description.clone(),
            priority: Some(t.priority),
            worker_type: t.worker_type.clone(),
            budget: t.budget,
            max_attempts: t.max_attempts,
            command: t.command.clone(),
            created_by: Some(format!("schedule:{}", run.schedule_name)),
            schedule_id: Some(run.schedule_id.clone()),
            task_id: Some(run.task_id.clone()),
            ..Default::default()
        };
        crate::domain::task::ops::add_task(store, new).map(|_| ())
    };
    crate::domain::schedule::fire_due(store, &SystemClock, &mut enqueue).map_err(|e| tracing::error!("schedules: {e}"))
}

/// The circuit breakers of one dispatch cycle, as read at the cycle's start (before the time its
/// dispatches are stamped with). A type whose breaker is not closed is asked about once
/// (`auto_fix::breaker::dispatch_allowed_by`) and the answers go to the plan as a
/// [`BreakerSnapshot`], which dispatches at most one task of it (the half-open trial) per cycle.
struct BreakerGate {
    breakers: crate::daemons::auto_fix::breaker::Breakers,
}

impl BreakerGate {
    fn load(store: &Store) -> BreakerGate {
        BreakerGate { breakers: store.load().unwrap_or_default() }
    }

    fn guarded(&self, worker_type: &str) -> bool {
        self.breakers
            .breakers
            .get(worker_type)
            .is_some_and(|b| !matches!(b.state, crate::daemons::auto_fix::breaker::BreakerState::Closed { .. }))
    }

    /// This cycle's answers for the guarded worker types of the waiting tasks.
    /// (`held_types`: the worker types of the ready tasks held apart, all waiting.)
    fn snapshot<'a>(
        &self,
        store: &Store,
        tasks: &'a [Task],
        held_types: impl Iterator<Item = &'a str>,
        now: Timestamp,
    ) -> BreakerSnapshot {
        let mut snapshot = BreakerSnapshot::default();
        let waiting = tasks.iter().filter(|t| matches!(t.status(), TaskStatus::Queued | TaskStatus::PendingRetry));
        for worker_type in waiting.map(|t| t.worker_type.as_str()).chain(held_types) {
            if snapshot.guarded.contains_key(worker_type) || !self.guarded(worker_type) {
                continue;
            }
            let guarded = GuardedType {
                trial_allowed: self.allows(store, worker_type, now),
                half_open_at: self.half_open_at(worker_type),
            };
            snapshot.guarded.insert(worker_type.to_string(), guarded);
        }
        snapshot
    }

    /// Whether the guarded type's breaker lets a dispatch through now (its trial).
    fn allows(&self, store: &Store, worker_type: &str, now: Timestamp) -> bool {
        store
            .load::<crate::daemons::auto_fix::RestartPolicy>()
            .and_then(|policy| {
                if !policy.circuit_breaker.enabled {
                    return Ok(true);
                }
                crate::daemons::auto_fix::breaker::dispatch_allowed_by(store, &self.breakers, worker_type, now)
            })
            .unwrap_or_else(|e| {
                tracing::warn!("circuit breaker of {worker_type} unreadable ({e}); dispatching");
                true
            })
    }

    /// When an open breaker lets its trial through (its `half_open_at`).
    fn half_open_at(&self, worker_type: &str) -> Option<Timestamp> {
        match &self.breakers.breakers.get(worker_type)?.state {
            crate::daemons::auto_fix::breaker::BreakerState::Open { half_open_at, .. } => Some(*half_open_at),
            _ => None,
        }
    }
}

/// Stages the spec file of a new dispatch (`active/<id>.json`, state `starting`) in the cycle's
/// spec batch: encoded and checked against the dispatch schema, renamed by the commit.
/// What one cycle collected under its locks, carried through its phases to the commit.
struct Collected {
    // The guards first: on an early return the fields drop in this order, the budget's lock
    // first and the scheduler's last.
    budget_guard: LockGuard,
    queue_guard: LockGuard,
    scheduler_guard: LockGuard,
    /// The cycle's time, read under the `scheduler` lock.
    now: Timestamp,
    q: TaskQueue,
    /// The queue needs writing.
    q_dirty: bool,
    /// Ids of the tasks this cycle changed or added (their whole records go to the journal).
    changed: HashSet<String>,
    /// Ids of the tasks this cycle removed from the queue (archived).
    removed: Vec<String>,
    /// The intake folded into the queue, finished after the commit.
    fold: Option<intake::IntakeFold>,
    /// The dispatches whose end this cycle folds (forgotten as unrecorded once written).
    folded: Vec<String>,
    budget: TokenBudget,
    /// The budget as read, to skip its write when nothing changed.
    before_budget: TokenBudget,
    types: Option<WorkerTypes>,
    breakers: BreakerSnapshot,
    report: CycleReport,
}

#[cfg(test)]
mod schedule_gate_tests;
