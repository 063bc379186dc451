//! Lock deadlines across processes: while another process holds a store lock, `Store::update`
//! gives up at its deadline with an error naming the lock file and the holder's PID; once the
//! holder dies (SIGKILL: the kernel drops its flock) a waiter gets the lock at once.

use crate::support::reexec::{self, child, kill_hard, param, param_name, report};
use crate::support::*;
use cortex::domain::task::model::TaskQueue;
use cortex::{Error, Home, Store};
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Child: takes lock LOCK and holds it until its stdin closes or it is killed.
#[test]
fn child_lock_holder() {
    if reexec::role().as_deref() != Some("holder") {
        return;
    }
    let store = Store::new(Home::at(param::<String>("HOME")));
    let _guard = store
        .lock_named(cortex::store::LockName::parse(&param::<String>("LOCK")).expect("a lock name"))
        .expect("take the lock");
    report("locked");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

#[test]
fn a_held_lock_times_out_naming_the_lock_and_the_holder_pid() {
    let h = TestHome::new();
    let mut holder = child(module_path!(), "child_lock_holder", "holder")
        .env(param_name("HOME"), h.path())
        .env(param_name("LOCK"), "task-queue")
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn holder");
    let lock_file = h.join("coordination/.locks/task-queue.lock");
    let holder_note = format!("pid {}", holder.id());
    wait_until(Duration::from_secs(10), "the child to hold the lock", || {
        std::fs::read_to_string(&lock_file).is_ok_and(|s| s.contains(&holder_note))
    });

    let deadline = Duration::from_millis(400);
    let store = Store::new(Home::at(h.path())).with_lock_timeout(deadline);
    let before = std::fs::read(h.join("coordination/task-queue.json")).unwrap();
    let started = Instant::now();
    let err = store.update::<TaskQueue, _>(|q| {
        q.tasks.clear();
        Ok(())
    });
    let waited = started.elapsed();
    let err = err.expect_err("the lock is held by another process");
    assert!(matches!(err, Error::LockTimeout { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&lock_file.display().to_string()), "names the lock file: {msg}");
    assert!(msg.contains(&holder_note), "names the holder's PID: {msg}");
    assert!(waited >= deadline, "gave up early, after {waited:?}");
    assert!(waited < deadline + Duration::from_millis(1500), "overran its deadline: {waited:?}");
    assert_eq!(std::fs::read(h.join("coordination/task-queue.json")).unwrap(), before, "nothing written");

    // A waiter with a long deadline gets the lock as soon as the holder dies.
    let waiter = std::thread::spawn({
        let home = h.path().to_path_buf();
        move || {
            let store = Store::new(Home::at(home)).with_lock_timeout(Duration::from_secs(20));
            let r = store.update::<TaskQueue, _>(|_| Ok(()));
            (r.map_err(|e| e.to_string()), Instant::now())
        }
    });
    let killed_at = Instant::now();
    kill_hard(&mut holder);
    let (r, got_at) = waiter.join().unwrap();
    r.expect("the lock is free once its holder died");
    let latency = got_at.saturating_duration_since(killed_at);
    eprintln!("timeout after {waited:?} (deadline {deadline:?}); lock taken {latency:?} after the holder's SIGKILL");
    assert!(latency < Duration::from_secs(2), "the waiter should wake when the lock is freed: {latency:?}");
}
