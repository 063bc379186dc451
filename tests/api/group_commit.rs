//! The scheduler's group commit behind `POST /scheduler/pause|resume`: many concurrent
//! requests are each answered correctly, the file ends in the state of the last change, the
//! audit trail has exactly one event per change in order, and a failed batch fails all of its
//! requests without changing anything or holding the server's handler threads.
use crate::support::api::*;
use crate::support::*;
use serde_json::Value;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// `threads` clients, each sending `rounds` pause or resume requests (alternating, starting with
/// a pause on even clients) at the same moment; every response.
fn fire(api: &Api, threads: usize, rounds: usize) -> Vec<(bool, u16, Value)> {
    let barrier = Arc::new(Barrier::new(threads));
    let port = api.port;
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                (0..rounds)
                    .map(|r| {
                        let pause = (i + r) % 2 == 0;
                        let (path, body): (&str, &[u8]) = if pause {
                            ("/scheduler/pause", br#"{"reason": "group commit test"}"#)
                        } else {
                            ("/scheduler/resume", b"")
                        };
                        let (status, v) = json_request(port, "POST", path, &[], body);
                        (pause, status, v)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
}

#[test]
fn concurrent_pauses_and_resumes_are_each_answered_and_leave_one_consistent_history() {
    let h = TestHome::new();
    let api = Api::start(&h);
    let responses = fire(&api, 100, 3);
    assert_eq!(responses.len(), 300);

    let mut changed = Vec::new();
    for (pause, status, v) in &responses {
        assert_eq!(*status, 200, "{v}");
        assert_eq!(v["status"], "success", "{v}");
        assert_eq!(v["paused"], *pause, "{v}");
        let expected = match (pause, v["changed"].as_bool()) {
            (true, Some(true)) => "Scheduler paused",
            (true, Some(false)) => "Scheduler already paused",
            (false, Some(true)) => "Scheduler resumed",
            (false, Some(false)) => "Scheduler already running",
            _ => panic!("no changed flag: {v}"),
        };
        assert_eq!(v["message"], expected, "{v}");
        if v["changed"] == true {
            changed.push((*pause, v["timestamp"].as_str().unwrap().to_string()));
        }
    }
    assert!(!changed.is_empty(), "no request changed the state");

    // The audit trail: one event per change, alternating (each change flips the state), and
    // the same timestamps the clients were given.
    let events: Vec<Value> = h
        .events()
        .into_iter()
        .filter(|e| e["type"] == "scheduler_paused" || e["type"] == "scheduler_resumed")
        .collect();
    assert_eq!(events.len(), changed.len(), "one event per state change");
    let mut history = Vec::new();
    for e in &events {
        let pause = e["type"] == "scheduler_paused";
        let at = if pause { &e["data"]["paused_at"] } else { &e["data"]["resumed_at"] };
        history.push((pause, at.as_str().unwrap().to_string()));
    }
    for (i, w) in history.windows(2).enumerate() {
        assert_ne!(w[0].0, w[1].0, "events {i} and {} do not alternate: {history:?}", i + 1);
    }
    assert!(history[0].0, "the scheduler starts running, so the first change is a pause");
    let mut from_events = history.clone();
    let mut from_clients = changed.clone();
    from_events.sort();
    from_clients.sort();
    assert_eq!(from_events, from_clients, "events and responses disagree");

    // The file holds the effect of the last change.
    let state = h.read_json("coordination/scheduler-state.json");
    let (last_pause, _) = history.last().unwrap();
    assert_eq!(state["paused"], *last_pause, "{state}");
    assert_eq!(state["state"], if *last_pause { "paused" } else { "running" }, "{state}");
    let last_of = |pause: bool| history.iter().rev().find(|(p, _)| *p == pause).map(|(_, at)| at.clone());
    assert_eq!(state["paused_at"].as_str().map(str::to_string), last_of(true), "{state}");
    assert_eq!(state["resumed_at"].as_str().map(str::to_string), last_of(false), "{state}");
    assert_eq!(state["reason"], "group commit test");

    // What the API says now agrees, and the home is valid.
    let (status, s) = api.get("/scheduler/status");
    assert_eq!(status, 200);
    assert_eq!(s["paused"], *last_pause, "{s}");
    h.cortex_ok(&["validate"]);
}

#[test]
fn a_batch_that_cannot_lock_fails_every_request_and_changes_nothing_while_others_are_served() {
    let h = TestHome::new();
    h.set_config("store", "lock_timeout_seconds", "2.0");
    let api = Api::start(&h);
    let state_path = h.join("coordination/scheduler-state.json");
    let before = std::fs::read(&state_path).ok();
    let events_before = h.events().len();

    // Someone else holds the scheduler lock (as a stuck process would).
    let store = cortex::Store::new(cortex::Home::at(h.path()));
    let held = store.lock(cortex::store::files::SCHEDULER_STATE).unwrap();
    let port = api.port;
    let n = 20;
    let (sent_tx, sent_rx) = std::sync::mpsc::channel();
    let pending: Vec<_> = (0..n)
        .map(|_| {
            let sent_tx = sent_tx.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                s.write_all(b"POST /scheduler/pause HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n").unwrap();
                sent_tx.send(()).unwrap();
                let (status, _, body) = read_response(&mut BufReader::new(s)).unwrap();
                (status, serde_json::from_slice::<Value>(&body).unwrap())
            })
        })
        .collect();
    for _ in 0..n {
        sent_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    // More transitions wait than there are handler threads: reads are still served at once,
    // since no thread waits for the lock on their behalf.
    for _ in 0..5 {
        let started = Instant::now();
        let (status, _) = api.get("/status");
        assert_eq!(status, 200);
        assert!(started.elapsed() < Duration::from_millis(500), "GET /status waited {:?}", started.elapsed());
    }
    assert!(pending.iter().all(|t| !t.is_finished()), "a pause was answered while the lock was held elsewhere");
    let answers: Vec<(u16, Value)> = pending.into_iter().map(|t| t.join().unwrap()).collect();
    drop(held);
    for (status, v) in &answers {
        assert_eq!(*status, 500, "{v}");
        assert_eq!(v["code"], 500, "{v}");
        assert!(v["error"].as_str().unwrap().contains("lock"), "{v}");
    }
    assert_eq!(std::fs::read(&state_path).ok(), before, "the state changed after a failed batch");
    assert_eq!(h.events().iter().filter(|e| e["type"] == "scheduler_paused").count(), 0);
    assert!(h.events().len() >= events_before);

    // Once the lock is free again, a pause goes through.
    let (status, v) = api.post("/scheduler/pause", b"");
    assert_eq!((status, v["message"].as_str()), (200, Some("Scheduler paused")), "{v}");
    h.cortex_ok(&["validate"]);
}
