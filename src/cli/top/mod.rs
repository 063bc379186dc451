//! `cortex top`: a live full-screen view of a home (ratatui over crossterm). One loop owns the
//! screen and waits on one channel fed by: the keyboard (a thread blocked in crossterm's
//! `event::read`), the library's inotify watcher ([`crate::base::watch`]) on `coordination/`
//! (recursively: the queue, the scheduler switch, the dispatch records, the events) and the
//! workers' log directory, and SIGTERM/SIGINT/SIGHUP. Everything waiting is handled before the
//! next frame, and the files are read again only after a change (a burst coalesced into one
//! read per [`SETTLE`]). A timer (`--interval`, 1 s) redraws the clock and elapsed times and
//! samples the daemons' CPU and memory from `/proc`; their states, which need the kernel's lock
//! table, every [`STATE_EVERY_TICKS`] ticks. The terminal is restored on quit, on an error, on a
//! panic (a hook that runs before the default one) and on those signals.

mod app;
mod data;
mod draw;

use super::Ctx;
use crate::base::error::{Error, Result};
use crate::base::watch::{self, Depth};
use crate::ops::status::StatusReader;
use crate::store::config::Config;
use app::{App, Mode};
use clap::Args;
use crossterm::event::{Event, KeyEvent, KeyEventKind};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct TopArgs {
    /// How often the clock, elapsed times and daemons' CPU are redrawn (files are read when they
    /// change, whatever this says).
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pub interval: String,
}

/// How long a burst of file changes may go on before the files are read (one read per burst).
const SETTLE: Duration = Duration::from_millis(200);

/// The daemons' states are read every this many ticks (their CPU and memory every tick).
const STATE_EVERY_TICKS: u64 = 5;

/// What the loop wakes for.
enum Msg {
    Key(KeyEvent),
    /// The terminal was resized.
    Resized,
    /// Something under `coordination/` changed.
    Files,
    /// A task's log grew.
    Output,
    /// SIGTERM, SIGINT or SIGHUP.
    Quit,
}

/// When each kind of change is read next (None: nothing pending).
#[derive(Default)]
struct Due {
    files: Option<Instant>,
    output: Option<Instant>,
}

impl Due {
    /// The first change of a burst sets the time; later ones join it.
    fn settle(&mut self, which: fn(&mut Due) -> &mut Option<Instant>) {
        which(self).get_or_insert_with(|| Instant::now() + SETTLE);
    }

    /// True (and cleared) when `slot` is due.
    fn take(slot: &mut Option<Instant>, now: Instant) -> bool {
        let due = slot.is_some_and(|d| d <= now);
        if due {
            *slot = None;
        }
        due
    }
}

/// Leaves raw mode and the alternate screen; safe to call more than once.
fn restore_terminal() {
    let _ = crossterm::terminal::disable_raw_mode();
    let _ = crossterm::execute!(std::io::stdout(), crossterm::terminal::LeaveAlternateScreen, crossterm::cursor::Show);
}

/// The terminal in raw mode on the alternate screen while it lives.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> Result<TerminalGuard> {
        let fail = |e: std::io::Error| Error::other(format!("cannot set up the terminal: {e}"));
        crossterm::terminal::enable_raw_mode().map_err(fail)?;
        let guard = TerminalGuard;
        crossterm::execute!(std::io::stdout(), crossterm::terminal::EnterAlternateScreen, crossterm::cursor::Hide)
            .map_err(fail)?;
        // A panic restores the terminal before its message is printed (readable, not lost in
        // the alternate screen).
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

