//! Unit tests of the coordinator's held tasks (`parked`): parked ones by due time, ready ones in
//! dispatch order, and the plan made over the ready ones lent to it equal to the plan of the
//! whole queue.

use super::*;
use crate::daemons::coordinator::plan::{self, BreakerSnapshot, CycleInput, DispatchPlan, GuardedType};
use crate::domain::task::model::TokenBudget;
use crate::domain::task::worker_types::WorkerType;
use chrono::Duration;

fn task(id: &str, state: TaskState, not_before: Option<Timestamp>) -> Task {
    Task { task_id: id.into(), state, not_before, ..Task::sample(id) }
}

fn ids(tasks: &[Task]) -> Vec<&str> {
    tasks.iter().map(|t| t.task_id.as_str()).collect()
}

fn queued() -> TaskState {
    TaskState::Queued { waiting_reason: None }
}

#[test]
fn parks_only_what_the_plan_leaves_alone_and_unparks_in_due_order() {
    let now = crate::base::clock::now();
    let later = now + Duration::seconds(60);
    let delay = TaskState::Queued { waiting_reason: Some(WaitingReason::Delay) };
    let mut tasks = vec![
        task("a", delay.clone(), Some(now + Duration::seconds(120))),
        task("b", queued(), Some(later)),
        task("c", delay.clone(), Some(later)),
        task("d", delay.clone(), Some(now - Duration::seconds(1))),
        Task { after: Some("a".into()), ..task("e", queued(), None) },
    ];
    let a = tasks[0].clone();
    let mut p = Parked::default();
    p.park_from(&mut tasks, now, &HashSet::new(), &|_| false).unwrap();
    assert_eq!(ids(&tasks), ["b", "e"], "a reason not yet recorded and a prerequisite stay");
    assert_eq!(p.len(), 3, "a and c parked, d (due) held ready");
    assert_eq!(p.counts().total, 3);
    assert_eq!(p.counts().queued, 3);
    assert_eq!(p.counts().waiting.get("delay"), Some(&3));
    assert_eq!(p.next_due(), Some(later));
    assert_eq!(p.status("a"), Some(TaskStatus::Queued));
    assert_eq!(p.lines().count(), 3);
    assert_eq!(p.unpark_due(&mut tasks, now).unwrap(), 0);
    assert_eq!(p.unpark_due(&mut tasks, later).unwrap(), 1);
    assert_eq!(tasks.last().map(|t| t.task_id.as_str()), Some("c"));
    assert_eq!(p.take("a").unwrap(), Some(a), "a parked task reads back whole");
    assert_eq!(p.take("d").unwrap().map(|t| t.task_id), Some("d".to_string()));
    assert_eq!(p.len(), 0);
    assert_eq!(p.counts(), &QueueCounts { waiting: Default::default(), ..QueueCounts::default() });
    assert_eq!(p.next_due(), None);
    assert_eq!(p.ready_head(None), None);
}

