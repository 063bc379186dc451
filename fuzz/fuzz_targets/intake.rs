//! The task intake (`task::intake`): fuzzed bytes as `coordination/task-intake.jsonl`, folded
//! into an empty queue as the coordinator does. Never panics; only whole lines are consumed (the
//! recorded offset ends at a newline), a cut-off last line is left for later; every task added
//! is in the queue once; the queue written back passes its schema and loads again.
#![no_main]

use cortex::Store;
use cortex::store::files;
use cortex::store::home::Home;
use cortex::domain::task::TaskQueue;
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::sync::OnceLock;

/// A scratch home whose quarantine and events file are directories of the wrong kind: quarantine
/// and event appends are best effort and give up, so the fuzzer writes only the intake.
fn store() -> &'static (Store, tempfile::TempDir) {
    static STORE: OnceLock<(Store, tempfile::TempDir)> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("scratch home");
        std::fs::create_dir_all(dir.path().join("coordination/.locks")).unwrap();
        std::fs::write(dir.path().join("coordination/quarantine"), b"not a directory").unwrap();
        std::fs::create_dir_all(dir.path().join("coordination").join(files::EVENTS.rel)).unwrap();
        (Store::new(Home::at(dir.path())), dir)
    })
}

fuzz_target!(|data: &[u8]| {
    let (store, _dir) = store();
    let intake = store.path(files::TASK_INTAKE);
    let folded = {
        let mut p = intake.clone().into_os_string();
        p.push(".folded");
        std::path::PathBuf::from(p)
    };
    let _ = std::fs::remove_file(&folded);
    std::fs::write(&intake, data).unwrap();
    let mut queue = TaskQueue::default();
    let fold = match cortex::domain::task::intake::fold(store, &mut queue) {
        Ok(Some(fold)) => fold,
        Ok(None) => {
            assert!(data.is_empty(), "a non-empty intake was not folded");
            return;
        }
        Err(_) => return,
    };
    let offset = queue.intake_offset as usize;
    assert!(offset <= data.len());
    assert!(offset == 0 || data[offset - 1] == b'\n', "offset {offset} is not at a line end");
    assert!(!data[offset..].contains(&b'\n'), "a whole line after offset {offset} was left unconsumed");
    let ids: HashSet<&str> = queue.tasks.iter().map(|t| t.task_id.as_str()).collect();
    assert_eq!(ids.len(), queue.tasks.len(), "a task was added twice");
    assert_eq!(fold.added.len(), queue.tasks.len());
    assert!(fold.added.iter().all(|id| ids.contains(id.as_str())));
    let back = serde_json::to_value(&queue).expect("a folded queue encodes");
    let broken = cortex::base::schema::check(files::TASK_QUEUE.schema, &back, 1);
    assert!(broken.is_empty(), "the folded queue would be refused on write: {broken:?}");
    let again: TaskQueue = serde_json::from_value(back.clone()).expect("the folded queue loads again");
    assert_eq!(serde_json::to_value(&again).unwrap(), back);
});
