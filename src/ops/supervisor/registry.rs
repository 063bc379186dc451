//! The daemons the supervisor manages and the small files it keeps about them under `run/`:
//! which binary runs each daemon, the operator's stop intent (`run/<name>.stopped`), the restart
//! policy's state (`run/supervisor-state.json`) and the per-daemon lock that serialises start,
//! stop and restart of one daemon between `cortex`, pm and `cortex run`.

use crate::base::clock::{Timestamp, now_string};
use crate::base::daemon_name::{Daemon, PidOwner};
use crate::base::error::{Error, Result};
use crate::store::LockName;
use crate::store::config::Config;
use crate::store::home::Home;
use crate::store::lock::{LockGuard, lock_exclusive};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The daemon called `name`, or an error listing the known ones.
pub(crate) fn check_name(name: &str) -> Result<Daemon> {
    Daemon::parse(name).ok_or_else(|| Error::Config {
        path: None,
        detail: format!("unknown daemon {name:?}: known daemons are {}", Daemon::known()),
    })
}

/// The daemons a command acts on, in start order: the named ones, or every enabled one when no
/// name is given. Naming a disabled daemon is refused unless `allow_disabled`.
pub(crate) fn select(config: &Config, names: &[String], allow_disabled: bool) -> Result<Vec<Daemon>> {
    if names.is_empty() {
        return Ok(Daemon::ALL.into_iter().filter(|d| config.daemon_enabled(*d)).collect());
    }
    let mut wanted = Vec::new();
    for n in names {
        let d = check_name(n)?;
        if !allow_disabled && !config.daemon_enabled(d) {
            return Err(Error::refused(if d == Daemon::Slurm && !config.slurm.enabled {
                format!("{d} runs only with [slurm] enabled = true in cortex.toml")
            } else {
                format!("{d} is disabled in cortex.toml ([daemons] disabled); remove it from that list to run it")
            }));
        }
        wanted.push(d);
    }
    Ok(Daemon::ALL.into_iter().filter(|d| wanted.contains(d)).collect())
}

/// The binary that runs `daemon`: next to the running executable first, then on PATH.
pub(crate) fn binary(daemon: Daemon) -> Result<PathBuf> {
    let file = daemon.binary_name();
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(PathBuf::from));
    if let Some(dir) = &exe_dir {
        let p = dir.join(&file);
        if p.is_file() {
            return Ok(p);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(&file);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(Error::other(format!(
        "cannot find {file} next to {} or on PATH; build it with `cargo build --release`",
        exe_dir.map(|d| d.display().to_string()).unwrap_or_else(|| "the cortex binary".into())
    )))
}

/// Why a daemon is meant to stay stopped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StopIntent {
    pub stopped_at: String,
    pub stopped_by: String,
    #[serde(default)]
    pub reason: String,
}

/// Records that the operator wants `daemon` stopped (pm and `cortex run` leave it alone).
pub(crate) fn set_stop_intent(home: &Home, daemon: Daemon, reason: &str) -> Result<()> {
    let intent = StopIntent {
        stopped_at: now_string(),
        stopped_by: crate::domain::scheduler_state::local_user(),
        reason: reason.to_string(),
    };
    let bytes = serde_json::to_vec(&intent)?;
    crate::store::atomic::write_atomic(&home.stop_intent(daemon), &bytes)
}

/// Removes the stop intent (the operator started the daemon again).
pub(crate) fn clear_stop_intent(home: &Home, daemon: Daemon) -> Result<()> {
    let path = home.stop_intent(daemon);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&path, "remove", e)),
    }
}

/// How many stopped instances `run/<daemon>.stop-asked` remembers: restarts in quick succession
/// may all happen before the supervisor sees the first exit.
const STOPS_REMEMBERED: usize = 8;

