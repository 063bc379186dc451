//! The dashboard (`GET /` of `cortex-api`) in headless Chromium, against real daemons in a
//! temporary home: what it shows, what its buttons do on disk, that data is shown as text, that
//! another site cannot act through the browser, and that it reconnects by itself.

use crate::driver::{Browser, PAGE};
use crate::support::api::write_tokens_file;
use crate::support::fleet::Fleet;
use crate::support::task::{add, show};
use crate::support::*;
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A home whose daemons all run (the API, the task path and the monitors), with short timings.
pub(crate) struct Dash {
    // Declared first: the browser closes before the daemons stop.
    pub b: Browser,
    pub fleet: Fleet,
    pub base: String,
}

pub(crate) fn home() -> TestHome {
    let h = TestHome::new();
    h.set_config("worker", "grace_seconds", "0.5");
    h
}

impl Dash {
    pub(crate) fn start(h: &TestHome) -> Dash {
        Dash::start_sized(h, 1280, 900)
    }

    pub(crate) fn start_sized(h: &TestHome, width: u32, height: u32) -> Dash {
        crate::driver::tools();
        Dash::with_fleet(Fleet::start_all(h), width, height)
    }

    /// Only the named daemons (the benchmark: the API reading a large queue, nothing moving it).
    pub(crate) fn start_named(h: &TestHome, names: &[&str]) -> Dash {
        crate::driver::tools();
        let port = crate::support::faults::configure_fast(h);
        Dash::with_fleet(Fleet::start_named(h, port, None, &[], names), 1280, 900)
    }

    fn with_fleet(fleet: Fleet, width: u32, height: u32) -> Dash {
        let base = format!("http://127.0.0.1:{}/", fleet.api_port);
        let b = Browser::start_sized(width, height);
        Dash { b, fleet, base }
    }

    /// Opens a view (`""` for the overview, `"#/tasks"`, ...) and waits until the live stream is up.
    pub(crate) fn open(&self, view: &str) {
        self.b.goto(&format!("{}{view}", self.base));
        self.b.wait_js("the live stream connected", "return document.getElementById('conn').dataset.state === 'live'");
    }

    /// Marks the page so a later check can tell it was not reloaded.
    fn mark_page(&self) {
        self.b.js("window.__sameDocument = 'yes'; return true;", vec![]);
    }

    fn same_page(&self) -> bool {
        self.b.js("return window.__sameDocument === 'yes';", vec![]) == Value::Bool(true)
    }

    /// Stops `cortex-api` (SIGTERM) and waits for it to exit.
    fn stop_api(&mut self) {
        let at = self.fleet.children.iter().position(|(n, _)| n == "api").expect("the api daemon");
        let (_, mut child) = self.fleet.children.remove(at);
        terminate(&mut child);
    }

    /// Starts `cortex-api` again on the same port and waits until it is ready.
    fn start_api(&mut self) {
        let h = self.fleet.h.clone();
        let mark = h.join("run/api.state.json");
        let _ = std::fs::remove_file(&mark);
        let child = Command::new(bin("cortex-api"))
            .arg("--home")
            .arg(h.path())
            .env_remove("CORTEX_HOME")
            .env_remove("COMMIT_RELAY_HOME")
            .env_remove("CORTEX_API_BIND")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cortex-api");
        let pid = child.id();
        self.fleet.children.push(("api".into(), child));
        wait_until(Duration::from_secs(30), "cortex-api ready again", || {
            std::fs::read(&mark)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|m| m["pid"] == pid && !m["ready_at"].is_null())
        });
    }
}

fn scheduler_state(h: &TestHome) -> Value {
    h.read_json("coordination/scheduler-state.json")
}

