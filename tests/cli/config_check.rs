//! `cortex config check` and the seed form `cortex --config FILE --dry-run`: a good file passes
//! with `Configuration validation successful`; an unknown key (named, with its line), a value
//! of the wrong type, a bad regex in the router config and a router rule naming an unknown
//! worker type each fail with the file and the line or JSON pointer.

use crate::support::*;
use serde_json::Value;
use std::process::Output;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn set_json(h: &TestHome, rel: &str, pointer: &str, value: Value) {
    let mut v = h.read_json(rel);
    *v.pointer_mut(pointer).unwrap() = value;
    std::fs::write(h.join(rel), serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

#[test]
fn a_good_configuration_passes_in_both_forms() {
    let h = TestHome::new();
    assert_eq!(h.cortex_ok(&["config", "check"]).trim(), "Configuration validation successful");
    // The drill's form, on a file outside the home with an edited value.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cortex.toml");
    let text = std::fs::read_to_string(h.join("cortex.toml")).unwrap();
    // Appended, as the drill does (the shipped file has the key commented out in its last table).
    std::fs::write(&file, format!("{text}max_concurrent_dispatches = 15\n")).unwrap();
    let out = h.cortex(&["--config", file.to_str().unwrap(), "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Configuration validation successful");
    let out = h.cortex_ok(&["config", "check", "--config", file.to_str().unwrap()]);
    assert!(out.contains("Configuration validation successful"));
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let h = TestHome::new();
    let file = h.join("cortex.toml");
    std::fs::write(&file, "[scheduler]\nmax_concurrent_dispatches = 2\nmax_concurent_dispatch = 3\n").unwrap();
    for args in [vec!["config", "check"], vec!["--config", file.to_str().unwrap(), "--dry-run"]] {
        let out = h.cortex(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("max_concurent_dispatch"), "{args:?} names the key: {err}");
        assert!(err.contains("line 3"), "{args:?} names the line: {err}");
        assert!(err.contains(&file.display().to_string()), "{args:?} names the file: {err}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("successful"));
    }
    // An unknown section is refused too.
    std::fs::write(&file, "[schedular]\nmax_concurrent_dispatches = 2\n").unwrap();
    let out = h.cortex(&["config", "check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("schedular") && stderr(&out).contains("line 1"), "{}", stderr(&out));
}

#[test]
fn a_value_of_the_wrong_type_is_named_with_its_line() {
    let h = TestHome::new();
    let file = h.join("cortex.toml");
    std::fs::write(&file, "# comment\n[api]\nbind = \"127.0.0.1:8900\"\nthreads = \"four\"\n").unwrap();
    let out = h.cortex(&["config", "check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("line 4"), "names the line: {err}");
    // Values serde accepts but that make no sense are refused as well.
    std::fs::write(&file, "[retry]\nbackoff_strategy = \"sometimes\"\n").unwrap();
    let out = h.cortex(&["config", "check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("line 2") && stderr(&out).contains("sometimes"), "{}", stderr(&out));
    std::fs::write(&file, "[api]\nbind = \"localhost\"\n").unwrap();
    let out = h.cortex(&["config", "check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("[api] bind"), "{}", stderr(&out));
    // A JSON config file with a field of the wrong type: file and pointer.
    std::fs::write(&file, "").unwrap();
    set_json(&h, "coordination/config/worker-types.json", "/worker_types/fix-worker/command", Value::from("make fix"));
    let out = h.cortex(&["config", "check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("coordination/config/worker-types.json: at /worker_types/fix-worker/command"), "{err}");
}

#[test]
fn a_bad_router_regex_is_named_with_its_pointer() {
    let h = TestHome::new();
    set_json(&h, "coordination/moe/router-config.json", "/rules/1/pattern", Value::from("scan|(security"));
    let out = h.cortex(&["config", "check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("coordination/moe/router-config.json: at /rules/1/pattern"), "{err}");
    assert!(err.contains("scan|(security") && err.contains("not a valid regex"), "{err}");
    // --json gives the same errors to scripts.
    let out = h.cortex(&["--json", "config", "check"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"].as_array().unwrap().len(), 1, "{v}");
    // validate reports the router file as invalid too.
    let out = h.cortex(&["validate"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("[INVALID] coordination/moe/router-config.json"), "{stdout}");
}

#[test]
fn a_router_rule_naming_an_unknown_worker_type_is_refused() {
    let h = TestHome::new();
    set_json(&h, "coordination/moe/router-config.json", "/rules/2/worker_type", Value::from("ghost-worker"));
    let out = h.cortex(&["config", "check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("at /rules/2/worker_type") && err.contains("ghost-worker"), "{err}");
    assert!(err.contains("worker-types.json"), "says where worker types are defined: {err}");
    // Defining the type fixes it.
    let mut types = h.read_json("coordination/config/worker-types.json");
    types["worker_types"]["ghost-worker"] =
        serde_json::json!({"default_budget": 1000, "default_duration": 5, "command": ["true"]});
    std::fs::write(h.join("coordination/config/worker-types.json"), types.to_string()).unwrap();
    assert!(h.cortex_ok(&["config", "check"]).contains("Configuration validation successful"));
}

/// Writes an API tokens file (mode 0600) into the home and names it in cortex.toml.
fn use_tokens(h: &TestHome, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = h.join("api-tokens");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    h.set_config("api", "tokens_file", "\"api-tokens\"");
}

#[test]
fn a_token_the_api_refuses_fails_the_check_by_the_same_rule() {
    let h = TestHome::new();
    use_tokens(&h, "ops:short-token\n");
    let out = h.cortex(&["config", "check"]);
    assert_eq!(out.status.code(), Some(1), "a 11-character token passed config check: {}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("tokens_file") && err.contains("shorter than 16 characters"), "{err}");
    // The API refuses the same file at start, with the same words.
    let port = free_port();
    h.set_config("api", "bind", &format!("\"127.0.0.1:{port}\""));
    let mut api = h.spawn_daemon("api");
    let st = api.wait().unwrap();
    let mut api_err = String::new();
    std::io::Read::read_to_string(api.stderr.as_mut().unwrap(), &mut api_err).unwrap();
    assert!(!st.success() && api_err.contains("shorter than 16 characters"), "{st}: {api_err}");
    // A long enough token passes both.
    use_tokens(&h, "ops:0123456789abcdef\n");
    assert_eq!(h.cortex_ok(&["config", "check"]).trim(), "Configuration validation successful");
}

#[test]
fn worker_types_without_a_command_template_are_warned_about_by_name() {
    let h = TestHome::new();
    let out = h.cortex(&["config", "check"]);
    assert!(out.status.success());
    assert!(!stderr(&out).contains("warning"), "the shipped configuration warns: {}", stderr(&out));
    // Runbook 002's "create default configurations" heredoc, verbatim.
    std::fs::write(
        h.join("coordination/config/worker-types.json"),
        r#"{
  "worker_types": {
    "implementation-worker": {"default_budget": 100000, "default_duration": 45},
    "analysis-worker": {"default_budget": 50000, "default_duration": 15},
    "scan-worker": {"default_budget": 70000, "default_duration": 15},
    "fix-worker": {"default_budget": 70000, "default_duration": 20}
  }
}
"#,
    )
    .unwrap();
    let out = h.cortex(&["config", "check"]);
    assert_eq!(out.status.code(), Some(0), "still a valid configuration: {}", stderr(&out));
    let err = stderr(&out);
    for t in ["implementation-worker", "analysis-worker", "scan-worker", "fix-worker"] {
        assert!(
            err.lines().any(|l| l.starts_with("warning:") && l.contains(&format!("{t:?} has no command template"))),
            "no warning names {t}: {err}"
        );
    }
    let json: Value = serde_json::from_slice(&h.cortex(&["--json", "config", "check"]).stdout).unwrap();
    assert_eq!(json["warnings"].as_array().unwrap().len(), 4, "{json}");
}

#[test]
fn a_placeholder_spliced_into_a_shell_script_is_warned_about() {
    let h = TestHome::new();
    let types = "coordination/config/worker-types.json";
    set_json(&h, types, "/worker_types/fix-worker/command", serde_json::json!(["sh", "-c", "fix {description}"]));
    set_json(
        &h,
        types,
        "/worker_types/scan-worker/command",
        serde_json::json!(["/bin/bash", "-ec", "scan --id {task_id} \"$1\"", "bash", "{description}"]),
    );
    let out = h.cortex(&["config", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let warned =
        |t: &str| err.lines().any(|l| l.contains(&format!("{t:?}")) && l.contains("spliced into a shell script"));
    assert!(warned("fix-worker") && err.contains("{description}"), "{err}");
    assert!(warned("scan-worker") && err.contains("{task_id}"), "{err}");
    // The safe form (the value as its own argument, "$1" in the script) is not warned about.
    set_json(
        &h,
        types,
        "/worker_types/fix-worker/command",
        serde_json::json!(["sh", "-c", "fix \"$1\"", "sh", "{description}"]),
    );
    let err = stderr(&h.cortex(&["config", "check"]));
    assert!(!err.contains("fix-worker"), "{err}");
}
