//! The MoE router: chooses a worker type for a task from its description, using the ordered
//! rules of `coordination/moe/router-config.json` (case-insensitive regexes). The best match
//! (highest confidence, earliest on ties) wins unless it is below `settings.min_confidence` and
//! `fallback_on_low_confidence` is set, in which case the default rule (`is_default`) is used;
//! with no match at all the default rule is used too. Each decision is recorded on the task and
//! appended to `coordination/moe/routing-decisions.jsonl`.

use super::model::RoutingInfo;
use crate::base::error::{Error, Result};
use crate::store::files::{self, CoordFile};
use crate::store::{Document, Store, jsonl};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub pattern: String,
    pub worker_type: String,
    pub confidence: f64,
    #[serde(default)]
    pub is_default: bool,
}

impl RouterRule {
    /// The rule's name, else its pattern.
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.pattern.clone())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterSettings {
    #[serde(default)]
    pub min_confidence: f64,
    #[serde(default = "yes")]
    pub fallback_on_low_confidence: bool,
    #[serde(default = "yes")]
    pub log_decisions: bool,
}

fn yes() -> bool {
    true
}

impl Default for RouterSettings {
    fn default() -> Self {
        RouterSettings { min_confidence: 0.0, fallback_on_low_confidence: true, log_decisions: true }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterConfig {
    pub rules: Vec<RouterRule>,
    #[serde(default)]
    pub settings: RouterSettings,
}

impl Document for RouterConfig {
    const FILE: &'static CoordFile = files::ROUTER_CONFIG;
}

/// The router's choice for one description.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub worker_type: String,
    pub routing: RoutingInfo,
}

/// Upper bound on a compiled rule pattern (bytes of program): a huge or explosive pattern
/// (`(a{1000}){1000}`) is refused, never allowed to take the memory of every process routing.
pub const PATTERN_SIZE_LIMIT: usize = 1 << 20;
/// Upper bound on a rule pattern's lazy-DFA cache, per compiled pattern.
pub const PATTERN_DFA_LIMIT: usize = 2 << 20;

/// Compiles a rule pattern as the router matches it: case-insensitive, size-bounded. Used by
/// routing and by `cortex validate`, so the two always agree on what is valid.
pub fn compile_pattern(pattern: &str) -> std::result::Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_DFA_LIMIT)
        .build()
}

fn compile(rule: &RouterRule, index: usize) -> Result<regex::Regex> {
    compile_pattern(&rule.pattern).map_err(|e| Error::Config {
        path: None,
        detail: format!(
            "coordination/moe/router-config.json at /rules/{index}/pattern (rule {:?}): {:?} is not a valid regex: {}",
            rule.label(),
            rule.pattern,
            e.to_string().lines().last().unwrap_or("")
        ),
    })
}

impl RouterConfig {
    /// Routes a description.
    pub fn route(&self, description: &str) -> Result<Decision> {
        let mut best: Option<&RouterRule> = None;
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.is_default {
                continue;
            }
            if compile(rule, i)?.is_match(description) && best.is_none_or(|b| rule.confidence > b.confidence) {
                best = Some(rule);
            }
        }
        let default = self.rules.iter().find(|r| r.is_default);
        let low = best.is_some_and(|b| b.confidence < self.settings.min_confidence);
        let (rule, strategy) = match (best, default) {
            (Some(_), Some(d)) if low && self.settings.fallback_on_low_confidence => (d, "fallback"),
            (Some(b), _) => (b, "rule"),
            (None, Some(d)) => (d, "fallback"),
            (None, None) => {
                return Err(Error::refused(format!(
                    "no routing rule matches {description:?} and coordination/moe/router-config.json has no default \
                     rule (\"is_default\": true); pass --type WORKER_TYPE"
                )));
            }
        };
        Ok(Decision {
            worker_type: rule.worker_type.clone(),
            routing: RoutingInfo { rule: Some(rule.label()), confidence: rule.confidence, strategy: strategy.into() },
        })
    }
}

/// One line of `moe/routing-decisions.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecisionRecord {
    #[serde(with = "crate::base::clock::ts")]
    pub timestamp: crate::base::clock::Timestamp,
    pub task_id: String,
    pub description: String,
    pub worker_type: String,
    pub rule: Option<String>,
    pub confidence: f64,
    pub strategy: String,
}

/// Appends a decision to the routing log.
pub fn log_decision(store: &Store, rec: &DecisionRecord) -> Result<()> {
    jsonl::append(&store.path(files::ROUTING_DECISIONS), rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> RouterConfig {
        serde_json::from_str(files::ROUTER_CONFIG.default.unwrap()).unwrap()
    }

    #[test]
    fn default_rules_route() {
        let r = shipped();
        let d = r.route("Implement the login page").unwrap();
        assert_eq!((d.worker_type.as_str(), d.routing.strategy.as_str()), ("implementation-worker", "rule"));
        assert_eq!(d.routing.confidence, 0.9);
        assert_eq!(r.route("security SCAN of deps").unwrap().worker_type, "scan-worker");
        assert_eq!(r.route("Fix flaky test").unwrap().worker_type, "fix-worker");
        assert_eq!(r.route("a bug in parser").unwrap().worker_type, "fix-worker");
        let d = r.route("write a report").unwrap();
        assert_eq!((d.worker_type.as_str(), d.routing.strategy.as_str()), ("analysis-worker", "fallback"));
        assert_eq!(d.routing.rule.as_deref(), Some("default"));
    }

    #[test]
    fn low_confidence_falls_back_unless_disabled() {
        let mut r = shipped();
        r.rules.insert(
            0,
            RouterRule {
                name: Some("docs".into()),
                pattern: "docs?".into(),
                worker_type: "implementation-worker".into(),
                confidence: 0.4,
                is_default: false,
            },
        );
        let d = r.route("update docs").unwrap();
        assert_eq!((d.worker_type.as_str(), d.routing.strategy.as_str()), ("analysis-worker", "fallback"));
        r.settings.fallback_on_low_confidence = false;
        let d = r.route("update docs").unwrap();
        assert_eq!((d.worker_type.as_str(), d.routing.rule.as_deref()), ("implementation-worker", Some("docs")));
    }

    #[test]
    fn best_confidence_wins_and_bad_regex_is_named() {
        let mut r = shipped();
        r.rules[1].confidence = 0.95;
        assert_eq!(r.route("implement a security scan").unwrap().worker_type, "scan-worker");
        r.rules[0].pattern = "(".into();
        let e = r.route("x").unwrap_err().to_string();
        assert!(e.contains("/rules/0/pattern"), "{e}");
    }

    #[test]
    fn explosive_pattern_is_refused_naming_the_rule_and_metacharacters_in_a_description_are_text() {
        let mut r = shipped();
        r.rules[2].pattern = "(a{1000}){1000}".into();
        let e = r.route("fix it").unwrap_err().to_string();
        assert!(e.contains("/rules/2/pattern") && e.contains("\"fix\""), "{e}");
        assert!(e.contains("size limit"), "{e}");
        let r = shipped();
        // A description is only ever the haystack: regex syntax in it matches nothing by itself.
        let d = r.route("(.*)|[a-z]+ $(touch x) ^$").unwrap();
        assert_eq!(d.routing.strategy, "fallback");
        assert_eq!(r.route("bug|.*").unwrap().worker_type, "fix-worker");
    }
}
