//! The scheduler's pause switch: `coordination/scheduler-state.json`, guarded by the `scheduler`
//! lock. The coordinator reads it under that same lock while it records a dispatch, so once
//! [`pause`] has returned no new dispatch can start (the pause promise). [`apply`] commits a
//! batch of pauses and resumes with one lock, one read and one durable write (group commit: the
//! api daemon's committer thread batches concurrent requests this way).

use crate::base::clock::{Timestamp, format_ts};
use crate::base::error::{Error, Result};
use crate::store::events::{EventKind, Severity};
use crate::store::files::{self, CoordFile};
use crate::store::{Document, Store};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Paused,
}

/// `coordination/scheduler-state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerState {
    pub state: RunState,
    #[serde(default)]
    pub paused: bool,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub paused_at: Option<Timestamp>,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub resumed_at: Option<Timestamp>,
    #[serde(default)]
    pub paused_by: Option<String>,
    /// Where the pause came from (`cli`, `api 127.0.0.1:51234`, `failure-pattern`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_from: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub updated_at: Option<Timestamp>,
}

impl Document for SchedulerState {
    const FILE: &'static CoordFile = files::SCHEDULER_STATE;
}

impl SchedulerState {
    pub fn is_paused(&self) -> bool {
        self.state == RunState::Paused
    }
}

/// The outcome of a pause or resume.
#[derive(Debug, Clone, Serialize)]
pub struct Transition {
    /// False when the scheduler already was in the asked-for state (nothing changed).
    pub changed: bool,
    pub message: String,
    #[serde(with = "crate::base::clock::ts")]
    pub timestamp: Timestamp,
    pub paused: bool,
    pub state: SchedulerState,
}

/// Who asks for a pause or resume, and from where.
#[derive(Debug, Clone)]
pub struct Actor {
    pub who: String,
    pub from: String,
}

/// One asked-for transition in a batch (see [`apply`]).
#[derive(Debug, Clone)]
pub enum Request {
    Pause { actor: Actor, reason: Option<String> },
    Resume { actor: Actor },
}

impl Request {
    /// True for a pause.
    pub fn wants_paused(&self) -> bool {
        matches!(self, Request::Pause { .. })
    }

    /// Applies this request to `s` (in memory) at `now` and says what happened.
    fn apply_to(&self, s: &mut SchedulerState, now: Timestamp) -> Transition {
        match self {
            Request::Pause { .. } if s.is_paused() => Transition {
                changed: false,
                message: "Scheduler already paused".into(),
                timestamp: now,
                paused: true,
                state: s.clone(),
            },
            Request::Pause { actor, reason } => {
                s.state = RunState::Paused;
                s.paused = true;
                s.paused_at = Some(now);
                s.paused_by = Some(actor.who.clone());
                s.paused_from = Some(actor.from.clone());
                s.reason = reason.clone();
                s.updated_at = Some(now);
                Transition {
                    changed: true,
                    message: "Scheduler paused".into(),
                    timestamp: now,
                    paused: true,
                    state: s.clone(),
                }
            }
            Request::Resume { .. } if !s.is_paused() => Transition {
                changed: false,
                message: "Scheduler already running".into(),
                timestamp: now,
                paused: false,
                state: s.clone(),
            },
            Request::Resume { .. } => {
                s.state = RunState::Running;
                s.paused = false;
                s.resumed_at = Some(now);
                s.updated_at = Some(now);
                Transition {
                    changed: true,
                    message: "Scheduler resumed".into(),
                    timestamp: now,
                    paused: false,
                    state: s.clone(),
                }
            }
        }
    }

    /// The audit event of a transition this request made.
    fn event(&self, store: &Store, t: &Transition) -> crate::store::events::Event {
        match self {
            Request::Pause { actor, reason } => store.event(
                EventKind::SchedulerPaused,
                Severity::Warning,
                format!(
                    "Scheduler paused by {} from {}{}",
                    actor.who,
                    actor.from,
                    reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
                ),
                serde_json::json!({"paused_by": actor.who, "from": actor.from, "reason": reason, "paused_at": format_ts(t.timestamp)}),
            ),
            Request::Resume { actor } => store.event(
                EventKind::SchedulerResumed,
                Severity::Info,
                format!("Scheduler resumed by {} from {}", actor.who, actor.from),
                serde_json::json!({"resumed_by": actor.who, "from": actor.from, "resumed_at": format_ts(t.timestamp), "paused_at": t.state.paused_at.map(format_ts)}),
            ),
        }
    }
}

