//! The coordinator's tasks held apart from the working queue the cycle plans over, so that a
//! cycle's in-memory work (the intake fold, the ends, the plan, the counts) costs what can move,
//! not the backlog:
//!
//! - **parked**: waiting tasks that cannot be dispatched before a known time (a queued task's
//!   `--delay` whose waiting reason `delay` is recorded, a pending retry's `next_retry_at`),
//!   ordered by that time and looked at only when the earliest falls due
//!   ([`Parked::unpark_due`]);
//! - **ready**: tasks that can run now and wait only for a slot (queued or pending retry, due,
//!   without `--after` or with a prerequisite known completed), ordered as the plan takes them
//!   (priority, then age, then the order they were held in). A cycle lends the plan the first
//!   of them ([`Parked::lend_ready`]) — as many as there are free slots, more while the plan
//!   says it reached the rest with a slot still free
//!   ([`super::plan::DispatchPlan::needs_held`]) — and takes back those it left as they are;
//! - **blocked**: queued tasks waiting for their `--after` prerequisite (the reason `after`
//!   recorded, due) while that prerequisite is in the queue and not finished, by prerequisite.
//!   A prerequisite changes only in the working queue (a held task is taken back before anything
//!   changes it), so the cycle releases a prerequisite's dependents when it finds it finished
//!   there (its end folded, a cancel caught up: before the breakers are asked and the plan made,
//!   so they are planned in that same cycle) or archives it (finished by the plan: the next cycle
//!   plans them) — held ready when it completed ([`Parked::release_ready`], none decoded at
//!   once), else into the working queue ([`Parked::release`]: the plan fails them).
//!
//! Each kind is exactly what the plan would leave alone: a parked task's due time is in the
//! future, so [`super::plan::plan`] would record the waiting reason it already has and dispatch
//! nothing; a blocked task's prerequisite is not finished, so the plan would record `after`
//! again; a ready task is changed by the plan only when it is reached with a slot free, and
//! the plan tells when that happens. Held tasks are still in the queue: they are written at a
//! compaction ([`Parked::lines`]), counted ([`Parked::counts`]), found as `--after`
//! prerequisites and as known ids by the intake fold, and a journal line others append for one
//! (a cancel, a retry) brings it back first ([`Parked::take`]).
//!
//! Memory: a held task is not held decoded. One read from the snapshot is held as where its
//! text is in that file (the coordinator keeps the snapshot it read open; the file is never
//! written in place, and a compaction or a snapshot replaced by anyone else makes the
//! coordinator load again), one held later as its compact JSON line: about 150 bytes per task
//! read from the snapshot (its id twice, its due time or its place in the order, an offset), the
//! line's length more for the others.

use crate::base::clock::Timestamp;
use crate::base::error::{Error, Result};
use crate::domain::task::journal::Holder;
use crate::domain::task::model::{Priority, QueueCounts, Task, TaskState, TaskStatus, WaitingReason};
use crate::domain::task::worker_types::{ExecutorKind, WorkerTypes};
use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use super::plan::HeldHead;

/// Where a held task's compact JSON line is.
#[derive(Debug)]
enum Line {
    /// In the snapshot file held open: offset and length.
    Snapshot(u64, u32),
    /// In memory.
    Held(Box<[u8]>),
}

/// A ready task's place in the dispatch order: priority (highest first), creation time, then
/// the order it was held in.
type OrderKey = (Reverse<Priority>, Timestamp, u64);

/// Why a task is held, and its place in its order.
#[derive(Debug)]
enum Place {
    /// Parked until this time.
    Due(Timestamp),
    /// Ready: its place in the dispatch order, and what the plan needs to know of it without
    /// decoding it: its worker type and own executor ([`Parked::ready_head`]), as their number
    /// in [`Parked::types`]; its budget, whether `budget` is the waiting reason it has, whether
    /// it has a command of its own ([`Parked::lend_ready`] passes over a task the plan would
    /// leave waiting for budget).
    Ready { key: OrderKey, of_type: u32, budget: u64, waits_for_budget: bool, own_command: bool },
    /// Blocked until its prerequisite `on` finishes; `seq` its place among `on`'s dependents.
    Blocked { on: Rc<str>, seq: u64 },
}

