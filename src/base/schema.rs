//! JSON Schemas of the coordination files, embedded from `coordination/schemas/`, compiled once,
//! and a validator that reports the first failures with their JSON pointers.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::OnceLock;

macro_rules! schema_source {
    ($name:literal) => {
        ($name, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/coordination/schemas/", $name, ".schema.json")))
    };
}

/// (name, JSON Schema source) of every embedded schema.
pub const SOURCES: &[(&str, &str)] = &[
    schema_source!("task-queue"),
    schema_source!("token-budget"),
    schema_source!("scheduler-state"),
    schema_source!("event"),
    schema_source!("worker-types"),
    schema_source!("heartbeat-policy"),
    schema_source!("worker-restart-policy"),
    schema_source!("router-config"),
    schema_source!("dispatch"),
    schema_source!("routing-decision"),
    schema_source!("schedules"),
    schema_source!("failure-pattern"),
    schema_source!("metrics-snapshot"),
    schema_source!("circuit-breakers"),
    schema_source!("auto-fix-registry"),
    schema_source!("fix-history"),
    schema_source!("task"),
    schema_source!("failure-streaks"),
    schema_source!("event-ack"),
    schema_source!("task-queue-journal"),
    schema_source!("notifications"),
];

/// One way a document breaks its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaViolation {
    /// JSON pointer of the offending value (`""` for the document root).
    pub pointer: String,
    /// What was expected there.
    pub expected: String,
}

fn compile(name: &str, schema: &Value) -> jsonschema::Validator {
    jsonschema::validator_for(schema).unwrap_or_else(|e| panic!("embedded schema {name} does not compile: {e}"))
}

fn source(i: usize) -> Value {
    let (name, src) = SOURCES[i];
    serde_json::from_str(src).unwrap_or_else(|e| panic!("embedded schema {name} is not JSON: {e}"))
}

/// The compiled validator of an embedded schema, compiled on first use: a command that reads
/// two files compiles two schemas, not all of them (a few milliseconds of every CLI call).
fn validator(name: &str) -> Option<&'static jsonschema::Validator> {
    static V: OnceLock<Vec<OnceLock<jsonschema::Validator>>> = OnceLock::new();
    let slots = V.get_or_init(|| SOURCES.iter().map(|_| OnceLock::new()).collect());
    let i = SOURCES.iter().position(|(n, _)| *n == name)?;
    Some(slots[i].get_or_init(|| compile(name, &source(i))))
}

/// The validator of one definition (`$defs/<def>`) of an embedded schema, for a document
/// validated part by part (see `task::queue_file`); compiled on first use, with the schema's
/// other definitions beside it for references.
fn def_validator(name: &str, def: &str) -> Option<&'static jsonschema::Validator> {
    static V: OnceLock<Vec<OnceLock<HashMap<String, jsonschema::Validator>>>> = OnceLock::new();
    let slots = V.get_or_init(|| SOURCES.iter().map(|_| OnceLock::new()).collect());
    let i = SOURCES.iter().position(|(n, _)| *n == name)?;
    let defs = slots[i].get_or_init(|| {
        let schema = source(i);
        let Some(defs) = schema.get("$defs").and_then(Value::as_object) else { return HashMap::new() };
        defs.keys()
            .map(|d| {
                let one = serde_json::json!({
                    "$schema": schema.get("$schema"),
                    "$defs": defs,
                    "$ref": format!("#/$defs/{d}"),
                });
                (d.clone(), compile(&format!("{name}#{d}"), &one))
            })
            .collect()
    });
    defs.get(def)
}

/// Validates `value` against the named schema; returns up to `max` violations (empty when valid).
pub fn check(schema: &str, value: &Value, max: usize) -> Vec<SchemaViolation> {
    violations(validator(schema), schema, value, max)
}

/// Validates `value` against one definition (`$defs/<def>`) of the named schema; pointers are
/// relative to `value`.
pub fn check_def(schema: &str, def: &str, value: &Value, max: usize) -> Vec<SchemaViolation> {
    violations(def_validator(schema, def), &format!("{schema}#{def}"), value, max)
}

fn violations(v: Option<&jsonschema::Validator>, schema: &str, value: &Value, max: usize) -> Vec<SchemaViolation> {
    let Some(v) = v else {
        return vec![SchemaViolation {
            pointer: String::new(),
            expected: format!("a known schema (no schema named {schema:?})"),
        }];
    };
    // The common case, a valid document, without building error values.
    if v.is_valid(value) {
        return Vec::new();
    }
    v.iter_errors(value)
        .take(max)
        .map(|e| SchemaViolation {
            pointer: bounded(&e.instance_path().to_string(), MAX_POINTER_CHARS),
            expected: bounded(&e.to_string(), MAX_EXPECTED_CHARS),
        })
        .collect()
}

/// Longest `expected` text kept. The validator's messages quote the offending value, which in a
/// hostile file can be a 100 MB string: it would be copied into every event, log line and
/// `cortex validate` report about the file.
pub const MAX_EXPECTED_CHARS: usize = 400;
/// Longest JSON pointer kept (a pointer quotes object keys, which can be huge too).
pub const MAX_POINTER_CHARS: usize = 200;

/// `text` if it is short; else its head and tail around a note of how much was left out.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let keep = max / 2;
    let mut head = keep;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - keep;
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}…[{} bytes left out]…{}", &text[..head], tail - head, &text[tail..])
}

/// True when `value` satisfies the named schema.
pub fn is_valid(schema: &str, value: &Value) -> bool {
    validator(schema).is_some_and(|v| v.is_valid(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_schema_compiles() {
        for (i, (name, _)) in SOURCES.iter().enumerate() {
            assert!(validator(name).is_some());
            for def in source(i).get("$defs").and_then(Value::as_object).into_iter().flat_map(|d| d.keys()) {
                assert!(def_validator(name, def).is_some(), "{name}#{def}");
            }
        }
        assert!(def_validator("task-queue", "task").is_some());
        assert!(validator("no-such-schema").is_none());
    }

    #[test]
    fn huge_value_in_a_violation_is_bounded() {
        // Regression (hostile input): a 10 MB string of the wrong type was quoted whole in the
        // violation, and so in every event and report about the file.
        let huge = "é".repeat(5 * 1024 * 1024);
        let v = check("task-queue", &json!({ "tasks": huge }), 5);
        assert!(!v.is_empty());
        for x in &v {
            assert!(x.expected.len() <= MAX_EXPECTED_CHARS + 40, "{} bytes", x.expected.len());
            assert!(x.expected.contains("bytes left out"), "{}", x.expected);
            assert!(x.pointer.len() <= MAX_POINTER_CHARS + 40);
        }
        let key = "k".repeat(1 << 20);
        let v = check("token-budget", &json!({ key: 1, "total": 1, "used": 0, "available": 1 }), 5);
        assert!(
            v.iter().all(|x| x.expected.len() <= MAX_EXPECTED_CHARS + 40 && x.pointer.len() <= MAX_POINTER_CHARS + 40)
        );
    }

    #[test]
    fn violation_names_the_pointer() {
        let bad = json!({"total": "lots", "used": 0, "available": 0});
        let v = check("token-budget", &bad, 5);
        assert_eq!(v[0].pointer, "/total");
        assert!(v[0].expected.contains("integer"), "{:?}", v);
    }
}
