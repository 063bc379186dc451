//! The scheduler's pause switch: `coordination/scheduler-state.json`, guarded by the `scheduler`
//! lock. The coordinator reads it under that same lock while it records a dispatch, so once
//! [`pause`] has returned no new dispatch can start (the pause promise).

use crate::clock::now_string;
use crate::error::Result;
use crate::events::Severity;
use crate::files::{self, CoordFile};
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
    #[serde(default)]
    pub paused_at: Option<String>,
    #[serde(default)]
    pub resumed_at: Option<String>,
    #[serde(default)]
    pub paused_by: Option<String>,
    /// Where the pause came from (`cli`, `api 127.0.0.1:51234`, `failure-pattern`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_from: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
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
    pub timestamp: String,
    pub paused: bool,
    pub state: SchedulerState,
}

/// Who asks for a pause or resume, and from where.
#[derive(Debug, Clone)]
pub struct Actor {
    pub who: String,
    pub from: String,
}

/// Read-modify-write of the state under the `scheduler` lock that writes only when `change`
/// reports a change: asking for the state the scheduler already is in rewrites nothing.
///
/// When the file already shows the asked-for state, the answer comes from that read without the
/// lock: the file is only ever replaced whole, so the read is a true state at one instant, and
/// "already paused" is as true as it would be under the lock.
fn transition(
    store: &Store,
    want_paused: bool,
    change: impl Fn(&mut SchedulerState) -> Transition,
) -> Result<Transition> {
    if let Ok(Some(mut current)) = store.load_existing::<SchedulerState>()
        && current.is_paused() == want_paused
    {
        let t = change(&mut current);
        if !t.changed {
            return Ok(t);
        }
    }
    let guard = store.lock(files::SCHEDULER_STATE)?;
    let mut state: SchedulerState = store.load()?;
    let t = change(&mut state);
    if t.changed {
        store.write_locked(&guard, &state)?;
    }
    Ok(t)
}

/// Pauses the scheduler. When this returns Ok, no new dispatch starts until [`resume`].
pub fn pause(store: &Store, actor: &Actor, reason: Option<&str>) -> Result<Transition> {
    let t = transition(store, true, |s| {
        let now = now_string();
        if s.is_paused() {
            return Transition {
                changed: false,
                message: "Scheduler already paused".into(),
                timestamp: now,
                paused: true,
                state: s.clone(),
            };
        }
        s.state = RunState::Paused;
        s.paused = true;
        s.paused_at = Some(now.clone());
        s.paused_by = Some(actor.who.clone());
        s.paused_from = Some(actor.from.clone());
        s.reason = reason.map(str::to_string);
        s.updated_at = Some(now.clone());
        Transition { changed: true, message: "Scheduler paused".into(), timestamp: now, paused: true, state: s.clone() }
    })?;
    if t.changed {
        let _ = store.emit(
            "scheduler_paused",
            Severity::Warning,
            format!(
                "Scheduler paused by {} from {}{}",
                actor.who,
                actor.from,
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            ),
            serde_json::json!({"paused_by": actor.who, "from": actor.from, "reason": reason, "paused_at": t.timestamp}),
        );
    }
    Ok(t)
}

/// Resumes the scheduler.
pub fn resume(store: &Store, actor: &Actor) -> Result<Transition> {
    let t = transition(store, false, |s| {
        let now = now_string();
        if !s.is_paused() {
            return Transition {
                changed: false,
                message: "Scheduler already running".into(),
                timestamp: now,
                paused: false,
                state: s.clone(),
            };
        }
        s.state = RunState::Running;
        s.paused = false;
        s.resumed_at = Some(now.clone());
        s.updated_at = Some(now.clone());
        Transition {
            changed: true,
            message: "Scheduler resumed".into(),
            timestamp: now,
            paused: false,
            state: s.clone(),
        }
    })?;
    if t.changed {
        let _ = store.emit(
            "scheduler_resumed",
            Severity::Info,
            format!("Scheduler resumed by {} from {}", actor.who, actor.from),
            serde_json::json!({"resumed_by": actor.who, "from": actor.from, "resumed_at": t.timestamp, "paused_at": t.state.paused_at}),
        );
    }
    Ok(t)
}

/// The local user, for CLI actors.
pub fn local_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| nix::unistd::User::from_uid(nix::unistd::getuid()).ok().flatten().map(|u| u.name))
        .unwrap_or_else(|| format!("uid {}", nix::unistd::getuid()))
}
