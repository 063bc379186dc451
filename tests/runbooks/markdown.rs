//! Reading a runbook: its fenced blocks, which of them a test runs, and the output each promises.
//!
//! The conventions (documented for operators in `docs/runbooks/README.md`):
//! - a fenced block tagged `sh` (or `bash`) is run by the runbook test, in order, in one bash
//!   session per runbook (`set -euo pipefail`): variables set in one block are seen by the next;
//! - `sh illustrative` is shown, never run (commands that touch the host: systemd, cron, a build);
//! - an `expect` block right after a shell block is the output that block must print: each of its
//!   lines must appear, in that order, among the block's output lines (stdout and stderr
//!   together; other lines may come between); `...` in a line stands for any text; leading and
//!   trailing spaces are ignored;
//! - every other fenced block needs an info string naming what it holds (`text`, `json`, `toml`);
//!   a block without one is refused, so a shell block cannot slip in unmarked.

/// One fenced block: where it starts (1-based line of its opening fence), its info string, its text.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub line: usize,
    pub info: String,
    pub text: String,
}

/// A shell block the test runs, with the output it promises, if it states one.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub line: usize,
    pub script: String,
    /// The `expect` block's first line and its non-empty lines.
    pub expect: Option<(usize, Vec<String>)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Run,
    Illustrative,
    Expect,
    Other,
}

fn kind(info: &str) -> Option<Kind> {
    let mut words = info.split_whitespace();
    let lang = words.next()?;
    let rest: Vec<&str> = words.collect();
    Some(match lang {
        "sh" | "bash" | "shell" if rest.contains(&"illustrative") => Kind::Illustrative,
        "sh" | "bash" | "shell" => Kind::Run,
        "expect" => Kind::Expect,
        _ => Kind::Other,
    })
}

/// Every fenced block of a markdown text. A fence is a line whose first non-blank characters are
/// three backticks; the block's lines lose the fence's indentation.
pub(crate) fn blocks(md: &str) -> Result<Vec<Block>, String> {
    let mut out = Vec::new();
    let mut open: Option<(usize, usize, String, Vec<String>)> = None;
    for (i, line) in md.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match open.as_mut() {
            None if trimmed.starts_with("```") => {
                open = Some((i + 1, indent, trimmed[3..].trim().to_string(), Vec::new()));
            }
            None => {}
            Some(_) if trimmed.trim_end() == "```" => {
                let (line, _, info, body) = open.take().expect("an open block");
                let mut text = body.join("\n");
                text.push('\n');
                out.push(Block { line, info, text });
            }
            Some((_, indent, _, body)) => {
                let cut = line.len().min(*indent);
                let cut = if line[..cut].trim().is_empty() { cut } else { 0 };
                body.push(line[cut..].to_string());
            }
        }
    }
    match open {
        Some((line, ..)) => Err(format!("line {line}: this fenced block is never closed")),
        None => Ok(out),
    }
}

/// The steps of a runbook: its shell blocks to run, each with its expected output. Errors name
/// each block that breaks the conventions.
pub(crate) fn steps(md: &str) -> Result<Vec<Step>, Vec<String>> {
    let blocks = blocks(md).map_err(|e| vec![e])?;
    let mut problems = Vec::new();
    let mut steps: Vec<Step> = Vec::new();
    let mut previous: Option<(Kind, bool)> = None; // the last block's kind, and whether it has an expect
    for b in &blocks {
        let Some(k) = kind(&b.info) else {
            problems.push(format!(
                "line {}: a fenced block needs an info string: `sh` (run by the test), `sh illustrative`, \
                 `expect`, or what it holds (`text`, `json`, `toml`)",
                b.line
            ));
            previous = None;
            continue;
        };
        match k {
            Kind::Run => steps.push(Step { line: b.line, script: b.text.clone(), expect: None }),
            Kind::Expect => match previous {
                Some((Kind::Run, false)) => {
                    let lines: Vec<String> =
                        b.text.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
                    if lines.is_empty() {
                        problems.push(format!("line {}: an empty `expect` block", b.line));
                    }
                    steps.last_mut().expect("a step").expect = Some((b.line, lines));
                }
                Some((Kind::Illustrative, false)) => {}
                _ => problems.push(format!(
                    "line {}: an `expect` block must follow a shell block (one `expect` per block)",
                    b.line
                )),
            },
            Kind::Illustrative | Kind::Other => {}
        }
        previous = Some(match (k, previous) {
            (Kind::Expect, Some((p, _))) => (p, true),
            _ => (k, false),
        });
    }
    if problems.is_empty() { Ok(steps) } else { Err(problems) }
}

/// Whether an output line matches an expected line: equal after trimming, `...` matching any text.
pub(crate) fn matches(pattern: &str, line: &str) -> bool {
    let (pattern, line) = (pattern.trim(), line.trim());
    let parts: Vec<&str> = pattern.split("...").collect();
    if parts.len() == 1 {
        return pattern == line;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !line.starts_with(first) || line.len() < first.len() + last.len() || !line.ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// The first expected line that does not appear, in order, among the output's lines.
pub(crate) fn first_missing<'a>(expected: &'a [String], output: &str) -> Option<&'a str> {
    let mut lines = output.lines();
    expected.iter().find(|want| !lines.by_ref().any(|l| matches(want, l))).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_steps_and_expectations_are_read_as_documented() {
        let md = "# T\n\n```sh\necho hi\n```\n\nYou should see:\n\n```expect\nhi\n```\n\n```sh illustrative\nrm -rf /\n```\n\n```expect\nanything\n```\n\n```json\n{}\n```\n\n  ```sh\n  X=1\n  ```\n";
        let got = steps(md).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].script, "echo hi\n");
        assert_eq!(got[0].expect.as_ref().unwrap().1, vec!["hi".to_string()]);
        assert_eq!(got[1].script, "X=1\n");
        assert!(got[1].expect.is_none());
        let bad = steps("```\nls\n```\n\n```text\nx\n```\n```expect\ny\n```\n").unwrap_err();
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(steps("```sh\nls\n").is_err());
    }

    #[test]
    fn ellipsis_matches_any_text_and_lines_match_in_order() {
        assert!(matches("worker: RUNNING (PID ..., uptime ...)", "worker: RUNNING (PID 12, uptime 1s, 3 MB)"));
        assert!(matches("...ready", "  all ready  "));
        assert!(!matches("worker: STOPPED", "worker: RUNNING"));
        assert!(!matches("a...b...c", "a c b"));
        let out = "one\ntwo\nthree\n";
        assert_eq!(first_missing(&["one".into(), "three".into()], out), None);
        assert_eq!(first_missing(&["three".into(), "one".into()], out), Some("one"));
    }
}
