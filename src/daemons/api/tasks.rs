//! The task endpoints the dashboard uses, each a thin layer over [`crate::domain::task::ops`]
//! (the calls `cortex task list|show|add|cancel|retry` make): a filtered page of tasks, one task
//! with its dispatches, a dispatch's output from an offset, and the changes.

use super::http::{Reply, Request, Response};
use crate::base::error::Error;
use crate::domain::scheduler_state::Actor;
use crate::domain::task::model::{DispatchState, SignalledEnd, Task, TaskStatus};
use crate::domain::task::ops::{self, NewTask, TaskFilter};
use crate::ops::status::StatusReader;
use crate::store::home::SpecBucket;
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// Tasks in one page at most (and the default).
const MAX_PAGE: usize = 500;
const DEFAULT_PAGE: usize = 50;
/// Tasks read per step while a text search fills a page, and in all at most per request.
const SEARCH_STEP: usize = 2000;
const SEARCH_MAX_SCANNED: usize = 200_000;
/// How long `POST /tasks/<id>/cancel` waits for a running task to stop.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

pub(crate) use super::task_index::LiveTasks;
use super::task_rows::{Row, contains_lowercase};

fn refused_or_500(e: Error, refused_status: u16) -> Response {
    match e {
        Error::Refused(m) => Response::error(refused_status, m),
        e => Response::error(500, e.to_string()),
    }
}

/// One row of the tasks table.
fn row(t: &Task) -> Value {
    json!({
        "task_id": t.task_id,
        "status": t.status().as_str(),
        "priority": t.priority.as_str(),
        "worker_type": t.worker_type,
        "description": t.description,
        "attempts": t.attempts,
        "max_attempts": t.max_attempts,
        "created_at": crate::base::clock::format_ts(t.created_at),
        "started_at": t.started_at().map(crate::base::clock::format_ts),
        "completed_at": t.completed_at().map(crate::base::clock::format_ts),
        "schedule_id": t.schedule_id,
    })
}

/// `GET /tasks?status=&worker_type=&q=&limit=&after_id=&all=1`: a page of tasks (the live queue;
/// with `all`, the archive too, in task id order), filtered before the page is cut. `q` is a
/// case-insensitive substring of the id or description: pages of [`SEARCH_STEP`] are read until
/// the page is full (at most [`SEARCH_MAX_SCANNED`] tasks; `next_after_id` then lets the page
/// go on where the search stopped).
pub(crate) fn list(reader: &StatusReader, live: &LiveTasks, req: &Request) -> Response {
    let p = req.query_params();
    let status = match p.get("status").filter(|s| !s.is_empty()).map(|s| s.parse::<TaskStatus>()) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => return Response::error(400, format!("status: {e}")),
    };
    let limit = match p.get("limit").filter(|s| !s.is_empty()).map(|s| s.parse::<usize>()) {
        None => DEFAULT_PAGE,
        Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => n,
        Some(_) => return Response::error(400, format!("limit: a number from 1 to {MAX_PAGE}")),
    };
    let worker_type = p.get("worker_type").filter(|s| !s.is_empty()).cloned();
    let include_archive = p.get("all").is_some_and(|v| v == "1" || v == "true");
    let after_id = p.get("after_id").filter(|s| !s.is_empty()).cloned();
    let q = p.get("q").map(|s| s.trim().to_lowercase()).filter(|s| !s.is_empty());
    let store = reader.store();
    if !include_archive && !status.is_some_and(|s| s.is_terminal()) {
        let keep = |r: &Row<'_>| {
            status.is_none_or(|s| r.status() == s)
                && worker_type.as_ref().is_none_or(|w| r.worker_type() == w)
                && q.as_ref()
                    .is_none_or(|q| contains_lowercase(r.task_id(), q) || contains_lowercase(r.description(), q))
        };
        return match live.page(store, after_id.as_deref(), limit, keep) {
            Ok((page, next)) => Response::json(200, &json!({"tasks": page, "next_after_id": next})),
            Err(e) => refused_or_500(e, 400),
        };
    }
    let Some(q) = q else {
        let filter = TaskFilter { status, worker_type, include_archive, after_id, limit: Some(limit + 1) };
        return match ops::list_tasks(store, &filter) {
            Ok(mut tasks) => {
                let more = tasks.len() > limit;
                tasks.truncate(limit);
                let next = if more { tasks.last().map(|t| t.task_id.clone()) } else { None };
                Response::json(200, &json!({"tasks": tasks.iter().map(row).collect::<Vec<_>>(), "next_after_id": next}))
            }
            Err(e) => refused_or_500(e, 400),
        };
    };
    let matches = |t: &Task| t.task_id.to_lowercase().contains(&q) || t.description.to_lowercase().contains(&q);
    let mut found: Vec<Value> = Vec::new();
    let mut cursor = after_id;
    let mut scanned = 0;
    loop {
        let filter = TaskFilter {
            status,
            worker_type: worker_type.clone(),
            include_archive,
            after_id: cursor.clone(),
            limit: Some(SEARCH_STEP),
        };
        let tasks = match ops::list_tasks(store, &filter) {
            Ok(t) => t,
            Err(e) => return refused_or_500(e, 400),
        };
        scanned += tasks.len();
        let exhausted = tasks.len() < SEARCH_STEP;
        for t in &tasks {
            cursor = Some(t.task_id.clone());
            if matches(t) {
                found.push(row(t));
                if found.len() == limit {
                    return Response::json(200, &json!({"tasks": found, "next_after_id": cursor}));
                }
            }
        }
        if exhausted {
            return Response::json(200, &json!({"tasks": found, "next_after_id": null}));
        }
        if scanned >= SEARCH_MAX_SCANNED {
            return Response::json(200, &json!({"tasks": found, "next_after_id": cursor, "search_incomplete": true}));
        }
    }
}