/// The answer to `request` from one read without the lock, when the file already shows the
/// asked-for state ("already paused" / "already running"); `None` when the request would change
/// the state (or the file cannot be read), so it must go through [`apply`]. The file is only
/// ever replaced whole, so the read is a true state at one instant, and "already paused" is as
/// true as it would be under the lock.
pub fn answer_unchanged(store: &Store, request: &Request) -> Option<Transition> {
    let mut current = store.load_existing::<SchedulerState>().ok().flatten()?;
    if current.is_paused() != request.wants_paused() {
        return None;
    }
    let t = request.apply_to(&mut current, crate::base::clock::now());
    (!t.changed).then_some(t)
}

/// Applies `requests` in order as one group commit: takes the `scheduler` lock once, reads the
/// state once, gives each request exactly the [`Transition`] it would get alone (with its own
/// timestamp), writes the final state once (durably, only if some request changed it), releases
/// the lock, then appends the `scheduler_paused` / `scheduler_resumed` event of every request
/// that changed the state, in order, with one `write`. The results come back in the order of `requests`.
///
/// When every request asks for the state the file already shows, they are answered from one
/// read without the lock. A failure to lock, read or write fails every request with that error
/// and leaves the state as it was. Since this returns only after the write is durable, a pause
/// that has been answered holds against every dispatch the coordinator records later.
pub fn apply(store: &Store, requests: &[Request]) -> Vec<Result<Transition>> {
    if requests.is_empty() {
        return Vec::new();
    }
    if let Ok(Some(current)) = store.load_existing::<SchedulerState>()
        && requests.iter().all(|r| r.wants_paused() == current.is_paused())
    {
        return requests.iter().map(|r| Ok(r.apply_to(&mut current.clone(), crate::base::clock::now()))).collect();
    }
    let transitions = match commit(store, requests) {
        Ok(t) => t,
        Err(e) => {
            let mut errors: Vec<Result<Transition>> = (1..requests.len()).map(|_| Err(same_error(&e))).collect();
            errors.insert(0, Err(e));
            return errors;
        }
    };
    // The batch's events in one append (one `write`), in order.
    let events: Vec<crate::store::events::Event> =
        requests.iter().zip(&transitions).filter(|(_, t)| t.changed).map(|(r, t)| r.event(store, t)).collect();
    if let Err(e) = crate::store::events::append_many(store.home(), &events) {
        tracing::warn!("cannot record {} scheduler event(s): {e}", events.len());
    }
    transitions.into_iter().map(Ok).collect()
}

/// The locked part of [`apply`]: one lock, one read, the requests in order, one write.
fn commit(store: &Store, requests: &[Request]) -> Result<Vec<Transition>> {
    let guard = store.lock(files::SCHEDULER_STATE)?;
    let mut state: SchedulerState = store.load()?;
    let transitions: Vec<Transition> =
        requests.iter().map(|r| r.apply_to(&mut state, crate::base::clock::now())).collect();
    if transitions.iter().any(|t| t.changed) {
        store.write_locked(&guard, &state)?;
    }
    Ok(transitions)
}

