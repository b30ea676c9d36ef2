//! Event: a normalized fact `{source, type, ts, data}` that sources emit and rules consume.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::hash::{Hash, Hasher};

pub type Data = Map<String, Value>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub source: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    #[serde(default)]
    pub data: Data,
}

impl Event {
    pub fn new(source: impl Into<String>, kind: impl Into<String>, ts: i64, data: Data) -> Self {
        Self {
            source: source.into(),
            kind: kind.into(),
            ts,
            data,
        }
    }

    /// Identity for deduplication: source, type and data, not the time. Two events with the same
    /// key within the dedup window are one fact seen twice.
    pub fn dedup_key(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.source.hash(&mut h);
        self.kind.hash(&mut h);
        hash_data(&self.data, &mut h);
        h.finish()
    }

    /// A field as text for templates and grouping: strings bare, other values as JSON.
    pub fn field(&self, name: &str) -> Option<String> {
        self.data.get(name).map(value_text)
    }
}

pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn hash_data<H: Hasher>(data: &Data, h: &mut H) {
    // serde_json's Map is ordered by key, so equal maps hash equally.
    for (k, v) in data {
        k.hash(h);
        hash_value(v, h);
    }
}

fn hash_value<H: Hasher>(v: &Value, h: &mut H) {
    match v {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => b.hash(h),
        Value::Number(n) => n.to_string().hash(h),
        Value::String(s) => s.hash(h),
        Value::Array(a) => a.iter().for_each(|x| hash_value(x, h)),
        Value::Object(m) => hash_data(m, h),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dedup_key_ignores_time_and_sees_data() {
        let d = |v: Value| v.as_object().unwrap().clone();
        let a = Event::new("log", "gpu_oom", 1, d(json!({"alloc_gib": "2.5"})));
        let b = Event::new("log", "gpu_oom", 99, d(json!({"alloc_gib": "2.5"})));
        let c = Event::new("log", "gpu_oom", 1, d(json!({"alloc_gib": "3.0"})));
        assert_eq!(a.dedup_key(), b.dedup_key());
        assert_ne!(a.dedup_key(), c.dedup_key());
    }
}
