//! The binaries start in a fresh home and answer.
use crate::support::*;

#[test]
fn init_then_validate_is_clean() {
    let h = TestHome::new();
    let out = h.cortex_ok(&["validate"]);
    assert!(out.contains("[OK] coordination/task-queue.json"), "{out}");
}
