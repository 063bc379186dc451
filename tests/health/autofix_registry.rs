//! The fix registry over real files with a manual clock: the approval gate (safety < 0.5 is
//! recorded, not applied), cooldown and growth rules, and validation: a fix whose pattern kept
//! growing is rolled back from its backup; one whose pattern stopped is kept.

use crate::support::health::AutoFixRig;
use chrono::Duration;
use cortex::base::clock::Clock;
use serde_json::json;

type Rig = AutoFixRig;

/// A rig whose fix registry is `fixes`.
fn rig(fixes: serde_json::Value) -> Rig {
    let rig = Rig::new();
    std::fs::write(
        rig.home.coord("config/auto-fix-registry.json"),
        serde_json::to_vec_pretty(&json!({"fixes": fixes})).unwrap(),
    )
    .unwrap();
    rig
}

impl Rig {
    /// Upserts a pattern the way the failure-pattern daemon does (a new line per update).
    fn pattern(&self, occurrences: u64) {
        let line = json!({
            "pattern_id": "pat-timeout-scan", "category": "timeout", "type": "timeout",
            "signature": "timeout|timeout|scan-worker", "worker_type": "scan-worker",
            "frequency": {"total_occurrences": occurrences, "last_seen": cortex::base::clock::format_ts(self.clock.now())},
            "confidence": 1.0, "severity": "high",
            "created_at": cortex::base::clock::format_ts(self.clock.now()), "updated_at": cortex::base::clock::format_ts(self.clock.now()),
        });
        let path = self.home.failure_patterns_file();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        cortex::store::jsonl::append(&path, &line).unwrap();
    }

    fn duration(&self) -> serde_json::Value {
        self.t.read_json("coordination/config/worker-types.json")["worker_types"]["scan-worker"]["default_duration"]
            .clone()
    }
}

fn adjust_fix(safety: f64) -> serde_json::Value {
    json!([{
        "fix_id": "longer-scans", "applies_to": {"category": "timeout"}, "safety_score": safety,
        "cooldown_seconds": 300, "validation_window_seconds": 600,
        "action": {"kind": "adjust_worker_type", "worker_type": "{worker_type}", "field": "default_duration",
                   "op": "multiply", "value": 2, "min": 1, "max": 100}
    }])
}

#[test]
fn unsafe_fix_needs_approval_and_is_not_applied() {
    let rig = rig(adjust_fix(0.4));
    rig.pattern(3);
    let r = rig.pass();
    assert_eq!(r.registry.approval_required, vec!["longer-scans".to_string()]);
    assert!(r.registry.applied.is_empty());
    assert_eq!(rig.duration(), 15, "worker type untouched");
    let ev = rig.t.events_of("fix_requires_approval");
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["data"]["fix"]["fix_id"], "longer-scans");
    // Not asked again until the pattern grows and the cooldown passed.
    rig.pass();
    rig.pattern(4);
    rig.pass();
    assert_eq!(rig.t.events_of("fix_requires_approval").len(), 1);
    rig.clock.advance(Duration::seconds(301));
    rig.pass();
    assert_eq!(rig.t.events_of("fix_requires_approval").len(), 2);
    assert!(!rig.home.fix_backups().exists());
}

#[test]
fn fix_without_improvement_is_rolled_back_from_its_backup() {
    let rig = rig(adjust_fix(0.9));
    rig.pattern(3);
    let r = rig.pass();
    assert_eq!(r.registry.applied, vec!["longer-scans".to_string()]);
    assert_eq!(rig.duration(), 30.0);
    assert_eq!(r.next_pass, Some(rig.clock.now() + Duration::seconds(600)), "wakes for the validation");
    let applied = &rig.t.events_of("fix_applied")[0]["data"];
    let backup = rig.home.join(applied["backup"].as_str().unwrap());
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&backup).unwrap()).unwrap();
    assert_eq!(saved["worker_types"]["scan-worker"]["default_duration"], 15);

    // The pattern keeps growing through the validation window: no improvement.
    rig.clock.advance(Duration::seconds(100));
    rig.pattern(6);
    rig.pass();
    assert_eq!(rig.duration(), 30.0, "cooldown: not applied again, not validated yet");
    rig.clock.advance(Duration::seconds(501));
    let r = rig.pass();
    assert_eq!(r.registry.rolled_back.len(), 1);
    assert_eq!(rig.duration(), 15, "restored from the backup");
    let ev = rig.t.events_of("fix_rolled_back");
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["data"]["restored"], true);
    let history = std::fs::read_to_string(rig.home.fix_history()).unwrap();
    for kind in ["fix_applied", "fix_rolled_back"] {
        assert!(history.contains(&format!("\"record\":\"{kind}\"")), "{history}");
    }
    // The validation is not repeated, and a fix that did not help is not tried again.
    rig.pass();
    assert_eq!(rig.t.events_of("fix_rolled_back").len(), 1);
    rig.pattern(12);
    rig.clock.advance(Duration::seconds(3600));
    rig.pass();
    assert_eq!(rig.duration(), 15);
    assert_eq!(rig.t.events_of("fix_applied").len(), 1);
}

#[test]
fn fix_that_helped_is_validated_and_kept() {
    let rig = rig(adjust_fix(0.9));
    rig.pattern(3);
    rig.pass();
    rig.clock.advance(Duration::seconds(601));
    let r = rig.pass();
    assert_eq!(r.registry.validated.len(), 1);
    assert_eq!(rig.duration(), 30.0);
    assert_eq!(rig.t.events_of("fix_validated").len(), 1);
}

#[test]
fn clamps_and_other_actions() {
    let rig = rig(json!([
        {"fix_id": "cap", "applies_to": {"category": "timeout"}, "safety_score": 1.0,
         "action": {"kind": "adjust_worker_type", "field": "default_budget", "op": "add", "value": 1000000, "max": 60000}},
        {"fix_id": "tell", "applies_to": {"category": "timeout", "worker_type": "scan-worker"}, "safety_score": 1.0,
         "action": {"kind": "emit_event", "event_type": "operator_attention_needed", "message": "{worker_type}: {occurrences} timeouts"}},
        {"fix_id": "elsewhere", "applies_to": {"category": "zombie"}, "safety_score": 1.0,
         "action": {"kind": "emit_event", "event_type": "never"}}
    ]));
    rig.pattern(3);
    rig.pass();
    let wt = rig.t.read_json("coordination/config/worker-types.json");
    assert_eq!(wt["worker_types"]["scan-worker"]["default_budget"], 60000, "clamped to max, still an integer");
    let ev = rig.t.events_of("operator_attention_needed");
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["message"], "scan-worker: 3 timeouts");
    assert!(rig.t.events_of("never").is_empty());
    // At its clamp already: a later application changes nothing and is recorded as skipped.
    rig.pattern(9);
    rig.pass();
    let history = std::fs::read_to_string(rig.home.fix_history()).unwrap();
    assert!(history.contains("\"fix_skipped\""), "{history}");
    // Backups, history and the changed worker types all pass `cortex validate`.
    rig.t.cortex_ok(&["validate"]);
}
