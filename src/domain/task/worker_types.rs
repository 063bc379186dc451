//! `coordination/config/worker-types.json`: per worker type its default budget, default duration
//! (minutes; the timeout), attempts and the argv template that runs its tasks. Templates
//! substitute `{task_id}`, `{description}`, `{worker_type}`, `{home}`, `{dispatch_id}` and
//! `{attempt}` inside each argv element; nothing goes through a shell unless the template itself
//! calls `sh -c`. A type runs its tasks on this host (`"executor": "local"`, the default) or on a
//! Slurm cluster (`"executor": "slurm"`, with `"slurm": {partition, account, qos, cpus, memory,
//! gres, extra_args}`; see `crate::domain::slurm`).

use crate::base::error::{Error, Result};
use crate::store::files::{self, CoordFile};
use crate::store::home::Home;
use crate::store::{Document, Store};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WorkerType {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub default_budget: u64,
    /// Minutes before a task of this type is stopped.
    pub default_duration: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// The argv template; empty means tasks of this type need their own `-- COMMAND`.
    #[serde(default)]
    pub command: Vec<String>,
    /// Working directory (relative to the home, or absolute); else `[worker] workdir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Where its tasks run: this host (default) or a Slurm cluster.
    #[serde(default, skip_serializing_if = "ExecutorKind::is_local")]
    pub executor: ExecutorKind,
    /// `sbatch` options of a Slurm type (ignored by the local executor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmOptions>,
}

/// Where a worker type's tasks run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// A process on this host, started by the worker.
    #[default]
    Local,
    /// A Slurm job, submitted with `sbatch` (`[slurm]` in `cortex.toml`).
    Slurm,
}

impl ExecutorKind {
    pub fn is_local(&self) -> bool {
        *self == ExecutorKind::Local
    }
}

/// A Slurm worker type's `sbatch` options; each is passed as its own argv element.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmOptions {
    /// `--partition`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// `--account`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// `--qos`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    /// `--cpus-per-task`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// `--mem` (`4G`, `500M`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// `--gres` (`gpu:1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gres: Option<String>,
    /// Further `sbatch` arguments, each one argv element (`["--exclusive", "--constraint=a100"]`),
    /// after Cortex's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
}

impl SlurmOptions {
    /// These options with `over`'s set fields in their place and its `extra_args` after these.
    pub fn overlaid(&self, over: &SlurmOptions) -> SlurmOptions {
        let pick = |mine: &Option<String>, theirs: &Option<String>| theirs.clone().or_else(|| mine.clone());
        SlurmOptions {
            partition: pick(&self.partition, &over.partition),
            account: pick(&self.account, &over.account),
            qos: pick(&self.qos, &over.qos),
            cpus: over.cpus.or(self.cpus),
            memory: pick(&self.memory, &over.memory),
            gres: pick(&self.gres, &over.gres),
            extra_args: self.extra_args.iter().chain(&over.extra_args).cloned().collect(),
        }
    }

