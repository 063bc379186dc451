//! `coordination/config/worker-types.json`: per worker type its default budget, default duration
//! (minutes; the timeout), attempts and the argv template that runs its tasks. Templates
//! substitute `{task_id}`, `{description}`, `{worker_type}`, `{home}`, `{dispatch_id}` and
//! `{attempt}` inside each argv element; nothing goes through a shell unless the template itself
//! calls `sh -c`.

use crate::error::{Error, Result};
use crate::files::{self, CoordFile};
use crate::home::Home;
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
