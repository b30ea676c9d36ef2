//! `[rules.NAME]`: what a rule matches and what it proposes.

use crate::config::{Dur, Pattern};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Event type to match (fires on `count` of them `within` a window).
    pub on: Option<String>,
    /// Event type whose absence for `for` fires the rule.
    pub absent: Option<String>,
    #[serde(rename = "for")]
    pub for_: Option<Dur>,
    /// How many matching events fire the rule (default 1).
    pub count: Option<u32>,
    pub within: Option<Dur>,
    /// Count separately per value of these event fields.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Field predicates: `{ field = value }` or `{ field = { above, below, equals, matches } }`.
    #[serde(rename = "where", default)]
    pub where_: BTreeMap<String, Predicate>,
    /// The intent type to propose.
    pub intent: String,
    /// 0-4 informational, 5-7 actionable, 8-10 critical.
    pub priority: u8,
    /// After firing, the rule stays quiet this long (per group).
    pub cooldown: Option<Dur>,
    /// Template with `{field}` from the event and `{count}`.
    pub reason: Option<String>,
    /// Symptom kind recorded every time the condition is met, even during cooldown.
    pub symptom: Option<String>,
}

impl RuleConfig {
    /// Combinations serde cannot check, in words that say what to write.
    pub fn check(&self) -> Result<(), String> {
        match (&self.on, &self.absent) {
            (Some(_), Some(_)) => return Err("a rule has either `on` or `absent`, not both".into()),
            (None, None) => {
                return Err("a rule needs `on = \"EVENT\"` (fire on events) or `absent = \"EVENT\"` with `for` (fire when they stop)".into())
            }
            (None, Some(_)) if self.for_.is_none() => {
                return Err("`absent` needs `for`, e.g. `for = \"5m\"`".into())
            }
            (None, Some(_)) if !self.group_by.is_empty() => {
                return Err("`group_by` applies to `on` rules; an `absent` rule watches one event type as a whole".into())
            }
            (None, Some(_)) if self.count.is_some() || self.within.is_some() => {
                return Err("`count`/`within` apply to `on` rules; an `absent` rule uses `for`".into())
            }
            (Some(_), None) if self.for_.is_some() => {
                return Err("`for` applies to `absent` rules; for `on` rules write `count` and `within`".into())
            }
            _ => {}
        }
        if self.priority > 10 {
            return Err(format!(
                "priority {} is out of range; use 0-10 (8-10 critical)",
                self.priority
            ));
        }
        match (self.count, self.within) {
            (Some(0), _) => Err("`count` must be at least 1".into()),
            (Some(n), None) if n > 1 => Err(format!(
                "`count = {n}` needs a window: add `within = \"10m\"`"
            )),
            _ => Ok(()),
        }
    }
}

/// One condition on an event field.
#[derive(Debug, Clone, Default)]
pub struct Predicate {
    pub equals: Option<Value>,
    pub above: Option<f64>,
    pub below: Option<f64>,
    pub matches: Option<Pattern>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PredicateOps {
    equals: Option<toml::Value>,
    above: Option<f64>,
    below: Option<f64>,
    matches: Option<Pattern>,
}

/// Either a bare value (equality) or a table of operators; written by hand so errors keep
/// their place in the file (an untagged enum would say only "did not match any variant").
impl<'de> Deserialize<'de> for Predicate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Predicate;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value to compare with, or a table like { above = 7200 }")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Predicate, E> {
                Ok(Predicate::eq(Value::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Predicate, E> {
                Ok(Predicate::eq(Value::from(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Predicate, E> {
                Ok(Predicate::eq(Value::from(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Predicate, E> {
                Ok(Predicate::eq(Value::from(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Predicate, E> {
                Ok(Predicate::eq(Value::String(v.to_string())))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Predicate, A::Error> {
                let ops = PredicateOps::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let equals = ops
                    .equals
                    .map(|v| serde_json::to_value(v).map_err(de::Error::custom))
                    .transpose()?;
                Ok(Predicate {
                    equals,
                    above: ops.above,
                    below: ops.below,
                    matches: ops.matches,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Predicate {
    fn eq(v: Value) -> Self {
        Predicate {
            equals: Some(v),
            ..Default::default()
        }
    }
}