    /// Options from `KEY=VALUE` words (`task add --slurm-opt`): `partition`, `account`, `qos`,
    /// `cpus`, `memory`, `gres`, and `extra` (one more `sbatch` argument, repeatable).
    pub fn from_pairs(pairs: &[String]) -> Result<SlurmOptions, String> {
        let mut o = SlurmOptions::default();
        for pair in pairs {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                format!("--slurm-opt {pair:?}: expected KEY=VALUE (partition, account, qos, cpus, memory, gres, extra)")
            })?;
            let v = Some(value.to_string());
            match key {
                "partition" => o.partition = v,
                "account" => o.account = v,
                "qos" => o.qos = v,
                "memory" => o.memory = v,
                "gres" => o.gres = v,
                "cpus" => {
                    o.cpus = Some(value.parse().map_err(|_| format!("--slurm-opt cpus={value:?}: not a whole number"))?)
                }
                "extra" => o.extra_args.push(value.to_string()),
                other => {
                    return Err(format!(
                        "--slurm-opt {other:?}: unknown key (partition, account, qos, cpus, memory, gres, extra)"
                    ));
                }
            }
        }
        Ok(o)
    }

    /// What is wrong with these options, naming the field (`worker_types.<name>.slurm.<field>`).
    pub fn problems(&self, type_name: &str) -> Vec<String> {
        let mut out = Vec::new();
        let field = |f: &str| format!("worker_types.{type_name}.slurm.{f}");
        for (name, value) in [
            ("partition", &self.partition),
            ("account", &self.account),
            ("qos", &self.qos),
            ("memory", &self.memory),
            ("gres", &self.gres),
        ] {
            if let Some(v) = value
                && (v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()))
            {
                out.push(format!("{}: {v:?} must be a non-empty word (no spaces or control characters)", field(name)));
            }
        }
        if self.cpus == Some(0) {
            out.push(format!("{}: must be at least 1", field("cpus")));
        }
        if let Some(m) = &self.memory {
            let digits = m.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                out.push(format!("{}: {m:?} is not a size such as 500M or 4G", field("memory")));
            }
        }
        for (i, a) in self.extra_args.iter().enumerate() {
            if let Some(r) = reserved_sbatch_option(a) {
                out.push(format!(
                    "{}[{i}]: {a:?} would override {r}, which Cortex sets itself (the job is found by its name, \
                     on this cluster, with its logs where the dispatch says); it is left out",
                    field("extra_args")
                ));
            }
            if !a.starts_with('-') || a.contains('\0') {
                out.push(format!(
                    "{}[{i}]: {a:?} is not an sbatch option (each element one option, e.g. \"--exclusive\")",
                    field("extra_args")
                ));
            }
        }
        out
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct WorkerTypes {
    pub worker_types: BTreeMap<String, WorkerType>,
}

impl Document for WorkerTypes {
    const FILE: &'static CoordFile = files::WORKER_TYPES;
}

impl WorkerTypes {
    pub(crate) fn load(store: &Store) -> Result<WorkerTypes> {
        store.load()
    }

