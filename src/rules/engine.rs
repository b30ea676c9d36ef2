//! The engine: rules indexed by event type, so rules on other types cost nothing.

use super::dedup::Dedup;
use super::predicate::Condition;
use super::window::Groups;
use super::{Output, Proposal, RuleConfig, SymptomSeen};
use crate::config::Dur;
use crate::event::{Data, Event};
use crate::template::{self, Template};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Identical events within this window are one.
pub const DEDUP_WINDOW_MS: i64 = 60_000;
/// Most event keys the dedup table remembers; the oldest go first.
pub const DEDUP_CAP: usize = 100_000;
/// Most groups one rule tracks; the least recently seen go first.
pub const GROUP_CAP: usize = 10_000;

/// Counters for the daemon's metrics and `vigil status`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Events given to `process`.
    pub events: u64,
    /// Events dropped as repeats within 60 s (`vigil_events_dropped_total{reason="duplicate"}`).
    pub duplicates_dropped: u64,
    /// Proposals made.
    pub fired: u64,
    /// Times a condition was met during its cooldown (symptom recorded, no proposal).
    pub suppressed: u64,
    /// Groups forgotten because a rule reached `GROUP_CAP`.
    pub groups_evicted: u64,
}

enum Trigger {
    /// `count` matches within `within_ms`.
    On { count: usize, within_ms: i64 },
    /// Nothing matching for `for_ms`; `last_seen` starts at engine start.
    Absent {
        for_ms: i64,
        last_seen: i64,
        armed: bool,
    },
}

struct Rule {
    name: String,
    event_type: String,
    intent: String,
    priority: u8,
    trigger: Trigger,
    conditions: Vec<Condition>,
    group_by: Vec<String>,
    cooldown_ms: i64,
    reason: Option<Template>,
    symptom: Option<String>,
    groups: Groups,
}

#[derive(Default)]
struct Watchers {
    on: Vec<usize>,
    absent: Vec<usize>,
}

pub struct RuleEngine {
    rules: Vec<Rule>,
    by_type: HashMap<String, Watchers>,
    absent: Vec<usize>,
    /// Earliest time an armed absence rule is due: one comparison per event otherwise.
    next_deadline: i64,
    dedup: Dedup,
    stats: Stats,
}

fn ms(d: Option<Dur>) -> i64 {
    d.map(Dur::as_ms).unwrap_or(0)
}

impl RuleEngine {
    /// `now_ms` starts the absence clocks. Rules are expected to have passed
    /// `RuleConfig::check` (the config loader does it); one with neither `on` nor `absent` is
    /// skipped with a warning.
    pub fn new(rules: &BTreeMap<String, RuleConfig>, now_ms: i64) -> Self {
        let mut engine = RuleEngine {
            rules: Vec::new(),
            by_type: HashMap::new(),
            absent: Vec::new(),
            next_deadline: i64::MAX,
            dedup: Dedup::new(DEDUP_WINDOW_MS, DEDUP_CAP),
            stats: Stats::default(),
        };
        for (name, c) in rules {
            let (event_type, trigger) = match (&c.on, &c.absent) {
                (Some(on), _) => (
                    on.clone(),
                    Trigger::On {
                        count: c.count.unwrap_or(1).max(1) as usize,
                        within_ms: c.within.map(Dur::as_ms).unwrap_or(i64::MAX),
                    },
                ),
                (None, Some(absent)) => (
                    absent.clone(),
                    Trigger::Absent {
                        for_ms: ms(c.for_),
                        last_seen: now_ms,
                        armed: true,
                    },
                ),
                (None, None) => {
                    tracing::warn!(rule = %name, "rule has neither `on` nor `absent`; skipped");
                    continue;
                }
            };
            let idx = engine.rules.len();
            let w = engine.by_type.entry(event_type.clone()).or_default();
            match trigger {
                Trigger::On { .. } => w.on.push(idx),
                Trigger::Absent { .. } => {
                    w.absent.push(idx);
                    engine.absent.push(idx);
                }
            }
            engine.rules.push(Rule {
                name: name.clone(),
                event_type,
                intent: c.intent.clone(),
                priority: c.priority,
                trigger,
                conditions: c.where_.iter().map(|(f, p)| Condition::new(f, p)).collect(),
                group_by: c.group_by.clone(),
                cooldown_ms: ms(c.cooldown),
                reason: c.reason.as_deref().map(Template::parse),
                symptom: c.symptom.clone(),
                groups: Groups::new(GROUP_CAP),
            });
        }
        engine.refresh_deadline();
        engine
    }

