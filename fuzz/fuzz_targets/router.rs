//! The MoE router (`task::router`): a fuzzed `coordination/moe/router-config.json` (everything
//! before the first NUL byte) routes fuzzed descriptions (the rest, one per line). Routing never
//! panics; a decision names one of the config's rules and takes its worker type and confidence
//! (so within [0, 1] when the config's are); a rule whose pattern does not compile is refused
//! with an error naming it (pointer and label), never a panic; with valid patterns and a default
//! rule every description is routed. Patterns compile under `router::PATTERN_SIZE_LIMIT`, so a
//! huge or explosive pattern is refused rather than allowed to take the memory (libFuzzer's
//! `-rss_limit_mb` catches a blow-up).
#![no_main]

use cortex::domain::task::router::{RouterConfig, RouterRule, compile_pattern};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (config, rest) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(router) = serde_json::from_slice::<RouterConfig>(config) else { return };
    let bad_rule = router.rules.iter().enumerate().find(|(_, r)| !r.is_default && compile_pattern(&r.pattern).is_err());
    let has_default = router.rules.iter().any(|r| r.is_default);
    let all_in_unit = router.rules.iter().all(|r| (0.0..=1.0).contains(&r.confidence));
    let text = String::from_utf8_lossy(rest);
    let descriptions: Vec<&str> = if text.is_empty() { vec![""] } else { text.split('\n').take(8).collect() };
    for description in descriptions {
        match router.route(description) {
            Ok(d) => {
                assert!(bad_rule.is_none(), "routed although rule {bad_rule:?} does not compile");
                let label = d.routing.rule.as_deref().expect("a routed decision names its rule");
                let is_it = |r: &&RouterRule| {
                    r.label() == label && r.worker_type == d.worker_type && r.confidence == d.routing.confidence
                };
                assert!(router.rules.iter().any(|r| is_it(&r)), "decision {d:?} is none of the config's rules");
                let matching: Vec<&RouterRule> = router
                    .rules
                    .iter()
                    .filter(|r| !r.is_default && compile_pattern(&r.pattern).unwrap().is_match(description))
                    .collect();
                match d.routing.strategy.as_str() {
                    // The winner matches; no matching rule beats its confidence.
                    "rule" => {
                        assert!(matching.iter().any(is_it), "the winning rule does not match: {d:?}");
                        assert!(
                            matching.iter().all(|r| r.confidence <= d.routing.confidence),
                            "a better rule lost: {d:?}"
                        );
                    }
                    // The first default rule, taken when nothing matched or the best was too weak.
                    "fallback" => {
                        let default = router.rules.iter().find(|r| r.is_default).expect("fallback without a default");
                        assert!(is_it(&default), "fallback {d:?} is not the default rule {default:?}");
                        assert!(
                            matching.is_empty()
                                || (router.settings.fallback_on_low_confidence
                                    && matching.iter().map(|r| r.confidence).fold(f64::MIN, f64::max)
                                        < router.settings.min_confidence),
                            "fell back although a rule matched with enough confidence: {d:?}"
                        );
                    }
                    other => panic!("unknown strategy {other:?}"),
                }
                if all_in_unit {
                    assert!((0.0..=1.0).contains(&d.routing.confidence));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                if let Some((i, r)) = bad_rule {
                    assert!(msg.contains("/pattern") && msg.contains("not a valid regex"), "{msg}");
                    // Routing reports the first rule that does not compile.
                    assert!(msg.contains(&format!("/rules/{i}/pattern")), "{msg} (expected rule {i}: {r:?})");
                    assert!(msg.contains(&format!("{:?}", r.label())), "{msg} does not name the rule");
                } else {
                    assert!(!has_default, "valid patterns and a default rule, yet refused: {msg}");
                    assert!(msg.contains("no default"), "{msg}");
                }
            }
        }
    }
});
