//! The layering of `src/`, enforced: each folder is a layer, and a module imports only from its
//! own layer and the layers below it. Every `crate::<layer>` path in the code of every
//! `src/<layer>/**/*.rs` (in `use` lines, grouped `use crate::{a, b}` trees and inline paths alike,
//! and `super::` chains that climb to the crate root) is checked; comments are not code and are
//! skipped. A failure names the file, the line and the two layers.

use std::path::{Path, PathBuf};

/// The layers, bottom first.
pub(crate) const LAYERS: [(&str, &str); 6] = [
    ("base", "leaves: clock, error, /proc, daemon names, schemas, safe text"),
    ("store", "the home on disk: paths, the file registry, formats, locks, PID files, the store"),
    ("domain", "tasks, dispatches, schedules, the pause switch"),
    ("ops", "the operator's tools: supervisor, backup, recovery, logs, status, validate"),
    ("daemons", "the daemon skeleton and each daemon's loop"),
    ("cli", "the `cortex` command"),
];

/// Files directly in `src/` (outside every layer).
const ROOT_FILES: [&str; 3] = ["lib.rs", "main.rs", "layering.rs"];

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|(l, _)| *l == layer)
}

/// One import that goes up.
#[derive(Debug, PartialEq)]
pub(crate) struct Upward {
    pub line: usize,
    pub from: &'static str,
    pub to: String,
    pub path: String,
}

/// The code of a Rust file with comments and the insides of string literals blanked out (line
/// breaks kept, so lines still count): neither can import anything.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let blank = |s: &str| s.chars().map(|c| if c == '\n' { '\n' } else { ' ' }).collect::<String>();
    let mut i = 0;
    while i < b.len() {
        let end = if b[i..].starts_with(b"//") {
            text[i..].find('\n').map_or(b.len(), |n| i + n)
        } else if b[i..].starts_with(b"/*") {
            let (mut depth, mut j) = (0, i);
            while j < b.len() {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            j
        } else if b[i] == b'r' && (b[i..].starts_with(b"r\"") || b[i..].starts_with(b"r#")) {
            let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
            if b.get(i + 1 + hashes) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            let close = format!("\"{}", "#".repeat(hashes));
            text[i + 2 + hashes..].find(&close).map_or(b.len(), |n| i + 2 + hashes + n + close.len())
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(b.len())
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            i + 3
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            text[i + 3..].find('\'').map_or(b.len(), |n| i + 3 + n + 1)
        } else {
            let c = text[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
            continue;
        };
        out.push_str(&blank(&text[i..end]));
        i = end;
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The first segment of each item of the use tree `{...}` at the start of `s`, with its offset.
fn group_heads(s: &str) -> Vec<(usize, &str)> {
    let mut heads = Vec::new();
    let (mut depth, mut item_start) = (0, 1);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' | ',' if depth == 1 => {
                let item = &s[item_start..i];
                let lead = item.len() - item.trim_start().len();
                heads.push((item_start + lead, ident_at(item.trim_start())));
                item_start = i + 1;
                if c == '}' {
                    break;
                }
            }
            '}' => depth -= 1,
            _ => {}
        }
    }
    heads.into_iter().filter(|(_, h)| !h.is_empty()).collect()
}

/// The module path (below the crate root) of the file at `rel` (relative to `src/`).
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if stem != "mod" {
            parts.push(stem.to_string());
        }
    }
    parts
}

