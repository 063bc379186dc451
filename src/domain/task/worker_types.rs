//! `coordination/config/worker-types.json`: per worker type its default budget, default duration
//! (minutes; the timeout), attempts and the argv template that runs its tasks. Templates
//! substitute `{task_id}`, `{description}`, `{worker_type}`, `{home}`, `{dispatch_id}` and
//! `{attempt}` inside each argv element; nothing goes through a shell unless the template itself
//! calls `sh -c`.

use crate::base::error::{Error, Result};
use crate::store::files::{self, CoordFile};
use crate::store::home::Home;
use crate::store::{Document, Store};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerType {
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
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerTypes {
    pub worker_types: BTreeMap<String, WorkerType>,
}

impl Document for WorkerTypes {
    const FILE: &'static CoordFile = files::WORKER_TYPES;
}

impl WorkerTypes {
    pub fn load(store: &Store) -> Result<WorkerTypes> {
        store.load()
    }

    /// The type, or an error listing the known ones.
    pub fn get(&self, name: &str) -> Result<&WorkerType> {
        self.worker_types.get(name).ok_or_else(|| {
            Error::refused(format!(
                "unknown worker type {name:?}: known types are {} (coordination/config/worker-types.json)",
                self.worker_types.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

/// Values substituted into a command template.
pub struct TemplateVars<'a> {
    pub task_id: &'a str,
    pub description: &'a str,
    pub worker_type: &'a str,
    pub home: &'a str,
    pub dispatch_id: &'a str,
    pub attempt: u32,
}

/// Substitutes the template variables in each argv element (never splitting or joining them).
pub fn expand(template: &[String], vars: &TemplateVars) -> Vec<String> {
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
pub const PLACEHOLDERS: [&str; 6] = ["task_id", "description", "worker_type", "home", "dispatch_id", "attempt"];

/// The shells whose `-c` argument is a script: a placeholder spliced into it is parsed as shell
/// code once substituted.
const SHELLS: [&str; 7] = ["sh", "bash", "dash", "zsh", "ksh", "ash", "mksh"];

/// What `cortex config check` warns about in worker type `name`: no command template (every task
/// routed to it fails unless it brings its own `-- COMMAND`), or a placeholder spliced into a
/// shell's `-c` script (`sh -c "work {description}"`: a description holding `; touch x` runs
/// `touch x`). The safe form passes the value as its own argument: `sh -c 'work "$1"' sh {description}`.
pub fn template_warnings(name: &str, wt: &WorkerType) -> Vec<String> {
    let mut out = Vec::new();
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
pub fn workdir(home: &Home, config_workdir: &str, wt: Option<&WorkerType>, task_id: &str) -> PathBuf {
    if let Some(dir) = wt.and_then(|w| w.workdir.as_deref()).filter(|d| !d.is_empty()) {
        let p = PathBuf::from(dir.replace("{task_id}", task_id));
        return if p.is_absolute() { p } else { home.join(p) };
    }
    match config_workdir {
        "per-task" => home.task_workdir(task_id),
        _ => home.root().to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wt(command: &[&str]) -> WorkerType {
        WorkerType {
            description: None,
            default_budget: 1,
            default_duration: 1.0,
            max_attempts: None,
            command: command.iter().map(|s| s.to_string()).collect(),
            workdir: None,
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
}