/// A dispatch's fields for the task page: attempt, times, exit, signal, duration, tokens.
fn dispatch_row(bucket: SpecBucket, r: &crate::domain::task::DispatchRecord) -> Value {
    let ts = |t: Option<crate::base::clock::Timestamp>| t.map(crate::base::clock::format_ts);
    let (started_at, pid, exit_code, signal, duration_s, error) = match &r.state {
        DispatchState::Starting => (None, None, None, None, None, None),
        DispatchState::Slurm { started_at, reason, .. } => (*started_at, None, None, None, None, reason.clone()),
        DispatchState::Running { started_at, pid, .. } => (Some(*started_at), Some(*pid), None, None, None, None),
        DispatchState::Completed { exit_code, duration_s, .. } => {
            (None, None, Some(*exit_code), None, Some(*duration_s), None)
        }
        DispatchState::Failed { exit_code, signal, duration_s, error, .. } => {
            (None, None, *exit_code, *signal, *duration_s, Some(error.clone()))
        }
        DispatchState::Cancelled(SignalledEnd { signal, duration_s, .. })
        | DispatchState::Timeout(SignalledEnd { signal, duration_s, .. }) => {
            (None, None, None, *signal, *duration_s, None)
        }
        DispatchState::Lost { reason, .. } | DispatchState::Zombie { reason, .. } => {
            (None, None, None, None, None, Some(reason.clone()))
        }
    };
    let started_at = started_at.or_else(|| {
        // A finished record keeps no start time of its own: its end minus its duration.
        let end = r.state.ended_at()?;
        let d = duration_s?;
        Some(end - chrono::Duration::milliseconds((d * 1000.0) as i64))
    });
    json!({
        "dispatch_id": r.dispatch_id,
        "attempt": r.attempt,
        "status": r.status().as_str(),
        "stage": bucket.dir_name(),
        "worker_type": r.worker_type,
        "dispatched_at": crate::base::clock::format_ts(r.dispatched_at),
        "started_at": ts(started_at),
        "ended_at": ts(r.state.ended_at()),
        "exit_code": exit_code,
        "signal": signal,
        "duration_s": duration_s,
        "tokens_used": r.tokens_used,
        "budget_reserved": r.budget_reserved,
        "timeout_seconds": r.timeout_seconds,
        "pid": pid,
        "error": error,
        "command": r.command,
        "executor": if r.is_slurm() { "slurm" } else { "local" },
    })
}

/// A task's dispatch records: those it lists, and those the reader's index holds for it (a
/// dispatch being started is recorded before the task lists it).
fn task_records(
    reader: &StatusReader,
    task: &Task,
) -> crate::base::error::Result<Vec<(SpecBucket, crate::domain::task::DispatchRecord)>> {
    let mut out = ops::task_dispatches(reader.store(), task)?;
    if let Ok(all) = reader.dispatches() {
        for d in all.iter().filter(|d| d.record.task_id == task.task_id) {
            if !out.iter().any(|(_, r)| r.dispatch_id == d.record.dispatch_id) {
                out.push((d.bucket, d.record.clone()));
            }
        }
    }
    out.sort_by_key(|a| (a.1.attempt, a.1.dispatched_at));
    Ok(out)
}