/// Waits until `cond` holds, for at most `within` from `since`; returns how long it took.
fn within(since: Instant, within: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    loop {
        if cond() {
            return since.elapsed();
        }
        assert!(since.elapsed() < within, "{what} did not happen within {within:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn overview_shows_the_daemons_and_the_counts() {
    let h = home();
    // Paused before anything runs, so the three tasks stay queued and the counts hold still.
    h.cortex_ok(&["scheduler", "pause", "--reason", "counting"]);
    for i in 0..3 {
        add(&h, &["--description", &format!("queued {i}"), "--", "true"]);
    }
    let d = Dash::start(&h);
    d.open("");
    d.b.wait_text("#count-queued .n", "three queued tasks", |t| t == "3");
    d.b.wait_text("#count-total .n", "three tasks in all", |t| t == "3");
    d.b.wait_text("#scheduler", "the pause and its reason", |t| t.contains("paused") && t.contains("counting"));
    for daemon in ["api", "coordinator", "worker", "metrics", "heartbeat"] {
        let pid = d.fleet.pid(daemon).unwrap_or_else(|| panic!("{daemon} has no PID"));
        let row = format!("#daemon-table tr[data-daemon=\"{daemon}\"]");
        let text = d.b.wait_text(&row, &format!("{daemon} running"), |t| t.contains("running"));
        assert!(text.contains(&pid.to_string()), "the {daemon} row shows its PID {pid}: {text:?}");
    }
    d.b.wait_js("the three charts", "return document.querySelectorAll('#charts svg.chart').length === 3");
    d.b.screenshot("overview");
}

#[test]
fn pause_then_resume_change_the_file_and_the_page_within_a_second() {
    let h = home();
    let d = Dash::start(&h);
    d.open("");
    d.b.wait_js(
        "the scheduler shown running",
        "return document.getElementById('scheduler').dataset.state === 'running'",
    );
    d.b.type_into("#pause-reason", "incident 42: database failover");
    let t0 = Instant::now();
    d.b.click("button[data-action=pause]");
    let on_disk = within(t0, Duration::from_secs(1), "the pause on disk", || {
        let s = scheduler_state(&h);
        s["paused"] == true && s["reason"] == "incident 42: database failover"
    });
    let on_page = within(t0, Duration::from_secs(1), "the pause on the page", || {
        d.b.js("return document.getElementById('scheduler').dataset.state", vec![]) == "paused"
    });
    let text = d.b.text("#scheduler").unwrap_or_default();
    assert!(text.contains("incident 42: database failover"), "the reason is shown: {text:?}");
    d.b.screenshot("paused");
    eprintln!("pause: on disk after {on_disk:?}, on the page after {on_page:?}");

    let t1 = Instant::now();
    d.b.click("button[data-action=resume]");
    within(t1, Duration::from_secs(1), "the resume on disk", || scheduler_state(&h)["paused"] == false);
    within(t1, Duration::from_secs(1), "the resume on the page", || {
        d.b.js("return document.getElementById('scheduler').dataset.state", vec![]) == "running"
    });
    // A pause made elsewhere (the CLI) reaches the open page through the live stream.
    let t2 = Instant::now();
    h.cortex_ok(&["scheduler", "pause", "--reason", "from the terminal"]);
    let page_now = d.b.js("return Math.round(performance.now())", vec![]);
    let pushed = within(t2, Duration::from_secs(10), "a CLI pause on the page", || {
        let paused = d.b.js("return document.getElementById('scheduler').dataset.state", vec![]) == "paused";
        if !paused && t2.elapsed() > Duration::from_millis(9900) {
            let log = d.b.js("return window.cortexLiveLog", vec![]);
            eprintln!("the page's live messages (page time of the CLI pause: {page_now}): {log}");
        }
        paused
    });
    eprintln!("a CLI pause reached the page after {pushed:?} (the CLI run included)");
}

#[test]
fn a_running_tasks_log_tail_grows_live() {
    let h = home();
    let script = "i=0; while [ $i -lt 600 ]; do echo \"tick $i\"; i=$((i+1)); sleep 0.1; done";
    let id = add(&h, &["--description", "ticking", "--", "sh", "-c", script]);
    let d = Dash::start(&h);
    wait_until(Duration::from_secs(30), "the task running", || show(&h, &id)["status"] == "in_progress");
    d.open(&format!("#/task/{id}"));
    let first = d.b.wait_text("#log-stdout", "the first ticks", |t| t.contains("tick 2\n"));
    d.mark_page();
    let seen = first.lines().filter(|l| l.starts_with("tick ")).count();
    let later = format!("tick {}\n", seen + 15);
    let grown = d.b.wait_text("#log-stdout", "more ticks, live", |t| t.contains(&later));
    assert!(d.same_page(), "the tail grew without reloading the page");
    assert!(grown.len() > first.len());
    let state = d.b.text("#log-stdout-state").unwrap_or_default();
    assert!(state.contains("following"), "the page says it follows the output: {state:?}");
    // Nothing lost or repeated in between.
    let ticks: Vec<&str> = grown.lines().filter(|l| l.starts_with("tick ")).collect();
    for (n, line) in ticks.iter().enumerate() {
        assert_eq!(*line, format!("tick {n}"), "line {n} of the tail: {grown:?}");
    }
    d.b.screenshot("log-tail");
}

#[test]
fn cancel_and_retry_with_a_token_asked_once() {
    let h = home();
    let token = "dashboard-operator-token-0123456789";
    write_tokens_file(&h, &format!("operator:{token}\n"));
    let id = add(
        &h,
        &[
            "--description",
            "long sleeper",
            "--max-attempts",
            "1",
            "--",
            "sh",
            "-c",
            "echo started; exec tail -f /dev/null",
        ],
    );
    let d = Dash::start(&h);
    wait_until(Duration::from_secs(30), "the task running", || show(&h, &id)["status"] == "in_progress");
    d.b.goto(&format!("{}#/task/{id}", d.base));
    // The task page needs a token: the page asks once.
    d.b.wait_js("the token dialog", "return document.getElementById('token-dialog').open");
    d.b.type_into("#token-input", token);
    d.b.click("#token-form button[type=submit]");
    d.b.wait_js("the dialog closed", "return !document.getElementById('token-dialog').open");
    d.b.wait_js("the live stream (with the token)", "return document.getElementById('conn').dataset.state === 'live'");
    let stored = d.b.js("return sessionStorage.getItem('cortex-api-token')", vec![]);
    assert_eq!(stored, json!(token), "the token is kept in sessionStorage");
    let local = d.b.js("return localStorage.length", vec![]);
    assert_eq!(local, json!(0), "nothing in localStorage");

    d.b.wait_text("#task-actions", "the Cancel button", |t| t.contains("Cancel"));
    d.b.click("button[data-action=cancel]");
    d.b.accept_dialog();
    wait_until(Duration::from_secs(30), "the task cancelled on disk", || show(&h, &id)["status"] == "cancelled");
    d.b.wait_js(
        "the page showing it cancelled",
        "return document.querySelector('[data-task-status]').dataset.taskStatus === 'cancelled'",
    );
    d.b.screenshot("cancelled");

    d.b.click("button[data-action=retry]");
    wait_until(Duration::from_secs(30), "the task retried on disk", || {
        matches!(show(&h, &id)["status"].as_str(), Some("pending_retry" | "queued" | "in_progress"))
    });
    d.b.wait_js(
        "the page showing the retry",
        "return ['pending_retry','queued','in_progress'].includes(document.querySelector('[data-task-status]').dataset.taskStatus)",
    );
    // A new page load in the same tab does not ask again.
    d.b.goto("about:blank");
    d.b.goto(&format!("{}#/tasks", d.base));
    d.b.wait_text("#task-table", "the task listed", |t| t.contains(&id));
    assert!(!d.b.js("return document.getElementById('token-dialog').open", vec![]).as_bool().unwrap_or(true));
    d.b.screenshot("retried");

    // The add-task form: the new task is in the queue and its page opens.
    d.b.goto(&format!("{}#/new", d.base));
    d.b.type_into("#n-description", "added from the dashboard");
    d.b.type_into("#n-attempts", "2");
    d.b.type_into("#n-command", "echo from the form");
    d.b.click("#n-submit");
    d.b.wait_js("the new task's page", "return location.hash.startsWith('#/task/')");
    let new_id = d.b.js("return decodeURIComponent(location.hash.slice('#/task/'.length))", vec![]);
    let new_id = new_id.as_str().expect("a task id in the address").to_string();
    let added = show(&h, &new_id);
    assert_eq!(added["description"], "added from the dashboard");
    assert_eq!(added["max_attempts"], 2);
    assert_eq!(added["command"], json!(["sh", "-c", "echo from the form"]));
    d.b.wait_text("#task-fields", "the new task's fields", |t| t.contains("added from the dashboard"));
}

/// A description written to run script in the page, and to colour a terminal.
pub(crate) const HOSTILE: &str =
    "<img src=x onerror=alert(1)><script>window.__pwned=1</script>\u{1b}[31mred\u{1b}[0m <b onclick=alert(2)>bold</b>";

#[test]
fn a_hostile_description_is_shown_as_text_and_runs_nothing() {
    let h = home();
    h.cortex_ok(&["scheduler", "pause", "--reason", "keep it queued"]);
    let id = add(&h, &["--description", HOSTILE, "--", "true"]);
    let d = Dash::start(&h);
    let row = format!("#task-table tr[data-task=\"{id}\"] td.desc");
    d.open("#/tasks");
    let shown = d.b.wait_text(&row, "the task's row", |t| !t.is_empty());
    assert!(shown.contains("<img src=x onerror=alert(1)>"), "the markup is shown as text: {shown:?}");
    assert!(shown.contains("<script>window.__pwned=1</script>"), "{shown:?}");
    assert!(shown.contains("^[[31mred^[[0m"), "the escapes are shown in caret notation, not interpreted: {shown:?}");
    d.b.screenshot("hostile-table");
    d.open(&format!("#/task/{id}"));
    let fields = d.b.wait_text("#task-fields", "the task's fields", |t| t.contains("onerror"));
    assert!(fields.contains("<img src=x onerror=alert(1)>"), "{fields:?}");
    // An image that failed to load would have fired its onerror by now: give it the time a
    // broken image takes (it fails at once: x is not found), then check nothing ran.
    let injected = d.b.js(
        "return document.querySelectorAll('main img, main script, main b[onclick], main [onerror]').length",
        vec![],
    );
    assert_eq!(injected, json!(0), "no element was made from the description");
    assert_eq!(d.b.open_dialog(), None, "no alert opened");
    assert_eq!(d.b.js("return typeof window.__pwned", vec![]), json!("undefined"), "no script ran");
    d.b.screenshot("hostile-task");
}

/// A second web site on another port of this machine: it serves one page whose form posts to
/// the API, as a page a browser visits during an incident might.
struct OtherSite {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OtherSite {
    fn start(api_port: u16) -> OtherSite {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the other site");
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let page = format!(
            "<!doctype html><title>other site</title>\
             <form id=text method=post enctype=text/plain action=\"http://127.0.0.1:{api_port}/scheduler/pause\">\
             <input name='{{\"reason\": \"cross-site\", \"x\": \"' value='\"}}'><button id=go-text>go</button></form>\
             <form id=urlenc method=post action=\"http://127.0.0.1:{api_port}/tasks/none/cancel\">\
             <input name=a value=b><button id=go-form>go</button></form>"
        );
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = conn.write_all(reply.as_bytes());
            }
        });
        OtherSite { port, stop, thread: Some(thread) }
    }
}

