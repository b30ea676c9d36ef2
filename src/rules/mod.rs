//! The rule engine: events in, intent proposals out. Matching by type and `where` predicates,
//! counts within windows (per `group_by` group), absence, 60 s event dedup, per-rule cooldown.

mod config;

pub use config::{Predicate, RuleConfig};

use crate::event::{Data, Event};
use std::collections::BTreeMap;

/// What a rule proposes when it fires.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    pub rule: String,
    pub intent_type: String,
    pub priority: u8,
    pub reason: String,
    pub data: Data,
}

/// A symptom a rule saw (recorded even while the rule is in cooldown).
#[derive(Debug, Clone, PartialEq)]
pub struct SymptomSeen {
    pub rule: String,
    pub kind: String,
    pub data: Data,
}

#[derive(Debug, Default)]
pub struct Output {
    pub proposals: Vec<Proposal>,
    pub symptoms: Vec<SymptomSeen>,
}

pub struct RuleEngine {
    #[allow(dead_code)]
    rules: BTreeMap<String, RuleConfig>,
}

impl RuleEngine {
    /// `now_ms` starts the absence clocks.
    pub fn new(rules: &BTreeMap<String, RuleConfig>, _now_ms: i64) -> Self {
        Self {
            rules: rules.clone(),
        }
    }

    /// Feeds one event; what fires is appended to `out`.
    pub fn process(&mut self, _ev: &Event, _out: &mut Output) {}

    /// Advances time for absence rules.
    pub fn tick(&mut self, _now_ms: i64, _out: &mut Output) {}
}
