//! `GET /metrics` passes `promtool check metrics` (Debian package `prometheus`). Without
//! promtool the test is skipped loudly, except under CI (env `CI` set), where it fails.
use crate::support::api::*;
use crate::support::records::{completed, failed, running, write_dispatch};
use crate::support::*;
use std::io::Write;
use std::process::{Command, Stdio};

fn promtool() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("promtool")).find(|p| p.is_file())
}

#[test]
fn metrics_pass_promtool_check() {
    let Some(promtool) = promtool() else {
        if std::env::var_os("CI").is_some() {
            panic!("promtool is not on PATH and CI is set: install it (apt-get install -y prometheus)");
        }
        eprintln!(
            "\n\n*** SKIPPED metrics_pass_promtool_check: promtool is not on PATH (apt-get install -y prometheus) ***\n\n"
        );
        return;
    };
    let h = TestHome::new();
    write_dispatch(&h, "failed", failed("d-f", "t-1", 30));
    write_dispatch(&h, "completed", completed("d-c", "t-2", 30));
    write_dispatch(&h, "active", running("d-r", "t-3"));
    let api = Api::start(&h);
    for paused in [false, true] {
        if paused {
            h.cortex_ok(&["scheduler", "pause"]);
        }
        let (code, body) = try_request(api.port, "GET", "/metrics", &[], b"").unwrap();
        assert_eq!(code, 200);
        let mut child = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&body).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics failed ({}):\n{}{}\n--- metrics ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&body)
        );
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains(&format!("cortex_scheduler_paused {}\n", paused as u8)), "{text}");
    }
}
