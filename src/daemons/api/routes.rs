//! The API's endpoints: routing (404 unknown path, 405 wrong method), the access table
//! ([`access`], enforced through [`super::policy`]), and each handler — a thin layer over
//! [`crate::ops::status`], [`crate::domain::scheduler_state`], [`crate::domain::task::dispatches`] and [`crate::domain::task::ops`],
//! the same calls the CLI makes.

use super::commit::Committer;
use super::http::{Handler, Reply, Request, Response};
use super::policy::{self, Access, Site};
use crate::base::clock::format_ts;
use crate::base::error::Error;
use crate::base::error::Result;
use crate::domain::scheduler_state::{self, Actor, Transition};
use crate::domain::task::{dispatches, ops};
use crate::ops::status::{StatusReader, parse_dispatch_status};
use crate::store::api_tokens::Tokens;
use crate::store::home::SpecBucket;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The application: shared by every handler thread.
pub(crate) struct App {
    pub reader: Arc<StatusReader>,
    pub tokens: Tokens,
    /// The API's own address, for the `Host` and `Origin` checks.
    pub site: Site,
    /// Pauses and resumes that change the state go through the group commit.
    pub committer: Committer,
    /// The open event streams.
    pub hub: super::stream::Hub,
    /// What the streams carry, and where new streams join.
    pub feed: super::feed::Feed,
    /// The live tasks, parsed once per change of the queue.
    pub live_tasks: super::tasks::LiveTasks,
    /// The failures of the last hour the overview counts, shared with the feed.
    pub failed: Arc<super::overview::FailedWindow>,
}

