//! Progress of the operator's long work (backup, restore, repair) on standard error: a bar
//! (`indicatif`) when standard error is a terminal, else one plain line when a stage starts and
//! one when it ends (logs and pipes get no bar redraws), or nothing with `--quiet`. One helper
//! for every command; the byte counting reader feeds a bar from a copy.

use std::io::{IsTerminal, Read};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// A bar on a terminal, plain lines otherwise.
    Auto,
    /// A bar on a terminal, nothing otherwise (backup: its summary says it all).
    TerminalOnly,
    /// Nothing (`--quiet`, `--json`).
    Quiet,
}

/// What a stage counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Items,
}

/// One stage of a long operation (`restore: verify`), counted in bytes or items.
pub struct Stage {
    bar: Option<indicatif::ProgressBar>,
    /// The plain line printed at the end, when not a terminal.
    line: Option<String>,
    unit: Unit,
    total: u64,
}

impl Stage {
    /// Starts a stage of `total` units named `label` (`restore: extract`).
    pub fn start(show: Show, label: &str, total: u64, unit: Unit) -> Stage {
        let terminal = std::io::stderr().is_terminal();
        let mut stage = Stage { bar: None, line: None, unit, total };
        match show {
            Show::Quiet => {}
            _ if terminal => {
                let bar = indicatif::ProgressBar::new(total);
                let template = match unit {
                    Unit::Bytes => {
                        format!("{label} {{bar:30}} {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}")
                    }
                    Unit::Items => format!("{label} {{bar:30}} {{pos}}/{{len}}"),
                };
                if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
                    bar.set_style(style);
                }
                stage.bar = Some(bar);
            }
            Show::TerminalOnly => {}
            Show::Auto => {
                eprintln!("{label}: {}", stage.amount(total));
                stage.line = Some(label.to_string());
            }
        }
        stage
    }

    fn amount(&self, n: u64) -> String {
        match self.unit {
            Unit::Bytes => format!("{n} bytes"),
            Unit::Items => format!("{n} items"),
        }
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// Ends the stage: the bar cleared, or a plain `done` line.
    pub fn finish(self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if let Some(label) = &self.line {
            eprintln!("{label}: done ({})", self.amount(self.total));
        }
    }

    /// A reader that counts what passes through it on this stage.
    pub fn reader<R: Read>(&self, inner: R) -> CountingRead<'_, R> {
        CountingRead { inner, stage: self }
    }
}

/// Counts the bytes read through it on a [`Stage`].
pub struct CountingRead<'a, R> {
    inner: R,
    stage: &'a Stage,
}

impl<R: Read> Read for CountingRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.stage.inc(n as u64);
        Ok(n)
    }
}
