//! The rule engine: events in, intent proposals out. Matching by type and `where` predicates,
//! counts within windows (per `group_by` group), absence, 60 s event dedup, per-rule cooldown.
//!
//! Choices worth knowing:
//! - Dedup: only events some `on` rule listens to are deduplicated (others reach no rule).
//!   A dropped repeat does not extend its 60 s window. Absence rules see every event, repeats
//!   included: a repeated heartbeat still proves the emitter alive.
//! - Windows: `count` matches whose first and last lie at most `within` apart (inclusive).
//!   When the condition is met the group's window restarts, in or out of cooldown.
//! - Cooldown: per group when `group_by` is set. While quiet a met condition still records its
//!   `symptom`; only the proposal is suppressed.
//! - Group key: a seeded 64-bit hash of the `group_by` fields' text; a missing field is "".
//! - Proposal data: the event's data plus `count`, `rule`, `event_type`, `source`; an event
//!   field of the same name wins. Absence proposals carry `rule`, `event_type`,
//!   `last_seen_ms`, `silent_s`.
//! - `reason`: a [`crate::template`] parsed once when the engine is built: `{count}`, `{rule}`,
//!   `{type}` (and `{for}` for absence) first, then the proposal data (dotted paths reach into
//!   nested data); it is a message, so an unknown `{name}` is left as written
//!   ([`crate::template::Missing::Placeholder`]).

mod config;
mod dedup;
mod engine;
mod predicate;
mod window;

pub use config::{Predicate, RuleConfig};
pub use engine::{RuleEngine, Stats, DEDUP_CAP, DEDUP_WINDOW_MS, GROUP_CAP};

use crate::event::Data;

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

#[cfg(test)]
mod tests;