    /// The type, or an error listing the known ones.
    pub(crate) fn get(&self, name: &str) -> Result<&WorkerType> {
        self.worker_types.get(name).ok_or_else(|| {
            Error::refused(format!(
                "unknown worker type {name:?}: known types are {} (coordination/config/worker-types.json)",
                self.worker_types.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

/// Values substituted into a command template.
pub(crate) struct TemplateVars<'a> {
    pub task_id: &'a str,
    pub description: &'a str,
    pub worker_type: &'a str,
    pub home: &'a str,
    pub dispatch_id: &'a str,
    pub attempt: u32,
}

/// Substitutes the template variables in each argv element (never splitting or joining them).
pub(crate) fn expand(template: &[String], vars: &TemplateVars) -> Vec<String> {
    let attempt = vars.attempt.to_string();
    let value = |name: &str| -> Option<&str> {
        Some(match name {
            "task_id" => vars.task_id,
            "description" => vars.description,
            "worker_type" => vars.worker_type,
            "home" => vars.home,
            "dispatch_id" => vars.dispatch_id,
            "attempt" => &attempt,
            _ => return None,
        })
    };
    // One pass over the template only: a substituted value (a description holding `{home}`) is
    // never expanded again.
    template
        .iter()
        .map(|arg| {
            let mut out = String::with_capacity(arg.len());
            let mut rest = arg.as_str();
            while let Some(open) = rest.find('{') {
                out.push_str(&rest[..open]);
                let after = &rest[open..];
                match after.find('}').and_then(|close| value(&after[1..close]).map(|v| (v, close))) {
                    Some((v, close)) => {
                        out.push_str(v);
                        rest = &after[close + 1..];
                    }
                    None => {
                        out.push('{');
                        rest = &after[1..];
                    }
                }
            }
            out.push_str(rest);
            out
        })
        .collect()
}

/// The placeholders [`expand`] substitutes.
pub(crate) const PLACEHOLDERS: [&str; 6] = ["task_id", "description", "worker_type", "home", "dispatch_id", "attempt"];

/// The shells whose `-c` argument is a script: a placeholder spliced into it is parsed as shell
/// code once substituted.
const SHELLS: [&str; 7] = ["sh", "bash", "dash", "zsh", "ksh", "ash", "mksh"];

/// What `cortex config check` warns about in worker type `name`: no command template (every task
/// routed to it fails unless it brings its own `-- COMMAND`), or a placeholder spliced into a
/// shell's `-c` script (`sh -c "work {description}"`: a description holding `; touch x` runs
/// `touch x`). The safe form passes the value as its own argument: `sh -c 'work "$1"' sh {description}`.
/// A Slurm type gets the shared-filesystem reminder, with any problem of its `slurm` options
/// ([`SlurmOptions::problems`]).
pub(crate) fn template_warnings(name: &str, wt: &WorkerType) -> Vec<String> {
    let mut out = Vec::new();
    if wt.executor == ExecutorKind::Slurm {
        out.push(format!(
            "worker type {name:?} runs its tasks as Slurm jobs (cortex-slurm): the home must be on a filesystem \
             the compute nodes share at the same path (the jobs write their logs and end records into it)"
        ));
        out.extend(wt.slurm.as_ref().map(|o| o.problems(name)).unwrap_or_default());
    }
    if wt.command.is_empty() {
        out.push(format!(
            "worker type {name:?} has no command template: every task routed to it fails \
             (\"no command template\") unless it brings its own `-- COMMAND`; add a \"command\" argv"
        ));
        return out;
    }
    if let Some(script) = shell_script(&wt.command) {
        let spliced: Vec<&str> =
            PLACEHOLDERS.iter().copied().filter(|p| script.contains(&format!("{{{p}}}"))).collect();
        if !spliced.is_empty() {
            let list = spliced.iter().map(|p| format!("{{{p}}}")).collect::<Vec<_>>().join(", ");
            out.push(format!(
                "worker type {name:?}: {list} is spliced into a shell script ({} -c ...): a value holding \
                 `;`, `$(...)` or quotes runs as shell code. Pass it as a separate argument instead: \
                 [\"sh\", \"-c\", \"... \\\"$1\\\"\", \"sh\", \"{}\"]",
                wt.command[0],
                spliced.iter().map(|p| format!("{{{p}}}")).next().unwrap_or_default()
            ));
        }
    }
    out
}

/// The script a command runs through a shell's `-c` (`sh -c SCRIPT`, `bash -ec SCRIPT`,
/// `env FOO=1 /bin/sh -c SCRIPT`), if it does.
fn shell_script(argv: &[String]) -> Option<&str> {
    let mut args = argv.iter().map(String::as_str).peekable();
    // `env [VAR=value ...] shell ...`
    if args.peek().is_some_and(|a| a.rsplit('/').next() == Some("env")) {
        args.next();
        while args.peek().is_some_and(|a| a.contains('=') || a.starts_with('-')) {
            args.next();
        }
    }
    let shell = args.next()?.rsplit('/').next()?;
    if !SHELLS.contains(&shell) {
        return None;
    }
    let mut saw_c = false;
    for a in args {
        if a == "--" {
            continue;
        }
        if (a.starts_with('-') || a.starts_with('+')) && a.len() > 1 && !a.contains(' ') {
            saw_c |= a.starts_with('-') && a[1..].contains('c');
            continue;
        }
        return saw_c.then_some(a);
    }
    None
}

/// The working directory of a task: the type's `workdir`, else `[worker] workdir` ("home" or
/// "per-task" = `agents/work/<task_id>`).
pub(crate) fn workdir(home: &Home, config_workdir: &str, wt: Option<&WorkerType>, task_id: &str) -> PathBuf {
    if let Some(dir) = wt.and_then(|w| w.workdir.as_deref()).filter(|d| !d.is_empty()) {
        let p = PathBuf::from(dir.replace("{task_id}", task_id));
        return if p.is_absolute() { p } else { home.join(p) };
    }
    match config_workdir {
        "per-task" => home.task_workdir(task_id),
        _ => home.root().to_path_buf(),
    }
}

/// The `sbatch` options Cortex sets or relies on, which `extra_args` may not carry: the job's name
/// (found again by it), the cluster (`squeue` and `scontrol` ask this one), its logs, directory,
/// time limit, requeueing (Cortex's retry policy decides), the output format it parses, and the
/// script itself.
const RESERVED_SBATCH_OPTIONS: [(&str, &str); 14] = [
    ("-J", "--job-name"),
    ("-M", "--clusters"),
    ("-o", "--output"),
    ("-e", "--error"),
    ("-D", "--chdir"),
    ("-t", "--time"),
    ("", "--requeue"),
    ("", "--no-requeue"),
    ("", "--parsable"),
    ("", "--wrap"),
    ("-W", "--wait"),
    ("-a", "--array"),
    ("-H", "--hold"),
    ("", "--cluster"),
];

/// The reserved option `arg` sets (`--job-name=x`, `--job-name`, `-Jx`, `-J`), if it sets one.
pub(crate) fn reserved_sbatch_option(arg: &str) -> Option<&'static str> {
    RESERVED_SBATCH_OPTIONS.iter().find_map(|(short, long)| {
        let long_hit = arg == *long || arg.strip_prefix(long).is_some_and(|r| r.starts_with('='));
        let short_hit = !short.is_empty() && arg.starts_with(short) && !arg.starts_with("--");
        (long_hit || short_hit).then_some(*long)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `extra_args` cannot override what Cortex sets: the job's name, cluster, logs, time,
    /// requeueing, output format, script.
    #[test]
    fn reserved_sbatch_options_are_recognised_in_every_spelling() {
        for a in [
            "--job-name=x",
            "--job-name",
            "-J",
            "-Jx",
            "-M",
            "--clusters=c",
            "--cluster=c",
            "--wrap=true",
            "--requeue",
            "-o",
            "--output=/x",
        ] {
            assert!(reserved_sbatch_option(a).is_some(), "{a}");
        }
        for a in ["--exclusive", "--constraint=a100", "--job-namex", "--mem-per-cpu=1G", "--nodes=2", "--ntasks=4"] {
            assert_eq!(reserved_sbatch_option(a), None, "{a}");
        }
    }

    fn wt(command: &[&str]) -> WorkerType {
        WorkerType {
            description: None,
            default_budget: 1,
            default_duration: 1.0,
            max_attempts: None,
            command: command.iter().map(|s| s.to_string()).collect(),
            workdir: None,
            executor: Default::default(),
            slurm: None,
        }
    }

    #[test]
    fn placeholders_spliced_into_a_shell_script_are_warned_about() {
        for spliced in [
            &["sh", "-c", "echo {description}"][..],
            &["/bin/bash", "-ec", "run --id {task_id} '{description}'"],
            &["env", "A=1", "dash", "-x", "-c", "x {home}"],
            &["zsh", "-c", "{description}"],
        ] {
            let w = template_warnings("t", &wt(spliced));
            assert_eq!(w.len(), 1, "{spliced:?}: {w:?}");
            assert!(w[0].contains("spliced into a shell script"), "{w:?}");
        }
        for safe in [
            &["sh", "-c", "echo \"$1\"", "sh", "{description}"][..],
            &["./agent.sh", "{description}"],
            &["python3", "-c", "print(1)", "{description}"],
            &["sh", "script.sh", "{description}"],
        ] {
            assert!(template_warnings("t", &wt(safe)).is_empty(), "{safe:?}");
        }
        let none = template_warnings("implementation-worker", &wt(&[]));
        assert!(none[0].contains("\"implementation-worker\" has no command template"), "{none:?}");
        // The messages read as one sentence each: no run of blanks left by a broken line.
        for w in none.iter().chain(&template_warnings("t", &wt(&["sh", "-c", "echo {description}"]))) {
            assert!(!w.contains("  "), "{w:?}");
        }
    }

    #[test]
    fn template_substitutes_inside_elements_without_splitting() {
        let t = vec!["run".to_string(), "{description}".into(), "--id={task_id}".into(), "{home}/x".into()];
        let out = expand(
            &t,
            &TemplateVars {
                task_id: "t1",
                description: "fix the bug; rm -rf /",
                worker_type: "fix-worker",
                home: "/h",
                dispatch_id: "d1",
                attempt: 2,
            },
        );
        assert_eq!(out, vec!["run", "fix the bug; rm -rf /", "--id=t1", "/h/x"]);
    }

    #[test]
    fn placeholders_inside_a_substituted_description_are_not_expanded_again() {
        let t = vec!["{description}".to_string(), "{nope} {{task_id}} {".into(), "{attempt}{dispatch_id}".into()];
        let vars = TemplateVars {
            task_id: "t1",
            description: "{home} {task_id} {dispatch_id}{attempt} {",
            worker_type: "w",
            home: "/h",
            dispatch_id: "d1",
            attempt: 2,
        };
        assert_eq!(expand(&t, &vars), vec!["{home} {task_id} {dispatch_id}{attempt} {", "{nope} {t1} {", "2d1"]);
    }

    #[test]
    fn shipped_default_parses() {
        let v: WorkerTypes = serde_json::from_str(files::WORKER_TYPES.default.unwrap()).unwrap();
        assert!(v.get("analysis-worker").is_ok());
        assert!(v.get("nope").unwrap_err().to_string().contains("scan-worker"));
    }

    /// A file written before executors existed loads as local; a Slurm type keeps its options
    /// through a save; bad options are named by field.
    #[test]
    fn executor_and_slurm_options() {
        let old: WorkerTypes = serde_json::from_str(
            r#"{"worker_types":{"a":{"default_budget":1,"default_duration":1,"command":["true"]}}}"#,
        )
        .unwrap();
        assert_eq!(old.worker_types["a"].executor, ExecutorKind::Local);
        assert_eq!(old.worker_types["a"].slurm, None);
        assert!(!serde_json::to_string(&old).unwrap().contains("executor"), "a local type is saved as before");
        let text = r#"{"worker_types":{"gpu":{"default_budget":1,"default_duration":1,"command":["train"],
            "executor":"slurm","slurm":{"partition":"gpu","cpus":4,"memory":"16G","gres":"gpu:1",
            "extra_args":["--exclusive"]}}}}"#;
        let t: WorkerTypes = serde_json::from_str(text).unwrap();
        let gpu = &t.worker_types["gpu"];
        assert_eq!(gpu.executor, ExecutorKind::Slurm);
        let opts = gpu.slurm.clone().unwrap();
        assert_eq!((opts.partition.as_deref(), opts.cpus, opts.gres.as_deref()), (Some("gpu"), Some(4), Some("gpu:1")));
        assert!(opts.problems("gpu").is_empty());
        let warnings = template_warnings("gpu", gpu);
        assert!(warnings.len() == 1 && warnings[0].contains("filesystem the compute nodes share"), "{warnings:?}");
        let back: WorkerTypes = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
        let bad = SlurmOptions {
            partition: Some("a b".into()),
            cpus: Some(0),
            memory: Some("lots".into()),
            extra_args: vec!["exclusive".into()],
            ..SlurmOptions::default()
        };
        let p = bad.problems("gpu");
        assert_eq!(p.len(), 4, "{p:?}");
        for field in ["slurm.partition", "slurm.cpus", "slurm.memory", "slurm.extra_args[0]"] {
            assert!(p.iter().any(|m| m.contains(&format!("worker_types.gpu.{field}"))), "{field}: {p:?}");
        }
        let unknown = r#"{"partition":"x","gpus":1}"#;
        assert!(serde_json::from_str::<SlurmOptions>(unknown).unwrap_err().to_string().contains("gpus"));
    }

    /// `--slurm-opt KEY=VALUE` words, and a task's options over its type's.
    #[test]
    fn task_slurm_options_from_pairs_and_overlaid() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let own = SlurmOptions::from_pairs(&words(&["partition=big", "cpus=2", "extra=--exclusive"])).unwrap();
        let base = SlurmOptions {
            partition: Some("debug".into()),
            qos: Some("low".into()),
            extra_args: vec!["--constraint=a100".into()],
            ..SlurmOptions::default()
        };
        let both = base.overlaid(&own);
        assert_eq!((both.partition.as_deref(), both.qos.as_deref(), both.cpus), (Some("big"), Some("low"), Some(2)));
        assert_eq!(both.extra_args, ["--constraint=a100", "--exclusive"]);
        for bad in ["cpus=two", "gpus=1", "partition"] {
            assert!(SlurmOptions::from_pairs(&words(&[bad])).is_err(), "{bad}");
        }
    }
}
