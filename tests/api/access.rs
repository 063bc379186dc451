//! Who may call what, attacked for real over HTTP against a live `cortex-api` (issue 16, items
//! 6–8): a DNS-rebinding page and an anonymous local caller read no task output when tokens are
//! configured; without tokens, only reads and the runbooks' pause/resume/cancel are open (schedule
//! run-now/pause/resume and retry are refused, their CLI equivalents still work); an `Origin` of
//! another local web application (another port) is refused.
use crate::support::api::*;
use crate::support::task::*;
use crate::support::*;
use serde_json::Value;

const OPERATE: &str = "operate-0123456789abcdef-secret";
const READER: &str = "grafana-0123456789abcdef-secret";
/// What the task prints: a secret the API must not hand to an anonymous caller.
const SECRET_LINE: &str = "DB_PASSWORD=hunter2-bd41f0";

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// GET with exactly these headers; status and body as text.
fn get_raw(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (code, body) = try_request(port, "GET", path, headers, b"").unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (code, String::from_utf8_lossy(&body).into_owned())
}

/// Item 6: with `[api] tokens_file`, a rebinding page (foreign `Host`) gets nothing, and an
/// anonymous local caller gets no task output.
#[test]
fn with_tokens_task_output_needs_a_token_and_a_foreign_host_gets_nothing() {
    let h = fast_home();
    write_tokens_file(&h, &format!("ops:{OPERATE}\n"));
    h.cortex_ok(&["schedule", "add", "--name", "nightly", "--cron", "0 3 * * *", "--", "sh", "-c", "echo nightly"]);
    let api = Api::start(&h);
    let p = api.port;
    let _worker = start(&h, "worker");
    let _coordinator = start(&h, "coordinator");
    let id = add(&h, &["--description", "leaky", "--", "sh", "-c", &format!("echo {SECRET_LINE}")]);
    let t = wait_status(&h, &id, "completed");
    let dispatch = t["dispatches"][0].as_str().unwrap().to_string();
    // An event whose message quotes the task's text, as /health lists it.
    let line = serde_json::json!({"id": "evt-leak", "timestamp": chrono::Utc::now().to_rfc3339(), "type": "task_failed",
        "severity": "error", "source": "test", "message": format!("task {id} failed: {SECRET_LINE}"), "data": {}});
    let mut log = std::fs::OpenOptions::new().append(true).open(h.join("coordination/dashboard-events.jsonl")).unwrap();
    std::io::Write::write_all(&mut log, format!("{line}\n").as_bytes()).unwrap();

    // The operator, with a token, sees the output: the secret really is there to steal.
    let r = bearer(OPERATE);
    let (code, body) = get_raw(p, &format!("/dispatches/{dispatch}"), &[("Authorization", &r)]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(SECRET_LINE), "{body}");

    // DNS rebinding: the page's own host name, with the API's port. Nothing is answered.
    let rebound = format!("rebind.evil.example:{p}");
    let paths = ["/status", "/health", "/metrics", "/scheduler/status", "/dispatches", "/schedules"];
    for path in
        paths.iter().map(|s| s.to_string()).chain([format!("/dispatches/{dispatch}"), format!("/dispatches/{id}")])
    {
        let (code, body) = get_raw(p, &path, &[("Host", &rebound)]);
        assert_eq!(code, 403, "GET {path} with Host {rebound}: {body}");
        assert!(!body.contains("hunter2"), "{body}");
    }

    // An anonymous local caller: task output, commands and descriptions need a token.
    for path in [
        "/dispatches".to_string(),
        format!("/dispatches/{dispatch}"),
        format!("/dispatches/{id}"),
        "/schedules".into(),
        "/schedules/nightly".into(),
    ] {
        let (code, body) = get_raw(p, &path, &[]);
        assert_eq!(code, 401, "anonymous GET {path}: {body}");
        assert!(!body.contains("hunter2") && !body.contains("echo nightly"), "{body}");
    }
    // Monitoring stays open (the runbooks' curl | jq lines), without the events' text.
    let (code, status) = api.get("/status");
    assert_eq!((code, status["running_count"].as_u64()), (200, Some(0)), "{status}");
    let (code, health) = get_raw(p, "/health", &[]);
    assert!(code == 200 || code == 503, "{health}");
    let health: Value = serde_json::from_str(&health).unwrap();
    let ev = health["recent_events"].as_array().unwrap().iter().find(|e| e["id"] == "evt-leak").cloned();
    let ev = ev.unwrap_or_else(|| panic!("the event is listed: {health}"));
    assert_eq!(ev["type"], "error", "{ev}");
    assert!(ev.get("message").is_none(), "an anonymous caller gets no event text: {ev}");
    assert!(!health.to_string().contains("hunter2"), "{health}");
    let (_, with_token) = get_raw(p, "/health", &[("Authorization", &r)]);
    assert!(with_token.contains(SECRET_LINE), "a token holder sees the message: {with_token}");
    assert_eq!(get_raw(p, "/metrics", &[]).0, 200);
    assert_eq!(api.get("/scheduler/status").0, 200);
}

