//! The real `cortex-heartbeat` daemon in a temporary home with short policy values: a task that
//! heartbeats with `cortex heartbeat` stays healthy; a hung process group (alive, never
//! heartbeating, `require_heartbeat`) goes warning → critical → presumed dead → zombie, and is
//! killed with its grandchildren.

use crate::support::health::*;
use crate::support::*;
use cortex::store::home::{Home, SpecBucket};
use std::time::Duration;

#[test]
fn daemon_cleans_up_a_hung_group_and_spares_a_heartbeating_one() {
    let t = TestHome::new();
    let home = Home::at(t.path());
    patch_json(
        &home.coord("config/heartbeat-policy.json"),
        serde_json::json!({
            "heartbeat_interval_seconds": 0.5, "warning_seconds": 1, "critical_seconds": 2,
            "zombie_threshold_seconds": 3, "require_heartbeat": true, "recheck_delay_seconds": 0.5,
            "grace_seconds": 1
        }),
    );
    let now = chrono::Utc::now();

    // A task that heartbeats through the CLI, as a real task would (env set by the worker).
    let hb_file = home.heartbeat_file("alive");
    let script = format!(
        "while true; do '{}' heartbeat --tokens 7 --message ok >/dev/null || exit 1; sleep 0.2; done",
        bin("cortex").display()
    );
    let alive = {
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .process_group(0)
            .env("CORTEX_HOME", t.path())
            .env("CORTEX_DISPATCH_ID", "alive")
            .env("CORTEX_HEARTBEAT_FILE", &hb_file)
            .env("CORTEX_USAGE_FILE", home.usage_file("alive"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        Group { ticks: cortex::base::procfs::start_ticks(pid).unwrap(), pid, child }
    };
    write_spec(&home, SpecBucket::Active, &running_spec("alive", "t-alive", "scan-worker", &alive, now, 100));

    let hung = Group::start("tail -f /dev/null & tail -f /dev/null");
    wait_until(Duration::from_secs(5), "sh and both sleeps", || hung.members().len() == 3);
    let members = hung.members();
    write_spec(&home, SpecBucket::Active, &running_spec("hung", "t-hung", "scan-worker", &hung, now, 100));

    let mut daemon = t.spawn_daemon("heartbeat");
    wait_until(Duration::from_secs(20), "the hung dispatch moved to zombie/", || {
        read_spec(&home, SpecBucket::Zombie, "hung")
            .is_some_and(|z| z["heartbeat"]["zombie_cleanup"]["completed_at"].is_string())
    });
    // The cleanup is recorded in the spec first, then as an event.
    wait_until(Duration::from_secs(5), "zombie_cleanup_completed", || {
        !t.events_of("zombie_cleanup_completed").is_empty()
    });
    for pid in &members {
        wait_until(Duration::from_secs(5), "group member gone", || {
            cortex::base::procfs::stat(*pid).is_none_or(|s| !s.is_running())
        });
    }
    let order: Vec<String> = t
        .events()
        .into_iter()
        .filter(|e| e["data"]["dispatch_id"] == "hung")
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        order,
        [
            "heartbeat_warning",
            "heartbeat_critical",
            "worker_presumed_dead",
            "zombie_detected",
            "zombie_cleanup_completed"
        ],
        "each transition once, in order"
    );

    // The heartbeating task is untouched and its record follows its beats.
    wait_until(Duration::from_secs(10), "sequence recorded in the spec", || {
        read_spec(&home, SpecBucket::Active, "alive")
            .is_some_and(|s| s["heartbeat"]["sequence"].as_u64().unwrap_or(0) >= 3)
    });
    let spec = read_spec(&home, SpecBucket::Active, "alive").unwrap();
    assert_eq!(spec["heartbeat"]["liveness"], "ok");
    assert_eq!(spec["heartbeat"]["health"]["tokens_used"], 7);
    assert_eq!(spec["heartbeat"]["message"], "ok");
    assert!(cortex::base::procfs::is_alive(alive.pid, alive.ticks));
    assert!(t.events().iter().all(|e| e["data"]["dispatch_id"] != "alive" || e["type"] != "zombie_detected"));

    let status = terminate(&mut daemon);
    assert!(status.success(), "daemon exit: {status}");
}

#[test]
fn cortex_heartbeat_needs_a_dispatch() {
    let t = TestHome::new();
    let out =
        t.cmd().arg("heartbeat").env_remove("CORTEX_DISPATCH_ID").env_remove("CORTEX_HEARTBEAT_FILE").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CORTEX_HEARTBEAT_FILE"));
    let out = t.cortex_ok(&["heartbeat", "--dispatch", "d-1", "--tokens", "3"]);
    assert!(out.contains("heartbeat 1 recorded"), "{out}");
    t.cortex_ok(&["heartbeat", "--dispatch", "d-1"]);
    let v = t.read_json("run/dispatches/d-1.heartbeat.json");
    assert_eq!(v["sequence"], 2);
    assert_eq!(v["tokens_used"], 3);
    assert_eq!(t.read_json("run/dispatches/d-1.usage.json")["tokens_used"], 3);
}
