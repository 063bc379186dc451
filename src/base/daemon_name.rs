//! The daemons of a home, by name: one [`Daemon`] per `cortex-<name>` binary, in start order. A
//! leaf (it imports nothing of the crate), so the configuration, the daemon skeleton, the
//! supervisor and the status views can all name daemons without importing one another. The
//! names on disk (`run/<name>.pid`, `logs/<name>.log`), on the command line and in JSON output
//! are [`Daemon::as_str`]; [`Daemon::parse`] reads them back.

use std::fmt;

/// One of the daemons of a home.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Daemon {
    Worker,
    Slurm,
    Pm,
    Heartbeat,
    Metrics,
    Coordinator,
    Integration,
    FailurePattern,
    AutoFix,
    Notify,
    Api,
}

impl Daemon {
    /// Every daemon, in start order (stop in reverse).
    pub const ALL: [Daemon; 11] = [
        Daemon::Worker,
        Daemon::Slurm,
        Daemon::Pm,
        Daemon::Heartbeat,
        Daemon::Metrics,
        Daemon::Coordinator,
        Daemon::Integration,
        Daemon::FailurePattern,
        Daemon::AutoFix,
        Daemon::Notify,
        Daemon::Api,
    ];

    /// The daemon's name: in its PID, mark and log file names, on the command line, in output.
    pub const fn as_str(self) -> &'static str {
        match self {
            Daemon::Worker => "worker",
            Daemon::Slurm => "slurm",
            Daemon::Pm => "pm",
            Daemon::Heartbeat => "heartbeat",
            Daemon::Metrics => "metrics",
            Daemon::Coordinator => "coordinator",
            Daemon::Integration => "integration",
            Daemon::FailurePattern => "failure-pattern",
            Daemon::AutoFix => "auto-fix",
            Daemon::Notify => "notify",
            Daemon::Api => "api",
        }
    }

    /// The daemon called `name` exactly, if any.
    pub fn parse(name: &str) -> Option<Daemon> {
        Daemon::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// The binary that runs the daemon: `cortex-<name>`.
    pub fn binary_name(self) -> String {
        format!("cortex-{}", self.as_str())
    }

    /// Every daemon's name, in start order, for messages: `worker, slurm, pm, ...`.
    pub fn known() -> String {
        Daemon::ALL.map(Daemon::as_str).join(", ")
    }

    /// Runs only when configured (`[slurm] enabled` for `slurm`), not on a default home.
    pub const fn optional(self) -> bool {
        matches!(self, Daemon::Slurm)
    }
}

/// Every daemon's name, in start order (the library's own lists: locks, logs, signals).
pub const ALL_NAMES: [&str; 11] = {
    let mut out = [""; 11];
    let mut i = 0;
    while i < Daemon::ALL.len() {
        out[i] = Daemon::ALL[i].as_str();
        i += 1;
    }
    out
};

/// The names of the daemons a default home runs, in start order (for the edges that deal in
/// names: tests, command lines): every daemon but the [`Daemon::optional`] ones.
pub const NAMES: [&str; 10] = {
    let mut out = [""; 10];
    let (mut i, mut n) = (0, 0);
    while i < Daemon::ALL.len() {
        if !Daemon::ALL[i].optional() {
            out[n] = Daemon::ALL[i].as_str();
            n += 1;
        }
        i += 1;
    }
    out
};

impl fmt::Display for Daemon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who holds a PID file under `run/`: a daemon (`run/<daemon>.pid`), or the foreground
/// supervisor `cortex run` (`run/supervisor.pid`). Functions that take one take
/// `impl Into<PidOwner>`, so a [`Daemon`] is passed as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PidOwner {
    Daemon(Daemon),
    /// `cortex run`.
    Foreground,
}

impl PidOwner {
    /// The PID file's name without `.pid`: the daemon's name, or `supervisor`.
    pub const fn as_str(self) -> &'static str {
        match self {
            PidOwner::Daemon(d) => d.as_str(),
            PidOwner::Foreground => "supervisor",
        }
    }
}

impl From<Daemon> for PidOwner {
    fn from(d: Daemon) -> PidOwner {
        PidOwner::Daemon(d)
    }
}

impl fmt::Display for PidOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Written as its name (`"auto-fix"`), as in every JSON output before it was a type.
impl serde::Serialize for Daemon {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_on_disk_and_on_the_command_line_are_unchanged() {
        let names: Vec<&str> = Daemon::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(
            names,
            [
                "worker",
                "slurm",
                "pm",
                "heartbeat",
                "metrics",
                "coordinator",
                "integration",
                "failure-pattern",
                "auto-fix",
                "notify",
                "api"
            ]
        );
        assert_eq!(Daemon::AutoFix.binary_name(), "cortex-auto-fix");
        assert_eq!(Daemon::FailurePattern.to_string(), "failure-pattern");
        assert_eq!(Daemon::known(), names.join(", "));
        let default: Vec<&str> = names.iter().copied().filter(|n| *n != "slurm").collect();
        assert_eq!(NAMES.to_vec(), default);
        assert_eq!(serde_json::json!({"d": Daemon::AutoFix}), serde_json::json!({"d": "auto-fix"}));
    }

    #[test]
    fn parse_reads_back_every_name_and_nothing_else() {
        for d in Daemon::ALL {
            assert_eq!(Daemon::parse(d.as_str()), Some(d));
        }
        for bad in ["", "Worker", "auto_fix", "cortex-worker", "worker ", "supervisor"] {
            assert_eq!(Daemon::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn all_is_in_start_order_and_complete() {
        let mut sorted = Daemon::ALL;
        sorted.sort();
        assert_eq!(sorted, Daemon::ALL, "ALL lists the variants in declaration (start) order");
        let mut dedup = Daemon::ALL.to_vec();
        dedup.dedup();
        assert_eq!(dedup.len(), 11);
    }
}