pub(super) fn run(ctx: &Ctx, args: TopArgs) -> Result<u8> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(Error::refused("cortex top needs a terminal; use `cortex status --watch` instead"));
    }
    let interval = crate::base::clock::parse_duration(&args.interval)
        .map_err(|e| Error::Config { path: None, detail: format!("--interval: {e}") })?
        .max(Duration::from_millis(200));
    let config = Config::load(&ctx.home)?;
    let store = ctx.store()?;
    let reader = StatusReader::new(store.clone(), config);
    let home = &ctx.home;
    let (tx, rx) = mpsc::channel::<Msg>();

    let logs = home.worker_logs();
    crate::store::atomic::create_dir_all(&logs)?;
    let watch_as = |paths: &[PathBuf], depth: Depth, msg: fn() -> Msg| {
        let tx = tx.clone();
        watch::watch(paths, depth, move |_| tx.send(msg()).is_ok())
    };
    let _watchers = [
        watch_as(&[home.coordination()], Depth::Recursive, || Msg::Files)?,
        watch_as(&[logs], Depth::Flat, || Msg::Output)?,
    ];
    {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
            .map_err(|e| Error::System { action: "install signal handlers".into(), source: e, hint: "" })?;
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if signals.forever().next().is_some() {
                    let _ = tx.send(Msg::Quit);
                }
            })
            .map_err(|e| Error::other(format!("cannot start the signal thread: {e}")))?;
    }
    {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("keys".into())
            .spawn(move || {
                loop {
                    let msg = match crossterm::event::read() {
                        Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => Msg::Key(k),
                        Ok(Event::Resize(..)) => Msg::Resized,
                        Ok(_) => continue,
                        Err(_) => Msg::Quit,
                    };
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| Error::other(format!("cannot start the keyboard thread: {e}")))?;
    }
    drop(tx);

    let mut app = App::new();
    app.data.refresh_daemons(&reader);
    app.data.refresh_files(&reader, crate::base::clock::now());

    let guard = TerminalGuard::enter()?;
    let backend = ratatui::backend::CrosstermBackend::new(std::io::stdout());
    let mut terminal =
        ratatui::Terminal::new(backend).map_err(|e| Error::other(format!("cannot set up the terminal: {e}")))?;
    let home_text = home.root().display().to_string();
    let mut next_tick = Instant::now() + interval;
    // When a burst of changes is read (None: nothing pending).
    let mut due = Due::default();
    let mut redraw = true;
    let mut ticks: u64 = 0;
    while !app.quit {
        if redraw {
            terminal
                .draw(|f| draw::draw(f, &app, &home_text, crate::base::clock::now()))
                .map_err(|e| Error::other(format!("cannot draw: {e}")))?;
            redraw = false;
        }
        let deadline = [Some(next_tick), due.files, due.output].into_iter().flatten().min();
        let first = match rx.recv_timeout(deadline.unwrap_or(next_tick).saturating_duration_since(Instant::now())) {
            Ok(m) => Some(m),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        // Everything already waiting is handled before the next frame: a burst of file changes
        // costs one read and one frame, and keys are never queued behind it.
        for msg in first.into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            match msg {
                Msg::Key(k) => {
                    redraw = true;
                    if let Some(action) = app.key(&store, k) {
                        app.act(&store, action);
                        due.files = Some(Instant::now());
                    }
                }
                Msg::Resized => redraw = true,
                Msg::Files => due.settle(|d| &mut d.files),
                Msg::Output => due.settle(|d| &mut d.output),
                Msg::Quit => app.quit = true,
            }
        }
        let now = Instant::now();
        if Due::take(&mut due.files, now) {
            due.output = None;
            app.data.refresh_files(&reader, crate::base::clock::now());
            app.clamp_selection();
            if app.mode == Mode::Log {
                app.reload_log(&store);
            }
            redraw = true;
        }
        if Due::take(&mut due.output, now) {
            app.data.refresh_output_only(&reader);
            if app.mode == Mode::Log {
                app.reload_log(&store);
            }
            redraw = true;
        }
        if next_tick <= now {
            next_tick = now + interval;
            ticks += 1;
            // The daemons' states every few ticks (or at once when one is gone), their CPU and
            // memory every tick.
            if ticks.is_multiple_of(STATE_EVERY_TICKS) || !app.data.sample_daemons() {
                app.data.refresh_daemons(&reader);
            }
            redraw = true;
        }
    }
    drop(terminal);
    drop(guard);
    Ok(0)
}
