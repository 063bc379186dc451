//! Every JSON coordination file's reader: the first byte picks the file (each JSON entry of
//! `files::ALL`, then the dispatch spec), the rest is its content. Runs what a daemon runs on
//! a file it reads (`Store::parse_checked`, then the typed decode of `Store::load`) and what
//! `cortex validate` runs (`validate::check_json_bytes`), and checks they agree. A document that
//! loads must also be writable back: its re-encoding must pass the schema, or the writer
//! (`Store::write_locked`) would refuse and the daemon would be stuck with it.
#![no_main]

use cortex::Store;
use cortex::store::files::{self, FileKind};
use cortex::store::home::Home;
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::OnceLock;

/// A store over a scratch home whose `coordination/quarantine` is a regular file: quarantine is
/// best effort and gives up when it cannot create its directory, so the fuzzer writes nothing.
fn store() -> &'static (Store, tempfile::TempDir) {
    static STORE: OnceLock<(Store, tempfile::TempDir)> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("scratch home");
        std::fs::create_dir_all(dir.path().join("coordination")).unwrap();
        std::fs::write(dir.path().join("coordination/quarantine"), b"not a directory").unwrap();
        (Store::new(Home::at(dir.path())), dir)
    })
}

/// Decodes as the typed document and checks that what would be written back passes the schema.
fn round_trip<D: Serialize + DeserializeOwned>(schema: &str, value: &Value) {
    let Ok(doc) = D::deserialize(value) else { return };
    let back = serde_json::to_value(&doc).expect("a decoded document encodes");
    let broken = cortex::base::schema::check(schema, &back, 1);
    assert!(broken.is_empty(), "{schema}: a document that loads cannot be written back: {broken:?}\nloaded: {value}");
    let again: D = D::deserialize(&back).expect("a written document loads again");
    assert_eq!(serde_json::to_value(&again).unwrap(), back, "{schema}: not stable across a write and a read");
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, content)) = data.split_first() else { return };
    let json: Vec<(&str, &str)> = files::ALL
        .iter()
        .filter(|f| f.kind == FileKind::Json)
        .map(|f| (f.rel, f.schema))
        .chain([("worker-specs/active/d-1.json", files::DISPATCH_SCHEMA)])
        .collect();
    let (rel, schema) = json[selector as usize % json.len()];
    let (store, _dir) = store();
    let path: PathBuf = store.home().coord(rel);

    let report = cortex::ops::validate::check_json_bytes(rel, content, Some(schema));
    let parsed = store.parse_checked(&path, content, Some(schema));
    assert_eq!(report.is_ok(), parsed.is_ok(), "validate and the store disagree on {rel}: {report:?} vs {parsed:?}");
    let Ok(value) = parsed else { return };

    use cortex::domain::task::{DispatchRecord, TaskQueue, TokenBudget};
    match schema {
        "task-queue" => round_trip::<TaskQueue>(schema, &value),
        "token-budget" => round_trip::<TokenBudget>(schema, &value),
        "scheduler-state" => round_trip::<cortex::domain::scheduler_state::SchedulerState>(schema, &value),
        "schedules" => round_trip::<cortex::domain::schedule::Schedules>(schema, &value),
        "circuit-breakers" => round_trip::<cortex::daemons::auto_fix::breaker::Breakers>(schema, &value),
        "auto-fix-registry" => round_trip::<cortex::daemons::auto_fix::registry::FixRegistry>(schema, &value),
        "worker-restart-policy" => round_trip::<cortex::daemons::auto_fix::RestartPolicy>(schema, &value),
        "heartbeat-policy" => round_trip::<cortex::daemons::heartbeat::HeartbeatPolicy>(schema, &value),
        "dispatch" => round_trip::<DispatchRecord>(schema, &value),
        _ => {}
    }
});