/// A copy of `e` for the other requests of a failed batch (errors are not `Clone`: an I/O error
/// keeps its kind and OS error text).
fn same_error(e: &Error) -> Error {
    match e {
        Error::Io { path, action, source } => Error::Io {
            path: path.clone(),
            action,
            source: match source.raw_os_error() {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => std::io::Error::new(source.kind(), source.to_string()),
            },
        },
        Error::Corrupt { path, detail, quarantined } => {
            Error::Corrupt { path: path.clone(), detail: detail.clone(), quarantined: quarantined.clone() }
        }
        Error::Invalid { path, pointer, expected, quarantined } => Error::Invalid {
            path: path.clone(),
            pointer: pointer.clone(),
            expected: expected.clone(),
            quarantined: quarantined.clone(),
        },
        Error::LockTimeout { lock, holder, waited_ms } => {
            Error::LockTimeout { lock: lock.clone(), holder: holder.clone(), waited_ms: *waited_ms }
        }
        // A serde_json error is not `Clone`: keep its text.
        Error::Encode { what, source } => Error::Other(format!("cannot encode {what}: {source}")),
        Error::Watch { .. } => Error::Other(e.to_string()),
        Error::System { action, source, hint } => Error::System {
            action: action.clone(),
            source: match source.raw_os_error() {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => std::io::Error::new(source.kind(), source.to_string()),
            },
            hint,
        },
        Error::Unusable { path, problem } => Error::Unusable { path: path.clone(), problem: problem.clone() },
        Error::Config { path, detail } => Error::Config { path: path.clone(), detail: detail.clone() },
        Error::Refused(m) => Error::Refused(m.clone()),
        Error::Other(m) => Error::Other(m.clone()),
    }
}

/// The one result of a one-request batch.
fn apply_one(store: &Store, request: Request) -> Result<Transition> {
    apply(store, std::slice::from_ref(&request))
        .pop()
        .unwrap_or_else(|| Err(Error::other("the scheduler batch returned no result")))
}

/// Pauses the scheduler. When this returns Ok, no new dispatch starts until [`resume`].
pub fn pause(store: &Store, actor: &Actor, reason: Option<&str>) -> Result<Transition> {
    apply_one(store, Request::Pause { actor: actor.clone(), reason: reason.map(str::to_string) })
}

/// Resumes the scheduler.
pub fn resume(store: &Store, actor: &Actor) -> Result<Transition> {
    apply_one(store, Request::Resume { actor: actor.clone() })
}