/// One held task: why, its status (for `--after` lookups) and its line.
#[derive(Debug)]
struct Entry {
    place: Place,
    status: TaskStatus,
    line: Line,
}

/// A worker type and a task's own executor (None, or whether it is Slurm).
type TypeKey = (Box<str>, Option<bool>);

/// Held tasks by id (one allocation per id, shared by the indexes), parked ones by due time and
/// ready ones in dispatch order, with their counts kept as they move.
#[derive(Debug, Default)]
pub(crate) struct Parked {
    tasks: HashMap<Rc<str>, Entry>,
    by_due: BTreeSet<(Timestamp, Rc<str>)>,
    ready: BTreeSet<(OrderKey, Rc<str>)>,
    /// Blocked tasks by prerequisite, in the order they were held.
    blocked: HashMap<Rc<str>, std::collections::BTreeMap<u64, Rc<str>>>,
    /// The (worker type, own executor) pairs of ready tasks, numbered, with how many ready
    /// tasks have each: a worker type's three pairs (no executor of its own, local, Slurm) are
    /// numbered together, from its number in `type_numbers` times three.
    types: Vec<(TypeKey, usize)>,
    type_numbers: HashMap<Box<str>, u32>,
    /// The next ready task's place among tasks of the same priority and creation time.
    next_seq: u64,
    /// Where this cycle's lending has come to in the ready order: the tasks before it not lent
    /// were passed over ([`Skip`]).
    cursor: Option<(OrderKey, Rc<str>)>,
    /// Ready tasks lent to this cycle's plan: their place in the order and line, to hold them
    /// again as they were when the cycle leaves them unchanged.
    lent: HashMap<Rc<str>, (u64, Line)>,
    counts: QueueCounts,
    /// The snapshot file the [`Line::Snapshot`] entries point into.
    snapshot: Option<std::fs::File>,
}

/// What the plan starts from, for [`Parked::lend_ready`] to pass over the ready tasks it would
/// leave as they are (waiting for budget).
pub(crate) struct Skip<'a> {
    /// The budget available at the plan's start.
    pub(crate) available: u64,
    pub(crate) types: Option<&'a WorkerTypes>,
    pub(crate) breakers: &'a super::plan::BreakerSnapshot,
}

/// When a task may be parked: its due time, if it is after `now` and the plan would record
/// nothing new on it (a queued task waiting for its delay with the reason `delay` recorded, a
/// pending retry without a waiting reason).
pub(crate) fn parkable_until(t: &Task, now: Timestamp) -> Option<Timestamp> {
    let due = match &t.state {
        TaskState::Queued { waiting_reason: Some(WaitingReason::Delay) } => t.not_before?,
        TaskState::PendingRetry { next_retry_at, waiting_reason: None, .. } => *next_retry_at,
        _ => return None,
    };
    (due > now).then_some(due)
}

/// Whether a task can be held as ready at `now`: queued or pending retry, due (no delay or
/// retry time after `now`), without a prerequisite or with one `completed` says has completed
/// (the plan finds its status among the archived ones'). The plan changes such a task only when
/// it reaches it with a slot free (it dispatches it, fails it — an unknown worker type, no
/// command — or records why it waits: budget, circuit breaker, Slurm disabled); otherwise it
/// leaves it as it is, whatever it recorded on it before.
pub(crate) fn ready_now(t: &Task, now: Timestamp, completed: &dyn Fn(&str) -> bool) -> bool {
    let due = match &t.state {
        TaskState::Queued { .. } => t.not_before,
        TaskState::PendingRetry { next_retry_at, .. } => Some(*next_retry_at),
        _ => return false,
    };
    t.after.as_deref().is_none_or(completed) && due.is_none_or(|d| d <= now)
}

