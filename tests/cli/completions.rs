//! `cortex completions SHELL` and `cortex manpages --dir DIR`, generated from the clap
//! definitions without a home: the bash script loads in bash and completes commands and nested
//! subcommands; the man pages exist for every command (nested too), parse as roff with the
//! expected sections, and render with `man -l` where man is installed.
use crate::support::*;
use std::process::Command;

/// `cortex` with no home anywhere: HOME points to an empty directory, no home variables.
fn cortex_without_home(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(bin("cortex"))
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("CORTEX_HOME")
        .env_remove("COMMIT_RELAY_HOME")
        .output()
        .unwrap()
}

#[test]
fn bash_completion_loads_and_completes_commands_and_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let out = cortex_without_home(dir.path(), &["completions", "bash"]);
    assert!(out.status.success(), "{out:?}");
    let script = dir.path().join("cortex.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    // Bash's own completion machinery: the generated function fills COMPREPLY for a line.
    let complete = |line: &str| {
        let words: Vec<&str> = line.split(' ').collect();
        let program = format!(
            "source {s}; complete -p cortex; COMP_WORDS=({w}); COMP_CWORD={c}; COMP_LINE='{line}'; COMP_POINT={p}; \
             _cortex cortex {cur} {prev}; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            s = script.display(),
            w = words.join(" "),
            c = words.len() - 1,
            p = line.len(),
            cur = words[words.len() - 1],
            prev = words[words.len() - 2],
        );
        let out = Command::new("bash").arg("--norc").arg("-c").arg(program).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let top = complete("cortex ta");
    assert!(top.starts_with("complete -o bashdefault -o default -o nosort -F _cortex cortex\n"), "{top}");
    assert_eq!(top.lines().skip(1).collect::<Vec<_>>(), ["task"]);
    let nested = complete("cortex task lo");
    assert_eq!(nested.lines().skip(1).collect::<Vec<_>>(), ["logs"]);
    let sched = complete("cortex scheduler p");
    assert_eq!(sched.lines().skip(1).collect::<Vec<_>>(), ["pause"]);

    for (shell, marker) in [
        ("zsh", "#compdef cortex"),
        ("fish", "complete -c cortex"),
        ("elvish", "edit:completion:arg-completer[cortex]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = cortex_without_home(dir.path(), &["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains(marker), "{shell} script lacks {marker:?}");
    }
    let out = cortex_without_home(dir.path(), &["completions", "tcsh"]);
    assert!(!out.status.success());
}

#[test]
fn man_pages_for_every_command_parse_and_render() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man1");
    let out = cortex_without_home(dir.path(), &["manpages", "--dir", man.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let mut pages: Vec<String> =
        std::fs::read_dir(&man).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    pages.sort();
    for want in [
        "cortex.1",
        "cortex-task.1",
        "cortex-task-logs.1",
        "cortex-scheduler-pause.1",
        "cortex-top.1",
        "cortex-status.1",
    ] {
        assert!(pages.iter().any(|p| p == want), "{want} missing from {pages:?}");
    }
    // One page per command: each `cortex <group> --help` command list is covered.
    let listed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(listed.lines().count(), pages.len());
    assert!(pages.len() > 50, "{pages:?}");
    assert!(!pages.iter().any(|p| p.contains("-help")), "no page for clap's help: {pages:?}");
    for page in &pages {
        let text = std::fs::read_to_string(man.join(page)).unwrap();
        let name = page.trim_end_matches(".1");
        assert!(text.starts_with(".ie \\n(.g .ds Aq \\(aq") || text.starts_with(".TH"), "{page}: not roff");
        assert!(text.contains(&format!(".TH {name} 1")), "{page}: no .TH {name} 1");
        for section in [".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION"] {
            assert!(text.contains(section), "{page}: no {section}");
        }
    }
    let top = std::fs::read_to_string(man.join("cortex.1")).unwrap();
    assert!(top.contains(".SH SUBCOMMANDS") && top.contains("cortex\\-task(1)"), "cortex.1 lists its commands");
    if Command::new("man").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let out = Command::new("man")
            .args(["-l", man.join("cortex-task-logs.1").to_str().unwrap()])
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        // Bold and underline reach a pipe as overstrikes (`c\bc`): keep the last character.
        let mut text = String::new();
        for c in String::from_utf8_lossy(&out.stdout).chars() {
            if c == '\u{8}' {
                text.pop();
            } else {
                text.push(c);
            }
        }
        assert!(out.status.success(), "{out:?}");
        // Justified lines: words may stand two spaces apart.
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(text.contains("cortex task logs") && text.contains("--attempt"), "{text}");
    }
}
