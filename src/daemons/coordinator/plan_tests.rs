//! Unit tests of the coordinator's pure dispatch plan (`plan::plan`): no files, no clock.

use super::*;
use crate::domain::task::model::{Priority, TaskState};
use crate::domain::task::worker_types::WorkerType;

const NOW: &str = "2026-01-01T12:00:00Z";

fn at(s: &str) -> Timestamp {
    crate::base::clock::parse_ts(s).unwrap()
}

fn types() -> WorkerTypes {
    let wt = |command: Vec<String>| WorkerType {
        description: None,
        default_budget: 100,
        default_duration: 2.0,
        max_attempts: None,
        command,
        workdir: None,
        executor: Default::default(),
        slurm: None,
    };
    WorkerTypes {
        worker_types: [
            ("w".to_string(), wt(vec!["run".into(), "{task_id}".into()])),
            ("v".to_string(), wt(vec!["other".into()])),
            ("bare".to_string(), wt(vec![])),
        ]
        .into_iter()
        .collect(),
    }
}

fn budget(available: u64) -> TokenBudget {
    TokenBudget { total: available, used: 0, available, reservations: Default::default(), last_updated: None }
}

fn running(id: &str) -> Task {
    Task { state: TaskState::InProgress { started_at: at(NOW), dispatch_id: format!("dsp-{id}") }, ..Task::sample(id) }
}

/// A cycle's input with room for everything: unpaused, ample budget, 10 slots.
struct Fixture {
    tasks: Vec<Task>,
    budget: TokenBudget,
    types: Option<WorkerTypes>,
    breakers: BreakerSnapshot,
    paused: bool,
    archived: HashMap<String, TaskStatus>,
    slots: usize,
    slurm_slots: Option<usize>,
}

impl Fixture {
    fn new(tasks: Vec<Task>) -> Fixture {
        Fixture {
            tasks,
            budget: budget(10_000),
            types: Some(types()),
            breakers: BreakerSnapshot::default(),
            paused: false,
            archived: HashMap::new(),
            slots: 10,
            slurm_slots: None,
        }
    }

    fn plan(&self) -> DispatchPlan {
        plan(&CycleInput {
            tasks: &self.tasks,
            budget: &self.budget,
            types: self.types.as_ref(),
            breakers: &self.breakers,
            paused: self.paused,
            archived: &self.archived,
            now: at(NOW),
            slots: self.slots,
            slurm_slots: self.slurm_slots,
            held: None,
        })
    }

    /// The ids of the tasks the plan dispatches, in order.
    fn dispatched(&self) -> Vec<&str> {
        self.plan().dispatch.iter().map(|d| self.tasks[d.task].task_id.as_str()).collect()
    }
}

#[test]
fn a_dispatch_carries_its_reservation_template_and_timeout() {
    let own = Task { command: vec!["mine".into()], timeout_seconds: Some(5.0), budget: 7, ..Task::sample("b") };
    let f = Fixture::new(vec![Task::sample("a"), own]);
    let p = f.plan();
    assert_eq!(
        p.dispatch,
        vec![
            PlannedDispatch {
                task: 0,
                reserve: 100,
                template: Some(vec!["run".into(), "{task_id}".into()]),
                timeout_seconds: 120.0
            },
            PlannedDispatch { task: 1, reserve: 7, template: None, timeout_seconds: 5.0 },
        ]
    );
    assert!(p.fail.is_empty() && p.waiting.is_empty() && p.next_due.is_none());
}

#[test]
fn only_the_free_slots_are_filled() {
    let mut f = Fixture::new(vec![running("r1"), Task::sample("a"), Task::sample("b"), running("r2")]);
    f.slots = 3;
    assert_eq!(f.dispatched(), vec!["a"], "two of three slots are taken by running tasks");
    f.slots = 2;
    assert!(f.dispatched().is_empty(), "all slots taken");
    assert!(f.plan().waiting.is_empty(), "a task waiting for a slot gets no reason");
}