/// The prerequisite a task may be blocked on at `now`: a queued task with the reason `after`
/// recorded, due. It is held blocked only while that prerequisite is in the queue, unfinished.
pub(crate) fn blocked_on(t: &Task, now: Timestamp) -> Option<&str> {
    match &t.state {
        TaskState::Queued { waiting_reason: Some(WaitingReason::After) } if t.not_before.is_none_or(|d| d <= now) => {
            t.after.as_deref()
        }
        _ => None,
    }
}

impl Parked {
    /// Moves the tasks of `tasks` that can be parked, held ready or held blocked at `now` out of
    /// it (the others keep their order); `tasks` holds no finished task (the cycle archived them),
    /// and `completed` says which prerequisites are known completed. A task lent to this cycle's
    /// plan and not in `changed` is held again as it was; every lent task keeps its place among
    /// its equals.
    pub(crate) fn park_from(
        &mut self,
        tasks: &mut Vec<Task>,
        now: Timestamp,
        changed: &HashSet<String>,
        completed: &dyn Fn(&str) -> bool,
    ) -> Result<()> {
        self.cursor = None;
        let lent = std::mem::take(&mut self.lent);
        // Prerequisites that are in the queue unfinished: held, or in the working queue.
        let waited: HashSet<&str> = tasks.iter().filter_map(|t| blocked_on(t, now)).collect();
        let pending: HashSet<String> = tasks
            .iter()
            .filter(|t| waited.contains(t.task_id.as_str()) && !t.status().is_terminal())
            .map(|t| t.task_id.clone())
            .collect();
        let pending = |a: &str| pending.contains(a) || self.tasks.contains_key(a);
        let blocked: HashSet<String> =
            tasks.iter().filter(|t| blocked_on(t, now).is_some_and(pending)).map(|t| t.task_id.clone()).collect();
        if blocked.is_empty() && !tasks.iter().any(|t| parkable_until(t, now).is_some() || ready_now(t, now, completed))
        {
            return Ok(());
        }
        let mut lent = lent;
        for t in std::mem::take(tasks) {
            let mut lent_as = lent.remove(t.task_id.as_str());
            if let Some((_, line)) = &mut lent_as
                && changed.contains(&t.task_id)
            {
                *line = Line::Held(encode(&t)?);
            }
            if let Some(due) = parkable_until(&t, now) {
                let line = match lent_as {
                    Some((_, line)) => line,
                    None => Line::Held(encode(&t)?),
                };
                self.insert(Place::Due(due), &t, line);
            } else if ready_now(&t, now, completed) {
                let (seq, line) = match lent_as {
                    Some(lent) => lent,
                    None => (self.seq(), Line::Held(encode(&t)?)),
                };
                let place = self.ready_place(&t, seq);
                self.insert(place, &t, line);
            } else if blocked.contains(&t.task_id)
                && let Some(on) = blocked_on(&t, now)
            {
                let place = Place::Blocked { on: on.into(), seq: self.seq() };
                self.insert(place, &t, Line::Held(encode(&t)?));
            } else {
                tasks.push(t);
            }
        }
        Ok(())
    }

    /// Whether a task is held blocked on `prerequisite`.
    pub(crate) fn has_dependents(&self, prerequisite: &str) -> bool {
        self.blocked.contains_key(prerequisite)
    }

    /// Moves the tasks blocked on `prerequisite` (it finished, or left the queue) into `tasks`,
    /// in the order they were held; returns how many.
    pub(crate) fn release(&mut self, prerequisite: &str, tasks: &mut Vec<Task>) -> Result<usize> {
        self.release_all(&[prerequisite], tasks)
    }

    /// Holds the tasks blocked on `prerequisite`, which has completed, as ready tasks (in the
    /// order they were held, each decoded only to find its place): none is held decoded, however
    /// many wait for it. The plan finds the prerequisite's status among the archived ones' (or in
    /// the queue, in the cycle that folded its end).
    pub(crate) fn release_ready(&mut self, prerequisite: &str) -> Result<usize> {
        self.unblock(&[prerequisite], |parked, t, line| {
            let seq = parked.seq();
            let place = parked.ready_place(&t, seq);
            parked.insert(place, &t, line);
        })
    }