/// `GET /tasks/<id>`: the task record, its routing decision and every dispatch.
pub(crate) fn show(reader: &StatusReader, id: &str) -> Response {
    let store = reader.store();
    let task = match ops::find_task(store, id) {
        Ok(Some(t)) => t,
        Ok(None) => return Response::error(404, format!("no task {id:?} (queue, intake or archive)")),
        Err(e) => return refused_or_500(e, 400),
    };
    let records = match task_records(reader, &task) {
        Ok(r) => r,
        Err(e) => return refused_or_500(e, 400),
    };
    let rows: Vec<Value> = records.iter().map(|(b, r)| dispatch_row(*b, r)).collect();
    Response::json(
        200,
        &json!({
            "task": task,
            "status": task.status().as_str(),
            "routing": task.routing,
            "dispatches": rows,
        }),
    )
}

/// Which output `GET /tasks/<id>/log[/stream]` reads: the dispatch (`attempt`, default the
/// latest), its own file (`stream=stdout|stderr`; only `agents/logs/workers/<dispatch>.out|.err`,
/// never a path a record names) and the `offset` asked for.
pub(crate) fn log_target(
    reader: &StatusReader,
    req: &Request,
    id: &str,
) -> Result<(String, PathBuf, Option<u64>), Response> {
    let p = req.query_params();
    let err = match p.get("stream").map(String::as_str).unwrap_or("stdout") {
        "stdout" | "" => false,
        "stderr" => true,
        other => return Err(Response::error(400, format!("stream: {other:?} is not stdout or stderr"))),
    };
    let attempt = match p.get("attempt").filter(|s| !s.is_empty()).map(|s| s.parse::<u32>()) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(_)) => return Err(Response::error(400, "attempt: a number (1 for the first attempt)")),
    };
    let offset = match p.get("offset").filter(|s| !s.is_empty()).map(|s| s.parse::<u64>()) {
        None => None,
        Some(Ok(o)) => Some(o),
        Some(Err(_)) => return Err(Response::error(400, "offset: a byte offset (a number)")),
    };
    let store = reader.store();
    let task = match ops::find_task(store, id) {
        Ok(Some(t)) => t,
        Ok(None) => return Err(Response::error(404, format!("no task {id:?}"))),
        Err(e) => return Err(refused_or_500(e, 400)),
    };
    let records = task_records(reader, &task).map_err(|e| refused_or_500(e, 400))?;
    let rec = match attempt {
        Some(a) => records.iter().find(|(_, r)| r.attempt == a),
        None => records.iter().max_by_key(|(_, r)| (r.attempt, r.dispatched_at)),
    };
    // A dispatch the task names whose record the worker has not written yet: its output files
    // are named by its id alone.
    let dispatch_id = match rec {
        Some((_, r)) => r.dispatch_id.clone(),
        None => match task.dispatches.last().filter(|_| attempt.is_none_or(|a| a == task.attempts)) {
            Some(d) => d.clone(),
            None => {
                let which = attempt.map(|a| format!(" for attempt {a}")).unwrap_or_default();
                return Err(Response::error(404, format!("task {id} has no dispatch{which}")));
            }
        },
    };
    if !crate::domain::task::dispatches::is_valid_id(&dispatch_id) {
        return Err(Response::error(404, format!("task {id}: its dispatch id is not a valid id")));
    }
    let home = reader.home();
    let path = if err { home.dispatch_stderr(&dispatch_id) } else { home.dispatch_stdout(&dispatch_id) };
    Ok((dispatch_id, path, offset))
}

/// `GET /tasks/<id>/log?attempt=&stream=&offset=&max=`: up to 64 KiB of a dispatch's output
/// from `offset` (default: the last `max` bytes), with the offset to ask from next.
pub(crate) fn log(reader: &StatusReader, req: &Request, id: &str) -> Response {
    let (dispatch_id, path, offset) = match log_target(reader, req, id) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let max = req
        .query_params()
        .get("max")
        .and_then(|m| m.parse::<u64>().ok())
        .unwrap_or(super::feed::LOG_CHUNK)
        .clamp(1, super::feed::LOG_CHUNK);
    let size = std::fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
    let start = offset.unwrap_or(size.saturating_sub(max)).min(size);
    let (mut data, mut next) = super::feed::read_chunk(&path, start);
    if next - start > max {
        let cut = (0..=max as usize).rev().find(|i| data.is_char_boundary(*i)).unwrap_or(0);
        data.truncate(cut);
        next = start + cut as u64;
    }
    let running = reader
        .dispatches()
        .ok()
        .and_then(|all| all.iter().find(|d| d.record.dispatch_id == dispatch_id).map(|d| d.record.status().is_active()))
        .unwrap_or(false);
    let stream = if path.extension().is_some_and(|e| e == "err") { "stderr" } else { "stdout" };
    Response::json(
        200,
        &json!({
            "dispatch_id": dispatch_id, "stream": stream, "offset": start, "next_offset": next, "size": size,
            "data": data, "running": running,
        }),
    )
}

