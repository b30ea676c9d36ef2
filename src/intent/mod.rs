//! Intent: a durable, checksummed proposal `{id, intent_type, priority, reason, data}`.

pub mod inbox;
pub mod queue;

use crate::clock::rfc3339_ms;
use crate::event::Data;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// An intent as proposed, before the store gives it an id.
#[derive(Debug, Clone, PartialEq)]
pub struct NewIntent {
    pub intent_type: String,
    pub priority: u8,
    pub reason: String,
    pub data: Data,
    /// Same type and dedup key within the dedup window: one intent. Defaults to a hash of data.
    pub dedup_key: Option<String>,
    /// Who proposed it: `rule:NAME`, `inbox`, `api`.
    pub origin: String,
}

/// The keys an intent body may carry (the inbox file adds `sha256`). `created_at` (RFC 3339)
/// says when the producer wrote it; the store keeps its own time.
pub const BODY_KEYS: [&str; 6] = [
    "intent_type",
    "priority",
    "reason",
    "data",
    "dedup_key",
    "created_at",
];

impl NewIntent {
    /// Parses and validates an intent body, the one JSON shape the inbox, the API and the CLI
    /// share: `{"intent_type": "alert_x", "priority": 0-10, "reason": "...", "data": {...},
    /// "dedup_key": "...", "created_at": "..."}` (all but the first two optional). Unknown keys are
    /// refused, so a misspelt `pririty` is not silently dropped.
    ///
    /// Errors: a message that names the field and what to write instead.
    pub fn from_body(body: &serde_json::Map<String, Value>, origin: &str) -> Result<Self, String> {
        if let Some(k) = body.keys().find(|k| !BODY_KEYS.contains(&k.as_str())) {
            return Err(format!(
                "unknown field `{k}`; an intent has {}",
                BODY_KEYS.map(|k| format!("`{k}`")).join(", ")
            ));
        }
        let text = |key: &str| match body.get(key) {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            None | Some(Value::Null) => Ok(None),
            _ => Err(format!("`{key}` must be a string")),
        };
        let intent_type = match text("intent_type") {
            Ok(Some(t)) => t,
            _ => return Err("`intent_type` must be a string, like \"alert_gpu_oom\"".into()),
        };
        let priority = match body.get("priority").map(Value::as_u64) {
            Some(Some(p)) if p <= 10 => p as u8,
            Some(Some(p)) => return Err(format!("priority {p} is out of range; use 0-10")),
            _ => return Err("`priority` must be a whole number from 0 to 10".into()),
        };
        let data = match body.get("data") {
            Some(Value::Object(m)) => m.clone(),
            None | Some(Value::Null) => Data::new(),
            _ => return Err("`data` must be a JSON object".into()),
        };
        text("created_at")?;
        let intent = NewIntent {
            intent_type,
            priority,
            reason: text("reason")?.unwrap_or_default(),
            data,
            dedup_key: text("dedup_key")?,
            origin: origin.into(),
        };
        intent.validate()?;
        Ok(intent)
    }

    pub fn dedup_key(&self) -> String {
        self.dedup_key.clone().unwrap_or_else(|| {
            sha256_hex(&canonical_json(&Value::Object(self.data.clone())))[..16].to_string()
        })
    }

    /// Checks what any producer could get wrong, with the fix in the message.
    pub fn validate(&self) -> Result<(), String> {
        validate_type(&self.intent_type)?;
        if self.priority > 10 {
            return Err(format!(
                "priority {} is out of range; use 0-10",
                self.priority
            ));
        }
        Ok(())
    }
}

pub fn validate_type(t: &str) -> Result<(), String> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "intent type {t:?} is not valid; use letters, digits, '_', '-' or '.', like \"alert_gpu_oom\""
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentStatus {
    Pending,
    Running,
    Done,
    Denied,
    Failed,
    RestoreFailed,
    Expired,
    Unmatched,
}

impl IntentStatus {
    pub const ALL: [IntentStatus; 8] = [
        Self::Pending,
        Self::Running,
        Self::Done,
        Self::Denied,
        Self::Failed,
        Self::RestoreFailed,
        Self::Expired,
        Self::Unmatched,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Denied => "denied",
            Self::Failed => "failed",
            Self::RestoreFailed => "restore_failed",
            Self::Expired => "expired",
            Self::Unmatched => "unmatched",
        }
    }

    pub fn is_finished(self) -> bool {
        !matches!(self, Self::Pending | Self::Running)
    }
}

impl fmt::Display for IntentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IntentStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<_> = Self::ALL.iter().map(|x| x.as_str()).collect();
                format!("unknown intent status {s:?}; one of: {}", all.join(", "))
            })
    }
}

/// A stored intent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Intent {
    pub id: i64,
    pub intent_type: String,
    pub priority: u8,
    pub reason: String,
    pub data: Data,
    #[serde(serialize_with = "ser_time")]
    pub created_at: i64,
    #[serde(serialize_with = "ser_time")]
    pub updated_at: i64,
    pub status: IntentStatus,
    pub dedup_key: String,
    pub origin: String,
    /// Why it ended as it did, in words.
    pub note: Option<String>,
}

fn ser_time<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339_ms(*ms))
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// JSON with object keys sorted at every level, so a checksum does not depend on the order a
/// producer wrote its keys in.
pub fn canonical_json(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<_> = m.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    // With serde_json's default (sorted) map this is already canonical; sorting again keeps it
    // so even if a dependency turns on `preserve_order`.
    serde_json::to_string(&sorted(v)).expect("JSON values serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn one_body_parser_takes_the_documented_shape() {
        let i = NewIntent::from_body(
            &body(json!({"intent_type": "alert_x", "priority": 7, "data": {"a": 1}, "dedup_key": "k"})),
            "api",
        )
        .unwrap();
        assert_eq!(
            (i.intent_type.as_str(), i.priority, i.reason.as_str()),
            ("alert_x", 7, "")
        );
        assert_eq!(
            (
                i.data["a"].as_i64(),
                i.dedup_key.as_deref(),
                i.origin.as_str()
            ),
            (Some(1), Some("k"), "api")
        );
    }

    #[test]
    fn one_body_parser_says_what_is_wrong() {
        let cases = [
            (
                json!({"intent_type": "x", "priority": 1, "pririty": 2}),
                "unknown field `pririty`; an intent has `intent_type`, `priority`",
            ),
            (json!({"priority": 1}), "`intent_type` must be a string"),
            (
                json!({"intent_type": "x"}),
                "`priority` must be a whole number from 0 to 10",
            ),
            (
                json!({"intent_type": "x", "priority": -1}),
                "`priority` must be a whole number",
            ),
            (
                json!({"intent_type": "x", "priority": 11}),
                "priority 11 is out of range; use 0-10",
            ),
            (
                json!({"intent_type": "x", "priority": 1, "data": [1]}),
                "`data` must be a JSON object",
            ),
            (
                json!({"intent_type": "x", "priority": 1, "reason": 3}),
                "`reason` must be a string",
            ),
            (
                json!({"intent_type": "bad type", "priority": 1}),
                "is not valid; use letters",
            ),
        ];
        for (v, want) in cases {
            let err = NewIntent::from_body(&body(v.clone()), "api").unwrap_err();
            assert!(err.contains(want), "{v}: {err}");
        }
    }
}
