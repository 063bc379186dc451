//! Atomic replacement under fire: a writer process replaces the token budget in a tight loop
//! (the real `Store::update`, i.e. lock + read + schema check + `write_atomic`) while reader
//! processes parse it continuously: no reader ever sees a torn or mixed file. Then the writer is
//! SIGKILLed at random moments, many times: the file always parses and holds one whole written
//! value, never goes backwards, and the only leftovers are `.tmp.` files that readers ignore.
//!
//! Every written value is self-describing: `used = n` and `reservations` holds exactly
//! `RESERVATIONS` entries `d<n>-<k>: k`, so a file stitched from two writes cannot pass.
//! `CORTEX_TEST_LONG=1` runs more kills and longer reads.

use crate::support::reexec::{self, child, kill_hard, param, param_name, report};
use crate::support::*;
use cortex::domain::task::model::TokenBudget;
use cortex::{Home, Store};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const RESERVATIONS: u64 = 150;
const BUDGET: &str = "coordination/token-budget.json";

/// Checks that a token-budget file is one whole written value; returns its sequence number.
fn written_value(bytes: &[u8]) -> Result<u64, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("parse failure: {e}"))?;
    let n = v["used"].as_u64().ok_or("no used")?;
    let res = v["reservations"].as_object();
    if n == 0 && res.is_none_or(|r| r.is_empty()) {
        return Ok(0); // the file `cortex init` wrote
    }
    let res = res.ok_or("no reservations")?;
    if res.len() as u64 != RESERVATIONS {
        return Err(format!("value {n}: {} reservations", res.len()));
    }
    for k in 0..RESERVATIONS {
        if res.get(&format!("d{n}-{k:03}")).and_then(Value::as_u64) != Some(k) {
            return Err(format!("value {n}: reservation d{n}-{k:03} missing or wrong"));
        }
    }
    let reserved: u64 = (0..RESERVATIONS).sum();
    if v["available"].as_u64() != Some(500_000 - n - reserved) {
        return Err(format!("value {n}: available {} inconsistent", v["available"]));
    }
    Ok(n)
}

/// Exits this child when its parent goes away (its stdin pipe closes), so no writer outlives a
/// failed test.
fn exit_when_parent_gone() {
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
}

/// Child: replaces the budget in a tight loop until killed.
#[test]
fn child_replacer() {
    if reexec::role().as_deref() != Some("replacer") {
        return;
    }
    exit_when_parent_gone();
    let store = Store::new(Home::at(param::<String>("HOME"))).with_source("test-replacer");
    loop {
        store
            .update::<TokenBudget, _>(|b| {
                let n = b.used + 1;
                b.used = n;
                b.reservations = (0..RESERVATIONS).map(|k| (format!("d{n}-{k:03}"), k)).collect();
                b.last_updated = Some(chrono::Utc::now());
                b.recompute();
                Ok(())
            })
            .expect("replace the budget");
    }
}

/// Child: parses the budget continuously for at least MILLIS ms, and on a loaded machine until it
/// has read enough to prove something (200 reads, 3 distinct values; at most 60 s), then reports.
#[test]
fn child_reader() {
    if reexec::role().as_deref() != Some("reader") {
        return;
    }
    let path = Path::new(&param::<String>("HOME")).join(BUDGET);
    let until = Instant::now() + Duration::from_millis(param("MILLIS"));
    let (mut reads, mut failures, mut distinct) = (0u64, Vec::new(), BTreeSet::new());
    let hard_stop = Instant::now() + Duration::from_secs(60);
    while (Instant::now() < until || reads < 200 || distinct.len() < 3) && Instant::now() < hard_stop {
        let bytes = std::fs::read(&path).expect("the file always exists");
        reads += 1;
        match written_value(&bytes) {
            Ok(n) => {
                distinct.insert(n);
            }
            Err(e) => failures.push(e),
        }
    }
    report(format!("reads={reads} failures={} distinct={}", failures.len(), distinct.len()));
    for f in failures.iter().take(5) {
        report(format!("failure {f}"));
    }
}