#[test]
fn ready_tasks_are_lent_in_dispatch_order_and_held_again_in_their_place() {
    let now = crate::base::clock::now();
    let t0 = now - Duration::seconds(100);
    let at = |s: i64| t0 + Duration::seconds(s);
    let mk = |id: &str, priority: Priority, created: i64| Task {
        priority,
        created_at: at(created),
        ..task(id, queued(), None)
    };
    let retry = TaskState::PendingRetry { next_retry_at: now - Duration::seconds(1), waiting_reason: None };
    let mut tasks = vec![
        mk("low-old", Priority::Low, 0),
        mk("med-new", Priority::Medium, 9),
        mk("med-old", Priority::Medium, 1),
        mk("tie-1", Priority::Medium, 5),
        mk("tie-2", Priority::Medium, 5),
        Task { priority: Priority::High, created_at: at(3), ..task("retry-due", retry, None) },
        mk("crit", Priority::Critical, 50),
    ];
    let mut p = Parked::default();
    p.park_from(&mut tasks, now, &HashSet::new(), &|_| false).unwrap();
    assert!(tasks.is_empty(), "every task can run now: all held");
    assert_eq!(p.counts().total, 7);
    assert_eq!(p.counts().pending_retry, 1);
    let head = p.ready_head(None).unwrap();
    assert_eq!((head.priority, head.created_at), (Priority::Critical, at(50)));

    let mut lent = Vec::new();
    assert_eq!(p.lend_ready(3, &mut lent, &no_skip()).unwrap(), 3);
    assert_eq!(ids(&lent), ["crit", "retry-due", "med-old"]);
    assert_eq!(p.counts().total, 4, "lent tasks are counted by the working queue, not here");
    assert!(!p.contains("crit"));
    let head = p.ready_head(None).unwrap();
    assert_eq!((head.priority, head.created_at), (Priority::Medium, at(5)));

    // The cycle dispatched "crit", recorded a reason on "retry-due", left "med-old" as it was.
    lent[0].state = TaskState::InProgress { started_at: now, dispatch_id: "dsp-1".into() };
    assert!(lent[1].set_waiting_reason(Some(WaitingReason::Budget)));
    let changed: HashSet<String> = ["crit".to_string(), "retry-due".to_string()].into();
    p.park_from(&mut lent, now, &changed, &|_| false).unwrap();
    assert_eq!(ids(&lent), ["crit"], "the dispatched task stays in the working queue");
    assert_eq!(p.counts().waiting.get("budget"), Some(&1), "the changed task is held as it is now");

    let mut all = Vec::new();
    assert_eq!(p.lend_ready(100, &mut all, &no_skip()).unwrap(), 6);
    assert_eq!(
        ids(&all),
        ["retry-due", "med-old", "tie-1", "tie-2", "med-new", "low-old"],
        "lent and held again, each keeps its place (ties in the order they were held)"
    );
    assert_eq!(all[0].waiting_reason(), Some(&WaitingReason::Budget));
    assert_eq!(p.ready_head(None), None);
    assert_eq!(p.counts().total, 0);
}

#[test]
fn a_task_that_cannot_run_now_is_not_held_ready() {
    let now = crate::base::clock::now();
    let retry_later = TaskState::PendingRetry { next_retry_at: now + Duration::seconds(30), waiting_reason: None };
    let mut tasks = vec![
        Task { after: Some("x".into()), ..task("waits-for-x", queued(), None) },
        task("retry-later", retry_later, None),
        task("delay-unrecorded", queued(), Some(now + Duration::seconds(5))),
        task("running", TaskState::InProgress { started_at: now, dispatch_id: "d".into() }, None),
    ];
    let mut p = Parked::default();
    p.park_from(&mut tasks, now, &HashSet::new(), &|_| false).unwrap();
    assert_eq!(ids(&tasks), ["waits-for-x", "delay-unrecorded", "running"]);
    assert_eq!(p.ready_head(None), None, "the retry is parked, not ready");
    assert_eq!(p.next_due(), Some(now + Duration::seconds(30)));
    // Its time comes: back in the working queue, then held ready after the cycle.
    let mut working = Vec::new();
    let at = now + Duration::seconds(30);
    assert_eq!(p.unpark_due(&mut working, at).unwrap(), 1);
    p.park_from(&mut working, at, &HashSet::new(), &|_| false).unwrap();
    assert!(working.is_empty());
    assert!(p.ready_head(None).is_some());
    // Its prerequisite met later: a task with `after` is held ready only once it has none.
    let mut w = vec![Task { after: None, ..tasks[0].clone() }];
    p.park_from(&mut w, at, &HashSet::new(), &|_| false).unwrap();
    assert!(w.is_empty() && p.contains("waits-for-x"));
}

#[test]
fn a_held_ready_task_taken_out_by_a_cancel_is_gone_from_the_order() {
    let now = crate::base::clock::now();
    let mut tasks = vec![task("a", queued(), None), task("b", queued(), None), task("c", queued(), None)];
    let mut p = Parked::default();
    p.park_from(&mut tasks, now, &HashSet::new(), &|_| false).unwrap();
    let b = p.take("b").unwrap().unwrap();
    assert_eq!(b.task_id, "b");
    assert_eq!(p.take("b").unwrap(), None);
    assert_eq!(p.counts().total, 2);
    let mut lent = Vec::new();
    p.lend_ready(10, &mut lent, &no_skip()).unwrap();
    assert_eq!(ids(&lent), ["a", "c"]);
    assert_eq!(p.ready_worker_types().count(), 0, "no ready task left: no worker type to ask about");
}