    /// [`Parked::release`] of several prerequisites' dependents, all in the order they were held.
    fn release_all(&mut self, prerequisites: &[&str], tasks: &mut Vec<Task>) -> Result<usize> {
        self.unblock(prerequisites, |_, t, _| tasks.push(t))
    }

    /// Takes the tasks blocked on `prerequisites` out, in the order they were held, and hands
    /// each, decoded and no longer counted, to `put` with its line; returns how many there were
    /// (an error when a line does not read back: that task is gone all the same).
    fn unblock(&mut self, prerequisites: &[&str], mut put: impl FnMut(&mut Self, Task, Line)) -> Result<usize> {
        let mut dependents: Vec<(u64, Rc<str>)> =
            prerequisites.iter().filter_map(|p| self.blocked.remove(*p)).flatten().collect();
        dependents.sort();
        let n = dependents.len();
        let mut failed = None;
        for (_, id) in dependents {
            let Some(entry) = self.tasks.remove(&id) else { continue };
            match self.decode(&entry.line) {
                Ok(t) => {
                    self.counts.remove(&t);
                    put(self, t, entry.line);
                }
                Err(e) => failed = Some(e),
            }
        }
        failed.map_or(Ok(n), Err)
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// A ready task's place: its key in the order, its type's number.
    fn ready_place(&mut self, t: &Task, seq: u64) -> Place {
        let first = match self.type_numbers.get(t.worker_type.as_str()) {
            Some(&n) => n,
            None => {
                let n = self.types.len() as u32;
                for own in [None, Some(false), Some(true)] {
                    self.types.push(((t.worker_type.as_str().into(), own), 0));
                }
                self.type_numbers.insert(t.worker_type.as_str().into(), n);
                n
            }
        };
        let of_type = first
            + match t.executor {
                None => 0,
                Some(ExecutorKind::Local) => 1,
                Some(ExecutorKind::Slurm) => 2,
            };
        Place::Ready {
            key: (Reverse(t.priority), t.created_at, seq),
            of_type,
            budget: t.budget,
            waits_for_budget: t.waiting_reason() == Some(&WaitingReason::Budget),
            own_command: !t.command.is_empty(),
        }
    }

    fn insert(&mut self, place: Place, t: &Task, line: Line) {
        if self.tasks.contains_key(t.task_id.as_str()) {
            // Not expected (ids are unique in a queue); kept consistent all the same.
            let _ = self.forget(&t.task_id);
        }
        let id: Rc<str> = t.task_id.as_str().into();
        self.counts.add(t);
        match &place {
            Place::Due(due) => {
                self.by_due.insert((*due, id.clone()));
            }
            Place::Ready { key, of_type, .. } => {
                self.ready.insert((*key, id.clone()));
                self.types[*of_type as usize].1 += 1;
            }
            Place::Blocked { on, seq } => {
                self.blocked.entry(on.clone()).or_default().insert(*seq, id.clone());
            }
        }
        self.tasks.insert(id, Entry { place, status: t.status(), line });
    }

    /// Removes a held task from every index; its entry and the task decoded (its counts taken
    /// off), or an error when its line does not read back (the entry is gone all the same).
    fn forget(&mut self, task_id: &str) -> Option<(Entry, Result<Task>)> {
        let (id, entry) = self.tasks.remove_entry(task_id)?;
        match &entry.place {
            Place::Due(due) => {
                self.by_due.remove(&(*due, id));
            }
            Place::Ready { key, of_type, .. } => {
                self.ready.remove(&(*key, id));
                let n = &mut self.types[*of_type as usize].1;
                *n = n.saturating_sub(1);
            }
            Place::Blocked { on, seq } => {
                if let Some(dependents) = self.blocked.get_mut(on) {
                    dependents.remove(seq);
                    if dependents.is_empty() {
                        self.blocked.remove(on);
                    }
                }
            }
        }
        let task = self.decode(&entry.line);
        if let Ok(t) = &task {
            self.counts.remove(t);
        }
        Some((entry, task))
    }

    fn bytes<'a>(&'a self, line: &'a Line) -> Result<std::borrow::Cow<'a, [u8]>> {
        match line {
            Line::Held(b) => Ok(std::borrow::Cow::Borrowed(b)),
            Line::Snapshot(offset, len) => {
                let f = self.snapshot.as_ref().ok_or_else(|| Error::other("a held task's snapshot is not open"))?;
                let mut buf = vec![0u8; *len as usize];
                f.read_exact_at(&mut buf, *offset).map_err(|e| {
                    Error::other(format!("cannot read a held task back from the queue's snapshot: {e}"))
                })?;
                Ok(std::borrow::Cow::Owned(buf))
            }
        }
    }

    fn decode(&self, line: &Line) -> Result<Task> {
        let bytes = self.bytes(line)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::other(format!("a held task's line does not read back as a task: {e}")))
    }

