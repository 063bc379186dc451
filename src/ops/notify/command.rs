//! The command hook: `argv` run directly (no shell, no PATH search: `argv[0]` is absolute), in
//! its own process group, with the notification's JSON body on stdin and its key in
//! `CORTEX_NOTIFICATION_KEY`; exit status 0 acknowledges. Past the timeout the group gets TERM,
//! a grace, then KILL (the runner the Slurm commands use).

use crate::domain::notify::config::Sink;
use serde_json::Value;
use std::time::Duration;

pub(crate) fn run(sink: &Sink, key: &str, body: &Value, timeout: Duration) -> Result<(bool, String), String> {
    let mut payload = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    payload.push(b'\n');
    if sink.argv.is_empty() {
        return Err("the sink has no argv".into());
    }
    let env = [("CORTEX_NOTIFICATION_KEY", key)];
    let ran = crate::ops::slurm_command::run_with_env(&sink.argv, Some(&payload), timeout, &env)
        .map_err(|e| e.to_string())?;
    let said = format!("{}{}", ran.stdout, ran.stderr);
    let said = said.trim();
    Ok((ran.success, if ran.success { format!("exit 0 {said}") } else { format!("exit non-zero: {said}") }))
}