#[test]
fn the_head_says_when_a_free_slurm_slot_matters() {
    let now = crate::base::clock::now();
    let mut types = sample_types();
    let mut p = Parked::default();
    let mut tasks = vec![task("a", queued(), None)];
    p.park_from(&mut tasks, now, &HashSet::new(), &|_| false).unwrap();
    assert!(!p.ready_head(Some(&types)).unwrap().beyond_local, "only local tasks held");
    assert!(p.ready_head(None).unwrap().beyond_local, "without worker types nothing is known");
    types.worker_types.get_mut("w").unwrap().executor = ExecutorKind::Slurm;
    assert!(p.ready_head(Some(&types)).unwrap().beyond_local, "its type runs on Slurm now");
    types.worker_types.get_mut("w").unwrap().executor = ExecutorKind::Local;
    let mut more = vec![Task { executor: Some(ExecutorKind::Slurm), ..task("b", queued(), None) }];
    p.park_from(&mut more, now, &HashSet::new(), &|_| false).unwrap();
    assert!(p.ready_head(Some(&types)).unwrap().beyond_local, "a task of its own on Slurm");
    p.take("b").unwrap();
    let mut unknown = vec![Task { worker_type: "nope".into(), ..task("c", queued(), None) }];
    p.park_from(&mut unknown, now, &HashSet::new(), &|_| false).unwrap();
    assert!(p.ready_head(Some(&types)).unwrap().beyond_local, "an unknown type fails on any free slot");
    let mut wts: Vec<&str> = p.ready_worker_types().collect();
    wts.sort();
    assert_eq!(wts, ["nope", "w"]);
}

/// Passes over nothing (no worker types known).
fn no_skip() -> Skip<'static> {
    static NONE: std::sync::LazyLock<BreakerSnapshot> = std::sync::LazyLock::new(BreakerSnapshot::default);
    Skip { available: 0, types: None, breakers: &NONE }
}

#[test]
fn tasks_waiting_for_budget_they_cannot_get_are_passed_over_not_lent() {
    let now = crate::base::clock::now();
    let types = sample_types();
    let budget = |id: &str, b: u64| Task {
        budget: b,
        state: TaskState::Queued { waiting_reason: Some(WaitingReason::Budget) },
        ..task(id, queued(), None)
    };
    let mut tasks = vec![
        budget("big-1", 500),
        budget("big-2", 500),
        Task { created_at: now, ..task("fresh", queued(), None) },
        budget("small", 10),
        Task { worker_type: "s".into(), created_at: now, ..budget("slurm", 500) },
    ];
    let mut p = Parked::default();
    p.park_from(&mut tasks, now, &HashSet::new(), &|_| false).unwrap();
    let mut breakers = BreakerSnapshot::default();
    let skip = Skip { available: 100, types: Some(&types), breakers: &breakers };
    p.start_lending();
    let mut lent = Vec::new();
    assert_eq!(p.lend_ready(2, &mut lent, &skip).unwrap(), 2);
    assert_eq!(ids(&lent), ["small", "fresh"], "those waiting for more than there is are passed over");
    let head = p.ready_head(Some(&types)).unwrap();
    assert_eq!(head.created_at, now, "the head is after what was passed over: the Slurm task");
    assert_eq!(p.lend_ready(5, &mut lent, &skip).unwrap(), 1, "a Slurm type's is not passed over");
    assert_eq!(p.ready_head(Some(&types)), None);
    assert!(p.contains("big-1") && p.contains("big-2"), "passed over, still held");
    // Next cycle, with budget enough, or the type guarded by its breaker: lent.
    p.park_from(&mut lent, now, &HashSet::new(), &|_| false).unwrap();
    breakers.guarded.insert("w".into(), GuardedType { trial_allowed: true, half_open_at: None });
    let skip = Skip { available: 100, types: Some(&types), breakers: &breakers };
    p.start_lending();
    let mut again = Vec::new();
    assert_eq!(p.lend_ready(10, &mut again, &skip).unwrap(), 5, "a guarded type's are not passed over");
}