/// Records that cortex is about to stop instance `pid` of `daemon` (`run/<daemon>.stop-asked`),
/// so the supervisor does not take its exit for a crash, whether or not it is to stay stopped
/// (`cortex restart` starts it again at once, removing the stop intent). The file keeps the last
/// [`STOPS_REMEMBERED`] such PIDs (`{"stops": [{"pid", "asked_at"}, ...]}`): two restarts before
/// the supervisor looks must not turn the first one's exit into a crash. Called under the
/// daemon's lock ([`lock_daemon`]), which serialises its read-modify-write.
pub(crate) fn record_stop_asked(home: &Home, daemon: Daemon, pid: u32) -> Result<()> {
    let mut stops: Vec<serde_json::Value> = read_stops(home, daemon);
    stops.retain(|s| s.get("pid").and_then(serde_json::Value::as_u64) != Some(u64::from(pid)));
    stops.push(serde_json::json!({"pid": pid, "asked_at": now_string()}));
    let excess = stops.len().saturating_sub(STOPS_REMEMBERED);
    stops.drain(..excess);
    let bytes = serde_json::to_vec(&serde_json::json!({"stops": stops}))?;
    crate::store::atomic::write_atomic(&home.stop_asked(daemon), &bytes)
}

/// The stops recorded for `daemon`, oldest first (an unreadable file: none; the older one-PID
/// form `{"pid", "asked_at"}` is read as one stop).
fn read_stops(home: &Home, daemon: Daemon) -> Vec<serde_json::Value> {
    let Ok(bytes) = std::fs::read(home.stop_asked(daemon)) else { return Vec::new() };
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(mut m)) => match m.remove("stops") {
            Some(serde_json::Value::Array(a)) => a,
            _ if m.contains_key("pid") => vec![serde_json::Value::Object(m)],
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// True when cortex asked to stop instance `pid` of `daemon` (one of the last few it stopped).
pub(crate) fn stop_asked(home: &Home, daemon: Daemon, pid: u32) -> bool {
    read_stops(home, daemon).iter().any(|s| s.get("pid").and_then(serde_json::Value::as_u64) == Some(u64::from(pid)))
}

/// The stop intent, if the operator stopped the daemon. An unreadable intent still counts.
pub(crate) fn stop_intent(home: &Home, daemon: Daemon) -> Option<StopIntent> {
    let bytes = std::fs::read(home.stop_intent(daemon)).ok()?;
    Some(serde_json::from_slice(&bytes).unwrap_or(StopIntent {
        stopped_at: String::new(),
        stopped_by: String::new(),
        reason: "unreadable intent file".into(),
    }))
}

/// `run/supervisor-state.json`: what the restart policy did, for `cortex status` and the API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SupervisorState {
    /// Who applies the policy: `pm` or `cortex run`.
    #[serde(default)]
    pub supervisor: Option<String>,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub updated_at: Option<Timestamp>,
    #[serde(default)]
    pub daemons: BTreeMap<String, DaemonRecord>,
}

/// The restart policy's record of one daemon.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct DaemonRecord {
    /// Restarts made by the supervisor since the operator last started it.
    #[serde(default)]
    pub restarts: u32,
    /// True once the start limit was hit: no more restarts until `cortex start NAME`.
    #[serde(default)]
    pub failed: bool,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub failed_at: Option<Timestamp>,
    #[serde(default)]
    pub last_cause: Option<String>,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub last_restart_at: Option<Timestamp>,
    #[serde(default, with = "crate::base::clock::ts::option")]
    pub next_restart_at: Option<Timestamp>,
}

/// Reads the supervisor state (default when missing; a corrupt file, or one whose values its
/// type cannot take — a malformed time — is quarantined, logged naming the field, and ignored).
pub(crate) fn read_state(home: &Home) -> SupervisorState {
    let store = crate::store::Store::new(home.clone()).with_source("supervisor");
    let path = home.supervisor_state();
    match store.read_value_at(&path, None) {
        Ok(Some(v)) => store.decode(&path, v).unwrap_or_else(|e| {
            tracing::error!("{e}; starting from an empty supervisor state");
            SupervisorState::default()
        }),
        _ => SupervisorState::default(),
    }
}

/// Read-modify-write of the supervisor state under its lock.
pub(crate) fn update_state(home: &Home, change: impl FnOnce(&mut SupervisorState)) -> Result<()> {
    let _guard = lock_exclusive(home, LockName::Supervisor, Duration::from_secs(10))?;
    let mut state = read_state(home);
    change(&mut state);
    state.updated_at = Some(crate::base::clock::now());
    let mut bytes = serde_json::to_vec_pretty(&state)?;
    bytes.push(b'\n');
    crate::store::atomic::write_atomic(&home.supervisor_state(), &bytes)
}