    /// Moves the parked tasks due at `now` back into `tasks` (appended, earliest first); returns
    /// how many.
    pub(crate) fn unpark_due(&mut self, tasks: &mut Vec<Task>, now: Timestamp) -> Result<usize> {
        let mut n = 0;
        while let Some((due, id)) = self.by_due.first()
            && *due <= now
        {
            let id = id.clone();
            tasks.extend(self.take(&id)?);
            n += 1;
        }
        Ok(n)
    }

    /// Starts a cycle's lending from the first ready task.
    pub(crate) fn start_lending(&mut self) {
        self.cursor = None;
    }

    /// Lends this cycle's plan the next `n` ready tasks in dispatch order (appended to `tasks` in
    /// that order), passing over those `skip` says the plan would leave as they are; returns
    /// how many. [`Parked::park_from`] takes back those the cycle leaves ready.
    pub(crate) fn lend_ready(&mut self, n: usize, tasks: &mut Vec<Task>, skip: &Skip) -> Result<usize> {
        let mut ids = Vec::new();
        let mut last = None;
        let rest = match &self.cursor {
            Some(c) => self.ready.range((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded)),
            None => self.ready.range::<(OrderKey, Rc<str>), _>(..),
        };
        for (key, id) in rest {
            if ids.len() == n {
                break;
            }
            last = Some((*key, id.clone()));
            if self.tasks.get(id).is_some_and(|e| self.passed_over(&e.place, skip)) {
                continue;
            }
            ids.push((key.2, id.clone()));
        }
        if last.is_some() {
            self.cursor = last;
        }
        let lent = ids.len();
        for (seq, id) in ids {
            let Some((entry, task)) = self.forget(&id) else { continue };
            tasks.push(task?);
            self.lent.insert(id, (seq, entry.line));
        }
        Ok(lent)
    }

    /// A ready task the plan would certainly leave as it is when it reaches it: it waits for
    /// budget already and needs more than there is at the plan's start (no dispatch before it
    /// gives any back), its type is known, local and unguarded, and it has a command.
    fn passed_over(&self, place: &Place, skip: &Skip) -> bool {
        let Place::Ready { of_type, budget, waits_for_budget, own_command, .. } = place else { return false };
        if !waits_for_budget || *budget <= skip.available {
            return false;
        }
        let ((wt, own), _) = &self.types[*of_type as usize];
        let Some(t) = skip.types.and_then(|ty| ty.worker_types.get(&**wt)) else { return false };
        let executor = own.map_or(t.executor, |slurm| if slurm { ExecutorKind::Slurm } else { ExecutorKind::Local });
        executor == ExecutorKind::Local
            && (*own_command || !t.command.is_empty())
            && !skip.breakers.guarded.contains_key(&**wt)
    }