fn sample_types() -> WorkerTypes {
    let wt = |command: Vec<&str>, executor: ExecutorKind| WorkerType {
        description: None,
        default_budget: 100,
        default_duration: 2.0,
        max_attempts: None,
        command: command.into_iter().map(String::from).collect(),
        workdir: None,
        executor,
        slurm: None,
    };
    WorkerTypes {
        worker_types: [
            ("w".to_string(), wt(vec!["run", "{task_id}"], ExecutorKind::Local)),
            ("v".to_string(), wt(vec!["other"], ExecutorKind::Local)),
            ("bare".to_string(), wt(vec![], ExecutorKind::Local)),
            ("s".to_string(), wt(vec!["sbatch-me"], ExecutorKind::Slurm)),
        ]
        .into_iter()
        .collect(),
    }
}

/// One random cycle's input: the whole queue and what the plan decides from.
struct Case {
    tasks: Vec<Task>,
    budget: TokenBudget,
    types: Option<WorkerTypes>,
    breakers: BreakerSnapshot,
    paused: bool,
    archived: HashMap<String, TaskStatus>,
    slots: usize,
    slurm_slots: Option<usize>,
    now: Timestamp,
}

fn random_case(rng: &mut fastrand::Rng) -> Case {
    let now = crate::base::clock::parse_ts("2026-06-01T12:00:00Z").unwrap();
    let n = rng.usize(0..40);
    // Distinct creation times: ties are ordered by position in one and by holding order in the
    // other, both fine, but not comparable.
    let mut created: Vec<i64> = (0..n as i64).collect();
    rng.shuffle(&mut created);
    let priorities = [Priority::Low, Priority::Medium, Priority::High, Priority::Critical];
    let wts = ["w", "w", "w", "v", "bare", "s", "nope"];
    let mut tasks: Vec<Task> = (0..n)
        .map(|i| {
            let id = format!("t{i:02}");
            let reason =
                [None, Some(WaitingReason::Budget), Some(WaitingReason::CircuitBreaker), Some(WaitingReason::After)]
                    [rng.usize(0..4)]
                .clone();
            let state = match rng.u8(0..10) {
                0 => TaskState::InProgress { started_at: now, dispatch_id: format!("d{i}") },
                1 => TaskState::PendingRetry { next_retry_at: now - Duration::seconds(5), waiting_reason: reason },
                _ => TaskState::Queued { waiting_reason: reason },
            };
            Task {
                priority: priorities[rng.usize(0..4)],
                created_at: now - Duration::seconds(1000 - created[i]),
                worker_type: wts[rng.usize(0..wts.len())].into(),
                budget: rng.u64(0..300),
                executor: [None, None, None, Some(ExecutorKind::Slurm), Some(ExecutorKind::Local)][rng.usize(0..5)],
                command: if rng.bool() { vec!["true".into()] } else { vec![] },
                ..task(&id, state, None)
            }
        })
        .collect();
    // Some wait for another task (in the queue or not) or for an archived one.
    for t in tasks.iter_mut() {
        if rng.u8(0..8) == 0 {
            t.after = Some(match rng.u8(0..3) {
                0 => format!("t{:02}", rng.usize(0..n)),
                1 => "archived-ok".into(),
                _ => "gone".into(),
            });
        }
    }
    let mut breakers = BreakerSnapshot::default();
    if rng.u8(0..3) == 0 {
        let g = GuardedType { trial_allowed: rng.bool(), half_open_at: Some(now + Duration::seconds(9)) };
        breakers.guarded.insert(["w", "v", "s"][rng.usize(0..3)].into(), g);
    }
    let available = rng.u64(0..1500);
    Case {
        tasks,
        budget: TokenBudget {
            total: available,
            used: 0,
            available,
            reservations: Default::default(),
            last_updated: None,
        },
        types: (rng.u8(0..10) != 0).then(sample_types),
        breakers,
        paused: rng.u8(0..10) == 0,
        archived: [("archived-ok".to_string(), TaskStatus::Completed)].into(),
        slots: rng.usize(0..6),
        slurm_slots: [None, Some(0), Some(1), Some(3)][rng.usize(0..4)],
        now,
    }
}