/// Clears a daemon's FAILED mark and restart count (the operator starts it by hand).
pub(crate) fn clear_failed(home: &Home, daemon: Daemon) -> Result<()> {
    if !read_state(home).daemons.get(daemon.as_str()).is_some_and(|r| r.failed || r.restarts > 0) {
        return Ok(());
    }
    update_state(home, |s| {
        s.daemons.remove(daemon.as_str());
    })
}

/// Takes the per-daemon lock that serialises starting and stopping `daemon`.
pub(crate) fn lock_daemon(home: &Home, daemon: Daemon, timeout: Duration) -> Result<LockGuard> {
    lock_exclusive(home, LockName::daemon(daemon), timeout)
}

/// The name of the foreground supervisor's PID file (`run/supervisor.pid`), held by `cortex run`.
pub(crate) const FOREGROUND: PidOwner = PidOwner::Foreground;

/// True while a `cortex run` supervises this home (pm then leaves restarts to it).
pub(crate) fn foreground_active(home: &Home) -> bool {
    matches!(crate::store::pidfile::status(home, FOREGROUND), Ok(crate::store::pidfile::PidStatus::Running(_)))
}

/// [`foreground_active`] by the PID file's lock alone (`pidfile::status_quick`), without looking
/// through `/proc` for the holder of a deleted one (~10 ms): for pm, which asks at every hung
/// check (idle, that look was most of its CPU). A `cortex run` whose PID file was removed writes
/// it again within a second; pm's restarts are serialised with its by the daemons' locks.
pub(crate) fn foreground_seen(home: &Home) -> bool {
    matches!(crate::store::pidfile::status_quick(home, FOREGROUND), Ok(crate::store::pidfile::PidStatus::Running(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A state file as the supervisor wrote it while its times were strings.
    fn written_before() -> serde_json::Value {
        json!({
            "supervisor": "pm", "pid": 42, "updated_at": "2026-01-01T00:00:09.000001Z",
            "daemons": {"worker": {
                "restarts": 3, "failed": true, "failed_at": "2026-01-01T00:00:08.000000Z",
                "last_cause": "exited with code 1", "last_restart_at": "2026-01-01T00:00:07.250000Z",
                "next_restart_at": null,
            }},
        })
    }

    #[test]
    fn supervisor_state_times_load_in_every_form_and_are_written_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        std::fs::create_dir_all(home.run_dir()).unwrap();
        let before = written_before();
        std::fs::write(home.supervisor_state(), serde_json::to_vec(&before).unwrap()).unwrap();
        let state = read_state(&home);
        assert_eq!(serde_json::to_value(&state).unwrap(), before, "the same strings are written back");
        let mut other = before;
        other["daemons"]["worker"]["failed_at"] = json!("2026-01-01T01:00:08+01:00");
        std::fs::write(home.supervisor_state(), serde_json::to_vec(&other).unwrap()).unwrap();
        let again = read_state(&home);
        assert_eq!(again.daemons["worker"], state.daemons["worker"], "another RFC 3339 form reads as the same time");
    }

    /// Before, any string was taken as a time, and a state that did not decode was silently
    /// read as empty (no copy kept) and then overwritten by the next update.
    #[test]
    fn a_malformed_time_in_the_supervisor_state_is_quarantined_and_the_state_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        std::fs::create_dir_all(home.run_dir()).unwrap();
        let mut bad = written_before();
        bad["daemons"]["worker"]["failed_at"] = json!("when it broke");
        let bytes = serde_json::to_vec(&bad).unwrap();
        std::fs::write(home.supervisor_state(), &bytes).unwrap();
        let state = read_state(&home);
        assert!(state.daemons.is_empty(), "the bad state is ignored");
        let kept: Vec<_> = std::fs::read_dir(home.quarantine_dir()).unwrap().flatten().map(|e| e.path()).collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert!(kept[0].to_string_lossy().contains("supervisor-state.json"), "{kept:?}");
        assert_eq!(std::fs::read(&kept[0]).unwrap(), bytes, "the copy is the file as it was");
        let events = std::fs::read_to_string(home.events_file()).unwrap_or_default();
        assert!(events.contains("/daemons/worker/failed_at"), "the event names the field: {events}");
    }
}
