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
    /// The host whose it is (`*`: any host's; '' from before hosts): the host that proposed
    /// it, unless its data named another.
    pub host: String,
}

fn ser_time<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339_ms(*ms))
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The canonical JSON an intent file's checksum is taken over: object keys sorted at every
/// level (by code point), no whitespace, text as UTF-8 with only `"`, `\\` and control
/// characters escaped, integers as written and floats as Python writes them (`1.0`, `1000.0`,
/// `1e+16`, `1e-07`). That is exactly what Python's
/// `json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` produces, so a
/// producer in any language has a one-line reference to check against
/// (tests/data/inbox_digests.py). Integers must fit in 64 bits: a larger one is read as a
/// float, and its checksum will not match.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            // Sorted here rather than trusting the map's order, so turning on serde_json's
            // `preserve_order` in some dependency cannot change checksums.
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Number(n) => match (n.is_f64(), n.as_f64()) {
            (true, Some(f)) => out.push_str(&python_float(f)),
            _ => out.push_str(&n.to_string()),
        },
        // serde_json escapes strings as Python does: `\"`, `\\`, `\b \f \n \r \t`, other
        // control characters as lowercase `\u00XX`, everything else as itself.
        other => out.push_str(&other.to_string()),
    }
}

/// A finite float as Python's `repr` writes it: the shortest digits that read back to the same
/// value (as Rust's `{:e}` gives them), positional with at least one decimal for
/// 1e-4 <= |f| < 1e16 (`100.0`, `0.0001`), otherwise `d.ddde±XX` with at least two exponent
/// digits (`1e+16`, `1.5e-05`).
fn python_float(f: f64) -> String {
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').expect("`{:e}` writes an exponent");
    let exp: i32 = exp.parse().expect("`{:e}` writes an integer exponent");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    // Position of the decimal point counted from the first digit.
    let point = exp + 1;
    let n = digits.len() as i32;
    let body = if point > -4 && point <= 16 {
        if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point >= n {
            format!("{digits}{}.0", "0".repeat((point - n) as usize))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        }
    } else {
        let rest = if n > 1 {
            format!(".{}", &digits[1..])
        } else {
            String::new()
        };
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}{rest}e{sign}{:02}", &digits[..1], exp.abs())
    };
    if f.is_sign_negative() {
        format!("-{body}")
    } else {
        body
    }
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
