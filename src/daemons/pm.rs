//! The pm (process manager) daemon: keeps the other daemons of its home alive with the restart
//! [`Engine`]. It wakes when a daemon's PID-file lock is
//! released (the daemon died), when something under `run/` changes (a daemon became ready), and
//! at its next restart or hung-check deadline; it never polls.

use crate::base::error::Result;
use crate::ops::supervisor::engine::{Engine, Mode, NOTE};
use crate::{base::wake::Wake, daemons::daemon::DaemonContext};

pub fn run_loop(ctx: &mut DaemonContext) -> Result<()> {
    let run_dir = ctx.home.run_dir();
    // `run/` changes with every task too (the worker's `dispatch-exits.jsonl`): paced, as the
    // daemons off the task path are; a daemon's exit reaches pm through its PID-file lock.
    ctx.pace_watches(crate::daemons::daemon::OFF_PATH_PACE);
    ctx.watch_flat(&[run_dir])?;
    let mut engine = Engine::new(ctx.home.clone(), ctx.config.clone(), Mode::Pm, ctx.waker());
    engine.observe();
    ctx.mark_ready()?;
    loop {
        let mut wakes = vec![ctx.wait(engine.next_deadline())];
        wakes.extend(ctx.drain_pending());
        let mut observe = false;
        for w in wakes {
            match w {
                Wake::Shutdown(_) => return Ok(()),
                Wake::Message(m) if m == NOTE => engine.handle_notes(),
                Wake::Changed(_) => observe = true,
                _ => {}
            }
        }
        if observe {
            engine.observe();
        }
        engine.tick();
    }
}