    /// Feeds one event; what fires is appended to `out`. Windows and cooldowns use `ev.ts`.
    pub fn process(&mut self, ev: &Event, out: &mut Output) {
        self.stats.events += 1;
        self.check_absence(ev.ts, out);
        let Self {
            rules,
            by_type,
            dedup,
            stats,
            ..
        } = self;
        let Some(w) = by_type.get(ev.kind.as_str()) else {
            return;
        };
        // Absence sees events before dedup: a repeated heartbeat still says "alive".
        let mut rearmed = false;
        for &i in &w.absent {
            let r = &mut rules[i];
            if let Trigger::Absent {
                last_seen, armed, ..
            } = &mut r.trigger
            {
                if r.conditions.iter().all(|c| c.holds(&ev.data)) {
                    *last_seen = (*last_seen).max(ev.ts);
                    *armed = true;
                    rearmed = true;
                }
            }
        }
        // Only events some `on` rule listens to take room in the dedup table.
        if !w.on.is_empty() {
            if dedup.admit(ev.dedup_key(), ev.ts) {
                for &i in &w.on {
                    rules[i].on_event(ev, stats, out);
                }
            } else {
                stats.duplicates_dropped += 1;
            }
        }
        if rearmed {
            self.refresh_deadline();
        }
    }

    /// Advances time: absence rules that are due fire, old dedup entries are forgotten.
    pub fn tick(&mut self, now_ms: i64, out: &mut Output) {
        self.check_absence(now_ms, out);
        self.dedup.advance(now_ms);
    }

    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.groups_evicted = self.rules.iter().map(|r| r.groups.evicted).sum();
        s
    }

    /// Groups a rule currently tracks (None for an unknown rule).
    pub fn group_count(&self, rule: &str) -> Option<usize> {
        self.rules
            .iter()
            .find(|r| r.name == rule)
            .map(|r| r.groups.len())
    }

    /// When the next absence rule is due, so a caller can tick then instead of polling.
    pub fn next_deadline(&self) -> Option<i64> {
        (self.next_deadline != i64::MAX).then_some(self.next_deadline)
    }

    /// Event keys the dedup table currently remembers.
    pub fn dedup_len(&self) -> usize {
        self.dedup.len()
    }

    fn check_absence(&mut self, now: i64, out: &mut Output) {
        if now < self.next_deadline {
            return;
        }
        for &i in &self.absent {
            let r = &mut self.rules[i];
            if let Trigger::Absent {
                for_ms,
                last_seen,
                armed,
            } = &mut r.trigger
            {
                if *armed && now.saturating_sub(*last_seen) >= *for_ms {
                    *armed = false;
                    let (for_ms, last_seen) = (*for_ms, *last_seen);
                    r.on_absence(now, for_ms, last_seen, &mut self.stats, out);
                }
            }
        }
        self.refresh_deadline();
    }

    fn refresh_deadline(&mut self) {
        self.next_deadline = self
            .absent
            .iter()
            .filter_map(|&i| match self.rules[i].trigger {
                Trigger::Absent {
                    for_ms,
                    last_seen,
                    armed: true,
                } => Some(last_seen.saturating_add(for_ms)),
                _ => None,
            })
            .min()
            .unwrap_or(i64::MAX);
    }
}

