//! `cortex run`: the foreground supervisor for service managers. It holds `run/supervisor.pid`,
//! starts every enabled daemon as its child, restarts them with the same policy as pm (pm steps
//! aside meanwhile), tells systemd `READY=1` and `WATCHDOG=1` when `NOTIFY_SOCKET` is set,
//! forwards SIGHUP (log reopen) to the daemons, and on SIGTERM/SIGINT stops them all in reverse
//! start order.

use super::engine::{Engine, Mode, NOTE};
use super::registry;
use crate::base::daemon_name::Daemon;
use crate::base::error::{Error, Result};
use crate::base::text::{safe, safe_path};
use crate::base::wake::Wake;
use crate::store::config::Config;
use crate::store::home::Home;
use crate::store::pidfile::PidFile;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

const HUP: &str = "\u{0}sighup";

fn notify_systemd(state: &[sd_notify::NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(state)
    {
        eprintln!("cortex run: cannot notify systemd: {e}");
    }
}

/// Runs the foreground supervisor until SIGTERM/SIGINT. Returns the exit code.
pub(crate) fn run(home: &Home) -> Result<u8> {
    let config = Config::load(home)?;
    let mut pidfile =
        PidFile::acquire(home, registry::FOREGROUND, Duration::from_millis(500)).map_err(|e| match e {
            Error::Refused(_) => Error::refused(format!(
                "another `cortex run` already supervises {} ({} is locked)",
                home.root().display(),
                home.pid_file(registry::FOREGROUND).display()
            )),
            other => other,
        })?;
    let (tx, rx) = mpsc::channel::<Wake>();
    {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
            .map_err(|e| Error::system("install signal handlers", e))?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for sig in signals.forever() {
                let wake = if sig == SIGHUP { Wake::Message(HUP.into()) } else { Wake::Shutdown(sig) };
                if tx.send(wake).is_err() {
                    break;
                }
            }
        });
    }
    let _watcher = {
        use notify::Watcher;
        let tx = tx.clone();
        let run_dir = home.run_dir();
        let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res
                && !matches!(ev.kind, notify::EventKind::Access(_))
            {
                let _ = tx.send(Wake::Changed(run_dir.clone()));
            }
        })?;
        crate::store::atomic::create_dir_all(&home.run_dir())?;
        w.watch(&home.run_dir(), notify::RecursiveMode::NonRecursive).map_err(|e| Error::watch(home.run_dir(), e))?;
        w
    };
    // Running `cortex run` asks for everything to be up: earlier `cortex stop` intents are void.
    for d in Daemon::ALL.into_iter().filter(|d| config.daemon_enabled(*d)) {
        registry::clear_stop_intent(home, d)?;
    }
    println!("cortex run: supervising {} (PID {})", safe_path(home.root()), std::process::id());
    let mut engine = Engine::new(home.clone(), config.clone(), Mode::Foreground, tx.clone());
    let failures = engine.start_all();
    for (name, why) in &failures {
        println!("cortex run: {name} did not start: {} (retrying per the restart policy)", safe(why));
    }
    let status = format!("{} daemons started, {} failed", Daemon::ALL.len() - failures.len(), failures.len());
    println!("cortex run: {status}");
    notify_systemd(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&status)]);
    let watchdog_every = sd_notify::watchdog_enabled().map(|d| d / 2);
    let mut next_watchdog = watchdog_every.map(|d| Instant::now() + d);
    // Its PID file removed by hand is written again within a second, as the daemons do theirs
    // (pm tells a supervising `cortex run` by that file's lock).
    let mut next_pid_check = Instant::now() + crate::store::pidfile::CHECK_EVERY;
    loop {
        let deadline = [engine.next_deadline(), next_watchdog, Some(next_pid_check)].into_iter().flatten().min();
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now())).unwrap_or(Duration::from_secs(60));
        match rx.recv_timeout(timeout) {
            Ok(Wake::Shutdown(sig)) => {
                println!("cortex run: signal {sig}: stopping all daemons");
                break;
            }
            Ok(Wake::Message(m)) if m == NOTE => engine.handle_notes(),
            Ok(Wake::Message(m)) if m == HUP => {
                let _ = crate::ops::supervisor::control::reopen_logs(home);
            }
            Ok(Wake::Changed(_)) => engine.observe(),
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        engine.tick();
        if Instant::now() >= next_pid_check {
            next_pid_check = Instant::now() + crate::store::pidfile::CHECK_EVERY;
            match pidfile.refresh() {
                Ok(true) => println!("cortex run: its PID file was removed or replaced; written again"),
                Ok(false) => {}
                Err(e) => eprintln!("cortex run: cannot write its PID file again: {e}"),
            }
        }
        if let (Some(every), Some(at)) = (watchdog_every, next_watchdog)
            && Instant::now() >= at
        {
            notify_systemd(&[sd_notify::NotifyState::Watchdog]);
            next_watchdog = Some(Instant::now() + every);
        }
    }
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    engine.stop_all();
    println!("cortex run: all daemons stopped");
    Ok(0)
}
