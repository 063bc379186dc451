//! The real `cortex-heartbeat` and `cortex-auto-fix` daemons together in a temporary home: a
//! hung task becomes a zombie (heartbeat), its task is restarted with backoff (auto-fix), its
//! reservation is returned; failures written into `failed/` trip the type's circuit breaker.

use crate::support::health::*;
use crate::support::*;
use cortex::domain::task::TaskState;
use cortex::store::home::{Home, SpecBucket};
use std::time::Duration;

#[test]
fn hung_task_is_cleaned_up_and_restarted_and_failures_trip_the_breaker() {
    let t = TestHome::new();
    let home = Home::at(t.path());
    patch_json(
        &home.coord("config/heartbeat-policy.json"),
        serde_json::json!({
            "heartbeat_interval_seconds": 0.5, "warning_seconds": 0.5, "critical_seconds": 1,
            "zombie_threshold_seconds": 1.5, "require_heartbeat": true, "recheck_delay_seconds": 0.2, "grace_seconds": 1
        }),
    );
    let hung = Group::start("tail -f /dev/null & tail -f /dev/null");
    wait_until(Duration::from_secs(5), "sh and both sleeps", || hung.members().len() == 3);
    let now = chrono::Utc::now();
    write_queue(&home, vec![in_progress_task("task-1", "scan-worker", "disp-1", 1, 500)]);
    write_budget(&home, 10_000, 0, &[("disp-1", 500)]);
    write_spec(&home, SpecBucket::Active, &running_spec("disp-1", "task-1", "scan-worker", &hung, now, 500));

    let mut heartbeat = t.spawn_daemon("heartbeat");
    let mut autofix = t.spawn_daemon("auto-fix");
    wait_until(Duration::from_secs(20), "the task restarted by auto-fix", || {
        matches!(read_queue(&home).tasks[0].state, TaskState::PendingRetry { .. })
    });
    let task = read_queue(&home).tasks.remove(0);
    let TaskState::PendingRetry { next_retry_at, .. } = &task.state else { unreachable!() };
    let delay = (*next_retry_at - chrono::Utc::now()).num_seconds();
    assert!((25..=30).contains(&delay), "first retry after about 30 s, got {delay}");
    assert!(hung.members().is_empty(), "the hung group is gone before the restart");
    let z = read_spec(&home, SpecBucket::Zombie, "disp-1").unwrap();
    assert!(z["heartbeat"]["zombie_cleanup"]["completed_at"].is_string());
    let budget = read_budget(&home);
    assert!(budget.reservations.is_empty());
    assert_eq!(budget.available, 10_000);
    // The decision is written first, then recorded.
    wait_until(Duration::from_secs(5), "auto_restart_scheduled", || t.events_of("auto_restart_scheduled").len() == 1);

    // Five failures of fix-worker written while the daemon runs: it wakes on the change and
    // the fix-worker breaker opens (scan-worker's, with one zombie, stays closed).
    for i in 0..5 {
        let s = cortex::domain::task::DispatchRecord {
            state: cortex::domain::task::DispatchState::Failed {
                ended_at: chrono::Utc::now(),
                exit_code: Some(2),
                signal: None,
                duration_s: Some(0.1),
                error: "exit 2".into(),
            },
            ..running_spec(&format!("f{i}"), &format!("tf{i}"), "fix-worker", &hung, now, 0)
        };
        write_spec(&home, SpecBucket::Failed, &s);
    }
    wait_until(Duration::from_secs(20), "fix-worker breaker open", || {
        std::fs::read(home.coord("circuit-breakers.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v["breakers"]["fix-worker"]["state"] == "open")
    });
    wait_until(Duration::from_secs(5), "circuit_breaker_tripped", || {
        !t.events_of("circuit_breaker_tripped").is_empty()
    });
    assert_eq!(t.events_of("circuit_breaker_tripped").len(), 1);
    let store = cortex::store::Store::new(home.clone());
    assert!(!cortex::daemons::auto_fix::is_dispatch_allowed(&store, "fix-worker", chrono::Utc::now()).unwrap());
    assert!(cortex::daemons::auto_fix::is_dispatch_allowed(&store, "scan-worker", chrono::Utc::now()).unwrap());

    assert!(terminate(&mut autofix).success());
    assert!(terminate(&mut heartbeat).success());
}