impl Rule {
    fn on_event(&mut self, ev: &Event, stats: &mut Stats, out: &mut Output) {
        let Trigger::On { count, within_ms } = self.trigger else {
            return;
        };
        if !self.conditions.iter().all(|c| c.holds(&ev.data)) {
            return;
        }
        let key = if self.group_by.is_empty() {
            0
        } else {
            // Non-string values are rare in group fields; they pay for a rendering.
            let texts: Vec<std::borrow::Cow<str>> = self
                .group_by
                .iter()
                .map(|f| match ev.data.get(f) {
                    None => "".into(),
                    Some(Value::String(s)) => s.as_str().into(),
                    Some(other) => other.to_string().into(),
                })
                .collect();
            self.groups.key(texts.iter().map(|t| t.as_ref()))
        };
        let g = self.groups.touch(key);
        if !g.record(ev.ts, count, within_ms) {
            return;
        }
        // Met: count afresh, whether or not the cooldown lets a proposal through, so a symptom
        // means one occurrence of the condition, not one event.
        g.reset();
        let quiet = ev.ts < g.cooldown_until;
        if !quiet {
            g.cooldown_until = ev.ts.saturating_add(self.cooldown_ms);
        }
        // Event fields win over the added ones, so nothing the event said is lost.
        let mut data = ev.data.clone();
        for (k, v) in [
            ("count", Value::from(count)),
            ("rule", Value::from(self.name.as_str())),
            ("event_type", Value::from(ev.kind.as_str())),
            ("source", Value::from(ev.source.as_str())),
        ] {
            data.entry(k).or_insert(v);
        }
        let reason = match &self.reason {
            Some(t) => t.message(|name| self.lookup(name, count, &data)),
            None if count > 1 => {
                let within = Dur(Duration::from_millis(within_ms.max(0) as u64));
                format!(
                    "rule {}: {count} {} events in {within}",
                    self.name, self.event_type
                )
            }
            None => format!(
                "rule {}: {} event from {}",
                self.name, self.event_type, ev.source
            ),
        };
        self.emit(quiet, reason, data, stats, out);
    }

    fn on_absence(
        &mut self,
        now: i64,
        for_ms: i64,
        last_seen: i64,
        stats: &mut Stats,
        out: &mut Output,
    ) {
        let g = self.groups.touch(0);
        let quiet = now < g.cooldown_until;
        if !quiet {
            g.cooldown_until = now.saturating_add(self.cooldown_ms);
        }
        let mut data = Data::new();
        data.insert("rule".into(), Value::from(self.name.as_str()));
        data.insert("event_type".into(), Value::from(self.event_type.as_str()));
        data.insert("last_seen_ms".into(), Value::from(last_seen));
        data.insert(
            "silent_s".into(),
            Value::from(now.saturating_sub(last_seen) / 1000),
        );
        let for_text = Dur(Duration::from_millis(for_ms.max(0) as u64)).to_string();
        let reason = match &self.reason {
            Some(t) => t.message(|name| match name {
                "for" => Some(Cow::Borrowed(for_text.as_str())),
                other => self.lookup(other, 0, &data),
            }),
            None => format!(
                "rule {}: no {} event for {for_text}",
                self.name, self.event_type
            ),
        };
        self.emit(quiet, reason, data, stats, out);
    }

    /// Template names: `{count}`, `{rule}`, `{type}` first, then the proposal data (event
    /// fields, `source`, `event_type`), borrowed where they are text already.
    fn lookup<'a>(&'a self, name: &str, count: usize, data: &'a Data) -> Option<Cow<'a, str>> {
        match name {
            "count" => Some(Cow::Owned(count.to_string())),
            "rule" => Some(Cow::Borrowed(&self.name)),
            "type" => Some(Cow::Borrowed(&self.event_type)),
            _ => template::field(data, name),
        }
    }

    fn emit(&self, quiet: bool, reason: String, data: Data, stats: &mut Stats, out: &mut Output) {
        if let Some(kind) = &self.symptom {
            out.symptoms.push(SymptomSeen {
                rule: self.name.clone(),
                kind: kind.clone(),
                data: data.clone(),
            });
        }
        if quiet {
            stats.suppressed += 1;
            return;
        }
        stats.fired += 1;
        out.proposals.push(Proposal {
            rule: self.name.clone(),
            intent_type: self.intent.clone(),
            priority: self.priority,
            reason,
            data,
        });
    }
}
