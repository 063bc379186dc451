//! The dashboard's server side over real HTTP (issue 21): the page and its files with their
//! headers, the JSON endpoint list kept for scripts, the browser (CSRF) checks on changes, the
//! Server-Sent Events stream and the endpoints the page reads.
use crate::support::api::*;
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
    let (paused, _) = s.until("the paused status", |m| m.event == "status");
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