#[test]
fn a_budget_too_short_keeps_the_task_waiting_and_later_ones_may_fit() {
    let big = Task { budget: 80, ..Task::sample("big") };
    let small = Task {
        budget: 20,
        created_at: crate::base::clock::parse_ts("2026-01-01T00:00:01Z").unwrap(),
        ..Task::sample("small")
    };
    let first = Task {
        budget: 60,
        created_at: crate::base::clock::parse_ts("2025-12-31T00:00:00Z").unwrap(),
        ..Task::sample("first")
    };
    let mut f = Fixture::new(vec![big, small, first]);
    f.budget = budget(100);
    let p = f.plan();
    let ids: Vec<&str> = p.dispatch.iter().map(|d| f.tasks[d.task].task_id.as_str()).collect();
    assert_eq!(ids, vec!["first", "small"], "the reservations of this cycle count against the budget");
    assert_eq!(p.waiting, vec![(0, Some(WaitingReason::Budget))]);
}

#[test]
fn an_open_breaker_holds_its_type_and_wakes_at_half_open() {
    let half_open = at("2026-01-01T12:05:00Z");
    let mut f = Fixture::new(vec![Task::sample("a"), Task { worker_type: "v".into(), ..Task::sample("b") }]);
    f.breakers.guarded.insert("w".into(), GuardedType { trial_allowed: false, half_open_at: Some(half_open) });
    let p = f.plan();
    assert_eq!(f.dispatched(), vec!["b"], "another type is not held");
    assert_eq!(p.waiting, vec![(0, Some(WaitingReason::CircuitBreaker))]);
    assert_eq!(p.next_due, Some(half_open));
}

#[test]
fn a_half_open_breaker_lets_one_trial_through_per_cycle() {
    let mut f = Fixture::new(vec![
        Task::sample("a"),
        Task { created_at: crate::base::clock::parse_ts("2026-01-01T00:00:01Z").unwrap(), ..Task::sample("b") },
    ]);
    f.breakers
        .guarded
        .insert("w".into(), GuardedType { trial_allowed: true, half_open_at: Some(at("2026-01-01T11:00:00Z")) });
    let p = f.plan();
    assert_eq!(f.dispatched(), vec!["a"]);
    assert_eq!(p.waiting, vec![(1, Some(WaitingReason::CircuitBreaker))]);
    assert_eq!(p.next_due, None, "a half-open time already past is no wake-up");
}

#[test]
fn paused_dispatches_nothing_and_fails_nothing_but_still_tracks_delays() {
    let delayed = Task {
        not_before: Some(crate::base::clock::parse_ts("2026-01-01T13:00:00Z").unwrap()),
        ..Task::sample("later")
    };
    let unknown = Task { worker_type: "nope".into(), ..Task::sample("unknown") };
    let mut f = Fixture::new(vec![Task::sample("a"), unknown, delayed]);
    f.paused = true;
    let p = f.plan();
    assert!(p.dispatch.is_empty());
    assert!(p.fail.is_empty(), "an unknown type is only found when dispatching");
    assert_eq!(p.waiting, vec![(2, Some(WaitingReason::Delay))]);
    assert_eq!(p.next_due, Some(at("2026-01-01T13:00:00Z")));
}

#[test]
fn priority_first_then_age() {
    let mut f = Fixture::new(vec![
        Task { priority: Priority::Low, ..Task::sample("low") },
        Task {
            priority: Priority::High,
            created_at: crate::base::clock::parse_ts("2026-01-01T00:00:05Z").unwrap(),
            ..Task::sample("high-new")
        },
        Task {
            priority: Priority::High,
            created_at: crate::base::clock::parse_ts("2026-01-01T00:00:01Z").unwrap(),
            ..Task::sample("high-old")
        },
        Task {
            priority: Priority::Critical,
            created_at: crate::base::clock::parse_ts("2026-01-01T10:00:00Z").unwrap(),
            ..Task::sample("crit")
        },
    ]);
    assert_eq!(f.dispatched(), vec!["crit", "high-old", "high-new", "low"]);
    f.slots = 2;
    assert_eq!(f.dispatched(), vec!["crit", "high-old"]);
}

