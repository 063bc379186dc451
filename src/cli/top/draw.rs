//! `cortex top`'s screen: a header (home, time, scheduler), the daemons beside the queue depth
//! and throughput, the tasks, the newest events and a footer of keys or the current prompt; the
//! help and a task's log as overlays. Every value read from a file goes through
//! [`crate::base::text::safe`] before it reaches the terminal.

use super::app::{App, Mode};
use super::data::THROUGHPUT_MINUTES;
use crate::base::clock::{Timestamp, human_duration};
use crate::base::text::safe;
use crate::ops::supervisor::status::DaemonState;
use crate::store::events::Severity;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Row, Sparkline, Table, TableState, Wrap};

const HELP: &[(&str, &str)] = &[
    ("Up/Down, j/k", "select a task"),
    ("l, Enter", "open the selected task's log (Esc closes it)"),
    ("p", "pause the scheduler (asks for a reason)"),
    ("r", "resume the scheduler"),
    ("c", "cancel the selected task"),
    ("R, t", "retry the selected task (failed or cancelled)"),
    ("/", "filter tasks and events by text (Esc clears)"),
    ("?, h", "this help"),
    ("q, Ctrl-C", "quit"),
];

pub(super) fn draw(f: &mut Frame, app: &App, home: &str, now: Timestamp) {
    let area = f.area();
    // Every daemon's row, its header and the borders (the queue panel beside it needs 10).
    let daemon_rows = u16::try_from(app.data.daemons.len()).unwrap_or(u16::MAX).saturating_add(3).max(10);
    let [header, top, tasks, events, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(daemon_rows),
        Constraint::Min(5),
        Constraint::Length(8),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(f, app, home, header);
    let [daemons, right] = Layout::horizontal([Constraint::Length(66), Constraint::Min(30)]).areas(top);
    draw_daemons(f, app, daemons);
    draw_queue(f, app, right);
    draw_tasks(f, app, now, tasks);
    draw_events(f, app, events);
    draw_footer(f, app, footer);
    match app.mode {
        Mode::Help => draw_help(f, area),
        Mode::Log => draw_log(f, app, area),
        _ => {}
    }
}

fn draw_header(f: &mut Frame, app: &App, home: &str, area: Rect) {
    let time = chrono::Local::now().format("%H:%M:%S").to_string();
    let sched = match &app.data.scheduler {
        Some(s) if s.is_paused() => Span::styled(
            format!(
                "Scheduler: PAUSED by {} ({})",
                safe(s.paused_by.as_deref().unwrap_or("?")),
                safe(s.reason.as_deref().unwrap_or("no reason given"))
            ),
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ),
        Some(_) => Span::styled("Scheduler: RUNNING", Style::new().fg(Color::Green)),
        None => Span::styled("Scheduler: unknown", Style::new().fg(Color::Red)),
    };
    let line = Line::from(vec![
        Span::styled("cortex top ", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!("{}  {time}  ", safe(home))),
        sched,
    ]);
    f.render_widget(Paragraph::new(line), area);
}

fn draw_daemons(f: &mut Frame, app: &App, area: Rect) {
    let rows = app.data.daemons.iter().map(|d| {
        let (state, color) = match d.state {
            DaemonState::Running => ("running", Color::Green),
            DaemonState::Starting => ("starting", Color::Yellow),
            DaemonState::Hung => ("HUNG", Color::Red),
            DaemonState::Stale => ("STALE", Color::Red),
            DaemonState::Stopped => ("stopped", Color::DarkGray),
            DaemonState::Failed => ("FAILED", Color::Red),
            DaemonState::Disabled => ("disabled", Color::DarkGray),
        };
        let running = matches!(d.state, DaemonState::Running | DaemonState::Starting | DaemonState::Hung);
        let dash = || "-".to_string();
        Row::new(vec![
            d.name.to_string(),
            state.to_string(),
            d.pid.filter(|_| running).map_or_else(dash, |p| p.to_string()),
            d.uptime_seconds.filter(|_| running).map_or_else(dash, |s| human_duration(s as i64)),
            d.cpu_percent.filter(|_| running).map_or_else(dash, |c| format!("{c:.1}%")),
            d.rss_bytes.filter(|_| running).map_or_else(dash, |b| format!("{:.1} MB", b as f64 / 1048576.0)),
        ])
        .style(Style::new().fg(color))
    });
    let widths = [
        Constraint::Length(16),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Length(9),
    ];
    let table = Table::new(rows, widths)
        .header(
            Row::new(["DAEMON", "STATE", "PID", "UPTIME", "CPU", "RSS"])
                .style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .block(Block::new().borders(Borders::ALL).title(" Daemons "));
    f.render_widget(table, area);
}

fn draw_queue(f: &mut Frame, app: &App, area: Rect) {
    let [depth, spark] = Layout::vertical([Constraint::Length(7), Constraint::Min(3)]).areas(area);
    let rows = app
        .data
        .depth
        .iter()
        .map(|(p, queued, retry)| Row::new(vec![p.as_str().to_string(), queued.to_string(), retry.to_string()]));
    let running = app.data.tasks.iter().filter(|t| t.running).count();
    let title = format!(" Queue (running {running}) ");
    let table = Table::new(rows, [Constraint::Length(10), Constraint::Length(8), Constraint::Length(14)])
        .header(Row::new(["PRIORITY", "QUEUED", "PENDING RETRY"]).style(Style::new().add_modifier(Modifier::BOLD)))
        .block(Block::new().borders(Borders::ALL).title(title));
    f.render_widget(table, depth);
    let total: u64 = app.data.throughput.iter().sum();
    let last = app.data.throughput.last().copied().unwrap_or(0);
    let title = format!(" Throughput: {last}/min now, {total} in {THROUGHPUT_MINUTES} min ");
    let sparkline = Sparkline::default()
        .data(app.data.throughput.iter().copied())
        .style(Style::new().fg(Color::Cyan))
        .block(Block::new().borders(Borders::ALL).title(title));
    f.render_widget(sparkline, spark);
}

fn draw_tasks(f: &mut Frame, app: &App, now: Timestamp, area: Rect) {
    let visible = app.visible_tasks();
    let rows = visible.iter().map(|t| {
        let age = t.since.map_or_else(|| "-".to_string(), |s| human_duration((now - s).num_seconds()));
        let color = match t.status {
            _ if t.running => Color::Reset,
            "completed" => Color::Green,
            "cancelled" => Color::DarkGray,
            _ => Color::Red,
        };
        Row::new(vec![
            safe(&t.task_id).into_owned(),
            t.status.to_string(),
            t.priority.map_or("-", |p| p.as_str()).to_string(),
            safe(&t.worker_type).into_owned(),
            t.attempt.to_string(),
            age,
            safe(&t.description).into_owned(),
            safe(&t.last_line).into_owned(),
        ])
        .style(Style::new().fg(color))
    });
    let widths = [
        Constraint::Length(38),
        Constraint::Length(11),
        Constraint::Length(8),
        Constraint::Length(14),
        Constraint::Length(3),
        Constraint::Length(8),
        Constraint::Fill(1),
        Constraint::Fill(1),
    ];
    let title = if app.filter.is_empty() {
        " Tasks (running, then recently ended) ".to_string()
    } else {
        format!(" Tasks matching {:?} ", safe(&app.filter))
    };
    let table = Table::new(rows, widths)
        .header(
            Row::new(["TASK", "STATUS", "PRIO", "TYPE", "#", "ELAPSED", "DESCRIPTION", "LAST OUTPUT"])
                .style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ")
        .block(Block::new().borders(Borders::ALL).title(title));
    let mut state = TableState::default().with_selected((!visible.is_empty()).then_some(app.selected));
    f.render_stateful_widget(table, area, &mut state);
}

fn draw_events(f: &mut Frame, app: &App, area: Rect) {
    let mut lines: Vec<Line> = app
        .data
        .problems
        .iter()
        .map(|p| Line::styled(format!("problem: {}", safe(p)), Style::new().fg(Color::Red)))
        .collect();
    for e in app.data.events.iter().filter(|e| app.matches(&[&e.message, e.event_type.as_str(), &e.source])) {
        let color = match e.severity {
            Severity::Critical | Severity::Error => Color::Red,
            Severity::Warning => Color::Yellow,
            _ => Color::Reset,
        };
        let time = e.timestamp.with_timezone(&chrono::Local).format("%H:%M:%S");
        lines.push(Line::styled(
            format!("{time} {:<8} {:<24} {}", e.severity.as_str(), safe(e.event_type.as_str()), safe(&e.message)),
            Style::new().fg(color),
        ));
    }
    let p = Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(" Recent events "));
    f.render_widget(p, area);
}

fn draw_footer(f: &mut Frame, app: &App, area: Rect) {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let line = match &app.mode {
        Mode::PauseReason(text) => Line::from(vec![
            Span::styled("Pause reason: ", bold),
            Span::raw(format!("{}_", safe(text))),
            Span::raw("   (Enter pauses, Esc gives up)   "),
            Span::styled(app.message.clone(), bold),
        ]),
        Mode::Filter(text) => Line::from(vec![Span::styled("Filter: ", bold), Span::raw(format!("{}_", safe(text)))]),
        Mode::Confirm(action) => Line::from(vec![Span::styled(action.question(), bold), Span::raw(" (y/n)")]),
        _ => {
            let keys = "q quit  p pause  r resume  c cancel  R retry  l log  / filter  ? help";
            if app.message.is_empty() {
                Line::raw(keys)
            } else {
                Line::from(vec![Span::styled(app.message.clone(), bold), Span::raw(format!("   {keys}"))])
            }
        }
    };
    f.render_widget(Paragraph::new(line), area);
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h }
}

fn draw_help(f: &mut Frame, area: Rect) {
    let rect = centered(area, 70, HELP.len() as u16 + 4);
    let mut lines: Vec<Line> = HELP.iter().map(|(k, what)| Line::raw(format!("  {k:<14} {what}"))).collect();
    lines.push(Line::raw(""));
    lines.push(Line::raw("  Any key closes this help."));
    f.render_widget(Clear, rect);
    f.render_widget(Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(" cortex top: keys ")), rect);
}

fn draw_log(f: &mut Frame, app: &App, area: Rect) {
    let Some(log) = &app.log else { return };
    let rect = area;
    let inner = rect.height.saturating_sub(2) as usize;
    let end = log.lines.len().saturating_sub(log.scroll);
    let start = end.saturating_sub(inner);
    let mut lines: Vec<Line> = log.lines.range(start..end).map(|l| Line::raw(safe(l).into_owned())).collect();
    if let Some(e) = &log.error {
        lines.push(Line::styled(safe(e).into_owned(), Style::new().fg(Color::Red)));
    }
    let title = format!(" Log of {} (latest attempt, stdout; Up/Down scroll, Esc closes) ", safe(&log.task_id));
    f.render_widget(Clear, rect);
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(Block::new().borders(Borders::ALL).title(title)),
        rect,
    );
}