    /// Where the ready tasks begin in the dispatch order, for the plan; None when none is held.
    /// `beyond_local` when some ready task is not of a known local worker type in `types`.
    pub(crate) fn ready_head(&self, types: Option<&WorkerTypes>) -> Option<HeldHead> {
        let mut rest = match &self.cursor {
            Some(c) => self.ready.range((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded)),
            None => self.ready.range::<(OrderKey, Rc<str>), _>(..),
        };
        let ((Reverse(priority), created_at, _), _) = rest.next()?;
        let beyond_local = self.live_types().any(|(wt, own)| {
            let of_type = types.and_then(|ty| ty.worker_types.get(&**wt)).map(|t| t.executor);
            let own = own.map(|slurm| if slurm { ExecutorKind::Slurm } else { ExecutorKind::Local });
            of_type.is_none() || own.or(of_type) != Some(ExecutorKind::Local)
        });
        Some(HeldHead { priority: *priority, created_at: *created_at, beyond_local })
    }

    /// The worker types of the ready tasks (their circuit breakers are asked for each cycle that
    /// can dispatch).
    pub(crate) fn ready_worker_types(&self) -> impl Iterator<Item = &str> {
        self.live_types().map(|(wt, _)| &**wt)
    }

    /// The (worker type, own executor) pairs some ready task has.
    fn live_types(&self) -> impl Iterator<Item = &TypeKey> {
        self.types.iter().filter(|(_, n)| *n > 0).map(|(key, _)| key)
    }

    /// Takes a held task out (to change it); None when it is not held.
    pub(crate) fn take(&mut self, task_id: &str) -> Result<Option<Task>> {
        match self.forget(task_id) {
            None => Ok(None),
            Some((_, task)) => task.map(Some),
        }
    }

    pub(crate) fn contains(&self, task_id: &str) -> bool {
        self.tasks.contains_key(task_id)
    }

    /// The status of a held task (queued or pending retry), for `--after` lookups.
    pub(crate) fn status(&self, task_id: &str) -> Option<TaskStatus> {
        self.tasks.get(task_id).map(|e| e.status)
    }

    /// The earliest time a parked task falls due.
    pub(crate) fn next_due(&self) -> Option<Timestamp> {
        self.by_due.first().map(|(due, _)| *due)
    }

    #[cfg(any(test, debug_assertions))]
    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// The held tasks' counts (kept as they are held and taken back).
    pub(crate) fn counts(&self) -> &QueueCounts {
        &self.counts
    }

    /// Every held task's id: parked ones in due order, then ready ones in dispatch order, then
    /// blocked ones.
    fn ids(&self) -> impl Iterator<Item = &Rc<str>> {
        let by_due = self.by_due.iter().map(|(_, id)| id);
        let blocked = self.blocked.values().flat_map(|d| d.values());
        by_due.chain(self.ready.iter().map(|(_, id)| id)).chain(blocked)
    }

    /// Every held task's compact JSON line, in the order of [`Parked::ids`] (a compaction
    /// writes them after the working queue's tasks).
    pub(crate) fn lines(&self) -> impl Iterator<Item = Result<std::borrow::Cow<'_, [u8]>>> {
        self.ids().filter_map(|id| self.tasks.get(id)).map(|e| {
            let bytes = self.bytes(&e.line)?;
            if !bytes.contains(&b'\n') {
                return Ok(bytes);
            }
            // From a pretty-printed snapshot: one line again.
            let task = self.decode(&e.line)?;
            let line = serde_json::to_vec(&task).map_err(|err| Error::encode(format!("task {}", task.task_id), err))?;
            Ok(std::borrow::Cow::Owned(line))
        })
    }

    /// Every held task, decoded (the debug builds' check of what is on disk).
    #[cfg(debug_assertions)]
    pub(crate) fn tasks(&self) -> Vec<Task> {
        self.ids().filter_map(|id| self.tasks.get(id)).filter_map(|e| self.decode(&e.line).ok()).collect()
    }
}