#[test]
fn a_retry_is_dispatched_once_due_and_waits_before() {
    let retry = |id: &str, next: &str| Task {
        state: TaskState::PendingRetry { next_retry_at: at(next), waiting_reason: Some(WaitingReason::Delay) },
        attempts: 1,
        ..Task::sample(id)
    };
    let f = Fixture::new(vec![retry("due", "2026-01-01T11:59:59Z"), retry("later", "2026-01-01T12:00:30Z")]);
    let p = f.plan();
    assert_eq!(f.dispatched(), vec!["due"]);
    assert_eq!(p.waiting, vec![(1, None)], "a retry waiting for its time carries no reason");
    assert_eq!(p.next_due, Some(at("2026-01-01T12:00:30Z")));
}

#[test]
fn prerequisites_decide_wait_dispatch_or_failure() {
    let after = |id: &str, a: &str| Task { after: Some(a.into()), ..Task::sample(id) };
    let mut f = Fixture::new(vec![
        running("pre"),
        after("waits", "pre"),
        after("goes", "done"),
        after("fails", "broken"),
        after("orphan", "missing"),
    ]);
    f.archived.insert("done".into(), TaskStatus::Completed);
    f.archived.insert("broken".into(), TaskStatus::Failed);
    let p = f.plan();
    assert_eq!(f.dispatched(), vec!["goes"]);
    assert_eq!(p.waiting, vec![(1, Some(WaitingReason::After))]);
    assert_eq!(
        p.fail,
        vec![
            (3, "prerequisite task broken ended failed".to_string()),
            (4, "prerequisite task missing does not exist".to_string())
        ]
    );
}

#[test]
fn unusable_worker_types_fail_the_task_or_hold_the_cycle() {
    let mut f = Fixture::new(vec![
        Task { worker_type: "nope".into(), ..Task::sample("unknown") },
        Task { worker_type: "bare".into(), ..Task::sample("no-command") },
        Task { worker_type: "bare".into(), command: vec!["x".into()], ..Task::sample("own-command") },
    ]);
    let p = f.plan();
    assert_eq!(f.dispatched(), vec!["own-command"]);
    assert_eq!(p.fail.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0, 1]);
    assert!(p.fail[0].1.contains("unknown worker type \"nope\""), "{}", p.fail[0].1);
    f.types = None;
    let p = f.plan();
    assert!(p.dispatch.is_empty() && p.fail.is_empty(), "unreadable types: nothing decided");
}

/// A Slurm type's tasks count against `[slurm] max_jobs`, apart from the local slots: full local
/// slots do not hold a Slurm task back, full Slurm slots do not hold a local one back, and with
/// `[slurm] enabled` false a Slurm task waits (`slurm_disabled`) while local tasks go on.
#[test]
fn slurm_tasks_count_against_max_jobs_apart_from_local_slots() {
    let mut types = types();
    let mut gpu = types.worker_types["w"].clone();
    gpu.executor = ExecutorKind::Slurm;
    types.worker_types.insert("gpu".into(), gpu);
    let on = |id: &str, wt: &str| Task { worker_type: wt.into(), ..Task::sample(id) };
    let run_on = |id: &str, wt: &str| Task { worker_type: wt.into(), ..running(id) };
    let tasks =
        vec![run_on("l1", "w"), run_on("s1", "gpu"), on("l2", "w"), on("s2", "gpu"), on("s3", "gpu"), on("l3", "v")];
    let mut f = Fixture { types: Some(types), slots: 1, slurm_slots: Some(2), ..Fixture::new(tasks) };
    // Local: 1 slot, taken by l1. Slurm: 2 slots, s1 holds one.
    assert_eq!(f.dispatched(), vec!["s2"]);
    assert_eq!(free_slots(&f.tasks, f.types.as_ref(), 1, Some(2)), (0, 1));
    f.slots = 3;
    assert_eq!(f.dispatched(), vec!["l2", "s2", "l3"]);
    f.slurm_slots = Some(3);
    assert_eq!(f.dispatched(), vec!["l2", "s2", "s3", "l3"]);
    f.slurm_slots = None;
    let p = f.plan();
    assert_eq!(p.dispatch.iter().map(|d| f.tasks[d.task].task_id.as_str()).collect::<Vec<_>>(), vec!["l2", "l3"]);
    for i in [3, 4] {
        assert!(p.waiting.contains(&(i, Some(WaitingReason::SlurmDisabled))), "{:?}", p.waiting);
    }
}