fn opt_string(body: &Map<String, Value>, key: &str) -> Result<Option<String>, Response> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Response::error(400, format!("{key:?} must be a string"))),
    }
}

fn opt_number(body: &Map<String, Value>, key: &str) -> Result<Option<f64>, Response> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_f64().is_some_and(|f| f.is_finite() && f >= 0.0) => Ok(n.as_f64()),
        Some(_) => Err(Response::error(400, format!("{key:?} must be a number, 0 or more"))),
    }
}

/// `POST /tasks`: `{"description", "priority", "worker_type", "budget", "timeout_seconds",
/// "max_attempts", "command": [argv]}` → 201 `{"task": ...}`, as `cortex task add`.
pub(crate) fn add(reader: &StatusReader, req: &Request, actor: &Actor) -> Response {
    let body = match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Response::error(400, "the request body must be a JSON object with at least \"description\""),
        Err(e) => return Response::error(400, format!("the request body is not valid JSON: {e}")),
    };
    let known = ["description", "priority", "worker_type", "budget", "timeout_seconds", "max_attempts", "command"];
    if let Some(k) = body.keys().find(|k| !known.contains(&k.as_str())) {
        return Response::error(400, format!("unknown field {k:?} (known: {})", known.join(", ")));
    }
    let parsed = (|| -> Result<NewTask, Response> {
        let description = opt_string(&body, "description")?
            .ok_or_else(|| Response::error(400, "\"description\" is required (a non-empty string)"))?;
        let priority = opt_string(&body, "priority")?
            .map(|p| p.parse().map_err(|e: String| Response::error(400, format!("priority: {e}"))))
            .transpose()?;
        let command = match body.get("command") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| Response::error(400, "\"command\" must be an array of strings (argv)"))?,
            Some(_) => return Err(Response::error(400, "\"command\" must be an array of strings (argv)")),
        };
        let whole = |key: &str| -> Result<Option<u64>, Response> {
            match opt_number(&body, key)? {
                Some(f) if f.fract() != 0.0 => Err(Response::error(400, format!("{key:?} must be a whole number"))),
                other => Ok(other.map(|f| f as u64)),
            }
        };
        Ok(NewTask {
            executor: None,
            slurm_opts: Vec::new(),
            description,
            priority,
            worker_type: opt_string(&body, "worker_type")?,
            budget: whole("budget")?,
            max_attempts: whole("max_attempts")?.map(|n| n.min(u32::MAX as u64) as u32),
            timeout_seconds: opt_number(&body, "timeout_seconds")?,
            after: None,
            delay_seconds: None,
            command,
            created_by: Some(format!("{} ({})", actor.who, actor.from)),
            repo: None,
            schedule_id: None,
            task_id: None,
        })
    })();
    let new = match parsed {
        Ok(n) => n,
        Err(r) => return r,
    };
    match ops::add_task(reader.store(), new) {
        Ok(task) => Response::json(201, &json!({"task": task})),
        Err(e @ (Error::Refused(_) | Error::Config { .. })) => Response::error(400, e.to_string()),
        Err(e) => Response::error(500, e.to_string()),
    }
}

/// `POST /tasks/<id>/cancel`: as `cortex task cancel` (waits up to 10 s for a running task, on
/// its own thread).
pub(crate) fn cancel(reader: &StatusReader, id: &str, actor: &Actor) -> Reply {
    let store = reader.store().clone();
    let id = id.to_string();
    let by = format!("{} ({})", actor.who, actor.from);
    Reply::Slow(Box::new(move || match ops::cancel_task(&store, &id, &by, CANCEL_WAIT) {
        Ok(task) => {
            Response::json(200, &json!({"task_id": task.task_id, "status": task.status().as_str(), "task": task}))
        }
        Err(Error::Refused(m)) if m.starts_with("no task") => Response::error(404, m),
        Err(e) => refused_or_500(e, 409),
    }))
}

/// `POST /tasks/<id>/retry`: as `cortex task retry`.
pub(crate) fn retry(reader: &StatusReader, id: &str, actor: &Actor) -> Response {
    let by = format!("{} ({})", actor.who, actor.from);
    match ops::retry_task(reader.store(), id, &by) {
        Ok(task) => {
            Response::json(200, &json!({"task_id": task.task_id, "status": task.status().as_str(), "task": task}))
        }
        Err(Error::Refused(m)) if m.starts_with("no task") => Response::error(404, m),
        Err(e) => refused_or_500(e, 409),
    }
}