/// The local user, for CLI actors.
pub fn local_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| nix::unistd::User::from_uid(nix::unistd::getuid()).ok().flatten().map(|u| u.name))
        .unwrap_or_else(|| format!("uid {}", nix::unistd::getuid()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    use crate::store::fresh_store as store;

    fn actor(who: &str) -> Actor {
        Actor { who: who.into(), from: "test".into() }
    }

    fn pause_req(who: &str, reason: &str) -> Request {
        Request::Pause { actor: actor(who), reason: Some(reason.into()) }
    }

    fn resume_req(who: &str) -> Request {
        Request::Resume { actor: actor(who) }
    }

    /// (inode, ctime in ns) of the state file: an atomic replace gives a new inode.
    fn identity(store: &Store) -> (u64, i128) {
        let m = std::fs::metadata(store.path(files::SCHEDULER_STATE)).unwrap();
        (m.ino(), m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128)
    }

    fn events(store: &Store) -> Vec<crate::store::events::Event> {
        crate::store::events::read_all(store.home())
            .unwrap()
            .records
            .into_iter()
            .filter(|e| matches!(e.event_type, EventKind::SchedulerPaused | EventKind::SchedulerResumed))
            .collect()
    }

    #[test]
    fn a_batch_applies_its_requests_in_order_with_one_write_and_ordered_events() {
        let (_dir, store) = store();
        // Make sure the file exists, so its identity can be compared.
        pause(&store, &actor("setup"), None).unwrap();
        resume(&store, &actor("setup")).unwrap();
        let before_events = events(&store).len();
        let before = identity(&store);

        let batch = [
            pause_req("a", "first"),
            pause_req("b", "second"),
            resume_req("c"),
            resume_req("d"),
            pause_req("e", "last"),
        ];
        let results: Vec<Transition> = apply(&store, &batch).into_iter().map(Result::unwrap).collect();
        let messages: Vec<&str> = results.iter().map(|t| t.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "Scheduler paused",
                "Scheduler already paused",
                "Scheduler resumed",
                "Scheduler already running",
                "Scheduler paused"
            ]
        );
        assert_eq!(results.iter().map(|t| t.changed).collect::<Vec<_>>(), [true, false, true, false, true]);
        assert_eq!(results.iter().map(|t| t.paused).collect::<Vec<_>>(), [true, true, false, false, true]);
        // Each has its own timestamp, in order; an unchanged answer shows the state it met.
        let stamps: Vec<_> = results.iter().map(|t| t.timestamp).collect();
        assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{stamps:?}");
        assert_eq!(results[1].state.paused_at, Some(results[0].timestamp));
        assert_eq!(results[1].state.paused_by.as_deref(), Some("a"));
        assert_eq!(results[2].state.resumed_at, Some(results[2].timestamp));

        // One write: the file was replaced once (one new inode), and holds the last change.
        let after = identity(&store);
        assert_ne!(after.0, before.0, "the state file was not rewritten");
        let on_disk: SchedulerState = store.load().unwrap();
        assert_eq!(on_disk, results[4].state);
        assert!(on_disk.is_paused());
        assert_eq!(on_disk.paused_by.as_deref(), Some("e"));
        assert_eq!(on_disk.reason.as_deref(), Some("last"));
        assert_eq!(on_disk.paused_at, Some(results[4].timestamp));
        assert_eq!(on_disk.resumed_at, Some(results[2].timestamp));
        let tmp_files = std::fs::read_dir(store.path(files::SCHEDULER_STATE).parent().unwrap())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains(".tmp"))
            .count();
        assert_eq!(tmp_files, 0);

        // Events: one per change, in the order of the requests, with their timestamps.
        let new_events: Vec<_> = events(&store).into_iter().skip(before_events).collect();
        let summary: Vec<(String, String)> = new_events
            .iter()
            .map(|e| {
                let who = e.data.get("paused_by").or(e.data.get("resumed_by")).and_then(|v| v.as_str()).unwrap();
                let who = who.to_string();
                (e.event_type.to_string(), who)
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("scheduler_paused".to_string(), "a".to_string()),
                ("scheduler_resumed".to_string(), "c".to_string()),
                ("scheduler_paused".to_string(), "e".to_string())
            ]
        );
        assert_eq!(new_events[0].data["paused_at"], format_ts(results[0].timestamp));
        assert_eq!(new_events[1].data["resumed_at"], format_ts(results[2].timestamp));
        assert_eq!(new_events[1].data["paused_at"], format_ts(results[0].timestamp));
        assert_eq!(new_events[2].data["reason"], "last");
    }

    #[test]
    fn a_batch_that_changes_nothing_writes_nothing() {
        let (_dir, store) = store();
        pause(&store, &actor("setup"), Some("x")).unwrap();
        let before = identity(&store);
        let before_events = events(&store).len();
        // All "already paused": answered from one read without the lock.
        let results = apply(&store, &[pause_req("a", "again"), pause_req("b", "again")]);
        assert!(results.iter().all(|r| r.as_ref().unwrap().message == "Scheduler already paused"));
        assert_eq!(results[0].as_ref().unwrap().state.reason.as_deref(), Some("x"));
        assert_eq!(identity(&store), before);
        assert_eq!(events(&store).len(), before_events);
        assert!(apply(&store, &[]).is_empty());
        let unchanged = answer_unchanged(&store, &pause_req("c", "y")).unwrap();
        assert_eq!(unchanged.message, "Scheduler already paused");
        assert!(answer_unchanged(&store, &resume_req("c")).is_none());
    }

    #[test]
    fn a_failed_write_fails_every_request_and_leaves_the_state() {
        let (_dir, store) = store();
        resume(&store, &actor("setup")).unwrap();
        let path = store.path(files::SCHEDULER_STATE);
        let before = std::fs::read(&path).unwrap();
        let before_events = events(&store).len();
        // Hold the lock elsewhere (taken by another thread: this one may not take it twice):
        // the batch times out waiting for it.
        let store = store.with_lock_timeout(std::time::Duration::from_millis(100));
        let _held = std::thread::scope(|s| s.spawn(|| store.lock(files::SCHEDULER_STATE).unwrap()).join().unwrap());
        let results = apply(&store, &[pause_req("a", "r"), resume_req("b"), pause_req("c", "r")]);
        assert_eq!(results.len(), 3);
        for r in &results {
            let e = r.as_ref().unwrap_err();
            assert!(matches!(e, Error::LockTimeout { .. }), "{e}");
        }
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(events(&store).len(), before_events);
    }
}
