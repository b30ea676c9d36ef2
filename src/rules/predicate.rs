//! `where` predicates, compiled once: equality, `above`/`below` (numbers or numeric strings,
//! since log fields are text) and `matches` (regex on the text). A missing field never matches.

use super::config::Predicate;
use crate::event::Data;
use serde_json::Value;
use std::borrow::Cow;

#[derive(Debug, Clone)]
pub(super) struct Condition {
    field: String,
    equals: Option<Value>,
    above: Option<f64>,
    below: Option<f64>,
    matches: Option<regex::Regex>,
}

impl Condition {
    pub(super) fn new(field: &str, p: &Predicate) -> Self {
        Condition {
            field: field.to_string(),
            equals: p.equals.clone(),
            above: p.above,
            below: p.below,
            matches: p.matches.as_ref().map(|m| m.0.clone()),
        }
    }

    /// All operators of the predicate hold for `data`.
    pub(super) fn holds(&self, data: &Data) -> bool {
        let Some(v) = data.get(&self.field) else {
            return false;
        };
        if let Some(e) = &self.equals {
            if !equal(v, e) {
                return false;
            }
        }
        if self.above.is_some() || self.below.is_some() {
            let Some(x) = number(v) else {
                return false;
            };
            if self.above.is_some_and(|a| x <= a) || self.below.is_some_and(|b| x >= b) {
                return false;
            }
        }
        if let Some(re) = &self.matches {
            if !re.is_match(&text(v)) {
                return false;
            }
        }
        true
    }
}

/// A number, or a string that reads as a finite one ("2.5", " 7201 ").
pub(super) fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
        _ => None,
    }
}

fn text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(other.to_string()),
    }
}

/// Equality that forgives the text/number split of log fields: `status = 500` matches the
/// string "500", `ok = true` matches "true", and 5 equals 5.0.
fn equal(actual: &Value, expected: &Value) -> bool {
    if actual == expected {
        return true;
    }
    match (actual, expected) {
        (_, Value::Number(n)) => {
            matches!((number(actual), n.as_f64()), (Some(x), Some(y)) if x == y)
        }
        (Value::String(s), other) => *s == text(other),
        (other, Value::String(s)) => text(other) == s.as_str(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cond(p: Value) -> Condition {
        let p: Predicate = serde_json::from_value::<toml::Value>(p)
            .ok()
            .and_then(|t| t.try_into().ok())
            .expect("predicate");
        Condition::new("f", &p)
    }

    fn data(v: Value) -> Data {
        json!({ "f": v }).as_object().unwrap().clone()
    }

    #[test]
    fn numeric_strings_compare_as_numbers() {
        let c = cond(json!({"above": 10}));
        assert!(!c.holds(&data(json!("10"))));
        assert!(c.holds(&data(json!("10.5"))));
        assert!(c.holds(&data(json!(11))));
        assert!(!c.holds(&data(json!("eleven"))));
        assert!(!c.holds(&Data::new()), "a missing field never matches");
        let b = cond(json!({"below": 2.5}));
        assert!(b.holds(&data(json!("2.4"))));
        assert!(!b.holds(&data(json!("2.5"))));
    }

    #[test]
    fn equality_and_regex() {
        assert!(cond(json!(500)).holds(&data(json!("500"))));
        assert!(cond(json!("500")).holds(&data(json!(500))));
        assert!(cond(json!(true)).holds(&data(json!("true"))));
        assert!(!cond(json!("a")).holds(&data(json!("b"))));
        let m = cond(json!({"matches": "^time(d )?out"}));
        assert!(m.holds(&data(json!("timed out after 30s"))));
        assert!(!m.holds(&data(json!("failed"))));
    }
}