/// The layers a file's code names at the crate root, with the line and the path as written.
fn crate_paths(rel: &Path, text: &str) -> Vec<(usize, String, String)> {
    let code = code_only(text);
    let module = module_of(rel);
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut found = Vec::new();
    let mut push = |at: usize, head: &str, written: &str| {
        if !head.is_empty() {
            found.push((line_of(at), head.to_string(), written.trim().to_string()));
        }
    };
    let starts = code.match_indices("crate::").map(|(i, _)| (i, "crate::".len(), 0));
    let supers = code.match_indices("super::").map(|(i, _)| (i, 0, 1));
    for (at, skip, _) in starts.chain(supers) {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == ':') {
            continue;
        }
        let mut start = at + skip;
        let mut rest = &code[start..];
        if skip == 0 {
            // `super::super::x`: from a file's module, count the climbs; only paths that reach
            // the crate root name a layer.
            let mut climbs = 0;
            while let Some(r) = rest.strip_prefix("super::") {
                climbs += 1;
                rest = r;
                start += "super::".len();
            }
            if climbs < module.len() {
                continue;
            }
        }
        let written: String = rest.chars().take_while(|c| !matches!(c, ';' | '(' | ')' | '\n' | ' ' | '<')).collect();
        if rest.starts_with('{') {
            let end = rest.find(';').unwrap_or(rest.len());
            for (offset, head) in group_heads(&rest[..end]) {
                push(start + offset, head, &format!("crate::{{{head}::…}}"));
            }
        } else {
            push(start, ident_at(rest), &format!("crate::{written}"));
        }
    }
    found
}

/// The imports of the file at `rel` (relative to `src/`, in layer `from`) that go up.
pub(crate) fn upward_imports(from: &'static str, rel: &Path, text: &str) -> Vec<Upward> {
    let Some(own) = rank(from) else { return Vec::new() };
    crate_paths(rel, text)
        .into_iter()
        .filter(|(_, head, _)| rank(head).is_some_and(|r| r > own))
        .map(|(line, to, path)| Upward { line, from, to, path })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_import_goes_up_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let order: Vec<&str> = LAYERS.iter().map(|(l, _)| *l).collect();
    let mut problems = Vec::new();
    let mut checked = 0;
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if rank(&name).is_none() {
                problems.push(format!("src/{name}/ is in no layer: add it to `LAYERS` in src/layering.rs"));
            }
        } else if !ROOT_FILES.contains(&name.as_str()) {
            problems.push(format!("src/{name} is in no layer: move it into one of {}", order.join(", ")));
        }
    }
    for (layer, _) in LAYERS {
        let mut files = Vec::new();
        rust_files(&src.join(layer), &mut files);
        for file in files {
            let rel = file.strip_prefix(&src).unwrap();
            let text = std::fs::read_to_string(&file).unwrap();
            checked += 1;
            for u in upward_imports(layer, rel, &text) {
                problems.push(format!(
                    "src/{}:{}: {} imports {} (`{}`): layer `{}` may not use layer `{}` above it",
                    rel.display(),
                    u.line,
                    u.from,
                    u.to,
                    u.path,
                    u.from,
                    u.to
                ));
            }
        }
    }
    assert!(checked > 100, "only {checked} files found under {}", src.display());
    assert!(problems.is_empty(), "layers (bottom first): {}\n{}", order.join(" → "), problems.join("\n"));
}

#[test]
fn every_form_of_an_upward_import_is_found() {
    let rel = Path::new("store/example.rs");
    let text = "//! Docs may name [`crate::cli`].\n\
                use crate::base::clock::now;\n\
                use crate::{base::error::Error, daemons::daemon::Wake};\n\
                use crate::{\n    store::Store,\n    ops::status::{StatusReader, views},\n};\n\
                fn f() { let s = \"crate::cli\"; crate::domain::task::queue::x(s); /* crate::cli */ }\n\
                fn g() -> super::super::cli::Thing { make() }\n";
    let found: Vec<(usize, String)> = upward_imports("store", rel, text).into_iter().map(|u| (u.line, u.to)).collect();
    assert_eq!(
        found,
        vec![(3, "daemons".to_string()), (6, "ops".to_string()), (8, "domain".to_string()), (9, "cli".to_string()),]
    );
    // Sideways and down are fine; a `super::` that stays inside the layer names no layer.
    assert!(upward_imports("ops", Path::new("ops/status/cache.rs"), "use super::super::store::X;\n").is_empty());
    assert!(upward_imports("daemons", rel, text).iter().all(|u| u.to == "cli"));
}
