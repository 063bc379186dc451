//! `cortex.toml`: every setting, its documented default, and strict loading (unknown keys are
//! errors that name the key and line). The shipped `config/cortex.toml` lists every key with its
//! default; a test keeps the two in step.

use crate::base::daemon_name::Daemon;
use crate::base::error::{Error, Result};
use crate::store::home::Home;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The default `cortex.toml`, embedded from `config/cortex.toml`.
pub const DEFAULT_TOML: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/config/cortex.toml"));

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub scheduler: SchedulerConfig,
    pub api: ApiConfig,
    pub store: StoreConfig,
    pub retry: RetryConfig,
    pub worker: WorkerConfig,
    pub daemons: DaemonsConfig,
    pub supervisor: SupervisorConfig,
    pub heartbeat: IntervalConfig,
    pub metrics: MetricsConfig,
    pub integration: IntegrationConfig,
    pub failure_pattern: FailurePatternConfig,
    pub auto_fix: IntervalConfig,
    pub logs: LogsConfig,
    pub backup: BackupConfig,
    pub events: EventsConfig,
    pub archive: ArchiveConfig,
    pub slurm: SlurmConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Most dispatches running at once.
    pub max_concurrent_dispatches: u32,
    /// Time zone of schedules that name none (IANA name).
    pub timezone: String,
    /// Longest reach of `recent_dispatch_count` in `GET /status`, seconds: it counts the
    /// dispatches since the later of the scheduler's last pause/resume and this long ago.
    pub recent_window_seconds: u64,
    /// The coordinator's safety re-scan when no event woke it, seconds (`tick_interval`).
    pub tick_interval_seconds: u64,
    /// A schedule's run this late (seconds) counts as missed and its misfire policy decides.
    pub misfire_grace_seconds: u64,
    /// Most runs a `run_all` schedule catches up in one go after downtime (older ones are dropped).
    pub misfire_run_all_cap: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_concurrent_dispatches: 4,
            timezone: "UTC".into(),
            recent_window_seconds: 300,
            tick_interval_seconds: 30,
            misfire_grace_seconds: 60,
            misfire_run_all_cap: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Listen address; the env `CORTEX_API_BIND` overrides it.
    pub bind: String,
    /// File of `name:token` lines (0600), `[read]` / `[operate]` sections. Empty: no tokens
    /// (loopback only; reads, scheduler pause/resume and cancel are open, other changes refused).
    pub tokens_file: String,
    /// Host names, besides loopback addresses, `localhost` and the bind address, that requests
    /// may carry in `Host` and `Origin` (e.g. the host's DNS name on a network bind).
    pub allowed_hosts: Vec<String>,
    /// Largest request body accepted, bytes.
    pub max_body_bytes: u64,
    /// A client that sends nothing for this long is dropped, seconds.
    pub request_timeout_seconds: u64,
    /// `GET /health` is unhealthy while an unacknowledged critical event is younger than this,
    /// seconds (`cortex event ack`).
    pub critical_window_seconds: u64,
    /// Worker threads serving requests.
    pub threads: u32,
    /// Open client connections at most; more are answered 503 and closed.
    pub max_connections: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            bind: "127.0.0.1:8900".into(),
            tokens_file: String::new(),
            allowed_hosts: Vec::new(),
            max_body_bytes: 64 * 1024,
            request_timeout_seconds: 10,
            critical_window_seconds: 3600,
            threads: 4,
            max_connections: 512,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Deadline for taking a lock, seconds.
    pub lock_timeout_seconds: f64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { lock_timeout_seconds: 10.0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffStrategy {
    None,
    Fixed,
    Exponential,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    pub max_attempts: u32,
    pub backoff_strategy: BackoffStrategy,
    pub backoff_base_seconds: f64,
    pub backoff_max_seconds: f64,
    /// Full jitter on exponential delays.
    pub jitter: bool,
    /// Consecutive failures of a worker type before a `failure_notification` event.
    pub failure_notification_threshold: u32,
    pub failure_notification_throttle_seconds: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            backoff_strategy: BackoffStrategy::Exponential,
            backoff_base_seconds: 30.0,
            backoff_max_seconds: 300.0,
            jitter: false,
            failure_notification_threshold: 3,
            failure_notification_throttle_seconds: 900,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Seconds between SIGTERM and SIGKILL when a task is stopped.
    pub grace_seconds: f64,
    /// Working directory of tasks: "home" or "per-task" (`agents/work/<task_id>`).
    pub workdir: String,
    /// Bytes of output kept in `output_tail`.
    pub output_tail_bytes: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig { grace_seconds: 5.0, workdir: "home".into(), output_tail_bytes: 2048 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonsConfig {
    /// Daemons not started by `cortex start` and not required by `status`/`health`.
    pub disabled: Vec<String>,
    /// How often each daemon refreshes its heartbeat mark in `run/`, seconds.
    pub heartbeat_interval_seconds: u64,
}

impl Default for DaemonsConfig {
    fn default() -> Self {
        DaemonsConfig { disabled: Vec::new(), heartbeat_interval_seconds: 5 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorConfig {
    pub backoff_initial_seconds: f64,
    pub backoff_max_seconds: f64,
    /// At most this many starts of one daemon within `start_limit_window_seconds`.
    pub start_limit: u32,
    pub start_limit_window_seconds: u64,
    /// Uptime after which a daemon's backoff resets, seconds.
    pub stable_uptime_seconds: u64,
    pub ready_timeout_seconds: f64,
    pub stop_timeout_seconds: f64,
    /// Rolling restart: how long a restarted daemon must stay up before the next, seconds.
    pub stabilization_seconds: f64,
    /// A daemon whose heartbeat mark is older than this is hung, seconds.
    pub hung_after_seconds: u64,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            backoff_initial_seconds: 1.0,
            backoff_max_seconds: 60.0,
            start_limit: 5,
            start_limit_window_seconds: 60,
            stable_uptime_seconds: 30,
            ready_timeout_seconds: 10.0,
            stop_timeout_seconds: 5.0,
            stabilization_seconds: 5.0,
            hung_after_seconds: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntervalConfig {
    /// Slow safety timer of the daemon, seconds (it also wakes on file changes).
    pub interval_seconds: u64,
}

impl Default for IntervalConfig {
    fn default() -> Self {
        IntervalConfig { interval_seconds: 30 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub interval_seconds: u64,
    /// Size at which `metrics-snapshots.jsonl` is rotated, bytes.
    pub max_file_bytes: u64,
    pub keep: u32,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { interval_seconds: 60, max_file_bytes: 10 * 1024 * 1024, keep: 5 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntegrationConfig {
    /// Full validation of every coordination file, seconds (it also validates a file when it changes).
    pub interval_seconds: u64,
    /// A cross-file inconsistency is reported only when it lasts this long, seconds (the dispatch
    /// protocol has short legitimate windows, e.g. between the queue write and the spec write).
    pub consistency_grace_seconds: f64,
}

impl Default for IntegrationConfig {
    fn default() -> Self {
        IntegrationConfig { interval_seconds: 30, consistency_grace_seconds: 10.0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailurePatternConfig {
    pub interval_seconds: u64,
    pub window_hours: f64,
    pub threshold: u32,
    /// Pause the scheduler when failures exceed `storm_failures` in `storm_minutes`.
    pub storm_guard: bool,
    pub storm_failures: u32,
    pub storm_minutes: f64,
}

impl Default for FailurePatternConfig {
    fn default() -> Self {
        FailurePatternConfig {
            interval_seconds: 60,
            window_hours: 24.0,
            threshold: 3,
            storm_guard: false,
            storm_failures: 20,
            storm_minutes: 5.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsConfig {
    /// Size at which a daemon rotates its own log (`10M`, `512K`, bytes).
    pub max_size: String,
    /// Rotated logs kept per daemon.
    pub keep: u32,
    /// `cortex logs clean` default age.
    pub clean_older_than_days: u32,
    /// tracing filter (`info`, `debug`, `cortex=debug`...); env `CORTEX_LOG` overrides.
    pub level: String,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig { max_size: "10M".into(), keep: 7, clean_older_than_days: 14, level: "info".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// Archives kept by retention.
    pub keep: u32,
    /// Destination directory (relative to the home, or absolute).
    pub dest: String,
    /// Most bytes a restore may write (the sum of the manifest's sizes of the files it restores),
    /// checked before anything is extracted: a small archive can expand a thousandfold.
    pub max_restore_bytes: u64,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig { keep: 14, dest: "backups".into(), max_restore_bytes: 1024 * 1024 * 1024 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Size at which `dashboard-events.jsonl` is rotated, bytes.
    pub max_file_bytes: u64,
    pub keep: u32,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig { max_file_bytes: 50 * 1024 * 1024, keep: 5 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiveConfig {
    /// Size past which the coordinator seals `task-archive.jsonl` into `task-archive/` with an
    /// index, bytes: what `cortex task show` and the coordinator scan at most.
    pub segment_bytes: u64,
    /// Sealed segments kept (the oldest are deleted at each seal past this count); 0 keeps all.
    pub keep_segments: u32,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig { segment_bytes: 1024 * 1024, keep_segments: 0 }
    }
}

/// `[slurm]`: the Slurm executor (worker types with `"executor": "slurm"`, `crate::domain::slurm`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlurmConfig {
    /// Run Slurm dispatches: `cortex start` starts `cortex-slurm` and the coordinator dispatches
    /// tasks of Slurm worker types. Off by default (a host without Slurm runs nothing for it).
    pub enabled: bool,
    /// The Slurm commands, by name (looked up in `PATH`) or absolute path.
    pub sbatch: String,
    pub squeue: String,
    pub scontrol: String,
    pub scancel: String,
    /// How often the jobs in flight are looked at (one `squeue` for all), seconds.
    pub poll_interval_seconds: f64,
    /// Most Slurm jobs in flight at once, counted apart from the local slots
    /// (`[scheduler] max_concurrent_dispatches`).
    pub max_jobs: u32,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        SlurmConfig {
            enabled: false,
            sbatch: "sbatch".into(),
            squeue: "squeue".into(),
            scontrol: "scontrol".into(),
            scancel: "scancel".into(),
            poll_interval_seconds: 2.0,
            max_jobs: 100,
        }
    }
}

impl SlurmConfig {
    /// Checks the values serde cannot; the error names the key.
    pub fn check(&self) -> std::result::Result<(), String> {
        for (key, value) in [
            ("sbatch", &self.sbatch),
            ("squeue", &self.squeue),
            ("scontrol", &self.scontrol),
            ("scancel", &self.scancel),
        ] {
            if value.trim().is_empty() || value.contains('\0') {
                return Err(format!(
                    "[slurm] {key}: {value:?} must name a program (a name in PATH or an absolute path)"
                ));
            }
            if value.contains('/') && !value.starts_with('/') {
                return Err(format!(
                    "[slurm] {key}: {value:?} is a relative path; give a name looked up in PATH or an absolute path"
                ));
            }
        }
        let poll = self.poll_interval_seconds;
        if !poll.is_finite() || !(0.1..=3600.0).contains(&poll) {
            return Err(format!("[slurm] poll_interval_seconds: {poll} must be between 0.1 and 3600"));
        }
        if self.max_jobs == 0 {
            return Err("[slurm] max_jobs must be at least 1".into());
        }
        Ok(())
    }
}

/// Parses a size: `10M`, `512K`, `1G`, or bytes.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1024),
        Some('M' | 'm') => (&s[..s.len() - 1], 1024 * 1024),
        Some('G' | 'g') => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (s, 1),
    };
    num.trim()
        .parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| format!("invalid size {s:?}: expected e.g. 10M, 512K, 1G or a number of bytes"))
}

impl Config {
    /// Parses TOML text; errors name the file, line and key.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text.as_bytes()[..s.start.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1);
            let detail = match line {
                Some(l) => format!("line {l}: {}", e.message()),
                None => e.message().to_string(),
            };
            Error::Config { path: Some(path.to_path_buf()), detail }
        })?;
        cfg.check().map_err(|detail| Error::Config { path: Some(path.to_path_buf()), detail })?;
        Ok(cfg)
    }

    /// Loads `cortex.toml` from a path; a missing file means all defaults.
    pub fn load_file(path: &Path) -> Result<Config> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(Error::io(path, "read", e)),
        }
    }

    /// Loads the home's `cortex.toml`.
    pub fn load(home: &Home) -> Result<Config> {
        Config::load_file(&home.config_file())
    }

    /// Checks values serde cannot (ranges, names, sizes).
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.scheduler.max_concurrent_dispatches == 0 {
            return Err("[scheduler] max_concurrent_dispatches must be at least 1".into());
        }
        if self.scheduler.timezone.parse::<chrono_tz::Tz>().is_err() {
            return Err(format!(
                "[scheduler] timezone: unknown time zone {:?} (use an IANA name such as UTC or Europe/Berlin)",
                self.scheduler.timezone
            ));
        }
        if self.scheduler.misfire_run_all_cap == 0 {
            return Err("[scheduler] misfire_run_all_cap must be at least 1".into());
        }
        if self.api_bind().parse::<std::net::SocketAddr>().is_err() {
            return Err(format!("[api] bind: {:?} is not an address:port such as 127.0.0.1:8900", self.api_bind()));
        }
        for name in &self.api.allowed_hosts {
            let bad = name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if bad {
                return Err(format!(
                    "[api] allowed_hosts: {name:?} is not a host name (letters, digits, '-' and '.'; no scheme or port)"
                ));
            }
        }
        parse_size(&self.logs.max_size).map_err(|e| format!("[logs] max_size: {e}"))?;
        if self.archive.segment_bytes < 4096 {
            return Err(format!(
                "[archive] segment_bytes: {} is below 4096 (a segment holds several tasks; the default is 1048576)",
                self.archive.segment_bytes
            ));
        }
        if self.retry.max_attempts == 0 {
            return Err("[retry] max_attempts must be at least 1".into());
        }
        if !matches!(self.worker.workdir.as_str(), "home" | "per-task") {
            return Err(format!("[worker] workdir: {:?} is neither \"home\" nor \"per-task\"", self.worker.workdir));
        }
        self.slurm.check()?;
        for d in &self.daemons.disabled {
            if Daemon::parse(d).is_none() {
                return Err(format!("[daemons] disabled: unknown daemon {d:?} (known: {})", Daemon::known()));
            }
        }
        Ok(())
    }

    /// The API address: env `CORTEX_API_BIND`, else `[api] bind`.
    pub fn api_bind(&self) -> String {
        std::env::var("CORTEX_API_BIND").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| self.api.bind.clone())
    }

    pub fn lock_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.store.lock_timeout_seconds.max(0.01))
    }

    /// True when the daemon is enabled.
    pub fn daemon_enabled(&self, daemon: Daemon) -> bool {
        (daemon != Daemon::Slurm || self.slurm.enabled) && !self.daemons.disabled.iter().any(|d| d == daemon.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_file_equals_defaults() {
        let parsed = Config::parse(DEFAULT_TOML, Path::new("config/cortex.toml")).unwrap();
        assert_eq!(parsed, Config::default());
    }

    /// The maintenance drill appends `max_concurrent_dispatches = 15` to cortex.toml and expects it
    /// to validate and take effect: [scheduler] must stay the shipped file's last table.
    #[test]
    fn runbook_append_sets_max_concurrent() {
        let text = format!("{DEFAULT_TOML}# Updated rate limits\nmax_concurrent_dispatches = 15\n");
        let cfg = Config::parse(&text, Path::new("cortex.toml")).unwrap();
        assert_eq!(cfg.scheduler.max_concurrent_dispatches, 15);
    }

    #[test]
    fn unknown_key_names_line() {
        let err =
            Config::parse("[scheduler]\nmax_concurrent_dispatches = 2\nbogus = 1\n", Path::new("c.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 3") && msg.contains("bogus"), "{msg}");
    }

    #[test]
    fn wrong_type_is_error() {
        let err =
            Config::parse("[scheduler]\nmax_concurrent_dispatches = \"many\"\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn allowed_hosts_are_bare_names() {
        let mut cfg = Config::default();
        cfg.api.allowed_hosts = vec!["cortex.lan".into(), "host-1".into()];
        assert!(cfg.check().is_ok());
        for bad in ["http://cortex.lan", "cortex.lan:8900", "", "a b"] {
            cfg.api.allowed_hosts = vec![bad.into()];
            let err = cfg.check().unwrap_err();
            assert!(err.contains("[api] allowed_hosts"), "{bad}: {err}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10M").unwrap(), 10 * 1024 * 1024);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert!(parse_size("ten").is_err());
    }

    #[test]
    fn slurm_section_is_checked_by_field() {
        let cfg =
            Config::parse("[slurm]\nsbatch = \"/opt/slurm/bin/sbatch\"\nmax_jobs = 8\n", Path::new("c.toml")).unwrap();
        assert_eq!(
            (cfg.slurm.sbatch.as_str(), cfg.slurm.max_jobs, cfg.slurm.squeue.as_str()),
            ("/opt/slurm/bin/sbatch", 8, "squeue")
        );
        for (text, key) in [
            ("[slurm]\nmax_jobs = 0\n", "[slurm] max_jobs"),
            ("[slurm]\npoll_interval_seconds = 0.0\n", "[slurm] poll_interval_seconds"),
            ("[slurm]\npoll_interval_seconds = nan\n", "[slurm] poll_interval_seconds"),
            ("[slurm]\nscancel = \"\"\n", "[slurm] scancel"),
            ("[slurm]\nsqueue = \"bin/squeue\"\n", "[slurm] squeue"),
        ] {
            let err = Config::parse(text, Path::new("c.toml")).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("c.toml"), "{text}: {err}");
        }
        let err = Config::parse("[slurm]\npartition = \"gpu\"\n", Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("partition"), "{err}");
    }
}