/// A matched route.
enum Route<'a> {
    Index,
    /// `GET /assets/<name>`: the dashboard's embedded files.
    Asset(&'a str),
    Status,
    Health,
    Metrics,
    SchedulerStatus,
    Pause,
    Resume,
    Dispatches,
    Dispatch(&'a str),
    Cancel(&'a str),
    Retry(&'a str),
    Schedules,
    Schedule(&'a str),
    ScheduleAction(&'a str, ScheduleAction),
    /// `POST /events/<id>/ack` (`all` for every event up to now).
    EventAck(&'a str),
    /// `GET /events/stream`: Server-Sent Events.
    EventStream,
    /// `GET /events`: the event log, newest first, paged.
    Events,
    Overview,
    History,
    Daemons,
    DaemonRestart(&'a str),
    Tasks,
    AddTask,
    Task(&'a str),
    TaskLog(&'a str),
    TaskLogStream(&'a str),
    TaskCancel(&'a str),
    TaskRetry(&'a str),
    Breakers,
    BreakerReset(&'a str),
    FailurePatterns,
    Zombies,
}

/// The access table: how each endpoint is guarded (what each kind means, with and without
/// `[api] tokens_file`, is the table in [`super::policy`]). A new endpoint gets its row here.
fn access(route: &Route) -> Access {
    match route {
        // The dashboard's page and files: the same for everyone, no data in them.
        Route::Asset(_) => Access::Open,
        // Monitoring: counts, daemon states, the pause switch. The event stream is /health's
        // events and /overview live (with tokens, an anonymous stream gets no event text).
        Route::Index
        | Route::Status
        | Route::Health
        | Route::Metrics
        | Route::SchedulerStatus
        | Route::EventStream
        | Route::Overview
        | Route::History
        | Route::Daemons
        | Route::Breakers => Access::Open,
        // Task output tails, commands, descriptions, schedules' task templates, event texts.
        Route::Dispatches
        | Route::Dispatch(_)
        | Route::Schedules
        | Route::Schedule(_)
        | Route::Events
        | Route::Tasks
        | Route::Task(_)
        | Route::TaskLog(_)
        | Route::TaskLogStream(_)
        | Route::FailurePatterns
        | Route::Zombies => Access::Read,
        // The runbooks' token-less changes (ARCHITECTURE.md threat model).
        // Acknowledging an event only hides it from /health's verdict (runbook 000's pre-check);
        // it is audited and changes nothing that runs. Cancelling a task is cancelling its
        // dispatch (or a task not yet running).
        Route::Pause | Route::Resume | Route::Cancel(_) | Route::EventAck(_) | Route::TaskCancel(_) => {
            Access::Documented
        }
        // They run an operator's command (again), change a schedule, restart a daemon, or let
        // a worker type run again after its breaker opened.
        Route::Retry(_)
        | Route::ScheduleAction(..)
        | Route::AddTask
        | Route::TaskRetry(_)
        | Route::DaemonRestart(_)
        | Route::BreakerReset(_) => Access::Operate,
    }
}

/// The `cortex` command that does what an endpoint does, for refusals to point at (the CLI works
/// on the home's files directly, whatever the API allows).
fn cli_equivalent(route: &Route) -> String {
    match route {
        Route::Index | Route::Asset(_) => "cortex --help".into(),
        Route::Status | Route::Health | Route::Metrics => "cortex status".into(),
        Route::SchedulerStatus => "cortex scheduler status".into(),
        Route::Pause => "cortex scheduler pause".into(),
        Route::Resume => "cortex scheduler resume".into(),
        Route::Dispatches => "cortex dispatches".into(),
        Route::Dispatch(id) => format!("cortex task show {id}"),
        Route::Cancel(_) => "cortex task cancel <task_id>".into(),
        Route::Retry(id) => format!("cortex task retry {id}"),
        Route::Schedules => "cortex schedule list".into(),
        Route::Schedule(id) => format!("cortex schedule show {id}"),
        Route::ScheduleAction(id, ScheduleAction::Pause) => format!("cortex schedule pause {id}"),
        Route::ScheduleAction(id, ScheduleAction::Resume) => format!("cortex schedule resume {id}"),
        Route::ScheduleAction(id, ScheduleAction::Run) => format!("cortex schedule run-now {id}"),
        Route::EventAck(id) if *id == "all" => "cortex event ack --all".into(),
        Route::EventAck(id) => format!("cortex event ack {id}"),
        Route::EventStream | Route::Events => "cortex event list".into(),
        Route::Overview | Route::History | Route::Daemons => "cortex status".into(),
        Route::DaemonRestart(name) => format!("cortex restart {name}"),
        Route::Tasks => "cortex task list".into(),
        Route::AddTask => "cortex task add --description ... -- COMMAND".into(),
        Route::Task(id) | Route::TaskLog(id) | Route::TaskLogStream(id) => format!("cortex task show {id}"),
        Route::TaskCancel(id) => format!("cortex task cancel {id}"),
        Route::TaskRetry(id) => format!("cortex task retry {id}"),
        Route::Breakers => "cortex breaker list".into(),
        Route::BreakerReset(t) => format!("cortex breaker reset {t}"),
        Route::FailurePatterns => "cortex status".into(),
        Route::Zombies => "cortex dispatches --status zombie".into(),
    }
}

/// What a `POST /schedules/<id>/<action>` asks for.
#[derive(Clone, Copy)]
enum ScheduleAction {
    Pause,
    Resume,
    Run,
}

/// Matches a path and method. `Err(allowed)` when the path exists but not for this method;
/// `Ok(None)` for an unknown path.
fn route<'a>(method: &str, path: &'a str) -> std::result::Result<Option<Route<'a>>, &'static str> {
    let path = if path.len() > 1 { path.trim_end_matches('/') } else { path };
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let (get, post) = (method == "GET", method == "POST");
    let r = match segs.as_slice() {
        [""] if get => Route::Index,
        ["assets", name] if get && !name.is_empty() => Route::Asset(name),
        ["status"] if get => Route::Status,
        ["health"] if get => Route::Health,
        ["metrics"] if get => Route::Metrics,
        ["scheduler", "status"] if get => Route::SchedulerStatus,
        ["scheduler", "pause"] if post => Route::Pause,
        ["scheduler", "resume"] if post => Route::Resume,
        ["dispatches"] if get => Route::Dispatches,
        ["dispatches", id] if get && !id.is_empty() => Route::Dispatch(id),
        ["dispatches", id, "cancel"] if post && !id.is_empty() => Route::Cancel(id),
        ["dispatches", id, "retry"] if post && !id.is_empty() => Route::Retry(id),
        ["schedules"] if get => Route::Schedules,
        ["schedules", id] if get && !id.is_empty() => Route::Schedule(id),
        ["schedules", id, "pause"] if post && !id.is_empty() => Route::ScheduleAction(id, ScheduleAction::Pause),
        ["schedules", id, "resume"] if post && !id.is_empty() => Route::ScheduleAction(id, ScheduleAction::Resume),
        ["schedules", id, "run"] if post && !id.is_empty() => Route::ScheduleAction(id, ScheduleAction::Run),
        ["events", id, "ack"] if post && !id.is_empty() => Route::EventAck(id),
        ["events", "stream"] if get => Route::EventStream,
        ["events"] if get => Route::Events,
        ["overview"] if get => Route::Overview,
        ["overview", "history"] if get => Route::History,
        ["daemons"] if get => Route::Daemons,
        ["daemons", name, "restart"] if post && !name.is_empty() => Route::DaemonRestart(name),
        ["tasks"] if get => Route::Tasks,
        ["tasks"] if post => Route::AddTask,
        ["tasks", id] if get && !id.is_empty() => Route::Task(id),
        ["tasks", id, "log"] if get && !id.is_empty() => Route::TaskLog(id),
        ["tasks", id, "log", "stream"] if get && !id.is_empty() => Route::TaskLogStream(id),
        ["tasks", id, "cancel"] if post && !id.is_empty() => Route::TaskCancel(id),
        ["tasks", id, "retry"] if post && !id.is_empty() => Route::TaskRetry(id),
        ["breakers"] if get => Route::Breakers,
        ["breakers", t, "reset"] if post && !t.is_empty() => Route::BreakerReset(t),
        ["failure-patterns"] if get => Route::FailurePatterns,
        ["zombies"] if get => Route::Zombies,
        ["tasks"] => return Err("GET, HEAD, POST"),
        ["events", "stream"]
        | ["events"]
        | ["overview"]
        | ["overview", "history"]
        | ["daemons"]
        | ["tasks", _]
        | ["tasks", _, "log"]
        | ["tasks", _, "log", "stream"]
        | ["breakers"]
        | ["failure-patterns"]
        | ["zombies"] => return Err("GET, HEAD"),
        ["daemons", _, "restart"] | ["tasks", _, "cancel" | "retry"] | ["breakers", _, "reset"] => {
            return Err("POST");
        }
        [""]
        | ["assets", _]
        | ["status"]
        | ["health"]
        | ["metrics"]
        | ["scheduler", "status"]
        | ["dispatches"]
        | ["dispatches", _]
        | ["schedules"]
        | ["schedules", _] => {
            return Err("GET, HEAD");
        }
        ["scheduler", "pause"]
        | ["scheduler", "resume"]
        | ["dispatches", _, "cancel" | "retry"]
        | ["schedules", _, "pause" | "resume" | "run"]
        | ["events", _, "ack"] => {
            return Err("POST");
        }
        _ => return Ok(None),
    };
    Ok(Some(r))
}

fn error_response(e: &Error) -> Response {
    Response::error(500, e.to_string())
}

fn ok_json(value: &impl serde::Serialize) -> Response {
    Response::json(200, value)
}

/// The optional JSON body of a mutating request: empty, or an object.
fn json_body(req: &Request) -> std::result::Result<serde_json::Map<String, Value>, Response> {
    if req.body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Default::default());
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Response::error(400, "the request body must be a JSON object, e.g. {\"reason\": \"...\"}")),
        Err(e) => Err(Response::error(400, format!("the request body is not valid JSON: {e}"))),
    }
}

impl Handler for App {
    fn handle(&self, req: &Request) -> Reply {
        let route = match route(&req.method, &req.path) {
            Ok(Some(r)) => r,
            Ok(None) => return Reply::Now(Response::error(404, format!("no such endpoint: {}", req.path))),
            Err(allow) => return Reply::Now(Response::error(405, "method not allowed").with_header("Allow", allow)),
        };
        if let Some(refusal) = self.site.refusal(req).or_else(|| policy::forgery_refusal(req)) {
            return Reply::Now(refusal);
        }
        let what = format!("{} {}", req.method, req.path);
        let caller = match policy::authorize(
            access(&route),
            &self.tokens,
            req.header("Authorization"),
            &what,
            &cli_equivalent(&route),
        ) {
            Ok(c) => c,
            Err(refusal) => return Reply::Now(refusal),
        };
        // With tokens, an anonymous caller of an open endpoint sees no text tasks wrote.
        let redact = caller.is_none() && !self.tokens.is_empty();
        let who = caller.map_or_else(|| "anonymous".to_string(), |c| c.name);
        let actor = Actor { who, from: format!("api {}", req.peer) };
        match route {
            Route::Index if super::dashboard::wants_html(req) => Reply::Now(super::dashboard::index(req)),
            Route::Asset(name) => Reply::Now(
                super::dashboard::asset(req, name)
                    .unwrap_or_else(|| Response::error(404, format!("no such asset: {}", req.path))),
            ),
            Route::Index => Reply::Now(ok_json(&json!({
                "service": "cortex-api",
                "version": env!("CARGO_PKG_VERSION"),
                "endpoints": [
                    "GET /status", "GET /health", "GET /metrics", "GET /scheduler/status",
                    "POST /scheduler/pause", "POST /scheduler/resume", "GET /dispatches?status=S",
                    "GET /dispatches/<task_id|dispatch_id>", "POST /dispatches/<dispatch_id>/cancel",
                    "POST /dispatches/<dispatch_id>/retry", "GET /schedules?all=1", "GET /schedules/<id|name>",
                    "POST /schedules/<id|name>/pause", "POST /schedules/<id|name>/resume", "POST /schedules/<id|name>/run",
                    "POST /events/<id|all>/ack", "GET /events?severity=&limit=&before=", "GET /events/stream",
                    "GET /overview", "GET /overview/history?minutes=", "GET /daemons", "POST /daemons/<name>/restart",
                    "GET /tasks?status=&worker_type=&q=&limit=&after_id=&all=1", "POST /tasks", "GET /tasks/<id>",
                    "GET /tasks/<id>/log?attempt=&stream=&offset=", "GET /tasks/<id>/log/stream", "POST /tasks/<id>/cancel",
                    "POST /tasks/<id>/retry", "GET /breakers", "POST /breakers/<worker_type>/reset",
                    "GET /failure-patterns", "GET /zombies"
                ],
            }))),
            Route::Status => Reply::Now(match self.reader.system_status() {
                Ok(s) if redact => ok_json(&redact_file_errors(serde_json::to_value(&s).unwrap_or(Value::Null))),
                Ok(s) => ok_json(&s),
                Err(e) => error_response(&e),
            }),
            Route::Health => Reply::Now(match self.reader.health() {
                Ok(h) if redact => Response::json(if h.healthy { 200 } else { 503 }, &redact_health(&h)),
                Ok(h) => Response::json(if h.healthy { 200 } else { 503 }, &h),
                Err(e) => error_response(&e),
            }),
            Route::Metrics => {
                Reply::Now(match self.reader.metrics_with(&|ids| self.live_tasks.created(self.reader.store(), ids)) {
                    Ok(text) => Response::new(200, "text/plain; version=0.0.4; charset=utf-8", text),
                    Err(e) => error_response(&e),
                })
            }
            Route::SchedulerStatus => Reply::Now(match self.reader.scheduler_status() {
                Ok(s) if redact => ok_json(&redact_file_errors(serde_json::to_value(&s).unwrap_or(Value::Null))),
                Ok(s) => ok_json(&s),
                Err(e) => error_response(&e),
            }),
            Route::Pause => self.pause(req, actor),
            Route::Resume => self.resume(req, actor),
            Route::Dispatches => Reply::Now(self.list_dispatches(req)),
            Route::Dispatch(id) => Reply::Now(self.dispatch(id)),
            Route::Cancel(id) => self.cancel(id, &actor),
            Route::Retry(id) => Reply::Now(self.retry(id, &actor)),
            Route::Schedules => Reply::Now(self.schedules(req)),
            Route::Schedule(id) => Reply::Now(self.schedule(id)),
            Route::ScheduleAction(id, action) => Reply::Now(self.schedule_action(req, id, action, &actor)),
            Route::EventAck(id) => Reply::Now(self.event_ack(req, id, &actor)),
            Route::EventStream => self.event_stream(req, redact),
            Route::Overview => Reply::Now(if redact {
                let mut v = super::overview::overview(&self.reader, &self.failed);
                for k in ["status", "scheduler"] {
                    v[k] = redact_file_errors(v[k].take());
                }
                ok_json(&v)
            } else {
                ok_json(&super::overview::overview(&self.reader, &self.failed))
            }),
            Route::History => {
                let minutes = req.query_params().get("minutes").and_then(|m| m.parse().ok()).unwrap_or(60);
                Reply::Now(ok_json(&super::overview::history(&self.reader, &self.live_tasks, minutes)))
            }
            Route::Daemons => Reply::Now(ok_json(&super::overview::daemons(&self.reader))),
            Route::DaemonRestart(name) => super::actions::restart_daemon(&self.reader, name),
            Route::Tasks => Reply::Now(super::tasks::list(&self.reader, &self.live_tasks, req)),
            Route::AddTask => Reply::Now(super::tasks::add(&self.reader, req, &actor)),
            Route::Task(id) => Reply::Now(super::tasks::show(&self.reader, id)),
            Route::TaskLog(id) => Reply::Now(super::tasks::log(&self.reader, req, id)),
            Route::TaskLogStream(id) => self.log_stream(req, id),
            Route::TaskCancel(id) => super::tasks::cancel(&self.reader, id, &actor),
            Route::TaskRetry(id) => Reply::Now(super::tasks::retry(&self.reader, id, &actor)),
            Route::Events => Reply::Now(super::actions::events(&self.reader, req)),
            Route::Breakers => Reply::Now(super::actions::breakers(&self.reader)),
            Route::BreakerReset(t) => Reply::Now(super::actions::reset_breaker(&self.reader, t, &actor)),
            Route::FailurePatterns => Reply::Now(super::actions::failure_patterns(&self.reader)),
            Route::Zombies => Reply::Now(super::actions::zombies(&self.reader)),
        }
    }
}

/// A status view for an anonymous caller when tokens are configured: each unreadable file is
/// still named (`errors[].file`, and `/health`'s `problems` say "cannot read FILE"), but not why:
/// a schema error quotes up to 400 characters of the file's content (a task's description, a
/// line of its output).
pub(super) fn redact_file_errors(mut v: Value) -> Value {
    const WITHHELD: &str = "unreadable (the reason may quote the file's content: send a token to see it)";
    let files: Vec<String> = match v.get_mut("errors").and_then(Value::as_array_mut) {
        Some(errors) => errors
            .iter_mut()
            .filter_map(Value::as_object_mut)
            .map(|e| {
                e.insert("error".into(), Value::from(WITHHELD));
                e.get("file").and_then(Value::as_str).unwrap_or_default().to_string()
            })
            .collect(),
        None => return v,
    };
    if let Some(problems) = v.get_mut("problems").and_then(Value::as_array_mut) {
        for p in problems.iter_mut() {
            let Some(text) = p.as_str() else { continue };
            if let Some(file) = files.iter().find(|f| text.starts_with(&format!("cannot read {f}: "))) {
                *p = Value::from(format!("cannot read {file}: {WITHHELD}"));
            }
        }
    }
    v
}

/// `GET /health` for an anonymous caller when tokens are configured: each event without its
/// `message` (it may quote a task's description or error text); the rest stays, so monitoring
/// (`.healthy`, `.recent_events[] | .type`) works without a token.
fn redact_health(h: &crate::ops::status::Health) -> Value {
    let mut v = redact_file_errors(serde_json::to_value(h).unwrap_or(Value::Null));
    if let Some(events) = v.get_mut("recent_events").and_then(Value::as_array_mut) {
        for e in events.iter_mut().filter_map(Value::as_object_mut) {
            e.remove("message");
        }
    }
    v
}

impl App {
    /// `GET /events/stream`: hands the connection to the feed (see [`super::feed`]).
    fn event_stream(&self, req: &Request, redact: bool) -> Reply {
        let last_id = req
            .header("Last-Event-ID")
            .map(str::to_string)
            .or_else(|| req.query_params().remove("last_event_id"))
            .filter(|s| !s.is_empty());
        self.stream(super::feed::Join { stream: None, last_id, redact, what: super::feed::JoinKind::Main })
    }

    /// `GET /tasks/<id>/log/stream?attempt=&stream=&offset=`: the output of one dispatch, live.
    fn log_stream(&self, req: &Request, id: &str) -> Reply {
        let (dispatch_id, path, offset) = match super::tasks::log_target(&self.reader, req, id) {
            Ok(t) => t,
            Err(r) => return Reply::Now(r),
        };
        // A reconnecting EventSource resumes after the last chunk it got (its id is the offset).
        let offset = req.header("Last-Event-ID").and_then(|v| v.trim().parse::<u64>().ok()).or(offset);
        self.stream(super::feed::Join {
            stream: None,
            last_id: None,
            redact: false,
            what: super::feed::JoinKind::Log { dispatch_id, path, offset },
        })
    }

    /// A stream's response: its head now, then the connection goes to the feed.
    fn stream(&self, mut join: super::feed::Join) -> Reply {
        if !self.hub.reserve() {
            return Reply::Now(Response::error(503, "too many open event streams; retry shortly"));
        }
        let (hub, feed) = (self.hub.clone(), self.feed.clone());
        let head = Response::new(200, "text/event-stream; charset=utf-8", Vec::new());
        Reply::Stream(
            head,
            Box::new(move |stream| match stream {
                Some(s) => {
                    join.stream = Some(s);
                    if !feed.join(join) {
                        hub.release();
                    }
                }
                None => hub.release(),
            }),
        )
    }

    fn pause(&self, req: &Request, actor: Actor) -> Reply {
        let body = match json_body(req) {
            Ok(b) => b,
            Err(r) => return Reply::Now(r),
        };
        let reason = match body.get("reason") {
            None | Some(Value::Null) => req.query_params().remove("reason"),
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Reply::Now(Response::error(400, "\"reason\" must be a string")),
        };
        self.transition(scheduler_state::Request::Pause { actor, reason })
    }

    fn resume(&self, req: &Request, actor: Actor) -> Reply {
        if let Err(r) = json_body(req) {
            return Reply::Now(r);
        }
        self.transition(scheduler_state::Request::Resume { actor })
    }

    /// A pause or resume: answered at once when the scheduler already is in the asked-for
    /// state, else queued for the group commit and answered once its batch is durable.
    fn transition(&self, request: scheduler_state::Request) -> Reply {
        if let Some(t) = scheduler_state::answer_unchanged(self.reader.store(), &request) {
            return Reply::Now(transition_response(Ok(t)));
        }
        let committer = self.committer.clone();
        Reply::Deferred(Box::new(move |responder| {
            committer.submit(request, move |result| responder.send(transition_response(result)))
        }))
    }

    fn list_dispatches(&self, req: &Request) -> Response {
        let params = req.query_params();
        let status = match params.get("status").filter(|s| !s.is_empty()).map(|s| parse_dispatch_status(s)) {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => return Response::error(400, e),
        };
        let task = params.get("task_id").filter(|s| !s.is_empty());
        match self.reader.dispatches() {
            Ok(all) => {
                let views: Vec<_> = all
                    .iter()
                    .filter(|d| status.is_none_or(|s| d.record.status() == s))
                    .filter(|d| task.is_none_or(|t| &d.record.task_id == t))
                    .map(|d| self.reader.dispatch_view(d, false))
                    .collect();
                ok_json(&json!({"count": views.len(), "dispatches": views}))
            }
            Err(e) => error_response(&e),
        }
    }

    /// `GET /dispatches/<id>`: a dispatch id, or a task id (all its dispatches).
    fn dispatch(&self, id: &str) -> Response {
        let all = match self.reader.dispatches() {
            Ok(a) => a,
            Err(e) => return error_response(&e),
        };
        if let Some(d) = all.iter().find(|d| d.record.dispatch_id == id) {
            return ok_json(&json!({
                "task_id": d.record.task_id,
                "dispatch_id": id,
                "dispatches": [self.reader.dispatch_view(d, true)],
            }));
        }
        let of_task: Vec<_> =
            all.iter().filter(|d| d.record.task_id == id).map(|d| self.reader.dispatch_view(d, true)).collect();
        if of_task.is_empty() {
            let known = self.live_tasks.created(self.reader.store(), &[id]).is_ok_and(|c| c[0].is_some());
            if !known {
                return Response::error(404, format!("no task or dispatch {id:?}"));
            }
        }
        ok_json(&json!({"task_id": id, "dispatches": of_task}))
    }

    /// `POST /dispatches/<id>/cancel`: asks the worker to stop the dispatch's process group and
    /// answers once the dispatch has ended (on its own thread: this takes up to the grace period).
    fn cancel(&self, id: &str, actor: &Actor) -> Reply {
        let store = self.reader.store().clone();
        match dispatches::find(&store, id) {
            Ok(None) => return Reply::Now(Response::error(404, format!("no dispatch {id:?}"))),
            Ok(Some((bucket, rec))) if bucket != SpecBucket::Active || !rec.status().is_active() => {
                return Reply::Now(Response::error(
                    400,
                    format!("dispatch not running: {id} is {}", rec.status().as_str()),
                ));
            }
            Ok(Some(_)) => {}
            Err(e) => return Reply::Now(error_response(&e)),
        }
        let grace = self.reader.config().worker.grace_seconds;
        let id = id.to_string();
        let requested_by = format!("{} ({})", actor.who, actor.from);
        Reply::Slow(Box::new(move || {
            if let Err(e) = dispatches::request_cancel(&store, &id, &requested_by) {
                return match e {
                    Error::Refused(m) => Response::error(400, m),
                    e => error_response(&e),
                };
            }
            let wait = Duration::from_secs_f64(grace.max(0.0) + CANCEL_MARGIN_SECONDS);
            match dispatches::wait_ended(&store, &id, wait) {
                Ok(Some(rec)) => ok_json(&json!({"status": rec.status().as_str(), "dispatch_id": id})),
                Ok(None) => Response::error(
                    504,
                    format!(
                        "dispatch {id} is still running {:.0}s after the cancel request; is the worker daemon running? (`cortex status`)",
                        wait.as_secs_f64()
                    ),
                ),
                Err(e) => error_response(&e),
            }
        }))
    }
}

impl App {
    /// `POST /dispatches/<id>/retry`: the dispatch's task becomes `pending_retry` (only from a
    /// failed or cancelled dispatch of a failed or cancelled task; 400 otherwise, 404 unknown).
    fn retry(&self, id: &str, actor: &Actor) -> Response {
        let store = self.reader.store();
        match dispatches::find(store, id) {
            Ok(None) => return Response::error(404, format!("no dispatch {id:?}")),
            Ok(Some(_)) => {}
            Err(e) => return error_response(&e),
        }
        let requested_by = format!("{} ({})", actor.who, actor.from);
        match ops::retry_dispatch(store, id, &requested_by) {
            Ok(task) => ok_json(&json!({
                "status": task.status().as_str(),
                "dispatch_id": id,
                "task_id": task.task_id,
                "next_retry_at": task.next_retry_at().map(format_ts),
                "attempts": task.attempts,
                "max_attempts": task.max_attempts,
            })),
            Err(Error::Refused(m)) => Response::error(400, m),
            Err(e) => error_response(&e),
        }
    }
}

/// How a schedule's last run went: the newest dispatch of its last task (`{"task_id",
/// "status", "exit_code", "ended_at"}`), from the status reader's dispatch index; `status` is
/// `not_dispatched` before the task ran (or once its records were cleaned up), null without a run.
fn last_result(dispatches: Option<&Vec<Arc<crate::ops::status::SpecEntry>>>, task: Option<&str>) -> Value {
    let Some(task) = task else { return Value::Null };
    let newest = dispatches.and_then(|all| {
        all.iter().filter(|d| d.record.task_id == task).max_by_key(|d| (d.record.attempt, d.record.dispatched_at))
    });
    match newest {
        Some(d) => {
            let exit_code = match &d.record.state {
                crate::domain::task::DispatchState::Completed { exit_code, .. } => Some(*exit_code),
                crate::domain::task::DispatchState::Failed { exit_code, .. } => *exit_code,
                _ => None,
            };
            json!({"task_id": task, "status": d.record.status().as_str(), "attempt": d.record.attempt,
                "exit_code": exit_code, "ended_at": d.record.state.ended_at().map(format_ts)})
        }
        None => {
            json!({"task_id": task, "status": "not_dispatched", "attempt": null, "exit_code": null, "ended_at": null})
        }
    }
}

impl App {
    /// `GET /schedules[?all=1]`: every schedule with its next run (archived ones with `all`).
    fn schedules(&self, req: &Request) -> Response {
        let all = req.query_params().get("all").is_some_and(|v| v == "1" || v == "true");
        match crate::domain::schedule::ops::list(self.reader.store(), all) {
            Ok(list) => {
                let dispatches = self.reader.dispatches().ok();
                let list: Vec<Value> = list
                    .iter()
                    .map(|view| {
                        let mut v = serde_json::to_value(view).unwrap_or(Value::Null);
                        v["last_result"] = last_result(dispatches.as_deref(), view.schedule.last_task_id.as_deref());
                        v
                    })
                    .collect();
                ok_json(&json!({"schedules": list}))
            }
            Err(e) => error_response(&e),
        }
    }

    /// `GET /schedules/<id|name>`.
    fn schedule(&self, id: &str) -> Response {
        match crate::domain::schedule::ops::show(self.reader.store(), id) {
            Ok(view) => ok_json(&view),
            Err(Error::Refused(m)) => Response::error(404, m),
            Err(e) => error_response(&e),
        }
    }

    /// `POST /schedules/<id|name>/pause` (optional body `{"reason": "..."}`), `/resume`, `/run`:
    /// the same operations as `cortex schedule pause|resume|run-now`.
    fn schedule_action(&self, req: &Request, id: &str, action: ScheduleAction, actor: &Actor) -> Response {
        use crate::domain::schedule::ops;
        let store = self.reader.store();
        let clock = crate::base::clock::SystemClock;
        let known = match ops::show(store, id) {
            Ok(_) => true,
            Err(Error::Refused(_)) => false,
            Err(e) => return error_response(&e),
        };
        if !known {
            return Response::error(404, format!("no schedule with id or name {id:?}"));
        }
        let result = match action {
            ScheduleAction::Pause => {
                let body = match json_body(req) {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                let reason = match body.get("reason") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(_) => return Response::error(400, "\"reason\" must be a string"),
                };
                ops::pause(store, &clock, id, actor, reason.as_deref()).map(|c| {
                    json!({"status": "success", "message": c.message, "changed": c.changed, "schedule": c.schedule})
                })
            }
            ScheduleAction::Resume => ops::resume(store, &clock, id, actor).map(|c| {
                json!({"status": "success", "message": c.message, "changed": c.changed, "schedule": c.schedule})
            }),
            ScheduleAction::Run => ops::request_run(store, &clock, id, actor).map(|(s, r)| {
                json!({"status": "success", "message": "Run requested", "schedule_id": s.schedule_id, "task_id": r.task_id, "requested_at": format_ts(r.requested_at)})
            }),
        };
        match result {
            Ok(v) => ok_json(&v),
            Err(Error::Refused(m)) => Response::error(400, m),
            Err(e @ Error::Config { .. }) => Response::error(400, e.to_string()),
            Err(e) => error_response(&e),
        }
    }
}

impl App {
    /// `POST /events/<id>/ack` (optional body `{"note": "..."}`; id `all`: every event up to
    /// now): the same operation as `cortex event ack`. 404 for an event `/health` does not count.
    fn event_ack(&self, req: &Request, id: &str, actor: &Actor) -> Response {
        use crate::ops::status::acknowledge::{AckTarget, acknowledge};
        let body = match json_body(req) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let note = match body.get("note") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Response::error(400, "\"note\" must be a string"),
        };
        let target = if id == "all" { AckTarget::All } else { AckTarget::Event(id.to_string()) };
        let by = format!("{} ({})", actor.who, actor.from);
        match acknowledge(&self.reader, &target, &by, note.as_deref(), chrono::Utc::now()) {
            Ok(out) => ok_json(&out),
            Err(Error::Refused(m)) => Response::error(404, m),
            Err(e) => error_response(&e),
        }
    }
}

/// The answer to `POST /scheduler/pause` or `/scheduler/resume`.
fn transition_response(result: Result<Transition>) -> Response {
    match result {
        Ok(t) if t.paused => ok_json(&json!({
            "status": "success",
            "message": t.message,
            "timestamp": format_ts(t.timestamp),
            "paused": true,
            "changed": t.changed,
            "paused_at": t.state.paused_at.map(format_ts),
            "paused_by": t.state.paused_by,
            "reason": t.state.reason,
        })),
        Ok(t) => ok_json(&json!({
            "status": "success",
            "message": t.message,
            "timestamp": format_ts(t.timestamp),
            "paused": false,
            "changed": t.changed,
            "resumed_at": t.state.resumed_at.map(format_ts),
        })),
        Err(e) => error_response(&e),
    }
}

/// How long a cancel waits beyond the worker's grace period before answering 504.
const CANCEL_MARGIN_SECONDS: f64 = 10.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing() {
        assert!(matches!(route("GET", "/status"), Ok(Some(Route::Status))));
        assert!(matches!(route("GET", "/status/"), Ok(Some(Route::Status))));
        assert!(matches!(route("POST", "/dispatches/d-1/cancel"), Ok(Some(Route::Cancel("d-1")))));
        assert!(matches!(route("GET", "/dispatches/t-1"), Ok(Some(Route::Dispatch("t-1")))));
        assert!(matches!(route("POST", "/status"), Err("GET, HEAD")));
        assert!(matches!(route("GET", "/scheduler/pause"), Err("POST")));
        assert!(matches!(route("GET", "/nope"), Ok(None)));
        assert!(matches!(route("POST", "/dispatches/d-1/retry"), Ok(Some(Route::Retry("d-1")))));
        assert!(matches!(route("GET", "/dispatches/d-1/retry"), Err("POST")));
        assert!(matches!(route("POST", "/dispatches/d-1/nope"), Ok(None)));
        assert!(matches!(route("POST", "/events/evt-1/ack"), Ok(Some(Route::EventAck("evt-1")))));
        assert!(matches!(route("GET", "/events/evt-1/ack"), Err("POST")));
        assert!(matches!(route("GET", "/events/stream"), Ok(Some(Route::EventStream))));
        assert!(matches!(route("POST", "/events/stream"), Err("GET, HEAD")));
        assert!(matches!(route("GET", "/assets/app.js"), Ok(Some(Route::Asset("app.js")))));
        assert!(matches!(route("GET", "/assets/a/b"), Ok(None)));
        assert!(matches!(route("POST", "/tasks"), Ok(Some(Route::AddTask))));
        assert!(matches!(route("DELETE", "/tasks"), Err("GET, HEAD, POST")));
        assert!(matches!(route("GET", "/tasks/t-1/log/stream"), Ok(Some(Route::TaskLogStream("t-1")))));
        assert!(matches!(route("GET", "/tasks/t-1/cancel"), Err("POST")));
        assert!(matches!(route("POST", "/breakers/shell/reset"), Ok(Some(Route::BreakerReset("shell")))));
    }

    #[test]
    fn access_table() {
        let a = |m, p| access(&route(m, p).unwrap().unwrap());
        assert_eq!(a("GET", "/status"), Access::Open);
        assert_eq!(a("GET", "/health"), Access::Open);
        assert_eq!(a("GET", "/dispatches"), Access::Read);
        assert_eq!(a("GET", "/schedules/x"), Access::Read);
        assert_eq!(a("POST", "/scheduler/pause"), Access::Documented);
        assert_eq!(a("POST", "/dispatches/d-1/cancel"), Access::Documented);
        assert_eq!(a("POST", "/dispatches/d-1/retry"), Access::Operate);
        assert_eq!(a("POST", "/schedules/x/run"), Access::Operate);
        assert_eq!(a("POST", "/schedules/x/pause"), Access::Operate);
        // The dashboard's endpoints (issue 21).
        for p in ["/", "/assets/app.js", "/events/stream", "/overview", "/overview/history", "/daemons", "/breakers"] {
            assert_eq!(a("GET", p), Access::Open, "{p}");
        }
        for p in [
            "/tasks",
            "/tasks/t-1",
            "/tasks/t-1/log",
            "/tasks/t-1/log/stream",
            "/events",
            "/failure-patterns",
            "/zombies",
        ] {
            assert_eq!(a("GET", p), Access::Read, "{p}");
        }
        assert_eq!(a("POST", "/tasks/t-1/cancel"), Access::Documented);
        for p in ["/tasks", "/tasks/t-1/retry", "/daemons/worker/restart", "/breakers/shell/reset"] {
            assert_eq!(a("POST", p), Access::Operate, "{p}");
        }
    }
}
