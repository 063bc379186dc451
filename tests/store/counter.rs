//! N processes × M read-modify-write increments of one counter under the store's lock: the final
//! count is exactly N×M and every intermediate value was seen by exactly one increment (no two
//! processes ever read the same value, so no update was lost).
//!
//! The children are re-executions of this test binary (see `support::reexec`) that call the real
//! `Store::update` on the token budget's `used` counter. `CORTEX_TEST_LONG=1` runs a larger form.

use crate::support::reexec::{self, child, param, param_name, report};
use crate::support::*;
use cortex::domain::task::model::TokenBudget;
use cortex::{Home, Store};
use std::io::Read;
use std::process::Stdio;

const CHILD: &str = "child_incrementer";

/// Child: waits for the start gate (stdin closed), then increments `used` COUNT times.
#[test]
fn child_incrementer() {
    if reexec::role().as_deref() != Some("incrementer") {
        return;
    }
    let home = Home::at(param::<String>("HOME"));
    let count: u64 = param("COUNT");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    let store = Store::new(home).with_source("test-incrementer");
    let mut seen = Vec::with_capacity(count as usize);
    for _ in 0..count {
        store
            .update::<TokenBudget, _>(|b| {
                seen.push(b.used);
                b.used += 1;
                b.recompute();
                Ok(())
            })
            .expect("update under lock");
    }
    report(seen.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","));
}

#[test]
fn concurrent_increments_under_the_store_lock_are_never_lost() {
    let long = std::env::var_os("CORTEX_TEST_LONG").is_some();
    let (n, m): (u64, u64) = if long { (8, 500) } else { (4, 60) };
    let h = TestHome::new();
    let started = std::time::Instant::now();
    let mut children: Vec<_> = (0..n)
        .map(|_| {
            child(module_path!(), CHILD, "incrementer")
                .env(param_name("HOME"), h.path())
                .env(param_name("COUNT"), m.to_string())
                .stdin(Stdio::piped())
                .spawn()
                .expect("spawn incrementer")
        })
        .collect();
    // Open the start gate for all children at once.
    for c in &mut children {
        drop(c.stdin.take());
    }
    let mut seen: Vec<u64> = Vec::new();
    for (i, c) in children.into_iter().enumerate() {
        let lines = reexec::finish(&format!("incrementer {i}"), c);
        assert_eq!(lines.len(), 1, "incrementer {i} reported {lines:?}");
        seen.extend(lines[0].split(',').map(|v| v.parse::<u64>().expect("a number")));
    }
    let elapsed = started.elapsed();
    let budget = h.read_json("coordination/token-budget.json");
    assert_eq!(budget["used"], n * m, "final counter: {budget}");
    assert_eq!(budget["available"], 500_000 - n * m, "available recomputed: {budget}");
    seen.sort_unstable();
    let expected: Vec<u64> = (0..n * m).collect();
    assert_eq!(seen, expected, "each value must be read by exactly one increment");
    eprintln!("{n} processes x {m} increments = {} in {elapsed:?}", n * m);
    // The lock lives on a dedicated lock file, never on the data file.
    assert!(h.join("coordination/.locks/token-budget.lock").is_file());
    let out = h.cortex(&["validate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}
