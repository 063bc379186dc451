//! `cortex top`'s state between two frames and what each key does: selecting a task, the
//! prompts (a pause's reason, the filter), confirmations (resume, cancel, retry), the log and
//! help overlays. The actions themselves are library calls (the scheduler switch, the task
//! operations), the same as `cortex scheduler pause` and `cortex task cancel|retry` make.

use super::data::{Data, TaskRow};
use crate::base::text::safe;
use crate::domain::scheduler_state::{self, Actor, local_user};
use crate::domain::task::ops;
use crate::ops::task_logs::{LogItem, LogRequest, task_logs};
use crate::store::Store;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::collections::VecDeque;
use std::time::Duration;

/// Lines of a task's log kept for its overlay.
const LOG_LINES_KEPT: usize = 2000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Mode {
    Normal,
    Help,
    /// A task's log, full screen.
    Log,
    /// Typing a pause's reason.
    PauseReason(String),
    /// Typing the filter.
    Filter(String),
    /// Waiting for y or n.
    Confirm(Action),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    Pause(String),
    Resume,
    Cancel(String),
    Retry(String),
}

impl Action {
    pub(super) fn question(&self) -> String {
        match self {
            Action::Pause(_) => "Pause the scheduler?".into(),
            Action::Resume => "Resume the scheduler (new dispatches start again)?".into(),
            Action::Cancel(id) => format!("Cancel task {}? A running one is stopped (TERM, grace, KILL).", safe(id)),
            Action::Retry(id) => format!("Retry task {}?", safe(id)),
        }
    }
}

/// A task's log as the overlay shows it.
pub(super) struct LogView {
    pub task_id: String,
    pub lines: VecDeque<String>,
    /// Lines scrolled up from the end.
    pub scroll: usize,
    pub error: Option<String>,
}

pub(super) struct App {
    pub data: Data,
    pub mode: Mode,
    /// Index into [`App::visible_tasks`].
    pub selected: usize,
    pub filter: String,
    /// The last action's outcome, shown in the footer.
    pub message: String,
    pub log: Option<LogView>,
    pub quit: bool,
}

impl App {
    pub(super) fn new() -> App {
        App {
            data: Data::default(),
            mode: Mode::Normal,
            selected: 0,
            filter: String::new(),
            message: String::new(),
            log: None,
            quit: false,
        }
    }

    /// The task rows the filter keeps.
    pub(super) fn visible_tasks(&self) -> Vec<&TaskRow> {
        self.data
            .tasks
            .iter()
            .filter(|t| self.matches(&[&t.task_id, &t.description, &t.worker_type, t.status]))
            .collect()
    }

    /// Whether any of `fields` contains the filter (case-insensitive).
    pub(super) fn matches(&self, fields: &[&str]) -> bool {
        let f = self.filter.to_lowercase();
        f.is_empty() || fields.iter().any(|s| s.to_lowercase().contains(&f))
    }

    fn selected_task(&self) -> Option<String> {
        self.visible_tasks().get(self.selected).map(|t| t.task_id.clone())
    }

    /// Keeps the selection on a row after the table changed.
    pub(super) fn clamp_selection(&mut self) {
        let n = self.visible_tasks().len();
        self.selected = self.selected.min(n.saturating_sub(1));
    }

