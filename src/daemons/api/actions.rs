//! The health and operations endpoints the dashboard uses besides tasks: the event log paged
//! (`GET /events`), circuit breakers and their reset (the call `cortex breaker reset` makes),
//! failure patterns, zombie dispatches, and a daemon restart (`cortex restart <name>`).

use super::http::{Reply, Request, Response};
use crate::base::daemon_name::Daemon;
use crate::daemons::auto_fix::breaker::{self, Breakers};
use crate::domain::scheduler_state::Actor;
use crate::domain::task::DispatchStatus;
use crate::ops::status::StatusReader;
use crate::store::events::Severity;
use serde_json::{Value, json};

const MAX_EVENTS_PAGE: usize = 500;

/// `GET /events?severity=&limit=&before=<event id>`: events of at least `severity` (default
/// all), newest first, `limit` (default 50) of them older than the event `before`; read from the
/// log's end back only as far as the page needs (`store::events::read_last`).
pub(crate) fn events(reader: &StatusReader, req: &Request) -> Response {
    let p = req.query_params();
    let min = match p.get("severity").filter(|s| !s.is_empty()).map(|s| s.parse::<Severity>()) {
        None => Severity::Debug,
        Some(Ok(s)) => s,
        Some(Err(e)) => return Response::error(400, format!("severity: {e}")),
    };
    let limit = match p.get("limit").filter(|s| !s.is_empty()).map(|s| s.parse::<usize>()) {
        None => 50,
        Some(Ok(n)) if (1..=MAX_EVENTS_PAGE).contains(&n) => n,
        Some(_) => return Response::error(400, format!("limit: a number from 1 to {MAX_EVENTS_PAGE}")),
    };
    let before = p.get("before").filter(|s| !s.is_empty()).cloned();
    let mut passed = before.is_none();
    let keep = |e: &crate::store::events::Event| {
        if !passed {
            passed = before.as_deref() == Some(e.id.as_str());
            return false;
        }
        e.severity >= min
    };
    let (mut events, bad) = match crate::store::events::read_last(reader.home(), limit, keep) {
        Ok(r) => r,
        Err(e) => return Response::error(500, e.to_string()),
    };
    events.reverse();
    let acks = reader.acks().ok();
    let next = if events.len() == limit { events.last().map(|e| e.id.clone()) } else { None };
    let list: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
            v["acknowledged"] = Value::Bool(acks.as_ref().is_some_and(|a| a.covers(e)));
            v
        })
        .collect();
    Response::json(200, &json!({"events": list, "next_before": next, "bad_lines": bad}))
}

/// `GET /breakers`: every worker type's circuit breaker, as `circuit-breakers.json` holds it.
pub(crate) fn breakers(reader: &StatusReader) -> Response {
    match reader.store().load::<Breakers>() {
        Ok(doc) => {
            let list: Vec<Value> = doc
                .breakers
                .iter()
                .map(|(t, b)| {
                    let mut v = serde_json::to_value(b).unwrap_or(Value::Null);
                    v["worker_type"] = Value::from(t.as_str());
                    v
                })
                .collect();
            Response::json(200, &json!({"breakers": list}))
        }
        Err(e) => Response::error(500, e.to_string()),
    }
}

/// `POST /breakers/<worker_type>/reset`: closes the breaker (the library call of `cortex
/// breaker reset`; it records `circuit_breaker_reset` naming the caller).
pub(crate) fn reset_breaker(reader: &StatusReader, worker_type: &str, actor: &Actor) -> Response {
    let by = format!("{} ({})", actor.who, actor.from);
    match breaker::reset(reader.store(), worker_type, &by, chrono::Utc::now()) {
        Ok(Some(_)) => Response::json(200, &json!({"worker_type": worker_type, "state": "closed"})),
        Ok(None) => Response::error(404, format!("no circuit breaker for worker type {worker_type:?}")),
        Err(e) => Response::error(500, e.to_string()),
    }
}

/// `GET /failure-patterns`: the pattern records (`patterns/failure-patterns.jsonl`).
pub(crate) fn failure_patterns(reader: &StatusReader) -> Response {
    match crate::daemons::failure_pattern::records::load(reader.store()) {
        Ok(file) => {
            let list: Vec<&_> = file.order.iter().filter_map(|id| file.records.get(id)).collect();
            Response::json(200, &json!({"patterns": list, "bad_lines": file.bad_lines}))
        }
        Err(e) => Response::error(500, e.to_string()),
    }
}

/// `GET /zombies`: dispatches the heartbeat daemon ended as zombies, newest first.
pub(crate) fn zombies(reader: &StatusReader) -> Response {
    match reader.dispatches() {
        Ok(all) => {
            let list: Vec<_> = all
                .iter()
                .rev()
                .filter(|d| d.record.status() == DispatchStatus::Zombie)
                .map(|d| reader.dispatch_view(d, false))
                .collect();
            Response::json(200, &json!({"zombies": list}))
        }
        Err(e) => Response::error(500, e.to_string()),
    }
}

/// `POST /daemons/<name>/restart`: runs `cortex restart <name>` (the supervisor library's
/// rolling restart: stop, start, wait until ready and stable) as a process of its own, so the
/// daemon it starts is no child of the API (it is adopted when that process exits) and restarting
/// `api` itself works: the answer (202) goes out before the restart begins, and the page sees the
/// new PID on the event stream (`event: daemons`).
pub(crate) fn restart_daemon(reader: &StatusReader, name: &str) -> Reply {
    let Some(daemon) = Daemon::ALL.iter().copied().find(|d| d.as_str() == name) else {
        let names: Vec<&str> = Daemon::ALL.iter().map(|d| d.as_str()).collect();
        return Reply::Now(Response::error(404, format!("no daemon {name:?} (daemons: {})", names.join(", "))));
    };
    let config = reader.config();
    if !config.daemon_enabled(daemon) {
        return Reply::Now(Response::error(409, format!("{name} is disabled in cortex.toml ([daemons] disabled)")));
    }
    let cortex = match std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.join("cortex"))) {
        Some(p) if p.is_file() => p,
        _ => return Reply::Now(Response::error(500, "cannot find the cortex binary next to cortex-api")),
    };
    let home = reader.home().root().to_path_buf();
    let mut cmd = std::process::Command::new(cortex);
    cmd.arg("--home")
        .arg(&home)
        .arg("restart")
        .arg(name)
        .env_remove("CORTEX_HOME")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // Its own process group: a restart of `api` (a TERM to this process) does not reach it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    match cmd.spawn() {
        Ok(mut child) => {
            let pid = child.id();
            // Reaped by a thread of its own (no zombie left behind while the API runs).
            let _ = std::thread::Builder::new().name("api-restart".into()).spawn(move || child.wait());
            Reply::Now(Response::json(202, &json!({"daemon": name, "restarting": true, "by_pid": pid})))
        }
        Err(e) => Reply::Now(Response::error(500, format!("cannot run cortex restart {name}: {e}"))),
    }
}
