//! The exit journal `run/dispatch-exits.jsonl` replaced by another file while the worker runs:
//! the worker reads the new file from its start (it tracks the file by inode), so the exits the
//! shims recorded in it are found, no finished command is recorded as failed, and none runs again.
use crate::support::task::*;
use crate::support::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A task that records each run, waits for `gate` under the home, then exits 0.
fn gated(h: &TestHome, gate: &str) -> String {
    format!(
        "mkdir -p $CORTEX_HOME/runs; echo $CORTEX_DISPATCH_ID >> $CORTEX_HOME/runs/$CORTEX_TASK_ID; \
         while [ ! -f {}/{gate} ]; do sleep 0.05; done; exit 0",
        h.path().display()
    )
}

fn runs_of(h: &TestHome, id: &str) -> usize {
    std::fs::read_to_string(h.join(&format!("runs/{id}"))).map(|s| s.lines().count()).unwrap_or(0)
}

#[test]
fn a_replaced_exit_journal_is_read_from_its_start() {
    let h = fast_home();
    let w = start(&h, "worker");
    let _c = start(&h, "coordinator");
    let journal = h.join("run/dispatch-exits.jsonl");
    let first = add(&h, &["--description", "first", "--", "true"]);
    wait_status(&h, &first, "completed");
    let old_len = std::fs::metadata(&journal).unwrap().len();
    assert!(old_len > 0, "the first exit is in the journal");
    let ids: Vec<String> = (0..3)
        .map(|i| add(&h, &["--description", &format!("gated {i}"), "--", "sh", "-c", &gated(&h, "go")]))
        .collect();
    wait_until(LONG, "the gated tasks run", || ids.iter().all(|id| runs_of(&h, id) == 1));
    // The worker is held while the journal is replaced (an operator's rewrite: a new, empty file
    // renamed over it) and the tasks end: the new file outgrows the old offset before it looks.
    kill(Pid::from_raw(w.pid()), Signal::SIGSTOP).unwrap();
    let fresh = h.join("run/dispatch-exits.jsonl.rewritten");
    std::fs::write(&fresh, b"").unwrap();
    std::fs::rename(&fresh, &journal).unwrap();
    std::fs::write(h.join("go"), "").unwrap();
    wait_until(LONG, "the gated tasks' exits recorded in the new journal", || {
        let text = std::fs::read_to_string(&journal).unwrap_or_default();
        text.lines().count() == ids.len() && text.len() as u64 >= old_len
    });
    kill(Pid::from_raw(w.pid()), Signal::SIGCONT).unwrap();
    for id in &ids {
        let t = wait_status(&h, id, "completed");
        assert_eq!(t["result"]["exit_code"], 0, "{t}");
        assert_eq!(t["attempts"], 1, "not failed and retried: {t}");
    }
    for id in &ids {
        assert_eq!(runs_of(&h, id), 1, "task {id} ran once");
    }
}