impl Drop for OtherSite {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_cross_site_form_post_is_refused() {
    let h = home();
    let d = Dash::start(&h);
    let other = OtherSite::start(d.fleet.api_port);
    let other_url = format!("http://127.0.0.1:{}/", other.port);

    // A text/plain form post (a "simple" request: no preflight) whose body is valid JSON.
    d.b.goto(&other_url);
    d.b.click("#go-text");
    d.b.wait_js("the form's answer", &format!("return location.href.startsWith('{}')", d.base));
    let answer = d.b.wait_text("body", "the API's refusal", |t| t.contains("403"));
    assert!(!answer.contains("\"success\""), "the pause was refused: {answer}");
    assert_eq!(scheduler_state(&h)["paused"], false, "the scheduler is not paused: {answer}");
    d.b.screenshot("cross-site-refused");

    // A script on the other site posting with fetch (no-cors, text/plain) is refused too.
    d.b.goto(&other_url);
    let out = d.b.rt.block_on(d.b.c().execute_async(
        "const done = arguments[arguments.length - 1];\
         fetch(arguments[0], {method: 'POST', mode: 'no-cors', headers: {'Content-Type': 'text/plain'}, body: '{\"reason\": \"fetch\"}'})\
           .then(() => done('sent'), (e) => done('error ' + e));",
        vec![json!(format!("{}scheduler/pause", d.base))],
    ));
    assert!(out.is_ok(), "the script ran: {out:?}");
    // The request has been answered (the promise settled); nothing changed on disk.
    assert_eq!(scheduler_state(&h)["paused"], false, "a no-cors fetch from another site cannot pause");