impl Case {
    fn input<'a>(&'a self, tasks: &'a [Task], archived: &'a HashMap<String, TaskStatus>) -> CycleInput<'a> {
        CycleInput {
            tasks,
            budget: &self.budget,
            types: self.types.as_ref(),
            breakers: &self.breakers,
            paused: self.paused,
            archived,
            now: self.now,
            slots: self.slots,
            slurm_slots: self.slurm_slots,
            held: None,
        }
    }
}

/// What a plan does by task id (indices differ between the two ways of planning): dispatches,
/// failures, waiting reasons.
type ById = (Vec<String>, Vec<(String, String)>, Vec<(String, Option<WaitingReason>)>);

fn by_id(tasks: &[Task], p: &DispatchPlan) -> ById {
    let id = |i: usize| tasks[i].task_id.clone();
    (
        p.dispatch.iter().map(|d| id(d.task)).collect(),
        p.fail.iter().map(|(i, e)| (id(*i), e.clone())).collect(),
        p.waiting.iter().map(|(i, r)| (id(*i), r.clone())).collect(),
    )
}

/// The plan of a whole queue, and the plan the coordinator makes with the ready tasks held
/// apart and lent to it as `Coordinator::cycle` does (and the tasks blocked on a prerequisite
/// held apart, never lent), decide the same for random queues.
#[test]
fn the_plan_over_lent_ready_tasks_is_the_plan_of_the_whole_queue() {
    let mut rng = fastrand::Rng::with_seed(19);
    let mut lent_more = 0;
    let mut blocked = 0;
    for case_no in 0..3000 {
        let case = random_case(&mut rng);
        let whole = plan::plan(&case.input(&case.tasks, &case.archived));

        let mut working = case.tasks.clone();
        let mut p = Parked::default();
        let completed = |a: &str| case.archived.get(a) == Some(&TaskStatus::Completed);
        p.park_from(&mut working, case.now, &HashSet::new(), &completed).unwrap();
        blocked += p.blocked.values().map(|d| d.len()).sum::<usize>();
        // Prerequisites held apart are seen with their status, as the cycle does.
        let mut archived = case.archived.clone();
        for a in working.iter().filter_map(|t| t.after.as_deref()) {
            if let Some(s) = p.status(a) {
                archived.insert(a.to_string(), s);
            }
        }
        let (free, free_slurm) = plan::free_slots(&working, case.types.as_ref(), case.slots, case.slurm_slots);
        let mut lend = free + free_slurm;
        let mut rounds = 0;
        p.start_lending();
        let held = loop {
            if lend > 0 {
                let skip =
                    Skip { available: case.budget.available, types: case.types.as_ref(), breakers: &case.breakers };
                p.lend_ready(lend, &mut working, &skip).unwrap();
            }
            let input = CycleInput { held: p.ready_head(case.types.as_ref()), ..case.input(&working, &archived) };
            let decided = plan::plan(&input);
            if !decided.needs_held {
                break decided;
            }
            rounds += 1;
            lend = lend.max(1) * 2;
        };
        lent_more += usize::from(rounds > 0);
        let (mut want, mut got) = (by_id(&case.tasks, &whole), by_id(&working, &held));
        // A waiting reason the task has already changes nothing (the tasks passed over).
        let unchanged = |all: &[Task], (id, r): &(String, Option<WaitingReason>)| {
            all.iter().any(|t| t.task_id == *id && t.waiting_reason() == r.as_ref())
        };
        want.2.retain(|w| !unchanged(&case.tasks, w));
        got.2.retain(|w| !unchanged(&case.tasks, w));
        assert_eq!(got.0, want.0, "case {case_no}: dispatches");
        assert_eq!(got.1, want.1, "case {case_no}: failures");
        assert_eq!(got.2, want.2, "case {case_no}: waiting reasons");
        assert_eq!(held.next_due, whole.next_due, "case {case_no}: next due");
    }
    assert!(lent_more > 100, "the cases exercise lending more than the free slots ({lent_more})");
    assert!(blocked > 100, "the cases hold tasks blocked on a prerequisite ({blocked})");
}

