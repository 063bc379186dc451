//! `cortex config restore-defaults [--file NAME]`: the runbook's "Reset to Defaults" for the
//! configuration files under `coordination/` (worker types, router config, policies). Each file
//! is replaced atomically under its lock by the embedded default; a differing current file is
//! kept beside it as `<file>.before-defaults-<time>`.

use crate::base::error::{Error, Result};
use crate::store::events::{EventKind, Severity};
use crate::store::files::{self, CoordFile};
use crate::store::{Store, atomic};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct RestoredDefault {
    pub file: String,
    /// Where the replaced content was kept (None when it was missing or already the default).
    pub kept: Option<PathBuf>,
    pub changed: bool,
}

/// The configuration files `--file` may name.
pub(crate) fn config_files() -> Vec<&'static CoordFile> {
    files::ALL.iter().copied().filter(|f| f.is_config && f.default.is_some()).collect()
}

/// Finds a configuration file by `worker-types`, `worker-types.json`, `config/worker-types.json`
/// or `coordination/config/worker-types.json`.
pub(crate) fn find(name: &str) -> Result<&'static CoordFile> {
    let name = name.trim().trim_start_matches("coordination/");
    config_files()
        .into_iter()
        .find(|f| {
            let base = f.rel.rsplit('/').next().unwrap_or(f.rel);
            f.rel == name || base == name || base.trim_end_matches(".json") == name || f.schema == name
        })
        .ok_or_else(|| Error::Config {
            path: None,
            detail: format!(
                "--file {name:?} is not a configuration file with a default; use one of: {}",
                config_files().iter().map(|f| f.rel).collect::<Vec<_>>().join(", ")
            ),
        })
}

pub(crate) fn restore_defaults(store: &Store, only: Option<&str>) -> Result<Vec<RestoredDefault>> {
    let targets = match only {
        Some(n) => vec![find(n)?],
        None => config_files(),
    };
    let mut out = Vec::new();
    for f in targets {
        let default = f.default.unwrap_or_default().as_bytes();
        let path = store.path(f);
        let _guard = store.lock(f)?;
        let current = std::fs::read(&path).ok();
        let changed = current.as_deref() != Some(default);
        let mut kept = None;
        if let Some(cur) = current.filter(|_| changed) {
            let copy = PathBuf::from(format!(
                "{}.before-defaults-{}",
                path.display(),
                chrono::Utc::now().format("%Y%m%d-%H%M%S%.6f")
            ));
            atomic::write_atomic(&copy, &cur)?;
            kept = Some(copy);
        }
        if changed {
            if let Some(dir) = path.parent() {
                atomic::create_dir_all(dir)?;
            }
            atomic::write_atomic(&path, default)?;
            let _ = store.emit(
                EventKind::ConfigDefaultsRestored,
                Severity::Warning,
                format!(
                    "coordination/{} reset to its default{}",
                    f.rel,
                    kept.as_ref().map(|k| format!("; the previous content is kept at {}", store.home().relative(k).display())).unwrap_or_default()
                ),
                serde_json::json!({"file": format!("coordination/{}", f.rel), "kept": kept.as_ref().map(|k| store.home().relative(k).to_path_buf())}),
            );
        }
        out.push(RestoredDefault { file: format!("coordination/{}", f.rel), kept, changed });
    }
    Ok(out)
}
