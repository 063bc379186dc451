//! `cortex top` in a real terminal: tmux runs it against a real fleet in a temporary home, the
//! test types with `send-keys` and reads the screen with `capture-pane`, waiting with deadlines.
//! Pausing asks for a reason and then changes `scheduler-state.json`; resuming asks first; the
//! help and a task's log open; the filter narrows the tasks; a task description with terminal
//! escapes is shown escaped; q quits; SIGTERM restores the terminal (cooked mode, the normal
//! screen); idle, it costs under 1 % of a core.
use crate::support::fleet::Fleet;
use crate::support::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

/// A tmux server of this test's own (its socket in the test's home), killed when dropped.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// Starts `command` (a shell command line) in a detached 160x45 session.
    fn start(h: &TestHome, name: &str, command: &str) -> Tmux {
        let t = Tmux { socket: h.join(&format!("tmux-{name}.sock")) };
        let out = t.tmux(&["new-session", "-d", "-s", "top", "-x", "160", "-y", "45", command]);
        assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
        // Keep the pane (and what it shows) after the command exits.
        t.tmux(&["set-option", "-t", "top", "remain-on-exit", "on"]);
        t
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux").arg("-S").arg(&self.socket).args(args).output().expect("run tmux")
    }

    /// Types keys (tmux key names: `Enter`, `Escape`, `C-c`, or a single character).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend_from_slice(keys);
        assert!(self.tmux(&args).status.success());
    }

    /// Types text literally.
    fn text(&self, text: &str) {
        assert!(self.tmux(&["send-keys", "-t", "top", "-l", text]).status.success());
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    /// Waits until the screen satisfies `cond`; returns it.
    fn wait(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + LONG;
        loop {
            let s = self.screen();
            if cond(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; the screen:\n{s}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_text(&self, text: &str) -> String {
        self.wait(&format!("{text:?} on screen"), |s| s.contains(text))
    }

    /// The PID of the pane's command.
    fn pane_pid(&self) -> i32 {
        let out = self.tmux(&["display-message", "-p", "-t", "top", "#{pane_pid}"]);
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("pane pid")
    }

    fn pane_dead(&self) -> bool {
        let out = self.tmux(&["display-message", "-p", "-t", "top", "#{pane_dead}"]);
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

fn top_command(h: &TestHome, after: &str) -> String {
    format!(
        "env -u CORTEX_HOME -u COMMIT_RELAY_HOME {} --home {} top; {after}",
        bin("cortex").display(),
        h.path().display()
    )
}

fn scheduler(h: &TestHome) -> serde_json::Value {
    h.read_json("coordination/scheduler-state.json")
}

fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // utime and stime: fields 14 and 15 of the line, 12 and 13 after the command name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn top_shows_the_fleet_pauses_with_a_reason_and_quits() {
    let h = TestHome::new();
    let _fleet = Fleet::start_all(&h);
    let gate = h.join("gate");
    let script = format!(
        "echo hello-from-task; i=0; while [ ! -e {} ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done",
        gate.display()
    );
    let id = h
        .cortex_ok(&[
            "task",
            "add",
            "--description",
            "evil \u{1b}[2J\u{1b}]0;pwned\u{7} desc",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .trim()
        .to_string();
    let tmux = Tmux::start(&h, "main", &top_command(&h, &format!("echo $? > {}", h.join("top.status").display())));
    let screen = tmux.wait("the task running with its output", |s| s.contains("hello-from-task") && s.contains(&id));
    assert!(screen.contains("Scheduler: RUNNING"), "{screen}");
    for d in ["worker", "coordinator", "heartbeat", "api"] {
        assert!(screen.lines().any(|l| l.contains(d) && l.contains("running")), "{d} running:\n{screen}");
    }
    // The description's escapes are shown as text, not sent to the terminal.
    assert!(screen.contains("evil \\u{1b}[2J\\u{1b}]0;pwned"), "{screen}");

    // Pausing asks for a reason first; nothing changes until it is given.
    tmux.keys(&["p"]);
    tmux.wait_text("Pause reason:");
    assert_eq!(scheduler(&h)["state"], "running");
    tmux.keys(&["Enter"]);
    tmux.wait_text("A pause needs a reason");
    assert_eq!(scheduler(&h)["state"], "running");
    tmux.text("disk full on /data");
    tmux.keys(&["Enter"]);
    tmux.wait_text("PAUSED by");
    let s = scheduler(&h);
    assert_eq!((s["state"].as_str(), s["reason"].as_str()), (Some("paused"), Some("disk full on /data")), "{s}");
    // Resuming asks first: n leaves it paused, y resumes.
    tmux.keys(&["r"]);
    tmux.wait_text("Resume the scheduler");
    tmux.keys(&["n"]);
    tmux.wait_text("Nothing done.");
    assert_eq!(scheduler(&h)["state"], "paused");
    tmux.keys(&["r"]);
    tmux.wait_text("Resume the scheduler");
    tmux.keys(&["y"]);
    tmux.wait_text("Scheduler: RUNNING");
    assert_eq!(scheduler(&h)["state"], "running");

    // Help, a task's log, the filter.
    tmux.keys(&["?"]);
    tmux.wait_text("cortex top: keys");
    tmux.keys(&["Space"]);
    tmux.wait("the help closed", |s| !s.contains("cortex top: keys"));
    tmux.keys(&["l"]);
    let log = tmux.wait_text(&format!("Log of {id}"));
    assert!(log.contains("hello-from-task"), "{log}");
    tmux.keys(&["Escape"]);
    tmux.wait("the log closed", |s| !s.contains("Log of"));
    tmux.keys(&["/"]);
    tmux.text("no-such-task");
    tmux.keys(&["Enter"]);
    tmux.wait("the task filtered out", |s| s.contains("Tasks matching") && !s.contains(&id));
    tmux.keys(&["Escape"]);
    tmux.wait_text(&id);

    // Idle (the task waits, nothing changes): under 1 % of a core over 10 s.
    let pid = tmux.pane_pid();
    let top_pid = {
        // The pane runs a shell running cortex top: its child.
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        children.split_whitespace().next().map_or(pid, |c| c.parse().unwrap())
    };
    let before = cpu_ticks(top_pid);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let used = (cpu_ticks(top_pid) - before) as f64 / 100.0;
    let share = used / started.elapsed().as_secs_f64();
    assert!(share <= 0.01, "cortex top used {:.2} % of a core while idle", share * 100.0);

    // The task ends: its row stays among the recently ended, with its description and priority
    // (read from the archive once it has left the queue).
    std::fs::write(&gate, "").unwrap();
    tmux.wait("the task's row completed", |s| {
        s.lines().any(|l| l.contains(&id) && l.contains("completed") && l.contains("medium") && l.contains("pwned"))
    });

    tmux.keys(&["q"]);
    wait_until(LONG, "top exits on q", || tmux.pane_dead());
    assert_eq!(std::fs::read_to_string(h.join("top.status")).unwrap().trim(), "0");
    let screen = tmux.screen();
    assert!(!screen.contains("Daemons"), "the normal screen is back:\n{screen}");
}

#[test]
fn sigterm_and_ctrl_c_restore_the_terminal() {
    let h = TestHome::new();
    for (how, name) in [("SIGTERM", "term"), ("Ctrl-C", "ctrlc")] {
        // After top: its exit status and the terminal's modes, into files.
        let after = h.join(name);
        let tmux = Tmux::start(
            &h,
            name,
            &top_command(&h, &format!("echo $? > {a}.status; stty -a > {a}.stty", a = after.display())),
        );
        tmux.wait_text("Scheduler: RUNNING");
        if how == "SIGTERM" {
            let pid = tmux.pane_pid();
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
            let top: i32 =
                children.split_whitespace().next().expect("cortex top runs under the pane's shell").parse().unwrap();
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(top), nix::sys::signal::Signal::SIGTERM).unwrap();
        } else {
            tmux.keys(&["C-c"]);
        }
        wait_until(LONG, &format!("the pane's shell ends after {how}"), || tmux.pane_dead());
        let status = std::fs::read_to_string(after.with_extension("status")).unwrap();
        assert_eq!(status.trim(), "0", "{how}: cortex top's exit status");
        // Cooked mode again: raw mode clears icanon and echo.
        let stty = std::fs::read_to_string(after.with_extension("stty")).unwrap();
        let modes: Vec<&str> = stty.split_whitespace().collect();
        assert!(modes.contains(&"icanon") && modes.contains(&"echo"), "{how}: the terminal is still raw: {stty}");
        let screen = tmux.screen();
        assert!(!screen.contains("Daemons"), "{how}: still on top's screen:\n{screen}");
    }
}

/// Without a terminal it says what to use instead.
#[test]
fn top_without_a_terminal_points_to_status_watch() {
    let h = TestHome::new();
    let out = h.cortex(&["top"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cortex status --watch"), "{out:?}");
}
