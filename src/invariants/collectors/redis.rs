//! `type = "redis"`: keys by pattern, `{placeholder}` parts of the key become columns.
//! Exactly one of `zset` (→ placeholders, member, score), `hash` (→ placeholders, field,
//! value), `ttl` (→ placeholders, ttl: -2 missing, -1 no expiry, else seconds), `get`
//! (→ placeholders, key, value) or `set` (→ placeholders, member). Keys are found with SCAN
//! (never KEYS) and read in one pipeline.

use super::{CollectError, Collector, Cycle, Declared, Rows, Table};
use crate::sources::BoxFuture;
use rusqlite::types::Value;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
    pub zset: Option<String>,
    pub hash: Option<String>,
    pub ttl: Option<String>,
    pub get: Option<String>,
    pub set: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Zset,
    Hash,
    Ttl,
    Get,
    Set,
}

impl Kind {
    /// The Redis type its command reads (`TYPE` names): what a skipped key was not.
    fn redis_type(self) -> &'static str {
        match self {
            Kind::Zset => "zset",
            Kind::Hash => "hash",
            Kind::Ttl => "key",
            Kind::Get => "string",
            Kind::Set => "set",
        }
    }

    /// The rows of one key: its placeholder values (`text(vals)`), then what was read.
    fn rows(
        self,
        key: &str,
        vals: &[String],
        v: redis::Value,
        text: &dyn Fn(&[String]) -> Vec<Value>,
    ) -> redis::RedisResult<Vec<Vec<Value>>> {
        use redis::from_redis_value as from;
        let with = |extra: Vec<Value>| {
            let mut row = text(vals);
            row.extend(extra);
            row
        };
        Ok(match self {
            Kind::Zset => from::<Vec<(String, f64)>>(v)?
                .into_iter()
                .map(|(m, s)| with(vec![Value::Text(m), Value::Real(s)]))
                .collect(),
            Kind::Hash => from::<Vec<(String, String)>>(v)?
                .into_iter()
                .map(|(f, x)| with(vec![Value::Text(f), Value::Text(x)]))
                .collect(),
            Kind::Ttl => vec![with(vec![Value::Integer(from::<i64>(v)?)])],
            Kind::Get => {
                let x = from::<Option<String>>(v)?;
                vec![with(vec![
                    Value::Text(key.to_string()),
                    x.map_or(Value::Null, Value::Text),
                ])]
            }
            Kind::Set => from::<Vec<String>>(v)?
                .into_iter()
                .map(|m| with(vec![Value::Text(m)]))
                .collect(),
        })
    }
}

impl RedisConfig {
    fn pattern(&self) -> (Kind, &str) {
        if let Some(p) = &self.zset {
            (Kind::Zset, p)
        } else if let Some(p) = &self.hash {
            (Kind::Hash, p)
        } else if let Some(p) = &self.ttl {
            (Kind::Ttl, p)
        } else if let Some(p) = &self.get {
            (Kind::Get, p)
        } else {
            (Kind::Set, self.set.as_deref().unwrap_or(""))
        }
    }

    fn columns(&self) -> Vec<String> {
        let (kind, p) = self.pattern();
        let mut cols = Pattern::parse(p).map(|p| p.names).unwrap_or_default();
        let extra: &[&str] = match kind {
            Kind::Zset => &["member", "score"],
            Kind::Hash => &["field", "value"],
            Kind::Ttl => &["ttl"],
            Kind::Get => &["key", "value"],
            Kind::Set => &["member"],
        };
        cols.extend(extra.iter().map(|s| s.to_string()));
        cols
    }
}

/// A key pattern such as `agent:slot:{agent}:{eid}`.
struct Pattern {
    names: Vec<String>,
    glob: String,
    regex: Option<regex::Regex>,
}

impl Pattern {
    fn parse(p: &str) -> Result<Pattern, String> {
        let mut names = Vec::new();
        let (mut glob, mut re) = (String::new(), String::from("^"));
        let mut rest = p;
        while let Some(i) = rest.find('{') {
            let lit = &rest[..i];
            let Some(j) = rest[i..].find('}') else {
                return Err(format!("unclosed `{{` in key pattern {p:?}"));
            };
            let name = &rest[i + 1..i + j];
            if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
                return Err(format!(
                    "placeholder {{{name}}} in {p:?} must be a column name (letters, digits, _)"
                ));
            }
            glob.push_str(&glob_escape(lit));
            glob.push('*');
            re.push_str(&regex::escape(lit));
            re.push_str("(.*?)");
            names.push(name.to_string());
            rest = &rest[i + j + 1..];
        }
        glob.push_str(&glob_escape(rest));
        re.push_str(&regex::escape(rest));
        re.push('$');
        let regex = if names.is_empty() {
            None
        } else {
            Some(regex::Regex::new(&re).map_err(|e| e.to_string())?)
        };
        Ok(Pattern { names, glob, regex })
    }
}