/// A `[read]` token reads task output but changes nothing; an `[operate]` token does both.
#[test]
fn a_read_token_reads_but_changes_nothing() {
    let h = TestHome::new();
    write_tokens_file(&h, &format!("ops:{OPERATE}\n[read]\ngrafana:{READER}\n"));
    h.cortex_ok(&["schedule", "add", "--name", "nightly", "--cron", "0 3 * * *", "--", "sh", "-c", "echo nightly"]);
    let api = Api::start(&h);
    let p = api.port;
    let r = bearer(READER);
    let (code, body) = get_raw(p, "/schedules/nightly", &[("Authorization", &r)]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("echo nightly"), "{body}");
    for path in ["/scheduler/pause", "/schedules/nightly/run", "/schedules/nightly/pause", "/dispatches/dsp-x/cancel"] {
        let (code, e) = json_request(p, "POST", path, &[("Authorization", &r)], b"");
        assert_eq!(code, 403, "POST {path} with a read token: {e}");
        assert!(e["error"].as_str().unwrap().contains("read-only"), "{e}");
    }
    assert_eq!(api.get("/scheduler/status").1["state"], "running");
    assert!(h.events_of("schedule_run_requested").is_empty());
    let o = bearer(OPERATE);
    let (code, e) = json_request(p, "POST", "/schedules/nightly/run", &[("Authorization", &o)], b"");
    assert_eq!(code, 200, "{e}");
    let (code, e) = json_request(p, "POST", "/scheduler/pause", &[("Authorization", &o)], b"");
    assert_eq!(code, 200, "{e}");
    assert_eq!(h.events_of("scheduler_paused")[0]["data"]["paused_by"], "ops");
}

