//! Bearer-token authentication: off without tokens (loopback only; which endpoints are open then
//! is `access.rs`'s subject), required on mutating endpoints with tokens, the tokens file must be 0600, tokens never reach the log, and a
//! non-loopback bind without tokens is refused at start.
use crate::support::api::*;
use crate::support::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const ALICE: &str = "alice-0123456789abcdef-secret";
const CI: &str = "ci-bot-fedcba9876543210-secret";

fn write_tokens(h: &TestHome, mode: u32) {
    let path = h.join("api-tokens");
    std::fs::write(&path, format!("# operators\nalice:{ALICE}\nci:{CI}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    h.set_config("api", "tokens_file", "\"api-tokens\"");
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[test]
fn without_tokens_pause_is_open_on_loopback() {
    let h = TestHome::new();
    let api = Api::start(&h);
    let (code, v) = api.post("/scheduler/pause", b"");
    assert_eq!(code, 200, "{v}");
    let ev = &h.events_of("scheduler_paused")[0];
    assert_eq!(ev["data"]["paused_by"], "anonymous");
    assert!(ev["data"]["from"].as_str().unwrap().starts_with("api 127.0.0.1:"));
}

#[test]
fn without_tokens_browser_attacks_are_refused() {
    let h = TestHome::new();
    let api = Api::start(&h);
    let p = api.port;
    // A cross-site form post (the browser adds Origin) and DNS rebinding (a foreign Host).
    let (code, e) = json_request(p, "POST", "/scheduler/pause", &[("Origin", "http://evil.example")], b"");
    assert_eq!(code, 403, "{e}");
    assert_eq!(e["code"], 403);
    let (code, _) = json_request(p, "POST", "/scheduler/pause", &[("Host", "evil.example:8900")], b"");
    assert_eq!(code, 403);
    let (code, _) = json_request(p, "GET", "/status", &[("Host", "rebind.evil.example")], b"");
    assert_eq!(code, 403);
    assert_eq!(api.get("/scheduler/status").1["state"], "running");
    // The API's own origin is fine when the request carries the dashboard's header (a form
    // cannot add it; issue 21).
    let own = format!("http://localhost:{p}");
    let (code, _) = json_request(p, "POST", "/scheduler/pause", &[("Origin", &own), ("X-Cortex-Request", "1")], b"");
    assert_eq!(code, 200);
}

#[test]
fn tokens_guard_mutating_endpoints_and_name_the_actor() {
    let h = TestHome::new();
    write_tokens(&h, 0o600);
    let api = Api::start(&h);
    let p = api.port;

    // Reads stay open.
    assert_eq!(api.get("/scheduler/status").0, 200);
    assert_eq!(api.get("/status").0, 200);

    // Changes need a valid token.
    let (code, e) = api.post("/scheduler/pause", b"");
    assert_eq!(code, 401);
    assert_eq!(e["code"], 401);
    let wrong = bearer("alice-0123456789abcdef-secreX");
    let (code, _) = json_request(p, "POST", "/scheduler/pause", &[("Authorization", &wrong)], b"");
    assert_eq!(code, 401);
    let basic = format!("Basic {ALICE}");
    let (code, _) = json_request(p, "POST", "/scheduler/pause", &[("Authorization", &basic)], b"");
    assert_eq!(code, 401);
    let (code, _) = json_request(p, "POST", "/dispatches/d-1/cancel", &[], b"");
    assert_eq!(code, 401);
    assert_eq!(api.get("/scheduler/status").1["state"], "running", "a refused pause changes nothing");
    assert!(h.events_of("scheduler_paused").is_empty());

    let a = bearer(ALICE);
    let (code, v) =
        json_request(p, "POST", "/scheduler/pause", &[("Authorization", &a)], br#"{"reason": "kernel update"}"#);
    assert_eq!(code, 200, "{v}");
    let s = api.get("/scheduler/status").1;
    assert_eq!(s["paused_by"], "alice");
    let ev = &h.events_of("scheduler_paused")[0];
    assert_eq!(ev["data"]["paused_by"], "alice");
    assert_eq!(ev["data"]["reason"], "kernel update");
    assert!(ev["data"]["from"].as_str().unwrap().starts_with("api 127.0.0.1:"), "{ev}");

    let c = bearer(CI);
    let (code, _) = json_request(p, "POST", "/scheduler/resume", &[("Authorization", &c)], b"");
    assert_eq!(code, 200);
    let ev = &h.events_of("scheduler_resumed")[0];
    assert_eq!(ev["data"]["resumed_by"], "ci");

    // An authorised cancel of an unknown dispatch is a 404, not a 401.
    let (code, _) = json_request(p, "POST", "/dispatches/d-1/cancel", &[("Authorization", &a)], b"");
    assert_eq!(code, 404);

    // No token appears in the daemon log or the events.
    drop(api);
    let log = std::fs::read_to_string(h.join("agents/logs/system/api-daemon.log")).unwrap_or_default();
    let events = std::fs::read_to_string(h.join("coordination/dashboard-events.jsonl")).unwrap();
    for secret in [ALICE, CI, "0123456789abcdef"] {
        assert!(!log.contains(secret), "the log holds a token");
        assert!(!events.contains(secret), "the events hold a token");
    }
    assert!(log.contains("alice, ci"), "the log names the tokens: {log}");
}

#[test]
fn tokens_file_readable_by_others_is_refused() {
    let h = TestHome::new();
    write_tokens(&h, 0o644);
    h.set_config("api", "bind", &format!("\"127.0.0.1:{}\"", free_port()));
    let out = spawn_api(&h).wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 600") && err.contains("api-tokens"), "{err}");
}

#[test]
fn non_loopback_bind_needs_tokens() {
    let h = TestHome::new();
    let port = free_port();
    h.set_config("api", "bind", &format!("\"0.0.0.0:{port}\""));
    let out = spawn_api(&h).wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen on 0.0.0.0") && err.contains("tokens_file"), "{err}");

    // The env override is checked the same way.
    let h2 = TestHome::new();
    let out = std::process::Command::new(bin("cortex-api"))
        .arg("--home")
        .arg(h2.path())
        .env("CORTEX_API_BIND", format!("0.0.0.0:{port}"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to listen"));

    // With tokens it starts, and still guards changes.
    write_tokens(&h, 0o600);
    let api = Api::start_on(&h, port);
    let (code, _) = api.post("/scheduler/pause", b"");
    assert_eq!(code, 401);
    wait_until(Duration::from_secs(5), "api answers on all interfaces", || api.get("/status").0 == 200);
}