    /// Applies a key; returns an action to carry out when one was confirmed.
    pub(super) fn key(&mut self, store: &Store, k: KeyEvent) -> Option<Action> {
        let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl_c {
            self.quit = true;
            return None;
        }
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Normal => self.normal_key(store, k),
            Mode::Help => None,
            Mode::Log => {
                self.mode = Mode::Log;
                let log = self.log.as_mut()?;
                match k.code {
                    KeyCode::Esc | KeyCode::Char('q') | KeyCode::Char('l') | KeyCode::Enter => {
                        self.mode = Mode::Normal;
                        self.log = None;
                    }
                    KeyCode::Up | KeyCode::Char('k') => log.scroll = (log.scroll + 1).min(log.lines.len()),
                    KeyCode::Down | KeyCode::Char('j') => log.scroll = log.scroll.saturating_sub(1),
                    KeyCode::PageUp => log.scroll = (log.scroll + 20).min(log.lines.len()),
                    KeyCode::PageDown => log.scroll = log.scroll.saturating_sub(20),
                    KeyCode::End | KeyCode::Char('G') => log.scroll = 0,
                    _ => {}
                }
                None
            }
            Mode::PauseReason(mut text) => {
                match k.code {
                    KeyCode::Enter if text.trim().is_empty() => {
                        self.message = "A pause needs a reason (Esc to give up).".into();
                        self.mode = Mode::PauseReason(text);
                    }
                    KeyCode::Enter => return Some(Action::Pause(text.trim().to_string())),
                    KeyCode::Esc => self.message = "Pause abandoned.".into(),
                    code => {
                        edit(&mut text, code);
                        self.mode = Mode::PauseReason(text);
                    }
                }
                None
            }
            Mode::Filter(mut text) => {
                match k.code {
                    KeyCode::Enter => self.filter = text,
                    KeyCode::Esc => {}
                    code => {
                        edit(&mut text, code);
                        // The table narrows as one types.
                        self.filter = text.clone();
                        self.mode = Mode::Filter(text);
                    }
                }
                self.clamp_selection();
                None
            }
            Mode::Confirm(action) => match k.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => Some(action),
                _ => {
                    self.message = "Nothing done.".into();
                    None
                }
            },
        }
    }

    fn normal_key(&mut self, store: &Store, k: KeyEvent) -> Option<Action> {
        let need_task = |app: &mut App| {
            let t = app.selected_task();
            if t.is_none() {
                app.message = "No task selected (Up/Down selects one).".into();
            }
            t
        };
        match k.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') | KeyCode::Char('h') | KeyCode::F(1) => self.mode = Mode::Help,
            KeyCode::Char('p') => {
                self.message.clear();
                self.mode = Mode::PauseReason(String::new());
            }
            KeyCode::Char('r') => self.mode = Mode::Confirm(Action::Resume),
            KeyCode::Char('c') => {
                if let Some(t) = need_task(self) {
                    self.mode = Mode::Confirm(Action::Cancel(t));
                }
            }
            KeyCode::Char('R') | KeyCode::Char('t') => {
                if let Some(t) = need_task(self) {
                    self.mode = Mode::Confirm(Action::Retry(t));
                }
            }
            KeyCode::Char('l') | KeyCode::Enter => {
                if let Some(t) = need_task(self) {
                    self.open_log(store, t);
                }
            }
            KeyCode::Char('/') => self.mode = Mode::Filter(self.filter.clone()),
            KeyCode::Esc => {
                self.filter.clear();
                self.message.clear();
            }
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected += 1;
                self.clamp_selection();
            }
            _ => {}
        }
        None
    }

    fn open_log(&mut self, store: &Store, task_id: String) {
        self.log = Some(LogView { task_id, lines: VecDeque::new(), scroll: 0, error: None });
        self.reload_log(store);
        self.mode = Mode::Log;
    }

    /// Reads the open log again (after its file changed).
    pub(super) fn reload_log(&mut self, store: &Store) {
        let Some(log) = self.log.as_mut() else { return };
        let mut lines = VecDeque::new();
        let read = task_logs(store, &log.task_id, LogRequest::default(), |item| {
            if let LogItem::Line(l) = item {
                if lines.len() == LOG_LINES_KEPT {
                    lines.pop_front();
                }
                lines.push_back(l);
            }
            true
        });
        log.error = read.err().map(|e| e.to_string());
        log.lines = lines;
        log.scroll = log.scroll.min(log.lines.len());
    }

    /// Carries out a confirmed action; its outcome goes to the footer.
    pub(super) fn act(&mut self, store: &Store, action: Action) {
        let actor = local_user();
        let who = Actor { who: actor.clone(), from: "cli".into() };
        self.message = match action {
            Action::Pause(reason) => match scheduler_state::pause(store, &who, Some(&reason)) {
                Ok(t) if t.changed => format!("Scheduler paused: {}", safe(&reason)),
                Ok(_) => "The scheduler was already paused.".into(),
                Err(e) => format!("Pause failed: {}", safe(&e.to_string())),
            },
            Action::Resume => match scheduler_state::resume(store, &who) {
                Ok(t) if t.changed => "Scheduler resumed.".into(),
                Ok(_) => "The scheduler was not paused.".into(),
                Err(e) => format!("Resume failed: {}", safe(&e.to_string())),
            },
            // The worker stops a running task; its end shows when the records change.
            Action::Cancel(id) => match ops::cancel_task(store, &id, &actor, Duration::ZERO) {
                Ok(t) => format!("Cancel of {} requested ({}).", safe(&id), t.status().as_str()),
                Err(e) => format!("Cancel failed: {}", safe(&e.to_string())),
            },
            Action::Retry(id) => match ops::retry_task(store, &id, &actor) {
                Ok(_) => format!("Task {} queued again.", safe(&id)),
                Err(e) => format!("Retry failed: {}", safe(&e.to_string())),
            },
        };
    }
}

/// A key typed into a one-line prompt.
fn edit(text: &mut String, code: KeyCode) {
    match code {
        KeyCode::Backspace => {
            text.pop();
        }
        KeyCode::Char(c) if !c.is_control() && text.chars().count() < 200 => text.push(c),
        _ => {}
    }
}