fn spawn_replacer(h: &TestHome) -> Child {
    child(module_path!(), "child_replacer", "replacer")
        .env(param_name("HOME"), h.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn replacer")
}

fn current(h: &TestHome) -> u64 {
    let bytes = std::fs::read(h.join(BUDGET)).expect("read budget");
    written_value(&bytes).unwrap_or_else(|e| panic!("{BUDGET} is not one whole written value: {e}"))
}

/// Names in coordination/ besides the registered files must be our temporaries.
fn strays(h: &TestHome) -> Vec<String> {
    std::fs::read_dir(h.join("coordination"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| cortex::store::files::by_rel(n).is_none())
        .collect()
}

#[test]
fn readers_never_see_a_torn_file_and_sigkill_never_corrupts_it() {
    let long = std::env::var_os("CORTEX_TEST_LONG").is_some();
    let (read_ms, kills) = if long { (5000, 300) } else { (800, 50) };
    let h = TestHome::new();

    // Phase 1: a writer in a tight loop, two readers parsing continuously.
    let mut writer = spawn_replacer(&h);
    wait_until(Duration::from_secs(30), "the writer's first replacement", || current(&h) >= 1);
    let readers: Vec<_> = (0..2)
        .map(|_| {
            child(module_path!(), "child_reader", "reader")
                .env(param_name("HOME"), h.path())
                .env(param_name("MILLIS"), read_ms.to_string())
                .spawn()
                .expect("spawn reader")
        })
        .collect();
    let mut total_reads = 0;
    for (i, r) in readers.into_iter().enumerate() {
        let lines = reexec::finish(&format!("reader {i}"), r);
        let summary = &lines[0];
        assert!(summary.contains(" failures=0 "), "reader {i} saw torn files: {lines:?}");
        let field = |k: &str| -> u64 {
            summary.split(' ').find_map(|p| p.strip_prefix(k)).and_then(|v| v.parse().ok()).unwrap()
        };
        assert!(field("reads=") >= 50, "reader {i} read too little to prove anything: {summary}");
        assert!(field("distinct=") >= 2, "reader {i} never saw the writer's progress: {summary}");
        total_reads += field("reads=");
    }
    let written_in_phase1 = current(&h);
    kill_hard(&mut writer);
    let mut last = current(&h);
    assert!(last >= written_in_phase1);
    eprintln!("phase 1: {total_reads} reads, {last} replacements, 0 torn");

    // Phase 2: SIGKILL the writer at random moments.
    let started = Instant::now();
    for kill in 0..kills {
        let mut writer = spawn_replacer(&h);
        let target = last + fastrand::u64(1..=3);
        wait_until(Duration::from_secs(30), "the writer to make progress", || current(&h) >= target);
        // A random extra moment inside the next replacement(s).
        let spin_until = Instant::now() + Duration::from_micros(fastrand::u64(0..3000));
        while Instant::now() < spin_until {
            std::hint::spin_loop();
        }
        kill_hard(&mut writer);
        let now = current(&h);
        assert!(now >= target, "kill {kill}: the file went back from {target} to {now}");
        for name in strays(&h) {
            assert!(
                cortex::store::atomic::is_temp_name(&name),
                "kill {kill}: {name} left in coordination/ is not a .tmp. file"
            );
        }
        last = now;
    }
    let leftovers = strays(&h).len();
    eprintln!("phase 2: {kills} SIGKILLs in {:?}, final value {last}, {leftovers} .tmp. leftovers", started.elapsed());

    // The file loads through the store, nothing was quarantined, validate ignores the leftovers.
    let store = Store::new(Home::at(h.path()));
    let b: TokenBudget = store.load().expect("load after kills");
    assert_eq!(b.used, last);
    let quarantined = std::fs::read_dir(h.join("coordination/quarantine")).unwrap().count();
    assert_eq!(quarantined, 0, "no good file may be quarantined");
    let out = h.cortex(&["validate"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains(".tmp."), "validate must not report temporaries: {stdout}");
}