fn glob_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

impl Collector for RedisConfig {
    fn check(&self) -> Result<(), String> {
        let n = [&self.zset, &self.hash, &self.ttl, &self.get, &self.set]
            .iter()
            .filter(|o| o.is_some())
            .count();
        if n != 1 {
            return Err("a redis collector reads exactly one key pattern: set one of `zset`, `hash`, `ttl`, `get`, `set` (use several [collectors.NAME] sections for more)".into());
        }
        let (_, p) = self.pattern();
        Pattern::parse(p).map(|_| ())
    }

    fn declared(&self, table: &str) -> Vec<Declared> {
        vec![Declared {
            name: table.to_string(),
            columns: Some(self.columns()),
        }]
    }

    fn collect<'a>(
        &'a self,
        table: &'a str,
        _cycle: &'a Cycle,
    ) -> BoxFuture<'a, Result<Vec<Table>, CollectError>> {
        Box::pin(async move {
            let err = |e: redis::RedisError| CollectError(format!("{e} ({})", self.url));
            let client = redis::Client::open(self.url.as_str()).map_err(err)?;
            let mut con = client
                .get_multiplexed_async_connection()
                .await
                .map_err(err)?;
            let (kind, p) = self.pattern();
            let pattern = Pattern::parse(p).map_err(CollectError)?;
            // Keys and their placeholder values.
            let mut keys: Vec<(String, Vec<String>)> = Vec::new();
            match &pattern.regex {
                None => keys.push((p.to_string(), Vec::new())),
                Some(re) => {
                    let mut cursor: u64 = 0;
                    loop {
                        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern.glob)
                            .arg("COUNT")
                            .arg(1000)
                            .query_async(&mut con)
                            .await
                            .map_err(err)?;
                        for k in batch {
                            if let Some(c) = re.captures(&k) {
                                let vals = (1..c.len())
                                    .map(|i| c.get(i).map_or("", |m| m.as_str()).to_string())
                                    .collect();
                                keys.push((k, vals));
                            }
                        }
                        cursor = next;
                        if cursor == 0 {
                            break;
                        }
                    }
                    keys.sort();
                    keys.dedup();
                }
            }
            let mut pipe = redis::pipe();
            // Per-command results: a key of another type (a string `agent:slots:a1:lock` that
            // also matches `agent:slots:{agent}`) fails alone and is skipped, not the table.
            pipe.ignore_errors();
            for (k, _) in &keys {
                match kind {
                    Kind::Zset => pipe.cmd("ZRANGE").arg(k).arg(0).arg(-1).arg("WITHSCORES"),
                    Kind::Hash => pipe.cmd("HGETALL").arg(k),
                    Kind::Ttl => pipe.cmd("TTL").arg(k),
                    Kind::Get => pipe.cmd("GET").arg(k),
                    Kind::Set => pipe.cmd("SMEMBERS").arg(k),
                };
            }
            let mut rows = Vec::new();
            let mut skipped = Vec::new();
            let text = |v: &[String]| v.iter().cloned().map(Value::Text).collect::<Vec<_>>();
            if !keys.is_empty() {
                let res: Vec<redis::RedisResult<redis::Value>> =
                    pipe.query_async(&mut con).await.map_err(err)?;
                let want = kind.redis_type();
                for ((k, vals), r) in keys.into_iter().zip(res) {
                    let parsed = r.and_then(|v| kind.rows(&k, &vals, v, &text));
                    match parsed {
                        Ok(mut r) => rows.append(&mut r),
                        Err(e) if e.code() == Some("WRONGTYPE") => {
                            skipped.push(format!("{k}: not a {want}"));
                        }
                        Err(e) => return Err(err(e)),
                    }
                }
            }
            Ok(vec![Table {
                name: table.to_string(),
                columns: self.columns(),
                rows: Rows::Values(rows),
                skipped,
            }])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_glob_and_columns() {
        let p = Pattern::parse("agent:slot:{agent}:{eid}").unwrap();
        assert_eq!(p.glob, "agent:slot:*:*");
        let c = p.regex.unwrap().captures("agent:slot:a1:e-9").unwrap();
        assert_eq!((&c[1], &c[2]), ("a1", "e-9"));
        assert!(Pattern::parse("x:{bad name}").is_err());
    }
}
