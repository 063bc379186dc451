//! `cortex runbooks`: the operator runbooks of `docs/runbooks/`, built into the binary so an
//! installed `cortex` has them without a checkout. Lists them (name, path in the source, title)
//! or prints one. Needs no home. `tests/runbooks` runs every runbook's commands against a real
//! fleet and checks that this list names every file of `docs/runbooks/`.

use crate::base::error::{Error, Result};

/// Each runbook: its name (the file name without `.md`) and its text.
const RUNBOOKS: &[(&str, &str)] = &[
    ("scheduler", include_str!("../../docs/runbooks/scheduler.md")),
    ("drill", include_str!("../../docs/runbooks/drill.md")),
    ("emergency-recovery", include_str!("../../docs/runbooks/emergency-recovery.md")),
    ("daemons", include_str!("../../docs/runbooks/daemons.md")),
    ("schedules-and-retries", include_str!("../../docs/runbooks/schedules-and-retries.md")),
    ("backup", include_str!("../../docs/runbooks/backup.md")),
    ("README", include_str!("../../docs/runbooks/README.md")),
];

#[derive(Debug, clap::Args)]
pub struct RunbooksArgs {
    /// A runbook to print (scheduler, drill, emergency-recovery, daemons, schedules-and-retries,
    /// backup, or README for the conventions)
    pub name: Option<String>,
}

/// A runbook's title: its first `# ` heading.
fn title(text: &str) -> &str {
    text.lines().find_map(|l| l.strip_prefix("# ")).unwrap_or("").trim()
}

fn path(name: &str) -> String {
    format!("docs/runbooks/{name}.md")
}

/// The list `cortex help runbooks` shows after the command's own help.
pub(super) fn help_text() -> String {
    let mut s = String::from(
        "Operator runbooks, for Cortex as it is: what to check, what to run, what you should see.\n\
         Every shell block in them is run by a test against a real fleet (cargo test --test runbooks).\n\
         They are in the source under docs/runbooks/ and built into this binary:\n\n",
    );
    for (name, text) in RUNBOOKS {
        s.push_str(&format!("  {:<22} {:<40} {}\n", name, path(name), title(text)));
    }
    s.push_str("\n`cortex runbooks NAME` prints one (markdown); `cortex runbooks --json` lists them.");
    s
}

pub(crate) fn run(json: bool, args: RunbooksArgs) -> Result<u8> {
    match args.name {
        None if json => {
            let list: Vec<_> = RUNBOOKS
                .iter()
                .map(|(name, text)| serde_json::json!({"name": name, "path": path(name), "title": title(text)}))
                .collect();
            super::print_json(&serde_json::json!({ "runbooks": list }));
        }
        None => println!("{}", help_text()),
        Some(wanted) => {
            let wanted = wanted.trim_end_matches(".md");
            let Some((_, text)) = RUNBOOKS.iter().find(|(name, _)| *name == wanted) else {
                let names: Vec<&str> = RUNBOOKS.iter().map(|(n, _)| *n).collect();
                return Err(Error::Config {
                    path: None,
                    detail: format!(
                        "no runbook named {:?}; the runbooks are: {}",
                        crate::base::text::safe(wanted),
                        names.join(", ")
                    ),
                });
            };
            if json {
                super::print_json(&serde_json::json!({"name": wanted, "path": path(wanted), "text": text}));
            } else {
                print!("{text}");
            }
        }
    }
    Ok(0)
}