fn encode(t: &Task) -> Result<Box<[u8]>> {
    let line = serde_json::to_vec(t).map_err(|e| Error::encode(format!("task {}", t.task_id), e))?;
    Ok(line.into_boxed_slice())
}

/// A full load of the queue for the coordinator ([`crate::domain::task::journal::load_into`]):
/// the tasks not due at `now` parked, the tasks ready at `now` and those blocked on a
/// prerequisite held as they are read (a task read from the snapshot as where its line is), the
/// others into the working queue in order.
pub(crate) struct Loading<'a> {
    pub(crate) now: Timestamp,
    pub(crate) parked: &'a mut Parked,
    working: Vec<Option<Task>>,
    index: HashMap<String, usize>,
}

impl<'a> Loading<'a> {
    pub(crate) fn new(now: Timestamp, parked: &'a mut Parked) -> Self {
        Loading { now, parked, working: Vec::new(), index: HashMap::new() }
    }

    /// The working queue's tasks, once every task is read: a task held blocked on a
    /// prerequisite that is not in the queue unfinished joins them (the plan acts on it).
    pub(crate) fn into_working(self) -> Result<Vec<Task>> {
        let mut working: Vec<Task> = self.working.into_iter().flatten().collect();
        let unfinished: HashSet<&str> =
            working.iter().filter(|t| !t.status().is_terminal()).map(|t| t.task_id.as_str()).collect();
        let parked = self.parked;
        let gone: Vec<Rc<str>> = parked
            .blocked
            .keys()
            .filter(|on| !parked.tasks.contains_key(&***on) && !unfinished.contains(&***on))
            .cloned()
            .collect();
        let gone: Vec<&str> = gone.iter().map(|on| &**on).collect();
        let mut released = Vec::new();
        parked.release_all(&gone, &mut released)?;
        working.extend(released);
        Ok(working)
    }

    fn working_push(&mut self, task: Task) {
        self.index.insert(task.task_id.clone(), self.working.len());
        self.working.push(Some(task));
    }

    /// Where a task goes at `now`: parked, held ready, or None (the working queue).
    fn place(&mut self, task: &Task) -> Option<Place> {
        if let Some(due) = parkable_until(task, self.now) {
            return Some(Place::Due(due));
        }
        if let Some(on) = blocked_on(task, self.now) {
            // Its prerequisite is looked for once every task is read ([`Loading::into_working`]).
            let seq = self.parked.seq();
            return Some(Place::Blocked { on: on.into(), seq });
        }
        if !ready_now(task, self.now, &|_| false) {
            return None;
        }
        let seq = self.parked.seq();
        Some(self.parked.ready_place(task, seq))
    }
}

impl Holder for Loading<'_> {
    fn clear(&mut self) {
        *self.parked = Parked::default();
        self.working.clear();
        self.index.clear();
    }

    fn snapshot_opened(&mut self, file: &std::fs::File) {
        self.parked.snapshot = file.try_clone().ok();
    }

    fn put_snapshot_line(&mut self, task: Task, offset: u64, len: u32) {
        if self.parked.snapshot.is_none() {
            return self.put_new(task);
        }
        match self.place(&task) {
            Some(place) => self.parked.insert(place, &task, Line::Snapshot(offset, len)),
            None => self.working_push(task),
        }
    }

    fn put_new(&mut self, task: Task) {
        match self.place(&task).and_then(|place| Some((place, encode(&task).ok()?))) {
            Some((place, line)) => self.parked.insert(place, &task, Line::Held(line)),
            None => self.working_push(task),
        }
    }

    fn put(&mut self, task: Task) {
        if let Some(&i) = self.index.get(&task.task_id) {
            self.working[i] = Some(task);
            return;
        }
        let _ = self.parked.forget(&task.task_id);
        self.put_new(task);
    }

    fn remove(&mut self, task_id: &str) {
        if let Some(i) = self.index.remove(task_id) {
            self.working[i] = None;
        } else {
            let _ = self.parked.forget(task_id);
        }
    }
}

#[cfg(test)]
#[path = "parked_tests.rs"]
mod tests;