/// Item 7: without tokens, schedule run-now (it ran an operator's command per request), schedule
/// pause/resume and retry are refused with a body that says what to configure; the runbooks'
/// pause/resume/cancel stay open; the CLI equivalents are unaffected.
#[test]
fn without_tokens_only_the_documented_changes_are_open() {
    let h = TestHome::new();
    h.cortex_ok(&["schedule", "add", "--name", "nightly", "--cron", "0 3 * * *", "--", "sh", "-c", "echo ran >> ran"]);
    let api = Api::start(&h);
    let p = api.port;

    for _ in 0..3 {
        let (code, e) = api.post("/schedules/nightly/run", b"");
        assert_eq!(code, 403, "{e}");
        let msg = e["error"].as_str().unwrap();
        assert!(msg.contains("[api] tokens_file") && msg.contains("`cortex schedule run-now nightly`"), "{e}");
    }
    let (code, e) = api.post("/schedules/nightly/pause", br#"{"reason": "x"}"#);
    assert_eq!(code, 403, "{e}");
    let (code, e) = api.post("/dispatches/dsp-anything/retry", b"");
    assert_eq!(code, 403, "{e}");
    let s = &h.read_json("coordination/schedules.json")["schedules"][0];
    assert_eq!(s["pending_runs"].as_array().map_or(0, Vec::len), 0, "no run was requested: {s}");
    assert_eq!(s["state"], "active", "{s}");
    assert!(h.events_of("schedule_run_requested").is_empty());
    assert!(h.events_of("schedule_paused").is_empty());
    let (code, e) = api.post("/schedules/nightly/resume", b"");
    assert_eq!(code, 403, "{e}");

    // The documented ones, as the runbooks run them: curl, no token, no Origin.
    let sh = |script: &str| {
        let out = std::process::Command::new("sh").arg("-c").arg(script).output().unwrap();
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let base = format!("http://127.0.0.1:{p}");
    assert_eq!(sh(&format!("curl -s -X POST {base}/scheduler/pause | jq -r .status")), "success");
    assert_eq!(sh(&format!("curl -s {base}/scheduler/status | jq -r .state")), "paused");
    assert_eq!(sh(&format!("curl -s -X POST {base}/scheduler/resume | jq -r .status")), "success");
    assert_eq!(sh(&format!("curl -s -X POST {base}/dispatches/dsp-none/cancel | jq -r .code")), "404");
    assert_eq!(sh(&format!("curl -s {base}/status | jq -r '.running_count // 0'")), "0");
    assert_eq!(api.get("/schedules").0, 200, "reads stay open without tokens");

    // The CLI does the same operations without the API.
    h.cortex_ok(&["schedule", "run-now", "nightly"]);
    h.cortex_ok(&["schedule", "pause", "nightly"]);
    let s = &h.read_json("coordination/schedules.json")["schedules"][0];
    assert_eq!(s["pending_runs"].as_array().map_or(0, Vec::len), 1, "{s}");
    assert_eq!(s["state"], "paused", "{s}");
}

/// Item 8: another local web application (same host, another port) cannot pause the scheduler;
/// the API's own origin can. With or without tokens, `Host` must carry the API's port if any.
#[test]
fn origin_and_host_must_be_this_api_including_the_port() {
    let h = TestHome::new();
    let api = Api::start(&h);
    let p = api.port;
    for origin in [
        "http://127.0.0.1:3000".to_string(),
        "http://localhost:3000".into(),
        "http://localhost".into(),
        format!("https://127.0.0.1:{p}"),
        "null".into(),
        format!("http://evil.example:{p}"),
    ] {
        let (code, e) = json_request(p, "POST", "/scheduler/pause", &[("Origin", &origin)], b"");
        assert_eq!(code, 403, "Origin {origin}: {e}");
    }
    let (code, e) = json_request(p, "POST", "/scheduler/pause", &[("Host", "127.0.0.1:3000")], b"");
    assert_eq!(code, 403, "{e}");
    assert_eq!(api.get("/scheduler/status").1["state"], "running", "no refused request paused");
    assert!(h.events_of("scheduler_paused").is_empty());

    // The API's own origin, as the dashboard sends it: with `X-Cortex-Request: 1`, which no
    // cross-site form can add (issue 21). Without it even the own origin is refused: a browser
    // change must come from the page's script (`daemons::api::policy::forgery_refusal`).
    let own = format!("http://127.0.0.1:{p}");
    let (code, e) = json_request(p, "POST", "/scheduler/pause", &[("Origin", &own)], b"");
    assert_eq!(code, 403, "{e}");
    let (code, e) = json_request(p, "POST", "/scheduler/pause", &[("Origin", &own), ("X-Cortex-Request", "1")], b"");
    assert_eq!(code, 200, "{e}");
    let own = format!("http://localhost:{p}");
    let host = format!("localhost:{p}");
    let (code, e) = json_request(
        p,
        "POST",
        "/scheduler/resume",
        &[("Origin", &own), ("Host", &host), ("X-Cortex-Request", "1")],
        b"",
    );
    assert_eq!(code, 200, "{e}");
}

/// `[api] allowed_hosts` admits a DNS name (a network bind reached by name) and nothing else.
#[test]
fn allowed_hosts_admit_a_configured_name() {
    let h = TestHome::new();
    h.set_config("api", "allowed_hosts", r#"["cortex.lan"]"#);
    let api = Api::start(&h);
    let p = api.port;
    assert_eq!(get_raw(p, "/status", &[("Host", &format!("cortex.lan:{p}"))]).0, 200);
    assert_eq!(get_raw(p, "/status", &[("Host", &format!("other.lan:{p}"))]).0, 403);
    let origin = format!("http://cortex.lan:{p}");
    let (code, e) = json_request(p, "POST", "/scheduler/pause", &[("Origin", &origin), ("X-Cortex-Request", "1")], b"");
    assert_eq!(code, 200, "{e}");
}

/// Item 6: with tokens configured, an anonymous caller of the open monitoring reads learns that a
/// coordination file is unreadable, but not the reason: a schema error quotes the file's content
/// (here a task's description with a secret), which a token holder alone may read.
#[test]
fn with_tokens_an_unreadable_files_reason_needs_a_token() {
    let h = TestHome::new();
    write_tokens_file(&h, &format!("ops:{OPERATE}\n"));
    let api = Api::start(&h);
    let p = api.port;
    // A queue a broken tool wrote: a task's description where a task object belongs.
    let queue = serde_json::json!({"tasks": [format!("nightly export, {SECRET_LINE}")]});
    std::fs::write(h.join("coordination/task-queue.json"), queue.to_string()).unwrap();
    let r = bearer(OPERATE);
    let (_, with_token) = get_raw(p, "/status", &[("Authorization", &r)]);
    assert!(with_token.contains("task-queue.json") && with_token.contains("hunter2"), "{with_token}");
    for path in ["/status", "/health"] {
        let (code, body) = get_raw(p, path, &[]);
        assert!(code == 200 || code == 503, "GET {path}: {body}");
        assert!(body.contains("coordination/task-queue.json"), "the file is still named: {body}");
        assert!(!body.contains("hunter2"), "anonymous GET {path} quoted the file: {body}");
    }
    // The scheduler's state, broken the same way, for `/scheduler/status`.
    let state = serde_json::json!({"state": format!("paused by {SECRET_LINE}")});
    std::fs::write(h.join("coordination/scheduler-state.json"), state.to_string()).unwrap();
    let (_, with_token) = get_raw(p, "/scheduler/status", &[("Authorization", &r)]);
    assert!(with_token.contains("hunter2"), "{with_token}");
    let (_, body) = get_raw(p, "/scheduler/status", &[]);
    assert!(body.contains("coordination/scheduler-state.json") && !body.contains("hunter2"), "{body}");
}

/// A dispatch record names its logs, but the record is data (a restored archive, a broken tool):
/// `GET /dispatches/<id>` reads only the dispatch's own log under the home, never another file the
/// API can read, nor its log through a planted link.
#[test]
fn output_tail_is_read_only_from_the_dispatchs_own_log() {
    let h = fast_home();
    let api = Api::start(&h);
    let _worker = start(&h, "worker");
    let _coordinator = start(&h, "coordinator");
    let id = add(&h, &["--description", "plain", "--", "sh", "-c", "echo ordinary-output"]);
    let t = wait_status(&h, &id, "completed");
    let dispatch = t["dispatches"][0].as_str().unwrap().to_string();
    let (_, view) = api.get(&format!("/dispatches/{dispatch}"));
    assert!(view.to_string().contains("ordinary-output"), "{view}");

    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("shadow");
    std::fs::write(&secret, format!("root:{SECRET_LINE}\n")).unwrap();
    // The record rewritten to name another file as its logs.
    let spec = h.join(&format!("coordination/worker-specs/completed/{dispatch}.json"));
    let mut rec: Value = serde_json::from_slice(&std::fs::read(&spec).unwrap()).unwrap();
    let own_out = rec["stdout_path"].as_str().unwrap().to_string();
    rec["stdout_path"] = Value::from(secret.display().to_string());
    rec["stderr_path"] = Value::from(secret.display().to_string());
    std::fs::write(&spec, serde_json::to_vec(&rec).unwrap()).unwrap();
    let (_, view) = api.get(&format!("/dispatches/{dispatch}"));
    assert!(!view.to_string().contains("hunter2"), "a recorded path outside the home was read: {view}");
    // The record as written, its log replaced by a link to that file.
    rec["stdout_path"] = Value::from(own_out.clone());
    rec["stderr_path"] = Value::from(own_out.replace(".out", ".err"));
    std::fs::write(&spec, serde_json::to_vec(&rec).unwrap()).unwrap();
    let log = h.join(&own_out);
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink(&secret, &log).unwrap();
    let (_, view) = api.get(&format!("/dispatches/{dispatch}"));
    assert!(!view.to_string().contains("hunter2"), "the log was read through a link: {view}");
}