/// Blocked tasks: held only while their prerequisite is in the queue unfinished (working or
/// held), counted and written, taken out one by one (a cancel), released together in the order
/// they were held; a load holds them as it reads and releases those whose prerequisite is not
/// in the queue unfinished.
#[test]
fn tasks_blocked_on_a_prerequisite_are_held_until_it_is_released() {
    let now = crate::base::clock::now();
    let after = |id: &str, on: &str| Task {
        after: Some(on.into()),
        ..task(id, TaskState::Queued { waiting_reason: Some(WaitingReason::After) }, None)
    };
    let running = task("gate", TaskState::InProgress { started_at: now, dispatch_id: "d1".into() }, None);
    let mut tasks = vec![
        running.clone(),
        after("b1", "gate"),
        after("b2", "gate"),
        after("b3", "gate"),
        after("chain", "b1"),
        after("orphan", "gone"),
        // Not yet recorded as waiting for it: the plan records it first.
        Task { after: Some("gate".into()), ..task("fresh", queued(), None) },
    ];
    let mut p = Parked::default();
    p.park_from(&mut tasks, now, &HashSet::new(), &|_| false).unwrap();
    assert_eq!(ids(&tasks), ["gate", "orphan", "fresh"]);
    assert_eq!(p.len(), 4);
    assert!(p.has_dependents("gate") && p.has_dependents("b1"));
    assert_eq!(p.counts().waiting.get("after"), Some(&4));
    assert_eq!(p.lines().count(), 4, "written at a compaction");
    assert_eq!(p.status("b2"), Some(TaskStatus::Queued), "found as a prerequisite");
    // A cancel takes one out.
    assert_eq!(p.take("b2").unwrap().map(|t| t.task_id), Some("b2".to_string()));
    let mut out = Vec::new();
    assert_eq!(p.release("gate", &mut out).unwrap(), 2);
    assert_eq!(ids(&out), ["b1", "b3"], "released in the order they were held");
    assert!(!p.has_dependents("gate"));
    assert_eq!(p.len(), 1, "the chain still waits for b1");
    assert_eq!(p.release("gate", &mut out).unwrap(), 0);
    // A prerequisite completed: its dependents are held ready, none decoded, lent in order.
    let b1 = task("b1", TaskState::InProgress { started_at: now, dispatch_id: "d2".into() }, None);
    let mut more = vec![b1, after("r1", "b1"), after("r2", "b1")];
    p.park_from(&mut more, now, &HashSet::new(), &|_| false).unwrap();
    assert_eq!(ids(&more), ["b1"], "b1 runs: they wait for it");
    assert_eq!(p.release_ready("b1").unwrap(), 3);
    assert!(!p.has_dependents("b1"));
    assert_eq!(p.len(), 3, "held ready");
    assert_eq!(p.counts().total, 3);
    let mut lent = Vec::new();
    assert_eq!(p.lend_ready(3, &mut lent, &no_skip()).unwrap(), 3);
    assert_eq!(ids(&lent), ["chain", "r1", "r2"], "in the order they were held");

    // A load: held as read; those whose prerequisite is not in the queue unfinished released.
    let done = task("done", TaskState::Completed { started_at: None, completed_at: now }, None);
    let mut p = Parked::default();
    let mut loading = Loading::new(now, &mut p);
    for t in [after("w1", "gate"), after("w2", "done"), after("w3", "nobody"), after("w4", "w1"), running, done] {
        loading.put_new(t);
    }
    let working = loading.into_working().unwrap();
    assert_eq!(ids(&working), ["gate", "done", "w2", "w3"]);
    assert_eq!(p.len(), 2, "w1 on the running gate, w4 on the held w1");
}
