//! The dashboard's server side over real HTTP (issue 21): the page and its files with their
//! headers, the JSON endpoint list kept for scripts, the browser (CSRF) checks on changes, the
//! Server-Sent Events stream and the endpoints the page reads.
use crate::support::api::*;
use crate::support::wait_until;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One request with exactly these headers; status, headers (lower-case names) and body.
pub(crate) fn exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Headers, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("Host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).unwrap();
    read_response(&mut BufReader::new(s)).unwrap()
}

fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// `GET /` gives a browser the page with a strict CSP and the hardening headers, and scripts
/// (no `Accept`, `*/*`, `application/json`) the JSON endpoint list as before; the assets have
/// their types and an ETag that answers 304.
#[test]
fn the_page_and_its_assets_are_served_with_strict_headers() {
    let h = api_only_home();
    let api = Api::start(&h);
    let p = api.port;
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let (code, hd, body) = exchange(p, "GET", "/", &[("Accept", browser)], b"");
    assert_eq!(code, 200);
    assert_eq!(header(&hd, "content-type"), Some("text/html; charset=utf-8"));
    let csp = header(&hd, "content-security-policy").expect("a CSP on the page");
    for part in ["default-src 'self'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(header(&hd, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&hd, "referrer-policy"), Some("no-referrer"));
    let page = String::from_utf8(body).unwrap();
    assert!(page.contains("/assets/app.js"), "{page}");
    let etag = header(&hd, "etag").expect("an ETag").to_string();
    let (code, _, body) = exchange(p, "GET", "/", &[("Accept", browser), ("If-None-Match", &etag)], b"");
    assert_eq!((code, body.len()), (304, 0));

    for accept in [None, Some("*/*"), Some("application/json")] {
        let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("Accept", *a)).collect();
        let (code, hd, body) = exchange(p, "GET", "/", &headers, b"");
        assert_eq!(code, 200);
        assert_eq!(header(&hd, "content-type"), Some("application/json"), "Accept {accept:?}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["service"], "cortex-api");
    }

    for (name, ty) in [("app.js", "text/javascript; charset=utf-8"), ("app.css", "text/css; charset=utf-8")] {
        let (code, hd, body) = exchange(p, "GET", &format!("/assets/{name}"), &[], b"");
        assert_eq!(code, 200, "{name}");
        assert_eq!(header(&hd, "content-type"), Some(ty));
        assert_eq!(header(&hd, "x-content-type-options"), Some("nosniff"));
        assert!(!body.is_empty());
        let etag = header(&hd, "etag").unwrap().to_string();
        assert_eq!(exchange(p, "GET", &format!("/assets/{name}"), &[("If-None-Match", &etag)], b"").0, 304);
    }
    assert_eq!(exchange(p, "GET", "/assets/..%2Fmod.rs", &[], b"").0, 404);
    assert_eq!(exchange(p, "GET", "/assets/nope.js", &[], b"").0, 404);
    // DNS rebinding: the page itself is refused to a foreign host name.
    let rebound = format!("rebind.evil.example:{p}");
    assert_eq!(exchange(p, "GET", "/", &[("Accept", browser), ("Host", &rebound)], b"").0, 403);
}

/// One Server-Sent Events message.
#[derive(Debug, Clone)]
pub(crate) struct Sse {
    pub id: Option<String>,
    pub event: String,
    pub data: serde_json::Value,
}

/// An open event stream over a raw socket.
pub(crate) struct SseClient {
    reader: BufReader<TcpStream>,
    pub status: u16,
    pub headers: Headers,
}

impl SseClient {
    pub(crate) fn open(port: u16, path: &str, headers: &[(&str, &str)]) -> SseClient {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut reader = BufReader::new(s);
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        let status: u16 = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            std::io::BufRead::read_line(&mut reader, &mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        SseClient { reader, status, headers }
    }

    /// The next message (comments and `retry:` skipped); None when the stream ended.
    pub(crate) fn next(&mut self) -> Option<Sse> {
        let (mut id, mut event, mut data) = (None, String::new(), String::new());
        loop {
            let mut line = String::new();
            match std::io::BufRead::read_line(&mut self.reader, &mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if event.is_empty() && data.is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&data).unwrap_or_else(|e| panic!("data is not JSON ({e}): {data}"));
                return Some(Sse { id, event, data });
            }
            if line.starts_with(':') || line.starts_with("retry:") {
                continue;
            }
            let (field, value) = line.split_once(": ").unwrap_or((line, ""));
            match field {
                "id" => id = Some(value.to_string()),
                "event" => event = value.to_string(),
                "data" => data.push_str(value),
                other => panic!("unexpected SSE field {other:?} in {line:?}"),
            }
        }
    }

    /// Messages until one matches; panics when the stream ends first.
    pub(crate) fn until(&mut self, what: &str, mut f: impl FnMut(&Sse) -> bool) -> (Sse, Vec<Sse>) {
        let mut seen = Vec::new();
        loop {
            let m = self.next().unwrap_or_else(|| panic!("the stream ended before {what}; seen: {seen:?}"));
            if f(&m) {
                return (m, seen);
            }
            seen.push(m);
        }
    }
}

/// Appends one event line to the home's event log, as any component does.
fn append_event(h: &crate::support::TestHome, id: &str) {
    let line = serde_json::json!({"id": id, "timestamp": chrono::Utc::now().to_rfc3339(), "type": "test_event",
        "severity": "warning", "source": "test", "message": format!("message of {id}"), "data": {}});
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(h.join("coordination/dashboard-events.jsonl"))
        .unwrap();
    log.write_all(format!("{line}\n").as_bytes()).unwrap();
}

/// `GET /events/stream`: new event-log lines and a status change arrive live; a client that
/// reconnects with `Last-Event-ID` gets exactly what it missed (nothing twice), also across a
/// rotation of the log; an unknown id says `resumed: false`.
#[test]
fn the_event_stream_is_live_and_resumes_without_loss_or_duplicates() {
    let h = api_only_home();
    let api = Api::start(&h);
    let p = api.port;
    let mut s = SseClient::open(p, "/events/stream", &[]);
    assert_eq!(s.status, 200);
    assert_eq!(header(&s.headers, "content-type"), Some("text/event-stream; charset=utf-8"));
    let (hello, _) = s.until("hello", |m| m.event == "hello");
    assert_eq!(hello.data["resumed"], false);
    let (status, _) = s.until("the first status", |m| m.event == "status");
    assert_eq!(status.data["status"]["scheduler_state"], "running", "{:?}", status.data);

    append_event(&h, "evt-one");
    let (one, _) = s.until("evt-one", |m| m.event == "event" && m.data["type"] == "test_event");
    assert_eq!(one.data["id"], "evt-one");
    assert_eq!(one.data["message"], "message of evt-one");
    let one_id = one.id.clone().expect("an event has an id");

    // A pause (as the page does it) shows up as a status change.
    let (code, v) = json_request(p, "POST", "/scheduler/pause", &[("X-Cortex-Request", "1")], br#"{"reason":"sse"}"#);
    assert_eq!(code, 200, "{v}");
    let (paused, _) = s.until("the paused status", |m| m.event == "status" && m.data["scheduler"]["state"] == "paused");
    assert_eq!(paused.data["scheduler"]["state"], "paused");
    assert_eq!(paused.data["scheduler"]["reason"], "sse");
    drop(s);

    // Missed while disconnected: two events, then the log is rotated and one more is written.
    append_event(&h, "evt-two");
    append_event(&h, "evt-three");
    let log = h.join("coordination/dashboard-events.jsonl");
    std::fs::rename(&log, h.join("coordination/dashboard-events.jsonl.1")).unwrap();
    append_event(&h, "evt-four");
    let expect = ["evt-two", "evt-three", "evt-four"];
    // The feed may or may not have seen these yet: either way the catch-up is exact.
    let mut r = SseClient::open(p, "/events/stream", &[("Last-Event-ID", &one_id)]);
    let (hello, _) = r.until("hello", |m| m.event == "hello");
    assert_eq!(hello.data["resumed"], true, "{:?}", hello.data);
    let mut got = Vec::new();
    while got.len() < expect.len() {
        let m = r.next().expect("stream open");
        if m.event == "event" && m.data["type"] == "test_event" {
            got.push(m.data["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(got, expect, "exactly the missed events, in order, once");
    append_event(&h, "evt-five");
    let (five, between) = r.until("evt-five", |m| m.event == "event" && m.data["type"] == "test_event");
    assert_eq!(five.data["id"], "evt-five");
    assert!(between.iter().all(|m| m.data["type"] != "test_event"), "no event twice: {between:?}");

    let mut fresh = SseClient::open(p, "/events/stream", &[("Last-Event-ID", "12345-99")]);
    let (hello, _) = fresh.until("hello", |m| m.event == "hello");
    assert_eq!(hello.data["resumed"], false);
}

/// With tokens, an anonymous stream gets the events without their text, and task reads need the
/// token; with the token everything is there.
#[test]
fn with_tokens_an_anonymous_stream_gets_no_event_text() {
    let h = api_only_home();
    let api = Api::start_operated(&h);
    let p = api.port;
    let mut anon = SseClient::open(p, "/events/stream", &[]);
    assert_eq!(anon.status, 200);
    anon.until("status", |m| m.event == "status");
    append_event(&h, "evt-secret");
    let (e, _) = anon.until("the event", |m| m.event == "event");
    assert_eq!(e.data["id"], "evt-secret");
    assert!(e.data.get("message").is_none(), "{:?}", e.data);
    assert_eq!(exchange(p, "GET", "/tasks", &[], b"").0, 401);
    let auth = format!("Bearer {OPERATOR_TOKEN}");
    let mut op = SseClient::open(p, "/events/stream", &[("Authorization", &auth)]);
    op.until("status", |m| m.event == "status");
    append_event(&h, "evt-secret-2");
    let (e, _) = op.until("the event", |m| m.event == "event");
    assert_eq!(e.data["message"], "message of evt-secret-2");
}

/// A browser cannot be made to change anything from another site: a cross-site form post
/// (`application/x-www-form-urlencoded` or `text/plain`, a foreign `Origin`, no custom header)
/// is refused, and so is one without `Origin` that says `Sec-Fetch-Site: cross-site`, and a
/// same-origin one without the header (the dashboard always sends it). The page's own request
/// (same origin, `X-Cortex-Request: 1`) works, and curl (no browser headers) is unaffected.
#[test]
fn cross_site_posts_are_refused_and_the_page_can_act() {
    let h = api_only_home();
    let api = Api::start(&h);
    let p = api.port;
    let own = format!("http://127.0.0.1:{p}");
    let state = || api.get("/scheduler/status").1["state"].as_str().unwrap().to_string();
    let forged: Vec<Vec<(&str, &str)>> = vec![
        vec![("Origin", "http://evil.example"), ("Content-Type", "application/x-www-form-urlencoded")],
        vec![("Origin", "http://evil.example"), ("Content-Type", "text/plain")],
        vec![("Origin", "null"), ("Content-Type", "text/plain")],
        vec![("Sec-Fetch-Site", "cross-site"), ("Sec-Fetch-Mode", "no-cors"), ("Content-Type", "text/plain")],
        vec![("Origin", &own), ("Sec-Fetch-Site", "same-origin"), ("Content-Type", "text/plain")],
        vec![("Origin", &own), ("Sec-Fetch-Site", "cross-site"), ("X-Cortex-Request", "1")],
    ];
    for headers in &forged {
        for path in ["/scheduler/pause", "/events/all/ack", "/tasks/task-x/cancel"] {
            let (code, _, body) = exchange(p, "POST", path, headers, b"reason=pwned");
            assert_eq!(code, 403, "POST {path} with {headers:?}: {}", String::from_utf8_lossy(&body));
        }
    }
    assert_eq!(state(), "running", "no forged request paused the scheduler");
    assert!(h.events_of("event_acknowledged").is_empty());
    // A preflight for the custom header is never approved.
    let (code, hd, _) = exchange(
        p,
        "OPTIONS",
        "/scheduler/pause",
        &[("Origin", "http://evil.example"), ("Access-Control-Request-Headers", "x-cortex-request")],
        b"",
    );
    assert!(code >= 400, "{code}");
    assert!(!hd.iter().any(|(n, _)| n.starts_with("access-control-")), "{hd:?}");
    // A rebinding page (its own host name) gets nothing either, header or not.
    let rebound = format!("rebind.evil.example:{p}");
    let (code, _, _) = exchange(p, "POST", "/scheduler/pause", &[("Host", &rebound), ("X-Cortex-Request", "1")], b"");
    assert_eq!(code, 403);
    assert_eq!(state(), "running");

    // The page: same origin, the header, JSON.
    let page = [
        ("Origin", own.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
        ("X-Cortex-Request", "1"),
        ("Content-Type", "application/json"),
    ];
    let (code, _, body) = exchange(p, "POST", "/scheduler/pause", &page, br#"{"reason":"from the page"}"#);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(state(), "paused");
    // curl, as the runbooks run it.
    let (code, _, _) = exchange(p, "POST", "/scheduler/resume", &[], b"");
    assert_eq!(code, 200);
    assert_eq!(state(), "running");
}

/// The task endpoints against real daemons: add through `POST /tasks` (the `cortex task add`
/// path), find it with a text search, follow its output live on the log stream until it ends,
/// read its dispatches, retry a failed task and cancel a running one.
#[test]
fn tasks_are_added_listed_followed_retried_and_cancelled_over_http() {
    use crate::support::task::*;
    let h = fast_home();
    let api = Api::start_operated(&h);
    let p = api.port;
    let _worker = start(&h, "worker");
    let _coordinator = start(&h, "coordinator");
    let release = h.join("release-1");
    let script =
        format!("echo first; while [ ! -e {} ]; do sleep 0.05; done; echo second; echo oops >&2", release.display());
    let body = serde_json::json!({"description": "follow me <img src=x onerror=alert(1)>", "priority": "high",
        "timeout_seconds": 120, "command": ["sh", "-c", script]});
    let auth = format!("Bearer {OPERATOR_TOKEN}");
    let mut live = SseClient::open(p, "/events/stream", &[("Authorization", &auth)]);
    live.until("the first status", |m| m.event == "status");
    let (code, v) = api.post("/tasks", body.to_string().as_bytes());
    assert_eq!(code, 201, "{v}");
    let id = v["task"]["task_id"].as_str().unwrap().to_string();
    assert_eq!(v["task"]["priority"], "high");
    // The stream tells the page that a dispatch of the new task appeared.
    live.until("the task's dispatch", |m| {
        m.event == "dispatches" && m.data["changed"].as_array().unwrap().iter().any(|c| c["task_id"] == id.as_str())
    });
    drop(live);

    let (code, list) = api.get("/tasks?q=FOLLOW%20ME&limit=10");
    assert_eq!(code, 200, "{list}");
    let rows = list["tasks"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{list}");
    assert_eq!(rows[0]["description"], "follow me <img src=x onerror=alert(1)>", "returned as data, unescaped");
    assert_eq!(api.get("/tasks?q=nothing-like-this").1["tasks"].as_array().unwrap().len(), 0);
    assert_eq!(api.get("/tasks?status=bogus").0, 400);

    wait_until(LONG, "the task runs", || api.get(&format!("/tasks/{id}")).1["status"] == "in_progress");
    let mut log = SseClient::open(p, &format!("/tasks/{id}/log/stream"), &[("Authorization", &auth)]);
    if log.status != 200 {
        let (code, _, body) = exchange(p, "GET", &format!("/tasks/{id}/log/stream"), &[("Authorization", &auth)], b"");
        panic!(
            "{code}: {} {} {}",
            String::from_utf8_lossy(&body),
            api.get(&format!("/tasks/{id}")).1,
            api.get("/dispatches").1
        );
    }
    let mut text = String::new();
    let (first, _) = log.until("the first line", |m| {
        if m.event == "log" {
            text.push_str(m.data["data"].as_str().unwrap());
        }
        text.contains("first\n")
    });
    assert_eq!(first.event, "log");
    assert!(!text.contains("second"), "the task has not printed it yet: {text}");
    std::fs::write(&release, "").unwrap();
    let (end, seen) = log.until("the end of the stream", |m| m.event == "end");
    for m in &seen {
        text.push_str(m.data["data"].as_str().unwrap_or_default());
    }
    assert_eq!(text, "first\nsecond\n", "the output, live, each byte once");
    assert_eq!(end.data["status"], "completed");
    assert!(log.next().is_none(), "the server closes the stream after end");
    // A reconnecting EventSource sends the last chunk's id (the offset after it): the rest only.
    let mut again =
        SseClient::open(p, &format!("/tasks/{id}/log/stream"), &[("Authorization", &auth), ("Last-Event-ID", "6")]);
    let (chunk, _) = again.until("the rest", |m| m.event == "log");
    assert_eq!((chunk.data["data"].as_str(), chunk.id.as_deref()), (Some("second\n"), Some("13")), "{:?}", chunk.data);
    assert_eq!(again.until("end", |m| m.event != "log").0.event, "end");

    // The dispatch record ends first; the coordinator then folds it into the task.
    wait_until(LONG, "the task completes", || api.get(&format!("/tasks/{id}")).1["status"] == "completed");
    let (code, t) = api.get(&format!("/tasks/{id}"));
    assert_eq!(code, 200, "{t}");
    let d = &t["dispatches"][0];
    assert_eq!((d["attempt"].as_u64(), d["exit_code"].as_i64()), (Some(1), Some(0)), "{d}");
    assert!(d["duration_s"].as_f64().is_some() && d["started_at"].is_string() && d["ended_at"].is_string(), "{d}");
    let (_, out) = api.get(&format!("/tasks/{id}/log?stream=stdout"));
    assert_eq!(out["data"], "first\nsecond\n", "{out}");
    let (_, err) = api.get(&format!("/tasks/{id}/log?stream=stderr&offset=1"));
    assert_eq!((err["data"].as_str(), err["offset"].as_u64()), (Some("ops\n"), Some(1)), "{err}");
    assert_eq!(api.get(&format!("/tasks/{id}/log?stream=/etc/passwd")).0, 400);

    // Retry a failed task.
    let body = serde_json::json!({"description": "fails", "max_attempts": 1, "command": ["sh", "-c", "exit 3"]});
    let (code, v) = api.post("/tasks", body.to_string().as_bytes());
    assert_eq!(code, 201, "{v}");
    let failed = v["task"]["task_id"].as_str().unwrap().to_string();
    wait_until(LONG, "the task fails", || api.get(&format!("/tasks/{failed}")).1["status"] == "failed");
    assert_eq!(api.get(&format!("/tasks/{failed}")).1["dispatches"][0]["exit_code"], 3);
    assert!(api.get("/overview").1["failed_1h"].as_u64().unwrap() >= 1, "the failure counts in the last hour");
    // Finished tasks with the archive flag, searched and filtered.
    let (code, all) = api.get("/tasks?all=1&q=follow");
    assert_eq!(code, 200, "{all}");
    assert_eq!(all["tasks"][0]["task_id"].as_str(), Some(id.as_str()), "{all}");
    let (_, done) = api.get("/tasks?all=1&status=completed&limit=10");
    assert!(done["tasks"].as_array().unwrap().iter().any(|t| t["task_id"] == id.as_str()), "{done}");
    let (code, v) = api.post(&format!("/tasks/{failed}/retry"), b"");
    assert_eq!(code, 200, "{v}");
    assert!(matches!(v["status"].as_str(), Some("pending_retry" | "queued" | "in_progress" | "failed")), "{v}");
    assert_eq!(api.post(&format!("/tasks/{id}/retry"), b"").0, 409, "a completed task is not retried");
    assert_eq!(api.post("/tasks/task-nope/retry", b"").0, 404);

    // Cancel a running task.
    let body = serde_json::json!({"description": "cancel me", "command": ["tail", "-f", "/dev/null"]});
    let (_, v) = api.post("/tasks", body.to_string().as_bytes());
    let long = v["task"]["task_id"].as_str().unwrap().to_string();
    wait_until(LONG, "the long task runs", || api.get(&format!("/tasks/{long}")).1["status"] == "in_progress");
    let (code, v) = api.post(&format!("/tasks/{long}/cancel"), b"");
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"], "cancelled", "{v}");

    // Bad input names the field.
    let (code, e) = api.post("/tasks", br#"{"description": "x", "command": "rm -rf /"}"#);
    assert_eq!(code, 400);
    assert!(e["error"].as_str().unwrap().contains("command"), "{e}");
    let (code, e) = api.post("/tasks", br#"{"descripton": "typo"}"#);
    assert_eq!(code, 400);
    assert!(e["error"].as_str().unwrap().contains("descripton"), "{e}");
}

/// `/status` latency (median and 95th percentile of 200 sequential requests, microseconds).
fn status_latency(port: u16) -> (u128, u128) {
    let mut times: Vec<u128> = (0..200)
        .map(|_| {
            let t = std::time::Instant::now();
            let (code, _) = try_request(port, "GET", "/status", &[], b"").unwrap();
            assert_eq!(code, 200);
            t.elapsed().as_micros()
        })
        .collect();
    times.sort();
    (times[times.len() / 2], times[times.len() * 95 / 100])
}

/// 100 open event streams cost no handler thread: `/status` answers about as fast with them as
/// without (the figures are printed), every stream gets a broadcast, and the server holds no
/// thread per stream (its thread count does not grow by 100).
#[test]
fn a_hundred_open_streams_do_not_slow_the_api() {
    let h = api_only_home();
    let api = Api::start(&h);
    let p = api.port;
    let threads = || std::fs::read_dir(format!("/proc/{}/task", api.child.id())).map(|d| d.count()).unwrap_or(0);
    status_latency(p);
    let (idle_p50, idle_p95) = status_latency(p);
    let before = threads();
    let mut streams: Vec<SseClient> = (0..100).map(|_| SseClient::open(p, "/events/stream", &[])).collect();
    for s in &mut streams {
        assert_eq!(s.status, 200);
        s.until("status", |m| m.event == "status");
    }
    let during = threads();
    let (busy_p50, busy_p95) = status_latency(p);
    append_event(&h, "evt-all");
    for s in &mut streams {
        s.until("the broadcast", |m| m.event == "event" && m.data["id"] == "evt-all");
    }
    eprintln!(
        "BENCH /status latency: no streams p50 {idle_p50} us p95 {idle_p95} us; 100 streams p50 {busy_p50} us p95 {busy_p95} us; \
         threads {before} -> {during}"
    );
    assert!(during < before + 10, "a thread per stream? {before} -> {during}");
    assert!(busy_p50 < idle_p50 * 3 + 20_000, "100 streams slowed /status: {idle_p50} us -> {busy_p50} us");
    // The 101st connection is an ordinary request and still served.
    assert_eq!(api.get("/health").0 / 100, 2);
}

/// One metrics snapshot line as the metrics daemon writes it.
fn snapshot_line(at: chrono::DateTime<chrono::Utc>, completed: u64, failed: u64, attempts_failed: u64) -> String {
    let pct = serde_json::json!({"p50": null, "p90": null, "p95": null, "p99": null});
    let v = serde_json::json!({
        "timestamp": at.to_rfc3339(),
        "workers": {"active": 0, "completed": completed, "failed": attempts_failed, "zombies_killed": 0,
            "success_rate": null, "avg_duration_minutes": null, "duration_percentiles": pct},
        "tokens": {"total": 1000, "used": 10, "available": 990, "usage_percentage": 1.0},
        "tasks": {"queued": 0, "in_progress": 0, "pending_retry": 0, "completed": completed, "failed": failed,
            "total": completed + failed},
        "scheduler": {"state": "running"},
        "daemons": {},
    });
    format!("{v}\n")
}

/// The overview data: throughput and failures per minute from the metrics snapshots on disk
/// (the same after the API restarts), the daemons with the API's own PID, the event log paged by
/// severity, circuit breakers and their reset (a change that needs the operate token), and the
/// schedules' fields.
#[test]
fn overview_history_daemons_events_breakers_and_schedules() {
    let h = api_only_home();
    let now = chrono::Utc::now();
    let m = |mins: i64| now - chrono::Duration::minutes(mins);
    std::fs::create_dir_all(h.join("coordination/metrics")).unwrap();
    let snaps = [
        snapshot_line(m(90), 1, 0, 0),
        snapshot_line(m(10), 5, 1, 1),
        snapshot_line(m(9), 8, 1, 2),
        snapshot_line(m(2), 8, 3, 4),
    ];
    std::fs::write(h.join("coordination/metrics/metrics-snapshots.jsonl"), snaps.concat()).unwrap();
    h.cortex_ok(&["schedule", "add", "--name", "nightly", "--cron", "0 3 * * *", "--", "sh", "-c", "true"]);
    let mut api = Api::start_operated(&h);
    let p = api.port;

    let history = |api: &Api| {
        let (code, v) = api.get("/overview/history?minutes=60");
        assert_eq!(code, 200, "{v}");
        v
    };
    let v = history(&api);
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), 61, "{v}");
    let sum = |k: &str| points.iter().map(|p| p[k].as_u64().unwrap()).sum::<u64>();
    // Inside the hour: 10 min ago → 9 min ago (+3 completed, +1 attempt failed), → 2 min ago
    // (+2 failed, +2 attempts failed); the 90-minute-old snapshot is outside the window.
    assert_eq!((sum("completed"), sum("failed"), sum("attempts_failed")), (3, 2, 3), "{v}");
    assert_eq!(v["snapshots"], 3);
    let minute_of =
        |mins: i64| points.iter().position(|p| p["t"].as_str().unwrap() >= m(mins + 1).to_rfc3339().as_str());
    assert!(minute_of(9).is_some());
    // The history comes from the files: the same after a restart of the API.
    api.kill();
    let mut api = Api::start_on(&h, p);
    api.token = Some(OPERATOR_TOKEN.into());
    assert_eq!(
        history(&api)["points"].as_array().unwrap().iter().map(|p| p["completed"].as_u64().unwrap()).sum::<u64>(),
        3
    );

    let (code, ov) = api.get("/overview");
    assert_eq!(code, 200, "{ov}");
    assert_eq!(ov["status"]["scheduler_state"], "running");
    assert_eq!(ov["scheduler"]["state"], "running");
    assert_eq!(ov["failed_1h"], 0);

    let (code, d) = api.get("/daemons");
    assert_eq!(code, 200, "{d}");
    let me = d["daemons"].as_array().unwrap().iter().find(|x| x["name"] == "api").cloned().unwrap();
    assert_eq!(me["state"], "running", "{me}");
    assert_eq!(me["pid"], api.child.id());
    assert!(me["rss_bytes"].as_u64().unwrap() > 0 && me["uptime_seconds"].is_u64(), "{me}");
    let worker = d["daemons"].as_array().unwrap().iter().find(|x| x["name"] == "worker").cloned().unwrap();
    assert_eq!(worker["state"], "disabled");
    assert_eq!(api.post("/daemons/worker/restart", b"").0, 409, "a disabled daemon is not restarted");
    assert_eq!(api.post("/daemons/nope/restart", b"").0, 404);

    // Events, newest first, filtered by severity, paged.
    for (i, sev) in ["info", "warning", "error", "info", "critical"].iter().enumerate() {
        let line = serde_json::json!({"id": format!("evt-{i}"), "timestamp": chrono::Utc::now().to_rfc3339(),
            "type": "test_event", "severity": sev, "source": "test", "message": format!("n{i}"), "data": {}});
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(h.join("coordination/dashboard-events.jsonl"))
            .unwrap();
        log.write_all(format!("{line}\n").as_bytes()).unwrap();
    }
    let (code, page) = api.get("/events?severity=warning&limit=2");
    assert_eq!(code, 200, "{page}");
    let ids: Vec<&str> = page["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["evt-4", "evt-2"], "{page}");
    let next = page["next_before"].as_str().unwrap().to_string();
    let (_, page2) = api.get(&format!("/events?severity=warning&limit=2&before={next}"));
    let ids: Vec<&str> = page2["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["evt-1"], "{page2}");
    assert_eq!(page2["events"][0]["acknowledged"], false);
    assert_eq!(api.get("/events?severity=loud").0, 400);

    // Circuit breakers: listed; reset is an operate change.
    let at = chrono::Utc::now();
    let doc = serde_json::json!({"breakers": {"analysis-worker": {"state": "open", "opened_at": at.to_rfc3339(),
        "half_open_at": (at + chrono::Duration::minutes(5)).to_rfc3339(), "reason": "5 failures in 10 min",
        "failures_in_window": 5, "trips": 1}}, "updated_at": at.to_rfc3339()});
    std::fs::write(h.join("coordination/circuit-breakers.json"), doc.to_string()).unwrap();
    let (code, b) = api.get("/breakers");
    assert_eq!(code, 200, "{b}");
    assert_eq!(
        (b["breakers"][0]["worker_type"].as_str(), b["breakers"][0]["state"].as_str()),
        (Some("analysis-worker"), Some("open"))
    );
    let (code, _) = json_request(p, "POST", "/breakers/analysis-worker/reset", &[], b"");
    assert_eq!(code, 401, "no token, no reset");
    let (code, r) = api.post("/breakers/analysis-worker/reset", b"");
    assert_eq!(code, 200, "{r}");
    assert_eq!(h.read_json("coordination/circuit-breakers.json")["breakers"]["analysis-worker"]["state"], "closed");
    assert_eq!(h.events_of("circuit_breaker_reset").len(), 1);
    assert_eq!(api.post("/breakers/nope/reset", b"").0, 404);

    // Schedules: expression, zone, next run, last run and its result.
    let (code, s) = api.get("/schedules");
    assert_eq!(code, 200, "{s}");
    let n = &s["schedules"][0];
    assert_eq!(n["cron"], "0 3 * * *");
    assert!(n["effective_timezone"].is_string() && n["next_run_at"].is_string(), "{n}");
    assert!(n.get("last_result").is_some_and(|r| r.is_null()), "no run yet: {n}");
    assert_eq!(api.get("/zombies").1["zombies"].as_array().unwrap().len(), 0);
    assert_eq!(api.get("/failure-patterns").0, 200);
}

/// Milliseconds of one GET (status must be 200); the body.
fn timed_get(api: &Api, path: &str) -> (u128, serde_json::Value) {
    let t = std::time::Instant::now();
    let (code, v) = api.get(path);
    assert_eq!(code, 200, "{path}: {v}");
    (t.elapsed().as_millis(), v)
}

/// The tasks table at 100,000 queued tasks: the first page, a later page, a filtered page and a
/// text search answer with the right rows (figures printed: `BENCH`).
#[test]
fn the_tasks_table_pages_through_a_hundred_thousand_tasks() {
    let h = api_only_home();
    let n = 100_000;
    let mut text = String::with_capacity(n * 330);
    text.push_str("{\"tasks\":[");
    for i in 0..n {
        if i > 0 {
            text.push(',');
        }
        let worker = if i % 10 == 0 { "gpu-worker" } else { "shell" };
        let desc = if i == 77_777 { "the needle in the haystack" } else { "routine job" };
        text.push_str(
            &serde_json::json!({
                "task_id": format!("task-20260101000000000-{i:07}"), "description": desc, "priority": "medium",
                "worker_type": worker, "status": "queued", "created_at": "2026-01-01T00:00:00Z", "created_by": "test",
                "attempts": 0, "max_attempts": 3, "budget": 10, "command": ["true"],
            })
            .to_string(),
        );
    }
    text.push_str("]}");
    std::fs::write(h.join("coordination/task-queue.json"), text).unwrap();
    let api = Api::start_operated(&h);
    let (first, v) = timed_get(&api, "/tasks?limit=50");
    assert_eq!(v["tasks"].as_array().unwrap().len(), 50);
    let next = v["next_after_id"].as_str().unwrap().to_string();
    assert_eq!(next, "task-20260101000000000-0000049");
    let (again, _) = timed_get(&api, "/tasks?limit=50");
    let (later, v) = timed_get(&api, &format!("/tasks?limit=50&after_id={next}"));
    assert_eq!(v["tasks"][0]["task_id"], "task-20260101000000000-0000050");
    let (filtered, v) = timed_get(&api, "/tasks?limit=50&worker_type=gpu-worker&status=queued");
    assert!(v["tasks"].as_array().unwrap().iter().all(|t| t["worker_type"] == "gpu-worker"));
    let (search, v) = timed_get(&api, "/tasks?limit=50&q=NEEDLE");
    assert_eq!(v["tasks"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["tasks"][0]["task_id"], "task-20260101000000000-0077777");
    let (status, _) = timed_get(&api, "/status");
    let t = std::time::Instant::now();
    h.cortex_ok(&["task", "list", "--limit", "50"]);
    let cli = t.elapsed().as_millis();
    eprintln!(
        "BENCH /tasks at {n} tasks (debug build): first page {first} ms, again {again} ms, a later page {later} ms, \
         filtered {filtered} ms, text search {search} ms; /status {status} ms; `cortex task list --limit 50` {cli} ms"
    );
}

/// `POST /daemons/<name>/restart` restarts a daemon through the supervisor (`cortex restart`):
/// the stream announces the new PID (`event: daemons`), and the new process is no child of the
/// API.
#[test]
fn a_daemon_restarted_from_the_page_comes_back_with_a_new_pid() {
    let h = crate::support::TestHome::new();
    h.set_config(
        "daemons",
        "disabled",
        r#"["worker", "pm", "metrics", "coordinator", "integration", "failure-pattern", "auto-fix"]"#,
    );
    h.set_config("supervisor", "stabilization_seconds", "0");
    let api = Api::start_operated(&h);
    let p = api.port;
    h.cortex_ok(&["start", "heartbeat"]);
    /// Stops the detached heartbeat daemons whatever the test's outcome.
    struct StopAll<'a>(&'a crate::support::TestHome);
    impl Drop for StopAll<'_> {
        fn drop(&mut self) {
            let _ = self.0.cortex(&["stop", "heartbeat", "--force"]);
        }
    }
    let _stop = StopAll(&h);
    let pid_of = |v: &serde_json::Value| {
        v["daemons"].as_array().unwrap().iter().find(|d| d["name"] == "heartbeat").and_then(|d| d["pid"].as_u64())
    };
    let old = pid_of(&api.get("/daemons").1).expect("heartbeat runs");
    let auth = format!("Bearer {OPERATOR_TOKEN}");
    let mut s = SseClient::open(p, "/events/stream", &[("Authorization", &auth)]);
    s.until("the first daemons", |m| m.event == "daemons");
    let (code, v) = api.post("/daemons/heartbeat/restart", b"");
    assert_eq!(code, 202, "{v}");
    let (m, _) = s.until("the new heartbeat PID", |m| {
        m.event == "daemons"
            && pid_of(&m.data).is_some_and(|p| p != old)
            && m.data["daemons"].as_array().unwrap().iter().any(|d| d["name"] == "heartbeat" && d["state"] == "running")
    });
    let new = pid_of(&m.data).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{new}/stat")).unwrap();
    let ppid: u32 = stat.rsplit(") ").next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    assert_ne!(ppid, api.child.id(), "the restarted daemon is not the API's child");
}

/// A stream whose client stops reading is dropped once 4 MiB wait for it (it would reconnect and
/// catch up from the files); the API meanwhile serves others, and a reading stream gets everything.
#[test]
fn a_stream_that_does_not_read_is_dropped_and_others_go_on() {
    use std::io::Read;
    let h = api_only_home();
    let api = Api::start(&h);
    let p = api.port;
    let mut stuck = TcpStream::connect(("127.0.0.1", p)).unwrap();
    // A small receive buffer, so what the kernel holds for it cannot hide the server's cap.
    nix::sys::socket::setsockopt(&stuck, nix::sys::socket::sockopt::RcvBuf, &65536).unwrap();
    stuck.write_all(format!("GET /events/stream HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\r\n").as_bytes()).unwrap();
    let mut reader = SseClient::open(p, "/events/stream", &[]);
    reader.until("status", |m| m.event == "status");
    // 16 MB of events in a few appends, while `stuck` reads nothing.
    let pad = "x".repeat(900);
    let mut written = 0;
    for chunk in 0..4 {
        let mut text = String::new();
        for i in 0..4000 {
            let line = serde_json::json!({"id": format!("evt-{chunk}-{i}"), "timestamp": chrono::Utc::now().to_rfc3339(),
                "type": "test_event", "severity": "info", "source": "test", "message": pad, "data": {}});
            text.push_str(&format!("{line}\n"));
        }
        written += text.len();
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(h.join("coordination/dashboard-events.jsonl"))
            .unwrap();
        log.write_all(text.as_bytes()).unwrap();
    }
    let (last, _) = reader.until("the last event", |m| m.event == "event" && m.data["id"] == "evt-3-3999");
    assert_eq!(last.data["message"].as_str().map(str::len), Some(900));
    assert_eq!(api.get("/status").0, 200);
    // The stuck client: what was in flight, then the server's close.
    stuck.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = 0;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match stuck.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => panic!("the stuck stream was not closed: {e} after {got} bytes"),
        }
    }
    assert!(got < written, "dropped before everything was sent: {got} of {written} bytes");
}

/// Restarting the API itself from the page: the answer goes out, the API is replaced by a new
/// process on the same port, and a stream reconnecting with its last id resumes.
#[test]
fn the_api_restarted_from_the_page_comes_back_and_the_stream_resumes() {
    let h = api_only_home();
    h.set_config("supervisor", "stabilization_seconds", "0");
    let mut api = Api::start_operated(&h);
    let p = api.port;
    /// Stops the detached API the restart starts, whatever the test's outcome.
    struct StopApi<'a>(&'a crate::support::TestHome);
    impl Drop for StopApi<'_> {
        fn drop(&mut self) {
            let _ = self.0.cortex(&["stop", "api", "--force"]);
        }
    }
    let _stop = StopApi(&h);
    let auth = format!("Bearer {OPERATOR_TOKEN}");
    let mut s = SseClient::open(p, "/events/stream", &[("Authorization", &auth)]);
    s.until("status", |m| m.event == "status");
    append_event(&h, "evt-before");
    let (before, _) = s.until("evt-before", |m| m.event == "event" && m.data["id"] == "evt-before");
    let old = api.child.id();
    let (code, v) = api.post("/daemons/api/restart", b"");
    assert_eq!(code, 202, "{v}");
    // The old process ends (our child), the stream with it.
    let _ = api.child.wait();
    while s.next().is_some() {}
    append_event(&h, "evt-during");
    wait_until(std::time::Duration::from_secs(60), "a new API answers", || {
        matches!(try_request(p, "GET", "/status", &[], b""), Ok((200, _)))
    });
    let (_, d) = api.get("/daemons");
    let me = d["daemons"].as_array().unwrap().iter().find(|x| x["name"] == "api").cloned().unwrap();
    assert_ne!(me["pid"].as_u64(), Some(old as u64), "{me}");
    let mut r = SseClient::open(
        p,
        "/events/stream",
        &[("Authorization", &auth), ("Last-Event-ID", before.id.as_deref().unwrap())],
    );
    let (hello, _) = r.until("hello", |m| m.event == "hello");
    assert_eq!(hello.data["resumed"], true);
    let (during, _) =
        r.until("the event written while it restarted", |m| m.event == "event" && m.data["type"] == "test_event");
    assert_eq!(during.data["id"], "evt-during");
}