    // The dashboard's own Pause, from the API's origin, still works.
    d.open("");
    d.b.click("button[data-action=pause]");
    wait_until(PAGE, "the dashboard's own pause on disk", || scheduler_state(&h)["paused"] == true);
}

#[test]
fn the_page_reconnects_after_the_api_restarts() {
    let h = home();
    let mut d = Dash::start(&h);
    d.open("");
    d.b.wait_js(
        "the scheduler shown running",
        "return document.getElementById('scheduler').dataset.state === 'running'",
    );
    d.mark_page();
    d.stop_api();
    d.b.wait_text("#conn", "the disconnected state", |t| t.contains("disconnected"));
    d.b.screenshot("disconnected");
    // What happens meanwhile, through the files (the CLI needs no API).
    h.cortex_ok(&["scheduler", "pause", "--reason", "while the API was down"]);
    d.start_api();
    d.b.wait_js("live again", "return document.getElementById('conn').dataset.state === 'live'");
    d.b.wait_text("#scheduler", "the pause made while disconnected", |t| t.contains("while the API was down"));
    assert!(d.same_page(), "the page reconnected by itself, without a reload");
    d.b.screenshot("reconnected");
}

/// The README's picture: the overview of a fleet with some history, on a laptop-sized window.
#[test]
#[ignore = "writes docs/dashboard.png; run by hand: cargo test --test browser readme_screenshot -- --ignored"]
fn readme_screenshot() {
    let h = home();
    for i in 0..6 {
        add(&h, &["--description", &format!("nightly report {i}"), "--", "sh", "-c", "sleep 0.3"]);
    }
    add(&h, &["--description", "flaky import", "--max-attempts", "1", "--", "sh", "-c", "exit 3"]);
    add(&h, &["--description", "long build", "--", "tail", "-f", "/dev/null"]);
    let d = Dash::start_sized(&h, 1200, 1200);
    d.open("");
    d.b.wait_text("#count-running .n", "a running task", |t| t == "1");
    d.b.wait_text("#count-failed .n", "a failed task", |t| t != "0" && t != "—");
    // The charts drawn from at least one metrics snapshot with the finished tasks in it.
    d.b.goto("about:blank");
    d.open("");
    d.b.wait_js("a line in the throughput chart", "return !!document.querySelector('#chart-throughput polyline')");
    d.b.wait_text("#daemon-table", "the daemons", |t| t.contains("coordinator"));
    let shot = d.b.screenshot("readme-overview");
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
    std::fs::create_dir_all(docs.parent().unwrap()).unwrap();
    std::fs::copy(&shot, &docs).unwrap();
}

/// On a phone-sized window every view fits the width (wide tables scroll inside their panel),
/// and the keyboard alone reaches the pause reason and the Pause button.
#[test]
fn a_phone_sized_window_fits_and_the_keyboard_alone_can_pause() {
    let h = home();
    add(
        &h,
        &["--description", "a task with a rather long description that must wrap or clip on a phone", "--", "true"],
    );
    let d = Dash::start_sized(&h, 390, 844);
    for (view, ready) in [
        ("", "#daemon-table"),
        ("#/tasks", "#task-table"),
        ("#/new", "#new-task"),
        ("#/schedules", "#schedule-table"),
        ("#/health", "#event-table"),
    ] {
        d.open(view);
        d.b.wait_js(&format!("{ready} shown"), &format!("return !!document.querySelector('{ready}')"));
        let (scroll, width) = {
            let v = d.b.js("return [document.documentElement.scrollWidth, window.innerWidth]", vec![]);
            (v[0].as_f64().unwrap_or(0.0), v[1].as_f64().unwrap_or(0.0))
        };
        assert!(scroll <= width, "view {view:?} is {scroll}px wide in a {width}px window: it scrolls sideways");
        let name = if view.is_empty() { "overview" } else { view.trim_start_matches("#/") };
        d.b.screenshot(&format!("phone-{name}"));
    }

    d.open("");
    const TAB: &str = "\u{e004}";
    const ENTER: &str = "\u{e007}";
    let active = || {
        d.b.js("return document.activeElement && (document.activeElement.id || document.activeElement.dataset.action || '')", vec![])
    };
    let press = |keys: &str| {
        d.b.rt
            .block_on(async { d.b.c().active_element().await?.send_keys(keys).await })
            .unwrap_or_else(|e| panic!("press {keys:?}: {e}"));
    };
    let mut presses = 0;
    while active() != "pause-reason" {
        press(TAB);
        presses += 1;
        assert!(presses < 40, "Tab never reached the pause reason (at {:?})", active());
    }
    press("typed at the keyboard");
    press(TAB);
    assert_eq!(active(), "pause", "Tab goes from the reason to the Pause button");
    press(ENTER);
    wait_until(PAGE, "the keyboard's pause on disk", || {
        let s = scheduler_state(&h);
        s["paused"] == true && s["reason"] == "typed at the keyboard"
    });
    d.b.wait_js("the page showing it", "return document.getElementById('scheduler').dataset.state === 'paused'");
}

/// Schedules: the page lists a schedule with its expression; Pause and Resume change
/// `schedules.json`, and Run now records a run request (operate actions: a token).
#[test]
fn schedules_pause_resume_and_run_now_from_the_page() {
    let h = home();
    let token = "dashboard-schedule-token-0123456789";
    write_tokens_file(&h, &format!("operator:{token}\n"));
    h.cortex_ok(&["schedule", "add", "--name", "nightly-report", "--cron", "0 3 * * *", "--", "true"]);
    let state = |h: &TestHome| -> Value {
        let all = h.read_json("coordination/schedules.json");
        let list = all["schedules"].as_array().cloned().unwrap_or_default();
        list.into_iter().find(|s| s["name"] == "nightly-report").expect("the schedule in schedules.json")
    };
    let d = Dash::start(&h);
    d.b.goto(&format!("{}#/schedules", d.base));
    d.b.wait_js("the token dialog", "return document.getElementById('token-dialog').open");
    d.b.type_into("#token-input", token);
    d.b.click("#token-form button[type=submit]");
    let row = d.b.wait_text("#schedule-table", "the schedule listed", |t| t.contains("nightly-report"));
    assert!(row.contains("0 3 * * *"), "the expression is shown: {row:?}");

    d.b.click("button[data-action=schedule-pause]");
    wait_until(PAGE, "the schedule paused on disk", || state(&h)["state"] == "paused");
    d.b.wait_text("#schedule-table", "the page showing it paused", |t| t.contains("paused"));
    d.b.click("button[data-action=schedule-resume]");
    wait_until(PAGE, "the schedule active on disk", || state(&h)["state"] == "active");

    d.b.click("button[data-action=schedule-run]");
    wait_until(PAGE, "a run requested or made", || {
        let s = state(&h);
        s["pending_runs"].as_array().is_some_and(|r| !r.is_empty()) || s["last_task_id"].is_string()
    });
    d.b.screenshot("schedules");
}

/// Leaving the page closes its streams: a browser allows six connections per host, so streams
/// left open by earlier loads would make the seventh load wait for one of them to be noticed dead.
#[test]
fn leaving_the_page_frees_its_connections() {
    let h = home();
    let id = add(
        &h,
        &["--description", "output for the streams", "--", "sh", "-c", "while true; do echo x; sleep 0.2; done"],
    );
    let d = Dash::start(&h);
    wait_until(Duration::from_secs(30), "the task running", || show(&h, &id)["status"] == "in_progress");
    for n in 0..8 {
        // The task page holds three streams (events, stdout, stderr), the overview one.
        let (view, mark) =
            if n % 2 == 0 { (format!("#/task/{id}"), "#log-stdout-state") } else { (String::new(), "#daemon-table") };
        d.b.goto("about:blank");
        let t0 = Instant::now();
        d.b.goto(&format!("{}{view}", d.base));
        d.b.wait_js_for(
            Duration::from_secs(10),
            &format!("load {n} showing its data"),
            &format!(
                "return !!document.querySelector('{mark}') && document.getElementById('conn').dataset.state === 'live'"
            ),
        );
        let took = t0.elapsed();
        eprintln!("load {n} ({view:?}) ready after {took:?}");
        // Without closing the streams, a load waited ~60 s here for a connection.
        assert!(took < Duration::from_secs(10), "load {n} of {view:?} took {took:?}");
    }
}
